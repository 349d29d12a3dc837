//! The bootstrap of `envoy/gateway.yaml` (the same file `cargo demo`
//! uses): its YAML template rendered with ports, paths and the plugin
//! configuration into the JSON Envoy is started with.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use serde_json::{Map, Value};

use super::process::{free_port, EnvoyConfig, Launch};

/// The bootstrap template (see the comments at its top for placeholders).
pub const GATEWAY_TEMPLATE: &str = include_str!("../../../../envoy/gateway.yaml");

/// What a gateway run needs; everything else is in `envoy/gateway.yaml`.
#[derive(Debug, Clone)]
pub struct Gateway {
    /// citygate_filter.wasm.
    pub wasm: PathBuf,
    /// The plugin configuration, as JSON text (passed to Envoy verbatim).
    pub plugin_config: String,
    /// The city API behind the gateway.
    pub upstream_port: u16,
    /// The JWKS server (cluster `jwks`); defaults to `upstream_port`.
    pub jwks_port: Option<u16>,
    /// VM environment, for `"${env:NAME}"` secrets in the plugin config.
    pub vm_env: BTreeMap<String, String>,
    /// Envoy worker threads (each runs its own VM).
    pub concurrency: usize,
    /// Fixed listener port (the demo); `None` picks a free one.
    pub listener_port: Option<u16>,
    /// Fixed admin port; `None` picks a free one.
    pub admin_port: Option<u16>,
}

impl Gateway {
    pub fn new(
        wasm: impl Into<PathBuf>,
        plugin_config: impl Into<String>,
        upstream_port: u16,
    ) -> Self {
        Gateway {
            wasm: wasm.into(),
            plugin_config: plugin_config.into(),
            upstream_port,
            jwks_port: None,
            vm_env: BTreeMap::new(),
            concurrency: 1,
            listener_port: None,
            admin_port: None,
        }
    }

    pub fn concurrency(mut self, workers: usize) -> Self {
        self.concurrency = workers;
        self
    }

    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.vm_env.insert(name.into(), value.into());
        self
    }

    pub fn jwks_port(mut self, port: u16) -> Self {
        self.jwks_port = Some(port);
        self
    }

    pub fn listener_port(mut self, port: u16) -> Self {
        self.listener_port = Some(port);
        self
    }

    pub fn admin_port(mut self, port: u16) -> Self {
        self.admin_port = Some(port);
        self
    }

    /// The JSON bootstrap for these ports and this run directory.
    pub fn bootstrap(&self, listener_port: u16, admin_port: u16, run_dir: &Path) -> Result<Value> {
        let wasm = fs::canonicalize(&self.wasm)
            .with_context(|| format!("filter wasm {}", self.wasm.display()))?;
        let vm_env: Map<String, Value> = self
            .vm_env
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        let vars = BTreeMap::from([
            ("admin_port", Value::from(admin_port)),
            ("listener_port", Value::from(listener_port)),
            ("upstream_port", Value::from(self.upstream_port)),
            (
                "jwks_port",
                Value::from(self.jwks_port.unwrap_or(self.upstream_port)),
            ),
            ("wasm_path", Value::from(path_str(&wasm)?)),
            ("plugin_config", Value::from(self.plugin_config.clone())),
            ("vm_env", Value::Object(vm_env)),
            ("run_dir", Value::from(path_str(run_dir)?)),
        ]);
        render_bootstrap(GATEWAY_TEMPLATE, &vars)
    }
}

impl EnvoyConfig for Gateway {
    fn prepare(&self, run_dir: &Path) -> Result<Launch> {
        let listener_port = self.listener_port.map_or_else(free_port, Ok)?;
        let admin_port = self.admin_port.map_or_else(free_port, Ok)?;
        let bootstrap = self.bootstrap(listener_port, admin_port, run_dir)?;
        let bootstrap_path = run_dir.join("bootstrap.json");
        fs::write(&bootstrap_path, serde_json::to_vec_pretty(&bootstrap)?)?;
        Ok(Launch {
            bootstrap: bootstrap_path,
            listener_port,
            admin_port,
            ports: BTreeMap::from([("citygate".to_string(), listener_port)]),
            concurrency: self.concurrency,
            args: Vec::new(),
            env: BTreeMap::new(),
        })
    }

    fn fixed_ports(&self) -> bool {
        self.listener_port.is_some() && self.admin_port.is_some()
    }
}

fn path_str(path: &Path) -> Result<String> {
    path.to_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("path is not UTF-8: {}", path.display()))
}

/// Renders a YAML template: a string that is exactly `{{name}}` becomes the
/// typed value of `name`; `{{name}}` inside a longer string is replaced by
/// the value's text. Any placeholder without a value is an error.
pub fn render_bootstrap(template: &str, vars: &BTreeMap<&str, Value>) -> Result<Value> {
    let mut doc: Value =
        serde_yaml_ng::from_str(template).context("parsing the bootstrap template")?;
    fill(&mut doc, vars)?;
    Ok(doc)
}

fn fill(node: &mut Value, vars: &BTreeMap<&str, Value>) -> Result<()> {
    match node {
        Value::String(text) => {
            if let Some(name) = whole_placeholder(text) {
                *node = vars
                    .get(name)
                    .cloned()
                    .ok_or_else(|| anyhow!("bootstrap placeholder {{{{{name}}}}} has no value"))?;
            } else if text.contains("{{") {
                *text = interpolate(text, vars)?;
            }
        }
        Value::Array(items) => items.iter_mut().try_for_each(|v| fill(v, vars))?,
        Value::Object(fields) => fields.values_mut().try_for_each(|v| fill(v, vars))?,
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
    Ok(())
}

fn whole_placeholder(text: &str) -> Option<&str> {
    let name = text.strip_prefix("{{")?.strip_suffix("}}")?;
    (!name.contains('{') && !name.contains('}')).then_some(name.trim())
}

fn interpolate(text: &str, vars: &BTreeMap<&str, Value>) -> Result<String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let end = rest[start..]
            .find("}}")
            .ok_or_else(|| anyhow!("unterminated placeholder in {text:?}"))?;
        let name = rest[start + 2..start + end].trim();
        let value = vars
            .get(name)
            .ok_or_else(|| anyhow!("bootstrap placeholder {{{{{name}}}}} has no value"))?;
        out.push_str(&rest[..start]);
        match value {
            Value::String(s) => out.push_str(s),
            other => out.push_str(&other.to_string()),
        }
        rest = &rest[start + end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_typed_values_and_keeps_config_json_verbatim() {
        let config =
            r#"{"routes":[{"name":"a \"quoted\" name: yes","match":{"path_prefix":"/"}}]}"#;
        let gateway = Gateway::new(env!("CARGO_MANIFEST_DIR"), config, 9000)
            .env("CITYGATE_HMAC_KEY", "s3cret: {not yaml}");
        let doc = gateway
            .bootstrap(8000, 8001, Path::new("/tmp/run"))
            .expect("renders");
        assert_eq!(
            doc["admin"]["address"]["socket_address"]["port_value"],
            8001
        );
        let listener = &doc["static_resources"]["listeners"][0];
        assert_eq!(listener["address"]["socket_address"]["port_value"], 8000);
        let hcm = &listener["filter_chains"][0]["filters"][0]["typed_config"];
        assert_eq!(
            hcm["access_log"][0]["typed_config"]["path"],
            "/tmp/run/access.log"
        );
        let wasm = &hcm["http_filters"][0]["typed_config"]["config"];
        assert_eq!(wasm["configuration"]["value"], config);
        assert_eq!(
            wasm["vm_config"]["environment_variables"]["key_values"]["CITYGATE_HMAC_KEY"],
            "s3cret: {not yaml}"
        );
        assert_eq!(wasm["vm_config"]["vm_id"], "citygate");
        let clusters = &doc["static_resources"]["clusters"];
        let port = |i: usize| {
            clusters[i]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
                ["socket_address"]["port_value"]
                .clone()
        };
        assert_eq!((port(0), port(1)), (Value::from(9000), Value::from(9000)));
        assert!(!serde_json::to_string(&doc).expect("json").contains("{{"));
    }

    #[test]
    fn unfilled_placeholder_is_an_error() {
        let err =
            render_bootstrap("a: \"{{missing}}\"\n", &BTreeMap::new()).expect_err("must fail");
        assert!(err.to_string().contains("missing"), "{err}");
    }
}
