use serde_json::json;

use super::*;
use crate::auth::config::{Secret, TokenSourceConfig};
use crate::host::memory::MemoryHost;
use crate::identity::IdentityKind;

const NOW: u64 = 1_800_000_000;
const TOKEN: &str = "cg_opaque.Anna+Token/01==";

fn config() -> IntrospectionProviderConfig {
    serde_json::from_value(json!({
        "name": "city-as",
        "cluster": "idp",
        "authority": "idp.city.example",
        "path": "/oauth2/introspect",
        "client_id": "citygate gw",
        "client_secret": "s3cr&t:x",
        "issuer": "https://idp.city.example",
        "audiences": ["city-api"],
        "claims": {"roles": ["realm_access.roles"]}
    }))
    .unwrap()
}

fn introspector() -> Introspector {
    Introspector::compile(0, &config()).unwrap()
}

fn active(extra: serde_json::Value) -> Vec<u8> {
    let mut answer = json!({"active": true, "iss": "https://idp.city.example", "aud": ["x", "city-api"],
        "sub": "citizen-anna", "client_id": "citizen-portal", "scope": "openid requests:read",
        "exp": NOW + 600, "realm_access": {"roles": ["citizen"]}});
    for (k, v) in extra.as_object().unwrap() {
        answer[k] = v.clone();
    }
    answer.to_string().into_bytes()
}

/// Starts and answers one call for `token`.
fn answer(intro: &Introspector, host: &MemoryHost, token: &str, status: u16, body: &[u8]) {
    let callout = intro.start(token, host).unwrap();
    intro.accept(token, callout, status, body, host);
}

#[test]
fn the_call_is_a_form_post_with_the_gateways_basic_credentials() {
    let host = MemoryHost::at_unix_seconds(NOW);
    let intro = introspector();
    assert_eq!(intro.lookup(TOKEN, &host), Lookup::Unknown);
    intro.start(TOKEN, &host).unwrap();
    let calls = host.callouts.borrow();
    let call = &calls[0];
    assert_eq!(call.cluster, "idp");
    let header = |name: &str| {
        call.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(header(":method"), Some("POST"));
    assert_eq!(header(":path"), Some("/oauth2/introspect"));
    assert_eq!(header(":authority"), Some("idp.city.example"));
    assert_eq!(
        header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    // RFC 6749 §2.3.1: form-encoded, then Basic.
    let basic = STANDARD.encode("citygate%20gw:s3cr%26t%3Ax");
    assert_eq!(
        header("authorization"),
        Some(format!("Basic {basic}").as_str())
    );
    assert_eq!(
        String::from_utf8(call.body.clone().unwrap()).unwrap(),
        "token=cg_opaque.Anna%2BToken%2F01%3D%3D&token_type_hint=access_token"
    );
    assert_eq!(call.timeout, Duration::from_millis(2000));
    assert_eq!(host.counter(Metric::IntrospectionCalls), 1);
}

#[test]
fn an_active_answer_becomes_an_opaque_token_identity_cached_until_exp() {
    let host = MemoryHost::at_unix_seconds(NOW);
    let intro = introspector();
    answer(&intro, &host, TOKEN, 200, &active(json!({})));
    let Lookup::Active(identity) = intro.lookup(TOKEN, &host) else {
        panic!("not cached as active");
    };
    assert_eq!(identity.kind, IdentityKind::OpaqueToken);
    assert_eq!(identity.subject.as_deref(), Some("citizen-anna"));
    assert_eq!(identity.client_id.as_deref(), Some("citizen-portal"));
    assert_eq!(identity.scopes, vec!["openid", "requests:read"]);
    assert_eq!(identity.roles, vec!["citizen"]);
    assert_eq!(host.counter(Metric::IntrospectionActive), 1);
    assert_eq!(
        host.counter(Metric::IntrospectionCacheHit),
        0,
        "the first read after the answer saves no call"
    );
    assert!(matches!(intro.lookup(TOKEN, &host), Lookup::Active(_)));
    assert_eq!(host.counter(Metric::IntrospectionCacheHit), 1);
    assert_eq!(host.callouts.borrow().len(), 1, "asked once");
    // `cache_seconds` (300) ends the entry before `exp` (600).
    host.advance_seconds(299);
    assert!(matches!(intro.lookup(TOKEN, &host), Lookup::Active(_)));
    host.advance_seconds(1);
    assert_eq!(intro.lookup(TOKEN, &host), Lookup::Unknown);
    // An `exp` sooner than `cache_seconds` ends it at `exp`.
    let now = NOW + 300;
    answer(&intro, &host, TOKEN, 200, &active(json!({"exp": now + 20})));
    host.advance_seconds(19);
    assert!(matches!(intro.lookup(TOKEN, &host), Lookup::Active(_)));
    host.advance_seconds(1);
    assert_eq!(intro.lookup(TOKEN, &host), Lookup::Unknown);
}

#[test]
fn inactive_answers_are_refused_and_remembered_briefly() {
    let host = MemoryHost::at_unix_seconds(NOW);
    let intro = introspector();
    answer(&intro, &host, TOKEN, 200, br#"{"active":false}"#);
    assert_eq!(
        intro.lookup(TOKEN, &host),
        Lookup::Inactive("token-inactive")
    );
    host.advance_seconds(9);
    assert_eq!(
        intro.lookup(TOKEN, &host),
        Lookup::Inactive("token-inactive")
    );
    host.advance_seconds(1);
    assert_eq!(intro.lookup(TOKEN, &host), Lookup::Unknown);
    assert_eq!(host.counter(Metric::IntrospectionInactive), 1);
}

#[test]
fn active_answers_not_meant_for_this_gateway_are_inactive() {
    let cases = [
        (json!({"exp": NOW}), "token-expired"),
        (json!({"nbf": NOW + 5}), "token-not-yet-valid"),
        (json!({"iss": "https://evil.example"}), "token-wrong-issuer"),
        (json!({"iss": null}), "token-wrong-issuer"),
        (json!({"aud": "other-api"}), "token-wrong-audience"),
        (json!({"aud": null}), "token-wrong-audience"),
    ];
    for (extra, reason) in cases {
        let host = MemoryHost::at_unix_seconds(NOW);
        let intro = introspector();
        answer(&intro, &host, TOKEN, 200, &active(extra.clone()));
        assert_eq!(
            intro.lookup(TOKEN, &host),
            Lookup::Inactive(reason),
            "{extra}"
        );
    }
}

#[test]
fn unusable_answers_are_not_kept_and_never_logged() {
    let huge = active(json!({"padding": "x".repeat(MAX_ANSWER_BYTES)}));
    let answers: [(u16, &[u8]); 9] = [
        (0, b""),
        (500, br#"{"active":true}"#),
        (401, br#"{"error":"invalid_client"}"#),
        (200, b"<html>login</html>"),
        (200, br#"{"active":"true"}"#),
        (200, br#"{"sub":"x"}"#),
        (200, br#"[{"active":true}]"#),
        (200, br#"{"active":true,"exp":"tomorrow"}"#),
        (200, &huge),
    ];
    for (status, body) in answers {
        let host = MemoryHost::at_unix_seconds(NOW);
        let intro = introspector();
        answer(&intro, &host, TOKEN, status, body);
        assert_eq!(intro.lookup(TOKEN, &host), Lookup::Unknown, "{status}");
        assert_eq!(host.counter(Metric::IntrospectionFailed), 1);
        let lines = host.log_lines().join("\n");
        assert!(lines.contains("cluster `idp` failed"), "{lines}");
        assert!(
            !lines.contains("Anna") && !lines.contains("s3cr"),
            "{lines}"
        );
    }
}

#[test]
fn tokens_that_cannot_be_bearer_tokens_are_refused_without_a_call() {
    let host = MemoryHost::at_unix_seconds(NOW);
    let intro = introspector();
    for token in ["a b", "tok\"en", "=", "t%41", "tök"] {
        assert_eq!(
            intro.lookup(token, &host),
            Lookup::Inactive("token-malformed")
        );
    }
    let long = "a".repeat(4097);
    assert_eq!(
        intro.lookup(&long, &host),
        Lookup::Inactive("token-too-large")
    );
    assert!(host.callouts.borrow().is_empty());
}

#[test]
fn calls_in_flight_are_bounded_and_a_lost_call_ages_out() {
    let mut bounded = config();
    bounded.max_in_flight = 2;
    let intro = Introspector::compile(0, &bounded).unwrap();
    let host = MemoryHost::at_unix_seconds(NOW);
    let first = intro.start("t1", &host).unwrap();
    intro.start("t2", &host).unwrap();
    assert_eq!(intro.start("t3", &host), Err("introspection-busy"));
    assert_eq!(host.counter(Metric::IntrospectionBusy), 1);
    intro.abandon(first);
    assert!(intro.start("t3", &host).is_ok());
    assert_eq!(intro.start("t4", &host), Err("introspection-busy"));
    // A call nobody answered frees its place after timeout + 1 s.
    host.advance_seconds(3);
    assert!(intro.start("t4", &host).is_ok());
}

/// A field and how to break it.
type Breakage = (&'static str, fn(&mut IntrospectionProviderConfig));

#[test]
fn configuration_errors_name_the_field() {
    let cases: [Breakage; 7] = [
        ("name", |c| c.name = "city as".into()),
        ("cluster", |c| c.cluster.clear()),
        ("client_secret", |c| c.client_secret = Secret(String::new())),
        ("path", |c| c.path = "oauth2/introspect".into()),
        ("cache_seconds", |c| c.cache_seconds = 0),
        ("max_in_flight", |c| c.max_in_flight = 0),
        ("sources[0]", |c| {
            c.sources = vec![TokenSourceConfig {
                query: Some("t".into()),
                prefix: Some("Bearer".into()),
                ..TokenSourceConfig::default()
            }]
        }),
    ];
    for (field, break_it) in cases {
        let mut broken = config();
        break_it(&mut broken);
        let Err(error) = Introspector::compile(3, &broken) else {
            panic!("{field} accepted");
        };
        assert_eq!(
            error.path,
            format!("$.auth.introspection.providers[3].{field}"),
            "{error}"
        );
    }
}
