//! The token's shape, header and signature: what is judged before any claim
//! is read.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};

use super::{Claims, JwtError, VerifyOptions};
use crate::auth::jwt::keys::KeySet;
use crate::auth::jwt::strict_json;

/// A token split and decoded, nothing verified.
pub(super) struct Parts<'t> {
    pub(super) header: Map<String, Value>,
    pub(super) claims: Claims,
    /// `header.payload`, the signed bytes.
    signing_input: &'t str,
    signature: &'t str,
}

pub(super) fn split(token: &str) -> Result<Parts<'_>, JwtError> {
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
pub(super) fn algorithm(
    header: &Map<String, Value>,
    options: &VerifyOptions,
) -> Result<Algorithm, JwtError> {
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

pub(super) fn check_header(
    header: &Map<String, Value>,
    options: &VerifyOptions,
) -> Result<(), JwtError> {
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

pub(super) fn check_signature(
    parts: &Parts<'_>,
    alg: Algorithm,
    keys: &KeySet,
) -> Result<(), JwtError> {
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
