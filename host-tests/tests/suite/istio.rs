//! The Istio manifests (`envoy/istio/`): the WasmPlugin uses only fields
//! and values of Istio's `extensions.istio.io/v1alpha1` API, is fail-closed
//! on the ingress gateway, carries the city policy pack's configuration
//! (checked through the real .wasm with the Secret's values), and reads its
//! secrets from the Secret the gateway patch maps into the proxy.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use citygate_host::cli::{check_config, CITY_CONFIG};
use citygate_host::package::{istio_plugin_config, with_plugin_config, ISTIO_JWKS_PORT};
use citygate_host::wasm_build::{filter_wasm, workspace_root};
use serde_json::Value;

fn istio_file(name: &str) -> PathBuf {
    workspace_root().join("envoy").join("istio").join(name)
}

fn yaml(name: &str) -> Result<Value> {
    let text = fs::read_to_string(istio_file(name))?;
    serde_yaml_ng::from_str(&text).with_context(|| format!("parsing {name}"))
}

/// Fields of `WasmPlugin` (istio/api `extensions/v1alpha1/wasm.proto`, the
/// CRD's JSON names) and of the messages it nests, by path; `*` is any key
/// (label maps), `pluginConfig` is free-form.
const FIELDS: &[(&str, &[&str])] = &[
    ("", &["apiVersion", "kind", "metadata", "spec"]),
    ("metadata", &["name", "namespace", "labels", "annotations"]),
    ("metadata.labels", &["*"]),
    ("metadata.annotations", &["*"]),
    (
        "spec",
        &[
            "selector",
            "targetRef",
            "targetRefs",
            "url",
            "sha256",
            "imagePullPolicy",
            "imagePullSecret",
            "verificationKey",
            "pluginConfig",
            "pluginName",
            "phase",
            "priority",
            "failStrategy",
            "vmConfig",
            "match",
            "type",
        ],
    ),
    ("spec.selector", &["matchLabels"]),
    ("spec.selector.matchLabels", &["*"]),
    ("spec.targetRef", &["group", "kind", "name", "namespace"]),
    ("spec.targetRefs[]", &["group", "kind", "name", "namespace"]),
    ("spec.vmConfig", &["env"]),
    ("spec.vmConfig.env[]", &["name", "valueFrom", "value"]),
    ("spec.match[]", &["mode", "ports"]),
    ("spec.match[].ports[]", &["number"]),
];

/// Enumerations of the API (proto enum names, as the CRD spells them).
const ENUMS: &[(&str, &[&str])] = &[
    (
        "spec.phase",
        &["UNSPECIFIED_PHASE", "AUTHN", "AUTHZ", "STATS"],
    ),
    (
        "spec.failStrategy",
        &["FAIL_CLOSE", "FAIL_OPEN", "FAIL_RELOAD"],
    ),
    (
        "spec.imagePullPolicy",
        &["UNSPECIFIED_POLICY", "IfNotPresent", "Always"],
    ),
    ("spec.type", &["UNSPECIFIED_PLUGIN_TYPE", "HTTP", "NETWORK"]),
    ("spec.vmConfig.env[].valueFrom", &["INLINE", "HOST"]),
    (
        "spec.match[].mode",
        &["UNDEFINED", "CLIENT", "SERVER", "CLIENT_AND_SERVER"],
    ),
];

/// Every field of `doc` that the v1alpha1 API does not have, and every
/// enumeration value it does not know, as `path: problem`.
fn api_violations(doc: &Value) -> Vec<String> {
    let mut found = Vec::new();
    walk(doc, "", &mut found);
    found
}

fn walk(value: &Value, path: &str, found: &mut Vec<String>) {
    if path == "spec.pluginConfig" {
        return;
    }
    if let Some((_, allowed)) = ENUMS.iter().find(|(p, _)| *p == path) {
        match value.as_str() {
            Some(v) if allowed.contains(&v) => {}
            _ => found.push(format!("{path}: {value} is not one of {allowed:?}")),
        }
        return;
    }
    match value {
        Value::Object(map) => {
            let Some((_, allowed)) = FIELDS.iter().find(|(p, _)| *p == path) else {
                found.push(format!("{path}: an object where the API has none"));
                return;
            };
            let any_key = allowed.contains(&"*");
            for (key, child) in map {
                let child_path = match (path, any_key) {
                    (_, true) => format!("{path}.*"),
                    ("", false) => key.clone(),
                    _ => format!("{path}.{key}"),
                };
                if !any_key && !allowed.contains(&key.as_str()) {
                    found.push(format!("{child_path}: not a field of WasmPlugin v1alpha1"));
                    continue;
                }
                walk(child, &child_path, found);
            }
        }
        Value::Array(items) => {
            for item in items {
                walk(item, &format!("{path}[]"), found);
            }
        }
        _ => {}
    }
}

#[test]
fn wasmplugin_uses_only_fields_and_values_of_the_v1alpha1_api() -> Result<()> {
    let plugin = yaml("wasmplugin.yaml")?;
    assert_eq!(plugin["apiVersion"], "extensions.istio.io/v1alpha1");
    assert_eq!(plugin["kind"], "WasmPlugin");
    let violations = api_violations(&plugin);
    assert!(violations.is_empty(), "{violations:#?}");

    // The API's own validation rules.
    let spec = &plugin["spec"];
    let url = spec["url"].as_str().context("spec.url is required")?;
    assert!(
        ["oci://", "https://", "http://", "file://"]
            .iter()
            .any(|scheme| url.starts_with(scheme)),
        "{url}"
    );
    if let Some(sha) = spec.get("sha256") {
        let sha = sha.as_str().unwrap_or_default();
        assert!(
            sha.len() == 64
                && sha
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
            "sha256 must be 64 lower-case hex digits: {sha}"
        );
    }
    let name = spec["pluginName"].as_str().unwrap_or_default();
    assert!((1..=256).contains(&name.len()));
    assert!(
        spec.get("selector").is_none()
            || (spec.get("targetRef").is_none() && spec.get("targetRefs").is_none()),
        "only one of selector or targetRefs can be set"
    );
    for env in spec["vmConfig"]["env"].as_array().into_iter().flatten() {
        assert!(
            !(env["valueFrom"] == "HOST" && env.get("value").is_some()),
            "value may only be set when valueFrom is INLINE: {env}"
        );
    }
    Ok(())
}

#[test]
fn the_field_check_refuses_what_the_api_does_not_have() -> Result<()> {
    let plugin = yaml("wasmplugin.yaml")?;
    let mut typo = plugin.clone();
    typo["spec"]["vmConfig"]["envs"] = serde_json::json!([]);
    let mut nested = plugin.clone();
    nested["spec"]["vmConfig"]["env"][0]["secretKeyRef"] = serde_json::json!({"name": "x"});
    let mut bad_enum = plugin.clone();
    bad_enum["spec"]["failStrategy"] = "FAIL_CLOSED".into();
    let mut status = plugin;
    status["status"] = serde_json::json!({});
    for (doc, expected) in [
        (typo, "spec.vmConfig.envs"),
        (nested, "spec.vmConfig.env[].secretKeyRef"),
        (bad_enum, "spec.failStrategy"),
        (status, "status"),
    ] {
        let violations = api_violations(&doc);
        assert!(
            violations.iter().any(|v| v.starts_with(expected)),
            "{expected} not reported: {violations:?}"
        );
    }
    Ok(())
}

#[test]
fn wasmplugin_guards_the_ingress_gateway_fail_closed() -> Result<()> {
    let spec = yaml("wasmplugin.yaml")?["spec"].clone();
    assert_eq!(spec["selector"]["matchLabels"]["istio"], "ingressgateway");
    assert_eq!(spec["failStrategy"], "FAIL_CLOSE");
    assert_eq!(spec["phase"], "AUTHN");
    assert_eq!(spec["type"], "HTTP");
    assert_eq!(spec["pluginName"], "citygate");
    assert!(spec["url"]
        .as_str()
        .is_some_and(|u| u.starts_with("oci://")));
    Ok(())
}

#[test]
fn plugin_config_is_the_policy_pack_configuration() -> Result<()> {
    let path = istio_file("wasmplugin.yaml");
    let manifest = fs::read_to_string(&path)?;
    let pack = fs::read_to_string(workspace_root().join(CITY_CONFIG))?;
    let pack: Value = serde_json::from_str(&pack)?;
    let expected = with_plugin_config(&manifest, &istio_plugin_config(&pack))?;
    if expected != manifest {
        if std::env::var_os("CITYGATE_REGENERATE").is_some() {
            fs::write(&path, &expected)?;
        } else {
            bail!(
                "envoy/istio/wasmplugin.yaml's pluginConfig is not {CITY_CONFIG}; regenerate it with\n  \
                 CITYGATE_REGENERATE=1 cargo test -p citygate-host --test suite istio::"
            );
        }
    }
    let plugin: Value = serde_yaml_ng::from_str(&expected)?;
    assert_eq!(plugin["spec"]["pluginConfig"], istio_plugin_config(&pack));
    Ok(())
}

#[test]
fn plugin_config_passes_citygate_check_with_the_secrets_istio_hands_the_vm() -> Result<()> {
    let plugin = yaml("wasmplugin.yaml")?;
    let secret = yaml("secret.yaml")?;
    let patch = yaml("gateway-secret-env.yaml")?;

    // The gateway's proxy gets the Secret as its environment…
    let secret_name = secret["metadata"]["name"].as_str().context("secret name")?;
    assert_eq!(secret["kind"], "Secret");
    assert_eq!(
        secret["metadata"]["namespace"],
        plugin["metadata"]["namespace"]
    );
    let proxy = patch["spec"]["template"]["spec"]["containers"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "istio-proxy"))
        .context("the patch names the istio-proxy container")?;
    assert!(
        proxy["envFrom"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|from| from["secretRef"]["name"] == secret_name),
        "the gateway patch does not read {secret_name}"
    );
    let values: BTreeMap<String, String> =
        serde_json::from_value(secret["stringData"].clone()).context("stringData")?;

    // …and the WasmPlugin hands the VM those names (valueFrom: HOST).
    let mut env = BTreeMap::new();
    for entry in plugin["spec"]["vmConfig"]["env"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let name = entry["name"].as_str().context("env name")?;
        assert_eq!(entry["valueFrom"], "HOST", "secrets never inline: {name}");
        let value = values
            .get(name)
            .with_context(|| format!("{name} is not a key of the Secret {secret_name}"))?;
        env.insert(name.to_string(), value.clone());
    }

    // Every ${env:NAME} of the configuration is among them.
    let config = serde_json::to_string(&plugin["spec"]["pluginConfig"])?;
    for reference in config.split("${env:").skip(1) {
        let name = reference.split('}').next().unwrap_or_default();
        assert!(
            env.contains_key(name),
            "${{env:{name}}} has no vmConfig.env entry"
        );
    }

    match check_config(&filter_wasm()?, &config, &env)? {
        Ok(_) => {}
        Err(line) => bail!("citygate refuses the WasmPlugin's pluginConfig: {line}"),
    }
    // Without the Secret, citygate refuses to start (fail closed).
    let refused = check_config(&filter_wasm()?, &config, &BTreeMap::new())?;
    assert!(
        refused.is_err(),
        "the configuration loaded without its secret"
    );
    Ok(())
}

/// The YAML documents of a multi-document file.
fn yaml_documents(name: &str) -> Result<Vec<Value>> {
    use serde::Deserialize;
    let text = fs::read_to_string(istio_file(name))?;
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).with_context(|| format!("parsing {name}")))
        .collect()
}

#[test]
fn jwks_callouts_name_the_cluster_of_the_idp_service_entry() -> Result<()> {
    let docs = yaml_documents("jwks-egress.yaml")?;
    let entry = docs
        .iter()
        .find(|d| d["kind"] == "ServiceEntry")
        .context("a ServiceEntry for the IdP")?;
    let rule = docs
        .iter()
        .find(|d| d["kind"] == "DestinationRule")
        .context("a DestinationRule originating TLS")?;
    let host = entry["spec"]["hosts"][0].as_str().context("host")?;
    let port = entry["spec"]["ports"]
        .as_array()
        .and_then(|ports| ports.iter().find(|p| p["number"] == ISTIO_JWKS_PORT))
        .context("the JWKS port")?;
    assert_eq!(port["protocol"], "HTTP");
    assert_eq!(port["targetPort"], 443);
    assert_eq!(rule["spec"]["host"], host);
    let tls = &rule["spec"]["trafficPolicy"]["portLevelSettings"][0];
    assert_eq!(tls["port"]["number"], ISTIO_JWKS_PORT);
    assert_eq!(tls["tls"]["mode"], "SIMPLE");
    assert_eq!(tls["tls"]["sni"], host);

    let plugin = yaml("wasmplugin.yaml")?;
    let providers = plugin["spec"]["pluginConfig"]["auth"]["jwt"]["providers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let remote: Vec<&Value> = providers
        .iter()
        .filter_map(|p| p.pointer("/keys/remote"))
        .collect();
    for remote in &remote {
        assert_eq!(remote["authority"], host);
        assert_eq!(
            remote["cluster"],
            format!("outbound|{ISTIO_JWKS_PORT}||{host}"),
            "Istio names the cluster of a ServiceEntry outbound|PORT||HOST"
        );
    }
    Ok(())
}
