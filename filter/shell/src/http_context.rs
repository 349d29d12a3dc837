//! One HTTP stream: each proxy-wasm callback reads what the pipeline needs,
//! calls one pipeline method and applies its answer.

use std::rc::Rc;

use citygate_core::host::Host;
use citygate_core::http::{HeaderEdits, LocalReply, UpstreamEdits};
use citygate_core::normalize::{ConnectionInfo, PeerCertificate, RawRequest};
use citygate_core::pipeline::{Admission, Admitted, Attempt, CompiledConfig};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

use crate::envoy_host::{callout_reply, EnvoyHost};
use crate::state::{Introspecting, RequestState, ResponseState};
use crate::waiters::{KeyWaiter, Shared};

pub(crate) struct CitygateHttp {
    config: Rc<CompiledConfig>,
    host: EnvoyHost,
    context_id: u32,
    shared: Shared,
    pub(crate) request: RequestState,
    pub(crate) response: ResponseState,
    status: u16,
    /// Request body bytes that went upstream after the headers.
    streamed_request_body: u64,
}

impl CitygateHttp {
    pub(crate) fn new(
        config: Rc<CompiledConfig>,
        host: EnvoyHost,
        context_id: u32,
        shared: Shared,
    ) -> Self {
        Self {
            config,
            host,
            context_id,
            shared,
            request: RequestState::Headers,
            response: ResponseState::Streaming,
            status: 0,
            streamed_request_body: 0,
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
    pub(crate) fn judge_headers(&mut self, attempt: Attempt, waiter: KeyWaiter) -> Action {
        let raw = self.raw_request();
        self.judge(raw, attempt, waiter)
    }

    /// Admission of `raw`, the request as read from the proxy (a request
    /// judged again after its introspection answer reuses its first read:
    /// paused headers do not change).
    fn judge(&mut self, raw: RawRequest, attempt: Attempt, waiter: KeyWaiter) -> Action {
        let admitted = match self.config.admit_or_wait(&raw, &self.host, attempt) {
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
            Admission::AwaitingIntrospection(pending) => {
                self.request = RequestState::AwaitingIntrospection(Box::new(Introspecting {
                    pending,
                    raw,
                    end_of_stream: waiter.end_of_stream,
                    body_done: None,
                }));
                return Action::Pause;
            }
        };
        let plan = admitted.body;
        if plan.hold && !waiter.end_of_stream {
            self.request = RequestState::AwaitingBody(Box::new(admitted));
            // Hold the headers until the body is in: the policy may read
            // it, or its size is not known to fit.
            return Action::Pause;
        }
        let body = plan.policy_bytes.map(|_| &[][..]);
        self.authorize(admitted, body, false)
    }

    /// The only place that sends a local reply.
    fn answer(&mut self, reply: LocalReply) -> Action {
        // A request answered before it went upstream keeps its raw `:path`
        // for Envoy's access log: take any key out of its query first.
        if !matches!(self.request, RequestState::Forwarded(_)) {
            let logged = self
                .get_http_request_header(":path")
                .and_then(|path| self.config.path_for_access_log(&path));
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

    /// `present` are the response headers Envoy holds: a header the
    /// upstream did not send needs no removal call.
    fn apply_response_edits(&self, edits: &HeaderEdits, present: &[(String, String)]) {
        for name in &edits.remove_headers {
            if header_value(present, name).is_some() {
                self.set_http_response_header(name, None);
            }
        }
        for (name, value) in &edits.set_headers {
            self.set_http_response_header(name, Some(value));
        }
    }

    fn authorize(&mut self, admitted: Admitted, body: Option<&[u8]>, truncated: bool) -> Action {
        match self.config.authorize(admitted, body, truncated, &self.host) {
            Ok(forwarded) => {
                self.apply_upstream_edits(&forwarded.edits);
                self.request = RequestState::Forwarded(Box::new(forwarded));
                Action::Continue
            }
            Err(reply) => self.answer(reply),
        }
    }

    /// The request body is complete (end of stream or trailers).
    pub(crate) fn finish_request_body(&mut self, body_size: Option<usize>) -> Action {
        let RequestState::AwaitingBody(admitted) =
            std::mem::replace(&mut self.request, RequestState::Headers)
        else {
            return Action::Continue;
        };
        let plan = admitted.body;
        // After trailers the size is unknown: one byte past the larger
        // bound is enough to judge both the limit and the truncation.
        let size = match body_size {
            Some(size) => size,
            None => {
                let policy = plan.policy_bytes.map_or(0, |b| b.saturating_add(1));
                let limit = plan.max_bytes.map_or(0, |max| {
                    usize::try_from(max.saturating_add(1)).unwrap_or(usize::MAX)
                });
                let wanted = policy.max(limit);
                self.get_http_request_body(0, wanted)
                    .map_or(0, |body| body.len())
            }
        };
        if let Err(reply) = self
            .config
            .check_request_body(&admitted, size as u64, &self.host)
        {
            return self.answer(reply);
        }
        match plan.policy_bytes {
            Some(limit) => {
                let body = self
                    .get_http_request_body(0, size.min(limit))
                    .unwrap_or_default();
                self.authorize(*admitted, Some(&body), size > limit)
            }
            None => self.authorize(*admitted, None, false),
        }
    }

    /// A body chunk of a request still waiting for the end of its body:
    /// `buffered` is everything Envoy holds of it so far.
    fn hold_request_body(&mut self, buffered: usize) -> Action {
        let RequestState::AwaitingBody(admitted) = &self.request else {
            return Action::Continue;
        };
        match self
            .config
            .check_request_body(admitted, buffered as u64, &self.host)
        {
            Ok(()) => Action::Pause,
            Err(reply) => self.answer(reply),
        }
    }

    /// A body chunk of a request already forwarded: counted against the
    /// route's limit (a declared length said it fits).
    fn count_streamed_body(&mut self, chunk: usize) -> Action {
        let RequestState::Forwarded(forwarded) = &self.request else {
            return Action::Continue;
        };
        if forwarded.max_body_bytes.is_none() {
            return Action::Continue;
        }
        self.streamed_request_body = self.streamed_request_body.saturating_add(chunk as u64);
        match self
            .config
            .check_streamed_body(forwarded, self.streamed_request_body, &self.host)
        {
            Ok(()) => Action::Continue,
            Err(reply) => self.answer(reply),
        }
    }

    /// The response body is complete: send the minimized bytes or the 502.
    fn finish_response_body(&mut self, body_size: Option<usize>) -> Action {
        let ResponseState::Buffering(plan) =
            std::mem::replace(&mut self.response, ResponseState::Done)
        else {
            return Action::Continue;
        };
        // One byte past the bound is enough to know it was exceeded.
        let wanted = body_size.unwrap_or(plan.max_bytes.saturating_add(1));
        let body = self.get_http_response_body(0, wanted).unwrap_or_default();
        let RequestState::Forwarded(forwarded) = &mut self.request else {
            return Action::Continue;
        };
        match self
            .config
            .minimize_response(forwarded, &plan, &body, &self.host)
        {
            Ok(minimized) => {
                self.set_http_response_body(0, body.len(), &minimized);
                Action::Continue
            }
            Err(reply) => self.answer(reply),
        }
    }
}

impl Context for CitygateHttp {
    /// The authorization server's answer about this request's token: kept
    /// by the core, then the request is judged again (and resumed if it
    /// goes upstream).
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        let waiting = match std::mem::replace(&mut self.request, RequestState::Headers) {
            RequestState::AwaitingIntrospection(waiting) if waiting.pending.callout == token_id => {
                waiting
            }
            other => {
                self.request = other;
                return;
            }
        };
        let (status, body) = callout_reply(num_headers, body_size);
        self.config
            .accept_introspection(&waiting.pending, status, &body, &self.host);
        let waiter = KeyWaiter {
            context_id: self.context_id,
            deadline_nanos: 0,
            end_of_stream: waiting.end_of_stream,
            body_done: None,
        };
        let Introspecting { raw, body_done, .. } = *waiting;
        let mut action = self.judge(raw, Attempt::Final, waiter);
        if let (RequestState::AwaitingBody(_), Some(size)) = (&self.request, body_done) {
            action = self.finish_request_body(size);
        }
        if let (RequestState::Forwarded(_), Action::Continue) = (&self.request, action) {
            let _ = hostcalls::resume_http_request();
        }
    }
}

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
        if let RequestState::AwaitingIntrospection(waiting) = &mut self.request {
            if end_of_stream {
                waiting.body_done = Some(Some(body_size));
            }
            return Action::Pause;
        }
        match (&self.request, end_of_stream) {
            (RequestState::AwaitingBody(_), false) => self.hold_request_body(body_size),
            (RequestState::AwaitingBody(_), true) => self.finish_request_body(Some(body_size)),
            (RequestState::Answered, _) => Action::Pause,
            (RequestState::Forwarded(_), _) => self.count_streamed_body(body_size),
            _ => Action::Continue,
        }
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        self.adopt_settled();
        if let RequestState::AwaitingKeys = self.request {
            self.note_body_done(None);
            return Action::Pause;
        }
        if let RequestState::AwaitingIntrospection(waiting) = &mut self.request {
            waiting.body_done = Some(None);
            return Action::Pause;
        }
        match self.request {
            RequestState::AwaitingBody(_) => self.finish_request_body(None),
            RequestState::Answered => Action::Pause,
            _ => Action::Continue,
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        self.adopt_settled();
        let RequestState::Forwarded(forwarded) = &self.request else {
            return Action::Continue;
        };
        // One read of the upstream's headers serves the status, the
        // removals (only of headers it sent: each removal is a hostcall)
        // and the stage below, which sees them as Envoy now holds them.
        let mut headers = self.get_http_response_headers();
        self.status = header_value(&headers, ":status")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        for name in &forwarded.response.remove_headers {
            if header_value(&headers, name).is_some() {
                self.set_http_response_header(name, None);
                headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
            }
        }
        for (name, value) in &forwarded.response.add_headers {
            self.add_http_response_header(name, value);
            headers.push((name.clone(), value.clone()));
        }
        match self.config.on_response_headers(
            forwarded,
            self.status,
            &headers,
            end_of_stream,
            &self.host,
        ) {
            Ok(decided) => {
                self.apply_response_edits(&decided.edits, &headers);
                match decided.buffer {
                    Some(plan) => {
                        self.response = ResponseState::Buffering(plan);
                        // Hold the headers: until the body is minimized we
                        // may still have to replace the whole response with
                        // a 502.
                        Action::Pause
                    }
                    None => Action::Continue,
                }
            }
            Err(reply) => self.answer(reply),
        }
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        // Our own local reply passes through our response callbacks too.
        let ResponseState::Buffering(plan) = &self.response else {
            return Action::Continue;
        };
        if let RequestState::Forwarded(forwarded) = &self.request {
            if let Err(reply) = self
                .config
                .check_buffered_size(forwarded, plan, body_size, &self.host)
            {
                return self.answer(reply);
            }
        }
        if end_of_stream {
            self.finish_response_body(Some(body_size))
        } else {
            Action::Pause
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
        if let RequestState::AwaitingIntrospection(waiting) = &self.request {
            self.config.abandon_introspection(&waiting.pending);
        }
        if let RequestState::Forwarded(forwarded) = &self.request {
            let record = forwarded.record.clone();
            self.config.finish(record, self.status, &self.host);
        }
    }
}

/// The first value of header `name` (names compared case-insensitively).
fn header_value<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}
