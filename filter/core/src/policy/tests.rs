//! Native tests of the policy stage: input, decisions, configure-time
//! errors, fail-closed evaluation and the extension builtins.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use regorus::Value;
use sha2::Sha256;

use super::*;
use crate::config::RouteConfig;
use crate::host::memory::MemoryHost;
use crate::identity::{Identity, IdentityKind};
use crate::normalize::{normalize, ConnectionInfo, RawRequest};

fn route() -> RouteConfig {
    serde_json::from_str(r#"{"name":"api","match":{"path_prefix":"/"}}"#).unwrap()
}

fn view(method: &str, path: &str, headers: &[(&str, &str)]) -> RequestView {
    let mut all = vec![
        (":method".to_string(), method.to_string()),
        (":path".to_string(), path.to_string()),
        (":authority".to_string(), "api.city.example".to_string()),
    ];
    all.extend(headers.iter().map(|(n, v)| (n.to_string(), v.to_string())));
    normalize(
        &RawRequest {
            headers: all,
            connection: ConnectionInfo {
                source: Some("192.0.2.7:4444".into()),
                destination: Some("10.0.0.1:8080".into()),
                ..Default::default()
            },
        },
        &Default::default(),
    )
    .unwrap()
}

fn jwt_identity() -> Identity {
    let mut claims = serde_json::Map::new();
    claims.insert("amr".into(), serde_json::json!(["pwd", "mfa"]));
    Identity {
        kind: IdentityKind::Jwt,
        subject: Some("alice".into()),
        client_id: None,
        roles: vec!["citizen".into()],
        scopes: vec![],
        claims: std::rc::Rc::new(claims.into()),
    }
}

fn input_of(v: &RequestView, body: Option<&[u8]>, truncated: bool) -> Value {
    let route = route();
    let identity = jwt_identity();
    input::build_input(&RequestContext {
        view: v,
        identity: &identity,
        route: &route,
        body,
        body_truncated: truncated,
    })
    .unwrap()
}

fn at<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    path.iter().fold(v, |v, k| &v[&Value::from(*k)])
}

fn input_with(v: &RequestView, identity: &Identity) -> Value {
    input::build_input(&RequestContext {
        view: v,
        identity,
        route: &route(),
        body: None,
        body_truncated: false,
    })
    .unwrap()
}

/// A cached token's identity shares its claims, whose policy view is built
/// once: every request must still see exactly its own claims, and the
/// addresses and constant parts kept between requests must equal what a
/// fresh build gives.
#[test]
fn kept_parts_of_the_input_equal_a_fresh_build() {
    let v = view("GET", "/v2/entities", &[]);
    let cached = jwt_identity();
    let first = input_with(&v, &cached);
    let fresh = input_with(&v, &jwt_identity());
    assert_eq!(first, fresh);
    // A second request with the same (shared) claims.
    let shared = cached.clone();
    assert!(std::rc::Rc::ptr_eq(&shared.claims, &cached.claims));
    assert_eq!(input_with(&v, &shared), fresh);
    // A changed copy gets its own claims and its own view of them; the
    // cached identity keeps its own.
    let mut changed = cached.clone();
    changed
        .claims_mut()
        .insert("amr".into(), serde_json::json!(["pwd"]));
    let changed_input = input_with(&v, &changed);
    assert_eq!(
        at(&changed_input, &["identity", "claims", "amr"]),
        &Value::from(vec![Value::from("pwd")])
    );
    assert_eq!(input_with(&v, &cached), fresh);
    // Another peer and another listener address are not answered from the
    // last request's.
    let mut other = v.clone();
    other.source = "198.51.100.9:5555".parse().ok();
    other.destination = "10.0.0.2:9090".parse().ok();
    let other_input = input_with(&other, &cached);
    let address = |input: &Value, side: &str| {
        at(
            input,
            &["attributes", side, "address", "socketAddress", "address"],
        )
        .clone()
    };
    assert_eq!(address(&other_input, "source"), Value::from("198.51.100.9"));
    assert_eq!(
        address(&other_input, "destination"),
        Value::from("10.0.0.2")
    );
    assert_eq!(
        address(&input_with(&v, &cached), "source"),
        Value::from("192.0.2.7")
    );
    let mut no_peer = v.clone();
    no_peer.source = None;
    assert_eq!(
        at(
            &input_with(&no_peer, &cached),
            &["attributes", "source", "address"]
        ),
        &Value::new_object()
    );
}

#[test]
fn input_has_the_opa_envoy_shape() {
    let v = view(
        "GET",
        "/v2//entities?type=Parking+Spot&type=B&limit=5",
        &[
            ("Authorization", "Bearer x"),
            ("X-Multi", "a"),
            ("x-multi", "b"),
            ("x-citygate-subject", "admin"),
            ("x-http-method-override", "DELETE"),
        ],
    );
    let input = input_of(&v, None, false);
    let http = at(&input, &["attributes", "request", "http"]);
    assert_eq!(at(http, &["method"]), &Value::from("GET"));
    assert_eq!(
        at(http, &["path"]),
        &Value::from("/v2/entities?type=Parking+Spot&type=B&limit=5")
    );
    assert_eq!(at(http, &["host"]), &Value::from("api.city.example"));
    assert_eq!(
        at(http, &["headers", "authorization"]),
        &Value::from("Bearer x")
    );
    assert_eq!(at(http, &["headers", "x-multi"]), &Value::from("a,b"));
    assert_eq!(
        at(http, &["headers", ":path"]),
        &Value::from("/v2/entities?type=Parking+Spot&type=B&limit=5")
    );
    assert_eq!(
        at(http, &["headers", "x-citygate-subject"]),
        &Value::Undefined
    );
    assert_eq!(
        at(http, &["headers", "x-http-method-override"]),
        &Value::Undefined
    );
    assert_eq!(at(http, &["size"]), &Value::from(-1i64));
    assert_eq!(at(http, &["body"]), &Value::Undefined);
    assert_eq!(
        at(&input, &["parsed_path"]),
        &Value::from(vec![Value::from("v2"), Value::from("entities")])
    );
    assert_eq!(
        at(&input, &["parsed_query", "type"]),
        &Value::from(vec![Value::from("Parking Spot"), Value::from("B")])
    );
    assert_eq!(
        at(&input, &["parsed_query", "limit"]),
        &Value::from(vec![Value::from("5")])
    );
    let source = at(
        &input,
        &["attributes", "source", "address", "socketAddress"],
    );
    assert_eq!(at(source, &["address"]), &Value::from("192.0.2.7"));
    assert_eq!(at(source, &["portValue"]), &Value::from(4444u64));
    let dest = at(
        &input,
        &["attributes", "destination", "address", "socketAddress"],
    );
    assert_eq!(at(dest, &["portValue"]), &Value::from(8080u64));
    assert_eq!(at(&input, &["version", "ext_authz"]), &Value::from("v3"));
    assert_eq!(at(&input, &["parsed_body"]), &Value::Null);
    assert_eq!(at(&input, &["truncated_body"]), &Value::from(false));
    assert_eq!(at(&input, &["identity", "subject"]), &Value::from("alice"));
    assert_eq!(at(&input, &["identity", "kind"]), &Value::from("jwt"));
    assert_eq!(
        at(&input, &["identity", "claims", "amr"]),
        &Value::from(vec![Value::from("pwd"), Value::from("mfa")])
    );
    assert_eq!(at(&input, &["route", "name"]), &Value::from("api"));
}

/// A request from the socket peer 192.0.2.7 with `x-forwarded-for`, behind
/// `trusted_hops` proxies.
fn forwarded_view(xff: &str, trusted_hops: u8) -> RequestView {
    let gateway = crate::config::GatewayConfig {
        trusted_hops,
        ..Default::default()
    };
    normalize(
        &RawRequest {
            headers: vec![
                (":method".into(), "GET".into()),
                (":path".into(), "/".into()),
                (":authority".into(), "api.city.example".into()),
                ("x-forwarded-for".into(), xff.into()),
            ],
            connection: ConnectionInfo {
                source: Some("192.0.2.7:4444".into()),
                ..Default::default()
            },
        },
        &gateway,
    )
    .unwrap()
}

#[test]
fn client_ip_is_the_trusted_hops_client_and_cidr_rules_see_it() {
    let strings =
        |list: &[&str]| Value::from(list.iter().map(|s| Value::from(*s)).collect::<Vec<_>>());
    // The peer (one trusted hop) appended the client 198.51.100.4; what the
    // client claimed (203.0.113.9) is in neither field.
    let v = forwarded_view("203.0.113.9, 198.51.100.4", 1);
    let input = input_of(&v, None, false);
    assert_eq!(at(&input, &["client_ip"]), &Value::from("198.51.100.4"));
    assert_eq!(
        at(&input, &["client_ip_chain"]),
        &strings(&["198.51.100.4", "192.0.2.7"])
    );
    // No trusted hop: the socket peer, whatever x-forwarded-for says.
    let direct = input_of(&forwarded_view("203.0.113.9", 0), None, false);
    assert_eq!(at(&direct, &["client_ip"]), &Value::from("192.0.2.7"));
    assert_eq!(at(&direct, &["client_ip_chain"]), &strings(&["192.0.2.7"]));

    let e = engine(
        &[(
            "a.rego",
            "package envoy.authz\n\nallow if net.cidr_contains(\"203.0.113.0/24\", input.client_ip)\n",
        )],
        serde_json::json!({}),
    );
    let host = MemoryHost::default();
    let allowed = |xff: &str, hops: u8| authorize(&e, &forwarded_view(xff, hops), &host).allowed;
    assert!(allowed("203.0.113.9", 1), "a trusted proxy's word");
    assert!(!allowed("203.0.113.9, 198.51.100.4", 1), "a spoofed entry");
    assert!(!allowed("203.0.113.9", 0), "no trusted hop");
    assert!(!allowed("203.0.113.9", 2), "fewer hops than configured");
}

#[test]
fn parsed_path_splits_like_opa_envoy() {
    let list =
        |items: &[&str]| Value::from(items.iter().map(|s| Value::from(*s)).collect::<Vec<_>>());
    assert_eq!(input::parsed_path("/"), list(&[""]));
    assert_eq!(input::parsed_path("/a/b"), list(&["a", "b"]));
    assert_eq!(input::parsed_path("/a/"), list(&["a", ""]));
}

#[test]
fn json_and_form_bodies_are_parsed_and_cut_bodies_are_not() {
    let json = view(
        "POST",
        "/x",
        &[
            ("content-type", "application/json"),
            ("content-length", "16"),
        ],
    );
    let input = input_of(&json, Some(br#"{"firstname":"a"}"#), false);
    assert_eq!(at(&input, &["parsed_body", "firstname"]), &Value::from("a"));
    assert_eq!(
        at(&input, &["attributes", "request", "http", "size"]),
        &Value::from(16i64)
    );
    assert_eq!(
        at(&input, &["attributes", "request", "http", "body"]),
        &Value::from(r#"{"firstname":"a"}"#)
    );

    let form = view(
        "POST",
        "/x",
        &[("content-type", "application/x-www-form-urlencoded")],
    );
    let input = input_of(&form, Some(b"account_id=al%20ice&x=1&x=2"), false);
    assert_eq!(
        at(&input, &["parsed_body", "account_id"]),
        &Value::from(vec![Value::from("al ice")])
    );
    assert_eq!(
        at(&input, &["parsed_body", "x"]),
        &Value::from(vec![Value::from("1"), Value::from("2")])
    );

    let input = input_of(&json, Some(br#"{"firstname":"#), true);
    assert_eq!(at(&input, &["truncated_body"]), &Value::from(true));
    assert_eq!(at(&input, &["parsed_body"]), &Value::Null);

    // Content-Length larger than what was buffered: truncated, as in OPA-Envoy.
    let long = view(
        "POST",
        "/x",
        &[
            ("content-type", "application/json"),
            ("content-length", "999"),
        ],
    );
    let input = input_of(&long, Some(b"{}"), false);
    assert_eq!(at(&input, &["truncated_body"]), &Value::from(true));
}

#[test]
fn a_json_body_that_does_not_parse_is_an_input_error() {
    let v = view("POST", "/x", &[("content-type", "application/json")]);
    let route = route();
    let identity = jwt_identity();
    let err = input::build_input(&RequestContext {
        view: &v,
        identity: &identity,
        route: &route,
        body: Some(b"{not json"),
        body_truncated: false,
    })
    .unwrap_err();
    assert_eq!(err, input::InputError::BodyNotJson);
}

#[test]
fn a_json_body_with_a_repeated_member_is_an_input_error() {
    let v = view("POST", "/x", &[("content-type", "application/json")]);
    let route = route();
    let identity = jwt_identity();
    for body in [
        br#"{"account_id":"citizen-bernd","account_id":"citizen-anna"}"#.as_slice(),
        br#"[{"a":{"owner":"x","owner":"y"}}]"#.as_slice(),
    ] {
        let err = input::build_input(&RequestContext {
            view: &v,
            identity: &identity,
            route: &route,
            body: Some(body),
            body_truncated: false,
        })
        .unwrap_err();
        assert_eq!(err, input::InputError::BodyNotJson);
    }
}

fn decision_of(json: &str) -> Result<Decision, DecisionError> {
    parse_decision(&Value::from_json_str(json).unwrap())
}

#[test]
fn decisions_in_every_shape() {
    assert!(decision_of("true").unwrap().allowed);
    assert!(!decision_of("false").unwrap().allowed);
    let d = decision_of(
        r#"{"allowed": false, "http_status": 401, "body": "no",
            "headers": {"x-a": "1", "x-b": ["2", "3"]},
            "response_headers_to_add": [{"x-c": "4"}, {"x-d": "5"}],
            "request_headers_to_remove": ["cookie"],
            "redact": ["analyst", "open-data"], "reason": "why\nnot",
            "dynamic_metadata": {"k": 1}}"#,
    )
    .unwrap();
    assert!(!d.allowed);
    assert_eq!(d.http_status, Some(401));
    assert_eq!(d.body.as_deref(), Some("no"));
    assert_eq!(
        d.headers,
        vec![
            ("x-a".to_string(), "1".to_string()),
            ("x-b".to_string(), "2".to_string()),
            ("x-b".to_string(), "3".to_string())
        ]
    );
    assert_eq!(
        d.response_headers_to_add,
        vec![
            ("x-c".to_string(), "4".to_string()),
            ("x-d".to_string(), "5".to_string())
        ]
    );
    assert_eq!(d.request_headers_to_remove, vec!["cookie".to_string()]);
    assert_eq!(
        d.redact,
        vec!["analyst".to_string(), "open-data".to_string()]
    );
    assert_eq!(d.reason.as_deref(), Some("whynot"));
    assert_eq!(
        decision_of(r#"{"allowed": true, "redact": "citizen"}"#)
            .unwrap()
            .redact,
        vec!["citizen".to_string()]
    );
}

#[test]
fn bad_decisions_are_errors() {
    for bad in [
        r#"{"headers": {}}"#,
        r#"{"allowed": "yes"}"#,
        r#"{"allowed": true, "http_status": 99}"#,
        r#"{"allowed": true, "http_status": "403"}"#,
        r#"{"allowed": true, "headers": "x"}"#,
        r#"{"allowed": true, "headers": {"x-a": 1}}"#,
        r#"{"allowed": true, "headers": {"bad name": "1"}}"#,
        r#"{"allowed": true, "headers": {"x-a": "1\r\nx-b: 2"}}"#,
        r#"{"allowed": true, "request_headers_to_remove": "cookie"}"#,
        r#"{"allowed": true, "redact": 3}"#,
        r#"{"allowed": true, "body": {}}"#,
        r#"{"allowed": true, "query_parameters_to_remove": ["a"]}"#,
        r#"1"#,
        r#""allow""#,
        r#"[true]"#,
    ] {
        assert!(
            matches!(decision_of(bad), Err(DecisionError::Malformed(_))),
            "{bad}"
        );
    }
    assert_eq!(
        parse_decision(&Value::Undefined),
        Err(DecisionError::Undefined)
    );
}

fn config(modules: &[(&str, &str)], extra: serde_json::Value) -> PolicyConfig {
    let mut doc = serde_json::json!({
        "modules": modules.iter().map(|(n, s)| (n.to_string(), serde_json::Value::from(*s))).collect::<serde_json::Map<_, _>>(),
    });
    if let (Some(d), Some(e)) = (doc.as_object_mut(), extra.as_object()) {
        d.extend(e.clone());
    }
    serde_json::from_value(doc).unwrap()
}

fn engine(modules: &[(&str, &str)], extra: serde_json::Value) -> PolicyEngine {
    PolicyEngine::compile(Some(&config(modules, extra))).unwrap()
}

fn compile_error(modules: &[(&str, &str)], extra: serde_json::Value) -> ConfigError {
    PolicyEngine::compile(Some(&config(modules, extra))).unwrap_err()
}

fn authorize(engine: &PolicyEngine, v: &RequestView, host: &MemoryHost) -> Decision {
    let route = route();
    let identity = jwt_identity();
    engine.authorize(
        &RequestContext {
            view: v,
            identity: &identity,
            route: &route,
            body: None,
            body_truncated: false,
        },
        host,
    )
}

#[test]
fn syntax_errors_name_module_line_and_column() {
    let err = compile_error(
        &[(
            "city.rego",
            "package envoy.authz\n\nallow if {\n  input.x ==\n}\n",
        )],
        serde_json::json!({}),
    );
    assert_eq!(err.path, r#"$.policy.modules["city.rego"]"#);
    assert!(
        err.message.starts_with("city.rego:5:1: "),
        "{}",
        err.message
    );
    assert!(!err.to_string().contains('\n'));
}

#[test]
fn unknown_functions_reject_the_config() {
    let err = compile_error(
        &[("a.rego", "package envoy.authz\n\nallow if {\n  x := crypto.x509.parse_and_verify_certificates(input.c)\n  x\n}\n")],
        serde_json::json!({}),
    );
    assert_eq!(err.path, r#"$.policy.modules["a.rego"]"#);
    assert!(err.message.contains("a.rego:4:8"), "{}", err.message);
    assert!(err
        .message
        .contains("crypto.x509.parse_and_verify_certificates"));
    // OPA builtins left out of the build on purpose are refused too.
    for call in [
        "http.send({})",
        "json.patch({}, [])",
        "uuid.rfc4122(\"x\")",
        "urlquery.encode(\"a b\")",
        "urlquery.decode_object(\"a=b\")",
    ] {
        let module = format!("package envoy.authz\n\nallow if {{\n  x := {call}\n  x\n}}\n");
        let err = compile_error(&[("a.rego", &module)], serde_json::json!({}));
        assert!(
            err.message.contains("unknown function"),
            "{call}: {}",
            err.message
        );
    }
    // Builtins, extensions, user functions (also through imports) pass.
    engine(
        &[
            ("lib.rego", "package lib\n\ndouble(x) := y if { y := x * 2 }\n"),
            (
                "a.rego",
                "package envoy.authz\n\nimport data.lib\n\nallow if {\n  lib.double(2) == 4\n  count(split(\"a,b\", \",\")) == 2\n  io.jwt.decode(input.t)\n  not startswith(\"x\", \"y\")\n  time.now_ns() > 0\n  s := set()\n  print(s)\n}\n",
            ),
        ],
        serde_json::json!({}),
    );
}

#[test]
fn a_missing_entrypoint_rejects_the_config() {
    let err = compile_error(
        &[("a.rego", "package envoy.authz\n\nallowed := true\n")],
        serde_json::json!({}),
    );
    assert_eq!(err.path, "$.policy.entrypoint");
    let err = compile_error(
        &[("a.rego", "package envoy.authz\n\nallow := true\n")],
        serde_json::json!({"entrypoint": "envoy.authz.allow"}),
    );
    assert_eq!(err.path, "$.policy.entrypoint");
}

#[test]
fn route_entrypoints_are_checked() {
    let mut e = engine(
        &[("a.rego", "package envoy.authz\n\nallow := true\n")],
        serde_json::json!({}),
    );
    let mut r = route();
    r.policy.entrypoint = Some("data.envoy.authz.nope".into());
    let err = e.check_routes(&[r.clone()]).unwrap_err();
    assert_eq!(err.path, "$.routes[0].policy.entrypoint");
    r.policy.entrypoint = Some("data.envoy.authz.allow".into());
    e.check_routes(&[r.clone()]).unwrap();
    assert!(PolicyEngine::default().check_routes(&[r]).is_err());
}

#[test]
fn rego_v0_is_an_option() {
    let v0 = "package envoy.authz\n\nallow { input.attributes.request.http.method == \"GET\" }\n";
    assert!(
        PolicyEngine::compile(Some(&config(&[("a.rego", v0)], serde_json::json!({})))).is_err()
    );
    let e = engine(&[("a.rego", v0)], serde_json::json!({"rego_v0": true}));
    assert!(authorize(&e, &view("GET", "/", &[]), &MemoryHost::default()).allowed);
}

#[test]
fn without_a_policy_everything_admitted_is_allowed() {
    let host = MemoryHost::default();
    let d = authorize(
        &PolicyEngine::compile(None).unwrap(),
        &view("GET", "/", &[]),
        &host,
    );
    assert!(d.allowed);
}

#[test]
fn undefined_and_errors_deny_with_a_logged_reason_and_no_input() {
    let e = engine(
        &[("a.rego", "package envoy.authz\n\nallow if input.attributes.request.http.method == \"GET\"\n\nerr := to_number(input.attributes.request.http.headers[\"x-secret\"])\n")],
        serde_json::json!({}),
    );
    let host = MemoryHost::default();
    let d = authorize(&e, &view("POST", "/", &[]), &host);
    assert!(!d.allowed);
    assert_eq!(
        d.reason.as_deref(),
        Some("the policy decision is undefined")
    );
    assert!(d.failed);
    assert_eq!(host.counter(Metric::PolicyError), 1);
    assert_eq!(host.histograms.borrow()[&Metric::PolicyEvalMicros].len(), 1);

    let strict = engine(
        &[("a.rego", "package envoy.authz\n\nallow := to_number(input.attributes.request.http.headers[\"x-secret\"]) > 1\n")],
        serde_json::json!({"strict_builtin_errors": true}),
    );
    let host = MemoryHost::default();
    let d = authorize(
        &strict,
        &view("GET", "/", &[("x-secret", "tok-ABCDEF")]),
        &host,
    );
    assert!(!d.allowed);
    let reason = d.reason.unwrap();
    assert!(reason.starts_with("policy evaluation failed"), "{reason}");
    let logs = host.log_lines().join("\n");
    assert!(!logs.contains("tok-ABCDEF"), "{logs}");
    assert_eq!(host.counter(Metric::PolicyError), 1);
}

#[test]
fn a_pathological_policy_is_stopped_by_the_time_budget() {
    let e = engine(
        &[("a.rego", "package envoy.authz\n\nallow if {\n  n := [x | some a in numbers.range(1, 3000); some b in numbers.range(1, 3000); x := a * b]\n  count(n) > 0\n}\n")],
        serde_json::json!({"max_eval_micros": 20000}),
    );
    let host = MemoryHost::default();
    let started = std::time::Instant::now();
    let d = authorize(&e, &view("GET", "/", &[]), &host);
    assert!(!d.allowed);
    assert_eq!(
        d.reason.as_deref(),
        Some("policy evaluation exceeded its time budget")
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
}

#[test]
fn dry_run_marks_the_decision_and_headers_follow_opa_envoy() {
    let e = engine(
        &[("a.rego", "package envoy.authz\n\nallow := {\"allowed\": false, \"headers\": {\"x-why\": \"no\"}, \"http_status\": 401}\n")],
        serde_json::json!({"dry_run": true}),
    );
    let d = authorize(&e, &view("GET", "/", &[]), &MemoryHost::default());
    assert!(!d.allowed);
    assert!(d.dry_run);
    assert_eq!(d.http_status, Some(401));
    assert_eq!(d.headers, vec![("x-why".to_string(), "no".to_string())]);
}

#[test]
fn time_now_ns_is_the_host_clock() {
    let e = engine(
        &[(
            "a.rego",
            "package envoy.authz\n\nallow if time.now_ns() == 1700000000000000000\n",
        )],
        serde_json::json!({}),
    );
    let host = MemoryHost::at_unix_seconds(1_700_000_000);
    assert!(authorize(&e, &view("GET", "/", &[]), &host).allowed);
    host.advance_seconds(1);
    assert!(!authorize(&e, &view("GET", "/", &[]), &host).allowed);
}

#[test]
fn time_zones_of_the_build_convert_and_others_fail_closed() {
    // 2023-11-14T22:13:20Z was a Tuesday; Berlin was at UTC+1.
    let in_build = "package envoy.authz\n\nallow if {\n  ns := time.parse_rfc3339_ns(\"2023-11-14T22:13:20Z\")\n  time.clock([ns, \"Europe/Berlin\"]) == [23, 13, 20]\n  time.clock([ns, \"UTC\"]) == [22, 13, 20]\n  time.weekday([ns, \"Europe/Berlin\"]) == \"Tuesday\"\n  time.date([ns, \"Europe/Lisbon\"]) == [2023, 11, 14]\n}\n";
    let host = MemoryHost::default();
    let e = engine(&[("a.rego", in_build)], serde_json::json!({}));
    assert!(authorize(&e, &view("GET", "/", &[]), &host).allowed);
    // A zone left out of the build (CHRONO_TZ_TIMEZONE_FILTER) makes the
    // builtin fail: undefined, so the request is denied.
    let outside = in_build.replace("Europe/Berlin", "America/New_York");
    let e = engine(&[("a.rego", &outside)], serde_json::json!({}));
    assert!(!authorize(&e, &view("GET", "/", &[]), &host).allowed);
}

fn hs256(claims: &serde_json::Value, secret: &[u8]) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
    mac.update(format!("{header}.{payload}").as_bytes());
    format!(
        "{header}.{payload}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    )
}

fn call(name: &str, args: &[Value], now_ns: u64) -> Option<Value> {
    let f = match name {
        "decode" => builtins::io_jwt::decode,
        "decode_verify" => builtins::io_jwt::decode_verify,
        _ => unreachable!(),
    };
    f(args, now_ns)
        .map_err(|e| eprintln!("builtin error: {e}"))
        .ok()
}

#[test]
fn io_jwt_decode_gives_header_payload_and_hex_signature() {
    let token = hs256(&serde_json::json!({"sub": "alice"}), b"secret");
    let v = call("decode", &[Value::from(token.as_str())], 0).unwrap();
    assert_eq!(v[0][&Value::from("alg")], Value::from("HS256"));
    assert_eq!(v[1][&Value::from("sub")], Value::from("alice"));
    let sig = token.rsplit('.').next().unwrap();
    assert_eq!(
        v[2],
        Value::from(hex::encode(URL_SAFE_NO_PAD.decode(sig).unwrap()))
    );
    assert!(call("decode", &[Value::from("a.b")], 0).is_none());
    assert!(call("decode", &[Value::from("!!.e30.")], 0).is_none());
}

#[test]
fn io_jwt_decode_verify_checks_signature_time_issuer_and_audience() {
    let now = 1_700_000_000u64;
    let ns = now * 1_000_000_000;
    let claims = serde_json::json!({"sub": "alice", "iss": "city", "aud": ["api"], "nbf": now - 10, "exp": now + 10});
    let token = hs256(&claims, b"secret");
    let c = |json: &str| Value::from_json_str(json).unwrap();
    let run = |constraints: &str, at: u64| {
        call(
            "decode_verify",
            &[Value::from(token.as_str()), c(constraints)],
            at,
        )
        .unwrap_or_else(|| panic!("{constraints} at {at}"))[0]
            .clone()
    };
    assert_eq!(
        run(r#"{"secret": "secret", "aud": "api"}"#, ns),
        Value::from(true)
    );
    assert_eq!(
        run(r#"{"secret": "wrong", "aud": "api"}"#, ns),
        Value::from(false)
    );
    // A token with `aud` needs an `aud` constraint (OPA's rule).
    assert_eq!(run(r#"{"secret": "secret"}"#, ns), Value::from(false));
    assert_eq!(
        run(r#"{"secret": "secret", "aud": "other"}"#, ns),
        Value::from(false)
    );
    assert_eq!(
        run(r#"{"secret": "secret", "aud": "api", "iss": "city"}"#, ns),
        Value::from(true)
    );
    assert_eq!(
        run(r#"{"secret": "secret", "aud": "api", "iss": "x"}"#, ns),
        Value::from(false)
    );
    assert_eq!(
        run(r#"{"secret": "secret", "aud": "api", "alg": "RS256"}"#, ns),
        Value::from(false)
    );
    // Expired, not yet valid; `time` overrides the clock.
    assert_eq!(
        run(r#"{"secret": "secret", "aud": "api"}"#, ns + 10_000_000_000),
        Value::from(false)
    );
    assert_eq!(
        run(r#"{"secret": "secret", "aud": "api"}"#, ns - 11_000_000_000),
        Value::from(false)
    );
    assert_eq!(
        run(
            &format!(r#"{{"secret": "secret", "aud": "api", "time": {ns}}}"#),
            0
        ),
        Value::from(true)
    );
    let invalid = call(
        "decode_verify",
        &[
            Value::from(token.as_str()),
            c(r#"{"secret": "wrong", "aud": "api"}"#),
        ],
        ns,
    )
    .unwrap();
    assert_eq!(
        invalid,
        Value::from(vec![
            Value::from(false),
            Value::new_object(),
            Value::new_object()
        ])
    );
    // Both or neither key source is an error (undefined in the policy).
    assert!(call(
        "decode_verify",
        &[Value::from(token.as_str()), c(r#"{"aud": "api"}"#)],
        ns
    )
    .is_none());
    assert!(call(
        "decode_verify",
        &[
            Value::from(token.as_str()),
            c(r#"{"secret": "s", "cert": "x"}"#)
        ],
        ns
    )
    .is_none());
    assert!(call(
        "decode_verify",
        &[
            Value::from(token.as_str()),
            c(r#"{"secret": "s", "bogus": 1}"#)
        ],
        ns
    )
    .is_none());
}

#[test]
fn io_jwt_verify_hs256_ignores_claims_and_builtin_errors_are_undefined() {
    let token = hs256(&serde_json::json!({"exp": 1}), b"secret");
    let e = engine(
        &[("a.rego", "package envoy.authz\n\nallow if io.jwt.verify_hs256(input.attributes.request.http.headers[\"x-t\"], \"secret\")\n\ndefault other := \"fallback\"\nother := io.jwt.decode(\"garbage\")\n")],
        serde_json::json!({}),
    );
    let host = MemoryHost::default();
    assert!(authorize(&e, &view("GET", "/", &[("x-t", &token)]), &host).allowed);
    let forged = format!("{}x", &token[..token.len() - 1]);
    assert!(!authorize(&e, &view("GET", "/", &[("x-t", &forged)]), &host).allowed);
}

#[test]
fn clone_and_evaluate_cost_is_small() {
    // Not a benchmark: a guard that per-request work stays in microseconds.
    let e = engine(
        &[("a.rego", "package envoy.authz\n\ndefault allow := false\nallow if { input.attributes.request.http.method == \"GET\"; \"citizen\" in input.identity.roles }\n")],
        serde_json::json!({}),
    );
    let host = MemoryHost::default();
    let v = view(
        "GET",
        "/v2/entities?type=ParkingSpot",
        &[("authorization", "Bearer x")],
    );
    let started = std::time::Instant::now();
    for _ in 0..200 {
        assert!(authorize(&e, &v, &host).allowed);
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
}

mod public_keys {
    //! `io.jwt.*` with public keys, through the authentication stage's
    //! loader and verifier (demo keys from `auth/testdata`).

    use jsonwebtoken::Algorithm;
    use regorus::Value;
    use serde_json::json;

    use crate::auth::jwt::testkeys::{
        jwks, mint, mint_rs256, rotated_rsa_jwk, rsa_jwk, signing_key, EC256_CERT, EC256_PRIVATE,
        RSA_CERT, RSA_PUBLIC,
    };
    use crate::policy::builtins::io_jwt;

    const NOW: u64 = 1_700_000_000;

    fn decode_verify(token: &str, constraints: serde_json::Value) -> Value {
        io_jwt::decode_verify(
            &[
                Value::from(token),
                Value::from_json_str(&constraints.to_string()).unwrap(),
            ],
            NOW * 1_000_000_000,
        )
        .unwrap()[0]
            .clone()
    }

    #[test]
    fn rs256_verifies_with_a_certificate_a_public_key_and_a_jwks() {
        let token = mint_rs256("k1", &json!({"sub": "alice", "exp": NOW + 60}));
        for cert in [
            RSA_CERT.to_string(),
            RSA_PUBLIC.to_string(),
            jwks(&[rsa_jwk("k1")]),
        ] {
            assert_eq!(
                decode_verify(&token, json!({"cert": cert})),
                Value::from(true)
            );
        }
        // A JWKS whose only key has another kid and another modulus.
        let wrong = jwks(&[rotated_rsa_jwk("k1")]);
        assert_eq!(
            decode_verify(&token, json!({"cert": wrong})),
            Value::from(false)
        );
        // Expired tokens are invalid for decode_verify…
        let expired = mint_rs256("k1", &json!({"exp": NOW - 1}));
        assert_eq!(
            decode_verify(&expired, json!({"cert": RSA_CERT})),
            Value::from(false)
        );
        // …but verify_rs256 checks the signature only, as in OPA.
        let verified = io_jwt::verify(
            Algorithm::RS256,
            &[Value::from(expired.as_str()), Value::from(RSA_CERT)],
        )
        .unwrap();
        assert_eq!(verified, Value::from(true));
    }

    #[test]
    fn es256_verifies_and_keys_are_bound_to_their_algorithm() {
        let token = mint(
            &json!({"alg": "ES256", "typ": "JWT"}),
            &json!({"sub": "bob"}),
            &signing_key(EC256_PRIVATE, Algorithm::ES256),
            Algorithm::ES256,
        );
        assert_eq!(
            io_jwt::verify(
                Algorithm::ES256,
                &[Value::from(token.as_str()), Value::from(EC256_CERT)]
            )
            .unwrap(),
            Value::from(true)
        );
        // An RSA certificate never verifies an ES256 token.
        assert_eq!(
            decode_verify(&token, json!({"cert": RSA_CERT})),
            Value::from(false)
        );
        // An HS256 token "signed" with the RSA public key text (key
        // confusion) is refused when the policy hands a certificate.
        let confused = mint(
            &json!({"alg": "HS256"}),
            &json!({"sub": "mallory"}),
            &jsonwebtoken::EncodingKey::from_secret(RSA_CERT.as_bytes()),
            Algorithm::HS256,
        );
        assert_eq!(
            decode_verify(&confused, json!({"cert": RSA_CERT})),
            Value::from(false)
        );
    }
}

#[test]
fn deeply_nested_brackets_are_refused_before_parsing() {
    // regorus' parser takes exponential time in `[` and `{` nesting: 16
    // balanced levels took seconds; each level more doubles that.
    let nested = |open: &str, close: &str, depth: usize| {
        format!(
            "package envoy.authz\n\nallow if {{\n  x := {}1{}\n}}\n",
            open.repeat(depth),
            close.repeat(depth)
        )
    };
    // The rule's body is one level: 10 in all is the most a module may have.
    for (open, close) in [("[", "]"), ("{", "}"), ("[{", "}]")] {
        let deep = nested(open, close, 10 / open.len());
        let err = compile_error(&[("deep.rego", &deep)], serde_json::json!({}));
        assert_eq!(err.path, r#"$.policy.modules["deep.rego"]"#);
        assert!(
            err.message
                .starts_with("deep.rego:4: `[` and `{` nest deeper than 10 levels"),
            "{}",
            err.message
        );
        let at_limit = nested(open, close, 9 / open.len());
        engine(&[("ok.rego", &at_limit)], serde_json::json!({}));
    }
    // Unbalanced, as the fuzzer wrote it: 17 `[` before the first `]`.
    let unbalanced = format!(
        "package envoy.authz\n\nown if{}{} != null\n\ty == 1\n}}\n",
        "[".repeat(17),
        "]".repeat(9)
    );
    let err = compile_error(&[("u.rego", &unbalanced)], serde_json::json!({}));
    assert!(
        err.message.starts_with("u.rego:3: `[` and `{` nest"),
        "{}",
        err.message
    );
    // Parentheses cost no backtracking: 31 levels (inside the rule's body)
    // are fine, beyond 32 brackets in all are refused.
    engine(&[("p.rego", &nested("(", ")", 31))], serde_json::json!({}));
    let err = compile_error(&[("p.rego", &nested("(", ")", 32))], serde_json::json!({}));
    assert!(
        err.message
            .starts_with("p.rego:4: brackets nest deeper than 32 levels"),
        "{}",
        err.message
    );
    // A closer pops the innermost bracket whatever its kind: `(` levels
    // closed with `]` leave no `[` counted.
    let mixed = format!(
        "package envoy.authz\n\nallow if {{\n  x := {}\n  y := {}1{}\n}}\n",
        "[(])".repeat(20),
        "[".repeat(9),
        "]".repeat(9)
    );
    let err = compile_error(&[("m.rego", &mixed)], serde_json::json!({}));
    assert!(!err.message.contains("nest deeper"), "{}", err.message);
    // Brackets in strings and comments are not nesting; ordinary nesting is fine.
    let fine = format!(
        "package envoy.authz\n\n# {}\nnote := \"{}\"\nraw := `{}`\nallow if {{\n  x := [[{{\"a\": [1]}}]]\n  count(x) == 1\n}}\n",
        "[".repeat(40),
        "{".repeat(40),
        "(".repeat(40)
    );
    engine(&[("fine.rego", &fine)], serde_json::json!({}));
}

const PLAIN: &str = "package envoy.authz\n\nimport rego.v1\n\ndefault allow := false\n\nallow if input.attributes.request.http.method == \"GET\"\n\nwrites if input.attributes.request.http.method == \"POST\"\n";

#[test]
fn a_policy_the_vm_can_run_runs_on_the_vm() {
    let e = engine(&[("a.rego", PLAIN)], serde_json::json!({}));
    assert_eq!(e.evaluator(), Some((Evaluator::Vm, None)));
    assert_eq!(
        e.evaluator_line().as_deref(),
        Some("citygate: policy evaluator: vm")
    );
    let host = MemoryHost::default();
    assert!(authorize(&e, &view("GET", "/", &[]), &host).allowed);
    assert!(!authorize(&e, &view("POST", "/", &[]), &host).allowed);
    // The VM is reused: an earlier request leaves nothing behind.
    assert!(authorize(&e, &view("GET", "/", &[]), &host).allowed);
}

#[test]
fn citygate_builtins_and_print_keep_a_policy_in_the_interpreter() {
    for (call, source) in [
        ("io.jwt.decode", "package envoy.authz\n\nimport rego.v1\n\nallow if count(io.jwt.decode(input.attributes.request.http.headers.token)) == 3\n"),
        ("time.now_ns", "package envoy.authz\n\nimport rego.v1\n\nallow if time.now_ns() > 0\n"),
        ("print", "package envoy.authz\n\nimport rego.v1\n\nallow if {\n  print(\"checked\")\n  true\n}\n"),
    ] {
        let e = engine(&[("a.rego", source)], serde_json::json!({}));
        let (evaluator, reason) = e.evaluator().unwrap();
        assert_eq!(evaluator, Evaluator::Interpreter, "{call}");
        assert_eq!(reason, Some(&VmUnavailable::Calls(call.to_string())));
        assert_eq!(
            e.evaluator_line().unwrap(),
            format!("citygate: policy evaluator: interpreter (it calls {call})")
        );
        let err = compile_error(&[("a.rego", source)], serde_json::json!({"evaluator": "vm"}));
        assert_eq!(err.path, "$.policy.evaluator", "{call}");
        assert!(err.message.contains(&format!("it calls {call}")), "{err}");
    }
    let strict = engine(
        &[("a.rego", PLAIN)],
        serde_json::json!({"strict_builtin_errors": true}),
    );
    assert_eq!(strict.evaluator().unwrap().0, Evaluator::Interpreter);
}

#[test]
fn the_evaluator_can_be_chosen_and_a_bad_choice_is_named() {
    let e = engine(
        &[("a.rego", PLAIN)],
        serde_json::json!({"evaluator": "interpreter"}),
    );
    assert_eq!(
        e.evaluator(),
        Some((Evaluator::Interpreter, Some(&VmUnavailable::Configured)))
    );
    assert!(authorize(&e, &view("GET", "/", &[]), &MemoryHost::default()).allowed);
    let e = engine(&[("a.rego", PLAIN)], serde_json::json!({"evaluator": "vm"}));
    assert_eq!(e.evaluator().unwrap().0, Evaluator::Vm);
    let err = compile_error(
        &[("a.rego", PLAIN)],
        serde_json::json!({"evaluator": "fast"}),
    );
    assert_eq!(err.path, "$.policy.evaluator");
    assert!(err.message.contains("\"fast\""), "{err}");
}

#[test]
fn route_entrypoints_run_on_the_vm_too() {
    let mut e = engine(&[("a.rego", PLAIN)], serde_json::json!({}));
    let mut r = route();
    r.policy.entrypoint = Some("data.envoy.authz.writes".into());
    e.check_routes(std::slice::from_ref(&r)).unwrap();
    assert_eq!(e.evaluator().unwrap().0, Evaluator::Vm);
    let prepared = &e.policy.as_ref().unwrap().prepared;
    assert!(prepared.runs_on_vm("data.envoy.authz.writes"));
    assert!(prepared.runs_on_vm("data.envoy.authz.allow"));
    let identity = jwt_identity();
    let host = MemoryHost::default();
    let decide = |method: &str| {
        e.authorize(
            &RequestContext {
                view: &view(method, "/", &[]),
                identity: &identity,
                route: &r,
                body: None,
                body_truncated: false,
            },
            &host,
        )
        .allowed
    };
    assert!(decide("POST"));
    assert!(!decide("GET"));
}

#[test]
fn a_policy_the_vm_cannot_compile_runs_in_the_interpreter() {
    let source = "package envoy.authz\n\nimport rego.v1\n\nhelper if input.x == 1\n\nallow if helper with input as {\"x\": 1}\n";
    let e = engine(&[("a.rego", source)], serde_json::json!({}));
    let (evaluator, reason) = e.evaluator().unwrap();
    assert_eq!(evaluator, Evaluator::Interpreter);
    assert!(
        reason.is_some_and(|r| r.to_string().contains("with")),
        "{reason:?}"
    );
    assert!(authorize(&e, &view("GET", "/", &[]), &MemoryHost::default()).allowed);
    let err = compile_error(
        &[("a.rego", source)],
        serde_json::json!({"evaluator": "vm"}),
    );
    assert_eq!(err.path, "$.policy.evaluator");
}

fn ngsi_route() -> RouteConfig {
    serde_json::from_str(
        r#"{"name":"broker","match":{"path_prefix":"/"},"ngsi":"v2","request_body":{"buffer":true}}"#,
    )
    .unwrap()
}

fn ngsi_input(
    v: &RequestView,
    body: Option<&[u8]>,
    truncated: bool,
) -> Result<Value, input::InputError> {
    input::build_input(&RequestContext {
        view: v,
        identity: &jwt_identity(),
        route: &ngsi_route(),
        body,
        body_truncated: truncated,
    })
}

#[test]
fn an_ngsi_route_gives_the_policy_input_ngsi_and_others_do_not() {
    let v = view(
        "GET",
        "/v2/entities?type=ParkingSpot&q=occupiedBy==x",
        &[("fiware-service", "parking")],
    );
    let input = ngsi_input(&v, Some(b""), false).unwrap();
    let ngsi = at(&input, &["ngsi"]);
    assert_eq!(
        ngsi,
        &Value::from_json_str(
            r#"{"api":"v2","action":"read_entities","tenant":"parking","service_path":[],
                "entity_types":["ParkingSpot"],"entity_ids":[],"id_patterns":[],"attrs":[],
                "query_attrs":["occupiedBy"],"q":"occupiedBy==x","mq":null,"georel":null,
                "context":null,"batch":false,"subscription":null}"#
        )
        .unwrap()
    );
    // The OPA-Envoy part is the same as on a route without `ngsi`.
    let plain = input_of(&v, Some(b""), false);
    assert_eq!(at(&plain, &["ngsi"]), &Value::Undefined);
    let mut without = input.clone();
    let members = without.as_object_mut().unwrap();
    members.remove(&Value::from("ngsi"));
    members.insert(Value::from("route"), at(&plain, &["route"]).clone());
    assert_eq!(without, plain);
}

#[test]
fn an_ngsi_request_that_cannot_be_described_is_an_input_error() {
    let twice = view(
        "GET",
        "/v2/entities",
        &[("fiware-service", "a"), ("fiware-service", "b")],
    );
    assert_eq!(
        ngsi_input(&twice, Some(b""), false).unwrap_err(),
        input::InputError::Ngsi(crate::ngsi::NgsiError::RepeatedHeader("fiware-service"))
    );
    // A batch cut at `request_body.max_bytes` is not judged by its start.
    let batch = view(
        "POST",
        "/v2/op/update",
        &[("content-type", "application/json")],
    );
    let start = br#"{"actionType":"delete","entities":[{"id":"a","type":"T"}]}"#;
    assert_eq!(
        ngsi_input(&batch, Some(start), true).unwrap_err(),
        input::InputError::Ngsi(crate::ngsi::NgsiError::BodyUnread)
    );
    // Two parsers could read a repeated member differently: refused as
    // OPA-Envoy's `parsed_body` for JSON, by `input.ngsi` for any other
    // declared type (NGSI-LD's application/ld+json).
    let repeated = br#"{"actionType":"delete","entities":[{"id":"a","type":"T","id":"b"}]}"#;
    assert_eq!(
        ngsi_input(&batch, Some(repeated), false).unwrap_err(),
        input::InputError::BodyNotJson
    );
    let ld = view(
        "POST",
        "/v2/op/update",
        &[("content-type", "application/ld+json")],
    );
    assert_eq!(
        ngsi_input(&ld, Some(repeated), false).unwrap_err(),
        input::InputError::Ngsi(crate::ngsi::NgsiError::BodyInvalid)
    );
    let whole = ngsi_input(&batch, Some(start), false).unwrap();
    assert_eq!(
        at(&whole, &["ngsi", "action"]),
        &Value::from("delete_entities")
    );
}
