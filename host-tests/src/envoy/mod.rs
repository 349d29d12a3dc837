//! A real Envoy running citygate: the shared pieces come from
//! `citygate-gateway` (install, bootstrap, process, admin API); the
//! production gateway (TLS, mTLS devices, live-reloaded configuration) and
//! its certificates live here.

pub use citygate_gateway::envoy::*;

pub mod pki;
pub mod production;
