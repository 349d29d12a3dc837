//! The demo authorization server's token introspection (RFC 7662), answered
//! from the DEMO ONLY opaque tokens of `policies/demo-keys/credentials.yaml`:
//! the same answers for the wasmtime runner (a scripted callout) and for
//! real Envoy (the demo API's `/oauth2/introspect`).

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use percent_encoding::percent_decode_str;
use serde::Deserialize;
use serde_json::{json, Map, Value};

/// Where the demo API serves introspection.
pub const INTROSPECTION_PATH: &str = "/oauth2/introspect";

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntrospectionSpec {
    /// The gateway's own client at the authorization server.
    pub client_id: String,
    pub client_secret: String,
    /// Opaque tokens by name (`{{opaque:NAME}}` in scenario files).
    pub tokens: BTreeMap<String, OpaqueTokenSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpaqueTokenSpec {
    pub token: String,
    #[serde(default = "yes")]
    pub active: bool,
    #[serde(default = "an_hour")]
    pub expires_in: i64,
    /// How the server behaves for this token instead of answering.
    #[serde(default)]
    pub behaviour: Option<Behaviour>,
    #[serde(default)]
    pub claims: Map<String, Value>,
}

fn yes() -> bool {
    true
}

fn an_hour() -> i64 {
    3600
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Behaviour {
    /// Never answers (the gateway's callout times out).
    Hang,
    /// 500 with an HTML page.
    Error,
}

/// What the server does with one introspection request.
#[derive(Debug, Clone, PartialEq)]
pub enum Introspected {
    Answer { status: u16, body: Vec<u8> },
    Hang,
}

impl IntrospectionSpec {
    /// `authorization` and `form` as the request carried them; `now` in
    /// Unix seconds. A client without the right Basic credentials gets
    /// 401 `invalid_client`, as from a real server; an unknown token is
    /// inactive.
    pub fn introspect(&self, authorization: Option<&str>, form: &[u8], now: i64) -> Introspected {
        let answer = |status: u16, body: Value| Introspected::Answer {
            status,
            body: body.to_string().into_bytes(),
        };
        if authorization != Some(self.basic().as_str()) {
            return answer(401, json!({"error": "invalid_client"}));
        }
        let form = String::from_utf8_lossy(form);
        let token = form.split('&').find_map(|pair| {
            let (name, value) = pair.split_once('=')?;
            (name == "token").then(|| percent_decode_str(value).decode_utf8_lossy().into_owned())
        });
        let Some(token) = token else {
            return answer(400, json!({"error": "invalid_request"}));
        };
        let Some(spec) = self.tokens.values().find(|t| t.token == token) else {
            return answer(200, json!({"active": false}));
        };
        match spec.behaviour {
            Some(Behaviour::Hang) => return Introspected::Hang,
            Some(Behaviour::Error) => {
                return Introspected::Answer {
                    status: 500,
                    body: b"<html>internal error</html>".to_vec(),
                }
            }
            None => {}
        }
        if !spec.active {
            return answer(200, json!({"active": false}));
        }
        let mut members = spec.claims.clone();
        members.insert("active".into(), true.into());
        members.insert("iat".into(), now.into());
        members.insert("exp".into(), (now + spec.expires_in).into());
        members
            .entry("token_type")
            .or_insert_with(|| "Bearer".into());
        answer(200, Value::Object(members))
    }

    /// `Basic` credentials as RFC 6749 §2.3.1 writes them (the demo's
    /// client id and secret need no form encoding).
    fn basic(&self) -> String {
        let pair = format!("{}:{}", self.client_id, self.client_secret);
        format!("Basic {}", STANDARD.encode(pair))
    }

    pub fn token(&self, name: &str) -> Option<&str> {
        self.tokens.get(name).map(|t| t.token.as_str())
    }
}
