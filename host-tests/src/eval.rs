//! `citygate eval`: one request through the gateway's stages natively (the
//! filter crate's own code, not the .wasm), showing what a policy author
//! needs: the route and identity, the policy input document built for the
//! request, the decision, the redaction profile chosen and the evaluation
//! time, and what the gateway then does with the request.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;
use serde_json::{json, Value};

use citygate_core::host::memory::MemoryHost;
use citygate_core::host::{Callout, DispatchError, Host, LogLevel, SharedDataError, SharedValue};
use citygate_core::metrics::Metric;
use citygate_core::normalize::{ConnectionInfo, PeerCertificate, RawRequest};
use citygate_core::pipeline::CompiledConfig;
use citygate_core::policy::input::build_input;
use citygate_core::policy::{Decision, PolicyEngine, RequestContext};

use crate::scenario::credentials::{expand, Credentials};
use crate::scenario::file::RequestSpec;

/// The client address when the request names none.
const DEFAULT_SOURCE: &str = "203.0.113.7:50000";

/// The request to evaluate, credential references (`{{jwt:NAME}}`) expanded.
#[derive(Debug, Clone, Default)]
pub struct EvalRequest {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub source: Option<String>,
    pub peer_certificate: Option<PeerCertificate>,
}

impl EvalRequest {
    /// A request file: the `request` of a scenario case (JSON or YAML).
    pub fn from_file(path: &Path, credentials: Option<&Credentials>) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let spec: RequestSpec = serde_yaml_ng::from_str(&text)
            .with_context(|| format!("parsing {} (a scenario `request`)", path.display()))?;
        let mut headers = spec.headers.pairs();
        let body = match (spec.body, spec.json) {
            (Some(_), Some(_)) => bail!("the request has both `body` and `json`"),
            (Some(body), None) => body.into_bytes(),
            (None, Some(json)) => {
                if !headers
                    .iter()
                    .any(|(n, _)| n.eq_ignore_ascii_case("content-type"))
                {
                    headers.push(("content-type".into(), "application/json".into()));
                }
                serde_json::to_vec(&json)?
            }
            (None, None) => Vec::new(),
        };
        let request = Self {
            method: spec.method,
            path: spec.path,
            headers,
            body,
            source: spec.source,
            peer_certificate: spec.peer_certificate.map(|c| PeerCertificate {
                uri_san: c.uri_san,
                dns_san: c.dns_san,
                subject: c.subject,
            }),
        };
        request.expanded(credentials)
    }

    /// `--header name:value` flags.
    pub fn parse_header(flag: &str) -> Result<(String, String)> {
        let (name, value) = flag
            .split_once(':')
            .ok_or_else(|| anyhow!("`{flag}` is not NAME:VALUE"))?;
        Ok((name.trim().to_ascii_lowercase(), value.trim().to_string()))
    }

    /// Expands `{{jwt:…}}` / `{{api_key:…}}` in the path, headers and body.
    pub fn expanded(mut self, credentials: Option<&Credentials>) -> Result<Self> {
        let now = crate::scenario::credentials::unix_now();
        self.path = expand(&self.path, credentials, now)?;
        for (_, value) in &mut self.headers {
            *value = expand(value, credentials, now)?;
        }
        if let Ok(text) = std::str::from_utf8(&self.body) {
            self.body = expand(text, credentials, now)?.into_bytes();
        }
        Ok(self)
    }

    fn raw(&self) -> RawRequest {
        let mut headers = vec![
            (":method".to_string(), self.method.to_ascii_uppercase()),
            (":path".to_string(), self.path.clone()),
            (":scheme".to_string(), "https".to_string()),
        ];
        if !self.headers.iter().any(|(n, _)| n == ":authority") {
            headers.push((":authority".into(), "api.city.example".into()));
        }
        if !self.headers.iter().any(|(n, _)| n == "x-request-id") {
            // Envoy always sets one.
            headers.push(("x-request-id".into(), "citygate-eval".into()));
        }
        if !self.body.is_empty() && !self.headers.iter().any(|(n, _)| n == "content-length") {
            headers.push(("content-length".into(), self.body.len().to_string()));
        }
        headers.extend(
            self.headers
                .iter()
                .map(|(n, v)| (n.to_ascii_lowercase(), v.clone())),
        );
        RawRequest {
            headers,
            connection: ConnectionInfo {
                source: Some(
                    self.source
                        .clone()
                        .unwrap_or_else(|| DEFAULT_SOURCE.to_string()),
                ),
                destination: Some("10.0.0.1:8443".to_string()),
                protocol: Some("HTTP/1.1".to_string()),
                peer_certificate: self.peer_certificate.clone(),
            },
        }
    }
}

/// What `citygate eval` shows.
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    /// The route the request matched (none: 404 before any stage).
    pub route: Option<String>,
    /// `input.identity`, when authentication passed.
    pub identity: Option<Value>,
    /// The policy input document (absent when an earlier stage answered).
    pub input: Option<Value>,
    /// Why no input could be built (a JSON body that does not parse).
    pub input_error: Option<String>,
    /// The policy's decision as citygate read it (absent without a policy
    /// section or when an earlier stage answered).
    pub decision: Option<Value>,
    /// The redaction profiles the response gets, in order.
    pub redaction_profiles: Vec<String>,
    /// Wall-clock time of the policy evaluation (natively, this process).
    pub eval_micros: Option<u64>,
    /// What the gateway does: `forwarded`, or the local reply's status.
    pub outcome: GatewayAction,
}

impl Evaluation {
    /// A request a stage answered before the policy was asked.
    fn answered_early(
        route: Option<String>,
        reply: citygate_core::http::LocalReply,
        host: &EvalHost,
    ) -> Self {
        Self {
            route,
            identity: None,
            input: None,
            input_error: None,
            decision: None,
            redaction_profiles: Vec::new(),
            eval_micros: None,
            outcome: answered(reply, host),
        }
    }
}

/// What the gateway does with the request: forwards it upstream (as
/// changed) or answers it itself.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum GatewayAction {
    Forwarded {
        /// Headers set on and removed from the request upstream receives.
        set_headers: Vec<(String, String)>,
        remove_headers: Vec<String>,
        path: Option<String>,
    },
    Answered {
        status: u16,
        /// `auth`, `rate_limit`, `route`, `policy`, … (from the decision log).
        stage: Option<String>,
        reason: Option<String>,
        body: String,
    },
}

/// Where the keys of a provider with `keys.remote` come from.
pub enum RemoteKeys {
    /// Left unloaded: JWT requests get 503, as before the first fetch.
    None,
    /// This JWKS document answers every fetch.
    Jwks(Value),
}

/// Runs `request` through the configuration's stages.
pub fn evaluate(
    config_json: &str,
    env: &BTreeMap<String, String>,
    keys: &RemoteKeys,
    request: &EvalRequest,
) -> Result<Evaluation> {
    let gateway = CompiledConfig::from_json(config_json.as_bytes(), &|name| env.get(name).cloned())
        .map_err(|e| anyhow!("{e}"))?;
    let host = EvalHost::default();
    if let RemoteKeys::Jwks(jwks) = keys {
        let body = serde_json::to_vec(jwks)?;
        // The first tick creates the fetch lock, the next ones take it and
        // fetch (see `JwksStore::lock`); every provider's fetch is answered.
        for _ in 0..3 {
            for token in gateway.authenticator().on_tick(&host) {
                gateway
                    .authenticator()
                    .on_callout_response(token, 200, &body, &host);
            }
        }
    }

    let raw = request.raw();
    let admitted = match gateway.admit(&raw, &host) {
        Ok(admitted) => admitted,
        Err(reply) => {
            let route = last_decision_line(&host).and_then(|l| text(&l, "route"));
            return Ok(Evaluation::answered_early(route, reply, &host));
        }
    };
    let route = gateway
        .route(admitted.route_index)
        .ok_or_else(|| anyhow!("the admitted route is gone"))?;
    if let Err(reply) = gateway.check_request_body(&admitted, request.body.len() as u64, &host) {
        return Ok(Evaluation::answered_early(
            Some(route.name.clone()),
            reply,
            &host,
        ));
    }
    let (body, truncated) = match admitted.body.policy_bytes {
        Some(limit) => (
            Some(&request.body[..request.body.len().min(limit)]),
            request.body.len() > limit,
        ),
        None => (None, false),
    };
    let context = RequestContext {
        view: &admitted.view,
        identity: &admitted.identity,
        route,
        body,
        body_truncated: truncated,
    };
    let (input, input_error) = match build_input(&context) {
        Ok(input) => (Some(serde_json::to_value(&input)?), None),
        Err(e) => (None, Some(e.reason().to_string())),
    };
    let identity = input.as_ref().and_then(|i| i.get("identity")).cloned();
    let policy =
        PolicyEngine::compile(gateway.config().policy.as_ref()).map_err(|e| anyhow!("{e}"))?;
    let decision = policy
        .is_configured()
        .then(|| policy.authorize(&context, &host));

    let outcome = match gateway.authorize(admitted.clone(), body, truncated, &host) {
        Ok(forwarded) => {
            let profiles = forwarded.response.redaction.profiles.clone();
            return Ok(Evaluation {
                route: Some(route.name.clone()),
                identity,
                input,
                input_error,
                eval_micros: decision.as_ref().map(|d| d.eval_micros),
                decision: decision.as_ref().map(decision_json),
                redaction_profiles: profiles,
                outcome: GatewayAction::Forwarded {
                    set_headers: forwarded.edits.set_headers,
                    remove_headers: forwarded.edits.remove_headers,
                    path: forwarded.edits.path,
                },
            });
        }
        Err(reply) => answered(reply, &host),
    };
    Ok(Evaluation {
        route: Some(route.name.clone()),
        identity,
        input,
        input_error,
        eval_micros: decision.as_ref().map(|d| d.eval_micros),
        decision: decision.as_ref().map(decision_json),
        redaction_profiles: Vec::new(),
        outcome,
    })
}

fn decision_json(decision: &Decision) -> Value {
    let mut out = json!({
        "allowed": decision.allowed,
        "redact": decision.redact,
    });
    let mut put = |key: &str, value: Value| {
        if let Some(map) = out.as_object_mut() {
            map.insert(key.to_string(), value);
        }
    };
    if let Some(status) = decision.http_status {
        put("http_status", json!(status));
    }
    if !decision.headers.is_empty() {
        put("headers", json!(decision.headers));
    }
    if !decision.response_headers_to_add.is_empty() {
        put(
            "response_headers_to_add",
            json!(decision.response_headers_to_add),
        );
    }
    if !decision.request_headers_to_remove.is_empty() {
        put(
            "request_headers_to_remove",
            json!(decision.request_headers_to_remove),
        );
    }
    if let Some(body) = &decision.body {
        put("body", json!(body));
    }
    if let Some(reason) = &decision.reason {
        put("reason", json!(reason));
    }
    if decision.dry_run {
        put("dry_run", json!(true));
    }
    out
}

fn text(line: &Value, key: &str) -> Option<String> {
    line.get(key).and_then(Value::as_str).map(str::to_string)
}

fn last_decision_line(host: &EvalHost) -> Option<Value> {
    host.inner
        .log_lines()
        .iter()
        .rev()
        .find_map(|l| serde_json::from_str::<Value>(l).ok())
}

fn answered(reply: citygate_core::http::LocalReply, host: &EvalHost) -> GatewayAction {
    let line = last_decision_line(host);
    GatewayAction::Answered {
        status: reply.status,
        stage: line.as_ref().and_then(|l| text(l, "stage")),
        reason: line.as_ref().and_then(|l| text(l, "reason")),
        body: String::from_utf8_lossy(&reply.body).into_owned(),
    }
}

/// The in-memory host with a clock that runs (so evaluation times and
/// `time.now_ns()` are real).
#[derive(Default)]
struct EvalHost {
    inner: MemoryHost,
}

impl Host for EvalHost {
    fn now_unix_nanos(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }
    fn shared_get(&self, key: &str) -> SharedValue {
        self.inner.shared_get(key)
    }
    fn shared_set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SharedDataError> {
        self.inner.shared_set(key, value, cas)
    }
    fn count(&self, metric: Metric, delta: u64) {
        self.inner.count(metric, delta);
    }
    fn count_named(&self, name: &str, delta: u64) {
        self.inner.count_named(name, delta);
    }
    fn record(&self, metric: Metric, value: u64) {
        self.inner.record(metric, value);
    }
    fn log(&self, level: LogLevel, message: &str) {
        self.inner.log(level, message);
    }
    fn dispatch(&self, callout: &Callout) -> Result<u32, DispatchError> {
        self.inner.dispatch(callout)
    }
}

/// The report `citygate eval` prints.
pub fn render(evaluation: &Evaluation) -> Result<String> {
    let mut out = String::new();
    let mut line = |text: String| {
        out.push_str(&text);
        out.push('\n');
    };
    line(format!(
        "route:      {}",
        evaluation.route.as_deref().unwrap_or("(none)")
    ));
    if let Some(identity) = &evaluation.identity {
        line(format!(
            "identity:   {} {}{}",
            identity["kind"].as_str().unwrap_or("?"),
            identity["subject"].as_str().unwrap_or("(no subject)"),
            match identity["roles"].as_array() {
                Some(roles) if !roles.is_empty() => format!(
                    " roles={}",
                    roles
                        .iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(",")
                ),
                _ => String::new(),
            }
        ));
    }
    if let Some(input) = &evaluation.input {
        line("input:".into());
        line(serde_json::to_string_pretty(input)?);
    }
    if let Some(error) = &evaluation.input_error {
        line(format!("input:      none ({error}: the policy denies)"));
    }
    match &evaluation.decision {
        Some(decision) => line(format!("decision:   {decision}")),
        None if evaluation.input.is_some() => {
            line("decision:   no `policy` section: allowed".into())
        }
        None => {}
    }
    if let Some(micros) = evaluation.eval_micros {
        line(format!("evaluation: {micros} µs (native)"));
    }
    line(format!(
        "redaction:  {}",
        if evaluation.redaction_profiles.is_empty() {
            "none (the response passes untouched)".to_string()
        } else {
            evaluation.redaction_profiles.join(" then ")
        }
    ));
    match &evaluation.outcome {
        GatewayAction::Forwarded { .. } => line("result:     forwarded upstream".into()),
        GatewayAction::Answered {
            status,
            stage,
            reason,
            ..
        } => line(format!(
            "result:     answered {status}{}{}",
            stage
                .as_deref()
                .map(|s| format!(" by the {s} stage"))
                .unwrap_or_default(),
            reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        )),
    }
    Ok(out)
}
