//! Demo credentials (DEMO ONLY keys under `policies/demo-keys/`): scenario
//! files and the CLI mint tokens from them, so no test holds a live secret.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::introspection::IntrospectionSpec;

/// The wall clock in Unix seconds: the `now` to mint demo tokens at for a
/// real Envoy and for the CLI (a wasmtime VM has a clock of its own).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialsFile {
    #[serde(default)]
    pub issuers: BTreeMap<String, IssuerSpec>,
    #[serde(default)]
    pub tokens: BTreeMap<String, TokenSpec>,
    #[serde(default)]
    pub api_keys: BTreeMap<String, String>,
    /// The demo authorization server's client and opaque tokens.
    #[serde(default)]
    pub introspection: IntrospectionSpec,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerSpec {
    pub issuer: String,
    pub audience: String,
    pub keys: BTreeMap<String, KeySpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySpec {
    pub alg: String,
    #[serde(default)]
    pub private_key: Option<PathBuf>,
    #[serde(default)]
    pub secret: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSpec {
    pub issuer: String,
    pub key: String,
    #[serde(default = "default_lifetime")]
    pub expires_in: i64,
    #[serde(default)]
    pub claims: serde_json::Map<String, serde_json::Value>,
}

fn default_lifetime() -> i64 {
    3600
}

/// How a scenario damages a token to prove citygate refuses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tamper {
    None,
    /// `alg: none` with the signature removed.
    AlgNone,
    /// The signature part emptied.
    StripSignature,
    /// A claim changed after signing.
    Payload,
    /// HS256 signed with the RSA public key's PEM as the HMAC secret.
    HsWithPublicKey,
    /// An attacker's key embedded in the header (`jwk`).
    EmbeddedJwk,
    /// Not base64 at all.
    Garbage,
    /// Expired an hour ago.
    Expired,
    /// Valid only from an hour from now.
    NotYetValid,
    /// No `exp` claim.
    NoExp,
    /// Signed with a key the JWKS does not publish (same kid).
    WrongKey,
    /// A `kid` nobody published.
    UnknownKid,
    /// Another issuer.
    WrongIssuer,
    /// Another audience.
    WrongAudience,
    /// Padded past any sane token size.
    Oversize,
}

impl Tamper {
    pub fn parse(text: &str) -> Result<Self> {
        Ok(match text {
            "" => Self::None,
            "alg_none" => Self::AlgNone,
            "strip_signature" => Self::StripSignature,
            "payload" => Self::Payload,
            "hs_with_public_key" => Self::HsWithPublicKey,
            "embedded_jwk" => Self::EmbeddedJwk,
            "garbage" => Self::Garbage,
            "expired" => Self::Expired,
            "not_yet_valid" => Self::NotYetValid,
            "no_exp" => Self::NoExp,
            "wrong_key" => Self::WrongKey,
            "unknown_kid" => Self::UnknownKid,
            "wrong_issuer" => Self::WrongIssuer,
            "wrong_audience" => Self::WrongAudience,
            "oversize" => Self::Oversize,
            other => bail!("unknown token tampering `{other}`"),
        })
    }
}

/// Loaded credentials with their keys read from disk.
#[derive(Debug, Clone)]
pub struct Credentials {
    file: CredentialsFile,
    dir: PathBuf,
}

impl Credentials {
    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let file: CredentialsFile = serde_yaml_ng::from_str(&text)
            .with_context(|| format!("parsing {}", path.display()))?;
        Ok(Self {
            file,
            dir: path.parent().unwrap_or(Path::new(".")).to_path_buf(),
        })
    }

    pub fn api_key(&self, name: &str) -> Result<&str> {
        self.file
            .api_keys
            .get(name)
            .map(String::as_str)
            .ok_or_else(|| anyhow!("no demo API key named `{name}`"))
    }

    /// SHA-256 hex digest of a demo API key, as the plugin config stores it.
    pub fn api_key_digest(&self, name: &str) -> Result<String> {
        Ok(hex::encode(Sha256::digest(self.api_key(name)?.as_bytes())))
    }

    /// The demo authorization server's introspection (its client and tokens).
    pub fn introspection(&self) -> &IntrospectionSpec {
        &self.file.introspection
    }

    pub fn token_names(&self) -> impl Iterator<Item = &String> {
        self.file.tokens.keys()
    }

    fn encoding_key(&self, spec: &KeySpec) -> Result<(Algorithm, EncodingKey)> {
        let alg: Algorithm = spec
            .alg
            .parse()
            .map_err(|_| anyhow!("unknown algorithm `{}`", spec.alg))?;
        let key = match (&spec.private_key, &spec.secret) {
            (_, Some(secret)) => EncodingKey::from_secret(secret.as_bytes()),
            (Some(file), None) => {
                let pem = std::fs::read(self.dir.join(file))
                    .with_context(|| format!("reading {}", file.display()))?;
                match alg {
                    Algorithm::RS256
                    | Algorithm::RS384
                    | Algorithm::RS512
                    | Algorithm::PS256
                    | Algorithm::PS384
                    | Algorithm::PS512 => EncodingKey::from_rsa_pem(&pem)?,
                    Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(&pem)?,
                    Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem)?,
                    _ => bail!("algorithm {alg:?} needs a secret, not a private key"),
                }
            }
            (None, None) => bail!("key needs `private_key` or `secret`"),
        };
        Ok((alg, key))
    }

    /// The public JWKS of an issuer (asymmetric keys only), optionally
    /// limited to some key ids.
    pub fn jwks(&self, issuer: &str, only: Option<&[&str]>) -> Result<serde_json::Value> {
        let spec = self
            .file
            .issuers
            .get(issuer)
            .ok_or_else(|| anyhow!("no demo issuer `{issuer}`"))?;
        let mut keys = Vec::new();
        for (kid, key) in &spec.keys {
            if key.secret.is_some() || only.is_some_and(|ids| !ids.contains(&kid.as_str())) {
                continue;
            }
            let (alg, encoding) = self.encoding_key(key)?;
            let mut jwk = if alg == Algorithm::EdDSA {
                // jsonwebtoken cannot derive an OKP JWK; the public key is
                // the Ed25519 point of the signing key.
                let signing = self.ed25519_key(key)?;
                serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode(signing.verifying_key().as_bytes())})
            } else {
                serde_json::to_value(jsonwebtoken::jwk::Jwk::from_encoding_key(&encoding, alg)?)?
            };
            if let Some(object) = jwk.as_object_mut() {
                object.insert("kid".into(), kid.clone().into());
                object.insert("use".into(), "sig".into());
                object.insert("alg".into(), spec_alg_name(alg).into());
            }
            keys.push(jwk);
        }
        Ok(serde_json::json!({ "keys": keys }))
    }

    /// Mints the named demo token at `now` (Unix seconds, e.g.
    /// [`unix_now`]), damaged as asked.
    pub fn mint(&self, name: &str, tamper: Tamper, now: i64) -> Result<String> {
        self.mint_as(name, None, tamper, now)
    }

    /// As [`Credentials::mint`], with `sub` replaced by `subject` when
    /// given: many distinct callers of one demo role (the benchmark's city
    /// mix).
    pub fn mint_as(
        &self,
        name: &str,
        subject: Option<&str>,
        tamper: Tamper,
        now: i64,
    ) -> Result<String> {
        let token = self
            .file
            .tokens
            .get(name)
            .ok_or_else(|| anyhow!("no demo token named `{name}`"))?;
        let issuer = self
            .file
            .issuers
            .get(&token.issuer)
            .ok_or_else(|| anyhow!("token `{name}`: no issuer `{}`", token.issuer))?;
        let key_spec = issuer
            .keys
            .get(&token.key)
            .ok_or_else(|| anyhow!("token `{name}`: issuer has no key `{}`", token.key))?;
        let (alg, key) = self.encoding_key(key_spec)?;

        let mut claims = token.claims.clone();
        if let Some(subject) = subject {
            claims.insert("sub".into(), subject.into());
        }
        claims.insert("iss".into(), issuer.issuer.clone().into());
        claims.insert("aud".into(), issuer.audience.clone().into());
        claims.insert("iat".into(), now.into());
        claims.insert("exp".into(), (now + token.expires_in).into());
        let mut header = Header::new(alg);
        header.kid = Some(token.key.clone());
        header.typ = Some("JWT".into());
        match tamper {
            Tamper::Expired => {
                claims.insert("iat".into(), (now - 7200).into());
                claims.insert("exp".into(), (now - 3600).into());
            }
            Tamper::NotYetValid => {
                claims.insert("nbf".into(), (now + 3600).into());
            }
            Tamper::NoExp => {
                claims.remove("exp");
            }
            Tamper::WrongIssuer => {
                claims.insert("iss".into(), "https://evil.example".into());
            }
            Tamper::WrongAudience => {
                claims.insert("aud".into(), "another-service".into());
            }
            Tamper::UnknownKid => header.kid = Some("nobody-published-this-kid".into()),
            _ => {}
        }
        let claims = serde_json::Value::Object(claims);
        let signed = match tamper {
            Tamper::WrongKey => {
                // Same header and kid, a different private key of the same type.
                let other = self.other_key_like(alg)?;
                jsonwebtoken::encode(&header, &claims, &other)?
            }
            Tamper::HsWithPublicKey => {
                let public_pem = self.public_pem(key_spec)?;
                let mut hs = Header::new(Algorithm::HS256);
                hs.kid = header.kid.clone();
                jsonwebtoken::encode(
                    &hs,
                    &claims,
                    &EncodingKey::from_secret(public_pem.as_bytes()),
                )?
            }
            _ => jsonwebtoken::encode(&header, &claims, &key)?,
        };
        Ok(match tamper {
            Tamper::AlgNone => {
                let header = serde_json::json!({"alg": "none", "typ": "JWT", "kid": token.key});
                format!(
                    "{}.{}.",
                    b64(&header.to_string()),
                    signed.split('.').nth(1).unwrap_or_default()
                )
            }
            Tamper::StripSignature => {
                let mut parts = signed.rsplitn(2, '.');
                let _signature = parts.next();
                format!("{}.", parts.next().unwrap_or_default())
            }
            Tamper::Payload => {
                let parts: Vec<&str> = signed.split('.').collect();
                let mut payload: serde_json::Value = serde_json::from_slice(
                    &URL_SAFE_NO_PAD.decode(parts.get(1).copied().unwrap_or_default())?,
                )?;
                payload["realm_access"] =
                    serde_json::json!({"roles": ["emergency-services", "city-operator"]});
                format!(
                    "{}.{}.{}",
                    parts.first().copied().unwrap_or_default(),
                    b64(&payload.to_string()),
                    parts.get(2).copied().unwrap_or_default()
                )
            }
            Tamper::EmbeddedJwk => {
                // The attacker signs with their own key and ships it in `jwk`.
                let attacker = self.other_key_like(alg)?;
                let mut evil = header.clone();
                evil.jwk = Some(jsonwebtoken::jwk::Jwk::from_encoding_key(&attacker, alg)?);
                jsonwebtoken::encode(&evil, &claims, &attacker)?
            }
            Tamper::Garbage => "eyJ!!!not-base64!!!.%%%.***".to_string(),
            Tamper::Oversize => {
                let parts: Vec<&str> = signed.split('.').collect();
                let mut payload: serde_json::Value = serde_json::from_slice(
                    &URL_SAFE_NO_PAD.decode(parts.get(1).copied().unwrap_or_default())?,
                )?;
                payload["padding"] = "x".repeat(16 * 1024).into();
                jsonwebtoken::encode(&header, &payload, &key)?
            }
            _ => signed,
        })
    }

    /// A private key of the same type that is not published (for
    /// wrong-key and embedded-jwk attacks).
    fn other_key_like(&self, alg: Algorithm) -> Result<EncodingKey> {
        for issuer in self.file.issuers.values() {
            if let Some(spec) = issuer.keys.get("demo-rs256-next") {
                if matches!(
                    alg,
                    Algorithm::RS256
                        | Algorithm::RS384
                        | Algorithm::RS512
                        | Algorithm::PS256
                        | Algorithm::PS384
                        | Algorithm::PS512
                ) {
                    return Ok(self.encoding_key(spec)?.1);
                }
            }
        }
        Ok(EncodingKey::from_secret(b"attacker-controlled-secret"))
    }

    fn private_pem(&self, spec: &KeySpec) -> Result<String> {
        let file = spec
            .private_key
            .as_ref()
            .ok_or_else(|| anyhow!("this needs an asymmetric key"))?;
        std::fs::read_to_string(self.dir.join(file))
            .with_context(|| format!("reading {}", file.display()))
    }

    fn ed25519_key(&self, spec: &KeySpec) -> Result<ed25519_dalek::SigningKey> {
        use ed25519_dalek::pkcs8::DecodePrivateKey;
        ed25519_dalek::SigningKey::from_pkcs8_pem(&self.private_pem(spec)?)
            .map_err(|e| anyhow!("Ed25519 key: {e}"))
    }

    /// The RSA public key as PEM: what an attacker has and tries as an
    /// HMAC secret.
    fn public_pem(&self, spec: &KeySpec) -> Result<String> {
        use rsa::pkcs8::{DecodePrivateKey, EncodePublicKey, LineEnding};
        let private = rsa::RsaPrivateKey::from_pkcs8_pem(&self.private_pem(spec)?)
            .map_err(|e| anyhow!("RSA key: {e}"))?;
        private
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| anyhow!("RSA public key: {e}"))
    }
}

fn b64(text: &str) -> String {
    URL_SAFE_NO_PAD.encode(text.as_bytes())
}

fn spec_alg_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::HS256 => "HS256",
        Algorithm::HS384 => "HS384",
        Algorithm::HS512 => "HS512",
        Algorithm::RS256 => "RS256",
        Algorithm::RS384 => "RS384",
        Algorithm::RS512 => "RS512",
        Algorithm::PS256 => "PS256",
        Algorithm::PS384 => "PS384",
        Algorithm::PS512 => "PS512",
        Algorithm::ES256 => "ES256",
        Algorithm::ES384 => "ES384",
        Algorithm::EdDSA => "EdDSA",
    }
}

/// Replaces `{{jwt:NAME}}`, `{{jwt:NAME:TAMPER}}`, `{{api_key:NAME}}`,
/// `{{api_key_digest:NAME}}` and `{{opaque:NAME}}` references in a string, and
/// `{{repeat:COUNT:TEXT}}` with TEXT written COUNT times (oversize bodies
/// and headers without a page of filler in the scenario file).
pub fn expand(text: &str, credentials: Option<&Credentials>, now: i64) -> Result<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| anyhow!("unclosed `{{{{` in `{text}`"))?;
        let reference = &after[..end];
        rest = &after[end + 2..];
        if let Some(repeat) = reference.strip_prefix("repeat:") {
            out.push_str(&repeated(repeat)?);
            continue;
        }
        let credentials = credentials
            .ok_or_else(|| anyhow!("`{{{{{reference}}}}}` needs a `credentials` file"))?;
        let mut parts = reference.splitn(3, ':');
        let kind = parts.next().unwrap_or_default();
        let name = parts
            .next()
            .ok_or_else(|| anyhow!("`{{{{{reference}}}}}` lacks a name"))?;
        let modifier = parts.next().unwrap_or_default();
        let value = match kind {
            "jwt" => credentials.mint(name, Tamper::parse(modifier)?, now)?,
            "api_key" => credentials.api_key(name)?.to_string(),
            "api_key_digest" => credentials.api_key_digest(name)?,
            "opaque" => credentials
                .introspection()
                .token(name)
                .ok_or_else(|| anyhow!("no demo opaque token named `{name}`"))?
                .to_string(),
            other => bail!("unknown credential kind `{other}` in `{{{{{reference}}}}}`"),
        };
        out.push_str(&value);
    }
    out.push_str(rest);
    Ok(out)
}

/// The `COUNT:TEXT` of a `{{repeat:…}}` reference, expanded.
fn repeated(reference: &str) -> Result<String> {
    const MAX_BYTES: usize = 16 << 20;
    let (count, text) = reference
        .split_once(':')
        .ok_or_else(|| anyhow!("`{{{{repeat:{reference}}}}}` is not `repeat:COUNT:TEXT`"))?;
    let count: usize = count
        .parse()
        .map_err(|_| anyhow!("`{{{{repeat:{reference}}}}}`: `{count}` is not a count"))?;
    if text.is_empty() || count.saturating_mul(text.len()) > MAX_BYTES {
        bail!("`{{{{repeat:{reference}}}}}` must expand to 1 byte .. 16 MiB");
    }
    Ok(text.repeat(count))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeat_references_expand_without_credentials() {
        assert_eq!(expand("a{{repeat:3:xy}}b", None, 0).unwrap(), "axyxyxyb");
        // TEXT may hold a colon; the count comes first.
        assert_eq!(expand("{{repeat:2:a:b}}", None, 0).unwrap(), "a:ba:b");
        assert!(expand("{{repeat:x:a}}", None, 0).is_err());
        assert!(expand("{{repeat:3:}}", None, 0).is_err());
        assert!(expand("{{repeat:99999999999:a}}", None, 0).is_err());
        // Credential references still need a credentials file.
        assert!(expand("{{jwt:operator}}", None, 0).is_err());
    }
}
