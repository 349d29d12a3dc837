//! The data of one HTTP stream as the hostcalls see it: both directions'
//! maps and bodies, the downstream connection, and what the guest asked for
//! (a local reply, continuing, closing) that the harness acts on after the
//! callback returns.

use super::headers::Headers;
use std::collections::HashMap;

/// A peer certificate as Envoy's connection properties report it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerCert {
    pub uri_san: String,
    pub dns_san: String,
    pub subject: String,
}

/// The downstream connection of a request stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    /// `ip:port`, as Envoy's `source.address`.
    pub source: String,
    pub destination: String,
    pub protocol: String,
    pub requested_server_name: String,
    /// The verified client certificate when the connection is mTLS.
    pub peer_cert: Option<PeerCert>,
    pub id: u64,
}

impl Default for Connection {
    fn default() -> Self {
        Connection {
            source: "203.0.113.10:40000".into(),
            destination: "10.0.0.1:8443".into(),
            protocol: "HTTP/1.1".into(),
            requested_server_name: String::new(),
            peer_cert: None,
            id: 1,
        }
    }
}

/// A local reply the guest sent with `proxy_send_local_response` (the core's
/// `citygate_core::http::LocalReply` is the decision the filter turns into
/// that call; this is what crossed the ABI).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestLocalReply {
    pub status: u16,
    pub headers: Headers,
    pub body: Vec<u8>,
    /// `None` when the guest passed -1 (no gRPC status).
    pub grpc_status: Option<i32>,
    pub details: String,
}

/// One direction of a stream as the filter sees it: the live header map,
/// the body buffer (what `proxy_get_buffer_bytes` returns) and trailers.
#[derive(Debug, Clone, Default)]
pub struct Flow {
    pub headers: Headers,
    pub body: Vec<u8>,
    pub trailers: Headers,
    /// Whether this direction has started (response headers exist).
    pub started: bool,
}

/// The data of one HTTP stream context.
#[derive(Debug, Clone, Default)]
pub struct StreamData {
    pub request: Flow,
    pub response: Flow,
    pub connection: Connection,
    pub local_reply: Option<GuestLocalReply>,
    /// `continue_stream` / `continue_request` requests, applied after the
    /// current callback returns (Envoy defers them the same way).
    pub continue_request: bool,
    pub continue_response: bool,
    pub closed: bool,
    /// Values set with `proxy_set_property` on this stream, by encoded path.
    pub properties: HashMap<Vec<u8>, Vec<u8>>,
    pub route_cache_cleared: u32,
}
