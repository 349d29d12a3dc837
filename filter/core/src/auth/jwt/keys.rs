//! Verification keys. Each key is bound, when it is loaded, to the one key
//! type its algorithms need: an RSA key never verifies HS*, a P-256 key never
//! ES384, and symmetric keys never come from a JWKS (a published HMAC key
//! would let anyone mint tokens).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use der::asn1::UintRef;
use der::oid::ObjectIdentifier;
use der::{Decode, Encode, Reader, SliceReader};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;
use spki::SubjectPublicKeyInfoRef;
use x509_cert::Certificate;

/// More keys than any identity provider publishes; bounds the work an
/// unknown-`kid`-less token can cause (each candidate is one signature check).
pub const MAX_KEYS: usize = 32;
/// RSA moduli below this are refused (NIST SP 800-131A).
pub const MIN_RSA_BITS: usize = 2048;
/// HMAC secrets shorter than the hash output are refused (RFC 7518 §3.2);
/// HS256 needs 32 bytes, HS384 48, HS512 64.
pub const MIN_HMAC_BYTES: usize = 32;

const OID_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const OID_EC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const OID_P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    Rsa,
    EcP256,
    EcP384,
    Ed25519,
    Hmac,
}

impl KeyType {
    /// The algorithm ↔ key binding (RFC 8725 §3.1).
    pub fn verifies(self, alg: Algorithm) -> bool {
        use Algorithm::*;
        matches!(
            (self, alg),
            (Self::Rsa, RS256 | RS384 | RS512 | PS256 | PS384 | PS512)
                | (Self::EcP256, ES256)
                | (Self::EcP384, ES384)
                | (Self::Ed25519, EdDSA)
                | (Self::Hmac, HS256 | HS384 | HS512)
        )
    }
}

/// Why keys could not be loaded. The message names the fault, never key
/// material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(pub String);

fn key_error(message: impl Into<String>) -> KeyError {
    KeyError(message.into())
}

pub struct Key {
    pub kid: Option<String>,
    pub key_type: KeyType,
    /// A JWK's `alg`: when present, the only algorithm this key verifies.
    pub alg: Option<Algorithm>,
    hmac_len: usize,
    pub(super) decoding: DecodingKey,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material (HMAC secrets live in `decoding`).
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("key_type", &self.key_type)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl Key {
    /// Whether this key may verify a token with this `alg` and `kid`.
    pub fn accepts(&self, alg: Algorithm, kid: Option<&str>) -> bool {
        let kid_ok = match (kid, self.kid.as_deref()) {
            (Some(token_kid), Some(key_kid)) => token_kid == key_kid,
            _ => true,
        };
        kid_ok
            && self.key_type.verifies(alg)
            && self.alg.is_none_or(|a| a == alg)
            && self.hmac_len >= hmac_min_len(alg)
    }
}

fn hmac_min_len(alg: Algorithm) -> usize {
    match alg {
        Algorithm::HS256 => 32,
        Algorithm::HS384 => 48,
        Algorithm::HS512 => 64,
        _ => 0,
    }
}

/// The keys one issuer signs with.
#[derive(Debug, Default)]
pub struct KeySet {
    keys: Vec<Key>,
}

impl KeySet {
    pub fn keys(&self) -> &[Key] {
        &self.keys
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }

    /// Adds the keys of `other` (inline keys of several kinds in one provider).
    pub fn extend(&mut self, other: KeySet) -> Result<(), KeyError> {
        self.keys.extend(other.keys);
        if self.keys.len() > MAX_KEYS {
            return Err(key_error(format!("more than {MAX_KEYS} keys")));
        }
        Ok(())
    }

    /// A JWKS document (RFC 7517 §5). Keys citygate cannot use for signatures
    /// (`use: enc`, other curves, `oct`) are skipped, because identity
    /// providers publish them next to their signing keys; a set without any
    /// usable key is an error.
    pub fn from_jwks_json(json: &str) -> Result<KeySet, KeyError> {
        let document: Value =
            serde_json::from_str(json).map_err(|_| key_error("the JWKS is not valid JSON"))?;
        let Some(entries) = document.get("keys").and_then(Value::as_array) else {
            return Err(key_error("the JWKS has no `keys` array"));
        };
        let keys: Vec<Key> = entries.iter().filter_map(key_from_jwk).collect();
        if keys.is_empty() {
            return Err(key_error("the JWKS holds no usable signature key"));
        }
        if keys.len() > MAX_KEYS {
            return Err(key_error(format!(
                "the JWKS holds more than {MAX_KEYS} keys"
            )));
        }
        Ok(KeySet { keys })
    }

    /// One PEM block: `PUBLIC KEY` (SPKI), `RSA PUBLIC KEY` (PKCS#1) or
    /// `CERTIFICATE` (its subject public key; the certificate itself is not
    /// validated, it is only a container for the key).
    pub fn from_pem(pem: &str) -> Result<KeySet, KeyError> {
        let (label, der) = der::pem::decode_vec(pem.trim().as_bytes())
            .map_err(|_| key_error("not a single well-formed PEM block"))?;
        let key = match label {
            "PUBLIC KEY" => key_from_spki(&der)?,
            "RSA PUBLIC KEY" => rsa_key(&der)?,
            "CERTIFICATE" => key_from_spki(&certificate_spki(&der)?)?,
            label if label.contains("PRIVATE") => {
                return Err(key_error(
                    "a private key was given; configure the public key or certificate",
                ))
            }
            _ => {
                return Err(key_error(
                    "expected a PUBLIC KEY, RSA PUBLIC KEY or CERTIFICATE PEM block",
                ))
            }
        };
        Ok(KeySet { keys: vec![key] })
    }

    /// A shared secret for HS256/384/512.
    pub fn from_hmac_secret(secret: &[u8]) -> Result<KeySet, KeyError> {
        if secret.len() < MIN_HMAC_BYTES {
            return Err(key_error(format!(
                "HMAC secrets must be at least {MIN_HMAC_BYTES} bytes"
            )));
        }
        Ok(KeySet {
            keys: vec![Key {
                kid: None,
                key_type: KeyType::Hmac,
                alg: None,
                hmac_len: secret.len(),
                decoding: DecodingKey::from_secret(secret),
            }],
        })
    }

    /// Gives every key without a `kid` this one (a configured PEM or secret
    /// with a known `kid`).
    pub fn with_kid(mut self, kid: &str) -> Self {
        for key in &mut self.keys {
            if key.kid.is_none() {
                key.kid = Some(kid.to_string());
            }
        }
        self
    }
}

fn key_from_jwk(jwk: &Value) -> Option<Key> {
    let field = |name: &str| jwk.get(name).and_then(Value::as_str);
    if field("use").is_some_and(|u| u != "sig") {
        return None;
    }
    let alg = match jwk.get("alg") {
        None => None,
        Some(Value::String(a)) => Some(a.parse::<Algorithm>().ok()?),
        Some(_) => return None,
    };
    let kid = match jwk.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => return None,
    };
    let (key_type, decoding) = match field("kty")? {
        "RSA" => {
            let (n, e) = (field("n")?, field("e")?);
            let modulus = URL_SAFE_NO_PAD.decode(n).ok()?;
            if significant_bits(&modulus) < MIN_RSA_BITS {
                return None;
            }
            URL_SAFE_NO_PAD.decode(e).ok()?;
            (KeyType::Rsa, DecodingKey::from_rsa_components(n, e).ok()?)
        }
        "EC" => {
            let (key_type, len) = match field("crv")? {
                "P-256" => (KeyType::EcP256, 32),
                "P-384" => (KeyType::EcP384, 48),
                _ => return None,
            };
            let (x, y) = (field("x")?, field("y")?);
            let lengths_ok = URL_SAFE_NO_PAD.decode(x).ok()?.len() == len
                && URL_SAFE_NO_PAD.decode(y).ok()?.len() == len;
            if !lengths_ok {
                return None;
            }
            (key_type, DecodingKey::from_ec_components(x, y).ok()?)
        }
        "OKP" if field("crv")? == "Ed25519" => {
            let x = URL_SAFE_NO_PAD.decode(field("x")?).ok()?;
            // jsonwebtoken slices the first 32 bytes of an Ed25519 key: a
            // shorter key must never reach it.
            if x.len() != 32 {
                return None;
            }
            (KeyType::Ed25519, DecodingKey::from_ed_der(&x))
        }
        _ => return None,
    };
    if alg.is_some_and(|a| !key_type.verifies(a)) {
        return None;
    }
    Some(Key {
        kid,
        key_type,
        alg,
        hmac_len: 0,
        decoding,
    })
}

fn key_from_spki(der: &[u8]) -> Result<Key, KeyError> {
    let spki = SubjectPublicKeyInfoRef::try_from(der)
        .map_err(|_| key_error("the public key is not valid DER (SubjectPublicKeyInfo)"))?;
    let bits = spki
        .subject_public_key
        .as_bytes()
        .ok_or_else(|| key_error("the public key bit string is malformed"))?;
    let oid = spki.algorithm.oid;
    if oid == OID_RSA {
        return rsa_key(bits);
    }
    let (key_type, decoding) = if oid == OID_EC {
        let curve = spki
            .algorithm
            .parameters_oid()
            .map_err(|_| key_error("the EC public key names no curve"))?;
        let key_type = match curve {
            c if c == OID_P256 => KeyType::EcP256,
            c if c == OID_P384 => KeyType::EcP384,
            _ => return Err(key_error("only EC curves P-256 and P-384 are supported")),
        };
        (key_type, DecodingKey::from_ec_der(bits))
    } else if oid == OID_ED25519 {
        if bits.len() != 32 {
            return Err(key_error("an Ed25519 public key is 32 bytes"));
        }
        (KeyType::Ed25519, DecodingKey::from_ed_der(bits))
    } else {
        return Err(key_error(
            "unsupported public key type (RSA, EC P-256/P-384 or Ed25519)",
        ));
    };
    Ok(Key {
        kid: None,
        key_type,
        alg: None,
        hmac_len: 0,
        decoding,
    })
}

/// A PKCS#1 `RSAPublicKey`.
fn rsa_key(pkcs1: &[u8]) -> Result<Key, KeyError> {
    let bits = rsa_modulus_bits(pkcs1).ok_or_else(|| key_error("malformed RSA public key"))?;
    if bits < MIN_RSA_BITS {
        return Err(key_error(format!(
            "RSA keys must have at least {MIN_RSA_BITS} bits"
        )));
    }
    Ok(Key {
        kid: None,
        key_type: KeyType::Rsa,
        alg: None,
        hmac_len: 0,
        decoding: DecodingKey::from_rsa_der(pkcs1),
    })
}

fn rsa_modulus_bits(pkcs1: &[u8]) -> Option<usize> {
    let mut reader = SliceReader::new(pkcs1).ok()?;
    let bits = reader
        .sequence(|seq| {
            let modulus = UintRef::decode(seq)?;
            UintRef::decode(seq)?;
            Ok(significant_bits(modulus.as_bytes()))
        })
        .ok()?;
    reader.finish(bits).ok()
}

fn significant_bits(big_endian: &[u8]) -> usize {
    let digits: &[u8] = match big_endian.iter().position(|b| *b != 0) {
        Some(first) => big_endian.get(first..).unwrap_or_default(),
        None => &[],
    };
    match digits.first() {
        Some(top) => (digits.len() - 1) * 8 + (8 - top.leading_zeros() as usize),
        None => 0,
    }
}

/// The `subjectPublicKeyInfo` of an X.509 certificate (RFC 5280 §4.1), as
/// DER. Nothing else of the certificate is trusted: its validity and chain
/// are the configuration author's to check.
fn certificate_spki(der: &[u8]) -> Result<Vec<u8>, KeyError> {
    let malformed = || key_error("malformed X.509 certificate");
    let certificate = Certificate::from_der(der).map_err(|_| malformed())?;
    certificate
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|_| malformed())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::jwt::testkeys;

    #[test]
    fn pem_public_keys_and_certificates_load_with_their_type() {
        let cases = [
            (testkeys::RSA_PUBLIC, KeyType::Rsa),
            (testkeys::RSA_CERT, KeyType::Rsa),
            (testkeys::EC256_PUBLIC, KeyType::EcP256),
            (testkeys::EC256_CERT, KeyType::EcP256),
            (testkeys::EC384_PUBLIC, KeyType::EcP384),
            (testkeys::ED25519_PUBLIC, KeyType::Ed25519),
        ];
        for (pem, expected) in cases {
            let set = KeySet::from_pem(pem).unwrap();
            assert_eq!(set.keys()[0].key_type, expected);
        }
    }

    #[test]
    fn pkcs1_rsa_public_keys_load() {
        let (_, spki_der) = der::pem::decode_vec(testkeys::RSA_PUBLIC.trim().as_bytes()).unwrap();
        let spki = SubjectPublicKeyInfoRef::try_from(spki_der.as_slice()).unwrap();
        let pkcs1 = spki.subject_public_key.as_bytes().unwrap();
        let pem =
            der::pem::encode_string("RSA PUBLIC KEY", der::pem::LineEnding::LF, pkcs1).unwrap();
        let set = KeySet::from_pem(&pem).unwrap();
        assert_eq!(set.keys()[0].key_type, KeyType::Rsa);
    }

    #[test]
    fn private_keys_and_garbage_are_refused_without_echoing_them() {
        let err = KeySet::from_pem(testkeys::EC256_PRIVATE).unwrap_err();
        assert!(err.0.contains("private key"), "{err}");
        assert!(!err.0.contains("MII"));
        assert!(
            KeySet::from_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----").is_err()
        );
        assert!(KeySet::from_pem("not pem").is_err());
    }

    #[test]
    fn short_hmac_secrets_are_refused() {
        assert!(KeySet::from_hmac_secret(&[7u8; 31]).is_err());
        let set = KeySet::from_hmac_secret(&[7u8; 32]).unwrap();
        let key = &set.keys()[0];
        assert!(key.accepts(Algorithm::HS256, None));
        assert!(!key.accepts(Algorithm::HS384, None), "HS384 needs 48 bytes");
        assert!(!key.accepts(Algorithm::RS256, None));
    }

    #[test]
    fn jwks_skips_unusable_keys_and_binds_alg_and_kid() {
        let rsa = testkeys::rsa_jwk("rsa-1");
        let jwks = serde_json::json!({"keys": [
            {"kty": "oct", "k": "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0", "kid": "sym"},
            {"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA", "kid": "p521"},
            {"kty": "OKP", "crv": "Ed25519", "x": "AAAA", "kid": "short"},
            {"kty": "RSA", "use": "enc", "n": rsa["n"], "e": "AQAB", "kid": "enc"},
            {"kty": "RSA", "alg": "ES256", "n": rsa["n"], "e": "AQAB", "kid": "lying-alg"},
            rsa,
        ]});
        let set = KeySet::from_jwks_json(&jwks.to_string()).unwrap();
        assert_eq!(set.keys().len(), 1);
        let key = &set.keys()[0];
        assert_eq!(key.kid.as_deref(), Some("rsa-1"));
        assert!(key.accepts(Algorithm::RS256, Some("rsa-1")));
        assert!(key.accepts(Algorithm::RS256, None));
        assert!(!key.accepts(Algorithm::RS256, Some("other")));
        assert!(!key.accepts(Algorithm::HS256, Some("rsa-1")));
    }

    #[test]
    fn jwks_without_usable_keys_is_an_error() {
        assert!(KeySet::from_jwks_json(r#"{"keys":[]}"#).is_err());
        assert!(KeySet::from_jwks_json(r#"{"keys":[{"kty":"oct","k":"AAAA"}]}"#).is_err());
        assert!(KeySet::from_jwks_json("[]").is_err());
        assert!(KeySet::from_jwks_json("{").is_err());
    }

    #[test]
    fn small_rsa_moduli_are_refused() {
        let jwks = serde_json::json!({"keys": [{"kty": "RSA", "n": URL_SAFE_NO_PAD.encode([0xffu8; 128]), "e": "AQAB"}]});
        assert!(KeySet::from_jwks_json(&jwks.to_string()).is_err());
        assert_eq!(significant_bits(&[0, 0, 1, 0]), 9);
        assert_eq!(significant_bits(&[0x80; 256]), 2048);
    }
}
