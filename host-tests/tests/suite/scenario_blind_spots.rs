//! Checks on the scenario files themselves, so the suite's blind spots stay
//! closed: a case that a wrong filter would still pass is refused here, by
//! name, before any runner runs it.
//!
//! - A refusal citygate makes (401, 403, 429, 503) in the attack corpus or
//!   the city pack names the decision and its reason: a policy that errors
//!   on polluted input answers 403 too, and must not pass for a deliberate
//!   denial.
//! - A case whose request body reaches the upstream says what body the
//!   upstream received, in every scenario file.
//! - A case named for a pseudonym or a mask pins a value, not only the
//!   absence of the personal one: an emptied list or a dropped entity also
//!   lacks it.

use std::path::{Path, PathBuf};

use citygate_host::scenario::file::{BodyExpectation, Case, Expectation, ExpectedOutcome};
use citygate_host::scenario::{find_scenarios, Scenario};
use citygate_host::wasm_build::workspace_root;

/// Statuses the filter answers from its one denial exit for a refused
/// request (Envoy's own 400/404 for malformed paths carry no decision).
const REFUSALS: [u16; 4] = [401, 403, 429, 503];

fn scenario_files() -> Vec<PathBuf> {
    let files = find_scenarios(&workspace_root().join("policies")).expect("scenario files");
    assert!(files.len() >= 10, "found only {files:?}");
    files
}

/// The attack corpus and the city pack: where every denial must say why.
fn must_name_decisions(path: &Path) -> bool {
    path.components().any(|c| c.as_os_str() == "attacks")
        || path.file_name().is_some_and(|n| n == "city-pack.yaml")
}

fn expectations(case: &Case) -> impl Iterator<Item = &Expectation> {
    std::iter::once(&case.expect).chain(case.expect_each.as_ref())
}

fn pins_something(body: &BodyExpectation) -> bool {
    body.json.is_some()
        || !body.json_paths.is_empty()
        || body.exact.is_some()
        || !body.contains.is_empty()
        || body.empty
}

/// What is missing from one case, as lines naming the case.
fn blind_spots(path: &Path, case: &Case) -> Vec<String> {
    let mut found = Vec::new();
    let at = format!("{}: case `{}`", path.display(), case.name);
    for expect in expectations(case) {
        let refused = expect.status.is_some_and(|s| REFUSALS.contains(&s))
            && expect.reached_upstream != Some(true);
        if refused && must_name_decisions(path) {
            match &expect.decision {
                None => found.push(format!(
                    "{at}: a refusal that does not name its decision (`decision: {{ outcome, reason }}`)"
                )),
                Some(decision)
                    if decision.outcome != ExpectedOutcome::Allowed
                        && decision.reason.is_none()
                        && decision.reason_matches.is_none() =>
                {
                    found.push(format!("{at}: a denial that does not name its reason"))
                }
                Some(_) => {}
            }
        }
        let sends_body = case.request.body.as_ref().is_some_and(|b| !b.is_empty())
            || case.request.json.is_some();
        if sends_body && expect.reached_upstream == Some(true) {
            let checked = expect
                .upstream_request
                .as_ref()
                .is_some_and(|upstream| pins_something(&upstream.body));
            if !checked {
                found.push(format!(
                    "{at}: the body reaches the upstream but `upstream_request.body` does not say what arrived"
                ));
            }
        }
    }
    let name = case.name.to_lowercase();
    if (name.contains("pseudonym") || name.contains("mask"))
        && !expectations(case).any(|e| e.body.json.is_some() || !e.body.json_paths.is_empty())
    {
        found.push(format!(
            "{at}: named for a pseudonym or mask, but pins no value (`body.json_paths`)"
        ));
    }
    found
}

#[test]
fn every_scenario_case_checks_what_a_wrong_filter_would_get_wrong() {
    let mut found = Vec::new();
    let (mut refusals, mut bodies) = (0, 0);
    for path in scenario_files() {
        let scenario = Scenario::load(&path).expect("the scenario loads");
        for case in &scenario.file.cases {
            found.extend(blind_spots(&path, case));
            if must_name_decisions(&path)
                && case.expect.status.is_some_and(|s| REFUSALS.contains(&s))
            {
                refusals += 1;
            }
            if case.request.body.is_some() || case.request.json.is_some() {
                bodies += 1;
            }
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
    // Not vacuous: the rules above looked at the cases they are about.
    assert!(
        refusals >= 80,
        "only {refusals} refusals in the attack corpus and pack"
    );
    assert!(bodies >= 5, "only {bodies} cases send a body");
}

/// Each rule refuses the case it exists for.
#[test]
fn the_checks_refuse_the_cases_they_exist_for() {
    let case = |yaml: &str| -> Case { serde_yaml_ng::from_str(yaml).expect("a case") };
    let attacks = Path::new("policies/attacks/scenarios/x.yaml");
    let bare_denial = case(
        "{ name: d, request: { path: /a }, expect: { status: 403, reached_upstream: false } }",
    );
    assert_eq!(blind_spots(attacks, &bare_denial).len(), 1);
    let no_reason = case(
        "{ name: d, request: { path: /a }, expect: { status: 403, decision: { outcome: denied } } }",
    );
    assert_eq!(blind_spots(attacks, &no_reason).len(), 1);
    let named = case(
        "{ name: d, request: { path: /a }, expect: { status: 403, decision: { outcome: error, reason_matches: undefined } } }",
    );
    assert!(blind_spots(attacks, &named).is_empty());
    let unchecked_body = case(
        "{ name: b, request: { method: POST, path: /a, body: x }, expect: { status: 200, reached_upstream: true } }",
    );
    let foundation = Path::new("policies/scenarios/foundation.yaml");
    assert_eq!(blind_spots(foundation, &unchecked_body).len(), 1);
    let absence_only = case(
        "{ name: names are pseudonymized, request: { path: /a }, expect: { body: { absent_paths: ['$..name'] } } }",
    );
    assert_eq!(blind_spots(foundation, &absence_only).len(), 1);
}
