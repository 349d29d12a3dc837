//! The core's [`Host`] as Envoy provides it: each method is one proxy-wasm
//! hostcall.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::UNIX_EPOCH;

use citygate_core::host::{Callout, DispatchError, Host, LogLevel, SharedDataError, SharedValue};
use citygate_core::metrics::{Metric, MetricKind};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, LogLevel as ProxyLogLevel, MapType, MetricType, Status};

/// The [`Host`] as Envoy provides it.
#[derive(Clone, Default)]
pub(crate) struct EnvoyHost {
    metric_ids: Rc<HashMap<Metric, u32>>,
    /// Counters named at run time (per route), defined on first use and
    /// shared by the VM's contexts; a name Envoy refuses maps to `None` so
    /// it is not asked again.
    named_ids: Rc<RefCell<HashMap<String, Option<u32>>>>,
    /// Envoy's log level as the root context last read it (at configure
    /// and on every tick), shared by the VM's request contexts.
    log_level: Rc<Cell<Option<ProxyLogLevel>>>,
    /// A request's host keeps its first clock reading here and answers it
    /// to every later `now_unix_nanos`; the root's host has none and
    /// always reads the clock.
    request_instant: Option<Cell<Option<u64>>>,
}

fn read_clock() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The reply to the HTTP callout whose answer is being delivered (JWKS,
/// introspection): its status and body. A failed call (the endpoint reset
/// it mid-reply) has no headers, and Envoy answers its getters with
/// BadArgument; it is reported as status 0 with no body, which every
/// caller counts as a failed call, without asking Envoy anything.
pub(crate) fn callout_reply(num_headers: usize, body_size: usize) -> (u16, Vec<u8>) {
    if num_headers == 0 {
        return (0, Vec::new());
    }
    let status = hostcalls::get_map_value(MapType::HttpCallResponseHeaders, ":status")
        .ok()
        .flatten()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = if body_size == 0 {
        Vec::new()
    } else {
        hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
            .ok()
            .flatten()
            .unwrap_or_default()
    };
    (status, body)
}

impl Host for EnvoyHost {
    fn now_unix_nanos(&self) -> u64 {
        let Some(instant) = &self.request_instant else {
            return read_clock();
        };
        match instant.get() {
            Some(now) => now,
            None => {
                let now = read_clock();
                instant.set(Some(now));
                now
            }
        }
    }

    fn clock_unix_nanos(&self) -> u64 {
        read_clock()
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

    fn count_named(&self, name: &str, delta: u64) {
        let known = self.named_ids.borrow().get(name).copied();
        let id = match known {
            Some(id) => id,
            None => {
                let id = hostcalls::define_metric(MetricType::Counter, name).ok();
                self.named_ids.borrow_mut().insert(name.to_string(), id);
                id
            }
        };
        if let (Some(id), true) = (id, delta > 0) {
            let _ = hostcalls::increment_metric(id, i64::try_from(delta).unwrap_or(i64::MAX));
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
        // Envoy's level can change at runtime (admin `/logging`); the root
        // reads it on every tick, so a change applies within one tick
        // without a hostcall per request.
        let current = match self.log_level.get() {
            Some(current) => current,
            None => match hostcalls::get_log_level() {
                Ok(current) => current,
                Err(_) => return true,
            },
        };
        proxy_level(level) as u32 >= current as u32
    }

    fn dispatch(&self, callout: &Callout) -> Result<u32, DispatchError> {
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
        .map_err(|status| DispatchError {
            cluster: callout.cluster.clone(),
            status: format!("{status:?}"),
        })
    }
}

/// Defines every citygate metric in Envoy; a metric Envoy refuses is not
/// counted (the request is not failed for it).
pub(crate) fn define_metrics() -> HashMap<Metric, u32> {
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

impl EnvoyHost {
    pub(crate) fn new(metric_ids: HashMap<Metric, u32>) -> Self {
        let host = Self {
            metric_ids: Rc::new(metric_ids),
            ..Self::default()
        };
        host.refresh_log_level();
        host
    }

    /// The host of one request (or of one retry of it after a wait for
    /// keys): it reads the clock at most once.
    pub(crate) fn for_request(&self) -> Self {
        Self {
            metric_ids: self.metric_ids.clone(),
            named_ids: self.named_ids.clone(),
            log_level: self.log_level.clone(),
            request_instant: Some(Cell::new(None)),
        }
    }

    /// Reads Envoy's log level again (the root does on every tick).
    pub(crate) fn refresh_log_level(&self) {
        self.log_level.set(hostcalls::get_log_level().ok());
    }
}

pub(crate) fn proxy_level(level: LogLevel) -> ProxyLogLevel {
    match level {
        LogLevel::Debug => ProxyLogLevel::Debug,
        LogLevel::Info => ProxyLogLevel::Info,
        LogLevel::Warn => ProxyLogLevel::Warn,
        LogLevel::Error => ProxyLogLevel::Error,
    }
}
