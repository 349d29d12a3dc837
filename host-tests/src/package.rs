//! `citygate package`: the filter as an OCI image layout (what Istio's
//! `WasmPlugin` pulls with an `oci://` URL), and the Istio manifest's
//! `pluginConfig` kept equal to the policy pack's configuration.
//!
//! The image follows the "compat" variant of the Wasm image specification
//! Istio implements (`pkg/wasm/imagefetcher.go`): one
//! `application/vnd.oci.image.layer.v1.tar+gzip` layer holding `plugin.wasm`,
//! and the manifest annotation `module.wasm.image/variant=compat`. Unlike the
//! artifact variant (custom media types), it is an ordinary OCI image, so
//! standard tools (skopeo, crane, oras, registries' UIs) inspect, copy and
//! sign it. The layout is reproducible: the same .wasm gives the same digest.
//!
//! `WasmPlugin.sha256`, for an `oci://` URL, is checked by Istio against the
//! image **manifest** digest (not the .wasm's own hash, which is what it
//! checks for `https://` and `file://` URLs); [`OciImage::manifest_digest`]
//! is that value.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use flate2::{write::GzEncoder, Compression};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

pub const WASM_FILE: &str = "plugin.wasm";
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
/// The manifest annotation the compat variant requires.
pub const VARIANT_ANNOTATION: (&str, &str) = ("module.wasm.image/variant", "compat");

/// An OCI image layout written by [`write_oci_layout`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OciImage {
    pub dir: PathBuf,
    /// The tag in `index.json` (`org.opencontainers.image.ref.name`).
    pub tag: String,
    /// `sha256:<hex>` of the manifest: the image digest registries show,
    /// `oci://…@sha256:<hex>`, and (hex only) `WasmPlugin.sha256`.
    pub manifest_digest: String,
    /// `sha256:<hex>` of the tar+gzip layer.
    pub layer_digest: String,
    /// Hex SHA-256 of the .wasm itself (for `https://` or `file://` URLs).
    pub wasm_sha256: String,
}

impl OciImage {
    /// The hex digest alone, as `WasmPlugin.sha256` wants it.
    pub fn sha256_hex(&self) -> &str {
        self.manifest_digest
            .strip_prefix("sha256:")
            .unwrap_or(&self.manifest_digest)
    }
}

/// Writes `wasm` as a compat-variant Wasm image into the OCI image layout
/// directory `out` (`oci-layout`, `index.json`, `blobs/sha256/…`), tagged
/// `tag`. An existing layout at `out` is replaced; any other non-empty
/// directory is refused.
pub fn write_oci_layout(wasm: &Path, out: &Path, tag: &str) -> Result<OciImage> {
    let module = fs::read(wasm).with_context(|| format!("reading {}", wasm.display()))?;
    if !module.starts_with(b"\0asm") {
        bail!("{} is not a WebAssembly module", wasm.display());
    }
    if tag.is_empty()
        || !tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    {
        bail!("`{tag}` is not a valid image tag");
    }
    prepare_dir(out)?;
    let blobs = out.join("blobs").join("sha256");
    fs::create_dir_all(&blobs)?;

    let tar = plugin_tar(&module)?;
    let layer = gzip(&tar)?;
    let config = serde_json::to_vec(&json!({
        // GOARCH/GOOS spelling of a WASI module (what OCI platforms use).
        "architecture": "wasm",
        "os": "wasip1",
        "rootfs": {"type": "layers", "diff_ids": [digest(&tar)]},
        "config": {},
    }))?;
    let layer_digest = put_blob(&blobs, &layer)?;
    let config_digest = put_blob(&blobs, &config)?;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": config_digest, "size": config.len()},
        "layers": [{
            "mediaType": LAYER_MEDIA_TYPE,
            "digest": layer_digest,
            "size": layer.len(),
            "annotations": {"org.opencontainers.image.title": WASM_FILE},
        }],
        "annotations": {
            VARIANT_ANNOTATION.0: VARIANT_ANNOTATION.1,
            "org.opencontainers.image.title": "citygate",
            "org.opencontainers.image.description": "citygate proxy-wasm filter for Envoy and Istio gateways",
            "org.opencontainers.image.version": tag,
        },
    }))?;
    let manifest_digest = put_blob(&blobs, &manifest)?;
    let index = json!({
        "schemaVersion": 2,
        "mediaType": INDEX_MEDIA_TYPE,
        "manifests": [{
            "mediaType": MANIFEST_MEDIA_TYPE,
            "digest": manifest_digest,
            "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }],
    });
    fs::write(out.join("index.json"), serde_json::to_vec(&index)?)?;
    fs::write(
        out.join("oci-layout"),
        serde_json::to_vec(&json!({"imageLayoutVersion": "1.0.0"}))?,
    )?;
    Ok(OciImage {
        dir: out.to_path_buf(),
        tag: tag.to_string(),
        manifest_digest,
        layer_digest,
        wasm_sha256: hex::encode(Sha256::digest(&module)),
    })
}

/// `out` empty or absent, or a layout to replace.
fn prepare_dir(out: &Path) -> Result<()> {
    if out.exists() {
        let empty = fs::read_dir(out)
            .with_context(|| format!("reading {}", out.display()))?
            .next()
            .is_none();
        if !empty && !out.join("oci-layout").is_file() {
            bail!(
                "{} exists and is not an OCI image layout; give an empty or new directory",
                out.display()
            );
        }
        fs::remove_dir_all(out).with_context(|| format!("replacing {}", out.display()))?;
    }
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))
}

/// A tar archive holding only `plugin.wasm`, with fixed owner, mode and
/// time so the digest depends on the module alone.
fn plugin_tar(module: &[u8]) -> Result<Vec<u8>> {
    let mut header = tar::Header::new_ustar();
    header.set_size(module.len() as u64);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    let mut builder = tar::Builder::new(Vec::new());
    builder.append_data(&mut header, WASM_FILE, module)?;
    Ok(builder.into_inner()?)
}

fn gzip(data: &[u8]) -> Result<Vec<u8>> {
    // flate2 writes a zero modification time and no file name: reproducible.
    let mut encoder = GzEncoder::new(Vec::new(), Compression::best());
    encoder.write_all(data)?;
    Ok(encoder.finish()?)
}

fn digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

fn put_blob(blobs: &Path, data: &[u8]) -> Result<String> {
    let digest = digest(data);
    let name = digest.trim_start_matches("sha256:");
    fs::write(blobs.join(name), data)?;
    Ok(digest)
}

/// Reads `plugin.wasm` back out of a layout's image (what Istio extracts).
pub fn read_plugin_wasm(layout: &Path) -> Result<Vec<u8>> {
    let index: Value = serde_json::from_slice(&fs::read(layout.join("index.json"))?)?;
    let manifest_digest = index["manifests"][0]["digest"]
        .as_str()
        .context("index.json names no manifest")?;
    let manifest: Value = serde_json::from_slice(&blob(layout, manifest_digest)?)?;
    let layers = manifest["layers"]
        .as_array()
        .context("manifest has no layers")?;
    let [layer] = layers.as_slice() else {
        bail!(
            "a compat image has exactly one layer, found {}",
            layers.len()
        );
    };
    let layer_digest = layer["digest"].as_str().context("layer without digest")?;
    let gz = blob(layout, layer_digest)?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(gz.as_slice()));
    for entry in archive.entries()? {
        let mut entry = entry?;
        if entry.path()?.file_name() == Some(std::ffi::OsStr::new(WASM_FILE)) {
            let mut module = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut module)?;
            return Ok(module);
        }
    }
    bail!("no {WASM_FILE} in the layer")
}

/// A blob of the layout, checked against its digest.
pub fn blob(layout: &Path, digest_ref: &str) -> Result<Vec<u8>> {
    let hex = digest_ref
        .strip_prefix("sha256:")
        .context("only sha256 digests are used")?;
    let data = fs::read(layout.join("blobs").join("sha256").join(hex))?;
    if digest(&data) != digest_ref {
        bail!("blob {digest_ref} does not match its content");
    }
    Ok(data)
}

// ---------------------------------------------------------------------------
// Istio manifest

/// Marks the generated `pluginConfig` block of `envoy/istio/wasmplugin.yaml`.
pub const PLUGIN_CONFIG_BEGIN: &str =
    "  # BEGIN pluginConfig: generated from policies/config/city-gateway.json";
pub const PLUGIN_CONFIG_END: &str = "  # END pluginConfig";

/// Port of the IdP's ServiceEntry (`envoy/istio/jwks-egress.yaml`): plain
/// HTTP inside the gateway, TLS originated by its DestinationRule.
pub const ISTIO_JWKS_PORT: u16 = 80;

/// The policy pack's configuration as an Istio ingress gateway runs it. The
/// only difference: remote JWKS callouts name the cluster Istio creates for
/// the IdP's ServiceEntry (`outbound|80||<authority>`) instead of the
/// standalone bootstrap's `jwks` cluster.
pub fn istio_plugin_config(pack: &Value) -> Value {
    let mut config = pack.clone();
    let providers = config
        .pointer_mut("/auth/jwt/providers")
        .and_then(Value::as_array_mut);
    for provider in providers.into_iter().flatten() {
        if let Some(remote) = provider.pointer_mut("/keys/remote") {
            if let Some(authority) = remote["authority"].as_str().map(str::to_owned) {
                remote["cluster"] = Value::from(format!("outbound|{ISTIO_JWKS_PORT}||{authority}"));
            }
        }
    }
    config
}

/// The manifest text with its `pluginConfig` block replaced by `config`
/// (as YAML, indented under `spec`).
pub fn with_plugin_config(manifest: &str, config: &Value) -> Result<String> {
    let begin = manifest
        .find(PLUGIN_CONFIG_BEGIN)
        .context("the manifest has no `# BEGIN pluginConfig` marker")?;
    let end = manifest
        .find(PLUGIN_CONFIG_END)
        .context("the manifest has no `# END pluginConfig` marker")?;
    if end < begin {
        bail!("`# END pluginConfig` comes before `# BEGIN pluginConfig`");
    }
    let yaml = serde_yaml_ng::to_string(config)?;
    let mut block = String::from("  pluginConfig:\n");
    for line in yaml.lines() {
        block.push_str("    ");
        block.push_str(line);
        block.push('\n');
    }
    let after_begin = begin + manifest[begin..].find('\n').map_or(0, |n| n + 1);
    Ok(format!(
        "{}{}{}",
        &manifest[..after_begin],
        block,
        &manifest[end..]
    ))
}

// ---------------------------------------------------------------------------
// Envoy directory

/// What `citygate package --target envoy` needs.
#[derive(Debug, Clone)]
pub struct EnvoyPackage {
    pub wasm: PathBuf,
    pub out: PathBuf,
    /// The plugin configuration (JSON text).
    pub plugin_config: String,
    /// Secrets for `${env:NAME}`, written to `OUT/citygate.env` for Envoy's
    /// environment.
    pub secrets: std::collections::BTreeMap<String, String>,
    /// server.crt, server.key, device-ca.crt; `None` generates DEMO ONLY
    /// certificates into `OUT/certs` (kept across runs).
    pub certs: Option<PathBuf>,
    pub city_api: crate::envoy::production::Upstream,
    pub jwks: crate::envoy::production::Upstream,
    pub bind_address: String,
    pub ports: crate::envoy::production::Ports,
    pub device_uri_prefix: String,
    /// `version_info` of the xDS files.
    pub version: String,
}

/// What [`write_envoy_dir`] wrote.
#[derive(Debug, Clone)]
pub struct EnvoyPackaged {
    pub bootstrap: PathBuf,
    pub env_file: PathBuf,
    /// Whether DEMO ONLY certificates were generated (or reused).
    pub demo_certs: bool,
}

/// Writes a directory Envoy runs from: `bootstrap.json`, `xds/lds.json` and
/// `xds/rds.json` (replaced atomically, so running it again on the
/// directory of a running gateway pushes the new configuration),
/// `citygate_filter.wasm`, `citygate.env` and the certificates. The plugin
/// configuration is checked through the real .wasm first: a configuration
/// Envoy would reject is never written.
pub fn write_envoy_dir(package: &EnvoyPackage) -> Result<EnvoyPackaged> {
    use crate::envoy::pki::{self, GatewayPki};
    use crate::envoy::production::{env_file_text, ProductionGateway};

    if let Err(line) =
        crate::cli::check_config(&package.wasm, &package.plugin_config, &package.secrets)?
    {
        bail!("the plugin configuration is refused: {line}");
    }
    let out = &package.out;
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;

    let wasm = out.join("citygate_filter.wasm");
    let temp = out.join(".citygate_filter.wasm.tmp");
    fs::copy(&package.wasm, &temp)
        .with_context(|| format!("copying {}", package.wasm.display()))?;
    fs::rename(&temp, &wasm)?;

    let (cert_dir, demo_certs) = match &package.certs {
        Some(dir) => {
            for file in [
                pki::SERVER_CERT_FILE,
                pki::SERVER_KEY_FILE,
                pki::DEVICE_CA_FILE,
            ] {
                if !dir.join(file).is_file() {
                    bail!("{} has no {file}", dir.display());
                }
            }
            (dir.clone(), false)
        }
        None => {
            let dir = out.join("certs");
            if !dir.join(pki::SERVER_CERT_FILE).is_file() {
                GatewayPki::generate()?.write(&dir, true)?;
            }
            let demo = dir.join("README.DEMO-ONLY").is_file();
            (dir, demo)
        }
    };

    let env_file = out.join("citygate.env");
    pki::write_private(&env_file, &env_file_text(&package.secrets))?;

    let gateway = ProductionGateway {
        wasm: wasm.clone(),
        plugin_config: package.plugin_config.clone(),
        secrets: package.secrets.clone(),
        city_api: package.city_api.clone(),
        jwks: package.jwks.clone(),
        cert_dir,
        device_uri_prefix: package.device_uri_prefix.clone(),
        bind_address: package.bind_address.clone(),
        concurrency: 2,
        ports: Some(package.ports),
    };
    let bootstrap = gateway.write(out, &package.ports, &package.version)?;
    Ok(EnvoyPackaged {
        bootstrap,
        env_file,
        demo_certs,
    })
}
