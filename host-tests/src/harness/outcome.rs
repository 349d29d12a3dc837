//! What comes out of a stream: the request as it reached the upstream, how
//! the request phase ended, and the response as the client received it.

use crate::abi::state::{GuestLocalReply, Headers};
use anyhow::Result;

/// The request as it reached the simulated upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamRequest {
    /// The request headers as the filter left them when it let them go.
    pub headers: Headers,
    pub body: Vec<u8>,
    pub trailers: Headers,
}

/// How the request phase ended (so far).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestOutcome {
    /// The filter answered; this is the reply as the client received it
    /// (after the filter's own response callbacks saw it).
    Local(GuestLocalReply),
    Forwarded(UpstreamRequest),
    /// Stopped, waiting for a callout reply or `continue_request`.
    Pending,
    /// The filter closed the stream.
    Reset,
}

/// What the client received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientResponse {
    pub status: u16,
    /// Without `:status`.
    pub headers: Headers,
    pub body: Vec<u8>,
    pub trailers: Headers,
    /// Set when a local reply replaced the upstream's response.
    pub local: Option<GuestLocalReply>,
    /// The stream was reset (closed, or a local reply after the response
    /// headers had already gone out).
    pub reset: bool,
}

impl ClientResponse {
    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Result<serde_json::Value> {
        Ok(serde_json::from_slice(&self.body)?)
    }
}

pub(super) fn reset_response() -> ClientResponse {
    ClientResponse {
        status: 0,
        headers: Headers::new(),
        body: Vec::new(),
        trailers: Headers::new(),
        local: None,
        reset: true,
    }
}

pub(super) fn local_response(reply: &GuestLocalReply) -> ClientResponse {
    ClientResponse {
        status: reply.status,
        headers: reply.headers.clone(),
        body: reply.body.clone(),
        trailers: Headers::new(),
        local: Some(reply.clone()),
        reset: false,
    }
}
