//! citygate as a proxy-wasm filter: the thin shell that adapts Envoy's
//! callbacks to `citygate-core` and holds the per-request state machine.
//! Nothing here decides; it moves bytes between the proxy and
//! [`citygate_core::pipeline::CompiledConfig`].
//!
//! - `envoy_host`: the core's `Host` as proxy-wasm hostcalls;
//! - `root`: the root context (configuration, tick, callouts, requests
//!   waiting for keys);
//! - `http_context`: one HTTP stream, one callback at a time;
//! - `state`, `waiters`: what a stream and a waiting request hold.

// A panic here takes down an Envoy worker's Wasm VM.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod envoy_host;
mod http_context;
mod root;
mod state;
mod waiters;

use proxy_wasm::traits::RootContext;
use proxy_wasm::types::LogLevel;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|context_id| -> Box<dyn RootContext> {
        Box::new(root::CitygateRoot::new(context_id))
    });
}}
