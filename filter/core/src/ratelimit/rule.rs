//! Rules compiled from config: validated with exact JSON paths, matched per
//! request with no allocation beyond the key hash.

use std::collections::HashSet;

use sha2::{Digest, Sha256};

use super::bucket::BucketParams;
use super::config::{Descriptor, MatchConfig, OnMissing, RateLimitConfig, RuleConfig, Scope};
use super::key::KeySpec;
use super::store::RuleStore;
use crate::config::{ConfigError, RouteConfig};
use crate::identity::{Identity, IdentityKind};
use crate::normalize::RequestView;

const PATH: &str = "$.rate_limits";
const MAX_NAME_LEN: usize = 64;
const MAX_TOKENS: u64 = 1_000_000_000;
const MAX_PERIOD_SECONDS: u64 = 366 * 24 * 3600;
const MAX_KEYS_LIMIT: u32 = 1_000_000;

#[derive(Debug)]
pub struct Rule {
    pub name: String,
    pub key: KeySpec,
    pub store: RuleStore,
    pub window_seconds: u64,
    pub shadow: bool,
    pub response_headers: bool,
    matcher: Option<Condition>,
    unless: Option<Condition>,
}

#[derive(Debug)]
struct Condition {
    routes: Vec<String>,
    methods: Vec<String>,
    identity_kinds: Vec<IdentityKind>,
    roles: Vec<String>,
    claims: Vec<(String, serde_json::Value)>,
}

impl Rule {
    pub fn applies(&self, view: &RequestView, identity: &Identity, route: &RouteConfig) -> bool {
        let matched = self
            .matcher
            .as_ref()
            .is_none_or(|c| c.holds(view, identity, route));
        let excepted = self
            .unless
            .as_ref()
            .is_some_and(|c| c.holds(view, identity, route));
        matched && !excepted
    }
}

impl Condition {
    fn holds(&self, view: &RequestView, identity: &Identity, route: &RouteConfig) -> bool {
        any_or_empty(&self.routes, |r| *r == route.name)
            && any_or_empty(&self.methods, |m| *m == view.method)
            && any_or_empty(&self.identity_kinds, |k| *k == identity.kind)
            && any_or_empty(&self.roles, |r| identity.has_role(r))
            && self
                .claims
                .iter()
                .all(|(name, value)| identity.claims.get(name) == Some(value))
    }
}

fn any_or_empty<T>(list: &[T], test: impl Fn(&T) -> bool) -> bool {
    list.is_empty() || list.iter().any(test)
}

pub fn compile_rules(
    config: &RateLimitConfig,
    routes: &[RouteConfig],
) -> Result<Vec<Rule>, ConfigError> {
    check_max_keys(
        config.max_keys_per_rule,
        &format!("{PATH}.max_keys_per_rule"),
    )?;
    let route_names: HashSet<&str> = routes.iter().map(|r| r.name.as_str()).collect();
    let mut names = HashSet::new();
    let mut rules = Vec::with_capacity(config.rules.len());
    for (index, rule) in config.rules.iter().enumerate() {
        let at = format!("{PATH}.rules[{index}]");
        if !names.insert(rule.name.as_str()) {
            return Err(ConfigError::new(
                format!("{at}.name"),
                format!("duplicate rate-limit rule name `{}`", rule.name),
            ));
        }
        rules.push(compile_rule(rule, config, &route_names, &at)?);
    }
    Ok(rules)
}

fn compile_rule(
    rule: &RuleConfig,
    config: &RateLimitConfig,
    route_names: &HashSet<&str>,
    at: &str,
) -> Result<Rule, ConfigError> {
    check_name(&rule.name, at)?;
    if rule.scope == Scope::Global {
        return Err(ConfigError::at(
            at,
            ".scope",
            "scope `global` (a shared rate-limit service) is not supported yet; use `local`",
        ));
    }
    check_key(rule, at)?;
    let bucket = &rule.bucket;
    check_range(
        bucket.capacity,
        MAX_TOKENS,
        &format!("{at}.bucket.capacity"),
    )?;
    check_range(
        bucket.refill.tokens,
        MAX_TOKENS,
        &format!("{at}.bucket.refill.tokens"),
    )?;
    check_range(
        bucket.refill.period_seconds,
        MAX_PERIOD_SECONDS,
        &format!("{at}.bucket.refill.period_seconds"),
    )?;
    let max_keys = rule.max_keys.unwrap_or(config.max_keys_per_rule);
    if rule.max_keys.is_some() {
        check_max_keys(max_keys, &format!("{at}.max_keys"))?;
    }
    let params = BucketParams::new(
        bucket.capacity,
        bucket.refill.tokens,
        bucket.refill.period_seconds,
    );
    Ok(Rule {
        name: rule.name.clone(),
        key: KeySpec::new(&rule.key, rule.on_missing),
        store: RuleStore::new(store_prefix(rule, max_keys), max_keys, params),
        window_seconds: params.window_seconds(),
        shadow: rule.shadow,
        response_headers: rule.response_headers,
        matcher: compile_condition(rule.matcher.as_ref(), route_names, &format!("{at}.match"))?,
        unless: compile_condition(rule.unless.as_ref(), route_names, &format!("{at}.unless"))?,
    })
}

/// The rule's shared-data namespace. It carries a fingerprint of everything
/// that gives stored bytes their meaning, so after a config change workers
/// never read buckets written for another capacity, period, key or cap.
fn store_prefix(rule: &RuleConfig, max_keys: u32) -> String {
    let mut hasher = Sha256::new();
    let mut field = |value: &str| {
        hasher.update((value.len() as u64).to_be_bytes());
        hasher.update(value.as_bytes());
    };
    for descriptor in &rule.key {
        field(&descriptor_id(descriptor));
    }
    field(match rule.on_missing {
        OnMissing::SharedBucket => "shared_bucket",
        OnMissing::Skip => "skip",
    });
    for number in [
        rule.bucket.capacity,
        rule.bucket.refill.tokens,
        rule.bucket.refill.period_seconds,
        u64::from(max_keys),
    ] {
        field(&number.to_string());
    }
    let digest = hasher.finalize();
    let fingerprint = hex::encode(digest.get(..8).unwrap_or_default());
    format!("citygate/rl/v1/{}/{fingerprint}/", rule.name)
}

/// A descriptor's stable spelling for the fingerprint (not `Debug`, whose
/// output is not a promise across compiler versions).
fn descriptor_id(descriptor: &Descriptor) -> String {
    match descriptor {
        Descriptor::Subject => "subject".into(),
        Descriptor::ClientId => "client_id".into(),
        Descriptor::ApiKeyId => "api_key_id".into(),
        Descriptor::ClientIp => "client_ip/v6-64".into(),
        Descriptor::Route => "route".into(),
        Descriptor::Method => "method".into(),
        Descriptor::Header(name) => format!("header:{}", name.to_ascii_lowercase()),
        Descriptor::Claim(name) => format!("claim:{name}"),
    }
}

/// Names go into shared-data keys and into a structured-field string in
/// client headers, so they are restricted to characters safe in both.
fn check_name(name: &str, at: &str) -> Result<(), ConfigError> {
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if valid {
        Ok(())
    } else {
        Err(ConfigError::at(
            at,
            ".name",
            format!("must be 1 to {MAX_NAME_LEN} characters of A-Z a-z 0-9 _ - ."),
        ))
    }
}

fn check_key(rule: &RuleConfig, at: &str) -> Result<(), ConfigError> {
    for (i, descriptor) in rule.key.iter().enumerate() {
        match descriptor {
            Descriptor::Header(name) if !is_header_name(name) => {
                return Err(ConfigError::new(
                    format!("{at}.key[{i}].header"),
                    "must be a non-empty HTTP header name",
                ))
            }
            Descriptor::Claim(name) if name.is_empty() => {
                return Err(ConfigError::new(
                    format!("{at}.key[{i}].claim"),
                    "must be a non-empty claim name",
                ))
            }
            _ => {}
        }
    }
    Ok(())
}

fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn check_range(value: u64, max: u64, path: &str) -> Result<(), ConfigError> {
    if (1..=max).contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::new(
            path,
            format!("must be between 1 and {max}"),
        ))
    }
}

fn check_max_keys(value: u32, path: &str) -> Result<(), ConfigError> {
    check_range(u64::from(value), u64::from(MAX_KEYS_LIMIT), path)
}

fn compile_condition(
    config: Option<&MatchConfig>,
    route_names: &HashSet<&str>,
    at: &str,
) -> Result<Option<Condition>, ConfigError> {
    let Some(config) = config else {
        return Ok(None);
    };
    for (i, route) in config.routes.iter().enumerate() {
        if !route_names.contains(route.as_str()) {
            return Err(ConfigError::new(
                format!("{at}.routes[{i}]"),
                format!("no route is named `{route}`"),
            ));
        }
    }
    for (i, method) in config.methods.iter().enumerate() {
        if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(ConfigError::new(
                format!("{at}.methods[{i}]"),
                format!("`{method}` is not an upper-case HTTP method"),
            ));
        }
    }
    for (i, role) in config.roles.iter().enumerate() {
        if role.is_empty() {
            return Err(ConfigError::new(
                format!("{at}.roles[{i}]"),
                "must not be empty",
            ));
        }
    }
    for (i, claim) in config.claims.iter().enumerate() {
        if claim.claim.is_empty() {
            return Err(ConfigError::new(
                format!("{at}.claims[{i}].claim"),
                "must be a non-empty claim name",
            ));
        }
    }
    Ok(Some(Condition {
        routes: config.routes.clone(),
        methods: config.methods.clone(),
        identity_kinds: config.identity_kinds.clone(),
        roles: config.roles.clone(),
        claims: config
            .claims
            .iter()
            .map(|c| (c.claim.clone(), c.equals.clone()))
            .collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(value: serde_json::Value) -> RuleConfig {
        serde_json::from_value(value).unwrap()
    }

    fn base() -> serde_json::Value {
        serde_json::json!({
            "name": "per-tenant",
            "key": [{"header": "X-Tenant"}, "client_ip"],
            "bucket": {"capacity": 10, "refill": {"tokens": 5, "period_seconds": 60}}
        })
    }

    #[test]
    fn the_store_prefix_changes_exactly_when_stored_bytes_change_meaning() {
        let prefix = store_prefix(&rule(base()), 100);
        assert!(prefix.starts_with("citygate/rl/v1/per-tenant/"), "{prefix}");
        assert_eq!(prefix, store_prefix(&rule(base()), 100));
        let mut lower = base();
        lower["key"][0]["header"] = "x-tenant".into();
        assert_eq!(prefix, store_prefix(&rule(lower), 100));
        let mut shadow = base();
        shadow["shadow"] = true.into();
        assert_eq!(prefix, store_prefix(&rule(shadow), 100));

        assert_ne!(prefix, store_prefix(&rule(base()), 101));
        let mut capacity = base();
        capacity["bucket"]["capacity"] = 11.into();
        assert_ne!(prefix, store_prefix(&rule(capacity), 100));
        let mut period = base();
        period["bucket"]["refill"]["period_seconds"] = 61.into();
        assert_ne!(prefix, store_prefix(&rule(period), 100));
        let mut key = base();
        key["key"] = serde_json::json!(["client_ip", {"header": "x-tenant"}]);
        assert_ne!(prefix, store_prefix(&rule(key), 100));
        let mut missing = base();
        missing["on_missing"] = "skip".into();
        assert_ne!(prefix, store_prefix(&rule(missing), 100));
    }
}
