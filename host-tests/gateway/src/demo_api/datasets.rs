//! The demo city's data (`data/`: NGSI-v2 and NGSI-LD entities, Open311
//! service requests, full of fictional personal data) and the queries the
//! API answers on it: by type and id, paging, NGSI-v2 `keyValues`.

use serde_json::{Map, Value};

use super::request::{param, ReceivedRequest};

pub(super) const NGSI_V2: &str = include_str!("data/ngsi_v2_entities.json");
pub(super) const NGSI_LD: &str = include_str!("data/ngsi_ld_entities.json");
pub(super) const OPEN311: &str = include_str!("data/open311_requests.json");

fn dataset(text: &str) -> Vec<Value> {
    // The data files are checked by this module's tests.
    serde_json::from_str(text).unwrap_or_default()
}

pub(super) fn find(text: &str, key: &str, id: &str) -> Option<Value> {
    dataset(text)
        .into_iter()
        .find(|e| e.get(key).and_then(Value::as_str) == Some(id))
}

/// `?type=A,B` keeps entities of those types; `?id=` likewise.
pub(super) fn filtered(text: &str, req: &ReceivedRequest, key: &str) -> Value {
    let wanted: Option<Vec<String>> =
        param(req, key).map(|v| v.split(',').map(str::to_owned).collect());
    let ids: Option<Vec<String>> =
        param(req, "id").map(|v| v.split(',').map(str::to_owned).collect());
    let keep = |e: &Value, field: &str, set: &Option<Vec<String>>| {
        set.as_ref().is_none_or(|set| {
            e.get(field)
                .and_then(Value::as_str)
                .is_some_and(|v| set.iter().any(|s| s == v))
        })
    };
    Value::Array(
        dataset(text)
            .into_iter()
            .filter(|e| keep(e, key, &wanted) && keep(e, "id", &ids))
            .collect(),
    )
}

pub(super) fn wants_key_values(req: &ReceivedRequest) -> bool {
    param(req, "options").is_some_and(|o| o.split(',').any(|o| o == "keyValues"))
}

pub(super) fn ngsi_v2_list(req: &ReceivedRequest) -> Value {
    let entities = filtered(NGSI_V2, req, "type");
    let mut list = entities.as_array().cloned().unwrap_or_default();
    let offset = param(req, "offset")
        .and_then(|o| o.parse().ok())
        .unwrap_or(0);
    let limit = param(req, "limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(20);
    list = list.into_iter().skip(offset).take(limit).collect();
    if wants_key_values(req) {
        list = list.iter().map(key_values).collect();
    }
    Value::Array(list)
}

/// NGSI-v2 `keyValues` rendering: each attribute becomes its bare value.
pub fn key_values(entity: &Value) -> Value {
    let Some(fields) = entity.as_object() else {
        return entity.clone();
    };
    let simplified: Map<String, Value> = fields
        .iter()
        .map(|(k, v)| match (k.as_str(), v.get("value")) {
            ("id" | "type", _) | (_, None) => (k.clone(), v.clone()),
            (_, Some(value)) => (k.clone(), value.clone()),
        })
        .collect();
    Value::Object(simplified)
}

pub(super) fn open311_list(req: &ReceivedRequest) -> Value {
    let mut list = dataset(OPEN311);
    if let Some(status) = param(req, "status") {
        list.retain(|r| r.get("status").and_then(Value::as_str) == Some(status.as_str()));
    }
    if let Some(code) = param(req, "service_code") {
        list.retain(|r| r.get("service_code").and_then(Value::as_str) == Some(code.as_str()));
    }
    Value::Array(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_files_parse() {
        for text in [NGSI_V2, NGSI_LD, OPEN311] {
            let parsed: Vec<Value> = serde_json::from_str(text).expect("valid JSON array");
            assert!(!parsed.is_empty());
        }
    }

    #[test]
    fn key_values_flattens_attributes() {
        let truck = find(
            NGSI_V2,
            "id",
            "urn:ngsi-ld:Vehicle:example-city:waste-truck-07",
        )
        .expect("truck");
        let kv = key_values(&truck);
        assert_eq!(kv["driverName"], "Jane Example");
        assert_eq!(kv["location"]["type"], "Point");
        assert_eq!(kv["lastKnownPosition"], "40.41755, -3.70234");
        assert_eq!(kv["type"], "Vehicle");
    }
}
