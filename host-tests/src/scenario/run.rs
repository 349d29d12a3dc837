//! Runs scenario cases through a target (the .wasm in wasmtime, or a real
//! Envoy) and reports each failure with expected and actual.

use std::time::Duration;

use anyhow::{anyhow, Result};

use super::expect::{check, Observed};
use super::file::Case;
use super::load::{PreparedRequest, PreparedUpstream, Scenario};
use crate::abi::state::{CalloutReply, CalloutRequest, Clock, PeerCert};
use crate::harness::{Request, RequestOutcome, Upstream, Vm};
use crate::introspection::Introspected;
use crate::runtime::Plugin;

/// Where scenario requests are sent.
pub trait Target {
    /// Sends one request (and, if it is forwarded, the upstream's reply).
    fn exchange(
        &mut self,
        request: &PreparedRequest,
        upstream: &PreparedUpstream,
        with_decision: bool,
    ) -> Result<Observed>;
    /// Moves the gateway's clock forward (Envoy: really waits).
    fn advance(&mut self, seconds: u64) -> Result<()>;
    /// The gateway's current time, for minting credentials.
    fn now_unix(&self) -> i64;
    /// Which runner this is, for the report.
    fn label(&self) -> &'static str;
}

/// One case's result.
#[derive(Debug, Clone)]
pub struct CaseResult {
    pub scenario: String,
    pub case: String,
    pub failures: Vec<String>,
}

impl CaseResult {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Runs every case of a scenario (that matches `filter`) in order: state
/// such as rate-limit buckets carries over from case to case.
pub fn run_scenario(
    scenario: &Scenario,
    target: &mut dyn Target,
    filter: Option<&str>,
) -> Vec<CaseResult> {
    let mut results = Vec::new();
    for case in &scenario.file.cases {
        let full_name = format!("{}::{}", scenario.name(), case.name);
        if filter.is_some_and(|f| !full_name.contains(f)) {
            continue;
        }
        if !case.runs_in(target.label()) {
            continue;
        }
        let failures = match run_case(scenario, case, target) {
            Ok(failures) => failures,
            Err(e) => vec![format!("error: {e:#}")],
        };
        results.push(CaseResult {
            scenario: scenario.name(),
            case: case.name.clone(),
            failures,
        });
    }
    results
}

fn run_case(scenario: &Scenario, case: &Case, target: &mut dyn Target) -> Result<Vec<String>> {
    if case.advance_seconds > 0 {
        target.advance(case.advance_seconds)?;
    }
    let upstream = scenario.upstream(case)?;
    let repeat = case.repeat.max(1);
    let wants_decision = case.expect.decision.is_some()
        || case
            .expect_each
            .as_ref()
            .is_some_and(|e| e.decision.is_some());
    let mut failures = Vec::new();
    for round in 1..=repeat {
        let request = scenario.request(case, target.now_unix())?;
        let observed = target.exchange(&request, &upstream, wants_decision)?;
        if let Some(each) = &case.expect_each {
            for failure in check(each, &observed)? {
                failures.push(format!("repetition {round}/{repeat}: {failure}"));
            }
        }
        if round == repeat {
            failures.extend(check(&case.expect, &observed)?);
        }
    }
    Ok(failures)
}

/// The decision-log line of the request `request_id` among the filter's
/// log messages: the filter writes one JSON object per decision.
pub fn decision_line<'a>(
    messages: impl IntoIterator<Item = &'a str>,
    request_id: Option<&str>,
) -> Option<serde_json::Value> {
    messages.into_iter().find_map(|message| {
        let json = &message[message.find('{')?..];
        let record: serde_json::Value = serde_json::from_str(json).ok()?;
        let is_decision = record.get("outcome").is_some() && record.get("request_id").is_some();
        let matches = request_id.is_none_or(|id| record["request_id"] == id);
        (is_decision && matches).then_some(record)
    })
}

/// The .wasm in the wasmtime host: one VM per scenario file.
pub struct WasmTarget {
    vm: Vm,
    clock: Clock,
}

impl WasmTarget {
    pub fn start(plugin: &Plugin, scenario: &Scenario) -> Result<Self> {
        let clock = match scenario.file.start_time {
            Some(t) => Clock::at_unix_secs(u64::try_from(t)?),
            None => Clock::starting_now(),
        };
        let mut builder = plugin
            .vm()
            .config(scenario.config_json.clone())
            .clock(&clock)
            // As `envoy/gateway.yaml` configures Envoy, so both runners agree.
            .headers_stop_iteration(true);
        for (name, value) in &scenario.env {
            builder = builder.env(name.clone(), value.clone());
        }
        for (cluster, reply) in &scenario.file.clusters {
            if reply.introspection {
                builder = builder.callouts_with(introspection_server(scenario, cluster, &clock)?);
                continue;
            }
            builder = builder.callout(cluster.clone(), cluster_reply(scenario, reply)?);
        }
        let vm = builder.start()?;
        Ok(Self { vm, clock })
    }

    pub fn vm(&mut self) -> &mut Vm {
        &mut self.vm
    }
}

/// The demo authorization server behind `cluster`, on the VM's clock: a
/// token that hangs there times out, as Envoy reports it.
fn introspection_server(
    scenario: &Scenario,
    cluster: &str,
    clock: &Clock,
) -> Result<impl Fn(&CalloutRequest) -> CalloutReply + Send + Sync + 'static> {
    let spec = scenario
        .credentials
        .as_ref()
        .ok_or_else(|| anyhow!("`introspection: true` needs a `credentials` file"))?
        .introspection()
        .clone();
    let (cluster, clock) = (cluster.to_string(), clock.clone());
    Ok(move |call: &CalloutRequest| {
        if call.cluster != cluster {
            return CalloutReply::Failure;
        }
        let now = i64::try_from(clock.now_nanos() / 1_000_000_000).unwrap_or(i64::MAX);
        match spec.introspect(call.headers.get("authorization"), &call.body, now) {
            Introspected::Answer { status, body } => CalloutReply::Reply {
                status,
                headers: vec![("content-type".into(), "application/json".into())],
                body,
            },
            Introspected::Hang => CalloutReply::Timeout,
        }
    })
}

fn cluster_reply(scenario: &Scenario, reply: &super::file::ClusterReply) -> Result<CalloutReply> {
    use super::file::CalloutFailure;
    if let Some(failure) = reply.fail {
        return Ok(match failure {
            CalloutFailure::Timeout => CalloutReply::Timeout,
            CalloutFailure::Reset => CalloutReply::Failure,
        });
    }
    let body = match (&reply.body, &reply.json, &reply.jwks_of) {
        (Some(body), _, _) => body.clone().into_bytes(),
        (None, Some(json), _) => serde_json::to_vec(json)?,
        (None, None, Some(issuer)) => {
            let credentials = scenario
                .credentials
                .as_ref()
                .ok_or_else(|| anyhow!("`jwks_of` needs a `credentials` file"))?;
            serde_json::to_vec(&credentials.jwks(issuer, None)?)?
        }
        (None, None, None) => Vec::new(),
    };
    Ok(CalloutReply::Reply {
        status: reply.status,
        headers: reply
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        body,
    })
}

impl WasmTarget {
    fn exchange_only(
        &mut self,
        prepared: &PreparedRequest,
        upstream: &PreparedUpstream,
    ) -> Result<Observed> {
        let mut request = Request::new(&prepared.method, &prepared.path);
        for (name, value) in &prepared.headers {
            request = request.header(name, value);
        }
        if !prepared.body.is_empty() {
            request = request.body(prepared.body.clone());
            // A whole body in one piece goes with its length, as the Envoy
            // rig's client sends it; chunks and trailers go without.
            let framed = prepared.headers.iter().any(|(n, _)| {
                n.eq_ignore_ascii_case("content-length")
                    || n.eq_ignore_ascii_case("transfer-encoding")
            });
            if prepared.chunk_size.is_none() && prepared.trailers.is_empty() && !framed {
                request = request.header("content-length", &prepared.body.len().to_string());
            }
        }
        if let Some(size) = prepared.chunk_size {
            request = request.chunk_size(size);
        }
        for (name, value) in &prepared.trailers {
            request = request.trailer(name, value);
        }
        if let Some(source) = &prepared.source {
            request = request.source(source);
        }
        if let Some(cert) = &prepared.peer_certificate {
            request = request.mtls(PeerCert {
                uri_san: cert.uri_san.clone().unwrap_or_default(),
                dns_san: cert.dns_san.clone().unwrap_or_default(),
                subject: cert.subject.clone().unwrap_or_default(),
            });
        }
        let mut exchange = self.vm.send(request)?;
        match exchange.outcome() {
            // A reply after the headers went upstream still reached it.
            RequestOutcome::Local(reply) => Ok(Observed {
                status: reply.status,
                headers: reply.headers.0.clone(),
                body: reply.body.clone(),
                reached_upstream: exchange.upstream_saw_headers(),
                ..Observed::default()
            }),
            RequestOutcome::Forwarded(forwarded) => {
                let upstream_path = forwarded
                    .headers
                    .0
                    .iter()
                    .find(|(n, _)| n == ":path")
                    .map(|(_, v)| v.clone());
                let mut reply = Upstream::new(upstream.status);
                for (name, value) in &upstream.headers {
                    reply = reply.header(name, value);
                }
                reply = reply.body(upstream.body.clone());
                if let Some(size) = upstream.chunk_size {
                    reply = reply.chunk_size(size);
                }
                for (name, value) in &upstream.trailers {
                    reply = reply.trailer(name, value);
                }
                let response = exchange.respond(reply)?;
                Ok(Observed {
                    status: response.status,
                    headers: response.headers.0.clone(),
                    body: response.body.clone(),
                    reached_upstream: true,
                    upstream_path,
                    upstream_headers: forwarded.headers.0.clone(),
                    upstream_body: forwarded.body.clone(),
                    decision: None,
                })
            }
            RequestOutcome::Pending => Err(anyhow!(
                "the filter is still holding the request (waiting for a callout the scenario does not answer?)"
            )),
            RequestOutcome::Reset => Err(anyhow!("the filter reset the stream")),
        }
    }
}

impl Target for WasmTarget {
    fn exchange(
        &mut self,
        prepared: &PreparedRequest,
        upstream: &PreparedUpstream,
        with_decision: bool,
    ) -> Result<Observed> {
        let logged_before = self.vm.logs().len();
        let observed = self.exchange_only(prepared, upstream)?;
        let decision = if with_decision {
            // One request at a time: the only decision line since it began
            // is this request's.
            decision_line(
                self.vm.logs()[logged_before..]
                    .iter()
                    .map(|entry| entry.message.as_str()),
                None,
            )
        } else {
            None
        };
        Ok(Observed {
            decision,
            ..observed
        })
    }
    fn advance(&mut self, seconds: u64) -> Result<()> {
        self.vm.advance(Duration::from_secs(seconds))?;
        Ok(())
    }

    fn now_unix(&self) -> i64 {
        i64::try_from(self.clock.now_nanos() / 1_000_000_000).unwrap_or(i64::MAX)
    }

    fn label(&self) -> &'static str {
        "wasm"
    }
}
