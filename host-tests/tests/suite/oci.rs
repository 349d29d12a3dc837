//! `citygate package`: the OCI image layout Istio pulls (`oci://`), checked
//! with a real OCI tool (skopeo, from Debian's packages; `.ci/run` installs
//! it) and read back the way Istio's image fetcher reads it.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use anyhow::{ensure, Context, Result};
use citygate_host::package::{
    read_plugin_wasm, write_oci_layout, LAYER_MEDIA_TYPE, MANIFEST_MEDIA_TYPE, VARIANT_ANNOTATION,
    WASM_FILE,
};
use citygate_host::wasm_build::filter_wasm;
use serde_json::Value;
use sha2::{Digest, Sha256};

fn skopeo(args: &[&str]) -> Result<Output> {
    let output = Command::new("skopeo").args(args).output();
    match output {
        Ok(output) => Ok(output),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "skopeo is required to validate the OCI image (Debian: apt-get install skopeo; .ci/run installs it)"
        ),
        Err(e) => Err(e.into()),
    }
}

fn skopeo_ok(args: &[&str]) -> Result<String> {
    let output = skopeo(args)?;
    ensure!(
        output.status.success(),
        "skopeo {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?)
}

fn sha256_ref(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// `citygate package --out DIR`, as an operator runs it.
fn package(wasm: &Path, out: &Path, tag: &str) -> Result<String> {
    let output = Command::new(env!("CARGO_BIN_EXE_citygate"))
        .arg("--wasm")
        .arg(wasm)
        .args(["package", "--out"])
        .arg(out)
        .args(["--tag", tag])
        .output()?;
    ensure!(
        output.status.success(),
        "citygate package failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?)
}

#[test]
fn package_writes_an_image_skopeo_inspects_with_the_printed_digest() -> Result<()> {
    let wasm = filter_wasm()?;
    let dir = tempfile::tempdir()?;
    let layout = dir.path().join("citygate-oci");
    let stdout = package(&wasm, &layout, "0.1.0-test")?;

    // Standard output is exactly the digest line, for scripts.
    let digest = stdout.trim_end().to_string();
    assert_eq!(stdout, format!("{digest}\n"));
    assert!(
        digest.len() == 71
            && digest.starts_with("sha256:")
            && digest[7..].bytes().all(|b| b.is_ascii_hexdigit()),
        "{digest}"
    );

    let target = format!("oci:{}:0.1.0-test", layout.display());
    let inspect: Value = serde_json::from_str(&skopeo_ok(&["inspect", &target])?)?;
    assert_eq!(inspect["Digest"], digest.as_str(), "{inspect:#}");
    assert_eq!(inspect["Os"], "wasip1");
    assert_eq!(inspect["Architecture"], "wasm");
    let layers = inspect["Layers"].as_array().context("Layers")?;
    assert_eq!(layers.len(), 1, "{inspect:#}");

    // The manifest's own bytes hash to the digest Istio compares with
    // WasmPlugin.sha256, and carry the compat-variant annotation.
    let raw = skopeo_ok(&["inspect", "--raw", &target])?;
    assert_eq!(sha256_ref(raw.as_bytes()), digest);
    let manifest: Value = serde_json::from_str(&raw)?;
    assert_eq!(manifest["mediaType"], MANIFEST_MEDIA_TYPE);
    assert_eq!(
        manifest["annotations"][VARIANT_ANNOTATION.0],
        VARIANT_ANNOTATION.1
    );
    assert_eq!(manifest["layers"][0]["mediaType"], LAYER_MEDIA_TYPE);
    assert_eq!(manifest["layers"][0]["digest"], layers[0]);

    // skopeo copies it (as a push to a registry would) with the digest
    // unchanged, and the copied layer holds the .wasm byte for byte.
    let copy = dir.path().join("copy");
    skopeo_ok(&[
        "copy",
        "--insecure-policy",
        "--preserve-digests",
        &target,
        &format!("dir:{}", copy.display()),
    ])?;
    let copied_manifest = fs::read(copy.join("manifest.json"))?;
    assert_eq!(sha256_ref(&copied_manifest), digest);
    let layer_hex = layers[0]
        .as_str()
        .and_then(|d| d.strip_prefix("sha256:"))
        .context("layer digest")?;
    let layer = fs::read(copy.join(layer_hex))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(layer.as_slice()));
    let mut names = Vec::new();
    let mut module = Vec::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let name = entry.path()?.to_string_lossy().into_owned();
        if name == WASM_FILE {
            std::io::Read::read_to_end(&mut entry, &mut module)?;
        }
        names.push(name);
    }
    assert_eq!(names, [WASM_FILE]);
    assert_eq!(module, fs::read(&wasm)?);
    assert_eq!(read_plugin_wasm(&layout)?, module);
    Ok(())
}

#[test]
fn the_image_is_reproducible_and_tracks_the_module() -> Result<()> {
    let wasm = filter_wasm()?;
    let dir = tempfile::tempdir()?;
    let first = write_oci_layout(&wasm, &dir.path().join("a"), "1.0.0")?;
    let again = write_oci_layout(&wasm, &dir.path().join("b"), "1.0.0")?;
    assert_eq!(first.manifest_digest, again.manifest_digest);
    assert_eq!(
        first.wasm_sha256,
        hex::encode(Sha256::digest(fs::read(&wasm)?))
    );

    // Another module (one more custom section) is another image.
    let mut other = fs::read(&wasm)?;
    other.extend_from_slice(&[0, 5, 4, b'n', b'o', b't', b'e']);
    let other_wasm = dir.path().join("other.wasm");
    fs::write(&other_wasm, &other)?;
    let changed = write_oci_layout(&other_wasm, &dir.path().join("c"), "1.0.0")?;
    assert_ne!(changed.manifest_digest, first.manifest_digest);
    assert_eq!(read_plugin_wasm(&dir.path().join("c"))?, other);

    // Writing again over a layout replaces it; anything else is refused.
    let replaced = write_oci_layout(&other_wasm, &dir.path().join("a"), "1.0.0")?;
    assert_eq!(replaced.manifest_digest, changed.manifest_digest);
    let precious = dir.path().join("precious");
    fs::create_dir_all(&precious)?;
    fs::write(precious.join("notes.txt"), "keep me")?;
    assert!(write_oci_layout(&wasm, &precious, "1.0.0").is_err());
    assert!(precious.join("notes.txt").is_file());
    // Not a module, not a tag.
    let text = dir.path().join("plugin.txt");
    fs::write(&text, "hello")?;
    assert!(write_oci_layout(&text, &dir.path().join("d"), "1.0.0").is_err());
    assert!(write_oci_layout(&wasm, &dir.path().join("e"), "no/slashes").is_err());
    Ok(())
}
