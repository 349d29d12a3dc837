//! Authentication end to end: the release `.wasm` in a real Envoy (two
//! workers) with the demo city API behind it, which also serves the JWKS at
//! `/.well-known/jwks.json` (the bootstrap's `jwks` cluster). The plugin
//! configuration is the auth scenario's (`policies/scenarios/auth.config.json`),
//! with the remote-key timings some tests need changed in code.
//!
//! Covered here (the scenario file covers the per-token cases in Envoy too):
//! the first request waiting for the key set, the endpoint failing after a
//! first fetch, rotation through the unknown-`kid` refetch, the 503 when no
//! keys come, and that neither Envoy's log nor its access log ever holds a
//! token or an API key.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use citygate_host::demo_api::{DemoApi, JwksMode, ScriptedReply};
use citygate_host::envoy::{EnvoyProcess, Gateway, HttpReply};
use citygate_host::scenario::credentials::{unix_now, Credentials, Tamper};
use citygate_host::wasm_build::{filter_wasm, workspace_root};
use serde_json::Value;

use crate::support::{bearer, demo_credentials, eventually, log_tail};

const JWKS_PATH: &str = "/.well-known/jwks.json";
const PUBLISHED: [&str; 4] = [
    "demo-rs256-2026",
    "demo-ps256-2026",
    "demo-es256-2026",
    "demo-eddsa-2026",
];
/// Upper bound for conditions that need Envoy's ticks to pass (a loaded
/// machine is slow); the tests wait for conditions, never for durations.
const PATIENCE: Duration = Duration::from_secs(20);

/// The auth scenario's configuration with the remote key settings changed.
fn config(remote: &[(&str, u64)]) -> Result<String> {
    let path = workspace_root().join("policies/scenarios/auth.config.json");
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    let settings = config
        .pointer_mut("/auth/jwt/providers/0/keys/remote")
        .and_then(Value::as_object_mut)
        .context("the city-idp provider has remote keys")?;
    for (name, value) in remote {
        settings.insert((*name).to_string(), Value::from(*value));
    }
    Ok(config.to_string())
}

struct Rig {
    // Field order: Envoy stops before its upstream does.
    envoy: EnvoyProcess,
    api: DemoApi,
    credentials: Credentials,
    /// Every token and key sent, to prove no log holds one.
    secrets: Vec<String>,
}

impl Rig {
    fn start(config: String, jwks_kids: &[&str], mode: JwksMode) -> Result<Self> {
        let credentials = demo_credentials();
        let api = DemoApi::start_with_jwks(credentials.jwks("city-idp", Some(jwks_kids))?)?;
        api.jwks().set_mode(mode);
        // Every path answers 200 {} (the JWKS excepted).
        api.script(Some(ScriptedReply {
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
            body: b"{}".to_vec(),
            ..ScriptedReply::default()
        }));
        let gateway = Gateway::new(filter_wasm()?, config, api.port)
            .concurrency(2)
            .env("CITYGATE_LOG_KEY", "demo-only-decision-log-key-change-me")
            .env(
                "PARTNER_HS256_SECRET",
                "demo-only-hs256-secret-change-me-0123456789",
            );
        let envoy = EnvoyProcess::start(&gateway)?;
        Ok(Self {
            envoy,
            api,
            credentials,
            secrets: Vec::new(),
        })
    }

    fn token(&mut self, name: &str, tamper: Tamper) -> Result<String> {
        let token = self.credentials.mint(name, tamper, unix_now())?;
        self.secrets.push(token.clone());
        Ok(token)
    }

    fn bearer(&self, path: &str, token: &str) -> Result<HttpReply> {
        self.envoy.get(path, &[("authorization", &bearer(token))])
    }

    fn jwks_fetches(&self) -> usize {
        self.api.count(JWKS_PATH)
    }

    fn log_tail(&self) -> String {
        log_tail(&self.envoy, 40)
    }

    /// The upstream's copy of the last request to `path`.
    fn upstream_header(&self, path: &str, name: &str) -> Option<String> {
        self.api
            .last(path)
            .and_then(|r| r.header(name).map(str::to_owned))
    }

    /// Envoy's log and access log hold none of the tokens or keys sent.
    fn assert_no_secret_logged(&self) -> Result<()> {
        let log = self.envoy.log();
        let access =
            std::fs::read_to_string(self.envoy.run_dir().join("access.log")).unwrap_or_default();
        for secret in &self.secrets {
            // The last segment alone (a signature) must not appear either.
            let tail = secret.rsplit('.').next().unwrap_or(secret);
            for (name, text) in [("Envoy log", &log), ("access log", &access)] {
                assert!(
                    !text.contains(secret.as_str()),
                    "the {name} holds a credential"
                );
                assert!(
                    tail.len() < 16 || !text.contains(tail),
                    "the {name} holds a token signature"
                );
            }
        }
        Ok(())
    }
}

fn www_authenticate(reply: &HttpReply) -> &str {
    reply.header("www-authenticate").unwrap_or_default()
}

#[test]
fn the_first_request_waits_for_the_key_set_and_every_algorithm_family_is_accepted() -> Result<()> {
    // No keys can arrive until the endpoint comes up: the first request is
    // sent while the gateway has none, and must wait rather than fail.
    let mut rig = Rig::start(
        config(&[("max_wait_ms", 15_000)])?,
        &PUBLISHED,
        JwksMode::Unavailable,
    )?;
    eventually(PATIENCE, "a failed first fetch", || {
        Ok((rig.envoy.metric("citygate_jwks_fetch_failed")? >= 1).then_some(()))
    })?;
    assert_eq!(rig.envoy.metric("citygate_jwks_fetched")?, 0);
    let citizen = rig.token("citizen", Tamper::None)?;
    let request = {
        let url = rig.envoy.url("/v2/entities");
        let header = bearer(&citizen);
        std::thread::spawn(move || {
            ureq::get(&url)
                .header("authorization", &header)
                .config()
                .http_status_as_error(false)
                .build()
                .call()
                .map(|r| r.status().as_u16())
        })
    };
    // The keys are served only once Envoy holds the request open: a filter
    // that answered 503 at once has no open request to show (and its 503
    // fails the status check below), however slow the machine.
    eventually(
        PATIENCE,
        "the first request held open by the gateway",
        || Ok((rig.envoy.stat("http.citygate.downstream_rq_active")? >= 1).then_some(())),
    )?;
    assert_eq!(rig.api.count("/v2/entities"), 0, "forwarded without keys");
    rig.api.jwks().set_mode(JwksMode::Serve);
    let status = request.join().expect("the request thread")?;
    assert_eq!(status, 200, "{}", rig.log_tail());
    assert_eq!(rig.envoy.metric("citygate_auth_unavailable")?, 0);
    assert_eq!(
        rig.upstream_header("/v2/entities", "x-citygate-subject")
            .as_deref(),
        Some("citizen-anna")
    );

    for (name, subject) in [
        ("citizen-ps256", "citizen-anna"),
        ("citizen-bernd", "citizen-bernd"),
        ("analyst", "analyst-ali"),
        ("partner", "partner-app"),
    ] {
        let token = rig.token(name, Tamper::None)?;
        let reply = rig.bearer("/v2/entities", &token)?;
        assert_eq!(reply.status, 200, "{name}: {}", reply.body);
        assert_eq!(
            rig.upstream_header("/v2/entities", "x-citygate-subject")
                .as_deref(),
            Some(subject)
        );
        let upstream = rig.api.last("/v2/entities").context("reached the API")?;
        assert_eq!(upstream.header("authorization"), None);
        assert_eq!(upstream.header("x-citygate-auth-kind"), Some("jwt"));
    }
    // One successful fetch for the whole process, not one per worker.
    assert_eq!(rig.envoy.metric("citygate_jwks_fetched")?, 1);
    rig.assert_no_secret_logged()
}

#[test]
fn with_the_endpoint_down_after_a_first_fetch_the_last_good_keys_keep_serving() -> Result<()> {
    // Refresh every second, so the outage is noticed at once.
    let mut rig = Rig::start(
        config(&[("refresh_seconds", 1)])?,
        &PUBLISHED,
        JwksMode::Serve,
    )?;
    let citizen = rig.token("citizen", Tamper::None)?;
    assert_eq!(rig.bearer("/v2/entities", &citizen)?.status, 200);
    rig.api.jwks().set_mode(JwksMode::Unavailable);
    let before = rig.jwks_fetches();
    eventually(PATIENCE, "two failed refreshes", || {
        Ok((rig.jwks_fetches() >= before + 2
            && rig.envoy.metric("citygate_jwks_fetch_failed")? >= 2)
            .then_some(()))
    })?;
    for name in ["citizen", "citizen-bernd", "analyst", "citizen-ps256"] {
        let token = rig.token(name, Tamper::None)?;
        let reply = rig.bearer("/v2/entities", &token)?;
        assert_eq!(
            reply.status,
            200,
            "{name}: {}\n{}",
            reply.body,
            rig.log_tail()
        );
    }
    rig.api.jwks().set_mode(JwksMode::Garbage);
    let fetched = rig.envoy.metric("citygate_jwks_fetched")?;
    let failed = rig.envoy.metric("citygate_jwks_fetch_failed")?;
    eventually(PATIENCE, "a garbage key set refused", || {
        Ok((rig.envoy.metric("citygate_jwks_fetch_failed")? > failed).then_some(()))
    })?;
    assert_eq!(rig.envoy.metric("citygate_jwks_fetched")?, fetched);
    let analyst = rig.token("analyst", Tamper::None)?;
    assert_eq!(rig.bearer("/v2/entities", &analyst)?.status, 200);
    let log = rig.envoy.log();
    assert!(log.contains("keeping the last good key set"));
    assert!(!log.contains("not a key set"), "a fetched body was logged");
    rig.assert_no_secret_logged()
}

#[test]
fn a_rotated_key_is_accepted_after_the_unknown_kid_refetch() -> Result<()> {
    // refresh_seconds stays 600: only the unknown-kid refetch can bring the
    // new key (min_refetch_seconds is 1 in the auth configuration).
    let mut rig = Rig::start(config(&[])?, &PUBLISHED, JwksMode::Serve)?;
    let citizen = rig.token("citizen", Tamper::None)?;
    assert_eq!(rig.bearer("/v2/entities", &citizen)?.status, 200);
    assert_eq!(rig.jwks_fetches(), 1);

    let mut rotated_set = PUBLISHED.to_vec();
    rotated_set.push("demo-rs256-next");
    let published = rig.credentials.jwks("city-idp", Some(&rotated_set))?;
    rig.api.jwks().set_keys(published);
    let rotated = rig.token("citizen-rotated", Tamper::None)?;
    let first = rig.bearer("/v2/entities", &rotated)?;
    assert_eq!(first.status, 401, "{}", first.body);
    assert_eq!(
        www_authenticate(&first),
        r#"Bearer realm="city-api", error="invalid_token", error_description="the token was signed with an unknown key""#
    );
    // The client retries; within a few seconds the refetch has the key.
    eventually(PATIENCE, "the rotated token accepted", || {
        let reply = rig.bearer("/v2/entities", &rotated)?;
        Ok((reply.status == 200).then_some(()))
    })?;
    assert!(rig.jwks_fetches() >= 2);
    assert_eq!(
        rig.upstream_header("/v2/entities", "x-citygate-subject")
            .as_deref(),
        Some("citizen-anna")
    );
    // The old key is still published and still verifies.
    let citizen = rig.token("citizen", Tamper::None)?;
    assert_eq!(rig.bearer("/v2/entities", &citizen)?.status, 200);
    rig.assert_no_secret_logged()
}

#[test]
fn without_keys_a_request_gets_503_after_max_wait_and_never_reaches_the_upstream() -> Result<()> {
    let mut rig = Rig::start(config(&[])?, &PUBLISHED, JwksMode::Unavailable)?;
    let citizen = rig.token("citizen", Tamper::None)?;
    let reply = rig.bearer("/v2/entities", &citizen)?;
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert_eq!(reply.header("retry-after"), Some("1"));
    assert_eq!(
        reply.header("content-type"),
        Some("application/problem+json")
    );
    let problem = reply.json()?;
    assert_eq!(problem["type"], "urn:citygate:problem:keys-unavailable");
    assert_eq!(rig.api.count("/v2/entities"), 0);
    assert_eq!(rig.envoy.metric("citygate_auth_unavailable")?, 1);
    assert!(rig.jwks_fetches() >= 1);
    // API keys do not depend on the identity provider.
    let key = rig.credentials.api_key("parking-app")?.to_string();
    rig.secrets.push(key.clone());
    let reply = rig.envoy.get("/parking/spots", &[("x-api-key", &key)])?;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        rig.upstream_header("/parking/spots", "x-citygate-client-id")
            .as_deref(),
        Some("parking-app")
    );
    rig.assert_no_secret_logged()
}

#[test]
fn forged_tokens_and_bad_keys_are_refused_and_no_log_holds_a_credential() -> Result<()> {
    let mut rig = Rig::start(config(&[])?, &PUBLISHED, JwksMode::Serve)?;
    let citizen = rig.token("citizen", Tamper::None)?;
    assert_eq!(rig.bearer("/v2/entities", &citizen)?.status, 200);

    let forged = [
        (Tamper::AlgNone, "unsigned tokens are not accepted"),
        (
            Tamper::HsWithPublicKey,
            "the token's algorithm is not accepted",
        ),
        (Tamper::Payload, "the token signature is invalid"),
        (Tamper::WrongKey, "the token signature is invalid"),
        (
            Tamper::EmbeddedJwk,
            "the token carries a header that is not accepted",
        ),
        (Tamper::Expired, "the token has expired"),
        (Tamper::NotYetValid, "the token is not valid yet"),
        (Tamper::WrongAudience, "the token is not meant for this API"),
        (Tamper::WrongIssuer, "the token has the wrong issuer"),
        (Tamper::NoExp, "the token has no expiry"),
        (Tamper::Oversize, "the token is too large"),
        (Tamper::Garbage, "the token is malformed"),
    ];
    for (tamper, description) in forged {
        let token = rig.token("citizen", tamper)?;
        let reply = rig.bearer("/v2/entities", &token)?;
        assert_eq!(reply.status, 401, "{tamper:?}: {}", reply.body);
        assert_eq!(
            www_authenticate(&reply),
            format!(
                r#"Bearer realm="city-api", error="invalid_token", error_description="{description}""#
            ),
            "{tamper:?}"
        );
        assert!(!reply.body.contains("eyJ"), "{tamper:?}: {}", reply.body);
    }
    assert_eq!(
        rig.api.count("/v2/entities"),
        1,
        "only the valid token passed"
    );

    for name in ["revoked-app", "expired-app"] {
        let key = rig.credentials.api_key(name)?.to_string();
        rig.secrets.push(key.clone());
        let reply = rig.envoy.get("/parking/spots", &[("x-api-key", &key)])?;
        assert_eq!(reply.status, 401, "{name}");
        assert_eq!(
            www_authenticate(&reply),
            r#"ApiKey realm="city-api", error="invalid_key", error_description="the API key is not valid""#
        );
        assert!(!reply.body.contains(&key));
    }
    // A key in the query of a route that allows it: the upstream (and the
    // access log, which records the path) never sees it.
    let key = rig.credentials.api_key("parking-app")?.to_string();
    rig.secrets.push(key.clone());
    let reply = rig
        .envoy
        .get(&format!("/meters/12?zone=5&api_key={key}"), &[])?;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let upstream = rig.api.last("/meters").context("reached the API")?;
    assert_eq!(upstream.query, "zone=5");
    assert_eq!(upstream.header("x-citygate-client-id"), Some("parking-app"));

    // Identity headers a client sends are replaced, never trusted.
    let token = rig.token("citizen", Tamper::None)?;
    let reply = rig.envoy.get(
        "/v2/entities",
        &[
            ("authorization", &bearer(&token)),
            ("x-citygate-subject", "emergency-admin"),
            ("x-citygate-roles", "emergency-services"),
            ("x-citygate-client-id", "dispatch-console"),
        ],
    )?;
    assert_eq!(reply.status, 200);
    let upstream = rig.api.last("/v2/entities").context("reached the API")?;
    assert_eq!(upstream.header("x-citygate-subject"), Some("citizen-anna"));
    assert_eq!(upstream.header("x-citygate-roles"), Some("citizen"));
    assert_eq!(upstream.header("x-citygate-client-id"), None);

    // The decision log is in Envoy's log (so the check below is not vacuous)…
    let log = rig.envoy.log();
    for reason in ["jwt-alg-none", "jwt-bad-signature", "api-key-revoked"] {
        assert!(
            log.contains(&format!(r#""reason":"{reason}""#)),
            "no decision-log line for {reason}"
        );
    }
    // …and the access log has every request (it is flushed periodically).
    let access_log = rig.envoy.run_dir().join("access.log");
    eventually(PATIENCE, "the access log flushed", || {
        Ok((lines(&access_log) >= forged.len() + 5).then_some(()))
    })?;
    rig.assert_no_secret_logged()
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|t| t.lines().count())
        .unwrap_or(0)
}
