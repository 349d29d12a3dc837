//! `${env:NAME}` secrets: read from the VM's environment
//! (`vm_config.environment_variables` in Envoy, `vmConfig.env` in Istio) so
//! keys never sit in the plugin configuration itself.

use super::ConfigError;

const PREFIX: &str = "${env:";

/// Replaces every string value that is exactly `${env:NAME}` by the variable's
/// value. A missing variable is a configuration error naming the JSON path
/// (and the variable, never a value).
pub fn resolve_secrets(
    document: &mut serde_json::Value,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    resolve_at(document, "$".to_string(), env)
}

fn resolve_at(
    value: &mut serde_json::Value,
    path: String,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    use serde_json::Value;
    match value {
        Value::String(text) => {
            if let Some(name) = env_reference(text) {
                match env(name) {
                    Some(secret) if !secret.is_empty() => *text = secret,
                    _ => {
                        return Err(ConfigError::new(
                            path,
                            format!("environment variable `{name}` is not set (or empty) in the VM's environment"),
                        ))
                    }
                }
            }
        }
        Value::Array(items) => {
            for (index, item) in items.iter_mut().enumerate() {
                resolve_at(item, format!("{path}[{index}]"), env)?;
            }
        }
        Value::Object(fields) => {
            for (key, item) in fields.iter_mut() {
                resolve_at(item, format!("{path}.{key}"), env)?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn env_reference(text: &str) -> Option<&str> {
    let name = text.strip_prefix(PREFIX)?.strip_suffix('}')?;
    let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    valid.then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn replaces_exact_references_only() {
        let mut doc = json!({"a": "${env:KEY}", "b": ["x ${env:KEY}", "${env:KEY}"]});
        resolve_secrets(&mut doc, &|name| {
            (name == "KEY").then(|| "s3cret".to_string())
        })
        .unwrap();
        assert_eq!(doc, json!({"a": "s3cret", "b": ["x ${env:KEY}", "s3cret"]}));
    }

    #[test]
    fn missing_variable_names_path_and_variable() {
        let mut doc = json!({"decision_log": {"pseudonym_key": "${env:LOG_KEY}"}});
        let err = resolve_secrets(&mut doc, &|_| None).unwrap_err();
        assert_eq!(err.path, "$.decision_log.pseudonym_key");
        assert!(err.message.contains("LOG_KEY"));
    }
}
