//! The redactor as the pipeline uses it: the city pack's example profiles
//! (policies/config/redaction.json) on NGSI-v2, keyValues, NGSI-LD and
//! Open311 documents, body handling, configuration errors, metrics and the
//! decision-log summary.

use serde_json::{json, Value};

use super::*;
use crate::config::{self as plugin_config, PluginConfig};
use crate::host::memory::MemoryHost;

const EXAMPLE: &str = include_str!("../../../../policies/config/redaction.json");
const KEY_2026: &str = "test-key-2026-0123456789";
const KEY_2025: &str = "test-key-2025-0123456789";

fn env(name: &str) -> Option<String> {
    match name {
        "CITYGATE_PSEUDONYM_KEY" => Some(KEY_2026.into()),
        "CITYGATE_PSEUDONYM_KEY_2025" => Some(KEY_2025.into()),
        _ => None,
    }
}

/// The example fragment plus routes, as one plugin configuration.
fn config_with_routes(routes: Value) -> PluginConfig {
    let mut document: Value = serde_json::from_str(EXAMPLE).unwrap();
    document["routes"] = routes;
    plugin_config::parse(document.to_string().as_bytes(), &env).unwrap()
}

fn example() -> (Redactor, PluginConfig) {
    let config = config_with_routes(json!([
        {"name": "fleet", "match": {"path_prefix": "/v2"}, "auth": {"anonymous": true},
         "redaction": {"profile": "open-data", "remove_response_headers": ["server", "x-powered-by"]}},
        {"name": "strict", "match": {"path_prefix": "/strict"}, "redaction": {"require_profile": true}},
        {"name": "open", "match": {"path_prefix": "/"}}
    ]));
    let redactor = Redactor::compile(&config.redaction, &config.routes).unwrap();
    (redactor, config)
}

fn plan(profiles: &[&str]) -> ResponseRedaction {
    ResponseRedaction {
        profiles: profiles.iter().map(|p| p.to_string()).collect(),
        ..Default::default()
    }
}

const IDENTITY: BufferPlan = BufferPlan {
    max_bytes: DEFAULT_MAX_BODY_BYTES,
    coding: ContentCoding::Identity,
    declared_length: None,
};

fn minimize(redactor: &Redactor, profiles: &[&str], document: &Value) -> (Value, RedactionSummary) {
    let host = MemoryHost::default();
    let body = serde_json::to_vec(document).unwrap();
    let out = redactor
        .minimize(&plan(profiles), &IDENTITY, &body, &host)
        .unwrap();
    (serde_json::from_slice(&out.body).unwrap(), out.summary)
}

fn vehicle_v2() -> Value {
    json!({
        "id": "urn:ngsi-ld:Vehicle:waste-17", "type": "Vehicle",
        "licensePlate": {"type": "Text", "value": "M-AB 1234", "metadata": {}},
        "driverName": {"type": "Text", "value": "Erika Mustermann"},
        "location": {"type": "geo:json", "value": {"type": "Point", "coordinates": [11.5761, 48.1374]}},
        "position": {"type": "geo:point", "value": "48.1374, 11.5761"},
        "dateObserved": {"type": "DateTime", "value": "2026-11-20T08:15:42Z"},
        "fillingLevel": {"type": "Number", "value": 0.73}
    })
}

fn vehicle_key_values() -> Value {
    json!({
        "id": "urn:ngsi-ld:Vehicle:waste-17", "type": "Vehicle",
        "licensePlate": "M-AB 1234", "driverName": "Erika Mustermann",
        "location": {"type": "Point", "coordinates": [11.5761, 48.1374]},
        "position": "48.1374, 11.5761",
        "dateObserved": "2026-11-20T08:15:42Z", "fillingLevel": 0.73
    })
}

fn vehicle_ld() -> Value {
    json!({
        "id": "urn:ngsi-ld:Vehicle:waste-17", "type": "Vehicle",
        "@context": "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld",
        "licensePlate": {"type": "Property", "value": "M-AB 1234", "observedAt": "2026-11-20T08:15:42Z"},
        "driverName": {"type": "Property", "value": "Erika Mustermann"},
        "refDriver": {"type": "Relationship", "object": "urn:ngsi-ld:Person:erika"},
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [11.5761, 48.1374]}},
        "dateObserved": {"type": "Property", "value": {"@type": "DateTime", "@value": "2026-11-20T08:15:42Z"}}
    })
}

fn open311() -> Value {
    json!([{
        "service_request_id": "638344", "status": "open", "service_name": "Pothole",
        "description": "Deep hole. Call me at +49 170 1234567 or erika@example.org",
        "lat": 48.13741, "long": 11.57549,
        "requested_datetime": "2026-11-20T08:15:42+01:00",
        "address": "Marienplatz 1", "email": "erika@example.org",
        "first_name": "Erika", "last_name": "Mustermann", "phone": "+49 170 1234567"
    }])
}

fn pseudonym_of(value: &str) -> String {
    let keys =
        Pseudonymizer::new("k2026", KEY_2026.as_bytes(), &["k2025", "k2026"], &["pn_"]).unwrap();
    keys.token("pn_", 16, value)
}

fn assert_no_personal_data(text: &str) {
    for secret in [
        "Erika",
        "Mustermann",
        "M-AB 1234",
        "1234567",
        "erika@",
        "Marienplatz",
        "urn:ngsi-ld:Person",
    ] {
        assert!(!text.contains(secret), "`{secret}` leaked in {text}");
    }
}

#[test]
fn the_example_config_compiles_with_its_routes() {
    let (redactor, config) = example();
    assert_eq!(redactor.profiles.len(), 5);
    assert!(redactor.startup_warnings().is_empty());
    assert_eq!(
        redactor.response_headers_to_remove(&config.routes[0]),
        ["server", "x-powered-by"]
    );
}

#[test]
fn analyst_pseudonymizes_and_generalizes_ngsi_v2_normalized() {
    let (redactor, _) = example();
    let (out, summary) = minimize(&redactor, &["analyst"], &vehicle_v2());
    assert_eq!(
        out["licensePlate"],
        json!({"type": "Text", "value": pseudonym_of("M-AB 1234")})
    );
    assert_eq!(
        out["driverName"]["value"],
        json!(pseudonym_of("Erika Mustermann"))
    );
    assert_eq!(
        out["location"]["value"]["coordinates"],
        json!([11.576, 48.137])
    );
    assert_eq!(out["position"]["value"], json!("48.137, 11.576"));
    assert_eq!(out["dateObserved"]["value"], json!("2026-11-20T08:00:00Z"));
    assert_eq!(out["fillingLevel"]["value"], json!(0.73));
    assert_eq!(out["id"], json!("urn:ngsi-ld:Vehicle:waste-17"));
    assert_no_personal_data(&out.to_string());
    assert_eq!(summary.profiles, ["analyst"]);
    assert_eq!(summary.counts.get("hashed"), Some(&2));
    assert_eq!(summary.counts.get("generalized"), Some(&3));
    assert_eq!(
        summary.counts.get("removed"),
        Some(&1),
        "the plate's metadata"
    );
}

#[test]
fn the_same_rules_reach_key_values_and_ngsi_ld() {
    let (redactor, _) = example();
    let (kv, _) = minimize(&redactor, &["analyst"], &vehicle_key_values());
    assert_eq!(kv["licensePlate"], json!(pseudonym_of("M-AB 1234")));
    assert_eq!(kv["location"]["coordinates"], json!([11.576, 48.137]));
    assert_eq!(kv["position"], json!("48.137, 11.576"));
    assert_eq!(kv["dateObserved"], json!("2026-11-20T08:00:00Z"));
    assert_no_personal_data(&kv.to_string());

    let (ld, _) = minimize(&redactor, &["analyst"], &vehicle_ld());
    assert_eq!(
        ld["licensePlate"],
        json!({"type": "Property", "value": pseudonym_of("M-AB 1234"), "observedAt": "2026-11-20T08:15:42Z"})
    );
    assert_eq!(
        ld["refDriver"],
        json!({"type": "Relationship", "object": pseudonym_of("urn:ngsi-ld:Person:erika")})
    );
    assert_eq!(
        ld["location"]["value"]["coordinates"],
        json!([11.576, 48.137])
    );
    assert_eq!(ld["@context"], vehicle_ld()["@context"]);
    assert_no_personal_data(&ld.to_string());
}

#[test]
fn pseudonyms_join_across_forms_and_responses() {
    let (redactor, _) = example();
    let (v2, _) = minimize(&redactor, &["analyst"], &vehicle_v2());
    let (kv, _) = minimize(&redactor, &["analyst"], &vehicle_key_values());
    assert_eq!(v2["licensePlate"]["value"], kv["licensePlate"]);
}

#[test]
fn open_data_keeps_only_allowed_non_personal_members() {
    let (redactor, _) = example();
    let person = json!({"id": "urn:ngsi-ld:Person:erika", "type": "Person", "name": {"type": "Text", "value": "Erika"}});
    let (out, summary) = minimize(
        &redactor,
        &["open-data"],
        &json!([vehicle_v2(), vehicle_ld(), person]),
    );
    let entities = out.as_array().unwrap();
    assert_eq!(entities.len(), 2, "the Person entity is dropped");
    for entity in entities {
        for key in entity.as_object().unwrap().keys() {
            assert!(
                [
                    "id",
                    "type",
                    "@context",
                    "location",
                    "dateObserved",
                    "fillingLevel"
                ]
                .contains(&key.as_str()),
                "{key} survived the allowlist"
            );
        }
    }
    assert_eq!(
        out[0]["location"]["value"]["coordinates"],
        json!([11.58, 48.14])
    );
    assert_eq!(
        out[0]["dateObserved"]["value"],
        json!("2026-11-20T00:00:00Z")
    );
    assert_no_personal_data(&out.to_string());
    assert_eq!(summary.counts.get("dropped_entities"), Some(&1));
}

#[test]
fn open311_for_citizens_operators_and_open_data() {
    let (redactor, _) = example();
    let (citizen, _) = minimize(&redactor, &["citizen"], &open311());
    let request = &citizen[0];
    for gone in ["email", "first_name", "last_name", "phone"] {
        assert!(request.get(gone).is_none(), "{gone}");
    }
    assert_eq!(request["address"], json!("[withheld]"));
    assert_eq!(
        request["description"],
        json!("Deep hole. Call me at [redacted] or [redacted]")
    );
    assert_eq!(request["lat"], json!(48.137));
    assert_no_personal_data(&citizen.to_string());

    let (operator, _) = minimize(&redactor, &["operator"], &open311());
    assert_eq!(operator[0]["phone"], json!("+49**********67"));
    assert_eq!(operator[0]["email"], json!("e****************"));
    assert_eq!(
        operator[0]["first_name"],
        json!("Erika"),
        "operators see names"
    );
    assert!(!operator[0]["description"]
        .as_str()
        .unwrap()
        .contains("erika@"));

    let (open, _) = minimize(&redactor, &["open-data"], &open311());
    assert_eq!(
        open,
        json!([{"service_request_id": "638344", "status": "open", "service_name": "Pothole",
                "lat": 48.14, "long": 11.58, "requested_datetime": "2026-11-20T00:00:00+01:00"}])
    );
}

#[test]
fn emergency_changes_nothing_but_still_requires_json() {
    let (redactor, _) = example();
    let (out, summary) = minimize(&redactor, &["emergency"], &vehicle_v2());
    assert_eq!(out, vehicle_v2());
    assert!(summary.counts.is_empty());
    let host = MemoryHost::default();
    let html = vec![("content-type".to_string(), "text/html".to_string())];
    let refused = redactor
        .on_response_headers(&plan(&["emergency"]), 200, &html, false, &host)
        .unwrap_err();
    assert_eq!(refused.status, 502);
}

#[test]
fn profiles_compose_in_order() {
    let (redactor, _) = example();
    let (out, _) = minimize(&redactor, &["emergency", "open-data"], &vehicle_v2());
    assert!(out.get("driverName").is_none());
}

#[test]
fn the_decision_chooses_else_the_route_default() {
    let (redactor, config) = example();
    let fleet = &config.routes[0];
    let chosen = redactor.plan_response(fleet, &[], "GET").unwrap();
    assert_eq!(chosen.profiles, ["open-data"]);
    assert_eq!(chosen.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
    let chosen = redactor
        .plan_response(fleet, &["analyst".into(), "analyst".into()], "HEAD")
        .unwrap();
    assert_eq!(chosen.profiles, ["analyst"]);
    assert!(chosen.head_request);
    let open = redactor
        .plan_response(&config.routes[2], &[], "GET")
        .unwrap();
    assert!(open.profiles.is_empty());
}

#[test]
fn unknown_or_missing_profiles_are_refused_before_the_upstream() {
    let (redactor, config) = example();
    let unknown = redactor
        .plan_response(&config.routes[0], &["everything".into()], "GET")
        .unwrap_err();
    assert_eq!(unknown.status, 500);
    assert_eq!(unknown.problem, "redaction-profile-unknown");
    assert!(!unknown.detail.contains("everything"));
    let missing = redactor
        .plan_response(&config.routes[1], &[], "GET")
        .unwrap_err();
    assert_eq!(missing.problem, "redaction-profile-missing");
    assert!(redactor
        .plan_response(&config.routes[1], &["citizen".into()], "GET")
        .is_ok());
}

#[test]
fn unparseable_bodies_fail_closed_without_echoing_them() {
    let (redactor, _) = example();
    let host = MemoryHost::default();
    let bodies: Vec<Vec<u8>> = vec![
        b"{\"name\": \"Erika\"".to_vec(),
        b"{\"name\": \"Erika\xff\"}".to_vec(),
        format!("{}1{}", "[".repeat(200), "]".repeat(200)).into_bytes(),
        b"\xFF\xFE{\x00}\x00".to_vec(),
        b"{\"n\": 1e400}".to_vec(),
    ];
    for body in bodies {
        let denial = redactor
            .minimize(&plan(&["analyst"]), &IDENTITY, &body, &host)
            .unwrap_err();
        assert_eq!(denial.status, 502);
        assert!(!denial.detail.contains("Erika"));
    }
    assert_eq!(host.counter(Metric::RedactionResponses), 0);
}

#[test]
fn duplicate_members_collapse_so_none_escapes_a_rule() {
    let (redactor, _) = example();
    let host = MemoryHost::default();
    let body = br#"{"email":"erika@example.org","id":"a","email":"max@example.org"}"#;
    let out = redactor
        .minimize(&plan(&["citizen"]), &IDENTITY, body, &host)
        .unwrap();
    assert_eq!(out.body, br#"{"id":"a"}"#);
}

#[test]
fn bom_is_stripped_and_empty_bodies_stay_empty() {
    let (redactor, _) = example();
    let host = MemoryHost::default();
    let out = redactor
        .minimize(
            &plan(&["citizen"]),
            &IDENTITY,
            b"\xEF\xBB\xBF{\"phone\":\"1\"}",
            &host,
        )
        .unwrap();
    assert_eq!(out.body, b"{}");
    let out = redactor
        .minimize(&plan(&["citizen"]), &IDENTITY, b"", &host)
        .unwrap();
    assert!(out.body.is_empty());
}

#[test]
fn metrics_count_by_action() {
    let (redactor, _) = example();
    let host = MemoryHost::default();
    let body = serde_json::to_vec(&open311()).unwrap();
    redactor
        .minimize(&plan(&["citizen"]), &IDENTITY, &body, &host)
        .unwrap();
    assert_eq!(host.counter(Metric::RedactionResponses), 1);
    assert_eq!(host.counter(Metric::RedactionRemoved), 4);
    assert_eq!(
        host.counter(Metric::RedactionMasked),
        3,
        "address + two spans replaced"
    );
    assert_eq!(host.counter(Metric::RedactionGeneralized), 2);
    assert_eq!(host.counter(Metric::RedactionDetectorHits), 2);
    assert_eq!(host.counter(Metric::RedactionFields), 9);
}

#[test]
fn the_decision_log_line_carries_profile_and_counts_never_values() {
    let (redactor, _) = example();
    let (_, summary) = minimize(&redactor, &["analyst"], &vehicle_v2());
    let host = MemoryHost::default();
    let record = crate::decision_log::DecisionRecord {
        redaction: Some(summary),
        ..Default::default()
    };
    record.emit(&host);
    let line: Value = serde_json::from_str(&host.log_lines()[0]).unwrap();
    assert_eq!(line["redaction"]["profiles"], json!(["analyst"]));
    assert_eq!(line["redaction"]["counts"]["hashed"], json!(2));
    assert_no_personal_data(&line.to_string());
    assert!(!line.to_string().contains("pn_k2026"));
}

#[test]
fn mask_lengths_from_the_config_cannot_overflow() {
    let mut config = config_with_routes(json!([])).redaction;
    config.profiles.insert(
        "huge".into(),
        serde_json::from_value(json!({"rules": [
            {"fields": ["phone"], "action": {"mask": {"keep_first": usize::MAX, "keep_last": usize::MAX}}}
        ]}))
        .unwrap(),
    );
    let redactor = Redactor::compile(&config, &[]).unwrap();
    let (out, _) = minimize(&redactor, &["huge"], &json!({"phone": "+49 170 1234567"}));
    assert_eq!(out["phone"], json!("***************"));
}

#[test]
fn jsonpath_rules_and_filters() {
    let config = config_with_routes(json!([]));
    let mut redaction = config.redaction.clone();
    let rules: Value = json!([
        {"path": "$.results[*].owner", "action": "remove"},
        {"path": "$.results[?@.visibility == 'private']", "action": "drop_entity"},
        {"path": "$.results[*].note", "action": {"replace": {"with": null}}}
    ]);
    redaction.profiles.insert(
        "paths".into(),
        ProfileConfig {
            rules: serde_json::from_value(rules).unwrap(),
            ..Default::default()
        },
    );
    let redactor = Redactor::compile(&redaction, &[]).unwrap();
    let (out, summary) = minimize(
        &redactor,
        &["paths"],
        &json!({"results": [
            {"id": 1, "owner": "Erika", "note": "x", "visibility": "public"},
            {"id": 2, "owner": "Max", "visibility": "private"},
            {"id": 3, "owner": "Eva", "note": "y", "visibility": "public"}
        ]}),
    );
    assert_eq!(
        out,
        json!({"results": [
            {"id": 1, "note": null, "visibility": "public"},
            {"id": 3, "note": null, "visibility": "public"}
        ]})
    );
    assert_eq!(summary.counts.get("dropped_entities"), Some(&1));
}

#[test]
fn drop_entity_with_a_path_tests_nested_nodes_too() {
    let mut config = config_with_routes(json!([])).redaction;
    config.profiles.insert(
        "drop".into(),
        serde_json::from_value(json!({"rules": [
            {"path": "$..*", "action": "drop_entity", "when": {"field": "type", "equals": "Person"}}
        ]}))
        .unwrap(),
    );
    let redactor = Redactor::compile(&config, &[]).unwrap();
    let (out, summary) = minimize(
        &redactor,
        &["drop"],
        &json!({"fleet": {"vehicles": [{"type": "Vehicle", "driver": {"type": "Person", "name": "Erika"}}]}}),
    );
    assert_eq!(out, json!({"fleet": {"vehicles": [{"type": "Vehicle"}]}}));
    assert_eq!(summary.counts.get("dropped_entities"), Some(&1));
}

#[test]
fn allowlists_take_jsonpaths_for_nested_members() {
    let mut config = config_with_routes(json!([])).redaction;
    config.profiles.insert(
        "nested".into(),
        serde_json::from_value(json!({"mode": "allowlist", "allow": ["$.results[*].id", "total"]}))
            .unwrap(),
    );
    let redactor = Redactor::compile(&config, &[]).unwrap();
    let (out, _) = minimize(
        &redactor,
        &["nested"],
        &json!({"results": [{"id": 1, "name": "Erika", "driver": {"id": "d"}}], "total": 1, "owner": "x"}),
    );
    assert_eq!(out, json!({"results": [{"id": 1}], "total": 1}));
}

#[test]
fn tokens_of_a_rotated_key_are_recognized_not_rehashed() {
    let (redactor, _) = example();
    let old = Pseudonymizer::new("k2025", KEY_2025.as_bytes(), &["k2025"], &["pn_"]).unwrap();
    let old_token = old.token("pn_", 16, "Erika Mustermann");
    let (out, summary) = minimize(&redactor, &["analyst"], &json!({"driverName": old_token}));
    assert_eq!(out["driverName"], json!(old_token));
    assert!(!summary.counts.contains_key("hashed"));
    let (fresh, _) = minimize(
        &redactor,
        &["analyst"],
        &json!({"driverName": "Erika Mustermann"}),
    );
    assert!(fresh["driverName"]
        .as_str()
        .unwrap()
        .starts_with("pn_k2026:"));
}

fn compile_error(redaction: Value, routes: Value) -> crate::config::ConfigError {
    let document = json!({"redaction": redaction, "routes": routes});
    match plugin_config::parse(document.to_string().as_bytes(), &env) {
        Ok(config) => Redactor::compile(&config.redaction, &config.routes).unwrap_err(),
        Err(error) => error,
    }
}

#[test]
fn configuration_errors_name_their_json_path() {
    let route = |redaction: Value| json!([{"name": "r", "match": {"path_prefix": "/"}, "redaction": redaction}]);
    let cases = [
        (
            compile_error(json!({}), route(json!({"profile": "nope"}))),
            "$.routes[0].redaction.profile",
        ),
        (
            compile_error(
                json!({"profiles": {"p": {"rules": [{"path": "$[", "action": "remove"}]}}}),
                json!([]),
            ),
            "$.redaction.profiles.p.rules[0].path",
        ),
        (
            compile_error(
                json!({"profiles": {"open-data": {"rules": [{"detect": ["dna"], "action": "remove"}]}}}),
                json!([]),
            ),
            "$.redaction.profiles[\"open-data\"].rules[0].detect[0]",
        ),
        (
            compile_error(
                json!({"profiles": {"p": {"rules": [{"fields": ["a"], "action": {"hash": {}}}]}}}),
                json!([]),
            ),
            "$.redaction.profiles.p.rules[0].action",
        ),
        (
            compile_error(
                json!({"keys": {"k1": "short"}, "active_key": "k1"}),
                json!([]),
            ),
            "$.redaction.keys.k1",
        ),
        (
            compile_error(
                json!({"keys": {"k1": "0123456789abcdef"}, "active_key": "k2"}),
                json!([]),
            ),
            "$.redaction.active_key",
        ),
        (
            compile_error(json!({"profiles": {"p": {"allow": ["id"]}}}), json!([])),
            "$.redaction.profiles.p.allow",
        ),
        (
            compile_error(
                json!({"profiles": {"p": {"rules": [{"action": "remove"}]}}}),
                json!([]),
            ),
            "$.redaction.profiles.p.rules[0]",
        ),
        (
            compile_error(
                json!({"profiles": {"p": {"rules": [{"detect": ["email"], "action": {"generalize": {"kind": "number", "decimals": 1}}}]}}}),
                json!([]),
            ),
            "$.redaction.profiles.p.rules[0].action",
        ),
        (
            compile_error(
                json!({"profiles": {"p": {"rules": [{"action": "drop_entity", "when": {"field": "a", "equals": 1, "exists": true}}]}}}),
                json!([]),
            ),
            "$.redaction.profiles.p.rules[0].when",
        ),
        (
            compile_error(json!({}), route(json!({"max_body_bytes": 0}))),
            "$.routes[0].redaction.max_body_bytes",
        ),
        (
            compile_error(
                json!({}),
                route(json!({"remove_response_headers": ["Content-Type"]})),
            ),
            "$.routes[0].redaction.remove_response_headers[0]",
        ),
        (
            compile_error(
                json!({}),
                route(json!({"remove_response_headers": ["content-type"]})),
            ),
            "$.routes[0].redaction.remove_response_headers[0]",
        ),
        (
            compile_error(json!({}), route(json!({"drop_request_headers": [":path"]}))),
            "$.routes[0].redaction.drop_request_headers[0]",
        ),
        (
            compile_error(json!({}), route(json!({"client_ip_prefix_v4": 33}))),
            "$.routes[0].redaction.client_ip_prefix_v4",
        ),
        (
            compile_error(json!({"profiles": {"p": {"mode": "strict"}}}), json!([])),
            "$.redaction.profiles.p.mode",
        ),
    ];
    for (error, path) in cases {
        assert_eq!(error.path, path, "{error}");
        assert!(!error.to_string().contains('\n'));
    }
}

#[test]
fn key_material_never_appears_in_errors() {
    let error = compile_error(
        json!({"keys": {"k1": "tiny-secret"}, "active_key": "k1"}),
        json!([]),
    );
    assert!(!error.to_string().contains("tiny-secret"));
}

#[test]
fn fail_open_routes_are_announced() {
    let config = config_with_routes(json!([
        {"name": "legacy", "match": {"path_prefix": "/"}, "redaction": {"profile": "citizen", "allow_non_json": true}}
    ]));
    let redactor = Redactor::compile(&config.redaction, &config.routes).unwrap();
    assert_eq!(redactor.startup_warnings().len(), 1);
    assert!(redactor.startup_warnings()[0].contains("`legacy`"));
}

mod properties {
    //! Properties over generated documents: output is JSON, planted PII never
    //! survives, redaction is idempotent, allowlists keep only what they allow.

    use proptest::prelude::*;

    use super::*;

    const KEYS: &[&str] = &[
        "id",
        "type",
        "name",
        "email",
        "phone",
        "value",
        "location",
        "coordinates",
        "description",
        "status",
        "metadata",
        "note",
    ];

    const PLANTED: &[&str] = &[
        "erika.mustermann@example.org",
        "+49 170 1234567",
        "089/233-96000",
        "DE89 3704 0044 0532 0130 00",
        "4111 1111 1111 1111",
        "203.0.113.77",
        "2001:db8:abcd:12::1",
        "M-AB 1234",
    ];

    fn leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            (-1.0e6f64..1.0e6).prop_map(Value::from),
            "[a-zA-Z0-9 .,:-]{0,16}".prop_map(Value::String),
        ]
    }

    fn document() -> impl Strategy<Value = Value> {
        json_documents(leaf(), KEYS, (5, 64, 6), 0)
    }

    /// A document whose strings each carry a planted detector match.
    fn planted_document() -> impl Strategy<Value = Value> {
        let text = ("[a-z]{1,8}", prop::sample::select(PLANTED), "[a-z]{0,8}")
            .prop_map(|(before, pii, after)| Value::String(format!("{before} {pii} {after}")));
        // Every container holds at least one planted string.
        json_documents(text, KEYS, (4, 32, 5), 1)
    }

    fn mixed() -> Redactor {
        let mut config = config_with_routes(json!([])).redaction;
        config.profiles.insert(
            "mixed".into(),
            serde_json::from_value(json!({"rules": [
                {"fields": ["name"], "action": {"hash": {}}},
                {"fields": ["phone"], "action": {"mask": {"keep_first": 2, "keep_last": 2}}},
                {"fields": ["email"], "action": "remove"},
                {"fields": ["location", "coordinates"], "action": {"generalize": {"kind": "coordinates", "decimals": 3}}},
                {"fields": ["note"], "action": {"generalize": {"kind": "timestamp", "to": "hour"}}},
                {"action": "drop_entity", "when": {"field": "status", "equals": "private"}},
                {"detect": ["email", "phone", "licence_plate"], "action": {"hash": {}}},
                {"detect": ["iban", "payment_card"], "action": {"mask": {"keep_first": 0, "keep_last": 0}}},
                {"detect": ["ip"], "action": {"generalize": {"kind": "ip"}}}
            ]})).unwrap(),
        );
        config.profiles.insert(
            "allow".into(),
            serde_json::from_value(json!({"mode": "allowlist", "allow": ["id", "type", "status"]}))
                .unwrap(),
        );
        Redactor::compile(&config, &[]).unwrap()
    }

    fn run(redactor: &Redactor, profile: &str, body: &[u8]) -> Vec<u8> {
        let host = MemoryHost::default();
        redactor
            .minimize(&plan(&[profile]), &IDENTITY, body, &host)
            .unwrap()
            .body
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn output_is_valid_json_and_idempotent(document in document()) {
            let redactor = mixed();
            let once = run(&redactor, "mixed", &serde_json::to_vec(&document).unwrap());
            prop_assert!(serde_json::from_slice::<Value>(&once).is_ok());
            let twice = run(&redactor, "mixed", &once);
            prop_assert_eq!(once, twice);
        }

        #[test]
        fn planted_pii_never_survives(document in planted_document()) {
            let redactor = mixed();
            let out = run(&redactor, "mixed", &serde_json::to_vec(&document).unwrap());
            let text = String::from_utf8(out.clone()).unwrap();
            for pii in PLANTED {
                prop_assert!(!text.contains(pii), "{} survived in {}", pii, text);
            }
            let library = detect::DetectorLibrary::compile(&Default::default(), &Default::default()).unwrap();
            let everything: Vec<_> = ["email", "phone", "iban", "payment_card", "licence_plate"]
                .iter()
                .flat_map(|n| library.get(n).unwrap().to_vec())
                .collect();
            let set = detect::DetectorSet::new(everything);
            let parsed: Value = serde_json::from_slice(&out).unwrap();
            let keys = redactor.pseudonyms.as_ref().unwrap();
            let mut strings = Vec::new();
            collect_strings(&parsed, &mut strings);
            for s in strings {
                let hits = set.find(&s, &keys.token_spans(&s));
                prop_assert!(hits.is_empty(), "detector match left in {}", s);
            }
            prop_assert_eq!(run(&redactor, "mixed", &out), out);
        }

        #[test]
        fn allowlist_output_holds_only_allowed_members(document in document()) {
            let redactor = mixed();
            let out = run(&redactor, "allow", &serde_json::to_vec(&document).unwrap());
            let parsed: Value = serde_json::from_slice(&out).unwrap();
            prop_assert!(only_allowed_at_entity_level(&parsed, &["id", "type", "status"]));
            prop_assert_eq!(run(&redactor, "allow", &out), out);
        }
    }

    fn collect_strings(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::String(s) => out.push(s.clone()),
            Value::Array(items) => items.iter().for_each(|v| collect_strings(v, out)),
            Value::Object(fields) => fields.iter().for_each(|(k, v)| {
                out.push(k.clone());
                collect_strings(v, out);
            }),
            _ => {}
        }
    }

    fn only_allowed_at_entity_level(value: &Value, allowed: &[&str]) -> bool {
        match value {
            Value::Object(fields) => fields.keys().all(|k| allowed.contains(&k.as_str())),
            Value::Array(items) => items.iter().all(|item| {
                matches!(item, Value::Object(_) | Value::Array(_))
                    && only_allowed_at_entity_level(item, allowed)
            }),
            // A scalar root document is withheld whole.
            other => other.is_null(),
        }
    }
}

#[test]
fn an_attribute_served_alone_is_minimized_as_that_attribute() {
    assert_eq!(
        ngsi_attribute("/v2/entities/urn:ngsi-ld:Vehicle:1/attrs/driverName").as_deref(),
        Some("driverName")
    );
    assert_eq!(
        ngsi_attribute("/v2/entities/v1/attrs/driverName/value").as_deref(),
        Some("driverName")
    );
    assert_eq!(ngsi_attribute("/v2/entities/v1/attrs"), None);
    assert_eq!(ngsi_attribute("/v2/entities/v1"), None);
    assert_eq!(ngsi_attribute("/v2/entities"), None);

    let (redactor, _) = example();
    let host = MemoryHost::default();
    let as_attribute = |profile: &str, document: &Value| -> Value {
        let redaction = ResponseRedaction {
            ngsi_attribute: Some("driverName".into()),
            ..plan(&[profile])
        };
        let body = serde_json::to_vec(document).unwrap();
        let out = redactor
            .minimize(&redaction, &IDENTITY, &body, &host)
            .unwrap();
        serde_json::from_slice(&out.body).unwrap()
    };
    // `…/attrs/driverName`: the attribute, pseudonymized in its shape.
    let attribute = as_attribute(
        "analyst",
        &json!({"type": "Text", "value": "Erika Mustermann"}),
    );
    assert_eq!(attribute["type"], "Text");
    assert!(attribute["value"]
        .as_str()
        .unwrap()
        .starts_with("pn_k2026:"));
    // `…/attrs/driverName/value`: the bare value.
    let value = as_attribute("analyst", &json!("Erika Mustermann"));
    assert!(value.as_str().unwrap().starts_with("pn_k2026:"), "{value}");
    // Open data does not allow the attribute at all.
    assert_eq!(
        as_attribute("open-data", &json!("Erika Mustermann")),
        Value::Null
    );
}

/// Texts and member names the example profiles act on, and some they do not.
const FRAGMENTS: &[&str] = &[
    "erika@example.org",
    "call +49 30 1234567 or erika@example.org",
    "DE89 3704 0044 0532 0130 00",
    "4111 1111 1111 1111",
    "B-XY 123",
    "AZ-123456",
    "10.1.2.3",
    "2001:db8::1",
    "pn_0123456789abcdef",
    "Vehicle",
    "plain words",
    "",
];
const NAMES: &[&str] = &[
    "id",
    "type",
    "value",
    "email",
    "phone",
    "name",
    "driverName",
    "location",
    "erika@example.org",
    "x@example.org",
    "+49 30 1234567",
    "https://example.org/ns#email",
];

fn fragment_document() -> impl proptest::strategy::Strategy<Value = Value> {
    use proptest::prelude::*;
    let leaf = prop_oneof![
        proptest::sample::select(FRAGMENTS).prop_map(|s| Value::String(s.to_string())),
        any::<i32>().prop_map(Value::from),
        Just(Value::Null),
    ];
    json_documents(leaf, NAMES, (4, 48, 6), 0)
}

/// JSON trees of `leaf` values: arrays and objects (member names from
/// `names`, repeats collapsing as in a parsed document) nested as
/// proptest's `(depth, size, width)` allow, each container with at least
/// `min_members`.
fn json_documents(
    leaf: impl proptest::strategy::Strategy<Value = Value> + 'static,
    names: &'static [&'static str],
    (depth, size, width): (u32, u32, u32),
    min_members: usize,
) -> impl proptest::strategy::Strategy<Value = Value> {
    use proptest::prelude::*;
    let members = min_members..width as usize;
    leaf.prop_recursive(depth, size, width, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), members.clone()).prop_map(Value::Array),
            proptest::collection::vec((proptest::sample::select(names), inner), members.clone())
                .prop_map(|members| {
                    Value::Object(
                        members
                            .into_iter()
                            .map(|(k, v)| (k.to_string(), v))
                            .collect(),
                    )
                }),
        ]
    })
}

proptest::proptest! {
    /// A profile whose detect rules share one walk gives what one walk per
    /// rule gives: the same document and the same counts.
    #[test]
    fn one_walk_for_the_detect_rules_equals_one_walk_per_rule(document in fragment_document()) {
        let (redactor, _) = example();
        for (name, profile) in &redactor.profiles {
            let (mut walked_once, mut walked_per_rule) = (document.clone(), document.clone());
            let mut once = actions::Work { pseudonyms: redactor.pseudonyms.as_ref(), counts: Default::default() };
            let mut per_rule = actions::Work { pseudonyms: redactor.pseudonyms.as_ref(), counts: Default::default() };
            profile.apply(&mut walked_once, &mut once);
            profile.apply_rule_by_rule(&mut walked_per_rule, &mut per_rule);
            proptest::prop_assert_eq!(&walked_once, &walked_per_rule, "profile {}", name);
            proptest::prop_assert_eq!(once.counts, per_rule.counts, "profile {}", name);
        }
    }
}
