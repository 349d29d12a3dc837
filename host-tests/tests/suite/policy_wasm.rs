//! The Rego policy stage in the real `.wasm`, for what scenario files cannot
//! express: the evaluation budget (a runaway policy denies instead of
//! hanging the worker), dry-run, the decision-log fields, the clock
//! `time.now_ns` reads, and what never reaches a log.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use citygate_host::wasm_build::workspace_root;
use citygate_host::{Clock, Request, Vm};
use serde_json::{json, Value};

use crate::support::{metric, plugin, send};

const START: u64 = 1_790_000_000;

/// Two anonymous routes (`/open`, `/trial`) under one Rego module.
fn config(module: &str, policy: Value, trial_dry_run: bool) -> String {
    let mut policy = policy;
    policy["modules"] = json!({ "test.rego": module });
    json!({
        "routes": [
            {"name": "open", "match": {"path_prefix": "/open"}, "auth": {"anonymous": true}},
            {"name": "trial", "match": {"path_prefix": "/trial"}, "auth": {"anonymous": true},
             "policy": {"dry_run": trial_dry_run}}
        ],
        "policy": policy,
        "decision_log": {"pseudonym_key": "demo-only-key"}
    })
    .to_string()
}

fn vm(config: &str, clock: &Clock) -> Vm {
    plugin()
        .vm()
        .config(config)
        .clock(clock)
        .start()
        .expect("the VM starts with this configuration")
}

/// The decision-log lines (JSON objects at info level), oldest first.
fn decision_lines(vm: &Vm) -> Vec<Value> {
    vm.logs()
        .iter()
        .filter_map(|entry| serde_json::from_str::<Value>(&entry.message).ok())
        .filter(|line| line.get("outcome").is_some())
        .collect()
}

/// Moves the clock forward from another thread while the guest runs, as
/// real time passes in Envoy (the host's clock, WASI's monotonic clock
/// included, otherwise stands still during a call). Stops on drop.
struct PassingTime {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PassingTime {
    fn start(clock: &Clock) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (clock, stop) = (clock.clone(), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    clock.advance(Duration::from_millis(1));
                    std::thread::sleep(Duration::from_micros(50));
                }
            })
        };
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for PassingTime {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// 300 000 interpreter iterations: seconds of simulated time once the clock
/// moves, yet it ends (and allows) when it stands still.
const RUNAWAY: &str = r#"package envoy.authz
import rego.v1
default allow := false
allow if count([x | some x in numbers.range(1, 300000); x > 0]) == 300000
"#;

#[test]
fn a_runaway_policy_is_stopped_by_its_time_budget_and_denies() {
    let config = config(RUNAWAY, json!({"max_eval_micros": 2000}), false);

    // Depends on the host's clock standing still within a call
    // (ARCHITECTURE.md, "Where the wasmtime host differs from Envoy"): with
    // it the budget never runs out and the policy itself allows;
    // `PassingTime` then lets time pass during the call, as in Envoy.
    let still = Clock::at_unix_secs(START);
    let mut control = vm(&config, &still);
    let answer = send(&mut control, Request::get("/open")).unwrap();
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(answer.forwarded);

    let clock = Clock::at_unix_secs(START);
    let mut vm = vm(&config, &clock);
    let answer = {
        let _time = PassingTime::start(&clock);
        send(&mut vm, Request::get("/open")).unwrap()
    };
    assert_eq!(answer.status, 403, "{answer:?}");
    assert!(!answer.forwarded);
    let problem: Value = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(problem["type"], "urn:citygate:problem:policy-denied");
    assert_eq!(metric(&vm, "citygate_policy_error"), 1);
    assert_eq!(metric(&vm, "citygate_policy_denied"), 1);
    assert!(
        vm.logged("request denied: policy evaluation exceeded its time budget"),
        "{}",
        vm.report()
    );
    let line = decision_lines(&vm).pop().unwrap();
    assert_eq!(line["outcome"], "denied");
    assert_eq!(line["reason"], "policy evaluation exceeded its time budget");
}

const DENY_ALL: &str = r#"package envoy.authz
import rego.v1
default allow := {"allowed": false, "reason": "closed for the test"}
"#;

#[test]
fn dry_run_forwards_what_the_policy_denies_and_logs_it() {
    let clock = Clock::at_unix_secs(START);
    let mut everywhere = vm(&config(DENY_ALL, json!({"dry_run": true}), false), &clock);
    for path in ["/open", "/trial"] {
        let answer = send(&mut everywhere, Request::get(path)).unwrap();
        assert_eq!(answer.status, 200, "{path}: {answer:?}");
        assert!(answer.forwarded, "{path}");
    }
    assert_eq!(metric(&everywhere, "citygate_policy_dry_run_denied"), 2);
    assert_eq!(metric(&everywhere, "citygate_policy_denied"), 0);
    assert!(everywhere.logged("citygate: policy dry-run would deny this request"));
    let lines = decision_lines(&everywhere);
    assert_eq!(lines.len(), 2, "{lines:?}");
    for line in &lines {
        assert_eq!(line["outcome"], "dry_run_denied", "{line}");
        assert_eq!(line["reason"], "closed for the test", "{line}");
        assert_eq!(line["status"], 200, "{line}");
    }

    // Dry-run on one route only: the other route enforces.
    let mut one_route = vm(&config(DENY_ALL, json!({}), true), &clock);
    let trial = send(&mut one_route, Request::get("/trial")).unwrap();
    assert_eq!(trial.status, 200, "{trial:?}");
    let open = send(&mut one_route, Request::get("/open")).unwrap();
    assert_eq!(open.status, 403, "{open:?}");
    assert!(!open.forwarded);
    assert_eq!(metric(&one_route, "citygate_policy_dry_run_denied"), 1);
    assert_eq!(metric(&one_route, "citygate_policy_denied"), 1);
    let outcomes: Vec<Value> = decision_lines(&one_route)
        .iter()
        .map(|l| l["outcome"].clone())
        .collect();
    assert_eq!(outcomes, [json!("dry_run_denied"), json!("denied")]);
}

const BY_HEADER: &str = r#"package envoy.authz
import rego.v1
default allow := false
allow if input.attributes.request.http.headers["x-let-in"] == "yes"
"#;

#[test]
fn every_decision_line_carries_the_evaluation_time_and_each_evaluation_is_recorded() {
    let clock = Clock::at_unix_secs(START);
    let mut vm = vm(&config(BY_HEADER, json!({}), false), &clock);
    let allowed = send(&mut vm, Request::get("/open").header("x-let-in", "yes")).unwrap();
    assert_eq!(allowed.status, 200);
    let denied = send(&mut vm, Request::get("/open")).unwrap();
    assert_eq!(denied.status, 403);
    let lines = decision_lines(&vm);
    assert_eq!(lines.len(), 2, "{lines:?}");
    for line in &lines {
        assert!(line["policy_eval_us"].is_u64(), "{line}");
    }
    assert_eq!(lines[0]["outcome"], "allowed");
    assert_eq!(lines[1]["outcome"], "denied");
    // A request the policy never sees (no route) has no evaluation time.
    let unrouted = send(&mut vm, Request::get("/elsewhere")).unwrap();
    assert_eq!(unrouted.status, 404);
    let last = decision_lines(&vm).pop().unwrap();
    assert!(last.get("policy_eval_us").is_none(), "{last}");
    assert_eq!(
        vm.histogram("citygate_policy_eval_us").map(|h| h.len()),
        Some(2)
    );
}

/// The decision hands `time.now_ns()` back in a response header.
const NOW_HEADER: &str = r#"package envoy.authz
import rego.v1
allow := {"allowed": true, "response_headers_to_add": {"x-policy-now": sprintf("%d", [time.now_ns()])}}
"#;

#[test]
fn time_now_ns_is_the_host_clock() {
    // Depends on the host's clock standing still until the test advances it
    // (ARCHITECTURE.md, "Where the wasmtime host differs from Envoy"): the
    // policy sees exactly the start time, then exactly 90 s later.
    let clock = Clock::at_unix_secs(START);
    let mut vm = vm(&config(NOW_HEADER, json!({}), false), &clock);
    let first = send(&mut vm, Request::get("/open")).unwrap();
    assert_eq!(
        first.headers.get("x-policy-now"),
        Some((START * 1_000_000_000).to_string().as_str())
    );
    vm.advance(Duration::from_secs(90)).unwrap();
    let later = send(&mut vm, Request::get("/open")).unwrap();
    assert_eq!(
        later.headers.get("x-policy-now"),
        Some(((START + 90) * 1_000_000_000).to_string().as_str())
    );
}

/// A policy whose evaluation fails on a value from the input.
const FAILS_ON_INPUT: &str = r#"package envoy.authz
import rego.v1
default allow := false
allow if to_number(input.attributes.request.http.headers["x-account"]) > 0
"#;

#[test]
fn no_log_line_carries_the_input() {
    let clock = Clock::at_unix_secs(START);
    let mut vm = vm(
        &config(
            FAILS_ON_INPUT,
            json!({"strict_builtin_errors": true}),
            false,
        ),
        &clock,
    );
    let secret_header = "k7-secret-account-4711";
    let secret_token = "Bearer opaque-secret-token-0815";
    let answer = send(
        &mut vm,
        Request::post("/open")
            .header("x-account", secret_header)
            .header("authorization", secret_token)
            .header("content-type", "application/json")
            .body(r#"{"iban":"DE02120300000000202051"}"#),
    )
    .unwrap();
    assert_eq!(answer.status, 403, "{answer:?}");
    assert_eq!(metric(&vm, "citygate_policy_error"), 1);
    assert!(vm.logged("request denied: policy evaluation failed"));
    let all: String = vm
        .logs()
        .iter()
        .map(|l| format!("{}\n", l.message))
        .collect();
    for secret in [
        secret_header,
        "opaque-secret-token",
        "DE02120300000000202051",
    ] {
        assert!(!all.contains(secret), "{secret} is in the log:\n{all}");
    }
    assert!(!String::from_utf8_lossy(&answer.body).contains(secret_header));
}

/// The committed example configurations are what their sources bundle to.
#[test]
fn the_opa_envoy_example_configurations_are_their_bundled_sources() {
    let dir = workspace_root().join("policies/examples/opa-envoy/config");
    for name in ["primer-jwt", "istio-basic-auth"] {
        let bundled =
            citygate_host::bundle::bundle_text(&dir.join(format!("{name}.src.json"))).unwrap();
        let committed = std::fs::read_to_string(dir.join(format!("{name}.json"))).unwrap();
        assert!(
            bundled == committed,
            "{name}.json is out of date: run `cargo citygate bundle policies/examples/opa-envoy/config/{name}.src.json -o policies/examples/opa-envoy/config/{name}.json`"
        );
    }
}
