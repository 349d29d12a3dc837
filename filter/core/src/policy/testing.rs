//! Runs OPA-style Rego unit tests (`test_*` rules, `with input as …`) with
//! the same engine, extensions and options the filter uses, so a policy
//! pack's `*_test.rego` proves what the gateway will do.

use std::collections::BTreeMap;

use regorus::unstable::{Rule, RuleHead};
use regorus::Value;

use super::config::PolicyConfig;
use super::engine::{one_line, PreparedPolicy};
use crate::config::ConfigError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegoTestResult {
    /// `data.<package>.<test rule>`.
    pub name: String,
    pub passed: bool,
    /// Why it failed: `false`, undefined, or the evaluation error.
    pub error: Option<String>,
}

/// Loads `modules` (policies and their tests) with `data` and evaluates
/// every `test_` rule. `now_unix_nanos` is what `time.now_ns` returns.
pub fn run_rego_tests(
    modules: &BTreeMap<String, String>,
    data: &serde_json::Value,
    now_unix_nanos: u64,
) -> Result<Vec<RegoTestResult>, ConfigError> {
    let config = PolicyConfig {
        modules: modules.clone(),
        data: data.clone(),
        entrypoint: super::DEFAULT_ENTRYPOINT.to_string(),
        rego_v0: false,
        strict_builtin_errors: false,
        dry_run: false,
        max_eval_micros: 10_000_000,
        // Test rules use `with`, which only the interpreter has.
        evaluator: "interpreter".to_string(),
    };
    let prepared = PreparedPolicy::load(&config)?;
    prepared.clock().set(now_unix_nanos);
    let mut engine = prepared.engine();
    let mut names: Vec<String> = Vec::new();
    for module in engine.get_modules() {
        let package = module.package.refr.span().text().to_string();
        for rule in &module.policy {
            if let Rule::Spec {
                head: RuleHead::Compr { refr, .. },
                ..
            } = rule.as_ref()
            {
                let rule_name = refr.span().text();
                let name = format!("data.{package}.{rule_name}");
                if rule_name.starts_with("test_") && !names.contains(&name) {
                    names.push(name);
                }
            }
        }
    }
    Ok(names
        .into_iter()
        .map(|name| {
            let mut engine = engine.clone();
            let (passed, error) = match engine.eval_rule(name.clone()) {
                Ok(Value::Bool(true)) => (true, None),
                Ok(Value::Undefined) => (false, Some("undefined".to_string())),
                Ok(other) => (false, Some(format!("evaluated to {other:?}"))),
                Err(e) => (false, Some(one_line(&e.to_string()))),
            };
            RegoTestResult {
                name,
                passed,
                error,
            }
        })
        .collect())
}
