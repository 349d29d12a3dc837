//! Envoy's admin API as the tests, the soak and the benchmark read it: plain
//! GETs, the `/stats` counters, the Prometheus page where citygate's metrics
//! appear (`/stats/prometheus`), and the resident memory of the process.
//!
//! One parser for the Prometheus page, so every reader agrees on what a
//! counter's value is.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;

use anyhow::{bail, Context, Result};

/// Admin pages (a full `/config_dump` included) stay far below this.
const MAX_PAGE_BYTES: u64 = 64 * 1024 * 1024;

/// The admin listener of one Envoy on 127.0.0.1.
#[derive(Debug, Clone)]
pub struct Admin {
    port: u16,
    agent: ureq::Agent,
}

impl Admin {
    /// `agent` must not turn non-2xx statuses into errors: a page that is
    /// not 200 is reported with its status.
    pub fn new(port: u16, agent: ureq::Agent) -> Self {
        Admin { port, agent }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<admin>/<path>`.
    pub fn url(&self, path: &str) -> String {
        let slash = if path.starts_with('/') { "" } else { "/" };
        format!("http://127.0.0.1:{}{slash}{path}", self.port)
    }

    /// An admin GET (e.g. `/config_dump`, `/listeners`); anything but 200 is
    /// an error.
    pub fn get(&self, path: &str) -> Result<String> {
        let mut response = self.agent.get(self.url(path)).call()?;
        if response.status().as_u16() != 200 {
            bail!("admin {path}: {}", response.status());
        }
        Ok(response
            .body_mut()
            .with_config()
            .limit(MAX_PAGE_BYTES)
            .read_to_string()?)
    }

    /// Whether `/ready` says `LIVE` (false while Envoy is still starting or
    /// not answering at all).
    pub fn is_live(&self) -> bool {
        self.get("/ready").is_ok_and(|body| body.trim() == "LIVE")
    }

    /// One counter or gauge of the `/stats` page (0 when absent).
    pub fn stat(&self, name: &str) -> Result<u64> {
        let stats = self.get(&format!("/stats?filter=^{}$", literal_pattern(name)))?;
        Ok(stats
            .lines()
            .filter_map(|line| line.split_once(": "))
            .find(|(key, _)| *key == name)
            .and_then(|(_, value)| value.trim().parse().ok())
            .unwrap_or(0))
    }

    /// The `/stats/prometheus` page, parsed.
    pub fn metrics(&self) -> Result<Metrics> {
        Ok(Metrics::parse(self.get("/stats/prometheus")?))
    }

    /// One metric of the Prometheus page (0 when absent: Envoy exports
    /// some counters only once they moved).
    pub fn metric(&self, name: &str) -> Result<u64> {
        Ok(self.metrics()?.value(name))
    }
}

/// `text` as an RE2 pattern matching exactly itself (Envoy's `?filter=`):
/// every character but ASCII letters, digits and `_` is escaped, which RE2
/// allows for any punctuation. Stat names are ASCII; the regex crate is not
/// worth its build time in `cargo demo` for this one use.
fn literal_pattern(text: &str) -> String {
    let mut pattern = String::with_capacity(text.len() * 2);
    for c in text.chars() {
        if !(c.is_ascii_alphanumeric() || c == '_') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern
}

/// A snapshot of the Prometheus page: whole-number samples by metric name,
/// summed over label sets (`name{…} value` and `name value` lines).
#[derive(Debug, Clone)]
pub struct Metrics {
    text: String,
    values: BTreeMap<String, u64>,
}

impl Metrics {
    pub fn parse(text: String) -> Self {
        let mut values = BTreeMap::new();
        for line in text.lines().filter(|line| !line.starts_with('#')) {
            let Some(end) = line.find(['{', ' ']) else {
                continue;
            };
            // Fractional samples (histogram sums) are not counters.
            let Some(value) = line
                .rsplit(' ')
                .next()
                .and_then(|v| v.trim().parse::<u64>().ok())
            else {
                continue;
            };
            *values.entry(line[..end].to_owned()).or_insert(0) += value;
        }
        Metrics { text, values }
    }

    /// The metric's value; `None` when the page has no such sample.
    pub fn get(&self, name: &str) -> Option<u64> {
        self.values.get(name).copied()
    }

    /// The metric's value, 0 when absent.
    pub fn value(&self, name: &str) -> u64 {
        self.get(name).unwrap_or(0)
    }

    /// The page as Envoy served it (for failure messages).
    pub fn text(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Resident set size of a process in KiB (`VmRSS` of `/proc/<pid>/status`;
/// Linux only, like the runs that measure it).
pub fn process_rss_kib(pid: u32) -> Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .context("no VmRSS in /proc/<pid>/status")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_literal_pattern_escapes_what_re2_would_read_as_syntax() {
        assert_eq!(
            literal_pattern("citygate_auth_denied"),
            "citygate_auth_denied"
        );
        assert_eq!(
            literal_pattern("route=.=a;.;x+y"),
            "route\\=\\.\\=a\\;\\.\\;x\\+y"
        );
    }

    const PAGE: &str = "\
# TYPE citygate_ratelimit_limited counter
citygate_ratelimit_limited{} 450
citygate_ratelimit_limited_total{} 7
envoy_cluster_upstream_rq_rx_reset{envoy_cluster_name=\"city_api\"} 2
envoy_cluster_upstream_rq_rx_reset{envoy_cluster_name=\"jwks\"} 1
plain_gauge 3
citygate_policy_eval_us_sum{} 12.5
";

    #[test]
    fn metrics_are_read_by_exact_name_and_summed_over_labels() {
        let metrics = Metrics::parse(PAGE.to_owned());
        assert_eq!(metrics.get("citygate_ratelimit_limited"), Some(450));
        assert_eq!(metrics.get("envoy_cluster_upstream_rq_rx_reset"), Some(3));
        assert_eq!(metrics.get("plain_gauge"), Some(3));
        assert_eq!(metrics.get("citygate_ratelimit"), None);
        assert_eq!(metrics.get("citygate_policy_eval_us_sum"), None);
        assert_eq!(metrics.value("citygate_missing"), 0);
        assert_eq!(metrics.text(), PAGE);
    }

    #[test]
    fn rss_of_this_process_is_read() {
        let kib = process_rss_kib(std::process::id()).expect("VmRSS");
        assert!(kib > 0);
    }
}
