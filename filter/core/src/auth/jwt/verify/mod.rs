//! JWS compact-serialization verification (RFC 7515/7519, hardened per
//! RFC 8725). Used by the authentication stage and by the policy's
//! `io.jwt.*` builtins. Signatures are checked by `jsonwebtoken`; this module
//! decides which key may check which token and what a valid token is.
//!
//! Order matters: the token's shape and header are judged first, then the
//! signature, and only a signed payload's claims are judged, so an attacker
//! learns nothing about claim rules from unsigned tokens.

mod error;
mod registered_claims;
#[cfg(test)]
mod tests;
mod token;

use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};

pub use error::JwtError;
pub use token::decode_unverified;

use super::keys::KeySet;
use registered_claims::{check_issuer_audience, check_times, numeric_date};
use token::{algorithm, check_header, check_signature, split};

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
