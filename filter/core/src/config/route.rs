use serde::Deserialize;

use super::ConfigError;
use crate::auth::RouteAuth;
use crate::cors::CorsConfig;
use crate::ip_rules::IpRulesConfig;
use crate::ngsi::Api;
use crate::policy::RoutePolicy;
use crate::redact::RouteRedaction;
use crate::request_limits::RequestLimitsConfig;

/// One API surface of the city, with what each stage requires of it.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Appears in the decision log, metrics and `input.route.name`.
    pub name: String,
    #[serde(rename = "match")]
    pub matcher: RouteMatch,
    /// CIDR allow/deny lists on the client address, before authentication.
    #[serde(default)]
    pub ip_rules: IpRulesConfig,
    /// Cross-origin access for browser applications: preflights answered
    /// by citygate, CORS headers on responses for allowed origins only.
    #[serde(default)]
    pub cors: Option<CorsConfig>,
    /// Body and header size limits; each field set replaces the gateway's.
    #[serde(default)]
    pub request_limits: RequestLimitsConfig,
    #[serde(default)]
    pub auth: RouteAuth,
    #[serde(default)]
    pub policy: RoutePolicy,
    #[serde(default)]
    pub redaction: RouteRedaction,
    #[serde(default)]
    pub request_body: RequestBodyConfig,
    /// The route serves a FIWARE context broker's NGSI-v2 (`"v2"`) or
    /// NGSI-LD (`"ld"`) API: its policy gets `input.ngsi` (README,
    /// "NGSI requests"). Needs `request_body.buffer`: batch and
    /// subscription targets are in the body.
    #[serde(default)]
    pub ngsi: Option<Api>,
}

/// Matches the *normalized* path. Prefixes match whole segments: `/admin`
/// matches `/admin` and `/admin/x`, never `/administrator`.
#[derive(Debug, Clone, Deserialize, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RouteMatch {
    pub path_prefix: Option<String>,
    pub path_exact: Option<String>,
    /// Upper-case HTTP methods; empty means any method.
    #[serde(default)]
    pub methods: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
pub struct RequestBodyConfig {
    /// Buffer the request body so the policy sees `input.parsed_body`.
    pub buffer: bool,
    /// Bytes kept for the policy; past this `input.truncated_body` is true.
    pub max_bytes: usize,
}

impl Default for RequestBodyConfig {
    fn default() -> Self {
        Self {
            buffer: false,
            max_bytes: 64 * 1024,
        }
    }
}

impl RouteMatch {
    pub fn matches(&self, method: &str, path: &str) -> bool {
        let method_ok = self.methods.is_empty() || self.methods.iter().any(|m| m == method);
        method_ok && self.matches_path(path)
    }

    /// The path part of [`RouteMatch::matches`] alone.
    pub fn matches_path(&self, path: &str) -> bool {
        match (&self.path_exact, &self.path_prefix) {
            (Some(exact), _) => path == exact,
            (None, Some(prefix)) => prefix_matches_segments(prefix, path),
            (None, None) => false,
        }
    }
}

fn prefix_matches_segments(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

pub(super) fn validate_routes(routes: &[RouteConfig]) -> Result<(), ConfigError> {
    let mut names = std::collections::HashSet::new();
    for (index, route) in routes.iter().enumerate() {
        let at = format!("$.routes[{index}]");
        if route.name.is_empty() {
            return Err(ConfigError::new(
                format!("{at}.name"),
                "route name must not be empty",
            ));
        }
        if !names.insert(route.name.as_str()) {
            return Err(ConfigError::new(
                format!("{at}.name"),
                format!("duplicate route name `{}`", route.name),
            ));
        }
        let m = &route.matcher;
        match (&m.path_prefix, &m.path_exact) {
            (None, None) => {
                return Err(ConfigError::new(
                    format!("{at}.match"),
                    "one of `path_prefix` or `path_exact` is required",
                ))
            }
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    format!("{at}.match"),
                    "`path_prefix` and `path_exact` are exclusive",
                ))
            }
            (Some(p), None) | (None, Some(p)) if !p.starts_with('/') => {
                let field = if m.path_prefix.is_some() {
                    "path_prefix"
                } else {
                    "path_exact"
                };
                return Err(ConfigError::new(
                    format!("{at}.match.{field}"),
                    "must start with `/`",
                ));
            }
            _ => {}
        }
        if route.ngsi.is_some() && !route.request_body.buffer {
            return Err(ConfigError::new(
                format!("{at}.request_body.buffer"),
                "a route with `ngsi` must buffer request bodies: batch operations and subscriptions name their targets in the body",
            ));
        }
        for (i, method) in m.methods.iter().enumerate() {
            let valid = !method.is_empty() && method.bytes().all(|b| b.is_ascii_uppercase());
            if !valid {
                return Err(ConfigError::new(
                    format!("{at}.match.methods[{i}]"),
                    format!("`{method}` is not an upper-case HTTP method"),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(p: &str) -> RouteMatch {
        RouteMatch {
            path_prefix: Some(p.to_string()),
            ..Default::default()
        }
    }

    #[test]
    fn prefixes_match_whole_segments() {
        assert!(prefix("/admin").matches("GET", "/admin"));
        assert!(prefix("/admin").matches("GET", "/admin/users"));
        assert!(!prefix("/admin").matches("GET", "/administrator"));
        assert!(prefix("/").matches("GET", "/anything"));
        assert!(prefix("/v2/").matches("GET", "/v2/entities"));
    }

    #[test]
    fn methods_restrict_the_match() {
        let m = RouteMatch {
            path_exact: Some("/x".into()),
            methods: vec!["GET".into()],
            ..Default::default()
        };
        assert!(m.matches("GET", "/x"));
        assert!(!m.matches("POST", "/x"));
        assert!(!m.matches("GET", "/x/y"));
    }
}
