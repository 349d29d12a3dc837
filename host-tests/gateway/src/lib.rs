//! citygate-gateway: citygate in a real Envoy, without wasmtime.
//!
//! What `cargo demo` and the Envoy end-to-end tests share: the release build
//! of the filter's `.wasm` ([`wasm_build`]), the official Envoy from PyPI and
//! its process and admin API ([`envoy`]), the demo city API behind the
//! gateway ([`demo_api`]), the DEMO ONLY credentials ([`credentials`]) and
//! the demo authorization server's token introspection ([`introspection`]), the
//! VM environment files ([`env_file`]), a real Prometheus with the shipped
//! scrape configuration and alerts ([`prometheus`]) and the demo itself
//! with its guided tour ([`demo`]).
//!
//! The crate depends on nothing of the wasmtime host, so the demo builds in
//! minutes on a fresh machine; `citygate-host` re-exports these modules under
//! the paths its tests have always used.

pub mod credentials;
pub mod demo;
pub mod demo_api;
pub mod env_file;
pub mod envoy;
pub mod introspection;
pub mod prometheus;
pub mod wasm_build;
