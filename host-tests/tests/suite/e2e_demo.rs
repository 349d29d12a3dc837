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
    };
    let gateway = demo::start(&options)?;
    let steps = demo::tour(&gateway.credentials, &gateway.url(), unix_now())?;
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
        "the tour promises what the gateway does not do:\n{}\nEnvoy log:\n{}",
        problems.join("\n\n"),
        gateway.envoy.log()
    );
    Ok(())
}
