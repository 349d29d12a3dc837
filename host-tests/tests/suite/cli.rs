//! The `citygate` CLI's functions on the real .wasm: config checks name the
//! JSON path of a fault, and the policy pack's scenarios all pass.

use std::path::Path;

use citygate_host::cli;
use citygate_host::scenario::find_scenarios;
use citygate_host::wasm_build::{filter_wasm, workspace_root};

use crate::support::{CaseCount, Runner, POLICY_PACK_CASES_FLOOR};

fn check(json: &str) -> Result<String, String> {
    let env =
        citygate_host::env_file::read_env_file(&workspace_root().join(cli::CITY_ENV)).unwrap();
    cli::check_config(&filter_wasm().unwrap(), json, &env).unwrap()
}

#[test]
fn check_accepts_the_city_pack_configuration() {
    let json = std::fs::read_to_string(workspace_root().join(cli::CITY_CONFIG)).unwrap();
    assert_eq!(check(&json), Ok("configuration accepted".to_string()));
}

#[test]
fn check_names_the_json_path_of_a_typo_a_wrong_type_and_invalid_json() {
    for (json, expected) in [
        (
            r#"{"routes":[{"name":"x","match":{"path_prefx":"/"}}]}"#,
            "citygate: invalid configuration at $.routes[0].match.path_prefx: unknown field `path_prefx`",
        ),
        (
            r#"{"gateway":{"trusted_hops":"two"},"routes":[]}"#,
            "citygate: invalid configuration at $.gateway.trusted_hops: invalid type: string \"two\", expected u8",
        ),
        (
            "{\"routes\": [",
            "citygate: invalid configuration at $: invalid JSON at line 1 column 12",
        ),
        (
            r#"{"routes":[],"decision_log":{"pseudonym_key":"${env:NOT_SET_ANYWHERE}"}}"#,
            "citygate: invalid configuration at $.decision_log.pseudonym_key: environment variable `NOT_SET_ANYWHERE` is not set",
        ),
    ] {
        let line = check(json).unwrap_err();
        assert!(line.starts_with(expected), "for {json}\n got: {line}\nwant: {expected}…");
        assert!(!line.contains('\n'));
    }
}

#[test]
fn hash_key_is_the_sha256_hex_digest() {
    assert_eq!(
        cli::hash_key("abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}

#[test]
fn every_scenario_of_the_policy_pack_passes_in_the_wasm() {
    let summary =
        cli::test_dir(&filter_wasm().unwrap(), Path::new("policies"), false, None).unwrap();
    assert_eq!(summary.failed, 0, "scenario failures are printed above");
    // Not vacuous: every scenario file ran, each with all of its cases.
    let mut count = CaseCount::new(Runner::Wasm);
    for (path, results) in &summary.scenario_files {
        count.record(path, *results);
    }
    let found = find_scenarios(&workspace_root().join("policies")).unwrap();
    count.assert_complete(&found, POLICY_PACK_CASES_FLOOR.0);
}

#[test]
fn the_committed_city_pack_configuration_is_its_bundled_source() {
    let root = workspace_root();
    let bundled =
        citygate_host::bundle::bundle_text(&root.join("policies/config/city-gateway.src.json"))
            .unwrap();
    let committed = std::fs::read_to_string(root.join(cli::CITY_CONFIG)).unwrap();
    assert!(
        bundled == committed,
        "policies/config/city-gateway.json is out of date: run `cargo citygate bundle policies/config/city-gateway.src.json -o policies/config/city-gateway.json`"
    );
}

/// The pack's filter lists (policies/rego/data.json) follow the redaction
/// profiles they protect: a profile that starts hiding an attribute must
/// stop callers filtering on it, or the filter answers what the answer
/// hides.
#[test]
fn the_city_packs_filterable_attributes_follow_the_redaction_profiles() {
    let root = workspace_root();
    let read = |path: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(root.join(path)).unwrap()).unwrap()
    };
    let data = read("policies/rego/data.json");
    let profiles = read("policies/config/redaction.json")["redaction"]["profiles"].clone();
    let names = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap().to_string())
            .collect()
    };
    let ruled = |profile: &serde_json::Value| -> Vec<String> {
        let mut all = Vec::new();
        for rule in profile["rules"].as_array().unwrap() {
            if let Some(fields) = rule.get("fields") {
                all.extend(names(fields));
            }
        }
        all
    };
    // Open data: what the allowlist keeps and no rule changes.
    let open = &profiles["open-data"];
    let changed = ruled(open);
    let mut shown: Vec<String> = names(&open["allow"])
        .into_iter()
        .filter(|a| a != "@context" && !changed.contains(a))
        .collect();
    let mut listed = names(&data["city"]["open_data_query_attrs"]);
    shown.sort();
    listed.sort();
    assert_eq!(listed, shown, "data.city.open_data_query_attrs");
    assert!(!listed.contains(&"location".to_string()));
    // Analysts: everything a field rule of their profile touches.
    let mut hidden = ruled(&profiles["analyst"]);
    let mut listed = names(&data["city"]["analyst_hidden_attrs"]);
    hidden.sort();
    hidden.dedup();
    listed.sort();
    assert_eq!(listed, hidden, "data.city.analyst_hidden_attrs");
    assert!(listed.contains(&"licensePlate".to_string()));
}

#[test]
fn the_readme_lists_every_metric() {
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).unwrap();
    for metric in citygate_core::metrics::Metric::ALL {
        assert!(
            readme.contains(&format!("`{}`", metric.name())),
            "README.md lacks {}",
            metric.name()
        );
    }
}
