//! The demo API over HTTP: data, recorded requests, the `/test/*` bodies,
//! the JWKS controls and creation.

use std::io::{Read, Write};
use std::time::Duration;

use serde_json::{json, Value};

use super::{DemoApi, JwksMode, POWERED_BY_HEADER, SERVER_HEADER};

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
        serde_json::from_str(&response.body_mut().read_to_string().expect("body")).expect("json");
    assert_eq!(body["type"], "ParkingSpot");
    assert_eq!(api.last("/v2/entities").expect("recorded").method, "POST");
}

/// Replies leave at once: accepted connections inherit `TCP_NODELAY` from
/// the listener, so a reply's body never waits for a delayed ACK.
#[test]
fn connections_to_the_demo_api_send_without_delay() {
    let listener = super::server::no_delay_listener(0).unwrap();
    let address = listener.local_addr().unwrap();
    let _client = std::net::TcpStream::connect(address).unwrap();
    let (accepted, _) = listener.accept().unwrap();
    assert!(socket2::SockRef::from(&listener).tcp_nodelay().unwrap());
    assert!(socket2::SockRef::from(&accepted).tcp_nodelay().unwrap());
}
