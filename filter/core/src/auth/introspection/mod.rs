//! Opaque bearer tokens, checked at the authorization server (RFC 7662
//! token introspection) through an Envoy cluster.
//!
//! A token nobody has asked about yet makes the request wait: the pipeline
//! starts the call ([`Introspector::start`]) from the request's own
//! context, the shell hands the answer to [`Introspector::accept`], which
//! keeps it in this worker's cache, and the request is judged again from
//! the cache. An active answer is kept until the token's `exp` (at most
//! `cache_seconds`), an inactive one for `inactive_cache_seconds`; an
//! answer that cannot be used (an error status, a timeout, not JSON) is not
//! kept, and the waiting request gets 503 — never an allow.
//!
//! The cache is per worker, not in shared data: proxy-wasm shared data has
//! no eviction, so a process-wide cache of attacker-chosen tokens could
//! only grow. Each worker therefore asks once per token.

mod answer;
#[cfg(test)]
mod tests;

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use super::config::{ClaimMappingConfig, IntrospectionProviderConfig};
use super::credential::{Found, Location};
use super::jwt::cache::TokenCache;
use super::token_source::TokenSources;
use crate::auth::config::check_provider_name;
use crate::config::ConfigError;
use crate::host::{Callout, Host, LogLevel};
use crate::identity::Identity;
use crate::metrics::Metric;
use crate::normalize::RequestView;
pub use answer::{Answer, MAX_ANSWER_BYTES};

/// `application/x-www-form-urlencoded` keeps only these unescaped
/// (the WHATWG form encoding set, with space escaped as `%20`).
const FORM: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'*')
    .remove(b'-')
    .remove(b'.')
    .remove(b'_');

/// What this worker knows about a token without asking.
#[derive(Debug, PartialEq)]
pub enum Lookup {
    Active(Identity),
    /// Refused; the decision log's reason (`token-inactive`, …).
    Inactive(&'static str),
    /// Not known: ask the authorization server.
    Unknown,
}

/// Why a call could not be started: the decision log's reason.
pub type StartError = &'static str;

pub struct Introspector {
    pub name: String,
    cluster: String,
    authority: String,
    path: String,
    /// `Basic base64(client_id:client_secret)`, built once. Never logged:
    /// the type has no `Debug`.
    authorization: String,
    issuer: Option<String>,
    audiences: Vec<String>,
    timeout_ms: u64,
    cache_seconds: u64,
    inactive_cache_seconds: u64,
    max_in_flight: usize,
    max_token_bytes: usize,
    sources: TokenSources,
    claims: ClaimMappingConfig,
    active: TokenCache<Identity>,
    inactive: TokenCache<&'static str>,
    /// Calls of this worker in flight: callout token → start (nanos). A
    /// call whose stream went away without an answer ages out after its
    /// timeout, so the bound cannot leak shut.
    in_flight: RefCell<HashMap<u32, u64>>,
    /// The token whose answer [`Introspector::accept`] kept last: the
    /// request's next judgement reads it from the cache, which is not a
    /// cache hit (the metric counts calls saved).
    just_answered: RefCell<Option<Box<str>>>,
}

impl Introspector {
    pub fn compile(
        index: usize,
        config: &IntrospectionProviderConfig,
    ) -> Result<Self, ConfigError> {
        let at = format!("$.auth.introspection.providers[{index}]");
        check_provider_name(&at, &config.name)?;
        let required = [
            ("cluster", &config.cluster),
            ("authority", &config.authority),
            ("path", &config.path),
            ("client_id", &config.client_id),
            ("client_secret", &config.client_secret.0),
        ];
        if let Some((field, _)) = required.iter().find(|(_, v)| v.is_empty()) {
            return Err(ConfigError::new(
                format!("{at}.{field}"),
                "must not be empty",
            ));
        }
        if !config.path.starts_with('/') {
            return Err(ConfigError::new(
                format!("{at}.path"),
                "must start with `/`",
            ));
        }
        let positive = [
            ("timeout_ms", config.timeout_ms),
            ("cache_seconds", config.cache_seconds),
            ("inactive_cache_seconds", config.inactive_cache_seconds),
            ("cache_capacity", config.cache_capacity as u64),
            ("max_in_flight", config.max_in_flight as u64),
            ("max_token_bytes", config.max_token_bytes as u64),
        ];
        if let Some((field, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(ConfigError::new(
                format!("{at}.{field}"),
                "must be positive",
            ));
        }
        if config.issuer.as_deref() == Some("") {
            return Err(ConfigError::new(
                format!("{at}.issuer"),
                "must not be empty (leave it out to accept any `iss`)",
            ));
        }
        let sources = TokenSources::compile(&config.sources, &format!("{at}.sources"))?;
        // RFC 6749 §2.3.1: both parts are form-encoded before Basic.
        let credentials = format!(
            "{}:{}",
            utf8_percent_encode(&config.client_id, FORM),
            utf8_percent_encode(&config.client_secret.0, FORM)
        );
        Ok(Self {
            name: config.name.clone(),
            cluster: config.cluster.clone(),
            authority: config.authority.clone(),
            path: config.path.clone(),
            authorization: format!("Basic {}", STANDARD.encode(credentials)),
            issuer: config.issuer.clone(),
            audiences: config.audiences.clone(),
            timeout_ms: config.timeout_ms,
            cache_seconds: config.cache_seconds,
            inactive_cache_seconds: config.inactive_cache_seconds,
            max_in_flight: config.max_in_flight,
            max_token_bytes: config.max_token_bytes,
            sources,
            claims: config.claims.clone(),
            active: TokenCache::new(config.cache_capacity),
            inactive: TokenCache::new(config.cache_capacity),
            in_flight: RefCell::new(HashMap::new()),
            just_answered: RefCell::new(None),
        })
    }

    pub fn query_params(&self) -> impl Iterator<Item = &str> {
        self.sources.query_params()
    }

    pub fn find_token(&self, view: &RequestView, allow_query: bool) -> Option<Found> {
        self.sources.find(view, allow_query)
    }

    pub fn tokens_in_headers(&self, view: &RequestView) -> Vec<Found> {
        self.sources.in_headers(view)
    }

    pub fn reads(&self, location: &Location) -> bool {
        self.sources.reads(location)
    }

    /// The cached answer for `token`. A token that cannot be a bearer
    /// token (too long, characters outside RFC 6750's `b64token`) is
    /// refused without asking anyone.
    pub fn lookup(&self, token: &str, host: &dyn Host) -> Lookup {
        if token.len() > self.max_token_bytes {
            return Lookup::Inactive("token-too-large");
        }
        if !is_b64token(token) {
            return Lookup::Inactive("token-malformed");
        }
        let now = host.now_unix_seconds();
        let fresh = {
            let mut just_answered = self.just_answered.borrow_mut();
            let fresh = just_answered.as_deref() == Some(token);
            if fresh {
                *just_answered = None;
            }
            fresh
        };
        let found = match self.active.get(token, now, 0) {
            Some(identity) => Lookup::Active(identity),
            None => match self.inactive.get(token, now, 0) {
                Some(reason) => Lookup::Inactive(reason),
                None => return Lookup::Unknown,
            },
        };
        if !fresh {
            host.count(Metric::IntrospectionCacheHit, 1);
        }
        found
    }

    /// Starts the call for `token`; the callout's token.
    pub fn start(&self, token: &str, host: &dyn Host) -> Result<u32, StartError> {
        let now_nanos = host.now_unix_nanos();
        let stale_after = (self.timeout_ms + 1000).saturating_mul(1_000_000);
        let mut in_flight = self.in_flight.borrow_mut();
        in_flight.retain(|_, started| now_nanos.saturating_sub(*started) < stale_after);
        if in_flight.len() >= self.max_in_flight {
            host.count(Metric::IntrospectionBusy, 1);
            return Err("introspection-busy");
        }
        let body = format!(
            "token={}&token_type_hint=access_token",
            utf8_percent_encode(token, FORM)
        );
        let callout = Callout {
            cluster: self.cluster.clone(),
            headers: vec![
                (":method".into(), "POST".into()),
                (":path".into(), self.path.clone()),
                (":authority".into(), self.authority.clone()),
                ("authorization".into(), self.authorization.clone()),
                (
                    "content-type".into(),
                    "application/x-www-form-urlencoded".into(),
                ),
                ("accept".into(), "application/json".into()),
            ],
            body: Some(body.into_bytes()),
            timeout: Duration::from_millis(self.timeout_ms),
        };
        match host.dispatch(&callout) {
            Ok(callout_token) => {
                in_flight.insert(callout_token, now_nanos);
                host.count(Metric::IntrospectionCalls, 1);
                Ok(callout_token)
            }
            Err(_) => {
                host.count(Metric::IntrospectionFailed, 1);
                host.log(
                    LogLevel::Warn,
                    &format!(
                        "citygate: introspection through cluster `{}` could not be dispatched",
                        self.cluster
                    ),
                );
                Err("introspection-dispatch-failed")
            }
        }
    }

    /// The answer to the call `callout_token` made for `token` (`status` 0
    /// when the call failed or timed out): kept in the cache when usable.
    pub fn accept(
        &self,
        token: &str,
        callout_token: u32,
        status: u16,
        body: &[u8],
        host: &dyn Host,
    ) {
        self.in_flight.borrow_mut().remove(&callout_token);
        *self.just_answered.borrow_mut() = Some(token.into());
        let now = host.now_unix_seconds();
        let answer = answer::judge(
            status,
            body,
            now,
            self.issuer.as_deref(),
            &self.audiences,
            &self.claims,
        );
        match answer {
            Answer::Active {
                identity,
                expires_at,
            } => {
                host.count(Metric::IntrospectionActive, 1);
                let cap = now.saturating_add(self.cache_seconds);
                let until = expires_at.map_or(cap, |exp| exp.min(cap));
                self.active.insert(token, identity, until, 0, now);
            }
            Answer::Inactive(reason) => {
                host.count(Metric::IntrospectionInactive, 1);
                let until = now.saturating_add(self.inactive_cache_seconds);
                self.inactive.insert(token, reason, until, 0, now);
            }
            Answer::Unusable => {
                host.count(Metric::IntrospectionFailed, 1);
                host.log(
                    LogLevel::Warn,
                    &format!(
                        "citygate: introspection through cluster `{}` failed (status {status}); the request gets 503",
                        self.cluster
                    ),
                );
            }
        }
    }

    /// The request that made `callout_token` ended before the answer came.
    pub fn abandon(&self, callout_token: u32) {
        self.in_flight.borrow_mut().remove(&callout_token);
    }
}

/// RFC 6750 §2.1 `b64token`: `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" /
/// "+" / "/" ) *"="`.
fn is_b64token(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
}
