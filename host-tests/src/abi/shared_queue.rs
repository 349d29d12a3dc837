//! Shared queues: `proxy_register_shared_queue`,
//! `proxy_resolve_shared_queue`, `proxy_enqueue_shared_queue`,
//! `proxy_dequeue_shared_queue`, over the queues of the VM's
//! [`super::state::SharedStore`] (see [`super::state::queues`]).

use super::call::{finish, hostcall, ENV};
use super::memory::{self, Cx};
use super::state::HostState;
use super::status::Status;
use wasmtime::Linker;

pub(crate) fn link(l: &mut Linker<HostState>) -> anyhow::Result<()> {
    hostcall(
        l,
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
    hostcall(
        l,
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
    hostcall(
        l,
        ENV,
        "proxy_enqueue_shared_queue",
        |mut c: Cx<'_>, id: u32, p: u32, n: u32| {
            finish((|| {
                let item = memory::read(&mut c, p, n)?;
                Ok(c.data().shared.enqueue(id, item)?)
            })())
        },
    )?;
    hostcall(
        l,
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
