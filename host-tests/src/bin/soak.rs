//! citygate soak: drives N requests (default 1 000 000) of a mixed workload
//! through a real Envoy (2 workers) running the city pack in front of the
//! demo city API, and checks what must hold over a long run:
//!
//! - no 5xx at all: the mix contains only requests whose every outcome is
//!   a 2xx or an intended denial (400, 401, 403, 404, 429);
//! - Envoy's resident memory flat after warm-up: no post-warm-up sample
//!   more than `--rss-tolerance` % above the warm-up baseline;
//! - rate-limit keys bounded: a pool of JWT subjects far larger than the
//!   key cap pushes the rate limiter into its overflow bucket
//!   (`citygate_ratelimit_overflow` > 0) while memory stays flat.
//!
//! The key cap: a bucket that has refilled is forgotten (see
//! `ratelimit/store.rs`), so reaching the pack's 10 000 live keys would need
//! 10 000 subjects within the 2 s a write token takes to refill, far more
//! than one machine sends. The soak therefore lowers `max_keys_per_rule`
//! to `--max-keys` (default 100; 0 keeps the pack's value) and says so.
//!
//! `cargo run --release -p citygate-host --bin soak -- --requests 50000`
//! prints the figures (Markdown and JSON) and exits non-zero when a check
//! fails. Traffic goes to 127.0.0.1 only, bounded by `--requests` and
//! `--max-minutes`.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use citygate_host::cli::{read_env_file, unix_now};
use citygate_host::demo_api::DemoApi;
use citygate_host::envoy::{process_rss_kib, EnvoyProcess, Gateway, Metrics};
use citygate_host::scenario::credentials::{Credentials, Tamper};
use citygate_host::wasm_build::{filter_wasm, workspace_root};
use clap::Parser;
use serde_json::{json, Value};

#[derive(Parser, Debug, Clone)]
#[command(about = "Soak test: a long mixed workload through Envoy + citygate")]
struct Args {
    /// Requests to send in all.
    #[arg(long, default_value_t = 1_000_000)]
    requests: u64,
    /// Client threads, each with its own keep-alive connection pool.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Envoy worker threads (one VM each).
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Distinct JWT subjects in the many-subjects pool.
    #[arg(long, default_value_t = 5000)]
    subjects: usize,
    /// `rate_limits.max_keys_per_rule` for the run; 0 keeps the pack's.
    #[arg(long, default_value_t = 100)]
    max_keys: u32,
    /// Share of the requests that is warm-up (percent).
    #[arg(long, default_value_t = 20)]
    warmup_percent: u64,
    /// Allowed RSS growth over the warm-up baseline (percent).
    #[arg(long, default_value_t = 5.0)]
    rss_tolerance: f64,
    /// Stop sending after this long, whatever the count (a bound, not a goal).
    #[arg(long, default_value_t = 180)]
    max_minutes: u64,
    /// Write the figures as JSON here too.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Statuses the mix may produce; anything else fails the run.
const INTENDED: &[u16] = &[200, 201, 400, 401, 403, 404, 429];

/// One kind of request in the mix.
#[derive(Debug, Clone)]
struct Kind {
    name: &'static str,
    method: &'static str,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// A demo token (name, damage) as the bearer; re-minted while the run
    /// lasts, since demo tokens live an hour.
    bearer: Option<(&'static str, Tamper)>,
    /// A token of the subject pool as the bearer instead.
    pooled: bool,
}

fn kind(name: &'static str, method: &'static str, path: &str, headers: &[(&str, &str)]) -> Kind {
    Kind {
        name,
        method,
        path: path.to_string(),
        headers: headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
        body: Vec::new(),
        bearer: None,
        pooled: false,
    }
}

fn with_token(mut kind: Kind, name: &'static str, tamper: Tamper) -> Kind {
    kind.bearer = Some((name, tamper));
    kind
}

struct Workload {
    kinds: Vec<Kind>,
    /// Weighted schedule: request `i` is `kinds[schedule[i % len]]`.
    schedule: Vec<usize>,
    pool: Vec<String>,
    /// `Bearer …` of each kind with a demo token (`None` otherwise).
    tokens: RwLock<Vec<Option<String>>>,
}

impl Workload {
    fn mint(&self, credentials: &Credentials, now: i64) -> Result<()> {
        let tokens = self
            .kinds
            .iter()
            .map(|k| match k.bearer {
                Some((name, tamper)) => Ok(Some(format!(
                    "Bearer {}",
                    credentials.mint(name, tamper, now)?
                ))),
                None => Ok(None),
            })
            .collect::<Result<Vec<_>>>()?;
        *self.tokens.write().unwrap_or_else(|p| p.into_inner()) = tokens;
        Ok(())
    }
}

fn workload(credentials: &Credentials, subjects: usize, now: i64) -> Result<Workload> {
    let api_key = credentials.api_key("parking-app")?.to_string();
    let item = "/open311/v2/requests/EX-2025-000102.json";
    let mut post = kind(
        "pool-write",
        "POST",
        "/open311/v2/requests.json",
        &[("content-type", "application/x-www-form-urlencoded")],
    );
    post.body = b"service_code=001&description=pothole".to_vec();
    post.pooled = true;
    let mut pool_read = kind("pool-read", "GET", item, &[]);
    pool_read.pooled = true;
    let kinds = vec![
        kind(
            "anon-open-data",
            "GET",
            "/v2/entities?type=ParkingSpot&options=keyValues",
            &[],
        ),
        kind("anon-person", "GET", "/v2/entities?type=Person", &[]),
        kind(
            "api-key",
            "GET",
            "/v2/entities?type=ParkingSpot",
            &[("x-api-key", &api_key)],
        ),
        with_token(
            kind("operator", "GET", "/v2/entities?type=Vehicle", &[]),
            "operator",
            Tamper::None,
        ),
        with_token(
            kind("analyst", "GET", "/open311/v2/requests.json", &[]),
            "analyst",
            Tamper::None,
        ),
        with_token(kind("citizen", "GET", item, &[]), "citizen", Tamper::None),
        with_token(
            kind(
                "emergency",
                "GET",
                "/ngsi-ld/v1/entities?type=Vehicle",
                &[("x-access-reason", "soak")],
            ),
            "emergency",
            Tamper::None,
        ),
        with_token(
            kind("emergency-no-reason", "GET", "/v2/entities", &[]),
            "emergency",
            Tamper::None,
        ),
        with_token(
            kind("forged-token", "GET", "/v2/entities", &[]),
            "operator",
            Tamper::Payload,
        ),
        kind("encoded-slash", "GET", "/v2%2Fentities", &[]),
        kind("no-route", "GET", "/admin", &[]),
        pool_read,
        post,
    ];
    // Weights: the subject pool dominates (keys), the rest covers every role,
    // profile and denial.
    let weights = [3, 1, 3, 3, 2, 2, 2, 1, 1, 1, 1, 8, 4];
    let schedule = weights
        .iter()
        .enumerate()
        .flat_map(|(i, w)| std::iter::repeat_n(i, *w))
        .collect();
    let secret = credentials_secret()?;
    let pool = (0..subjects)
        .map(|i| partner_token(&secret, &format!("soak-subject-{i}"), now))
        .collect::<Result<Vec<_>>>()?;
    let workload = Workload {
        kinds,
        schedule,
        pool,
        tokens: RwLock::new(Vec::new()),
    };
    workload.mint(credentials, now)?;
    Ok(workload)
}

fn credentials_secret() -> Result<String> {
    let env = read_env_file(&workspace_root().join("policies/config/demo.env"))?;
    env.get("CITYGATE_PARTNER_HS256_SECRET")
        .cloned()
        .context("demo.env has no CITYGATE_PARTNER_HS256_SECRET")
}

/// A `partner` (HS256) token of the demo: role citizen, no MFA.
fn partner_token(secret: &str, subject: &str, now: i64) -> Result<String> {
    use jsonwebtoken::{encode, EncodingKey, Header};
    let claims = json!({
        "iss": "https://partner.city.example",
        "aud": "citygate",
        "sub": subject,
        "iat": now,
        "exp": now + 6 * 3600,
        "realm_access": { "roles": ["citizen"] },
        "amr": ["pwd"],
    });
    Ok(encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )?)
}

/// City pack with the run's key cap.
fn plugin_config(max_keys: u32) -> Result<String> {
    let path = workspace_root().join("policies/config/city-gateway.json");
    let mut config: Value = serde_json::from_slice(&fs::read(&path)?)?;
    if max_keys > 0 {
        config["rate_limits"]["max_keys_per_rule"] = json!(max_keys);
    }
    Ok(serde_json::to_string(&config)?)
}

#[derive(Default)]
struct Tally {
    /// (kind, status) → count.
    statuses: BTreeMap<(String, u16), u64>,
    /// Transport failures (connection reset, timeout).
    errors: u64,
    first_failures: Vec<String>,
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    seconds: f64,
    done: u64,
    rss_kib: u64,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("soak: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> Result<bool> {
    let root = workspace_root();
    let credentials = Credentials::load(&root.join("policies/demo-keys/credentials.yaml"))?;
    let now = unix_now();
    let load = Arc::new(workload(&credentials, args.subjects, now)?);

    let wasm = filter_wasm()?;
    let api = DemoApi::start_with_jwks(credentials.jwks("city-idp", None)?)?;
    let mut gateway =
        Gateway::new(&wasm, plugin_config(args.max_keys)?, api.port).concurrency(args.workers);
    for (name, value) in read_env_file(&root.join("policies/config/demo.env"))? {
        gateway = gateway.env(name, value);
    }
    let envoy = EnvoyProcess::start(&gateway)?;
    let pid = envoy.pid();
    eprintln!(
        "soak: Envoy pid {pid}, {} workers, {} requests over {} connections, {} subjects, key cap {}",
        args.workers,
        args.requests,
        args.connections,
        args.subjects,
        if args.max_keys > 0 { args.max_keys.to_string() } else { "of the pack".into() }
    );

    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.max_minutes * 60);
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let samples = Arc::new(Mutex::new(Vec::<Sample>::new()));

    let sampler = {
        let (done, stop, samples) = (done.clone(), stop.clone(), samples.clone());
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(rss_kib) = process_rss_kib(pid) {
                    let sample = Sample {
                        seconds: started.elapsed().as_secs_f64(),
                        done: done.load(Ordering::Relaxed),
                        rss_kib,
                    };
                    samples
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(sample);
                }
                thread::sleep(Duration::from_millis(500));
            }
        })
    };

    let url = envoy.url("");
    let clients: Vec<_> = (0..args.connections)
        .map(|_| {
            let (load, next, done, tally) =
                (load.clone(), next.clone(), done.clone(), tally.clone());
            let (url, total) = (url.clone(), args.requests);
            thread::spawn(move || client(&url, &load, total, deadline, &next, &done, &tally))
        })
        .collect();
    let mut last_report = Instant::now();
    let mut last_mint = Instant::now();
    while clients.iter().any(|c| !c.is_finished()) {
        thread::sleep(Duration::from_millis(200));
        if last_mint.elapsed() >= Duration::from_secs(15 * 60) {
            last_mint = Instant::now();
            load.mint(&credentials, unix_now())?;
        }
        if last_report.elapsed() >= Duration::from_secs(30) {
            last_report = Instant::now();
            let n = done.load(Ordering::Relaxed);
            eprintln!(
                "soak: {n} requests in {:.0} s ({:.0}/s), RSS {} KiB",
                started.elapsed().as_secs_f64(),
                n as f64 / started.elapsed().as_secs_f64(),
                process_rss_kib(pid).unwrap_or(0)
            );
        }
    }
    for c in clients {
        let _ = c.join();
    }
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();

    let metrics = envoy.metrics()?;
    let tally = std::mem::take(&mut *tally.lock().unwrap_or_else(|p| p.into_inner()));
    let samples = samples.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let sent = done.load(Ordering::Relaxed);
    let report = Report::new(&args, sent, elapsed, &tally, &samples, &metrics);
    println!("{}", report.markdown());
    let figures = report.json();
    if let Some(path) = &args.json {
        fs::write(path, serde_json::to_string_pretty(&figures)?)?;
    }
    println!("{}", serde_json::to_string(&figures)?);
    if !report.passed() {
        // Envoy's view of the unintended answers: its access log records
        // response flags and upstream details, its log the filter's warnings.
        // Envoy flushes its access log every second.
        thread::sleep(Duration::from_millis(1500));
        let access = fs::read_to_string(envoy.run_dir().join("access.log")).unwrap_or_default();
        for line in access.lines().filter(|l| l.contains("\" 5")).take(5) {
            eprintln!("access log: {line}");
        }
        for line in envoy
            .log()
            .lines()
            .filter(|l| l.contains("citygate") && l.contains("warn"))
            .take(10)
        {
            eprintln!("envoy log: {line}");
        }
    }
    drop(envoy);
    drop(api);
    Ok(report.passed())
}

fn client(
    url: &str,
    load: &Workload,
    total: u64,
    deadline: Instant,
    next: &AtomicU64,
    done: &AtomicU64,
    tally: &Mutex<Tally>,
) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let mut local: BTreeMap<(String, u16), u64> = BTreeMap::new();
    let mut errors = 0u64;
    let mut failures = Vec::new();
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= total || Instant::now() > deadline {
            break;
        }
        let kind = &load.kinds[load.schedule[(i as usize) % load.schedule.len()]];
        match send(&agent, url, kind, load, i) {
            Ok((status, body)) => {
                if !INTENDED.contains(&status) && failures.len() < 10 {
                    // The body says who answered (citygate's problem type or
                    // Envoy's own text) and why.
                    let body = String::from_utf8_lossy(&body[..body.len().min(400)]).into_owned();
                    failures.push(format!(
                        "request {i} ({}): status {status}: {body}",
                        kind.name
                    ));
                }
                *local.entry((kind.name.to_string(), status)).or_default() += 1;
            }
            Err(e) => {
                errors += 1;
                if failures.len() < 10 {
                    failures.push(format!("request {i} ({}): {e:#}", kind.name));
                }
            }
        }
        done.fetch_add(1, Ordering::Relaxed);
    }
    let mut tally = tally.lock().unwrap_or_else(|p| p.into_inner());
    for (key, n) in local {
        *tally.statuses.entry(key).or_default() += n;
    }
    tally.errors += errors;
    tally.first_failures.extend(failures);
}

/// The status and body of one request of the mix.
fn send(
    agent: &ureq::Agent,
    url: &str,
    kind: &Kind,
    load: &Workload,
    i: u64,
) -> Result<(u16, Vec<u8>)> {
    let mut builder = ureq::http::Request::builder()
        .method(kind.method)
        .uri(format!("{url}{}", kind.path.trim_start_matches('/')));
    for (name, value) in &kind.headers {
        builder = builder.header(name, value);
    }
    let kind_index = load.schedule[(i as usize) % load.schedule.len()];
    if let Some(Some(token)) = load
        .tokens
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get(kind_index)
    {
        builder = builder.header("authorization", token);
    }
    if kind.pooled && !load.pool.is_empty() {
        // Spread the pool over the run: consecutive pooled requests hit
        // different subjects.
        let subject = (i as usize).wrapping_mul(7919) % load.pool.len();
        builder = builder.header("authorization", format!("Bearer {}", load.pool[subject]));
    }
    let mut response = agent.run(builder.body(kind.body.clone())?)?;
    let status = response.status().as_u16();
    // Read the body whole so the connection is reused.
    let body = response
        .body_mut()
        .with_config()
        .limit(16 * 1024 * 1024)
        .read_to_vec()?;
    Ok((status, body))
}

struct Report {
    requests: u64,
    planned: u64,
    seconds: f64,
    by_status: BTreeMap<u16, u64>,
    by_kind: BTreeMap<(String, u16), u64>,
    errors: u64,
    failures: Vec<String>,
    unintended: u64,
    baseline_kib: u64,
    peak_kib: u64,
    final_kib: u64,
    growth_percent: f64,
    tolerance: f64,
    warmup_requests: u64,
    post_warmup_samples: usize,
    /// At most 40 evenly spaced samples: (seconds, requests done, RSS KiB).
    series: Vec<(f64, u64, u64)>,
    overflow: u64,
    limited: u64,
    max_keys: u32,
    subjects: usize,
    workers: usize,
}

impl Report {
    fn new(
        args: &Args,
        sent: u64,
        seconds: f64,
        tally: &Tally,
        samples: &[Sample],
        metrics: &Metrics,
    ) -> Report {
        let mut by_status = BTreeMap::new();
        for ((_, status), n) in &tally.statuses {
            *by_status.entry(*status).or_default() += n;
        }
        let unintended = by_status
            .iter()
            .filter(|(s, _)| !INTENDED.contains(s))
            .map(|(_, n)| n)
            .sum();
        let warmup_requests = sent * args.warmup_percent / 100;
        let post: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.done >= warmup_requests)
            .collect();
        // Baseline: the median of the first few samples after warm-up.
        let mut first: Vec<u64> = post.iter().take(5).map(|s| s.rss_kib).collect();
        first.sort_unstable();
        let baseline_kib = first.get(first.len() / 2).copied().unwrap_or(0);
        let peak_kib = post.iter().map(|s| s.rss_kib).max().unwrap_or(0);
        let growth_percent = if baseline_kib > 0 {
            (peak_kib as f64 / baseline_kib as f64 - 1.0) * 100.0
        } else {
            f64::NAN
        };
        Report {
            requests: sent,
            planned: args.requests,
            seconds,
            by_status,
            by_kind: tally.statuses.clone(),
            errors: tally.errors,
            failures: tally.first_failures.clone(),
            unintended,
            baseline_kib,
            peak_kib,
            final_kib: samples.last().map(|s| s.rss_kib).unwrap_or(0),
            growth_percent,
            tolerance: args.rss_tolerance,
            warmup_requests,
            post_warmup_samples: post.len(),
            series: samples
                .iter()
                .step_by(samples.len().div_ceil(40).max(1))
                .map(|s| (s.seconds, s.done, s.rss_kib))
                .collect(),
            overflow: metrics.value("citygate_ratelimit_overflow"),
            limited: metrics.value("citygate_ratelimit_limited"),
            max_keys: args.max_keys,
            subjects: args.subjects,
            workers: args.workers,
        }
    }

    fn checks(&self) -> Vec<(&'static str, bool, String)> {
        let keyed = self.max_keys > 0 && self.subjects > self.max_keys as usize;
        // Only the forged token is refused as unauthenticated: the others
        // (re-minted while the run lasts) must keep working.
        let refused: u64 = self
            .by_kind
            .iter()
            .filter(|((kind, status), _)| *status == 401 && kind != "forged-token")
            .map(|(_, n)| n)
            .sum();
        vec![
            (
                "valid credentials stay accepted",
                refused == 0,
                format!("{refused} 401s for valid tokens or keys"),
            ),
            (
                "all requests sent",
                self.requests == self.planned,
                format!("{} of {}", self.requests, self.planned),
            ),
            (
                "no 5xx, only intended statuses",
                self.unintended == 0 && self.errors == 0,
                format!(
                    "{} unintended, {} transport errors",
                    self.unintended, self.errors
                ),
            ),
            (
                "RSS flat after warm-up",
                self.post_warmup_samples >= 5 && self.growth_percent <= self.tolerance,
                format!(
                    "peak {} KiB vs baseline {} KiB: {:+.2} % (limit {} %, {} samples)",
                    self.peak_kib,
                    self.baseline_kib,
                    self.growth_percent,
                    self.tolerance,
                    self.post_warmup_samples
                ),
            ),
            (
                "rate-limit keys bounded (overflow bucket used)",
                !keyed || self.overflow > 0,
                format!(
                    "citygate_ratelimit_overflow {} with {} subjects over a cap of {}",
                    self.overflow, self.subjects, self.max_keys
                ),
            ),
        ]
    }

    fn passed(&self) -> bool {
        self.checks().iter().all(|(_, ok, _)| *ok)
    }

    fn markdown(&self) -> String {
        let mut out = format!(
            "## Soak: {} requests, {} Envoy workers, {:.0} s ({:.0} req/s)\n\n| check | result | figures |\n|---|---|---|\n",
            self.requests,
            self.workers,
            self.seconds,
            self.requests as f64 / self.seconds.max(1e-9)
        );
        for (name, ok, figures) in self.checks() {
            out += &format!(
                "| {name} | {} | {figures} |\n",
                if ok { "pass" } else { "FAIL" }
            );
        }
        out += "\n| status | count |\n|---|---|\n";
        for (status, n) in &self.by_status {
            out += &format!("| {status} | {n} |\n");
        }
        out += &format!(
            "\nEnvoy RSS: baseline {} KiB (after {} warm-up requests), peak {} KiB, final {} KiB; 429s counted by the filter: {}\n",
            self.baseline_kib, self.warmup_requests, self.peak_kib, self.final_kib, self.limited
        );
        for failure in &self.failures {
            out += &format!("\nfailure: {failure}");
        }
        out
    }

    fn json(&self) -> Value {
        let by_kind: BTreeMap<String, u64> = self
            .by_kind
            .iter()
            .map(|((kind, status), n)| (format!("{kind} {status}"), *n))
            .collect();
        json!({
            "requests": self.requests,
            "seconds": self.seconds,
            "workers": self.workers,
            "statuses": self.by_status,
            "by_kind": by_kind,
            "transport_errors": self.errors,
            "rss_kib": { "baseline": self.baseline_kib, "peak": self.peak_kib, "final": self.final_kib },
            "rss_growth_percent": self.growth_percent,
            "warmup_requests": self.warmup_requests,
            "rss_series": self.series,
            "ratelimit": { "overflow": self.overflow, "limited": self.limited, "max_keys": self.max_keys, "subjects": self.subjects },
            "passed": self.passed(),
        })
    }
}
