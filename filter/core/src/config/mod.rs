//! The plugin configuration: one JSON document (Envoy's filter
//! `configuration`, Istio's `pluginConfig`). Unknown fields are errors and
//! every error names the JSON path of the fault, because Envoy shows an
//! operator nothing but the log line we write.

mod error;
mod route;
mod secrets;

pub use error::ConfigError;
pub use route::{RequestBodyConfig, RouteConfig, RouteMatch};
pub use secrets::resolve_secrets;

use serde::Deserialize;

use crate::auth::AuthConfig;
use crate::ip_rules::IpRulesConfig;
use crate::policy::PolicyConfig;
use crate::ratelimit::RateLimitConfig;
use crate::redact::RedactionConfig;
use crate::request_limits::RequestLimitsConfig;

#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    #[serde(default)]
    pub gateway: GatewayConfig,
    /// Routes, matched in order. A request no route matches is denied.
    pub routes: Vec<RouteConfig>,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub rate_limits: RateLimitConfig,
    #[serde(default)]
    pub policy: Option<PolicyConfig>,
    #[serde(default)]
    pub redaction: RedactionConfig,
    #[serde(default)]
    pub decision_log: DecisionLogConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// Realm in `WWW-Authenticate` challenges.
    pub realm: String,
    /// Proxies in front of Envoy whose `x-forwarded-for` entries are trusted.
    /// 0: the client is the socket peer and `x-forwarded-for` is ignored.
    pub trusted_hops: u8,
    /// Prefix of the RFC 9457 `type` URI of every problem document.
    pub problem_type_base: String,
    /// CIDR allow/deny lists for every request, judged on the client
    /// address before a route is chosen.
    pub ip_rules: IpRulesConfig,
    /// Request size limits of every route that sets none of its own.
    pub request_limits: RequestLimitsConfig,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            realm: "citygate".to_string(),
            trusted_hops: 0,
            problem_type_base: "urn:citygate:problem:".to_string(),
            ip_rules: IpRulesConfig::default(),
            request_limits: RequestLimitsConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
pub struct DecisionLogConfig {
    pub enabled: bool,
    /// HMAC key for subject pseudonyms in the log (write it as
    /// `${env:NAME}`). Without it the log carries no subject at all.
    pub pseudonym_key: Option<String>,
}

impl Default for DecisionLogConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            pseudonym_key: None,
        }
    }
}

/// The JSON Schema of the plugin configuration, derived from these types
/// (draft 2020-12). Host tooling only: the .wasm is built without it.
#[cfg(feature = "schema")]
pub fn json_schema() -> serde_json::Value {
    let mut schema = schemars::schema_for!(PluginConfig).to_value();
    if let Some(object) = schema.as_object_mut() {
        object.insert(
            "description".into(),
            "citygate plugin configuration (Envoy `configuration`, Istio `pluginConfig`). Strings written as \"${env:NAME}\" are read from the VM's environment.".into(),
        );
    }
    schema
}

/// Reads and validates the configuration, resolving `${env:NAME}` secrets.
/// Semantic checks that need compiled state (Rego, keys, JSONPath) happen in
/// [`crate::pipeline::CompiledConfig::compile`].
pub fn parse(
    bytes: &[u8],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<PluginConfig, ConfigError> {
    let mut document: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
        ConfigError::new(
            "$",
            format!(
                "invalid JSON at line {} column {}: {}",
                e.line(),
                e.column(),
                error::describe_json_error(&e)
            ),
        )
    })?;
    resolve_secrets(&mut document, env)?;
    let config: PluginConfig = serde_path_to_error::deserialize(document).map_err(|e| {
        let path = error::json_path(e.path());
        ConfigError::new(path, e.inner().to_string())
    })?;
    route::validate_routes(&config.routes)?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn minimal_config_parses_with_defaults() {
        let config = parse(
            br#"{"routes":[{"name":"all","match":{"path_prefix":"/"},"auth":{"anonymous":true}}]}"#,
            &no_env,
        )
        .unwrap();
        assert_eq!(config.gateway.realm, "citygate");
        assert_eq!(config.routes[0].name, "all");
    }

    #[test]
    fn an_ngsi_route_must_buffer_request_bodies() {
        let err = parse(
            br#"{"routes":[{"name":"broker","match":{"path_prefix":"/v2"},"ngsi":"v2"}]}"#,
            &no_env,
        )
        .unwrap_err();
        assert_eq!(err.path, "$.routes[0].request_body.buffer");
        let bad = parse(
            br#"{"routes":[{"name":"broker","match":{"path_prefix":"/v2"},"ngsi":"v3"}]}"#,
            &no_env,
        )
        .unwrap_err();
        assert_eq!(bad.path, "$.routes[0].ngsi");
    }

    #[test]
    fn unknown_field_names_its_json_path() {
        let err = parse(
            br#"{"routes":[{"name":"x","match":{"path_prefx":"/"}}]}"#,
            &no_env,
        )
        .unwrap_err();
        assert_eq!(err.path, "$.routes[0].match.path_prefx");
        assert!(
            err.message.contains("unknown field `path_prefx`"),
            "{}",
            err.message
        );
        let line = err.to_string();
        assert!(
            line.starts_with("citygate: invalid configuration at $.routes[0].match.path_prefx: ")
        );
        assert!(!line.contains('\n'));
    }

    #[test]
    fn wrong_type_names_its_json_path() {
        let err = parse(
            br#"{"gateway":{"trusted_hops":"two"},"routes":[]}"#,
            &no_env,
        )
        .unwrap_err();
        assert_eq!(err.path, "$.gateway.trusted_hops");
        assert!(err.message.contains("invalid type"), "{}", err.message);
    }

    #[test]
    fn invalid_json_names_the_position() {
        let err = parse(b"{\"routes\": [", &no_env).unwrap_err();
        assert_eq!(err.path, "$");
        assert!(err.message.contains("line 1 column"), "{}", err.message);
        assert!(!err.to_string().contains('\n'));
    }

    #[test]
    fn missing_required_field_is_an_error() {
        let err = parse(b"{}", &no_env).unwrap_err();
        assert!(
            err.message.contains("missing field `routes`"),
            "{}",
            err.message
        );
    }
}
