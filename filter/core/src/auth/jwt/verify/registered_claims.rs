//! The registered claims a signed token is judged by (RFC 7519 §4.1):
//! `exp`, `nbf`, `iat`, `iss` and `aud`.

use serde_json::Value;

use super::{Claims, JwtError, VerifyOptions};

/// A NumericDate claim: absent, or a finite number.
pub(super) fn numeric_date(claims: &Claims, name: &str) -> Result<Option<f64>, JwtError> {
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

pub(super) fn check_times(
    claims: &Claims,
    options: &VerifyOptions,
    now: u64,
) -> Result<(), JwtError> {
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

pub(super) fn check_issuer_audience(
    claims: &Claims,
    options: &VerifyOptions,
) -> Result<(), JwtError> {
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
