//! The rate limiter as the pipeline uses it: config → compile → check/sweep
//! against an in-memory host standing in for Envoy's shared data.

use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;
use crate::config::{self, PluginConfig};
use crate::host::memory::MemoryHost;
use crate::identity::IdentityKind;

const T0: u64 = 1_700_000_000;

fn plugin(rate_limits: Value) -> Result<PluginConfig, ConfigError> {
    let document = json!({
        "routes": [
            {"name": "parking", "match": {"path_prefix": "/parking"}, "auth": {"anonymous": true}},
            {"name": "open311", "match": {"path_prefix": "/open311"}, "auth": {"anonymous": true}}
        ],
        "rate_limits": rate_limits
    });
    config::parse(document.to_string().as_bytes(), &|_| None)
}

fn compile(rate_limits: Value) -> Result<(RateLimiter, Vec<RouteConfig>), ConfigError> {
    let config = plugin(rate_limits)?;
    let limiter = RateLimiter::compile(&config.rate_limits, &config.routes)?;
    Ok((limiter, config.routes))
}

fn limiter(rate_limits: Value) -> (RateLimiter, Vec<RouteConfig>) {
    compile(rate_limits).unwrap()
}

fn config_error(rate_limits: Value) -> ConfigError {
    compile(rate_limits).expect_err("config should be rejected")
}

fn request(method: &str, ip: &str, headers: &[(&str, &str)]) -> RequestView {
    RequestView {
        method: method.into(),
        client_ip: ip.parse().ok(),
        headers: headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    }
}

fn rule(name: &str, key: Value, capacity: u64) -> Value {
    json!({
        "name": name,
        "key": key,
        "bucket": {"capacity": capacity, "refill": {"tokens": capacity, "period_seconds": 60}}
    })
}

fn with(mut rule: Value, field: &str, value: Value) -> Value {
    rule[field] = value;
    rule
}

/// Checks `n` requests and returns how many were allowed.
fn allowed(
    limiter: &RateLimiter,
    route: &RouteConfig,
    view: &RequestView,
    identity: &Identity,
    host: &MemoryHost,
    n: usize,
) -> usize {
    (0..n)
        .filter(|_| limiter.check(view, identity, route, host).is_ok())
        .count()
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

// ---- configuration ----

#[test]
fn config_errors_name_their_exact_json_path() {
    let cases = [
        (
            json!({"rules": [rule("a", json!([]), 1), rule("b", json!([]), 1), rule("c", json!([]), 0)]}),
            "$.rate_limits.rules[2].bucket.capacity",
        ),
        (
            json!({"rules": [with(rule("a", json!([]), 1), "bucket", json!({"capacity": 1, "refill": {"tokens": 1, "period_seconds": 0}}))]}),
            "$.rate_limits.rules[0].bucket.refill.period_seconds",
        ),
        (
            json!({"rules": [with(rule("a", json!([]), 1), "bucket", json!({"capacity": 1, "refill": {"tokens": 0, "period_seconds": 1}}))]}),
            "$.rate_limits.rules[0].bucket.refill.tokens",
        ),
        (
            json!({"rules": [rule("a", json!([]), 1), rule("a", json!([]), 1)]}),
            "$.rate_limits.rules[1].name",
        ),
        (
            json!({"rules": [with(rule("a", json!([]), 1), "match", json!({"routes": ["parking", "trafic"]}))]}),
            "$.rate_limits.rules[0].match.routes[1]",
        ),
        (
            json!({"rules": [with(rule("a", json!([]), 1), "unless", json!({"routes": ["nope"]}))]}),
            "$.rate_limits.rules[0].unless.routes[0]",
        ),
        (
            json!({"rules": [with(rule("a", json!([]), 1), "match", json!({"methods": ["get"]}))]}),
            "$.rate_limits.rules[0].match.methods[0]",
        ),
        (
            json!({"rules": [with(rule("a", json!([]), 1), "scope", json!("global"))]}),
            "$.rate_limits.rules[0].scope",
        ),
        (
            json!({"rules": [rule("bad name\"", json!([]), 1)]}),
            "$.rate_limits.rules[0].name",
        ),
        (
            json!({"rules": [rule("a", json!(["client_ip", {"header": ""}]), 1)]}),
            "$.rate_limits.rules[0].key[1].header",
        ),
        (
            json!({"rules": [with(rule("a", json!([]), 1), "max_keys", json!(0))]}),
            "$.rate_limits.rules[0].max_keys",
        ),
        (
            json!({"max_keys_per_rule": 0}),
            "$.rate_limits.max_keys_per_rule",
        ),
        (
            json!({"rules": [with(rule("a", json!([]), 1), "burst", json!(3))]}),
            "$.rate_limits.rules[0].burst",
        ),
        (
            json!({"rules": [rule("a", json!(["ip"]), 1)]}),
            "$.rate_limits.rules[0].key[0]",
        ),
    ];
    for (config, path) in cases {
        let error = config_error(config.clone());
        assert_eq!(error.path, path, "{config}: {error}");
        assert!(!error.to_string().contains('\n'));
    }
}

#[test]
fn global_scope_is_refused_with_a_clear_message() {
    let error =
        config_error(json!({"rules": [with(rule("a", json!([]), 1), "scope", json!("global"))]}));
    assert!(error.message.contains("not supported yet"), "{error}");
    let local = with(rule("a", json!([]), 1), "scope", json!("local"));
    assert!(compile(json!({"rules": [local]})).is_ok());
}

#[test]
fn no_rules_allows_everything_without_headers() {
    let (limiter, routes) = limiter(json!({}));
    let host = MemoryHost::at_unix_seconds(T0);
    let view = request("GET", "10.0.0.1", &[]);
    for _ in 0..100 {
        let headers = limiter
            .check(&view, &Identity::anonymous(), &routes[0], &host)
            .unwrap();
        assert!(headers.is_empty());
    }
    assert_eq!(host.counter(Metric::RatelimitChecked), 0);
}

// ---- enforcement and headers ----

#[test]
fn a_client_past_its_bucket_gets_a_429_with_retry_after_and_ratelimit_fields() {
    let (limiter, routes) = limiter(json!({"rules": [rule("per-ip", json!(["client_ip"]), 3)]}));
    let host = MemoryHost::at_unix_seconds(T0);
    let anon = Identity::anonymous();
    let view = request("GET", "198.51.100.7", &[]);
    assert_eq!(allowed(&limiter, &routes[0], &view, &anon, &host, 3), 3);
    let denial = limiter.check(&view, &anon, &routes[0], &host).unwrap_err();
    assert_eq!(denial.status, 429);
    assert_eq!(denial.stage, Stage::RateLimit);
    assert_eq!(denial.metric, Metric::RatelimitLimited);
    // 3 tokens per 60 s: the next one in 20 s, full again in 60 s.
    assert_eq!(header(&denial.headers, "retry-after"), Some("20"));
    assert_eq!(
        header(&denial.headers, "ratelimit-policy"),
        Some("\"per-ip\";q=3;w=60")
    );
    assert_eq!(
        header(&denial.headers, "ratelimit"),
        Some("\"per-ip\";r=0;t=60")
    );
    assert!(!denial.detail.contains("198.51.100.7"));
    // Another client is unaffected; the first recovers with time.
    let other = request("GET", "198.51.100.8", &[]);
    assert!(limiter.check(&other, &anon, &routes[0], &host).is_ok());
    host.advance_seconds(20);
    assert!(limiter.check(&view, &anon, &routes[0], &host).is_ok());
    assert!(limiter.check(&view, &anon, &routes[0], &host).is_err());
    assert_eq!(host.counter(Metric::RatelimitChecked), 7);
}

#[test]
fn allowed_responses_carry_the_most_constrained_rule_that_asks_for_headers() {
    let wide = with(rule("wide", json!([]), 10), "response_headers", json!(true));
    let narrow = with(
        rule("narrow", json!(["client_ip"]), 2),
        "response_headers",
        json!(true),
    );
    let silent = rule("silent", json!(["method"]), 1);
    let (limiter, routes) =
        limiter(json!({"rules": [wide, narrow, silent], "legacy_headers": true}));
    let host = MemoryHost::at_unix_seconds(T0);
    let headers = limiter
        .check(
            &request("GET", "10.0.0.1", &[]),
            &Identity::anonymous(),
            &routes[0],
            &host,
        )
        .unwrap();
    // `silent` is tighter (0 left) but does not ask for headers.
    assert_eq!(header(&headers, "ratelimit"), Some("\"narrow\";r=1;t=30"));
    assert_eq!(
        header(&headers, "ratelimit-policy"),
        Some("\"narrow\";q=2;w=60")
    );
    assert_eq!(header(&headers, "x-ratelimit-limit"), Some("2"));
    assert_eq!(header(&headers, "x-ratelimit-remaining"), Some("1"));
    assert_eq!(header(&headers, "x-ratelimit-reset"), Some("30"));
}

#[test]
fn rules_without_response_headers_add_none() {
    let (limiter, routes) = limiter(json!({"rules": [rule("quiet", json!([]), 5)]}));
    let host = MemoryHost::at_unix_seconds(T0);
    let headers = limiter
        .check(
            &request("GET", "10.0.0.1", &[]),
            &Identity::anonymous(),
            &routes[0],
            &host,
        )
        .unwrap();
    assert!(headers.is_empty());
}

#[test]
fn one_refusal_refuses_and_earlier_tokens_are_not_refunded() {
    let total = rule("route-total", json!(["route"]), 5);
    let per_ip = rule("per-ip", json!(["client_ip"]), 1);
    let (limiter, routes) = limiter(json!({"rules": [total, per_ip]}));
    let host = MemoryHost::at_unix_seconds(T0);
    let anon = Identity::anonymous();
    let ip = request("GET", "10.0.0.1", &[]);
    assert_eq!(allowed(&limiter, &routes[0], &ip, &anon, &host, 3), 1);
    // The two refused requests took route-total tokens: 5 - 3 = 2 left.
    let others: usize = (2..6)
        .map(|n| request("GET", &format!("10.0.0.{n}"), &[]))
        .filter(|v| limiter.check(v, &anon, &routes[0], &host).is_ok())
        .count();
    assert_eq!(others, 2);
}

#[test]
fn shadow_rules_count_and_log_but_never_refuse() {
    let shadow = with(
        rule("trial", json!(["client_ip"]), 2),
        "shadow",
        json!(true),
    );
    let (limiter, routes) = limiter(json!({"rules": [shadow]}));
    let host = MemoryHost::at_unix_seconds(T0);
    let view = request("GET", "203.0.113.9", &[]);
    assert_eq!(
        allowed(
            &limiter,
            &routes[0],
            &view,
            &Identity::anonymous(),
            &host,
            5
        ),
        5
    );
    assert_eq!(host.counter(Metric::RatelimitShadowLimited), 3);
    assert_eq!(host.counter(Metric::RatelimitLimited), 0);
    let logs = host.log_lines();
    assert_eq!(logs.len(), 3);
    assert!(logs[0].contains("`trial` (shadow)"), "{}", logs[0]);
    assert!(logs.iter().all(|l| !l.contains("203.0.113.9")));
}

// ---- matching ----

#[test]
fn rules_apply_only_where_they_match() {
    let writes = with(
        rule("open311-writes", json!(["client_ip"]), 1),
        "match",
        json!({"routes": ["open311"], "methods": ["POST", "PUT"], "identity_kinds": ["anonymous"]}),
    );
    let (limiter, routes) = limiter(json!({"rules": [writes]}));
    let host = MemoryHost::at_unix_seconds(T0);
    let anon = Identity::anonymous();
    let (parking, open311) = (&routes[0], &routes[1]);
    let post = request("POST", "10.0.0.1", &[]);
    assert_eq!(allowed(&limiter, open311, &post, &anon, &host, 3), 1);
    assert_eq!(allowed(&limiter, parking, &post, &anon, &host, 3), 3);
    let get = request("GET", "10.0.0.1", &[]);
    assert_eq!(allowed(&limiter, open311, &get, &anon, &host, 3), 3);
    let mut jwt = Identity::anonymous();
    jwt.kind = IdentityKind::Jwt;
    assert_eq!(allowed(&limiter, open311, &post, &jwt, &host, 3), 3);
}

#[test]
fn plans_are_plain_config_premium_gets_the_larger_bucket() {
    let premium_claim = json!([{"claim": "plan", "equals": "premium"}]);
    let standard = with(
        rule("standard", json!(["subject"]), 2),
        "unless",
        json!({"claims": premium_claim}),
    );
    let premium = with(
        rule("premium", json!(["subject"]), 5),
        "match",
        json!({"claims": premium_claim}),
    );
    let operators = with(
        rule("operators", json!(["subject"]), 1),
        "match",
        json!({"roles": ["operator"]}),
    );
    let (limiter, routes) = limiter(json!({"rules": [standard, premium, operators]}));
    let host = MemoryHost::at_unix_seconds(T0);
    let view = request("GET", "10.0.0.1", &[]);
    let mut alice = Identity::anonymous();
    alice.kind = IdentityKind::Jwt;
    alice.subject = Some("alice".into());
    let mut bob = alice.clone();
    bob.subject = Some("bob".into());
    bob.claims_mut().insert("plan".into(), json!("premium"));
    let mut carol = alice.clone();
    carol.subject = Some("carol".into());
    carol.roles = vec!["operator".into()];
    assert_eq!(allowed(&limiter, &routes[0], &view, &alice, &host, 10), 2);
    assert_eq!(allowed(&limiter, &routes[0], &view, &bob, &host, 10), 5);
    assert_eq!(allowed(&limiter, &routes[0], &view, &carol, &host, 10), 1);
}

#[test]
fn omitting_a_key_header_shares_one_bucket_unless_the_rule_skips() {
    let tenant = json!([{"header": "X-City-Tenant"}]);
    let (shared, routes) = limiter(json!({"rules": [rule("tenant", tenant.clone(), 2)]}));
    let host = MemoryHost::at_unix_seconds(T0);
    let anon = Identity::anonymous();
    let bare: usize = (1..6)
        .map(|n| request("GET", &format!("10.0.0.{n}"), &[]))
        .filter(|v| shared.check(v, &anon, &routes[0], &host).is_ok())
        .count();
    assert_eq!(bare, 2, "clients without the header share one bucket");
    let tagged = request("GET", "10.0.0.1", &[("x-city-tenant", "north")]);
    assert_eq!(allowed(&shared, &routes[0], &tagged, &anon, &host, 5), 2);

    let skip = with(rule("tenant", tenant, 2), "on_missing", json!("skip"));
    let (skipping, routes) = limiter(json!({"rules": [skip]}));
    let host = MemoryHost::at_unix_seconds(T0);
    let bare = request("GET", "10.0.0.1", &[]);
    assert_eq!(allowed(&skipping, &routes[0], &bare, &anon, &host, 5), 5);
    assert_eq!(host.counter(Metric::RatelimitChecked), 0);
}

// ---- bounded memory ----

#[test]
fn minted_keys_past_the_cap_share_the_overflow_bucket_and_are_counted() {
    let capped = with(
        rule("per-ip", json!(["client_ip"]), 2),
        "max_keys",
        json!(4),
    );
    let (limiter, routes) = limiter(json!({"rules": [capped]}));
    let host = MemoryHost::at_unix_seconds(T0);
    let anon = Identity::anonymous();
    let admitted: usize = (1..=20)
        .map(|n| request("GET", &format!("192.0.2.{n}"), &[]))
        .filter(|v| limiter.check(v, &anon, &routes[0], &host).is_ok())
        .count();
    // Four keys get their own bucket (one request each); sixteen rotating
    // addresses share the overflow bucket's two tokens.
    assert_eq!(admitted, 4 + 2);
    assert_eq!(host.counter(Metric::RatelimitOverflow), 16);
    assert_eq!(limiter.rules[0].store.live_keys(&host), 4);
}

#[test]
fn the_sweep_forgets_refilled_buckets_only() {
    // One shard, so one tick sweeps everything.
    let small = with(
        rule("per-ip", json!(["client_ip"]), 2),
        "max_keys",
        json!(32),
    );
    let (limiter, routes) = limiter(json!({"rules": [small]}));
    let host = MemoryHost::at_unix_seconds(T0);
    let anon = Identity::anonymous();
    let heavy = request("GET", "10.0.0.1", &[]);
    let light = request("GET", "10.0.0.2", &[]);
    assert_eq!(allowed(&limiter, &routes[0], &heavy, &anon, &host, 2), 2);
    host.advance_seconds(25);
    assert_eq!(allowed(&limiter, &routes[0], &light, &anon, &host, 1), 1);
    // At +57 s: heavy is 0.1 token short of full; light (1 token per 30 s)
    // has been full again since +55 s.
    host.advance_seconds(32);
    limiter.sweep(&host);
    assert_eq!(limiter.rules[0].store.live_keys(&host), 1);
    // The sweep did not reset heavy: one token now, not two.
    assert_eq!(allowed(&limiter, &routes[0], &heavy, &anon, &host, 2), 1);
}

#[test]
fn the_sweep_covers_every_shard_in_bounded_slices() {
    let big = with(
        rule("per-ip", json!(["client_ip"]), 1),
        "max_keys",
        json!(100_000),
    );
    let (limiter, routes) = limiter(json!({"rules": [big]}));
    let shards = limiter.rules[0].store.shard_count() as usize;
    assert!(shards > SWEEP_SHARDS_PER_TICK);
    let host = MemoryHost::at_unix_seconds(T0);
    let anon = Identity::anonymous();
    for n in 0..200u32 {
        let ip = std::net::Ipv4Addr::from(0x0a00_0000 + n).to_string();
        assert!(limiter
            .check(&request("GET", &ip, &[]), &anon, &routes[0], &host)
            .is_ok());
    }
    host.advance_seconds(60);
    limiter.sweep(&host);
    let after_one = limiter.rules[0].store.live_keys(&host);
    assert!(after_one > 0, "one tick sweeps a slice, not everything");
    for _ in 0..shards.div_ceil(SWEEP_SHARDS_PER_TICK) {
        limiter.sweep(&host);
    }
    assert_eq!(limiter.rules[0].store.live_keys(&host), 0);
}

// ---- across workers and failures ----

#[test]
fn workers_share_one_limit() {
    let config = json!({"rules": [rule("per-ip", json!(["client_ip"]), 10)]});
    let (first, routes) = limiter(config.clone());
    let (second, _) = limiter(config);
    let host = MemoryHost::at_unix_seconds(T0);
    let anon = Identity::anonymous();
    let view = request("GET", "10.0.0.1", &[]);
    let mut admitted = 0;
    for i in 0..30 {
        let worker = if i % 3 == 0 { &first } else { &second };
        admitted += usize::from(worker.check(&view, &anon, &routes[0], &host).is_ok());
    }
    assert_eq!(admitted, 10);
}

#[test]
fn a_changed_rule_starts_from_fresh_buckets_instead_of_misreading_old_ones() {
    let host = MemoryHost::at_unix_seconds(T0);
    let anon = Identity::anonymous();
    let view = request("GET", "10.0.0.1", &[]);
    let (before, routes) = limiter(json!({"rules": [rule("per-ip", json!(["client_ip"]), 1)]}));
    assert_eq!(allowed(&before, &routes[0], &view, &anon, &host, 2), 1);
    let (after, routes) = limiter(json!({"rules": [rule("per-ip", json!(["client_ip"]), 3)]}));
    assert_eq!(allowed(&after, &routes[0], &view, &anon, &host, 5), 3);
}

#[test]
fn a_store_that_cannot_decide_fails_closed_except_in_shadow_mode() {
    let enforced = rule("per-ip", json!(["client_ip"]), 5);
    let (enforcing, routes) = limiter(json!({"rules": [enforced]}));
    let host = MemoryHost::at_unix_seconds(T0);
    // Every shard of the rule holds bytes of some other format.
    for shard in 0..enforcing.rules[0].store.shard_count() {
        let key = enforcing.rules[0].store.shard_key(shard);
        host.shared_set(&key, b"garbage", None).unwrap();
    }
    let view = request("GET", "10.0.0.1", &[]);
    let denial = enforcing
        .check(&view, &Identity::anonymous(), &routes[0], &host)
        .unwrap_err();
    assert_eq!(denial.status, 429);
    assert_eq!(header(&denial.headers, "retry-after"), Some("1"));
    assert!(host
        .log_lines()
        .iter()
        .any(|l| l.contains("could not be checked")));

    let shadow = with(
        rule("per-ip", json!(["client_ip"]), 5),
        "shadow",
        json!(true),
    );
    let (shadowed, routes) = limiter(json!({"rules": [shadow]}));
    for shard in 0..shadowed.rules[0].store.shard_count() {
        let key = shadowed.rules[0].store.shard_key(shard);
        host.shared_set(&key, b"garbage", None).unwrap();
    }
    assert!(shadowed
        .check(&view, &Identity::anonymous(), &routes[0], &host)
        .is_ok());
}

proptest! {
    /// Two workers, random time steps and sweeps in between: one key is
    /// never admitted more than capacity + refill over any window.
    #[test]
    fn workers_and_sweeps_never_admit_more_than_capacity_plus_refill(
        capacity in 1u64..8,
        refill in 1u64..4,
        steps in proptest::collection::vec((0u64..20, 0usize..4, any::<bool>(), any::<bool>()), 1..50),
    ) {
        let config = json!({"rules": [{
            "name": "p", "key": ["client_ip"],
            "bucket": {"capacity": capacity, "refill": {"tokens": refill, "period_seconds": 10}}
        }]});
        let (first, routes) = limiter(config.clone());
        let (second, _) = limiter(config);
        let host = MemoryHost::at_unix_seconds(T0);
        let anon = Identity::anonymous();
        let view = request("GET", "10.0.0.1", &[]);
        let mut admitted_at = Vec::new();
        let mut now = 0u64;
        for (seconds, requests, on_second, sweep) in steps {
            host.advance_seconds(seconds);
            now += seconds;
            let worker = if on_second { &second } else { &first };
            if sweep {
                worker.sweep(&host);
            }
            for _ in 0..requests {
                if worker.check(&view, &anon, &routes[0], &host).is_ok() {
                    admitted_at.push(now);
                }
            }
        }
        for (i, start) in admitted_at.iter().enumerate() {
            for (j, end) in admitted_at.iter().enumerate().skip(i) {
                let bound = capacity + (end - start) * refill / 10;
                prop_assert!((j - i + 1) as u64 <= bound);
            }
        }
    }
}

#[test]
fn the_readme_example_compiles_and_behaves_as_documented() {
    let readme = include_str!("../../../../README.md");
    let section = &readme[readme.find("### `rate_limits`").unwrap()..];
    let start = section.find("```json\n").unwrap() + "```json\n".len();
    let end = start + section[start..].find("```").unwrap();
    let example: Value = serde_json::from_str(&format!("{{{}}}", &section[start..end])).unwrap();
    let (limiter, routes) = limiter(example["rate_limits"].clone());
    assert_eq!(limiter.rules.len(), 5);
    let host = MemoryHost::at_unix_seconds(T0);
    let view = request("GET", "10.0.0.1", &[]);
    let headers = limiter
        .check(&view, &Identity::anonymous(), &routes[1], &host)
        .unwrap();
    assert_eq!(header(&headers, "ratelimit"), Some("\"per-ip\";r=59;t=1"));
}
