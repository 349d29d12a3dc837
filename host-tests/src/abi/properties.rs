//! `proxy_get_property` / `proxy_set_property`. A path is its segments
//! joined by NUL bytes. Values are raw bytes like Envoy's: strings as bytes,
//! integers as 8-byte little-endian, booleans as one byte, maps in the
//! header-map serialization.

use super::call::{finish, hostcall, ENV};
use super::memory::{self, Cx};
use super::state::{Headers, HostState, StreamData};
use super::status::Status;
use wasmtime::Linker;

/// Encodes a dotted path (`"request.path"`) the way the SDK sends it.
pub fn encode_path(dotted: &str) -> Vec<u8> {
    dotted.replace('.', "\0").into_bytes()
}

pub fn int_value(v: i64) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}

pub fn bool_value(v: bool) -> Vec<u8> {
    vec![u8::from(v)]
}

fn split_addr(addr: &str) -> (String, Option<i64>) {
    match addr.rsplit_once(':') {
        Some((host, port)) => (host.to_string(), port.parse().ok()),
        None => (addr.to_string(), None),
    }
}

fn from_headers(h: &Headers, rest: &[&str]) -> Option<Vec<u8>> {
    match rest {
        [] => Some(h.serialize()),
        [name] => h.get(name).map(|v| v.as_bytes().to_vec()),
        _ => None,
    }
}

fn request_property(s: &StreamData, segs: &[&str]) -> Option<Vec<u8>> {
    let h = &s.request.headers;
    let text = |v: Option<&str>| v.map(|v| v.as_bytes().to_vec());
    let path = h.get(":path").unwrap_or("");
    match segs {
        ["headers", rest @ ..] => from_headers(h, rest),
        ["path"] => text(h.get(":path")),
        ["url_path"] => text(Some(path.split('?').next().unwrap_or(""))),
        ["query"] => Some(path.split_once('?').map(|(_, q)| q).unwrap_or("").into()),
        ["method"] => text(h.get(":method")),
        ["host"] => text(h.get(":authority")),
        ["scheme"] => text(h.get(":scheme")),
        ["protocol"] => Some(s.connection.protocol.as_bytes().to_vec()),
        ["id"] => text(h.get("x-request-id")),
        ["referer"] => text(h.get("referer")),
        ["useragent"] => text(h.get("user-agent")),
        ["size"] => Some(int_value(s.request.body.len() as i64)),
        _ => None,
    }
}

fn stream_property(s: &StreamData, segs: &[&str]) -> Option<Vec<u8>> {
    let c = &s.connection;
    let cert = c.peer_cert.as_ref();
    match segs {
        ["request", rest @ ..] => request_property(s, rest),
        ["response", "headers", rest @ ..] if s.response.started => {
            from_headers(&s.response.headers, rest)
        }
        ["response", "code"] if s.response.started => s
            .response
            .headers
            .get(":status")
            .and_then(|v| v.parse().ok())
            .map(int_value),
        ["source", "address"] => Some(c.source.as_bytes().to_vec()),
        ["source", "port"] => split_addr(&c.source).1.map(int_value),
        ["destination", "address"] => Some(c.destination.as_bytes().to_vec()),
        ["destination", "port"] => split_addr(&c.destination).1.map(int_value),
        ["connection", "mtls"] => Some(bool_value(cert.is_some())),
        ["connection", "id"] => Some(int_value(c.id as i64)),
        ["connection", "requested_server_name"] => Some(c.requested_server_name.clone().into()),
        ["connection", "uri_san_peer_certificate"] => cert.map(|p| p.uri_san.clone().into()),
        ["connection", "dns_san_peer_certificate"] => cert.map(|p| p.dns_san.clone().into()),
        ["connection", "subject_peer_certificate"] => cert.map(|p| p.subject.clone().into()),
        _ => None,
    }
}

/// Resolves a property for the effective context: values set on the stream
/// first, then Envoy's computed attributes, then VM-level properties.
pub fn lookup(state: &HostState, path: &[u8]) -> Option<Vec<u8>> {
    let stream = state.stream();
    if let Some(v) = stream.and_then(|s| s.properties.get(path)) {
        return Some(v.clone());
    }
    let text = String::from_utf8_lossy(path);
    let segs: Vec<&str> = text.split('\0').collect();
    let st = &state.settings;
    let computed = match segs.as_slice() {
        ["plugin_name"] => Some(st.plugin_name.clone().into_bytes()),
        ["plugin_root_id"] => Some(st.root_id.clone().into_bytes()),
        ["plugin_vm_id"] => Some(st.vm_id.clone().into_bytes()),
        _ => stream.and_then(|s| stream_property(s, &segs)),
    };
    computed.or_else(|| state.vm_properties.get(path).cloned())
}

pub(crate) fn link(l: &mut Linker<HostState>) -> anyhow::Result<()> {
    hostcall(
        l,
        ENV,
        "proxy_get_property",
        |mut c: Cx<'_>, p: u32, n: u32, rp: u32, rs: u32| {
            finish((|| {
                let path = memory::read(&mut c, p, n)?;
                let v = lookup(c.data(), &path).ok_or(Status::NotFound)?;
                memory::return_bytes(&mut c, &v, rp, rs)
            })())
        },
    )?;
    hostcall(
        l,
        ENV,
        "proxy_set_property",
        |mut c: Cx<'_>, p: u32, n: u32, vp: u32, vn: u32| {
            finish((|| {
                let path = memory::read(&mut c, p, n)?;
                let value = memory::read(&mut c, vp, vn)?;
                if path.is_empty() {
                    return Err(Status::BadArgument.into());
                }
                let s = c.data_mut();
                match s.stream_mut() {
                    Some(stream) => stream.properties.insert(path, value),
                    None => s.vm_properties.insert(path, value),
                };
                Ok(())
            })())
        },
    )?;
    Ok(())
}
