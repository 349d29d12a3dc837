//! OPA's `io.jwt.*` builtins, which regorus lacks, so OPA-Envoy primer
//! policies run unchanged. Results follow OPA's documentation: `decode`
//! gives `[header, payload, signature_hex]`; `verify_*` give a boolean;
//! `decode_verify` gives `[valid, header, payload]` and `[false, {}, {}]`
//! for any token that fails a check.
//!
//! The narrow internal API (`Token`, `KeyMaterial`, `verify_signature`) is
//! the one seam to swap for the authentication stage's verifier.

use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey};
use regorus::Value;

use super::{BuiltinError, BuiltinResult};
use crate::auth::jwt::{verify_token, JwtError, KeySet, VerifyOptions};

/// Longest token the builtins look at.
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// A compact JWS split and decoded, signature not yet checked.
pub struct Token<'a> {
    pub header: Value,
    pub payload: Value,
    /// `base64url(header) "." base64url(payload)`: what was signed.
    pub signing_input: &'a str,
    /// The signature, still base64url-encoded.
    pub signature: &'a str,
}

pub fn parse_token(token: &str) -> Result<Token<'_>, BuiltinError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err("JWT is too large".to_string().into());
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("encoded JWT must have 3 sections".to_string().into());
    };
    let header = json_object(h, "header")?;
    let payload = json_object(p, "payload")?;
    let signing_input = token
        .get(..h.len() + 1 + p.len())
        .ok_or_else(|| "malformed JWT".to_string())?;
    Ok(Token {
        header,
        payload,
        signing_input,
        signature: s,
    })
}

fn b64url(text: &str) -> Result<Vec<u8>, BuiltinError> {
    URL_SAFE_NO_PAD
        .decode(text)
        .or_else(|_| URL_SAFE.decode(text))
        .map_err(|_| "JWT section is not base64url".into())
}

fn json_object(section: &str, what: &str) -> Result<Value, BuiltinError> {
    let bytes = b64url(section)?;
    let text = std::str::from_utf8(&bytes).map_err(|_| format!("JWT {what} is not UTF-8"))?;
    let value = Value::from_json_str(text).map_err(|_| format!("JWT {what} is not JSON"))?;
    match value {
        Value::Object(_) => Ok(value),
        _ => Err(format!("JWT {what} is not an object").into()),
    }
}

/// Keys a policy hands to a verify builtin.
pub enum KeyMaterial {
    /// HMAC secrets are used as given: OPA accepts short ones (the primer
    /// signs with `"secret"`), which the authentication stage refuses.
    Secret(Vec<u8>),
    /// Public keys go through the authentication stage's loader, which binds
    /// each key to the algorithms its type allows.
    Public(KeySet),
}

impl KeyMaterial {
    /// `cert` as OPA reads it: PEM (certificate or public key), a JWK, or a JWKS.
    pub fn from_cert(text: &str) -> Result<Self, BuiltinError> {
        let trimmed = text.trim();
        let keys = if trimmed.starts_with('{') {
            let document: serde_json::Value =
                serde_json::from_str(trimmed).map_err(|_| "cert is not valid JSON".to_string())?;
            let jwks = if document.get("keys").is_some() {
                document
            } else {
                serde_json::json!({ "keys": [document] })
            };
            KeySet::from_jwks_json(&jwks.to_string())
        } else {
            KeySet::from_pem(trimmed)
        };
        keys.map(Self::Public)
            .map_err(|e| format!("cert: {e}").into())
    }
}

/// Whether the signature verifies with `alg` (claims are judged apart).
pub fn verify_signature(
    token_text: &str,
    token: &Token<'_>,
    alg: Algorithm,
    keys: &KeyMaterial,
) -> bool {
    match keys {
        KeyMaterial::Secret(secret) => {
            matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
                && jsonwebtoken::crypto::verify(
                    token.signature,
                    token.signing_input.as_bytes(),
                    &DecodingKey::from_secret(secret),
                    alg,
                )
                .unwrap_or(false)
        }
        KeyMaterial::Public(set) => {
            let options = VerifyOptions {
                algorithms: vec![alg],
                issuer: None,
                audiences: Vec::new(),
                clock_skew_seconds: 0,
                require_exp: false,
                required_typ: None,
                max_token_bytes: MAX_TOKEN_BYTES,
            };
            // The verifier checks the signature before any claim, so a
            // claim error means the signature held.
            matches!(
                verify_token(token_text, set, &options, 0),
                Ok(_)
                    | Err(JwtError::Expired
                        | JwtError::NotYetValid
                        | JwtError::MissingExp
                        | JwtError::WrongIssuer
                        | JwtError::WrongAudience)
            )
        }
    }
}

fn arg_str<'a>(args: &'a [Value], index: usize, name: &str) -> Result<&'a str, BuiltinError> {
    args.get(index)
        .and_then(|v| v.as_string().ok())
        .map(|s| s.as_ref())
        .ok_or_else(|| format!("{name}: operand {} must be a string", index + 1).into())
}

/// `io.jwt.decode(token)`.
pub fn decode(args: &[Value], _now_ns: u64) -> BuiltinResult {
    let token = parse_token(arg_str(args, 0, "io.jwt.decode")?)?;
    let signature = b64url(token.signature)?;
    Ok(Value::from(vec![
        token.header,
        token.payload,
        Value::from(hex::encode(signature)),
    ]))
}

/// `io.jwt.verify_<alg>(token, key)`: `key` is the secret for HS*, a PEM or
/// JWK(S) for the others.
pub fn verify(alg: Algorithm, args: &[Value]) -> BuiltinResult {
    let name = "io.jwt.verify";
    let text = arg_str(args, 0, name)?;
    let token = parse_token(text)?;
    let key_text = arg_str(args, 1, name)?;
    let keys = match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
            KeyMaterial::Secret(key_text.as_bytes().to_vec())
        }
        _ => KeyMaterial::from_cert(key_text)?,
    };
    Ok(Value::from(verify_signature(text, &token, alg, &keys)))
}

fn string_field<'a>(object: &'a Value, key: &str) -> Option<&'a str> {
    object
        .as_object()
        .ok()?
        .get(&Value::from(key))?
        .as_string()
        .ok()
        .map(|s| s.as_ref())
}

struct Constraints {
    keys: KeyMaterial,
    alg: Option<String>,
    iss: Option<String>,
    aud: Option<String>,
    time_ns: f64,
}

fn constraints(value: &Value, now_ns: u64) -> Result<Constraints, BuiltinError> {
    let map = value
        .as_object()
        .map_err(|_| "io.jwt.decode_verify: constraints must be an object".to_string())?;
    let mut cert = None;
    let mut secret = None;
    let mut out = Constraints {
        keys: KeyMaterial::Secret(Vec::new()),
        alg: None,
        iss: None,
        aud: None,
        time_ns: now_ns as f64,
    };
    for (key, v) in map.iter() {
        let key = key.as_string().map_err(|_| "constraint keys are strings")?;
        let text = || {
            v.as_string()
                .map(|s| s.to_string())
                .map_err(|_| format!("constraint `{key}` must be a string"))
        };
        match key.as_ref() {
            "cert" => cert = Some(text()?),
            "secret" => secret = Some(text()?),
            "alg" => out.alg = Some(text()?),
            "iss" => out.iss = Some(text()?),
            "aud" => out.aud = Some(text()?),
            "time" => {
                out.time_ns =
                    number(v).ok_or_else(|| "constraint `time` must be a number".to_string())?
            }
            other => return Err(format!("unknown JWT constraint `{other}`").into()),
        }
    }
    out.keys = match (cert, secret) {
        (Some(cert), None) => KeyMaterial::from_cert(&cert)?,
        (None, Some(secret)) => KeyMaterial::Secret(secret.into_bytes()),
        _ => return Err("exactly one of `cert` or `secret` is required".into()),
    };
    Ok(out)
}

/// `io.jwt.decode_verify(token, constraints)`.
pub fn decode_verify(args: &[Value], now_ns: u64) -> BuiltinResult {
    let text = arg_str(args, 0, "io.jwt.decode_verify")?;
    let token = parse_token(text)?;
    let constraints = constraints(args.get(1).unwrap_or(&Value::Undefined), now_ns)?;
    if !is_valid(text, &token, &constraints) {
        return Ok(Value::from(vec![
            Value::from(false),
            Value::new_object(),
            Value::new_object(),
        ]));
    }
    Ok(Value::from(vec![
        Value::from(true),
        token.header,
        token.payload,
    ]))
}

fn is_valid(text: &str, token: &Token<'_>, c: &Constraints) -> bool {
    let Some(alg_name) = string_field(&token.header, "alg") else {
        return false;
    };
    if c.alg.as_deref().is_some_and(|want| want != alg_name) {
        return false;
    }
    let Ok(alg) = alg_name.parse::<Algorithm>() else {
        return false;
    };
    if !verify_signature(text, token, alg, &c.keys) {
        return false;
    }
    claims_hold(&token.payload, c)
}

fn claims_hold(payload: &Value, c: &Constraints) -> bool {
    let Ok(claims) = payload.as_object() else {
        return false;
    };
    let claim = |name: &str| claims.get(&Value::from(name));
    let seconds = |v: &Value| number(v).map(|s| s * 1e9);
    if let Some(exp) = claim("exp") {
        match seconds(exp) {
            Some(exp_ns) if c.time_ns < exp_ns => {}
            _ => return false,
        }
    }
    if let Some(nbf) = claim("nbf") {
        match seconds(nbf) {
            Some(nbf_ns) if c.time_ns >= nbf_ns => {}
            _ => return false,
        }
    }
    if let Some(want) = &c.iss {
        if claim("iss")
            .and_then(|v| v.as_string().ok())
            .map(|s| s.as_ref())
            != Some(want.as_str())
        {
            return false;
        }
    }
    match (claim("aud"), &c.aud) {
        (None, None) => true,
        (None, Some(_)) | (Some(_), None) => false,
        (Some(Value::String(aud)), Some(want)) => aud.as_ref() == want,
        (Some(Value::Array(auds)), Some(want)) => auds
            .iter()
            .any(|a| a.as_string().is_ok_and(|s| s.as_ref() == want)),
        (Some(_), Some(_)) => false,
    }
}

/// Every `io.jwt.verify_<alg>` builtin OPA defines that the crypto backend
/// supports (ES512 is not: `decode_verify` treats such tokens as invalid).
pub const VERIFY_BUILTINS: &[(&str, Algorithm)] = &[
    ("io.jwt.verify_hs256", Algorithm::HS256),
    ("io.jwt.verify_hs384", Algorithm::HS384),
    ("io.jwt.verify_hs512", Algorithm::HS512),
    ("io.jwt.verify_rs256", Algorithm::RS256),
    ("io.jwt.verify_rs384", Algorithm::RS384),
    ("io.jwt.verify_rs512", Algorithm::RS512),
    ("io.jwt.verify_ps256", Algorithm::PS256),
    ("io.jwt.verify_ps384", Algorithm::PS384),
    ("io.jwt.verify_ps512", Algorithm::PS512),
    ("io.jwt.verify_es256", Algorithm::ES256),
    ("io.jwt.verify_es384", Algorithm::ES384),
    ("io.jwt.verify_eddsa", Algorithm::EdDSA),
];

/// A Rego number as f64 (regorus keeps large integers exact and refuses
/// `as_f64` on some of them).
fn number(v: &Value) -> Option<f64> {
    v.as_u64()
        .map(|n| n as f64)
        .or_else(|_| v.as_i64().map(|n| n as f64))
        .or_else(|_| v.as_f64())
        .ok()
        .filter(|f| f.is_finite())
}
