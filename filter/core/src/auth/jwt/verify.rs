//! JWS compact-serialization verification (RFC 7515/7519, hardened per
//! RFC 8725). Used by the authentication stage and by the policy's
//! `io.jwt.*` builtins. Signatures are checked by `jsonwebtoken`; this module
//! decides which key may check which token and what a valid token is.
//!
//! Order matters: the token's shape and header are judged first, then the
//! signature, and only a signed payload's claims are judged, so an attacker
//! learns nothing about claim rules from unsigned tokens.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};

use super::keys::KeySet;
use super::strict_json;

pub type Claims = Map<String, Value>;

/// What a valid token must satisfy besides a good signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyOptions {
    /// Accepted `alg` values; empty accepts every algorithm the keys are bound to.
    pub algorithms: Vec<Algorithm>,
    /// Required `iss`, when set.
    pub issuer: Option<String>,
    /// The token's `aud` must contain one of these, when not empty.
    pub audiences: Vec<String>,
    pub clock_skew_seconds: u64,
    /// A token without `exp` is refused (never-expiring tokens cannot be revoked).
    pub require_exp: bool,
    /// Required `typ` header (compared case-insensitively, `application/` optional).
    pub required_typ: Option<String>,
    pub max_token_bytes: usize,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        Self {
            algorithms: Vec::new(),
            issuer: None,
            audiences: Vec::new(),
            clock_skew_seconds: 60,
            require_exp: true,
            required_typ: None,
            max_token_bytes: 8192,
        }
    }
}

/// Why a token was refused. [`JwtError::description`] is safe to show a
/// client: it never contains the token or any claim value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.description())]
pub enum JwtError {
    TooLarge,
    Malformed,
    AlgNone,
    UnsupportedAlgorithm,
    AlgorithmNotAllowed,
    /// `jku`, `x5u`, `jwk` or `crit`: key locations and extensions chosen
    /// by the token's author are never trusted.
    UntrustedHeader(&'static str),
    WrongType,
    /// The token names a `kid` no configured key has (JWKS may need a refresh).
    UnknownKid,
    /// No key of the right type (e.g. an HS256 token against RSA keys).
    NoMatchingKey,
    BadSignature,
    MissingExp,
    Expired,
    NotYetValid,
    WrongIssuer,
    WrongAudience,
}

impl JwtError {
    /// RFC 6750 `error_description`: fixed text, no token data.
    pub fn description(self) -> &'static str {
        match self {
            Self::TooLarge => "the token is too large",
            Self::Malformed => "the token is malformed",
            Self::AlgNone => "unsigned tokens are not accepted",
            Self::UnsupportedAlgorithm => "the token's algorithm is not supported",
            Self::AlgorithmNotAllowed => "the token's algorithm is not accepted",
            Self::UntrustedHeader(_) => "the token carries a header that is not accepted",
            Self::WrongType => "the token has the wrong type",
            Self::UnknownKid => "the token was signed with an unknown key",
            Self::NoMatchingKey => "no key can verify this token",
            Self::BadSignature => "the token signature is invalid",
            Self::MissingExp => "the token has no expiry",
            Self::Expired => "the token has expired",
            Self::NotYetValid => "the token is not valid yet",
            Self::WrongIssuer => "the token has the wrong issuer",
            Self::WrongAudience => "the token is not meant for this API",
        }
    }

    /// Short machine name for the decision log's `reason`.
    pub fn reason(self) -> &'static str {
        match self {
            Self::TooLarge => "jwt-too-large",
            Self::Malformed => "jwt-malformed",
            Self::AlgNone => "jwt-alg-none",
            Self::UnsupportedAlgorithm => "jwt-unsupported-alg",
            Self::AlgorithmNotAllowed => "jwt-alg-not-allowed",
            Self::UntrustedHeader(_) => "jwt-untrusted-header",
            Self::WrongType => "jwt-wrong-typ",
            Self::UnknownKid => "jwt-unknown-kid",
            Self::NoMatchingKey => "jwt-no-matching-key",
            Self::BadSignature => "jwt-bad-signature",
            Self::MissingExp => "jwt-missing-exp",
            Self::Expired => "jwt-expired",
            Self::NotYetValid => "jwt-not-yet-valid",
            Self::WrongIssuer => "jwt-wrong-issuer",
            Self::WrongAudience => "jwt-wrong-audience",
        }
    }
}

/// A token split and decoded, nothing verified.
struct Parts<'t> {
    header: Map<String, Value>,
    claims: Claims,
    /// `header.payload`, the signed bytes.
    signing_input: &'t str,
    signature: &'t str,
}

fn split(token: &str) -> Result<Parts<'_>, JwtError> {
    let mut segments = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) = (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) else {
        return Err(JwtError::Malformed);
    };
    let signing_input = token
        .get(..header.len() + 1 + payload.len())
        .ok_or(JwtError::Malformed)?;
    Ok(Parts {
        header: decode_object(header)?,
        claims: decode_object(payload)?,
        signing_input,
        signature,
    })
}

fn decode_object(segment: &str) -> Result<Map<String, Value>, JwtError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| JwtError::Malformed)?;
    strict_json::object(&bytes).ok_or(JwtError::Malformed)
}

/// The header and claims, **unverified**: for display and for picking a
/// provider by `iss`, never for a decision.
pub fn decode_unverified(token: &str) -> Result<(Map<String, Value>, Claims), JwtError> {
    let parts = split(token)?;
    Ok((parts.header, parts.claims))
}

/// The `alg` a token's header names, judged against the options.
fn algorithm(header: &Map<String, Value>, options: &VerifyOptions) -> Result<Algorithm, JwtError> {
    let Some(Value::String(name)) = header.get("alg") else {
        return Err(JwtError::Malformed);
    };
    if name.eq_ignore_ascii_case("none") {
        return Err(JwtError::AlgNone);
    }
    let alg: Algorithm = name.parse().map_err(|_| JwtError::UnsupportedAlgorithm)?;
    if !options.algorithms.is_empty() && !options.algorithms.contains(&alg) {
        return Err(JwtError::AlgorithmNotAllowed);
    }
    Ok(alg)
}

const UNTRUSTED_HEADERS: &[&str] = &["jku", "x5u", "jwk", "crit"];

fn check_header(header: &Map<String, Value>, options: &VerifyOptions) -> Result<(), JwtError> {
    // Refused rather than ignored: a token that asks for its own key source
    // or an extension we do not implement is not one we can judge safely.
    if let Some(name) = UNTRUSTED_HEADERS.iter().find(|n| header.contains_key(**n)) {
        return Err(JwtError::UntrustedHeader(name));
    }
    if let Some(required) = &options.required_typ {
        let typ = match header.get("typ") {
            Some(Value::String(t)) => t,
            _ => return Err(JwtError::WrongType),
        };
        if !media_type_eq(typ, required) {
            return Err(JwtError::WrongType);
        }
    }
    match header.get("kid") {
        None | Some(Value::String(_)) => Ok(()),
        Some(_) => Err(JwtError::Malformed),
    }
}

/// RFC 7515 §4.1.9: `typ` may omit the `application/` prefix.
fn media_type_eq(a: &str, b: &str) -> bool {
    let strip = |s: &str| {
        let lower = s.to_ascii_lowercase();
        lower
            .strip_prefix("application/")
            .map(str::to_string)
            .unwrap_or(lower)
    };
    strip(a) == strip(b)
}

fn check_signature(parts: &Parts<'_>, alg: Algorithm, keys: &KeySet) -> Result<(), JwtError> {
    let signature = URL_SAFE_NO_PAD
        .decode(parts.signature)
        .map_err(|_| JwtError::Malformed)?;
    if signature.is_empty() {
        return Err(JwtError::BadSignature);
    }
    let kid = match parts.header.get("kid") {
        Some(Value::String(kid)) => Some(kid.as_str()),
        _ => None,
    };
    let mut candidates = keys
        .keys()
        .iter()
        .filter(|key| key.accepts(alg, kid))
        .peekable();
    if candidates.peek().is_none() {
        // A key of the right type exists but under another `kid`: the
        // issuer may have rotated, so the caller may refresh its keys.
        let rotated = kid.is_some() && keys.keys().iter().any(|key| key.accepts(alg, None));
        return Err(if rotated {
            JwtError::UnknownKid
        } else {
            JwtError::NoMatchingKey
        });
    }
    let verified = candidates.any(|key| {
        jsonwebtoken::crypto::verify(
            parts.signature,
            parts.signing_input.as_bytes(),
            &key.decoding,
            alg,
        )
        .unwrap_or(false)
    });
    if verified {
        Ok(())
    } else {
        Err(JwtError::BadSignature)
    }
}

/// A NumericDate claim: absent, or a finite number.
fn numeric_date(claims: &Claims, name: &str) -> Result<Option<f64>, JwtError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => n
            .as_f64()
            .filter(|f| f.is_finite())
            .map(Some)
            .ok_or(JwtError::Malformed),
        Some(_) => Err(JwtError::Malformed),
    }
}

fn check_times(claims: &Claims, options: &VerifyOptions, now: u64) -> Result<(), JwtError> {
    let now = now as f64;
    let skew = options.clock_skew_seconds as f64;
    match numeric_date(claims, "exp")? {
        Some(exp) if now >= exp + skew => return Err(JwtError::Expired),
        None if options.require_exp => return Err(JwtError::MissingExp),
        _ => {}
    }
    if numeric_date(claims, "nbf")?.is_some_and(|nbf| now + skew < nbf) {
        return Err(JwtError::NotYetValid);
    }
    if numeric_date(claims, "iat")?.is_some_and(|iat| now + skew < iat) {
        return Err(JwtError::NotYetValid);
    }
    Ok(())
}

fn check_issuer_audience(claims: &Claims, options: &VerifyOptions) -> Result<(), JwtError> {
    if let Some(issuer) = &options.issuer {
        if claims.get("iss").and_then(Value::as_str) != Some(issuer.as_str()) {
            return Err(JwtError::WrongIssuer);
        }
    }
    let audiences: Vec<&str> = match claims.get("aud") {
        None => Vec::new(),
        Some(Value::String(aud)) => vec![aud.as_str()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().ok_or(JwtError::Malformed))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(JwtError::Malformed),
    };
    if !options.audiences.is_empty()
        && !audiences
            .iter()
            .any(|aud| options.audiences.iter().any(|want| want == aud))
    {
        return Err(JwtError::WrongAudience);
    }
    match claims.get("sub") {
        None | Some(Value::String(_)) => Ok(()),
        Some(_) => Err(JwtError::Malformed),
    }
}

/// Verifies `token` against `keys` at `now_unix` (seconds, from the proxy's
/// clock) and returns its claims.
pub fn verify_token(
    token: &str,
    keys: &KeySet,
    options: &VerifyOptions,
    now_unix: u64,
) -> Result<Claims, JwtError> {
    if token.len() > options.max_token_bytes {
        return Err(JwtError::TooLarge);
    }
    let parts = split(token)?;
    let alg = algorithm(&parts.header, options)?;
    check_header(&parts.header, options)?;
    check_signature(&parts, alg, keys)?;
    check_times(&parts.claims, options, now_unix)?;
    check_issuer_audience(&parts.claims, options)?;
    Ok(parts.claims)
}

/// When a verified token stops being valid (for caches): `exp` plus skew.
pub fn valid_until(claims: &Claims, options: &VerifyOptions) -> Option<u64> {
    let exp = numeric_date(claims, "exp").ok()??;
    Some((exp.max(0.0) as u64).saturating_add(options.clock_skew_seconds))
}

#[cfg(test)]
mod tests {
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
}
