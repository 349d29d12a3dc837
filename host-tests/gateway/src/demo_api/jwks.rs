//! The JWKS the demo API serves at `/.well-known/jwks.json`, and the handle
//! a test changes it with while the server runs (key rotation, outages,
//! garbage, slowness).

use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

use serde_json::{json, Value};

use super::reply::{json_reply, Reply};

/// How `/.well-known/jwks.json` behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksMode {
    /// 200 with the current key set.
    Serve,
    /// 503 with a problem body.
    Unavailable,
    /// 200 `application/json` that is not JSON.
    Garbage,
    /// The key set, after this delay (callout timeouts).
    Slow(Duration),
}

/// A handle to change the JWKS while the server runs (key rotation, outages).
#[derive(Debug, Clone)]
pub struct JwksControl(Arc<Mutex<(Value, JwksMode)>>);

impl JwksControl {
    pub(super) fn new(jwks: Value) -> Self {
        JwksControl(Arc::new(Mutex::new((jwks, JwksMode::Serve))))
    }

    fn state(&self) -> MutexGuard<'_, (Value, JwksMode)> {
        // A panicking test thread must not take the server down with it.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Replace the served key set (`{"keys":[...]}`).
    pub fn set_keys(&self, jwks: Value) {
        self.state().0 = jwks;
    }

    pub fn set_mode(&self, mode: JwksMode) {
        self.state().1 = mode;
    }

    pub fn keys(&self) -> Value {
        self.state().0.clone()
    }
}

/// `/.well-known/jwks.json` as the control says.
pub(super) fn reply(control: &JwksControl) -> Reply {
    let (keys, mode) = control.state().clone();
    match mode {
        JwksMode::Serve => json_reply(200, &keys),
        JwksMode::Slow(delay) => {
            thread::sleep(delay);
            json_reply(200, &keys)
        }
        JwksMode::Unavailable => json_reply(503, &json!({"error": "ServiceUnavailable"})),
        JwksMode::Garbage => Reply::Body {
            status: 200,
            content_type: "application/json",
            headers: Vec::new(),
            body: b"<html>not a key set</html>".to_vec(),
        },
    }
}
