//! Time: `proxy_set_tick_period_milliseconds`,
//! `proxy_get_current_time_nanoseconds` (the time comes from the VM's
//! [`super::state::Clock`]).

use super::call::{finish, hostcall, ENV};
use super::memory::{self, Cx};
use super::state::HostState;
use wasmtime::Linker;

pub(crate) fn link(l: &mut Linker<HostState>) -> anyhow::Result<()> {
    hostcall(
        l,
        ENV,
        "proxy_set_tick_period_milliseconds",
        |mut c: Cx<'_>, period: u32| {
            c.data_mut().tick_period_ms = period;
            0i32
        },
    )?;
    hostcall(
        l,
        ENV,
        "proxy_get_current_time_nanoseconds",
        |mut c: Cx<'_>, rp: u32| {
            finish({
                let now = c.data().clock.now_nanos();
                memory::write_u64(&mut c, rp, now)
            })
        },
    )?;
    Ok(())
}
