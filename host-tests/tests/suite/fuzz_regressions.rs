//! The fuzz corpora and crash reproducers as regression tests, on stable.
//!
//! Every file under `filter/fuzz/{seeds,corpus,regressions}/<target>/` and
//! `host-tests/fuzz/{seeds,corpus,regressions}/wasm_gateway/` goes through
//! the very driver its cargo fuzz target runs (the drivers are included
//! here by path), natively or through the release .wasm in wasmtime. A
//! driver panics on a finding; each test names every file that did.
//!
//! `seeds/` are written by `write_seed_corpus` below (ignored; run it to
//! regenerate them: the demo tokens in them are minted for
//! `drivers::NOW`), `corpus/` is what fuzzing found worth keeping
//! (minimized with `cargo fuzz cmin`), `regressions/` holds reproducers
//! of fixed crashes. See SECURITY.md "Fuzzing".

use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use citygate_host::scenario::credentials::Tamper;
use citygate_host::wasm_build::workspace_root;

use crate::support::{demo_credentials, get_with_bearer};
use crate::{drivers, wasm_driver};

const KINDS: &[&str] = &["seeds", "corpus", "regressions"];

/// Inputs of one target: (kind, file), sorted.
fn inputs(crate_dir: &str, target: &str) -> Vec<(&'static str, PathBuf)> {
    let mut files = Vec::new();
    for kind in KINDS {
        let dir = workspace_root().join(crate_dir).join(kind).join(target);
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        let mut found: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        found.sort();
        files.extend(found.into_iter().map(|p| (*kind, p)));
    }
    files
}

/// Runs every input through `driver`; fails naming each input that panicked.
/// `min_seeds` guards against a corpus that silently went missing.
fn replay(crate_dir: &str, target: &str, min_seeds: usize, driver: impl Fn(&str, &[u8])) {
    let files = inputs(crate_dir, target);
    let seeds = files.iter().filter(|(k, _)| *k == "seeds").count();
    assert!(
        seeds >= min_seeds,
        "{crate_dir}/seeds/{target}: {seeds} files, expected at least {min_seeds}"
    );
    let mut failures = Vec::new();
    for (kind, path) in &files {
        let data = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if catch_unwind(AssertUnwindSafe(|| driver(kind, &data))).is_err() {
            failures.push(path.display().to_string());
        }
    }
    assert!(
        failures.is_empty(),
        "{target}: {} of {} inputs are findings:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
    eprintln!("{target}: {} inputs replayed", files.len());
}

#[test]
fn config_inputs_replay_clean() {
    replay("filter/fuzz", "config", 3, |_, d| drivers::config(d));
}

#[test]
fn jwt_inputs_replay_clean() {
    replay("filter/fuzz", "jwt", 20, |_, d| drivers::jwt(d));
}

#[test]
fn request_inputs_replay_clean() {
    replay("filter/fuzz", "request", 10, |_, d| drivers::request(d));
}

#[test]
fn redact_inputs_replay_clean() {
    replay("filter/fuzz", "redact", 10, |_, d| drivers::redact(d));
}

/// Corpus files share a VM the way the fuzz target does; a reproducer gets
/// a VM of its own, as when it was found.
#[test]
fn wasm_gateway_inputs_replay_clean() {
    replay("host-tests/fuzz", "wasm_gateway", 10, |kind, d| {
        if kind == "regressions" {
            wasm_driver::wasm_gateway_fresh(d);
        } else {
            wasm_driver::wasm_gateway(d);
        }
    });
}

// ---- the drivers check what they claim ------------------------------------

#[test]
fn drivers_flag_broken_invariants() {
    let flagged = |f: &dyn Fn()| catch_unwind(AssertUnwindSafe(f)).is_err();
    assert!(flagged(&|| drivers::check_normalized_path("/a/../b")));
    assert!(flagged(&|| drivers::check_normalized_path("/a//b")));
    assert!(flagged(&|| drivers::check_normalized_path("a/b")));
    assert!(flagged(&|| drivers::check_normalized_path("/a/\u{7}")));
    assert!(!flagged(&|| drivers::check_normalized_path("/a/b/")));
    assert!(!flagged(&|| drivers::check_normalized_path("/")));

    // The minimization bound: JSON, empty only for an empty upstream body,
    // no deeper and no more values than the upstream's document.
    let upstream = serde_json::json!({"a": [1, {"b": 2}]});
    let body = upstream.to_string();
    let check = |minimized: &'static str| {
        let (body, upstream) = (body.clone(), upstream.clone());
        move || {
            drivers::check_minimized(Some(body.as_bytes()), Some(&upstream), minimized.as_bytes())
        }
    };
    assert!(!flagged(&check(
        r#"{"a":[1,{"b":"pn_k2026:0123456789abcdef"}]}"#
    )));
    assert!(!flagged(&check(r#"{"a":null}"#)));
    assert!(flagged(&check(r#"{"a":[1,{"b":[2]}]}"#)));
    assert!(flagged(&check(r#"{"a":[1,{"b":2,"c":3}]}"#)));
    assert!(flagged(&check(r#"{"a":"#)));
    assert!(flagged(&check("")));
    assert!(flagged(&|| drivers::check_minimized(
        Some(b""),
        None,
        b"{}"
    )));

    // A plant left where a profile applied removes it; not where none does,
    // nor where the fuzzed document held the value itself.
    let citizen = |plant: &drivers::Plant| plant.removed_by.contains(&"citizen");
    let nobody = |_: &drivers::Plant| false;
    let leaked = br#"{"x":"Plantedsurname"}"#;
    assert!(flagged(&|| {
        drivers::check_plants_absent(None, leaked, &citizen, &"citizen")
    }));
    assert!(!flagged(&|| {
        drivers::check_plants_absent(None, leaked, &nobody, &"emergency")
    }));
    let own = serde_json::json!({"id": "Plantedsurname"});
    assert!(!flagged(&|| {
        drivers::check_plants_absent(Some(&own), leaked, &citizen, &"citizen")
    }));
}

/// The redaction driver plants every value where its profiles look, and the
/// city pack removes them: the demo data under each profile passes.
#[test]
fn redaction_driver_plants_where_the_profiles_must_remove() {
    let mut document =
        serde_json::json!([{"id": "a", "location": {"type": "Point"}}, [{"id": "b"}]]);
    drivers::plant(&mut document, true);
    let text = document.to_string();
    for plant in drivers::PLANTS {
        let found = text.matches(plant.value).count();
        // Everywhere: the two entities and the location; else the entities.
        let expected = if plant.everywhere { 3 } else { 2 };
        assert_eq!(found, expected, "{} in {text}", plant.field);
    }
    let o311 = fs::read(
        workspace_root().join("host-tests/gateway/src/demo_api/data/open311_requests.json"),
    )
    .expect("data");
    for mask in 0..32u8 {
        let mut input = vec![mask, 0];
        input.extend(&o311);
        drivers::redact(&input);
    }
}

#[test]
fn message_format_parses_pseudo_headers_directives_and_body() {
    let m = drivers::Message::parse(
        b"POST /open311/v2/requests.json\n:authority: x\nx-api-key: k:v\n@hops: 2\n\n{\"a\":1}\n\nrest",
    );
    assert_eq!(
        m.method_and_target(),
        ("POST".into(), "/open311/v2/requests.json".into())
    );
    assert_eq!(
        m.headers,
        vec![
            (":authority".into(), "x".into()),
            ("x-api-key".into(), "k:v".into())
        ]
    );
    assert_eq!(m.directive("hops"), Some("2"));
    assert_eq!(m.body, b"{\"a\":1}\n\nrest");
    let raw = m.raw_request();
    let authority: Vec<_> = raw
        .headers
        .iter()
        .filter(|(n, _)| n == ":authority")
        .collect();
    assert_eq!(
        authority.len(),
        1,
        "an explicit pseudo-header replaces the default"
    );
}

/// The HS256 helper signs what the filter verifies (else mode 1 of the jwt
/// driver would only ever exercise the signature check).
#[test]
fn driver_hs256_tokens_verify() {
    use citygate_core::auth::jwt::{verify_token, KeySet, VerifyOptions};
    let token = drivers::hs256_token(
        r#"{"alg":"HS256","typ":"JWT"}"#,
        &format!(r#"{{"sub":"s","exp":{}}}"#, drivers::NOW + 60),
    );
    let secret = drivers::demo_env("CITYGATE_PARTNER_HS256_SECRET").expect("demo secret");
    let keys = KeySet::from_hmac_secret(secret.as_bytes()).expect("key");
    let claims = verify_token(&token, &keys, &VerifyOptions::default(), drivers::NOW)
        .expect("the driver's token verifies");
    assert_eq!(claims["sub"], "s");
}

/// A citizen's valid token reaches the upstream through the .wasm and the
/// open-data body comes back minimized: the wasm driver gets past auth.
#[test]
fn wasm_driver_reaches_upstream_with_a_demo_token() {
    let token = demo_credentials()
        .mint("citizen", Tamper::None, drivers::NOW as i64)
        .expect("mint");
    let mut vm = wasm_driver::city_vm();
    let request = get_with_bearer("/open311/v2/requests/EX-2025-000102.json", &token);
    let mut exchange = vm.send(request).expect("request phase");
    assert!(
        matches!(
            exchange.outcome(),
            citygate_host::RequestOutcome::Forwarded(_)
        ),
        "{:?}",
        exchange.outcome()
    );
    let reply = exchange
        .respond(
            citygate_host::Upstream::ok()
                .json(r#"{"service_request_id":"1","email":"a@b.example"}"#),
        )
        .expect("response phase");
    assert_eq!(reply.status, 200, "{}", reply.body_str());
    assert!(
        !reply.body_str().contains("a@b.example"),
        "{}",
        reply.body_str()
    );
}

// ---- seed corpora -----------------------------------------------------------

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    fs::create_dir_all(dir).expect("mkdir");
    fs::write(dir.join(name), bytes).expect("write seed");
}

/// Regenerates `seeds/`: `cargo test -p citygate-host --test suite
/// -- --ignored fuzz_regressions::write_seed_corpus`.
#[test]
#[ignore = "writes the committed seed corpora"]
fn write_seed_corpus() {
    let root = workspace_root();
    let filter_seeds = root.join("filter/fuzz/seeds");
    let wasm_seeds = root.join("host-tests/fuzz/seeds/wasm_gateway");
    let credentials = demo_credentials();
    let now = drivers::NOW as i64;
    let mint = |name: &str, tamper: Tamper| credentials.mint(name, tamper, now).expect("mint");

    // config: the city pack and the scenario configurations.
    let config = filter_seeds.join("config");
    write(
        &config,
        "city-gateway.json",
        drivers::CITY_CONFIG.as_bytes(),
    );
    for entry in fs::read_dir(root.join("policies/scenarios")).expect("scenarios") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        if name.ends_with(".config.json") {
            write(&config, &name, &fs::read(&path).expect("read"));
        }
    }
    write(
        &config,
        "minimal.json",
        br#"{"routes":[{"name":"r","match":{"path_prefix":"/"}}]}"#,
    );

    // jwt: tokens (mode 0), header+claims to sign (1), JWKS (2), PEM (3).
    let jwt = filter_seeds.join("jwt");
    let tampers = [
        ("ok", Tamper::None),
        ("alg_none", Tamper::AlgNone),
        ("strip_signature", Tamper::StripSignature),
        ("payload", Tamper::Payload),
        ("hs_with_public_key", Tamper::HsWithPublicKey),
        ("embedded_jwk", Tamper::EmbeddedJwk),
        ("garbage", Tamper::Garbage),
        ("expired", Tamper::Expired),
        ("no_exp", Tamper::NoExp),
        ("unknown_kid", Tamper::UnknownKid),
        ("wrong_issuer", Tamper::WrongIssuer),
    ];
    for name in [
        "citizen",
        "operator",
        "analyst",
        "emergency",
        "citizen-ps256",
        "partner",
    ] {
        for (label, tamper) in tampers {
            // Not every damage applies to every key (HS256-with-public-key
            // needs an RSA key the minter can read as public).
            let Ok(token) = credentials.mint(name, tamper, now) else {
                continue;
            };
            let mut bytes = vec![0u8];
            bytes.extend(token.as_bytes());
            write(&jwt, &format!("token-{name}-{label}"), &bytes);
        }
    }
    let exp = drivers::NOW + 3600;
    for (label, header, claims) in [
        (
            "ok",
            r#"{"alg":"HS256","typ":"JWT"}"#,
            format!(
                r#"{{"iss":"https://partner.city.example","aud":"citygate","sub":"p","exp":{exp}}}"#
            ),
        ),
        (
            "aud-list",
            r#"{"alg":"HS256","typ":"JWT","kid":"k"}"#,
            format!(
                r#"{{"iss":"https://partner.city.example","aud":["x","citygate"],"exp":{exp},"nbf":1}}"#
            ),
        ),
        (
            "crit",
            r#"{"alg":"HS256","crit":["b64"],"b64":false}"#,
            format!(r#"{{"exp":{exp}}}"#),
        ),
        (
            "float-exp",
            r#"{"alg":"HS256","typ":"application/jwt"}"#,
            r#"{"iss":"https://partner.city.example","aud":"citygate","exp":1.79e9,"iat":-1e308}"#
                .to_string(),
        ),
        (
            "dup",
            r#"{"alg":"HS256","alg":"none"}"#,
            r#"{"sub":1,"sub":"a"}"#.to_string(),
        ),
    ] {
        write(
            &jwt,
            &format!("signed-{label}"),
            format!("\x01{header}\n{claims}").as_bytes(),
        );
    }
    let jwks = credentials.jwks("city-idp", None).expect("jwks");
    write(&jwt, "jwks-city-idp", format!("\x02{jwks}").as_bytes());
    write(
        &jwt,
        "jwks-oct",
        b"\x02{\"keys\":[{\"kty\":\"oct\",\"k\":\"c2VjcmV0\",\"alg\":\"HS256\",\"kid\":\"a\"}]}",
    );
    for (i, pem) in [
        "demo-rsa-2048.public.pem",
        "demo-ec-p256.cert.pem",
        "demo-ed25519.public.pem",
    ]
    .iter()
    .enumerate()
    {
        let text = fs::read(root.join("filter/core/src/auth/testdata").join(pem)).expect("pem");
        let mut bytes = vec![3u8];
        bytes.extend(text);
        write(&jwt, &format!("pem-{i}"), &bytes);
    }

    // request and wasm_gateway: the same requests; the wasm ones also get
    // an upstream reply.
    let api_key = credentials
        .api_key("parking-app")
        .expect("api key")
        .to_string();
    let bearer = |name: &str| format!("authorization: Bearer {}", mint(name, Tamper::None));
    let v2 =
        fs::read_to_string(root.join("host-tests/gateway/src/demo_api/data/ngsi_v2_entities.json"))
            .expect("data");
    let ld =
        fs::read_to_string(root.join("host-tests/gateway/src/demo_api/data/ngsi_ld_entities.json"))
            .expect("data");
    let o311 =
        fs::read_to_string(root.join("host-tests/gateway/src/demo_api/data/open311_requests.json"))
            .expect("data");
    let json_reply =
        |body: &str| format!("200\ncontent-type: application/json\nserver: x\n\n{body}");
    let requests: Vec<(&str, String, String)> = vec![
        ("anon-open-data", "GET /v2/entities?type=WasteContainer&options=keyValues\n\n".into(), json_reply(&v2)),
        ("anon-ld", "GET /ngsi-ld/v1/entities?type=ParkingSpot\naccept: application/ld+json\n\n".into(), format!("200\ncontent-type: application/ld+json\n\n{ld}")),
        ("anon-person", "GET /v2/entities?type=Person\n\n".into(), json_reply(&v2)),
        ("dot-segments", "GET /v2/./entities/../entities//urn:ngsi-ld:Vehicle:x?type=Vehicle\n\n".into(), json_reply("{}")),
        ("encoded", "GET /%76%32/entities/%2e%2e/%61dmin\n\n".into(), json_reply("{}")),
        ("encoded-slash", "GET /v2%2Fentities\n\n".into(), json_reply("{}")),
        ("fragment", "GET /v2/entities#x\n\n".into(), json_reply("{}")),
        ("api-key", format!("GET /v2/entities?type=Vehicle\nx-api-key: {api_key}\n\n"), json_reply(&v2)),
        ("api-key-revoked", format!("GET /v2/entities\nx-api-key: {}\n\n", credentials.api_key("revoked-app").expect("key")), json_reply("[]")),
        ("operator", format!("GET /v2/entities?type=Vehicle\n{}\n\n", bearer("operator")), json_reply(&v2)),
        ("analyst", format!("GET /open311/v2/requests.json\n{}\n\n", bearer("analyst")), json_reply(&o311)),
        ("emergency", format!("GET /v2/entities\n{}\nx-access-reason: fire at 3rd st\n\n", bearer("emergency")), json_reply(&v2)),
        ("emergency-no-reason", format!("GET /v2/entities\n{}\n\n", bearer("emergency")), json_reply(&v2)),
        ("citizen-item", format!("GET /open311/v2/requests/EX-2025-000102.json\n{}\n\n", bearer("citizen")), json_reply(&o311)),
        ("citizen-list", format!("GET /open311/v2/requests.json?account_id=citizen-anna\n{}\n\n", bearer("citizen")), json_reply(&o311)),
        ("citizen-post-form", format!("POST /open311/v2/requests.json\n{}\ncontent-type: application/x-www-form-urlencoded\n@chunk: 7\n\nservice_code=001&account_id=citizen-anna&description=pothole+on+main", bearer("citizen")), "201\ncontent-type: application/json\n\n[{\"service_request_id\":\"EX-1\"}]".into()),
        ("citizen-post-json", format!("POST /open311/v2/requests.json\n{}\ncontent-type: application/json\n\n{{\"account_id\":\"citizen-anna\",\"service_code\":\"001\"}}", bearer("citizen")), json_reply("[]")),
        ("partner", format!("GET /open311/v2/requests/EX-2025-000102.json\n{}\n\n", bearer("partner")), json_reply(&o311)),
        ("spoofed-identity", "GET /v2/entities?type=WasteContainer\nx-citygate-subject: admin\nx-citygate-roles: city-operator\nx-http-method-override: DELETE\n\n".into(), json_reply(&v2)),
        ("xff-hops", "GET /v2/entities?type=WasteContainer\nx-forwarded-for: 198.51.100.1, 203.0.113.9\n@hops: 1\n@source: 10.0.0.1:4000\n\n".into(), json_reply(&v2)),
        ("gzip-reply", format!("GET /v2/entities?type=Vehicle\n{}\n\n", bearer("operator")), "200\ncontent-type: application/json\ncontent-encoding: gzip\n\n\u{1f}".into()),
        ("malformed-reply", format!("GET /v2/entities?type=Vehicle\n{}\n\n", bearer("operator")), "200\ncontent-type: application/json\n@chunk: 3\n\n{\"id\": [1, 2".into()),
        ("no-route", "DELETE /admin\n\n".into(), json_reply("{}")),
    ];
    let request_dir = filter_seeds.join("request");
    for (name, request, reply) in &requests {
        write(&request_dir, name, request.as_bytes());
        write(
            &wasm_seeds,
            name,
            format!("{}\n---\n{reply}", request.trim_end_matches('\n')).as_bytes(),
        );
    }

    // redact: the demo data under each profile and coding.
    let redact = filter_seeds.join("redact");
    for (name, body) in [("v2", &v2), ("ld", &ld), ("o311", &o311)] {
        for (mask, coding) in [
            (0xffu8, 0u8),
            (0x01, 0),
            (0x02, 2),
            (0x04, 3),
            (0x08, 0),
            (0x10, 0),
            (0x20, 2),
        ] {
            let mut bytes = vec![mask, coding];
            bytes.extend(body.as_bytes());
            write(&redact, &format!("{name}-{mask:02x}-{coding}"), &bytes);
        }
    }
    write(&redact, "scalars", b"\xff\x00[1,\"a@b.example\",null,true,-0.0,1e400,\"DE89370400440532013000\",{\"email\":{\"email\":[]}}]");
    // Contexts for the planted values: nested entities, NGSI attributes
    // with object members, an allowlisted subtree.
    for (name, mask, body) in [
        (
            "plant-attributes",
            0x1bu8,
            r#"[[{"name":{"type":{"x":{}},"value":1,"observedAt":{}},"location":{"type":"Point","coordinates":[11.5,48.1]},"email":{"type":"Text","value":"x"}}]]"#,
        ),
        (
            "plant-open-data",
            0x08,
            r#"{"location":{"nested":{}},"status":{"type":"Property","value":"free"},"x":[{}]}"#,
        ),
    ] {
        let mut bytes = vec![mask, 0];
        bytes.extend(body.as_bytes());
        write(&redact, name, &bytes);
    }
}
