//! Scenario files: declarative request cases that run through the real
//! .wasm in wasmtime (`citygate test`) and against a real Envoy (the e2e
//! suite), with expectations on status, headers, body and what reached the
//! upstream. Credentials are references minted from demo keys.

pub use citygate_gateway::credentials;
pub mod envoy_target;
pub mod expect;
pub mod file;
pub mod load;
pub mod run;

pub use envoy_target::EnvoyTarget;
pub use load::{find_scenarios, Scenario};
pub use run::{run_scenario, CaseResult, Target, WasmTarget};
