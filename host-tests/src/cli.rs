//! What the `citygate` command does, as library functions so tests call the
//! same code the command runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::runtime::Plugin;
use crate::scenario::credentials::unix_now;
use crate::scenario::{find_scenarios, run_scenario, CaseResult, Scenario, WasmTarget};

pub use crate::demo::{CITY_CONFIG, CITY_ENV, DEFAULT_CREDENTIALS};

/// A path as given, else relative to the workspace root (so `cargo
/// citygate …` works from any directory of the checkout).
pub fn resolve(path: &Path) -> PathBuf {
    if path.exists() || path.is_absolute() {
        return path.to_path_buf();
    }
    let in_workspace = crate::wasm_build::workspace_root().join(path);
    if in_workspace.exists() {
        in_workspace
    } else {
        path.to_path_buf()
    }
}

/// Where the committed JSON Schema of the plugin configuration lives.
pub const SCHEMA_PATH: &str = "policies/config/citygate.schema.json";

/// The schema as committed (pretty, no trailing newline: `println!` adds it).
pub fn schema_text() -> Result<String> {
    Ok(serde_json::to_string_pretty(
        &citygate_core::config::json_schema(),
    )?)
}

pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Loads the config into the real .wasm. `Ok(Err(line))` is a rejected
/// configuration with the one line citygate logged (what Envoy shows).
pub fn check_config(
    wasm: &Path,
    json: &str,
    env: &BTreeMap<String, String>,
) -> Result<std::result::Result<String, String>> {
    let plugin = Plugin::load(wasm)?;
    let mut builder = plugin.vm().config(json.to_string());
    for (name, value) in env {
        builder = builder.env(name.clone(), value.clone());
    }
    match builder.start() {
        Ok(vm) => {
            let accepted = vm.logged("citygate: configuration accepted");
            if !accepted {
                bail!("the filter started but did not report an accepted configuration");
            }
            Ok(Ok("configuration accepted".to_string()))
        }
        Err(error) => {
            let text = format!("{error:#}");
            match text
                .lines()
                .find(|l| l.contains("citygate: invalid configuration"))
            {
                Some(line) => {
                    let start = line.find("citygate: invalid configuration").unwrap_or(0);
                    Ok(Err(line[start..].to_string()))
                }
                None => Err(error),
            }
        }
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    pub passed: usize,
    pub failed: usize,
    /// Each scenario file `test_dir` ran, in order, with the number of case
    /// results it gave (a file that fails to load or start gives one).
    pub scenario_files: Vec<(PathBuf, usize)>,
}

/// `citygate test DIR`: every scenario file through the .wasm, and every
/// `*_test.rego`; prints failures (and with `verbose` every case).
pub fn test_dir(wasm: &Path, dir: &Path, verbose: bool, filter: Option<&str>) -> Result<Summary> {
    let dir = resolve(dir);
    let plugin = Plugin::load(wasm)?;
    let mut summary = Summary::default();
    let scenarios = find_scenarios(&dir)?;
    if scenarios.is_empty() {
        eprintln!(
            "citygate: no scenario files (scenarios/*.yaml) below {}",
            dir.display()
        );
    }
    // A single scenario file given: only that file, no Rego tests.
    if dir.is_dir() {
        report(&rego_tests(&dir, filter)?, verbose, &mut summary);
    }
    for path in scenarios {
        let results = match Scenario::load(&path).and_then(|s| {
            let mut target = WasmTarget::start(&plugin, &s)?;
            Ok(run_scenario(&s, &mut target, filter))
        }) {
            Ok(results) => results,
            Err(e) => vec![CaseResult {
                scenario: path.display().to_string(),
                case: "(setup)".into(),
                failures: vec![format!("{e:#}")],
            }],
        };
        report(&results, verbose, &mut summary);
        summary.scenario_files.push((path, results.len()));
    }
    Ok(summary)
}

/// Every `*_test.rego` below `dir`, OPA-style: the `.rego` files of its
/// folder (and `data.json` there, if any) are loaded and each `test_` rule
/// must be true.
pub fn rego_tests(dir: &Path, filter: Option<&str>) -> Result<Vec<CaseResult>> {
    let mut folders = std::collections::BTreeSet::new();
    crate::scenario::load::walk(dir, &mut |path| {
        let is_test = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.ends_with("_test.rego"));
        if let (true, Some(parent)) = (is_test, path.parent()) {
            folders.insert(parent.to_path_buf());
        }
    })?;
    let mut results = Vec::new();
    for folder in folders {
        let mut modules = BTreeMap::new();
        for entry in std::fs::read_dir(&folder)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "rego") {
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                modules.insert(name, std::fs::read_to_string(&path)?);
            }
        }
        let data_path = folder.join("data.json");
        let data = if data_path.exists() {
            serde_json::from_str(&std::fs::read_to_string(&data_path)?)
                .with_context(|| format!("parsing {}", data_path.display()))?
        } else {
            serde_json::json!({})
        };
        let label = folder
            .strip_prefix(dir)
            .unwrap_or(&folder)
            .display()
            .to_string();
        let now = u64::try_from(unix_now()).unwrap_or(0) * 1_000_000_000;
        match citygate_core::policy::testing::run_rego_tests(&modules, &data, now) {
            Ok(tests) => results.extend(
                tests
                    .into_iter()
                    .filter(|t| filter.is_none_or(|f| format!("{label}::{}", t.name).contains(f)))
                    .map(|t| CaseResult {
                        scenario: label.clone(),
                        case: t.name,
                        failures: if t.passed {
                            Vec::new()
                        } else {
                            vec![format!(
                                "expected true, got {}",
                                t.error.unwrap_or_else(|| "false".into())
                            )]
                        },
                    }),
            ),
            Err(e) => results.push(CaseResult {
                scenario: label,
                case: "(compile)".into(),
                failures: vec![e.to_string()],
            }),
        }
    }
    Ok(results)
}

pub fn report(results: &[CaseResult], verbose: bool, summary: &mut Summary) {
    for result in results {
        if result.passed() {
            summary.passed += 1;
            if verbose {
                println!("ok    {}::{}", result.scenario, result.case);
            }
        } else {
            summary.failed += 1;
            println!("FAIL  {}::{}", result.scenario, result.case);
            for failure in &result.failures {
                println!("        {failure}");
            }
        }
    }
}
