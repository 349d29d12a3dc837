//! Rate limits: token buckets in proxy-wasm shared data, so a limit holds
//! across every Envoy worker (each runs its own Wasm VM).
//!
//! A request is checked against every rule that applies, in order; each
//! takes a token from its bucket and the first refusal refuses the request.
//! Tokens already taken by earlier rules are not given back: a refused
//! request still cost its client those, which errs on the strict side and
//! keeps each check a single compare-and-swap.

mod bucket;
mod config;
mod headers;
mod key;
mod rule;
mod store;

use std::cell::Cell;

pub use config::{
    BucketConfig, ClaimEquals, Descriptor, MatchConfig, OnMissing, RateLimitConfig, RefillConfig,
    RuleConfig, Scope,
};

use crate::config::{ConfigError, RouteConfig};
use crate::deny::{Denial, Stage};
use crate::host::{Host, LogLevel};
use crate::identity::Identity;
use crate::metrics::Metric;
use crate::normalize::RequestView;
use headers::{quota_headers, retry_after_seconds, QuotaView};
use key::KeyInput;
use rule::Rule;
use store::StoreError;

/// Shards swept per tick: bounds the tick's work however many keys are live;
/// a full pass over every shard takes `shards / SWEEP_SHARDS_PER_TICK` ticks.
const SWEEP_SHARDS_PER_TICK: usize = 64;

#[derive(Debug, Default)]
pub struct RateLimiter {
    rules: Vec<Rule>,
    legacy_headers: bool,
    /// Position of the sweep across all rules' shards (this VM's own).
    sweep_cursor: Cell<usize>,
}

impl RateLimiter {
    pub fn compile(config: &RateLimitConfig, routes: &[RouteConfig]) -> Result<Self, ConfigError> {
        Ok(Self {
            rules: rule::compile_rules(config, routes)?,
            legacy_headers: config.legacy_headers,
            sweep_cursor: Cell::new(0),
        })
    }

    /// Ok with the headers to add to the response, or the 429 denial.
    pub fn check(
        &self,
        view: &RequestView,
        identity: &Identity,
        route: &RouteConfig,
        host: &dyn Host,
    ) -> Result<Vec<(String, String)>, Denial> {
        let input = KeyInput {
            view,
            identity,
            route,
        };
        let now = host.now_unix_nanos();
        let mut tightest: Option<QuotaView> = None;
        for rule in &self.rules {
            if !rule.applies(view, identity, route) {
                continue;
            }
            let Some(key) = rule.key.hash(&input) else {
                continue;
            };
            host.count(Metric::RatelimitChecked, 1);
            let outcome = match rule.store.take(&key, now, host) {
                Ok(outcome) => outcome,
                Err(error) => {
                    self.store_failed(rule, error, host)?;
                    continue;
                }
            };
            if outcome.overflow {
                host.count(Metric::RatelimitOverflow, 1);
            }
            let params = rule.store.params();
            let quota = QuotaView::new(&rule.name, params, rule.window_seconds, outcome.state);
            if !outcome.admitted {
                if rule.shadow {
                    host.count(Metric::RatelimitShadowLimited, 1);
                    host.log(
                        LogLevel::Info,
                        &format!(
                            "citygate: rate-limit rule `{}` (shadow) would refuse this request",
                            rule.name
                        ),
                    );
                    continue;
                }
                let retry_after = retry_after_seconds(params.nanos_until_token(outcome.state));
                return Err(self.refusal(&quota, retry_after));
            }
            let shown = rule.response_headers && !rule.shadow;
            if shown && tightest.as_ref().is_none_or(|t| quota.is_tighter_than(t)) {
                tightest = Some(quota);
            }
        }
        Ok(tightest
            .map(|quota| quota_headers(&quota, self.legacy_headers))
            .unwrap_or_default())
    }

    /// A check that could not be decided refuses the request (fail closed),
    /// except in shadow mode, whose whole point is never to refuse.
    fn store_failed(&self, rule: &Rule, error: StoreError, host: &dyn Host) -> Result<(), Denial> {
        host.log(
            LogLevel::Warn,
            &format!(
                "citygate: rate-limit rule `{}` could not be checked: {}",
                rule.name,
                error.describe()
            ),
        );
        if rule.shadow {
            host.count(Metric::RatelimitShadowLimited, 1);
            return Ok(());
        }
        Err(Denial::new(
            429,
            Stage::RateLimit,
            "rate-limited",
            "Too Many Requests",
            "the rate limiter could not admit this request now; retry later",
            Metric::RatelimitLimited,
        )
        .with_header("retry-after", "1"))
    }

    fn refusal(&self, quota: &QuotaView<'_>, retry_after: u64) -> Denial {
        let mut denial = Denial::new(
            429,
            Stage::RateLimit,
            "rate-limited",
            "Too Many Requests",
            "the rate limit for this API is exhausted; retry later",
            Metric::RatelimitLimited,
        )
        .with_header("retry-after", retry_after.to_string());
        denial
            .headers
            .extend(quota_headers(quota, self.legacy_headers));
        denial
    }

    /// Called on the root context's tick: forgets buckets that have refilled
    /// completely (a full bucket is the same as none), a slice of shards per
    /// tick so the tick stays short.
    pub fn sweep(&self, host: &dyn Host) {
        let total: usize = self
            .rules
            .iter()
            .map(|r| r.store.shard_count() as usize)
            .sum();
        if total == 0 {
            return;
        }
        let now = host.now_unix_nanos();
        let start = self.sweep_cursor.get() % total;
        for offset in 0..SWEEP_SHARDS_PER_TICK.min(total) {
            let Some((rule, shard)) = self.locate_shard((start + offset) % total) else {
                continue;
            };
            if let Err(error) = rule.store.sweep_shard(shard, now, host) {
                host.log(
                    LogLevel::Warn,
                    &format!(
                        "citygate: rate-limit rule `{}` shard {shard} was reset: {}",
                        rule.name,
                        error.describe()
                    ),
                );
            }
        }
        self.sweep_cursor
            .set((start + SWEEP_SHARDS_PER_TICK.min(total)) % total);
    }

    /// The `index`-th shard counting across rules in order.
    fn locate_shard(&self, mut index: usize) -> Option<(&Rule, u32)> {
        for rule in &self.rules {
            let count = rule.store.shard_count() as usize;
            if index < count {
                return Some((rule, u32::try_from(index).ok()?));
            }
            index -= count;
        }
        None
    }
}

#[cfg(test)]
mod tests;
