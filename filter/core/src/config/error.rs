use thiserror::Error;

/// A configuration fault: where (a JSON path such as `$.routes[2].auth`) and
/// what. Its `Display` is the one line Envoy logs when it rejects the config
/// (one line, always: Envoy's log and `citygate check` show exactly this).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("citygate: invalid configuration at {path}: {}", one_line(.message))]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }

    /// Prefixes a path relative to a section (`.rules[0]`) with the section's
    /// own path, so stages can report faults without knowing where they sit.
    pub fn at(path: &str, relative: &str, message: impl Into<String>) -> Self {
        Self::new(format!("{path}{relative}"), message)
    }
}

fn one_line(message: &str) -> String {
    message.replace(['\n', '\r'], " ")
}

/// serde_path_to_error's path (`routes[0].match`) as a JSON path (`$.routes[0].match`).
pub(super) fn json_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::from("$");
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') && !key.is_empty() {
                    out.push('.');
                    out.push_str(key);
                } else {
                    out.push_str(&format!("[{}]", serde_json::Value::String(key.clone())));
                }
            }
            Segment::Unknown => out.push_str(".?"),
        }
    }
    out
}

/// serde_json's message without its trailing position (we print our own).
pub(super) fn describe_json_error(error: &serde_json::Error) -> String {
    let text = error.to_string();
    match text.rfind(" at line ") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}
