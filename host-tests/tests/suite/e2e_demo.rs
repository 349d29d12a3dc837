//! End to end: `cargo demo`'s gateway in a real Envoy, and its guided tour.
//! Every command the tour prints is run through `sh` exactly as printed (a
//! newcomer pastes it), and its answer must show what the tour says.

use std::process::Command;

use anyhow::{Context, Result};
use citygate_host::credentials::unix_now;
use citygate_host::demo::{self, check_step, render_tour, DemoOptions};
use citygate_host::wasm_build::filter_wasm;

#[test]
fn every_command_of_the_guided_tour_shows_what_the_tour_says() -> Result<()> {
    let options = DemoOptions {
        listener_port: None,
        admin_port: None,
        wasm: Some(filter_wasm()?),
        // The tour's last step fires an alert in the demo's Prometheus.
        with_prometheus: true,
        prometheus_port: None,
    };
    let gateway = demo::start(&options)?;
    let prometheus = gateway.prometheus.as_ref().map(|p| p.url());
    let steps = demo::tour(
        &gateway.credentials,
        &gateway.url(),
        prometheus.as_deref(),
        unix_now(),
    )?;
    assert!(
        steps.iter().any(|s| s.shows.contains(demo::TOUR_ALERT)),
        "the tour fires no alert"
    );
    let printed = render_tour(&gateway, &steps);
    let mut problems = Vec::new();
    for step in &steps {
        assert!(
            printed.contains(&step.command),
            "the tour does not print {:?}",
            step.command
        );
        let output = Command::new("sh")
            .args(["-c", &step.command])
            .output()
            .with_context(|| format!("running {}", step.command))?;
        let output = String::from_utf8_lossy(&output.stdout);
        for problem in check_step(step, &output) {
            problems.push(format!("{}: {problem}\n{output}", step.shows));
        }
    }
    assert!(
        problems.is_empty(),
        "the tour promises what the gateway does not do:\n{}\nEnvoy log:\n{}\nPrometheus log:\n{}",
        problems.join("\n\n"),
        gateway.envoy.log(),
        gateway
            .prometheus
            .as_ref()
            .map(|p| p.log())
            .unwrap_or_default()
    );
    Ok(())
}
