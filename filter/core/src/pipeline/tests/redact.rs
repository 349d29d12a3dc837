//! The redactor inside `CompiledConfig::authorize`.

use serde_json::{json, Value};

use crate::host::memory::MemoryHost;
use crate::metrics::Metric;
use crate::normalize::{ConnectionInfo, RawRequest};
use crate::pipeline::CompiledConfig;

const EXAMPLE: &str = include_str!("../../../../../policies/config/redaction.json");

/// The example's pseudonym keys (`${env:…}` in redaction.json).
fn env(name: &str) -> Option<String> {
    match name {
        "CITYGATE_PSEUDONYM_KEY" => Some("test-key-2026-0123456789".into()),
        "CITYGATE_PSEUDONYM_KEY_2025" => Some("test-key-2025-0123456789".into()),
        _ => None,
    }
}

fn gateway() -> CompiledConfig {
    let mut document: Value = serde_json::from_str(EXAMPLE).unwrap();
    document["routes"] = json!([
        {"name": "fleet", "match": {"path_prefix": "/v2"}, "auth": {"anonymous": true},
         "redaction": {"profile": "open-data", "client_ip_prefix_v4": 24, "drop_request_headers": ["cookie"],
                       "remove_response_headers": ["server"]}},
        {"name": "strict", "match": {"path_prefix": "/strict"}, "auth": {"anonymous": true},
         "redaction": {"require_profile": true}}
    ]);
    CompiledConfig::from_json(document.to_string().as_bytes(), &env).unwrap()
}

fn get(path: &str) -> RawRequest {
    RawRequest {
        headers: vec![
            (":method".into(), "GET".into()),
            (":path".into(), path.into()),
            ("cookie".into(), "session=1".into()),
            ("range".into(), "bytes=0-10".into()),
        ],
        connection: ConnectionInfo {
            source: Some("203.0.113.77:5555".into()),
            ..Default::default()
        },
    }
}

#[test]
fn a_forwarded_request_carries_its_redaction_plan_and_request_edits() {
    let host = MemoryHost::default();
    let gw = gateway();
    let admitted = gw.admit(&get("/v2/entities"), &host).unwrap();
    let forwarded = gw.authorize(admitted, None, false, &host).unwrap();
    assert_eq!(forwarded.response.redaction.profiles, ["open-data"]);
    assert_eq!(forwarded.response.remove_headers, ["server"]);
    let edits = &forwarded.edits;
    assert!(edits
        .set_headers
        .contains(&("accept-encoding".into(), "identity".into())));
    assert!(edits
        .set_headers
        .contains(&("x-forwarded-for".into(), "203.0.113.0".into())));
    assert!(edits.remove_headers.contains(&"range".to_string()));
    assert!(edits.remove_headers.contains(&"cookie".to_string()));
}

#[test]
fn a_route_that_requires_a_profile_refuses_without_one() {
    let host = MemoryHost::default();
    let gw = gateway();
    let admitted = gw.admit(&get("/strict/x"), &host).unwrap();
    let reply = gw.authorize(admitted, None, false, &host).unwrap_err();
    assert_eq!(reply.status, 500);
    assert_eq!(host.counter(Metric::RedactionFailedClosed), 1);
    assert_eq!(host.counter(Metric::RequestsAllowed), 0);
}
