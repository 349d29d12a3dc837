//! Secrets hygiene: after every scenario file of the policy pack (the attack
//! corpus included) has run against a real Envoy, Envoy's log and access log
//! hold none of the planted credentials, secrets or personal values; nor
//! does the filter's own log in wasmtime. What is searched for:
//! - any JWT (every token the scenarios mint or tamper starts with `eyJ`);
//! - the demo API keys and the HS256 secret (`policies/demo-keys`);
//! - any demo opaque token (they all start with `cgo_`, made-up ones in
//!   the corpus too) and the gateway's introspection client secret;
//! - the body of each DEMO ONLY private key;
//! - every secret the scenarios put in the VM environment;
//! - personal values planted in upstream replies and demo data: e-mail
//!   addresses, the planted names, phones and licence plates.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use citygate_host::cli::{report, Summary};
use citygate_host::envoy::EnvoyProcess;
use citygate_host::scenario::{find_scenarios, run_scenario, EnvoyTarget, Scenario, WasmTarget};
use citygate_host::wasm_build::{filter_wasm, workspace_root};
use citygate_host::Plugin;
use regex::Regex;

use crate::support::{eventually, CaseCount, Runner, POLICY_PACK_CASES_FLOOR};

/// Upper bound for Envoy to flush its logs (a loaded machine is slow).
const PATIENCE: Duration = Duration::from_secs(20);

/// Personal values the corpus and the city pack's scenarios plant in
/// upstream replies (fictional people).
const PLANTED_PERSONAL_VALUES: &[&str] = &[
    "Erika Mustermann",
    "Max Mustermann",
    "+49 170 1234567",
    "M-XY 4711",
];

/// Everything no log may contain, with a label that names its kind only.
fn planted() -> Result<Vec<(String, String)>> {
    let root = workspace_root();
    let keys = root.join("policies/demo-keys");
    let mut needles: BTreeSet<(String, String)> = BTreeSet::new();
    needles.insert(("a JWT".into(), "eyJ".into()));

    let credentials: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(keys.join("credentials.yaml"))?)?;
    for (name, key) in credentials["api_keys"].as_mapping().into_iter().flatten() {
        let label = format!("the API key {}", name.as_str().unwrap_or_default());
        needles.insert((label, key.as_str().unwrap_or_default().to_string()));
    }
    needles.insert(("an opaque token".into(), "cgo_".into()));
    if let Some(secret) = credentials["introspection"]["client_secret"].as_str() {
        needles.insert(("the introspection client secret".into(), secret.to_string()));
    }
    for issuer in credentials["issuers"].as_mapping().into_iter().flatten() {
        for key in issuer.1["keys"].as_mapping().into_iter().flatten() {
            if let Some(secret) = key.1["secret"].as_str() {
                needles.insert(("an HMAC secret".into(), secret.to_string()));
            }
        }
    }
    for entry in std::fs::read_dir(&keys)? {
        let path = entry?.path();
        if path.to_string_lossy().ends_with(".demo-only.key.pem") {
            let pem = std::fs::read_to_string(&path)?;
            for line in pem
                .lines()
                .filter(|l| !l.starts_with("-----") && l.len() >= 32)
            {
                needles.insert(("a private key".into(), line.to_string()));
            }
        }
    }
    for path in find_scenarios(&root.join("policies"))? {
        for (name, value) in Scenario::load(&path)?.env {
            needles.insert((format!("the secret {name}"), value));
        }
    }

    let email = Regex::new(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")?;
    let mut data = Vec::new();
    for dir in ["policies", "host-tests/gateway/src/demo_api/data"] {
        citygate_host::scenario::load::walk(&root.join(dir), &mut |path| {
            let text_file = matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("json" | "yaml")
            );
            if text_file {
                data.push(std::fs::read(path).unwrap_or_default());
            }
        })?;
    }
    for bytes in &data {
        for found in email.find_iter(&String::from_utf8_lossy(bytes)) {
            needles.insert(("an e-mail address".into(), found.as_str().to_string()));
        }
    }
    for value in PLANTED_PERSONAL_VALUES {
        needles.insert(("a planted personal value".into(), value.to_string()));
    }
    Ok(needles
        .into_iter()
        .filter(|(_, needle)| needle.len() >= 3)
        .collect())
}

/// The labels of what `text` holds.
fn leaks(text: &str, needles: &[(String, String)]) -> Vec<String> {
    needles
        .iter()
        .filter(|(_, needle)| text.contains(needle.as_str()))
        .map(|(label, _)| label.clone())
        .collect()
}

/// How many requests the Envoy runner sends for `scenario`: each repeat of
/// each case that is not `wasm_only`.
fn requests_in_envoy(scenario: &Scenario) -> usize {
    scenario
        .file
        .cases
        .iter()
        .filter(|case| case.wasm_only.is_none())
        .map(|case| case.repeat.max(1) as usize)
        .sum()
}

/// The access log once it holds a line for each of the `requests` sent
/// (Envoy is asked to reopen, and so flush, it).
fn flushed_access_log(envoy: &EnvoyProcess, requests: usize) -> Result<String> {
    let path = envoy.run_dir().join("access.log");
    ureq::post(envoy.admin_url("/reopen_logs")).send_empty()?;
    eventually(PATIENCE, "an access log line per request", || {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        Ok((text.lines().count() >= requests).then_some(text))
    })
}

/// The decision lines (one JSON object per decision) of a log.
fn decisions(log: &str) -> usize {
    log.lines()
        .filter(|line| line.contains(r#""outcome":""#))
        .count()
}

#[test]
fn no_log_holds_a_token_key_secret_or_personal_value_after_the_scenario_suite() -> Result<()> {
    let needles = planted()?;
    assert!(
        needles.len() >= 20,
        "only {} values to look for",
        needles.len()
    );
    let wasm = filter_wasm()?;
    let plugin = Plugin::load(&wasm)?;
    let files = find_scenarios(&workspace_root().join("policies"))?;
    let (mut in_envoy, mut in_wasm) = (Summary::default(), Summary::default());
    let (mut envoy_count, mut wasm_count) =
        (CaseCount::new(Runner::Envoy), CaseCount::new(Runner::Wasm));
    let mut found = Vec::new();
    let mut logged_bytes = 0;
    for path in &files {
        let scenario = Scenario::load(Path::new(path))?;

        let mut envoy = EnvoyTarget::start(&wasm, &scenario)?;
        let results = run_scenario(&scenario, &mut envoy, None);
        report(&results, false, &mut in_envoy);
        envoy_count.record_results(&scenario, &results);
        let requests = requests_in_envoy(&scenario);
        let access = flushed_access_log(envoy.envoy(), requests)?;
        let log = envoy.envoy().log();
        drop(envoy);
        // Not vacuous: each log searched below holds the requests' traces.
        let name = scenario.name();
        assert_eq!(
            access.lines().count(),
            requests,
            "{name}: the access log holds one line per request sent"
        );
        assert!(
            decisions(&log) >= 1,
            "{name}: Envoy's log holds no decision line"
        );

        let mut target = WasmTarget::start(&plugin, &scenario)?;
        let results = run_scenario(&scenario, &mut target, None);
        report(&results, false, &mut in_wasm);
        wasm_count.record_results(&scenario, &results);
        let guest: String = target
            .vm()
            .logs()
            .iter()
            .map(|entry| format!("{}\n", entry.message))
            .collect();
        assert!(
            decisions(&guest) >= 1,
            "{name}: the filter's log in wasmtime holds no decision line"
        );

        for (what, text) in [
            ("Envoy's log", &log),
            ("the access log", &access),
            ("the filter's log in wasmtime", &guest),
        ] {
            logged_bytes += text.len();
            for label in leaks(text, &needles) {
                found.push(format!("{name}: {what} holds {label}"));
            }
        }
    }
    // The suite really ran (and wrote logs), so the search is not vacuous.
    assert_eq!(
        in_envoy.failed + in_wasm.failed,
        0,
        "failures are printed above"
    );
    envoy_count.assert_complete(&files, POLICY_PACK_CASES_FLOOR.1);
    wasm_count.assert_complete(&files, POLICY_PACK_CASES_FLOOR.0);
    assert!(logged_bytes > 100_000, "only {logged_bytes} bytes logged");
    assert!(found.is_empty(), "{found:#?}");
    Ok(())
}
