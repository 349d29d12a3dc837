//! Demo keys (test only, see `testdata/README.md`) and a token minter that
//! can write any header, including the hostile ones the verifier refuses.
//! Not every test uses every fixture.
#![allow(dead_code)]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use der::asn1::UintRef;
use der::{Decode, Reader, SliceReader};
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{json, Value};

pub const RSA_PRIVATE: &str = include_str!("../testdata/demo-rsa-2048.private.pkcs1.pem");
pub const RSA_PUBLIC: &str = include_str!("../testdata/demo-rsa-2048.public.pem");
pub const RSA_CERT: &str = include_str!("../testdata/demo-rsa-2048.cert.pem");
pub const RSA2_PRIVATE: &str = include_str!("../testdata/demo-rsa-2048-rotated.private.pkcs1.pem");
pub const RSA2_PUBLIC: &str = include_str!("../testdata/demo-rsa-2048-rotated.public.pem");
pub const EC256_PRIVATE: &str = include_str!("../testdata/demo-ec-p256.private.pem");
pub const EC256_PUBLIC: &str = include_str!("../testdata/demo-ec-p256.public.pem");
pub const EC256_CERT: &str = include_str!("../testdata/demo-ec-p256.cert.pem");
pub const EC384_PRIVATE: &str = include_str!("../testdata/demo-ec-p384.private.pem");
pub const EC384_PUBLIC: &str = include_str!("../testdata/demo-ec-p384.public.pem");
pub const ED25519_PRIVATE: &str = include_str!("../testdata/demo-ed25519.private.pem");
pub const ED25519_PUBLIC: &str = include_str!("../testdata/demo-ed25519.public.pem");
pub const HMAC_SECRET: &[u8] = b"citygate-demo-hmac-secret-test-only-64-bytes-long-0123456789abcd";

fn pem_der(pem: &str) -> Vec<u8> {
    der::pem::decode_vec(pem.trim().as_bytes()).unwrap().1
}

/// The private key for `alg` (RSA keys are PKCS#1, the others PKCS#8).
pub fn signing_key(private_pem: &str, alg: Algorithm) -> EncodingKey {
    let der = pem_der(private_pem);
    match alg {
        Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_der(&der),
        Algorithm::EdDSA => EncodingKey::from_ed_der(&der),
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
            EncodingKey::from_secret(private_pem.as_bytes())
        }
        _ => EncodingKey::from_rsa_der(&der),
    }
}

pub fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

/// A token with exactly this header and these claims, signed as `alg`.
pub fn mint(header: &Value, claims: &Value, key: &EncodingKey, alg: Algorithm) -> String {
    let message = format!("{}.{}", b64(header), b64(claims));
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), key, alg).unwrap();
    format!("{message}.{signature}")
}

pub fn mint_rs256(kid: &str, claims: &Value) -> String {
    mint(
        &json!({"alg": "RS256", "typ": "JWT", "kid": kid}),
        claims,
        &signing_key(RSA_PRIVATE, Algorithm::RS256),
        Algorithm::RS256,
    )
}

/// The public JWK of a PKCS#1 RSA private key's public part.
fn rsa_jwk_of(public_pem: &str, kid: &str) -> Value {
    let spki = pem_der(public_pem);
    let info = spki::SubjectPublicKeyInfoRef::try_from(spki.as_slice()).unwrap();
    let pkcs1 = info.subject_public_key.as_bytes().unwrap();
    let mut reader = SliceReader::new(pkcs1).unwrap();
    let (n, e) = reader
        .sequence(|seq| {
            let n = UintRef::decode(seq)?.as_bytes().to_vec();
            let e = UintRef::decode(seq)?.as_bytes().to_vec();
            Ok((n, e))
        })
        .unwrap();
    json!({"kty": "RSA", "kid": kid, "use": "sig", "n": URL_SAFE_NO_PAD.encode(n), "e": URL_SAFE_NO_PAD.encode(e)})
}

pub fn rsa_jwk(kid: &str) -> Value {
    rsa_jwk_of(RSA_PUBLIC, kid)
}

pub fn rotated_rsa_jwk(kid: &str) -> Value {
    rsa_jwk_of(RSA2_PUBLIC, kid)
}

pub fn jwks(keys: &[Value]) -> String {
    json!({ "keys": keys }).to_string()
}
