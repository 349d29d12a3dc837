//! The whole-.wasm fuzz driver: one request and its upstream reply through
//! the release `citygate_filter.wasm` in the wasmtime host, configured with
//! the city pack. Shared by the cargo fuzz target `wasm_gateway` (nightly)
//! and `host-tests/tests/suite/fuzz_regressions.rs` (stable), both of which also
//! include `filter/fuzz/drivers.rs` as `crate::drivers`.
//!
//! Input: a request in [`crate::drivers::Message`]'s text format, then
//! optionally a line `---` and the upstream's reply in the same format with
//! the status as its start line. `@chunk: N` splits a body into N-byte
//! chunks; `@source: ip:port` sets the socket peer.
//!
//! A finding is anything Envoy would not survive or a client would wait for
//! forever: a trap (panic, out-of-bounds, fuel exhausted) in any callback, a
//! request that stays pending with nothing left to wait for, a response the
//! filter never releases.

// Each of the two users (the fuzz target, the stable replay) calls a part.
#![allow(dead_code)]

use std::cell::RefCell;
use std::sync::OnceLock;
use std::time::Duration;

use citygate_host::scenario::credentials::Credentials;
use citygate_host::wasm_build::{filter_wasm, workspace_root};
use citygate_host::{CalloutReply, Clock, Plugin, Request, RequestOutcome, Upstream, Vm};

use crate::drivers::{demo_env, Message, CITY_CONFIG, NOW};

/// A fresh VM per input would spend most of its time in `on_configure`
/// (compiling the Rego pack); a VM is reused for this many inputs, which is
/// how an Envoy worker lives anyway. Replaying one reproducer runs it on a
/// fresh VM.
const INPUTS_PER_VM: u32 = 200;

fn plugin() -> &'static Plugin {
    static PLUGIN: OnceLock<Plugin> = OnceLock::new();
    PLUGIN.get_or_init(|| {
        let wasm = filter_wasm().unwrap_or_else(|e| panic!("building the filter .wasm: {e:#}"));
        Plugin::load(&wasm).unwrap_or_else(|e| panic!("loading {}: {e:#}", wasm.display()))
    })
}

fn jwks() -> &'static Vec<u8> {
    static JWKS: OnceLock<Vec<u8>> = OnceLock::new();
    JWKS.get_or_init(|| {
        let path = workspace_root().join("policies/demo-keys/credentials.yaml");
        let credentials =
            Credentials::load(&path).unwrap_or_else(|e| panic!("demo credentials: {e:#}"));
        let jwks = credentials
            .jwks("city-idp", None)
            .unwrap_or_else(|e| panic!("demo JWKS: {e:#}"));
        serde_json::to_vec(&jwks).unwrap_or_default()
    })
}

/// A VM of the city pack at [`NOW`], its JWKS callout answered at once.
pub fn city_vm() -> Vm {
    let mut builder = plugin()
        .vm()
        .config(CITY_CONFIG)
        .clock(&Clock::at_unix_secs(NOW))
        // As `envoy/gateway.yaml` runs it (allow_on_headers_stop_iteration).
        .headers_stop_iteration(true)
        .callout(
            "jwks",
            CalloutReply::Reply {
                status: 200,
                headers: vec![("content-type".into(), "application/json".into())],
                body: jwks().clone(),
            },
        );
    for name in [
        "CITYGATE_LOG_KEY",
        "CITYGATE_PSEUDONYM_KEY",
        "CITYGATE_PSEUDONYM_KEY_2025",
        "CITYGATE_PARTNER_HS256_SECRET",
    ] {
        builder = builder.env(name, demo_env(name).unwrap_or_default());
    }
    let mut vm = builder
        .start()
        .unwrap_or_else(|e| panic!("the city pack VM does not start: {e:#}"));
    // The JWKS is fetched from the first tick on; let it arrive so inputs
    // with valid tokens get past authentication without waiting.
    vm.advance(Duration::from_secs(1))
        .unwrap_or_else(|e| panic!("the city pack VM's first tick failed: {e:#}"));
    vm
}

/// Compiles the filter module before the first input, so its compile time
/// (long under the fuzzer's sanitizers) is not taken for a hang.
pub fn warm_up() {
    plugin();
}

thread_local! {
    static VM: RefCell<Option<(Vm, u32)>> = const { RefCell::new(None) };
}

/// One input through a VM reused for [`INPUTS_PER_VM`] inputs.
pub fn wasm_gateway(data: &[u8]) {
    VM.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().is_none_or(|(_, n)| *n >= INPUTS_PER_VM) {
            *slot = Some((city_vm(), 0));
        }
        if let Some((vm, n)) = slot.as_mut() {
            *n += 1;
            exchange(vm, data);
        }
    });
}

/// One input through a VM of its own (regression replays).
pub fn wasm_gateway_fresh(data: &[u8]) {
    exchange(&mut city_vm(), data);
}

fn exchange(vm: &mut Vm, data: &[u8]) {
    let (request_part, upstream_part) = match data.windows(5).position(|w| w == b"\n---\n") {
        Some(i) => (&data[..i], Some(&data[i + 5..])),
        None => (data, None),
    };
    let request = request_of(&Message::parse(request_part));
    let id = vm
        .open(request)
        .unwrap_or_else(|e| panic!("finding: the request phase failed: {e:#}"));
    match vm.outcome(id) {
        RequestOutcome::Forwarded(_) => {
            let upstream = upstream_of(&Message::parse(upstream_part.unwrap_or(b"200")));
            vm.feed_upstream(id, upstream)
                .unwrap_or_else(|e| panic!("finding: the response phase failed: {e:#}"));
            assert!(
                vm.client_response(id).is_some(),
                "finding: the filter holds a complete response forever"
            );
        }
        RequestOutcome::Local(_) | RequestOutcome::Reset => {}
        RequestOutcome::Pending => {
            // Waiting for keys is bounded by `max_wait_ms` (3 s in the pack).
            vm.advance(Duration::from_secs(4))
                .unwrap_or_else(|e| panic!("finding: a timer callback failed: {e:#}"));
            if vm.outcome(id) == RequestOutcome::Pending {
                panic!("finding: a complete request stays pending");
            }
        }
    }
}

fn chunk(message: &Message) -> Option<usize> {
    message
        .directive("chunk")
        .and_then(|n| n.trim().parse::<usize>().ok())
        .filter(|n| *n > 0)
}

fn request_of(message: &Message) -> Request {
    let (method, target) = message.method_and_target();
    let mut request = Request::new(&method, &target);
    for (name, value) in &message.headers {
        request = request.header(name, value);
    }
    if let Some(source) = message.directive("source") {
        request = request.source(source);
    }
    if let Some(n) = chunk(message) {
        request = request.chunk_size(n);
    }
    request.body(message.body.clone())
}

fn upstream_of(message: &Message) -> Upstream {
    let status = message
        .start
        .trim()
        .parse::<u16>()
        .ok()
        .filter(|s| (100..=599).contains(s))
        .unwrap_or(200);
    let mut upstream = Upstream::new(status);
    for (name, value) in &message.headers {
        upstream = upstream.header(name, value);
    }
    if let Some(n) = chunk(message) {
        upstream = upstream.chunk_size(n);
    }
    upstream.body(message.body.clone())
}
