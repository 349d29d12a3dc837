//! Fuzz drivers: what each `cargo fuzz` target does with one input.
//!
//! Shared, word for word, by the libFuzzer targets (`fuzz_targets/*.rs`,
//! nightly) and the stable regression test that replays every committed
//! corpus file and crash reproducer (`host-tests/tests/fuzz_regressions.rs`,
//! which includes this file with `#[path]`). Only public core APIs are
//! called, natively, with the in-memory host.
//!
//! A driver returns normally for any input the gateway handles (accepted or
//! refused); it panics on a finding: a panic inside the core, or a broken
//! invariant checked here (a normalized path with dot segments, a
//! minimized body that is not JSON, a token accepted that should not be).
//!
//! Inputs are text-like so that corpus files are readable and libFuzzer's
//! byte mutations stay meaningful; see each driver for its format.

#![allow(dead_code)]

use std::cell::RefCell;
use std::io::Write;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use citygate_core::auth::jwt::{decode_unverified, verify_token, KeySet, VerifyOptions};
use citygate_core::config::{self, GatewayConfig, RouteConfig};
use citygate_core::host::memory::MemoryHost;
use citygate_core::host::Host;
use citygate_core::identity::Identity;
use citygate_core::normalize::{
    normalize, normalize_path, ConnectionInfo, PeerCertificate, RawRequest,
};
use citygate_core::pipeline::CompiledConfig;
use citygate_core::policy::input::build_input;
use citygate_core::policy::{EvalError, Evaluator, RequestContext};
use citygate_core::redact::{BufferPlan, ContentCoding, ResponseRedaction};
use sha2::Sha256;

/// The fixed "now" of every driver (2026-09-21T…Z): the demo tokens in the
/// seed corpora are minted for it, so replays are deterministic.
pub const NOW: u64 = 1_790_000_000;

/// The city pack, as Envoy and Istio get it, and its DEMO ONLY secrets.
pub const CITY_CONFIG: &str = include_str!("../../policies/config/city-gateway.json");
const DEMO_ENV: &str = include_str!("../../policies/config/demo.env");

/// Secrets of `demo.env` (`${env:NAME}` in the configuration).
pub fn demo_env(name: &str) -> Option<String> {
    DEMO_ENV
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| k.trim() == name)
        .map(|(_, v)| v.trim().to_string())
}

thread_local! {
    // Compiled once per thread (Rego, keys, profiles); the core's state is
    // per-request or in the host, so reusing it across inputs is sound.
    static CITY: RefCell<Option<&'static CompiledConfig>> = const { RefCell::new(None) };
}

/// The compiled city pack gateway (leaked: one per fuzzing thread).
pub fn city_gateway() -> &'static CompiledConfig {
    CITY.with(|cell| {
        *cell.borrow_mut().get_or_insert_with(|| {
            match CompiledConfig::from_json(CITY_CONFIG.as_bytes(), &demo_env) {
                Ok(gateway) if gateway.policy().evaluator().map(|e| e.0) != Some(Evaluator::Vm) => {
                    panic!("the city pack should run on the bytecode VM")
                }
                Ok(gateway) => Box::leak(Box::new(gateway)),
                Err(e) => panic!("the city pack does not compile: {e:?}"),
            }
        })
    })
}

// ---------------------------------------------------------------------------
// config: arbitrary bytes as the plugin configuration.

/// The whole configuration path of `on_configure`: parse (JSON, secrets,
/// routes), then compile (Rego, keys, JSONPath, profiles). Errors are fine.
pub fn config(data: &[u8]) {
    if let Ok(parsed) = config::parse(data, &demo_env) {
        let _ = CompiledConfig::compile(parsed);
    }
}

// ---------------------------------------------------------------------------
// jwt: first byte picks the mode, the rest is its text.

/// DEMO ONLY secret of the `partner` provider (also in `demo.env`).
const HS256_SECRET: &[u8] = b"demo-only-hs256-secret-change-me-0123456789";
const ISSUER: &str = "https://partner.city.example";
const PEMS: &[&str] = &[
    include_str!("../core/src/auth/testdata/demo-rsa-2048.public.pem"),
    include_str!("../core/src/auth/testdata/demo-rsa-2048-rotated.public.pem"),
    include_str!("../core/src/auth/testdata/demo-ec-p256.public.pem"),
    include_str!("../core/src/auth/testdata/demo-ec-p384.public.pem"),
    include_str!("../core/src/auth/testdata/demo-ed25519.public.pem"),
    include_str!("../core/src/auth/testdata/demo-rsa-2048.cert.pem"),
];

fn demo_keys() -> KeySet {
    let mut keys = match KeySet::from_hmac_secret(HS256_SECRET) {
        Ok(keys) => keys,
        Err(e) => panic!("HMAC key: {e:?}"),
    };
    for pem in PEMS {
        match KeySet::from_pem(pem) {
            Ok(more) => {
                let _ = keys.extend(more);
            }
            Err(e) => panic!("demo PEM: {e:?}"),
        }
    }
    keys
}

fn strict_options() -> VerifyOptions {
    VerifyOptions {
        issuer: Some(ISSUER.to_string()),
        audiences: vec!["citygate".to_string()],
        required_typ: Some("JWT".to_string()),
        ..VerifyOptions::default()
    }
}

/// Modes (`byte % 4`):
/// 0. the rest is a compact token: `decode_unverified`, then `verify_token`
///    against every demo key with lax and strict options;
/// 1. the rest is `<header JSON>\n<claims JSON>`: the driver signs it with
///    the HS256 demo secret, so claim checks behind the signature are
///    reached; an accepted token must satisfy the strict options;
/// 2. the rest is a JWKS document: `KeySet::from_jwks_json`, and any key set
///    it yields checks a fixed token;
/// 3. the rest is PEM text: `KeySet::from_pem`.
pub fn jwt(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    match mode % 4 {
        0 => {
            let _ = decode_unverified(text);
            let keys = demo_keys();
            let _ = verify_token(text, &keys, &VerifyOptions::default(), NOW);
            let _ = verify_token(text, &keys, &strict_options(), NOW);
        }
        1 => signed_claims(text),
        2 => {
            if let Ok(keys) = KeySet::from_jwks_json(text) {
                let token = hs256_token(r#"{"alg":"HS256","typ":"JWT"}"#, r#"{"sub":"x"}"#);
                let _ = verify_token(&token, &keys, &VerifyOptions::default(), NOW);
            }
        }
        _ => {
            let _ = KeySet::from_pem(text);
        }
    }
}

fn signed_claims(text: &str) {
    let (header, claims) = text.split_once('\n').unwrap_or((text, "{}"));
    let token = hs256_token(header, claims);
    let keys = match KeySet::from_hmac_secret(HS256_SECRET) {
        Ok(keys) => keys,
        Err(e) => panic!("HMAC key: {e:?}"),
    };
    let options = strict_options();
    let _ = decode_unverified(&token);
    let _ = verify_token(&token, &keys, &VerifyOptions::default(), NOW);
    if let Ok(accepted) = verify_token(&token, &keys, &options, NOW) {
        // Independent re-check of what the verifier promised.
        assert_eq!(
            accepted.get("iss").and_then(|v| v.as_str()),
            Some(ISSUER),
            "accepted a token from another issuer: {text:?}"
        );
        let exp = accepted.get("exp").and_then(serde_json::Value::as_f64);
        assert!(
            exp.is_some_and(|exp| exp + 60.0 >= NOW as f64),
            "accepted an expired token or one without exp: {text:?}"
        );
        let aud_ok = match accepted.get("aud") {
            Some(serde_json::Value::String(a)) => a == "citygate",
            Some(serde_json::Value::Array(items)) => {
                items.iter().any(|a| a.as_str() == Some("citygate"))
            }
            _ => false,
        };
        assert!(aud_ok, "accepted a token for another audience: {text:?}");
    }
}

/// `header.claims.signature`, HS256 with the demo secret.
pub fn hs256_token(header: &str, claims: &str) -> String {
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let mac = hmac_sha256(HS256_SECRET, signing_input.as_bytes());
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(mac))
}

/// HMAC-SHA256 (RFC 2104) of the `hmac` crate, which the filter verifies
/// HS256 tokens with too.
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(message);
    mac.finalize().into_bytes().into()
}

// ---------------------------------------------------------------------------
// request: an HTTP/1-like text through normalize, the policy input and the
// city pack's request path.

/// A request or response in the corpus' text format:
///
/// ```text
/// GET /v2/entities?type=Vehicle        (start line: method and target)
/// x-api-key: cg_demo_…                 (headers; `:name: value` for pseudo)
/// @source: 203.0.113.7:5555            (`@` lines: connection, not headers)
///                                      (blank line)
/// {"body": …}                          (body: the rest, bytes)
/// ```
#[derive(Debug, Default, Clone)]
pub struct Message {
    pub start: String,
    pub headers: Vec<(String, String)>,
    /// `@name: value` lines.
    pub directives: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Message {
    pub fn parse(data: &[u8]) -> Message {
        let (head, body) = match find(data, b"\n\n") {
            Some(i) => (&data[..i], &data[i + 2..]),
            None => (data, &[][..]),
        };
        let head = String::from_utf8_lossy(head);
        let mut lines = head.split('\n');
        let mut message = Message {
            start: lines.next().unwrap_or_default().to_string(),
            body: body.to_vec(),
            ..Message::default()
        };
        for line in lines {
            let line = line.strip_suffix('\r').unwrap_or(line);
            // The name's own leading `:` or `@` is not the separator.
            let Some(colon) = line.get(1..).and_then(|l| l.find(':')).map(|i| i + 1) else {
                continue;
            };
            let (name, value) = (&line[..colon], line[colon + 1..].trim_start());
            match name.strip_prefix('@') {
                Some(directive) => message
                    .directives
                    .push((directive.to_string(), value.to_string())),
                None => message.headers.push((name.to_string(), value.to_string())),
            }
        }
        message
    }

    pub fn directive(&self, name: &str) -> Option<&str> {
        self.directives
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The start line's method and target (`GET /`).
    pub fn method_and_target(&self) -> (String, String) {
        let mut words = self.start.splitn(2, ' ');
        let method = words.next().unwrap_or_default().to_string();
        let target = words.next().unwrap_or_default().to_string();
        (method, target)
    }

    /// Pseudo-headers from the start line unless given, then the headers.
    pub fn raw_request(&self) -> RawRequest {
        let (method, target) = self.method_and_target();
        let mut headers: Vec<(String, String)> = Vec::new();
        for (name, value) in [
            (":method", method.as_str()),
            (":path", target.as_str()),
            (":authority", "api.city.example"),
            (":scheme", "https"),
        ] {
            if !self.headers.iter().any(|(n, _)| n == name) {
                headers.push((name.to_string(), value.to_string()));
            }
        }
        headers.extend(self.headers.iter().cloned());
        let peer_certificate = self.directive("cert-uri").map(|uri| PeerCertificate {
            uri_san: Some(uri.to_string()),
            dns_san: self.directive("cert-dns").map(str::to_string),
            subject: self.directive("cert-subject").map(str::to_string),
        });
        RawRequest {
            headers,
            connection: ConnectionInfo {
                source: Some(
                    self.directive("source")
                        .unwrap_or("127.0.0.1:40000")
                        .to_string(),
                ),
                destination: self.directive("destination").map(str::to_string),
                protocol: Some(self.directive("protocol").unwrap_or("HTTP/1.1").to_string()),
                peer_certificate,
            },
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The request stages natively: `normalize` (with the `@hops` trusted-hops
/// directive) and its invariants, the policy input for every city route
/// and identity kind with the pack's decision from the bytecode VM and the
/// interpreter (they must agree), then the city pack's `admit` and
/// `authorize` (auth, rate limits, Rego) on a fresh in-memory host.
pub fn request(data: &[u8]) {
    let message = Message::parse(data);
    let raw = message.raw_request();
    let hops = message
        .directive("hops")
        .and_then(|h| h.trim().parse::<u8>().ok())
        .unwrap_or(0);
    let gateway_config = GatewayConfig {
        trusted_hops: hops,
        ..GatewayConfig::default()
    };
    if let Ok(view) = normalize(&raw, &gateway_config) {
        check_normalized_path(&view.path);
        // What upstream receives, normalized again, is what was judged.
        let upstream = view.upstream_path();
        let upstream_path = upstream.split('?').next().unwrap_or_default();
        assert_eq!(
            normalize_path(upstream_path).as_deref(),
            Ok(view.path.as_str()),
            "upstream path {upstream:?} does not normalize to the judged path"
        );
        let gateway = city_gateway();
        let truncated = message.directive("truncated").is_some();
        for (index, route) in routes(gateway).iter().enumerate() {
            for identity in identities() {
                let request = RequestContext {
                    view: &view,
                    identity: &identity,
                    route,
                    body: Some(&message.body),
                    body_truncated: truncated,
                };
                let _ = build_input(&request);
                // The pack runs on the bytecode VM; the interpreter must
                // decide the same. The pack does not read the route, so one
                // route is enough (the interpreter is the slow part).
                if index > 0 {
                    continue;
                }
                if let Some((vm, interpreter)) = gateway
                    .policy()
                    .evaluate_both(&request, NOW * 1_000_000_000)
                {
                    // The time budget is wall-clock: under the sanitizer the
                    // interpreter may run out of it where the VM does not.
                    let timed_out =
                        |r: &Result<_, EvalError>| matches!(r, Err(EvalError::TimeBudget));
                    if timed_out(&vm) || timed_out(&interpreter) {
                        continue;
                    }
                    assert_eq!(
                        vm, interpreter,
                        "the VM and the interpreter decide differently"
                    );
                }
            }
        }
    }
    let gateway = city_gateway();
    let host = MemoryHost::at_unix_seconds(NOW);
    if let Ok(admitted) = gateway.admit(&raw, &host as &dyn Host) {
        check_normalized_path(&admitted.view.path);
        let size = message.body.len() as u64;
        if gateway
            .check_request_body(&admitted, size, &host as &dyn Host)
            .is_err()
        {
            return;
        }
        let body = admitted
            .body
            .policy_bytes
            .map(|limit| &message.body[..message.body.len().min(limit)]);
        let truncated = body.is_some_and(|b| b.len() < message.body.len());
        let _ = gateway.authorize(admitted, body, truncated, &host as &dyn Host);
    }
}

fn routes(gateway: &CompiledConfig) -> &[RouteConfig] {
    &gateway.config().routes
}

fn identities() -> Vec<Identity> {
    let mut jwt = Identity::anonymous();
    jwt.subject = Some("citizen-anna".into());
    jwt.roles = vec!["citizen".into()];
    jwt.scopes = vec!["openid".into()];
    jwt.claims_mut()
        .insert("amr".into(), serde_json::json!(["pwd", "mfa"]));
    vec![Identity::anonymous(), jwt]
}

/// What every later stage relies on: absolute, no empty, `.` or `..`
/// segment, no separator or control character hidden in a segment.
pub fn check_normalized_path(path: &str) {
    assert!(
        path.starts_with('/'),
        "normalized path {path:?} is relative"
    );
    let inner = path.strip_suffix('/').unwrap_or(path);
    for segment in inner.split('/').skip(1) {
        assert!(
            !matches!(segment, "" | "." | ".."),
            "normalized path {path:?} keeps an empty or dot segment"
        );
    }
    assert!(
        !path
            .chars()
            .any(|c| c.is_control() || c == '\\' || c == ';'),
        "normalized path {path:?} keeps a control character, `\\` or `;`"
    );
}

// ---------------------------------------------------------------------------
// redact: arbitrary bytes as an upstream body, under the city profiles.

/// Byte 0 picks the profiles (a bit per city profile, in name order, applied
/// in that order), byte 1 the content coding (0 identity, 1 the body as
/// given declared gzip, 2 the body gzip-compressed by the driver, 3 zlib
/// deflate, 4 raw deflate as given); the rest is the body.
///
/// A minimized body is JSON again, empty only when the upstream's was, and
/// bounded by the upstream's document ([`check_minimized`]). When the body
/// is JSON the driver knows (codings 0, 2, 3), it is minimized a second
/// time with [`PLANTS`] planted in it, and no plant may survive a profile
/// that must remove it ([`check_plants_absent`]).
pub fn redact(data: &[u8]) {
    let [mask, coding, body @ ..] = data else {
        return;
    };
    let gateway = city_gateway();
    let names: Vec<String> = gateway
        .config()
        .redaction
        .profiles
        .keys()
        .cloned()
        .collect();
    let profiles: Vec<String> = names
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << (i % 8)) != 0)
        .map(|(_, n)| n.clone())
        .collect();
    // The decoded body, where the driver encodes it itself.
    let (coding, bytes, plain) = match coding % 5 {
        0 => (ContentCoding::Identity, body.to_vec(), Some(body)),
        1 => (ContentCoding::Gzip, body.to_vec(), None),
        2 => (ContentCoding::Gzip, gzip(body), Some(body)),
        3 => (ContentCoding::Deflate, zlib(body), Some(body)),
        _ => (ContentCoding::Deflate, body.to_vec(), None),
    };
    let plain = plain.map(|b| b.strip_prefix(BOM).unwrap_or(b));
    let upstream: Option<serde_json::Value> = plain.and_then(|b| serde_json::from_slice(b).ok());
    let redaction = ResponseRedaction {
        profiles,
        ..ResponseRedaction::default()
    };
    if let Some(minimized) = minimize(&redaction, coding, &bytes) {
        check_minimized(plain, upstream.as_ref(), &minimized);
    }
    let Some(mut planted) = upstream.clone() else {
        return;
    };
    plant(&mut planted, true);
    let planted_bytes = serde_json::to_vec(&planted).unwrap_or_default();
    if let Some(minimized) = minimize(&redaction, ContentCoding::Identity, &planted_bytes) {
        check_minimized(Some(&planted_bytes), Some(&planted), &minimized);
        // Profiles apply in turn: any one that removes a plant suffices.
        let removes = |plant: &Plant| {
            redaction
                .profiles
                .iter()
                .any(|p| plant.removed_by.contains(&p.as_str()))
        };
        check_plants_absent(upstream.as_ref(), &minimized, &removes, &redaction.profiles);
    }
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// The city pack's minimization of `bytes`; `None` when it fails closed.
fn minimize(redaction: &ResponseRedaction, coding: ContentCoding, bytes: &[u8]) -> Option<Vec<u8>> {
    let plan = BufferPlan {
        max_bytes: 1 << 20,
        coding,
        declared_length: None,
    };
    let host = MemoryHost::at_unix_seconds(NOW);
    city_gateway()
        .redactor()
        .minimize(redaction, &plan, bytes, &host as &dyn Host)
        .ok()
        .map(|minimized| minimized.body)
}

/// The minimization bound, given the upstream's decoded body (without a
/// byte order mark) and its document where the driver knows them: a
/// minimized body is JSON, empty only when the upstream's body was, and no
/// deeper and with no more values (members and elements) than the
/// upstream's document, because every action of the city pack's profiles
/// removes or rewrites in place (its replacements are strings). Its size
/// in bytes is not bounded by the plan's `max_bytes`, which limits the
/// upstream's body: a pseudonym is longer than the `1` it replaces.
pub fn check_minimized(
    upstream_body: Option<&[u8]>,
    upstream: Option<&serde_json::Value>,
    minimized: &[u8],
) {
    if let Some(body) = upstream_body {
        assert_eq!(
            minimized.is_empty(),
            body.is_empty(),
            "a minimized body is empty where the upstream's is not, or the other way round"
        );
    }
    if minimized.is_empty() {
        return;
    }
    let Ok(document) = serde_json::from_slice::<serde_json::Value>(minimized) else {
        panic!("a minimized body is not JSON");
    };
    if let Some(upstream) = upstream {
        let (depth, values) = shape(&document);
        let (upstream_depth, upstream_values) = shape(upstream);
        assert!(
            depth <= upstream_depth,
            "a minimized body nests deeper ({depth}) than the upstream's ({upstream_depth})"
        );
        assert!(
            values <= upstream_values,
            "a minimized body holds more values ({values}) than the upstream's ({upstream_values})"
        );
    }
}

/// Nesting depth (a scalar 0, `[1]` 1) and number of values of a document.
pub fn shape(value: &serde_json::Value) -> (usize, usize) {
    let children: Vec<(usize, usize)> = match value {
        serde_json::Value::Array(items) => items.iter().map(shape).collect(),
        serde_json::Value::Object(fields) => fields.values().map(shape).collect(),
        _ => return (0, 1),
    };
    let depth = children.iter().map(|(d, _)| *d).max().unwrap_or(0) + 1;
    (depth, 1 + children.iter().map(|(_, n)| n).sum::<usize>())
}

/// A personal value the redaction drivers plant: a member `field: value`
/// in every object of the document, or only in its entity-level objects
/// (the root object and the objects of a root array, arrays nesting
/// transparently: where an allowlist looks).
pub struct Plant {
    pub field: &'static str,
    pub value: &'static str,
    pub everywhere: bool,
    /// City profiles of which any one, among those applied, must leave no
    /// trace of `value` wherever it is planted.
    pub removed_by: &'static [&'static str],
}

/// What the city pack promises, whatever the document around the plant:
/// its e-mail, phone and IBAN detectors look into every string of the
/// document in all profiles but `emergency`; `citizen` removes
/// `last_name` at any depth; `driverName` is pseudonymized (`analyst`),
/// removed (`citizen`) or outside the allowlist (`open-data`) in an
/// entity. (`analyst` keeps an NGSI attribute's `type` and time members as
/// they are, so a name nested in them is not its to remove.) The values
/// contain no character JSON escapes, so a byte search finds them.
pub const PLANTS: &[Plant] = &[
    Plant {
        field: "email",
        value: "planted.person@example.org",
        everywhere: true,
        removed_by: &["analyst", "citizen", "open-data", "operator"],
    },
    Plant {
        field: "phone",
        value: "+49 30 9018 2264",
        everywhere: true,
        removed_by: &["analyst", "citizen", "open-data", "operator"],
    },
    Plant {
        field: "iban",
        value: "GB82WEST12345698765432",
        everywhere: true,
        removed_by: &["analyst", "citizen", "open-data", "operator"],
    },
    Plant {
        field: "last_name",
        value: "Plantedsurname",
        everywhere: true,
        removed_by: &["citizen"],
    },
    Plant {
        field: "driverName",
        value: "Plantina Drivername",
        everywhere: false,
        removed_by: &["analyst", "citizen", "open-data"],
    },
];

/// Plants [`PLANTS`] in `value` (`entity`: `value` is at entity level).
pub fn plant(value: &mut serde_json::Value, entity: bool) {
    match value {
        serde_json::Value::Object(fields) => {
            for item in fields.values_mut() {
                plant(item, false);
            }
            for plant in PLANTS.iter().filter(|p| p.everywhere || entity) {
                fields.insert(plant.field.into(), plant.value.into());
            }
        }
        serde_json::Value::Array(items) => {
            for item in items {
                plant(item, entity);
            }
        }
        _ => {}
    }
}

/// No plant is left in a minimized body where `removes` says a profile
/// applied must remove it, unless the fuzzed document (`original`, before
/// the plants) held that value itself. `context` goes into the message.
pub fn check_plants_absent(
    original: Option<&serde_json::Value>,
    minimized: &[u8],
    removes: &dyn Fn(&Plant) -> bool,
    context: &dyn std::fmt::Debug,
) {
    let original = original
        .map(|o| serde_json::to_vec(o).unwrap_or_default())
        .unwrap_or_default();
    for plant in PLANTS.iter().filter(|p| removes(p)) {
        if find(&original, plant.value.as_bytes()).is_none() {
            assert!(
                find(minimized, plant.value.as_bytes()).is_none(),
                "the planted {} {:?} survived minimization ({context:?})",
                plant.field,
                plant.value
            );
        }
    }
}

fn gzip(body: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let _ = encoder.write_all(body);
    encoder.finish().unwrap_or_default()
}

fn zlib(body: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    let _ = encoder.write_all(body);
    encoder.finish().unwrap_or_default()
}
