//! An Envoy process: started from an [`EnvoyConfig`] in a run directory of
//! its own under `target/envoy-runs/`, ready once its admin `/ready` says
//! `LIVE`, requests sent through its listener, killed and reaped on drop.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};

use super::admin::{Admin, Metrics};
use super::install::envoy_binary;
use super::reply::{read_reply, HttpReply};
use crate::wasm_build::workspace_root;

/// Loading the `.wasm` and compiling the policy take a few seconds on a
/// loaded machine.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const LOG_TAIL_LINES: usize = 40;

/// What one Envoy run needs, prepared in its run directory by an
/// [`EnvoyConfig`].
#[derive(Debug, Clone)]
pub struct Launch {
    /// The bootstrap file (`--config-path`).
    pub bootstrap: PathBuf,
    /// The listener [`EnvoyProcess::url`] and [`EnvoyProcess::request`] use.
    pub listener_port: u16,
    pub admin_port: u16,
    /// Every listener port by name ([`EnvoyProcess::port_named`]).
    pub ports: BTreeMap<String, u16>,
    /// Worker threads.
    pub concurrency: usize,
    /// Command-line arguments after the defaults.
    pub args: Vec<String>,
    /// Environment variables of the Envoy process.
    pub env: BTreeMap<String, String>,
}

/// A gateway configuration Envoy can be started with: [`super::Gateway`]
/// (`envoy/gateway.yaml`) or the production gateway of
/// `citygate-host` (`envoy/production/`).
pub trait EnvoyConfig {
    /// Picks ports and writes the bootstrap (and what it refers to) into
    /// `run_dir`.
    fn prepare(&self, run_dir: &Path) -> Result<Launch>;
    /// Whether every port is fixed (a port clash is then not retried).
    fn fixed_ports(&self) -> bool;
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A running Envoy. Killed (and reaped) on drop, including when a test
/// panics; its run directory is kept after a panic for post-mortems.
#[derive(Debug)]
pub struct EnvoyProcess {
    child: Child,
    listener_port: u16,
    ports: BTreeMap<String, u16>,
    run_dir: PathBuf,
    agent: ureq::Agent,
    admin: Admin,
}

/// How a start settled: Envoy became ready, or it exited first.
enum Settled {
    Ready,
    Exited(ExitStatus),
}

impl EnvoyProcess {
    /// Starts Envoy and waits until its admin `/ready` says `LIVE`.
    pub fn start(gateway: &impl EnvoyConfig) -> Result<Self> {
        let (envoy, outcome) = Self::spawn_settled(gateway)?;
        match outcome {
            Settled::Ready => Ok(envoy),
            Settled::Exited(status) => bail!(
                "Envoy exited ({status}) before becoming ready; log tail:\n{}",
                tail(&envoy.log())
            ),
        }
    }

    /// Starts Envoy with a configuration it must reject and returns its log.
    /// Fails if Envoy comes up serving the citygate listener.
    pub fn start_expect_failure(gateway: &impl EnvoyConfig) -> Result<String> {
        let (envoy, outcome) = Self::spawn_settled(gateway)?;
        match outcome {
            Settled::Exited(status) if !status.success() => Ok(envoy.log()),
            Settled::Exited(status) => bail!(
                "Envoy exited with {status} instead of rejecting the configuration; log tail:\n{}",
                tail(&envoy.log())
            ),
            Settled::Ready => {
                let listeners = envoy.admin.get("/listeners")?;
                if listeners.lines().any(|l| l.starts_with("citygate")) {
                    bail!(
                        "Envoy accepted the configuration (listener up); log tail:\n{}",
                        tail(&envoy.log())
                    );
                }
                Ok(envoy.log())
            }
        }
    }

    /// Spawns Envoy and waits until it is ready or has exited. A free port
    /// can be taken between our probe and Envoy's bind when tests run in
    /// parallel; such a start is retried on fresh ports.
    fn spawn_settled(gateway: &impl EnvoyConfig) -> Result<(Self, Settled)> {
        let fixed_ports = gateway.fixed_ports();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut envoy = Self::spawn(gateway)?;
            let outcome = envoy.wait_ready(READY_TIMEOUT)?;
            let port_clash = matches!(outcome, Settled::Exited(_))
                && envoy.log().contains("Address already in use");
            if port_clash && !fixed_ports && attempt < 4 {
                continue;
            }
            return Ok((envoy, outcome));
        }
    }

    fn spawn(gateway: &impl EnvoyConfig) -> Result<Self> {
        let binary = envoy_binary()?;
        let run_dir = new_run_dir()?;
        let launch = gateway.prepare(&run_dir)?;
        let log = File::create(run_dir.join("envoy.log"))?;
        let child = Command::new(&binary)
            .arg("--config-path")
            .arg(&launch.bootstrap)
            .args(["--disable-hot-restart", "--log-level", "info"])
            .arg("--concurrency")
            .arg(launch.concurrency.max(1).to_string())
            .args(&launch.args)
            .envs(&launch.env)
            // Envoy logs to stderr; stdout only carries crash output.
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(Duration::from_secs(20)))
            .build()
            .into();
        Ok(EnvoyProcess {
            child,
            listener_port: launch.listener_port,
            ports: launch.ports,
            run_dir,
            admin: Admin::new(launch.admin_port, agent.clone()),
            agent,
        })
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<Settled> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(Settled::Exited(status));
            }
            if self.admin.is_live() {
                return Ok(Settled::Ready);
            }
            if Instant::now() > deadline {
                bail!(
                    "Envoy not ready after {}s; log tail:\n{}",
                    timeout.as_secs(),
                    tail(&self.log())
                );
            }
            sleep(Duration::from_millis(50));
        }
    }

    /// `http://127.0.0.1:<listener>/<path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.listener_port, slash(path))
    }

    /// `http://127.0.0.1:<admin>/<path>`.
    pub fn admin_url(&self, path: &str) -> String {
        self.admin.url(path)
    }

    pub fn port(&self) -> u16 {
        self.listener_port
    }

    pub fn admin_port(&self) -> u16 {
        self.admin.port()
    }

    /// The port of a listener by name (`citygate` for `envoy/gateway.yaml`;
    /// `https` and `devices` for the production gateway).
    pub fn port_named(&self, name: &str) -> Option<u16> {
        self.ports.get(name).copied()
    }

    /// Is Envoy still running?
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// One counter or gauge of the admin `/stats` page (0 when absent).
    pub fn stat(&self, name: &str) -> Result<u64> {
        self.admin.stat(name)
    }

    /// An admin GET (e.g. `/config_dump`, `/listeners`).
    pub fn admin(&self, path: &str) -> Result<String> {
        self.admin.get(path)
    }

    /// The admin `/stats/prometheus` page, parsed.
    pub fn metrics(&self) -> Result<Metrics> {
        self.admin.metrics()
    }

    /// One metric of the admin `/stats/prometheus` page (0 when absent).
    pub fn metric(&self, name: &str) -> Result<u64> {
        self.admin.metric(name)
    }

    /// Envoy's process id (for its resident memory).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Where the bootstrap, the Envoy log and the access log are.
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// Everything Envoy has logged so far (including the filter's lines).
    pub fn log(&self) -> String {
        fs::read_to_string(self.run_dir.join("envoy.log")).unwrap_or_default()
    }

    /// A GET through the gateway.
    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> Result<HttpReply> {
        self.request("GET", path, headers, b"")
    }

    /// Any request through the gateway; non-2xx statuses are replies, not
    /// errors.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<HttpReply> {
        let mut builder = ureq::http::Request::builder()
            .method(method)
            .uri(self.url(path));
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder.body(body.to_vec())?;
        let response = self
            .agent
            .run(request)
            .with_context(|| format!("{method} {path} via Envoy"))?;
        read_reply(response)
    }

    /// Like [`Self::request`], but the body goes with chunked transfer
    /// encoding in pieces of `chunk_size` bytes, a moment apart, so Envoy
    /// hands the filter the body in several parts as a slow client would
    /// (how many is up to Envoy's socket reads).
    pub fn request_in_chunks(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        chunk_size: usize,
    ) -> Result<HttpReply> {
        let mut builder = ureq::http::Request::builder()
            .method(method)
            .uri(self.url(path));
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let mut reader = SlowChunks {
            rest: body,
            chunk_size: chunk_size.max(1),
            started: false,
        };
        let request = builder.body(ureq::SendBody::from_reader(&mut reader))?;
        let response = self
            .agent
            .run(request)
            .with_context(|| format!("{method} {path} via Envoy in chunks of {chunk_size}"))?;
        read_reply(response)
    }

    /// Blocks until Envoy exits (the demo runs it in the foreground).
    pub fn wait(&mut self) -> Result<ExitStatus> {
        Ok(self.child.wait()?)
    }
}

impl Drop for EnvoyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("citygate: Envoy run kept at {}", self.run_dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.run_dir);
        }
    }
}

fn slash(path: &str) -> String {
    if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    }
}

fn new_run_dir() -> Result<PathBuf> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let dir = workspace_root()
        .join("target")
        .join("envoy-runs")
        .join(format!(
            "{}-{}-{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// A body reader that yields at most `chunk_size` bytes per read and
/// pauses before each read after the first (ureq sends one chunk per read,
/// with `TCP_NODELAY`).
struct SlowChunks<'a> {
    rest: &'a [u8],
    chunk_size: usize,
    started: bool,
}

impl std::io::Read for SlowChunks<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.rest.is_empty() {
            return Ok(0);
        }
        if self.started {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        self.started = true;
        let n = self.chunk_size.min(buf.len()).min(self.rest.len());
        buf[..n].copy_from_slice(&self.rest[..n]);
        self.rest = &self.rest[n..];
        Ok(n)
    }
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}
