//! The world as the core sees it. The proxy-wasm shell implements [`Host`]
//! for Envoy; [`memory::MemoryHost`] implements it in memory so every stage is
//! unit-tested natively.

use std::time::Duration;

use crate::metrics::Metric;

/// A value read from proxy-wasm shared data, with its compare-and-swap token.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SharedValue {
    pub bytes: Option<Vec<u8>>,
    pub cas: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedDataError {
    /// Another worker wrote the key since we read it.
    CasMismatch,
    /// The host refused the write for another reason.
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

/// An outgoing HTTP call through an Envoy cluster (JWKS fetches).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Callout {
    pub cluster: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
    pub timeout: Duration,
}

/// The proxy refused to start a callout (e.g. an unknown cluster).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("dispatch to cluster `{cluster}` failed: {status}")]
pub struct DispatchError {
    pub cluster: String,
    /// The proxy's status, as it names it.
    pub status: String,
}

/// Everything the core needs from the proxy. Kept small on purpose: request
/// data is passed in as values, not pulled through this trait.
pub trait Host {
    /// Wall-clock time in nanoseconds since the Unix epoch, from the proxy's
    /// clock (tests control it). The instant a request is judged at: the
    /// shell reads the clock once per request and answers that reading to
    /// every stage (one hostcall instead of one per stage, and one "now"
    /// for the token's expiry, the buckets, the policy and the log).
    fn now_unix_nanos(&self) -> u64;
    /// A fresh reading of the clock, for measuring a duration (the policy's
    /// evaluation time); `now_unix_nanos` may answer an earlier instant.
    fn clock_unix_nanos(&self) -> u64 {
        self.now_unix_nanos()
    }
    /// Shared data is process-wide: every Envoy worker's VM sees it.
    fn shared_get(&self, key: &str) -> SharedValue;
    /// With `cas: Some(_)` the write only happens if nobody wrote since that read.
    fn shared_set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SharedDataError>;
    fn count(&self, metric: Metric, delta: u64);
    /// A counter named at run time (per route: [`crate::metrics::route_denied_name`]).
    /// The proxy defines it on first use; counting 0 only defines it, so its
    /// series exists before the first increment.
    fn count_named(&self, name: &str, delta: u64);
    fn record(&self, metric: Metric, value: u64);
    fn log(&self, level: LogLevel, message: &str);
    /// Whether the proxy writes lines of `level`: a line it would drop need
    /// not be built (the decision log is built per request).
    fn log_enabled(&self, _level: LogLevel) -> bool {
        true
    }
    /// Starts an HTTP call; the reply arrives later through the shell.
    /// Returns the call's token.
    fn dispatch(&self, callout: &Callout) -> Result<u32, DispatchError>;
}

impl dyn Host + '_ {
    pub fn now_unix_seconds(&self) -> u64 {
        self.now_unix_nanos() / 1_000_000_000
    }
}

pub mod memory {
    //! An in-memory [`Host`] for native unit tests.

    use std::cell::{Cell, RefCell};
    use std::collections::HashMap;

    use super::{Callout, DispatchError, Host, LogLevel, SharedDataError, SharedValue};
    use crate::metrics::Metric;

    #[derive(Default)]
    pub struct MemoryHost {
        pub now_nanos: Cell<u64>,
        shared: RefCell<HashMap<String, (Vec<u8>, u32)>>,
        pub counters: RefCell<HashMap<Metric, u64>>,
        /// Counters named at run time (defined by a first `count_named`).
        pub named_counters: RefCell<HashMap<String, u64>>,
        pub histograms: RefCell<HashMap<Metric, Vec<u64>>>,
        pub logs: RefCell<Vec<(LogLevel, String)>>,
        pub callouts: RefCell<Vec<Callout>>,
        /// Lines below this level are not written (as a proxy's log level).
        pub log_level: Cell<Option<LogLevel>>,
    }

    impl MemoryHost {
        pub fn at_unix_seconds(seconds: u64) -> Self {
            let host = Self::default();
            host.now_nanos.set(seconds * 1_000_000_000);
            host
        }

        pub fn advance_seconds(&self, seconds: u64) {
            self.now_nanos
                .set(self.now_nanos.get() + seconds * 1_000_000_000);
        }

        pub fn counter(&self, metric: Metric) -> u64 {
            self.counters.borrow().get(&metric).copied().unwrap_or(0)
        }

        pub fn log_lines(&self) -> Vec<String> {
            self.logs.borrow().iter().map(|(_, l)| l.clone()).collect()
        }
    }

    impl Host for MemoryHost {
        fn now_unix_nanos(&self) -> u64 {
            self.now_nanos.get()
        }

        fn shared_get(&self, key: &str) -> SharedValue {
            match self.shared.borrow().get(key) {
                Some((bytes, cas)) => SharedValue {
                    bytes: Some(bytes.clone()),
                    cas: Some(*cas),
                },
                None => SharedValue::default(),
            }
        }

        fn shared_set(
            &self,
            key: &str,
            value: &[u8],
            cas: Option<u32>,
        ) -> Result<(), SharedDataError> {
            let mut shared = self.shared.borrow_mut();
            let current = shared.get(key).map(|(_, c)| *c);
            if let (Some(expected), Some(current)) = (cas, current) {
                if expected != current {
                    return Err(SharedDataError::CasMismatch);
                }
            }
            let next = current.unwrap_or(0).wrapping_add(1).max(1);
            shared.insert(key.to_string(), (value.to_vec(), next));
            Ok(())
        }

        fn count(&self, metric: Metric, delta: u64) {
            *self.counters.borrow_mut().entry(metric).or_default() += delta;
        }

        fn count_named(&self, name: &str, delta: u64) {
            *self
                .named_counters
                .borrow_mut()
                .entry(name.to_string())
                .or_default() += delta;
        }

        fn record(&self, metric: Metric, value: u64) {
            self.histograms
                .borrow_mut()
                .entry(metric)
                .or_default()
                .push(value);
        }

        fn log(&self, level: LogLevel, message: &str) {
            if self.log_enabled(level) {
                self.logs.borrow_mut().push((level, message.to_string()));
            }
        }

        fn log_enabled(&self, level: LogLevel) -> bool {
            self.log_level.get().is_none_or(|least| level >= least)
        }

        fn dispatch(&self, callout: &Callout) -> Result<u32, DispatchError> {
            let mut callouts = self.callouts.borrow_mut();
            callouts.push(callout.clone());
            Ok(callouts.len() as u32)
        }
    }
}
