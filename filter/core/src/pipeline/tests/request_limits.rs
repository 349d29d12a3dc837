//! Request size limits in the pipeline: where they sit (after the route's
//! IP rules, before authentication), the body plan the shell follows, and
//! the 413 or 431 with its decision line.

use super::*;

const CITY: &str = r#"{
  "gateway": {"request_limits": {"max_body_bytes": 1000, "max_header_bytes": 400}},
  "routes": [
    {"name": "reports", "match": {"path_prefix": "/reports"}, "auth": {"anonymous": true},
     "request_limits": {"max_body_bytes": 100}},
    {"name": "staff", "match": {"path_prefix": "/staff"}},
    {"name": "forms", "match": {"path_prefix": "/forms"}, "auth": {"anonymous": true},
     "request_body": {"buffer": true, "max_bytes": 50}}
  ]
}"#;

fn post(path: &str, extra: &[(&str, &str)]) -> RawRequest {
    let mut raw = get(path, extra);
    raw.headers[0].1 = "POST".into();
    raw
}

fn decision_line(host: &MemoryHost) -> serde_json::Value {
    serde_json::from_str(host.log_lines().last().unwrap()).unwrap()
}

#[test]
fn oversize_headers_are_431_before_credentials_are_asked_for() {
    let gw = gateway(CITY);
    let host = MemoryHost::default();
    let filler = "x".repeat(400);
    let reply = gw
        .admit(&get("/staff/rota", &[("x-filler", &filler)]), &host)
        .unwrap_err();
    assert_eq!(reply.status, 431);
    let body: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(
        body["type"],
        "urn:citygate:problem:request-headers-too-large"
    );
    assert_eq!(host.counter(Metric::RequestLimitsHeadersDenied), 1);
    assert_eq!(host.counter(Metric::AuthDenied), 0);
    let line = decision_line(&host);
    assert_eq!(line["stage"], "request_limits");
    assert_eq!(
        line["reason"],
        "request headers of 434 bytes exceed max_header_bytes 400"
    );
    assert_eq!(
        host.named_counters
            .borrow()
            .get(&metrics::route_denied_name("staff", Stage::RequestLimits))
            .copied(),
        Some(1)
    );
    // Within the limit the route asks for credentials.
    let reply = gw.admit(&get("/staff/rota", &[]), &host).unwrap_err();
    assert_eq!(reply.status, 401);
}

#[test]
fn a_declared_length_over_the_routes_limit_is_413_at_the_headers() {
    let gw = gateway(CITY);
    let host = MemoryHost::default();
    let reply = gw
        .admit(&post("/reports", &[("content-length", "101")]), &host)
        .unwrap_err();
    assert_eq!(reply.status, 413);
    assert_eq!(host.counter(Metric::RequestLimitsBodyDenied), 1);
    assert_eq!(
        decision_line(&host)["reason"],
        "declared content-length 101 exceeds max_body_bytes 100"
    );
    // The route's own limit replaced the gateway's 1000, the header limit
    // is the gateway's.
    let admitted = gw
        .admit(&post("/reports", &[("content-length", "100")]), &host)
        .unwrap();
    assert_eq!(
        admitted.body,
        BodyPlan {
            policy_bytes: None,
            max_bytes: Some(100),
            hold: false
        }
    );
}

#[test]
fn a_body_without_a_declared_length_is_held_and_judged_as_it_grows() {
    let gw = gateway(CITY);
    let host = MemoryHost::default();
    let admitted = gw
        .admit(
            &post("/reports", &[("transfer-encoding", "chunked")]),
            &host,
        )
        .unwrap();
    assert!(admitted.body.hold);
    assert!(gw.check_request_body(&admitted, 100, &host).is_ok());
    let reply = gw.check_request_body(&admitted, 101, &host).unwrap_err();
    assert_eq!(reply.status, 413);
    let body: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(body["type"], "urn:citygate:problem:request-body-too-large");
    let line = decision_line(&host);
    assert_eq!(line["stage"], "request_limits");
    assert_eq!(line["route"], "reports");
    assert_eq!(
        line["reason"],
        "request body of at least 101 bytes exceeds max_body_bytes 100"
    );
}

#[test]
fn a_policy_body_route_holds_and_keeps_the_gateway_limit() {
    let gw = gateway(CITY);
    let host = MemoryHost::default();
    let admitted = gw
        .admit(&post("/forms/a", &[("content-length", "20")]), &host)
        .unwrap();
    assert_eq!(
        admitted.body,
        BodyPlan {
            policy_bytes: Some(50),
            max_bytes: Some(1000),
            hold: true
        }
    );
    // The policy reads 50 bytes; the body may still be 1000.
    assert!(gw.check_request_body(&admitted, 1000, &host).is_ok());
    assert!(gw.check_request_body(&admitted, 1001, &host).is_err());
}

#[test]
fn bytes_that_stream_past_a_declared_length_are_still_counted() {
    let gw = gateway(CITY);
    let host = MemoryHost::default();
    let admitted = gw
        .admit(&post("/reports", &[("content-length", "10")]), &host)
        .unwrap();
    let forwarded = gw.authorize(admitted, None, false, &host).unwrap();
    assert_eq!(forwarded.max_body_bytes, Some(100));
    assert!(gw.check_streamed_body(&forwarded, 100, &host).is_ok());
    let reply = gw.check_streamed_body(&forwarded, 101, &host).unwrap_err();
    assert_eq!(reply.status, 413);
}

#[test]
fn routes_without_limits_hold_nothing() {
    let gw = gateway(OPEN);
    let host = MemoryHost::default();
    let admitted = gw
        .admit(&post("/v2/x", &[("transfer-encoding", "chunked")]), &host)
        .unwrap();
    assert_eq!(admitted.body, BodyPlan::default());
    assert!(gw.check_request_body(&admitted, u64::MAX, &host).is_ok());
}
