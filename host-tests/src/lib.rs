//! citygate-host: a wasmtime embedding of the proxy-wasm ABI 0.2.1 (plus the
//! WASI preview1 subset Envoy provides) that drives the real citygate `.wasm`
//! the way Envoy does, for tests, benchmarks and the `citygate` CLI.
//!
//! Layers: [`abi`] (one module per hostcall family), [`runtime`] (engine,
//! compile cache, import policy, fuel-metered guest calls) and [`harness`]
//! (the fluent API: VMs, requests, upstream replies, callouts).
//!
//! Where the host knowingly differs from Envoy — a clock that stands still
//! until a test moves it, ticks and callouts only when driven (callout
//! timeouts never enforced), cluster names unchecked unless configured, no
//! automatic `content-length`, no `x-request-id`, path and headers (and
//! `x-forwarded-for`) as the test wrote them, no shared data between VMs
//! unless built on one store — is listed in ARCHITECTURE.md, "Where the
//! wasmtime host differs from Envoy".

pub mod abi;
pub mod harness;
pub mod runtime;

// The gateway benchmark's citygate configuration and city-mix workload,
// shared by `cargo bench-gateway` and the suite's checks of them.
pub mod bench_config;
pub mod bundle;
pub mod city_mix;
pub mod cli;
pub mod envoy;
pub mod eval;
pub mod package;
pub mod scenario;

// What runs citygate in a real Envoy without wasmtime (and `cargo demo`),
// under the paths the tests, the CLI and the benchmarks have always used.
pub use citygate_gateway::{
    credentials, demo, demo_api, env_file, introspection, prometheus, wasm_build,
};

pub use abi::state::{
    CalloutReply, CalloutRequest, Clock, Connection, GrpcCallRequest, GrpcReply, GuestLocalReply,
    Headers, Hostcalls, LogEntry, MetricKind, PeerCert, ProxyLogLevel, SharedStore,
};
pub use abi::Status;
pub use harness::{
    ClientResponse, Delivery, Exchange, Request, RequestOutcome, Upstream, UpstreamRequest, Vm,
    VmBuilder,
};
pub use runtime::{FuelUse, Plugin, Runtime};
