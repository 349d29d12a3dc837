//! The pipeline: normalize → IP rules → route → IP rules → (CORS preflight) → request limits →
//! authenticate → rate-limit → (the body, within its limit) → authorize
//! on the request, minimize on the response. Each stage hands one value
//! forward; denials leave through [`CompiledConfig::deny`] only. The shell
//! calls one method per proxy callback and decides nothing itself.
//!
//! - `request`: admission (headers) and authorization (the policy);
//! - `response`: the response headers and body of a forwarded request;
//! - `housekeeping`: the root context's tick, callout replies and the lines
//!   logged when a configuration is accepted.

mod housekeeping;
mod request;
mod response;
#[cfg(test)]
mod tests;

pub use housekeeping::TickState;
pub use request::{
    Admission, Admitted, Attempt, BodyPlan, Forwarded, PendingIntrospection, ResponsePlan,
};
pub use response::ResponseHeaders;

use std::rc::Rc;

use crate::auth::Authenticator;
use crate::config::{self, ConfigError, PluginConfig, RouteConfig};
use crate::cors::{self, Cors};
use crate::decision_log::DecisionRecord;
use crate::deny::{self, Denial};
use crate::host::Host;
use crate::http::LocalReply;
use crate::ip_rules::IpRules;
use crate::metrics::{self, Metric};
use crate::policy::PolicyEngine;
use crate::ratelimit::RateLimiter;
use crate::redact::Redactor;
use crate::request_limits::RequestLimits;

/// A plugin configuration compiled for per-request work: every stage
/// prepared once in `on_configure`, then shared by all requests of the VM.
pub struct CompiledConfig {
    config: PluginConfig,
    ip_rules: IpRules,
    cors: Cors,
    request_limits: RequestLimits,
    auth: Authenticator,
    limits: RateLimiter,
    policy: PolicyEngine,
    redactor: Redactor,
    /// `decision_log.pseudonym_key`, shared with each request's record,
    /// which pseudonymizes its subject only if its line is written.
    pseudonym_key: Option<Rc<[u8]>>,
}

impl CompiledConfig {
    pub fn from_json(
        bytes: &[u8],
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        Self::compile(config::parse(bytes, env)?)
    }

    pub fn compile(config: PluginConfig) -> Result<Self, ConfigError> {
        let mut policy = PolicyEngine::compile(config.policy.as_ref())?;
        policy.check_routes(&config.routes)?;
        Ok(Self {
            ip_rules: IpRules::compile(&config.gateway.ip_rules, &config.routes)?,
            cors: Cors::compile(&config.routes)?,
            request_limits: RequestLimits::compile(&config.gateway.request_limits, &config.routes)?,
            auth: Authenticator::compile(&config.auth, &config.routes)?,
            limits: RateLimiter::compile(&config.rate_limits, &config.routes)?,
            policy,
            redactor: Redactor::compile(&config.redaction, &config.routes)?,
            pseudonym_key: config
                .decision_log
                .pseudonym_key
                .as_deref()
                .map(|key| Rc::from(key.as_bytes())),
            config,
        })
    }

    pub fn config(&self) -> &PluginConfig {
        &self.config
    }

    pub fn route(&self, index: usize) -> Option<&RouteConfig> {
        self.config.routes.get(index)
    }

    pub fn authenticator(&self) -> &Authenticator {
        &self.auth
    }

    pub fn rate_limiter(&self) -> &RateLimiter {
        &self.limits
    }

    pub fn policy(&self) -> &PolicyEngine {
        &self.policy
    }

    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    fn pseudonym_key(&self) -> Option<&Rc<[u8]>> {
        self.pseudonym_key.as_ref()
    }

    /// The `:path` a request citygate answers itself should leave in
    /// Envoy's access log: without credential query parameters (a
    /// forwarded request's path loses them the same way). `None` when the
    /// path has none.
    pub fn path_for_access_log(&self, raw_path: &str) -> Option<String> {
        let names: Vec<&str> = self.auth.credential_query_params().collect();
        crate::auth::credential::target_without_params(raw_path, &names)
    }

    /// The single exit for denials: counts the denial, writes its decision
    /// line (`record` describes the request so far) and builds the reply.
    pub fn deny(&self, denial: &Denial, mut record: DecisionRecord, host: &dyn Host) -> LocalReply {
        host.count(Metric::RequestsDenied, 1);
        host.count(denial.metric, 1);
        if let Some(route) = &record.route {
            host.count_named(&metrics::route_denied_name(route, denial.stage), 1);
        }
        record.deny(denial);
        let reply = deny::reply(
            denial,
            &self.config.gateway.problem_type_base,
            &record.request_id,
        );
        record.emit(host);
        reply
    }

    /// A refusal whose decision-log `reason` says more than the client's
    /// reply (the network an address is in, the size seen, the origin).
    pub(crate) fn refuse(
        &self,
        denial: Denial,
        reason: String,
        mut record: DecisionRecord,
        host: &dyn Host,
    ) -> LocalReply {
        record.reason = Some(reason);
        self.deny(&denial, record, host)
    }

    /// A CORS preflight on a route with a `cors` block: the 204 with the
    /// route's grant, or the 403 whose reason says what was not allowed.
    /// Neither needs credentials nor reaches the upstream.
    pub(crate) fn answer_preflight(
        &self,
        route_index: usize,
        preflight: &cors::Preflight<'_>,
        mut record: DecisionRecord,
        host: &dyn Host,
    ) -> LocalReply {
        match self.cors.answer_preflight(route_index, preflight) {
            Ok(headers) => {
                host.count(Metric::CorsPreflightAnswered, 1);
                if self.config.decision_log.enabled {
                    record.status = 204;
                    record.stage = Some(crate::deny::Stage::Cors);
                    record.reason = Some("cors-preflight-answered".into());
                    record.emit(host);
                }
                LocalReply {
                    status: 204,
                    headers,
                    body: Vec::new(),
                }
            }
            Err(refusal) => self.refuse(refusal.denial(), refusal.reason, record, host),
        }
    }

    /// The decision line of a forwarded request, written when its stream ends
    /// so it can carry the response status and redaction counts.
    pub fn finish(&self, mut record: DecisionRecord, status: u16, host: &dyn Host) {
        if self.config.decision_log.enabled {
            record.status = status;
            record.emit(host);
        }
    }
}
