//! The root context: accepts or rejects a configuration, runs the tick,
//! receives callout replies and resumes requests that waited for keys.

use std::rc::Rc;

use citygate_core::host::{Host, LogLevel};
use citygate_core::pipeline::{Attempt, CompiledConfig, TickState};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};

use crate::envoy_host::{callout_reply, define_metrics, EnvoyHost};
use crate::http_context::CitygateHttp;
use crate::state::{RequestState, ResponseState};
use crate::waiters::Shared;

#[derive(Default)]
pub(crate) struct CitygateRoot {
    context_id: u32,
    config: Option<Rc<CompiledConfig>>,
    host: EnvoyHost,
    shared: Shared,
    tick: TickState,
}

impl CitygateRoot {
    pub(crate) fn new(context_id: u32) -> Self {
        Self {
            context_id,
            ..Self::default()
        }
    }

    /// Judges every waiting request again: admitted or answered ones leave
    /// the queue, the others wait on until their deadline (then 503).
    fn wake_key_waiters(&self) {
        let Some(config) = &self.config else {
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
                config.clone(),
                self.host.for_request(),
                waiter.context_id,
                self.shared.clone(),
            );
            let attempt = if now >= waiter.deadline_nanos {
                Attempt::Final
            } else {
                Attempt::Retry
            };
            let mut action = flow.judge_headers(attempt, waiter);
            if let (RequestState::AwaitingBody(_), Some(size)) = (&flow.request, waiter.body_done) {
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
        let Some(config) = self.config.clone() else {
            return;
        };
        let (status, body) = callout_reply(num_headers, body_size);
        if config.on_callout_response(token_id, status, &body, &self.host) {
            self.wake_key_waiters();
        }
    }
}

impl RootContext for CitygateRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        self.host = EnvoyHost::new(define_metrics());
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        let env = |name: &str| std::env::var(name).ok();
        match CompiledConfig::from_json(&bytes, &env) {
            Ok(config) => {
                self.set_tick_period(config.tick_period());
                config.announce(&self.host);
                self.config = Some(Rc::new(config));
                true
            }
            Err(error) => {
                // Returning false makes Envoy reject the filter: never allow.
                self.host.log(LogLevel::Error, &error.to_string());
                self.config = None;
                false
            }
        }
    }

    fn on_tick(&mut self) {
        let Some(config) = &self.config else {
            return;
        };
        self.host.refresh_log_level();
        config.on_tick(&mut self.tick, &self.host);
        // After the fetches: waking waiters switches the effective context.
        self.wake_key_waiters();
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        let config = self.config.clone()?;
        Some(Box::new(CitygateHttp::new(
            config,
            self.host.for_request(),
            context_id,
            self.shared.clone(),
        )))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
