//! A response through the gateway as a test sees it.

use anyhow::{Context, Result};
use serde_json::Value;

/// A response as a test sees it. The client (ureq) decodes a gzip body and
/// then drops `content-encoding`; check compression with a raw socket.
#[derive(Debug, Clone)]
pub struct HttpReply {
    pub status: u16,
    /// Lower-cased names, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpReply {
    /// First value of a header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Result<Value> {
        serde_json::from_str(&self.body).with_context(|| format!("body is not JSON: {}", self.body))
    }
}

/// A ureq response as an [`HttpReply`] (non-2xx statuses included).
pub fn read_reply(mut response: ureq::http::Response<ureq::Body>) -> Result<HttpReply> {
    let status = response.status().as_u16();

    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = response
        .body_mut()
        .with_config()
        .limit(64 * 1024 * 1024)
        .lossy_utf8(true)
        .read_to_string()?;
    Ok(HttpReply {
        status,
        headers,
        body,
    })
}
