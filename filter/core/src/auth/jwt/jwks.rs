//! Remote JWKS: fetched once per Envoy process, not once per worker. The
//! document lives in proxy-wasm shared data (every worker's VM sees it); a
//! lock entry with an expiry, taken by compare-and-swap, lets exactly one VM
//! fetch at a time. Each VM keeps its parsed copy and re-parses only when the
//! shared entry's CAS version changes.
//!
//! The shell only moves bytes: it calls [`JwksStore::start_fetch`] on the
//! root context's tick and hands the reply to [`JwksStore::accept_response`].
//! A failed fetch keeps the last good key set.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::keys::KeySet;
use crate::auth::config::RemoteJwksConfig;
use crate::host::{Callout, Host, LogLevel, SharedDataError};
use crate::metrics::Metric;

/// Larger documents are refused: no identity provider publishes this many keys.
pub const MAX_JWKS_BYTES: usize = 64 * 1024;
const CAS_RETRIES: usize = 4;
const NANOS: u64 = 1_000_000_000;

/// The shared-data document of one provider.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Shared {
    /// The last good JWKS, as fetched.
    jwks: Option<String>,
    /// When `jwks` was fetched (Unix seconds).
    fetched_at: u64,
    /// When the last fetch started (for the retry back-off).
    attempt_at: u64,
    /// A request saw an unknown `kid`: fetch again (rate-limited).
    refetch: bool,
}

#[derive(Default)]
struct Local {
    keys: Option<Rc<KeySet>>,
    /// CAS version of the shared entry `keys` was parsed from.
    version: Option<u32>,
    /// Bumped whenever `keys` changes (invalidates cached tokens).
    generation: u64,
    fetched_at: u64,
}

pub struct JwksStore {
    config: RemoteJwksConfig,
    data_key: String,
    lock_key: String,
    local: RefCell<Local>,
}

impl JwksStore {
    pub fn new(provider: &str, config: RemoteJwksConfig) -> Self {
        Self {
            data_key: format!("citygate.jwks.{provider}"),
            lock_key: format!("citygate.jwks.{provider}.lock"),
            config,
            local: RefCell::new(Local::default()),
        }
    }

    pub fn max_wait_ms(&self) -> u64 {
        self.config.max_wait_ms
    }

    fn read(&self, host: &dyn Host) -> (Shared, Option<u32>) {
        let value = host.shared_get(&self.data_key);
        let shared = value
            .bytes
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        (shared, value.cas)
    }

    /// Read-modify-write of the shared document under CAS.
    fn update(&self, host: &dyn Host, change: impl Fn(&mut Shared)) -> bool {
        for _ in 0..CAS_RETRIES {
            let (mut shared, cas) = self.read(host);
            change(&mut shared);
            let Ok(bytes) = serde_json::to_vec(&shared) else {
                return false;
            };
            match host.shared_set(&self.data_key, &bytes, cas) {
                Ok(()) => return true,
                Err(SharedDataError::CasMismatch) => continue,
                Err(SharedDataError::Failed) => return false,
            }
        }
        false
    }

    /// Adopts the shared key set if another VM (or this one) stored a newer one.
    pub fn sync(&self, host: &dyn Host) {
        let (shared, cas) = self.read(host);
        let mut local = self.local.borrow_mut();
        if cas.is_none() || cas == local.version {
            return;
        }
        local.version = cas;
        local.fetched_at = shared.fetched_at;
        if let Some(keys) = shared.jwks.and_then(|t| KeySet::from_jwks_json(&t).ok()) {
            local.keys = Some(Rc::new(keys));
            local.generation += 1;
        }
    }

    /// The current keys and their generation; `None` until a first set arrived.
    pub fn keys(&self, host: &dyn Host) -> Option<(Rc<KeySet>, u64)> {
        if self.local.borrow().keys.is_none() {
            self.sync(host);
        }
        let local = self.local.borrow();
        local.keys.clone().map(|k| (k, local.generation))
    }

    fn needs_fetch(&self, shared: &Shared, now: u64) -> bool {
        let config = &self.config;
        let backing_off = shared.attempt_at > shared.fetched_at
            && now < shared.attempt_at.saturating_add(config.retry_seconds);
        if backing_off {
            return false;
        }
        shared.jwks.is_none()
            || now >= shared.fetched_at.saturating_add(config.refresh_seconds)
            || (shared.refetch
                && now >= shared.fetched_at.saturating_add(config.min_refetch_seconds))
    }

    /// Takes the process-wide fetch lock; `false` when another VM holds it.
    fn lock(&self, host: &dyn Host, now_nanos: u64) -> bool {
        let current = host.shared_get(&self.lock_key);
        if current.bytes.is_none() {
            // Shared data has no create-if-absent: an unconditional first
            // write could let two workers both believe they hold the lock.
            // Create the entry unlocked and take it by CAS on a later tick.
            let _ = host.shared_set(&self.lock_key, b"0", None);
            return false;
        }
        let held_until: u64 = current
            .bytes
            .as_deref()
            .and_then(|b| std::str::from_utf8(b).ok())
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if now_nanos < held_until {
            return false;
        }
        // The lock outlives the callout's timeout so a lost reply frees it.
        let until = now_nanos.saturating_add((self.config.timeout_ms + 1000) * 1_000_000);
        host.shared_set(&self.lock_key, until.to_string().as_bytes(), current.cas)
            .is_ok()
    }

    fn unlock(&self, host: &dyn Host) {
        let current = host.shared_get(&self.lock_key);
        let _ = host.shared_set(&self.lock_key, b"0", current.cas);
    }

    /// Dispatches a fetch when one is due and this VM wins the lock.
    /// Returns the callout token.
    pub fn start_fetch(&self, host: &dyn Host) -> Option<u32> {
        self.sync(host);
        let now_nanos = host.now_unix_nanos();
        let now = now_nanos / NANOS;
        let (shared, _) = self.read(host);
        if !self.needs_fetch(&shared, now) || !self.lock(host, now_nanos) {
            return None;
        }
        self.update(host, |s| s.attempt_at = now);
        let callout = Callout {
            cluster: self.config.cluster.clone(),
            headers: vec![
                (":method".into(), "GET".into()),
                (":path".into(), self.config.path.clone()),
                (":authority".into(), self.config.authority.clone()),
                ("accept".into(), "application/json".into()),
            ],
            body: None,
            timeout: Duration::from_millis(self.config.timeout_ms),
        };
        match host.dispatch(&callout) {
            Ok(token) => Some(token),
            Err(_) => {
                host.count(Metric::JwksFetchFailed, 1);
                host.log(
                    LogLevel::Warn,
                    &format!(
                        "citygate: JWKS fetch through cluster `{}` could not be dispatched",
                        self.config.cluster
                    ),
                );
                self.unlock(host);
                None
            }
        }
    }

    /// The fetch's reply (`status` 0 when the call failed). A good document
    /// replaces the shared key set; anything else keeps the last good one.
    pub fn accept_response(&self, status: u16, body: &[u8], host: &dyn Host) -> bool {
        let now = host.now_unix_seconds();
        let document = (status == 200 && body.len() <= MAX_JWKS_BYTES)
            .then(|| std::str::from_utf8(body).ok())
            .flatten()
            .filter(|text| KeySet::from_jwks_json(text).is_ok());
        let accepted = match document {
            Some(text) => self.update(host, |s| {
                s.jwks = Some(text.to_string());
                s.fetched_at = now;
                s.attempt_at = now;
                s.refetch = false;
            }),
            None => false,
        };
        if accepted {
            host.count(Metric::JwksFetched, 1);
            self.sync(host);
        } else {
            host.count(Metric::JwksFetchFailed, 1);
            host.log(
                LogLevel::Warn,
                &format!(
                    "citygate: JWKS fetch through cluster `{}` failed (status {status}); keeping the last good key set",
                    self.config.cluster
                ),
            );
        }
        self.unlock(host);
        accepted
    }

    /// A token named a `kid` we do not know: ask for a refetch, at most once
    /// per `min_refetch_seconds`. Returns whether one was requested.
    pub fn request_refetch(&self, host: &dyn Host) -> bool {
        let now = host.now_unix_seconds();
        let fetched_at = self.local.borrow().fetched_at;
        if now < fetched_at.saturating_add(self.config.min_refetch_seconds) {
            return false;
        }
        self.update(host, |s| s.refetch = true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::jwt::testkeys;
    use crate::host::memory::MemoryHost;

    fn config() -> RemoteJwksConfig {
        RemoteJwksConfig {
            cluster: "idp".into(),
            authority: "idp.city.example".into(),
            path: "/certs".into(),
            refresh_seconds: 600,
            timeout_ms: 2000,
            max_wait_ms: 1000,
            min_refetch_seconds: 30,
            retry_seconds: 5,
        }
    }

    fn jwks(kid: &str) -> String {
        testkeys::jwks(&[testkeys::rsa_jwk(kid)])
    }

    /// The first call only creates the lock entry.
    fn first_fetch(store: &JwksStore, host: &MemoryHost) -> u32 {
        assert_eq!(store.start_fetch(host), None);
        store.start_fetch(host).unwrap()
    }

    #[test]
    fn first_fetch_is_dispatched_once_per_process() {
        let host = MemoryHost::at_unix_seconds(1_000);
        let worker_a = JwksStore::new("city", config());
        let worker_b = JwksStore::new("city", config());
        assert!(worker_a.keys(&host).is_none());
        assert_eq!(first_fetch(&worker_a, &host), 1);
        assert_eq!(worker_b.start_fetch(&host), None, "lock held by worker a");
        let callouts = host.callouts.borrow().clone();
        assert_eq!(callouts.len(), 1);
        assert_eq!(callouts[0].cluster, "idp");
        assert!(callouts[0]
            .headers
            .contains(&(":path".to_string(), "/certs".to_string())));
        assert!(worker_a.accept_response(200, jwks("k1").as_bytes(), &host));
        // Worker b adopts the shared set without fetching.
        let (keys, _) = worker_b.keys(&host).unwrap();
        assert!(keys.has_kid("k1"));
        assert_eq!(worker_b.start_fetch(&host), None, "fresh set: no fetch");
        assert_eq!(host.counter(Metric::JwksFetched), 1);
    }

    #[test]
    fn endpoint_down_after_a_first_fetch_keeps_the_last_good_set() {
        let host = MemoryHost::at_unix_seconds(1_000);
        let store = JwksStore::new("city", config());
        first_fetch(&store, &host);
        store.accept_response(200, jwks("k1").as_bytes(), &host);
        host.advance_seconds(600);
        store.start_fetch(&host).unwrap();
        assert!(!store.accept_response(503, b"<html>down</html>", &host));
        assert!(!store.accept_response(200, b"{\"keys\":[]}", &host));
        assert!(store.keys(&host).unwrap().0.has_kid("k1"));
        assert_eq!(host.counter(Metric::JwksFetchFailed), 2);
        // Back-off, then retry.
        host.advance_seconds(1);
        assert_eq!(store.start_fetch(&host), None);
        host.advance_seconds(5);
        assert!(store.start_fetch(&host).is_some());
        let line = host.log_lines().join("\n");
        assert!(!line.contains("html"), "bodies are never logged");
    }

    #[test]
    fn key_rotation_is_picked_up_by_refresh_and_bumps_the_generation() {
        let host = MemoryHost::at_unix_seconds(1_000);
        let store = JwksStore::new("city", config());
        first_fetch(&store, &host);
        store.accept_response(200, jwks("k1").as_bytes(), &host);
        let (_, generation) = store.keys(&host).unwrap();
        host.advance_seconds(600);
        store.start_fetch(&host).unwrap();
        store.accept_response(
            200,
            testkeys::jwks(&[testkeys::rotated_rsa_jwk("k2")]).as_bytes(),
            &host,
        );
        let (keys, next) = store.keys(&host).unwrap();
        assert!(keys.has_kid("k2") && !keys.has_kid("k1"));
        assert!(next > generation);
    }

    #[test]
    fn unknown_kid_refetch_is_rate_limited() {
        let host = MemoryHost::at_unix_seconds(1_000);
        let store = JwksStore::new("city", config());
        first_fetch(&store, &host);
        store.accept_response(200, jwks("k1").as_bytes(), &host);
        assert!(!store.request_refetch(&host), "just fetched");
        assert_eq!(store.start_fetch(&host), None);
        host.advance_seconds(30);
        assert!(store.request_refetch(&host));
        assert!(store.start_fetch(&host).is_some());
    }

    #[test]
    fn a_lost_reply_frees_the_lock_after_the_timeout() {
        let host = MemoryHost::at_unix_seconds(1_000);
        let store = JwksStore::new("city", config());
        first_fetch(&store, &host);
        host.advance_seconds(2);
        assert_eq!(store.start_fetch(&host), None, "lock held, back-off");
        host.advance_seconds(3);
        assert!(store.start_fetch(&host).is_some(), "lock expired");
    }
}
