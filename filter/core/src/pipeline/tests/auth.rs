//! Authentication end to end, through the pipeline, with `MemoryHost`:
//! credentials, challenges, remote keys and what reaches the upstream.

use jsonwebtoken::Algorithm;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::auth::jwt::testkeys::{self, mint, signing_key};
use crate::host::memory::MemoryHost;
use crate::identity::IdentityKind;
use crate::metrics::Metric;
use crate::normalize::{ConnectionInfo, PeerCertificate, RawRequest};
use crate::pipeline::{Admission, Attempt, CompiledConfig};

const NOW: u64 = 1_800_000_000;
const ISSUER: &str = "https://idp.city.example/realms/city";

fn digest(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

fn config(keys: Value) -> Value {
    json!({
        "gateway": {"realm": "city"},
        "auth": {
            "api_keys": {"keys": [
                {"id": "parking-app-1", "sha256": digest("pk_parking"), "client_id": "parking-app",
                 "scopes": ["parking:read"]},
                {"id": "old", "sha256": digest("pk_old"), "client_id": "old-app", "disabled": true},
                {"id": "expired", "sha256": digest("pk_expired"), "client_id": "x",
                 "not_after": "2020-01-01T00:00:00Z"}
            ]},
            "jwt": {"providers": [{
                "name": "city-idp", "issuer": ISSUER, "audiences": ["city-api"],
                "algorithms": ["RS256", "ES256"],
                "sources": [{"header": "authorization", "prefix": "Bearer"}, {"query": "access_token"},
                            {"cookie": "city_session"}],
                "keys": keys,
                "claims": {"roles": ["realm_access.roles"]}
            }]},
            "mtls": {"devices": [{"uri_san_prefix": "spiffe://city.example/sensors/", "roles": ["sensor"]}]}
        },
        "routes": [
            {"name": "parking", "match": {"path_prefix": "/parking"},
             "auth": {"methods": ["api_key", "jwt"], "required_scopes": ["parking:read"],
                      "credentials_in_query": true}},
            {"name": "open311", "match": {"path_prefix": "/open311"},
             "auth": {"anonymous": true, "methods": ["jwt"]}},
            {"name": "admin", "match": {"path_prefix": "/admin"},
             "auth": {"methods": ["jwt"], "required_roles": ["operator", "admin"]}},
            {"name": "sensors", "match": {"path_prefix": "/sensors"}, "auth": {"methods": ["mtls"]}},
            {"name": "forwarding", "match": {"path_prefix": "/legacy"},
             "auth": {"methods": ["jwt"], "forward_credential": true}}
        ]
    })
}

fn inline_gateway() -> CompiledConfig {
    let keys = json!({"jwks": serde_json::from_str::<Value>(&testkeys::jwks(&[testkeys::rsa_jwk("k1")])).unwrap()});
    CompiledConfig::from_json(config(keys).to_string().as_bytes(), &|_| None).unwrap()
}

fn remote_gateway() -> CompiledConfig {
    let keys = json!({"remote": {"cluster": "idp", "authority": "idp.city.example",
                                 "path": "/realms/city/protocol/openid-connect/certs"}});
    CompiledConfig::from_json(config(keys).to_string().as_bytes(), &|_| None).unwrap()
}

fn request(path: &str, headers: &[(&str, &str)]) -> RawRequest {
    let mut all = vec![
        (":method".to_string(), "GET".to_string()),
        (":path".to_string(), path.to_string()),
    ];
    all.extend(headers.iter().map(|(n, v)| (n.to_string(), v.to_string())));
    RawRequest {
        headers: all,
        connection: ConnectionInfo::default(),
    }
}

fn claims(extra: Value) -> Value {
    let mut claims = json!({"iss": ISSUER, "aud": "city-api", "sub": "citizen-4711",
        "azp": "citizen-portal", "exp": NOW + 600, "iat": NOW,
        "scope": "openid parking:read", "realm_access": {"roles": ["citizen"]}});
    if let (Some(target), Some(extra)) = (claims.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            target.insert(k.clone(), v.clone());
        }
    }
    claims
}

fn token(extra: Value) -> String {
    testkeys::mint_rs256("k1", &claims(extra))
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn host() -> MemoryHost {
    MemoryHost::at_unix_seconds(NOW)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn valid_jwt_is_verified_mapped_and_forwarded_as_identity_headers() {
    let host = host();
    let gw = inline_gateway();
    let t = token(json!({}));
    let admitted = gw
        .admit(
            &request(
                "/parking/spots",
                &[
                    ("authorization", &bearer(&t)),
                    ("x-citygate-roles", "admin"),
                ],
            ),
            &host,
        )
        .unwrap();
    let id = &admitted.identity;
    assert_eq!(id.kind, IdentityKind::Jwt);
    assert_eq!(id.subject.as_deref(), Some("citizen-4711"));
    assert_eq!(id.client_id.as_deref(), Some("citizen-portal"));
    assert_eq!(id.roles, vec!["citizen"]);
    let edits = &admitted.edits;
    assert!(edits.remove_headers.contains(&"authorization".to_string()));
    assert!(edits
        .remove_headers
        .contains(&"x-citygate-roles".to_string()));
    assert_eq!(
        header(&edits.set_headers, "x-citygate-roles"),
        Some("citizen")
    );
    assert_eq!(
        header(&edits.set_headers, "x-citygate-subject"),
        Some("citizen-4711")
    );
    assert_eq!(
        header(&edits.set_headers, "x-citygate-auth-kind"),
        Some("jwt")
    );
    assert!(!edits.set_headers.iter().any(|(_, v)| v.contains(&t)));
    assert_eq!(host.counter(Metric::AuthAllowed), 1);
}

#[test]
fn repeated_tokens_come_from_the_cache() {
    let host = host();
    let gw = inline_gateway();
    let auth = bearer(&token(json!({})));
    for _ in 0..3 {
        gw.admit(&request("/parking", &[("authorization", &auth)]), &host)
            .unwrap();
    }
    assert_eq!(host.counter(Metric::JwtCacheHit), 2);
    // The cache never outlives the token.
    host.advance_seconds(600 + 60);
    let reply = gw
        .admit(&request("/parking", &[("authorization", &auth)]), &host)
        .unwrap_err();
    assert_eq!(reply.status, 401);
}

/// A refused token is remembered with its reason: a repeat gets the same
/// reply as the first refusal (and as a gateway that never saw it), and a
/// token refused only because it is not valid yet is not remembered, so
/// it passes once its time comes.
#[test]
fn refused_tokens_are_refused_alike_on_every_repeat_and_not_yet_valid_ones_pass_later() {
    let forged = {
        let t = token(json!({}));
        let (head, _) = t.rsplit_once('.').unwrap();
        let other = token(json!({"sub": "someone-else"}));
        let (_, signature) = other.rsplit_once('.').unwrap();
        format!("{head}.{signature}")
    };
    let expired = token(json!({"iat": NOW - 7200, "exp": NOW - 3600}));
    for bad in [forged, expired] {
        let auth = bearer(&bad);
        let fresh = inline_gateway()
            .admit(&request("/parking", &[("authorization", &auth)]), &host())
            .unwrap_err();
        let host = host();
        let gw = inline_gateway();
        for _ in 0..3 {
            let reply = gw
                .admit(&request("/parking", &[("authorization", &auth)]), &host)
                .unwrap_err();
            assert_eq!(reply.status, 401);
            assert_eq!(reply.headers, fresh.headers);
            assert_eq!(reply.body, fresh.body);
        }
        assert_eq!(host.counter(Metric::JwtCacheHit), 0);
    }

    let host = host();
    let gw = inline_gateway();
    let early = bearer(&token(json!({"nbf": NOW + 120})));
    let reply = gw
        .admit(&request("/parking", &[("authorization", &early)]), &host)
        .unwrap_err();
    assert_eq!(reply.status, 401);
    host.advance_seconds(180);
    assert!(gw
        .admit(&request("/parking", &[("authorization", &early)]), &host)
        .is_ok());
}

#[test]
fn invalid_tokens_get_rfc_6750_challenges_without_echoing_the_token() {
    let host = host();
    let gw = inline_gateway();
    let cases = [
        (token(json!({"exp": NOW - 120})), "the token has expired"),
        (
            token(json!({"aud": "other"})),
            "the token is not meant for this API",
        ),
        (
            token(json!({"iss": "https://evil.example"})),
            "the token has the wrong issuer",
        ),
        (
            testkeys::mint_rs256("rotated", &claims(json!({}))),
            "the token was signed with an unknown key",
        ),
    ];
    for (t, description) in cases {
        let reply = gw
            .admit(
                &request("/parking", &[("authorization", &bearer(&t))]),
                &host,
            )
            .unwrap_err();
        assert_eq!(reply.status, 401);
        let challenge = header(&reply.headers, "www-authenticate").unwrap();
        assert_eq!(
            challenge,
            format!(
                r#"Bearer realm="city", error="invalid_token", error_description="{description}""#
            )
        );
        let body = String::from_utf8(reply.body).unwrap();
        assert!(!body.contains(&t) && !body.contains("citizen-4711"));
    }
    assert_eq!(host.counter(Metric::AuthInvalidCredentials), 4);
    assert_eq!(host.counter(Metric::AuthDenied), 4);
    let log = host.log_lines().join("\n");
    for reason in [
        "jwt-expired",
        "jwt-wrong-audience",
        "jwt-wrong-issuer",
        "jwt-unknown-kid",
    ] {
        assert!(log.contains(&format!("\"reason\":\"{reason}\"")), "{log}");
    }
    assert!(!log.contains("eyJ"), "no token in the decision log");
}

#[test]
fn es256_token_verifies_on_a_provider_allowing_it() {
    let keys = json!({"pem": testkeys::EC256_PUBLIC});
    let gw = CompiledConfig::from_json(config(keys).to_string().as_bytes(), &|_| None).unwrap();
    let t = mint(
        &json!({"alg": "ES256", "typ": "JWT"}),
        &claims(json!({})),
        &signing_key(testkeys::EC256_PRIVATE, Algorithm::ES256),
        Algorithm::ES256,
    );
    assert!(gw
        .admit(
            &request("/parking", &[("authorization", &bearer(&t))]),
            &host()
        )
        .is_ok());
}

#[test]
fn missing_credentials_challenge_each_accepted_scheme() {
    let host = host();
    let reply = inline_gateway()
        .admit(&request("/parking", &[]), &host)
        .unwrap_err();
    assert_eq!(reply.status, 401);
    let challenges: Vec<&str> = reply
        .headers
        .iter()
        .filter(|(n, _)| n == "www-authenticate")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(
        challenges,
        vec![r#"ApiKey realm="city""#, r#"Bearer realm="city""#]
    );
    assert_eq!(host.counter(Metric::AuthMissingCredentials), 1);
}

#[test]
fn api_keys_valid_revoked_expired_wrong() {
    let host = host();
    let gw = inline_gateway();
    let admitted = gw
        .admit(&request("/parking", &[("x-api-key", "pk_parking")]), &host)
        .unwrap();
    assert_eq!(admitted.identity.kind, IdentityKind::ApiKey);
    assert_eq!(admitted.identity.client_id.as_deref(), Some("parking-app"));
    assert_eq!(admitted.identity.claims["api_key_id"], "parking-app-1");
    assert!(admitted
        .edits
        .remove_headers
        .contains(&"x-api-key".to_string()));
    for key in ["pk_old", "pk_expired", "pk_wrong"] {
        let reply = gw
            .admit(&request("/parking", &[("x-api-key", key)]), &host)
            .unwrap_err();
        assert_eq!(reply.status, 401, "{key}");
        assert_eq!(
            header(&reply.headers, "www-authenticate"),
            Some(
                r#"ApiKey realm="city", error="invalid_key", error_description="the API key is not valid""#
            )
        );
        assert!(!String::from_utf8_lossy(&reply.body).contains(key));
    }
    let log = host.log_lines().join("\n");
    for reason in ["api-key-revoked", "api-key-expired", "api-key-unknown"] {
        assert!(log.contains(&format!("\"reason\":\"{reason}\"")), "{log}");
    }
    assert!(!log.contains("pk_"), "keys never reach the log");
}

#[test]
fn query_credentials_are_read_where_allowed_and_never_forwarded() {
    let host = host();
    let gw = inline_gateway();
    let admitted = gw
        .admit(
            &request("/parking/spots?zone=4&api_key=pk_parking", &[]),
            &host,
        )
        .unwrap();
    assert_eq!(
        admitted.edits.path.as_deref(),
        Some("/parking/spots?zone=4")
    );
    let t = token(json!({}));
    let admitted = gw
        .admit(&request(&format!("/parking?access_token={t}"), &[]), &host)
        .unwrap();
    assert_eq!(admitted.edits.path.as_deref(), Some("/parking"));
    // Not accepted on a route without `credentials_in_query`, yet stripped.
    let admitted = gw
        .admit(&request("/open311/requests?api_key=pk_parking", &[]), &host)
        .unwrap();
    assert_eq!(admitted.identity.kind, IdentityKind::Anonymous);
    assert_eq!(admitted.edits.path.as_deref(), Some("/open311/requests"));
}

#[test]
fn anonymous_routes_still_refuse_bad_credentials() {
    let host = host();
    let gw = inline_gateway();
    let admitted = gw.admit(&request("/open311", &[]), &host).unwrap();
    assert_eq!(admitted.identity.kind, IdentityKind::Anonymous);
    assert_eq!(
        header(&admitted.edits.set_headers, "x-citygate-auth-kind"),
        Some("anonymous")
    );
    let reply = gw
        .admit(
            &request("/open311", &[("authorization", "Bearer not.a.token")]),
            &host,
        )
        .unwrap_err();
    assert_eq!(reply.status, 401);
}

#[test]
fn missing_scope_or_role_is_403_insufficient_scope() {
    let host = host();
    let gw = inline_gateway();
    let t = token(json!({"scope": "openid"}));
    let reply = gw
        .admit(
            &request("/parking", &[("authorization", &bearer(&t))]),
            &host,
        )
        .unwrap_err();
    assert_eq!(reply.status, 403);
    let challenge = header(&reply.headers, "www-authenticate").unwrap();
    assert!(
        challenge.contains(r#"error="insufficient_scope""#),
        "{challenge}"
    );
    assert!(challenge.contains(r#"scope="parking:read""#));
    let reply = gw
        .admit(
            &request("/admin", &[("authorization", &bearer(&token(json!({}))))]),
            &host,
        )
        .unwrap_err();
    assert_eq!(reply.status, 403);
    let operator = token(json!({"realm_access": {"roles": ["operator"]}}));
    assert!(gw
        .admit(
            &request("/admin", &[("authorization", &bearer(&operator))]),
            &host
        )
        .is_ok());
    assert_eq!(host.counter(Metric::AuthInsufficientScope), 2);
}

#[test]
fn cookie_tokens_and_forwarded_credentials() {
    let host = host();
    let gw = inline_gateway();
    let t = token(json!({}));
    let cookie = format!("lang=de; city_session={t}");
    let admitted = gw
        .admit(&request("/open311", &[("cookie", &cookie)]), &host)
        .unwrap();
    assert_eq!(admitted.identity.kind, IdentityKind::Jwt);
    assert_eq!(
        header(&admitted.edits.set_headers, "cookie"),
        Some("lang=de")
    );
    let admitted = gw
        .admit(
            &request("/legacy", &[("authorization", &bearer(&t))]),
            &host,
        )
        .unwrap();
    assert!(!admitted
        .edits
        .remove_headers
        .contains(&"authorization".to_string()));
}

#[test]
fn mapped_device_certificates_authenticate() {
    let host = host();
    let gw = inline_gateway();
    let mut raw = request("/sensors/readings", &[]);
    raw.connection.peer_certificate = Some(PeerCertificate {
        uri_san: Some("spiffe://city.example/sensors/air-7".into()),
        dns_san: None,
        subject: Some("CN=air-7".into()),
    });
    let admitted = gw.admit(&raw, &host).unwrap();
    assert_eq!(admitted.identity.kind, IdentityKind::Mtls);
    assert_eq!(admitted.identity.roles, vec!["sensor"]);
    raw.connection.peer_certificate = Some(PeerCertificate {
        uri_san: Some("spiffe://elsewhere.example/x".into()),
        dns_san: None,
        subject: None,
    });
    assert_eq!(gw.admit(&raw, &host).unwrap_err().status, 401);
}

#[test]
fn remote_jwks_requests_wait_then_fail_closed_or_resume() {
    let host = host();
    let gw = remote_gateway();
    let auth = bearer(&token(json!({})));
    let raw = request("/parking", &[("authorization", &auth)]);
    // No keys yet: the request waits, it is never allowed.
    match gw.admit_or_wait(&raw, &host, Attempt::First) {
        Admission::AwaitingKeys { max_wait_ms } => assert_eq!(max_wait_ms, 3000),
        _ => panic!("expected to wait for keys"),
    }
    // Garbage does not wait for keys.
    let garbage = request("/parking", &[("authorization", "Bearer x.y.z")]);
    assert!(matches!(
        gw.admit_or_wait(&garbage, &host, Attempt::First),
        Admission::Answered(reply) if reply.status == 401
    ));
    // The root tick fetches once; the wait over, still no keys → 503.
    let auth_stage = gw.authenticator();
    assert!(
        auth_stage.on_tick(&host).is_empty(),
        "the first tick creates the lock"
    );
    let tokens = auth_stage.on_tick(&host);
    assert_eq!(tokens.len(), 1);
    assert!(auth_stage.on_tick(&host).is_empty(), "one fetch in flight");
    match gw.admit_or_wait(&raw, &host, Attempt::Final) {
        Admission::Answered(reply) => {
            assert_eq!(reply.status, 503);
            assert_eq!(header(&reply.headers, "retry-after"), Some("1"));
        }
        _ => panic!("expected 503"),
    }
    assert_eq!(host.counter(Metric::AuthUnavailable), 1);
    // The keys arrive: the next judgement admits.
    let jwks = testkeys::jwks(&[testkeys::rsa_jwk("k1")]);
    assert!(auth_stage.on_callout_response(tokens[0], 200, jwks.as_bytes(), &host));
    assert!(matches!(
        gw.admit_or_wait(&raw, &host, Attempt::Retry),
        Admission::Admitted(_)
    ));
    assert!(!auth_stage.on_callout_response(999, 200, b"{}", &host));
}

#[test]
fn remote_key_rotation_refetches_on_unknown_kid() {
    let host = host();
    let gw = remote_gateway();
    let stage = gw.authenticator();
    stage.on_tick(&host);
    let first = stage.on_tick(&host)[0];
    stage.on_callout_response(
        first,
        200,
        testkeys::jwks(&[testkeys::rsa_jwk("k1")]).as_bytes(),
        &host,
    );
    host.advance_seconds(60);
    // The issuer rotated to a new key the cached set does not have.
    let rotated = mint(
        &json!({"alg": "RS256", "kid": "k2"}),
        &claims(json!({"exp": NOW + 3600})),
        &signing_key(testkeys::RSA2_PRIVATE, Algorithm::RS256),
        Algorithm::RS256,
    );
    let raw = request("/parking", &[("authorization", &bearer(&rotated))]);
    assert_eq!(gw.admit(&raw, &host).unwrap_err().status, 401);
    let refetch = stage.on_tick(&host);
    assert_eq!(refetch.len(), 1, "unknown kid triggers a refetch");
    let rotated_set = testkeys::jwks(&[testkeys::rsa_jwk("k1"), testkeys::rotated_rsa_jwk("k2")]);
    stage.on_callout_response(refetch[0], 200, rotated_set.as_bytes(), &host);
    assert!(gw.admit(&raw, &host).is_ok());
    // An endpoint outage later keeps the good set.
    host.advance_seconds(600);
    let next = stage.on_tick(&host)[0];
    stage.on_callout_response(next, 0, b"", &host);
    assert!(gw.admit(&raw, &host).is_ok());
}

#[test]
fn config_errors_name_exact_paths() {
    let cases = [
        (
            json!({"jwt": {"providers": [{"name": "a", "issuer": "i", "algorithms": ["none"], "keys": {"pem": testkeys::RSA_PUBLIC}}]}}),
            "$.auth.jwt.providers[0].algorithms[0]",
        ),
        (
            json!({"jwt": {"providers": [{"name": "a", "issuer": "i", "algorithms": ["HS256"], "keys": {"pem": testkeys::RSA_PUBLIC}}]}}),
            "$.auth.jwt.providers[0].keys.pem",
        ),
        (
            json!({"jwt": {"providers": [{"name": "a", "issuer": "i", "algorithms": ["HS256"], "keys": {"hmac_secret": "short"}}]}}),
            "$.auth.jwt.providers[0].keys.hmac_secret",
        ),
        (
            json!({"jwt": {"providers": [{"name": "a", "issuer": "i", "algorithms": ["RS256"], "keys": {}}]}}),
            "$.auth.jwt.providers[0].keys",
        ),
        (
            json!({"jwt": {"providers": [{"name": "a", "issuer": "i", "algorithms": ["HS256"],
                 "keys": {"remote": {"cluster": "c", "authority": "a", "path": "/k"}}}]}}),
            "$.auth.jwt.providers[0].keys.remote",
        ),
        (
            json!({"jwt": {"providers": [{"name": "a", "issuer": "i", "algorithms": ["RS256"],
                 "sources": [{"query": "t", "cookie": "c"}], "keys": {"pem": testkeys::RSA_PUBLIC}}]}}),
            "$.auth.jwt.providers[0].sources[0]",
        ),
    ];
    for (auth, path) in cases {
        let doc = json!({"auth": auth, "routes": []});
        let err = match CompiledConfig::from_json(doc.to_string().as_bytes(), &|_| None) {
            Err(err) => err,
            Ok(_) => panic!("accepted a bad config for {path}"),
        };
        assert_eq!(err.path, path, "{}", err.message);
        assert!(!err.message.contains("short") && !err.message.contains("MII"));
    }
    let routes = json!({"routes": [{"name": "r", "match": {"path_prefix": "/"},
        "auth": {"anonymous": true, "methods": ["api_key"], "required_scopes": ["x"]}}]});
    let err = match CompiledConfig::from_json(routes.to_string().as_bytes(), &|_| None) {
        Err(err) => err,
        Ok(_) => panic!("accepted anonymous with required scopes"),
    };
    assert_eq!(err.path, "$.routes[0].auth");
    let routes = json!({"routes": [{"name": "r", "match": {"path_prefix": "/"},
        "auth": {"methods": ["jwt"]}}]});
    let err = match CompiledConfig::from_json(routes.to_string().as_bytes(), &|_| None) {
        Err(err) => err,
        Ok(_) => panic!("accepted jwt without providers"),
    };
    assert_eq!(err.path, "$.routes[0].auth.methods");
}

#[test]
fn hmac_secrets_come_from_the_environment() {
    let secret = String::from_utf8(testkeys::HMAC_SECRET.to_vec()).unwrap();
    let doc = json!({
        "auth": {"jwt": {"providers": [{"name": "internal", "issuer": ISSUER, "algorithms": ["HS256"],
                 "keys": {"hmac_secret": "${env:CITYGATE_JWT_SECRET}"}}]}},
        "routes": [{"name": "r", "match": {"path_prefix": "/"}, "auth": {"methods": ["jwt"]}}]
    });
    let env = |name: &str| (name == "CITYGATE_JWT_SECRET").then(|| secret.clone());
    let gw = CompiledConfig::from_json(doc.to_string().as_bytes(), &env).unwrap();
    let printed = format!("{:?}", gw.config());
    assert!(!printed.contains(&secret), "Debug never shows secrets");
    let t = mint(
        &json!({"alg": "HS256"}),
        &claims(json!({})),
        &jsonwebtoken::EncodingKey::from_secret(testkeys::HMAC_SECRET),
        Algorithm::HS256,
    );
    assert!(gw
        .admit(&request("/x", &[("authorization", &bearer(&t))]), &host())
        .is_ok());
}

/// Two providers read `Authorization: Bearer`, so the token's `iss` picks
/// one; a token without a readable `iss` is judged for what it is.
#[test]
fn tokens_no_provider_claims_are_malformed_or_of_a_wrong_issuer() {
    let secret = String::from_utf8(testkeys::HMAC_SECRET.to_vec()).unwrap();
    let mut doc = config(json!({"jwks": serde_json::from_str::<Value>(
        &testkeys::jwks(&[testkeys::rsa_jwk("k1")])).unwrap()}));
    doc["auth"]["jwt"]["providers"]
        .as_array_mut()
        .unwrap()
        .push(
            json!({"name": "partner", "issuer": "https://partner.example",
                     "algorithms": ["HS256"], "keys": {"hmac_secret": "${env:PARTNER_SECRET}"}}),
        );
    let env = |name: &str| (name == "PARTNER_SECRET").then(|| secret.clone());
    let gw = CompiledConfig::from_json(doc.to_string().as_bytes(), &env).unwrap();
    let host = host();
    let cases = [
        (
            "eyJ!!!not-base64!!!.%%%.***".to_string(),
            "the token is malformed",
            "jwt-malformed",
        ),
        (
            "not-a-jwt".to_string(),
            "the token is malformed",
            "jwt-malformed",
        ),
        (
            token(json!({"iss": "https://evil.example"})),
            "the token has the wrong issuer",
            "jwt-wrong-issuer",
        ),
    ];
    for (t, description, reason) in cases {
        let reply = gw
            .admit(&request("/admin", &[("authorization", &bearer(&t))]), &host)
            .unwrap_err();
        assert_eq!(reply.status, 401);
        assert_eq!(
            header(&reply.headers, "www-authenticate").unwrap(),
            format!(
                r#"Bearer realm="city", error="invalid_token", error_description="{description}""#
            )
        );
        let log = host.log_lines().join("\n");
        assert!(log.contains(&format!("\"reason\":\"{reason}\"")), "{log}");
    }
    // Each provider still verifies its own tokens.
    assert!(gw
        .admit(
            &request(
                "/admin",
                &[(
                    "authorization",
                    &bearer(&token(json!({"realm_access": {"roles": ["admin"]}})))
                )]
            ),
            &host
        )
        .is_ok());
}

#[test]
fn credentials_the_gateway_did_not_use_never_reach_the_upstream() {
    let host = host();
    let gw = inline_gateway();
    let t = token(json!({}));
    let session = format!("theme=dark; city_session={t}");
    // The parking route tries API keys first: the key is used; the token
    // beside it (header and cookie) was never verified.
    let admitted = gw
        .admit(
            &request(
                "/parking/spots",
                &[
                    ("x-api-key", "pk_parking"),
                    ("authorization", &bearer(&t)),
                    ("cookie", &session),
                ],
            ),
            &host,
        )
        .unwrap();
    assert_eq!(admitted.identity.kind, IdentityKind::ApiKey);
    let removed = &admitted.edits.remove_headers;
    assert!(removed.contains(&"x-api-key".to_string()), "{removed:?}");
    assert!(
        removed.contains(&"authorization".to_string()),
        "{removed:?}"
    );
    assert_eq!(
        header(&admitted.edits.set_headers, "cookie"),
        Some("theme=dark")
    );

    // An anonymous caller's API key on a route that reads only tokens.
    let admitted = gw
        .admit(
            &request("/open311/requests", &[("x-api-key", "pk_parking")]),
            &host,
        )
        .unwrap();
    assert_eq!(admitted.identity.kind, IdentityKind::Anonymous);
    assert!(admitted
        .edits
        .remove_headers
        .contains(&"x-api-key".to_string()));

    // A route that forwards its credential forwards that one only.
    let admitted = gw
        .admit(
            &request(
                "/legacy/report",
                &[("authorization", &bearer(&t)), ("x-api-key", "pk_parking")],
            ),
            &host,
        )
        .unwrap();
    assert_eq!(admitted.identity.kind, IdentityKind::Jwt);
    let removed = &admitted.edits.remove_headers;
    assert!(
        !removed.contains(&"authorization".to_string()),
        "{removed:?}"
    );
    assert!(removed.contains(&"x-api-key".to_string()), "{removed:?}");
}
