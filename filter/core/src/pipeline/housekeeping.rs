//! Work of the root context: the periodic tick (rate-limit sweeps, JWKS
//! fetches), replies to its HTTP callouts, and what is logged when a
//! configuration is accepted.

use std::time::Duration;

use super::CompiledConfig;
use crate::host::{Host, LogLevel};
use crate::metrics::{route_denied_name, ROUTE_DENIED_STAGES};

/// With remote JWKS the tick also resumes waiting requests, so it runs often.
const FAST_TICK: Duration = Duration::from_millis(100);
const SLOW_TICK: Duration = Duration::from_secs(1);
const SWEEP_EVERY_NANOS: u64 = 1_000_000_000;

/// What the tick remembers between runs (one per root context).
#[derive(Debug, Clone, Copy, Default)]
pub struct TickState {
    last_sweep_nanos: u64,
}

impl CompiledConfig {
    /// How often the shell should call [`CompiledConfig::on_tick`].
    pub fn tick_period(&self) -> Duration {
        if self.auth.has_remote_keys() {
            FAST_TICK
        } else {
            SLOW_TICK
        }
    }

    /// Sweeps idle rate-limit buckets once a second and starts due JWKS
    /// fetches. The shell resumes requests waiting for keys afterwards.
    pub fn on_tick(&self, state: &mut TickState, host: &dyn Host) {
        let now = host.now_unix_nanos();
        if now.saturating_sub(state.last_sweep_nanos) >= SWEEP_EVERY_NANOS {
            state.last_sweep_nanos = now;
            self.limits.sweep(host);
        }
        self.auth.on_tick(host);
    }

    /// A reply to one of the root context's HTTP callouts (`status` 0 for a
    /// failed call). Returns whether new keys may have arrived, in which case
    /// the shell judges waiting requests again.
    pub fn on_callout_response(
        &self,
        token: u32,
        status: u16,
        body: &[u8],
        host: &dyn Host,
    ) -> bool {
        self.auth.on_callout_response(token, status, body, host)
    }

    /// Logged once when the configuration is accepted: the evaluator the
    /// policy runs on, and every fail-open switch in force.
    pub fn announce(&self, host: &dyn Host) {
        // Every route's denial counters exist from the start (at 0), so a
        // dashboard shows quiet routes and `increase()` sees the first one.
        for route in &self.config().routes {
            for stage in ROUTE_DENIED_STAGES {
                host.count_named(&route_denied_name(&route.name, *stage), 0);
            }
        }
        host.log(LogLevel::Info, "citygate: configuration accepted");
        if let Some(line) = self.policy.evaluator_line() {
            host.log(LogLevel::Info, &line);
        }
        for warning in self.redactor.startup_warnings() {
            host.log(LogLevel::Warn, warning);
        }
    }
}
