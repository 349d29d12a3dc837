//! The scenario file format (a contract: see README "Scenario files").

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFile {
    #[serde(default)]
    pub description: String,
    /// The plugin configuration: a path relative to this file, or inline.
    pub config: ConfigSource,
    /// The VM's environment (`${env:NAME}` secrets of the config).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// A `NAME=VALUE` file (relative path) read into the environment first.
    #[serde(default)]
    pub env_file: Option<PathBuf>,
    /// Demo credentials (`policies/demo-keys/credentials.yaml`), relative path.
    #[serde(default)]
    pub credentials: Option<PathBuf>,
    /// Replies of Envoy clusters the filter calls (e.g. a JWKS endpoint).
    #[serde(default)]
    pub clusters: BTreeMap<String, ClusterReply>,
    /// Start time of the scenario's clock (Unix seconds); default: now.
    #[serde(default)]
    pub start_time: Option<i64>,
    pub cases: Vec<Case>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ConfigSource {
    Path(PathBuf),
    Inline(serde_json::Value),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterReply {
    #[serde(default = "ok_status")]
    pub status: u16,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub json: Option<serde_json::Value>,
    /// `{{jwks:ISSUER}}`-style generated body: the JWKS of a demo issuer.
    #[serde(default)]
    pub jwks_of: Option<String>,
    /// The cluster does not answer (timeout) or the call fails.
    #[serde(default)]
    pub fail: Option<CalloutFailure>,
    /// The demo authorization server answers: RFC 7662 introspection of
    /// the credentials file's opaque tokens (other fields unused).
    #[serde(default)]
    pub introspection: bool,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CalloutFailure {
    Timeout,
    Reset,
}

fn ok_status() -> u16 {
    200
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub name: String,
    /// Advance the clock this many seconds before the case.
    #[serde(default)]
    pub advance_seconds: u64,
    /// Send the same request this many times; `expect` applies to the last
    /// answer, `expect_each` (required when `repeat` > 1) to every one.
    #[serde(default = "one")]
    pub repeat: u32,
    pub request: RequestSpec,
    #[serde(default)]
    pub upstream: Option<UpstreamSpec>,
    pub expect: Expectation,
    /// What every repetition of a repeated request must answer.
    #[serde(default)]
    pub expect_each: Option<Expectation>,
    /// Only for the wasm runner (a behaviour Envoy itself changes, e.g.
    /// pseudo-header handling), with the reason.
    #[serde(default)]
    pub wasm_only: Option<String>,
    /// Only for the Envoy runner (what Envoy does before citygate sees the
    /// request, which the wasmtime host does not imitate), with the reason.
    #[serde(default)]
    pub envoy_only: Option<String>,
}

impl Case {
    /// Whether the runner labelled `runner` (`wasm` or `envoy`) runs this case.
    pub fn runs_in(&self, runner: &str) -> bool {
        match runner {
            "wasm" => self.envoy_only.is_none(),
            "envoy" => self.wasm_only.is_none(),
            _ => self.wasm_only.is_none() && self.envoy_only.is_none(),
        }
    }
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestSpec {
    #[serde(default = "get")]
    pub method: String,
    pub path: String,
    #[serde(default)]
    pub headers: Headers,
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub json: Option<serde_json::Value>,
    /// Deliver the body in chunks of this many bytes.
    #[serde(default)]
    pub chunk_size: Option<usize>,
    #[serde(default)]
    pub trailers: Headers,
    /// Socket peer `ip:port`.
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub peer_certificate: Option<PeerCertificateSpec>,
}

fn get() -> String {
    "GET".to_string()
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PeerCertificateSpec {
    #[serde(default)]
    pub uri_san: Option<String>,
    #[serde(default)]
    pub dns_san: Option<String>,
    #[serde(default)]
    pub subject: Option<String>,
}

/// Headers as a map or, to repeat a name, a list of `[name, value]` pairs.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(untagged)]
pub enum Headers {
    #[default]
    None,
    Map(BTreeMap<String, String>),
    Pairs(Vec<(String, String)>),
}

impl Headers {
    pub fn pairs(&self) -> Vec<(String, String)> {
        match self {
            Headers::None => Vec::new(),
            Headers::Map(map) => map.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            Headers::Pairs(pairs) => pairs.clone(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSpec {
    #[serde(default = "ok_status")]
    pub status: u16,
    #[serde(default)]
    pub headers: Headers,
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub json: Option<serde_json::Value>,
    /// A file (relative to the scenario) whose bytes are the body.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// Gzip the body and send `content-encoding: gzip`.
    #[serde(default)]
    pub gzip: bool,
    #[serde(default)]
    pub chunk_size: Option<usize>,
    #[serde(default)]
    pub trailers: Headers,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Expectation {
    pub status: Option<u16>,
    /// Whether the request reached the upstream.
    #[serde(default)]
    pub reached_upstream: Option<bool>,
    /// What the upstream received.
    #[serde(default)]
    pub upstream_request: Option<UpstreamRequestExpectation>,
    #[serde(default)]
    pub headers: HeaderExpectation,
    #[serde(default)]
    pub body: BodyExpectation,
    /// The request's decision-log line: why it was allowed or denied.
    #[serde(default)]
    pub decision: Option<DecisionExpectation>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct UpstreamRequestExpectation {
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub headers: HeaderExpectation,
    /// The body the upstream received (after any buffering or chunking).
    #[serde(default)]
    pub body: BodyExpectation,
}

/// What the decision-log line of the request must say. `error` is a
/// policy that failed (undefined decision, runtime error, time budget), which
/// denies like a deliberate `deny` but must not pass for one.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionExpectation {
    pub outcome: ExpectedOutcome,
    /// The stage that denied (`normalize`, `route`, `auth`, `rate_limit`,
    /// `policy`, `redaction`).
    #[serde(default)]
    pub stage: Option<String>,
    /// The exact reason.
    #[serde(default)]
    pub reason: Option<String>,
    /// A regular expression the reason must match.
    #[serde(default)]
    pub reason_matches: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ExpectedOutcome {
    Allowed,
    Denied,
    DryRunDenied,
    Error,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct HeaderExpectation {
    /// Names that must be present.
    #[serde(default)]
    pub present: Vec<String>,
    /// Names that must be absent.
    #[serde(default)]
    pub absent: Vec<String>,
    /// Exact values.
    #[serde(default)]
    pub equal: BTreeMap<String, String>,
    /// Regular expressions the value must match.
    #[serde(default)]
    pub matches: BTreeMap<String, String>,
    /// Every value of a header that may repeat, in order. `equal` and
    /// `matches` require the header to appear exactly once, so a forged
    /// duplicate cannot hide behind the right value.
    #[serde(default)]
    pub values: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct BodyExpectation {
    /// The whole body, as JSON.
    #[serde(default)]
    pub json: Option<serde_json::Value>,
    /// JSONPath (RFC 9535) → the value it must select (exactly one node).
    #[serde(default)]
    pub json_paths: BTreeMap<String, serde_json::Value>,
    /// JSONPaths that must select nothing.
    #[serde(default)]
    pub absent_paths: Vec<String>,
    /// JSONPaths that must select at least one node.
    #[serde(default)]
    pub present_paths: Vec<String>,
    #[serde(default)]
    pub contains: Vec<String>,
    #[serde(default)]
    pub not_contains: Vec<String>,
    /// The body must be empty.
    #[serde(default)]
    pub empty: bool,
    /// The exact bytes (as UTF-8 text).
    #[serde(default)]
    pub exact: Option<String>,
}
