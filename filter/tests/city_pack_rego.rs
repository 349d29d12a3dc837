//! Runs every `test_` rule of the city policy pack (`policies/rego`) with
//! the engine the filter uses, so the pack's Rego tests gate the build.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::Path;

use citygate_filter::policy::testing::run_rego_tests;

fn load_dir(dir: &Path) -> (BTreeMap<String, String>, serde_json::Value) {
    let mut modules = BTreeMap::new();
    let mut data = serde_json::json!({});
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.ends_with(".rego") {
            modules.insert(name, std::fs::read_to_string(&path).unwrap());
        } else if name == "data.json" {
            data = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        }
    }
    (modules, data)
}

fn run(dir: &str, at_unix_seconds: u64) -> Vec<citygate_filter::policy::testing::RegoTestResult> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(dir);
    let (modules, data) = load_dir(&root);
    assert!(!modules.is_empty(), "no modules in {dir}");
    run_rego_tests(&modules, &data, at_unix_seconds * 1_000_000_000).unwrap()
}

#[test]
fn every_city_pack_rego_test_passes() {
    let results = run("policies/rego", 1_700_000_000);
    let failed: Vec<_> = results.iter().filter(|r| !r.passed).collect();
    assert!(failed.is_empty(), "failed Rego tests: {failed:#?}");
    assert!(results.len() >= 30, "only {} tests found", results.len());
}

#[test]
fn a_broken_rule_makes_its_test_fail() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/rego");
    let (mut modules, data) = load_dir(&root);
    let city = modules.get_mut("city.rego").unwrap();
    *city = city.replace("\"mfa\" in input.identity.claims.amr", "true");
    let results = run_rego_tests(&modules, &data, 0).unwrap();
    let failed: Vec<&str> = results
        .iter()
        .filter(|r| !r.passed)
        .map(|r| r.name.as_str())
        .collect();
    assert!(
        failed.contains(&"data.citygate.city_test.test_citizen_write_needs_mfa"),
        "{failed:?}"
    );
    assert!(failed.contains(&"data.citygate.city_test.test_operator_write_needs_mfa"));
}

/// The pack as the gateway runs it: compiled once, one request evaluated
/// through `PolicyEngine::authorize` (decision object, redaction profile).
#[test]
fn the_pack_decides_through_the_policy_engine() {
    use citygate_filter::config::{GatewayConfig, RouteConfig};
    use citygate_filter::host::memory::MemoryHost;
    use citygate_filter::identity::Identity;
    use citygate_filter::normalize::{normalize, ConnectionInfo, RawRequest};
    use citygate_filter::policy::{PolicyConfig, PolicyEngine, RequestContext};

    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/rego");
    let (mut modules, data) = load_dir(&root);
    modules.retain(|name, _| !name.ends_with("_test.rego"));
    let config: PolicyConfig = serde_json::from_value(serde_json::json!({
        "modules": modules,
        "data": data,
        "entrypoint": "data.citygate.city.decision",
    }))
    .unwrap();
    let engine = PolicyEngine::compile(Some(&config)).unwrap();
    let view = normalize(
        &RawRequest {
            headers: vec![
                (":method".into(), "GET".into()),
                (
                    ":path".into(),
                    "/v2/entities?type=ParkingSpot&limit=20".into(),
                ),
                (":authority".into(), "api.city.example".into()),
            ],
            connection: ConnectionInfo::default(),
        },
        &GatewayConfig::default(),
    )
    .unwrap();
    let route: RouteConfig =
        serde_json::from_str(r#"{"name":"ngsi","match":{"path_prefix":"/v2"}}"#).unwrap();
    let host = MemoryHost::default();
    let request = RequestContext {
        view: &view,
        identity: &Identity::anonymous(),
        route: &route,
        body: None,
        body_truncated: false,
    };
    let decision = engine.authorize(&request, &host);
    assert!(decision.allowed);
    assert_eq!(decision.redact, vec!["open-data".to_string()]);
    assert_eq!(decision.reason.as_deref(), Some("open-data access"));

    let rounds = 2000u32;
    let started = std::time::Instant::now();
    for _ in 0..rounds {
        assert!(engine.authorize(&request, &host).allowed);
    }
    eprintln!(
        "city pack decision (input + clone + evaluation): {:?} per request",
        started.elapsed() / rounds
    );
}
