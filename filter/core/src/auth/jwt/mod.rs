//! JSON Web Tokens: hardened verification ([`verify`], reusable by the
//! policy's `io.jwt.*` builtins), keys bound to their algorithms ([`keys`]),
//! remote key sets shared by all workers ([`jwks`]), the verified-token
//! cache ([`cache`]), claims → identity ([`claims`]) and the provider that
//! ties them together ([`provider`]).

pub mod cache;
pub mod claims;
pub mod jwks;
pub mod keys;
pub mod provider;
pub mod strict_json;
pub mod verify;

#[cfg(test)]
pub(crate) mod testkeys;

pub use keys::{KeyError, KeySet, KeyType};
pub use verify::{decode_unverified, verify_token, Claims, JwtError, VerifyOptions};
