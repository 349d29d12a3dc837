//! One benchmarked Envoy: bootstrap rendering, process lifetime, checks.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use citygate_host::envoy::{free_port, process_rss_kib, render_bootstrap, Admin};
use serde_json::Value;

use crate::variants::Variant;

const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Renders `envoy/bench/bench.yaml` with the variant's filter chain.
/// `extra_filters` go in front of the chain (the memory run's key header).
pub fn bootstrap(
    bench_dir: &Path,
    variant: Variant,
    extra_filters: &[Value],
    vars: &BTreeMap<&str, Value>,
) -> Result<Value> {
    let chain_path = bench_dir.join("variants").join(variant.chain_file());
    let chain_text = fs::read_to_string(&chain_path)
        .with_context(|| format!("reading {}", chain_path.display()))?;
    let Value::Array(chain) = render_bootstrap(&chain_text, vars)
        .with_context(|| format!("rendering {}", chain_path.display()))?
    else {
        bail!("{} is not a list of HTTP filters", chain_path.display());
    };
    let mut filters = extra_filters.to_vec();
    filters.extend(chain);
    let mut vars = vars.clone();
    vars.insert("http_filters", Value::Array(filters));
    let base = bench_dir.join("bench.yaml");
    let text = fs::read_to_string(&base).with_context(|| format!("reading {}", base.display()))?;
    render_bootstrap(&text, &vars).with_context(|| format!("rendering {}", base.display()))
}

/// How to launch Envoy.
#[derive(Debug, Clone)]
pub struct Launch {
    pub binary: PathBuf,
    pub workers: usize,
    /// `taskset -c` CPU list, when pinning.
    pub cpus: Option<String>,
    pub log_level: String,
}

/// A running benchmark Envoy; killed and reaped on drop.
pub struct BenchEnvoy {
    child: Child,
    port: u16,
    admin: Admin,
    run_dir: PathBuf,
    agent: ureq::Agent,
}

impl BenchEnvoy {
    /// Starts Envoy from a bootstrap with `{{admin_port}}`,
    /// `{{listener_port}}` and `{{run_dir}}` still to fill, and waits until
    /// it is ready. Port clashes with other processes are retried.
    pub fn start(
        launch: &Launch,
        render: impl Fn(&BTreeMap<&'static str, Value>) -> Result<Value>,
        run_dir: &Path,
    ) -> Result<Self> {
        for attempt in 1.. {
            let port = free_port()?;
            let admin_port = free_port()?;
            let vars = BTreeMap::from([
                ("listener_port", Value::from(port)),
                ("admin_port", Value::from(admin_port)),
                ("run_dir", Value::from(run_dir.display().to_string())),
            ]);
            fs::create_dir_all(run_dir)?;
            let bootstrap_path = run_dir.join("bootstrap.json");
            fs::write(&bootstrap_path, serde_json::to_vec_pretty(&render(&vars)?)?)?;
            let mut envoy = Self::spawn(launch, &bootstrap_path, port, admin_port, run_dir)?;
            match envoy.wait_ready() {
                Ok(()) => return Ok(envoy),
                Err(e) if attempt < 4 && envoy.log().contains("Address already in use") => {
                    eprintln!("  (port clash, retrying: {e})");
                }
                Err(e) => return Err(e),
            }
        }
        unreachable!("the retry loop returns")
    }

    fn spawn(
        launch: &Launch,
        bootstrap: &Path,
        port: u16,
        admin_port: u16,
        run_dir: &Path,
    ) -> Result<Self> {
        let log = File::create(run_dir.join("envoy.log"))?;
        let mut cmd = match &launch.cpus {
            Some(cpus) => {
                let mut cmd = Command::new("taskset");
                cmd.args(["-c", cpus]).arg(&launch.binary);
                cmd
            }
            None => Command::new(&launch.binary),
        };
        cmd.arg("--config-path")
            .arg(bootstrap)
            .args(["--disable-hot-restart", "--log-level", &launch.log_level])
            .arg("--concurrency")
            .arg(launch.workers.to_string())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", launch.binary.display()))?;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        Ok(BenchEnvoy {
            child,
            port,
            admin: Admin::new(admin_port, agent.clone()),
            run_dir: run_dir.to_path_buf(),
            agent,
        })
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("Envoy exited ({status}); log tail:\n{}", self.log_tail());
            }
            if self.admin.is_live() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("Envoy not ready in time; log tail:\n{}", self.log_tail());
            }
            sleep(Duration::from_millis(50));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// A GET through the listener: status and lower-cased header names.
    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> Result<(u16, Vec<String>, String)> {
        let mut request = self.agent.get(self.url(path));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let mut response = request.call().with_context(|| format!("GET {path}"))?;
        let names = response
            .headers()
            .keys()
            .map(|k| k.as_str().to_owned())
            .collect();
        let body = response
            .body_mut()
            .with_config()
            .limit(1 << 20)
            .read_to_string()
            .unwrap_or_default();
        Ok((response.status().as_u16(), names, body))
    }

    /// Any request through the listener: its status.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(String, String)],
        body: Vec<u8>,
    ) -> Result<u16> {
        let mut request = ureq::http::Request::builder()
            .method(method)
            .uri(self.url(path));
        for (name, value) in headers {
            request = request.header(name.as_str(), value.as_str());
        }
        let request = request
            .body(body)
            .with_context(|| format!("{method} {path}"))?;
        let response = self
            .agent
            .run(request)
            .with_context(|| format!("{method} {path}"))?;
        Ok(response.status().as_u16())
    }

    pub fn admin(&self, path: &str) -> Result<String> {
        self.admin.get(path)
    }

    /// Envoy's pid (taskset execs Envoy, so it is the same process).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident set size in KiB.
    pub fn rss_kib(&self) -> Result<u64> {
        process_rss_kib(self.pid())
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.run_dir.join("envoy.log")).unwrap_or_default()
    }

    pub fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for BenchEnvoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `--version` of the Envoy binary, first line.
pub fn version(binary: &Path) -> String {
    Command::new(binary)
        .arg("--version")
        .output()
        .ok()
        .map(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            let version = text
                .split_once("version:")
                .map_or(text.as_str(), |(_, v)| v);
            version.trim().to_owned()
        })
        .unwrap_or_else(|| "unknown".into())
}
