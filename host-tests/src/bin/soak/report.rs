//! What the soak concludes: the checks (no 5xx, RSS flat after warm-up,
//! rate-limit keys bounded, valid credentials accepted) and the figures, as
//! Markdown and JSON.

use std::collections::BTreeMap;

use citygate_host::envoy::Metrics;
use serde_json::{json, Value};

use crate::args::Args;
use crate::client::Tally;
use crate::workload::INTENDED;

#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub seconds: f64,
    pub done: u64,
    pub rss_kib: u64,
}

pub struct Report {
    requests: u64,
    planned: u64,
    seconds: f64,
    by_status: BTreeMap<u16, u64>,
    by_kind: BTreeMap<(String, u16), u64>,
    errors: u64,
    failures: Vec<String>,
    unintended: u64,
    baseline_kib: u64,
    peak_kib: u64,
    final_kib: u64,
    growth_percent: f64,
    tolerance: f64,
    warmup_requests: u64,
    post_warmup_samples: usize,
    /// At most 40 evenly spaced samples: (seconds, requests done, RSS KiB).
    series: Vec<(f64, u64, u64)>,
    overflow: u64,
    limited: u64,
    max_keys: u32,
    subjects: usize,
    workers: usize,
}

impl Report {
    pub fn new(
        args: &Args,
        sent: u64,
        seconds: f64,
        tally: &Tally,
        samples: &[Sample],
        metrics: &Metrics,
    ) -> Report {
        let mut by_status = BTreeMap::new();
        for ((_, status), n) in &tally.statuses {
            *by_status.entry(*status).or_default() += n;
        }
        let unintended = by_status
            .iter()
            .filter(|(s, _)| !INTENDED.contains(s))
            .map(|(_, n)| n)
            .sum();
        let warmup_requests = sent * args.warmup_percent / 100;
        let post: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.done >= warmup_requests)
            .collect();
        // Baseline: the median of the first few samples after warm-up.
        let mut first: Vec<u64> = post.iter().take(5).map(|s| s.rss_kib).collect();
        first.sort_unstable();
        let baseline_kib = first.get(first.len() / 2).copied().unwrap_or(0);
        let peak_kib = post.iter().map(|s| s.rss_kib).max().unwrap_or(0);
        let growth_percent = if baseline_kib > 0 {
            (peak_kib as f64 / baseline_kib as f64 - 1.0) * 100.0
        } else {
            f64::NAN
        };
        Report {
            requests: sent,
            planned: args.requests,
            seconds,
            by_status,
            by_kind: tally.statuses.clone(),
            errors: tally.errors,
            failures: tally.first_failures.clone(),
            unintended,
            baseline_kib,
            peak_kib,
            final_kib: samples.last().map(|s| s.rss_kib).unwrap_or(0),
            growth_percent,
            tolerance: args.rss_tolerance,
            warmup_requests,
            post_warmup_samples: post.len(),
            series: samples
                .iter()
                .step_by(samples.len().div_ceil(40).max(1))
                .map(|s| (s.seconds, s.done, s.rss_kib))
                .collect(),
            overflow: metrics.value("citygate_ratelimit_overflow"),
            limited: metrics.value("citygate_ratelimit_limited"),
            max_keys: args.max_keys,
            subjects: args.subjects,
            workers: args.workers,
        }
    }

    fn checks(&self) -> Vec<(&'static str, bool, String)> {
        let keyed = self.max_keys > 0 && self.subjects > self.max_keys as usize;
        // Only the forged token is refused as unauthenticated: the others
        // (re-minted while the run lasts) must keep working.
        let refused: u64 = self
            .by_kind
            .iter()
            .filter(|((kind, status), _)| *status == 401 && kind != "forged-token")
            .map(|(_, n)| n)
            .sum();
        vec![
            (
                "valid credentials stay accepted",
                refused == 0,
                format!("{refused} 401s for valid tokens or keys"),
            ),
            (
                "all requests sent",
                self.requests == self.planned,
                format!("{} of {}", self.requests, self.planned),
            ),
            (
                "no 5xx, only intended statuses",
                self.unintended == 0 && self.errors == 0,
                format!(
                    "{} unintended, {} transport errors",
                    self.unintended, self.errors
                ),
            ),
            (
                "RSS flat after warm-up",
                self.post_warmup_samples >= 5 && self.growth_percent <= self.tolerance,
                format!(
                    "peak {} KiB vs baseline {} KiB: {:+.2} % (limit {} %, {} samples)",
                    self.peak_kib,
                    self.baseline_kib,
                    self.growth_percent,
                    self.tolerance,
                    self.post_warmup_samples
                ),
            ),
            (
                "rate-limit keys bounded (overflow bucket used)",
                !keyed || self.overflow > 0,
                format!(
                    "citygate_ratelimit_overflow {} with {} subjects over a cap of {}",
                    self.overflow, self.subjects, self.max_keys
                ),
            ),
        ]
    }

    pub fn passed(&self) -> bool {
        self.checks().iter().all(|(_, ok, _)| *ok)
    }

    pub fn markdown(&self) -> String {
        let mut out = format!(
            "## Soak: {} requests, {} Envoy workers, {:.0} s ({:.0} req/s)\n\n| check | result | figures |\n|---|---|---|\n",
            self.requests,
            self.workers,
            self.seconds,
            self.requests as f64 / self.seconds.max(1e-9)
        );
        for (name, ok, figures) in self.checks() {
            out += &format!(
                "| {name} | {} | {figures} |\n",
                if ok { "pass" } else { "FAIL" }
            );
        }
        out += "\n| status | count |\n|---|---|\n";
        for (status, n) in &self.by_status {
            out += &format!("| {status} | {n} |\n");
        }
        out += &format!(
            "\nEnvoy RSS: baseline {} KiB (after {} warm-up requests), peak {} KiB, final {} KiB; 429s counted by the filter: {}\n",
            self.baseline_kib, self.warmup_requests, self.peak_kib, self.final_kib, self.limited
        );
        for failure in &self.failures {
            out += &format!("\nfailure: {failure}");
        }
        out
    }

    pub fn json(&self) -> Value {
        let by_kind: BTreeMap<String, u64> = self
            .by_kind
            .iter()
            .map(|((kind, status), n)| (format!("{kind} {status}"), *n))
            .collect();
        json!({
            "requests": self.requests,
            "seconds": self.seconds,
            "workers": self.workers,
            "statuses": self.by_status,
            "by_kind": by_kind,
            "transport_errors": self.errors,
            "rss_kib": { "baseline": self.baseline_kib, "peak": self.peak_kib, "final": self.final_kib },
            "rss_growth_percent": self.growth_percent,
            "warmup_requests": self.warmup_requests,
            "rss_series": self.series,
            "ratelimit": { "overflow": self.overflow, "limited": self.limited, "max_keys": self.max_keys, "subjects": self.subjects },
            "passed": self.passed(),
        })
    }
}
