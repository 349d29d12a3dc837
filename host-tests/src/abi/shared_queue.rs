//! Shared queues: `proxy_register_shared_queue`,
//! `proxy_resolve_shared_queue`, `proxy_enqueue_shared_queue`,
//! `proxy_dequeue_shared_queue`. Enqueueing marks the queue ready for its
//! owner VM, which gets `proxy_on_queue_ready` when the harness delivers.

use super::context::HostState;
use super::memory::{self, Cx};
use super::shared_data::SharedStore;
use super::{finish, Status, ENV};
use std::collections::VecDeque;
use wasmtime::Linker;

#[derive(Debug, Clone)]
pub(crate) struct Queue {
    pub(crate) vm_id: String,
    pub(crate) name: String,
    pub(crate) items: VecDeque<Vec<u8>>,
    /// The VM instance that registered it, and its root context.
    pub(crate) owner: u64,
    pub(crate) owner_context: u32,
    /// Enqueues not yet announced with `proxy_on_queue_ready`.
    pub(crate) unannounced: u32,
}

impl SharedStore {
    /// Registers (or re-registers) a queue; ids start at 1.
    pub(crate) fn register_queue(&self, vm_id: &str, name: &str, owner: u64, ctx: u32) -> u32 {
        let mut s = self.lock();
        if let Some(i) = s
            .queues
            .iter()
            .position(|q| q.vm_id == vm_id && q.name == name)
        {
            s.queues[i].owner = owner;
            s.queues[i].owner_context = ctx;
            return i as u32 + 1;
        }
        s.queues.push(Queue {
            vm_id: vm_id.into(),
            name: name.into(),
            items: VecDeque::new(),
            owner,
            owner_context: ctx,
            unannounced: 0,
        });
        s.queues.len() as u32
    }

    pub fn resolve_queue(&self, vm_id: &str, name: &str) -> Option<u32> {
        self.lock()
            .queues
            .iter()
            .position(|q| q.vm_id == vm_id && q.name == name)
            .map(|i| i as u32 + 1)
    }

    pub fn enqueue(&self, id: u32, item: Vec<u8>) -> Result<(), Status> {
        let mut s = self.lock();
        let q = s
            .queues
            .get_mut((id as usize).wrapping_sub(1))
            .ok_or(Status::NotFound)?;
        q.items.push_back(item);
        q.unannounced += 1;
        Ok(())
    }

    pub fn dequeue(&self, id: u32) -> Result<Vec<u8>, Status> {
        let mut s = self.lock();
        let q = s
            .queues
            .get_mut((id as usize).wrapping_sub(1))
            .ok_or(Status::NotFound)?;
        q.items.pop_front().ok_or(Status::Empty)
    }

    /// Takes the (queue id, root context) pairs to announce to `owner`.
    pub(crate) fn take_ready(&self, owner: u64) -> Vec<(u32, u32)> {
        let mut s = self.lock();
        let mut out = Vec::new();
        for (i, q) in s.queues.iter_mut().enumerate() {
            if q.owner == owner {
                for _ in 0..q.unannounced {
                    out.push((i as u32 + 1, q.owner_context));
                }
                q.unannounced = 0;
            }
        }
        out
    }
}

pub(crate) fn link(l: &mut Linker<HostState>) -> anyhow::Result<()> {
    l.func_wrap(
        ENV,
        "proxy_register_shared_queue",
        |mut c: Cx<'_>, p: u32, n: u32, rid: u32| {
            finish((|| {
                let name = memory::read_str(&mut c, p, n)?;
                memory::check(&mut c, rid, 4)?;
                let s = c.data();
                let ctx = s.root_context_id;
                let id = s
                    .shared
                    .register_queue(&s.settings.vm_id, &name, s.instance_id, ctx);
                memory::write_u32(&mut c, rid, id)
            })())
        },
    )?;
    l.func_wrap(
        ENV,
        "proxy_resolve_shared_queue",
        |mut c: Cx<'_>, vp: u32, vn: u32, p: u32, n: u32, rid: u32| {
            finish((|| {
                let vm_id = memory::read_str(&mut c, vp, vn)?;
                let name = memory::read_str(&mut c, p, n)?;
                memory::check(&mut c, rid, 4)?;
                let id = c
                    .data()
                    .shared
                    .resolve_queue(&vm_id, &name)
                    .ok_or(Status::NotFound)?;
                memory::write_u32(&mut c, rid, id)
            })())
        },
    )?;
    l.func_wrap(
        ENV,
        "proxy_enqueue_shared_queue",
        |mut c: Cx<'_>, id: u32, p: u32, n: u32| {
            finish((|| {
                let item = memory::read(&mut c, p, n)?;
                Ok(c.data().shared.enqueue(id, item)?)
            })())
        },
    )?;
    l.func_wrap(
        ENV,
        "proxy_dequeue_shared_queue",
        |mut c: Cx<'_>, id: u32, rp: u32, rs: u32| {
            finish((|| {
                memory::check(&mut c, rp, 4)?;
                memory::check(&mut c, rs, 4)?;
                let item = c.data().shared.dequeue(id)?;
                memory::return_bytes(&mut c, &item, rp, rs)
            })())
        },
    )?;
    Ok(())
}
