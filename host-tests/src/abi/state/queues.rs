//! The shared queues one Envoy process keeps for a plugin. Enqueueing marks
//! a queue ready for its owner VM, which gets `proxy_on_queue_ready` when the
//! harness delivers. Ids start at 1 (index + 1) so 0 never names a queue.

use crate::abi::status::Status;
use std::collections::VecDeque;

#[derive(Debug, Clone)]
struct Queue {
    vm_id: String,
    name: String,
    items: VecDeque<Vec<u8>>,
    /// The VM instance that registered it, and its root context.
    owner: u64,
    owner_context: u32,
    /// Enqueues not yet announced with `proxy_on_queue_ready`.
    unannounced: u32,
}

/// Every queue registered so far, in registration order.
#[derive(Debug, Default)]
pub(crate) struct Queues(Vec<Queue>);

impl Queues {
    /// Registers (or re-registers) a queue.
    pub(crate) fn register(&mut self, vm_id: &str, name: &str, owner: u64, ctx: u32) -> u32 {
        if let Some(i) = self.position(vm_id, name) {
            self.0[i].owner = owner;
            self.0[i].owner_context = ctx;
            return i as u32 + 1;
        }
        self.0.push(Queue {
            vm_id: vm_id.into(),
            name: name.into(),
            items: VecDeque::new(),
            owner,
            owner_context: ctx,
            unannounced: 0,
        });
        self.0.len() as u32
    }

    fn position(&self, vm_id: &str, name: &str) -> Option<usize> {
        self.0
            .iter()
            .position(|q| q.vm_id == vm_id && q.name == name)
    }

    pub(crate) fn resolve(&self, vm_id: &str, name: &str) -> Option<u32> {
        self.position(vm_id, name).map(|i| i as u32 + 1)
    }

    fn by_id(&mut self, id: u32) -> Result<&mut Queue, Status> {
        self.0
            .get_mut((id as usize).wrapping_sub(1))
            .ok_or(Status::NotFound)
    }

    pub(crate) fn enqueue(&mut self, id: u32, item: Vec<u8>) -> Result<(), Status> {
        let q = self.by_id(id)?;
        q.items.push_back(item);
        q.unannounced += 1;
        Ok(())
    }

    pub(crate) fn dequeue(&mut self, id: u32) -> Result<Vec<u8>, Status> {
        self.by_id(id)?.items.pop_front().ok_or(Status::Empty)
    }

    /// Takes the (queue id, root context) pairs to announce to `owner`.
    pub(crate) fn take_ready(&mut self, owner: u64) -> Vec<(u32, u32)> {
        let mut out = Vec::new();
        for (i, q) in self.0.iter_mut().enumerate() {
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
