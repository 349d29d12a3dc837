//! Compiled redaction profiles: an optional allowlist, then rules applied in
//! order. Everything that can be checked or prepared (JSONPath, regexes,
//! detector sets, option ranges) is done here, once, at configuration time.

use std::collections::HashSet;

use regex::Regex;
use serde_json::Value;
use serde_json_path::JsonPath;

use super::actions::{Action, HashSpec, MaskSpec, Work};
use super::config::{
    ActionConfig, GeneralizeConfig, Mode, PredicateConfig, ProfileConfig, RuleConfig,
};
use super::detect::{DetectorLibrary, DetectorSet, TextShape};
use super::pseudonym::{valid_prefix, MAX_TOKEN_HEX, MIN_TOKEN_HEX};
use super::select::{self, FieldNames, KeepTree};
use crate::config::ConfigError;

#[derive(Debug)]
pub struct Profile {
    allow: Option<Allowlist>,
    rules: Vec<Rule>,
}

#[derive(Debug)]
struct Allowlist {
    names: HashSet<String>,
    paths: Vec<JsonPath>,
}

#[derive(Debug)]
enum Scope {
    Everywhere,
    Path(JsonPath),
    Fields(FieldNames),
}

#[derive(Debug)]
enum Operation {
    Change(Action),
    Detect(DetectorSet, Action),
    /// Without a predicate the scope (a JSONPath, whose filters are the
    /// predicate) selects the entities to drop.
    Drop(Option<Predicate>),
}

#[derive(Debug)]
struct Rule {
    scope: Scope,
    operation: Operation,
}

#[derive(Debug)]
struct Predicate {
    field: FieldNames,
    test: Test,
}

#[derive(Debug)]
enum Test {
    Equals(Value),
    OneOf(Vec<Value>),
    Matches(Regex),
    Exists(bool),
}

/// What compiling a profile learned that the redactor needs besides it.
#[derive(Debug, Default)]
pub struct Needs {
    /// Token prefixes of the hash rules (so tokens are recognized).
    pub hash_prefixes: Vec<String>,
    /// Where the first hash rule sits, for the "no key" error.
    pub first_hash_rule: Option<String>,
}

impl Profile {
    pub fn compile(
        at: &str,
        config: &ProfileConfig,
        library: &DetectorLibrary,
        needs: &mut Needs,
    ) -> Result<Self, ConfigError> {
        let allow = match config.mode {
            Mode::Allowlist => Some(compile_allowlist(at, &config.allow)?),
            Mode::Denylist if !config.allow.is_empty() => {
                return Err(ConfigError::at(
                    at,
                    ".allow",
                    "`allow` is only meaningful with \"mode\": \"allowlist\"",
                ))
            }
            Mode::Denylist => None,
        };
        let rules = config
            .rules
            .iter()
            .enumerate()
            .map(|(i, rule)| compile_rule(&format!("{at}.rules[{i}]"), rule, library, needs))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { allow, rules })
    }

    fn keep_allowed(&self, document: &mut Value, work: &mut Work<'_>) {
        if let Some(allow) = &self.allow {
            let mut keep = KeepTree::default();
            for path in &allow.paths {
                for location in select::locate(path, document) {
                    keep.keep(&location);
                }
            }
            for location in select::entity_members(document, &allow.names) {
                keep.keep(&location);
            }
            let mut removed = 0;
            *document = keep.prune(std::mem::take(document), &mut removed);
            work.counts.removed += removed;
        }
    }

    pub fn apply(&self, document: &mut Value, work: &mut Work<'_>) {
        self.keep_allowed(document, work);
        let mut rules = self.rules.iter().peekable();
        while let Some(rule) = rules.next() {
            let Some(first) = rule.detects_everywhere() else {
                rule.apply(document, work);
                continue;
            };
            // Consecutive detect rules over the whole document walk it
            // once: each text meets the rules in order, so it ends as it
            // would after one walk per rule (a text's edits depend only on
            // that text), and each object's keys are renamed rule by rule.
            let mut group = vec![first];
            while let Some(next) = rules.peek().and_then(|r| r.detects_everywhere()) {
                group.push(next);
                rules.next();
            }
            scrub_value(document, &group, work);
        }
    }

    /// The profile applied one rule at a time, one walk per rule: what
    /// [`apply`](Self::apply) must equal.
    #[cfg(test)]
    pub fn apply_rule_by_rule(&self, document: &mut Value, work: &mut Work<'_>) {
        self.keep_allowed(document, work);
        for rule in &self.rules {
            rule.apply(document, work);
        }
    }
}

/// A detect rule's detectors and action.
type DetectStep<'a> = (&'a DetectorSet, &'a Action);

impl Rule {
    /// The detectors and action of a `detect` rule without `path` or `fields`.
    fn detects_everywhere(&self) -> Option<DetectStep<'_>> {
        match (&self.scope, &self.operation) {
            (Scope::Everywhere, Operation::Detect(detectors, action)) => Some((detectors, action)),
            _ => None,
        }
    }

    fn apply(&self, document: &mut Value, work: &mut Work<'_>) {
        match (&self.scope, &self.operation) {
            (Scope::Path(path), Operation::Change(Action::Remove)) => {
                let locations = select::locate(path, document);
                work.counts.removed += select::remove_all(document, locations);
            }
            (Scope::Path(path), Operation::Drop(None)) => {
                let locations = select::locate(path, document);
                work.counts.dropped_entities += select::remove_all(document, locations);
            }
            (Scope::Path(path), Operation::Drop(Some(predicate))) => {
                // Test every selected node, nested ones too, then drop the
                // outermost matches.
                let matching = select::locate_all(path, document)
                    .into_iter()
                    .filter(|location| {
                        matches!(select::get_mut(document, location), Some(Value::Object(f)) if predicate.holds(f))
                    })
                    .collect();
                let locations = select::outermost(matching);
                work.counts.dropped_entities += select::remove_all(document, locations);
            }
            (Scope::Path(path), operation) => {
                for location in select::locate(path, document) {
                    if let Some(node) = select::get_mut(document, &location) {
                        visit(operation, node, work);
                    }
                }
            }
            (Scope::Fields(names), Operation::Change(Action::Remove)) => {
                work.counts.removed += remove_fields(document, names);
            }
            (Scope::Fields(names), operation) => {
                for_each_field(document, names, &mut |node| visit(operation, node, work));
            }
            (Scope::Everywhere, Operation::Drop(Some(predicate))) => {
                if drop_matching(document, predicate, work) {
                    *document = select::empty_like(document);
                    work.counts.dropped_entities += 1;
                }
            }
            (Scope::Everywhere, operation) => visit(operation, document, work),
        }
    }
}

fn visit(operation: &Operation, node: &mut Value, work: &mut Work<'_>) {
    match operation {
        Operation::Change(action) => work.apply(action, node),
        Operation::Detect(detectors, action) => scrub_value(node, &[(detectors, action)], work),
        // Drops are handled by their scope; compilation allows no other form.
        Operation::Drop(_) => {}
    }
}

/// Detectors over every string below `value`, member names included (a map
/// keyed by e-mail address is as personal as a list of them). `steps` are
/// detect rules in order; each text is counted once for all of them and
/// again only after a rule changed it.
fn scrub_value(value: &mut Value, steps: &[DetectStep<'_>], work: &mut Work<'_>) {
    match value {
        Value::String(text) => {
            let mut shape = TextShape::of(text);
            for (detectors, action) in steps {
                if let Some(clean) = work.scrub_shaped(detectors, action, text, &shape) {
                    *text = clean;
                    shape = TextShape::of(text);
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                scrub_value(item, steps, work);
            }
        }
        Value::Object(fields) => {
            let renamed = fields.keys().any(|key| {
                let shape = TextShape::of(key);
                steps
                    .iter()
                    .any(|(detectors, _)| !detectors.find_shaped(key, &shape, &[]).is_empty())
            });
            if renamed {
                // Rule by rule, as one walk per rule renames them: which
                // value a collision keeps depends on it.
                for (detectors, action) in steps {
                    let old = std::mem::take(fields);
                    for (key, item) in old {
                        let key = work.scrub(detectors, action, &key).unwrap_or(key);
                        fields.insert(key, item);
                    }
                }
            }
            for item in fields.values_mut() {
                scrub_value(item, steps, work);
            }
        }
        _ => {}
    }
}

fn for_each_field(value: &mut Value, names: &FieldNames, visit: &mut dyn FnMut(&mut Value)) {
    match value {
        Value::Object(fields) => {
            for (key, item) in fields.iter_mut() {
                if names.matches(key) {
                    visit(item);
                } else {
                    for_each_field(item, names, visit);
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                for_each_field(item, names, visit);
            }
        }
        _ => {}
    }
}

fn remove_fields(value: &mut Value, names: &FieldNames) -> u64 {
    let mut removed = 0;
    match value {
        Value::Object(fields) => {
            let before = fields.len();
            fields.retain(|key, _| !names.matches(key));
            removed += (before - fields.len()) as u64;
            for item in fields.values_mut() {
                removed += remove_fields(item, names);
            }
        }
        Value::Array(items) => {
            for item in items {
                removed += remove_fields(item, names);
            }
        }
        _ => {}
    }
    removed
}

/// Removes every object below `value` the predicate holds for; returns
/// whether it holds for `value` itself.
fn drop_matching(value: &mut Value, predicate: &Predicate, work: &mut Work<'_>) -> bool {
    if let Value::Object(fields) = value {
        if predicate.holds(fields) {
            return true;
        }
    }
    let mut dropped = 0;
    match value {
        Value::Object(fields) => {
            fields.retain(|_, item| {
                let drop = drop_matching(item, predicate, work);
                dropped += u64::from(drop);
                !drop
            });
        }
        Value::Array(items) => {
            items.retain_mut(|item| {
                let drop = drop_matching(item, predicate, work);
                dropped += u64::from(drop);
                !drop
            });
        }
        _ => {}
    }
    work.counts.dropped_entities += dropped;
    false
}

impl Predicate {
    fn holds(&self, fields: &serde_json::Map<String, Value>) -> bool {
        let found = fields
            .iter()
            .find(|(key, _)| self.field.matches(key))
            .map(|(_, value)| select::data_of(value));
        match (&self.test, found) {
            (Test::Exists(expected), found) => found.is_some() == *expected,
            (_, None) => false,
            (Test::Equals(expected), Some(value)) => value == expected,
            (Test::OneOf(options), Some(value)) => options.contains(value),
            (Test::Matches(pattern), Some(Value::String(text))) => pattern.is_match(text),
            (Test::Matches(pattern), Some(Value::Number(n))) => pattern.is_match(&n.to_string()),
            (Test::Matches(_), Some(_)) => false,
        }
    }
}

fn compile_allowlist(at: &str, entries: &[String]) -> Result<Allowlist, ConfigError> {
    let mut names = HashSet::new();
    let mut paths = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        if entry.starts_with('$') {
            paths.push(parse_path(&format!("{at}.allow[{i}]"), entry)?);
        } else if entry.is_empty() {
            return Err(ConfigError::at(
                at,
                &format!(".allow[{i}]"),
                "empty field name",
            ));
        } else {
            names.insert(entry.clone());
        }
    }
    Ok(Allowlist { names, paths })
}

fn parse_path(at: &str, text: &str) -> Result<JsonPath, ConfigError> {
    JsonPath::parse(text).map_err(|e| {
        ConfigError::new(
            at,
            format!(
                "invalid JSONPath (RFC 9535) at position {}: {}",
                e.position(),
                e.message().replace(['\n', '\r'], " ")
            ),
        )
    })
}

fn compile_rule(
    at: &str,
    rule: &RuleConfig,
    library: &DetectorLibrary,
    needs: &mut Needs,
) -> Result<Rule, ConfigError> {
    if rule.path.is_some() && !rule.fields.is_empty() {
        return Err(ConfigError::new(at, "`path` and `fields` are exclusive"));
    }
    if let Some(i) = rule.fields.iter().position(String::is_empty) {
        return Err(ConfigError::at(
            at,
            &format!(".fields[{i}]"),
            "empty field name",
        ));
    }
    let scope = match &rule.path {
        Some(path) => Scope::Path(parse_path(&format!("{at}.path"), path)?),
        None if !rule.fields.is_empty() => Scope::Fields(FieldNames::new(&rule.fields)),
        None => Scope::Everywhere,
    };
    let is_drop = matches!(rule.action, ActionConfig::DropEntity);
    if rule.when.is_some() && !is_drop {
        return Err(ConfigError::at(
            at,
            ".when",
            "`when` belongs to `drop_entity` rules",
        ));
    }
    if is_drop {
        if !rule.detect.is_empty() {
            return Err(ConfigError::at(
                at,
                ".detect",
                "`drop_entity` takes `when` or `path`, not detectors",
            ));
        }
        if !rule.fields.is_empty() {
            return Err(ConfigError::at(
                at,
                ".fields",
                "`drop_entity` selects with `when` (and optionally `path`)",
            ));
        }
        let predicate = match &rule.when {
            Some(when) => Some(compile_predicate(&format!("{at}.when"), when)?),
            None if matches!(scope, Scope::Path(_)) => None,
            None => return Err(ConfigError::new(at, "`drop_entity` needs `when` or `path`")),
        };
        return Ok(Rule {
            scope,
            operation: Operation::Drop(predicate),
        });
    }
    let action = compile_action(&format!("{at}.action"), &rule.action, needs)?;
    let operation = if rule.detect.is_empty() {
        if matches!(scope, Scope::Everywhere) {
            return Err(ConfigError::new(
                at,
                "a rule needs `path`, `fields` or `detect`",
            ));
        }
        Operation::Change(action)
    } else {
        let mut detectors = Vec::new();
        for (i, name) in rule.detect.iter().enumerate() {
            match library.get(name) {
                Some(found) => detectors.extend_from_slice(found),
                None => {
                    return Err(ConfigError::at(
                        at,
                        &format!(".detect[{i}]"),
                        format!("unknown detector `{name}`"),
                    ))
                }
            }
        }
        let set = DetectorSet::new(detectors);
        if let Action::Generalize(kind) = &action {
            if !matches!(kind, GeneralizeConfig::Ip { .. }) || !set.only_ip() {
                return Err(ConfigError::at(
                    at,
                    ".action",
                    "inside strings only IP addresses can be generalized (`ip`/`ipv4`/`ipv6` detectors with \"kind\": \"ip\")",
                ));
            }
        }
        Operation::Detect(set, action)
    };
    Ok(Rule { scope, operation })
}

fn compile_action(
    at: &str,
    config: &ActionConfig,
    needs: &mut Needs,
) -> Result<Action, ConfigError> {
    Ok(match config {
        ActionConfig::Remove => Action::Remove,
        ActionConfig::Replace { with } => Action::Replace(with.clone()),
        ActionConfig::Mask {
            keep_first,
            keep_last,
            mask_char,
        } => {
            if mask_char.is_control() {
                return Err(ConfigError::at(
                    at,
                    ".mask.mask_char",
                    "must be a visible character",
                ));
            }
            Action::Mask(MaskSpec {
                keep_first: *keep_first,
                keep_last: *keep_last,
                mask_char: *mask_char,
            })
        }
        ActionConfig::Hash { prefix, length } => {
            if !valid_prefix(prefix) {
                return Err(ConfigError::at(
                    at,
                    ".hash.prefix",
                    "at most 16 characters from A-Z, a-z, 0-9, `_`, `-`",
                ));
            }
            if !(MIN_TOKEN_HEX..=MAX_TOKEN_HEX).contains(length) {
                return Err(ConfigError::at(
                    at,
                    ".hash.length",
                    format!("must be between {MIN_TOKEN_HEX} and {MAX_TOKEN_HEX} hex digits"),
                ));
            }
            if !needs.hash_prefixes.contains(prefix) {
                needs.hash_prefixes.push(prefix.clone());
            }
            needs.first_hash_rule.get_or_insert_with(|| at.to_string());
            Action::Hash(HashSpec {
                prefix: prefix.clone(),
                length: *length,
            })
        }
        ActionConfig::Generalize(kind) => {
            match kind {
                GeneralizeConfig::Number { decimals }
                | GeneralizeConfig::Coordinates { decimals }
                    if *decimals > 15 =>
                {
                    return Err(ConfigError::at(
                        at,
                        ".generalize.decimals",
                        "must be at most 15",
                    ))
                }
                GeneralizeConfig::Ip { v4_prefix, .. } if *v4_prefix > 32 => {
                    return Err(ConfigError::at(
                        at,
                        ".generalize.v4_prefix",
                        "must be at most 32",
                    ))
                }
                GeneralizeConfig::Ip { v6_prefix, .. } if *v6_prefix > 128 => {
                    return Err(ConfigError::at(
                        at,
                        ".generalize.v6_prefix",
                        "must be at most 128",
                    ))
                }
                _ => {}
            }
            Action::Generalize(*kind)
        }
        // Handled by the caller before actions are compiled.
        ActionConfig::DropEntity => {
            return Err(ConfigError::new(
                at,
                "`drop_entity` cannot be combined here",
            ))
        }
    })
}

fn compile_predicate(at: &str, config: &PredicateConfig) -> Result<Predicate, ConfigError> {
    if config.field.is_empty() {
        return Err(ConfigError::at(at, ".field", "empty field name"));
    }
    let mut tests = Vec::new();
    if let Some(value) = &config.equals {
        tests.push(Test::Equals(value.clone()));
    }
    if let Some(values) = &config.one_of {
        tests.push(Test::OneOf(values.clone()));
    }
    if let Some(pattern) = &config.matches {
        let regex = Regex::new(pattern).map_err(|e| {
            ConfigError::at(
                at,
                ".matches",
                format!(
                    "invalid regular expression: {}",
                    e.to_string().replace(['\n', '\r'], " ")
                ),
            )
        })?;
        tests.push(Test::Matches(regex));
    }
    if let Some(exists) = config.exists {
        tests.push(Test::Exists(exists));
    }
    if tests.len() != 1 {
        return Err(ConfigError::new(
            at,
            "exactly one of `equals`, `one_of`, `matches`, `exists` is required",
        ));
    }
    let test = tests
        .pop()
        .ok_or_else(|| ConfigError::new(at, "missing test"))?;
    Ok(Predicate {
        field: FieldNames::new(std::slice::from_ref(&config.field)),
        test,
    })
}
