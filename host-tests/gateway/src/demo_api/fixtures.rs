//! The `/test/*` bodies a response minimizer must handle or refuse: sent
//! chunked, gzip-encoded, malformed, huge (`?bytes=N`) and as plain text,
//! all carrying fictional personal data.

use std::io::Write as _;

use serde_json::{json, Value};

use super::datasets::{filtered, key_values, NGSI_V2};
use super::reply::{json_reply, Reply};
use super::request::{param, ReceivedRequest};

/// Bound on `/test/big?bytes=N`, so a test cannot make the demo API build
/// an arbitrarily large body.
const MAX_BIG_BYTES: usize = 64 * 1024 * 1024;

/// A compact NGSI-v2 list with personal data, for the `/test/*` bodies.
fn sample_body() -> String {
    let vehicles = filtered(NGSI_V2, &ReceivedRequest::synthetic("type=Vehicle"), "type");
    let simplified: Vec<Value> = vehicles
        .as_array()
        .map(|v| v.iter().map(key_values).collect())
        .unwrap_or_default();
    Value::Array(simplified).to_string()
}

/// `/test/chunked`: the sample in 16-byte chunks.
pub(super) fn chunked() -> Reply {
    Reply::Chunked(sample_body().into_bytes())
}

/// `/test/gzip`: the sample, gzip-encoded.
pub(super) fn gzip() -> Reply {
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

/// `/test/malformed`: JSON cut off in the middle of an object.
pub(super) fn malformed() -> Reply {
    Reply::Body {
        status: 200,
        content_type: "application/json",
        headers: Vec::new(),
        body: br#"{"driverName": "Jane Example", "vehiclePlateIdentifier": "EX-0007-TST", "#
            .to_vec(),
    }
}

/// `/test/text`: personal data in a body that is not JSON.
pub(super) fn text() -> Reply {
    Reply::Body {
        status: 200,
        content_type: "text/plain; charset=utf-8",
        headers: Vec::new(),
        body: b"Call back Jane Example at jane.example@example.org about request EX-2025-000101.\n"
            .to_vec(),
    }
}

/// A JSON array of fictional residents of at least `?bytes=N` bytes.
pub(super) fn big(req: &ReceivedRequest) -> Reply {
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
    json_reply(200, &Value::Array(items))
}
