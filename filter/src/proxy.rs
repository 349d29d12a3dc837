//! The proxy-wasm shell: adapts Envoy's callbacks to the core and holds the
//! per-request state machine. Nothing here decides; it moves bytes between
//! the proxy and [`Gateway`].

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel as ProxyLogLevel, MetricType, Status};

use crate::deny::LocalReply;
use crate::host::{Callout, Host, LogLevel, SharedDataError, SharedValue};
use crate::metrics::{Metric, MetricKind};
use crate::normalize::{ConnectionInfo, PeerCertificate, RawRequest};
use crate::pipeline::{Admission, Admitted, Attempt, Forwarded, Gateway, UpstreamEdits};
use crate::redact::{BodyAction, BufferPlan, Minimized};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(ProxyLogLevel::Info);
    proxy_wasm::set_root_context(|context_id| -> Box<dyn RootContext> {
        Box::new(CitygateRoot {
            context_id,
            ..CitygateRoot::default()
        })
    });
}}

/// The [`Host`] as Envoy provides it.
#[derive(Clone, Default)]
struct EnvoyHost {
    metric_ids: Rc<HashMap<Metric, u32>>,
}

impl Host for EnvoyHost {
    fn now_unix_nanos(&self) -> u64 {
        hostcalls::get_current_time()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }

    fn shared_get(&self, key: &str) -> SharedValue {
        match hostcalls::get_shared_data(key) {
            Ok((bytes, cas)) => SharedValue { bytes, cas },
            Err(_) => SharedValue::default(),
        }
    }

    fn shared_set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SharedDataError> {
        match hostcalls::set_shared_data(key, Some(value), cas) {
            Ok(()) => Ok(()),
            Err(Status::CasMismatch) => Err(SharedDataError::CasMismatch),
            Err(_) => Err(SharedDataError::Failed),
        }
    }

    fn count(&self, metric: Metric, delta: u64) {
        if let Some(id) = self.metric_ids.get(&metric) {
            let _ = hostcalls::increment_metric(*id, i64::try_from(delta).unwrap_or(i64::MAX));
        }
    }

    fn record(&self, metric: Metric, value: u64) {
        if let Some(id) = self.metric_ids.get(&metric) {
            let _ = hostcalls::record_metric(*id, value);
        }
    }

    fn log(&self, level: LogLevel, message: &str) {
        let _ = hostcalls::log(proxy_level(level), message);
    }

    fn log_enabled(&self, level: LogLevel) -> bool {
        // Envoy's level can change at runtime (admin `/logging`), so it is
        // asked each time: one cheap host call.
        hostcalls::get_log_level()
            .map_or(true, |current| proxy_level(level) as u32 >= current as u32)
    }

    fn dispatch(&self, callout: &Callout) -> Result<u32, String> {
        let headers: Vec<(&str, &str)> = callout
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        hostcalls::dispatch_http_call(
            &callout.cluster,
            headers,
            callout.body.as_deref(),
            vec![],
            callout.timeout,
        )
        .map_err(|status| {
            format!(
                "dispatch to cluster `{}` failed: {status:?}",
                callout.cluster
            )
        })
    }
}

fn define_metrics() -> HashMap<Metric, u32> {
    Metric::ALL
        .iter()
        .filter_map(|metric| {
            let kind = match metric.kind() {
                MetricKind::Counter => MetricType::Counter,
                MetricKind::Histogram => MetricType::Histogram,
            };
            hostcalls::define_metric(kind, metric.name())
                .ok()
                .map(|id| (*metric, id))
        })
        .collect()
}

/// Fail-open switches in force, logged once when a configuration is accepted.
fn gateway_warnings(gateway: Option<&Gateway>) -> Vec<String> {
    gateway
        .map(|g| g.redactor().startup_warnings().to_vec())
        .unwrap_or_default()
}

/// A request paused until its identity provider's keys arrive. Only the
/// root context learns when they do, so it re-judges the request under the
/// request's context id (`proxy_set_effective_context`).
#[derive(Debug, Clone, Copy)]
struct KeyWaiter {
    context_id: u32,
    deadline_nanos: u64,
    end_of_stream: bool,
    /// The request body ended while waiting: its size (`None` after trailers).
    body_done: Option<Option<usize>>,
}

/// Per-VM state shared by the root and its HTTP contexts (one thread).
#[derive(Default, Clone)]
struct Shared {
    waiters: Rc<RefCell<Vec<KeyWaiter>>>,
    /// States the root settled for waiting contexts, adopted by each
    /// context at its next callback.
    settled: Rc<RefCell<HashMap<u32, (RequestState, ResponseState)>>>,
}

#[derive(Default)]
struct CitygateRoot {
    context_id: u32,
    gateway: Option<Rc<Gateway>>,
    host: EnvoyHost,
    shared: Shared,
    last_sweep_nanos: u64,
}

/// With remote JWKS the tick also resumes waiting requests, so it runs often.
const FAST_TICK: Duration = Duration::from_millis(100);
const SWEEP_EVERY_NANOS: u64 = 1_000_000_000;

impl CitygateRoot {
    /// Judges every waiting request again: admitted or answered ones leave
    /// the queue, the others wait on until their deadline (then 503).
    fn wake_key_waiters(&self) {
        let Some(gateway) = &self.gateway else {
            return;
        };
        let waiters = std::mem::take(&mut *self.shared.waiters.borrow_mut());
        if waiters.is_empty() {
            return;
        }
        let now = self.host.now_unix_nanos();
        for waiter in waiters {
            if hostcalls::set_effective_context(waiter.context_id).is_err() {
                continue; // the stream is gone
            }
            let mut flow = CitygateHttp::new(
                gateway.clone(),
                self.host.clone(),
                waiter.context_id,
                self.shared.clone(),
            );
            let attempt = if now >= waiter.deadline_nanos {
                Attempt::Final
            } else {
                Attempt::Retry
            };
            let mut action = flow.judge_headers(attempt, waiter);
            if let (RequestState::AwaitingBody { .. }, Some(size)) =
                (&flow.request, waiter.body_done)
            {
                action = flow.finish_request_body(size);
            }
            match flow.request {
                RequestState::AwaitingKeys => continue,
                RequestState::Forwarded(_) if action == Action::Continue => {
                    let _ = hostcalls::resume_http_request();
                }
                _ => {}
            }
            self.shared.settled.borrow_mut().insert(
                waiter.context_id,
                (
                    std::mem::replace(&mut flow.request, RequestState::Headers),
                    std::mem::replace(&mut flow.response, ResponseState::Streaming),
                ),
            );
        }
        let _ = hostcalls::set_effective_context(self.context_id);
    }
}

impl Context for CitygateRoot {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        let Some(gateway) = self.gateway.clone() else {
            return;
        };
        // A failed call (the endpoint reset it mid-reply) has no response:
        // Envoy answers its getters with BadArgument, on which the SDK
        // panics, and a panic here would crash the VM and fail every later
        // request. Such a call has no headers; its status 0 counts as a
        // failed fetch.
        let status = if num_headers == 0 {
            0
        } else {
            self.get_http_call_response_header(":status")
                .and_then(|s| s.parse().ok())
                .unwrap_or(0)
        };
        let body = if num_headers == 0 || body_size == 0 {
            Vec::new()
        } else {
            self.get_http_call_response_body(0, body_size)
                .unwrap_or_default()
        };
        if gateway
            .authenticator()
            .on_callout_response(token_id, status, &body, &self.host)
        {
            self.wake_key_waiters();
        }
    }
}

fn proxy_level(level: LogLevel) -> ProxyLogLevel {
    match level {
        LogLevel::Debug => ProxyLogLevel::Debug,
        LogLevel::Info => ProxyLogLevel::Info,
        LogLevel::Warn => ProxyLogLevel::Warn,
        LogLevel::Error => ProxyLogLevel::Error,
    }
}

impl RootContext for CitygateRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        self.host = EnvoyHost {
            metric_ids: Rc::new(define_metrics()),
        };
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        let env = |name: &str| std::env::var(name).ok();
        match Gateway::from_json(&bytes, &env) {
            Ok(gateway) => {
                // Rate-limit buckets are swept on the root context's tick;
                // remote JWKS are fetched and waiting requests resumed on it.
                let tick = if gateway.authenticator().has_remote_keys() {
                    FAST_TICK
                } else {
                    Duration::from_secs(1)
                };
                let evaluator_line = gateway.policy().evaluator_line();
                self.gateway = Some(Rc::new(gateway));
                self.set_tick_period(tick);
                self.host
                    .log(LogLevel::Info, "citygate: configuration accepted");
                if let Some(line) = evaluator_line {
                    self.host.log(LogLevel::Info, &line);
                }
                for warning in gateway_warnings(self.gateway.as_deref()) {
                    self.host.log(LogLevel::Warn, &warning);
                }
                true
            }
            Err(error) => {
                // Returning false makes Envoy reject the filter: never allow.
                self.host.log(LogLevel::Error, &error.to_string());
                self.gateway = None;
                false
            }
        }
    }

    fn on_tick(&mut self) {
        let Some(gateway) = &self.gateway else {
            return;
        };
        let now = self.host.now_unix_nanos();
        if now.saturating_sub(self.last_sweep_nanos) >= SWEEP_EVERY_NANOS {
            self.last_sweep_nanos = now;
            gateway.rate_limiter().sweep(&self.host);
        }
        // Fetches first: waking waiters switches the effective context.
        gateway.authenticator().on_tick(&self.host);
        self.wake_key_waiters();
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        let gateway = self.gateway.clone()?;
        Some(Box::new(CitygateHttp::new(
            gateway,
            self.host.clone(),
            context_id,
            self.shared.clone(),
        )))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// Where a request stands. Each variant holds exactly what its phase needs.
enum RequestState {
    /// Waiting for the request headers.
    Headers,
    /// Paused until the identity provider's keys arrive (the root resumes it).
    AwaitingKeys,
    /// Admitted; the route buffers the request body for the policy.
    AwaitingBody {
        admitted: Box<Admitted>,
        limit: usize,
    },
    /// On its way upstream (or its response on the way back).
    Forwarded(Box<Forwarded>),
    /// A local reply was sent; nothing more to do.
    Answered,
}

enum ResponseState {
    /// Headers and body pass (headers possibly edited).
    Streaming,
    /// The body is held until its end so it can be minimized.
    Buffering(BufferPlan),
    Done,
}

struct CitygateHttp {
    gateway: Rc<Gateway>,
    host: EnvoyHost,
    context_id: u32,
    shared: Shared,
    request: RequestState,
    response: ResponseState,
    status: u16,
}

impl CitygateHttp {
    fn new(gateway: Rc<Gateway>, host: EnvoyHost, context_id: u32, shared: Shared) -> Self {
        Self {
            gateway,
            host,
            context_id,
            shared,
            request: RequestState::Headers,
            response: ResponseState::Streaming,
            status: 0,
        }
    }

    /// Takes the state the root settled while this request waited for keys.
    fn adopt_settled(&mut self) {
        if let Some((request, response)) = self.shared.settled.borrow_mut().remove(&self.context_id)
        {
            self.request = request;
            self.response = response;
        }
    }

    fn note_body_done(&self, size: Option<usize>) {
        let mut waiters = self.shared.waiters.borrow_mut();
        if let Some(waiter) = waiters.iter_mut().find(|w| w.context_id == self.context_id) {
            waiter.body_done = Some(size);
        }
    }

    /// Admission of the request headers; `waiter` carries an earlier wait.
    fn judge_headers(&mut self, attempt: Attempt, waiter: KeyWaiter) -> Action {
        let raw = self.raw_request();
        let admitted = match self.gateway.admit_or_wait(&raw, &self.host, attempt) {
            Admission::Admitted(admitted) => *admitted,
            Admission::Answered(reply) => return self.answer(reply),
            Admission::AwaitingKeys { max_wait_ms } => {
                let deadline_nanos = if attempt == Attempt::First {
                    self.host
                        .now_unix_nanos()
                        .saturating_add(max_wait_ms.saturating_mul(1_000_000))
                } else {
                    waiter.deadline_nanos
                };
                self.shared.waiters.borrow_mut().push(KeyWaiter {
                    deadline_nanos,
                    ..waiter
                });
                self.request = RequestState::AwaitingKeys;
                return Action::Pause;
            }
        };
        let end_of_stream = waiter.end_of_stream;
        match self.gateway.request_body_limit(&admitted) {
            Some(limit) if !end_of_stream => {
                self.request = RequestState::AwaitingBody {
                    admitted: Box::new(admitted),
                    limit,
                };
                // Hold the headers until the body is in: the policy may read it.
                Action::Pause
            }
            Some(_) => self.authorize(admitted, Some(&[]), false),
            None => self.authorize(admitted, None, false),
        }
    }

    /// The only place that sends a local reply.
    fn answer(&mut self, reply: LocalReply) -> Action {
        // A request answered before it went upstream keeps its raw `:path`
        // for Envoy's access log: take any key out of its query first.
        if !matches!(self.request, RequestState::Forwarded(_)) {
            let logged = self
                .get_http_request_header(":path")
                .and_then(|path| self.gateway.path_for_access_log(&path));
            if let Some(path) = logged {
                self.set_http_request_header(":path", Some(&path));
            }
        }
        let headers: Vec<(&str, &str)> = reply
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        self.send_http_response(u32::from(reply.status), headers, Some(&reply.body));
        self.request = RequestState::Answered;
        self.response = ResponseState::Done;
        Action::Pause
    }

    fn raw_request(&self) -> RawRequest {
        let text = |path: &[&str]| {
            self.get_property(path.to_vec())
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .filter(|s| !s.is_empty())
        };
        let mtls = self
            .get_property(vec!["connection", "mtls"])
            .is_some_and(|b| b.first() == Some(&1));
        let peer_certificate = mtls.then(|| PeerCertificate {
            uri_san: text(&["connection", "uri_san_peer_certificate"]),
            dns_san: text(&["connection", "dns_san_peer_certificate"]),
            subject: text(&["connection", "subject_peer_certificate"]),
        });
        RawRequest {
            headers: self.get_http_request_headers(),
            connection: ConnectionInfo {
                source: text(&["source", "address"]),
                destination: text(&["destination", "address"]),
                protocol: text(&["request", "protocol"]),
                peer_certificate,
            },
        }
    }

    fn apply_upstream_edits(&self, edits: &UpstreamEdits) {
        for name in &edits.remove_headers {
            self.set_http_request_header(name, None);
        }
        for (name, value) in &edits.set_headers {
            self.set_http_request_header(name, Some(value));
        }
        if let Some(path) = &edits.path {
            self.set_http_request_header(":path", Some(path));
        }
    }

    fn authorize(&mut self, admitted: Admitted, body: Option<&[u8]>, truncated: bool) -> Action {
        match self
            .gateway
            .authorize(admitted, body, truncated, &self.host)
        {
            Ok(forwarded) => {
                self.apply_upstream_edits(&forwarded.edits);
                self.request = RequestState::Forwarded(Box::new(forwarded));
                Action::Continue
            }
            Err(reply) => self.answer(reply),
        }
    }

    /// The request body is complete (end of stream or trailers).
    fn finish_request_body(&mut self, body_size: Option<usize>) -> Action {
        let RequestState::AwaitingBody { admitted, limit } =
            std::mem::replace(&mut self.request, RequestState::Headers)
        else {
            return Action::Continue;
        };
        let available = body_size.unwrap_or(usize::MAX);
        let body = self
            .get_http_request_body(0, available.min(limit))
            .unwrap_or_default();
        let truncated = body_size.map_or(body.len() >= limit, |size| size > limit);
        self.authorize(*admitted, Some(&body), truncated)
    }

    /// The response body is complete: minimize it or fail closed.
    fn finish_response_body(&mut self, body_size: Option<usize>) -> Action {
        let ResponseState::Buffering(buffer) =
            std::mem::replace(&mut self.response, ResponseState::Done)
        else {
            return Action::Continue;
        };
        // One byte past the bound is enough to know it was exceeded.
        let wanted = body_size.unwrap_or(buffer.max_bytes.saturating_add(1));
        let body = self.get_http_response_body(0, wanted).unwrap_or_default();
        let RequestState::Forwarded(forwarded) = &mut self.request else {
            return Action::Continue;
        };
        match self.gateway.redactor().minimize(
            &forwarded.response.redaction,
            &buffer,
            &body,
            &self.host,
        ) {
            Ok(Minimized {
                body: new_body,
                summary,
            }) => {
                forwarded.record.redaction = Some(summary);
                self.set_http_response_body(0, body.len(), &new_body);
                Action::Continue
            }
            Err(denial) => {
                let record = forwarded.record.clone();
                let reply = self.gateway.deny(&denial, record, &self.host);
                self.answer(reply)
            }
        }
    }
}

impl Context for CitygateHttp {}

impl HttpContext for CitygateHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let waiter = KeyWaiter {
            context_id: self.context_id,
            deadline_nanos: 0,
            end_of_stream,
            body_done: None,
        };
        self.judge_headers(Attempt::First, waiter)
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.adopt_settled();
        if let RequestState::AwaitingKeys = self.request {
            if end_of_stream {
                self.note_body_done(Some(body_size));
            }
            return Action::Pause;
        }
        match (&self.request, end_of_stream) {
            (RequestState::AwaitingBody { .. }, false) => Action::Pause,
            (RequestState::AwaitingBody { .. }, true) => self.finish_request_body(Some(body_size)),
            (RequestState::Answered, _) => Action::Pause,
            _ => Action::Continue,
        }
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        self.adopt_settled();
        if let RequestState::AwaitingKeys = self.request {
            self.note_body_done(None);
            return Action::Pause;
        }
        match self.request {
            RequestState::AwaitingBody { .. } => self.finish_request_body(None),
            RequestState::Answered => Action::Pause,
            _ => Action::Continue,
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        self.adopt_settled();
        let RequestState::Forwarded(forwarded) = &self.request else {
            return Action::Continue;
        };
        self.status = self
            .get_http_response_header(":status")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        for name in &forwarded.response.remove_headers {
            self.set_http_response_header(name, None);
        }
        for (name, value) in &forwarded.response.add_headers {
            self.add_http_response_header(name, value);
        }
        let headers = self.get_http_response_headers();
        let action = self.gateway.redactor().on_response_headers(
            &forwarded.response.redaction,
            self.status,
            &headers,
            end_of_stream,
            &self.host,
        );
        match action {
            Ok(BodyAction::PassThrough) => Action::Continue,
            Ok(BodyAction::Buffer { plan, edits }) => {
                for name in &edits.remove_headers {
                    self.set_http_response_header(name, None);
                }
                for (name, value) in &edits.set_headers {
                    self.set_http_response_header(name, Some(value));
                }
                self.response = ResponseState::Buffering(plan);
                // Hold the headers: until the body is minimized we may still
                // have to replace the whole response with a 502.
                Action::Pause
            }
            Err(denial) => {
                let record = forwarded.record.clone();
                let reply = self.gateway.deny(&denial, record, &self.host);
                self.answer(reply)
            }
        }
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        match &self.response {
            ResponseState::Buffering(plan) if body_size > plan.max_bytes => {
                let max_bytes = plan.max_bytes;
                let RequestState::Forwarded(forwarded) = &self.request else {
                    return Action::Pause;
                };
                let denial = self.gateway.redactor().too_large(max_bytes);
                let reply = self
                    .gateway
                    .deny(&denial, forwarded.record.clone(), &self.host);
                self.answer(reply)
            }
            ResponseState::Buffering(_) if !end_of_stream => Action::Pause,
            ResponseState::Buffering(_) => self.finish_response_body(Some(body_size)),
            // Our own local reply passes through our response callbacks too.
            _ => Action::Continue,
        }
    }

    fn on_http_response_trailers(&mut self, _num_trailers: usize) -> Action {
        match self.response {
            ResponseState::Buffering(_) => self.finish_response_body(None),
            _ => Action::Continue,
        }
    }

    fn on_log(&mut self) {
        self.adopt_settled();
        if let RequestState::AwaitingKeys = self.request {
            let id = self.context_id;
            self.shared
                .waiters
                .borrow_mut()
                .retain(|w| w.context_id != id);
        }
        if let RequestState::Forwarded(forwarded) = &self.request {
            let record = forwarded.record.clone();
            self.gateway.finish(record, self.status, &self.host);
        }
    }
}
