//! The rate-limit stage in the real `.wasm`, with several VM instances of
//! the module sharing one `SharedStore` the way Envoy's workers share one
//! process's shared data: one limit across workers, refill on a shared
//! clock, the key cap and its overflow bucket, and shadow mode.

use std::time::Duration;

use citygate_host::{Clock, Request, SharedStore, Vm};
use serde_json::{json, Value};

use crate::support::{metric, plugin, send, Answer};

/// An open-data API with two anonymous routes, as in the city pack.
fn config(rate_limits: Value) -> String {
    json!({
        "gateway": {"realm": "city-api", "trusted_hops": 0},
        "routes": [
            {"name": "ngsi-v2-entities", "match": {"path_prefix": "/v2/entities"}, "auth": {"anonymous": true}},
            {"name": "open311-requests", "match": {"path_prefix": "/open311/v2"}, "auth": {"anonymous": true}}
        ],
        "rate_limits": rate_limits
    })
    .to_string()
}

/// `capacity` tokens, refilled by `tokens` every `period` seconds.
fn rule(name: &str, key: Value, capacity: u64, tokens: u64, period: u64) -> Value {
    json!({
        "name": name,
        "key": key,
        "bucket": {"capacity": capacity, "refill": {"tokens": tokens, "period_seconds": period}},
        "response_headers": true
    })
}

/// `n` VMs of one module on one shared store and one clock: Envoy's workers.
fn workers(n: usize, config: &str, store: &SharedStore, clock: &Clock) -> Vec<Vm> {
    let plugin = plugin();
    (0..n)
        .map(|_| {
            plugin
                .vm()
                .config(config)
                .shared(store)
                .clock(clock)
                .start()
                .expect("the VM starts with this configuration")
        })
        .collect()
}

impl Answer {
    /// Forwarded and answered 200: the limit let it through.
    fn admitted(&self) -> bool {
        self.forwarded && self.status == 200
    }
}

fn entities() -> Request {
    Request::get("/v2/entities?type=ParkingSpot")
}

/// A refusal as the contract has it: 429 problem+json from the rate-limit
/// stage, never forwarded, with `Retry-After` and both RateLimit fields.
fn assert_refusal(answer: &Answer, policy: &str, retry_after: u64, reset: u64) {
    assert_eq!(answer.status, 429, "{answer:?}");
    assert!(!answer.forwarded);
    assert_eq!(
        answer.header("content-type"),
        Some("application/problem+json")
    );
    let problem: Value = serde_json::from_slice(&answer.body).expect("a JSON problem document");
    assert_eq!(problem["status"], 429);
    assert_eq!(problem["type"], "urn:citygate:problem:rate-limited");
    assert_eq!(problem["title"], "Too Many Requests");
    assert_eq!(
        answer.header("retry-after"),
        Some(retry_after.to_string().as_str())
    );
    assert_eq!(
        answer.header("ratelimit"),
        Some(format!("\"{policy}\";r=0;t={reset}").as_str())
    );
    assert!(
        answer
            .header("ratelimit-policy")
            .is_some_and(|p| p.starts_with(&format!("\"{policy}\";q="))),
        "{answer:?}"
    );
}

/// Sends `requests` requests round-robin over `vms` VMs sharing one store
/// and returns, per request in order, which VM served it and whether it
/// was admitted.
fn round_robin(vms: &mut [Vm], requests: usize) -> Vec<(usize, Answer)> {
    let n = vms.len();
    (0..requests)
        .map(|i| {
            let answer = send(&mut vms[i % n], entities()).unwrap();
            (i % n, answer)
        })
        .collect()
}

/// One per-IP limit of 10 per hour, one client, `n` workers: the first 10
/// requests are admitted whichever worker serves them, and nothing after.
fn one_limit_across(n: usize) -> Vec<usize> {
    let store = SharedStore::new();
    let clock = Clock::default();
    let limits = json!({"rules": [rule("per-ip", json!(["client_ip"]), 10, 1, 3600)]});
    let mut vms = workers(n, &config(limits), &store, &clock);
    let answers = round_robin(&mut vms, 10 * n + 10);

    let admitted: Vec<usize> = answers
        .iter()
        .enumerate()
        .filter(|(_, (_, a))| a.admitted())
        .map(|(i, _)| i)
        .collect();
    assert_eq!(admitted, (0..10).collect::<Vec<_>>());
    // Every admitted request took its own token: the remaining counts seen
    // across workers are 9, 8, …, 0 with no repeat.
    let remaining: Vec<String> = answers[..10]
        .iter()
        .map(|(_, a)| a.header("ratelimit").unwrap_or_default().to_string())
        .collect();
    let expected: Vec<String> = (0..10)
        .rev()
        .map(|r| format!("\"per-ip\";r={r};t={}", (10 - r) * 3600))
        .collect();
    assert_eq!(remaining, expected);
    for (_, answer) in &answers[10..] {
        assert_refusal(answer, "per-ip", 3600, 36_000);
    }
    // Stats are process-wide in Envoy, and so in the shared store.
    assert_eq!(
        metric(&vms[0], "citygate_ratelimit_checked"),
        (10 * n + 10) as u64
    );
    assert_eq!(
        metric(&vms[0], "citygate_ratelimit_limited"),
        (10 * n) as u64
    );
    let mut per_vm = vec![0; n];
    for (vm, answer) in &answers {
        per_vm[*vm] += usize::from(answer.admitted());
    }
    per_vm
}

#[test]
fn two_workers_sharing_one_store_admit_exactly_the_limit() {
    assert_eq!(one_limit_across(2), vec![5, 5]);
}

#[test]
fn four_workers_sharing_one_store_admit_exactly_the_limit() {
    assert_eq!(one_limit_across(4), vec![3, 3, 2, 2]);
}

#[test]
fn workers_on_their_own_threads_admit_exactly_the_limit() {
    // Real concurrency: four VMs on four threads race on one shard key.
    // A check that loses the compare-and-swap too often refuses (fail
    // closed) without taking a token, so the total stays exact.
    let store = SharedStore::new();
    let clock = Clock::default();
    let plugin = plugin();
    let config = config(json!({"rules": [rule("per-ip", json!(["client_ip"]), 50, 1, 3600)]}));
    let admitted: usize = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    let mut vm = plugin
                        .vm()
                        .config(config.as_str())
                        .shared(&store)
                        .clock(&clock)
                        .start()
                        .unwrap();
                    (0..100)
                        .filter(|_| send(&mut vm, entities()).unwrap().admitted())
                        .count()
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).sum()
    });
    assert_eq!(admitted, 50);
    let vm = plugin.vm().config(config).shared(&store).clock(&clock);
    let vm = vm.start().unwrap();
    assert_eq!(metric(&vm, "citygate_ratelimit_checked"), 400);
    assert_eq!(metric(&vm, "citygate_ratelimit_limited"), 350);
}

#[test]
fn tokens_come_back_at_the_refill_rate_on_every_worker() {
    // 3 tokens, one back every 10 s: an empty bucket is full after 30 s.
    // Depends on the host's clock standing still between advances
    // (ARCHITECTURE.md, "Where the wasmtime host differs from Envoy"): the
    // exact `t` values and the refusal 1 s before a token would drift with
    // real time.
    let store = SharedStore::new();
    let clock = Clock::default();
    let limits = json!({"rules": [rule("per-ip", json!(["client_ip"]), 3, 1, 10)]});
    let mut vms = workers(2, &config(limits), &store, &clock);

    for (i, (r, t)) in [(2, 10), (1, 20), (0, 30)].into_iter().enumerate() {
        let answer = send(&mut vms[i % 2], entities()).unwrap();
        assert!(answer.admitted(), "{answer:?}");
        assert_eq!(
            answer.header("ratelimit-policy"),
            Some("\"per-ip\";q=3;w=30")
        );
        assert_eq!(
            answer.header("ratelimit"),
            Some(format!("\"per-ip\";r={r};t={t}").as_str())
        );
    }
    assert_refusal(&send(&mut vms[1], entities()).unwrap(), "per-ip", 10, 30);

    // 9 s later the first token is still 1 s away, for both workers.
    clock.advance(Duration::from_secs(9));
    assert_refusal(&send(&mut vms[0], entities()).unwrap(), "per-ip", 1, 21);
    assert_refusal(&send(&mut vms[1], entities()).unwrap(), "per-ip", 1, 21);

    // At 10 s exactly one token is back: one worker takes it, the other
    // is refused right after.
    clock.advance(Duration::from_secs(1));
    let answer = send(&mut vms[1], entities()).unwrap();
    assert!(answer.admitted(), "{answer:?}");
    assert_eq!(answer.header("ratelimit"), Some("\"per-ip\";r=0;t=30"));
    assert_refusal(&send(&mut vms[0], entities()).unwrap(), "per-ip", 10, 30);

    // An hour later the bucket holds its capacity, not an hour of tokens;
    // the sweep on the root contexts' ticks changes nothing of that.
    clock.advance(Duration::from_secs(3600));
    for vm in &mut vms {
        vm.tick().unwrap();
    }
    let answers = round_robin(&mut vms, 8);
    let admitted = answers.iter().filter(|(_, a)| a.admitted()).count();
    assert_eq!(admitted, 3);
    assert!(answers[..3].iter().all(|(_, a)| a.admitted()));
    assert_eq!(metric(&vms[0], "citygate_ratelimit_limited"), 4 + 5);
}

fn from(ip: &str) -> Request {
    entities().source(&format!("{ip}:40000"))
}

fn ip_config(max_keys: u32) -> String {
    let mut per_ip = rule("per-ip", json!(["client_ip"]), 2, 2, 60);
    per_ip["max_keys"] = max_keys.into();
    config(json!({"rules": [per_ip]}))
}

#[test]
fn past_the_key_cap_new_clients_share_one_overflow_bucket() {
    // 4 live buckets at most (one shard); 2 tokens each, full again in 60 s.
    // Depends on each request choosing its socket peer, and on the clock
    // standing still between advances (ARCHITECTURE.md, "Where the wasmtime
    // host differs from Envoy"): through Envoy every test client is one
    // loopback address.
    let store = SharedStore::new();
    let clock = Clock::default();
    let mut vms = workers(2, &ip_config(4), &store, &clock);
    let overflow = |vms: &[Vm]| metric(&vms[0], "citygate_ratelimit_overflow");

    for (i, n) in (1..=4).enumerate() {
        let answer = send(&mut vms[i % 2], from(&format!("198.51.100.{n}"))).unwrap();
        assert_eq!(answer.header("ratelimit"), Some("\"per-ip\";r=1;t=30"));
    }
    assert_eq!(overflow(&vms), 0);

    // Twenty minted addresses get the overflow bucket's 2 tokens between
    // them, not 2 each, and every one of them is counted.
    let minted: Vec<Answer> = (11..31)
        .map(|n| send(&mut vms[n % 2], from(&format!("198.51.100.{n}"))).unwrap())
        .collect();
    assert_eq!(minted.iter().filter(|a| a.admitted()).count(), 2);
    assert!(minted[..2].iter().all(Answer::admitted));
    assert_refusal(&minted[2], "per-ip", 30, 60);
    assert_eq!(overflow(&vms), 20);

    // Known clients keep their own buckets: one token left each.
    let known = send(&mut vms[1], from("198.51.100.1")).unwrap();
    assert!(known.admitted(), "{known:?}");
    assert_refusal(
        &send(&mut vms[0], from("198.51.100.1")).unwrap(),
        "per-ip",
        30,
        60,
    );
    assert_eq!(overflow(&vms), 20);

    // Once the buckets have refilled they are as good as gone: a new
    // client takes a slot of its own instead of the overflow bucket.
    clock.advance(Duration::from_secs(60));
    let newcomer = send(&mut vms[0], from("198.51.100.200")).unwrap();
    assert_eq!(newcomer.header("ratelimit"), Some("\"per-ip\";r=1;t=30"));
    assert_eq!(overflow(&vms), 20);
    assert_eq!(metric(&vms[0], "citygate_ratelimit_limited"), 18 + 1);
}

#[test]
fn without_trusted_hops_x_forwarded_for_buys_no_fresh_bucket() {
    let store = SharedStore::new();
    let clock = Clock::default();
    let mut vms = workers(2, &ip_config(100), &store, &clock);
    let answers: Vec<Answer> = (0..10)
        .map(|n| {
            let spoofed = from("203.0.113.5").header("x-forwarded-for", &format!("10.9.8.{n}"));
            send(&mut vms[n % 2], spoofed).unwrap()
        })
        .collect();
    assert_eq!(answers.iter().filter(|a| a.admitted()).count(), 2);
    assert_eq!(metric(&vms[0], "citygate_ratelimit_overflow"), 0);
}

#[test]
fn ipv6_clients_are_limited_by_their_64() {
    // Depends on each request choosing its socket peer (ARCHITECTURE.md,
    // "Where the wasmtime host differs from Envoy"): through Envoy every test
    // client is one IPv4 loopback address.
    let store = SharedStore::new();
    let clock = Clock::default();
    let mut vms = workers(2, &ip_config(100), &store, &clock);
    let mut admitted = |ip: &str, vm: usize| {
        send(&mut vms[vm], entities().source(&format!("[{ip}]:40000")))
            .unwrap()
            .admitted()
    };
    assert!(admitted("2001:db8:1:2::1", 0));
    assert!(admitted("2001:db8:1:2:ffff:ffff:ffff:ffff", 1));
    assert!(!admitted("2001:db8:1:2::abcd", 0));
    // The next /64 is another client.
    assert!(admitted("2001:db8:1:3::1", 1));
}

#[test]
fn a_shadow_rule_counts_and_logs_but_never_refuses() {
    let store = SharedStore::new();
    let clock = Clock::default();
    let mut shadow = rule("tight", json!(["client_ip"]), 2, 1, 3600);
    shadow["shadow"] = true.into();
    let mut vms = workers(2, &config(json!({"rules": [shadow]})), &store, &clock);

    for (_, answer) in round_robin(&mut vms, 10) {
        assert!(answer.admitted(), "{answer:?}");
        // A rule on trial does not show its quota to clients.
        assert_eq!(answer.header("ratelimit"), None);
        assert_eq!(answer.header("ratelimit-policy"), None);
        assert_eq!(answer.header("retry-after"), None);
    }
    assert_eq!(metric(&vms[0], "citygate_ratelimit_shadow_limited"), 8);
    assert_eq!(metric(&vms[0], "citygate_ratelimit_limited"), 0);
    let logged = |vm: &Vm| {
        vm.logs()
            .iter()
            .filter(|l| l.message.contains("rule `tight` (shadow) would refuse"))
            .count()
    };
    assert_eq!(logged(&vms[0]) + logged(&vms[1]), 8);
    assert!(logged(&vms[0]) > 0 && logged(&vms[1]) > 0);
}

#[test]
fn a_shadow_rule_beside_an_enforcing_one_leaves_enforcement_alone() {
    let store = SharedStore::new();
    let clock = Clock::default();
    let mut shadow = rule("trial", json!(["client_ip"]), 2, 1, 3600);
    shadow["shadow"] = true.into();
    let enforced = rule("per-ip", json!(["client_ip"]), 5, 1, 3600);
    let limits = json!({"rules": [shadow, enforced]});
    let mut vms = workers(2, &config(limits), &store, &clock);

    let answers = round_robin(&mut vms, 8);
    assert!(answers[..5].iter().all(|(_, a)| a.admitted()));
    for (_, answer) in &answers[..5] {
        assert!(answer
            .header("ratelimit")
            .is_some_and(|v| v.starts_with("\"per-ip\";")));
    }
    for (_, answer) in &answers[5..] {
        assert_refusal(answer, "per-ip", 3600, 18_000);
    }
    assert_eq!(metric(&vms[0], "citygate_ratelimit_shadow_limited"), 6);
    assert_eq!(metric(&vms[0], "citygate_ratelimit_limited"), 3);
}

#[test]
fn rules_count_only_where_they_match() {
    // A per-route total on Open311 leaves open data alone, and the other
    // way round.
    let store = SharedStore::new();
    let clock = Clock::default();
    let mut open311 = rule("open311-total", json!(["route"]), 2, 1, 3600);
    open311["match"] = json!({"routes": ["open311-requests"]});
    let mut vms = workers(2, &config(json!({"rules": [open311]})), &store, &clock);

    let mut open311_admitted = 0;
    for n in 0..6 {
        let request = Request::get("/open311/v2/requests.json").source(&format!("192.0.2.{n}:1"));
        open311_admitted += usize::from(send(&mut vms[n % 2], request).unwrap().admitted());
    }
    // Keyed by route: different clients share the one bucket.
    assert_eq!(open311_admitted, 2);
    for n in 0..6 {
        let answer = send(&mut vms[n % 2], entities()).unwrap();
        assert!(answer.admitted(), "{answer:?}");
        assert_eq!(answer.header("ratelimit"), None);
    }
    assert_eq!(metric(&vms[0], "citygate_ratelimit_checked"), 6);
}

#[test]
fn api_key_id_keys_each_key_and_client_id_the_whole_application() {
    // Two keys of one application (a rotation): each key has its own
    // bucket under `api_key_id`, and both draw on one under `client_id`.
    let key = |id: &str, secret: &str| json!({"id": id, "client_id": "parking-app", "sha256": citygate_host::cli::hash_key(secret)});
    let config = json!({
        "auth": {"api_keys": {"header": "x-api-key", "keys": [
            key("parking-app-2026", "demo-key-2026"),
            key("parking-app-2027", "demo-key-2027")
        ]}},
        "routes": [{"name": "parking", "match": {"path_prefix": "/v2/entities"}, "auth": {"methods": ["api_key"]}}],
        "rate_limits": {"rules": [
            rule("per-key", json!(["api_key_id"]), 2, 1, 3600),
            rule("per-client", json!(["client_id"]), 3, 1, 3600)
        ]}
    })
    .to_string();
    let store = SharedStore::new();
    let clock = Clock::default();
    let mut vms = workers(2, &config, &store, &clock);
    let with_key = |secret: &str| entities().header("x-api-key", secret);

    assert!(send(&mut vms[0], with_key("demo-key-2026"))
        .unwrap()
        .admitted());
    assert!(send(&mut vms[1], with_key("demo-key-2026"))
        .unwrap()
        .admitted());
    assert_refusal(
        &send(&mut vms[0], with_key("demo-key-2026")).unwrap(),
        "per-key",
        3600,
        7200,
    );
    // The other key is not held back by the first key's bucket…
    let other = send(&mut vms[1], with_key("demo-key-2027")).unwrap();
    assert!(other.admitted(), "{other:?}");
    assert_eq!(
        other.header("ratelimit"),
        Some("\"per-client\";r=0;t=10800")
    );
    // …but the application as a whole is.
    assert_refusal(
        &send(&mut vms[0], with_key("demo-key-2027")).unwrap(),
        "per-client",
        3600,
        10_800,
    );
}
