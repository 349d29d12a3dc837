//! The plugin configuration's JSON Schema: derived from the Rust types,
//! committed for editors and CI, and every example configuration in the
//! repository validates against it.

use std::path::{Path, PathBuf};

use citygate_host::cli;
use citygate_host::scenario::load::walk;
use citygate_host::wasm_build::workspace_root;
use serde_json::Value;

#[test]
fn the_committed_schema_is_the_one_the_types_derive() {
    let committed = std::fs::read_to_string(workspace_root().join(cli::SCHEMA_PATH)).unwrap();
    assert!(
        committed.trim_end() == cli::schema_text().unwrap(),
        "{} is out of date: run `cargo citygate schema > {}`",
        cli::SCHEMA_PATH,
        cli::SCHEMA_PATH
    );
}

/// Every plugin configuration in the repository: JSON files with `routes`
/// at the top, inline `config:` objects of scenario files, and the Istio
/// manifest's `pluginConfig`.
fn example_configs() -> Vec<(String, Value)> {
    let root = workspace_root();
    let mut found = Vec::new();
    for dir in ["policies", "envoy"] {
        walk(&root.join(dir), &mut |path: &Path| {
            let text = || std::fs::read_to_string(path).unwrap_or_default();
            match path.extension().and_then(|e| e.to_str()) {
                Some("json") if !path.ends_with("citygate.schema.json") => {
                    // A bundle source is checked as what it bundles into.
                    let parsed = if path.to_string_lossy().ends_with(".src.json") {
                        citygate_host::bundle::bundle(path).ok()
                    } else {
                        serde_json::from_str::<Value>(&text()).ok()
                    };
                    // A template with `{{…}}` placeholders (the benchmark's
                    // configuration) is a configuration only once its
                    // driver has rendered it; Envoy checks that rendering.
                    let template = text().contains("\"{{");
                    if let Some(value) = parsed.filter(|_| !template) {
                        if value.get("routes").is_some() {
                            found.push((label(&root, path), value));
                        }
                    }
                }
                Some("yaml" | "yml") => {
                    for document in yaml_documents(&text()) {
                        if let Some(config) = document.get("config").filter(|c| c.is_object()) {
                            found.push((
                                format!("{} (inline config)", label(&root, path)),
                                config.clone(),
                            ));
                        }
                        let plugin_config = document.pointer("/spec/pluginConfig");
                        if let Some(config) = plugin_config.filter(|c| c.get("routes").is_some()) {
                            found.push((
                                format!("{} (pluginConfig)", label(&root, path)),
                                config.clone(),
                            ));
                        }
                    }
                }
                _ => {}
            }
        })
        .unwrap();
    }
    found
}

fn yaml_documents(text: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_yaml_ng::Deserializer::from_str(text)
        .filter_map(|document| Value::deserialize(document).ok())
        .collect()
}

fn label(root: &Path, path: &Path) -> String {
    PathBuf::from(path.strip_prefix(root).unwrap_or(path))
        .display()
        .to_string()
}

#[test]
fn every_example_configuration_validates_against_the_schema() {
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(workspace_root().join(cli::SCHEMA_PATH)).unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let configs = example_configs();
    assert!(
        configs
            .iter()
            .any(|(name, _)| name.ends_with("city-gateway.json")),
        "the city pack configuration was not found among {:?}",
        configs.iter().map(|(n, _)| n).collect::<Vec<_>>()
    );
    let mut failures = Vec::new();
    for (name, config) in &configs {
        for error in validator.iter_errors(config) {
            failures.push(format!("{name}: {} at {}", error, error.instance_path()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    println!("{} example configurations validate", configs.len());
}

#[test]
fn the_schema_rejects_what_citygate_rejects() {
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(workspace_root().join(cli::SCHEMA_PATH)).unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    for bad in [
        serde_json::json!({"routes": [{"name": "x", "match": {"path_prefx": "/"}}]}),
        serde_json::json!({"gateway": {"trusted_hops": "two"}, "routes": []}),
        serde_json::json!({"routes": [], "unknown_section": {}}),
    ] {
        assert!(!validator.is_valid(&bad), "the schema accepted {bad}");
    }
}
