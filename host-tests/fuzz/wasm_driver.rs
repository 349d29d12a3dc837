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
//! filter never releases; or a forwarded response whose body breaks the
//! minimization bound ([`crate::drivers::check_minimized`]) or keeps a
//! personal value the driver planted in the upstream's JSON
//! ([`crate::drivers::PLANTS`]) where the caller's profile removes it.

// Each of the two users (the fuzz target, the stable replay) calls a part.
#![allow(dead_code)]

use std::cell::RefCell;
use std::sync::OnceLock;
use std::time::Duration;

use citygate_host::scenario::credentials::Credentials;
use citygate_host::wasm_build::{filter_wasm, workspace_root};
use citygate_host::{
    CalloutReply, ClientResponse, Clock, Plugin, Request, RequestOutcome, Upstream,
    UpstreamRequest, Vm,
};

use crate::drivers::{
    check_minimized, check_plants_absent, demo_env, Message, Plant, CITY_CONFIG, NOW, PLANTS,
};

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
        RequestOutcome::Forwarded(forwarded) => {
            let mut reply = Message::parse(upstream_part.unwrap_or(b"200"));
            let original = planted(&mut reply);
            vm.feed_upstream(id, upstream_of(&reply))
                .unwrap_or_else(|e| panic!("finding: the response phase failed: {e:#}"));
            let Some(response) = vm.client_response(id) else {
                panic!("finding: the filter holds a complete response forever");
            };
            check_reply(&forwarded, &reply, original.as_ref(), &response);
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

// ---- what reaches the client ------------------------------------------------

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Whether the reply's body is sent as it is (no content coding).
fn identity_coded(reply: &Message) -> bool {
    reply
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("content-encoding"))
        .all(|(_, v)| matches!(v.trim().to_ascii_lowercase().as_str(), "" | "identity"))
}

/// The reply's body as a JSON document, as the filter reads an
/// identity-coded body.
fn document(reply: &Message) -> Option<serde_json::Value> {
    let body = reply.body.strip_prefix(BOM).unwrap_or(&reply.body);
    identity_coded(reply)
        .then(|| serde_json::from_slice(body).ok())
        .flatten()
}

/// Plants [`PLANTS`] in an identity-coded JSON reply, as the first members
/// of its root object or as an object put first in its root array (the
/// entity level), leaving the fuzzed bytes around them as they are; a
/// `content-length` of the old body is updated. Returns the document as it
/// was before.
fn planted(reply: &mut Message) -> Option<serde_json::Value> {
    let original = document(reply)?;
    let bom = if reply.body.starts_with(BOM) { 3 } else { 0 };
    let json_space = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r');
    let open = bom
        + reply.body[bom..]
            .iter()
            .take_while(|b| json_space(b))
            .count();
    let next = reply
        .body
        .get(open + 1..)
        .and_then(|rest| rest.iter().find(|b| !json_space(b)));
    let json = |text: &str| serde_json::Value::String(text.into());
    let members: Vec<String> = PLANTS
        .iter()
        .map(|p| format!("{}:{}", json(p.field), json(p.value)))
        .collect();
    let members = members.join(",");
    let insert = match (reply.body.get(open), next) {
        (Some(b'{'), Some(b'}')) => members,
        (Some(b'{'), _) => format!("{members},"),
        (Some(b'['), Some(b']')) => format!("{{{members}}}"),
        (Some(b'['), _) => format!("{{{members}}},"),
        _ => return None,
    };
    let old_length = reply.body.len().to_string();
    reply.body.splice(open + 1..open + 1, insert.bytes());
    for (name, value) in reply.headers.iter_mut() {
        if name.eq_ignore_ascii_case("content-length") && value.trim() == old_length {
            *value = reply.body.len().to_string();
        }
    }
    Some(original)
}

/// A response the filter minimized (forwarded, with a body to minimize)
/// keeps the bound, and no plant survives the profile the caller gets.
/// The city pack gives a caller with the `emergency-services` role the
/// `emergency` profile (nothing removed), one with `city-operator` the
/// `operator` profile, anyone else `analyst`, `citizen` or `open-data`; a
/// plant counts only when every profile the caller may get removes it.
/// An NGSI attribute served alone (`…/attrs/…`) is minimized as that
/// attribute of an entity, so its body's root is not the entity level.
fn check_reply(
    forwarded: &UpstreamRequest,
    reply: &Message,
    original: Option<&serde_json::Value>,
    response: &ClientResponse,
) {
    let head = forwarded.headers.get(":method") == Some("HEAD");
    let bodiless = matches!(response.status, 100..=199 | 204 | 304);
    if response.local.is_some() || response.reset || head || bodiless {
        return;
    }
    let upstream_body = reply.body.strip_prefix(BOM).unwrap_or(&reply.body);
    let identity = identity_coded(reply);
    check_minimized(
        identity.then_some(upstream_body),
        document(reply).as_ref(),
        &response.body,
    );
    let roles: Vec<&str> = forwarded
        .headers
        .get_all("x-citygate-roles")
        .into_iter()
        .flat_map(|v| v.split(','))
        .collect();
    let profiles: &[&str] = if roles.contains(&"emergency-services") {
        return;
    } else if roles.contains(&"city-operator") {
        &["operator"]
    } else {
        &["analyst", "citizen", "open-data"]
    };
    let path = forwarded.headers.get(":path").unwrap_or_default();
    let path = path.split('?').next().unwrap_or_default();
    let entity_level = !path.split('/').any(|segment| segment == "attrs");
    let removes = |plant: &Plant| {
        (plant.everywhere || entity_level) && profiles.iter().all(|p| plant.removed_by.contains(p))
    };
    if original.is_some() {
        check_plants_absent(original, &response.body, &removes, &(profiles, path));
    }
}
