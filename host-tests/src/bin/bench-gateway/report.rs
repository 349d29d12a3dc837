//! Results: the raw samples (JSON) and the Markdown tables for
//! BENCHMARKS.md, with the summary lines.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::process::Command;

use serde::Serialize;

use crate::load::{Measured, Pace};
use crate::memory::LinearMemory;
use crate::variants::{Variant, Workload};
use citygate_host::city_mix::Census;

/// Which measurement a sample belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    Throughput,
    Latency,
    /// Open loop at half of citygate's own maximum: every variant keeps up,
    /// so the percentiles are added latency rather than queueing.
    LatencyBelowSaturation,
    ResponseThroughput,
    ResponseLatency,
    /// The city mix replayed by wrk, closed loop.
    CityMix,
}

#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub phase: Phase,
    pub round: usize,
    pub variant: Variant,
    pub workers: usize,
    pub workload: Workload,
    pub pace: Pace,
    pub measured: Measured,
    /// Envoy's and citygate's counters over the measured run (city mix).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub observed: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EnvoyMemory {
    pub requests: u64,
    pub keys: u64,
    pub rss_kib_after_start: u64,
    pub rss_kib_after_run: u64,
    pub requests_per_sec: f64,
    /// citygate's rate-limit counters as Envoy reports them.
    pub stats: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub memory: String,
    pub kernel: String,
    pub load_average_at_start: String,
    pub envoy: String,
    pub oha: String,
    pub rustc: String,
    pub commit: String,
    pub date: String,
    pub citygate_wasm_bytes: u64,
    pub floor_wasm_bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub rounds: usize,
    pub throughput_secs: f64,
    pub latency_secs: f64,
    pub warmup_secs: f64,
    pub connections: usize,
    pub pinned: bool,
    pub envoy_log_level: String,
    pub command: String,
    pub smoke: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub machine: Machine,
    pub settings: Settings,
    /// citygate's stages in envoy/bench/citygate-bench.json at run time.
    pub citygate_stages: Vec<String>,
    pub samples: Vec<Sample>,
    pub envoy_memory: Option<EnvoyMemory>,
    pub linear_memory: Option<LinearMemory>,
    /// What the city mix was made of, when it ran.
    pub city_mix: Option<Census>,
}

pub fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

impl Results {
    fn values(&self, phase: Phase, variant: Variant, workers: usize) -> Vec<&Measured> {
        self.samples
            .iter()
            .filter(|s| s.phase == phase && s.variant == variant && s.workers == workers)
            .map(|s| &s.measured)
            .collect()
    }

    /// Median requests/s of a phase's rounds.
    pub fn rps(&self, phase: Phase, variant: Variant, workers: usize) -> Option<f64> {
        let mut v: Vec<f64> = self
            .values(phase, variant, workers)
            .iter()
            .map(|m| m.requests_per_sec)
            .collect();
        median(&mut v)
    }

    /// Median of a latency percentile over a phase's rounds, in µs.
    pub fn latency(&self, phase: Phase, variant: Variant, percentile: &str) -> Option<f64> {
        let mut v: Vec<f64> = self
            .values(phase, variant, 1)
            .iter()
            .filter_map(|m| m.micros(percentile))
            .collect();
        median(&mut v)
    }

    fn spread(&self, phase: Phase, variant: Variant, workers: usize) -> String {
        let v: Vec<f64> = self
            .values(phase, variant, workers)
            .iter()
            .map(|m| m.requests_per_sec)
            .collect();
        match (
            v.iter().copied().reduce(f64::min),
            v.iter().copied().reduce(f64::max),
        ) {
            (Some(lo), Some(hi)) if v.len() > 1 => format!(" ({:.0}–{:.0})", lo, hi),
            _ => String::new(),
        }
    }

    fn ratio(&self, over: Variant) -> Option<f64> {
        Some(
            self.rps(Phase::Throughput, Variant::Citygate, 1)?
                / self.rps(Phase::Throughput, over, 1)?,
        )
    }

    fn city_mix_ratio(&self) -> Option<f64> {
        Some(
            self.rps(Phase::CityMix, Variant::Citygate, 1)?
                / self.rps(Phase::CityMix, Variant::WasmFloor, 1)?,
        )
    }

    /// The lines BENCHMARKS.md quotes: `pipeline vs X: 0.NN` and
    /// `city-mix vs wasm-floor: 0.NN`.
    pub fn summary_lines(&self) -> Vec<String> {
        let city_mix = match self.city_mix_ratio() {
            Some(r) => format!("city-mix vs wasm-floor: {r:.2}"),
            None => "city-mix vs wasm-floor: n/a".to_owned(),
        };
        let pipeline = [
            ("no-filter", Variant::NoFilter),
            ("wasm-floor", Variant::WasmFloor),
            ("native", Variant::Native),
        ]
        .iter()
        .map(|(name, v)| match self.ratio(*v) {
            Some(r) => format!("pipeline vs {name}: {r:.2}"),
            None => format!("pipeline vs {name}: n/a"),
        });
        pipeline.chain([city_mix]).collect()
    }

    fn added_p99(&self, phase: Phase, variant: Variant) -> Option<f64> {
        Some(self.latency(phase, variant, "p99")? - self.latency(phase, Variant::NoFilter, "p99")?)
    }

    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let rounds = self.settings.rounds;
        if self.settings.smoke {
            md.push_str("> **Smoke run** (`--smoke`): proves the harness works; its numbers are not results.\n\n");
        }
        self.machine_table(&mut md);
        let _ = writeln!(
            md,
            "\ncitygate stages configured (envoy/bench/citygate-bench.json): {}.\n",
            self.citygate_stages.join(", ")
        );

        md.push_str("Variants (same listener, same `direct_response` upstream; envoy/bench/):\n\n");
        for v in Variant::ALL {
            let _ = writeln!(md, "- {v}: {}", v.describe());
        }
        let _ = writeln!(md, "\n### Throughput\n");
        let _ = writeln!(
            md,
            "Closed loop, {} connections, {} s per run after {} s warm-up; requests/s, median of {rounds} interleaved rounds (min–max).\n",
            self.settings.connections, self.settings.throughput_secs, self.settings.warmup_secs
        );
        md.push_str("| variant | 1 worker | 2 workers | 1 worker vs (a) | 1 worker vs (b) |\n|---|---:|---:|---:|---:|\n");
        for v in Variant::ALL {
            let cell = |w| {
                self.rps(Phase::Throughput, v, w).map_or("–".into(), |r| {
                    format!("{r:.0}{}", self.spread(Phase::Throughput, v, w))
                })
            };
            let vs = |other| match (
                self.rps(Phase::Throughput, v, 1),
                self.rps(Phase::Throughput, other, 1),
            ) {
                (Some(a), Some(b)) => format!("{:.2}", a / b),
                _ => "–".into(),
            };
            let _ = writeln!(
                md,
                "| {v} | {} | {} | {} | {} |",
                cell(1),
                cell(2),
                vs(Variant::NoFilter),
                vs(Variant::WasmFloor)
            );
        }

        self.latency_table(
            &mut md,
            Phase::Latency,
            "Latency",
            "half of (a)'s 1-worker maximum",
            &Variant::ALL,
        );
        self.latency_table(
            &mut md,
            Phase::LatencyBelowSaturation,
            "Latency below citygate's saturation",
            "half of (c)'s 1-worker maximum, a rate every variant sustains",
            &Variant::ALL,
        );
        self.response_tables(&mut md);
        self.city_mix_table(&mut md);
        self.memory_table(&mut md);

        md.push_str("\n### Summary\n\n```\n");
        for line in self.summary_lines() {
            let _ = writeln!(md, "{line}");
        }
        md.push_str("```\n");
        self.targets(&mut md);
        md
    }

    fn pace_of(&self, phase: Phase) -> Option<f64> {
        self.samples
            .iter()
            .find_map(|s| match (s.phase == phase, s.pace) {
                (true, Pace::OpenLoop { rate }) => Some(rate),
                _ => None,
            })
    }

    fn latency_table(
        &self,
        md: &mut String,
        phase: Phase,
        title: &str,
        basis: &str,
        variants: &[Variant],
    ) {
        let Some(rate) = self.pace_of(phase) else {
            return;
        };
        let _ = writeln!(md, "\n### {title}\n");
        let _ = writeln!(
            md,
            "Open loop at {rate:.0} requests/s ({basis}), 1 worker, {} s per run, oha `--latency-correction` (no coordinated omission); µs, median of {} rounds. A variant whose achieved rate is below the target rate was saturated: its latency is queueing.\n",
            self.settings.latency_secs, self.settings.rounds
        );
        md.push_str("| variant | achieved requests/s | p50 | p99 | p99.9 | added p99 vs (a) |\n|---|---:|---:|---:|---:|---:|\n");
        for &v in variants {
            let mut achieved: Vec<f64> = self
                .values(phase, v, 1)
                .iter()
                .map(|m| m.requests_per_sec)
                .collect();
            let achieved = median(&mut achieved).map_or("–".into(), |r| format!("{r:.0}"));
            let us = |p| {
                self.latency(phase, v, p)
                    .map_or("–".into(), |x| format!("{x:.0}"))
            };
            let added = self
                .added_p99(phase, v)
                .map_or("–".into(), |x| format!("{x:+.0}"));
            let _ = writeln!(
                md,
                "| {v} | {achieved} | {} | {} | {} | {added} |",
                us("p50"),
                us("p99"),
                us("p99.9")
            );
        }
    }

    fn response_tables(&self, md: &mut String) {
        let variants = [Variant::NoFilter, Variant::Citygate];
        if self
            .rps(Phase::ResponseThroughput, Variant::NoFilter, 1)
            .is_none()
        {
            return;
        }
        let _ = writeln!(md, "\n### Response: 16 KiB NGSI body\n");
        md.push_str("`GET /v2/entities?type=Vehicle` answered with envoy/bench/ngsi-16k.json; citygate minimizes it with the profile its policy chooses. Closed loop, 1 worker, requests/s, median (min–max).\n\n");
        md.push_str("| variant | requests/s | vs (a) |\n|---|---:|---:|\n");
        for v in variants {
            let rps = self.rps(Phase::ResponseThroughput, v, 1);
            let base = self.rps(Phase::ResponseThroughput, Variant::NoFilter, 1);
            let _ = writeln!(
                md,
                "| {v} | {}{} | {} |",
                rps.map_or("–".into(), |r| format!("{r:.0}")),
                self.spread(Phase::ResponseThroughput, v, 1),
                match (rps, base) {
                    (Some(a), Some(b)) => format!("{:.2}", a / b),
                    _ => "–".into(),
                }
            );
        }
        self.latency_table(
            md,
            Phase::ResponseLatency,
            "Response latency: 16 KiB NGSI body",
            "half of (a)'s 1-worker maximum for this response",
            &variants,
        );
    }

    fn city_mix_table(&self, md: &mut String) {
        let Some(census) = &self.city_mix else {
            return;
        };
        let variants = [Variant::NoFilter, Variant::WasmFloor, Variant::Citygate];
        let _ = writeln!(md, "\n### City mix\n");
        let _ = writeln!(
            md,
            "wrk replays {} prepared requests (envoy/bench/city-mix.lua; host-tests/src/bin/bench-gateway/city_mix.rs): {} distinct bearer tokens (RS256, ES256, EdDSA, HS256; every role of the city pack), {} API keys, anonymous callers from {} addresses (x-forwarded-for), {} distinct paths over NGSI-v2, NGSI-LD and Open311, {} requests with a body. citygate is meant to answer {}. Closed loop, {} connections, 1 worker, {} s per run after {} s warm-up; requests/s, median of {} interleaved rounds (min–max); wrk's latency is closed-loop (not corrected for coordinated omission).\n",
            census.requests,
            census.distinct_tokens,
            census.distinct_api_keys,
            census.distinct_client_ips,
            census.distinct_paths,
            census.with_body,
            census
                .intended
                .iter()
                .map(|(status, n)| format!(
                    "{status} to {:.1} %",
                    100.0 * *n as f64 / census.requests.max(1) as f64
                ))
                .collect::<Vec<_>>()
                .join(", "),
            self.settings.connections,
            self.settings.throughput_secs,
            self.settings.warmup_secs,
            self.settings.rounds
        );
        md.push_str("| variant | requests/s | vs (a) | vs (b) | p50 µs | p99 µs |\n|---|---:|---:|---:|---:|---:|\n");
        for v in variants {
            let rps = self.rps(Phase::CityMix, v, 1);
            let vs = |other| match (rps, self.rps(Phase::CityMix, other, 1)) {
                (Some(a), Some(b)) => format!("{:.2}", a / b),
                _ => "–".into(),
            };
            let us = |p| {
                self.latency(Phase::CityMix, v, p)
                    .map_or("–".into(), |x| format!("{x:.0}"))
            };
            let _ = writeln!(
                md,
                "| {v} | {}{} | {} | {} | {} | {} |",
                rps.map_or("–".into(), |r| format!("{r:.0}")),
                self.spread(Phase::CityMix, v, 1),
                vs(Variant::NoFilter),
                vs(Variant::WasmFloor),
                us("p50"),
                us("p99")
            );
        }
        // What citygate did with the traffic, summed over its runs.
        let mut observed: BTreeMap<&str, u64> = BTreeMap::new();
        for s in self
            .samples
            .iter()
            .filter(|s| s.phase == Phase::CityMix && s.variant == Variant::Citygate)
        {
            for (k, v) in &s.observed {
                *observed.entry(k.as_str()).or_insert(0) += v;
            }
        }
        let total = observed
            .get("citygate_requests_total")
            .copied()
            .unwrap_or(0);
        if total > 0 {
            md.push_str("\nWhat citygate did with the measured requests (its counters, all rounds):\n\n| counter | requests | share |\n|---|---:|---:|\n");
            for name in [
                "citygate_requests_allowed",
                "citygate_policy_denied",
                "citygate_auth_invalid_credentials",
                "citygate_ratelimit_limited",
                "citygate_route_unmatched",
                "citygate_jwt_cache_hit",
                "downstream_rq_2xx",
                "downstream_rq_4xx",
                "downstream_rq_5xx",
            ] {
                let n = observed.get(name).copied().unwrap_or(0);
                let _ = writeln!(
                    md,
                    "| `{name}` | {n} | {:.1} % |",
                    100.0 * n as f64 / total as f64
                );
            }
        }
    }

    fn memory_table(&self, md: &mut String) {
        if self.envoy_memory.is_none() && self.linear_memory.is_none() {
            return;
        }
        let _ = writeln!(md, "\n### Memory\n");
        md.push_str("| what | value |\n|---|---:|\n");
        if let Some(m) = &self.envoy_memory {
            let _ = writeln!(
                md,
                "| Envoy RSS after start (citygate, 1 worker) | {:.1} MiB |",
                m.rss_kib_after_start as f64 / 1024.0
            );
            let _ = writeln!(
                md,
                "| Envoy RSS after {} requests, {} distinct rate-limit keys | {:.1} MiB |",
                m.requests,
                m.keys,
                m.rss_kib_after_run as f64 / 1024.0
            );
            for line in &m.stats {
                let _ = writeln!(md, "| Envoy stat `{}` | |", line.trim());
            }
        }
        if let Some(l) = &self.linear_memory {
            let _ = writeln!(
                md,
                "| VM linear memory after start (wasmtime host) | {:.1} MiB |",
                l.bytes_after_start as f64 / 1048576.0
            );
            let _ = writeln!(
                md,
                "| VM linear memory after {} requests, {} keys (wasmtime host) | {:.1} MiB |",
                l.requests,
                l.keys,
                l.bytes_after_run as f64 / 1048576.0
            );
            let _ = writeln!(
                md,
                "| keys in the overflow bucket / refused (wasmtime host) | {} / {} |",
                l.overflow, l.limited
            );
        }
    }

    fn targets(&self, md: &mut String) {
        md.push_str("\n### Targets\n\n| target | measured | met |\n|---|---:|:---:|\n");
        let mut row = |name: &str, value: Option<f64>, shown: String, ok: &dyn Fn(f64) -> bool| {
            let met = value.map_or("–", |v| if ok(v) { "yes" } else { "**no**" });
            let _ = writeln!(md, "| {name} | {shown} | {met} |");
        };
        let r = self.ratio(Variant::WasmFloor);
        row(
            "pipeline vs wasm-floor ≥ 0.85 (1 worker)",
            r,
            r.map_or("–".into(), |r| format!("{r:.2}")),
            &|r| r >= 0.85,
        );
        let r = self.ratio(Variant::Native);
        row(
            "pipeline vs native ≥ 0.90 (1 worker)",
            r,
            r.map_or("–".into(), |r| format!("{r:.2}")),
            &|r| r >= 0.90,
        );
        let r = self.city_mix_ratio();
        row(
            "city-mix vs wasm-floor ≥ 0.70 (1 worker)",
            r,
            r.map_or("–".into(), |r| format!("{r:.2}")),
            &|r| r >= 0.70,
        );
        let p = self.added_p99(Phase::Latency, Variant::Citygate);
        row(
            "added p99 ≤ 100 µs (at half of (a)'s maximum)",
            p,
            p.map_or("–".into(), |p| format!("{p:.0} µs")),
            &|p| p <= 100.0,
        );
        let p = self.added_p99(Phase::LatencyBelowSaturation, Variant::Citygate);
        row(
            "added p99 ≤ 100 µs (at half of (c)'s maximum)",
            p,
            p.map_or("–".into(), |p| format!("{p:.0} µs")),
            &|p| p <= 100.0,
        );
        let size = self.machine.citygate_wasm_bytes as f64;
        row(
            ".wasm ≤ 3 MB",
            Some(size),
            format!("{:.2} MB", size / 1e6),
            &|s| s <= 3e6,
        );
        let mem = self
            .linear_memory
            .as_ref()
            .map(|l| l.bytes_after_run as f64);
        let keys = self.linear_memory.as_ref().map_or(100_000, |l| l.keys);
        row(
            &format!("per-VM linear memory ≤ 16 MB ({keys} keys; target at 100000)"),
            mem,
            mem.map_or("–".into(), |m| format!("{:.1} MB", m / 1e6)),
            &|m| m <= 16e6,
        );
        md.push_str("| Rego decision ≤ 5 µs | see `cargo bench -p citygate-core --bench stages` (policy) | |\n");
    }

    fn machine_table(&self, md: &mut String) {
        let m = &self.machine;
        let _ = writeln!(md, "| machine | |\n|---|---|");
        for (k, v) in [
            ("CPU", format!("{} ({} cores)", m.cpu, m.cores)),
            ("memory", m.memory.clone()),
            ("kernel", m.kernel.clone()),
            ("load average at start", m.load_average_at_start.clone()),
            ("Envoy", m.envoy.clone()),
            ("load generator", m.oha.clone()),
            ("rustc", m.rustc.clone()),
            ("commit", m.commit.clone()),
            ("date", m.date.clone()),
            (
                "citygate_filter.wasm",
                format!("{} bytes", m.citygate_wasm_bytes),
            ),
            ("wasm floor", format!("{} bytes", m.floor_wasm_bytes)),
            ("command", format!("`{}`", self.settings.command)),
            (
                "CPU pinning",
                if self.settings.pinned {
                    "1-worker runs: Envoy on CPU 0, oha on CPU 1".into()
                } else {
                    "none".into()
                },
            ),
            ("Envoy log level", self.settings.envoy_log_level.clone()),
        ] {
            let _ = writeln!(md, "| {k} | {} |", v.replace('\n', " "));
        }
    }
}

/// What the machine is, for the report.
pub fn machine(root: &Path) -> Machine {
    let read = |p: &str| fs::read_to_string(p).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    let memory = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map(|kib| format!("{:.1} GiB", kib / 1048576.0))
        .unwrap_or_default();
    let git = |args: &[&str]| {
        Command::new("git")
            .current_dir(root)
            .args(args)
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    };
    let dirty = if git(&["status", "--porcelain", "--untracked-files=no"]).is_empty() {
        ""
    } else {
        " (with uncommitted changes)"
    };
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    Machine {
        cpu,
        cores: std::thread::available_parallelism().map_or(0, usize::from),
        memory,
        kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
        load_average_at_start: read("/proc/loadavg")
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        commit: format!("{}{dirty}", git(&["rev-parse", "--short", "HEAD"])),
        date,
        ..Machine::default()
    }
}

/// Writes `results.json` and `results.md` into `dir` and copies them to
/// `latest.*` beside it.
pub fn write(results: &Results, dir: &Path) -> anyhow::Result<(String, std::path::PathBuf)> {
    fs::create_dir_all(dir)?;
    let json = serde_json::to_string_pretty(results)?;
    let md = results.markdown();
    fs::write(dir.join("results.json"), &json)?;
    fs::write(dir.join("results.md"), &md)?;
    if let Some(parent) = dir.parent() {
        fs::write(parent.join("latest.json"), &json)?;
        fs::write(parent.join("latest.md"), &md)?;
    }
    Ok((md, dir.join("results.md")))
}

/// The lines of an admin `/stats` page that mention `needle`.
pub fn stat_lines(stats: &str, needle: &str) -> Vec<String> {
    stats
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_owned)
        .collect()
}
