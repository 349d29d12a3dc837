//! `proxy_get_shared_data` / `proxy_set_shared_data` with CAS, over the
//! VM's [`super::state::SharedStore`] (scoped to the VM id, like Envoy).

use super::call::{finish, hostcall, ENV};
use super::memory::{self, Cx};
use super::state::HostState;
use super::status::Status;
use wasmtime::Linker;

pub(crate) fn link(l: &mut Linker<HostState>) -> anyhow::Result<()> {
    hostcall(
        l,
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
    hostcall(
        l,
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
