use super::*;

fn route(json: &str) -> RouteConfig {
    serde_json::from_str(json).unwrap()
}

fn cors(block: &str) -> Result<Cors, ConfigError> {
    Cors::compile(&[route(&format!(
        r#"{{"name":"maps","match":{{"path_prefix":"/v2","methods":["GET","POST"]}},"cors":{block}}}"#
    ))])
}

const MAPS: &str = r#"{"allow_origins":["https://maps.city.example","http://localhost:8080"],
    "allow_headers":["Authorization","content-type"],"expose_headers":["ratelimit"],
    "max_age_seconds":600,"allow_credentials":true}"#;

fn preflight<'a>(origin: &'a str, method: &'a str, headers: &'a str) -> Preflight<'a> {
    Preflight {
        origin,
        method,
        headers,
    }
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

#[test]
fn a_preflight_is_an_options_request_with_origin_and_requested_method() {
    let headers = pairs(&[
        ("Origin", "https://maps.city.example"),
        ("access-control-request-method", " POST "),
    ]);
    assert_eq!(
        Preflight::of("OPTIONS", &headers),
        Some(preflight("https://maps.city.example", "POST", ""))
    );
    assert_eq!(Preflight::of("GET", &headers), None);
    let no_method = pairs(&[("origin", "https://maps.city.example")]);
    assert_eq!(Preflight::of("OPTIONS", &no_method), None);
}

#[test]
fn an_allowed_preflight_gets_the_routes_grant() {
    let cors = cors(MAPS).unwrap();
    let headers = cors
        .answer_preflight(
            0,
            &preflight(
                "https://MAPS.city.example",
                "POST",
                "authorization, Content-Type, accept",
            ),
        )
        .unwrap();
    assert_eq!(
        headers,
        pairs(&[
            ("access-control-allow-origin", "https://MAPS.city.example"),
            ("vary", "origin"),
            ("access-control-allow-credentials", "true"),
            ("access-control-allow-methods", "GET, POST"),
            (
                "access-control-allow-headers",
                "authorization, content-type"
            ),
            ("access-control-max-age", "600"),
        ])
    );
}

#[test]
fn a_preflight_is_refused_for_an_origin_a_method_or_a_header_not_allowed() {
    let cors = cors(MAPS).unwrap();
    let reason = |p: Preflight<'_>| cors.answer_preflight(0, &p).unwrap_err().reason;
    assert_eq!(
        reason(preflight("https://evil.example", "GET", "")),
        "origin https://evil.example is not allowed"
    );
    assert_eq!(
        reason(preflight("null", "GET", "")),
        "origin null is not allowed"
    );
    // A suffix or prefix of an allowed origin is another origin.
    assert!(cors
        .answer_preflight(
            0,
            &preflight("https://maps.city.example.evil.example", "GET", "")
        )
        .is_err());
    assert!(cors
        .answer_preflight(0, &preflight("https://maps.city.example:8443", "GET", ""))
        .is_err());
    assert_eq!(
        reason(preflight("https://maps.city.example", "DELETE", "")),
        "method DELETE is not allowed"
    );
    assert_eq!(
        reason(preflight("https://maps.city.example", "GET", "x-api-key")),
        "request header x-api-key is not allowed"
    );
    let denial = cors
        .answer_preflight(0, &preflight("https://evil.example", "GET", ""))
        .unwrap_err()
        .denial();
    assert_eq!((denial.status, denial.stage), (403, Stage::Cors));
    assert!(!denial.detail.contains("evil"));
}

#[test]
fn actual_responses_carry_the_grant_for_allowed_origins_only() {
    let cors = cors(MAPS).unwrap();
    assert_eq!(
        cors.response_headers(0, Some("https://maps.city.example")),
        pairs(&[
            ("access-control-allow-origin", "https://maps.city.example"),
            ("vary", "origin"),
            ("access-control-allow-credentials", "true"),
            ("access-control-expose-headers", "ratelimit"),
        ])
    );
    assert_eq!(
        cors.response_headers(0, Some("https://evil.example")),
        pairs(&[("vary", "origin")])
    );
    assert_eq!(cors.response_headers(0, None), pairs(&[("vary", "origin")]));
    // A route without a block, or an unknown one: nothing.
    assert!(cors
        .response_headers(1, Some("https://maps.city.example"))
        .is_empty());
    assert!(!cors.governs(1));
}

#[test]
fn a_wildcard_answers_star_and_needs_no_vary() {
    let cors = cors(r#"{"allow_origins":["*"]}"#).unwrap();
    assert_eq!(
        cors.response_headers(0, Some("https://anyone.example")),
        pairs(&[("access-control-allow-origin", "*")])
    );
    assert!(cors.response_headers(0, None).is_empty());
    // Methods default to the route's.
    let headers = cors
        .answer_preflight(0, &preflight("null", "POST", ""))
        .unwrap();
    assert!(headers.contains(&("access-control-allow-methods".into(), "GET, POST".into())));
}

#[test]
fn configuration_errors_name_their_json_path() {
    let err = |block: &str| cors(block).err().unwrap();
    let e = err(r#"{"allow_origins":["*"],"allow_credentials":true}"#);
    assert_eq!(e.path, "$.routes[0].cors.allow_credentials");
    assert!(e.message.contains("wildcard"), "{}", e.message);
    let e = err(r#"{"allow_origins":["https://a.example","null"]}"#);
    assert_eq!(e.path, "$.routes[0].cors.allow_origins[1]");
    for bad in [
        "https://a.example/",
        "https://a.example/app",
        "ftp://a.example",
        "a.example",
        "https://",
        "https://a.example:",
        "https://a.example:99999x",
        "https://user@a.example",
        "https://[zz]",
    ] {
        let e = err(&format!(r#"{{"allow_origins":["{bad}"]}}"#));
        assert_eq!(e.path, "$.routes[0].cors.allow_origins[0]", "{bad}");
    }
    for good in [
        "https://a.example:8443",
        "http://[::1]:8080",
        "http://127.0.0.1",
    ] {
        assert!(
            cors(&format!(r#"{{"allow_origins":["{good}"]}}"#)).is_ok(),
            "{good}"
        );
    }
    assert_eq!(
        err(r#"{"allow_origins":[]}"#).path,
        "$.routes[0].cors.allow_origins"
    );
    assert_eq!(
        err(r#"{"allow_origins":["*"],"allow_methods":["get"]}"#).path,
        "$.routes[0].cors.allow_methods[0]"
    );
    assert_eq!(
        err(r#"{"allow_origins":["*"],"allow_headers":["bad header"]}"#).path,
        "$.routes[0].cors.allow_headers[0]"
    );
}
