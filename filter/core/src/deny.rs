//! The one place that builds every local reply. Each denial becomes an
//! RFC 9457 `application/problem+json` document, with `WWW-Authenticate`
//! (RFC 6750) on 401, `Retry-After` and RateLimit headers on 429. The
//! pipeline counts and logs each reply it gets from [`reply`]
//! (`CompiledConfig::deny`); the shell sends it, and nothing else calls
//! `send_http_response`.

use serde::Serialize;

use crate::http::LocalReply;
use crate::metrics::Metric;

/// The stage that refused, for metrics and the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Normalize,
    Route,
    IpRules,
    Cors,
    RequestLimits,
    Auth,
    RateLimit,
    Policy,
    Redaction,
}

impl Stage {
    /// The stage's name in the decision log and in metric tags.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Normalize => "normalize",
            Stage::Route => "route",
            Stage::IpRules => "ip_rules",
            Stage::Cors => "cors",
            Stage::RequestLimits => "request_limits",
            Stage::Auth => "auth",
            Stage::RateLimit => "rate_limit",
            Stage::Policy => "policy",
            Stage::Redaction => "redaction",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Denial {
    pub status: u16,
    pub stage: Stage,
    /// Last part of the problem `type` URI, e.g. `invalid-token`.
    pub problem: &'static str,
    pub title: &'static str,
    /// Safe to show the client: never a token, key, secret or body value.
    pub detail: String,
    /// Extra reply headers (challenges, rate-limit headers, policy headers).
    pub headers: Vec<(String, String)>,
    /// A body chosen by the policy (`body` in an OPA-Envoy decision), sent
    /// instead of the problem document.
    pub body: Option<String>,
    /// The counter this denial increments besides `citygate_requests_denied`.
    pub metric: Metric,
}

impl Denial {
    pub fn new(
        status: u16,
        stage: Stage,
        problem: &'static str,
        title: &'static str,
        detail: impl Into<String>,
        metric: Metric,
    ) -> Self {
        Self {
            status,
            stage,
            problem,
            title,
            detail: detail.into(),
            headers: Vec::new(),
            body: None,
            metric,
        }
    }

    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(
            400,
            Stage::Normalize,
            "bad-request",
            "Bad Request",
            detail,
            Metric::NormalizeRejected,
        )
    }

    pub fn no_route() -> Self {
        Self::new(
            404,
            Stage::Route,
            "no-route",
            "Not Found",
            "no API is served at this path",
            Metric::RouteUnmatched,
        )
    }

    pub fn bad_gateway(detail: impl Into<String>) -> Self {
        Self::new(
            502,
            Stage::Redaction,
            "response-not-minimizable",
            "Bad Gateway",
            detail,
            Metric::RedactionFailedClosed,
        )
    }
}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    instance: &'a str,
}

/// Builds the reply to a denial. `instance` is the request id, the problem
/// document's `instance` member (left out when empty).
pub fn reply(denial: &Denial, problem_type_base: &str, instance: &str) -> LocalReply {
    let mut headers = vec![("cache-control".to_string(), "no-store".to_string())];
    let body = match &denial.body {
        Some(body) => {
            if !denial
                .headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("content-type"))
            {
                headers.push(("content-type".into(), "text/plain; charset=utf-8".into()));
            }
            body.clone().into_bytes()
        }
        None => {
            headers.push(("content-type".into(), "application/problem+json".into()));
            let problem = Problem {
                kind: format!("{problem_type_base}{}", denial.problem),
                title: denial.title,
                status: denial.status,
                detail: &denial.detail,
                instance,
            };
            serde_json::to_vec(&problem).unwrap_or_else(|_| b"{}".to_vec())
        }
    };
    headers.extend(denial.headers.iter().cloned());
    LocalReply {
        status: denial.status,
        headers,
        body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expired_token() -> Denial {
        Denial::new(
            401,
            Stage::Auth,
            "invalid-token",
            "Unauthorized",
            "the token has expired",
            Metric::AuthDenied,
        )
        .with_header(
            "www-authenticate",
            "Bearer realm=\"citygate\", error=\"invalid_token\"",
        )
    }

    #[test]
    fn problem_document_and_headers() {
        let reply = reply(&expired_token(), "urn:citygate:problem:", "req-7");
        assert_eq!(reply.status, 401);
        let body: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "type": "urn:citygate:problem:invalid-token",
                "title": "Unauthorized",
                "status": 401,
                "detail": "the token has expired",
                "instance": "req-7"
            })
        );
        assert!(reply
            .headers
            .contains(&("content-type".into(), "application/problem+json".into())));
        assert!(reply
            .headers
            .contains(&("cache-control".into(), "no-store".into())));
        assert!(reply.headers.iter().any(|(n, _)| n == "www-authenticate"));
    }

    #[test]
    fn a_policy_body_replaces_the_problem_document() {
        let mut denial = expired_token();
        denial.body = Some("go away".into());
        let reply = reply(&denial, "urn:citygate:problem:", "");
        assert_eq!(reply.body, b"go away");
        assert!(reply
            .headers
            .contains(&("content-type".into(), "text/plain; charset=utf-8".into())));
    }
}
