//! The request side: admission of the headers (normalize, route, IP rules,
//! size limits, authenticate, rate-limit), the body's size as it arrives,
//! then the policy's decision and the plan for the response.

use super::CompiledConfig;
use crate::auth::challenge;
use crate::auth::{AuthOutcome, IntrospectionCall};
use crate::cors::{self, Preflight};
use crate::decision_log::{DecisionRecord, Outcome};
use crate::deny::{Denial, Stage};
use crate::host::{Host, LogLevel};
use crate::http::{first_value, LocalReply, UpstreamEdits};
use crate::identity::Identity;
use crate::metrics::Metric;
use crate::normalize::{
    self, RawRequest, RequestView, METHOD_OVERRIDE_HEADERS, SPOOFABLE_HEADER_PREFIX,
};
use crate::policy::RequestContext;
use crate::redact::{self, ResponseRedaction};
use crate::request_limits;

/// A request that passed authentication and rate limits and waits for the
/// policy (possibly for its body first).
#[derive(Debug, Clone)]
pub struct Admitted {
    pub view: RequestView,
    pub identity: Identity,
    pub route_index: usize,
    pub edits: UpstreamEdits,
    /// Rate-limit headers for the client reply.
    pub response_headers: Vec<(String, String)>,
    /// The route's CORS headers for this request's origin, on every reply
    /// (forwarded or answered) so a browser application can read it.
    pub cors_headers: Vec<(String, String)>,
    pub body: BodyPlan,
    pub record: DecisionRecord,
}

/// What the shell does with an admitted request's body.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BodyPlan {
    /// Bytes of the body the policy reads (`input.parsed_body`); `None`:
    /// the policy sees no body.
    pub policy_bytes: Option<usize>,
    /// The route's `request_limits.max_body_bytes`.
    pub max_bytes: Option<u64>,
    /// Hold the headers until the body has ended: the policy reads it, or
    /// no declared length within `max_bytes` says that the body fits, and
    /// nothing may reach the upstream before that is known.
    pub hold: bool,
}

/// What happens to the response of a forwarded request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponsePlan {
    pub add_headers: Vec<(String, String)>,
    pub remove_headers: Vec<String>,
    /// Redaction profiles and body options; no profiles means the body
    /// passes untouched.
    pub redaction: ResponseRedaction,
}

/// A request on its way upstream.
#[derive(Debug, Clone)]
pub struct Forwarded {
    pub edits: UpstreamEdits,
    /// The body limit for bytes that stream after the headers went
    /// upstream (a declared length said the body fits; it is counted anyway).
    pub max_body_bytes: Option<u64>,
    pub response: ResponsePlan,
    pub record: DecisionRecord,
}

/// How a request's headers were judged.
#[derive(Debug)]
pub enum Admission {
    Admitted(Box<Admitted>),
    Answered(LocalReply),
    /// A remote JWKS is not loaded yet: the shell pauses the request and
    /// judges it again when keys arrive or `max_wait_ms` has passed.
    AwaitingKeys {
        max_wait_ms: u64,
    },
    /// The authorization server is being asked about the request's opaque
    /// token: the shell pauses the request, hands the answer to
    /// [`CompiledConfig::accept_introspection`] and judges it again with
    /// [`Attempt::Final`].
    AwaitingIntrospection(PendingIntrospection),
}

/// An introspection call in flight for one request.
#[derive(Debug, Clone)]
pub struct PendingIntrospection {
    /// The callout's token: the answer that carries it is this request's.
    pub callout: u32,
    call: IntrospectionCall,
}

/// Which judgement of a request this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// The first, and the request may wait for keys.
    First,
    /// The request waited and keys may have arrived; it may wait on.
    Retry,
    /// The wait is over: keys still missing is a 503.
    Final,
    /// The first and only (no waiting): keys missing is a 503.
    Only,
}

impl Attempt {
    fn may_wait(self) -> bool {
        matches!(self, Self::First | Self::Retry)
    }
}

impl CompiledConfig {
    /// Request headers: normalize, route, authenticate, rate-limit. Pending
    /// remote keys are answered with 503 here; the shell uses
    /// [`CompiledConfig::admit_or_wait`] to wait for them instead.
    pub fn admit(&self, raw: &RawRequest, host: &dyn Host) -> Result<Admitted, LocalReply> {
        match self.admit_or_wait(raw, host, Attempt::Only) {
            Admission::Admitted(admitted) => Ok(*admitted),
            Admission::Answered(reply) => Err(reply),
            Admission::AwaitingKeys { .. } => Err(self.deny(
                &challenge::keys_unavailable(),
                DecisionRecord::default(),
                host,
            )),
            // Not reached: a request judged once only never starts a call.
            Admission::AwaitingIntrospection(pending) => {
                self.abandon_introspection(&pending);
                Err(self.deny(
                    &challenge::introspection_unavailable(),
                    DecisionRecord::default(),
                    host,
                ))
            }
        }
    }

    /// The authorization server's answer for a request that waits (`status`
    /// 0 when the call failed or timed out). The shell then judges the
    /// request again with [`Attempt::Final`], which finds the answer in the
    /// cache, or gives 503 when there was none to keep.
    pub fn accept_introspection(
        &self,
        pending: &PendingIntrospection,
        status: u16,
        body: &[u8],
        host: &dyn Host,
    ) {
        self.auth
            .accept_introspection(&pending.call, pending.callout, status, body, host);
    }

    /// The request ended while its introspection call was in flight.
    pub fn abandon_introspection(&self, pending: &PendingIntrospection) {
        self.auth
            .abandon_introspection(&pending.call, pending.callout);
    }

    /// Like [`CompiledConfig::admit`], but a request whose identity provider's keys
    /// have not arrived yet may wait for them (see [`Attempt`]).
    pub fn admit_or_wait(&self, raw: &RawRequest, host: &dyn Host, attempt: Attempt) -> Admission {
        if attempt != Attempt::Retry && attempt != Attempt::Final {
            host.count(Metric::RequestsTotal, 1);
        }
        let mut record = DecisionRecord::default();
        let view = match normalize::normalize(raw, &self.config.gateway) {
            Ok(view) => view,
            Err(e) => {
                record.method = header_value(raw, ":method");
                record.request_id = header_value(raw, "x-request-id");
                return Admission::Answered(self.deny(
                    &Denial::bad_request(e.detail()),
                    record,
                    host,
                ));
            }
        };
        record.request_id = view.id.clone();
        record.method = view.method.clone();
        record.path = view.path.clone();
        if let Err(refusal) = self.ip_rules.check_gateway(view.client_ip) {
            return Admission::Answered(self.refuse(
                refusal.denial(),
                refusal.reason,
                record,
                host,
            ));
        }
        // A preflight asks about the request to come: it belongs to the
        // route that request's method would take, if that route has CORS;
        // a method no route serves is refused by the first CORS route of
        // the path.
        let preflight = Preflight::of(&view.method, &view.headers);
        let preflight_route = preflight.and_then(|p| match self.route_for(p.method, &view.path) {
            Some(index) => Some(index).filter(|&i| self.cors.governs(i)),
            None => self
                .config
                .routes
                .iter()
                .enumerate()
                .position(|(i, r)| self.cors.governs(i) && r.matcher.matches_path(&view.path)),
        });
        let Some(route_index) =
            preflight_route.or_else(|| self.route_for(&view.method, &view.path))
        else {
            return Admission::Answered(self.deny(&Denial::no_route(), record, host));
        };
        let route = &self.config.routes[route_index];
        record.route = Some(route.name.clone());
        if let Err(refusal) = self.ip_rules.check_route(route_index, view.client_ip) {
            return Admission::Answered(self.refuse(
                refusal.denial(),
                refusal.reason,
                record,
                host,
            ));
        }
        if let (Some(preflight), Some(_)) = (&preflight, preflight_route) {
            return Admission::Answered(self.answer_preflight(
                route_index,
                preflight,
                record,
                host,
            ));
        }
        let cors_headers = self
            .cors
            .response_headers(route_index, view.header("origin"));
        let answered = |reply: LocalReply| Admission::Answered(with_headers(reply, &cors_headers));
        let limits = self.request_limits.for_route(route_index);
        if let Err(refusal) = limits.check_headers(&raw.headers) {
            return answered(self.refuse(refusal.denial(), refusal.reason, record, host));
        }

        let (identity, auth_edits) =
            match self
                .auth
                .authenticate(&view, route, &self.config.gateway.realm, host)
            {
                AuthOutcome::Authenticated(identity, edits) => (identity, edits),
                AuthOutcome::Denied(denial, reason) => {
                    record.reason = Some(reason.to_string());
                    return answered(self.deny(&denial, record, host));
                }
                AuthOutcome::KeysPending { max_wait_ms } if attempt.may_wait() => {
                    return Admission::AwaitingKeys { max_wait_ms }
                }
                AuthOutcome::KeysPending { .. } => {
                    host.count(Metric::AuthDenied, 1);
                    let denial = challenge::keys_unavailable();
                    return answered(self.deny(&denial, record, host));
                }
                // Only a first judgement asks, from the request's own
                // context; a judgement after the answer finds it cached or
                // there was no usable answer.
                AuthOutcome::Introspect(call) => {
                    let reason = if attempt == Attempt::First {
                        match self.auth.start_introspection(&call, host) {
                            Ok(callout) => {
                                return Admission::AwaitingIntrospection(PendingIntrospection {
                                    callout,
                                    call,
                                })
                            }
                            Err(reason) => reason,
                        }
                    } else {
                        "introspection-unavailable"
                    };
                    host.count(Metric::AuthDenied, 1);
                    record.reason = Some(reason.to_string());
                    let denial = challenge::introspection_unavailable();
                    return answered(self.deny(&denial, record, host));
                }
            };
        host.count(Metric::AuthAllowed, 1);
        record.identify(&identity, self.pseudonym_key());

        let response_headers = match self.limits.check(&view, &identity, route, host) {
            Ok(headers) => headers,
            Err(denial) => return answered(self.deny(&denial, record, host)),
        };

        let policy_bytes = route
            .request_body
            .buffer
            .then_some(route.request_body.max_bytes);
        let body = BodyPlan {
            policy_bytes,
            max_bytes: limits.max_body_bytes,
            hold: policy_bytes.is_some() || limits.must_hold_body(&raw.headers),
        };
        let mut edits = spoofed_header_removals(&view);
        edits.merge(auth_edits);
        if view.upstream_path() != view.raw_path && edits.path.is_none() {
            edits.path = Some(view.upstream_path());
        }
        Admission::Admitted(Box::new(Admitted {
            view,
            identity,
            route_index,
            edits,
            response_headers,
            cors_headers,
            body,
            record,
        }))
    }

    /// The first route that serves `method` on `path`.
    fn route_for(&self, method: &str, path: &str) -> Option<usize> {
        self.config
            .routes
            .iter()
            .position(|r| r.matcher.matches(method, path))
    }

    /// `size` bytes of an admitted request's body have arrived (so far):
    /// past the route's limit, the 413.
    pub fn check_request_body(
        &self,
        admitted: &Admitted,
        size: u64,
        host: &dyn Host,
    ) -> Result<(), LocalReply> {
        request_limits::check_body(admitted.body.max_bytes, size).map_err(|refusal| {
            let reply = self.refuse(
                refusal.denial(),
                refusal.reason,
                admitted.record.clone(),
                host,
            );
            with_headers(reply, &admitted.cors_headers)
        })
    }

    /// Like [`CompiledConfig::check_request_body`], for the body of a
    /// request already forwarded: `size` is every byte counted so far.
    pub fn check_streamed_body(
        &self,
        forwarded: &Forwarded,
        size: u64,
        host: &dyn Host,
    ) -> Result<(), LocalReply> {
        request_limits::check_body(forwarded.max_body_bytes, size).map_err(|refusal| {
            self.refuse(
                refusal.denial(),
                refusal.reason,
                forwarded.record.clone(),
                host,
            )
        })
    }

    /// The Rego decision, then the plan for the response.
    pub fn authorize(
        &self,
        admitted: Admitted,
        body: Option<&[u8]>,
        body_truncated: bool,
        host: &dyn Host,
    ) -> Result<Forwarded, LocalReply> {
        let Admitted {
            view,
            identity,
            route_index,
            mut edits,
            response_headers,
            cors_headers,
            body: body_plan,
            mut record,
        } = admitted;
        let Some(route) = self.route(route_index) else {
            return Err(self.deny(&Denial::no_route(), record, host));
        };
        let refused = |reply: LocalReply| with_headers(reply, &cors_headers);
        let decision = self.policy.authorize(
            &RequestContext {
                view: &view,
                identity: &identity,
                route,
                body,
                body_truncated,
            },
            host,
        );
        if decision.eval_micros > 0 || !decision.dry_run {
            record.policy_eval_us = Some(decision.eval_micros);
        }
        record.reason = decision.reason.clone();
        record.policy_error = decision.failed;
        if !decision.allowed {
            if decision.dry_run {
                host.count(Metric::PolicyDryRunDenied, 1);
                record.outcome = Outcome::DryRunDenied;
                host.log(
                    LogLevel::Warn,
                    "citygate: policy dry-run would deny this request",
                );
            } else {
                let mut denial = Denial::new(
                    decision.http_status.unwrap_or(403),
                    Stage::Policy,
                    "policy-denied",
                    "Forbidden",
                    "the access policy denies this request",
                    Metric::PolicyDenied,
                );
                denial.headers = decision.headers;
                denial.body = decision.body;
                return Err(refused(self.deny(&denial, record, host)));
            }
        } else {
            host.count(Metric::PolicyAllowed, 1);
        }
        if decision.allowed {
            edits.set_headers.extend(decision.headers);
            edits
                .remove_headers
                .extend(decision.request_headers_to_remove);
        }
        let mut add_headers = response_headers;
        add_headers.extend(decision.response_headers_to_add);
        add_headers.extend(cors_headers.iter().cloned());
        let mut redaction = match self
            .redactor
            .plan_response(route, &decision.redact, &view.method)
        {
            Ok(redaction) => redaction,
            Err(denial) => return Err(refused(self.deny(&denial, record, host))),
        };
        redaction.ngsi_attribute = redact::ngsi_attribute(&view.path);
        edits.merge(redact::request_edits(route, &view, &redaction));
        // Removals run before any header is set, so they only ever touch
        // the client's headers: removing one it did not send is a hostcall
        // for nothing.
        edits.remove_headers.retain(|name| {
            view.headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case(name))
        });
        host.count(Metric::RequestsAllowed, 1);
        Ok(Forwarded {
            edits,
            max_body_bytes: body_plan.max_bytes,
            response: ResponsePlan {
                add_headers,
                remove_headers: self.response_headers_to_remove(route_index, route),
                redaction,
            },
            record,
        })
    }
}

impl CompiledConfig {
    /// Upstream response headers the client must not get: the redaction
    /// block's, and on a CORS route the upstream's own CORS headers.
    fn response_headers_to_remove(
        &self,
        route_index: usize,
        route: &crate::config::RouteConfig,
    ) -> Vec<String> {
        let mut names = self.redactor.response_headers_to_remove(route);
        if self.cors.governs(route_index) {
            names.extend(
                cors::UPSTREAM_HEADERS_REPLACED
                    .iter()
                    .map(|n| n.to_string()),
            );
        }
        names
    }
}

/// A reply with `headers` added (the route's CORS headers).
fn with_headers(mut reply: LocalReply, headers: &[(String, String)]) -> LocalReply {
    reply.headers.extend(headers.iter().cloned());
    reply
}

fn header_value(raw: &RawRequest, name: &str) -> String {
    first_value(&raw.headers, name)
        .unwrap_or_default()
        .to_string()
}

/// Identity headers are citygate's to write: whatever a client sent under
/// those names is dropped before the request goes upstream.
fn spoofed_header_removals(view: &RequestView) -> UpstreamEdits {
    let mut edits = UpstreamEdits::default();
    for (name, _) in &view.headers {
        let spoofed = name.starts_with(SPOOFABLE_HEADER_PREFIX)
            || METHOD_OVERRIDE_HEADERS.contains(&name.as_str());
        if spoofed && !edits.remove_headers.contains(name) {
            edits.remove_headers.push(name.clone());
        }
    }
    edits
}
