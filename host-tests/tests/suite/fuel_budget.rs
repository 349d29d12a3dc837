//! Fuel (wasmtime's instruction count) and hostcalls per request of each
//! citygate stage, through the real `.wasm`. Fuel is deterministic — fixed
//! clock, fixed token, fixed request — so a budget per request catches a
//! performance regression in CI without timing anything; hostcalls are
//! exact, so each stage's count is asserted to the call. Budgets carry ~20% headroom
//! over the figures measured when they were set; the figures are printed
//! (`cargo test -p citygate-host --test suite fuel_budget:: -- --nocapture`).
//!
//! Each configuration adds one stage to the previous one, ending with the
//! gateway benchmark's citygate (envoy/bench/citygate-bench.json): the
//! difference between neighbours is what that stage costs.

use std::path::{Path, PathBuf};

use citygate_host::scenario::credentials::Tamper;
use citygate_host::wasm_build::{filter_wasm, workspace_root};
use citygate_host::{
    Clock, Hostcalls, ProxyLogLevel, Request, RequestOutcome, SharedStore, Upstream, Vm,
};
use serde_json::{json, Value};

use crate::support::{bench_vm_logging, demo_credentials, get_with_bearer, plugin};

/// The scenario clock: the token is minted at this instant, so it and
/// everything derived from it are the same on every run.
const NOW: u64 = 1_790_000_000;
const PATH: &str = "/v2/entities/urn:ngsi-ld:Vehicle:example-city:bus-001";
const LIST_PATH: &str = "/v2/entities?type=Vehicle";

fn root() -> PathBuf {
    workspace_root()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn operator_token() -> String {
    demo_credentials()
        .mint("operator", Tamper::None, NOW as i64)
        .expect("operator token")
}

/// One route for NGSI-v2 entities, anonymous or JWT-only.
fn route(jwt: bool, redaction: bool) -> Value {
    let mut route = json!({
        "name": "ngsi-v2-entities",
        "match": {"path_prefix": "/v2/entities", "methods": ["GET", "HEAD"]},
        "auth": if jwt { json!({"methods": ["jwt"], "jwt_providers": ["city-idp"]}) } else { json!({"anonymous": true}) }
    });
    if redaction {
        route["redaction"] = json!({"require_profile": true});
    }
    route
}

fn jwt_auth() -> Value {
    let jwks = demo_credentials()
        .jwks("city-idp", Some(&["demo-rs256-2026"]))
        .expect("jwks");
    json!({"jwt": {"providers": [{
        "name": "city-idp",
        "issuer": "https://idp.city.example/realms/citygate-demo",
        "audiences": ["citygate"],
        "algorithms": ["RS256"],
        "keys": {"jwks": jwks},
        "claims": {"subject": "sub", "client_id": ["azp"], "roles": ["realm_access.roles"], "scopes": ["scope"]}
    }]}})
}

fn generous_rule() -> Value {
    json!({"rules": [{"name": "per-subject", "key": ["subject"],
        "bucket": {"capacity": 1_000_000_000u64, "refill": {"tokens": 1_000_000_000u64, "period_seconds": 1}},
        "response_headers": true}]})
}

fn city_policy() -> Value {
    let data: Value =
        serde_json::from_str(&read(&root().join("policies/rego/data.json"))).expect("data");
    json!({
        "modules": {"city.rego": read(&root().join("policies/rego/city.rego"))},
        "data": data,
        "entrypoint": "data.citygate.city.decision"
    })
}

fn redaction_profiles() -> Value {
    let doc: Value = serde_json::from_str(&read(&root().join("policies/config/redaction.json")))
        .expect("profiles");
    doc["redaction"].clone()
}

/// The stages, cumulatively, as plugin configurations.
fn config(stages: usize) -> Value {
    let mut config = json!({
        "gateway": {"realm": "city-api", "trusted_hops": 0},
        "routes": [route(stages >= 2, stages >= 4)],
        "decision_log": {"enabled": false}
    });
    if stages >= 2 {
        config["auth"] = jwt_auth();
    }
    if stages >= 3 {
        config["rate_limits"] = generous_rule();
    }
    if stages >= 4 {
        // The pack's decisions name redaction profiles: a policy without
        // them refuses every request (500), so both come together.
        config["policy"] = city_policy();
        config["redaction"] = redaction_profiles();
    }
    if stages >= 5 {
        config["decision_log"] = json!({"pseudonym_key": "${env:CITYGATE_LOG_KEY}"});
    }
    config
}

/// What one whole request cost (every callback from its headers to its
/// log): fuel, and the hostcalls it made by name.
struct Cost {
    fuel: u64,
    hostcalls: Hostcalls,
}

/// The cost of one request, which must be forwarded and answered 200.
fn request_cost(vm: &mut Vm, request: Request, upstream: Upstream) -> Cost {
    vm.take_fuel_used();
    let mut exchange = vm.send(request).expect("sent");
    assert!(
        matches!(exchange.outcome(), RequestOutcome::Forwarded(_)),
        "not forwarded: {:?}",
        exchange.outcome()
    );
    let reply = exchange.respond(upstream).expect("answered");
    assert_eq!(reply.status, 200, "{}", reply.body_str());
    let hostcalls = vm.last_request_hostcalls();
    assert_eq!(
        hostcalls,
        vm.hostcalls(),
        "every callback recorded belongs to the request"
    );
    let fuel = vm.take_fuel_used().iter().map(|f| f.fuel).sum();
    Cost { fuel, hostcalls }
}

struct Case {
    name: &'static str,
    stages: usize,
    /// The first request (cold caches) or a later one (warm).
    warm: bool,
    response: bool,
    /// Envoy's log level: `Warn` as in the benchmark (the decision line is
    /// dropped), `Info` (written) otherwise.
    log_level: ProxyLogLevel,
    budget: u64,
    /// Hostcalls per request, exactly (measured 2026-12; see
    /// `hostcalls_per_request_are_exact_for_each_stage`). A change must
    /// update it knowingly.
    hostcalls: u64,
}

/// Budgets per request, 12–20% over the fuel measured when they were set
/// (2026-12, Rego on the bytecode VM, token cache keyed by the token's
/// bytes: 59 765; 21 613 320; 109 515; 124 690; 354 140; 391 041;
/// 6 960 526). They guard against regressions; they are
/// not the targets.
const CASES: &[Case] = &[
    Case {
        name: "normalize + route (anonymous)",
        stages: 1,
        warm: true,
        response: false,
        log_level: ProxyLogLevel::Info,
        budget: 72_000,
        hostcalls: 12,
    },
    Case {
        name: "+ JWT RS256, first verification",
        stages: 2,
        warm: false,
        response: false,
        log_level: ProxyLogLevel::Info,
        budget: 26_000_000,
        hostcalls: 16,
    },
    Case {
        name: "+ JWT RS256, cached",
        stages: 2,
        warm: true,
        response: false,
        log_level: ProxyLogLevel::Info,
        budget: 127_000,
        hostcalls: 17,
    },
    Case {
        name: "+ rate-limit rule",
        stages: 3,
        warm: true,
        response: false,
        log_level: ProxyLogLevel::Info,
        budget: 145_000,
        hostcalls: 22,
    },
    Case {
        name: "+ Rego decision, redaction planned",
        stages: 4,
        warm: true,
        response: false,
        log_level: ProxyLogLevel::Info,
        budget: 410_000,
        hostcalls: 27,
    },
    Case {
        name: "+ decision log (benchmark pipeline)",
        stages: 5,
        warm: true,
        response: false,
        log_level: ProxyLogLevel::Info,
        budget: 455_000,
        hostcalls: 28,
    },
    Case {
        name: "benchmark pipeline, Envoy at warn (line dropped)",
        stages: 5,
        warm: true,
        response: false,
        log_level: ProxyLogLevel::Warn,
        budget: 360_000,
        hostcalls: 27,
    },
    Case {
        name: "benchmark pipeline, 16 KiB NGSI minimized",
        stages: 5,
        warm: true,
        response: true,
        log_level: ProxyLogLevel::Info,
        budget: 6_000_000,
        hostcalls: 35,
    },
];

fn measure(case: &Case, token: &str) -> Cost {
    let mut vm = bench_vm_logging(&config(case.stages), NOW, case.log_level);
    let ngsi = read(&root().join("envoy/bench/ngsi-16k.json"));
    let send = |vm: &mut Vm| {
        let (path, upstream) = if case.response {
            (LIST_PATH, Upstream::ok().json(&ngsi))
        } else {
            (PATH, Upstream::ok())
        };
        request_cost(vm, get_with_bearer(path, token), upstream)
    };
    if case.warm {
        send(&mut vm);
    }
    send(&mut vm)
}

#[test]
fn fuel_per_request_stays_within_each_stages_budget() {
    let token = operator_token();
    let mut over = Vec::new();
    let mut previous = 0u64;
    println!(
        "{:<46} {:>12} {:>12} {:>12}",
        "request", "fuel", "vs previous", "budget"
    );
    for case in CASES {
        let fuel = measure(case, &token).fuel;
        println!(
            "{:<46} {:>12} {:>+12} {:>12}",
            case.name,
            fuel,
            fuel as i64 - previous as i64,
            case.budget
        );
        previous = fuel;
        if fuel > case.budget {
            over.push(format!("{}: {fuel} > {}", case.name, case.budget));
        }
    }
    assert!(over.is_empty(), "over budget: {over:#?}");
}

/// The module's size is a deterministic cost too: every Envoy worker's V8
/// compiles it at start and on each configuration reload. The budget sits
/// 3 % above the size measured when it was set (4 863 086 bytes,
/// BENCHMARKS.md), so a feature that brings back the whole tz database or
/// the URL and IDNA tables fails here.
const MODULE_BYTES_BUDGET: u64 = 5_000_000;

#[test]
fn the_module_stays_within_its_size_budget() {
    let wasm = filter_wasm().expect("the filter builds");
    let bytes = std::fs::metadata(&wasm)
        .unwrap_or_else(|e| panic!("{}: {e}", wasm.display()))
        .len();
    println!(
        "{}: {bytes} bytes (budget {MODULE_BYTES_BUDGET})",
        wasm.display()
    );
    assert!(
        bytes <= MODULE_BYTES_BUDGET,
        "{bytes} bytes, over the budget of {MODULE_BYTES_BUDGET}"
    );
}

/// Fuel is a count, not a timing: two runs of the same request agree. Not
/// to the instruction — the guest's hash maps are seeded from WASI
/// `random_get`, so probe sequences differ slightly — but to far less than
/// the budgets' headroom.
#[test]
fn fuel_is_stable_across_runs() {
    let token = operator_token();
    let case = &CASES[5];
    let (a, b) = (measure(case, &token).fuel, measure(case, &token).fuel);
    let spread = a.abs_diff(b) as f64 / a.max(b) as f64;
    assert!(spread < 0.01, "{a} vs {b}");
}

/// Hostcalls per request of each stage, exactly: unlike fuel they do not
/// depend on hash seeds, only on what the filter asks of the host. A change
/// here is a change in how citygate talks to Envoy — update the figure
/// knowingly, with the breakdown printed by
/// `cargo test -p citygate-host --test suite fuel_budget:: -- --nocapture`.
#[test]
fn hostcalls_per_request_are_exact_for_each_stage() {
    let token = operator_token();
    let mut wrong = Vec::new();
    println!("{:<46} {:>9} {:>9}", "request", "hostcalls", "expected");
    for case in CASES {
        let hostcalls = measure(case, &token).hostcalls;
        println!(
            "{:<46} {:>9} {:>9}\n    {hostcalls}",
            case.name,
            hostcalls.total(),
            case.hostcalls
        );
        if hostcalls.total() != case.hostcalls {
            wrong.push(format!(
                "{}: {} hostcalls, expected {} ({hostcalls})",
                case.name,
                hostcalls.total(),
                case.hostcalls
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "hostcalls per request changed: {wrong:#?}"
    );
}

/// The route of stage 2 with an opaque token instead of a JWT, answered by
/// a scripted authorization server.
fn introspection_vm() -> Vm {
    let mut config = config(1);
    config["routes"][0]["auth"] = json!({"methods": ["introspection"]});
    config["auth"] = json!({"introspection": {"providers": [{
        "name": "city-as", "cluster": "introspection", "authority": "idp.city.example",
        "path": "/oauth2/introspect", "client_id": "citygate-gateway", "client_secret": "s3cret",
        "claims": {"subject": "sub", "client_id": ["client_id"], "roles": ["realm_access.roles"], "scopes": ["scope"]}
    }]}});
    let answer = json!({"active": true, "sub": "operator-olga", "client_id": "ops-console",
        "scope": "openid entities:write", "realm_access": {"roles": ["city-operator"]},
        "exp": NOW + 3600});
    let clock = Clock::at_unix_secs(NOW);
    plugin()
        .vm()
        .config(config.to_string())
        .shared(&SharedStore::new())
        .clock(&clock)
        .headers_stop_iteration(true)
        .callout(
            "introspection",
            citygate_host::CalloutReply::json(200, answer.to_string()),
        )
        .start()
        .expect("the configuration is accepted")
}

/// An opaque token: the first request pays the call (the dispatch, the
/// answer's headers and body, the resume, a second judgement of the request
/// as first read), a later one a cache lookup — cheaper than a cached JWT,
/// which is still decoded to find its provider. Measured 2026-12-07: first
/// 148 973 fuel, 24 hostcalls (159 413 and 29 while the second judgement
/// read the request's headers and properties again); cached 81 270 fuel, 18
/// hostcalls (a cached JWT: 108 747, 17). Budgets ~20 % over.
#[test]
fn an_introspected_token_costs_one_call_then_as_little_as_a_cached_jwt() {
    let token = "cgo_demo_operator_olga_2b88e1f4";
    let mut vm = introspection_vm();
    let first = request_cost(&mut vm, get_with_bearer(PATH, token), Upstream::ok());
    let cached = request_cost(&mut vm, get_with_bearer(PATH, token), Upstream::ok());
    println!("first: {} fuel\n    {}", first.fuel, first.hostcalls);
    println!("cached: {} fuel\n    {}", cached.fuel, cached.hostcalls);
    assert_eq!(vm.metric("citygate_introspection_calls"), Some(1));
    assert_eq!(vm.metric("citygate_introspection_cache_hit"), Some(1));
    assert!(first.fuel <= 180_000, "first request: {} fuel", first.fuel);
    assert!(cached.fuel <= 100_000, "cached: {} fuel", cached.fuel);
    assert_eq!(first.hostcalls.total(), 24, "{}", first.hostcalls);
    assert_eq!(cached.hostcalls.total(), 18, "{}", cached.hostcalls);
}
