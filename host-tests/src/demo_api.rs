//! The demo city API: the upstream behind the gateway in `cargo demo` and in
//! the Envoy end-to-end tests.
//!
//! It speaks just enough NGSI-v2 (normalized and `options=keyValues`),
//! NGSI-LD and Open311 GeoReport v2 to exercise citygate's stages on
//! realistic payloads, full of (obviously fictional) personal data: driver
//! names, licence plates, GPS positions, reporters' e-mails and phones. It
//! also serves the JWKS the gateway verifies JWTs with, the `/echo` endpoint
//! (what reached upstream), and `/test/*` bodies that a response minimizer
//! must handle or refuse (chunked, gzip, malformed, huge, text).
//!
//! Every request is recorded so a test can assert whether it reached
//! upstream and with which headers.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use anyhow::{anyhow, Result};
use serde_json::{json, Map, Value};
use tiny_http::{Header, Method, Request, Response, Server};

const NGSI_V2: &str = include_str!("demo_api/data/ngsi_v2_entities.json");
const NGSI_LD: &str = include_str!("demo_api/data/ngsi_ld_entities.json");
const OPEN311: &str = include_str!("demo_api/data/open311_requests.json");

/// Sent on every response, so tests can check the gateway hides them.
pub const SERVER_HEADER: &str = "city-api/1.0";
pub const POWERED_BY_HEADER: &str = "demo";

const WORKERS: usize = 8;
const MAX_BIG_BYTES: usize = 64 * 1024 * 1024;
const MAX_REQUEST_BODY: u64 = 16 * 1024 * 1024;

/// One request as the demo API received it.
#[derive(Debug, Clone)]
pub struct ReceivedRequest {
    pub method: String,
    /// Path without the query, as sent on the wire.
    pub path: String,
    /// Raw query string (without `?`), empty if none.
    pub query: String,
    /// Lower-cased names, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl ReceivedRequest {
    /// First value of a header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

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
    fn new(jwks: Value) -> Self {
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

struct Shared {
    received: Mutex<Vec<ReceivedRequest>>,
    jwks: JwksControl,
    script: Mutex<Option<ScriptedReply>>,
    stop: AtomicBool,
}

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

impl Shared {
    fn received(&self) -> MutexGuard<'_, Vec<ReceivedRequest>> {
        self.received.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The running demo API on 127.0.0.1; stops on drop.
pub struct DemoApi {
    pub port: u16,
    shared: Arc<Shared>,
    server: Arc<Server>,
    workers: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for DemoApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DemoApi").field("port", &self.port).finish()
    }
}

impl DemoApi {
    /// On a free port, with an empty key set.
    pub fn start() -> Result<Self> {
        Self::start_with_jwks(json!({ "keys": [] }))
    }

    /// On a free port, serving `jwks` at `/.well-known/jwks.json`.
    pub fn start_with_jwks(jwks: Value) -> Result<Self> {
        Self::start_on(0, jwks)
    }

    /// On a given port (0 = free), for the foreground demo.
    pub fn start_on(port: u16, jwks: Value) -> Result<Self> {
        let server =
            Arc::new(Server::http(("127.0.0.1", port)).map_err(|e| anyhow!("demo API: {e}"))?);
        let port = server
            .server_addr()
            .to_ip()
            .map(|a| a.port())
            .ok_or_else(|| anyhow!("demo API: not an IP listener"))?;
        let shared = Arc::new(Shared {
            received: Mutex::new(Vec::new()),
            jwks: JwksControl::new(jwks),
            script: Mutex::new(None),
            stop: AtomicBool::new(false),
        });
        let workers = (0..WORKERS)
            .map(|_| {
                let (server, shared) = (Arc::clone(&server), Arc::clone(&shared));
                thread::spawn(move || serve(&server, &shared))
            })
            .collect();
        Ok(DemoApi {
            port,
            shared,
            server,
            workers,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Answer every request (but the JWKS) with `reply`; `None` restores
    /// the demo data.
    pub fn script(&self, reply: Option<ScriptedReply>) {
        *self.shared.script.lock().unwrap_or_else(|p| p.into_inner()) = reply;
    }

    /// Change the JWKS or its behaviour at run time.
    pub fn jwks(&self) -> JwksControl {
        self.shared.jwks.clone()
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<ReceivedRequest> {
        self.shared.received().clone()
    }

    /// Number of requests received so far.
    pub fn request_count(&self) -> usize {
        self.shared.received().len()
    }

    /// Number of requests whose path starts with `prefix`.
    pub fn count(&self, prefix: &str) -> usize {
        self.shared
            .received()
            .iter()
            .filter(|r| r.path.starts_with(prefix))
            .count()
    }

    /// The most recent request whose path starts with `prefix`.
    pub fn last(&self, prefix: &str) -> Option<ReceivedRequest> {
        self.shared
            .received()
            .iter()
            .rev()
            .find(|r| r.path.starts_with(prefix))
            .cloned()
    }
}

impl Drop for DemoApi {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for _ in &self.workers {
            self.server.unblock();
        }
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

fn serve(server: &Server, shared: &Shared) {
    while !shared.stop.load(Ordering::SeqCst) {
        match server.recv_timeout(Duration::from_millis(200)) {
            Ok(Some(request)) => handle(request, shared),
            Ok(None) => {}
            Err(_) => return,
        }
    }
}

// ---------------------------------------------------------------------------
// Routing

/// What a handler answers: a JSON-ish reply, or a hand-written stream.
enum Reply {
    Body {
        status: u16,
        content_type: &'static str,
        headers: Vec<(&'static str, String)>,
        body: Vec<u8>,
    },
    Chunked(Vec<u8>),
}

fn json_reply(status: u16, value: &Value) -> Reply {
    Reply::Body {
        status,
        content_type: "application/json",
        headers: Vec::new(),
        body: value.to_string().into_bytes(),
    }
}

fn handle(mut request: Request, shared: &Shared) {
    let received = record(&mut request);
    shared.received().push(received.clone());
    if received.path != "/.well-known/jwks.json" {
        let script = shared
            .script
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(script) = script {
            let _ = write_scripted(request, &script);
            return;
        }
    }
    let reply = route(&received, shared);
    let _ = match reply {
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
    };
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

fn record(request: &mut Request) -> ReceivedRequest {
    let (path, query) = match request.url().split_once('?') {
        Some((p, q)) => (p.to_owned(), q.to_owned()),
        None => (request.url().to_owned(), String::new()),
    };
    let headers = request
        .headers()
        .iter()
        .map(|h| {
            (
                h.field.as_str().as_str().to_ascii_lowercase(),
                h.value.as_str().to_owned(),
            )
        })
        .collect();
    let mut body = Vec::new();
    let _ = request
        .as_reader()
        .take(MAX_REQUEST_BODY)
        .read_to_end(&mut body);
    ReceivedRequest {
        method: request.method().as_str().to_owned(),
        path,
        query,
        headers,
        body,
    }
}

fn route(req: &ReceivedRequest, shared: &Shared) -> Reply {
    let path = req.path.as_str();
    let get = req.method == Method::Get.as_str() || req.method == Method::Head.as_str();
    let post = req.method == Method::Post.as_str();
    match path {
        "/echo" => json_reply(200, &echo(req)),
        "/.well-known/jwks.json" => jwks(&shared.jwks),
        "/v2/entities" | "/ngsi-ld/v1/entities" | "/open311/v2/requests.json" if post => created(req),
        "/v2/entities" if get => json_reply(200, &ngsi_v2_list(req)),
        "/ngsi-ld/v1/entities" if get => ld_reply(200, &filtered(NGSI_LD, req, "type")),
        "/open311/v2/requests.json" if get => json_reply(200, &open311_list(req)),
        "/test/chunked" => Reply::Chunked(sample_body().into_bytes()),
        "/test/gzip" => gzip_reply(),
        "/test/malformed" => Reply::Body {
            status: 200,
            content_type: "application/json",
            headers: Vec::new(),
            body: br#"{"driverName": "Jane Example", "vehiclePlateIdentifier": "EX-0007-TST", "#.to_vec(),
        },
        "/test/big" => json_reply(200, &big(req)),
        "/test/text" => Reply::Body {
            status: 200,
            content_type: "text/plain; charset=utf-8",
            headers: Vec::new(),
            body: b"Call back Jane Example at jane.example@example.org about request EX-2025-000101.\n"
                .to_vec(),
        },
        _ => by_id(req, get, post).unwrap_or_else(|| not_found(path)),
    }
}

/// `/v2/entities/{id}`, `/ngsi-ld/v1/entities/{id}`, `/open311/v2/requests/{id}.json`.
fn by_id(req: &ReceivedRequest, get: bool, post: bool) -> Option<Reply> {
    let path = req.path.as_str();
    if let Some(id) = path.strip_prefix("/v2/entities/") {
        if post {
            return Some(created(req));
        }
        let keyvalues = wants_key_values(req);
        return Some(match find(NGSI_V2, "id", id) {
            Some(e) if get => json_reply(200, &if keyvalues { key_values(&e) } else { e }),
            Some(_) => method_not_allowed(),
            None => json_reply(
                404,
                &json!({"error": "NotFound", "description": "The requested entity has not been found. Check type and id"}),
            ),
        });
    }
    if let Some(id) = path.strip_prefix("/ngsi-ld/v1/entities/") {
        return Some(match find(NGSI_LD, "id", id) {
            Some(e) if get => ld_reply(200, &e),
            Some(_) => method_not_allowed(),
            None => ld_reply(
                404,
                &json!({"type": "https://uri.etsi.org/ngsi-ld/errors/ResourceNotFound", "title": "Entity not found", "detail": id}),
            ),
        });
    }
    let id = path
        .strip_prefix("/open311/v2/requests/")?
        .strip_suffix(".json")?;
    Some(match find(OPEN311, "service_request_id", id) {
        Some(r) if get => json_reply(200, &json!([r])),
        Some(_) => method_not_allowed(),
        None => json_reply(
            404,
            &json!([{"code": 404, "description": "Service request not found"}]),
        ),
    })
}

fn not_found(path: &str) -> Reply {
    json_reply(
        404,
        &json!({"error": "NotFound", "description": format!("no such resource: {path}")}),
    )
}

fn method_not_allowed() -> Reply {
    json_reply(
        405,
        &json!({"error": "MethodNotAllowed", "description": "method not allowed"}),
    )
}

fn ld_reply(status: u16, value: &Value) -> Reply {
    Reply::Body {
        status,
        content_type: "application/ld+json",
        headers: Vec::new(),
        body: value.to_string().into_bytes(),
    }
}

// ---------------------------------------------------------------------------
// Data

fn dataset(text: &str) -> Vec<Value> {
    // The data files are checked by this module's tests.
    serde_json::from_str(text).unwrap_or_default()
}

fn find(text: &str, key: &str, id: &str) -> Option<Value> {
    dataset(text)
        .into_iter()
        .find(|e| e.get(key).and_then(Value::as_str) == Some(id))
}

fn query_params(req: &ReceivedRequest) -> Vec<(String, String)> {
    req.query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn param(req: &ReceivedRequest, name: &str) -> Option<String> {
    query_params(req)
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `?type=A,B` keeps entities of those types; `?id=` likewise.
fn filtered(text: &str, req: &ReceivedRequest, key: &str) -> Value {
    let wanted: Option<Vec<String>> =
        param(req, key).map(|v| v.split(',').map(str::to_owned).collect());
    let ids: Option<Vec<String>> =
        param(req, "id").map(|v| v.split(',').map(str::to_owned).collect());
    let keep = |e: &Value, field: &str, set: &Option<Vec<String>>| {
        set.as_ref().is_none_or(|set| {
            e.get(field)
                .and_then(Value::as_str)
                .is_some_and(|v| set.iter().any(|s| s == v))
        })
    };
    Value::Array(
        dataset(text)
            .into_iter()
            .filter(|e| keep(e, key, &wanted) && keep(e, "id", &ids))
            .collect(),
    )
}

fn wants_key_values(req: &ReceivedRequest) -> bool {
    param(req, "options").is_some_and(|o| o.split(',').any(|o| o == "keyValues"))
}

fn ngsi_v2_list(req: &ReceivedRequest) -> Value {
    let entities = filtered(NGSI_V2, req, "type");
    let mut list = entities.as_array().cloned().unwrap_or_default();
    let offset = param(req, "offset")
        .and_then(|o| o.parse().ok())
        .unwrap_or(0);
    let limit = param(req, "limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(20);
    list = list.into_iter().skip(offset).take(limit).collect();
    if wants_key_values(req) {
        list = list.iter().map(key_values).collect();
    }
    Value::Array(list)
}

/// NGSI-v2 `keyValues` rendering: each attribute becomes its bare value.
pub fn key_values(entity: &Value) -> Value {
    let Some(fields) = entity.as_object() else {
        return entity.clone();
    };
    let simplified: Map<String, Value> = fields
        .iter()
        .map(|(k, v)| match (k.as_str(), v.get("value")) {
            ("id" | "type", _) | (_, None) => (k.clone(), v.clone()),
            (_, Some(value)) => (k.clone(), value.clone()),
        })
        .collect();
    Value::Object(simplified)
}

fn open311_list(req: &ReceivedRequest) -> Value {
    let mut list = dataset(OPEN311);
    if let Some(status) = param(req, "status") {
        list.retain(|r| r.get("status").and_then(Value::as_str) == Some(status.as_str()));
    }
    if let Some(code) = param(req, "service_code") {
        list.retain(|r| r.get("service_code").and_then(Value::as_str) == Some(code.as_str()));
    }
    Value::Array(list)
}

fn created(req: &ReceivedRequest) -> Reply {
    let echoed: Value = serde_json::from_slice(&req.body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&req.body).into_owned()));
    let location = echoed
        .get("id")
        .and_then(Value::as_str)
        .map(|id| format!("{}/{id}", req.path))
        .unwrap_or_else(|| req.path.clone());
    Reply::Body {
        status: 201,
        content_type: "application/json",
        headers: vec![("location", location)],
        body: echoed.to_string().into_bytes(),
    }
}

fn echo(req: &ReceivedRequest) -> Value {
    let headers: Map<String, Value> = req.headers.iter().fold(Map::new(), |mut map, (k, v)| {
        // Repeated headers are joined the way HTTP allows.
        let joined = match map.get(k).and_then(Value::as_str) {
            Some(prev) => format!("{prev}, {v}"),
            None => v.clone(),
        };
        map.insert(k.clone(), Value::String(joined));
        map
    });
    json!({
        "method": req.method,
        "path": req.path,
        "query": req.query,
        "headers": headers,
        "body": String::from_utf8_lossy(&req.body),
    })
}

fn jwks(control: &JwksControl) -> Reply {
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

/// A compact NGSI-v2 list with personal data, for the `/test/*` bodies.
fn sample_body() -> String {
    let vehicles = filtered(NGSI_V2, &ReceivedRequest::synthetic("type=Vehicle"), "type");
    let simplified: Vec<Value> = vehicles
        .as_array()
        .map(|v| v.iter().map(key_values).collect())
        .unwrap_or_default();
    Value::Array(simplified).to_string()
}

fn gzip_reply() -> Reply {
    use flate2::write::GzEncoder;
    let mut encoder = GzEncoder::new(Vec::new(), flate2::Compression::default());
    let body = encoder
        .write_all(sample_body().as_bytes())
        .and_then(|()| encoder.finish())
        .unwrap_or_default();
    Reply::Body {
        status: 200,
        content_type: "application/json",
        headers: vec![("content-encoding", "gzip".to_owned())],
        body,
    }
}

/// A JSON array of fictional residents of at least `?bytes=N` bytes.
fn big(req: &ReceivedRequest) -> Value {
    let target = param(req, "bytes")
        .and_then(|b| b.parse::<usize>().ok())
        .unwrap_or(1024 * 1024)
        .min(MAX_BIG_BYTES);
    let mut items = Vec::new();
    let mut size = 2;
    let mut i = 0usize;
    while size < target {
        let item = json!({
            "id": format!("resident-{i:06}"),
            "name": format!("Resident {i} Example"),
            "email": format!("resident{i}@example.org"),
            "location": {"type": "Point", "coordinates": [-3.7 + (i % 100) as f64 * 1e-4, 40.41]},
        });
        size += item.to_string().len() + 1;
        items.push(item);
        i += 1;
    }
    Value::Array(items)
}

impl ReceivedRequest {
    fn synthetic(query: &str) -> Self {
        ReceivedRequest {
            method: "GET".to_owned(),
            path: String::new(),
            query: query.to_owned(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }
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

/// Writes a scripted reply by hand, so chunking and trailers are exactly
/// what the scenario asked for.
fn write_scripted(request: Request, reply: &ScriptedReply) -> std::io::Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_files_parse() {
        for text in [NGSI_V2, NGSI_LD, OPEN311] {
            let parsed: Vec<Value> = serde_json::from_str(text).expect("valid JSON array");
            assert!(!parsed.is_empty());
        }
    }

    #[test]
    fn key_values_flattens_attributes() {
        let truck = find(
            NGSI_V2,
            "id",
            "urn:ngsi-ld:Vehicle:example-city:waste-truck-07",
        )
        .expect("truck");
        let kv = key_values(&truck);
        assert_eq!(kv["driverName"], "Jane Example");
        assert_eq!(kv["location"]["type"], "Point");
        assert_eq!(kv["lastKnownPosition"], "40.41755, -3.70234");
        assert_eq!(kv["type"], "Vehicle");
    }

    fn get(api: &DemoApi, path: &str) -> (u16, Vec<(String, String)>, Vec<u8>) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .accept_encoding(ureq::config::AutoHeaderValue::None)
            .build()
            .into();
        let mut response = agent.get(api.url(path)).call().expect("request");
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
            .collect();
        let status = response.status().as_u16();
        // Read raw (undecoded) bytes so gzip stays gzip.
        let mut body = Vec::new();
        let _ = response.body_mut().as_reader().read_to_end(&mut body);
        (status, headers, body)
    }

    fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn serves_ngsi_open311_and_records_requests() {
        let api = DemoApi::start().expect("start");
        let (status, headers, body) = get(&api, "/v2/entities?type=Vehicle&options=keyValues");
        assert_eq!(status, 200);
        assert_eq!(header(&headers, "server"), Some(SERVER_HEADER));
        assert_eq!(header(&headers, "x-powered-by"), Some(POWERED_BY_HEADER));
        let trucks: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(trucks[0]["vehiclePlateIdentifier"], "EX-0007-TST");

        let (status, _, body) = get(
            &api,
            "/v2/entities/urn:ngsi-ld:WasteContainer:example-city:wc-0413",
        );
        assert_eq!(status, 200);
        let container: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(container["fillingLevel"]["value"], 0.83);
        assert_eq!(get(&api, "/v2/entities/nope").0, 404);
        let (_, headers, _) = get(&api, "/ngsi-ld/v1/entities?type=Vehicle");
        assert_eq!(
            header(&headers, "content-type"),
            Some("application/ld+json")
        );
        let (_, _, body) = get(&api, "/open311/v2/requests/EX-2025-000102.json");
        assert!(String::from_utf8_lossy(&body).contains("john.sample@example.com"));

        let (_, _, body) = get(&api, "/echo?a=1");
        let echo: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(echo["query"], "a=1");
        assert!(echo["headers"]["host"].is_string());
        assert_eq!(api.request_count(), 6);
        assert_eq!(api.count("/v2/"), 3);
        assert_eq!(api.last("/echo").expect("echo").query, "a=1");
    }

    #[test]
    fn serves_redaction_test_bodies() {
        let api = DemoApi::start().expect("start");
        let (status, headers, body) = get(&api, "/test/chunked");
        assert_eq!(status, 200);
        assert_eq!(header(&headers, "transfer-encoding"), Some("chunked"));
        let chunked: Value = serde_json::from_slice(&body).expect("chunked json");
        assert_eq!(chunked[1]["driverName"], "John Sample");

        // ureq would decode gzip (and drop the header): read the raw reply.
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", api.port)).expect("connect");
        stream
            .write_all(b"GET /test/gzip HTTP/1.0\r\n\r\n")
            .expect("send");
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).expect("read");
        let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("head") + 4;
        let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
        assert!(head.contains("content-encoding: gzip"), "{head}");
        let mut plain = String::new();
        flate2::read::GzDecoder::new(&raw[split..])
            .read_to_string(&mut plain)
            .expect("gzip");
        assert_eq!(
            serde_json::from_str::<Value>(&plain).expect("json"),
            chunked
        );

        let (_, _, body) = get(&api, "/test/malformed");
        assert!(serde_json::from_slice::<Value>(&body).is_err());
        let (_, _, body) = get(&api, "/test/big?bytes=200000");
        assert!(
            body.len() >= 200_000 && body.len() < 201_000,
            "{}",
            body.len()
        );
        let (_, headers, body) = get(&api, "/test/text");
        assert!(header(&headers, "content-type").is_some_and(|c| c.starts_with("text/plain")));
        assert!(String::from_utf8_lossy(&body).contains("@example.org"));
    }

    #[test]
    fn jwks_can_rotate_and_fail() {
        let api = DemoApi::start_with_jwks(json!({"keys": [{"kid": "k1"}]})).expect("start");
        let jwks = api.jwks();
        let kid = |api: &DemoApi| {
            let (_, _, body) = get(api, "/.well-known/jwks.json");
            serde_json::from_slice::<Value>(&body).expect("json")["keys"][0]["kid"].clone()
        };
        assert_eq!(kid(&api), "k1");
        jwks.set_keys(json!({"keys": [{"kid": "k2"}]}));
        assert_eq!(kid(&api), "k2");
        jwks.set_mode(JwksMode::Unavailable);
        assert_eq!(get(&api, "/.well-known/jwks.json").0, 503);
        jwks.set_mode(JwksMode::Garbage);
        let (_, _, body) = get(&api, "/.well-known/jwks.json");
        assert!(serde_json::from_slice::<Value>(&body).is_err());
        jwks.set_mode(JwksMode::Slow(Duration::from_millis(300)));
        let started = std::time::Instant::now();
        assert_eq!(kid(&api), "k2");
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert_eq!(api.count("/.well-known/jwks.json"), 5);
    }

    #[test]
    fn post_is_echoed_as_created() {
        let api = DemoApi::start().expect("start");
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut response = agent
            .post(api.url("/v2/entities"))
            .header("content-type", "application/json")
            .send(r#"{"id":"urn:ngsi-ld:ParkingSpot:example-city:new","type":"ParkingSpot"}"#)
            .expect("post");
        assert_eq!(response.status().as_u16(), 201);
        assert_eq!(
            response
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok()),
            Some("/v2/entities/urn:ngsi-ld:ParkingSpot:example-city:new")
        );
        let body: Value =
            serde_json::from_str(&response.body_mut().read_to_string().expect("body"))
                .expect("json");
        assert_eq!(body["type"], "ParkingSpot");
        assert_eq!(api.last("/v2/entities").expect("recorded").method, "POST");
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("Waste%2CVehicle"), "Waste,Vehicle");
        assert_eq!(percent_decode("a+b%"), "a b%");
        assert_eq!(percent_decode("%4"), "%4");
    }
}
