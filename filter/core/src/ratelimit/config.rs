//! The `rate_limits` section as written by operators. Semantic checks live in
//! [`super::rule::compile_rules`], which reports exact JSON paths.

use serde::Deserialize;

use crate::identity::IdentityKind;

/// Live keys per rule when a rule does not say otherwise.
pub const DEFAULT_MAX_KEYS: u32 = 10_000;

#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Checked in order; every matching rule takes a token and one refusal
    /// refuses the request.
    pub rules: Vec<RuleConfig>,
    /// Live buckets per rule unless the rule sets `max_keys`. Default 10000.
    pub max_keys_per_rule: u32,
    /// Also send `X-RateLimit-Limit`, `X-RateLimit-Remaining` and
    /// `X-RateLimit-Reset` next to the IETF fields. Default false.
    pub legacy_headers: bool,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            rules: Vec::new(),
            max_keys_per_rule: DEFAULT_MAX_KEYS,
            legacy_headers: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Names the policy in `RateLimit-Policy`, metrics logs and shared-data
    /// keys: 1 to 64 of `A-Z a-z 0-9 _ - .`.
    pub name: String,
    /// Only `local` (buckets shared by this Envoy's workers) for now.
    #[serde(default)]
    pub scope: Scope,
    /// What identifies a bucket. Empty: one bucket for every matching request.
    #[serde(default)]
    pub key: Vec<Descriptor>,
    pub bucket: BucketConfig,
    /// When the rule applies. Absent: always.
    #[serde(default, rename = "match")]
    pub matcher: Option<MatchConfig>,
    /// When the rule does not apply even though `match` holds (e.g. a
    /// standard plan's rule `unless` the `plan` claim is `premium`).
    #[serde(default)]
    pub unless: Option<MatchConfig>,
    #[serde(default)]
    pub on_missing: OnMissing,
    /// Count and log would-be refusals without refusing. Default false.
    #[serde(default)]
    pub shadow: bool,
    /// Allowed responses carry this rule's RateLimit fields when it is the
    /// most constrained such rule. Default false.
    #[serde(default)]
    pub response_headers: bool,
    /// Overrides `max_keys_per_rule`.
    #[serde(default)]
    pub max_keys: Option<u32>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    #[default]
    Local,
    /// Reserved for Envoy's RateLimitService protocol; rejected for now.
    Global,
}

/// One part of a bucket key. Written as a string (`"client_ip"`) or, for
/// the parameterized ones, an object (`{"header": "x-city-tenant"}`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Descriptor {
    Subject,
    ClientId,
    /// The API key's configured `id` (the `api_key_id` claim the auth stage
    /// sets); the subject of an `api_key` identity is its client application.
    ApiKeyId,
    /// The client after the trusted-hops rule; IPv6 clients by their /64.
    ClientIp,
    Route,
    Method,
    /// A request header's first value (case-sensitive value, name
    /// case-insensitive).
    Header(String),
    /// A verified claim of the identity.
    Claim(String),
}

#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct BucketConfig {
    /// Most tokens the bucket holds: the largest burst. 1 to 10^9.
    pub capacity: u64,
    pub refill: RefillConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RefillConfig {
    /// Tokens added per period, continuously. 1 to 10^9.
    pub tokens: u64,
    /// 1 s to 366 days.
    pub period_seconds: u64,
}

/// Every condition given must hold; within a list, any entry may.
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
pub struct MatchConfig {
    /// Route names (checked against `$.routes`).
    pub routes: Vec<String>,
    /// Upper-case HTTP methods.
    pub methods: Vec<String>,
    pub identity_kinds: Vec<IdentityKind>,
    /// The identity holds any of these roles.
    pub roles: Vec<String>,
    /// All of these claims equal their values.
    pub claims: Vec<ClaimEquals>,
}

#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ClaimEquals {
    pub claim: String,
    pub equals: serde_json::Value,
}

/// What to do when a key descriptor has no value (header or claim absent).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum OnMissing {
    /// Requests lacking the value share one bucket (per the other
    /// descriptors), so omitting a header never escapes the limit.
    #[default]
    SharedBucket,
    /// The rule does not apply to such requests.
    Skip,
}
