//! Verification as an attacker probes it: every refusal, and the tokens that
//! must pass.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::Algorithm;

use super::*;
use crate::auth::jwt::testkeys::{self, mint, signing_key};
use serde_json::json;

const NOW: u64 = 1_800_000_000;

fn claims() -> Value {
    json!({"iss": "https://idp.city.example", "aud": ["city-api"], "sub": "citizen-4711",
           "exp": NOW + 300, "nbf": NOW - 10, "iat": NOW - 10})
}

fn options() -> VerifyOptions {
    VerifyOptions {
        issuer: Some("https://idp.city.example".into()),
        audiences: vec!["city-api".into()],
        ..VerifyOptions::default()
    }
}

fn rsa_keys() -> KeySet {
    KeySet::from_jwks_json(&testkeys::jwks(&[testkeys::rsa_jwk("rsa-1")])).unwrap()
}

fn rs256(header: Value, claims: &Value) -> String {
    mint(
        &header,
        claims,
        &signing_key(testkeys::RSA_PRIVATE, Algorithm::RS256),
        Algorithm::RS256,
    )
}

fn valid_rs256() -> String {
    rs256(
        json!({"alg": "RS256", "kid": "rsa-1", "typ": "JWT"}),
        &claims(),
    )
}

#[test]
fn every_algorithm_family_verifies() {
    let cases: [(Algorithm, &str, KeySet); 12] = [
        (Algorithm::RS256, testkeys::RSA_PRIVATE, rsa_keys()),
        (Algorithm::RS384, testkeys::RSA_PRIVATE, rsa_keys()),
        (Algorithm::RS512, testkeys::RSA_PRIVATE, rsa_keys()),
        (Algorithm::PS256, testkeys::RSA_PRIVATE, rsa_keys()),
        (Algorithm::PS384, testkeys::RSA_PRIVATE, rsa_keys()),
        (
            Algorithm::PS512,
            testkeys::RSA_PRIVATE,
            KeySet::from_pem(testkeys::RSA_CERT).unwrap(),
        ),
        (
            Algorithm::ES256,
            testkeys::EC256_PRIVATE,
            KeySet::from_pem(testkeys::EC256_PUBLIC).unwrap(),
        ),
        (
            Algorithm::ES384,
            testkeys::EC384_PRIVATE,
            KeySet::from_pem(testkeys::EC384_PUBLIC).unwrap(),
        ),
        (
            Algorithm::EdDSA,
            testkeys::ED25519_PRIVATE,
            KeySet::from_pem(testkeys::ED25519_PUBLIC).unwrap(),
        ),
        (
            Algorithm::HS256,
            "",
            KeySet::from_hmac_secret(testkeys::HMAC_SECRET).unwrap(),
        ),
        (
            Algorithm::HS384,
            "",
            KeySet::from_hmac_secret(testkeys::HMAC_SECRET).unwrap(),
        ),
        (
            Algorithm::HS512,
            "",
            KeySet::from_hmac_secret(testkeys::HMAC_SECRET).unwrap(),
        ),
    ];
    for (alg, private, keys) in cases {
        let key = match alg {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
                jsonwebtoken::EncodingKey::from_secret(testkeys::HMAC_SECRET)
            }
            _ => signing_key(private, alg),
        };
        let name = serde_json::to_value(alg).unwrap();
        let token = mint(&json!({"alg": name, "kid": "rsa-1"}), &claims(), &key, alg);
        let verified = verify_token(&token, &keys, &options(), NOW);
        assert_eq!(
            verified.map(|c| c["sub"].clone()),
            Ok(json!("citizen-4711")),
            "{alg:?}"
        );
    }
}

#[test]
fn ec_keys_are_bound_to_their_curve() {
    let p256 = KeySet::from_pem(testkeys::EC256_PUBLIC).unwrap();
    let token = mint(
        &json!({"alg": "ES384"}),
        &claims(),
        &signing_key(testkeys::EC384_PRIVATE, Algorithm::ES384),
        Algorithm::ES384,
    );
    assert_eq!(
        verify_token(&token, &p256, &options(), NOW),
        Err(JwtError::NoMatchingKey)
    );
}

#[test]
fn time_claims_are_judged_with_skew() {
    let keys = rsa_keys();
    let token = valid_rs256();
    assert!(verify_token(&token, &keys, &options(), NOW + 300 + 59).is_ok());
    assert_eq!(
        verify_token(&token, &keys, &options(), NOW + 300 + 60),
        Err(JwtError::Expired)
    );
    let mut future = claims();
    future["nbf"] = json!(NOW + 61);
    let token = rs256(json!({"alg": "RS256"}), &future);
    assert_eq!(
        verify_token(&token, &keys, &options(), NOW),
        Err(JwtError::NotYetValid)
    );
    assert!(verify_token(&token, &keys, &options(), NOW + 1).is_ok());
}

#[test]
fn missing_exp_is_refused_unless_allowed() {
    let mut no_exp = claims();
    no_exp.as_object_mut().unwrap().remove("exp");
    let token = rs256(json!({"alg": "RS256"}), &no_exp);
    assert_eq!(
        verify_token(&token, &rsa_keys(), &options(), NOW),
        Err(JwtError::MissingExp)
    );
    let lenient = VerifyOptions {
        require_exp: false,
        ..options()
    };
    assert!(verify_token(&token, &rsa_keys(), &lenient, NOW).is_ok());
}

#[test]
fn wrong_issuer_and_audience_are_refused() {
    let keys = rsa_keys();
    let mut other = claims();
    other["iss"] = json!("https://evil.example");
    let token = rs256(json!({"alg": "RS256"}), &other);
    assert_eq!(
        verify_token(&token, &keys, &options(), NOW),
        Err(JwtError::WrongIssuer)
    );
    let mut other = claims();
    other["aud"] = json!("another-api");
    let token = rs256(json!({"alg": "RS256"}), &other);
    assert_eq!(
        verify_token(&token, &keys, &options(), NOW),
        Err(JwtError::WrongAudience)
    );
    let mut other = claims();
    other.as_object_mut().unwrap().remove("aud");
    let token = rs256(json!({"alg": "RS256"}), &other);
    assert_eq!(
        verify_token(&token, &keys, &options(), NOW),
        Err(JwtError::WrongAudience)
    );
}

#[test]
fn alg_none_is_refused_in_any_case() {
    for alg in ["none", "None", "NONE"] {
        let token = format!(
            "{}.{}.",
            testkeys::b64(&json!({"alg": alg})),
            testkeys::b64(&claims())
        );
        assert_eq!(
            verify_token(&token, &rsa_keys(), &options(), NOW),
            Err(JwtError::AlgNone)
        );
    }
}

#[test]
fn hs256_signed_with_the_rsa_public_key_is_refused() {
    // The classic confusion attack: the public key used as an HMAC secret.
    let public = jsonwebtoken::EncodingKey::from_secret(testkeys::RSA_PUBLIC.as_bytes());
    let token = mint(
        &json!({"alg": "HS256", "kid": "rsa-1"}),
        &claims(),
        &public,
        Algorithm::HS256,
    );
    assert_eq!(
        verify_token(&token, &rsa_keys(), &options(), NOW),
        Err(JwtError::NoMatchingKey)
    );
    let pem_keys = KeySet::from_pem(testkeys::RSA_PUBLIC).unwrap();
    assert_eq!(
        verify_token(&token, &pem_keys, &options(), NOW),
        Err(JwtError::NoMatchingKey)
    );
    let rs_only = VerifyOptions {
        algorithms: vec![Algorithm::RS256],
        ..options()
    };
    assert_eq!(
        verify_token(&token, &rsa_keys(), &rs_only, NOW),
        Err(JwtError::AlgorithmNotAllowed)
    );
}

#[test]
fn tampered_payload_and_stripped_signature_are_refused() {
    let token = valid_rs256();
    let mut parts: Vec<&str> = token.split('.').collect();
    let mut forged = claims();
    forged["sub"] = json!("admin");
    let forged = testkeys::b64(&forged);
    parts[1] = &forged;
    assert_eq!(
        verify_token(&parts.join("."), &rsa_keys(), &options(), NOW),
        Err(JwtError::BadSignature)
    );
    let stripped = format!("{}.{}.", parts[0], testkeys::b64(&claims()));
    assert_eq!(
        verify_token(&stripped, &rsa_keys(), &options(), NOW),
        Err(JwtError::BadSignature)
    );
    let two_parts = format!("{}.{}", parts[0], testkeys::b64(&claims()));
    assert_eq!(
        verify_token(&two_parts, &rsa_keys(), &options(), NOW),
        Err(JwtError::Malformed)
    );
}

#[test]
fn unknown_kid_is_reported_as_such() {
    let token = rs256(json!({"alg": "RS256", "kid": "rotated-away"}), &claims());
    assert_eq!(
        verify_token(&token, &rsa_keys(), &options(), NOW),
        Err(JwtError::UnknownKid)
    );
}

#[test]
fn key_source_and_crit_headers_are_refused() {
    let jwk = testkeys::rsa_jwk("attacker");
    for (header, name) in [
        (json!({"alg": "RS256", "jwk": jwk}), "jwk"),
        (
            json!({"alg": "RS256", "jku": "https://evil.example/jwks"}),
            "jku",
        ),
        (
            json!({"alg": "RS256", "x5u": "https://evil.example/cert"}),
            "x5u",
        ),
        (json!({"alg": "RS256", "crit": ["exp"], "exp": 1}), "crit"),
    ] {
        let token = rs256(header, &claims());
        assert_eq!(
            verify_token(&token, &rsa_keys(), &options(), NOW),
            Err(JwtError::UntrustedHeader(name))
        );
    }
}

#[test]
fn oversize_and_garbage_tokens_are_refused() {
    let small = VerifyOptions {
        max_token_bytes: 100,
        ..options()
    };
    assert_eq!(
        verify_token(&valid_rs256(), &rsa_keys(), &small, NOW),
        Err(JwtError::TooLarge)
    );
    for garbage in [
        "",
        "a.b.c",
        "!!!.???.***",
        "eyJhbGciOiJSUzI1NiJ9.e30=.AAAA",
        "....",
    ] {
        assert_eq!(
            verify_token(garbage, &rsa_keys(), &options(), NOW),
            Err(JwtError::Malformed),
            "{garbage}"
        );
    }
}

#[test]
fn duplicate_header_members_are_refused() {
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","alg":"none"}"#);
    let token = format!("{header}.{}.AAAA", testkeys::b64(&claims()));
    assert_eq!(
        verify_token(&token, &rsa_keys(), &options(), NOW),
        Err(JwtError::Malformed)
    );
}

#[test]
fn typ_is_checked_when_required() {
    let strict = VerifyOptions {
        required_typ: Some("at+jwt".into()),
        ..options()
    };
    assert_eq!(
        verify_token(&valid_rs256(), &rsa_keys(), &strict, NOW),
        Err(JwtError::WrongType)
    );
    let token = rs256(
        json!({"alg": "RS256", "typ": "application/AT+JWT"}),
        &claims(),
    );
    assert!(verify_token(&token, &rsa_keys(), &strict, NOW).is_ok());
}

#[test]
fn errors_never_echo_the_token() {
    let token = valid_rs256();
    let err = verify_token(&token, &rsa_keys(), &options(), NOW + 10_000).unwrap_err();
    assert!(!err.description().contains("citizen"));
    assert!(!err.to_string().contains(&token[..20]));
}

#[test]
fn decode_unverified_returns_header_and_claims() {
    let (header, claims) = decode_unverified(&valid_rs256()).unwrap();
    assert_eq!(header["kid"], "rsa-1");
    assert_eq!(claims["sub"], "citizen-4711");
    assert_eq!(valid_until(&claims, &options()), Some(NOW + 300 + 60));
}
