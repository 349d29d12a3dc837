//! Compares what a runner observed with a case's expectation. Each mismatch
//! is one line naming what was expected and what came.

use anyhow::Result;
use serde_json_path::JsonPath;

use super::file::{
    BodyExpectation, DecisionExpectation, Expectation, ExpectedOutcome, HeaderExpectation,
};

/// What one request produced, whichever runner (wasmtime or Envoy) sent it.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub reached_upstream: bool,
    pub upstream_path: Option<String>,
    pub upstream_headers: Vec<(String, String)>,
    pub upstream_body: Vec<u8>,
    /// The request's decision-log line, when the case asks about it.
    pub decision: Option<serde_json::Value>,
}

pub fn check(expect: &Expectation, observed: &Observed) -> Result<Vec<String>> {
    let mut failures = Vec::new();
    if let Some(status) = expect.status {
        if status != observed.status {
            failures.push(format!(
                "status: expected {status}, got {} (body: {})",
                observed.status,
                preview(&observed.body)
            ));
        }
    }
    if let Some(reached) = expect.reached_upstream {
        if reached != observed.reached_upstream {
            failures.push(format!(
                "reached upstream: expected {reached}, got {}",
                observed.reached_upstream
            ));
        }
    }
    if let Some(upstream) = &expect.upstream_request {
        if !observed.reached_upstream {
            failures.push(
                "upstream request: expected one, but nothing reached the upstream".to_string(),
            );
        } else {
            if let Some(path) = &upstream.path {
                if observed.upstream_path.as_deref() != Some(path.as_str()) {
                    failures.push(format!(
                        "upstream path: expected {path:?}, got {:?}",
                        observed.upstream_path
                    ));
                }
            }
            check_headers(
                "upstream header",
                &upstream.headers,
                &observed.upstream_headers,
                &mut failures,
            )?;
            check_body(
                "upstream body",
                &upstream.body,
                &observed.upstream_body,
                &mut failures,
            )?;
        }
    }
    check_headers("header", &expect.headers, &observed.headers, &mut failures)?;
    check_body("body", &expect.body, &observed.body, &mut failures)?;
    if let Some(decision) = &expect.decision {
        check_decision(decision, observed.decision.as_ref(), &mut failures)?;
    }
    Ok(failures)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn header_values<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

fn check_decision(
    expect: &DecisionExpectation,
    record: Option<&serde_json::Value>,
    failures: &mut Vec<String>,
) -> Result<()> {
    let Some(record) = record else {
        failures.push("decision: expected a decision-log line, found none".to_string());
        return Ok(());
    };
    let outcome = record["outcome"].as_str().unwrap_or("");
    let failed = record["policy_error"] == serde_json::Value::Bool(true);
    let actual = match (outcome, failed) {
        ("allowed", _) => Some(ExpectedOutcome::Allowed),
        ("denied", true) => Some(ExpectedOutcome::Error),
        ("denied", false) => Some(ExpectedOutcome::Denied),
        ("dry_run_denied", _) => Some(ExpectedOutcome::DryRunDenied),
        _ => None,
    };
    if actual != Some(expect.outcome) {
        failures.push(format!(
            "decision: expected {:?}, got {actual:?} (line: {record})",
            expect.outcome
        ));
    }
    let stage = record["stage"].as_str();
    if let Some(expected) = &expect.stage {
        if stage != Some(expected.as_str()) {
            failures.push(format!(
                "decision stage: expected {expected:?}, got {stage:?}"
            ));
        }
    }
    let reason = record["reason"].as_str();
    if let Some(expected) = &expect.reason {
        if reason != Some(expected.as_str()) {
            failures.push(format!(
                "decision reason: expected {expected:?}, got {reason:?}"
            ));
        }
    }
    if let Some(pattern) = &expect.reason_matches {
        let regex = regex::Regex::new(pattern)?;
        if !reason.is_some_and(|r| regex.is_match(r)) {
            failures.push(format!(
                "decision reason: expected to match /{pattern}/, got {reason:?}"
            ));
        }
    }
    Ok(())
}

fn check_headers(
    what: &str,
    expect: &HeaderExpectation,
    headers: &[(String, String)],
    failures: &mut Vec<String>,
) -> Result<()> {
    for name in &expect.present {
        if header(headers, name).is_none() {
            failures.push(format!("{what} `{name}`: expected present, got absent"));
        }
    }
    for name in &expect.absent {
        if let Some(value) = header(headers, name) {
            failures.push(format!("{what} `{name}`: expected absent, got {value:?}"));
        }
    }
    for (name, value) in &expect.equal {
        match header_values(headers, name).as_slice() {
            [only] if *only == value.as_str() => {}
            [] | [_] => failures.push(format!(
                "{what} `{name}`: expected {value:?}, got {:?}",
                header(headers, name)
            )),
            many => failures.push(format!(
                "{what} `{name}`: expected the single value {value:?}, got {many:?}"
            )),
        }
    }
    for (name, pattern) in &expect.matches {
        let regex = regex::Regex::new(pattern)?;
        match header_values(headers, name).as_slice() {
            [only] if regex.is_match(only) => {}
            [] | [_] => failures.push(format!(
                "{what} `{name}`: expected to match /{pattern}/, got {:?}",
                header(headers, name)
            )),
            many => failures.push(format!(
                "{what} `{name}`: expected a single value matching /{pattern}/, got {many:?}"
            )),
        }
    }
    for (name, values) in &expect.values {
        let actual = header_values(headers, name);
        if actual != values.iter().map(String::as_str).collect::<Vec<_>>() {
            failures.push(format!(
                "{what} `{name}`: expected the values {values:?}, got {actual:?}"
            ));
        }
    }
    Ok(())
}

fn check_body(
    what: &str,
    expect: &BodyExpectation,
    body: &[u8],
    failures: &mut Vec<String>,
) -> Result<()> {
    let text = String::from_utf8_lossy(body);
    if expect.empty && !body.is_empty() {
        failures.push(format!("{what}: expected empty, got {}", preview(body)));
    }
    if let Some(exact) = &expect.exact {
        if body != exact.as_bytes() {
            failures.push(format!(
                "{what}: expected exactly {exact:?}, got {}",
                preview(body)
            ));
        }
    }
    for needle in &expect.contains {
        if !text.contains(needle.as_str()) {
            failures.push(format!(
                "{what}: expected to contain {needle:?}, got {}",
                preview(body)
            ));
        }
    }
    for needle in &expect.not_contains {
        if text.contains(needle.as_str()) {
            failures.push(format!(
                "{what}: expected not to contain {needle:?}, but it does"
            ));
        }
    }
    let needs_json = expect.json.is_some()
        || !expect.json_paths.is_empty()
        || !expect.absent_paths.is_empty()
        || !expect.present_paths.is_empty();
    if !needs_json {
        return Ok(());
    }
    let document: serde_json::Value = match serde_json::from_slice(body) {
        Ok(document) => document,
        Err(e) => {
            failures.push(format!(
                "{what}: expected JSON, got {} ({e})",
                preview(body)
            ));
            return Ok(());
        }
    };
    if let Some(json) = &expect.json {
        if json != &document {
            failures.push(format!("{what}: expected {json}, got {document}"));
        }
    }
    for (path, value) in &expect.json_paths {
        let nodes = JsonPath::parse(path)?.query(&document).all();
        match nodes.as_slice() {
            [only] if *only == value => {}
            [only] => failures.push(format!("{what} {path}: expected {value}, got {only}")),
            [] => failures.push(format!("{what} {path}: expected {value}, got nothing")),
            many => failures.push(format!(
                "{what} {path}: expected one node {value}, got {}",
                many.len()
            )),
        }
    }
    for path in &expect.absent_paths {
        let nodes = JsonPath::parse(path)?.query(&document).all();
        if let Some(first) = nodes.first() {
            failures.push(format!(
                "{what} {path}: expected nothing, got {} node(s), first {first}",
                nodes.len()
            ));
        }
    }
    for path in &expect.present_paths {
        if JsonPath::parse(path)?.query(&document).all().is_empty() {
            failures.push(format!(
                "{what} {path}: expected at least one node, got nothing"
            ));
        }
    }
    Ok(())
}

fn preview(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    if text.len() > 300 {
        format!(
            "{:?}…",
            &text[..text.char_indices().nth(300).map_or(text.len(), |(i, _)| i)]
        )
    } else {
        format!("{text:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expectation(yaml: &str) -> Expectation {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn mismatches_name_expected_and_actual() {
        let observed = Observed {
            status: 403,
            headers: vec![("content-type".into(), "application/problem+json".into())],
            body: br#"{"a":{"b":1},"list":[{"email":"x@y"}]}"#.to_vec(),
            ..Default::default()
        };
        let failures = check(
            &expectation(
                r#"
status: 200
reached_upstream: true
headers: { present: [x-missing], absent: [content-type], equal: { content-type: text/plain } }
body: { json_paths: { "$.a.b": 2 }, absent_paths: ["$.list[*].email"], contains: ["zzz"] }
"#,
            ),
            &observed,
        )
        .unwrap();
        let all = failures.join("\n");
        assert_eq!(failures.len(), 8, "{all}");
        assert!(all.contains("status: expected 200, got 403"));
        assert!(all.contains("body $.a.b: expected 2, got 1"));
        assert!(all.contains("$.list[*].email: expected nothing"));
    }

    #[test]
    fn a_matching_observation_has_no_failures() {
        let observed = Observed {
            status: 200,
            headers: vec![("RateLimit".into(), "\"r\";r=4;t=60".into())],
            body: br#"{"id":"x"}"#.to_vec(),
            reached_upstream: true,
            ..Default::default()
        };
        let failures = check(
            &expectation(
                r#"
status: 200
reached_upstream: true
headers: { present: [ratelimit], matches: { ratelimit: "r=\\d+" } }
body: { json: { id: x }, present_paths: ["$.id"], not_contains: ["email"] }
"#,
            ),
            &observed,
        )
        .unwrap();
        assert!(failures.is_empty(), "{failures:?}");
    }

    #[test]
    fn a_duplicate_header_cannot_hide_behind_the_right_value() {
        let observed = Observed {
            status: 200,
            headers: vec![
                ("x-user-role".into(), "analyst".into()),
                ("x-user-role".into(), "operator".into()),
            ],
            ..Default::default()
        };
        let failures = check(
            &expectation(r#"headers: { equal: { x-user-role: analyst }, matches: { x-user-role: "^analyst$" } }"#),
            &observed,
        )
        .unwrap();
        assert_eq!(failures.len(), 2, "{failures:?}");
        assert!(failures[0].contains("single value"), "{failures:?}");
        let listed = check(
            &expectation(r#"headers: { values: { x-user-role: [analyst, operator] } }"#),
            &observed,
        )
        .unwrap();
        assert!(listed.is_empty(), "{listed:?}");
    }

    #[test]
    fn the_upstream_body_is_checked_like_the_reply_body() {
        let observed = Observed {
            status: 201,
            reached_upstream: true,
            upstream_body: br#"{"service_code":"pothole"}"#.to_vec(),
            ..Default::default()
        };
        let failures = check(
            &expectation(
                r#"
upstream_request:
  body: { exact: '{"service_code":"POTHOLE"}', json_paths: { "$.service_code": POTHOLE }, not_contains: [pothole] }
"#,
            ),
            &observed,
        )
        .unwrap();
        assert_eq!(failures.len(), 3, "{failures:?}");
        assert!(
            failures.iter().all(|f| f.starts_with("upstream body")),
            "{failures:?}"
        );
    }

    #[test]
    fn a_failed_policy_is_not_a_deliberate_denial() {
        let failed = Observed {
            status: 403,
            decision: Some(serde_json::json!({
                "request_id": "r1", "outcome": "denied", "stage": "policy",
                "reason": "the policy decision is undefined", "policy_error": true
            })),
            ..Default::default()
        };
        let denied = expectation(
            r#"decision: { outcome: denied, stage: policy, reason: "object outside the caller's district" }"#,
        );
        let failures = check(&denied, &failed).unwrap();
        assert_eq!(failures.len(), 2, "{failures:?}");
        assert!(
            failures[0].contains("expected Denied, got Some(Error)"),
            "{failures:?}"
        );
        let error = expectation(r#"decision: { outcome: error, reason_matches: "undefined" }"#);
        assert!(check(&error, &failed).unwrap().is_empty());
        let nothing = check(&error, &Observed::default()).unwrap();
        assert_eq!(
            nothing,
            vec!["decision: expected a decision-log line, found none"]
        );
    }
}
