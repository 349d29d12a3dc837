//! The Rego policy stage in a real Envoy, for what depends on Envoy itself:
//! `time.now_ns` reads Envoy's clock (a policy compares it with a token's
//! `exp`), the emergency access reason reaches the decision-log line, and
//! Envoy's log never holds the policy input (tokens, bodies, subjects).
//! The scenario files run in Envoy too (tests/e2e_scenarios.rs).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use citygate_host::cli::{CITY_CONFIG, CITY_ENV, DEFAULT_CREDENTIALS};
use citygate_host::demo_api::{DemoApi, ScriptedReply};
use citygate_host::env_file::read_env_file;
use citygate_host::envoy::{EnvoyProcess, Gateway};
use citygate_host::scenario::credentials::{unix_now, Credentials, Tamper};
use citygate_host::wasm_build::{filter_wasm, workspace_root};
use serde_json::json;

use crate::support::bearer;

/// Bound for conditions that need Envoy to flush its log; the tests wait
/// for conditions, never for durations.
const PATIENCE: Duration = Duration::from_secs(20);

fn unix_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn answering_json(api: &DemoApi, status: u16, body: serde_json::Value) {
    api.script(Some(ScriptedReply {
        status,
        headers: vec![("content-type".into(), "application/json".into())],
        body: body.to_string().into_bytes(),
        ..ScriptedReply::default()
    }));
}

/// Waits until Envoy's log contains `needle`; returns the log.
fn log_with(envoy: &EnvoyProcess, needle: &str) -> String {
    let start = Instant::now();
    loop {
        let log = envoy.log();
        if log.contains(needle) || start.elapsed() > PATIENCE {
            return log;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A token the policy decodes itself (no signature check: only the clock
/// is under test).
fn unsigned_token(exp: i64) -> String {
    let part = |v: serde_json::Value| URL_SAFE_NO_PAD.encode(v.to_string());
    format!(
        "{}.{}.{}",
        part(json!({"alg": "HS256", "typ": "JWT"})),
        part(json!({"sub": "clock-test", "exp": exp})),
        URL_SAFE_NO_PAD.encode(b"not-checked")
    )
}

const CLOCK_POLICY: &str = r#"package envoy.authz
import rego.v1
default allow := false
payload := p if {
	[_, token] := split(input.attributes.request.http.headers.authorization, " ")
	[_, p, _] := io.jwt.decode(token)
}
allow := {"allowed": true, "response_headers_to_add": {"x-policy-now": sprintf("%d", [time.now_ns()])}} if {
	time.now_ns() < payload.exp * 1000000000
}
"#;

#[test]
fn time_now_ns_in_envoy_is_the_real_clock() -> Result<()> {
    let api = DemoApi::start()?;
    answering_json(&api, 200, json!({}));
    let config = json!({
        "routes": [{"name": "api", "match": {"path_prefix": "/"}, "auth": {"anonymous": true}}],
        "policy": {"modules": {"clock.rego": CLOCK_POLICY}}
    });
    let envoy = EnvoyProcess::start(&Gateway::new(filter_wasm()?, config.to_string(), api.port))?;

    let valid = bearer(&unsigned_token(unix_now() + 600));
    let before = unix_nanos();
    let reply = envoy.get("/people", &[("authorization", &valid)])?;
    let after = unix_nanos();
    assert_eq!(reply.status, 200, "{}", reply.body);
    let now: u128 = reply
        .header("x-policy-now")
        .context("the policy's header")?
        .parse()?;
    assert!(
        (before..=after).contains(&now),
        "time.now_ns() = {now}, outside the request's [{before}, {after}]"
    );

    let expired = bearer(&unsigned_token(unix_now() - 600));
    let reply = envoy.get("/people", &[("authorization", &expired)])?;
    assert_eq!(reply.status, 403, "{}", reply.body);
    Ok(())
}

#[test]
fn the_emergency_reason_is_logged_and_the_policy_input_never_is() -> Result<()> {
    let root = workspace_root();
    let credentials = Credentials::load(&root.join(DEFAULT_CREDENTIALS))?;
    let api = DemoApi::start_with_jwks(credentials.jwks("city-idp", None)?)?;
    answering_json(&api, 200, json!({"service_request_id": "EX-2"}));
    let mut gateway = Gateway::new(
        filter_wasm()?,
        std::fs::read_to_string(root.join(CITY_CONFIG))?,
        api.port,
    );
    for (name, value) in read_env_file(&root.join(CITY_ENV))? {
        gateway = gateway.env(name, value);
    }
    let envoy = EnvoyProcess::start(&gateway)?;

    let emergency = credentials.mint("emergency", Tamper::None, unix_now())?;
    let citizen = credentials.mint("citizen", Tamper::None, unix_now())?;

    let reason = "fire at Main St 5, unit 7";
    let reply = envoy.get(
        "/open311/v2/requests/EX-2.json",
        &[
            ("authorization", &bearer(&emergency)),
            ("x-access-reason", reason),
        ],
    )?;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let reply = envoy.get(
        "/open311/v2/requests/EX-2.json",
        &[("authorization", &bearer(&emergency))],
    )?;
    assert_eq!(reply.status, 400, "{}", reply.body);

    // The policy reads these bodies; their values must stay out of the log.
    let filed = r#"{"account_id":"citizen-anna","description":"call back on +49 170 5550199"}"#;
    let json_headers = [
        ("authorization", bearer(&citizen)),
        ("content-type", "application/json".to_string()),
    ];
    let headers: Vec<(&str, &str)> = json_headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let reply = envoy.request(
        "POST",
        "/open311/v2/requests.json",
        &headers,
        filed.as_bytes(),
    )?;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let broken = br#"{"account_id":"citizen-anna","description":"my IBAN DE02120300000000202051"#;
    let reply = envoy.request("POST", "/open311/v2/requests.json", &headers, broken)?;
    assert_eq!(reply.status, 403, "{}", reply.body);

    let logged_reason = format!(r#""reason":"emergency access: {reason}""#);
    let log = log_with(&envoy, &logged_reason);
    assert!(
        log.contains(&logged_reason),
        "no decision line with the reason:\n{log}"
    );
    assert!(
        log.contains(r#""reason":"emergency access requires an x-access-reason header""#),
        "no decision line for the refusal"
    );
    assert!(log.contains(r#""reason":"request body is not valid JSON""#));
    for secret in [
        emergency.as_str(),
        citizen.as_str(),
        citizen.rsplit('.').next().unwrap_or_default(),
        "+49 170 5550199",
        "DE02120300000000202051",
        "citizen-anna",
        "dispatcher-emil",
    ] {
        assert!(!log.contains(secret), "Envoy's log holds `{secret}`");
    }
    Ok(())
}
