//! What a rule does to what it selected: remove, replace, mask, hash,
//! generalize (whole values, NGSI-aware) — and the same actions on the spans
//! a detector found inside a string.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde_json::{Map, Value};

use super::config::{GeneralizeConfig, TimeUnit};
use super::detect::{DetectorSet, TextShape};
use super::generalize;
use super::pseudonym::Pseudonymizer;
use super::select::{self, STRUCTURE_KEYS, TIME_KEYS, VALUE_KEYS};

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Remove,
    Replace(Value),
    Mask(MaskSpec),
    Hash(HashSpec),
    Generalize(GeneralizeConfig),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaskSpec {
    pub keep_first: usize,
    pub keep_last: usize,
    pub mask_char: char,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashSpec {
    pub prefix: String,
    pub length: usize,
}

/// What was done to one response: counts only, never values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub removed: u64,
    pub replaced: u64,
    pub masked: u64,
    pub hashed: u64,
    pub generalized: u64,
    pub dropped_entities: u64,
    pub detector_hits: u64,
}

impl Counts {
    pub fn fields(&self) -> u64 {
        self.removed
            + self.replaced
            + self.masked
            + self.hashed
            + self.generalized
            + self.dropped_entities
    }

    pub fn as_map(&self) -> BTreeMap<String, u64> {
        [
            ("removed", self.removed),
            ("replaced", self.replaced),
            ("masked", self.masked),
            ("hashed", self.hashed),
            ("generalized", self.generalized),
            ("dropped_entities", self.dropped_entities),
            ("detector_hits", self.detector_hits),
        ]
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| (k.to_string(), n))
        .collect()
    }
}

/// Per-response tools and tallies.
pub struct Work<'a> {
    pub pseudonyms: Option<&'a Pseudonymizer>,
    pub counts: Counts,
}

impl Work<'_> {
    /// Applies `action` to a selected value. An NGSI attribute keeps its
    /// shape (`type`, `unitCode`, `datasetId`, temporal members) and has its
    /// data changed; its `metadata` and sub-properties describe the personal
    /// value and are removed with it.
    pub fn apply(&mut self, action: &Action, slot: &mut Value) {
        match slot {
            Value::Object(fields) if select::is_attribute(fields) => {
                self.apply_to_attribute(action, fields)
            }
            Value::Array(items) if is_attribute_list(items) => {
                for item in items.iter_mut() {
                    if let Value::Object(fields) = item {
                        self.apply_to_attribute(action, fields);
                    }
                }
            }
            _ => self.transform(action, slot),
        }
    }

    fn apply_to_attribute(&mut self, action: &Action, fields: &mut Map<String, Value>) {
        let before = fields.len();
        fields.retain(|key, _| {
            let key = key.as_str();
            STRUCTURE_KEYS.contains(&key) || TIME_KEYS.contains(&key) || VALUE_KEYS.contains(&key)
        });
        self.counts.removed += (before - fields.len()) as u64;
        let is_time_rule = matches!(
            action,
            Action::Generalize(GeneralizeConfig::Timestamp { .. })
        );
        for (key, data) in fields.iter_mut() {
            if VALUE_KEYS.contains(&key.as_str())
                || (is_time_rule && TIME_KEYS.contains(&key.as_str()))
            {
                self.transform(action, data);
            }
        }
    }

    /// Applies `action` to a value as a whole (no NGSI unwrapping).
    pub fn transform(&mut self, action: &Action, value: &mut Value) {
        match action {
            Action::Remove => {
                *value = Value::Null;
                self.counts.removed += 1;
            }
            Action::Replace(constant) => {
                if value != constant {
                    *value = constant.clone();
                    self.counts.replaced += 1;
                }
            }
            Action::Mask(spec) => self.mask_leaves(spec, value),
            Action::Hash(spec) => self.hash_leaves(spec, value),
            Action::Generalize(kind) => match generalized(kind, value) {
                Some(new) => {
                    if *value != new {
                        *value = new;
                        self.counts.generalized += 1;
                    }
                }
                None => {
                    // Cannot be generalized as asked: withheld, never passed on.
                    *value = Value::Null;
                    self.counts.removed += 1;
                }
            },
        }
    }

    fn mask_leaves(&mut self, spec: &MaskSpec, value: &mut Value) {
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Array(items) => return items.iter_mut().for_each(|v| self.mask_leaves(spec, v)),
            Value::Object(fields) => {
                return fields.values_mut().for_each(|v| self.mask_leaves(spec, v))
            }
            Value::Bool(_) | Value::Null => return,
        };
        // A pseudonym is no longer personal; masking it would only turn a
        // joinable token into noise (and break idempotence).
        if self.pseudonyms.is_some_and(|keys| keys.is_token(&text)) {
            return;
        }
        let masked = mask_text(spec, &text);
        if !matches!(value, Value::String(s) if *s == masked) {
            *value = Value::String(masked);
            self.counts.masked += 1;
        }
    }

    fn hash_leaves(&mut self, spec: &HashSpec, value: &mut Value) {
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Array(items) => return items.iter_mut().for_each(|v| self.hash_leaves(spec, v)),
            Value::Object(fields) => {
                return fields.values_mut().for_each(|v| self.hash_leaves(spec, v))
            }
            Value::Null => return,
        };
        match self.pseudonyms {
            Some(keys) if keys.is_token(&text) => {}
            Some(keys) => {
                *value = Value::String(keys.token(&spec.prefix, spec.length, &text));
                self.counts.hashed += 1;
            }
            // Compilation refuses hash rules without keys; withhold regardless.
            None => {
                *value = Value::Null;
                self.counts.removed += 1;
            }
        }
    }

    /// Runs `detectors` over a text and applies `action` to each hit. Repeats
    /// until nothing changes, so an edit can never leave a new match behind;
    /// a text that keeps changing is withheld.
    pub fn scrub(
        &mut self,
        detectors: &DetectorSet,
        action: &Action,
        text: &str,
    ) -> Option<String> {
        self.scrub_shaped(detectors, action, text, &TextShape::of(text))
    }

    /// [`scrub`](Self::scrub) with `shape`, the shape of `text`, already counted.
    pub fn scrub_shaped(
        &mut self,
        detectors: &DetectorSet,
        action: &Action,
        text: &str,
        shape: &TextShape,
    ) -> Option<String> {
        const MAX_PASSES: usize = 4;
        // Most texts hold nothing: answer those without copying the text or
        // looking for pseudonym tokens (protection only ever removes hits).
        if detectors.find_shaped(text, shape, &[]).is_empty() {
            return None;
        }
        let mut current = text.to_string();
        for _ in 0..MAX_PASSES {
            let protected = self
                .pseudonyms
                .map(|keys| keys.token_spans(&current))
                .unwrap_or_default();
            let hits = detectors.find(&current, &protected);
            let mut next = String::with_capacity(current.len());
            let mut cursor = 0;
            for hit in &hits {
                let (Some(before), Some(span)) = (
                    current.get(cursor..hit.range.start),
                    current.get(hit.range.clone()),
                ) else {
                    continue;
                };
                next.push_str(before);
                let replacement = self.span_replacement(action, span);
                if replacement != span {
                    self.counts.detector_hits += 1;
                }
                next.push_str(&replacement);
                cursor = hit.range.end;
            }
            next.push_str(current.get(cursor..).unwrap_or_default());
            if next == current {
                return (current != text).then_some(current);
            }
            current = next;
        }
        self.counts.removed += 1;
        Some(String::new())
    }

    fn span_replacement(&mut self, action: &Action, span: &str) -> String {
        match action {
            Action::Remove => {
                self.counts.removed += 1;
                String::new()
            }
            Action::Replace(constant) => {
                self.counts.replaced += 1;
                match constant {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                }
            }
            Action::Mask(spec) => {
                self.counts.masked += 1;
                mask_text(spec, span)
            }
            Action::Hash(spec) => match self.pseudonyms {
                Some(keys) => {
                    self.counts.hashed += 1;
                    keys.token(&spec.prefix, spec.length, span)
                }
                None => {
                    self.counts.removed += 1;
                    String::new()
                }
            },
            Action::Generalize(GeneralizeConfig::Ip {
                v4_prefix,
                v6_prefix,
            }) => match span.parse::<IpAddr>() {
                Ok(address) => {
                    let network = generalize::ip(address, *v4_prefix, *v6_prefix).to_string();
                    if network != span {
                        self.counts.generalized += 1;
                    }
                    network
                }
                Err(_) => {
                    self.counts.removed += 1;
                    String::new()
                }
            },
            // Compilation allows only IP generalization on spans.
            Action::Generalize(_) => {
                self.counts.removed += 1;
                String::new()
            }
        }
    }
}

fn is_attribute_list(items: &[Value]) -> bool {
    !items.is_empty()
        && items
            .iter()
            .all(|item| matches!(item, Value::Object(fields) if select::is_attribute(fields)))
}

/// Keeps the first and last characters asked for; a text too short to keep
/// them and still hide something is masked whole.
pub fn mask_text(spec: &MaskSpec, text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let total = chars.len();
    if spec.keep_first.saturating_add(spec.keep_last) >= total {
        return std::iter::repeat_n(spec.mask_char, total).collect();
    }
    chars
        .iter()
        .enumerate()
        .map(|(i, c)| {
            if i < spec.keep_first || i >= total - spec.keep_last {
                *c
            } else {
                spec.mask_char
            }
        })
        .collect()
}

fn generalized(kind: &GeneralizeConfig, value: &Value) -> Option<Value> {
    if value.is_null() {
        return Some(Value::Null);
    }
    match kind {
        GeneralizeConfig::Coordinates { decimals } => generalize::coordinates(value, *decimals),
        GeneralizeConfig::Number { decimals } => each_leaf(value, &|leaf| match leaf {
            Value::Number(n) => generalize::round_number(n, *decimals).map(Value::Number),
            _ => None,
        }),
        GeneralizeConfig::Timestamp { to } => each_leaf(value, &|leaf| timestamp(leaf, *to)),
        GeneralizeConfig::BirthDate => each_leaf(value, &|leaf| match leaf {
            Value::String(s) => generalize::birth_year(s).map(Value::String),
            Value::Number(n) if n.as_u64().is_some_and(|y| (1000..=9999).contains(&y)) => {
                Some(leaf.clone())
            }
            _ => None,
        }),
        GeneralizeConfig::Ip {
            v4_prefix,
            v6_prefix,
        } => each_leaf(value, &|leaf| match leaf {
            Value::String(s) => s
                .parse::<IpAddr>()
                .ok()
                .map(|a| Value::String(generalize::ip(a, *v4_prefix, *v6_prefix).to_string())),
            _ => None,
        }),
    }
}

fn timestamp(leaf: &Value, unit: TimeUnit) -> Option<Value> {
    match leaf {
        Value::String(s) => generalize::timestamp(s, unit).map(Value::String),
        Value::Number(n) => generalize::epoch(n, unit).map(Value::Number),
        _ => None,
    }
}

/// A scalar generalized by `f`, or an array of them; anything else cannot be.
fn each_leaf(value: &Value, f: &dyn Fn(&Value) -> Option<Value>) -> Option<Value> {
    match value {
        Value::Array(items) => items
            .iter()
            .map(|item| each_leaf(item, f))
            .collect::<Option<Vec<_>>>()
            .map(Value::Array),
        Value::Null => Some(Value::Null),
        Value::Object(_) => None,
        scalar => f(scalar),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redact::detect::DetectorLibrary;
    use serde_json::json;

    fn keys() -> Pseudonymizer {
        Pseudonymizer::new("k1", b"0123456789abcdef0123", &["k1", "k0"], &["pn_"]).unwrap()
    }

    fn apply(action: Action, value: Value) -> (Value, Counts) {
        let keys = keys();
        let mut work = Work {
            pseudonyms: Some(&keys),
            counts: Counts::default(),
        };
        let mut value = value;
        work.apply(&action, &mut value);
        (value, work.counts)
    }

    const MASK: MaskSpec = MaskSpec {
        keep_first: 1,
        keep_last: 2,
        mask_char: '*',
    };

    #[test]
    fn mask_keeps_first_and_last_and_hides_short_values_whole() {
        assert_eq!(mask_text(&MASK, "+49 170 1234567"), "+************67");
        assert_eq!(mask_text(&MASK, "abc"), "***");
        assert_eq!(mask_text(&MASK, "Äöüß!"), "Ä**ß!");
        let (v, c) = apply(Action::Mask(MASK), json!(4_917_012_345_u64));
        assert_eq!(v, json!("4*******45"));
        assert_eq!(c.masked, 1);
        let (again, c) = apply(Action::Mask(MASK), v);
        assert_eq!(again, json!("4*******45"));
        assert_eq!(c.masked, 0);
        let token = keys().token("pn_", 16, "x");
        let (kept, c) = apply(Action::Mask(MASK), json!(token));
        assert_eq!(kept, json!(token));
        assert_eq!(c.masked, 0);
    }

    #[test]
    fn replace_puts_the_constant() {
        let (v, c) = apply(
            Action::Replace(json!("[redacted]")),
            json!({"first":"Erika"}),
        );
        assert_eq!(v, json!("[redacted]"));
        assert_eq!(c.replaced, 1);
    }

    #[test]
    fn hash_is_stable_recognizes_its_tokens_and_reaches_leaves() {
        let spec = HashSpec {
            prefix: "pn_".into(),
            length: 16,
        };
        let (v, c) = apply(Action::Hash(spec.clone()), json!(["Erika", 17, null]));
        let token = v[0].as_str().unwrap().to_string();
        assert!(token.starts_with("pn_k1:"));
        assert!(v[1].as_str().unwrap().starts_with("pn_k1:"));
        assert_eq!(v[2], Value::Null);
        assert_eq!(c.hashed, 2);
        let (again, c) = apply(Action::Hash(spec), v.clone());
        assert_eq!(again, v);
        assert_eq!(c.hashed, 0);
    }

    #[test]
    fn ngsi_v2_attributes_keep_their_shape_and_lose_metadata() {
        let attr = json!({"type":"Text","value":"Erika Mustermann","metadata":{"source":{"type":"Text","value":"HR"}}});
        let (v, c) = apply(Action::Mask(MASK), attr);
        assert_eq!(v, json!({"type":"Text","value":"E*************nn"}));
        assert_eq!(c.removed, 1);
        assert_eq!(c.masked, 1);
    }

    #[test]
    fn ngsi_ld_properties_relationships_and_multi_attributes() {
        let spec = HashSpec {
            prefix: "pn_".into(),
            length: 12,
        };
        let (v, _) = apply(
            Action::Hash(spec.clone()),
            json!({"type":"Relationship","object":"urn:ngsi-ld:Person:erika"}),
        );
        assert!(v["object"].as_str().unwrap().starts_with("pn_k1:"));
        assert_eq!(v["type"], "Relationship");
        let (v, _) = apply(
            Action::Generalize(GeneralizeConfig::Timestamp { to: TimeUnit::Hour }),
            json!({"type":"Property","value":"2026-11-20T08:15:42Z","observedAt":"2026-11-20T08:15:42Z"}),
        );
        assert_eq!(
            v,
            json!({"type":"Property","value":"2026-11-20T08:00:00Z","observedAt":"2026-11-20T08:00:00Z"})
        );
        let (v, _) = apply(
            Action::Hash(spec),
            json!([{"type":"Property","value":"M-AB 1234","datasetId":"urn:a"},{"type":"Property","value":"M-CD 5678","datasetId":"urn:b"}]),
        );
        assert!(v[0]["value"].as_str().unwrap().starts_with("pn_"));
        assert!(v[1]["value"].as_str().unwrap().starts_with("pn_"));
        assert_eq!(v[1]["datasetId"], "urn:b");
    }

    #[test]
    fn generalize_coordinates_in_geojson_and_geo_point_attributes() {
        let action = Action::Generalize(GeneralizeConfig::Coordinates { decimals: 3 });
        let (v, c) = apply(
            action.clone(),
            json!({"type":"geo:json","value":{"type":"Point","coordinates":[11.5761,48.1374]}}),
        );
        assert_eq!(
            v["value"],
            json!({"type":"Point","coordinates":[11.576,48.137]})
        );
        assert_eq!(c.generalized, 1);
        let (v, _) = apply(
            action.clone(),
            json!({"type":"geo:point","value":"48.1374, 11.5761"}),
        );
        assert_eq!(v["value"], json!("48.137, 11.576"));
        let (v, c) = apply(action, json!("somewhere"));
        assert_eq!(v, Value::Null);
        assert_eq!(c.removed, 1);
    }

    #[test]
    fn generalize_withholds_what_it_cannot_generalize() {
        let (v, c) = apply(
            Action::Generalize(GeneralizeConfig::BirthDate),
            json!("sometime in May"),
        );
        assert_eq!(v, Value::Null);
        assert_eq!(c.removed, 1);
        let (v, _) = apply(
            Action::Generalize(GeneralizeConfig::BirthDate),
            json!("1984-05-12"),
        );
        assert_eq!(v, json!("1984"));
        let (v, _) = apply(
            Action::Generalize(GeneralizeConfig::Number { decimals: 1 }),
            json!([1.26, 3]),
        );
        assert_eq!(v, json!([1.3, 3]));
        let (v, _) = apply(
            Action::Generalize(GeneralizeConfig::Ip {
                v4_prefix: 24,
                v6_prefix: 48,
            }),
            json!("198.51.100.23"),
        );
        assert_eq!(v, json!("198.51.100.0"));
    }

    #[test]
    fn scrub_applies_the_action_to_each_detected_span_until_stable() {
        let library = DetectorLibrary::compile(&Default::default(), &Default::default()).unwrap();
        let set = DetectorSet::new(
            [library.get("email").unwrap(), library.get("phone").unwrap()].concat(),
        );
        let keys = keys();
        let mut work = Work {
            pseudonyms: Some(&keys),
            counts: Counts::default(),
        };
        let text = "Pothole, call me at +49 170 1234567 or erika@example.org";
        let out = work
            .scrub(&set, &Action::Replace(json!("[redacted]")), text)
            .unwrap();
        assert_eq!(out, "Pothole, call me at [redacted] or [redacted]");
        assert_eq!(work.counts.detector_hits, 2);
        let hashed = work
            .scrub(
                &set,
                &Action::Hash(HashSpec {
                    prefix: "pn_".into(),
                    length: 32,
                }),
                text,
            )
            .unwrap();
        assert!(!hashed.contains("1234567") && !hashed.contains("erika@"));
        assert_eq!(
            work.scrub(
                &set,
                &Action::Hash(HashSpec {
                    prefix: "pn_".into(),
                    length: 32
                }),
                &hashed
            ),
            None
        );
        assert_eq!(work.scrub(&set, &Action::Remove, "nothing here"), None);
    }
}
