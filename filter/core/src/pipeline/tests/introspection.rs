//! Opaque tokens through the pipeline: a request waits for the
//! authorization server's answer, is judged again from the cache, and gets
//! 401 or 503 (never an allow) when the answer says no or never comes.

use serde_json::{json, Value};

use crate::auth::jwt::testkeys;
use crate::host::memory::MemoryHost;
use crate::identity::IdentityKind;
use crate::metrics::Metric;
use crate::normalize::{ConnectionInfo, RawRequest};
use crate::pipeline::{Admission, Attempt, CompiledConfig, PendingIntrospection};

const NOW: u64 = 1_800_000_000;
const ISSUER: &str = "https://idp.city.example/realms/city";
const OPAQUE: &str = "cg_op_4f1c2a9e";

fn gateway() -> CompiledConfig {
    let jwks: Value = serde_json::from_str(&testkeys::jwks(&[testkeys::rsa_jwk("k1")])).unwrap();
    let config = json!({
        "auth": {
            "jwt": {"providers": [{"name": "city-idp", "issuer": ISSUER, "algorithms": ["RS256"],
                                   "keys": {"jwks": jwks}}]},
            "introspection": {"providers": [{
                "name": "city-as", "cluster": "idp", "authority": "idp.city.example",
                "path": "/oauth2/introspect", "client_id": "citygate",
                "client_secret": "${env:INTROSPECTION_SECRET}"
            }]}
        },
        "routes": [
            {"name": "requests", "match": {"path_prefix": "/open311"},
             "auth": {"methods": ["jwt", "introspection"], "required_scopes": ["requests:read"]}},
            {"name": "open", "match": {"path_prefix": "/v2"},
             "auth": {"anonymous": true, "methods": ["introspection"]}}
        ]
    });
    let env = |name: &str| (name == "INTROSPECTION_SECRET").then(|| "demo-secret".to_string());
    CompiledConfig::from_json(config.to_string().as_bytes(), &env).unwrap()
}

fn request(path: &str, token: &str) -> RawRequest {
    RawRequest {
        headers: vec![
            (":method".into(), "GET".into()),
            (":path".into(), path.into()),
            ("authorization".into(), format!("Bearer {token}")),
        ],
        connection: ConnectionInfo::default(),
    }
}

fn waits(gw: &CompiledConfig, raw: &RawRequest, host: &MemoryHost) -> PendingIntrospection {
    match gw.admit_or_wait(raw, host, Attempt::First) {
        Admission::AwaitingIntrospection(pending) => pending,
        other => panic!("did not wait for introspection: {other:?}"),
    }
}

fn active_answer() -> Vec<u8> {
    json!({"active": true, "sub": "citizen-anna", "client_id": "citizen-portal",
           "scope": "openid requests:read", "exp": NOW + 600})
    .to_string()
    .into_bytes()
}

#[test]
fn an_opaque_token_waits_for_the_answer_then_is_admitted_from_the_cache() {
    let (gw, host) = (gateway(), MemoryHost::at_unix_seconds(NOW));
    let raw = request("/open311/v2/requests.json", OPAQUE);
    let pending = waits(&gw, &raw, &host);
    assert_eq!(host.callouts.borrow().len(), 1);
    gw.accept_introspection(&pending, 200, &active_answer(), &host);
    let Admission::Admitted(admitted) = gw.admit_or_wait(&raw, &host, Attempt::Final) else {
        panic!("not admitted after an active answer");
    };
    assert_eq!(admitted.identity.kind, IdentityKind::OpaqueToken);
    assert_eq!(admitted.identity.subject.as_deref(), Some("citizen-anna"));
    assert!(
        admitted
            .edits
            .remove_headers
            .iter()
            .any(|h| h == "authorization"),
        "the token does not reach the upstream"
    );
    // The next request with the token does not ask again.
    let again = gw.admit_or_wait(&raw, &host, Attempt::First);
    assert!(matches!(again, Admission::Admitted(_)), "{again:?}");
    assert_eq!(host.callouts.borrow().len(), 1);
    assert_eq!(
        host.counter(Metric::RequestsTotal),
        2,
        "a re-judgement is not a request"
    );
    assert_eq!(host.counter(Metric::AuthAllowed), 2);
}

#[test]
fn route_requirements_apply_to_introspected_identities() {
    let (gw, host) = (gateway(), MemoryHost::at_unix_seconds(NOW));
    let raw = request("/open311/v2/requests.json", OPAQUE);
    let pending = waits(&gw, &raw, &host);
    let answer = json!({"active": true, "sub": "x", "scope": "openid"}).to_string();
    gw.accept_introspection(&pending, 200, answer.as_bytes(), &host);
    let Admission::Answered(reply) = gw.admit_or_wait(&raw, &host, Attempt::Final) else {
        panic!("admitted without the scope");
    };
    assert_eq!(reply.status, 403);
}

#[test]
fn an_inactive_token_is_401_and_a_failed_call_is_503() {
    let (gw, host) = (gateway(), MemoryHost::at_unix_seconds(NOW));
    let raw = request("/open311/v2/requests.json", OPAQUE);
    let pending = waits(&gw, &raw, &host);
    gw.accept_introspection(&pending, 200, br#"{"active":false}"#, &host);
    let Admission::Answered(reply) = gw.admit_or_wait(&raw, &host, Attempt::Final) else {
        panic!("an inactive token was admitted");
    };
    assert_eq!(reply.status, 401);
    let challenge = reply
        .headers
        .iter()
        .find(|(n, _)| n == "www-authenticate")
        .map(|(_, v)| v.clone())
        .unwrap();
    assert!(
        challenge.contains(r#"error="invalid_token""#),
        "{challenge}"
    );
    assert!(host
        .log_lines()
        .iter()
        .any(|l| l.contains("token-inactive")));

    let other = request("/open311/v2/requests.json", "cg_op_other");
    let pending = waits(&gw, &other, &host);
    gw.accept_introspection(&pending, 0, b"", &host);
    let Admission::Answered(reply) = gw.admit_or_wait(&other, &host, Attempt::Final) else {
        panic!("admitted without an answer");
    };
    assert_eq!(reply.status, 503);
    assert!(reply
        .headers
        .iter()
        .any(|(n, v)| n == "retry-after" && v == "1"));
    let body = String::from_utf8(reply.body.clone()).unwrap();
    assert!(body.contains("introspection-unavailable"), "{body}");
    assert!(!body.contains("cg_op"), "{body}");
    assert!(!host.log_lines().join("\n").contains("cg_op"));
    // An anonymous route refuses a bad token too: never downgraded.
    let pending = waits(&gw, &request("/v2/entities", "cg_op_third"), &host);
    gw.accept_introspection(&pending, 200, br#"{"active":false}"#, &host);
    let Admission::Answered(reply) = gw.admit_or_wait(
        &request("/v2/entities", "cg_op_third"),
        &host,
        Attempt::Final,
    ) else {
        panic!("anonymous route admitted an inactive token");
    };
    assert_eq!(reply.status, 401);
}

#[test]
fn jwts_of_a_configured_issuer_are_verified_locally_on_an_introspecting_route() {
    let (gw, host) = (gateway(), MemoryHost::at_unix_seconds(NOW));
    let jwt = testkeys::mint_rs256(
        "k1",
        &json!({"iss": ISSUER, "sub": "olga", "exp": NOW + 60, "scope": "requests:read"}),
    );
    let admitted = gw
        .admit(&request("/open311/v2/requests.json", &jwt), &host)
        .unwrap();
    assert_eq!(admitted.identity.kind, IdentityKind::Jwt);
    // A JWT of another issuer is the authorization server's to judge.
    let foreign = testkeys::mint_rs256(
        "k1",
        &json!({"iss": "https://elsewhere.example", "sub": "x", "exp": NOW + 60}),
    );
    let raw = request("/open311/v2/requests.json", &foreign);
    waits(&gw, &raw, &host);
    assert_eq!(host.callouts.borrow().len(), 1);
}

#[test]
fn a_request_judged_once_only_never_calls_and_gets_503() {
    let (gw, host) = (gateway(), MemoryHost::at_unix_seconds(NOW));
    let reply = gw
        .admit(&request("/open311/v2/requests.json", OPAQUE), &host)
        .unwrap_err();
    assert_eq!(reply.status, 503);
    assert!(host.callouts.borrow().is_empty());
}

#[test]
fn an_unknown_introspection_provider_on_a_route_names_the_field() {
    let config = json!({
        "auth": {"introspection": {"providers": [{
            "name": "city-as", "cluster": "idp", "authority": "a", "path": "/i",
            "client_id": "c", "client_secret": "s"}]}},
        "routes": [{"name": "r", "match": {"path_prefix": "/"},
                    "auth": {"methods": ["introspection"], "introspection_providers": ["other"]}}]
    });
    let Err(error) = CompiledConfig::from_json(config.to_string().as_bytes(), &|_| None) else {
        panic!("accepted");
    };
    assert_eq!(error.path, "$.routes[0].auth.introspection_providers[0]");
    let without = json!({"routes": [{"name": "r", "match": {"path_prefix": "/"},
                                      "auth": {"methods": ["introspection"]}}]});
    let Err(error) = CompiledConfig::from_json(without.to_string().as_bytes(), &|_| None) else {
        panic!("accepted");
    };
    assert_eq!(error.path, "$.routes[0].auth.methods");
}
