//! Rate limits through the pipeline: a denial is counted once, carries its
//! headers and logs no client address.

use serde_json::json;

use crate::host::memory::MemoryHost;
use crate::http::first_value as header;
use crate::metrics::Metric;
use crate::normalize::{ConnectionInfo, RawRequest};
use crate::pipeline::CompiledConfig;

const T0: u64 = 1_700_000_000;

#[test]
fn a_denial_through_the_pipeline_counts_once_and_carries_the_headers() {
    let rule = json!({
        "name": "per-ip",
        "key": ["client_ip"],
        "bucket": {"capacity": 1, "refill": {"tokens": 1, "period_seconds": 60}},
        "response_headers": true
    });
    let document = json!({
        "routes": [{"name": "parking", "match": {"path_prefix": "/parking"}, "auth": {"anonymous": true}}],
        "rate_limits": {"rules": [rule]}
    });
    let gateway = CompiledConfig::from_json(document.to_string().as_bytes(), &|_| None).unwrap();
    let host = MemoryHost::at_unix_seconds(T0);
    let raw = RawRequest {
        headers: vec![
            (":method".into(), "GET".into()),
            (":path".into(), "/parking/spots".into()),
        ],
        connection: ConnectionInfo {
            source: Some("192.0.2.1:5555".into()),
            ..Default::default()
        },
    };
    let admitted = gateway.admit(&raw, &host).unwrap();
    assert_eq!(
        header(&admitted.response_headers, "ratelimit"),
        Some("\"per-ip\";r=0;t=60")
    );
    let reply = gateway.admit(&raw, &host).unwrap_err();
    assert_eq!(reply.status, 429);
    assert_eq!(header(&reply.headers, "retry-after"), Some("60"));
    assert!(header(&reply.headers, "ratelimit-policy").is_some());
    assert_eq!(host.counter(Metric::RatelimitLimited), 1);
    assert_eq!(host.counter(Metric::RequestsDenied), 1);
    assert!(host.log_lines().iter().all(|l| !l.contains("192.0.2.1")));
}
