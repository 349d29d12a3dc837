//! [`SharedStore`]: what one Envoy process shares between the VM instances
//! (workers) of a plugin — shared data with CAS, shared queues and metric
//! values. The hostcalls and the tests go through the same methods.

use super::metrics::{MetricKind, Metrics};
use super::queues::Queues;
use crate::abi::status::Status;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Debug, Default)]
struct Shared {
    /// Keyed by (vm_id, key): Envoy scopes shared data to the VM id.
    data: HashMap<(String, String), (Vec<u8>, u32)>,
    next_cas: u32,
    queues: Queues,
    metrics: Metrics,
    next_instance: u64,
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

    fn lock(&self) -> MutexGuard<'_, Shared> {
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

    // ---- shared queues (see `queues`) -----------------------------------

    /// Registers (or re-registers) a queue; ids start at 1.
    pub(crate) fn register_queue(&self, vm_id: &str, name: &str, owner: u64, ctx: u32) -> u32 {
        self.lock().queues.register(vm_id, name, owner, ctx)
    }

    pub fn resolve_queue(&self, vm_id: &str, name: &str) -> Option<u32> {
        self.lock().queues.resolve(vm_id, name)
    }

    pub fn enqueue(&self, id: u32, item: Vec<u8>) -> Result<(), Status> {
        self.lock().queues.enqueue(id, item)
    }

    pub fn dequeue(&self, id: u32) -> Result<Vec<u8>, Status> {
        self.lock().queues.dequeue(id)
    }

    /// Takes the (queue id, root context) pairs to announce to `owner`.
    pub(crate) fn take_ready(&self, owner: u64) -> Vec<(u32, u32)> {
        self.lock().queues.take_ready(owner)
    }

    // ---- metrics (see `metrics`) ----------------------------------------

    /// Defines a metric, or returns the id of the one already named so.
    pub fn define_metric(&self, kind: MetricKind, name: &str) -> Result<u32, Status> {
        self.lock().metrics.define(kind, name)
    }

    pub fn increment_metric(&self, id: u32, offset: i64) -> Result<(), Status> {
        self.lock().metrics.increment(id, offset)
    }

    pub fn record_metric(&self, id: u32, value: u64) -> Result<(), Status> {
        self.lock().metrics.record(id, value)
    }

    pub fn get_metric(&self, id: u32) -> Result<u64, Status> {
        self.lock().metrics.get(id)
    }

    /// The value of a counter or gauge by name.
    pub fn metric(&self, name: &str) -> Option<u64> {
        self.lock().metrics.value(name)
    }

    /// The samples recorded into a histogram, by name.
    pub fn histogram(&self, name: &str) -> Option<Vec<u64>> {
        self.lock().metrics.histogram(name)
    }

    /// Every metric as (name, kind, value or sample count).
    pub fn metrics(&self) -> Vec<(String, MetricKind, u64)> {
        self.lock().metrics.list()
    }
}
