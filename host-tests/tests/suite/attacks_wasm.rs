//! The attack corpus's cases a scenario file cannot express, through the
//! real `.wasm` in wasmtime: many rotating addresses and keys (each request
//! different), generated nesting depths, response bodies that are not UTF-8,
//! decompression bombs, and a request body past the policy's buffer. The
//! configurations are the city pack's and the corpus's
//! (`policies/attacks/*.json`); planted personal values must never reach a
//! client.

use std::io::Write as _;
use std::time::Duration;

use anyhow::Result;
use citygate_host::scenario::credentials::Tamper;
use citygate_host::wasm_build::workspace_root;
use citygate_host::{CalloutReply, Request, Upstream, Vm};
use serde_json::json;

use crate::support::{
    demo_credentials, demo_env, get_with_bearer, metric, plugin, send_with, vm_now, with_bearer,
    Answer,
};

const EMAIL: &str = "erika@example.org";
const NAME: &str = "Mustermann";

fn read(path: &str) -> String {
    std::fs::read_to_string(workspace_root().join(path)).expect("a file of the policy pack")
}

/// The city pack as deployed, its JWKS served, keys fetched.
fn city_pack() -> Vm {
    let env = demo_env();
    let jwks = demo_credentials()
        .jwks("city-idp", None)
        .expect("the demo JWKS");
    let mut builder = plugin()
        .vm()
        .config(read("policies/config/city-gateway.json"))
        .headers_stop_iteration(true)
        .callout(
            "jwks",
            CalloutReply::Reply {
                status: 200,
                headers: vec![("content-type".into(), "application/json".into())],
                body: serde_json::to_vec(&jwks).expect("JSON"),
            },
        );
    for (name, value) in env {
        builder = builder.env(name, value);
    }
    let mut vm = builder.start().expect("the city pack configures");
    vm.advance(Duration::from_secs(1)).expect("a tick");
    vm
}

/// The corpus's rate-limit configuration, optionally with other trusted hops.
fn ratelimit_gateway(trusted_hops: u8) -> Vm {
    let mut config: serde_json::Value =
        serde_json::from_str(&read("policies/attacks/ratelimit.config.json")).expect("JSON");
    config["gateway"]["trusted_hops"] = json!(trusted_hops);
    plugin()
        .vm()
        .config(config.to_string())
        .headers_stop_iteration(true)
        .start()
        .expect("the corpus configuration loads")
}

fn ok_json() -> Upstream {
    Upstream::ok().json("{}")
}

fn open_data() -> Request {
    Request::get("/v2/entities?type=ParkingSpot")
}

/// An upstream reply with these bytes as its JSON body.
fn json_reply(body: &[u8]) -> Upstream {
    Upstream::ok()
        .header("content-type", "application/json")
        .body(body.to_vec())
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).expect("in memory");
    encoder.finish().expect("in memory")
}

/// A refusal of a response that cannot be minimized: a 502 problem document
/// with none of the upstream's bytes.
fn assert_refused(answer: &Answer, what: &str) {
    assert_eq!(answer.status, 502, "{what}: {}", answer.text());
    let problem: serde_json::Value =
        serde_json::from_slice(&answer.body).expect("a problem document");
    assert_eq!(problem["status"], 502, "{what}");
    let text = answer.text();
    assert!(
        !text.contains(EMAIL) && !text.contains(NAME),
        "{what}: {text}"
    );
}

// --- rate-limit evasion -------------------------------------------------------------------

#[test]
fn two_hundred_claimed_addresses_from_one_peer_share_its_bucket() -> Result<()> {
    let mut vm = ratelimit_gateway(0);
    let mut admitted = 0;
    for i in 0..200u32 {
        let claimed = format!("198.51.{}.{}", i / 250, i % 250 + 1);
        let (name, case) = match i % 3 {
            0 => ("x-forwarded-for", claimed.clone()),
            1 => ("X-Forwarded-For", format!("{claimed}, 10.0.0.{}", i % 250)),
            _ => ("x-real-ip", claimed.clone()),
        };
        let request = open_data()
            .header(name, &case)
            .header("forwarded", &format!("for={claimed}"))
            .source("203.0.113.10:40000");
        if send_with(&mut vm, request, ok_json())?.status == 200 {
            admitted += 1;
        }
    }
    // The bucket holds 3: without trusted hops only the socket peer counts.
    assert_eq!(admitted, 3);
    Ok(())
}

#[test]
fn rotating_what_the_client_claims_left_of_the_trusted_hop_buys_nothing() -> Result<()> {
    // Depends on x-forwarded-for reaching the filter as written
    // (ARCHITECTURE.md, "Where the wasmtime host differs from Envoy"): here
    // the trusted proxy appended 192.0.2.50, the client; through Envoy the
    // last entry would be the one Envoy appends itself.
    let mut vm = ratelimit_gateway(1);
    let mut admitted = 0;
    for i in 0..200u32 {
        let xff = format!("198.51.100.{}, 10.{}.0.1, 192.0.2.50", i % 250 + 1, i % 200);
        // Split over two headers every other time: one list all the same.
        let request = if i % 2 == 0 {
            open_data().header("x-forwarded-for", &xff)
        } else {
            let (claimed, proxy) = xff.rsplit_once(", ").expect("two parts");
            open_data()
                .header("x-forwarded-for", claimed)
                .header("x-forwarded-for", proxy)
        };
        if send_with(&mut vm, request.source("203.0.113.10:40000"), ok_json())?.status == 200 {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 3, "192.0.2.50's bucket holds 3");
    // The trusted proxy's view of another client is another bucket.
    let other = open_data()
        .header("x-forwarded-for", "192.0.2.51")
        .source("203.0.113.10:40000");
    assert_eq!(send_with(&mut vm, other, ok_json())?.status, 200);
    Ok(())
}

#[test]
fn a_thousand_client_chosen_keys_buy_one_overflow_bucket_not_a_thousand() -> Result<()> {
    // per-tenant: 2 tokens per tenant, at most 64 live tenants.
    let mut vm = ratelimit_gateway(0);
    let mut admitted_early = 0;
    let mut admitted_late = 0;
    for i in 0..1000u32 {
        let request = Request::get("/tenants/a").header("x-city-tenant", &format!("tenant-{i}"));
        if send_with(&mut vm, request, ok_json())?.status == 200 {
            if i < 200 {
                admitted_early += 1;
            } else {
                admitted_late += 1;
            }
        }
    }
    // Each tenant sends one request. `max_keys: 64` gives 64 tenants a
    // bucket of their own (2 shards of 32 entries; an entry is reused only
    // once its bucket is full again, and a refill takes an hour while the
    // clock is not advanced), so 64 are admitted that way. The other 936
    // share the one overflow bucket of `capacity: 2`: 2 more. Both shards
    // are full long before the 200th tenant, so those 2 go early.
    assert_eq!(
        (admitted_early, admitted_late),
        (64 + 2, 0),
        "admitted before and after the 200th tenant"
    );
    assert_eq!(metric(&vm, "citygate_ratelimit_overflow"), 1000 - 64);
    Ok(())
}

#[test]
fn a_thousand_made_up_api_keys_are_refused_and_take_no_bucket() -> Result<()> {
    let mut vm = ratelimit_gateway(0);
    for i in 0..1000u32 {
        let request = open_data().header("x-api-key", &format!("cg_demo_made_up_{i:04}"));
        let answer = send_with(&mut vm, request, ok_json())?;
        assert_eq!(answer.status, 401, "key {i}");
        assert!(!answer.forwarded);
        assert!(!answer.text().contains("cg_demo_made_up"));
    }
    assert_eq!(metric(&vm, "citygate_ratelimit_checked"), 0);
    // The real application still has its whole bucket.
    let key = demo_credentials().api_key("parking-app")?.to_string();
    let answer = send_with(&mut vm, open_data().header("x-api-key", &key), ok_json())?;
    assert_eq!(answer.status, 200);
    Ok(())
}

// --- redaction bypass: bodies no scenario file can hold -------------------------------------------

#[test]
fn response_bodies_that_are_not_utf8_are_refused() -> Result<()> {
    let mut vm = city_pack();
    let json = format!(r#"[{{"type":"ParkingSpot","ownerEmail":"{EMAIL}","n":"X"}}]"#);
    let utf16 = |big_endian: bool| -> Vec<u8> {
        let mut out = if big_endian {
            vec![0xFE, 0xFF]
        } else {
            vec![0xFF, 0xFE]
        };
        for unit in json.encode_utf16() {
            let bytes = if big_endian {
                unit.to_be_bytes()
            } else {
                unit.to_le_bytes()
            };
            out.extend(bytes);
        }
        out
    };
    let with = |bad: &[u8]| {
        let (before, after) = json.split_once('X').expect("a marker");
        [before.as_bytes(), bad, after.as_bytes()].concat()
    };
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        ("a lone continuation byte", with(b"\x80")),
        ("0xFF", with(b"\xFF")),
        ("an overlong slash", with(b"\xC0\xAF")),
        ("an overlong e-mail at sign", with(b"\xC1\x80")),
        ("a UTF-16 surrogate in UTF-8", with(b"\xED\xA0\x80")),
        ("a code point past U+10FFFF", with(b"\xF4\x90\x80\x80")),
        ("a sequence cut short", with(b"\xE2\x82")),
        ("Latin-1", with("Müller".encode_latin1().as_slice())),
        ("UTF-16LE with its mark", utf16(false)),
        ("UTF-16BE with its mark", utf16(true)),
        ("UTF-32 with its mark", {
            let mut out = vec![0xFF, 0xFE, 0x00, 0x00];
            for c in json.chars() {
                out.extend((c as u32).to_le_bytes());
            }
            out
        }),
    ];
    for (what, body) in bodies {
        let answer = send_with(&mut vm, open_data(), json_reply(&body))?;
        assert_refused(&answer, what);
    }
    assert!(metric(&vm, "citygate_redaction_failed_closed") >= 11);
    Ok(())
}

/// Latin-1 bytes of a string (test helper for a body in a legacy charset).
trait Latin1 {
    fn encode_latin1(&self) -> Vec<u8>;
}

impl Latin1 for str {
    fn encode_latin1(&self) -> Vec<u8> {
        self.chars()
            .map(|c| u8::try_from(c as u32).unwrap_or(b'?'))
            .collect()
    }
}

#[test]
fn nesting_past_the_parsers_limit_is_refused_and_the_vm_survives_deep_bombs() -> Result<()> {
    let mut vm = city_pack();
    let nested = |depth: usize| -> Vec<u8> {
        let mut body = "[".repeat(depth);
        body.push_str(&format!(
            r#"{{"type":"ParkingSpot","ownerEmail":"{EMAIL}"}}"#
        ));
        body.push_str(&"]".repeat(depth));
        body.into_bytes()
    };
    // 100 arrays deep is parsed and minimized (the e-mail is gone)…
    let answer = send_with(&mut vm, open_data(), json_reply(&nested(100)))?;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert!(!answer.text().contains(EMAIL), "{}", answer.text());
    // …past serde_json's 128 it is refused, however deep.
    for depth in [128, 129, 1_000, 100_000] {
        let answer = send_with(&mut vm, open_data(), json_reply(&nested(depth)))?;
        assert_refused(&answer, &format!("{depth} levels"));
    }
    let objects = format!(
        "{}{{\"ownerEmail\":\"{EMAIL}\"}}{}",
        "{\"a\":".repeat(50_000),
        "}".repeat(50_000)
    );
    assert_refused(
        &send_with(&mut vm, open_data(), json_reply(objects.as_bytes()))?,
        "50 000 objects",
    );
    // The VM is unharmed: the next request is served.
    let answer = send_with(
        &mut vm,
        open_data(),
        Upstream::ok().json(r#"[{"type":"ParkingSpot"}]"#),
    )?;
    assert_eq!(answer.status, 200);
    Ok(())
}

#[test]
fn duplicate_members_never_leave_a_hidden_personal_value() -> Result<()> {
    let mut vm = city_pack();
    let analyst = demo_credentials().mint("analyst", Tamper::None, vm_now(&vm))?;
    let as_analyst = || get_with_bearer("/v2/entities?type=Vehicle", &analyst);
    let bodies = [
        // The name twice at the entity level, in both NGSI forms.
        r#"[{"id":"v1","type":"Vehicle","driverName":"Erika Mustermann","driverName":"Max Mustermann"}]"#,
        r#"[{"id":"v1","type":"Vehicle","driverName":{"type":"Text","value":"Erika Mustermann"},"driverName":{"type":"Text","value":"Max Mustermann"}}]"#,
        // `value` twice inside the attribute.
        r#"[{"id":"v1","type":"Vehicle","driverName":{"type":"Text","value":"Erika Mustermann","value":"Max Mustermann"}}]"#,
        // The type twice, to dodge a rule keyed on it.
        r#"[{"id":"p1","type":"Person","type":"Vehicle","driverName":"Erika Mustermann"}]"#,
        // Deeper.
        r#"{"results":[{"owner":{"driverName":"Erika Mustermann","driverName":"Erika Mustermann"}}]}"#,
    ];
    for body in bodies {
        let answer = send_with(&mut vm, as_analyst(), json_reply(body.as_bytes()))?;
        assert_eq!(answer.status, 200, "{body}: {}", answer.text());
        assert!(!answer.text().contains(NAME), "{body}: {}", answer.text());
    }
    // Anonymous open data: an allowlisted name twice, the first personal.
    let body = format!(r#"[{{"type":"ParkingSpot","status":"{EMAIL}","status":"free"}}]"#);
    let answer = send_with(&mut vm, open_data(), json_reply(body.as_bytes()))?;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.text(), r#"[{"type":"ParkingSpot","status":"free"}]"#);
    Ok(())
}

#[test]
fn compressed_bombs_are_refused_and_every_gzip_member_is_minimized() -> Result<()> {
    let mut vm = city_pack();
    // 16 MiB of spaces around a personal value: some 16 KiB compressed,
    // far past the 1 MiB bound once decoded.
    let mut bomb = vec![b' '; 16 * 1024 * 1024];
    bomb.extend(format!(r#"[{{"ownerEmail":"{EMAIL}"}}]"#).as_bytes());
    let reply = json_reply(&gzip(&bomb)).header("content-encoding", "gzip");
    let answer = send_with(&mut vm, open_data(), reply)?;
    assert_refused(&answer, "a gzip bomb");
    let problem: serde_json::Value = serde_json::from_slice(&answer.body)?;
    assert_eq!(problem["type"], "urn:citygate:problem:response-too-large");

    // Two gzip members, the personal value in the second.
    let mut members = gzip(br#"[{"type":"ParkingSpot","#);
    members.extend(gzip(format!(r#""ownerEmail":"{EMAIL}"}}]"#).as_bytes()));
    let reply = json_reply(&members).header("content-encoding", "gzip");
    let answer = send_with(&mut vm, open_data(), reply)?;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.text(), r#"[{"type":"ParkingSpot"}]"#);

    // Gzip inside gzip, labelled once: the inner layer is not JSON.
    let double = gzip(&gzip(
        format!(r#"[{{"type":"ParkingSpot","ownerEmail":"{EMAIL}"}}]"#).as_bytes(),
    ));
    let reply = json_reply(&double).header("content-encoding", "gzip");
    assert_refused(&send_with(&mut vm, open_data(), reply)?, "gzip in gzip");
    Ok(())
}

// --- object-level authorization: a body past the policy's buffer ----------------------------------

#[test]
fn a_request_body_past_the_policy_buffer_names_nobody_and_is_denied() -> Result<()> {
    let mut vm = city_pack();
    let citizen = demo_credentials().mint("citizen", Tamper::None, vm_now(&vm))?;
    let filing = |description: &str| {
        with_bearer(Request::post("/open311/v2/requests.json"), &citizen)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!(
                "account_id=citizen-anna&service_code=POTHOLE&description={description}"
            ))
            .chunk_size(16 * 1024)
    };
    let created = Upstream::new(201).json(r#"[{"service_request_id":"EX-1"}]"#);
    // Within the 64 KiB bound the policy reads her account and allows it…
    assert_eq!(
        send_with(&mut vm, filing("deep+hole"), created.clone())?.status,
        201
    );
    // …past it the body is cut, names nobody, and the filing is denied:
    // the policy never judges a body it has not seen whole.
    let answer = send_with(&mut vm, filing(&"x".repeat(70 * 1024)), created)?;
    assert_eq!(answer.status, 403, "{}", answer.text());
    assert!(!answer.forwarded);
    Ok(())
}
