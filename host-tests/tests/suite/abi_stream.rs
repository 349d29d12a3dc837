// ---- test guest: a thin export `t_<hostcall>` per hostcall, so tests can
// call any hostcall with arbitrary (also bad) pointers and lengths.
use crate::guest::{flow_vm, wat, FLOW};
#[allow(dead_code)]
use citygate_host::{CalloutReply, Delivery, Plugin, Request, RequestOutcome, Upstream};

fn calls(vm: &mut citygate_host::Vm) -> Vec<(&'static str, Vec<i32>)> {
    vm.guest()
        .take_trace()
        .into_iter()
        .filter(|(n, _)| n.starts_with("proxy_on_"))
        .collect()
}

fn names(trace: &[(&'static str, Vec<i32>)]) -> Vec<&'static str> {
    trace.iter().map(|(n, _)| *n).collect()
}

#[test]
fn headers_only_request_is_forwarded_and_the_stream_ends_like_envoy() {
    let mut vm = flow_vm(|b| b, &[]);
    let mut ex = vm
        .send(Request::get("/parking").header("x-a", "1"))
        .unwrap();
    let fwd = ex.forwarded().unwrap();
    assert_eq!(fwd.headers.get(":path"), Some("/parking"));
    assert_eq!(fwd.headers.get("x-a"), Some("1"));
    let id = ex.id() as i32;
    let client = ex.respond(Upstream::ok().json("{\"a\":1}")).unwrap();
    assert_eq!(client.status, 200);
    assert_eq!(client.headers.get("content-type"), Some("application/json"));
    assert_eq!(client.body_str(), "{\"a\":1}");
    let t = calls(&mut vm);
    assert_eq!(t[0], ("proxy_on_context_create", vec![id, 1]));
    assert_eq!(t[1], ("proxy_on_request_headers", vec![id, 5, 1]));
    assert_eq!(t[2], ("proxy_on_response_headers", vec![id, 2, 0]));
    assert_eq!(t[3], ("proxy_on_response_body", vec![id, 7, 1]));
    assert_eq!(
        names(&t[4..]),
        ["proxy_on_done", "proxy_on_log", "proxy_on_delete"]
    );
}

#[test]
fn streams_get_distinct_context_ids() {
    let mut vm = flow_vm(|b| b, &[]);
    let a = vm.open(Request::get("/a")).unwrap();
    let b = vm.open(Request::get("/b")).unwrap();
    assert_ne!(a, b);
    assert_ne!(a, vm.root_context_id());
    assert_ne!(b, vm.root_context_id());
}

#[test]
fn paused_body_accumulates_and_is_called_again_with_the_total() {
    let mut vm = flow_vm(|b| b, &[(4, 2)]);
    let ex = vm
        .send(Request::post("/report").body("abcdefghij").chunk_size(4))
        .unwrap();
    let id = ex.id() as i32;
    assert_eq!(ex.forwarded().unwrap().body, b"abcdefghij");
    let t = calls(&mut vm);
    let bodies: Vec<_> = t
        .iter()
        .filter(|(n, _)| *n == "proxy_on_request_body")
        .map(|(_, a)| a.clone())
        .collect();
    assert_eq!(
        bodies,
        vec![vec![id, 4, 0], vec![id, 8, 0], vec![id, 10, 1]]
    );
}

#[test]
fn trailers_follow_a_body_whose_last_chunk_is_not_end_of_stream() {
    let mut vm = flow_vm(|b| b, &[]);
    let ex = vm
        .send(Request::post("/x").body("abc").trailer("grpc-status", "0"))
        .unwrap();
    let id = ex.id() as i32;
    let fwd = ex.forwarded().unwrap();
    assert_eq!(fwd.body, b"abc");
    assert_eq!(fwd.trailers.get("grpc-status"), Some("0"));
    let t = calls(&mut vm);
    assert!(t.contains(&("proxy_on_request_headers", vec![id, 4, 0])));
    assert!(t.contains(&("proxy_on_request_body", vec![id, 3, 0])));
    assert!(t.contains(&("proxy_on_request_trailers", vec![id, 1])));
}

#[test]
fn paused_headers_wait_for_the_callout_and_the_body_arrives_in_one_call() {
    let mut vm = flow_vm(|b| b.delivery(Delivery::Manual), &[(0, 4)]);
    let mut ex = vm
        .send(Request::post("/x").body("0123456789").chunk_size(3))
        .unwrap();
    let id = ex.id() as i32;
    assert!(ex.is_pending());
    let callouts = ex.callouts();
    assert_eq!(callouts.len(), 1);
    assert_eq!(callouts[0].cluster, "authz");
    assert_eq!(callouts[0].path(), "/check");
    assert_eq!(callouts[0].timeout_ms, 1000);
    ex.deliver(callouts[0].token, CalloutReply::status(200, "ok"))
        .unwrap();
    assert_eq!(ex.forwarded().unwrap().body, b"0123456789");
    let t = calls(&mut vm);
    let n = names(&t);
    let call_at = n
        .iter()
        .position(|x| *x == "proxy_on_http_call_response")
        .unwrap();
    let body_at = n
        .iter()
        .position(|x| *x == "proxy_on_request_body")
        .unwrap();
    assert!(
        call_at < body_at,
        "no body callback while headers are stopped: {n:?}"
    );
    assert_eq!(t[call_at].1, vec![id, callouts[0].token as i32, 1, 2, 0]);
    assert_eq!(t[body_at].1, vec![id, 10, 1]);
}

#[test]
fn scripted_callout_failure_can_end_in_a_local_reply() {
    let mut vm = flow_vm(
        |b| b.callout("authz", CalloutReply::Failure),
        &[(0, 4), (28, 1)],
    );
    let ex = vm.send(Request::get("/x")).unwrap();
    let reply = ex.local().unwrap();
    assert_eq!(reply.status, 403);
    assert_eq!(reply.body, b"no");
    assert_eq!(reply.headers.get("x-why"), Some("policy"));
    assert_eq!(reply.details, "denied");
    assert_eq!(reply.grpc_status, None);
    let t = calls(&mut vm);
    let call = t
        .iter()
        .find(|(n, _)| *n == "proxy_on_http_call_response")
        .unwrap();
    assert_eq!(
        &call.1[2..],
        &[0, 0, 0],
        "a failure has no headers, body or trailers"
    );
    // Envoy runs a local reply through the filter's response callbacks.
    assert!(names(&t).contains(&"proxy_on_response_headers"));
    assert_eq!(names(&t).last(), Some(&"proxy_on_delete"));
}

#[test]
fn callouts_can_be_answered_by_a_closure_with_timeouts() {
    let mut vm = flow_vm(
        |b| {
            b.callouts_with(|r| {
                if r.path() == "/check" {
                    CalloutReply::Timeout
                } else {
                    CalloutReply::Failure
                }
            })
        },
        &[(0, 4)],
    );
    let ex = vm.send(Request::get("/x")).unwrap();
    assert!(
        ex.forwarded().is_ok(),
        "the FLOW guest continues after any reply"
    );
}

#[test]
fn local_reply_from_request_headers() {
    let mut vm = flow_vm(|b| b, &[(0, 3)]);
    let ex = vm.send(Request::get("/x").body("ignored")).unwrap();
    let id = ex.id() as i32;
    assert_eq!(ex.local().unwrap().status, 403);
    assert_eq!(ex.client_response().unwrap().local.unwrap().status, 403);
    let t = calls(&mut vm);
    assert!(!t
        .iter()
        .any(|(n, a)| *n == "proxy_on_request_body" && a[0] == id));
}

#[test]
fn response_body_is_buffered_until_end_of_stream() {
    let mut vm = flow_vm(|b| b, &[(16, 2)]);
    let mut ex = vm.send(Request::get("/x")).unwrap();
    let client = ex
        .respond(Upstream::ok().body("0123456789").chunk_size(4))
        .unwrap();
    assert_eq!(client.body, b"0123456789");
}

#[test]
fn held_response_then_local_reply_replaces_the_upstream_reply() {
    let mut vm = flow_vm(|b| b, &[(12, 3)]);
    let mut ex = vm.send(Request::get("/x")).unwrap();
    let client = ex.respond(Upstream::ok().body("secret")).unwrap();
    assert_eq!(client.status, 403);
    assert_eq!(client.body, b"no");
    assert!(!client.reset);
}

#[test]
fn local_reply_after_response_headers_went_out_resets() {
    let mut vm = flow_vm(|b| b, &[(16, 3)]);
    let mut ex = vm.send(Request::get("/x")).unwrap();
    let client = ex.respond(Upstream::ok().body("secret")).unwrap();
    assert!(client.reset);
}

#[test]
fn pending_response_is_an_error_from_respond() {
    let mut vm = flow_vm(|b| b, &[(12, 1)]);
    let mut ex = vm.send(Request::get("/x")).unwrap();
    let err = ex.respond(Upstream::ok()).unwrap_err().to_string();
    assert!(err.contains("still holding"), "{err}");
}

#[test]
fn a_rejected_configuration_is_an_error_quoting_the_guest_log() {
    let plugin = Plugin::from_bytes(wat(FLOW)).unwrap();
    let err = plugin.vm().config("bad").start().err().unwrap();
    let text = format!("{err:#}");
    assert!(text.contains("config rejected at $.routes"), "{text}");
    assert!(plugin.vm().config("{}").start().is_ok());
}

#[test]
fn a_runaway_guest_runs_out_of_fuel_instead_of_hanging() {
    let mut vm = flow_vm(|b| b.fuel_per_call(1_000_000), &[]);
    let root = vm.root_context_id();
    let err = vm.guest().call("spin", root, &[]).unwrap_err();
    assert!(
        format!("{err:#}").to_lowercase().contains("fuel"),
        "{err:#}"
    );
    assert!(vm.last_fuel().unwrap() >= 1_000_000);
}

#[test]
fn a_trap_is_an_error_with_the_guest_log_and_the_vm_stays_dead() {
    let mut vm = flow_vm(|b| b, &[(0, 5)]);
    let err = vm.send(Request::get("/x")).err().unwrap();
    let text = format!("{err:#}");
    assert!(text.contains("about to panic"), "{text}");
    assert!(text.contains("proxy_on_request_headers"), "{text}");
    assert!(vm.send(Request::get("/y")).is_err());
}

#[test]
fn fuel_is_reported_per_callback() {
    let mut vm = flow_vm(|b| b, &[]);
    vm.send(Request::get("/x")).unwrap();
    let used = vm.take_fuel_used();
    let headers = used
        .iter()
        .find(|f| f.callback == "proxy_on_request_headers")
        .unwrap();
    assert!(headers.fuel > 0 && headers.fuel < 10_000);
}

#[test]
fn imports_envoy_lacks_are_refused() {
    let wat = r#"(module
      (import "wasi_snapshot_preview1" "sched_yield" (func (result i32)))
      (memory (export "memory") 1)
      (func (export "proxy_abi_version_0_2_1")))"#;
    let err = Plugin::from_bytes(wat).err().unwrap();
    assert!(
        format!("{err:#}").contains("wasi_snapshot_preview1::sched_yield"),
        "{err:#}"
    );
    let no_abi = r#"(module (memory (export "memory") 1))"#;
    assert!(Plugin::from_bytes(no_abi).is_err());
}

#[test]
fn wasi_sees_the_vm_environment_and_the_host_clock() {
    let wat = r#"(module
      (import "wasi_snapshot_preview1" "environ_sizes_get" (func $sizes (param i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "environ_get" (func $get (param i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "clock_time_get" (func $time (param i32 i64 i32) (result i32)))
      (memory (export "memory") 1)
      (func (export "proxy_abi_version_0_2_1"))
      (func (export "env") (result i32)
        (drop (call $sizes (i32.const 0) (i32.const 4)))
        (call $get (i32.const 100) (i32.const 200)))
      (func (export "now") (result i32) (call $time (i32.const 0) (i64.const 1) (i32.const 304))))"#;
    let clock = citygate_host::Clock::at_unix_secs(1_000);
    let mut vm = Plugin::from_bytes(wat)
        .unwrap()
        .vm()
        .env("HMAC_KEY", "k1")
        .clock(&clock)
        .start()
        .unwrap();
    let g = vm.guest();
    assert_eq!(g.call("env", 1, &[]).unwrap(), Some(0));
    assert_eq!(g.read_u32(0).unwrap(), 1);
    assert_eq!(g.read_memory(200, 10).unwrap(), b"HMAC_KEY=k");
    assert_eq!(g.call("now", 1, &[]).unwrap(), Some(0));
    let b = g.read_memory(304, 8).unwrap();
    assert_eq!(u64::from_le_bytes(b.try_into().unwrap()), 1_000_000_000_000);
    assert!(matches!(vm.outcome(99), RequestOutcome::Pending));
}
