//! The stages together: routes, denials, edits and the decision line. A
//! stage's own tests never build the pipeline; where a stage is tested
//! through it, the test lives here, in a file named after the stage.

mod auth;
mod cors;
mod introspection;
mod ip_rules;
mod policy;
mod ratelimit;
mod redact;
mod request_limits;

use super::*;
use crate::deny::Stage;
use crate::host::memory::MemoryHost;
use crate::identity::Identity;
use crate::normalize::{ConnectionInfo, RawRequest};

fn gateway(json: &str) -> CompiledConfig {
    CompiledConfig::from_json(json.as_bytes(), &|_| None).unwrap()
}

fn get(path: &str, extra: &[(&str, &str)]) -> RawRequest {
    let mut headers = vec![
        (":method".to_string(), "GET".to_string()),
        (":path".to_string(), path.to_string()),
    ];
    headers.extend(extra.iter().map(|(n, v)| (n.to_string(), v.to_string())));
    RawRequest {
        headers,
        connection: ConnectionInfo::default(),
    }
}

const OPEN: &str = r#"{"routes":[{"name":"open","match":{"path_prefix":"/v2"},"auth":{"anonymous":true}},
    {"name":"closed","match":{"path_prefix":"/admin"}}]}"#;

#[test]
fn undeclared_paths_are_denied_with_404() {
    let host = MemoryHost::default();
    let reply = gateway(OPEN).admit(&get("/other", &[]), &host).unwrap_err();
    assert_eq!(reply.status, 404);
    assert_eq!(host.counter(Metric::RouteUnmatched), 1);
}

#[test]
fn denials_count_per_route_and_stage_and_every_route_counter_exists_from_the_start() {
    let host = MemoryHost::default();
    let gw = gateway(OPEN);
    gw.announce(&host);
    let named = |route: &str, stage| {
        host.named_counters
            .borrow()
            .get(&metrics::route_denied_name(route, stage))
            .copied()
    };
    for route in ["open", "closed"] {
        for stage in metrics::ROUTE_DENIED_STAGES {
            assert_eq!(named(route, *stage), Some(0), "{route} {stage:?}");
        }
    }
    assert_eq!(
        gw.admit(&get("/admin", &[]), &host).unwrap_err().status,
        401
    );
    assert_eq!(
        gw.admit(&get("/admin/x", &[]), &host).unwrap_err().status,
        401
    );
    // No route: counted in citygate_route_unmatched, not per route.
    assert_eq!(
        gw.admit(&get("/other", &[]), &host).unwrap_err().status,
        404
    );
    assert_eq!(named("closed", Stage::Auth), Some(2));
    assert_eq!(named("open", Stage::Auth), Some(0));
    assert_eq!(named("closed", Stage::Policy), Some(0));
    assert_eq!(host.named_counters.borrow().len(), 14);
}

#[test]
fn bad_paths_are_denied_with_400() {
    let host = MemoryHost::default();
    let reply = gateway(OPEN)
        .admit(&get("/v2/%2e%2e%2Fadmin", &[]), &host)
        .unwrap_err();
    assert_eq!(reply.status, 400);
}

#[test]
fn dot_segments_cannot_reach_a_closed_route_through_an_open_one() {
    let host = MemoryHost::default();
    let reply = gateway(OPEN)
        .admit(&get("/v2/../admin", &[]), &host)
        .unwrap_err();
    assert_eq!(reply.status, 401);
}

#[test]
fn open_route_is_forwarded_with_spoofed_headers_removed_and_path_normalized() {
    let host = MemoryHost::default();
    let gw = gateway(OPEN);
    let admitted = gw
        .admit(
            &get(
                "/v2//entities",
                &[
                    ("X-Citygate-Subject", "admin"),
                    ("x-http-method-override", "DELETE"),
                ],
            ),
            &host,
        )
        .unwrap();
    assert_eq!(admitted.identity, Identity::anonymous());
    let forwarded = gw.authorize(admitted, None, false, &host).unwrap();
    assert!(forwarded
        .edits
        .remove_headers
        .contains(&"x-citygate-subject".to_string()));
    assert!(forwarded
        .edits
        .remove_headers
        .contains(&"x-http-method-override".to_string()));
    assert_eq!(forwarded.edits.path.as_deref(), Some("/v2/entities"));
    // Only headers the client sent are removed (each removal is a hostcall).
    assert!(
        !forwarded
            .edits
            .remove_headers
            .contains(&"x-citygate-roles".to_string()),
        "{:?}",
        forwarded.edits.remove_headers
    );
    assert_eq!(host.counter(Metric::RequestsAllowed), 1);
    gw.finish(forwarded.record, 200, &host);
    let line = host.log_lines().pop().unwrap();
    assert!(line.contains("\"outcome\":\"allowed\""), "{line}");
    assert!(line.contains("\"route\":\"open\""), "{line}");
}

#[test]
fn every_denial_is_counted_and_logged_once_with_its_stage() {
    let host = MemoryHost::at_unix_seconds(1_700_000_000);
    let reply = gateway(OPEN)
        .admit(&get("/admin", &[("x-request-id", "req-7")]), &host)
        .unwrap_err();
    assert_eq!(reply.status, 401);
    let body: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(body["instance"], "req-7");
    assert_eq!(host.counter(Metric::RequestsDenied), 1);
    assert_eq!(host.counter(Metric::AuthDenied), 1);
    let logs = host.logs.borrow();
    assert_eq!(logs.len(), 1);
    assert_eq!(logs[0].0, crate::host::LogLevel::Info);
    let line: serde_json::Value = serde_json::from_str(&logs[0].1).unwrap();
    assert_eq!(line["outcome"], "denied");
    assert_eq!(line["status"], 401);
    assert_eq!(line["stage"], "auth");
    assert_eq!(line["request_id"], "req-7");
}
