//! Time: `proxy_set_tick_period_milliseconds`,
//! `proxy_get_current_time_nanoseconds` (the time comes from the VM's
//! [`super::state::Clock`]).

use super::call::{finish, hostcall, Fail, ENV};
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

/// WASI's errno values this import answers with.
const WASI_SUCCESS: i32 = 0;
const WASI_EFAULT: i32 = 21;
const WASI_EINVAL: i32 = 28;

/// WASI's `clock_time_get` (realtime and monotonic), from the VM's clock as
/// the WASI context's clocks are. Envoy serves this import like any
/// proxy-wasm one, a call into the host per reading (regorus's evaluation
/// timer reads the monotonic clock), so it is counted like them. Linked
/// over the WASI context's own definition.
pub(crate) fn link_wasi_clock(l: &mut Linker<HostState>, module: &str) -> anyhow::Result<()> {
    hostcall(
        l,
        module,
        "clock_time_get",
        |mut c: Cx<'_>, clock_id: u32, _precision: u64, rp: u32| -> wasmtime::Result<i32> {
            if clock_id > 1 {
                return Ok(WASI_EINVAL);
            }
            let now = c.data().clock.now_nanos();
            match memory::write_u64(&mut c, rp, now) {
                Ok(()) => Ok(WASI_SUCCESS),
                Err(Fail::Status(_)) => Ok(WASI_EFAULT),
                Err(Fail::Trap(e)) => Err(e),
            }
        },
    )
}
