//! The redaction sections of the plugin configuration: top-level
//! `redaction` (keys, profiles, detectors) and each route's `redaction`.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde_json::Value;

/// Responses larger than this (after decoding) are not minimized but
/// replaced by a 502, unless a route sets its own bound.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

/// A key that must never appear in a log or a `Debug` dump of the config.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
pub struct RedactionConfig {
    /// Pseudonym keys by key id; write each as `${env:NAME}`.
    pub keys: BTreeMap<String, Secret>,
    /// The key id new pseudonyms are made with (required when a profile hashes).
    pub active_key: Option<String>,
    pub profiles: BTreeMap<String, ProfileConfig>,
    pub detectors: DetectorsConfig,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
pub struct DetectorsConfig {
    /// Licence-plate patterns by country code; they replace the built-in
    /// German pattern when present.
    pub licence_plates: BTreeMap<String, String>,
    /// User-defined detectors by name (a regular expression each).
    pub custom: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// What the rules select is changed; everything else passes.
    #[default]
    Denylist,
    /// Only what `allow` names survives; the rules then apply to that.
    Allowlist,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ProfileConfig {
    #[serde(default)]
    pub mode: Mode,
    /// Allowlist entries: JSONPath expressions (starting with `$`) or field
    /// names of entity-level objects.
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
}

/// One rule: a selector (`path`, `fields`, `detect`, or `when` for
/// `drop_entity`) and an action.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// An RFC 9535 JSONPath expression.
    #[serde(default)]
    pub path: Option<String>,
    /// Field (NGSI attribute) names, matched at any depth.
    #[serde(default)]
    pub fields: Vec<String>,
    /// Detectors to run over strings (within `path`/`fields` if given,
    /// else over the whole document).
    #[serde(default)]
    pub detect: Vec<String>,
    /// For `drop_entity`: the objects to drop.
    #[serde(default)]
    pub when: Option<PredicateConfig>,
    pub action: ActionConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ActionConfig {
    Remove,
    Replace {
        with: Value,
    },
    Mask {
        #[serde(default)]
        keep_first: usize,
        #[serde(default)]
        keep_last: usize,
        #[serde(default = "default_mask_char")]
        mask_char: char,
    },
    Hash {
        #[serde(default = "default_hash_prefix")]
        prefix: String,
        /// Hex digits of the HMAC kept in the token.
        #[serde(default = "default_hash_length")]
        length: usize,
    },
    Generalize(GeneralizeConfig),
    DropEntity,
}

fn default_mask_char() -> char {
    '*'
}

fn default_hash_prefix() -> String {
    "pn_".to_string()
}

fn default_hash_length() -> usize {
    16
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum GeneralizeConfig {
    /// Numbers rounded to `decimals`.
    Number { decimals: u8 },
    /// GeoJSON `coordinates`, NGSI `geo:point` strings and plain numbers.
    Coordinates { decimals: u8 },
    /// RFC 3339 timestamps and dates truncated to the unit.
    Timestamp { to: TimeUnit },
    /// Dates of birth reduced to the year.
    BirthDate,
    /// IP addresses reduced to their network prefix.
    Ip {
        #[serde(default = "default_v4_prefix")]
        v4_prefix: u8,
        #[serde(default = "default_v6_prefix")]
        v6_prefix: u8,
    },
}

fn default_v4_prefix() -> u8 {
    24
}

fn default_v6_prefix() -> u8 {
    48
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum TimeUnit {
    Hour,
    Day,
    Month,
    Year,
}

/// A test on one field of an object (NGSI attributes are unwrapped).
/// Exactly one of `equals`, `one_of`, `matches`, `exists`.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct PredicateConfig {
    pub field: String,
    #[serde(default)]
    pub equals: Option<Value>,
    #[serde(default)]
    pub one_of: Option<Vec<Value>>,
    #[serde(default)]
    pub matches: Option<String>,
    #[serde(default)]
    pub exists: Option<bool>,
}

/// Per-route minimization options.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
pub struct RouteRedaction {
    /// The profile applied when the policy chooses none.
    pub profile: Option<String>,
    /// Refuse to forward when neither the policy nor `profile` names one.
    pub require_profile: bool,
    /// Let non-JSON responses pass unminimized (a fail-open switch: logged
    /// at start and counted).
    pub allow_non_json: bool,
    pub max_body_bytes: usize,
    /// Upstream response headers that never reach the client.
    pub remove_response_headers: Vec<String>,
    /// Client addresses sent upstream (`x-forwarded-for`, `x-real-ip`) are
    /// cut to this IPv4 prefix length.
    pub client_ip_prefix_v4: Option<u8>,
    pub client_ip_prefix_v6: Option<u8>,
    /// Request headers the upstream does not need (cookies, credentials).
    pub drop_request_headers: Vec<String>,
}

impl Default for RouteRedaction {
    fn default() -> Self {
        Self {
            profile: None,
            require_profile: false,
            allow_non_json: false,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            remove_response_headers: Vec::new(),
            client_ip_prefix_v4: None,
            client_ip_prefix_v6: None,
            drop_request_headers: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_parse_in_their_short_and_long_forms() {
        let rules: Vec<RuleConfig> = serde_json::from_str(
            r#"[{"fields":["a"],"action":"remove"},
                {"fields":["b"],"action":{"mask":{"keep_last":2}}},
                {"fields":["c"],"action":{"hash":{}}},
                {"fields":["d"],"action":{"generalize":{"kind":"timestamp","to":"hour"}}},
                {"fields":["e"],"action":{"generalize":{"kind":"ip"}}}]"#,
        )
        .unwrap();
        assert!(matches!(rules[0].action, ActionConfig::Remove));
        assert!(matches!(
            rules[1].action,
            ActionConfig::Mask {
                keep_first: 0,
                keep_last: 2,
                mask_char: '*'
            }
        ));
        assert!(
            matches!(&rules[2].action, ActionConfig::Hash { prefix, length: 16 } if prefix == "pn_")
        );
        assert!(matches!(
            rules[4].action,
            ActionConfig::Generalize(GeneralizeConfig::Ip {
                v4_prefix: 24,
                v6_prefix: 48
            })
        ));
    }

    #[test]
    fn unknown_fields_are_refused_inside_actions() {
        let bad = serde_json::from_str::<RuleConfig>(
            r#"{"fields":["d"],"action":{"generalize":{"kind":"number","decimals":1,"extra":1}}}"#,
        );
        assert!(bad.is_err());
        let bad =
            serde_json::from_str::<RuleConfig>(r#"{"fields":["d"],"action":{"mask":{"keep":1}}}"#);
        assert!(bad.is_err());
    }

    #[test]
    fn secrets_do_not_show_in_debug_output() {
        let config: RedactionConfig =
            serde_json::from_str(r#"{"keys":{"k1":"very-secret-key-material"}}"#).unwrap();
        assert!(!format!("{config:?}").contains("very-secret"));
    }
}
