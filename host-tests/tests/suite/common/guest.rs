//! The test guest shared by the ABI tests: a thin export `t_<hostcall>` per
//! hostcall, so tests can call any hostcall with arbitrary (also bad)
//! pointers and lengths.

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
        m += &format!("(import \"env\" \"{name}\" (func ${name} (param {params}) (result i32)))\n");
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
