//! Rego access policies evaluated in the filter with regorus, compatible
//! with OPA-Envoy: the same input shape, the same decision shapes, the
//! `io.jwt.*` builtins its primer uses.
//!
//! Without a `policy` section no policy is evaluated and every request a
//! route admits is allowed (routes may still require authentication).

pub mod builtins;
mod config;
mod decision;
mod engine;
pub mod input;
pub mod testing;

pub use config::{PolicyConfig, RoutePolicy, DEFAULT_ENTRYPOINT, DEFAULT_MAX_EVAL_MICROS};
pub use decision::{parse_decision, DecisionError};
pub use engine::{EvalError, Evaluator, PreparedPolicy, VmUnavailable};

use crate::config::{ConfigError, RouteConfig};
use crate::host::{Host, LogLevel};
use crate::identity::Identity;
use crate::metrics::Metric;
use crate::normalize::RequestView;

/// The policy's verdict (the contract: README.md, `policy`, "Decision").
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decision {
    pub allowed: bool,
    /// Status of the denial (default 403).
    pub http_status: Option<u16>,
    /// Added to the upstream request on allow, to the client reply on deny.
    pub headers: Vec<(String, String)>,
    pub response_headers_to_add: Vec<(String, String)>,
    pub request_headers_to_remove: Vec<String>,
    pub body: Option<String>,
    /// Redaction profiles the response gets.
    pub redact: Vec<String>,
    pub reason: Option<String>,
    /// Evaluation time, for the decision log.
    pub eval_micros: u64,
    /// Dry-run: the decision is logged, never enforced.
    pub dry_run: bool,
    /// The policy failed (no input, an undefined decision, a runtime error,
    /// the time budget): denied, but not by the policy's choice.
    pub failed: bool,
}

pub struct RequestContext<'a> {
    pub view: &'a RequestView,
    pub identity: &'a Identity,
    pub route: &'a RouteConfig,
    /// Buffered request body, when the route buffers it.
    pub body: Option<&'a [u8]>,
    pub body_truncated: bool,
}

#[derive(Debug)]
struct CompiledPolicy {
    prepared: PreparedPolicy,
    entrypoint: String,
    dry_run: bool,
}

#[derive(Debug, Default)]
pub struct PolicyEngine {
    policy: Option<CompiledPolicy>,
}

impl PolicyEngine {
    pub fn compile(config: Option<&PolicyConfig>) -> Result<Self, ConfigError> {
        let Some(config) = config else {
            return Ok(Self::default());
        };
        Ok(Self {
            policy: Some(CompiledPolicy {
                prepared: PreparedPolicy::prepare(config)?,
                entrypoint: config.entrypoint.clone(),
                dry_run: config.dry_run,
            }),
        })
    }

    /// Route options that need the compiled modules: a route's own
    /// entrypoint must exist, and needs a policy at all. Route entrypoints
    /// are then compiled with the global one.
    pub fn check_routes(&mut self, routes: &[RouteConfig]) -> Result<(), ConfigError> {
        for (index, route) in routes.iter().enumerate() {
            let Some(entrypoint) = &route.policy.entrypoint else {
                continue;
            };
            let at = format!("$.routes[{index}].policy.entrypoint");
            match &self.policy {
                Some(policy) => policy.prepared.check_entrypoint(entrypoint, &at)?,
                None => {
                    return Err(ConfigError::new(
                        at,
                        "a route entrypoint needs a `policy` section",
                    ))
                }
            }
        }
        if let Some(policy) = &mut self.policy {
            let mut entrypoints = vec![policy.entrypoint.as_str()];
            for route in routes {
                if let Some(entrypoint) = route.policy.entrypoint.as_deref() {
                    if !entrypoints.contains(&entrypoint) {
                        entrypoints.push(entrypoint);
                    }
                }
            }
            if entrypoints.len() > 1 {
                policy
                    .prepared
                    .choose_evaluator(&entrypoints, "$.policy.evaluator")?;
            }
        }
        Ok(())
    }

    pub fn is_configured(&self) -> bool {
        self.policy.is_some()
    }

    /// Which evaluator runs the policy, and why it is the interpreter when
    /// it is; `None` without a policy.
    pub fn evaluator(&self) -> Option<(Evaluator, Option<&VmUnavailable>)> {
        self.policy.as_ref().map(|p| p.prepared.evaluator())
    }

    /// The configuration log line naming the evaluator; `None` without a
    /// policy.
    pub fn evaluator_line(&self) -> Option<String> {
        let (evaluator, reason) = self.evaluator()?;
        Some(match reason {
            None => format!("citygate: policy evaluator: {}", evaluator.as_str()),
            Some(reason) => format!(
                "citygate: policy evaluator: {} ({reason})",
                evaluator.as_str()
            ),
        })
    }

    /// The raw answers of the chosen evaluator and of the interpreter for
    /// `request` at the global entrypoint: the VM's differential tests and
    /// fuzzing compare them. `None` without a policy or an input.
    pub fn evaluate_both(
        &self,
        request: &RequestContext<'_>,
        now_unix_nanos: u64,
    ) -> Option<(
        Result<regorus::Value, EvalError>,
        Result<regorus::Value, EvalError>,
    )> {
        let policy = self.policy.as_ref()?;
        let input = input::build_input(request).ok()?;
        let chosen = policy
            .prepared
            .evaluate(&policy.entrypoint, input.clone(), now_unix_nanos);
        let interpreted = policy
            .prepared
            .evaluate_in_interpreter(&policy.entrypoint, input);
        Some((chosen, interpreted))
    }

    pub fn authorize(&self, request: &RequestContext<'_>, host: &dyn Host) -> Decision {
        let Some(policy) = &self.policy else {
            return Decision {
                allowed: true,
                ..Decision::default()
            };
        };
        let entrypoint = request
            .route
            .policy
            .entrypoint
            .as_deref()
            .unwrap_or(&policy.entrypoint);
        let dry_run = policy.dry_run || request.route.policy.dry_run;
        // Fresh readings: the request's instant may be well before this
        // stage (a JWT verified first), which would inflate the histogram.
        let started = host.clock_unix_nanos();
        let outcome = input::build_input(request)
            .map_err(|e| e.reason().to_string())
            .and_then(|input| {
                policy
                    .prepared
                    .evaluate(entrypoint, input, host.now_unix_nanos())
                    .map_err(|e| e.to_string())
            })
            .and_then(|value| parse_decision(&value).map_err(|e| e.describe()));
        let eval_micros = host.clock_unix_nanos().saturating_sub(started) / 1_000;
        host.record(Metric::PolicyEvalMicros, eval_micros);
        match outcome {
            Ok(decision) => Decision {
                eval_micros,
                dry_run,
                ..decision
            },
            Err(reason) => {
                host.count(Metric::PolicyError, 1);
                host.log(
                    LogLevel::Warn,
                    &format!(
                        "citygate: route {}: request denied: {reason}",
                        request.route.name
                    ),
                );
                Decision {
                    allowed: false,
                    reason: Some(reason),
                    eval_micros,
                    dry_run,
                    failed: true,
                    ..Decision::default()
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
