//! Scenario cases against a real Envoy running the .wasm, with the demo
//! city API as the upstream answering what each case scripts.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};

use super::expect::Observed;
use super::file::CalloutFailure;
use super::load::{PreparedRequest, PreparedUpstream, Scenario};
use super::run::{decision_line, Target};
use crate::demo_api::{DemoApi, JwksMode, ReceivedRequest, ScriptedReply};
use crate::envoy::{EnvoyProcess, Gateway};
use crate::introspection::INTROSPECTION_PATH;

/// Envoy waits this long at most in `advance_seconds` (real time passes).
const MAX_REAL_WAIT_SECONDS: u64 = 3;
const JWKS_PATH: &str = "/.well-known/jwks.json";
/// How long a decision line may take to reach Envoy's log file.
const DECISION_LINE_WAIT: Duration = Duration::from_secs(5);

pub struct EnvoyTarget {
    // Field order: Envoy stops before its upstream does.
    envoy: EnvoyProcess,
    api: DemoApi,
}

impl EnvoyTarget {
    pub fn start(wasm: &Path, scenario: &Scenario) -> Result<Self> {
        let mut jwks = serde_json::json!({ "keys": [] });
        let mut mode = JwksMode::Serve;
        let mut introspection = None;
        for (cluster, reply) in &scenario.file.clusters {
            if cluster == "introspection" && reply.introspection {
                let credentials = scenario
                    .credentials
                    .as_ref()
                    .ok_or_else(|| anyhow!("`introspection: true` needs a `credentials` file"))?;
                introspection = Some(credentials.introspection().clone());
                continue;
            }
            if cluster != "jwks" {
                bail!(
                    "cluster `{cluster}`: the Envoy runner serves the `jwks` cluster and the demo authorization server as `introspection`"
                );
            }
            if let (Some(issuer), Some(credentials)) = (&reply.jwks_of, &scenario.credentials) {
                jwks = credentials.jwks(issuer, None)?;
            } else if let Some(json) = &reply.json {
                jwks = json.clone();
            }
            mode = match (reply.fail, reply.status) {
                (Some(CalloutFailure::Timeout), _) => JwksMode::Slow(Duration::from_secs(30)),
                (Some(CalloutFailure::Reset), _) => JwksMode::Unavailable,
                (None, status) if status >= 500 => JwksMode::Unavailable,
                _ if reply.body.is_some() => JwksMode::Garbage,
                _ => JwksMode::Serve,
            };
        }
        let api = DemoApi::start_with_jwks(jwks)?;
        api.jwks().set_mode(mode);
        if let Some(spec) = introspection {
            api.serve_introspection(spec);
        }
        let mut gateway = Gateway::new(wasm, scenario.config_json.clone(), api.port);
        for (name, value) in &scenario.env {
            gateway = gateway.env(name.clone(), value.clone());
        }
        let envoy = EnvoyProcess::start(&gateway)?;
        Ok(Self { envoy, api })
    }

    pub fn envoy(&self) -> &EnvoyProcess {
        &self.envoy
    }

    fn upstream_requests(&self) -> Vec<ReceivedRequest> {
        self.api
            .requests()
            .into_iter()
            .filter(|r| r.path != JWKS_PATH && r.path != INTROSPECTION_PATH)
            .collect()
    }
}

impl EnvoyTarget {
    /// The decision-log line Envoy logged for this request, found by its
    /// id (what the upstream received or the problem document's
    /// `instance`). A local reply with a policy-chosen body names no id: its
    /// line is then the first denial with its status logged since the
    /// request was sent (`log_offset`), as citygate writes a denial's line
    /// before the reply. A forwarded request's line is written when its
    /// stream ends, which may be just after the client has the reply: wait.
    fn decision_of(
        &self,
        upstream: Option<&ReceivedRequest>,
        reply: &crate::envoy::HttpReply,
        log_offset: usize,
    ) -> Result<serde_json::Value> {
        let request_id = request_id(upstream, &reply.body);
        let deadline = Instant::now() + DECISION_LINE_WAIT;
        loop {
            let log = self.envoy.log();
            let since = log.get(log_offset..).unwrap_or("");
            let messages = since.lines().filter(|line| line.contains("wasm log"));
            let found = match &request_id {
                Some(id) => decision_line(messages, Some(id)),
                None => messages
                    .filter_map(|line| decision_line([line], None))
                    .find(|record| {
                        record["outcome"] != "allowed" && record["status"] == reply.status
                    }),
            };
            if let Some(record) = found {
                return Ok(record);
            }
            if Instant::now() > deadline {
                bail!(
                    "no decision-log line for this request (id {request_id:?}) in Envoy's log after {DECISION_LINE_WAIT:?}"
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// The id Envoy gave the request (it replaces a client's `x-request-id` at
/// the edge): what the upstream received or, for a local reply, the problem
/// document's `instance`.
fn request_id(upstream: Option<&ReceivedRequest>, reply_body: &str) -> Option<String> {
    if let Some(received) = upstream {
        if let Some((_, id)) = received.headers.iter().find(|(n, _)| n == "x-request-id") {
            return Some(id.clone());
        }
    }
    serde_json::from_str::<serde_json::Value>(reply_body)
        .ok()
        .and_then(|problem| problem["instance"].as_str().map(str::to_string))
}

impl Target for EnvoyTarget {
    fn exchange(
        &mut self,
        request: &PreparedRequest,
        upstream: &PreparedUpstream,
        with_decision: bool,
    ) -> Result<Observed> {
        if request.source.is_some()
            || request.peer_certificate.is_some()
            || !request.trailers.is_empty()
        {
            bail!("a spoofed socket peer, a client certificate or request trailers need `wasm_only: <why>`");
        }
        self.api.script(Some(ScriptedReply {
            status: upstream.status,
            headers: upstream.headers.clone(),
            body: upstream.body.clone(),
            chunk_size: upstream.chunk_size,
            trailers: upstream.trailers.clone(),
        }));
        let before = self.upstream_requests().len();
        let log_offset = if with_decision {
            self.envoy.log().len()
        } else {
            0
        };
        let headers: Vec<(&str, &str)> = request
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let reply = match request.chunk_size {
            Some(size) => self.envoy.request_in_chunks(
                &request.method,
                &request.path,
                &headers,
                &request.body,
                size,
            )?,
            None => self
                .envoy
                .request(&request.method, &request.path, &headers, &request.body)?,
        };
        let received = self.upstream_requests();
        let reached = received.len() > before;
        let last = received.last().filter(|_| reached);
        let decision = if with_decision {
            Some(self.decision_of(last, &reply, log_offset)?)
        } else {
            None
        };
        Ok(Observed {
            status: reply.status,
            headers: reply.headers.clone(),
            body: reply.body.into_bytes(),
            reached_upstream: reached,
            upstream_path: last.map(|r| {
                if r.query.is_empty() {
                    r.path.clone()
                } else {
                    format!("{}?{}", r.path, r.query)
                }
            }),
            upstream_headers: last.map(|r| r.headers.clone()).unwrap_or_default(),
            upstream_body: last.map(|r| r.body.clone()).unwrap_or_default(),
            decision,
        })
    }

    fn advance(&mut self, seconds: u64) -> Result<()> {
        if seconds > MAX_REAL_WAIT_SECONDS {
            bail!("Envoy's clock is real: advancing {seconds} s needs `wasm_only: <why>`");
        }
        std::thread::sleep(Duration::from_secs(seconds));
        Ok(())
    }

    fn now_unix(&self) -> i64 {
        super::credentials::unix_now()
    }

    fn label(&self) -> &'static str {
        "envoy"
    }
}
