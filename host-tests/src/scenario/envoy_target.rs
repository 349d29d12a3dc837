//! Scenario cases against a real Envoy running the .wasm, with the demo
//! city API as the upstream answering what each case scripts.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Result};

use super::expect::Observed;
use super::file::CalloutFailure;
use super::load::{PreparedRequest, PreparedUpstream, Scenario};
use super::run::Target;
use crate::demo_api::{DemoApi, JwksMode, ScriptedReply};
use crate::envoy::{EnvoyProcess, Gateway};

/// Envoy waits this long at most in `advance_seconds` (real time passes).
const MAX_REAL_WAIT_SECONDS: u64 = 3;
const JWKS_PATH: &str = "/.well-known/jwks.json";

pub struct EnvoyTarget {
    // Field order: Envoy stops before its upstream does.
    envoy: EnvoyProcess,
    api: DemoApi,
}

impl EnvoyTarget {
    pub fn start(wasm: &Path, scenario: &Scenario) -> Result<Self> {
        let mut jwks = serde_json::json!({ "keys": [] });
        let mut mode = JwksMode::Serve;
        for (cluster, reply) in &scenario.file.clusters {
            if cluster != "jwks" {
                bail!("cluster `{cluster}`: the Envoy runner only serves the `jwks` cluster");
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

    fn upstream_requests(&self) -> Vec<crate::demo_api::ReceivedRequest> {
        self.api
            .requests()
            .into_iter()
            .filter(|r| r.path != JWKS_PATH)
            .collect()
    }
}

impl Target for EnvoyTarget {
    fn exchange(
        &mut self,
        request: &PreparedRequest,
        upstream: &PreparedUpstream,
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
        let headers: Vec<(&str, &str)> = request
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let reply = self
            .envoy
            .request(&request.method, &request.path, &headers, &request.body)?;
        let received = self.upstream_requests();
        let reached = received.len() > before;
        let last = received.last().filter(|_| reached);
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
