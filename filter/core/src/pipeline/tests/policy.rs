//! The policy stage inside the pipeline: denial replies, upstream
//! headers, dry-run and the decision log.

use crate::host::memory::MemoryHost;
use crate::metrics::Metric;
use crate::normalize::{ConnectionInfo, RawRequest};
use crate::pipeline::CompiledConfig;

const POLICY: &str = r#"package envoy.authz

import rego.v1

default allow := {"allowed": false, "http_status": 401, "headers": {"x-policy": "no"}, "reason": "not a GET"}

allow := {"allowed": true, "headers": {"x-policy": "yes"}, "request_headers_to_remove": ["x-debug"], "redact": "open-data"} if {
	input.attributes.request.http.method == "GET"
}
"#;

fn gateway(dry_run: bool) -> CompiledConfig {
    let config = serde_json::json!({
        "routes": [{"name": "open", "match": {"path_prefix": "/v2"}, "auth": {"anonymous": true}}],
        "policy": {"modules": {"p.rego": POLICY}, "dry_run": dry_run},
        "redaction": {"profiles": {"open-data": {"rules": []}}},
    });
    CompiledConfig::from_json(config.to_string().as_bytes(), &|_| None).unwrap()
}

fn request(method: &str) -> RawRequest {
    RawRequest {
        headers: vec![
            (":method".into(), method.into()),
            (":path".into(), "/v2/entities".into()),
            ("x-debug".into(), "1".into()),
        ],
        connection: ConnectionInfo::default(),
    }
}

#[test]
fn deny_replies_carry_the_policy_status_and_headers() {
    let gw = gateway(false);
    let host = MemoryHost::default();
    let admitted = gw.admit(&request("DELETE"), &host).unwrap();
    let reply = gw.authorize(admitted, None, false, &host).unwrap_err();
    assert_eq!(reply.status, 401);
    assert!(reply
        .headers
        .contains(&("x-policy".to_string(), "no".to_string())));
    assert_eq!(host.counter(Metric::PolicyDenied), 1);
    let log = host.log_lines().join("\n");
    assert!(log.contains("\"policy_eval_us\""), "{log}");
    assert!(log.contains("not a GET"), "{log}");
    assert!(!log.contains("policy_error"), "{log}");
}

#[test]
fn a_failing_policy_denies_and_its_line_says_the_policy_failed() {
    let config = serde_json::json!({
        "routes": [{"name": "open", "match": {"path_prefix": "/v2"}, "auth": {"anonymous": true}}],
        "policy": {"modules": {"p.rego": "package envoy.authz\n\nallow if input.attributes.request.http.method == \"GET\"\n"}},
    });
    let gw = CompiledConfig::from_json(config.to_string().as_bytes(), &|_| None).unwrap();
    let host = MemoryHost::default();
    let admitted = gw.admit(&request("DELETE"), &host).unwrap();
    let reply = gw.authorize(admitted, None, false, &host).unwrap_err();
    assert_eq!(reply.status, 403);
    let line = host
        .log_lines()
        .into_iter()
        .find(|l| l.contains("\"outcome\""))
        .unwrap();
    let record: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(record["outcome"], "denied", "{line}");
    assert_eq!(record["stage"], "policy", "{line}");
    assert_eq!(record["policy_error"], true, "{line}");
    assert_eq!(
        record["reason"], "the policy decision is undefined",
        "{line}"
    );
}

#[test]
fn allowed_requests_get_upstream_edits_and_the_redaction_profile() {
    let gw = gateway(false);
    let host = MemoryHost::default();
    let admitted = gw.admit(&request("GET"), &host).unwrap();
    let forwarded = gw.authorize(admitted, None, false, &host).unwrap();
    assert!(forwarded
        .edits
        .set_headers
        .contains(&("x-policy".to_string(), "yes".to_string())));
    assert!(forwarded
        .edits
        .remove_headers
        .contains(&"x-debug".to_string()));
    assert_eq!(
        forwarded.response.redaction.profiles,
        vec!["open-data".to_string()]
    );
    assert_eq!(host.counter(Metric::PolicyAllowed), 1);
}

#[test]
fn dry_run_forwards_what_it_would_deny() {
    let gw = gateway(true);
    let host = MemoryHost::default();
    let admitted = gw.admit(&request("DELETE"), &host).unwrap();
    assert!(gw.authorize(admitted, None, false, &host).is_ok());
    assert_eq!(host.counter(Metric::PolicyDryRunDenied), 1);
    assert_eq!(host.counter(Metric::PolicyDenied), 0);
}

#[test]
fn a_bad_policy_rejects_the_whole_config() {
    let config = serde_json::json!({
        "routes": [{"name": "open", "match": {"path_prefix": "/v2"}, "policy": {"entrypoint": "data.x.y"}}],
        "policy": {"modules": {"p.rego": POLICY}},
    });
    let err = CompiledConfig::from_json(config.to_string().as_bytes(), &|_| None)
        .err()
        .unwrap();
    assert_eq!(err.path, "$.routes[0].policy.entrypoint");
    let config = serde_json::json!({
        "routes": [{"name": "open", "match": {"path_prefix": "/v2"}}],
        "policy": {"modules": {"p.rego": POLICY}, "max_eval_micros": 0},
    });
    let err = CompiledConfig::from_json(config.to_string().as_bytes(), &|_| None)
        .err()
        .unwrap();
    assert_eq!(err.path, "$.policy.max_eval_micros");
}
