//! Time: `proxy_set_tick_period_milliseconds`,
//! `proxy_get_current_time_nanoseconds`, and the controllable [`Clock`]
//! that also backs WASI's clocks.

use super::context::HostState;
use super::memory::{self, Cx};
use super::{finish, ENV};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use wasmtime::Linker;

/// A shared, manually advanced wall clock (nanoseconds since the Unix
/// epoch). Clones share the time.
#[derive(Debug, Clone)]
pub struct Clock {
    nanos: Arc<AtomicU64>,
}

impl Default for Clock {
    /// 2025-01-01T00:00:00Z, so runs are reproducible.
    fn default() -> Self {
        Clock::at_unix_secs(1_735_689_600)
    }
}

impl Clock {
    pub fn at_unix_secs(secs: u64) -> Self {
        Clock {
            nanos: Arc::new(AtomicU64::new(secs.saturating_mul(1_000_000_000))),
        }
    }

    /// A clock starting at the real current time (still advanced by hand).
    pub fn starting_now() -> Self {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let c = Clock::at_unix_secs(0);
        c.nanos.store(now.as_nanos() as u64, Ordering::SeqCst);
        c
    }

    pub fn now_nanos(&self) -> u64 {
        self.nanos.load(Ordering::SeqCst)
    }

    pub fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(self.now_nanos())
    }

    pub fn advance(&self, by: Duration) {
        self.nanos.fetch_add(by.as_nanos() as u64, Ordering::SeqCst);
    }

    pub fn set_unix_secs(&self, secs: u64) {
        self.nanos
            .store(secs.saturating_mul(1_000_000_000), Ordering::SeqCst);
    }
}

/// WASI view of the clock (wall and monotonic).
pub(crate) struct WasiClock(pub(crate) Clock);

impl wasmtime_wasi::HostWallClock for WasiClock {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(1)
    }
    fn now(&self) -> Duration {
        Duration::from_nanos(self.0.now_nanos())
    }
}

impl wasmtime_wasi::HostMonotonicClock for WasiClock {
    fn resolution(&self) -> u64 {
        1
    }
    fn now(&self) -> u64 {
        self.0.now_nanos()
    }
}

pub(crate) fn link(l: &mut Linker<HostState>) -> anyhow::Result<()> {
    l.func_wrap(
        ENV,
        "proxy_set_tick_period_milliseconds",
        |mut c: Cx<'_>, period: u32| {
            c.data_mut().tick_period_ms = period;
            0i32
        },
    )?;
    l.func_wrap(
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
