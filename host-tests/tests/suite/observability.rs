//! `envoy/observability/`: the alert rules pass promtool's checks and unit
//! tests, every metric a dashboard panel or an alert queries is one the
//! filter defines, and a real Prometheus scraping a real Envoy with citygate
//! fires `CitygateAuthFailureSpike` for the route under attack.
//!
//! promtool and prometheus come from Debian's `prometheus` package (`.ci/run`
//! installs it). There is no skip: without them these tests fail.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use citygate_core::metrics::{Metric, MetricKind, ROUTE_DENIED};
use citygate_host::demo::{self, DemoOptions, TOUR_ALERT};
use citygate_host::prometheus::observability_dir;
use citygate_host::wasm_build::filter_wasm;
use serde_json::Value;

use crate::support::eventually;

/// Runs a tool of Debian's `prometheus` package, failing with its output.
fn run_tool(program: &str, args: &[&str], dir: &Path) -> Result<String> {
    let output = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .with_context(|| format!("running {program} (on Debian: apt-get install prometheus)"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    ensure!(
        output.status.success(),
        "{program} {args:?} failed:\n{text}"
    );
    Ok(text)
}

#[test]
fn promtool_accepts_the_scrape_config_and_the_rules_and_their_unit_tests_pass() -> Result<()> {
    let dir = observability_dir();
    let rules = run_tool("promtool", &["check", "rules", "alerts.yml"], &dir)?;
    assert!(rules.contains("SUCCESS: 9 rules found"), "{rules}");
    run_tool("promtool", &["check", "config", "prometheus.yml"], &dir)?;
    let tests = run_tool("promtool", &["test", "rules", "alerts_test.yml"], &dir)?;
    assert!(tests.contains("SUCCESS"), "{tests}");
    Ok(())
}

/// The names of the metrics a PromQL expression reads (`citygate_…`),
/// histogram series (`_bucket`, `_sum`, `_count`) under their metric's name.
fn metrics_queried(expr: &str) -> BTreeSet<String> {
    let histograms: Vec<&str> = Metric::ALL
        .iter()
        .filter(|m| m.kind() == MetricKind::Histogram)
        .map(|m| m.name())
        .collect();
    let mut names = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut at = 0;
    while let Some(found) = expr[at..].find("citygate_") {
        let start = at + found;
        let boundary = start == 0 || {
            let before = bytes[start - 1];
            !(before.is_ascii_alphanumeric() || before == b'_')
        };
        let end = expr[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(expr.len(), |n| start + n);
        if boundary {
            let name = &expr[start..end];
            let name = histograms
                .iter()
                .find(|h| {
                    ["_bucket", "_sum", "_count"]
                        .iter()
                        .any(|suffix| name == format!("{h}{suffix}"))
                })
                .map_or(name, |h| *h);
            names.insert(name.to_string());
        }
        at = end;
    }
    names
}

fn defined_metrics() -> BTreeSet<String> {
    Metric::ALL
        .iter()
        .map(|m| m.name().to_string())
        .chain([ROUTE_DENIED.to_string()])
        .collect()
}

/// Every `expr` of the dashboard's panels.
fn dashboard_exprs(dashboard: &Value) -> Vec<String> {
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                exprs.push(expr.to_string());
            }
        }
    }
    exprs
}

fn undefined_in(exprs: &[String]) -> Vec<String> {
    let defined = defined_metrics();
    exprs
        .iter()
        .flat_map(|expr| metrics_queried(expr))
        .filter(|name| !defined.contains(name))
        .collect()
}

#[test]
fn the_metric_check_finds_an_undefined_metric_and_reads_histogram_series() {
    let exprs = vec![
        "sum(rate(citygate_auth_denid[5m]))".to_string(),
        "histogram_quantile(0.99, sum by (le) (rate(citygate_policy_eval_us_bucket[5m])))"
            .to_string(),
        "sum by (route) (citygate_route_denied{stage=\"auth\"}) / sum(citygate_requests_total)"
            .to_string(),
    ];
    assert_eq!(
        undefined_in(&exprs),
        vec!["citygate_auth_denid".to_string()]
    );
    assert_eq!(
        metrics_queried(&exprs[1]),
        BTreeSet::from(["citygate_policy_eval_us".to_string()])
    );
}

#[test]
fn dashboards_and_alerts_query_only_metrics_the_filter_defines() -> Result<()> {
    let dir = observability_dir();
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(
        dir.join("grafana/citygate-dashboard.json"),
    )?)?;
    let panel_exprs = dashboard_exprs(&dashboard);
    assert!(panel_exprs.len() >= 10, "{panel_exprs:?}");
    assert_eq!(undefined_in(&panel_exprs), Vec::<String>::new());

    let rules: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(dir.join("alerts.yml"))?)?;
    let mut alert_exprs = Vec::new();
    let mut alerts = BTreeSet::new();
    for group in rules["groups"].as_array().into_iter().flatten() {
        for rule in group["rules"].as_array().into_iter().flatten() {
            alerts.insert(rule["alert"].as_str().unwrap_or_default().to_string());
            alert_exprs.push(rule["expr"].as_str().unwrap_or_default().to_string());
        }
    }
    assert_eq!(undefined_in(&alert_exprs), Vec::<String>::new());
    // What a city's security team must see (README, "Dashboards and alerts").
    let queried: BTreeSet<String> = alert_exprs
        .iter()
        .flat_map(|e| metrics_queried(e))
        .collect();
    for metric in [
        ROUTE_DENIED,
        "citygate_policy_error",
        "citygate_redaction_failed_closed",
        "citygate_jwks_fetch_failed",
        "citygate_introspection_failed",
        "citygate_introspection_busy",
        "citygate_ratelimit_overflow",
    ] {
        assert!(queried.contains(metric), "no alert reads {metric}");
    }
    assert!(alerts.contains("CitygateAuthFailureSpike"), "{alerts:?}");
    Ok(())
}

/// A Prometheus process, stopped on drop.
#[test]
fn a_burst_of_invalid_tokens_fires_the_auth_failure_alert_for_that_route() -> Result<()> {
    // The demo's own Prometheus (`--with-prometheus`): the shipped scrape
    // configuration and alert rules, scraping every 2 s; `start` returns
    // once Prometheus has scraped Envoy.
    let gateway = demo::start(&DemoOptions {
        listener_port: None,
        admin_port: None,
        wasm: Some(filter_wasm()?),
        with_prometheus: true,
        prometheus_port: None,
    })?;
    let page = gateway.envoy.admin("/stats/prometheus")?;
    assert!(
        page.contains(r#"citygate_route_denied{route="ngsi-v2-entities",stage="auth"} 0"#),
        "no labelled per-route counter:\n{page}"
    );
    let prometheus = gateway
        .prometheus
        .as_ref()
        .context("the demo's Prometheus")?;
    assert!(
        prometheus.firing(TOUR_ALERT)?.is_empty(),
        "fires before the attack"
    );

    for _ in 0..80 {
        let reply = gateway.envoy.get(
            "/v2/entities?type=Vehicle",
            &[("authorization", "Bearer not-a-token")],
        )?;
        assert_eq!(reply.status, 401, "{}", reply.body);
    }
    // A few on another route: under the threshold, that route must not fire.
    for _ in 0..5 {
        let reply = gateway.envoy.get(
            "/open311/v2/requests.json",
            &[("authorization", "Bearer not-a-token")],
        )?;
        assert_eq!(reply.status, 401, "{}", reply.body);
    }

    let firing = eventually(Duration::from_secs(60), "the alert fires", || {
        let firing = prometheus.firing(TOUR_ALERT)?;
        Ok((!firing.is_empty()).then_some(firing))
    })
    .with_context(|| format!("Prometheus log:\n{}", prometheus.log()))?;
    let routes: Vec<&str> = firing
        .iter()
        .filter_map(|a| a["labels"]["route"].as_str())
        .collect();
    if routes != ["ngsi-v2-entities"] {
        bail!("the alert fired for {routes:?}, not only for the attacked route: {firing:?}");
    }
    assert_eq!(firing[0]["labels"]["severity"], "warning");
    assert_eq!(firing[0]["labels"]["gateway"], "demo");
    Ok(())
}
