//! citygate's side of the gateway benchmark (`cargo bench-gateway`): the plugin configuration
//! (`envoy/bench/citygate-bench.json`), its VM environment and the DEMO ONLY
//! credentials every variant is sent.
//!
//! The configuration file may hold these whole-string placeholders, so it
//! stays in step with the demo keys and the city policy pack:
//!
//! | placeholder | becomes |
//! |---|---|
//! | `"{{jwks:ISSUER}}"` | the demo issuer's public JWKS (its RS256 key), an object |
//! | `"{{jwks-all:ISSUER}}"` | the same with every public key of the issuer |
//! | `"{{issuer:ISSUER}}"`, `"{{audience:ISSUER}}"` | its `iss` / `aud` |
//! | `"{{file:PATH}}"` | the text of a file (e.g. a Rego module) |
//! | `"{{json:PATH}}"`, `"{{json:PATH#/pointer}}"` | a JSON document, or a part of it |
//!
//! PATH is relative to the configuration file.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::scenario::credentials::{Credentials, CredentialsFile, Tamper};
use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

/// The demo issuer and token of the benchmark: an RS256 token of the
/// `city-operator` role.
pub const ISSUER: &str = "city-idp";
pub const TOKEN: &str = "operator";
pub const KEY_ID: &str = "demo-rs256-2026";

pub struct Demo {
    credentials: Credentials,
    file: CredentialsFile,
    env_file: PathBuf,
}

impl Demo {
    pub fn load(root: &Path) -> Result<Self> {
        let path = root.join("policies/demo-keys/credentials.yaml");
        let text =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        Ok(Self {
            credentials: Credentials::load(&path)?,
            file: serde_yaml_ng::from_str(&text)?,
            env_file: root.join("policies/config/demo.env"),
        })
    }

    /// A fresh operator token (valid an hour: mint one per Envoy start).
    pub fn token(&self) -> Result<String> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        self.credentials
            .mint(TOKEN, Tamper::None, i64::try_from(now)?)
    }

    /// The demo credentials (the city mix mints its callers from them).
    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// The issuer's JWKS with the token's RS256 key only.
    pub fn jwks(&self, issuer: &str) -> Result<Value> {
        self.credentials.jwks(issuer, Some(&[KEY_ID]))
    }

    pub fn issuer(&self, issuer: &str) -> Result<(&str, &str)> {
        let spec = self
            .file
            .issuers
            .get(issuer)
            .ok_or_else(|| anyhow!("no demo issuer `{issuer}`"))?;
        Ok((&spec.issuer, &spec.audience))
    }

    /// `policies/config/demo.env`: the DEMO ONLY secrets of the configuration.
    pub fn vm_env(&self) -> Result<BTreeMap<String, String>> {
        let text = fs::read_to_string(&self.env_file)
            .with_context(|| format!("reading {}", self.env_file.display()))?;
        Ok(text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect())
    }

    /// The configuration file with its placeholders filled, plus `extra_rules`
    /// appended to `rate_limits.rules`.
    pub fn plugin_config(&self, path: &Path, extra_rules: &[Value]) -> Result<Value> {
        let text =
            fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut config: Value =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        self.fill(&mut config, dir)
            .with_context(|| format!("filling {}", path.display()))?;
        if !extra_rules.is_empty() {
            let rules = config
                .pointer_mut("/rate_limits/rules")
                .and_then(Value::as_array_mut)
                .ok_or_else(|| anyhow!("{} has no rate_limits.rules", path.display()))?;
            rules.extend(extra_rules.iter().cloned());
        }
        Ok(config)
    }

    fn fill(&self, node: &mut Value, dir: &Path) -> Result<()> {
        match node {
            Value::String(text) => {
                if let Some(inner) = text.strip_prefix("{{").and_then(|t| t.strip_suffix("}}")) {
                    *node = self.placeholder(inner.trim(), dir)?;
                }
            }
            Value::Array(items) => items.iter_mut().try_for_each(|v| self.fill(v, dir))?,
            Value::Object(fields) => fields.values_mut().try_for_each(|v| self.fill(v, dir))?,
            _ => {}
        }
        Ok(())
    }

    fn placeholder(&self, inner: &str, dir: &Path) -> Result<Value> {
        let (kind, arg) = inner
            .split_once(':')
            .ok_or_else(|| anyhow!("placeholder {{{{{inner}}}}} has no kind"))?;
        Ok(match kind {
            "jwks" => self.jwks(arg)?,
            "jwks-all" => self.credentials.jwks(arg, None)?,
            "issuer" => Value::from(self.issuer(arg)?.0),
            "audience" => Value::from(self.issuer(arg)?.1),
            "file" => Value::from(
                fs::read_to_string(dir.join(arg)).with_context(|| format!("reading {arg}"))?,
            ),
            "json" => {
                let (file, pointer) = arg.split_once('#').unwrap_or((arg, ""));
                let text = fs::read_to_string(dir.join(file))
                    .with_context(|| format!("reading {file}"))?;
                let doc: Value =
                    serde_json::from_str(&text).with_context(|| format!("parsing {file}"))?;
                doc.pointer(pointer)
                    .cloned()
                    .ok_or_else(|| anyhow!("{file} has nothing at `{pointer}`"))?
            }
            _ => bail!("unknown placeholder kind `{kind}` in {{{{{inner}}}}}"),
        })
    }
}

/// Which citygate stages a configuration exercises, for the report.
pub fn stages(config: &Value) -> Vec<String> {
    let present = |pointer: &str| config.pointer(pointer).is_some_and(|v| !v.is_null());
    let count = |pointer: &str| {
        config
            .pointer(pointer)
            .and_then(Value::as_array)
            .map_or(0, Vec::len)
    };
    let mut stages = vec!["normalize".to_owned()];
    if count("/auth/jwt/providers") > 0 {
        stages.push("auth (JWT)".into());
    }
    if count("/rate_limits/rules") > 0 {
        stages.push(format!(
            "rate limits ({} rules)",
            count("/rate_limits/rules")
        ));
    }
    if present("/policy") {
        stages.push("policy (Rego)".into());
    }
    if present("/redaction/profiles") {
        stages.push("redaction".into());
    }
    if config.pointer("/decision_log/enabled") != Some(&Value::Bool(false)) {
        stages.push("decision log".into());
    }
    stages
}
