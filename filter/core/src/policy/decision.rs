//! Reads the entrypoint's value: a boolean, or OPA-Envoy's decision object
//! (see `envoyauth/response.go`) plus citygate's `redact` and `reason`.
//! Anything malformed is an error, and errors deny.

use regorus::Value;

use super::Decision;

/// Keys of OPA-Envoy decisions that would change the request in ways
/// citygate does not implement: refusing them beats silently ignoring a
/// policy's intent.
const UNSUPPORTED_KEYS: &[&str] = &["query_parameters_to_remove", "query_parameters_to_set"];

/// Longest policy-chosen `reason` kept for the decision log.
const MAX_REASON_CHARS: usize = 200;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecisionError {
    Undefined,
    /// The value has the wrong shape; the message names the key, never a value.
    Malformed(String),
}

impl DecisionError {
    pub fn describe(&self) -> String {
        match self {
            Self::Undefined => "the policy decision is undefined".to_string(),
            Self::Malformed(m) => format!("malformed policy decision: {m}"),
        }
    }
}

fn malformed(message: impl Into<String>) -> DecisionError {
    DecisionError::Malformed(message.into())
}

pub fn parse_decision(value: &Value) -> Result<Decision, DecisionError> {
    match value {
        Value::Undefined => Err(DecisionError::Undefined),
        Value::Bool(allowed) => Ok(Decision {
            allowed: *allowed,
            ..Decision::default()
        }),
        Value::Object(_) => parse_object(value),
        _ => Err(malformed("expected a boolean or an object")),
    }
}

fn parse_object(value: &Value) -> Result<Decision, DecisionError> {
    let map = value
        .as_object()
        .map_err(|_| malformed("expected an object"))?;
    for key in map.keys() {
        let name = key
            .as_string()
            .map_err(|_| malformed("keys must be strings"))?;
        if UNSUPPORTED_KEYS.contains(&name.as_ref()) {
            return Err(malformed(format!("`{name}` is not supported")));
        }
    }
    // Other keys (`dynamic_metadata`, extensions) are ignored, as in OPA-Envoy.
    let field = |name: &str| {
        map.get(&Value::from(name))
            .filter(|v| **v != Value::Undefined)
    };
    let allowed = match field("allowed") {
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(malformed("`allowed` must be a boolean")),
        None => return Err(malformed("missing `allowed`")),
    };
    Ok(Decision {
        allowed,
        http_status: field("http_status").map(http_status).transpose()?,
        headers: field("headers")
            .map(|v| headers("headers", v))
            .transpose()?
            .unwrap_or_default(),
        response_headers_to_add: field("response_headers_to_add")
            .map(|v| headers("response_headers_to_add", v))
            .transpose()?
            .unwrap_or_default(),
        request_headers_to_remove: field("request_headers_to_remove")
            .map(|v| string_list("request_headers_to_remove", v))
            .transpose()?
            .unwrap_or_default(),
        body: field("body")
            .map(|v| string("body", v).map(str::to_string))
            .transpose()?,
        redact: field("redact").map(redact).transpose()?.unwrap_or_default(),
        reason: field("reason")
            .map(|v| string("reason", v).map(log_safe))
            .transpose()?,
        ..Decision::default()
    })
}

fn string<'a>(key: &str, value: &'a Value) -> Result<&'a str, DecisionError> {
    value
        .as_string()
        .map(|s| s.as_ref())
        .map_err(|_| malformed(format!("`{key}` must be a string")))
}

fn string_list(key: &str, value: &Value) -> Result<Vec<String>, DecisionError> {
    let items: Vec<&Value> = match value {
        Value::Array(a) => a.iter().collect(),
        Value::Set(s) => s.iter().collect(),
        _ => return Err(malformed(format!("`{key}` must be an array of strings"))),
    };
    items
        .into_iter()
        .map(|v| string(key, v).map(str::to_string))
        .collect()
}

fn http_status(value: &Value) -> Result<u16, DecisionError> {
    value
        .as_u16()
        .ok()
        .filter(|s| (100..=599).contains(s))
        .ok_or_else(|| malformed("`http_status` must be an HTTP status code"))
}

/// `redact` is one profile name or a list of them.
fn redact(value: &Value) -> Result<Vec<String>, DecisionError> {
    match value {
        Value::String(s) => Ok(vec![s.to_string()]),
        other => string_list("redact", other),
    }
}

/// OPA-Envoy accepts an object or an array of objects; each value is a
/// string or an array of strings (one header line per item).
fn headers(key: &str, value: &Value) -> Result<Vec<(String, String)>, DecisionError> {
    let objects: Vec<&Value> = match value {
        Value::Object(_) => vec![value],
        Value::Array(a) => a.iter().collect(),
        _ => return Err(malformed(format!("`{key}` must be an object or an array"))),
    };
    let mut out = Vec::new();
    for object in objects {
        let map = object
            .as_object()
            .map_err(|_| malformed(format!("`{key}` items must be objects")))?;
        for (name, v) in map.iter() {
            let name = string(key, name)?;
            if !valid_header_name(name) {
                return Err(malformed(format!("`{key}` has an invalid header name")));
            }
            let values = match v {
                Value::String(s) => vec![s.to_string()],
                other => string_list(key, other)?,
            };
            for value in values {
                if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
                    return Err(malformed(format!("`{key}` has an invalid header value")));
                }
                out.push((name.to_ascii_lowercase(), value));
            }
        }
    }
    Ok(out)
}

/// RFC 9110 token characters; pseudo-headers (`:path`) are not the policy's
/// to set.
fn valid_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// The reason goes to the decision log: one line, bounded.
fn log_safe(reason: &str) -> String {
    reason
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_REASON_CHARS)
        .collect()
}
