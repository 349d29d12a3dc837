//! The production gateway (`envoy/production/`): TLS termination, a mutual
//! TLS listener for IoT devices, and the citygate filter delivered by
//! file-based LDS/RDS so a new plugin configuration reaches a running Envoy
//! without a restart.
//!
//! [`ProductionGateway::write`] renders the three templates into a directory
//! Envoy runs from (`citygate package --target envoy` and the end-to-end
//! tests both use it); [`ProductionGateway::push`] replaces the listeners of
//! a running gateway the way a control plane would.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use serde_json::{json, Value};

use super::pki::{self, CertifiedKey};
use super::{
    free_port, read_reply, render_bootstrap, EnvoyConfig, EnvoyProcess, HttpReply, Launch,
};

pub const BOOTSTRAP_TEMPLATE: &str = include_str!("../../../envoy/production/bootstrap.yaml");
pub const LISTENERS_TEMPLATE: &str = include_str!("../../../envoy/production/listeners.yaml");
pub const ROUTES_TEMPLATE: &str = include_str!("../../../envoy/production/routes.yaml");

/// File names in the rendered directory.
pub const BOOTSTRAP_FILE: &str = "bootstrap.json";
pub const CONFIG_SUBDIR: &str = "xds";
pub const LDS_FILE: &str = "lds.json";
pub const RDS_FILE: &str = "rds.json";

/// Seconds an old listener's connections may live after an update; with the
/// immediate strategy each is closed after its in-flight request.
pub const DRAIN_TIME_SECONDS: u32 = 5;

/// Where the gateway listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    pub https: u16,
    pub devices: u16,
    pub admin: u16,
}

impl Default for Ports {
    /// The defaults of `citygate package --target envoy`.
    fn default() -> Self {
        Ports {
            https: 8443,
            devices: 8444,
            admin: 9901,
        }
    }
}

/// An upstream cluster's address, and its TLS when not on loopback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub host: String,
    pub port: u16,
    /// CA bundle to verify the upstream with (TLS with SNI = `host`), or
    /// plain HTTP when `None`.
    pub tls_ca: Option<PathBuf>,
}

impl Upstream {
    pub fn plain(host: impl Into<String>, port: u16) -> Self {
        Upstream {
            host: host.into(),
            port,
            tls_ca: None,
        }
    }

    pub fn tls(host: impl Into<String>, port: u16, ca: impl Into<PathBuf>) -> Self {
        Upstream {
            host: host.into(),
            port,
            tls_ca: Some(ca.into()),
        }
    }

    /// `HOST:PORT`.
    pub fn parse(text: &str) -> Result<Self> {
        let (host, port) = text
            .rsplit_once(':')
            .ok_or_else(|| anyhow!("`{text}` is not HOST:PORT"))?;
        let port = port
            .parse()
            .with_context(|| format!("`{port}` is not a port"))?;
        Ok(Upstream::plain(host, port))
    }

    /// The cluster's `transport_socket` (null: plain HTTP).
    fn transport_socket(&self) -> Value {
        let Some(ca) = &self.tls_ca else {
            return Value::Null;
        };
        json!({
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "sni": self.host,
                "common_tls_context": {
                    "tls_params": {"tls_minimum_protocol_version": "TLSv1_2"},
                    "validation_context": {
                        "trusted_ca": {"filename": ca.to_string_lossy()},
                        "match_typed_subject_alt_names": [
                            {"san_type": "DNS", "matcher": {"exact": self.host}}
                        ]
                    }
                }
            }
        })
    }
}

/// What a production gateway run needs; everything else is in the templates.
#[derive(Debug, Clone)]
pub struct ProductionGateway {
    /// citygate_filter.wasm.
    pub wasm: PathBuf,
    /// The plugin configuration, as JSON text.
    pub plugin_config: String,
    /// Secrets for `"${env:NAME}"` references: set in Envoy's environment
    /// and passed to the VM by name (`host_env_keys`).
    pub secrets: BTreeMap<String, String>,
    pub city_api: Upstream,
    pub jwks: Upstream,
    /// server.crt, server.key, device-ca.crt.
    pub cert_dir: PathBuf,
    pub device_uri_prefix: String,
    pub bind_address: String,
    pub concurrency: usize,
    /// Fixed ports; `None` picks free ones (tests).
    pub ports: Option<Ports>,
}

impl ProductionGateway {
    /// A gateway on 127.0.0.1 in front of a city API on loopback (which also
    /// serves the JWKS), with the certificates in `cert_dir`.
    pub fn new(
        wasm: impl Into<PathBuf>,
        plugin_config: impl Into<String>,
        city_api_port: u16,
        cert_dir: impl Into<PathBuf>,
    ) -> Self {
        ProductionGateway {
            wasm: wasm.into(),
            plugin_config: plugin_config.into(),
            secrets: BTreeMap::new(),
            city_api: Upstream::plain("127.0.0.1", city_api_port),
            jwks: Upstream::plain("127.0.0.1", city_api_port),
            cert_dir: cert_dir.into(),
            device_uri_prefix: pki::DEVICE_URI_PREFIX.to_string(),
            bind_address: "127.0.0.1".to_string(),
            concurrency: 2,
            ports: None,
        }
    }

    pub fn secret(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.secrets.insert(name.into(), value.into());
        self
    }

    pub fn concurrency(mut self, workers: usize) -> Self {
        self.concurrency = workers;
        self
    }

    /// The same gateway with another plugin configuration.
    pub fn with_plugin_config(&self, plugin_config: impl Into<String>) -> Self {
        ProductionGateway {
            plugin_config: plugin_config.into(),
            ..self.clone()
        }
    }

    fn vars(&self, ports: &Ports, xds_dir: &Path, version: &str) -> Result<BTreeMap<&str, Value>> {
        let wasm = fs::canonicalize(&self.wasm)
            .with_context(|| format!("filter wasm {}", self.wasm.display()))?;
        let cert_dir = fs::canonicalize(&self.cert_dir)
            .with_context(|| format!("certificate directory {}", self.cert_dir.display()))?;
        Ok(BTreeMap::from([
            ("version", Value::from(version)),
            ("admin_port", Value::from(ports.admin)),
            ("https_port", Value::from(ports.https)),
            ("devices_port", Value::from(ports.devices)),
            ("bind_address", Value::from(self.bind_address.clone())),
            ("config_dir", Value::from(path_text(xds_dir)?)),
            ("cert_dir", Value::from(path_text(&cert_dir)?)),
            (
                "device_uri_prefix",
                Value::from(self.device_uri_prefix.clone()),
            ),
            ("wasm_path", Value::from(path_text(&wasm)?)),
            ("plugin_config", Value::from(self.plugin_config.clone())),
            (
                "vm_host_env_keys",
                Value::from(self.secrets.keys().cloned().collect::<Vec<_>>()),
            ),
            // Nothing non-secret to pass inline yet.
            ("vm_env", Value::Null),
            ("city_api_host", Value::from(self.city_api.host.clone())),
            ("city_api_port", Value::from(self.city_api.port)),
            ("city_api_tls", self.city_api.transport_socket()),
            ("jwks_host", Value::from(self.jwks.host.clone())),
            ("jwks_port", Value::from(self.jwks.port)),
            ("jwks_tls", self.jwks.transport_socket()),
        ]))
    }

    /// The bootstrap, listeners (LDS) and routes (RDS) documents.
    pub fn render(&self, ports: &Ports, xds_dir: &Path, version: &str) -> Result<Rendered> {
        let vars = self.vars(ports, xds_dir, version)?;
        let render = |template: &str| -> Result<Value> {
            let mut doc = render_bootstrap(template, &vars)?;
            remove_nulls(&mut doc);
            Ok(doc)
        };
        Ok(Rendered {
            bootstrap: render(BOOTSTRAP_TEMPLATE)?,
            listeners: render(LISTENERS_TEMPLATE)?,
            routes: render(ROUTES_TEMPLATE)?,
        })
    }

    /// Writes `dir/bootstrap.json` and `dir/xds/{lds,rds}.json` (each xDS
    /// file replaced atomically, so this also updates a running gateway).
    pub fn write(&self, dir: &Path, ports: &Ports, version: &str) -> Result<PathBuf> {
        let xds_dir = dir.join(CONFIG_SUBDIR);
        fs::create_dir_all(&xds_dir).with_context(|| format!("creating {}", xds_dir.display()))?;
        let xds_dir = fs::canonicalize(&xds_dir)?;
        let rendered = self.render(ports, &xds_dir, version)?;
        let bootstrap = dir.join(BOOTSTRAP_FILE);
        fs::write(&bootstrap, serde_json::to_vec_pretty(&rendered.bootstrap)?)?;
        // Routes first: a listener that names route config `city` finds it.
        replace_atomically(&xds_dir.join(RDS_FILE), &rendered.routes)?;
        replace_atomically(&xds_dir.join(LDS_FILE), &rendered.listeners)?;
        Ok(bootstrap)
    }

    /// Pushes this gateway's listeners (with its plugin configuration) to a
    /// running Envoy started from it, as version `version`.
    pub fn push(&self, envoy: &EnvoyProcess, version: &str) -> Result<()> {
        let ports = Ports {
            https: envoy
                .port_named("https")
                .context("not a production gateway")?,
            devices: envoy
                .port_named("devices")
                .context("not a production gateway")?,
            admin: envoy.admin_port(),
        };
        let xds_dir = fs::canonicalize(envoy.run_dir().join(CONFIG_SUBDIR))?;
        let rendered = self.render(&ports, &xds_dir, version)?;
        replace_atomically(&xds_dir.join(LDS_FILE), &rendered.listeners)
    }

    /// Envoy's arguments beyond the bootstrap: see bootstrap.yaml on drains.
    pub fn envoy_args() -> Vec<String> {
        vec![
            "--drain-strategy".into(),
            "immediate".into(),
            "--drain-time-s".into(),
            DRAIN_TIME_SECONDS.to_string(),
        ]
    }
}

impl EnvoyConfig for ProductionGateway {
    fn prepare(&self, run_dir: &Path) -> Result<Launch> {
        let ports = match self.ports {
            Some(ports) => ports,
            None => Ports {
                https: free_port()?,
                devices: free_port()?,
                admin: free_port()?,
            },
        };
        let bootstrap = self.write(run_dir, &ports, "1")?;
        Ok(Launch {
            bootstrap,
            listener_port: ports.https,
            admin_port: ports.admin,
            ports: BTreeMap::from([
                ("https".to_string(), ports.https),
                ("devices".to_string(), ports.devices),
            ]),
            concurrency: self.concurrency,
            args: Self::envoy_args(),
            env: self.secrets.clone(),
        })
    }

    fn fixed_ports(&self) -> bool {
        self.ports.is_some()
    }
}

/// The three rendered documents.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub bootstrap: Value,
    pub listeners: Value,
    pub routes: Value,
}

/// A placeholder rendered as null removes its key (e.g. no upstream TLS).
fn remove_nulls(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(remove_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(remove_nulls),
        _ => {}
    }
}

fn path_text(path: &Path) -> Result<String> {
    path.to_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("path is not UTF-8: {}", path.display()))
}

/// Replaces a watched xDS file the way Envoy expects: the new content is
/// written to a temporary file in the same directory and renamed over the
/// target, so Envoy (which reloads on a move into the directory) never reads
/// a partial file.
pub fn replace_atomically(path: &Path, doc: &Value) -> Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| anyhow!("{} has no directory", path.display()))?;
    let name = path
        .file_name()
        .ok_or_else(|| anyhow!("{} has no file name", path.display()))?;
    let temp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    fs::write(&temp, serde_json::to_vec_pretty(doc)?)
        .with_context(|| format!("writing {}", temp.display()))?;
    fs::rename(&temp, path).with_context(|| format!("replacing {}", path.display()))
}

// ---------------------------------------------------------------------------
// Clients

/// An HTTPS client that trusts one CA and may present a client certificate
/// (an IoT device).
#[derive(Debug, Clone)]
pub struct TlsClient {
    agent: ureq::Agent,
}

impl TlsClient {
    pub fn new(ca_pem: &str, client: Option<&CertifiedKey>) -> Result<Self> {
        use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig};
        let ca = Certificate::from_pem(ca_pem.as_bytes())?;
        let mut tls = TlsConfig::builder().root_certs(RootCerts::Specific(Arc::new(vec![ca])));
        if let Some(client) = client {
            let cert = Certificate::from_pem(client.cert_pem.as_bytes())?;
            let key = PrivateKey::from_pem(client.key_pem.as_bytes())?;
            tls = tls.client_cert(Some(ClientCert::new_with_certs(&[cert], key)));
        }
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(Duration::from_secs(20)))
            .tls_config(tls.build())
            .build()
            .into();
        Ok(TlsClient { agent })
    }

    /// `GET https://127.0.0.1:<port><path>`.
    pub fn get(&self, port: u16, path: &str, headers: &[(&str, &str)]) -> Result<HttpReply> {
        self.request("GET", port, path, headers, b"")
    }

    /// `POST https://127.0.0.1:<port><path>`.
    pub fn post(
        &self,
        port: u16,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<HttpReply> {
        self.request("POST", port, path, headers, body)
    }

    /// Any request to the gateway on 127.0.0.1 (the server certificate
    /// carries that address); non-2xx statuses are replies, not errors.
    pub fn request(
        &self,
        method: &str,
        port: u16,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<HttpReply> {
        let mut builder = ureq::http::Request::builder()
            .method(method)
            .uri(format!("https://127.0.0.1:{port}{path}"));
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let response = self.agent.run(builder.body(body.to_vec())?)?;
        read_reply(response)
    }
}

/// Names and values of a `NAME=VALUE` map as Envoy's environment (for
/// `citygate package --target envoy`, which writes them to a file).
pub fn env_file_text(secrets: &BTreeMap<String, String>) -> String {
    let mut text = String::from(
        "# Envoy's environment: the secrets citygate reads through host_env_keys.\n\
         # Load it into Envoy's process only (e.g. systemd EnvironmentFile=), keep it 0600.\n",
    );
    for (name, value) in secrets {
        text.push_str(&format!("{name}={value}\n"));
    }
    text
}
