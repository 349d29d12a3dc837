//! The load generator: `oha` (crates.io), installed into `target/tools` on
//! first use. Closed-loop runs measure the most requests/s; open-loop runs
//! send at a fixed rate with `--latency-correction`, so a stalled response
//! delays the latency of every request scheduled behind it (no coordinated
//! omission).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::toolchain::scrubbed_cargo;

pub const OHA_VERSION: &str = "1.16.0";
/// Path of an `oha` binary to use instead of installing one.
pub const OHA_ENV: &str = "CITYGATE_OHA";
/// oha's error for requests in flight when a `-z` run ends.
const DEADLINE_ABORT: &str = "aborted due to deadline";

/// The `oha` binary: `CITYGATE_OHA`, or `target/tools/bin/oha` at
/// [`OHA_VERSION`], installed with `cargo install --locked` when missing.
pub fn oha_binary(root: &Path) -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(OHA_ENV) {
        return Ok(PathBuf::from(path));
    }
    let tools = root.join("target").join("tools");
    let binary = tools.join("bin").join("oha");
    if version(&binary).is_some_and(|v| v.contains(OHA_VERSION)) {
        return Ok(binary);
    }
    eprintln!(
        "bench: installing oha {OHA_VERSION} into {} (cargo install --locked; once, a few minutes)…",
        tools.display()
    );
    let status = scrubbed_cargo()
        .args([
            "install",
            "oha",
            "--locked",
            "--version",
            OHA_VERSION,
            "--root",
        ])
        .arg(&tools)
        .status()
        .context("running cargo install oha")?;
    if !status.success() || !binary.is_file() {
        bail!("cargo install oha {OHA_VERSION} failed ({status})");
    }
    Ok(binary)
}

/// `oha --version`.
pub fn version(binary: &Path) -> Option<String> {
    let out = Command::new(binary).arg("--version").output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// How requests are sent.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pace {
    /// As fast as `connections` connections allow.
    ClosedLoop,
    /// A fixed rate (requests/s), latency measured from the scheduled send.
    OpenLoop { rate: f64 },
}

/// One `oha` invocation.
#[derive(Debug, Clone)]
pub struct Load {
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub connections: usize,
    pub pace: Pace,
    pub duration: Duration,
    /// A fixed number of requests instead of a duration.
    pub requests: Option<u64>,
    /// The URL is a pattern (`--rand-regex-url`; dots are literal).
    pub url_pattern: bool,
    /// `taskset -c` CPU list for oha.
    pub cpus: Option<String>,
}

/// What the benchmark keeps of oha's JSON report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Measured {
    pub requests_per_sec: f64,
    pub success_rate: f64,
    /// Seconds, from oha's `latencyPercentiles` (`p50`, `p99`, `p99.9`, …).
    pub latency: BTreeMap<String, f64>,
    pub status_codes: BTreeMap<String, u64>,
    pub errors: BTreeMap<String, u64>,
    pub total_seconds: f64,
}

impl Measured {
    /// A percentile in microseconds (`"p99.9"`).
    pub fn micros(&self, percentile: &str) -> Option<f64> {
        self.latency
            .get(percentile)
            .filter(|v| v.is_finite())
            .map(|s| s * 1e6)
    }

    /// Requests answered with anything but 200, plus transport errors
    /// (requests still in flight when a timed run ends do not count).
    pub fn failures(&self) -> u64 {
        let non_200: u64 = self
            .status_codes
            .iter()
            .filter(|(code, _)| code.as_str() != "200")
            .map(|(_, n)| n)
            .sum();
        let errors: u64 = self
            .errors
            .iter()
            .filter(|(error, _)| error.as_str() != DEADLINE_ABORT)
            .map(|(_, n)| n)
            .sum();
        non_200 + errors
    }
}

#[derive(Deserialize)]
struct OhaReport {
    summary: OhaSummary,
    #[serde(rename = "latencyPercentiles")]
    latency_percentiles: BTreeMap<String, Option<f64>>,
    #[serde(rename = "statusCodeDistribution")]
    status_code_distribution: BTreeMap<String, u64>,
    #[serde(rename = "errorDistribution")]
    error_distribution: BTreeMap<String, u64>,
}

#[derive(Deserialize)]
struct OhaSummary {
    #[serde(rename = "successRate")]
    success_rate: Option<f64>,
    total: f64,
    #[serde(rename = "requestsPerSec")]
    requests_per_sec: f64,
}

/// `binary` as a command, run on `cpus` (`taskset -c`) when given.
pub fn pinned(binary: &Path, cpus: Option<&str>) -> Command {
    match cpus {
        Some(cpus) => {
            let mut cmd = Command::new("taskset");
            cmd.args(["-c", cpus]).arg(binary);
            cmd
        }
        None => Command::new(binary),
    }
}

impl Load {
    pub fn run(&self, oha: &Path) -> Result<Measured> {
        let mut cmd = pinned(oha, self.cpus.as_deref());
        cmd.args(["--no-tui", "--output-format", "json"])
            .args(["-c", &self.connections.to_string()]);
        match self.requests {
            Some(n) => cmd.args(["-n", &n.to_string()]),
            None => cmd.args(["-z", &format!("{}ms", self.duration.as_millis())]),
        };
        if let Pace::OpenLoop { rate } = self.pace {
            cmd.args(["-q", &format!("{rate:.0}"), "--latency-correction"]);
        }
        if self.url_pattern {
            cmd.arg("--rand-regex-url");
        }
        for (name, value) in &self.headers {
            cmd.arg("-H").arg(format!("{name}: {value}"));
        }
        cmd.arg(&self.url).stdin(Stdio::null());
        let out = cmd.output().context("running oha")?;
        if !out.status.success() {
            bail!(
                "oha failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let report: OhaReport = serde_json::from_slice(&out.stdout).with_context(|| {
            format!(
                "oha's JSON report: {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })?;
        Ok(Measured {
            requests_per_sec: report.summary.requests_per_sec,
            success_rate: report.summary.success_rate.unwrap_or(0.0),
            latency: report
                .latency_percentiles
                .into_iter()
                .filter_map(|(k, v)| v.map(|v| (k, v)))
                .collect(),
            status_codes: report.status_code_distribution,
            errors: report.error_distribution,
            total_seconds: report.summary.total,
        })
    }
}
