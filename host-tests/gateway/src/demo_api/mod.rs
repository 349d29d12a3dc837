//! The demo city API: the upstream behind the gateway in `cargo demo` and in
//! the Envoy end-to-end tests.
//!
//! It speaks just enough NGSI-v2 (normalized and `options=keyValues`),
//! NGSI-LD and Open311 GeoReport v2 to exercise citygate's stages on
//! realistic payloads, full of (obviously fictional) personal data: driver
//! names, licence plates, GPS positions, reporters' e-mails and phones. It
//! also serves the JWKS the gateway verifies JWTs with, the `/echo` endpoint
//! (what reached upstream), and `/test/*` bodies that a response minimizer
//! must handle or refuse (chunked, gzip, malformed, huge, text).
//!
//! Every request is recorded so a test can assert whether it reached
//! upstream and with which headers.

mod datasets;
mod fixtures;
mod jwks;
mod reply;
mod request;
mod routes;
mod scripted;
mod server;
#[cfg(test)]
mod tests;

pub use datasets::key_values;
pub use jwks::{JwksControl, JwksMode};
pub use reply::{POWERED_BY_HEADER, SERVER_HEADER};
pub use request::ReceivedRequest;
pub use scripted::ScriptedReply;
pub use server::DemoApi;
