//! The city-mix phase: (a) no-filter, (b) wasm floor and (c) citygate,
//! interleaved, each replaying the same city-mix requests with wrk
//! (closed loop, 1 worker). Before measuring, one request of every kind is
//! sent and its status checked (citygate must answer what the kind
//! intends; the others 200); after, Envoy's and citygate's counters say
//! what citygate actually did with the traffic.
//!
//! citygate's configuration (envoy/bench/citygate-city-mix.json) is the
//! city pack's routes and policy, both demo issuers with every algorithm,
//! API keys and anonymous callers behind one load balancer
//! (`x-forwarded-for`, `trusted_hops` 1); the driver adds the generated API
//! keys. Its buckets are real (one per subject, client and address) but too
//! large to trigger, except `hot-apps`: three application keys with a tight
//! bucket, so some requests get 429.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::envoy::BenchEnvoy;
use crate::load::Pace;
use crate::report::{Phase, Sample};
use crate::variants::{Variant, Workload};
use crate::wrk::{self, Replay};
use crate::{summary, Bench};
use citygate_host::city_mix::{self, Census, MixRequest};

/// What the phase prepares once.
struct Prepared {
    wrk: PathBuf,
    requests: PathBuf,
    script: PathBuf,
    config: Value,
    /// One request of every kind, for the check.
    kinds: Vec<MixRequest>,
}

impl Bench {
    pub(crate) fn city_mix(&mut self) -> Result<Census> {
        let wrk = wrk::wrk_binary()?;
        eprintln!(
            "bench: [city-mix] minting callers and writing {} requests ({}) …",
            self.args.city_mix_requests,
            wrk::version(&wrk).unwrap_or_default()
        );
        let now = i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs())?;
        let mix = city_mix::generate(
            self.demo.credentials(),
            self.args.city_mix_requests,
            self.args.city_mix_seed,
            now,
        )?;
        let requests = self.out.join("city-mix.requests");
        fs::write(&requests, mix.wire_file())
            .with_context(|| format!("writing {}", requests.display()))?;
        let mut config = self
            .demo
            .plugin_config(&self.bench_dir.join("citygate-city-mix.json"), &[])?;
        let keys = config
            .pointer_mut("/auth/api_keys/keys")
            .and_then(Value::as_array_mut)
            .context("citygate-city-mix.json has no auth.api_keys.keys")?;
        keys.extend(mix.api_keys.iter().cloned());
        let census = mix.census.clone();
        eprintln!(
            "bench: [city-mix] {} requests: {} tokens, {} API keys, {} paths, {} client addresses, {} with a body; intended {:?}",
            census.requests,
            census.distinct_tokens,
            census.distinct_api_keys,
            census.distinct_paths,
            census.distinct_client_ips,
            census.with_body,
            census.intended
        );
        let prepared = Prepared {
            wrk,
            requests,
            script: self.bench_dir.join("city-mix.lua"),
            config,
            kinds: mix.one_of_each().into_iter().cloned().collect(),
        };
        let variants = [Variant::NoFilter, Variant::WasmFloor, Variant::Citygate];
        for round in 1..=self.args.rounds {
            for variant in variants {
                self.measure_city_mix(&prepared, round, variant)?;
            }
        }
        Ok(census)
    }

    fn measure_city_mix(
        &mut self,
        prepared: &Prepared,
        round: usize,
        variant: Variant,
    ) -> Result<()> {
        let envoy = self.start(variant, 1, &prepared.config.clone(), &[])?;
        check_kinds(&envoy, variant, prepared)?;
        let secs = self.args.throughput_secs;
        eprint!(
            "bench: [CityMix round {round}/{}] {variant}, 1 worker, closed loop {secs} s … ",
            self.args.rounds
        );
        let mut replay = Replay {
            url: envoy.url("/"),
            script: &prepared.script,
            requests: &prepared.requests,
            connections: self.args.connections,
            duration: Duration::from_secs_f64(self.args.warmup_secs),
            cpus: self.pin.then(|| "1".to_owned()),
        };
        replay.run(&prepared.wrk).context("warm-up")?;
        let before = counters(&envoy)?;
        replay.duration = Duration::from_secs_f64(secs);
        let measured = replay.run(&prepared.wrk)?;
        let after = counters(&envoy)?;
        let observed: BTreeMap<String, u64> = after
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.saturating_sub(before.get(k).copied().unwrap_or(0)),
                )
            })
            .filter(|(_, v)| *v > 0)
            .collect();
        eprintln!(
            "{}; non-2xx {}",
            summary(&measured),
            measured.status_codes.get("non-2xx").copied().unwrap_or(0)
        );
        let non_2xx = measured.status_codes.get("non-2xx").copied().unwrap_or(0);
        let server_errors = observed.get("downstream_rq_5xx").copied().unwrap_or(0);
        if (variant != Variant::Citygate && non_2xx > 0) || server_errors > 0 {
            bail!(
                "{variant}: {non_2xx} answers were not 2xx ({server_errors} 5xx) in the city mix; run dir {}\n{}",
                envoy.run_dir().display(),
                envoy.log_tail()
            );
        }
        self.samples.push(Sample {
            phase: Phase::CityMix,
            round,
            variant,
            workers: 1,
            workload: Workload::CityMix,
            pace: Pace::ClosedLoop,
            measured,
            observed,
        });
        Ok(())
    }
}

/// One request of every kind: citygate answers what the kind intends
/// (a `429` kind may still be within its bucket: 200), the other variants
/// 200, so a mix whose tokens or keys citygate does not accept is caught
/// before it is measured.
fn check_kinds(envoy: &BenchEnvoy, variant: Variant, prepared: &Prepared) -> Result<()> {
    for request in &prepared.kinds {
        let (kind, method, path, intended) = (
            request.kind,
            request.method,
            &request.path,
            &request.intended,
        );
        let mut headers = request.headers.clone();
        let body = match &request.body {
            Some((content_type, body)) => {
                headers.push(("content-type".into(), (*content_type).to_owned()));
                body.clone().into_bytes()
            }
            None => Vec::new(),
        };
        let status = envoy.send(method, path, &headers, body)?;
        let ok = match (variant, intended) {
            (Variant::Citygate, 429) => matches!(status, 200 | 429),
            (Variant::Citygate, want) => status == *want,
            _ => status == 200,
        };
        if !ok {
            bail!(
                "{variant}: city-mix kind `{kind}` ({method} {path}) answered {status}, not {}\n{}",
                if variant == Variant::Citygate {
                    *intended
                } else {
                    200
                },
                envoy.log_tail()
            );
        }
    }
    Ok(())
}

/// Envoy's downstream status classes and citygate's counters, by name
/// (`downstream_rq_2xx`, `citygate_policy_denied`, …).
fn counters(envoy: &BenchEnvoy) -> Result<BTreeMap<String, u64>> {
    let stats = envoy.admin("/stats?filter=(http\\.bench\\.downstream_rq_|citygate_)")?;
    Ok(stats
        .lines()
        .filter_map(|line| {
            let (name, value) = line.split_once(": ")?;
            let value: u64 = value.trim().parse().ok()?;
            let name = name
                .rsplit_once("wasmcustom.")
                .map_or(name, |(_, n)| n)
                .trim_start_matches("http.bench.");
            Some((name.to_owned(), value))
        })
        .collect())
}
