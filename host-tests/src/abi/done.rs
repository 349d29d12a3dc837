//! `proxy_done` (a root context finishing a deferred shutdown), the ABI 0.1
//! `proxy_get_configuration`, and Envoy's emscripten memory-growth hook.

use super::call::{finish, hostcall, ENV};
use super::memory::{self, Cx};
use super::state::HostState;
use wasmtime::Linker;

pub(crate) fn link(l: &mut Linker<HostState>) -> anyhow::Result<()> {
    hostcall(l, ENV, "proxy_done", |mut c: Cx<'_>| {
        c.data_mut().done_called = true;
        0i32
    })?;
    hostcall(
        l,
        ENV,
        "proxy_get_configuration",
        |mut c: Cx<'_>, rp: u32, rs: u32| {
            finish({
                let cfg = c.data().settings.plugin_configuration.clone();
                memory::return_bytes(&mut c, &cfg, rp, rs)
            })
        },
    )?;
    hostcall(
        l,
        ENV,
        "emscripten_notify_memory_growth",
        |_: Cx<'_>, _: u32| {},
    )?;
    Ok(())
}
