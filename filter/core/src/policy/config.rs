//! The `policy` section of the plugin configuration and the per-route options.

use std::collections::BTreeMap;

use serde::Deserialize;

/// Rego modules, their data document and how to evaluate them.
///
/// Without a `policy` section citygate evaluates no policy: every request a
/// route admits (after authentication and rate limits) is allowed.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Module file name → Rego source. The names appear in error messages.
    pub modules: BTreeMap<String, String>,
    /// The `data` document the policies read (default: empty object).
    #[serde(default = "empty_object")]
    pub data: serde_json::Value,
    /// The rule whose value is the decision.
    #[serde(default = "default_entrypoint")]
    pub entrypoint: String,
    /// Parse modules as Rego v0 (no `if`/`contains` keywords required).
    #[serde(default)]
    pub rego_v0: bool,
    /// Builtin errors fail the evaluation (and so deny) instead of making the
    /// expression undefined as in OPA.
    #[serde(default)]
    pub strict_builtin_errors: bool,
    /// Evaluate and log, never deny.
    #[serde(default)]
    pub dry_run: bool,
    /// Wall-clock budget of one evaluation; past it the request is denied.
    #[serde(default = "default_max_eval_micros")]
    pub max_eval_micros: u64,
    /// `auto` (regorus's bytecode VM when the policy can run on it, else its
    /// interpreter), `vm` (a policy the VM cannot run is a configuration
    /// error) or `interpreter`.
    #[serde(default = "default_evaluator")]
    pub evaluator: String,
}

/// Per-route policy options.
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
pub struct RoutePolicy {
    /// This route's decision comes from another rule than the global
    /// entrypoint (e.g. `data.city.open311.decision`).
    pub entrypoint: Option<String>,
    /// Dry-run for this route only (the global `dry_run` applies to all).
    pub dry_run: bool,
}

pub const DEFAULT_ENTRYPOINT: &str = "data.envoy.authz.allow";
pub const DEFAULT_MAX_EVAL_MICROS: u64 = 50_000;

fn default_entrypoint() -> String {
    DEFAULT_ENTRYPOINT.to_string()
}

fn default_evaluator() -> String {
    "auto".to_string()
}

fn default_max_eval_micros() -> u64 {
    DEFAULT_MAX_EVAL_MICROS
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(serde_json::Map::new())
}
