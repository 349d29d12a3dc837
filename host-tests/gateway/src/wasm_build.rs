//! Builds the citygate filter as `wasm32-wasip1`, once per test process.
//!
//! Tests and the demo load the very artefact users ship: the release build of
//! `citygate-filter` (LTO, `panic = "abort"`). The nested `cargo` uses its own
//! target directory (`target/wasm`) because the outer `cargo test` holds the
//! lock on the main one; waiting for it would deadlock.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{bail, Context, Result};

/// Overrides the filter path (a prebuilt `.wasm`); nothing is built then.
pub const WASM_ENV: &str = "CITYGATE_WASM";

const TARGET: &str = "wasm32-wasip1";

/// Variables the outer `cargo` (or a CI wrapper) sets that would redirect or
/// break the nested build: a foreign target dir or target, host-only
/// rustflags, a compiler wrapper, the outer jobserver.
const INHERITED_CARGO_ENV: &[&str] = &[
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET",
    "CARGO_BUILD_TARGET_DIR",
    "CARGO_BUILD_RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "RUSTFLAGS",
    "RUSTDOCFLAGS",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "CARGO_BUILD_RUSTC_WRAPPER",
    "CARGO_MAKEFLAGS",
    "MAKEFLAGS",
    "MFLAGS",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_MANIFEST_DIR",
    "CARGO_MANIFEST_PATH",
    "CARGO_PKG_NAME",
    "CARGO_CRATE_NAME",
    "CARGO_BIN_NAME",
    "RUSTC",
    "RUSTDOC",
    "CARGO_LLVM_COV",
    "LLVM_PROFILE_FILE",
];

/// The repository root (the workspace of `citygate-filter` and this crate,
/// which lives in `host-tests/gateway`).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .nth(2)
        .unwrap_or(manifest)
        .to_path_buf()
}

/// Path of the release `citygate_filter.wasm`, built on first call.
///
/// `CITYGATE_WASM` short-cuts the build. The result (or the build error) is
/// cached for the whole process so parallel tests build once.
pub fn filter_wasm() -> Result<PathBuf> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    if let Some(path) = std::env::var_os(WASM_ENV) {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!("{WASM_ENV}={} is not a file", path.display());
        }
        return Ok(path);
    }
    BUILT
        .get_or_init(|| build().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn build() -> Result<PathBuf> {
    let root = workspace_root();
    let target_dir = root.join("target").join("wasm");
    ensure_target(&root)?;
    eprintln!("citygate: building filter wasm (release, {TARGET})…");
    let mut cargo = Command::new(cargo_bin());
    cargo
        .current_dir(&root)
        .args(["build", "--release", "--target", TARGET])
        .args(["-p", "citygate-filter", "--target-dir"])
        .arg(&target_dir);
    scrub(&mut cargo);
    let status = cargo
        .status()
        .context("running cargo build for the filter")?;
    if !status.success() {
        bail!("cargo build of citygate-filter for {TARGET} failed ({status})");
    }
    let wasm = target_dir
        .join(TARGET)
        .join("release")
        .join("citygate_filter.wasm");
    if !wasm.is_file() {
        bail!("cargo succeeded but {} is missing", wasm.display());
    }
    eprintln!("citygate: filter wasm at {}", wasm.display());
    Ok(wasm)
}

/// A toolchain installed before `rust-toolchain.toml` pinned the target does
/// not add it on its own.
fn ensure_target(root: &Path) -> Result<()> {
    let mut list = Command::new("rustup");
    list.current_dir(root)
        .args(["target", "list", "--installed"]);
    scrub(&mut list);
    let Ok(out) = list.output() else {
        // No rustup (e.g. a distro toolchain): let cargo report what's missing.
        return Ok(());
    };
    if String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.trim() == TARGET)
    {
        return Ok(());
    }
    eprintln!("citygate: rustup target add {TARGET}…");
    let mut add = Command::new("rustup");
    add.current_dir(root).args(["target", "add", TARGET]);
    scrub(&mut add);
    let status = add.status().context("running rustup target add")?;
    if !status.success() {
        bail!("rustup target add {TARGET} failed ({status})");
    }
    Ok(())
}

fn cargo_bin() -> PathBuf {
    std::env::var_os("CARGO").map_or_else(|| PathBuf::from("cargo"), PathBuf::from)
}

fn scrub(cmd: &mut Command) {
    for var in INHERITED_CARGO_ENV {
        cmd.env_remove(var);
    }
    // Per-target overrides (`CARGO_TARGET_<TRIPLE>_RUSTFLAGS`, `…_LINKER`,
    // `…_RUNNER`) set for the host would leak into the wasm build too.
    for (key, _) in std::env::vars_os() {
        if let Some(key) = key.to_str() {
            if key.starts_with("CARGO_TARGET_") || key.starts_with("CARGO_CFG_") {
                cmd.env_remove(key);
            }
        }
    }
}
