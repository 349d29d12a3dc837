//! Nested cargo invocations (the floor filter's wasm, oha) from a driver
//! that itself runs under `cargo run`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// `cargo`, without the outer cargo's variables (target dir, rustflags,
/// jobserver, wrappers) that would redirect or break the nested build.
pub fn scrubbed_cargo() -> Command {
    let cargo = std::env::var_os("CARGO").map_or_else(|| PathBuf::from("cargo"), PathBuf::from);
    let mut cmd = Command::new(cargo);
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        let cargo_var = key.starts_with("CARGO_") && key != "CARGO_HOME";
        let build_var = matches!(
            key,
            "RUSTFLAGS"
                | "RUSTDOCFLAGS"
                | "RUSTC"
                | "RUSTDOC"
                | "RUSTC_WRAPPER"
                | "RUSTC_WORKSPACE_WRAPPER"
                | "MAKEFLAGS"
                | "MFLAGS"
        );
        if cargo_var || build_var {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// Builds the wasm floor filter (`envoy/bench/floor-filter`) for
/// wasm32-wasip1 with the release profile, next to citygate's own build.
pub fn floor_wasm(root: &Path) -> Result<PathBuf> {
    let target_dir = root.join("target").join("wasm");
    eprintln!("bench: building the wasm floor filter (release, wasm32-wasip1)…");
    let status = scrubbed_cargo()
        .current_dir(root)
        .args(["build", "--release", "--target", "wasm32-wasip1"])
        .args(["-p", "citygate-bench-floor", "--target-dir"])
        .arg(&target_dir)
        .status()
        .context("running cargo build for the floor filter")?;
    if !status.success() {
        bail!("building the floor filter failed ({status})");
    }
    let wasm = target_dir
        .join("wasm32-wasip1")
        .join("release")
        .join("citygate_bench_floor.wasm");
    if !wasm.is_file() {
        bail!("{} is missing after the build", wasm.display());
    }
    Ok(wasm)
}

/// `rustc --version` of the pinned toolchain.
pub fn rustc_version(root: &Path) -> String {
    Command::new("rustc")
        .current_dir(root)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".into())
}
