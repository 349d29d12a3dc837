//! Opaque tokens end to end: the release `.wasm` in a real Envoy (one
//! worker, so its cache is the only one) calling the demo authorization
//! server on loopback through the bootstrap's `introspection` cluster, with
//! the plugin configuration of `policies/attacks/introspection.config.json`.
//! The scenario file runs the answers through Envoy too; this test counts
//! what reached the server: one RFC 7662 call per token, authenticated as
//! the gateway's client, a POST body held while its token is checked, a
//! hanging server answered with 503 when Envoy's callout times out, and no
//! token or client secret in Envoy's logs.

use anyhow::Result;
use citygate_host::demo_api::{DemoApi, ScriptedReply};
use citygate_host::envoy::{EnvoyProcess, Gateway};
use citygate_host::introspection::INTROSPECTION_PATH;
use citygate_host::wasm_build::{filter_wasm, workspace_root};

use crate::support::{bearer, demo_credentials};

const SECRET: &str = "demo-only-introspection-secret-change-me";

#[test]
fn the_gateway_asks_the_authorization_server_once_per_token_and_fails_closed() -> Result<()> {
    let credentials = demo_credentials();
    let spec = credentials.introspection().clone();
    let api = DemoApi::start()?;
    api.serve_introspection(spec.clone());
    api.script(Some(ScriptedReply {
        status: 200,
        headers: vec![("content-type".into(), "application/json".into())],
        body: b"{}".to_vec(),
        ..ScriptedReply::default()
    }));
    let config = std::fs::read_to_string(
        workspace_root().join("policies/attacks/introspection.config.json"),
    )?;
    let gateway = Gateway::new(filter_wasm()?, config, api.port)
        .concurrency(1)
        .env("INTROSPECTION_CLIENT_SECRET", SECRET);
    let envoy = EnvoyProcess::start(&gateway)?;
    let token = |name: &str| spec.token(name).unwrap_or_default().to_string();

    let citizen = token("citizen");
    for _ in 0..3 {
        let reply = envoy.get(
            "/open311/v2/requests.json",
            &[("authorization", &bearer(&citizen))],
        )?;
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    assert_eq!(api.count(INTROSPECTION_PATH), 1, "one call, then the cache");
    let call = api
        .last(INTROSPECTION_PATH)
        .expect("the call reached the server");
    assert_eq!(call.method, "POST");
    assert_eq!(
        call.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert!(call
        .header("authorization")
        .is_some_and(|v| v.starts_with("Basic ")));
    assert_eq!(
        String::from_utf8_lossy(&call.body),
        format!("token={citizen}&token_type_hint=access_token")
    );
    let upstream = api.last("/open311").expect("forwarded");
    assert_eq!(upstream.header("authorization"), None);
    assert_eq!(
        upstream.header("x-citygate-auth-kind"),
        Some("opaque_token")
    );

    // A chunked POST waits for its token's answer with its body held.
    let body = br#"{"id":"urn:ngsi-ld:Vehicle:bus-17","type":"Vehicle","speed":31}"#;
    let operator = token("operator");
    let reply = envoy.request_in_chunks(
        "POST",
        "/v2/entities",
        &[
            ("authorization", &bearer(&operator)),
            ("content-type", "application/json"),
        ],
        body,
        8,
    )?;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        api.last("/v2/entities").map(|r| r.body),
        Some(body.to_vec())
    );
    assert_eq!(api.count(INTROSPECTION_PATH), 2);

    // The server hangs: Envoy's callout times out (timeout_ms 500), 503.
    let reply = envoy.get(
        "/open311/v2/requests.json",
        &[("authorization", &bearer(&token("hanging")))],
    )?;
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert_eq!(reply.header("retry-after"), Some("1"));
    assert!(
        reply.body.contains("introspection-unavailable"),
        "{}",
        reply.body
    );
    // An unknown token is inactive.
    let reply = envoy.get(
        "/open311/v2/requests.json",
        &[("authorization", "Bearer cgo_never_issued_1234")],
    )?;
    assert_eq!(reply.status, 401);
    assert_eq!(
        api.count("/open311"),
        3,
        "only the citizen's requests went upstream"
    );
    assert_eq!(envoy.metric("citygate_introspection_calls")?, 4);
    assert_eq!(envoy.metric("citygate_introspection_failed")?, 1);
    assert_eq!(envoy.metric("citygate_introspection_cache_hit")?, 2);

    let log = envoy.log();
    let access = std::fs::read_to_string(envoy.run_dir().join("access.log")).unwrap_or_default();
    for (name, text) in [("Envoy log", &log), ("access log", &access)] {
        assert!(!text.contains("cgo_"), "the {name} holds an opaque token");
        assert!(!text.contains(SECRET), "the {name} holds the client secret");
    }
    Ok(())
}
