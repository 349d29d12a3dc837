//! Request size limits: the header bytes and the declared length when the
//! headers arrive, the body bytes as they stream. A request over a limit is
//! refused before its credentials are checked and before anything reaches
//! the upstream; the pipeline holds a body whose size no declared length
//! bounds until it has ended or gone past the limit.

mod config;

pub use config::RequestLimitsConfig;

use crate::config::{ConfigError, RouteConfig};
use crate::deny::{Denial, Stage};
use crate::metrics::Metric;

/// The limits in force on one route: the route's fields, else the gateway's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub max_body_bytes: Option<u64>,
    pub max_header_bytes: Option<u64>,
}

/// What was too large.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Oversize {
    Body,
    Headers,
}

/// Why a request was refused: what was too large, the limit it passed (the
/// client is told it) and the decision log's `reason`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub what: Oversize,
    pub limit: u64,
    pub reason: String,
}

impl Refusal {
    /// The denial the client gets.
    pub fn denial(&self) -> Denial {
        let max = self.limit;
        match self.what {
            Oversize::Body => Denial::new(
                413,
                Stage::RequestLimits,
                "request-body-too-large",
                "Content Too Large",
                format!("the request body exceeds the {max} bytes this API accepts"),
                Metric::RequestLimitsBodyDenied,
            ),
            Oversize::Headers => Denial::new(
                431,
                Stage::RequestLimits,
                "request-headers-too-large",
                "Request Header Fields Too Large",
                format!("the request headers exceed the {max} bytes this API accepts"),
                Metric::RequestLimitsHeadersDenied,
            ),
        }
    }
}

impl Limits {
    /// The headers of a request: their total size, and a declared
    /// `content-length` past the body limit (refused without waiting for
    /// the body).
    pub fn check_headers(&self, headers: &[(String, String)]) -> Result<(), Refusal> {
        if let Some(max) = self.max_header_bytes {
            let total = header_bytes(headers);
            if total > max {
                return Err(Refusal {
                    what: Oversize::Headers,
                    limit: max,
                    reason: format!(
                        "request headers of {total} bytes exceed max_header_bytes {max}"
                    ),
                });
            }
        }
        match (self.max_body_bytes, declared_length(headers)) {
            (Some(max), Some(declared)) if declared > max => Err(Refusal {
                what: Oversize::Body,
                limit: max,
                reason: format!("declared content-length {declared} exceeds max_body_bytes {max}"),
            }),
            _ => Ok(()),
        }
    }

    /// Whether the body must be held until it ends: there is a limit and no
    /// declared length within it says the body fits.
    pub fn must_hold_body(&self, headers: &[(String, String)]) -> bool {
        match self.max_body_bytes {
            Some(max) => declared_length(headers).is_none_or(|declared| declared > max),
            None => false,
        }
    }
}

/// `size` bytes of a body have arrived (so far) where at most
/// `max_body_bytes` may.
pub fn check_body(max_body_bytes: Option<u64>, size: u64) -> Result<(), Refusal> {
    match max_body_bytes {
        Some(max) if size > max => Err(Refusal {
            what: Oversize::Body,
            limit: max,
            reason: format!("request body of at least {size} bytes exceeds max_body_bytes {max}"),
        }),
        _ => Ok(()),
    }
}

/// Every route's limits, compiled once per VM.
#[derive(Debug, Clone, Default)]
pub struct RequestLimits {
    /// Per route, in route order.
    routes: Vec<Limits>,
}

impl RequestLimits {
    pub fn compile(
        gateway: &RequestLimitsConfig,
        routes: &[RouteConfig],
    ) -> Result<Self, ConfigError> {
        validate(gateway, "$.gateway.request_limits")?;
        let mut compiled = Vec::with_capacity(routes.len());
        for (i, route) in routes.iter().enumerate() {
            let own = &route.request_limits;
            validate(own, &format!("$.routes[{i}].request_limits"))?;
            compiled.push(Limits {
                max_body_bytes: own.max_body_bytes.or(gateway.max_body_bytes),
                max_header_bytes: own.max_header_bytes.or(gateway.max_header_bytes),
            });
        }
        Ok(Self { routes: compiled })
    }

    /// The limits of the route at `route_index` (none for an unknown index).
    pub fn for_route(&self, route_index: usize) -> Limits {
        self.routes.get(route_index).copied().unwrap_or_default()
    }
}

fn validate(config: &RequestLimitsConfig, at: &str) -> Result<(), ConfigError> {
    // Every request has a method and a path: a header limit of 0 would
    // refuse them all, which is a typo, not a policy.
    if config.max_header_bytes == Some(0) {
        return Err(ConfigError::new(
            format!("{at}.max_header_bytes"),
            "must be at least 1 (every request has headers)",
        ));
    }
    Ok(())
}

fn header_bytes(headers: &[(String, String)]) -> u64 {
    headers.iter().fold(0u64, |total, (name, value)| {
        total.saturating_add((name.len() + value.len()) as u64)
    })
}

/// The declared `content-length`, when it is one decimal number. Envoy's
/// codecs refuse a request whose body disagrees with it.
fn declared_length(headers: &[(String, String)]) -> Option<u64> {
    headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse().ok())
}

#[cfg(test)]
mod tests;
