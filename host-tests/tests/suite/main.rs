//! citygate-host's integration and end-to-end tests, one module per area, in one
//! test binary: each binary links wasmtime, and one link instead of two dozen
//! keeps a test build small and quick (`cargo test -p citygate-host --test
//! suite e2e_faults::` runs one area).

// The test guest of the ABI tests (a thin export per hostcall).
#[path = "common/guest.rs"]
mod guest;

mod abi_headers;
mod abi_shared;
mod abi_stream;
mod attacks_wasm;
mod auth_wasm;
mod city_mix_wasm;
mod cli;
mod e2e_auth;
mod e2e_demo;
mod e2e_envoy;
mod e2e_faults;
mod e2e_introspection;
mod e2e_policy;
mod e2e_production;
mod e2e_ratelimit;
mod e2e_redaction;
mod e2e_scenarios;
mod e2e_secrets_hygiene;
mod eval;
mod fuel_budget;
mod fuzz_regressions;
mod introspection_wasm;
// The fuzz targets' drivers, at the crate root as in their fuzz crates
// (wasm_driver names `crate::drivers`), replayed by fuzz_regressions.
#[path = "../../../filter/fuzz/drivers.rs"]
mod drivers;
mod istio;
mod observability;
mod oci;
mod policy_wasm;
mod ratelimit_wasm;
mod redaction_wasm;
mod scenario_blind_spots;
mod schema;
// Helpers the areas share.
mod support;
#[path = "../../fuzz/wasm_driver.rs"]
mod wasm_driver;
