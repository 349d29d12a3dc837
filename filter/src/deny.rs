//! The one place that builds every local reply. Each denial becomes an
//! RFC 9457 `application/problem+json` document, with `WWW-Authenticate`
//! (RFC 6750) on 401, `Retry-After` and RateLimit headers on 429, a metric
//! and a decision-log line. The shell sends what [`reply`] returns and
//! nothing else calls `send_http_response`.

use serde::Serialize;

use crate::decision_log::DecisionRecord;
use crate::host::Host;
use crate::metrics::Metric;

/// The stage that refused, for metrics and the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Normalize,
    Route,
    Auth,
    RateLimit,
    Policy,
    Redaction,
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

/// A reply ready to send: the shell passes it to `send_http_response`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
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

/// Builds the reply, counts it and logs the decision. `record` describes the
/// request so far (route, identity, …); the denial fills in the outcome.
pub fn reply(
    denial: &Denial,
    problem_type_base: &str,
    mut record: DecisionRecord,
    host: &dyn Host,
) -> LocalReply {
    host.count(Metric::RequestsDenied, 1);
    host.count(denial.metric, 1);
    record.deny(denial);
    let instance = record.request_id.clone();
    record.emit(host);

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
                instance: &instance,
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
    use crate::host::memory::MemoryHost;
    use crate::host::LogLevel;

    #[test]
    fn problem_document_headers_metric_and_log_line() {
        let host = MemoryHost::at_unix_seconds(1_700_000_000);
        let denial = Denial::new(
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
        );
        let record = DecisionRecord {
            request_id: "req-7".into(),
            ..Default::default()
        };
        let reply = reply(&denial, "urn:citygate:problem:", record, &host);
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
        assert!(reply.headers.iter().any(|(n, _)| n == "www-authenticate"));
        assert_eq!(host.counter(Metric::RequestsDenied), 1);
        assert_eq!(host.counter(Metric::AuthDenied), 1);
        let logs = host.logs.borrow();
        assert_eq!(logs.len(), 1);
        assert_eq!(logs[0].0, LogLevel::Info);
        let line: serde_json::Value = serde_json::from_str(&logs[0].1).unwrap();
        assert_eq!(line["outcome"], "denied");
        assert_eq!(line["status"], 401);
        assert_eq!(line["stage"], "auth");
    }
}
