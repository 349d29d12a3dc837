//! `citygate eval`: the input document, decision, redaction profile and
//! evaluation time for one request against the city pack, natively.

use std::collections::BTreeMap;
use std::process::Command;

use citygate_host::cli::{CITY_CONFIG, CITY_ENV, DEFAULT_CREDENTIALS};
use citygate_host::env_file::read_env_file;
use citygate_host::eval::{evaluate, EvalRequest, Evaluation, GatewayAction, RemoteKeys};
use citygate_host::scenario::credentials::Credentials;
use citygate_host::wasm_build::workspace_root;
use serde_json::json;

fn credentials() -> Credentials {
    Credentials::load(&workspace_root().join(DEFAULT_CREDENTIALS)).unwrap()
}

fn city(request: EvalRequest) -> Evaluation {
    let root = workspace_root();
    let config = std::fs::read_to_string(root.join(CITY_CONFIG)).unwrap();
    let env: BTreeMap<String, String> = read_env_file(&root.join(CITY_ENV)).unwrap();
    let keys = RemoteKeys::Jwks(credentials().jwks("city-idp", None).unwrap());
    evaluate(&config, &env, &keys, &request).unwrap()
}

fn get(path: &str, headers: &[(&str, &str)]) -> EvalRequest {
    EvalRequest {
        method: "GET".into(),
        path: path.into(),
        headers: headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
        ..EvalRequest::default()
    }
    .expanded(Some(&credentials()))
    .unwrap()
}

#[test]
fn a_citizen_listing_their_requests_shows_input_decision_profile_and_time() {
    let e = city(get(
        "/open311/v2/requests.json?account_id=citizen-anna",
        &[("authorization", "Bearer {{jwt:citizen}}")],
    ));
    assert_eq!(e.route.as_deref(), Some("open311-request-list"));
    let input = e.input.as_ref().unwrap();
    assert_eq!(input["identity"]["subject"], "citizen-anna");
    assert_eq!(input["identity"]["roles"], json!(["citizen"]));
    assert_eq!(input["identity"]["claims"]["amr"], json!(["pwd", "mfa"]));
    assert_eq!(
        input["parsed_path"],
        json!(["open311", "v2", "requests.json"])
    );
    assert_eq!(input["parsed_query"]["account_id"], json!(["citizen-anna"]));
    assert_eq!(input["attributes"]["request"]["http"]["method"], "GET");
    assert_eq!(input["route"]["name"], "open311-request-list");
    let decision = e.decision.as_ref().unwrap();
    assert_eq!(decision["allowed"], true);
    assert_eq!(decision["redact"], json!(["citizen"]));
    assert_eq!(decision["reason"], "citizen access");
    assert_eq!(e.redaction_profiles, ["citizen"]);
    assert!(e.eval_micros.is_some());
    assert!(
        matches!(e.outcome, GatewayAction::Forwarded { .. }),
        "{:?}",
        e.outcome
    );
}

#[test]
fn a_denial_shows_the_policy_status_and_body_and_no_profile() {
    let e = city(get(
        "/open311/v2/requests/EX-2.json",
        &[("authorization", "Bearer {{jwt:emergency}}")],
    ));
    let decision = e.decision.as_ref().unwrap();
    assert_eq!(decision["allowed"], false);
    assert_eq!(decision["http_status"], 400);
    assert!(e.redaction_profiles.is_empty());
    match &e.outcome {
        GatewayAction::Answered {
            status,
            stage,
            body,
            ..
        } => {
            assert_eq!(*status, 400);
            assert_eq!(stage.as_deref(), Some("policy"));
            assert!(body.contains("x-access-reason"), "{body}");
        }
        other => panic!("expected a local reply, got {other:?}"),
    }
}

#[test]
fn a_request_stopped_before_the_policy_has_no_input() {
    let e = city(get("/admin/users", &[]));
    assert!(e.input.is_none() && e.decision.is_none());
    assert!(
        matches!(e.outcome, GatewayAction::Answered { status: 404, .. }),
        "{:?}",
        e.outcome
    );
    let e = city(get(
        "/open311/v2/requests.json",
        &[("authorization", "Bearer {{jwt:citizen:alg_none}}")],
    ));
    assert!(e.input.is_none());
    assert!(
        matches!(&e.outcome, GatewayAction::Answered { status: 401, stage: Some(s), .. } if s == "auth"),
        "{:?}",
        e.outcome
    );
}

#[test]
fn a_request_file_carries_a_form_body_the_policy_parses() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("request.yaml");
    std::fs::write(
        &file,
        "method: POST\npath: /open311/v2/requests.json\nheaders:\n  authorization: \"Bearer {{jwt:citizen}}\"\n  content-type: application/x-www-form-urlencoded\nbody: \"service_code=POTHOLE&account_id=citizen-anna\"\n",
    )
    .unwrap();
    let e = city(EvalRequest::from_file(&file, Some(&credentials())).unwrap());
    let input = e.input.as_ref().unwrap();
    assert_eq!(input["parsed_body"]["account_id"], json!(["citizen-anna"]));
    assert_eq!(input["truncated_body"], false);
    assert_eq!(e.decision.as_ref().unwrap()["allowed"], true);
    assert_eq!(e.redaction_profiles, ["citizen"]);
}

#[test]
fn the_command_prints_the_report() {
    let root = workspace_root();
    let output = Command::new(env!("CARGO_BIN_EXE_citygate"))
        .current_dir(&root)
        .args(["eval", "--config", CITY_CONFIG, "--env-file", CITY_ENV])
        .args(["--path", "/v2/entities?type=ParkingSpot"])
        .args(["--header", "x-api-key:{{api_key:parking-app}}"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for line in [
        "route:      ngsi-v2-entities",
        "identity:   api_key parking-app",
        "\"parsed_query\": {",
        "decision:   {\"allowed\":true,\"redact\":[\"open-data\"],\"reason\":\"open-data access\"}",
        "redaction:  open-data",
        "result:     forwarded upstream",
    ] {
        assert!(stdout.contains(line), "missing `{line}` in:\n{stdout}");
    }
    assert!(stdout.contains("evaluation: ") && stdout.contains(" µs (native)"));
}
