//! The authentication stage in the real `.wasm`, for what a scenario file
//! cannot express: requests that wait for the first remote key set (pending,
//! then forwarded or 503), the JWKS endpoint failing after a first fetch,
//! key rotation through the unknown-`kid` refetch, workers sharing one fetch,
//! and the exact token or key never appearing in a reply or a log line.
//!
//! These tests time fetches, back-offs and deadlines to the millisecond, so
//! they depend on where the host differs from Envoy (ARCHITECTURE.md, "Where
//! the wasmtime host differs from Envoy"): its clock stands still until a
//! test advances it, ticks run only in `Vm::advance`/`Vm::tick`, and a
//! callout is answered only when delivered. `e2e_auth.rs` covers the same
//! behaviour in real time through Envoy.
//!
//! Configuration and credentials are the auth scenario's:
//! `policies/scenarios/auth.config.json` and the DEMO ONLY
//! `policies/demo-keys/credentials.yaml`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use citygate_host::scenario::credentials::{Credentials, Tamper};
use citygate_host::wasm_build::workspace_root;
use citygate_host::{
    CalloutReply, Clock, Delivery, Plugin, Request, RequestOutcome, SharedStore, Upstream, Vm,
    VmBuilder,
};
use serde_json::Value;

use crate::support::{demo_credentials, get_with_bearer, metric, plugin, vm_now, with_bearer};

/// The scenario clock: 2026-09-21T...Z, so demo tokens and the expired API
/// key (`not_after` 2025) are judged against a fixed time.
const START: u64 = 1_790_000_000;
const JWKS_PATH: &str = "/.well-known/jwks.json";
const PUBLISHED: [&str; 4] = [
    "demo-rs256-2026",
    "demo-ps256-2026",
    "demo-es256-2026",
    "demo-eddsa-2026",
];

fn config() -> String {
    std::fs::read_to_string(workspace_root().join("policies/scenarios/auth.config.json"))
        .expect("the auth scenario's configuration")
}

/// A VM of the auth configuration on `clock`, with the scenario's secrets.
fn builder(plugin: &Plugin, clock: &Clock) -> VmBuilder {
    plugin
        .vm()
        .config(config())
        .clock(clock)
        .env("CITYGATE_LOG_KEY", "demo-only-decision-log-key-change-me")
        .env(
            "PARTNER_HS256_SECRET",
            "demo-only-hs256-secret-change-me-0123456789",
        )
}

fn jwks(credentials: &Credentials, kids: &[&str]) -> Value {
    credentials
        .jwks("city-idp", Some(kids))
        .expect("the demo issuer's JWKS")
}

fn jwks_reply(jwks: &Value) -> CalloutReply {
    CalloutReply::json(200, jwks.to_string())
}

/// What the `jwks` cluster answers, changeable while the VM runs, and how
/// many fetches reached it.
#[derive(Clone)]
struct JwksEndpoint {
    reply: Arc<Mutex<CalloutReply>>,
    fetches: Arc<AtomicUsize>,
}

impl JwksEndpoint {
    fn serving(jwks: &Value) -> Self {
        Self {
            reply: Arc::new(Mutex::new(jwks_reply(jwks))),
            fetches: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn set(&self, reply: CalloutReply) {
        *self.reply.lock().unwrap() = reply;
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    /// Answers `jwks` callouts (checking that they ask for the JWKS).
    fn attach(&self, builder: VmBuilder) -> VmBuilder {
        let endpoint = self.clone();
        builder.callouts_with(move |call| {
            assert_eq!(call.cluster, "jwks");
            assert_eq!(call.path(), JWKS_PATH);
            assert_eq!(call.method(), "GET");
            endpoint.fetches.fetch_add(1, Ordering::SeqCst);
            endpoint.reply.lock().unwrap().clone()
        })
    }
}

fn mint(credentials: &Credentials, vm: &Vm, name: &str, tamper: Tamper) -> String {
    credentials.mint(name, tamper, vm_now(vm)).unwrap()
}

fn status(outcome: &RequestOutcome) -> Option<u16> {
    match outcome {
        RequestOutcome::Local(reply) => Some(reply.status),
        RequestOutcome::Forwarded(_) => Some(200),
        _ => None,
    }
}

/// Sends a request; the status the client gets (200 when forwarded).
fn send_status(vm: &mut Vm, request: Request) -> u16 {
    let outcome = vm.send(request).unwrap().outcome();
    status(&outcome).unwrap_or_else(|| panic!("still pending: {}", vm.report()))
}

/// The VM with its first key set in: the first tick creates the fetch lock,
/// the second fetches (answered at once by the scripted endpoint).
fn vm_with_keys(endpoint: &JwksEndpoint) -> Vm {
    let clock = Clock::at_unix_secs(START);
    let mut vm = endpoint.attach(builder(&plugin(), &clock)).start().unwrap();
    vm.advance(Duration::from_millis(200)).unwrap();
    assert_eq!(endpoint.fetches(), 1, "one fetch brings the first key set");
    vm
}

#[test]
fn remote_keys_make_the_root_tick_fast_and_are_fetched_from_the_configured_endpoint() {
    let clock = Clock::at_unix_secs(START);
    let mut vm = builder(&plugin(), &clock)
        .delivery(Delivery::Manual)
        .start()
        .unwrap();
    assert_eq!(vm.tick_period(), Some(Duration::from_millis(100)));
    vm.advance(Duration::from_millis(100)).unwrap();
    assert!(
        vm.pending_callouts().is_empty(),
        "the first tick only creates the lock"
    );
    vm.advance(Duration::from_millis(100)).unwrap();
    let calls = vm.pending_callouts().to_vec();
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!(call.context_id, vm.root_context_id());
    assert_eq!(call.cluster, "jwks");
    assert_eq!(call.path(), JWKS_PATH);
    assert_eq!(call.headers.get(":authority"), Some("idp.city.example"));
    assert_eq!(call.timeout_ms, 2000);
    // While the fetch is in flight nobody fetches again.
    vm.advance(Duration::from_millis(500)).unwrap();
    assert_eq!(vm.pending_callouts().len(), 1);
}

#[test]
fn a_request_waits_for_the_first_key_set_then_goes_upstream() {
    let credentials = demo_credentials();
    let clock = Clock::at_unix_secs(START);
    let mut vm = builder(&plugin(), &clock)
        .delivery(Delivery::Manual)
        .start()
        .unwrap();
    let token = mint(&credentials, &vm, "citizen", Tamper::None);
    let id = vm.open(get_with_bearer("/v2/entities", &token)).unwrap();
    assert_eq!(vm.outcome(id), RequestOutcome::Pending);

    vm.advance(Duration::from_millis(200)).unwrap();
    assert_eq!(vm.outcome(id), RequestOutcome::Pending, "fetch in flight");
    let token_id = vm.pending_callouts()[0].token;
    vm.advance(Duration::from_millis(1000)).unwrap();
    assert_eq!(vm.outcome(id), RequestOutcome::Pending, "still waiting");

    vm.deliver_callout(token_id, jwks_reply(&jwks(&credentials, &PUBLISHED)))
        .unwrap();
    let RequestOutcome::Forwarded(forwarded) = vm.outcome(id) else {
        panic!(
            "not forwarded once the keys arrived: {:?}\n{}",
            vm.outcome(id),
            vm.report()
        );
    };
    assert_eq!(
        forwarded.headers.get("x-citygate-subject"),
        Some("citizen-anna")
    );
    assert_eq!(forwarded.headers.get("x-citygate-auth-kind"), Some("jwt"));
    assert!(!forwarded.headers.contains("authorization"));
    assert_eq!(vm.metric("citygate_jwks_fetched"), Some(1));
    assert_eq!(vm.metric("citygate_auth_allowed"), Some(1));
    // The upstream's reply reaches the client as usual.
    let response = vm
        .respond(id, Upstream::ok().json("{\"ok\":true}"))
        .unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.body_str(), "{\"ok\":true}");
}

#[test]
fn a_waiting_request_keeps_its_body() {
    let credentials = demo_credentials();
    let clock = Clock::at_unix_secs(START);
    let mut vm = builder(&plugin(), &clock)
        .delivery(Delivery::Manual)
        .start()
        .unwrap();
    let token = mint(&credentials, &vm, "citizen", Tamper::None);
    let body = r#"{"service_code":"pothole","description":"deep hole"}"#;
    let id = vm
        .open(
            with_bearer(Request::post("/open311/v2/requests.json"), &token)
                .json(body)
                .chunk_size(7),
        )
        .unwrap();
    vm.advance(Duration::from_millis(200)).unwrap();
    assert_eq!(vm.outcome(id), RequestOutcome::Pending);
    let call = vm.pending_callouts()[0].token;
    vm.deliver_callout(call, jwks_reply(&jwks(&credentials, &PUBLISHED)))
        .unwrap();
    let RequestOutcome::Forwarded(forwarded) = vm.outcome(id) else {
        panic!("not forwarded: {:?}\n{}", vm.outcome(id), vm.report());
    };
    assert_eq!(String::from_utf8(forwarded.body).unwrap(), body);
}

#[test]
fn a_request_waiting_past_max_wait_gets_503_and_never_reaches_the_upstream() {
    let credentials = demo_credentials();
    let clock = Clock::at_unix_secs(START);
    // The endpoint never answers. Depends on the host never enforcing a
    // callout's timeout (ARCHITECTURE.md, "Where the wasmtime host differs
    // from Envoy"): the fetch (timeout_ms 2000) stays in flight for the whole
    // wait, where Envoy would fail it after 2 s and the filter retry.
    let mut vm = builder(&plugin(), &clock)
        .delivery(Delivery::Manual)
        .start()
        .unwrap();
    let token = mint(&credentials, &vm, "citizen", Tamper::None);
    let id = vm.open(get_with_bearer("/v2/entities", &token)).unwrap();
    vm.advance(Duration::from_millis(2900)).unwrap();
    assert_eq!(
        vm.outcome(id),
        RequestOutcome::Pending,
        "max_wait_ms is 3000"
    );
    vm.advance(Duration::from_millis(200)).unwrap();
    let RequestOutcome::Local(reply) = vm.outcome(id) else {
        panic!(
            "no 503 after max_wait: {:?}\n{}",
            vm.outcome(id),
            vm.report()
        );
    };
    assert_eq!(reply.status, 503);
    assert_eq!(reply.headers.get("retry-after"), Some("1"));
    assert_eq!(
        reply.headers.get("content-type"),
        Some("application/problem+json")
    );
    assert!(!reply.headers.contains("www-authenticate"));
    let problem: Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(problem["status"], 503);
    assert_eq!(problem["type"], "urn:citygate:problem:keys-unavailable");
    assert_eq!(vm.metric("citygate_auth_unavailable"), Some(1));
    assert_eq!(metric(&vm, "citygate_auth_allowed"), 0);
    assert!(vm.logged(r#""status":503"#));
    assert!(!vm.logs().iter().any(|l| l.message.contains(&token)));
    // A later request does not wait for a fetch that may never come back
    // either: it waits its own max_wait, then 503 too (never an allow).
    let second = vm.open(get_with_bearer("/v2/entities", &token)).unwrap();
    assert_eq!(vm.outcome(second), RequestOutcome::Pending);
    vm.advance(Duration::from_millis(3100)).unwrap();
    assert_eq!(status(&vm.outcome(second)), Some(503));
}

#[test]
fn a_failed_first_fetch_is_retried_and_the_waiting_request_then_goes_upstream() {
    let credentials = demo_credentials();
    let clock = Clock::at_unix_secs(START);
    let mut vm = builder(&plugin(), &clock)
        .delivery(Delivery::Manual)
        .start()
        .unwrap();
    let token = mint(&credentials, &vm, "citizen", Tamper::None);
    let id = vm.open(get_with_bearer("/v2/entities", &token)).unwrap();
    vm.advance(Duration::from_millis(200)).unwrap();
    let first = vm.pending_callouts()[0].token;
    vm.deliver_callout(first, CalloutReply::status(503, "upstream down"))
        .unwrap();
    assert_eq!(vm.outcome(id), RequestOutcome::Pending);
    assert_eq!(vm.metric("citygate_jwks_fetch_failed"), Some(1));
    // retry_seconds is 1: no new fetch before it, one after.
    vm.advance(Duration::from_millis(500)).unwrap();
    assert!(vm.pending_callouts().is_empty(), "backing off");
    vm.advance(Duration::from_millis(700)).unwrap();
    assert_eq!(vm.pending_callouts().len(), 1, "retried after 1 s");
    let retry = vm.pending_callouts()[0].token;
    vm.deliver_callout(retry, jwks_reply(&jwks(&credentials, &PUBLISHED)))
        .unwrap();
    assert!(
        matches!(vm.outcome(id), RequestOutcome::Forwarded(_)),
        "{:?}",
        vm.outcome(id)
    );
}

#[test]
fn the_endpoint_down_after_a_first_fetch_keeps_the_last_good_keys() {
    let credentials = demo_credentials();
    let endpoint = JwksEndpoint::serving(&jwks(&credentials, &PUBLISHED));
    let mut vm = vm_with_keys(&endpoint);
    let citizen = mint(&credentials, &vm, "citizen", Tamper::None);
    assert_eq!(
        send_status(&mut vm, get_with_bearer("/v2/entities", &citizen)),
        200
    );

    endpoint.set(CalloutReply::status(503, "<html>maintenance</html>"));
    // refresh_seconds is 600: the refresh is due, and fails.
    vm.clock().advance(Duration::from_secs(599));
    vm.advance(Duration::from_secs(1)).unwrap();
    assert_eq!(endpoint.fetches(), 2, "the refresh was attempted");
    assert_eq!(vm.metric("citygate_jwks_fetch_failed"), Some(1));
    assert!(vm.logged("keeping the last good key set"));
    assert!(!vm.logged("maintenance"), "bodies are never logged");

    // Tokens verify against the last good set, new ones included.
    let analyst = mint(&credentials, &vm, "analyst", Tamper::None);
    assert_eq!(
        send_status(&mut vm, get_with_bearer("/v2/entities", &analyst)),
        200
    );
    // A timeout and a garbage document are failures too.
    endpoint.set(CalloutReply::Timeout);
    vm.advance(Duration::from_millis(1100)).unwrap();
    endpoint.set(CalloutReply::json(200, "{\"keys\": \"not a list\"}"));
    vm.advance(Duration::from_millis(1100)).unwrap();
    assert_eq!(endpoint.fetches(), 4, "retried every retry_seconds (1 s)");
    assert_eq!(vm.metric("citygate_jwks_fetch_failed"), Some(3));
    let bernd = mint(&credentials, &vm, "citizen-bernd", Tamper::None);
    assert_eq!(
        send_status(&mut vm, get_with_bearer("/v2/entities", &bernd)),
        200
    );
    // The endpoint comes back with a rotated set: the next retry fetches it.
    endpoint.set(jwks_reply(&jwks(
        &credentials,
        &["demo-es256-2026", "demo-rs256-next"],
    )));
    vm.advance(Duration::from_millis(1100)).unwrap();
    assert_eq!(vm.metric("citygate_jwks_fetched"), Some(2));
    let citizen = mint(&credentials, &vm, "citizen", Tamper::None);
    let exchange = vm.send(get_with_bearer("/v2/entities", &citizen)).unwrap();
    let reply = exchange.local().unwrap();
    assert_eq!(
        reply.headers.get("www-authenticate"),
        Some(
            r#"Bearer realm="city-api", error="invalid_token", error_description="the token was signed with an unknown key""#
        ),
        "demo-rs256-2026 is no longer published"
    );
    let rotated = mint(&credentials, &vm, "citizen-rotated", Tamper::None);
    assert_eq!(
        send_status(&mut vm, get_with_bearer("/v2/entities", &rotated)),
        200
    );
}

#[test]
fn key_rotation_is_found_by_a_rate_limited_refetch_on_an_unknown_kid() {
    let credentials = demo_credentials();
    let endpoint = JwksEndpoint::serving(&jwks(&credentials, &PUBLISHED));
    let mut vm = vm_with_keys(&endpoint);
    // The issuer rotates: the next key is published, the old one kept.
    endpoint.set(jwks_reply(&jwks(
        &credentials,
        &["demo-rs256-next", "demo-rs256-2026"],
    )));
    let rotated = mint(&credentials, &vm, "citizen-rotated", Tamper::None);
    // Right after a fetch an unknown kid does not refetch (min_refetch_seconds 1).
    assert_eq!(
        send_status(&mut vm, get_with_bearer("/v2/entities", &rotated)),
        401
    );
    vm.advance(Duration::from_millis(500)).unwrap();
    assert_eq!(endpoint.fetches(), 1);

    vm.clock().advance(Duration::from_millis(600));
    // Many unknown-kid requests in a burst ask for one refetch; they are
    // refused themselves.
    for _ in 0..5 {
        assert_eq!(
            send_status(&mut vm, get_with_bearer("/v2/entities", &rotated)),
            401
        );
    }
    vm.advance(Duration::from_millis(300)).unwrap();
    assert_eq!(endpoint.fetches(), 2, "exactly one refetch");
    // The client's retry finds the new key; the old key still verifies.
    assert_eq!(
        send_status(&mut vm, get_with_bearer("/v2/entities", &rotated)),
        200
    );
    let citizen = mint(&credentials, &vm, "citizen", Tamper::None);
    assert_eq!(
        send_status(&mut vm, get_with_bearer("/v2/entities", &citizen)),
        200
    );
    // A kid nobody publishes refetches at most once per second.
    let unknown = mint(&credentials, &vm, "citizen", Tamper::UnknownKid);
    for _ in 0..3 {
        vm.advance(Duration::from_millis(300)).unwrap();
        assert_eq!(
            send_status(&mut vm, get_with_bearer("/v2/entities", &unknown)),
            401
        );
    }
    vm.advance(Duration::from_millis(300)).unwrap();
    assert_eq!(endpoint.fetches(), 3);
    assert!(vm.logged(r#""reason":"jwt-unknown-kid""#));
}

#[test]
fn rotation_that_drops_a_key_invalidates_cached_tokens_of_that_key() {
    let credentials = demo_credentials();
    let endpoint = JwksEndpoint::serving(&jwks(&credentials, &PUBLISHED));
    let mut vm = vm_with_keys(&endpoint);
    let citizen = mint(&credentials, &vm, "citizen", Tamper::None);
    assert_eq!(
        send_status(&mut vm, get_with_bearer("/v2/entities", &citizen)),
        200
    );
    assert_eq!(
        send_status(&mut vm, get_with_bearer("/v2/entities", &citizen)),
        200
    );
    assert_eq!(vm.metric("citygate_jwt_cache_hit"), Some(1));
    endpoint.set(jwks_reply(&jwks(&credentials, &["demo-rs256-next"])));
    vm.clock().advance(Duration::from_secs(599));
    vm.advance(Duration::from_secs(1)).unwrap();
    assert_eq!(vm.metric("citygate_jwks_fetched"), Some(2));
    assert_eq!(
        send_status(&mut vm, get_with_bearer("/v2/entities", &citizen)),
        401,
        "a cached verification never outlives its key set"
    );
}

#[test]
fn workers_sharing_shared_data_fetch_once_and_a_waiting_worker_adopts_the_keys() {
    let credentials = demo_credentials();
    let plugin = plugin();
    let clock = Clock::at_unix_secs(START);
    let store = SharedStore::new();
    let start = || {
        builder(&plugin, &clock)
            .shared(&store)
            .delivery(Delivery::Manual)
            .start()
            .unwrap()
    };
    let (mut a, mut b) = (start(), start());
    let token = credentials
        .mint("citizen", Tamper::None, START as i64)
        .unwrap();
    let waiting = b.open(get_with_bearer("/v2/entities", &token)).unwrap();
    // Ticks interleave as Envoy's workers' do.
    for _ in 0..10 {
        clock.advance(Duration::from_millis(100));
        a.tick().unwrap();
        b.tick().unwrap();
    }
    let fetches = a.pending_callouts().len() + b.pending_callouts().len();
    assert_eq!(fetches, 1, "one fetch per process, not per worker");
    let (fetcher, other) = if a.pending_callouts().is_empty() {
        (&mut b, &mut a)
    } else {
        (&mut a, &mut b)
    };
    let call = fetcher.pending_callouts()[0].token;
    fetcher
        .deliver_callout(call, jwks_reply(&jwks(&credentials, &PUBLISHED)))
        .unwrap();
    clock.advance(Duration::from_millis(100));
    other.tick().unwrap();
    assert!(other.pending_callouts().is_empty());
    assert!(
        matches!(b.outcome(waiting), RequestOutcome::Forwarded(_)),
        "worker b's request resumes on its tick: {:?}",
        b.outcome(waiting)
    );
    assert_eq!(
        send_status(&mut a, get_with_bearer("/v2/entities", &token)),
        200
    );
    assert_eq!(
        send_status(&mut b, get_with_bearer("/v2/entities", &token)),
        200
    );
    assert_eq!(store.metric("citygate_jwks_fetched"), Some(1));
}

/// Every refused token: the client sees a fixed description, the decision
/// log the precise reason; neither ever contains the token.
#[test]
fn refused_tokens_are_never_echoed_and_the_decision_log_names_the_cause() {
    let credentials = demo_credentials();
    let endpoint = JwksEndpoint::serving(&jwks(&credentials, &PUBLISHED));
    let mut vm = vm_with_keys(&endpoint);
    let cases = [
        ("citizen", Tamper::Expired, "jwt-expired"),
        ("citizen", Tamper::NotYetValid, "jwt-not-yet-valid"),
        ("citizen", Tamper::WrongIssuer, "jwt-wrong-issuer"),
        ("citizen", Tamper::WrongAudience, "jwt-wrong-audience"),
        ("citizen", Tamper::NoExp, "jwt-missing-exp"),
        ("citizen", Tamper::AlgNone, "jwt-alg-none"),
        ("citizen", Tamper::HsWithPublicKey, "jwt-alg-not-allowed"),
        ("citizen", Tamper::Payload, "jwt-bad-signature"),
        ("citizen", Tamper::WrongKey, "jwt-bad-signature"),
        ("citizen", Tamper::UnknownKid, "jwt-unknown-kid"),
        ("citizen", Tamper::EmbeddedJwk, "jwt-untrusted-header"),
        ("citizen", Tamper::Oversize, "jwt-too-large"),
        ("citizen", Tamper::Garbage, "jwt-malformed"),
        ("analyst", Tamper::Payload, "jwt-bad-signature"),
        ("citizen-bernd", Tamper::Payload, "jwt-bad-signature"),
        ("partner", Tamper::Payload, "jwt-bad-signature"),
        ("partner", Tamper::Expired, "jwt-expired"),
    ];
    for (name, tamper, reason) in cases {
        vm.take_logs();
        let token = mint(&credentials, &vm, name, tamper);
        let exchange = vm.send(get_with_bearer("/v2/entities", &token)).unwrap();
        let reply = exchange.local().unwrap();
        let case = format!("{name} {tamper:?}");
        assert_eq!(reply.status, 401, "{case}");
        let challenge = reply.headers.get("www-authenticate").unwrap();
        assert!(
            challenge.starts_with(r#"Bearer realm="city-api", error="invalid_token""#),
            "{case}: {challenge}"
        );
        let signature = token.rsplit('.').next().unwrap_or_default();
        for (header, value) in &reply.headers.0 {
            assert!(
                !value.contains(&token) && (signature.len() < 8 || !value.contains(signature)),
                "{case}: header {header} echoes the token"
            );
        }
        let body = String::from_utf8_lossy(&reply.body);
        assert!(
            !body.contains(&token) && !body.contains("eyJ"),
            "{case}: {body}"
        );
        let logs: Vec<String> = vm.logs().iter().map(|l| l.message.clone()).collect();
        assert!(
            logs.iter()
                .any(|l| l.contains(&format!(r#""reason":"{reason}""#))),
            "{case}: no decision-log line with reason {reason}: {logs:?}"
        );
        assert!(
            logs.iter()
                .all(|l| !l.contains(&token) && !l.contains("eyJ")),
            "{case}: a log line carries the token"
        );
    }
    let refused = u64::try_from(cases.len()).unwrap();
    assert_eq!(
        vm.metric("citygate_auth_invalid_credentials"),
        Some(refused)
    );
    assert_eq!(vm.metric("citygate_auth_denied"), Some(refused));
}

#[test]
fn refused_api_keys_are_never_echoed_and_the_decision_log_names_the_cause() {
    let credentials = demo_credentials();
    let clock = Clock::at_unix_secs(START);
    let mut vm = builder(&plugin(), &clock).start().unwrap();
    let cases = [
        (
            credentials.api_key("revoked-app").unwrap().to_string(),
            "api-key-revoked",
        ),
        (
            credentials.api_key("expired-app").unwrap().to_string(),
            "api-key-expired",
        ),
        (
            "cg_demo_nobody_issued_this_key_42".to_string(),
            "api-key-unknown",
        ),
    ];
    let mut bodies = Vec::new();
    for (key, reason) in &cases {
        vm.take_logs();
        for request in [
            Request::get("/parking/spots").header("x-api-key", key),
            Request::get("/parking/spots").header("authorization", &format!("ApiKey {key}")),
        ] {
            let exchange = vm.send(request).unwrap();
            let reply = exchange.local().unwrap();
            assert_eq!(reply.status, 401, "{reason}");
            assert_eq!(
                reply.headers.get("www-authenticate"),
                Some(
                    r#"ApiKey realm="city-api", error="invalid_key", error_description="the API key is not valid""#
                )
            );
            let body = String::from_utf8(reply.body.clone()).unwrap();
            assert!(!body.contains(key.as_str()));
            bodies.push(body);
        }
        assert!(vm.logged(&format!(r#""reason":"{reason}""#)), "{reason}");
        assert!(!vm.logs().iter().any(|l| l.message.contains(key.as_str())));
    }
    // Revoked, expired and unknown keys look the same to the client.
    let first: Value = serde_json::from_str(&bodies[0]).unwrap();
    for body in &bodies {
        let body: Value = serde_json::from_str(body).unwrap();
        for field in ["type", "title", "status", "detail"] {
            assert_eq!(body[field], first[field], "{field}");
        }
    }
    assert_eq!(vm.metric("citygate_auth_invalid_credentials"), Some(6));
    // The valid key passes and the upstream never sees it.
    let key = credentials.api_key("parking-app").unwrap();
    let mut exchange = vm
        .send(Request::get("/parking/spots").header("x-api-key", key))
        .unwrap();
    let forwarded = exchange.forwarded().unwrap();
    assert!(!forwarded.headers.0.iter().any(|(_, v)| v.contains(key)));
    assert_eq!(exchange.respond(Upstream::ok()).unwrap().status, 200);
    assert!(!vm.logs().iter().any(|l| l.message.contains(key)));
    assert!(vm.logged(r#""identity_kind":"api_key""#));
}

#[test]
fn a_verified_token_is_cached_and_a_missing_credential_is_counted() {
    let credentials = demo_credentials();
    let endpoint = JwksEndpoint::serving(&jwks(&credentials, &PUBLISHED));
    let mut vm = vm_with_keys(&endpoint);
    let token = mint(&credentials, &vm, "operator", Tamper::None);
    for _ in 0..3 {
        assert_eq!(
            send_status(&mut vm, get_with_bearer("/ops/incidents", &token)),
            200
        );
    }
    assert_eq!(vm.metric("citygate_jwt_cache_hit"), Some(2));
    assert_eq!(vm.metric("citygate_auth_allowed"), Some(3));
    // A cached token is still judged against the clock: expired is refused.
    // Depends on the host's clock moving only when told, here an hour at
    // once (ARCHITECTURE.md, "Where the wasmtime host differs from Envoy").
    vm.clock().advance(Duration::from_secs(3600 + 61));
    let exchange = vm.send(get_with_bearer("/ops/incidents", &token)).unwrap();
    assert_eq!(exchange.local().unwrap().status, 401);
    assert_eq!(send_status(&mut vm, Request::get("/ops/incidents")), 401);
    assert_eq!(vm.metric("citygate_auth_missing_credentials"), Some(1));
}
