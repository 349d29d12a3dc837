//! Opaque tokens in the real `.wasm`, for what a scenario file cannot
//! count: one introspection call per token and worker (the cache), the
//! call as RFC 7662 and RFC 6749 write it, a request body kept while the
//! token is checked, inactive answers remembered (a flood of made-up tokens
//! costs the authorization server one call each, not one per request), and
//! the bound on calls in flight. `policies/attacks/scenarios/introspection.yaml`
//! covers the answers themselves in wasmtime and Envoy; `e2e_introspection.rs`
//! the same calls through Envoy to a real server.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use citygate_host::introspection::{Introspected, IntrospectionSpec};
use citygate_host::wasm_build::workspace_root;
use citygate_host::{
    CalloutReply, CalloutRequest, Clock, Delivery, Request, RequestOutcome, Vm, VmBuilder,
};
use serde_json::Value;

use crate::support::{demo_credentials, get_with_bearer, metric, plugin, with_bearer};

const START: u64 = 1_790_000_000;
const SECRET: &str = "demo-only-introspection-secret-change-me";

fn config(change: impl FnOnce(&mut Value)) -> String {
    let path = workspace_root().join("policies/attacks/introspection.config.json");
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    change(&mut config);
    config.to_string()
}

fn builder(config: String, clock: &Clock) -> VmBuilder {
    plugin()
        .vm()
        .config(config)
        .clock(clock)
        .env("INTROSPECTION_CLIENT_SECRET", SECRET)
}

fn spec() -> IntrospectionSpec {
    demo_credentials().introspection().clone()
}

fn token(name: &str) -> String {
    spec().token(name).unwrap().to_string()
}

/// The demo authorization server on the VM's clock, recording every call.
#[derive(Clone)]
struct Server {
    spec: IntrospectionSpec,
    clock: Clock,
    calls: Arc<Mutex<Vec<CalloutRequest>>>,
}

impl Server {
    fn new(clock: &Clock) -> Self {
        Self {
            spec: spec(),
            clock: clock.clone(),
            calls: Arc::default(),
        }
    }

    fn answer(&self, call: &CalloutRequest) -> CalloutReply {
        let now = i64::try_from(self.clock.now_nanos() / 1_000_000_000).unwrap();
        match self
            .spec
            .introspect(call.headers.get("authorization"), &call.body, now)
        {
            Introspected::Answer { status, body } => CalloutReply::Reply {
                status,
                headers: vec![("content-type".into(), "application/json".into())],
                body,
            },
            Introspected::Hang => CalloutReply::Timeout,
        }
    }

    fn attach(&self, builder: VmBuilder) -> VmBuilder {
        let server = self.clone();
        builder.callouts_with(move |call| {
            server.calls.lock().unwrap().push(call.clone());
            server.answer(call)
        })
    }

    fn calls(&self) -> Vec<CalloutRequest> {
        self.calls.lock().unwrap().clone()
    }
}

fn status(vm: &mut Vm, request: Request) -> u16 {
    match vm.send(request).unwrap().outcome() {
        RequestOutcome::Local(reply) => reply.status,
        RequestOutcome::Forwarded(_) => 200,
        other => panic!("still pending: {other:?}\n{}", vm.report()),
    }
}

#[test]
fn each_token_is_introspected_once_per_worker_with_an_rfc_7662_call() {
    let clock = Clock::at_unix_secs(START);
    let server = Server::new(&clock);
    let mut vm = server
        .attach(builder(config(|_| {}), &clock))
        .start()
        .unwrap();
    let citizen = token("citizen");
    for _ in 0..4 {
        assert_eq!(
            status(
                &mut vm,
                get_with_bearer("/open311/v2/requests.json", &citizen)
            ),
            200
        );
    }
    let calls = server.calls();
    let introspections: Vec<_> = calls
        .iter()
        .filter(|c| c.cluster == "introspection")
        .collect();
    assert_eq!(introspections.len(), 1, "one call, three cache hits");
    let call = introspections[0];
    assert_eq!(call.method(), "POST");
    assert_eq!(call.path(), "/oauth2/introspect");
    assert_eq!(call.headers.get(":authority"), Some("idp.city.example"));
    assert_eq!(
        call.headers.get("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert!(call
        .headers
        .get("authorization")
        .is_some_and(|v| v.starts_with("Basic ")));
    assert_eq!(
        String::from_utf8(call.body.clone()).unwrap(),
        format!("token={citizen}&token_type_hint=access_token")
    );
    assert_eq!(call.timeout_ms, 500);
    assert_eq!(metric(&vm, "citygate_introspection_calls"), 1);
    assert_eq!(metric(&vm, "citygate_introspection_active"), 1);
    assert_eq!(metric(&vm, "citygate_introspection_cache_hit"), 3);
    // Another token is another call; no line names either token.
    let operator = token("operator");
    assert_eq!(
        status(&mut vm, get_with_bearer("/v2/entities", &operator)),
        200
    );
    assert_eq!(metric(&vm, "citygate_introspection_calls"), 2);
    for line in vm.logs() {
        assert!(!line.message.contains("cgo_"), "{}", line.message);
        assert!(!line.message.contains(SECRET), "{}", line.message);
    }
}

#[test]
fn a_post_waiting_for_the_answer_keeps_its_body() {
    let clock = Clock::at_unix_secs(START);
    let server = Server::new(&clock);
    let mut vm = server
        .attach(builder(config(|_| {}), &clock).delivery(Delivery::Manual))
        .start()
        .unwrap();
    let body = r#"{"id":"urn:ngsi-ld:Vehicle:bus-17","type":"Vehicle"}"#;
    let request = with_bearer(Request::post("/v2/entities"), &token("operator"))
        .json(body)
        .chunk_size(9);
    let id = vm.open(request).unwrap();
    assert_eq!(vm.outcome(id), RequestOutcome::Pending);
    assert!(!vm.upstream_saw_headers(id));
    let pending = vm.pending_callouts().to_vec();
    assert_eq!(pending.len(), 1);
    vm.deliver_callout(pending[0].token, server.answer(&pending[0]))
        .unwrap();
    let RequestOutcome::Forwarded(forwarded) = vm.outcome(id) else {
        panic!("not forwarded: {:?}\n{}", vm.outcome(id), vm.report());
    };
    assert_eq!(String::from_utf8(forwarded.body).unwrap(), body);
    assert_eq!(
        forwarded.headers.get("x-citygate-auth-kind"),
        Some("opaque_token")
    );
    assert!(!forwarded.headers.contains("authorization"));
}

#[test]
fn made_up_tokens_cost_one_call_each_until_inactive_cache_seconds_pass() {
    let clock = Clock::at_unix_secs(START);
    let server = Server::new(&clock);
    let mut vm = server
        .attach(builder(config(|_| {}), &clock))
        .start()
        .unwrap();
    for round in 0..3 {
        for n in 0..5 {
            let made_up = format!("cgo_made_up_{n}");
            let reply = status(
                &mut vm,
                get_with_bearer("/open311/v2/requests.json", &made_up),
            );
            assert_eq!(reply, 401, "round {round}");
        }
    }
    assert_eq!(metric(&vm, "citygate_introspection_calls"), 5);
    assert_eq!(metric(&vm, "citygate_introspection_inactive"), 5);
    // inactive_cache_seconds is 10 by default.
    vm.advance(Duration::from_secs(10)).unwrap();
    let reply = status(
        &mut vm,
        get_with_bearer("/open311/v2/requests.json", "cgo_made_up_0"),
    );
    assert_eq!(reply, 401);
    assert_eq!(metric(&vm, "citygate_introspection_calls"), 6);
}

#[test]
fn calls_in_flight_are_bounded_and_past_the_bound_a_request_gets_503_at_once() {
    let clock = Clock::at_unix_secs(START);
    let server = Server::new(&clock);
    let bounded =
        config(|c| c["auth"]["introspection"]["providers"][0]["max_in_flight"] = 2.into());
    let mut vm = server
        .attach(builder(bounded, &clock).delivery(Delivery::Manual))
        .start()
        .unwrap();
    let ids: Vec<u32> = (0..2)
        .map(|n| {
            vm.open(get_with_bearer(
                "/open311/v2/requests.json",
                &format!("cgo_flood_{n}"),
            ))
            .unwrap()
        })
        .collect();
    assert!(ids
        .iter()
        .all(|id| vm.outcome(*id) == RequestOutcome::Pending));
    let third = vm
        .open(get_with_bearer("/open311/v2/requests.json", "cgo_flood_2"))
        .unwrap();
    let RequestOutcome::Local(reply) = vm.outcome(third) else {
        panic!("the third call was started: {:?}", vm.outcome(third));
    };
    assert_eq!(reply.status, 503);
    assert_eq!(reply.headers.get("retry-after"), Some("1"));
    assert_eq!(metric(&vm, "citygate_introspection_busy"), 1);
    assert!(vm.logged("introspection-busy"));
    // An answer frees its place.
    let first = vm.pending_callouts()[0].clone();
    vm.deliver_callout(first.token, server.answer(&first))
        .unwrap();
    let fourth = vm
        .open(get_with_bearer("/open311/v2/requests.json", "cgo_flood_3"))
        .unwrap();
    assert_eq!(vm.outcome(fourth), RequestOutcome::Pending);
    assert_eq!(metric(&vm, "citygate_introspection_calls"), 3);
}
