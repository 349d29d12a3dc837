//! Helpers the suite's areas share: the real filter and the DEMO ONLY
//! credentials and secrets, requests with a bearer token, gzip bodies, one
//! exchange as the client sees it, and waiting for (and reporting on) a real
//! Envoy.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use citygate_host::env_file::read_env_file;
use citygate_host::envoy::EnvoyProcess;
use citygate_host::scenario::credentials::Credentials;
use citygate_host::scenario::{CaseResult, Scenario};
use citygate_host::wasm_build::{filter_wasm, workspace_root};
use citygate_host::{
    Clock, Headers, Plugin, ProxyLogLevel, Request, RequestOutcome, SharedStore, Upstream, Vm,
};

/// The release `citygate_filter.wasm`, built on first use.
pub fn plugin() -> Plugin {
    Plugin::load(filter_wasm().expect("the filter builds")).expect("the filter loads")
}

/// The demo keys and tokens (`policies/demo-keys/credentials.yaml`).
pub fn demo_credentials() -> Credentials {
    Credentials::load(&workspace_root().join("policies/demo-keys/credentials.yaml"))
        .expect("the demo credentials load")
}

/// The city pack's VM environment (`policies/config/demo.env`).
pub fn demo_env() -> BTreeMap<String, String> {
    read_env_file(&workspace_root().join("policies/config/demo.env")).expect("demo.env")
}

/// A VM of the real `.wasm` as the benchmark's citygate runs: `config`, the
/// city pack's environment (demo.env), a clock standing at `now`, and the
/// response body reaching the filter that holds the headers to minimize it
/// (as in Envoy, envoy/bench/variants/citygate.yaml).
pub fn bench_vm(config: &serde_json::Value, now: u64) -> Vm {
    bench_vm_logging(config, now, ProxyLogLevel::Info)
}

/// [`bench_vm`] with Envoy's log level at `level` (the benchmark's Envoy
/// runs at `warn`: decision lines are dropped).
pub fn bench_vm_logging(config: &serde_json::Value, now: u64, level: ProxyLogLevel) -> Vm {
    let clock = Clock::at_unix_secs(now);
    let mut builder = plugin()
        .vm()
        .log_level(level)
        .config(config.to_string())
        .shared(&SharedStore::new())
        .clock(&clock)
        .headers_stop_iteration(true);
    for (name, value) in demo_env() {
        builder = builder.env(name, value);
    }
    builder.start().expect("the configuration is accepted")
}

/// `bytes` gzip-encoded (default level), as an upstream would send them.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).expect("gzip");
    encoder.finish().expect("gzip")
}

/// The VM's clock in Unix seconds, to mint tokens valid for it.
pub fn vm_now(vm: &Vm) -> i64 {
    i64::try_from(vm.clock().now_nanos() / 1_000_000_000).unwrap_or(i64::MAX)
}

/// `Bearer <token>`, an `authorization` header's value.
pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// The request with `token` as its bearer credential.
pub fn with_bearer(request: Request, token: &str) -> Request {
    request.header("authorization", &bearer(token))
}

/// A GET of `path` with `token` as its bearer credential.
pub fn get_with_bearer(path: &str, token: &str) -> Request {
    with_bearer(Request::get(path), token)
}

/// A counter or gauge the VM defined (0 when not defined).
pub fn metric(vm: &Vm, name: &str) -> u64 {
    vm.metric(name).unwrap_or(0)
}

/// What the client got, and whether the upstream saw the request.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Headers,
    pub body: Vec<u8>,
    pub forwarded: bool,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends a request; a forwarded one is answered `200 {}` by the upstream.
pub fn send(vm: &mut Vm, request: Request) -> Result<Answer> {
    send_with(vm, request, Upstream::ok().json("{}"))
}

/// Sends a request; a forwarded one is answered with `reply`. A reset stream
/// is an error: no client got an answer.
pub fn send_with(vm: &mut Vm, request: Request, reply: Upstream) -> Result<Answer> {
    let mut exchange = vm.send(request)?;
    match exchange.outcome() {
        RequestOutcome::Forwarded(_) => {
            let response = exchange.respond(reply)?;
            if response.reset {
                bail!("the stream was reset");
            }
            Ok(Answer {
                status: response.status,
                headers: response.headers,
                body: response.body,
                forwarded: true,
            })
        }
        RequestOutcome::Local(local) => Ok(Answer {
            status: local.status,
            headers: local.headers,
            body: local.body,
            forwarded: false,
        }),
        other => bail!("the filter neither forwarded nor answered: {other:?}"),
    }
}

/// Retries `probe` every 100 ms until it yields a value, for at most
/// `patience`: conditions in a real Envoy (ticks, file watches, log
/// flushes) are waited for, never slept for.
pub fn eventually<T>(
    patience: Duration,
    what: &str,
    mut probe: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + patience;
    loop {
        if let Some(value) = probe()? {
            return Ok(value);
        }
        if Instant::now() > deadline {
            bail!("gave up waiting: {what}");
        }
        sleep(Duration::from_millis(100));
    }
}

/// The last `lines` lines of Envoy's log, for a failure message.
pub fn log_tail(envoy: &EnvoyProcess, lines: usize) -> String {
    let log = envoy.log();
    let all: Vec<&str> = log.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Scenario cases of the policy pack (in wasmtime, in Envoy) when these
/// checks were written: a floor, so that cases lost from the files
/// themselves (or by `find_scenarios`) still fail. Raise it when cases are
/// added; never lower it to make a run pass.
pub const POLICY_PACK_CASES_FLOOR: (usize, usize) = (336, 328);
/// Scenario files of the policy pack then.
pub const POLICY_PACK_FILES_FLOOR: usize = 14;

/// Which runner produced a scenario file's results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runner {
    Wasm,
    Envoy,
}

/// How many results an unfiltered `run_scenario` must give for `scenario`:
/// the cases that apply to the runner (without `envoy_only` in wasmtime,
/// without `wasm_only` in Envoy).
pub fn cases_for(scenario: &Scenario, runner: Runner) -> usize {
    let label = match runner {
        Runner::Wasm => "wasm",
        Runner::Envoy => "envoy",
    };
    scenario
        .file
        .cases
        .iter()
        .filter(|c| c.runs_in(label))
        .count()
}

/// Per scenario file, the results a runner gave against the cases that
/// apply to it, so that no file and no case is dropped unnoticed.
#[derive(Debug)]
pub struct CaseCount {
    runner: Runner,
    files: Vec<(PathBuf, usize, usize)>,
}

impl CaseCount {
    pub fn new(runner: Runner) -> Self {
        Self {
            runner,
            files: Vec::new(),
        }
    }

    /// `got` results of the file at `path` (which is loaded to count its cases).
    pub fn record(&mut self, path: &Path, got: usize) {
        let scenario = Scenario::load(path).expect("the scenario file loads");
        let expected = cases_for(&scenario, self.runner);
        self.files.push((path.to_path_buf(), expected, got));
    }

    /// The results of one file's run.
    pub fn record_results(&mut self, scenario: &Scenario, results: &[CaseResult]) {
        let expected = cases_for(scenario, self.runner);
        self.files
            .push((scenario.path.clone(), expected, results.len()));
    }

    /// Every one of `found` ran, each gave one result per case that applies
    /// to this runner (at least one), and the total reaches `floor`.
    /// Returns the total.
    pub fn assert_complete(&self, found: &[PathBuf], floor: usize) -> usize {
        let ran: Vec<&PathBuf> = self.files.iter().map(|(path, _, _)| path).collect();
        let found: Vec<&PathBuf> = found.iter().collect();
        assert_eq!(ran, found, "{:?}: not every scenario file ran", self.runner);
        for (path, expected, got) in &self.files {
            assert!(
                *expected >= 1,
                "{}: no case applies to {:?}",
                path.display(),
                self.runner
            );
            assert_eq!(
                got,
                expected,
                "{}: {got} results for {expected} cases in {:?}",
                path.display(),
                self.runner
            );
        }
        let total: usize = self.files.iter().map(|(_, _, got)| got).sum();
        println!(
            "{:?}: {total} scenario cases in {} files",
            self.runner,
            self.files.len()
        );
        assert!(
            total >= floor,
            "{:?}: {total} scenario cases, fewer than the {floor} there were",
            self.runner
        );
        assert!(
            self.files.len() >= POLICY_PACK_FILES_FLOOR,
            "{} scenario files, fewer than the {POLICY_PACK_FILES_FLOOR} there were",
            self.files.len()
        );
        total
    }
}
