//! OPA-Envoy's documented examples (`policies/examples/opa-envoy`) run
//! unchanged through citygate's policy stage and give the decisions the
//! OPA-Envoy documentation shows.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use citygate_core::config::{GatewayConfig, RouteConfig};
use citygate_core::host::memory::MemoryHost;
use citygate_core::identity::Identity;
use citygate_core::normalize::{normalize, ConnectionInfo, RawRequest};
use citygate_core::policy::{PolicyConfig, PolicyEngine, RequestContext};

const NOW: u64 = 1_700_000_000;

fn engine(file: &str, entrypoint: &str) -> PolicyEngine {
    let path = format!(
        "{}/../../policies/examples/opa-envoy/{file}",
        env!("CARGO_MANIFEST_DIR")
    );
    let source = std::fs::read_to_string(path).unwrap();
    let config: PolicyConfig = serde_json::from_value(serde_json::json!({
        "modules": {file: source},
        "entrypoint": entrypoint,
    }))
    .unwrap();
    PolicyEngine::compile(Some(&config)).unwrap()
}

fn allowed(
    engine: &PolicyEngine,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> bool {
    let mut all = vec![
        (":method".to_string(), method.to_string()),
        (":path".to_string(), path.to_string()),
        (":authority".to_string(), "example.com".to_string()),
    ];
    all.extend(headers.iter().map(|(n, v)| (n.to_string(), v.to_string())));
    let view = normalize(
        &RawRequest {
            headers: all,
            connection: ConnectionInfo::default(),
        },
        &GatewayConfig::default(),
    )
    .unwrap();
    let route: RouteConfig =
        serde_json::from_str(r#"{"name":"api","match":{"path_prefix":"/"}}"#).unwrap();
    let host = MemoryHost::at_unix_seconds(NOW);
    let decision = engine.authorize(
        &RequestContext {
            view: &view,
            identity: &Identity::anonymous(),
            route: &route,
            body: body.map(str::as_bytes),
            body_truncated: false,
        },
        &host,
    );
    decision.allowed
}

/// An HS256 token as the primer's examples carry (signed with `secret`).
fn primer_token(role: &str, subject: &str) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = serde_json::json!({
        "role": role,
        "sub": URL_SAFE_NO_PAD.encode(subject),
        "nbf": NOW - 3600,
        "exp": NOW + 3600,
    });
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let mut mac = Hmac::<Sha256>::new_from_slice(b"secret").unwrap();
    mac.update(format!("{header}.{payload}").as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("Bearer {header}.{payload}.{signature}")
}

#[test]
fn primer_guest_reads_people_but_cannot_create() {
    let e = engine("primer_jwt.rego", "data.envoy.authz.allow");
    let alice = primer_token("guest", "alice");
    assert!(allowed(
        &e,
        "GET",
        "/people",
        &[("authorization", &alice)],
        None
    ));
    assert!(!allowed(
        &e,
        "POST",
        "/people",
        &[
            ("authorization", &alice),
            ("content-type", "application/json")
        ],
        Some(r#"{"firstname":"Charlie","lastname":"Opa"}"#),
    ));
}

/// The primer: "Bob can get employees and also create one", but "cannot
/// create an employee with the same firstname as himself".
#[test]
fn primer_admin_creates_anyone_but_himself() {
    let e = engine("primer_jwt.rego", "data.envoy.authz.allow");
    let bob = primer_token("admin", "bob");
    let json = ("content-type", "application/json");
    assert!(allowed(
        &e,
        "POST",
        "/people",
        &[("authorization", &bob), json],
        Some(r#"{"firstname":"Charlie","lastname":"Opa"}"#),
    ));
    assert!(!allowed(
        &e,
        "POST",
        "/people",
        &[("authorization", &bob), json],
        Some(r#"{"firstname":"Bob","lastname":"Rego"}"#),
    ));
}

#[test]
fn primer_refuses_forged_expired_and_missing_tokens() {
    let e = engine("primer_jwt.rego", "data.envoy.authz.allow");
    let alice = primer_token("guest", "alice");
    let forged = format!("{}A", &alice[..alice.len() - 1]);
    assert!(!allowed(
        &e,
        "GET",
        "/people",
        &[("authorization", &forged)],
        None
    ));
    assert!(!allowed(&e, "GET", "/people", &[], None));
    assert!(!allowed(
        &e,
        "GET",
        "/people",
        &[("authorization", "Bearer x.y.z")],
        None
    ));
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
}

#[test]
fn istio_quick_start_rbac_decisions() {
    let e = engine("istio_basic_auth_rbac.rego", "data.istio.authz.allow");
    let alice = basic("alice", "password");
    let bob = basic("bob", "password");
    assert!(allowed(
        &e,
        "GET",
        "/productpage",
        &[("authorization", &alice)],
        None
    ));
    assert!(!allowed(
        &e,
        "GET",
        "/api/v1/products",
        &[("authorization", &alice)],
        None
    ));
    assert!(allowed(
        &e,
        "GET",
        "/api/v1/products",
        &[("authorization", &bob)],
        None
    ));
    assert!(allowed(&e, "GET", "/health", &[], None));
    assert!(!allowed(&e, "POST", "/health", &[], None));
    assert!(!allowed(&e, "GET", "/productpage", &[], None));
    assert!(!allowed(
        &e,
        "GET",
        "/productpage",
        &[("authorization", &basic("mallory", "x"))],
        None
    ));
}
