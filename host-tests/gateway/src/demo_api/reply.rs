//! What a handler answers, and how it goes on the wire: every reply
//! carries the demo API's `server` and `x-powered-by` headers (so tests can
//! check the gateway hides them) and closes its connection.

use std::io::Write;
use std::thread;
use std::time::Duration;

use serde_json::Value;
use tiny_http::{Header, Request, Response};

/// Sent on every response, so tests can check the gateway hides them.
pub const SERVER_HEADER: &str = "city-api/1.0";
pub const POWERED_BY_HEADER: &str = "demo";

/// What a handler answers: a JSON-ish reply, or a hand-written stream.
pub(super) enum Reply {
    Body {
        status: u16,
        content_type: &'static str,
        headers: Vec<(&'static str, String)>,
        body: Vec<u8>,
    },
    Chunked(Vec<u8>),
}

pub(super) fn json_reply(status: u16, value: &Value) -> Reply {
    Reply::Body {
        status,
        content_type: "application/json",
        headers: Vec::new(),
        body: value.to_string().into_bytes(),
    }
}

pub(super) fn ld_reply(status: u16, value: &Value) -> Reply {
    Reply::Body {
        status,
        content_type: "application/ld+json",
        headers: Vec::new(),
        body: value.to_string().into_bytes(),
    }
}

impl Reply {
    /// Writes the reply, with the demo API's own headers on it.
    pub(super) fn send(self, request: Request) -> std::io::Result<()> {
        match self {
            Reply::Body {
                status,
                content_type,
                headers,
                body,
            } => {
                let mut response = Response::from_data(body).with_status_code(status);
                for (name, value) in common_headers(content_type)
                    .into_iter()
                    .chain(headers.iter().map(|(n, v)| (*n, v.as_str())))
                {
                    if let Ok(header) = Header::from_bytes(name.as_bytes(), value.as_bytes()) {
                        response.add_header(header);
                    }
                }
                request.respond(response)
            }
            Reply::Chunked(body) => write_chunked(request, &body),
        }
    }
}

fn common_headers(content_type: &str) -> Vec<(&'static str, &str)> {
    vec![
        ("content-type", content_type),
        ("server", SERVER_HEADER),
        ("x-powered-by", POWERED_BY_HEADER),
        // tiny_http's connection pool can leave a new connection unserved
        // while idle keep-alive connections hold its threads (Envoy keeps
        // upstream connections open): one request per connection avoids it.
        ("connection", "close"),
    ]
}

/// `/test/chunked`: the body in 16-byte HTTP/1.1 chunks, flushed one by one
/// with a pause, so the gateway sees many body callbacks.
fn write_chunked(request: Request, body: &[u8]) -> std::io::Result<()> {
    let mut out = request.into_writer();
    write!(
        out,
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nserver: {SERVER_HEADER}\r\n\
         x-powered-by: {POWERED_BY_HEADER}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    )?;
    out.flush()?;
    for chunk in body.chunks(16) {
        write!(out, "{:x}\r\n", chunk.len())?;
        out.write_all(chunk)?;
        out.write_all(b"\r\n")?;
        out.flush()?;
        thread::sleep(Duration::from_millis(2));
    }
    out.write_all(b"0\r\n\r\n")?;
    out.flush()
}
