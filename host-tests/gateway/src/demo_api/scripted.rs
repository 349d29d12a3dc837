//! Scripted replies: what the scenario runner makes the upstream answer, so
//! the same scenario runs in wasmtime and in Envoy. Written by hand on the
//! socket so chunking and trailers are exactly what the scenario asked for.

use std::io::Write;

use tiny_http::Request;

/// A reply the scenario runner dictates: while set, every request except
/// the JWKS gets it (so the same scenario runs in wasmtime and in Envoy).
#[derive(Debug, Clone, Default)]
pub struct ScriptedReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Send the body chunked, in pieces of this size.
    pub chunk_size: Option<usize>,
    /// Trailers (implies chunked).
    pub trailers: Vec<(String, String)>,
}

/// Writes a scripted reply by hand, so chunking and trailers are exactly
/// what the scenario asked for.
pub(super) fn write_scripted(request: Request, reply: &ScriptedReply) -> std::io::Result<()> {
    let chunked = reply.chunk_size.is_some() || !reply.trailers.is_empty();
    let mut out = request.into_writer();
    let mut head = format!("HTTP/1.1 {} Scripted\r\n", reply.status);
    for (name, value) in &reply.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if chunked {
        head.push_str("transfer-encoding: chunked\r\n");
    } else {
        head.push_str(&format!("content-length: {}\r\n", reply.body.len()));
    }
    head.push_str("connection: close\r\n\r\n");
    out.write_all(head.as_bytes())?;
    if chunked {
        for chunk in reply
            .body
            .chunks(reply.chunk_size.unwrap_or(usize::MAX).max(1))
        {
            write!(out, "{:x}\r\n", chunk.len())?;
            out.write_all(chunk)?;
            out.write_all(b"\r\n")?;
            out.flush()?;
        }
        out.write_all(b"0\r\n")?;
        for (name, value) in &reply.trailers {
            write!(out, "{name}: {value}\r\n")?;
        }
        out.write_all(b"\r\n")?;
    } else {
        out.write_all(&reply.body)?;
    }
    out.flush()
}
