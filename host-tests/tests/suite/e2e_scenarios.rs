//! Dual mode: every scenario file of the policy pack runs against a real
//! Envoy too, so the wasmtime host and Envoy must agree case by case.

use std::path::Path;

use citygate_host::cli::{report, Summary};
use citygate_host::scenario::{find_scenarios, run_scenario, EnvoyTarget, Scenario, WasmTarget};
use citygate_host::wasm_build::{filter_wasm, workspace_root};
use citygate_host::Plugin;

use crate::support::{CaseCount, Runner, POLICY_PACK_CASES_FLOOR};

#[test]
fn the_policy_pack_scenarios_pass_in_envoy_and_in_wasmtime_alike() {
    let wasm = filter_wasm().unwrap();
    let plugin = Plugin::load(&wasm).unwrap();
    let files = find_scenarios(&workspace_root().join("policies")).unwrap();
    assert!(!files.is_empty());
    let (mut in_envoy, mut in_wasm) = (Summary::default(), Summary::default());
    let (mut envoy_count, mut wasm_count) =
        (CaseCount::new(Runner::Envoy), CaseCount::new(Runner::Wasm));
    let mut disagreements = Vec::new();
    for path in &files {
        let scenario = Scenario::load(Path::new(path)).unwrap();
        let mut envoy = EnvoyTarget::start(&wasm, &scenario).unwrap();
        let envoy_results = run_scenario(&scenario, &mut envoy, None);
        report(&envoy_results, false, &mut in_envoy);
        let mut wasm_target = WasmTarget::start(&plugin, &scenario).unwrap();
        let wasm_results = run_scenario(&scenario, &mut wasm_target, None);
        report(&wasm_results, false, &mut in_wasm);
        envoy_count.record_results(&scenario, &envoy_results);
        wasm_count.record_results(&scenario, &wasm_results);
        for envoy_case in &envoy_results {
            let wasm_case = wasm_results.iter().find(|w| w.case == envoy_case.case);
            let envoy_only = scenario
                .file
                .cases
                .iter()
                .any(|c| c.name == envoy_case.case && !c.runs_in("wasm"));
            if !envoy_only && wasm_case.map(|w| w.passed()) != Some(envoy_case.passed()) {
                disagreements.push(format!("{}::{}", envoy_case.scenario, envoy_case.case));
            }
        }
    }
    assert_eq!(
        in_envoy.failed, 0,
        "cases failing in Envoy are printed above"
    );
    assert_eq!(
        in_wasm.failed, 0,
        "cases failing in wasmtime are printed above"
    );
    assert!(
        disagreements.is_empty(),
        "wasmtime and Envoy disagree on {disagreements:?}"
    );
    // Not vacuous: every file ran every case that applies to each runner.
    envoy_count.assert_complete(&files, POLICY_PACK_CASES_FLOOR.1);
    wasm_count.assert_complete(&files, POLICY_PACK_CASES_FLOOR.0);
}
