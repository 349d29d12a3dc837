//! The city mix's load generator: wrk (Debian's `wrk`), which replays
//! whole prepared requests through a Lua script (envoy/bench/city-mix.lua),
//! headers and bodies included — oha sends one set of headers per run, and
//! the mix needs a different caller on nearly every request. Closed loop
//! only: wrk has no fixed-rate mode.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::load::{pinned, Measured};

/// Path of a `wrk` binary to use instead of the one on `PATH`.
pub const WRK_ENV: &str = "CITYGATE_WRK";

/// `CITYGATE_WRK`, or `wrk` from `PATH`.
pub fn wrk_binary() -> Result<PathBuf> {
    let binary = std::env::var_os(WRK_ENV).map_or_else(|| PathBuf::from("wrk"), PathBuf::from);
    match Command::new(&binary).arg("--version").output() {
        // wrk prints its version and usage, and exits 1.
        Ok(out) if String::from_utf8_lossy(&out.stdout).contains("wrk") => Ok(binary),
        _ => bail!(
            "the city mix needs wrk ({}): install Debian's `wrk` package (apt-get install wrk) or set {WRK_ENV}",
            binary.display()
        ),
    }
}

/// `wrk --version`'s first line.
pub fn version(binary: &Path) -> Option<String> {
    let out = Command::new(binary).arg("--version").output().ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .map(str::to_owned)
}

/// One wrk run over a request file.
pub struct Replay<'a> {
    pub url: String,
    pub script: &'a Path,
    pub requests: &'a Path,
    pub connections: usize,
    pub duration: Duration,
    /// `taskset -c` CPU list for wrk.
    pub cpus: Option<String>,
}

#[derive(Deserialize)]
struct Done {
    requests: u64,
    duration_us: u64,
    connect: u64,
    read: u64,
    write: u64,
    status: u64,
    timeout: u64,
    p50_us: f64,
    p99_us: f64,
    p99_9_us: f64,
    max_us: f64,
}

impl Replay<'_> {
    /// Runs wrk; `status_codes` holds `non-2xx` (wrk counts no more than
    /// that: the driver reads Envoy's and citygate's counters for the rest).
    pub fn run(&self, wrk: &Path) -> Result<Measured> {
        let mut cmd = pinned(wrk, self.cpus.as_deref());
        let secs = self.duration.as_secs_f64().ceil().max(1.0);
        cmd.args(["-t", "1", "-c", &self.connections.to_string()])
            .args(["-d", &format!("{secs:.0}s"), "--timeout", "10s", "-s"])
            .arg(self.script)
            .arg(&self.url)
            .arg("--")
            .arg(self.requests)
            .stdin(Stdio::null());
        let out = cmd.output().context("running wrk")?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!(
                "wrk failed ({}): {}{}",
                out.status,
                stdout,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let line = stdout
            .lines()
            .rev()
            .find(|l| l.starts_with('{'))
            .with_context(|| format!("wrk printed no summary line: {stdout}"))?;
        let done: Done =
            serde_json::from_str(line).with_context(|| format!("wrk's summary line: {line}"))?;
        let seconds = done.duration_us as f64 / 1e6;
        let latency = [
            ("p50", done.p50_us),
            ("p99", done.p99_us),
            ("p99.9", done.p99_9_us),
            ("max", done.max_us),
        ]
        .into_iter()
        .map(|(k, us)| (k.to_owned(), us / 1e6))
        .collect();
        let errors: BTreeMap<String, u64> = [
            ("connect", done.connect),
            ("read", done.read),
            ("write", done.write),
            ("timeout", done.timeout),
        ]
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| (k.to_owned(), n))
        .collect();
        Ok(Measured {
            requests_per_sec: if seconds > 0.0 {
                done.requests as f64 / seconds
            } else {
                0.0
            },
            success_rate: if done.requests > 0 {
                1.0 - done.status as f64 / done.requests as f64
            } else {
                0.0
            },
            latency,
            status_codes: BTreeMap::from([("non-2xx".to_owned(), done.status)]),
            errors,
            total_seconds: seconds,
        })
    }
}
