//! citygate's core: the stages of a proxy-wasm filter for Envoy and Istio
//! gateways in front of a city's APIs. It authenticates callers, enforces
//! shared rate limits, evaluates Rego access policies and minimizes personal
//! data in responses.
//!
//! Plain Rust with no proxy-wasm import: it reaches the world through
//! [`host::Host`], so every stage is unit-tested natively. The crate
//! `citygate-filter` (filter/shell) adapts proxy-wasm to it. ARCHITECTURE.md
//! says which module may import which.

// A panic in the filter takes down an Envoy worker's Wasm VM: the core
// answers every failure with a value (tests may unwrap; see clippy.toml).
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod auth;
pub mod config;
pub mod cors;
pub mod decision_log;
pub mod deny;
pub mod host;
pub mod http;
pub mod identity;
pub mod ip_rules;
pub mod metrics;
pub mod ngsi;
pub mod normalize;
pub mod pipeline;
pub mod policy;
pub mod ratelimit;
pub mod redact;
pub mod request_limits;
