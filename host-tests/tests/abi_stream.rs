// ---- test guest: a thin export `t_<hostcall>` per hostcall, so tests can
// call any hostcall with arbitrary (also bad) pointers and lengths.
#[allow(dead_code)]
mod guest {
    use citygate_host::{Plugin, Vm};

    pub const HOSTCALLS: &[(&str, &str)] = &[
        ("proxy_log", "i32 i32 i32"),
        ("proxy_get_log_level", "i32"),
        ("proxy_get_header_map_value", "i32 i32 i32 i32 i32"),
        ("proxy_get_header_map_pairs", "i32 i32 i32"),
        ("proxy_set_header_map_pairs", "i32 i32 i32"),
        ("proxy_add_header_map_value", "i32 i32 i32 i32 i32"),
        ("proxy_replace_header_map_value", "i32 i32 i32 i32 i32"),
        ("proxy_remove_header_map_value", "i32 i32 i32"),
        ("proxy_get_header_map_size", "i32 i32"),
        ("proxy_get_buffer_bytes", "i32 i32 i32 i32 i32"),
        ("proxy_set_buffer_bytes", "i32 i32 i32 i32 i32"),
        ("proxy_get_buffer_status", "i32 i32 i32"),
        ("proxy_get_property", "i32 i32 i32 i32"),
        ("proxy_set_property", "i32 i32 i32 i32"),
        ("proxy_get_shared_data", "i32 i32 i32 i32 i32"),
        ("proxy_set_shared_data", "i32 i32 i32 i32 i32"),
        ("proxy_register_shared_queue", "i32 i32 i32"),
        ("proxy_resolve_shared_queue", "i32 i32 i32 i32 i32"),
        ("proxy_enqueue_shared_queue", "i32 i32 i32"),
        ("proxy_dequeue_shared_queue", "i32 i32 i32"),
        ("proxy_define_metric", "i32 i32 i32 i32"),
        ("proxy_increment_metric", "i32 i64"),
        ("proxy_record_metric", "i32 i64"),
        ("proxy_get_metric", "i32 i32"),
        ("proxy_set_tick_period_milliseconds", "i32"),
        ("proxy_get_current_time_nanoseconds", "i32"),
        (
            "proxy_send_local_response",
            "i32 i32 i32 i32 i32 i32 i32 i32",
        ),
        ("proxy_continue_stream", "i32"),
        ("proxy_close_stream", "i32"),
        ("proxy_http_call", "i32 i32 i32 i32 i32 i32 i32 i32 i32 i32"),
        (
            "proxy_grpc_call",
            "i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32",
        ),
        ("proxy_grpc_stream", "i32 i32 i32 i32 i32 i32 i32 i32 i32"),
        ("proxy_grpc_send", "i32 i32 i32 i32"),
        ("proxy_grpc_cancel", "i32"),
        ("proxy_grpc_close", "i32"),
        ("proxy_get_status", "i32 i32 i32"),
        ("proxy_set_effective_context", "i32"),
        ("proxy_call_foreign_function", "i32 i32 i32 i32 i32 i32"),
        ("proxy_done", ""),
    ];

    /// A module wrapping every hostcall, plus `extra` WAT (callbacks).
    /// Heap (bump allocator) starts at 64 KiB; tests use lower addresses.
    pub fn wat(extra: &str) -> String {
        let mut m = String::from("(module\n");
        for (name, params) in HOSTCALLS {
            m += &format!(
                "(import \"env\" \"{name}\" (func ${name} (param {params}) (result i32)))\n"
            );
        }
        m += r#"
  (memory (export "memory") 4)
  (global $heap (mut i32) (i32.const 65536))
  (func (export "proxy_on_memory_allocate") (param $n i32) (result i32)
    (local $p i32)
    global.get $heap local.set $p
    global.get $heap local.get $n i32.add global.set $heap
    local.get $p)
  (func (export "proxy_abi_version_0_2_1"))
"#;
        for (name, params) in HOSTCALLS {
            let n = params.split_whitespace().count();
            let gets: String = (0..n).map(|i| format!("local.get {i} ")).collect();
            m += &format!(
                "(func (export \"t_{name}\") (param {params}) (result i32) {gets} call ${name})\n"
            );
        }
        m += extra;
        m += ")\n";
        m
    }

    /// Pauses request headers so the stream stays open for hostcall tests.
    pub const PAUSE_HEADERS: &str = r#"
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) i32.const 1)
"#;

    pub fn vm(extra: &str) -> Vm {
        Plugin::from_bytes(wat(extra))
            .unwrap()
            .vm()
            .start()
            .unwrap()
    }

    /// Returns the bytes a hostcall handed back through (ptr at `rp`, size at `rp+4`).
    pub fn returned(vm: &mut Vm, rp: u32) -> Vec<u8> {
        let g = vm.guest();
        let p = g.read_u32(rp).unwrap();
        let n = g.read_u32(rp + 4).unwrap();
        g.read_memory(p, n).unwrap()
    }

    /// Calls wrapper `t_<name>` as context `ctx`; returns the status.
    pub fn call(vm: &mut Vm, name: &'static str, ctx: u32, args: &[i32]) -> i32 {
        vm.guest().call(name, ctx, args).unwrap().unwrap()
    }

    pub fn put(vm: &mut Vm, at: u32, bytes: &[u8]) -> (i32, i32) {
        vm.guest().write_memory(at, bytes).unwrap();
        (at as i32, bytes.len() as i32)
    }

    /// Callbacks driven by action slots (memory words set through `set`):
    /// 0 req headers, 4 req body, 8 req trailers, 12/16/20 the response
    /// ones; 28 what a callout reply does (0 continue, 1 local reply).
    /// Actions: 0 Continue, 1 Pause, 2 Pause unless end of stream,
    /// 3 local reply 403 + Pause, 4 http_call to `authz` + Pause, 5 trap.
    pub const FLOW: &str = r#"
  (data (i32.const 2000) "denied")
  (data (i32.const 2010) "no")
  (data (i32.const 2100) "\01\00\00\00\05\00\00\00\06\00\00\00\78\2d\77\68\79\00\70\6f\6c\69\63\79\00")
  (data (i32.const 2200) "authz")
  (data (i32.const 2300) "\03\00\00\00\07\00\00\00\03\00\00\00\05\00\00\00\06\00\00\00\0a\00\00\00\05\00\00\00\3a\6d\65\74\68\6f\64\00\47\45\54\00\3a\70\61\74\68\00\2f\63\68\65\63\6b\00\3a\61\75\74\68\6f\72\69\74\79\00\61\75\74\68\7a\00")
  (data (i32.const 2600) "config rejected at $.routes")
  (data (i32.const 2700) "about to panic")
  (func $local
    (drop (call $proxy_send_local_response (i32.const 403) (i32.const 2000) (i32.const 6)
      (i32.const 2010) (i32.const 2) (i32.const 2100) (i32.const 25) (i32.const -1))))
  (func $callout
    (drop (call $proxy_http_call (i32.const 2200) (i32.const 5) (i32.const 2300) (i32.const 70)
      (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 1000) (i32.const 2500))))
  (func $act (param $slot i32) (param $eos i32) (result i32)
    (local $a i32)
    (local.set $a (i32.load (local.get $slot)))
    (if (i32.eq (local.get $a) (i32.const 2)) (then (return (i32.eqz (local.get $eos)))))
    (if (i32.eq (local.get $a) (i32.const 3)) (then (call $local) (return (i32.const 1))))
    (if (i32.eq (local.get $a) (i32.const 4)) (then (call $callout) (return (i32.const 1))))
    (if (i32.eq (local.get $a) (i32.const 5))
      (then (drop (call $proxy_log (i32.const 4) (i32.const 2700) (i32.const 14))) unreachable))
    (local.get $a))
  (func (export "set") (param i32 i32) (i32.store (local.get 0) (local.get 1)))
  (func (export "spin") (loop (br 0)))
  (func (export "proxy_on_configure") (param i32 i32) (result i32)
    (if (i32.eq (local.get 1) (i32.const 3))
      (then (drop (call $proxy_log (i32.const 4) (i32.const 2600) (i32.const 27))) (return (i32.const 0))))
    (i32.const 1))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (call $act (i32.const 0) (local.get 2)))
  (func (export "proxy_on_request_body") (param i32 i32 i32) (result i32) (call $act (i32.const 4) (local.get 2)))
  (func (export "proxy_on_request_trailers") (param i32 i32) (result i32) (call $act (i32.const 8) (i32.const 1)))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32) (call $act (i32.const 12) (local.get 2)))
  (func (export "proxy_on_response_body") (param i32 i32 i32) (result i32) (call $act (i32.const 16) (local.get 2)))
  (func (export "proxy_on_response_trailers") (param i32 i32) (result i32) (call $act (i32.const 20) (i32.const 1)))
  (func (export "proxy_on_http_call_response") (param i32 i32 i32 i32 i32)
    (if (i32.load (i32.const 28))
      (then (call $local))
      (else (drop (call $proxy_continue_stream (i32.const 0))))))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_done") (param i32) (result i32) (i32.const 1))
  (func (export "proxy_on_log") (param i32))
  (func (export "proxy_on_delete") (param i32))
  (func (export "proxy_on_tick") (param i32))
  (func (export "proxy_on_queue_ready") (param i32 i32))
"#;

    /// A VM of the FLOW guest with action slots set before any request.
    pub fn flow_vm(
        b: impl FnOnce(citygate_host::VmBuilder) -> citygate_host::VmBuilder,
        slots: &[(i32, i32)],
    ) -> Vm {
        let plugin = Plugin::from_bytes(wat(FLOW)).unwrap();
        let mut vm = b(plugin.vm()).start().unwrap();
        let root = vm.root_context_id();
        for (slot, v) in slots {
            vm.guest().call("set", root, &[*slot, *v]).unwrap();
        }
        vm.guest().take_trace();
        vm
    }
}

use citygate_host::{CalloutReply, Delivery, Plugin, Request, RequestOutcome, Upstream};
use guest::{flow_vm, wat, FLOW};

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
