//! `proxy_get_shared_data` / `proxy_set_shared_data` with CAS, and
//! [`SharedStore`]: what one Envoy process shares between the VM instances
//! (workers) of a plugin — shared data, shared queues and metric values.

use super::context::HostState;
use super::memory::{self, Cx};
use super::metrics::Metric;
use super::shared_queue::Queue;
use super::{finish, Status, ENV};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use wasmtime::Linker;

#[derive(Debug, Default)]
pub(crate) struct Shared {
    /// Keyed by (vm_id, key): Envoy scopes shared data to the VM id.
    pub(crate) data: HashMap<(String, String), (Vec<u8>, u32)>,
    pub(crate) next_cas: u32,
    pub(crate) queues: Vec<Queue>,
    pub(crate) metrics: Vec<Metric>,
    pub(crate) next_instance: u64,
}

/// A handle on one process's shared state; clones share it. Create one per
/// test (never a global) so parallel tests stay independent.
#[derive(Debug, Clone, Default)]
pub struct SharedStore {
    inner: Arc<Mutex<Shared>>,
}

impl SharedStore {
    pub fn new() -> Self {
        Self::default()
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Shared> {
        // A panicking test thread must not poison the store for the others.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn next_instance_id(&self) -> u64 {
        let mut s = self.lock();
        s.next_instance += 1;
        s.next_instance
    }

    /// The value and CAS of `key` in VM `vm_id`'s shared data.
    pub fn get(&self, vm_id: &str, key: &str) -> Option<(Vec<u8>, u32)> {
        self.lock()
            .data
            .get(&(vm_id.to_string(), key.to_string()))
            .cloned()
    }

    /// Sets `key` like the hostcall does: a non-zero `cas` must match the
    /// current one, else `CasMismatch`. Returns the new CAS.
    pub fn set(&self, vm_id: &str, key: &str, value: Vec<u8>, cas: u32) -> Result<u32, Status> {
        let mut s = self.lock();
        let k = (vm_id.to_string(), key.to_string());
        if let Some((_, current)) = s.data.get(&k) {
            if cas != 0 && cas != *current {
                return Err(Status::CasMismatch);
            }
        }
        s.next_cas = s.next_cas.wrapping_add(1).max(1);
        let new_cas = s.next_cas;
        s.data.insert(k, (value, new_cas));
        Ok(new_cas)
    }
}

pub(crate) fn link(l: &mut Linker<HostState>) -> anyhow::Result<()> {
    l.func_wrap(
        ENV,
        "proxy_get_shared_data",
        |mut c: Cx<'_>, kp: u32, kl: u32, rp: u32, rs: u32, rc: u32| {
            finish((|| {
                let key = memory::read_str(&mut c, kp, kl)?;
                memory::check(&mut c, rc, 4)?;
                let s = c.data();
                let (value, cas) = s
                    .shared
                    .get(&s.settings.vm_id, &key)
                    .ok_or(Status::NotFound)?;
                memory::return_bytes(&mut c, &value, rp, rs)?;
                memory::write_u32(&mut c, rc, cas)
            })())
        },
    )?;
    l.func_wrap(
        ENV,
        "proxy_set_shared_data",
        |mut c: Cx<'_>, kp: u32, kl: u32, vp: u32, vl: u32, cas: u32| {
            finish((|| {
                let key = memory::read_str(&mut c, kp, kl)?;
                let value = memory::read(&mut c, vp, vl)?;
                let s = c.data();
                s.shared.set(&s.settings.vm_id, &key, value, cas)?;
                Ok(())
            })())
        },
    )?;
    Ok(())
}
