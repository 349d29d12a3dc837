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

mod args;
mod client;
mod report;
mod workload;

use std::fs;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Result;
use citygate_host::demo_api::DemoApi;
use citygate_host::env_file::read_env_file;
use citygate_host::envoy::{process_rss_kib, EnvoyProcess, Gateway};
use citygate_host::scenario::credentials::{unix_now, Credentials};
use citygate_host::wasm_build::{filter_wasm, workspace_root};
use clap::Parser;
use serde_json::{json, Value};

use args::Args;
use client::{client, Tally};
use report::{Report, Sample};
use workload::workload;

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

/// City pack with the run's key cap.
fn plugin_config(max_keys: u32) -> Result<String> {
    let path = workspace_root().join("policies/config/city-gateway.json");
    let mut config: Value = serde_json::from_slice(&fs::read(&path)?)?;
    if max_keys > 0 {
        config["rate_limits"]["max_keys_per_rule"] = json!(max_keys);
    }
    Ok(serde_json::to_string(&config)?)
}
