//! JSON Web Tokens: hardened verification ([`verify`]), keys bound to their
//! algorithms ([`keys`]).

pub mod keys;
pub mod strict_json;
pub mod verify;

#[cfg(test)]
pub(crate) mod testkeys;

pub use keys::{KeyError, KeySet, KeyType};
pub use verify::{decode_unverified, verify_token, Claims, JwtError, VerifyOptions};
