//! A real Prometheus scraping a gateway with the shipped configuration
//! (`envoy/observability/prometheus.yml` and its `alerts.yml`), for
//! `cargo demo --with-prometheus` and the observability tests.
//!
//! The shipped file is used as written except for three things a local run
//! must change: the scrape target (the gateway's admin port), the rules
//! file's path (absolute, as Prometheus resolves it against its own working
//! directory) and the intervals (seconds instead of 15 s, so an alert fires
//! while a newcomer watches).

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;

use crate::envoy::free_port;
use crate::wasm_build::workspace_root;

/// Where the scrape configuration, the alert rules and the dashboard live.
pub fn observability_dir() -> PathBuf {
    workspace_root().join("envoy/observability")
}

/// The scrape target and interval the shipped configuration is written with.
const SHIPPED_TARGET: &str = "127.0.0.1:9901";
const SHIPPED_INTERVAL: &str = "15s";
const INSTALL_HINT: &str = "on Debian: apt-get install prometheus";

/// A running Prometheus; killed and reaped on drop.
#[derive(Debug)]
pub struct Prometheus {
    child: Child,
    port: u16,
    dir: PathBuf,
    agent: ureq::Agent,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The shipped configuration, rewritten for a local run against the admin
/// port `admin_port`, scraping and evaluating every `interval`.
pub fn local_config(admin_port: u16, interval: &str) -> Result<String> {
    let dir = observability_dir();
    let path = dir.join("prometheus.yml");
    let shipped =
        fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    // A shipped file that no longer says what is rewritten would silently
    // scrape the wrong gateway: refuse instead.
    ensure!(
        shipped.contains(SHIPPED_TARGET) && shipped.contains(SHIPPED_INTERVAL),
        "{} no longer targets {SHIPPED_TARGET} every {SHIPPED_INTERVAL}",
        path.display()
    );
    Ok(shipped
        .replace(SHIPPED_TARGET, &format!("127.0.0.1:{admin_port}"))
        .replace(SHIPPED_INTERVAL, interval)
        .replace(
            "- alerts.yml",
            &format!("- {}", dir.join("alerts.yml").display()),
        ))
}

impl Prometheus {
    /// Starts `prometheus` from `PATH` scraping the admin port `admin_port`
    /// every `interval`, keeping its configuration, data and log in `dir`,
    /// listening on `port` (`None`: a free one).
    pub fn start(admin_port: u16, interval: &str, dir: &Path, port: Option<u16>) -> Result<Self> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let config_path = dir.join("prometheus.yml");
        fs::write(&config_path, local_config(admin_port, interval)?)
            .with_context(|| format!("writing {}", config_path.display()))?;
        let port = match port {
            Some(port) => port,
            None => free_port()?,
        };
        let log = File::create(dir.join("prometheus.log"))?;
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting prometheus ({INSTALL_HINT})"))?;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(5)))
            .build()
            .into();
        Ok(Prometheus {
            child,
            port,
            dir: dir.to_path_buf(),
            agent,
        })
    }

    /// Whether a `prometheus` binary is on `PATH`.
    pub fn installed() -> bool {
        Command::new("prometheus")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The web UI and HTTP API, e.g. `http://127.0.0.1:9090` (no slash).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Prometheus' log (its own and the rule manager's), for failure
    /// messages.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// A GET on the HTTP API, e.g. `/api/v1/alerts`, as JSON.
    pub fn api(&self, path: &str) -> Result<Value> {
        let url = format!("{}{path}", self.url());
        let text = self
            .agent
            .get(&url)
            .call()
            .with_context(|| format!("GET {url}"))?
            .body_mut()
            .read_to_string()?;
        serde_json::from_str(&text).with_context(|| format!("GET {url}: not JSON"))
    }

    /// Waits until Prometheus has scraped the gateway successfully: before
    /// that, a burst of requests would be its first sample, and a counter's
    /// first sample shows no increase.
    pub fn wait_for_scrape(&mut self, patience: Duration) -> Result<()> {
        let deadline = Instant::now() + patience;
        loop {
            let up = self.api("/api/v1/query?query=up%7Bjob%3D%22citygate%22%7D");
            if up.is_ok_and(|v| v["data"]["result"][0]["value"][1] == "1") {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                bail!("prometheus exited ({status}):\n{}", self.log());
            }
            if Instant::now() > deadline {
                bail!(
                    "Prometheus did not scrape the gateway within {patience:?}:\n{}",
                    self.log()
                );
            }
            sleep(Duration::from_millis(200));
        }
    }

    /// The alerts currently firing named `name`.
    pub fn firing(&self, name: &str) -> Result<Vec<Value>> {
        let alerts = self.api("/api/v1/alerts")?;
        Ok(alerts["data"]["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["labels"]["alertname"] == name && a["state"] == "firing")
            .cloned()
            .collect())
    }
}

/// Why `--with-prometheus` cannot run here, if it cannot.
pub fn missing_prometheus() -> Option<String> {
    (!Prometheus::installed())
        .then(|| format!("--with-prometheus needs a `prometheus` binary on PATH ({INSTALL_HINT})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_local_config_targets_the_gateway_and_reads_the_shipped_rules() {
        let config = local_config(45123, "2s").expect("config");
        assert!(config.contains("127.0.0.1:45123"), "{config}");
        assert!(!config.contains(SHIPPED_TARGET), "{config}");
        assert!(config.contains("scrape_interval: 2s"), "{config}");
        assert!(config.contains("evaluation_interval: 2s"), "{config}");
        let rules = observability_dir().join("alerts.yml");
        assert!(
            config.contains(&format!("- {}", rules.display())),
            "{config}"
        );
    }
}
