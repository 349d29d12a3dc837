//! `cargo bench-gateway`: citygate's gateway benchmark, in one run.
//!
//! Four Envoys with the same listener and the same `direct_response`
//! upstream (envoy/bench/bench.yaml) differ only in their filter chain:
//! (a) none, (b) the wasm floor, (c) citygate's pipeline, (d) Envoy's C++
//! filters doing the same work. Runs are interleaved (a b c d a b c d …)
//! so drift on the machine hits every variant alike; tables show medians.
//!
//! Phases: closed-loop throughput with 1 and 2 workers; open-loop latency
//! at half of (a)'s maximum and at half of citygate's; a 16 KiB NGSI response run, (a) vs citygate
//! minimizing it; memory after many requests with many rate-limit keys.
//! Raw samples go to `target/bench/<time>/results.json`, the tables to
//! `results.md` beside it (and `target/bench/latest.*`).

mod envoy;
mod load;
mod memory;
mod mix_phase;
mod report;
mod toolchain;
mod variants;
mod wrk;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context, Result};
use citygate_host::bench_config as citygate;
use citygate_host::envoy::envoy_binary;
use citygate_host::wasm_build::{filter_wasm, workspace_root};
use clap::{Parser, ValueEnum};
use serde_json::Value;

use envoy::{BenchEnvoy, Launch};
use load::{Load, Measured, Pace};
use report::{EnvoyMemory, Phase, Results, Sample, Settings};
use variants::{Variant, Workload};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Part {
    Throughput,
    Latency,
    Response,
    /// The city mix (wrk), (a) (b) (c); not part of the default run.
    CityMix,
    Memory,
}

/// citygate's gateway benchmark: no filter, wasm floor, citygate, Envoy C++.
#[derive(Debug, Parser)]
#[command(name = "bench-gateway")]
struct Args {
    /// Interleaved rounds (a b c d per round); tables show the medians.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Seconds of each closed-loop (throughput) run.
    #[arg(long, default_value_t = 15.0)]
    throughput_secs: f64,
    /// Seconds of each open-loop (latency) run.
    #[arg(long, default_value_t = 30.0)]
    latency_secs: f64,
    /// Seconds of load before each measured run (JWT cache, V8 tier-up).
    #[arg(long, default_value_t = 3.0)]
    warmup_secs: f64,
    /// Concurrent connections of the load generator.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Requests of the memory run.
    #[arg(long, default_value_t = 1_000_000)]
    memory_requests: u64,
    /// Distinct rate-limit keys of the memory run (a power of ten).
    #[arg(long, default_value_t = 100_000)]
    memory_keys: u64,
    /// Requests in the city-mix file wrk replays (round and round).
    #[arg(long, default_value_t = 30_000)]
    city_mix_requests: usize,
    /// Seed of the city mix (the same seed gives the same requests).
    #[arg(long, default_value_t = 2026)]
    city_mix_seed: u64,
    /// Parts to run (default: all but city-mix).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Part>,
    /// A short run that proves the harness works (1 round, 2-3 s runs,
    /// 20 000 memory requests). Its numbers are not results.
    #[arg(long)]
    smoke: bool,
    /// Do not pin 1-worker runs (Envoy on CPU 0, oha on CPU 1).
    #[arg(long)]
    no_pin: bool,
    /// Envoy's log level (citygate's decision log is written at info).
    #[arg(long, default_value = "warn")]
    envoy_log_level: String,
    /// Where results go (default: `target/bench/UTC-TIME`).
    #[arg(long)]
    out: Option<PathBuf>,
}

impl Args {
    fn smoke_settings(mut self) -> Self {
        if self.smoke {
            self.rounds = 1;
            self.throughput_secs = 2.0;
            self.latency_secs = 3.0;
            self.warmup_secs = 1.0;
            self.memory_requests = 20_000;
            self.memory_keys = 1_000;
        }
        self
    }

    fn runs(&self, part: Part) -> bool {
        if self.only.is_empty() {
            part != Part::CityMix
        } else {
            self.only.contains(&part)
        }
    }
}

fn main() {
    let args = Args::parse().smoke_settings();
    if let Err(e) = run(args) {
        eprintln!("bench-gateway: {e:#}");
        std::process::exit(1);
    }
}

/// Everything prepared once, shared by every run.
struct Bench {
    bench_dir: PathBuf,
    out: PathBuf,
    envoy: PathBuf,
    oha: PathBuf,
    citygate_wasm: PathBuf,
    floor_wasm: PathBuf,
    demo: citygate::Demo,
    config: Value,
    vm_env: BTreeMap<String, String>,
    pin: bool,
    args: Args,
    samples: Vec<Sample>,
    next_run: usize,
}

fn run(args: Args) -> Result<()> {
    ensure!(args.rounds >= 1, "--rounds must be at least 1");
    let root = workspace_root();
    let stamp = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| root.join("target").join("bench").join(stamp.to_string()));
    fs::create_dir_all(&out)?;
    eprintln!("bench: results go to {}", out.display());

    eprintln!("bench: preparing (citygate wasm, wasm floor, Envoy, oha)…");
    let citygate_wasm = filter_wasm()?;
    let floor_wasm = toolchain::floor_wasm(&root)?;
    let envoy = envoy_binary()?;
    let oha = load::oha_binary(&root)?;
    let demo = citygate::Demo::load(&root)?;
    let bench_dir = root.join("envoy").join("bench");
    let config = demo.plugin_config(&bench_dir.join("citygate-bench.json"), &[])?;
    let vm_env = demo.vm_env()?;
    let pin = !args.no_pin && taskset_works();

    let mut machine = report::machine(&root);
    machine.envoy = envoy::version(&envoy);
    machine.oha = load::version(&oha).unwrap_or_default();
    machine.rustc = toolchain::rustc_version(&root);
    machine.citygate_wasm_bytes = fs::metadata(&citygate_wasm)?.len();
    machine.floor_wasm_bytes = fs::metadata(&floor_wasm)?.len();
    let settings = Settings {
        rounds: args.rounds,
        throughput_secs: args.throughput_secs,
        latency_secs: args.latency_secs,
        warmup_secs: args.warmup_secs,
        connections: args.connections,
        pinned: pin,
        envoy_log_level: args.envoy_log_level.clone(),
        command: command_line(),
        smoke: args.smoke,
    };
    let citygate_stages = citygate::stages(&config);
    eprintln!(
        "bench: citygate stages configured: {}",
        citygate_stages.join(", ")
    );

    let mut bench = Bench {
        bench_dir,
        out: out.clone(),
        envoy,
        oha,
        citygate_wasm,
        floor_wasm,
        demo,
        config,
        vm_env,
        pin,
        args,
        samples: Vec::new(),
        next_run: 0,
    };
    let mut results = Results {
        machine,
        settings,
        citygate_stages,
        samples: Vec::new(),
        envoy_memory: None,
        linear_memory: None,
        city_mix: None,
    };

    let outcome = bench.run_parts(&mut results);
    results.samples = std::mem::take(&mut bench.samples);
    let (md, path) = report::write(&results, &out)?;
    println!("{md}");
    eprintln!(
        "bench: tables in {}, raw samples in {}",
        path.display(),
        out.join("results.json").display()
    );
    outcome
}

impl Bench {
    fn run_parts(&mut self, results: &mut Results) -> Result<()> {
        if self.args.runs(Part::Throughput) {
            self.throughput()?;
        }
        if self.args.runs(Part::Latency) {
            let rate = self.half_of_no_filter(Phase::Throughput)?;
            self.interleaved(
                Phase::Latency,
                &Variant::ALL,
                1,
                Workload::Request,
                Pace::OpenLoop { rate },
            )?;
            // At (a)'s half citygate may saturate and show queueing; at half
            // of its own maximum every variant keeps up, so the percentiles
            // compare added latency.
            let rate = self.half_of(Phase::Throughput, Variant::Citygate)?;
            self.interleaved(
                Phase::LatencyBelowSaturation,
                &Variant::ALL,
                1,
                Workload::Request,
                Pace::OpenLoop { rate },
            )?;
        }
        if self.args.runs(Part::Response) {
            let pair = [Variant::NoFilter, Variant::Citygate];
            self.interleaved(
                Phase::ResponseThroughput,
                &pair,
                1,
                Workload::Response,
                Pace::ClosedLoop,
            )?;
            let rate = self.half_of_no_filter(Phase::ResponseThroughput)?;
            self.interleaved(
                Phase::ResponseLatency,
                &pair,
                1,
                Workload::Response,
                Pace::OpenLoop { rate },
            )?;
        }
        if self.args.runs(Part::CityMix) {
            results.city_mix = Some(self.city_mix()?);
        }
        if self.args.runs(Part::Memory) {
            results.envoy_memory = Some(self.envoy_memory()?);
            results.linear_memory = Some(self.linear_memory()?);
        }
        Ok(())
    }

    /// Rounds of a b c d with 1 worker, then with 2, round after round.
    fn throughput(&mut self) -> Result<()> {
        for round in 1..=self.args.rounds {
            for workers in [1, 2] {
                for variant in Variant::ALL {
                    self.measure(
                        Phase::Throughput,
                        round,
                        variant,
                        workers,
                        Workload::Request,
                        Pace::ClosedLoop,
                    )?;
                }
            }
        }
        Ok(())
    }

    fn interleaved(
        &mut self,
        phase: Phase,
        variants: &[Variant],
        workers: usize,
        workload: Workload,
        pace: Pace,
    ) -> Result<()> {
        for round in 1..=self.args.rounds {
            for &variant in variants {
                self.measure(phase, round, variant, workers, workload, pace)?;
            }
        }
        Ok(())
    }

    /// Half of (a)'s median 1-worker maximum in `phase`.
    fn half_of_no_filter(&self, phase: Phase) -> Result<f64> {
        self.half_of(phase, Variant::NoFilter)
    }

    /// Half of `variant`'s median 1-worker maximum in `phase`.
    fn half_of(&self, phase: Phase, variant: Variant) -> Result<f64> {
        let mut rates: Vec<f64> = self
            .samples
            .iter()
            .filter(|s| s.phase == phase && s.variant == variant && s.workers == 1)
            .map(|s| s.measured.requests_per_sec)
            .collect();
        let max = report::median(&mut rates)
            .context("the latency runs need the closed-loop maxima: run the throughput part too")?;
        Ok((max / 2.0).max(1.0))
    }

    /// One Envoy, one measured load run (after a warm-up), one sample.
    fn measure(
        &mut self,
        phase: Phase,
        round: usize,
        variant: Variant,
        workers: usize,
        workload: Workload,
        pace: Pace,
    ) -> Result<()> {
        let rounds = self.args.rounds;
        let token = self.demo.token()?;
        let envoy = self.start(variant, workers, &self.config.clone(), &[])?;
        self.check(&envoy, variant, workload, &token)?;
        let secs = match pace {
            Pace::ClosedLoop => self.args.throughput_secs,
            Pace::OpenLoop { .. } => self.args.latency_secs,
        };
        let describe = match pace {
            Pace::ClosedLoop => format!("closed loop {secs} s"),
            Pace::OpenLoop { rate } => format!("open loop {rate:.0}/s for {secs} s"),
        };
        eprint!(
            "bench: [{phase:?} round {round}/{rounds}] {variant}, {workers} worker{}, {describe} … ",
            if workers == 1 { "" } else { "s" }
        );
        let mut load = self.load(&envoy, workload, workers, &token, pace);
        load.duration = Duration::from_secs_f64(self.args.warmup_secs);
        load.run(&self.oha).context("warm-up")?;
        load.duration = Duration::from_secs_f64(secs);
        let measured = load.run(&self.oha)?;
        eprintln!("{}", summary(&measured));
        if measured.failures() > 0 {
            bail!(
                "{variant} answered {} requests with something else than 200 ({:?}, errors {:?}); run dir {}\n{}",
                measured.failures(),
                measured.status_codes,
                measured.errors,
                envoy.run_dir().display(),
                envoy.log_tail()
            );
        }
        self.samples.push(Sample {
            phase,
            round,
            variant,
            workers,
            workload,
            pace,
            measured,
            observed: BTreeMap::new(),
        });
        Ok(())
    }

    fn load(
        &self,
        envoy: &BenchEnvoy,
        workload: Workload,
        workers: usize,
        token: &str,
        pace: Pace,
    ) -> Load {
        Load {
            url: envoy.url(workload.path()),
            headers: vec![("authorization".into(), format!("Bearer {token}"))],
            connections: self.args.connections,
            pace,
            duration: Duration::from_secs(1),
            requests: None,
            url_pattern: false,
            cpus: (self.pin && workers == 1).then(|| "1".to_owned()),
        }
    }

    /// Starts a variant's Envoy with `config` as citygate's configuration.
    fn start(
        &mut self,
        variant: Variant,
        workers: usize,
        config: &Value,
        extra_filters: &[Value],
    ) -> Result<BenchEnvoy> {
        self.next_run += 1;
        let run_dir = self.out.join("runs").join(format!(
            "{:03}-{}-{workers}w",
            self.next_run,
            variant.name()
        ));
        let launch = Launch {
            binary: self.envoy.clone(),
            workers,
            cpus: (self.pin && workers == 1).then(|| "0".to_owned()),
            log_level: self.args.envoy_log_level.clone(),
        };
        let vars = self.vars(config)?;
        let envoy = BenchEnvoy::start(
            &launch,
            |ports| {
                let mut vars = vars.clone();
                vars.extend(ports.iter().map(|(k, v)| (*k, v.clone())));
                envoy::bootstrap(&self.bench_dir, variant, extra_filters, &vars)
            },
            &run_dir,
        );
        envoy.with_context(|| format!("starting {variant} (run dir {})", run_dir.display()))
    }

    /// Values for every placeholder of the bootstrap and the chains.
    fn vars(&self, config: &Value) -> Result<BTreeMap<&'static str, Value>> {
        let (issuer, audience) = self.demo.issuer(citygate::ISSUER)?;
        let path = |p: &Path| -> Result<Value> {
            Ok(Value::from(
                fs::canonicalize(p)
                    .with_context(|| p.display().to_string())?
                    .display()
                    .to_string(),
            ))
        };
        Ok(BTreeMap::from([
            ("floor_wasm", path(&self.floor_wasm)?),
            ("citygate_wasm", path(&self.citygate_wasm)?),
            ("plugin_config", Value::from(config.to_string())),
            (
                "vm_env",
                Value::Object(
                    self.vm_env
                        .iter()
                        .map(|(k, v)| (k.clone(), Value::from(v.clone())))
                        .collect(),
                ),
            ),
            (
                "jwks",
                Value::from(self.demo.jwks(citygate::ISSUER)?.to_string()),
            ),
            ("issuer", Value::from(issuer)),
            ("audience", Value::from(audience)),
            ("ngsi_body", path(&self.bench_dir.join("ngsi-16k.json"))?),
        ]))
    }

    /// Before measuring: the request passes, and a variant that checks
    /// credentials refuses it without them (so none silently does nothing).
    /// A minimizing citygate must not pass the document's e-mail addresses.
    fn check(
        &self,
        envoy: &BenchEnvoy,
        variant: Variant,
        workload: Workload,
        token: &str,
    ) -> Result<()> {
        let bearer = format!("Bearer {token}");
        let (status, _, body) = envoy.get(workload.path(), &[("authorization", &bearer)])?;
        if status != 200 {
            bail!(
                "{variant}: {} answered {status}, not 200: {body}\n{}",
                workload.path(),
                envoy.log_tail()
            );
        }
        if variant.enforces_auth() {
            let (status, _, _) = envoy.get(workload.path(), &[])?;
            if !matches!(status, 401 | 403) {
                bail!("{variant}: a request without a token got {status}, not 401/403");
            }
        }
        let minimizes = variant == Variant::Citygate
            && workload == Workload::Response
            && self.config.pointer("/redaction/profiles").is_some();
        if minimizes && body.contains("@example.org") {
            bail!("{variant}: the 16 KiB response came back with e-mail addresses unredacted");
        }
        Ok(())
    }

    /// Envoy's RSS before and after the memory run (citygate, 1 worker, one
    /// extra rate-limit rule keyed on a header that changes per request).
    fn envoy_memory(&mut self) -> Result<EnvoyMemory> {
        let (requests, keys) = (self.args.memory_requests, self.args.memory_keys);
        let digits = key_digits(keys)?;
        let config = self.memory_config()?;
        let key_filter = self.key_filter()?;
        let token = self.demo.token()?;
        let envoy = self.start(Variant::Citygate, 1, &config, &[key_filter])?;
        self.check(&envoy, Variant::Citygate, Workload::Request, &token)?;
        let rss_kib_after_start = envoy.rss_kib()?;
        eprint!("bench: [memory] Envoy (citygate, 1 worker): {requests} requests, {keys} keys … ");
        let mut load = self.load(&envoy, Workload::Request, 1, &token, Pace::ClosedLoop);
        // oha draws each URL from the pattern; Envoy copies the path into
        // the key header (envoy/bench/variants/memory-keys.yaml).
        load.url = envoy.url(&format!(
            "/v2/entities/urn:ngsi-ld:Vehicle:bench-[0-9]{{{digits}}}"
        ));
        load.url_pattern = true;
        load.requests = Some(requests);
        let measured = load.run(&self.oha)?;
        eprintln!("{}", summary(&measured));
        if measured.failures() > 0 {
            bail!(
                "memory run: {} requests were not answered 200 ({:?}) — are the keys distinct?",
                measured.failures(),
                measured.status_codes
            );
        }
        let rss_kib_after_run = envoy.rss_kib()?;
        let stats = report::stat_lines(
            &envoy.admin("/stats?filter=citygate_ratelimit")?,
            "citygate_ratelimit",
        );
        Ok(EnvoyMemory {
            requests,
            keys,
            rss_kib_after_start,
            rss_kib_after_run,
            requests_per_sec: measured.requests_per_sec,
            stats,
        })
    }

    fn linear_memory(&mut self) -> Result<memory::LinearMemory> {
        let (requests, keys) = (self.args.memory_requests, self.args.memory_keys);
        eprintln!(
            "bench: [memory] one VM in the wasmtime host: {requests} requests, {keys} keys …"
        );
        let config = self.memory_config()?.to_string();
        let env: Vec<(String, String)> = self.vm_env.clone().into_iter().collect();
        let result = memory::wasmtime_linear_memory(
            &self.citygate_wasm,
            &config,
            &env,
            &self.demo.token()?,
            requests,
            keys,
        )?;
        eprintln!(
            "bench: [memory] linear memory {} KiB after start, {} KiB after the run",
            result.bytes_after_start / 1024,
            result.bytes_after_run / 1024
        );
        Ok(result)
    }

    /// citygate-bench.json plus the memory run's rule (memory-rule.json).
    fn memory_config(&self) -> Result<Value> {
        let rule: Value = read_json(&self.bench_dir.join("memory-rule.json"))?;
        self.demo
            .plugin_config(&self.bench_dir.join("citygate-bench.json"), &[rule])
    }

    fn key_filter(&self) -> Result<Value> {
        let path = self.bench_dir.join("variants").join("memory-keys.yaml");
        let text =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let filters: Vec<Value> = serde_yaml_ng::from_str(&text)?;
        filters
            .into_iter()
            .next()
            .context("memory-keys.yaml holds no filter")
    }
}

fn read_json(path: &Path) -> Result<Value> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

fn key_digits(keys: u64) -> Result<u32> {
    let digits = keys.checked_ilog10().unwrap_or(0);
    ensure!(
        keys >= 10 && 10u64.pow(digits) == keys,
        "--memory-keys must be a power of ten (10, 100, …), not {keys}"
    );
    Ok(digits)
}

fn summary(m: &Measured) -> String {
    format!(
        "{:.0} req/s, p50 {:.0} µs, p99 {:.0} µs, p99.9 {:.0} µs",
        m.requests_per_sec,
        m.micros("p50").unwrap_or(f64::NAN),
        m.micros("p99").unwrap_or(f64::NAN),
        m.micros("p99.9").unwrap_or(f64::NAN)
    )
}

/// Pinning needs two CPUs and a working `taskset`.
fn taskset_works() -> bool {
    std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2)
        && Command::new("taskset")
            .args(["-c", "1", "true"])
            .status()
            .is_ok_and(|s| s.success())
}

fn command_line() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    format!("cargo bench-gateway {}", args.join(" "))
        .trim()
        .to_owned()
}
