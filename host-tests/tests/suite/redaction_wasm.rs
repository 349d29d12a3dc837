//! Data minimization in the real `.wasm` with the city pack, for what the
//! scenario file (`policies/scenarios/redaction.yaml`) cannot express: the
//! same result for every way the upstream cuts its body into chunks (and
//! gzips it), pseudonyms checked against an independent HMAC and equal
//! across workers, bodies over the 1 MiB bound generated here (never
//! committed), and the metrics and decision-log lines a run leaves: counts,
//! never a value.

use citygate_host::scenario::credentials::expand;
use citygate_host::wasm_build::workspace_root;
use citygate_host::{
    CalloutReply, ClientResponse, Clock, Plugin, Request, SharedStore, Upstream, Vm,
};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::support::{demo_credentials, demo_env, gzip, metric, plugin};

const MIB: usize = 1024 * 1024;
/// Planted in the payloads of `policies/scenarios/data/` (fictional people).
const PLANTED: [&str; 8] = [
    "Erika Mustermann",
    "erika.mustermann@example.org",
    "+49 170 1234567",
    "M-XY 4711",
    "Jonas Beispiel",
    "jonas.beispiel@example.net",
    "0170 7654321",
    "Hauptstrasse 12",
];

fn root_file(path: &str) -> String {
    std::fs::read_to_string(workspace_root().join(path)).expect(path)
}

fn data(name: &str) -> Vec<u8> {
    root_file(&format!("policies/scenarios/data/{name}")).into_bytes()
}

/// A worker of the city gateway, as `envoy/gateway.yaml` runs it, with the
/// city IdP's keys fetched (first tick).
fn worker(plugin: &Plugin, clock: &Clock, shared: &SharedStore) -> Vm {
    let jwks = demo_credentials().jwks("city-idp", None).expect("JWKS");
    let mut builder = plugin
        .vm()
        .config(root_file("policies/config/city-gateway.json"))
        .clock(clock)
        .shared(shared)
        .headers_stop_iteration(true)
        .callout("jwks", CalloutReply::json(200, jwks.to_string()));
    for (name, value) in demo_env() {
        builder = builder.env(name, value);
    }
    let mut vm = builder.start().expect("the city pack loads");
    vm.advance(std::time::Duration::from_secs(1)).expect("tick");
    vm
}

fn bearer(token: &str, clock: &Clock) -> String {
    let now = i64::try_from(clock.now_nanos() / 1_000_000_000).expect("time");
    let jwt = expand(
        &format!("{{{{jwt:{token}}}}}"),
        Some(&demo_credentials()),
        now,
    )
    .expect("mint");
    format!("Bearer {jwt}")
}

/// One request as `role` (None: anonymous) answered by `upstream`.
fn exchange(
    vm: &mut Vm,
    clock: &Clock,
    role: Option<&str>,
    path: &str,
    up: Upstream,
) -> ClientResponse {
    let mut request = Request::get(path);
    match role {
        Some("emergency") => {
            request = request
                .header("authorization", &bearer("emergency", clock))
                .header("x-access-reason", "incident 2026-4471");
        }
        Some(role) => request = request.header("authorization", &bearer(role, clock)),
        None => {}
    }
    let mut exchange = vm.send(request).expect("send");
    exchange.forwarded().expect("forwarded");
    exchange.respond(up).expect("a response")
}

fn json_reply(body: Vec<u8>, content_type: &str) -> Upstream {
    Upstream::ok()
        .header("content-type", content_type)
        .body(body)
}

fn assert_no_planted(text: &str, what: &str) {
    for pii in PLANTED {
        assert!(!text.contains(pii), "{what} contains {pii:?}: {text}");
    }
}

/// (path, payload file, content type) of each upstream form.
const FORMS: [(&str, &str, &str); 4] = [
    (
        "/v2/entities?type=ParkingSpot",
        "parking-spots.v2.json",
        "application/json",
    ),
    (
        "/v2/entities?type=ParkingSpot&options=keyValues",
        "parking-spots.v2-keyvalues.json",
        "application/json",
    ),
    (
        "/ngsi-ld/v1/entities?type=ParkingSpot",
        "parking-spots.ld.json",
        "application/ld+json",
    ),
    (
        "/open311/v2/requests.json",
        "open311-requests.json",
        "application/json",
    ),
];

#[test]
fn every_chunking_and_gzip_give_the_same_minimized_body() {
    let plugin = plugin();
    let clock = Clock::at_unix_secs(1_795_000_000);
    let mut vm = worker(&plugin, &clock, &SharedStore::new());
    let mut checked = 0;
    for (path, file, content_type) in FORMS {
        let payload = data(file);
        for role in [None, Some("analyst"), Some("operator"), Some("emergency")] {
            if role.is_none() && path.starts_with("/open311") {
                continue; // not open data: refused before the upstream
            }
            let whole = exchange(
                &mut vm,
                &clock,
                role,
                path,
                json_reply(payload.clone(), content_type),
            );
            assert_eq!(whole.status, 200, "{path} {role:?}: {}", whole.body_str());
            let expected: Value = whole.json().expect("JSON");
            for chunk in [1, 2, 3, 7, 16, 100, 4096] {
                for zipped in [false, true] {
                    let (body, mut up) = if zipped {
                        (
                            gzip(&payload),
                            Upstream::ok().header("content-encoding", "gzip"),
                        )
                    } else {
                        (payload.clone(), Upstream::ok())
                    };
                    up = up
                        .header("content-type", content_type)
                        .body(body)
                        .chunk_size(chunk);
                    let got = exchange(&mut vm, &clock, role, path, up);
                    assert_eq!(
                        got.status, 200,
                        "{path} {role:?} chunk {chunk} gzip {zipped}"
                    );
                    assert_eq!(got.headers.get("content-encoding"), None);
                    assert_eq!(
                        got.json().expect("JSON"),
                        expected,
                        "{path} {role:?} chunk {chunk} gzip {zipped}"
                    );
                    checked += 1;
                }
            }
            let text = whole.body_str();
            match role {
                None | Some("analyst") => assert_no_planted(&text, &format!("{path} as {role:?}")),
                Some("operator") => {
                    for contact in PLANTED
                        .iter()
                        .filter(|p| p.contains('@') || p.contains(" 7"))
                    {
                        assert!(!text.contains(contact), "{path} as operator: {contact}");
                    }
                }
                _ => {}
            }
        }
    }
    assert_eq!(checked, 15 * 14);
}

/// HMAC-SHA256 (RFC 2104), written out so the pseudonyms are checked by
/// something other than the filter's own code.
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

fn pseudonym(value: &str) -> String {
    let key = demo_env()
        .remove("CITYGATE_PSEUDONYM_KEY")
        .expect("the demo pseudonym key");
    let mac = hmac_sha256(key.as_bytes(), value.as_bytes());
    format!("pn_k2026:{}", &hex::encode(mac)[..16])
}

#[test]
fn analyst_pseudonyms_are_keyed_hmacs_equal_across_workers_and_forms() {
    assert_eq!(pseudonym("Erika Mustermann"), "pn_k2026:8a414e7a92ae3e19");
    let plugin = plugin();
    let clock = Clock::at_unix_secs(1_795_000_000);
    let shared = SharedStore::new();
    let mut first = worker(&plugin, &clock, &shared);
    let mut second = worker(&plugin, &clock, &shared);
    let (path, file, content_type) = FORMS[0];
    let a = exchange(
        &mut first,
        &clock,
        Some("analyst"),
        path,
        json_reply(data(file), content_type),
    );
    let b = exchange(
        &mut second,
        &clock,
        Some("analyst"),
        path,
        json_reply(data(file), content_type),
    );
    let (a, b) = (a.json().expect("JSON"), b.json().expect("JSON"));
    assert_eq!(a, b, "two workers pseudonymize alike");
    for (field, value) in [
        ("driverName", "Erika Mustermann"),
        ("licensePlate", "M-XY 4711"),
        ("email", "erika.mustermann@example.org"),
        ("phone", "+49 170 1234567"),
    ] {
        assert_eq!(a[0][field]["value"], pseudonym(value), "{field}");
    }
    // keyValues and Open311 carry the same people: the same tokens join them.
    let (path, file, content_type) = FORMS[1];
    let kv = exchange(
        &mut first,
        &clock,
        Some("analyst"),
        path,
        json_reply(data(file), content_type),
    );
    assert_eq!(
        kv.json().expect("JSON")[0]["licensePlate"],
        pseudonym("M-XY 4711")
    );
    let (path, file, content_type) = FORMS[3];
    let o311 = exchange(
        &mut second,
        &clock,
        Some("analyst"),
        path,
        json_reply(data(file), content_type),
    );
    let o311 = o311.json().expect("JSON");
    assert_eq!(o311[0]["account_id"], pseudonym("citizen-anna"));
    assert_eq!(o311[0]["email"], pseudonym("jonas.beispiel@example.net"));
}

/// A JSON array of fictional residents, at least `bytes` long.
fn residents(bytes: usize) -> Vec<u8> {
    let mut out = b"[".to_vec();
    let mut i = 0;
    while out.len() < bytes {
        if i > 0 {
            out.push(b',');
        }
        let item = format!(
            r#"{{"id":"urn:ngsi-ld:ParkingSpot:example-city:r{i}","type":"ParkingSpot","driverName":"Erika Mustermann","email":"erika.mustermann@example.org","location":{{"type":"Point","coordinates":[-3.707123,40.415381]}}}}"#
        );
        out.extend_from_slice(item.as_bytes());
        i += 1;
    }
    out.push(b']');
    out
}

/// A JSON document of exactly `bytes` bytes: `["xxxx…"]`.
fn exactly(bytes: usize) -> Vec<u8> {
    let mut out = b"[\"".to_vec();
    out.resize(bytes - 2, b'x');
    out.extend_from_slice(b"\"]");
    out
}

#[test]
fn bodies_over_the_1_mib_bound_are_refused_with_502_and_nothing_of_theirs() {
    let plugin = plugin();
    let clock = Clock::at_unix_secs(1_795_000_000);
    let mut vm = worker(&plugin, &clock, &SharedStore::new());
    let path = "/v2/entities?type=ParkingSpot";
    let big = residents(MIB + MIB / 2);
    let refused = |reply: &ClientResponse, what: &str| {
        assert_eq!(reply.status, 502, "{what}");
        assert!(!reply.reset, "{what}: a problem document, not a reset");
        assert_eq!(
            reply.headers.get("content-type"),
            Some("application/problem+json"),
            "{what}"
        );
        let problem = reply.json().expect("problem JSON");
        assert_eq!(
            problem["type"], "urn:citygate:problem:response-too-large",
            "{what}"
        );
        assert_no_planted(&reply.body_str(), what);
    };
    let declared = Upstream::ok()
        .header("content-type", "application/json")
        .header("content-length", &big.len().to_string())
        .body(big.clone())
        .chunk_size(64 * 1024);
    refused(
        &exchange(&mut vm, &clock, None, path, declared),
        "declared length",
    );
    for chunk in [64 * 1024, 1000, 333_333] {
        let undeclared = json_reply(big.clone(), "application/json").chunk_size(chunk);
        refused(
            &exchange(&mut vm, &clock, None, path, undeclared),
            &format!("chunks of {chunk}"),
        );
    }
    // Small on the wire, over the bound once decoded.
    let bomb = gzip(&residents(3 * MIB));
    assert!(bomb.len() < MIB);
    let zipped = json_reply(bomb, "application/json").header("content-encoding", "gzip");
    refused(
        &exchange(&mut vm, &clock, None, path, zipped),
        "gzip over the bound",
    );

    // The bound itself is inclusive.
    let at_bound = json_reply(exactly(MIB), "application/json").chunk_size(100_000);
    assert_eq!(exchange(&mut vm, &clock, None, path, at_bound).status, 200);
    let over = json_reply(exactly(MIB + 1), "application/json").chunk_size(100_000);
    refused(
        &exchange(&mut vm, &clock, None, path, over),
        "one byte over",
    );
    assert_eq!(vm.metric("citygate_redaction_failed_closed"), Some(6));
}

#[test]
fn a_truncated_body_is_refused_whole() {
    // Depends on the host adding no `content-length` of its own
    // (ARCHITECTURE.md, "Where the wasmtime host differs from Envoy"): the
    // upstream declares a length the body does not have, which the Envoy
    // runner's upstream never does (`e2e_redaction.rs` cuts a reply short on
    // a raw socket instead).
    let plugin = plugin();
    let clock = Clock::at_unix_secs(1_795_000_000);
    let mut vm = worker(&plugin, &clock, &SharedStore::new());
    let payload = data("parking-spots.v2.json");
    for declared in [payload.len() + 1, payload.len() - 1, 10 * payload.len()] {
        let up = json_reply(payload.clone(), "application/json")
            .header("content-length", &declared.to_string())
            .chunk_size(50);
        let reply = exchange(
            &mut vm,
            &clock,
            Some("operator"),
            "/v2/entities?type=ParkingSpot",
            up,
        );
        assert_eq!(reply.status, 502, "declared {declared}");
        assert_eq!(
            reply.json().expect("problem")["detail"],
            "the upstream response body is incomplete"
        );
        assert_no_planted(&reply.body_str(), "a truncated body's reply");
    }
}

#[test]
fn metrics_count_what_was_changed_and_the_log_has_counts_but_no_values() {
    let plugin = plugin();
    let clock = Clock::at_unix_secs(1_795_000_000);
    let mut vm = worker(&plugin, &clock, &SharedStore::new());
    let (path, file, content_type) = FORMS[0];
    let reply = exchange(
        &mut vm,
        &clock,
        Some("analyst"),
        path,
        json_reply(data(file), content_type),
    );
    assert_eq!(reply.status, 200);
    // Upstream headers of the original bytes and of the server never pass.
    let up = json_reply(data(file), content_type)
        .header("server", "city-api/1.0")
        .header("x-powered-by", "demo");
    let reply = exchange(&mut vm, &clock, None, path, up);
    assert_eq!(reply.headers.get("server"), None);
    assert_eq!(reply.headers.get("x-powered-by"), None);
    let broken = json_reply(
        b"[{\"driverName\":\"Erika Mustermann\",".to_vec(),
        "application/json",
    );
    assert_eq!(exchange(&mut vm, &clock, None, path, broken).status, 502);

    assert_eq!(metric(&vm, "citygate_redaction_responses"), 2);
    assert_eq!(metric(&vm, "citygate_redaction_failed_closed"), 1);
    // analyst: 6 hashed (two spot names, plate, driver, phone, e-mail), 11
    // removed (the description and the metadata of changed attributes), 2+2
    // generalized (locations, times); open data: 15 removed by the
    // allowlist, 2+2 generalized.
    assert_eq!(metric(&vm, "citygate_redaction_hashed"), 6);
    assert_eq!(metric(&vm, "citygate_redaction_generalized"), 8);
    assert_eq!(metric(&vm, "citygate_redaction_removed"), 26);
    assert_eq!(
        metric(&vm, "citygate_redaction_fields"),
        metric(&vm, "citygate_redaction_hashed")
            + metric(&vm, "citygate_redaction_generalized")
            + metric(&vm, "citygate_redaction_removed")
            + metric(&vm, "citygate_redaction_masked")
    );

    let lines: Vec<String> = vm.logs().iter().map(|l| l.message.clone()).collect();
    let decisions: Vec<Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect();
    assert_eq!(decisions.len(), 3, "{lines:#?}");
    assert_eq!(
        decisions[0]["redaction"]["profiles"],
        serde_json::json!(["analyst"])
    );
    assert_eq!(
        decisions[0]["redaction"]["counts"],
        serde_json::json!({"generalized": 4, "hashed": 6, "removed": 11})
    );
    assert_eq!(
        decisions[1]["redaction"]["profiles"],
        serde_json::json!(["open-data"])
    );
    assert_eq!(
        decisions[1]["redaction"]["counts"],
        serde_json::json!({"generalized": 4, "removed": 15})
    );
    assert_eq!(decisions[2]["status"], 502);
    for line in &lines {
        assert_no_planted(line, "a log line");
        assert!(
            !line.contains("pn_k2026:"),
            "a pseudonym in the log: {line}"
        );
    }
}
