//! Data minimization in a real Envoy with the city pack, for what only
//! Envoy shows: the bytes on the client's socket. An upstream written by
//! hand (raw HTTP/1.1, so it can gzip, lie about its length or stop short)
//! answers anonymous open-data reads; a raw client reads the reply as it
//! crossed the wire. A gzip reply is decoded and served uncompressed; every
//! failure path is a problem+json 502 (or, for a body cut off mid-stream,
//! an Envoy error) that never carries the upstream's bytes; the metrics are
//! in `/stats/prometheus`; Envoy's log has counts but no planted value.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};
use citygate_host::envoy::{EnvoyProcess, Gateway};
use citygate_host::wasm_build::{filter_wasm, workspace_root};
use serde_json::Value;

use crate::support::{demo_env, gzip};

const PATH: &str = "/v2/entities?type=ParkingSpot&options=keyValues";
const MIB: usize = 1024 * 1024;
/// Planted in `policies/scenarios/data/parking-spots.v2-keyvalues.json`.
const PLANTED: [&str; 5] = [
    "Erika Mustermann",
    "erika.mustermann@example.org",
    "+49 170 1234567",
    "M-XY 4711",
    "AZ-204711",
];

/// An upstream that answers every request with the raw bytes it is given,
/// then closes the connection. Stops on drop.
struct RawUpstream {
    port: u16,
    reply: Arc<Mutex<Vec<u8>>>,
    heads: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl RawUpstream {
    fn start() -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let reply = Arc::new(Mutex::new(Vec::new()));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, h, s) = (reply.clone(), heads.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => serve(stream, &r, &h),
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(Self {
            port,
            reply,
            heads,
            stop,
            thread: Some(thread),
        })
    }

    fn set(&self, bytes: Vec<u8>) {
        *self.reply.lock().unwrap_or_else(|p| p.into_inner()) = bytes;
    }

    fn last_head(&self) -> String {
        let heads = self.heads.lock().unwrap_or_else(|p| p.into_inner());
        heads.last().cloned().unwrap_or_default()
    }
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(mut stream: TcpStream, reply: &Mutex<Vec<u8>>, heads: &Mutex<Vec<String>>) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    heads
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(String::from_utf8_lossy(&head).to_ascii_lowercase());
    let bytes = reply.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let _ = stream.write_all(&bytes);
    let _ = stream.flush();
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

/// A response head plus body, as `connection: close` HTTP/1.1.
fn http(
    status: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    content_length: Option<usize>,
) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status}\r\nserver: city-api/1.0\r\nx-powered-by: demo\r\n");
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(length) = content_length {
        out.push_str(&format!("content-length: {length}\r\n"));
    }
    out.push_str("connection: close\r\n\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

fn chunked(status: &str, headers: &[(&str, &str)], body: &[u8], chunk: usize) -> Vec<u8> {
    let mut all: Vec<(&str, &str)> = headers.to_vec();
    all.push(("transfer-encoding", "chunked"));
    let mut bytes = http(status, &all, b"", None);
    for piece in body.chunks(chunk) {
        bytes.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        bytes.extend_from_slice(piece);
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(b"0\r\n\r\n");
    bytes
}

/// What the client's socket received: status, lower-cased head, de-chunked body.
struct Wire {
    status: u16,
    head: String,
    body: Vec<u8>,
    raw: Vec<u8>,
}

impl Wire {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn raw_request(envoy: &EnvoyProcess, method: &str, path: &str) -> Result<Wire> {
    let mut stream = TcpStream::connect(("127.0.0.1", envoy.port()))?;
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nhost: city.example\r\naccept-encoding: gzip, br\r\n\
         range: bytes=0-99\r\nconnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
        .context("no response head")?;
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("status")?;
    let mut body = raw[split..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    Ok(Wire {
        status,
        head,
        body,
        raw,
    })
}

fn dechunk(mut input: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line_end) = input.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&input[..line_end]).trim(), 16)
            .unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = line_end + 2;
        let end = (start + size).min(input.len());
        out.extend_from_slice(&input[start..end]);
        input = &input[(end + 2).min(input.len())..];
    }
    out
}

fn payload() -> Vec<u8> {
    std::fs::read(workspace_root().join("policies/scenarios/data/parking-spots.v2-keyvalues.json"))
        .expect("payload")
}

fn start() -> Result<(RawUpstream, EnvoyProcess)> {
    let upstream = RawUpstream::start()?;
    let config =
        std::fs::read_to_string(workspace_root().join("policies/config/city-gateway.json"))?;
    let mut gateway = Gateway::new(filter_wasm()?, config, upstream.port);
    for (name, value) in demo_env() {
        gateway = gateway.env(name, value);
    }
    let envoy = EnvoyProcess::start(&gateway)?;
    Ok((upstream, envoy))
}

fn assert_none_of_the_original(wire: &Wire, original: &[u8], what: &str) {
    let raw = String::from_utf8_lossy(&wire.raw);
    for pii in PLANTED {
        assert!(!raw.contains(pii), "{what}: the client got {pii:?}:\n{raw}");
    }
    if original.len() > 16 {
        let probe = &original[..16];
        assert!(
            !wire.raw.windows(16).any(|w| w == probe),
            "{what}: the upstream's own bytes reached the client"
        );
    }
}

#[test]
fn envoy_serves_minimized_bodies_and_never_the_original_bytes() -> Result<()> {
    let (upstream, envoy) = start()?;
    let json = payload();
    let ct = ("content-type", "application/json");

    // gzip upstream: decoded, minimized, re-served uncompressed.
    let zipped = gzip(&json);
    upstream.set(http(
        "200 OK",
        &[ct, ("content-encoding", "gzip"), ("etag", "\"v1\"")],
        &zipped,
        Some(zipped.len()),
    ));
    let wire = raw_request(&envoy, "GET", PATH)?;
    assert_eq!(wire.status, 200, "{}\n{}", wire.head, wire.text());
    assert!(!wire.head.contains("content-encoding"), "{}", wire.head);
    assert!(!wire.head.contains("etag"), "{}", wire.head);
    assert!(!wire.head.contains("x-powered-by"), "{}", wire.head);
    assert!(!wire.head.contains("city-api/1.0"), "{}", wire.head);
    let served: Value = serde_json::from_slice(&wire.body)?;
    assert_eq!(
        served[0]["location"]["coordinates"],
        serde_json::json!([-3.71, 40.42])
    );
    assert_eq!(served[0]["dateObserved"], "2026-11-20T00:00:00+01:00");
    assert_none_of_the_original(&wire, &zipped, "gzip");
    let asked = upstream.last_head();
    assert!(asked.contains("accept-encoding: identity"), "{asked}");
    assert!(!asked.contains("range:"), "{asked}");

    // The same body in 7-byte chunks.
    upstream.set(chunked("200 OK", &[ct], &json, 7));
    let wire = raw_request(&envoy, "GET", PATH)?;
    assert_eq!(wire.status, 200);
    assert_eq!(serde_json::from_slice::<Value>(&wire.body)?, served);

    let big = {
        let mut b = b"[".to_vec();
        while b.len() < MIB + MIB / 4 {
            b.extend_from_slice(br#"{"type":"ParkingSpot","driverName":"Erika Mustermann","email":"erika.mustermann@example.org"},"#);
        }
        b.extend_from_slice(b"{}]");
        b
    };
    let refusals: Vec<(&str, Vec<u8>, Vec<u8>, &str)> = vec![
        (
            "brotli",
            http(
                "200 OK",
                &[ct, ("content-encoding", "br")],
                &json,
                Some(json.len()),
            ),
            json.clone(),
            "response-not-minimizable",
        ),
        (
            "malformed JSON",
            http(
                "200 OK",
                &[ct],
                &json[..json.len() / 2],
                Some(json.len() / 2),
            ),
            json.clone(),
            "response-not-minimizable",
        ),
        (
            "text/plain",
            http(
                "200 OK",
                &[("content-type", "text/plain")],
                &json,
                Some(json.len()),
            ),
            json.clone(),
            "response-not-minimizable",
        ),
        (
            "over 1 MiB, declared",
            http("200 OK", &[ct], &big, Some(big.len())),
            big.clone(),
            "response-too-large",
        ),
        (
            "over 1 MiB, chunked",
            chunked("200 OK", &[ct], &big, 16 * 1024),
            big.clone(),
            "response-too-large",
        ),
    ];
    for (what, reply, original, problem) in &refusals {
        upstream.set(reply.clone());
        let wire = raw_request(&envoy, "GET", PATH)?;
        assert_eq!(wire.status, 502, "{what}: {}\n{}", wire.head, wire.text());
        assert!(
            wire.head.contains("content-type: application/problem+json"),
            "{what}: {}",
            wire.head
        );
        let doc: Value = serde_json::from_slice(&wire.body).with_context(|| what.to_string())?;
        assert_eq!(
            doc["type"],
            format!("urn:citygate:problem:{problem}"),
            "{what}"
        );
        assert_none_of_the_original(&wire, original, what);
    }

    // Cut short: the upstream promises more than it sends, then closes. The
    // held headers never went out, so Envoy answers the reset itself.
    let mut cut = http("200 OK", &[ct], &json, Some(json.len() * 2));
    cut.truncate(cut.len() - 10);
    upstream.set(cut);
    let wire = raw_request(&envoy, "GET", PATH)?;
    assert!(
        wire.status >= 500,
        "truncated: {}\n{}",
        wire.head,
        wire.text()
    );
    assert_none_of_the_original(&wire, &json, "truncated");

    // HEAD: headers of the GET body, passed untouched (but still no server details).
    upstream.set(http(
        "200 OK",
        &[ct, ("etag", "\"v1\"")],
        b"",
        Some(json.len()),
    ));
    let wire = raw_request(&envoy, "HEAD", PATH)?;
    assert_eq!(wire.status, 200, "{}", wire.head);
    assert!(wire.head.contains("etag: \"v1\""), "{}", wire.head);
    assert!(
        wire.head
            .contains(&format!("content-length: {}", json.len())),
        "{}",
        wire.head
    );
    assert!(!wire.head.contains("x-powered-by"), "{}", wire.head);
    assert!(wire.body.is_empty());

    let stats = envoy.metrics()?;
    let counter = |name: &str| stats.value(name);
    assert_eq!(counter("citygate_redaction_responses"), 2, "{stats}");
    // Five refusals of citygate's; the truncated body is Envoy's own
    // upstream-reset reply (the filter never sees that stream end).
    assert_eq!(counter("citygate_redaction_failed_closed"), 5, "{stats}");
    assert!(counter("citygate_redaction_removed") >= 2 * 8, "{stats}");
    assert_eq!(counter("citygate_redaction_generalized"), 2 * 4, "{stats}");

    let log = envoy.log();
    for pii in PLANTED {
        assert!(!log.contains(pii), "Envoy's log has {pii:?}");
    }
    let decisions: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("\"redaction\":{\"profiles\":[\"open-data\"]"))
        .collect();
    assert_eq!(decisions.len(), 2, "{log}");
    assert!(
        decisions
            .iter()
            .all(|l| l.contains("\"counts\":{\"generalized\":4,")),
        "{decisions:?}"
    );
    Ok(())
}
