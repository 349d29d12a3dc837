use super::*;

fn request<'a>(
    method: &'a str,
    path: &'a str,
    query: &'a [(String, String)],
    headers: &'a [(String, String)],
    body: Option<&'a [u8]>,
) -> RequestParts<'a> {
    RequestParts {
        method,
        path,
        query,
        headers,
        body,
        parse_json: &json,
    }
}

/// The policy hands in its strict parser; a plain one serves here (the
/// policy's tests cover repeated members).
fn json(bytes: &[u8]) -> Option<serde_json::Value> {
    serde_json::from_slice(bytes).ok()
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Derives with no query, headers or body.
fn bare(api: Api, method: &str, path: &str) -> NgsiRequest {
    derive(api, &request(method, path, &[], &[], Some(b""))).unwrap()
}

fn with_body(api: Api, method: &str, path: &str, body: &str) -> Result<NgsiRequest, NgsiError> {
    derive(api, &request(method, path, &[], &[], Some(body.as_bytes())))
}

#[test]
fn every_v2_path_has_its_action() {
    use Action::*;
    let cases: &[(&str, &str, Action)] = &[
        ("GET", "/v2/entities", ReadEntities),
        ("HEAD", "/v2/entities", ReadEntities),
        ("GET", "/v2/entities/e1", ReadEntities),
        ("GET", "/v2/entities/e1/attrs", ReadEntities),
        ("GET", "/v2/entities/e1/attrs/speed", ReadEntities),
        ("GET", "/v2/entities/e1/attrs/speed/value", ReadEntities),
        ("DELETE", "/v2/entities/e1", DeleteEntities),
        ("DELETE", "/v2/entities/e1/attrs/speed", UpdateEntities),
        ("GET", "/v2/types", ReadTypes),
        ("GET", "/v2/types/Vehicle", ReadTypes),
        ("GET", "/v2/subscriptions", ReadSubscriptions),
        ("GET", "/v2/subscriptions/s1", ReadSubscriptions),
        ("DELETE", "/v2/subscriptions/s1", DeleteSubscriptions),
        ("GET", "/v2/registrations", ReadRegistrations),
        ("DELETE", "/v2/registrations/r1", DeleteRegistrations),
        ("GET", "/v2", Unknown),
        ("GET", "/v2/op/update", Unknown),
        ("PUT", "/v2/entities", Unknown),
        ("GET", "/v2/entities/e1/attrs/speed/value/x", Unknown),
        ("GET", "/ngsi-ld/v1/entities", Unknown),
        ("GET", "/other/entities", Unknown),
        // A broker mounted below a prefix.
        ("GET", "/orion/v2/entities", ReadEntities),
    ];
    for (method, path, action) in cases {
        assert_eq!(
            bare(Api::V2, method, path).action,
            *action,
            "{method} {path}"
        );
    }
}

#[test]
fn every_ld_path_has_its_action() {
    use Action::*;
    let cases: &[(&str, &str, Action)] = &[
        ("GET", "/ngsi-ld/v1/entities", ReadEntities),
        ("GET", "/ngsi-ld/v1/entities/e1", ReadEntities),
        ("DELETE", "/ngsi-ld/v1/entities/e1", DeleteEntities),
        (
            "DELETE",
            "/ngsi-ld/v1/entities/e1/attrs/speed",
            UpdateEntities,
        ),
        ("GET", "/ngsi-ld/v1/types", ReadTypes),
        ("GET", "/ngsi-ld/v1/attributes/speed", ReadTypes),
        ("GET", "/ngsi-ld/v1/subscriptions", ReadSubscriptions),
        (
            "DELETE",
            "/ngsi-ld/v1/subscriptions/s1",
            DeleteSubscriptions,
        ),
        ("GET", "/ngsi-ld/v1/csourceRegistrations", ReadRegistrations),
        ("GET", "/ngsi-ld/v1/registrations", Unknown),
        ("GET", "/ngsi-ld/v1/temporal/entities", ReadTemporal),
        ("GET", "/ngsi-ld/v1/temporal/entities/e1", ReadTemporal),
        ("DELETE", "/ngsi-ld/v1/temporal/entities/e1", DeleteTemporal),
        (
            "DELETE",
            "/ngsi-ld/v1/temporal/entities/e1/attrs/speed",
            UpdateTemporal,
        ),
        (
            "PATCH",
            "/ngsi-ld/v1/temporal/entities/e1/attrs/speed/i1",
            UpdateTemporal,
        ),
        ("GET", "/ngsi-ld/v1/jsonldContexts", Unknown),
        ("POST", "/ngsi-ld/v1/entityOperations/purge", Unknown),
        ("GET", "/ngsi-ld/v1/entities/e1/attrs", Unknown),
        ("GET", "/v2/entities", Unknown),
    ];
    for (method, path, action) in cases {
        assert_eq!(
            bare(Api::Ld, method, path).action,
            *action,
            "{method} {path}"
        );
    }
}

#[test]
fn the_path_names_the_entity_type_and_attribute() {
    let read = bare(
        Api::V2,
        "GET",
        "/v2/entities/urn:ngsi-ld:Vehicle:1/attrs/speed",
    );
    assert_eq!(read.entity_ids, strings(&["urn:ngsi-ld:Vehicle:1"]));
    assert_eq!(read.attrs, strings(&["speed"]));
    // The id says nothing NGSI guarantees about the type.
    assert_eq!(read.entity_types, strings(&[ANY]));
    let types = bare(Api::V2, "GET", "/v2/types/Vehicle");
    assert_eq!(types.entity_types, strings(&["Vehicle"]));
    assert!(types.entity_ids.is_empty());
}

#[test]
fn query_parameters_name_types_ids_and_the_attributes_they_test() {
    let query = pairs(&[
        ("type", "ParkingSpot,OffStreetParking"),
        ("id", "p1,p2"),
        ("idPattern", "^p"),
        ("q", "occupancy==free;!occupiedBy;'a.b'.c>3"),
        ("mq", "speed.accuracy<5"),
        ("orderBy", "!availableSpotNumber,geo:distance,dateModified"),
        ("attrs", "occupancy,totalSpotNumber"),
        ("georel", "near;maxDistance:100"),
    ]);
    let ngsi = derive(Api::V2, &request("GET", "/v2/entities", &query, &[], None)).unwrap();
    assert_eq!(
        ngsi.entity_types,
        strings(&["OffStreetParking", "ParkingSpot"])
    );
    assert_eq!(ngsi.entity_ids, strings(&["p1", "p2"]));
    assert_eq!(ngsi.id_patterns, strings(&["^p"]));
    assert_eq!(ngsi.attrs, strings(&["occupancy", "totalSpotNumber"]));
    // v2's geo-query tests whichever attribute has a geo type: any; a
    // quoted name with a dot is one citygate does not take apart: any.
    assert_eq!(
        ngsi.query_attrs,
        strings(&[
            ANY,
            "availableSpotNumber",
            "occupancy",
            "occupiedBy",
            "speed",
            "totalSpotNumber"
        ])
    );
    assert_eq!(
        ngsi.q.as_deref(),
        Some("occupancy==free;!occupiedBy;'a.b'.c>3")
    );
    assert_eq!(ngsi.georel.as_deref(), Some("near;maxDistance:100"));
    assert!(!ngsi.batch);
}

#[test]
fn ngsi_ld_queries_name_attributes_through_logic_paths_and_the_geoproperty() {
    let query = pairs(&[
        ("type", "(Vehicle;Bus)|Tram"),
        (
            "q",
            r#"(speed>50|occupiedBy=="B-CG 1000;x");address[city]=="Berlin""#,
        ),
        ("georel", "near;maxDistance==10"),
        ("geoproperty", "position"),
        ("pick", "id,speed"),
    ]);
    let ngsi = derive(
        Api::Ld,
        &request("GET", "/ngsi-ld/v1/entities", &query, &[], None),
    )
    .unwrap();
    assert_eq!(ngsi.entity_types, strings(&["Bus", "Tram", "Vehicle"]));
    assert_eq!(
        ngsi.query_attrs,
        strings(&["address", "id", "occupiedBy", "position", "speed"])
    );
    let plain = derive(
        Api::Ld,
        &request(
            "GET",
            "/ngsi-ld/v1/entities",
            &pairs(&[("type", "Vehicle"), ("georel", "near;maxDistance==10")]),
            &[],
            None,
        ),
    )
    .unwrap();
    assert_eq!(plain.query_attrs, strings(&["location"]));
}

#[test]
fn what_cannot_be_read_is_any_attribute() {
    for q in [
        "'unclosed==1",
        "a==\"open",
        "occupied By==1",
        "occupiedBy%3D%3D1",
        "==1",
        "'quoted",
    ] {
        let query = pairs(&[("q", q)]);
        let ngsi = derive(Api::V2, &request("GET", "/v2/entities", &query, &[], None)).unwrap();
        assert!(
            ngsi.query_attrs.contains(&ANY.to_string()),
            "{q}: {:?}",
            ngsi.query_attrs
        );
    }
    for (name, value) in [("attrs", "*"), ("typePattern", "^V")] {
        let query = pairs(&[(name, value)]);
        let ngsi = derive(Api::V2, &request("GET", "/v2/entities", &query, &[], None)).unwrap();
        let list = if name == "attrs" {
            &ngsi.query_attrs
        } else {
            &ngsi.entity_types
        };
        assert_eq!(list, &strings(&[ANY]), "{name}={value}");
    }
    // A name v2 would not take is not what a broker would read.
    let query = pairs(&[("orderBy", "occupied:By")]);
    let ngsi = derive(Api::V2, &request("GET", "/v2/entities", &query, &[], None)).unwrap();
    assert_eq!(ngsi.query_attrs, strings(&[ANY]));
}

#[test]
fn repeated_tenants_and_parameters_are_refused() {
    let twice = pairs(&[("fiware-service", "a"), ("fiware-service", "b")]);
    assert_eq!(
        derive(Api::V2, &request("GET", "/v2/entities", &[], &twice, None)),
        Err(NgsiError::RepeatedHeader("fiware-service"))
    );
    let both = pairs(&[("ngsild-tenant", "a"), ("fiware-service", "a")]);
    assert_eq!(
        derive(
            Api::Ld,
            &request("GET", "/ngsi-ld/v1/entities", &[], &both, None)
        ),
        Err(NgsiError::RepeatedHeader("ngsild-tenant"))
    );
    let paths = pairs(&[("fiware-servicepath", "/a"), ("fiware-servicepath", "/b")]);
    assert_eq!(
        derive(Api::V2, &request("GET", "/v2/entities", &[], &paths, None)),
        Err(NgsiError::RepeatedHeader("fiware-servicepath"))
    );
    for name in READ_PARAMETERS {
        let query = pairs(&[(name, "a"), (name, "b")]);
        assert_eq!(
            derive(Api::V2, &request("GET", "/v2/entities", &query, &[], None)),
            Err(NgsiError::RepeatedParameter(name))
        );
    }
}

#[test]
fn tenant_service_path_and_context_are_reported() {
    let headers = pairs(&[
        ("fiware-service", "traffic"),
        ("fiware-servicepath", "/district1, /district2"),
    ]);
    let ngsi = derive(
        Api::V2,
        &request("GET", "/v2/entities", &[], &headers, None),
    )
    .unwrap();
    assert_eq!(ngsi.tenant.as_deref(), Some("traffic"));
    assert_eq!(ngsi.service_path, strings(&["/district1", "/district2"]));
    assert_eq!(ngsi.context, None);
    let headers = pairs(&[
        ("ngsild-tenant", "parking"),
        (
            "link",
            "<https://example.org/ctx.jsonld>; rel=\"http://www.w3.org/ns/json-ld#context\"",
        ),
    ]);
    let ngsi = derive(
        Api::Ld,
        &request("GET", "/ngsi-ld/v1/entities", &[], &headers, None),
    )
    .unwrap();
    assert_eq!(ngsi.tenant.as_deref(), Some("parking"));
    assert!(ngsi
        .context
        .as_deref()
        .unwrap()
        .contains("example.org/ctx.jsonld"));
    let orion_ld = pairs(&[("fiware-service", "parking")]);
    let ngsi = derive(
        Api::Ld,
        &request("GET", "/ngsi-ld/v1/entities", &[], &orion_ld, None),
    )
    .unwrap();
    assert_eq!(ngsi.tenant.as_deref(), Some("parking"));
}

#[test]
fn creates_and_updates_name_their_entity_and_attributes() {
    let create = with_body(
        Api::V2,
        "POST",
        "/v2/entities",
        r#"{"id":"v1","type":"Vehicle","speed":{"value":1},"driverName":{"value":"x"}}"#,
    )
    .unwrap();
    assert_eq!(create.action, Action::CreateEntities);
    assert_eq!(create.entity_ids, strings(&["v1"]));
    assert_eq!(create.entity_types, strings(&["Vehicle"]));
    assert_eq!(create.attrs, strings(&["driverName", "speed"]));
    let ld = with_body(
        Api::Ld,
        "POST",
        "/ngsi-ld/v1/entities",
        r#"{"id":"urn:a","type":["Vehicle","Bus"],"@context":"x","speed":{}}"#,
    )
    .unwrap();
    assert_eq!(ld.entity_types, strings(&["Bus", "Vehicle"]));
    assert_eq!(ld.attrs, strings(&["speed"]));
    let update = with_body(
        Api::V2,
        "PATCH",
        "/v2/entities/v1/attrs",
        r#"{"speed":{"value":2}}"#,
    )
    .unwrap();
    assert_eq!(update.action, Action::UpdateEntities);
    assert_eq!(update.attrs, strings(&["speed"]));
    assert_eq!(update.entity_types, strings(&[ANY]));
    let merge = with_body(
        Api::Ld,
        "PATCH",
        "/ngsi-ld/v1/entities/e1",
        r#"{"owner":{}}"#,
    )
    .unwrap();
    assert_eq!(merge.action, Action::UpdateEntities);
    assert_eq!(merge.attrs, strings(&["owner"]));
    let one = with_body(Api::V2, "PUT", "/v2/entities/v1/attrs/speed/value", "3").unwrap();
    assert_eq!(one.attrs, strings(&["speed"]));
    // A create without a type: any type (Orion picks one).
    let untyped = with_body(Api::V2, "POST", "/v2/entities", r#"{"id":"v1"}"#).unwrap();
    assert_eq!(untyped.entity_types, strings(&[ANY]));
}

#[test]
fn batch_operations_name_every_target() {
    let update = with_body(
        Api::V2,
        "POST",
        "/v2/op/update",
        r#"{"actionType":"append","entities":[
            {"id":"p1","type":"ParkingSpot","occupancy":{"value":"free"}},
            {"id":"v1","type":"Vehicle","driverName":{"value":"x"}}]}"#,
    )
    .unwrap();
    assert_eq!(update.action, Action::UpsertEntities);
    assert!(update.batch);
    assert_eq!(update.entity_ids, strings(&["p1", "v1"]));
    assert_eq!(update.entity_types, strings(&["ParkingSpot", "Vehicle"]));
    assert_eq!(update.attrs, strings(&["driverName", "occupancy"]));
    for (action_type, action) in [
        ("appendStrict", Action::UpsertEntities),
        ("update", Action::UpdateEntities),
        ("replace", Action::UpdateEntities),
        ("delete", Action::DeleteEntities),
    ] {
        let body =
            format!(r#"{{"actionType":"{action_type}","entities":[{{"id":"a","type":"T"}}]}}"#);
        assert_eq!(
            with_body(Api::V2, "POST", "/v2/op/update", &body)
                .unwrap()
                .action,
            action
        );
    }
    let ld = with_body(
        Api::Ld,
        "POST",
        "/ngsi-ld/v1/entityOperations/upsert",
        r#"[{"id":"a","type":"T","x":{}},{"id":"b","y":{}}]"#,
    )
    .unwrap();
    assert_eq!(ld.action, Action::UpsertEntities);
    assert_eq!(ld.entity_types, strings(&[ANY, "T"]));
    assert_eq!(ld.attrs, strings(&["x", "y"]));
    let delete = with_body(
        Api::Ld,
        "POST",
        "/ngsi-ld/v1/entityOperations/delete",
        r#"["urn:a","urn:b"]"#,
    )
    .unwrap();
    assert_eq!(delete.action, Action::DeleteEntities);
    assert_eq!(delete.entity_ids, strings(&["urn:a", "urn:b"]));
    for (op, action) in [
        ("create", Action::CreateEntities),
        ("update", Action::UpdateEntities),
        ("merge", Action::UpdateEntities),
    ] {
        let path = format!("/ngsi-ld/v1/entityOperations/{op}");
        assert_eq!(
            with_body(Api::Ld, "POST", &path, r#"[{"id":"a","type":"T"}]"#)
                .unwrap()
                .action,
            action
        );
    }
}

#[test]
fn batch_queries_name_their_filters() {
    let v2 = with_body(
        Api::V2,
        "POST",
        "/v2/op/query",
        r#"{"entities":[{"idPattern":".*","type":"ParkingSpot"}],"attrs":["occupancy"],
            "expression":{"q":"occupiedBy==B-CG","georel":"near;maxDistance:5"}}"#,
    )
    .unwrap();
    assert_eq!(v2.action, Action::ReadEntities);
    assert!(v2.batch);
    assert_eq!(v2.entity_types, strings(&["ParkingSpot"]));
    assert_eq!(v2.id_patterns, strings(&[".*"]));
    assert_eq!(v2.query_attrs, strings(&[ANY, "occupancy", "occupiedBy"]));
    assert_eq!(v2.q.as_deref(), Some("occupiedBy==B-CG"));
    let ld = with_body(
        Api::Ld,
        "POST",
        "/ngsi-ld/v1/entityOperations/query",
        r#"{"type":"Query","entities":[{"type":"ParkingSpot"}],"q":"occupiedBy==\"x\"",
            "geoQ":{"georel":"near;maxDistance==5","geometry":"Point","coordinates":[1,2]}}"#,
    )
    .unwrap();
    assert_eq!(ld.entity_types, strings(&["ParkingSpot"]));
    assert_eq!(ld.query_attrs, strings(&["location", "occupiedBy"]));
    // A filter both in the URL and the body: which would the broker use?
    let query = pairs(&[("q", "a==1")]);
    let body = br#"{"expression":{"q":"b==1"}}"#;
    assert_eq!(
        derive(
            Api::V2,
            &request("POST", "/v2/op/query", &query, &[], Some(body))
        ),
        Err(NgsiError::BodyInvalid)
    );
    let temporal = with_body(
        Api::Ld,
        "POST",
        "/ngsi-ld/v1/temporal/entityOperations/query",
        r#"{"type":"Query","entities":[{"type":"Vehicle"}],"attrs":["speed"]}"#,
    )
    .unwrap();
    assert_eq!(temporal.action, Action::ReadTemporal);
    assert_eq!(temporal.query_attrs, strings(&["speed"]));
}

#[test]
fn subscriptions_name_where_data_goes_and_what() {
    let v2 = with_body(
        Api::V2,
        "POST",
        "/v2/subscriptions",
        r#"{"subject":{"entities":[{"idPattern":".*","type":"Vehicle"}],
                       "condition":{"attrs":["speed"],"expression":{"q":"speed>50"}}},
            "notification":{"http":{"url":"https://collector.example.org/hook"},"attrs":["speed","driverName"]}}"#,
    )
    .unwrap();
    assert_eq!(v2.action, Action::CreateSubscriptions);
    let subscription = v2.subscription.as_ref().unwrap();
    assert_eq!(
        subscription.notification_url.as_deref(),
        Some("https://collector.example.org/hook")
    );
    assert_eq!(
        subscription.entities,
        vec![EntitySelector {
            id: None,
            id_pattern: Some(".*".into()),
            entity_type: Some("Vehicle".into()),
        }]
    );
    assert_eq!(subscription.attrs, strings(&["driverName", "speed"]));
    assert_eq!(v2.attrs, strings(&["driverName", "speed"]));
    assert_eq!(v2.entity_types, strings(&["Vehicle"]));
    assert_eq!(v2.query_attrs, strings(&["speed"]));
    // Without a list, or with exceptions, every attribute is notified.
    for notification in [
        r#"{"http":{"url":"u"}}"#,
        r#"{"http":{"url":"u"},"attrs":[]}"#,
        r#"{"mqtt":{"url":"mqtt://u","topic":"t"},"exceptAttrs":["x"]}"#,
    ] {
        let body =
            format!(r#"{{"subject":{{"entities":[{{"id":"a"}}]}},"notification":{notification}}}"#);
        let ngsi = with_body(Api::V2, "POST", "/v2/subscriptions", &body).unwrap();
        assert_eq!(
            ngsi.subscription.unwrap().attrs,
            strings(&[ANY]),
            "{notification}"
        );
        // No type: any type.
        assert_eq!(ngsi.entity_types, strings(&[ANY]));
    }
    // Two channels at once: refused.
    let body = r#"{"notification":{"http":{"url":"a"},"httpCustom":{"url":"b"}}}"#;
    assert_eq!(
        with_body(Api::V2, "POST", "/v2/subscriptions", body),
        Err(NgsiError::BodyInvalid)
    );
    let ld = with_body(
        Api::Ld,
        "PATCH",
        "/ngsi-ld/v1/subscriptions/s1",
        r#"{"entities":[{"type":"ParkingSpot"}],"watchedAttributes":["occupiedBy"],
            "notification":{"attributes":["occupancy"],"endpoint":{"uri":"http://x.example/n"}}}"#,
    )
    .unwrap();
    assert_eq!(ld.action, Action::UpdateSubscriptions);
    assert_eq!(
        ld.subscription
            .as_ref()
            .unwrap()
            .notification_url
            .as_deref(),
        Some("http://x.example/n")
    );
    assert_eq!(ld.query_attrs, strings(&["occupiedBy"]));
    assert_eq!(ld.attrs, strings(&["occupancy"]));
}

#[test]
fn registrations_and_notifications_name_their_entities() {
    let v2 = with_body(
        Api::V2,
        "POST",
        "/v2/registrations",
        r#"{"dataProvided":{"entities":[{"id":"r1","type":"Room"}],"attrs":["temperature"]},
            "provider":{"http":{"url":"http://p"}}}"#,
    )
    .unwrap();
    assert_eq!(v2.action, Action::CreateRegistrations);
    assert_eq!(v2.entity_ids, strings(&["r1"]));
    assert_eq!(v2.attrs, strings(&["temperature"]));
    let ld = with_body(
        Api::Ld,
        "POST",
        "/ngsi-ld/v1/csourceRegistrations",
        r#"{"information":[{"entities":[{"type":"Room"}],"propertyNames":["t"],"relationshipNames":["r"]}],"endpoint":"http://p"}"#,
    )
    .unwrap();
    assert_eq!(ld.entity_types, strings(&["Room"]));
    assert_eq!(ld.attrs, strings(&["r", "t"]));
    let notify = with_body(
        Api::V2,
        "POST",
        "/v2/op/notify",
        r#"{"subscriptionId":"s","data":[{"id":"a","type":"T","x":{}}]}"#,
    )
    .unwrap();
    assert_eq!(notify.action, Action::Notify);
    assert_eq!(notify.entity_types, strings(&["T"]));
}

#[test]
fn bodies_that_are_not_read_whole_or_not_of_their_shape_are_refused() {
    assert_eq!(
        derive(Api::V2, &request("POST", "/v2/op/update", &[], &[], None)),
        Err(NgsiError::BodyUnread)
    );
    for (api, path, body) in [
        (Api::V2, "/v2/op/update", ""),
        (Api::V2, "/v2/op/update", "not json"),
        (
            Api::V2,
            "/v2/op/update",
            r#"{"actionType":"purge","entities":[]}"#,
        ),
        (Api::V2, "/v2/op/update", r#"{"actionType":"append"}"#),
        (
            Api::V2,
            "/v2/op/update",
            r#"{"actionType":"append","entities":[1]}"#,
        ),
        (
            Api::V2,
            "/v2/op/update",
            r#"{"actionType":"append","entities":[{"id":1}]}"#,
        ),
        (Api::V2, "/v2/entities", r#"[{"id":"a"}]"#),
        (
            Api::Ld,
            "/ngsi-ld/v1/entityOperations/create",
            r#"{"id":"a"}"#,
        ),
        (
            Api::Ld,
            "/ngsi-ld/v1/entityOperations/delete",
            r#"[{"id":"a"}]"#,
        ),
        (
            Api::Ld,
            "/ngsi-ld/v1/subscriptions",
            r#"{"notification":{"endpoint":{"uri":1}}}"#,
        ),
        (
            Api::Ld,
            "/ngsi-ld/v1/subscriptions",
            r#"{"watchedAttributes":"x"}"#,
        ),
    ] {
        assert_eq!(
            derive(api, &request("POST", path, &[], &[], Some(body.as_bytes()))),
            Err(NgsiError::BodyInvalid),
            "{path} {body}"
        );
    }
    // Reads do not need the body.
    assert!(derive(Api::V2, &request("GET", "/v2/entities", &[], &[], None)).is_ok());
}

proptest::proptest! {
    /// Whatever a caller writes, each name a filter yields is one a broker
    /// would read as that name, or "any": never a fragment that an
    /// allowlist could match while the broker reads another attribute.
    #[test]
    fn filters_yield_only_plain_names_or_any(expression in "[a-zA-Z0-9_:;|()'\"=!<>~. %-]{0,40}") {
        for api in [Api::V2, Api::Ld] {
            let mut names = Vec::new();
            query::q_attributes(api, &expression, &mut names);
            query::order_by_attributes(api, &expression, &mut names);
            query::list_attributes(api, &expression, &mut names);
            for name in &names {
                let plain = name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-:/#@".contains(&b));
                proptest::prop_assert!(name == ANY || (plain && !name.is_empty()), "{api:?} {expression:?}: {name:?}");
                if api == Api::V2 {
                    proptest::prop_assert!(name == ANY || !name.contains(':'), "{expression:?}: {name:?}");
                }
            }
            // Every term that tests an attribute yields a name.
            let terms = expression.split([';', '|', '(', ')']).filter(|t| t.trim().trim_start_matches('!').trim().chars().next().is_some_and(|c| c.is_ascii_alphabetic())).count();
            let mut q_names = Vec::new();
            query::q_attributes(api, &expression, &mut q_names);
            proptest::prop_assert!(!q_names.is_empty() || terms == 0, "{api:?} {expression:?}");
        }
    }
}

#[test]
fn tenants_and_service_paths_take_the_brokers_form() {
    let derive_with = |method: &str, path: &str, headers: &[(&str, &str)]| {
        let headers = pairs(headers);
        derive(Api::V2, &request(method, path, &[], &headers, Some(b"{}")))
    };
    let ok = derive_with(
        "GET",
        "/v2/entities",
        &[
            ("fiware-service", " Parking "),
            ("fiware-servicepath", "/a/b_1, /c/#, /#, /"),
        ],
    )
    .unwrap();
    assert_eq!(ok.tenant.as_deref(), Some("parking"));
    assert_eq!(ok.service_path, strings(&["/a/b_1", "/c/#", "/#", "/"]));
    for service in ["", "a-b", "a/b", "ä", &"x".repeat(51)] {
        assert_eq!(
            derive_with("GET", "/v2/entities", &[("fiware-service", service)]),
            Err(NgsiError::MalformedHeader("fiware-service")),
            "{service:?}"
        );
    }
    for path in [
        "/a/../b", "//a", "a", "/a b", "/a/", "/#/a", "/a%2Fb", "/a/./b", "#", "/a,,/b",
    ] {
        assert_eq!(
            derive_with("GET", "/v2/entities", &[("fiware-servicepath", path)]),
            Err(NgsiError::MalformedHeader("fiware-servicepath")),
            "{path:?}"
        );
    }
    let eleven = ["/a"; 11].join(",");
    let deep = format!("/{}", ["a"; 11].join("/"));
    for path in [eleven.as_str(), deep.as_str()] {
        assert!(
            derive_with("GET", "/v2/entities", &[("fiware-servicepath", path)]).is_err(),
            "{path}"
        );
    }
    // A write names one path, without a subtree.
    assert!(derive_with(
        "PATCH",
        "/v2/entities/e/attrs",
        &[("fiware-servicepath", "/a")]
    )
    .is_ok());
    for path in ["/a,/b", "/a/#", "/#"] {
        assert_eq!(
            derive_with(
                "PATCH",
                "/v2/entities/e/attrs",
                &[("fiware-servicepath", path)]
            ),
            Err(NgsiError::MalformedHeader("fiware-servicepath")),
            "{path}"
        );
    }
    // A batch query is a read.
    let headers = pairs(&[("fiware-servicepath", "/a/#,/b")]);
    assert!(derive(
        Api::V2,
        &request("POST", "/v2/op/query", &[], &headers, Some(b"{}"))
    )
    .is_ok());
    // NGSI-LD tenants follow the same form.
    let headers = pairs(&[("ngsild-tenant", "a b")]);
    assert_eq!(
        derive(
            Api::Ld,
            &request("GET", "/ngsi-ld/v1/entities", &[], &headers, None)
        ),
        Err(NgsiError::MalformedHeader("ngsild-tenant"))
    );
}
