//! Native micro-benchmarks of each core stage (criterion), with the
//! configuration the gateway benchmark gives citygate
//! (envoy/bench/citygate-bench.json) and the same request: the city
//! operator's RS256 token reading one NGSI entity. Timings only; budgets
//! that CI enforces are fuel counts (host-tests/tests/fuel_budget.rs).
//!
//! `cargo bench -p citygate-core --bench stages`

// A failed expectation here is a broken benchmark setup, not a crashed worker.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::path::{Path, PathBuf};

use citygate_core::auth::{AuthOutcome, Authenticator};
use citygate_core::host::memory::MemoryHost;
use citygate_core::identity::Identity;
use citygate_core::normalize::{self, ConnectionInfo, RawRequest, RequestView};
use citygate_core::pipeline::CompiledConfig;
use citygate_core::policy::{PolicyEngine, RequestContext};
use citygate_core::redact::BodyAction;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use serde_json::Value;

/// DEMO ONLY: `citygate mint jwt operator` (policies/demo-keys), issued at
/// [`ISSUED_AT`]. The benchmark host's clock stands just after that, so the
/// token stays valid however long ago it was minted.
const OPERATOR_TOKEN: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiIsImtpZCI6ImRlbW8tcnMyNTYtMjAyNiJ9.eyJzdWIiOiJvcGVyYXRvci1vbGdhIiwicmVhbG1fYWNjZXNzIjp7InJvbGVzIjpbImNpdHktb3BlcmF0b3IiXX0sInNjb3BlIjoib3BlbmlkIGVudGl0aWVzOndyaXRlIiwiYW1yIjpbInB3ZCIsIm90cCIsIm1mYSJdLCJpc3MiOiJodHRwczovL2lkcC5jaXR5LmV4YW1wbGUvcmVhbG1zL2NpdHlnYXRlLWRlbW8iLCJhdWQiOiJjaXR5Z2F0ZSIsImlhdCI6MTc5NTMzMTE4NywiZXhwIjoxNzk1MzM0Nzg3fQ.JeqxIjvWv-g3Rq88vqb8rsjqZf5UHAQueDWxBYu-coPqIAWDFeieqLEwPnu5B6Ye10DwbKGs1yYf0FEM72NpOWi_foERvmYcKAtDEHtu5hysph3LcRgnyk8F4-AnOY0VoNFtqRoHrppK2VSSSiR1sFKzFnwmbuUXC1xPG_5CiCGdoH2UODGpypnTQ6SBO3vtV_q0AueMHS50PQm6xpN9r6cWfLjaSvHuK1q85vtSi2CgrqRZNwYWnlD5j_o0lShAvuhNU0K7mTmGcM4U5IkWAtcrGNO96wCeXKhUi-KSmadl4k_mNUybzwsgWferHGt3QMyMR1EubDZjM6qcZdTdBw";
const ISSUED_AT: u64 = 1_795_331_187;
const KEY_ID: &str = "demo-rs256-2026";
const ISSUER: &str = "https://idp.city.example/realms/citygate-demo";
const AUDIENCE: &str = "citygate";
const PATH: &str = "/v2/entities/urn:ngsi-ld:Vehicle:example-city:bus-001";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// envoy/bench/citygate-bench.json with its placeholders filled the way the
/// bench driver fills them (the public JWKS of the token's key, the pack's
/// Rego, data and redaction profiles).
fn bench_config() -> Value {
    let dir = root().join("envoy").join("bench");
    let mut config: Value =
        serde_json::from_str(&read(&dir.join("citygate-bench.json"))).expect("bench config");
    fill(&mut config, &dir);
    config
}

fn fill(node: &mut Value, dir: &Path) {
    match node {
        Value::String(text) => {
            if let Some(inner) = text.strip_prefix("{{").and_then(|t| t.strip_suffix("}}")) {
                *node = placeholder(inner, dir);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| fill(v, dir)),
        Value::Object(fields) => fields.values_mut().for_each(|v| fill(v, dir)),
        _ => {}
    }
}

fn placeholder(inner: &str, dir: &Path) -> Value {
    let (kind, arg) = inner.split_once(':').expect("placeholder kind");
    match kind {
        "issuer" => Value::from(ISSUER),
        "audience" => Value::from(AUDIENCE),
        "jwks" => {
            let jwks: Value =
                serde_json::from_str(&read(&root().join("policies/demo-keys/jwks.json")))
                    .expect("jwks");
            let keys: Vec<Value> = jwks["keys"]
                .as_array()
                .expect("keys")
                .iter()
                .filter(|k| k["kid"] == KEY_ID)
                .cloned()
                .collect();
            serde_json::json!({ "keys": keys })
        }
        "file" => Value::from(read(&dir.join(arg))),
        "json" => {
            let (file, pointer) = arg.split_once('#').unwrap_or((arg, ""));
            let doc: Value = serde_json::from_str(&read(&dir.join(file))).expect("json include");
            doc.pointer(pointer).cloned().expect("json pointer")
        }
        other => panic!("unknown placeholder kind {other}"),
    }
}

fn demo_env(name: &str) -> Option<String> {
    read(&root().join("policies/config/demo.env"))
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| k.trim() == name)
        .map(|(_, v)| v.trim().to_owned())
}

fn gateway(config: &Value) -> CompiledConfig {
    CompiledConfig::from_json(config.to_string().as_bytes(), &demo_env)
        .expect("the bench config compiles")
}

fn host() -> MemoryHost {
    MemoryHost::at_unix_seconds(ISSUED_AT + 60)
}

fn request(path: &str) -> RawRequest {
    let headers = [
        (":method", "GET"),
        (":path", path),
        (":authority", "city.example"),
        (":scheme", "http"),
        ("user-agent", "oha/1.16.0"),
        ("accept", "*/*"),
        ("x-request-id", "7b0e6a1c-2f44-4c1e-9f0a-3d8c5e2b1a90"),
        ("x-forwarded-proto", "http"),
    ];
    let mut headers: Vec<(String, String)> = headers
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    headers.push(("authorization".into(), format!("Bearer {OPERATOR_TOKEN}")));
    RawRequest {
        headers,
        connection: ConnectionInfo {
            source: Some("127.0.0.1:40000".into()),
            destination: Some("127.0.0.1:10000".into()),
            protocol: Some("HTTP/1.1".into()),
            peer_certificate: None,
        },
    }
}

/// The normalized request and the operator's identity, as the stages after
/// authentication see them.
fn admitted(gw: &CompiledConfig, host: &MemoryHost) -> (RequestView, Identity) {
    let admitted = gw
        .admit(&request(PATH), host)
        .expect("the operator is admitted");
    (admitted.view, admitted.identity)
}

fn stages(c: &mut Criterion) {
    let config = bench_config();
    let gw = gateway(&config);
    let host = host();
    let route = gw.route(0).expect("one route");
    let raw = request(PATH);
    let (view, identity) = admitted(&gw, &host);

    let mut group = c.benchmark_group("stages");
    group.bench_function("normalize", |b| {
        b.iter(|| black_box(normalize::normalize(black_box(&raw), &gw.config().gateway)))
    });
    group.bench_function("auth/jwt-rs256-cached", |b| {
        b.iter(|| {
            let outcome =
                gw.authenticator()
                    .authenticate(black_box(&view), route, "city-api", &host);
            assert!(matches!(outcome, AuthOutcome::Authenticated(..)));
            black_box(outcome)
        })
    });
    let config_parsed = gw.config();
    group.bench_function("auth/jwt-rs256-first-verification", |b| {
        b.iter_batched(
            || Authenticator::compile(&config_parsed.auth, &config_parsed.routes).expect("auth"),
            |auth| black_box(auth.authenticate(&view, route, "city-api", &host)),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("ratelimit/check", |b| {
        b.iter(|| {
            black_box(
                gw.rate_limiter()
                    .check(black_box(&view), &identity, route, &host),
            )
        })
    });
    let policy = PolicyEngine::compile(config_parsed.policy.as_ref()).expect("policy");
    group.bench_function("policy/decision", |b| {
        b.iter(|| {
            let decision = policy.authorize(
                &RequestContext {
                    view: black_box(&view),
                    identity: &identity,
                    route,
                    body: None,
                    body_truncated: false,
                },
                &host,
            );
            assert!(decision.allowed, "{decision:?}");
            black_box(decision)
        })
    });
    group.bench_function("pipeline/request", |b| {
        b.iter(|| {
            let admitted = gw.admit(black_box(&raw), &host).expect("admitted");
            black_box(
                gw.authorize(admitted, None, false, &host)
                    .expect("forwarded"),
            )
        })
    });
    // Last: it sets the group's throughput (bytes), which would otherwise
    // apply to the benchmarks after it.
    redaction(&mut group, &gw, &host);
    group.finish();
}

/// The 16 KiB NGSI document of the response run, minimized with the
/// profile the pack chooses for the operator.
fn redaction(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    gw: &CompiledConfig,
    host: &MemoryHost,
) {
    let body = read(&root().join("envoy/bench/ngsi-16k.json")).into_bytes();
    let route = gw.route(0).expect("one route");
    let redaction = gw
        .redactor()
        .plan_response(route, &["operator".to_owned()], "GET")
        .expect("the operator profile exists");
    let headers = vec![
        ("content-type".to_owned(), "application/json".to_owned()),
        ("content-length".to_owned(), body.len().to_string()),
    ];
    let Ok(BodyAction::Buffer { plan, .. }) = gw
        .redactor()
        .on_response_headers(&redaction, 200, &headers, false, host)
    else {
        panic!("a JSON response with the operator profile is buffered");
    };
    // Reported as bytes of upstream JSON minimized per second too.
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("redact/ngsi-16k-operator", |b| {
        b.iter(|| {
            black_box(
                gw.redactor()
                    .minimize(&redaction, &plan, black_box(&body), host),
            )
        })
    });
}

criterion_group!(benches, stages);
criterion_main!(benches);
