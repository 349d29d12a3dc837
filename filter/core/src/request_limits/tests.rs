use super::*;

fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

fn limits(body: Option<u64>, header: Option<u64>) -> Limits {
    Limits {
        max_body_bytes: body,
        max_header_bytes: header,
    }
}

#[test]
fn header_bytes_count_every_name_and_value_pseudo_headers_included() {
    // ":method" + "GET" + ":path" + "/abc" = 7 + 3 + 5 + 4 = 19
    let request = headers(&[(":method", "GET"), (":path", "/abc")]);
    assert!(limits(None, Some(19)).check_headers(&request).is_ok());
    let refusal = limits(None, Some(18)).check_headers(&request).unwrap_err();
    assert_eq!(refusal.denial().status, 431);
    assert_eq!(refusal.denial().stage, Stage::RequestLimits);
    assert_eq!(refusal.denial().metric, Metric::RequestLimitsHeadersDenied);
    assert_eq!(
        refusal.reason,
        "request headers of 19 bytes exceed max_header_bytes 18"
    );
}

#[test]
fn a_declared_length_past_the_limit_is_refused_at_the_headers() {
    let request = headers(&[(":method", "POST"), ("Content-Length", " 1025 ")]);
    let refusal = limits(Some(1024), None)
        .check_headers(&request)
        .unwrap_err();
    assert_eq!(refusal.denial().status, 413);
    assert_eq!(refusal.denial().metric, Metric::RequestLimitsBodyDenied);
    assert_eq!(
        refusal.reason,
        "declared content-length 1025 exceeds max_body_bytes 1024"
    );
    assert!(limits(Some(1025), None).check_headers(&request).is_ok());
    // No body limit: any declared length passes.
    assert!(limits(None, None).check_headers(&request).is_ok());
}

#[test]
fn the_body_is_held_unless_a_declared_length_within_the_limit_bounds_it() {
    let chunked = headers(&[("transfer-encoding", "chunked")]);
    let declared = headers(&[("content-length", "10")]);
    let garbled = headers(&[("content-length", "ten")]);
    assert!(limits(Some(100), None).must_hold_body(&chunked));
    assert!(limits(Some(100), None).must_hold_body(&garbled));
    assert!(!limits(Some(100), None).must_hold_body(&declared));
    assert!(limits(Some(5), None).must_hold_body(&declared));
    assert!(!limits(None, None).must_hold_body(&chunked));
}

#[test]
fn body_bytes_past_the_limit_are_refused_and_the_limit_itself_passes() {
    assert!(check_body(Some(10), 10).is_ok());
    let refusal = check_body(Some(10), 11).unwrap_err();
    assert_eq!(refusal.denial().status, 413);
    assert_eq!(
        refusal.denial().detail,
        "the request body exceeds the 10 bytes this API accepts"
    );
    assert!(check_body(Some(0), 1).is_err());
    assert!(check_body(None, u64::MAX).is_ok());
}

fn route(json: &str) -> RouteConfig {
    serde_json::from_str(json).unwrap()
}

#[test]
fn a_route_field_replaces_the_gateways_and_an_unset_one_inherits_it() {
    let gateway = RequestLimitsConfig {
        max_body_bytes: Some(1000),
        max_header_bytes: Some(8000),
    };
    let routes = [
        route(r#"{"name":"a","match":{"path_prefix":"/a"}}"#),
        route(r#"{"name":"b","match":{"path_prefix":"/b"},"request_limits":{"max_body_bytes":0}}"#),
    ];
    let compiled = RequestLimits::compile(&gateway, &routes).unwrap();
    assert_eq!(compiled.for_route(0), limits(Some(1000), Some(8000)));
    assert_eq!(compiled.for_route(1), limits(Some(0), Some(8000)));
    assert_eq!(compiled.for_route(7), Limits::default());
}

#[test]
fn a_header_limit_of_zero_names_its_json_path() {
    let routes = [route(
        r#"{"name":"a","match":{"path_prefix":"/a"},"request_limits":{"max_header_bytes":0}}"#,
    )];
    let err = RequestLimits::compile(&RequestLimitsConfig::default(), &routes).unwrap_err();
    assert_eq!(err.path, "$.routes[0].request_limits.max_header_bytes");
}
