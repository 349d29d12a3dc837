//! Verified claims → identity fields, through configured claim paths.

use serde_json::{Map, Value};

use crate::auth::config::ClaimMappingConfig;
use crate::identity::{Identity, IdentityKind};

/// Bounds the roles and scopes one token can contribute (they are copied
/// into upstream headers and the policy input).
pub const MAX_VALUES: usize = 128;

/// The value at a dotted path (`realm_access.roles`). A claim whose own name
/// contains dots (`https://city.example/roles`) is found first by its full name.
pub fn lookup<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(value) = claims.get(path) {
        return Some(value);
    }
    let mut segments = path.split('.');
    let mut current = claims.get(segments.next()?)?;
    for segment in segments {
        current = current.as_object()?.get(segment)?;
    }
    Some(current)
}

/// A string is split on whitespace (OAuth `scope`); an array gives its strings.
fn strings(value: &Value) -> Vec<String> {
    match value {
        Value::String(text) => text.split_whitespace().map(str::to_string).collect(),
        Value::Array(items) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    }
}

fn collect(claims: &Map<String, Value>, paths: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for value in paths.iter().filter_map(|p| lookup(claims, p)) {
        for item in strings(value) {
            if out.len() < MAX_VALUES && !out.contains(&item) {
                out.push(item);
            }
        }
    }
    out
}

pub fn identity(claims: Map<String, Value>, mapping: &ClaimMappingConfig) -> Identity {
    let text = |path: &str| {
        lookup(&claims, path)
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    Identity {
        kind: IdentityKind::Jwt,
        subject: text(&mapping.subject),
        client_id: mapping.client_id.iter().find_map(|p| text(p)),
        roles: collect(&claims, &mapping.roles),
        scopes: collect(&claims, &mapping.scopes),
        claims: std::rc::Rc::new(claims.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn keycloak() -> ClaimMappingConfig {
        ClaimMappingConfig {
            roles: vec![
                "realm_access.roles".into(),
                "resource_access.city-api.roles".into(),
            ],
            ..ClaimMappingConfig::default()
        }
    }

    #[test]
    fn keycloak_nested_roles_and_space_delimited_scope() {
        let claims = json!({
            "sub": "u-1", "azp": "citizen-portal", "scope": "openid parking:read  parking:write",
            "realm_access": {"roles": ["citizen", "operator"]},
            "resource_access": {"city-api": {"roles": ["operator", "auditor"]}}
        });
        let id = identity(claims.as_object().unwrap().clone(), &keycloak());
        assert_eq!(id.subject.as_deref(), Some("u-1"));
        assert_eq!(id.client_id.as_deref(), Some("citizen-portal"));
        assert_eq!(id.roles, vec!["citizen", "operator", "auditor"]);
        assert_eq!(id.scopes, vec!["openid", "parking:read", "parking:write"]);
    }

    #[test]
    fn dotted_claim_names_and_wrong_types() {
        let claims = json!({"https://city.example/roles": ["a"], "sub": 42, "scp": ["x", 1]});
        let mapping = ClaimMappingConfig {
            roles: vec!["https://city.example/roles".into()],
            ..ClaimMappingConfig::default()
        };
        let id = identity(claims.as_object().unwrap().clone(), &mapping);
        assert_eq!(id.roles, vec!["a"]);
        assert_eq!(id.subject, None);
        assert_eq!(id.scopes, vec!["x"]);
    }
}
