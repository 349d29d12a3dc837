//! JSON objects with duplicate member names refused at every depth. Two
//! parsers that disagree on `{"alg":"RS256","alg":"none"}` (first wins vs.
//! last wins) are a known token-confusion vector (RFC 8725 §2.8, RFC 7515
//! §5.2 step 4); refusing duplicates removes the ambiguity.

use serde::de::{Deserialize, Deserializer, Error, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// The object in `bytes`, or `None` when it is not one JSON object without
/// duplicate members.
pub fn object(bytes: &[u8]) -> Option<Map<String, Value>> {
    match serde_json::from_slice::<StrictValue>(bytes).ok()?.0 {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// Any JSON value in `bytes`, or `None` when it is not JSON or an object
/// in it repeats a member name (a request body two parsers could read
/// differently).
pub fn value(bytes: &[u8]) -> Option<Value> {
    serde_json::from_slice::<StrictValue>(bytes)
        .ok()
        .map(|v| v.0)
}

struct StrictValue(Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E: Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E: Error>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E: Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E: Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E: Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(StrictValue(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            let StrictValue(value) = access.next_value()?;
            if map.insert(key, value).is_some() {
                return Err(A::Error::custom("duplicate member"));
            }
        }
        Ok(Value::Object(map))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_are_refused_at_any_depth() {
        assert!(object(br#"{"a":1,"b":{"c":[1,{"d":true}]}}"#).is_some());
        assert!(object(br#"{"a":1,"a":2}"#).is_none());
        assert!(object(br#"{"a":{"b":1,"b":1}}"#).is_none());
        assert!(object(br#"{"a":[{"b":1,"b":1}]}"#).is_none());
    }

    #[test]
    fn values_of_any_kind_without_duplicates_are_accepted() {
        assert_eq!(
            value(b"[1,{\"a\":2}]"),
            Some(serde_json::json!([1, {"a": 2}]))
        );
        assert_eq!(value(b"\"x\""), Some(Value::from("x")));
        assert!(value(br#"[{"a":1,"a":1}]"#).is_none());
        assert!(value(b"[").is_none());
    }

    #[test]
    fn only_objects_are_accepted() {
        assert!(object(b"[]").is_none());
        assert!(object(b"\"x\"").is_none());
        assert!(object(b"{").is_none());
    }
}
