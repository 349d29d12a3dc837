//! CORS for browser applications on other origins: preflights (`OPTIONS`
//! with `Origin` and `Access-Control-Request-Method`) are answered here,
//! before authentication and without the upstream, from each route's origin
//! allowlist; actual responses get the CORS headers for allowed origins
//! only, and never the upstream's own. A wildcard origin with credentials
//! and the `null` origin are configuration errors.

mod config;

pub use config::CorsConfig;

use crate::config::{ConfigError, RouteConfig};
use crate::deny::{Denial, Stage};
use crate::http::first_value;
use crate::metrics::Metric;

/// CORS response headers the upstream may not set on a route citygate
/// answers CORS for: it could widen what the route allows.
pub const UPSTREAM_HEADERS_REPLACED: &[&str] = &[
    "access-control-allow-origin",
    "access-control-allow-credentials",
    "access-control-allow-methods",
    "access-control-allow-headers",
    "access-control-expose-headers",
    "access-control-max-age",
];

/// Request headers a browser never needs permission for.
const SAFELISTED_HEADERS: &[&str] = &["accept", "accept-language", "content-language"];

/// A preflight's questions, read from its headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preflight<'a> {
    pub origin: &'a str,
    /// `Access-Control-Request-Method`: the method of the request to come.
    pub method: &'a str,
    /// `Access-Control-Request-Headers`, comma-separated (may be empty).
    pub headers: &'a str,
}

impl<'a> Preflight<'a> {
    /// The preflight a request is, if it is one.
    pub fn of(method: &str, headers: &'a [(String, String)]) -> Option<Self> {
        if method != "OPTIONS" {
            return None;
        }
        Some(Self {
            origin: first_value(headers, "origin")?,
            method: first_value(headers, "access-control-request-method")?.trim(),
            headers: first_value(headers, "access-control-request-headers").unwrap_or(""),
        })
    }
}

/// A refused preflight: the decision log's `reason`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: String,
}

impl Refusal {
    /// What the client gets: which part was refused is for the log only.
    pub fn denial(&self) -> Denial {
        Denial::new(
            403,
            Stage::Cors,
            "cors-preflight-refused",
            "Forbidden",
            "this cross-origin request is not allowed here",
            Metric::CorsPreflightRefused,
        )
    }
}

/// One route's compiled CORS block.
#[derive(Debug, Clone, Default)]
struct RouteCors {
    any_origin: bool,
    /// Lower-case.
    origins: Vec<String>,
    methods: Vec<String>,
    /// Lower-case.
    allow_headers: Vec<String>,
    methods_joined: String,
    allow_headers_joined: String,
    expose_headers_joined: String,
    max_age_seconds: Option<u32>,
    credentials: bool,
}

impl RouteCors {
    fn compile(config: &CorsConfig, route: &RouteConfig, at: &str) -> Result<Self, ConfigError> {
        if config.allow_origins.is_empty() {
            return Err(ConfigError::new(
                format!("{at}.allow_origins"),
                "list at least one origin (or \"*\")",
            ));
        }
        let mut origins = Vec::with_capacity(config.allow_origins.len());
        let mut any_origin = false;
        for (i, origin) in config.allow_origins.iter().enumerate() {
            let field = format!("{at}.allow_origins[{i}]");
            if origin == "*" {
                any_origin = true;
                continue;
            }
            check_origin(origin).map_err(|m| ConfigError::new(field, m))?;
            origins.push(origin.to_ascii_lowercase());
        }
        if any_origin && config.allow_credentials {
            return Err(ConfigError::new(
                format!("{at}.allow_credentials"),
                "a wildcard origin (\"*\") cannot be combined with credentials: list the origins",
            ));
        }
        let mut methods = if config.allow_methods.is_empty() {
            route.matcher.methods.clone()
        } else {
            config.allow_methods.clone()
        };
        if methods.is_empty() {
            methods = ["GET", "HEAD", "POST"].map(String::from).to_vec();
        }
        for (i, method) in config.allow_methods.iter().enumerate() {
            if !is_token(method) || method.bytes().any(|b| b.is_ascii_lowercase()) {
                return Err(ConfigError::new(
                    format!("{at}.allow_methods[{i}]"),
                    format!("`{method}` is not an upper-case HTTP method"),
                ));
            }
        }
        let header_list = |list: &[String], field: &str| -> Result<Vec<String>, ConfigError> {
            list.iter()
                .enumerate()
                .map(|(i, name)| {
                    if is_token(name) {
                        Ok(name.to_ascii_lowercase())
                    } else {
                        Err(ConfigError::new(
                            format!("{at}.{field}[{i}]"),
                            format!("`{name}` is not a header name"),
                        ))
                    }
                })
                .collect()
        };
        let allow_headers = header_list(&config.allow_headers, "allow_headers")?;
        let expose_headers = header_list(&config.expose_headers, "expose_headers")?;
        Ok(Self {
            any_origin,
            origins,
            methods_joined: methods.join(", "),
            methods,
            allow_headers_joined: allow_headers.join(", "),
            allow_headers,
            expose_headers_joined: expose_headers.join(", "),
            max_age_seconds: config.max_age_seconds,
            credentials: config.allow_credentials,
        })
    }

    fn allows_origin(&self, origin: &str) -> bool {
        self.any_origin || self.origins.iter().any(|o| o.eq_ignore_ascii_case(origin))
    }

    /// `access-control-allow-origin` (and `vary` when it names the origin).
    fn origin_headers(&self, origin: &str, out: &mut Vec<(String, String)>) {
        if self.any_origin && !self.credentials {
            out.push(("access-control-allow-origin".into(), "*".into()));
        } else {
            out.push(("access-control-allow-origin".into(), origin.to_string()));
            out.push(("vary".into(), "origin".into()));
        }
        if self.credentials {
            out.push(("access-control-allow-credentials".into(), "true".into()));
        }
    }
}

/// Every route's CORS, compiled once per VM.
#[derive(Debug, Clone, Default)]
pub struct Cors {
    /// Per route, in route order; `None`: citygate leaves CORS alone.
    routes: Vec<Option<RouteCors>>,
}

impl Cors {
    pub fn compile(routes: &[RouteConfig]) -> Result<Self, ConfigError> {
        let routes = routes
            .iter()
            .enumerate()
            .map(|(i, route)| {
                route
                    .cors
                    .as_ref()
                    .map(|c| RouteCors::compile(c, route, &format!("$.routes[{i}].cors")))
                    .transpose()
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { routes })
    }

    fn route(&self, route_index: usize) -> Option<&RouteCors> {
        self.routes.get(route_index).and_then(Option::as_ref)
    }

    /// Whether the route at `route_index` has a CORS block.
    pub fn governs(&self, route_index: usize) -> bool {
        self.route(route_index).is_some()
    }

    /// The answer to a preflight on a route with a CORS block: the headers
    /// of the 204, or why it is refused.
    pub fn answer_preflight(
        &self,
        route_index: usize,
        preflight: &Preflight<'_>,
    ) -> Result<Vec<(String, String)>, Refusal> {
        let Some(cors) = self.route(route_index) else {
            return Err(Refusal {
                reason: "the route has no cors block".into(),
            });
        };
        if !cors.allows_origin(preflight.origin) {
            return Err(Refusal {
                reason: format!("origin {} is not allowed", printable(preflight.origin)),
            });
        }
        if !cors.methods.iter().any(|m| m == preflight.method) {
            return Err(Refusal {
                reason: format!("method {} is not allowed", printable(preflight.method)),
            });
        }
        for name in preflight
            .headers
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
        {
            let allowed = SAFELISTED_HEADERS
                .iter()
                .any(|a| a.eq_ignore_ascii_case(name))
                || cors
                    .allow_headers
                    .iter()
                    .any(|a| a.eq_ignore_ascii_case(name));
            if !allowed {
                return Err(Refusal {
                    reason: format!("request header {} is not allowed", printable(name)),
                });
            }
        }
        let mut headers = Vec::with_capacity(6);
        cors.origin_headers(preflight.origin, &mut headers);
        headers.push((
            "access-control-allow-methods".into(),
            cors.methods_joined.clone(),
        ));
        if !cors.allow_headers_joined.is_empty() {
            headers.push((
                "access-control-allow-headers".into(),
                cors.allow_headers_joined.clone(),
            ));
        }
        if let Some(seconds) = cors.max_age_seconds {
            headers.push(("access-control-max-age".into(), seconds.to_string()));
        }
        Ok(headers)
    }

    /// The CORS headers of an actual response (forwarded or answered by
    /// citygate) on the route: the origin's grant when it is allowed, and
    /// `vary: origin` whenever the answer depends on the origin.
    pub fn response_headers(
        &self,
        route_index: usize,
        origin: Option<&str>,
    ) -> Vec<(String, String)> {
        let Some(cors) = self.route(route_index) else {
            return Vec::new();
        };
        let mut headers = Vec::new();
        match origin {
            Some(origin) if cors.allows_origin(origin) => {
                cors.origin_headers(origin, &mut headers);
                if !cors.expose_headers_joined.is_empty() {
                    headers.push((
                        "access-control-expose-headers".into(),
                        cors.expose_headers_joined.clone(),
                    ));
                }
            }
            _ if !cors.any_origin || cors.credentials => {
                headers.push(("vary".into(), "origin".into()));
            }
            _ => {}
        }
        headers
    }
}

/// `scheme://host[:port]` with an `http` or `https` scheme, nothing after.
fn check_origin(origin: &str) -> Result<(), String> {
    if origin.eq_ignore_ascii_case("null") {
        return Err(
            "`null` is the origin of every sandboxed document and local file: it cannot be allowed"
                .into(),
        );
    }
    let shape = "is not an origin: write `https://host` or `https://host:port`, without a path";
    let rest = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
        .ok_or_else(|| format!("`{origin}` {shape}"))?;
    let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
        let (address, after) = bracketed
            .split_once(']')
            .ok_or_else(|| format!("`{origin}` {shape}"))?;
        let ipv6 = !address.is_empty()
            && address
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
        if !ipv6 {
            return Err(format!("`{origin}` {shape}"));
        }
        match after {
            "" => ("ipv6", None),
            _ => ("ipv6", Some(after.strip_prefix(':').unwrap_or("x"))),
        }
    } else {
        match rest.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        }
    };
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    if host_ok && port_ok {
        Ok(())
    } else {
        Err(format!("`{origin}` {shape}"))
    }
}

/// RFC 9110 token characters.
fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A client-sent value for the log: bounded, and without control characters.
fn printable(text: &str) -> String {
    text.chars()
        .take(100)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests;
