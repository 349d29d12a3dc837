//! End to end: the release citygate `.wasm` in a real Envoy (official
//! 1.40 build, V8 runtime) in front of the demo city API, with the same
//! bootstrap as `cargo demo` (`envoy/gateway.yaml`).
//!
//! Every test picks free ports and owns its processes, which are stopped on
//! drop (also when an assertion fails), so the tests run in parallel. There
//! is no skip: without Envoy or the filter, they fail.

use anyhow::{ensure, Context, Result};
use citygate_host::demo_api::{DemoApi, POWERED_BY_HEADER};
use citygate_host::envoy::{EnvoyProcess, Gateway};
use citygate_host::wasm_build::filter_wasm;

/// The smallest configuration citygate accepts: one anonymous route.
const MINIMAL_CONFIG: &str =
    r#"{"routes":[{"name":"entities","match":{"path_prefix":"/"},"auth":{"anonymous":true}}]}"#;

fn gateway(api: &DemoApi, config: &str) -> Result<Gateway> {
    Ok(Gateway::new(filter_wasm()?, config, api.port))
}

fn start(config: &str, workers: usize) -> Result<(DemoApi, EnvoyProcess)> {
    let api = DemoApi::start()?;
    let envoy = EnvoyProcess::start(&gateway(&api, config)?.concurrency(workers))?;
    Ok((api, envoy))
}

#[test]
fn envoy_loads_the_filter_and_becomes_live() -> Result<()> {
    let (_api, envoy) = start(MINIMAL_CONFIG, 1)?;
    let ready = ureq::get(envoy.admin_url("/ready"))
        .call()?
        .body_mut()
        .read_to_string()?;
    assert_eq!(ready.trim(), "LIVE");
    let log = envoy.log();
    assert!(
        !log.contains("invalid configuration"),
        "the minimal configuration was refused:\n{log}"
    );
    Ok(())
}

#[test]
fn declared_route_reaches_the_city_api_and_back() -> Result<()> {
    let (api, envoy) = start(MINIMAL_CONFIG, 1)?;

    let reply = envoy.get("/echo?probe=1", &[("x-city-test", "declared-route")])?;
    assert_eq!(reply.status, 200, "{}\n{}", reply.body, envoy.log());
    let echoed = reply.json()?;
    assert_eq!(echoed["method"], "GET");
    assert_eq!(echoed["path"], "/echo");
    assert_eq!(echoed["query"], "probe=1");
    assert_eq!(echoed["headers"]["x-city-test"], "declared-route");
    let upstream = api.last("/echo").context("request did not reach the API")?;
    assert_eq!(upstream.header("x-city-test"), Some("declared-route"));

    let parking = envoy.get("/v2/entities?type=ParkingSpot&options=keyValues", &[])?;
    assert_eq!(parking.status, 200, "{}", parking.body);
    let spots = parking.json()?;
    let spots = spots.as_array().context("an NGSI-v2 entity list")?;
    assert_eq!(spots.len(), 2);
    assert!(spots.iter().all(|s| s["type"] == "ParkingSpot"));
    assert_eq!(api.count("/v2/entities"), 1);
    Ok(())
}

#[test]
fn two_workers_share_the_vm_id_and_serve() -> Result<()> {
    let (api, envoy) = start(MINIMAL_CONFIG, 2)?;
    for _ in 0..6 {
        let reply = envoy.get("/open311/v2/requests.json", &[])?;
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    assert_eq!(api.count("/open311/"), 6);
    Ok(())
}

#[test]
fn envoy_rejects_invalid_json_config_with_citygate_error() -> Result<()> {
    let api = DemoApi::start()?;
    let log = EnvoyProcess::start_expect_failure(&gateway(&api, r#"{"routes":[{"name":"#)?)?;
    let line = citygate_error(&log)?;
    assert!(line.contains("invalid configuration at $"), "{line}");
    assert!(
        log.contains("Unable to create Wasm plugin citygate"),
        "{log}"
    );
    assert_eq!(api.request_count(), 0);
    Ok(())
}

#[test]
fn envoy_rejects_typo_in_config_naming_the_json_path() -> Result<()> {
    let api = DemoApi::start()?;
    let config = r#"{"routes":[{"name":"x","match":{"path_prefx":"/"}}]}"#;
    let log = EnvoyProcess::start_expect_failure(&gateway(&api, config)?)?;
    let line = citygate_error(&log)?;
    assert!(
        line.contains("invalid configuration at ") && line.contains("routes[0].match"),
        "the error must name the JSON path: {line}"
    );
    assert!(
        line.contains("path_prefx"),
        "the error must name the field: {line}"
    );
    Ok(())
}

#[test]
fn citygate_metrics_are_in_prometheus_stats() -> Result<()> {
    let (_api, envoy) = start(MINIMAL_CONFIG, 1)?;
    let reply = envoy.get("/v2/entities?type=WasteContainer", &[])?;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let metrics = envoy.metrics()?;
    let stats = metrics.text();
    let citygate: Vec<&str> = stats
        .lines()
        .filter(|l| l.starts_with("citygate_"))
        .collect();
    ensure!(
        !citygate.is_empty(),
        "no citygate_* metric in /stats/prometheus:\n{}",
        stats
            .lines()
            .filter(|l| l.contains("citygate") || l.contains("wasm"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    Ok(())
}

#[test]
fn upstream_headers_come_back_through_the_gateway() -> Result<()> {
    let (_api, envoy) = start(MINIMAL_CONFIG, 1)?;
    let reply = envoy.get(
        "/v2/entities/urn:ngsi-ld:AirQualityObserved:example-city:station-centro",
        &[],
    )?;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()?["NO2"]["value"], 38.2);
    // Envoy's edge default replaces the upstream's `server`; citygate may
    // also strip `x-powered-by`. Either way nothing else is invented.
    assert_ne!(reply.header("server"), Some("city-api/1.0"));
    if let Some(powered) = reply.header("x-powered-by") {
        assert_eq!(powered, POWERED_BY_HEADER);
    }
    Ok(())
}

/// The line citygate logged when `on_configure` refused the configuration.
fn citygate_error(log: &str) -> Result<String> {
    log.lines()
        .find(|l| l.contains("citygate: invalid configuration"))
        .map(str::to_owned)
        .with_context(|| format!("no citygate configuration error in the Envoy log:\n{log}"))
}
