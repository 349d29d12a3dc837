//! CORS in the pipeline: preflights answered before authentication on the
//! route of the method they ask about, and the grant on every reply of a
//! CORS route, forwarded or answered.

use super::*;

const CITY: &str = r#"{
  "routes": [
    {"name": "maps", "match": {"path_prefix": "/v2", "methods": ["GET"]},
     "auth": {"methods": ["api_key"]},
     "cors": {"allow_origins": ["https://maps.city.example"], "allow_headers": ["x-api-key"],
              "allow_credentials": true, "max_age_seconds": 300}},
    {"name": "open", "match": {"path_prefix": "/open"}, "auth": {"anonymous": true}}
  ],
  "auth": {"api_keys": {"header": "x-api-key", "keys": [
    {"id": "maps-app", "client_id": "maps", "sha256": "ab6ff0cc60b325f45acd24571feff1fafdc2f537fbaa37a54d0a6ee22762b3b4"}]}}
}"#;

fn options(path: &str, extra: &[(&str, &str)]) -> RawRequest {
    let mut raw = get(path, extra);
    raw.headers[0].1 = "OPTIONS".into();
    raw
}

/// A preflight for `/v2/entities` that admission answers.
fn refused_preflight(
    gw: &CompiledConfig,
    host: &MemoryHost,
    origin: &str,
    method: &str,
) -> LocalReply {
    let request = options(
        "/v2/entities",
        &[
            ("origin", origin),
            ("access-control-request-method", method),
        ],
    );
    gw.admit(&request, host).unwrap_err()
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    crate::http::first_value(headers, name)
}

#[test]
fn a_preflight_for_a_get_only_route_is_answered_without_credentials() {
    let gw = gateway(CITY);
    let host = MemoryHost::default();
    let reply = gw
        .admit(
            &options(
                "/v2/entities",
                &[
                    ("origin", "https://maps.city.example"),
                    ("access-control-request-method", "GET"),
                    ("access-control-request-headers", "x-api-key"),
                ],
            ),
            &host,
        )
        .unwrap_err();
    assert_eq!(reply.status, 204);
    assert!(reply.body.is_empty());
    assert_eq!(
        header(&reply.headers, "access-control-allow-origin"),
        Some("https://maps.city.example")
    );
    assert_eq!(
        header(&reply.headers, "access-control-allow-credentials"),
        Some("true")
    );
    assert_eq!(
        header(&reply.headers, "access-control-max-age"),
        Some("300")
    );
    assert_eq!(host.counter(Metric::CorsPreflightAnswered), 1);
    assert_eq!(host.counter(Metric::AuthDenied), 0);
    let line: serde_json::Value = serde_json::from_str(host.log_lines().last().unwrap()).unwrap();
    assert_eq!(line["stage"], "cors");
    assert_eq!(line["status"], 204);
    assert_eq!(line["route"], "maps");
}

#[test]
fn a_preflight_from_another_origin_is_refused_with_403_and_no_grant() {
    let gw = gateway(CITY);
    let host = MemoryHost::default();
    for origin in ["https://evil.example", "null"] {
        let reply = refused_preflight(&gw, &host, origin, "GET");
        assert_eq!(reply.status, 403, "{origin}");
        assert_eq!(header(&reply.headers, "access-control-allow-origin"), None);
        let line: serde_json::Value =
            serde_json::from_str(host.log_lines().last().unwrap()).unwrap();
        assert_eq!(line["stage"], "cors");
        assert_eq!(line["reason"], format!("origin {origin} is not allowed"));
    }
    assert_eq!(host.counter(Metric::CorsPreflightRefused), 2);
    assert_eq!(
        host.named_counters
            .borrow()
            .get(&metrics::route_denied_name("maps", Stage::Cors))
            .copied(),
        Some(2)
    );
}

#[test]
fn options_that_is_no_preflight_or_on_a_route_without_cors_is_an_ordinary_request() {
    let gw = gateway(CITY);
    let host = MemoryHost::default();
    // No requested method: the GET-only route does not serve OPTIONS.
    let reply = gw
        .admit(
            &options("/v2/entities", &[("origin", "https://maps.city.example")]),
            &host,
        )
        .unwrap_err();
    assert_eq!(reply.status, 404);
    // A preflight on a route without a cors block goes on as OPTIONS.
    let admitted = gw
        .admit(
            &options(
                "/open/parking",
                &[
                    ("origin", "https://maps.city.example"),
                    ("access-control-request-method", "GET"),
                ],
            ),
            &host,
        )
        .unwrap();
    assert!(admitted.cors_headers.is_empty());
}

#[test]
fn replies_of_a_cors_route_carry_the_grant_and_drop_the_upstreams() {
    let gw = gateway(CITY);
    let host = MemoryHost::default();
    let origin = ("origin", "https://maps.city.example");
    // A 401 the browser application can read.
    let reply = gw
        .admit(&get("/v2/entities", &[origin]), &host)
        .unwrap_err();
    assert_eq!(reply.status, 401);
    assert_eq!(
        header(&reply.headers, "access-control-allow-origin"),
        Some("https://maps.city.example")
    );
    // A forwarded request: the grant is added, the upstream's removed.
    let admitted = gw
        .admit(
            &get("/v2/entities", &[origin, ("x-api-key", "demo-maps-key")]),
            &host,
        )
        .unwrap();
    let forwarded = gw.authorize(admitted, None, false, &host).unwrap();
    let plan = &forwarded.response;
    assert_eq!(
        header(&plan.add_headers, "access-control-allow-origin"),
        Some("https://maps.city.example")
    );
    assert_eq!(header(&plan.add_headers, "vary"), Some("origin"));
    assert!(plan
        .remove_headers
        .iter()
        .any(|n| n == "access-control-allow-origin"));
    // Another origin gets no grant, only the vary.
    let reply = gw
        .admit(
            &get("/v2/entities", &[("origin", "https://evil.example")]),
            &host,
        )
        .unwrap_err();
    assert_eq!(header(&reply.headers, "access-control-allow-origin"), None);
    assert_eq!(header(&reply.headers, "vary"), Some("origin"));
}

#[test]
fn a_preflight_for_a_method_no_route_serves_is_refused_by_the_paths_cors_route() {
    let gw = gateway(CITY);
    let host = MemoryHost::default();
    let reply = refused_preflight(&gw, &host, "https://maps.city.example", "DELETE");
    assert_eq!(reply.status, 403);
    let line: serde_json::Value = serde_json::from_str(host.log_lines().last().unwrap()).unwrap();
    assert_eq!(line["reason"], "method DELETE is not allowed");
}
