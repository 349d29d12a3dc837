//! The authorization server's answer (RFC 7662 §2.2), judged: active with
//! the identity it describes, inactive with the reason, or unusable.

use serde_json::{Map, Value};

use crate::auth::config::ClaimMappingConfig;
use crate::auth::jwt::claims;
use crate::identity::{Identity, IdentityKind};

/// Larger answers are unusable: the identity is kept in the cache, so its
/// size bounds the cache's memory (`cache_capacity` × this).
pub const MAX_ANSWER_BYTES: usize = 16 * 1024;

#[derive(Debug, PartialEq)]
pub enum Answer {
    Active {
        identity: Identity,
        /// The token's `exp` (Unix seconds), when the answer gives one.
        expires_at: Option<u64>,
    },
    /// `active: false`, or active but not for this gateway.
    Inactive(&'static str),
    /// An error status, a failed call, or a document that is not an
    /// RFC 7662 answer: nothing is known about the token.
    Unusable,
}

pub fn judge(
    status: u16,
    body: &[u8],
    now: u64,
    issuer: Option<&str>,
    audiences: &[String],
    mapping: &ClaimMappingConfig,
) -> Answer {
    if status != 200 || body.len() > MAX_ANSWER_BYTES {
        return Answer::Unusable;
    }
    let Ok(Value::Object(members)) = serde_json::from_slice::<Value>(body) else {
        return Answer::Unusable;
    };
    match members.get("active") {
        Some(Value::Bool(true)) => {}
        Some(Value::Bool(false)) => return Answer::Inactive("token-inactive"),
        // `active` is REQUIRED and boolean: anything else is not an answer.
        _ => return Answer::Unusable,
    }
    let time = |name: &str| -> Result<Option<u64>, ()> {
        match members.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => value.as_u64().map(Some).ok_or(()),
        }
    };
    let (Ok(expires_at), Ok(not_before)) = (time("exp"), time("nbf")) else {
        return Answer::Unusable;
    };
    if expires_at.is_some_and(|exp| exp <= now) {
        return Answer::Inactive("token-expired");
    }
    if not_before.is_some_and(|nbf| nbf > now) {
        return Answer::Inactive("token-not-yet-valid");
    }
    if let Some(issuer) = issuer {
        if members.get("iss").and_then(Value::as_str) != Some(issuer) {
            return Answer::Inactive("token-wrong-issuer");
        }
    }
    if !audiences.is_empty() && !audience_matches(&members, audiences) {
        return Answer::Inactive("token-wrong-audience");
    }
    let mut identity = claims::identity(members, mapping);
    identity.kind = IdentityKind::OpaqueToken;
    Answer::Active {
        identity,
        expires_at,
    }
}

/// `aud` is a string or an array of strings (RFC 7662 §2.2, RFC 7519 §4.1.3).
fn audience_matches(members: &Map<String, Value>, audiences: &[String]) -> bool {
    let matches = |value: &Value| {
        value
            .as_str()
            .is_some_and(|aud| audiences.iter().any(|a| a == aud))
    };
    match members.get("aud") {
        Some(Value::Array(items)) => items.iter().any(matches),
        Some(value) => matches(value),
        None => false,
    }
}
