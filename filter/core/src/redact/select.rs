//! What a rule reaches: JSONPath locations, field names at any depth, and
//! the NGSI shapes a field name stands for (NGSI-v2 normalized
//! `{type, value, metadata}`, keyValues, NGSI-LD Property / GeoProperty /
//! Relationship, multi-attribute arrays, expanded IRIs).

use std::collections::{BTreeMap, HashSet};

use serde_json::{Map, Value};
use serde_json_path::JsonPath;

/// Where an attribute keeps its data.
pub const VALUE_KEYS: &[&str] = &[
    "value",
    "object",
    "objectList",
    "languageMap",
    "valueList",
    "json",
    "vocab",
];
/// Attribute members that describe the shape, not the personal value.
pub const STRUCTURE_KEYS: &[&str] = &["type", "unitCode", "datasetId"];
/// NGSI-LD temporal members: kept, and truncated by timestamp rules.
pub const TIME_KEYS: &[&str] = &["observedAt", "createdAt", "modifiedAt"];

/// An NGSI attribute: a data member plus a `type` (both v2 normalized and
/// LD always carry one). keyValues values are plain and never match. A
/// changed attribute keeps `type`, so it is recognized again on a second
/// pass (redaction is idempotent).
pub fn is_attribute(fields: &Map<String, Value>) -> bool {
    VALUE_KEYS.iter().any(|k| fields.contains_key(*k)) && fields.contains_key("type")
}

/// The data an attribute carries (its `value` or `object`), or the value itself.
pub fn data_of(value: &Value) -> &Value {
    if let Value::Object(fields) = value {
        if is_attribute(fields) {
            for key in VALUE_KEYS {
                if let Some(data) = fields.get(*key) {
                    return data;
                }
            }
        }
    }
    value
}

/// Field names a rule targets. A name also matches the expanded form of an
/// NGSI-LD term (`https://…/driverName`, `…#driverName`, `ngsi:driverName`)
/// so a broker that returns unexpanded IRIs cannot slip a field past a
/// denylist rule.
#[derive(Debug, Clone, Default)]
pub struct FieldNames {
    names: HashSet<String>,
    /// Bit `n` is set when a name is `n` bytes long (`n` < 64): a member
    /// name of another length is refused without hashing it. Most member
    /// names of a document are not rule targets, and every rule asks.
    lengths: u64,
    /// Some name is 64 bytes or longer.
    long_names: bool,
}

impl FieldNames {
    pub fn new(names: &[String]) -> Self {
        let mut set = Self::default();
        for name in names {
            match u32::try_from(name.len()) {
                Ok(n) if n < 64 => set.lengths |= 1 << n,
                _ => set.long_names = true,
            }
            set.names.insert(name.clone());
        }
        set
    }

    fn contains(&self, name: &str) -> bool {
        let length_fits = match u32::try_from(name.len()) {
            Ok(n) if n < 64 => self.lengths & (1 << n) != 0,
            _ => self.long_names,
        };
        length_fits && self.names.contains(name)
    }

    pub fn matches(&self, key: &str) -> bool {
        if self.contains(key) {
            return true;
        }
        match key.rfind(['/', '#', ':']) {
            Some(i) => key.get(i + 1..).is_some_and(|local| self.contains(local)),
            None => false,
        }
    }
}

/// One step of a location in a document.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Step {
    Key(String),
    Index(usize),
}

pub type Location = Vec<Step>;

/// The locations a JSONPath selects, outermost only (a node inside another
/// selected node is reached through its ancestor).
pub fn locate(path: &JsonPath, document: &Value) -> Vec<Location> {
    outermost(locate_all(path, document))
}

/// Every location a JSONPath selects, nested ones included.
pub fn locate_all(path: &JsonPath, document: &Value) -> Vec<Location> {
    path.query_located(document)
        .locations()
        .map(|location| {
            location
                .iter()
                .map(|element| match element.as_index() {
                    Some(i) => Step::Index(i),
                    None => Step::Key(element.as_name().unwrap_or_default().to_string()),
                })
                .collect()
        })
        .collect()
}

/// The locations that lie inside no other of them.
pub fn outermost(mut found: Vec<Location>) -> Vec<Location> {
    found.sort();
    found.dedup();
    let mut outermost: Vec<Location> = Vec::new();
    for location in found {
        if !outermost.iter().any(|o| location.starts_with(o)) {
            outermost.push(location);
        }
    }
    outermost
}

pub fn get_mut<'a>(document: &'a mut Value, location: &[Step]) -> Option<&'a mut Value> {
    location
        .iter()
        .try_fold(document, |node, step| match (node, step) {
            (Value::Object(fields), Step::Key(key)) => fields.get_mut(key),
            (Value::Array(items), Step::Index(i)) => items.get_mut(*i),
            _ => None,
        })
}

/// Removes the nodes at `locations` (outermost ones, as [`locate`] gives).
/// Later array indices go first so earlier ones stay valid. Removing the
/// root leaves an empty container of its kind. Returns how many went.
pub fn remove_all(document: &mut Value, mut locations: Vec<Location>) -> u64 {
    locations.sort_by(|a, b| b.cmp(a));
    let mut removed = 0;
    for location in locations {
        let Some((last, parent_location)) = location.split_last() else {
            *document = empty_like(document);
            removed += 1;
            continue;
        };
        let gone = match (get_mut(document, parent_location), last) {
            (Some(Value::Object(fields)), Step::Key(key)) => fields.shift_remove(key).is_some(),
            (Some(Value::Array(items)), Step::Index(i)) if *i < items.len() => {
                items.remove(*i);
                true
            }
            _ => false,
        };
        removed += u64::from(gone);
    }
    removed
}

pub fn empty_like(value: &Value) -> Value {
    match value {
        Value::Array(_) => Value::Array(Vec::new()),
        Value::Object(_) => Value::Object(Map::new()),
        _ => Value::Null,
    }
}

/// What an allowlist keeps: whole subtrees at some locations, and the
/// containers on the way to them (holding only what is kept inside).
#[derive(Debug, Default)]
pub struct KeepTree {
    whole: bool,
    children: BTreeMap<Step, KeepTree>,
}

impl KeepTree {
    pub fn keep(&mut self, location: &[Step]) {
        match location.split_first() {
            None => self.whole = true,
            Some((step, rest)) => self.children.entry(step.clone()).or_default().keep(rest),
        }
    }

    /// The document with everything not kept removed; counts the removed
    /// members (a removed subtree counts once).
    pub fn prune(&self, value: Value, removed: &mut u64) -> Value {
        if self.whole {
            return value;
        }
        match value {
            Value::Object(fields) => {
                let mut kept = Map::new();
                for (key, item) in fields {
                    match self.children.get(&Step::Key(key.clone())) {
                        Some(child) => {
                            kept.insert(key, child.prune(item, removed));
                        }
                        None => *removed += 1,
                    }
                }
                Value::Object(kept)
            }
            Value::Array(items) => {
                let mut kept = Vec::new();
                for (index, item) in items.into_iter().enumerate() {
                    match self.children.get(&Step::Index(index)) {
                        Some(child) => kept.push(child.prune(item, removed)),
                        None => *removed += 1,
                    }
                }
                Value::Array(kept)
            }
            _ => {
                *removed += 1;
                Value::Null
            }
        }
    }
}

/// Locations of the members named `names` in the entity-level objects: the
/// root object, or the objects in a root array (arrays nest transparently).
/// Names match exactly here: an allowlist never widens.
pub fn entity_members(document: &Value, names: &HashSet<String>) -> Vec<Location> {
    let mut found = Vec::new();
    let mut pending: Vec<(Location, &Value)> = vec![(Vec::new(), document)];
    while let Some((location, node)) = pending.pop() {
        match node {
            Value::Object(fields) => {
                for key in fields.keys().filter(|k| names.contains(*k)) {
                    let mut member = location.clone();
                    member.push(Step::Key(key.clone()));
                    found.push(member);
                }
            }
            Value::Array(items) => {
                for (index, item) in items.iter().enumerate() {
                    let mut element = location.clone();
                    element.push(Step::Index(index));
                    pending.push((element, item));
                }
            }
            _ => {}
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    proptest::proptest! {
        /// The length filter never refuses a name the set holds.
        #[test]
        fn the_length_filter_agrees_with_the_set(
            names in proptest::collection::vec("[a-zA-Z_:#/]{0,70}", 0..6),
            key in "[a-zA-Z_:#/]{0,70}",
        ) {
            let set = FieldNames::new(&names);
            let plain: HashSet<&str> = names.iter().map(String::as_str).collect();
            let expected = plain.contains(key.as_str())
                || key
                    .rfind(['/', '#', ':'])
                    .is_some_and(|i| plain.contains(&key[i + 1..]));
            proptest::prop_assert_eq!(set.matches(&key), expected);
            for name in &names {
                proptest::prop_assert!(set.matches(name));
            }
        }
    }

    #[test]
    fn field_names_match_expanded_ngsi_ld_terms() {
        let names = FieldNames::new(&["driverName".to_string()]);
        assert!(names.matches("driverName"));
        assert!(names.matches("https://smartdatamodels.org/dataModel.Transportation/driverName"));
        assert!(names.matches("https://example.org/ns#driverName"));
        assert!(names.matches("ngsi:driverName"));
        assert!(!names.matches("driverNameHash"));
        assert!(!names.matches("name"));
    }

    #[test]
    fn attributes_are_recognized_in_every_ngsi_form() {
        let attr = |v: Value| match v {
            Value::Object(m) => is_attribute(&m),
            _ => false,
        };
        assert!(attr(json!({"type":"Text","value":"x","metadata":{}})));
        assert!(attr(
            json!({"type":"Property","value":"x","observedAt":"2026-01-01T00:00:00Z"})
        ));
        assert!(attr(json!({"type":"Relationship","object":"urn:x"})));
        assert!(!attr(json!({"type":"Point","coordinates":[1,2]})));
        assert_eq!(
            data_of(&json!({"type":"Relationship","object":"urn:x"})),
            &json!("urn:x")
        );
        assert_eq!(data_of(&json!("plain")), &json!("plain"));
    }

    #[test]
    fn jsonpath_locations_are_outermost_and_removal_keeps_indices_valid() {
        let doc = json!({"a":[{"x":1,"y":{"x":2}},{"x":3}],"x":4});
        let path = JsonPath::parse("$..x").unwrap();
        let found = locate(&path, &doc);
        assert_eq!(found.len(), 4);
        let mut doc2 = json!([1, 2, 3, 4]);
        let path = JsonPath::parse("$[?@ > 1]").unwrap();
        let locations = locate(&path, &doc2);
        assert_eq!(remove_all(&mut doc2, locations), 3);
        assert_eq!(doc2, json!([1]));
        let mut root = json!({"a":1});
        assert_eq!(remove_all(&mut root, vec![vec![]]), 1);
        assert_eq!(root, json!({}));
    }

    #[test]
    fn keep_tree_prunes_everything_else() {
        let doc = json!({"results":[{"id":"a","name":"Erika","geo":{"lat":1,"lon":2}}],"total":1});
        let mut tree = KeepTree::default();
        tree.keep(&[
            Step::Key("results".into()),
            Step::Index(0),
            Step::Key("id".into()),
        ]);
        tree.keep(&[
            Step::Key("results".into()),
            Step::Index(0),
            Step::Key("geo".into()),
        ]);
        let mut removed = 0;
        let out = tree.prune(doc, &mut removed);
        assert_eq!(out, json!({"results":[{"id":"a","geo":{"lat":1,"lon":2}}]}));
        assert_eq!(removed, 2);
    }

    #[test]
    fn entity_members_are_found_in_root_objects_and_arrays_only() {
        let names: HashSet<String> = ["id".to_string()].into();
        let doc = json!([{"id":"a","driver":{"id":"secret"}},[{"id":"b"}]]);
        let found = entity_members(&doc, &names);
        assert_eq!(found.len(), 2);
        assert!(!found.iter().any(|l| l.len() > 3));
    }
}
