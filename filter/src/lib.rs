//! citygate: a proxy-wasm filter for Envoy and Istio gateways in front of a
//! city's APIs. It authenticates callers, enforces shared rate limits,
//! evaluates Rego access policies and minimizes personal data in responses.
//!
//! The core (every module but `proxy`) is plain Rust with no proxy-wasm
//! import; it reaches the world through [`host::Host`]. The `proxy` module is
//! the thin shell that adapts proxy-wasm to it.

pub mod auth;
pub mod config;
pub mod decision_log;
pub mod deny;
pub mod host;
pub mod identity;
pub mod metrics;
pub mod normalize;
pub mod pipeline;
pub mod policy;
pub mod ratelimit;
pub mod redact;

mod proxy;
