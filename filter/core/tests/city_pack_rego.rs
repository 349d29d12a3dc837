//! Runs every `test_` rule of the city policy pack (`policies/rego`) with
//! the engine the filter uses, so the pack's Rego tests gate the build.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::Path;

use citygate_core::policy::testing::run_rego_tests;

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

fn run(dir: &str, at_unix_seconds: u64) -> Vec<citygate_core::policy::testing::RegoTestResult> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(dir);
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
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies/rego");
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

/// The pack's modules (tests left out) and data, compiled as the gateway
/// compiles them.
fn city_pack_engine() -> citygate_core::policy::PolicyEngine {
    use citygate_core::policy::{PolicyConfig, PolicyEngine};
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies/rego");
    let (mut modules, data) = load_dir(&root);
    modules.retain(|name, _| !name.ends_with("_test.rego"));
    let config: PolicyConfig = serde_json::from_value(serde_json::json!({
        "modules": modules,
        "data": data,
        "entrypoint": "data.citygate.city.decision",
    }))
    .unwrap();
    PolicyEngine::compile(Some(&config)).unwrap()
}

/// The pack as the gateway runs it: compiled once, one request evaluated
/// through `PolicyEngine::authorize` (decision object, redaction profile).
#[test]
fn the_pack_decides_through_the_policy_engine() {
    use citygate_core::config::{GatewayConfig, RouteConfig};
    use citygate_core::host::memory::MemoryHost;
    use citygate_core::identity::Identity;
    use citygate_core::normalize::{normalize, ConnectionInfo, RawRequest};
    use citygate_core::policy::RequestContext;

    let engine = city_pack_engine();
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
    let route: RouteConfig = serde_json::from_str(
        r#"{"name":"ngsi","match":{"path_prefix":"/v2"},"ngsi":"v2","request_body":{"buffer":true}}"#,
    )
    .unwrap();
    let host = MemoryHost::default();
    let request = RequestContext {
        view: &view,
        identity: &Identity::anonymous(),
        route: &route,
        body: Some(b""),
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
        "city pack decision (input + evaluation): {:?} per request",
        started.elapsed() / rounds
    );
}

/// The gateway runs the pack on regorus's bytecode VM, the Rego tests run
/// it in the interpreter: the two must give the same decision for every
/// request the pack distinguishes (roles, MFA, methods, APIs, entity types,
/// reasons, bodies in the requester's or another's name).
#[test]
fn the_vm_and_the_interpreter_decide_every_city_request_alike() {
    use citygate_core::config::{GatewayConfig, RouteConfig};
    use citygate_core::identity::{Identity, IdentityKind};
    use citygate_core::normalize::{normalize, ConnectionInfo, RawRequest};
    use citygate_core::policy::{Evaluator, RequestContext};

    let engine = city_pack_engine();
    assert_eq!(engine.evaluator().unwrap().0, Evaluator::Vm);

    let person = |roles: &[&str], amr: &[&str]| Identity {
        kind: IdentityKind::Jwt,
        subject: Some("resident-7".into()),
        client_id: Some("city-app".into()),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        scopes: vec!["openid".into()],
        claims: std::rc::Rc::new(
            serde_json::json!({"sub": "resident-7", "amr": amr})
                .as_object()
                .cloned()
                .unwrap()
                .into(),
        ),
    };
    let mut identities = vec![Identity::anonymous()];
    for role in [
        "citizen",
        "city-operator",
        "traffic-analyst",
        "emergency-services",
    ] {
        identities.push(person(&[role], &["pwd"]));
        identities.push(person(&[role], &["pwd", "mfa"]));
    }
    identities.push(person(&["citizen", "traffic-analyst"], &["mfa"]));
    let paths = [
        "/v2/entities?type=ParkingSpot",
        "/v2/entities?type=ParkingSpot,Vehicle",
        "/v2/entities?type=Vehicle",
        "/v2/entities?type=ParkingSpot&type=Vehicle",
        "/v2/entities/urn:ngsi-ld:ParkingSpot:example-city:p1",
        "/v2/entities/urn:ngsi-ld:Vehicle:example-city:bus-001",
        "/v2/entities/plain-id",
        "/ngsi-ld/v1/entities?type=TrafficFlowObserved",
        "/ngsi-ld/v1/entities/urn:ngsi-ld:Vehicle:x:1",
        "/v2/entities?type=ParkingSpot&q=occupancy==1&orderBy=totalSpotNumber",
        "/ngsi-ld/v1/entities?type=ParkingSpot&q=occupiedBy==%22B-CG%201000%22",
        "/open311/v2/requests.json",
        "/open311/v2/requests.json?account_id=resident-7",
        "/open311/v2/requests.json?account_id=someone-else",
        "/open311/v2/requests/42.json",
        "/open311/v2/requests/42.xml",
        "/v1/admin",
        "/",
    ];
    let bodies: [(&str, &str); 5] = [
        ("", ""),
        ("application/json", r#"{"account_id":"resident-7"}"#),
        ("application/json", r#"{"account_id":"someone-else"}"#),
        (
            "application/x-www-form-urlencoded",
            "account_id=resident-7&service_code=001",
        ),
        (
            "application/x-www-form-urlencoded",
            "account_id=resident-7&account_id=someone-else",
        ),
    ];
    // As the city's configuration routes them: the NGSI APIs give the
    // policy `input.ngsi`.
    let route_for = |api: &str| -> RouteConfig {
        let ngsi = match api {
            "" => String::new(),
            api => format!(r#","ngsi":"{api}""#),
        };
        serde_json::from_str(&format!(
            r#"{{"name":"city-api","match":{{"path_prefix":"/"}},"request_body":{{"buffer":true}}{ngsi}}}"#
        ))
        .unwrap()
    };
    let routes = [route_for(""), route_for("v2"), route_for("ld")];
    let tenants = [None, Some("parking"), Some("waste")];
    let (mut compared, mut allowed, mut profiles) = (0, 0, std::collections::BTreeSet::new());
    let mut refused_input = 0;
    for identity in &identities {
        for path in paths {
            for method in ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"] {
                for reason in [None, Some("incident 2026-118"), Some("  ")] {
                    for ((content_type, body), tenant) in bodies
                        .iter()
                        .flat_map(|b| tenants.iter().map(move |t| (*b, *t)))
                    {
                        let mut headers = vec![
                            (":method".to_string(), method.to_string()),
                            (":path".to_string(), path.to_string()),
                            (":authority".to_string(), "api.city.example".to_string()),
                        ];
                        if let Some(reason) = reason {
                            headers.push(("x-access-reason".into(), reason.into()));
                        }
                        if !content_type.is_empty() {
                            headers.push(("content-type".into(), content_type.into()));
                        }
                        if let Some(tenant) = tenant {
                            headers.push(("fiware-service".into(), tenant.into()));
                        }
                        let route = if path.starts_with("/v2/") {
                            &routes[1]
                        } else if path.starts_with("/ngsi-ld/") {
                            &routes[2]
                        } else {
                            &routes[0]
                        };
                        let view = normalize(
                            &RawRequest {
                                headers,
                                connection: ConnectionInfo::default(),
                            },
                            &GatewayConfig::default(),
                        )
                        .unwrap();
                        let request = RequestContext {
                            view: &view,
                            identity,
                            route,
                            body: Some(body.as_bytes()),
                            body_truncated: false,
                        };
                        // No input (a repeated NGSI parameter, an
                        // open311 body on an NGSI write): refused alike.
                        let Some((vm, interpreter)) = engine.evaluate_both(&request, 0) else {
                            refused_input += 1;
                            continue;
                        };
                        assert_eq!(
                            vm, interpreter,
                            "{method} {path} as {:?} (reason {reason:?}, body {body:?})",
                            identity.roles
                        );
                        let decision = vm.unwrap();
                        if decision["allowed"] == regorus::Value::from(true) {
                            allowed += 1;
                            profiles.insert(decision["redact"].to_string());
                        }
                        compared += 1;
                    }
                }
            }
        }
    }
    // The grid reaches every profile, and denials as well as allows.
    assert_eq!(
        compared + refused_input,
        identities.len() * paths.len() * 6 * 3 * bodies.len() * tenants.len()
    );
    assert!(refused_input > 0 && refused_input < compared);
    assert!(allowed > 0 && allowed < compared, "{allowed} of {compared}");
    assert_eq!(profiles.len(), 5, "{profiles:?}");
}
