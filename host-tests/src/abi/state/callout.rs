//! Callouts as the host records them: the HTTP and gRPC calls the guest
//! made, the replies a test scripts for them, and the reply being delivered.

use super::headers::Headers;

/// An `http_call` the guest made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalloutRequest {
    pub token: u32,
    /// The context that made the call (root or HTTP stream).
    pub context_id: u32,
    pub cluster: String,
    pub headers: Headers,
    pub body: Vec<u8>,
    pub trailers: Headers,
    pub timeout_ms: u32,
}

impl CalloutRequest {
    pub fn method(&self) -> &str {
        self.headers.get(":method").unwrap_or("")
    }
    pub fn path(&self) -> &str {
        self.headers.get(":path").unwrap_or("")
    }
}

/// How a callout ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CalloutReply {
    Reply {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Envoy reports a timeout like a failure: no headers, no body.
    Timeout,
    /// Connection failure / reset: no headers, no body.
    Failure,
}

impl CalloutReply {
    pub fn status(status: u16, body: impl Into<Vec<u8>>) -> Self {
        CalloutReply::Reply {
            status,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    pub fn json(status: u16, body: impl Into<String>) -> Self {
        CalloutReply::Reply {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.into().into_bytes(),
        }
    }
}

/// A `grpc_call` (unary) or `grpc_stream` the guest opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcCallRequest {
    pub token: u32,
    pub context_id: u32,
    pub cluster: String,
    pub service: String,
    pub method: String,
    pub initial_metadata: Headers,
    /// The unary request message, or everything sent on a stream.
    pub messages: Vec<Vec<u8>>,
    pub timeout_ms: u32,
    pub streaming: bool,
}

/// How a gRPC call ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrpcReply {
    /// One response message, then status OK.
    Message(Vec<u8>),
    /// Close with this status code and message (e.g. 12 Unimplemented).
    Status(u32, String),
}

/// The body and maps of an HTTP callout reply, visible only while
/// `proxy_on_http_call_response` runs.
#[derive(Debug, Clone, Default)]
pub struct CallResponse {
    pub headers: Headers,
    pub body: Vec<u8>,
    pub trailers: Headers,
}
