//! The controllable clock: proxy-wasm's current time and WASI's wall and
//! monotonic clocks all read it, so a test moves time for the whole VM.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
