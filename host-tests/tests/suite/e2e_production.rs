//! End to end on the production gateway (`envoy/production/`): a real Envoy
//! 1.40 with TLS termination, the mutual TLS listener for IoT devices, and
//! the citygate filter delivered by file-based LDS — live reload under
//! traffic, and a broken configuration that Envoy refuses while the previous
//! one keeps serving.
//!
//! Certificates are generated per test (rcgen); no private key is read from
//! the repository. Processes stop on drop, also when an assertion fails.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, sleep};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use citygate_host::cli::hash_key;
use citygate_host::demo_api::DemoApi;
use citygate_host::envoy::pki::{GatewayPki, DEMO_DEVICE};
use citygate_host::envoy::production::{ProductionGateway, TlsClient};
use citygate_host::envoy::{envoy_binary, EnvoyConfig, EnvoyProcess, Launch};
use citygate_host::wasm_build::filter_wasm;
use serde_json::{json, Value};

const PARKING_KEY: &str = "cg_test_parking_app_5e1c7a";
const OTHER_KEY: &str = "cg_test_other_app_9b24d0";
const LOG_KEY: &str = "test-only-decision-log-key-0123456789";
/// How long a reload may take to show before the test gives up (a bound
/// on waiting, not a performance assertion).
const RELOAD_DEADLINE: Duration = Duration::from_secs(30);

/// Routes: open data (anonymous), parking data (API key), and a device
/// endpoint (mTLS, role `sensor`; its request body buffered for the
/// policy) that echoes what reached the city API.
fn plugin_config(parking_key_disabled: bool) -> Value {
    json!({
        "gateway": {"realm": "city-api"},
        "auth": {
            "api_keys": {
                "header": "x-api-key",
                "keys": [
                    {"id": "parking-app-2026", "client_id": "parking-app",
                     "sha256": hash_key(PARKING_KEY), "roles": ["app"],
                     "disabled": parking_key_disabled},
                    {"id": "other-app-2026", "client_id": "other-app",
                     "sha256": hash_key(OTHER_KEY), "roles": ["app"]}
                ]
            },
            "mtls": {
                "devices": [
                    {"uri_san_prefix": "spiffe://city.example/device/", "roles": ["sensor"]}
                ]
            }
        },
        "routes": [
            {"name": "open-data", "match": {"path_prefix": "/v2/entities"},
             "auth": {"anonymous": true}},
            {"name": "parking", "match": {"path_prefix": "/ngsi-ld/v1/entities"},
             "auth": {"methods": ["api_key"]}},
            {"name": "device-readings", "match": {"path_exact": "/echo", "methods": ["POST"]},
             "auth": {"methods": ["mtls"], "required_roles": ["sensor"]},
             "request_body": {"buffer": true}}
        ],
        "decision_log": {"pseudonym_key": "${env:CITYGATE_LOG_KEY}"}
    })
}

/// A running production gateway and what its clients need. Fields drop in
/// order: Envoy first, then its certificates, then the city API.
struct Running {
    envoy: EnvoyProcess,
    gateway: ProductionGateway,
    pki: GatewayPki,
    _certs: tempfile::TempDir,
    api: DemoApi,
}

impl Running {
    fn start(config: &Value) -> Result<Self> {
        let api = DemoApi::start()?;
        let pki = GatewayPki::generate()?;
        let certs = tempfile::tempdir()?;
        pki.write(certs.path(), false)?;
        let gateway =
            ProductionGateway::new(filter_wasm()?, config.to_string(), api.port, certs.path())
                .secret("CITYGATE_LOG_KEY", LOG_KEY);
        let envoy = EnvoyProcess::start(&gateway)?;
        Ok(Running {
            envoy,
            gateway,
            pki,
            _certs: certs,
            api,
        })
    }

    fn https(&self) -> u16 {
        self.envoy.port_named("https").expect("https listener")
    }

    fn devices(&self) -> u16 {
        self.envoy.port_named("devices").expect("devices listener")
    }

    /// A client that trusts the gateway's server CA, without a certificate.
    fn client(&self) -> Result<TlsClient> {
        TlsClient::new(&self.pki.server_ca.cert_pem, None)
    }

    /// The demo device (parking-sensor-0042).
    fn device(&self) -> Result<TlsClient> {
        TlsClient::new(&self.pki.server_ca.cert_pem, Some(&self.pki.device))
    }
}

#[test]
fn tls_listener_terminates_tls_and_keeps_secrets_out_of_the_config_dump() -> Result<()> {
    let gw = Running::start(&plugin_config(false))?;

    let reply = gw
        .client()?
        .get(gw.https(), "/v2/entities?type=ParkingSpot", &[])?;
    assert_eq!(reply.status, 200, "{}\n{}", reply.body, gw.envoy.log());
    let spots = reply.json()?;
    assert_eq!(spots.as_array().map(Vec::len), Some(2), "{spots}");
    assert_eq!(gw.api.count("/v2/entities"), 1);

    // An API-key route: no key is a 401 from citygate, a key is accepted.
    let client = gw.client()?;
    let missing = client.get(gw.https(), "/ngsi-ld/v1/entities", &[])?;
    assert_eq!(missing.status, 401, "{}", missing.body);
    assert_eq!(
        missing.header("content-type"),
        Some("application/problem+json")
    );
    let keyed = client.get(
        gw.https(),
        "/ngsi-ld/v1/entities",
        &[("x-api-key", PARKING_KEY)],
    )?;
    assert_eq!(keyed.status, 200, "{}", keyed.body);

    // A client that does not trust the gateway's CA never gets a reply.
    let stranger = GatewayPki::generate()?;
    let untrusting = TlsClient::new(&stranger.server_ca.cert_pem, None)?;
    assert!(
        untrusting.get(gw.https(), "/v2/entities", &[]).is_err(),
        "a server certificate from an untrusted CA was accepted"
    );
    // Plain HTTP on the TLS port is not served.
    let plain = ureq::get(format!("http://127.0.0.1:{}/v2/entities", gw.https())).call();
    assert!(plain.is_err(), "plain HTTP was answered: {plain:?}");

    // Secrets reach the VM from Envoy's environment (host_env_keys): the
    // decision log is keyed, and the admin config dump shows only the name.
    let dump = gw.envoy.admin("/config_dump")?;
    assert!(dump.contains("CITYGATE_LOG_KEY"), "host_env_keys missing");
    assert!(
        !dump.contains(LOG_KEY),
        "the secret is visible in /config_dump"
    );
    assert!(
        gw.envoy.log().contains("citygate: configuration accepted"),
        "{}",
        gw.envoy.log()
    );
    Ok(())
}

#[test]
fn devices_listener_admits_verified_device_certificates_only() -> Result<()> {
    let gw = Running::start(&plugin_config(false))?;
    let reading = br#"{"occupied":true}"#;

    // The demo device: Envoy verified its certificate, citygate mapped the
    // SPIFFE ID to an mtls identity with role `sensor`.
    let reply = gw.device()?.post(
        gw.devices(),
        "/echo",
        &[("content-type", "application/json")],
        reading,
    )?;
    assert_eq!(reply.status, 200, "{}\n{}", reply.body, gw.envoy.log());
    let echoed = reply.json()?;
    let headers = &echoed["headers"];
    assert_eq!(headers["x-citygate-auth-kind"], "mtls", "{echoed}");
    assert_eq!(headers["x-citygate-subject"], DEMO_DEVICE, "{echoed}");
    assert_eq!(headers["x-citygate-roles"], "sensor", "{echoed}");
    // The buffered body went upstream whole.
    assert_eq!(echoed["body"], r#"{"occupied":true}"#, "{echoed}");
    assert_eq!(gw.api.count("/echo"), 1);

    // Without a client certificate on the public listener, the device
    // route is refused by citygate: no credential.
    let anonymous = gw.client()?.post(gw.https(), "/echo", &[], reading)?;
    assert_eq!(anonymous.status, 401, "{}", anonymous.body);
    // The public listener does not ask for client certificates, so a
    // device's certificate is not presented there either.
    let device_on_public = gw.device()?.post(gw.https(), "/echo", &[], reading)?;
    assert_eq!(device_on_public.status, 401, "{}", device_on_public.body);

    // The devices listener refuses, at the handshake: no certificate, a
    // certificate from another CA, a device CA certificate outside the
    // device SPIFFE prefix.
    let no_cert = gw.client()?.post(gw.devices(), "/echo", &[], reading);
    assert!(no_cert.is_err(), "no client certificate: {no_cert:?}");
    let wrong_ca = gw.pki.server_ca.client(DEMO_DEVICE)?;
    let wrong_ca = TlsClient::new(&gw.pki.server_ca.cert_pem, Some(&wrong_ca))?;
    let refused = wrong_ca.post(gw.devices(), "/echo", &[], reading);
    assert!(refused.is_err(), "a certificate of another CA: {refused:?}");
    let vendor = gw
        .pki
        .device_ca
        .client("spiffe://city.example/vendor/firmware-updater")?;
    let vendor = TlsClient::new(&gw.pki.server_ca.cert_pem, Some(&vendor))?;
    let refused = vendor.post(gw.devices(), "/echo", &[], reading);
    assert!(
        refused.is_err(),
        "a URI SAN outside the prefix: {refused:?}"
    );

    assert_eq!(gw.api.count("/echo"), 1, "only the device reached the API");
    Ok(())
}

/// One request of the steady traffic: which key, and the status or the
/// transport error.
#[derive(Debug, Clone)]
struct Sent {
    key: &'static str,
    outcome: std::result::Result<u16, String>,
}

/// Sends requests with both API keys, alternately, over one client (one
/// keep-alive connection at a time), until told to stop.
fn steady_traffic(
    client: TlsClient,
    port: u16,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<Sent>>>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        // Bounded: the test stops it long before, this is a safety net.
        for _ in 0..200_000 {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            for key in [PARKING_KEY, OTHER_KEY] {
                let outcome = client
                    .get(
                        port,
                        "/ngsi-ld/v1/entities?type=ParkingSpot",
                        &[("x-api-key", key)],
                    )
                    .map(|reply| reply.status)
                    .map_err(|e| format!("{e:#}"));
                log.lock().expect("log").push(Sent { key, outcome });
            }
        }
    })
}

/// Waits until `done` holds of the traffic log (polling it), or fails.
fn wait_for(log: &Mutex<Vec<Sent>>, what: &str, done: impl Fn(&[Sent]) -> bool) -> Result<()> {
    let deadline = Instant::now() + RELOAD_DEADLINE;
    while Instant::now() < deadline {
        if done(&log.lock().expect("log")) {
            return Ok(());
        }
        sleep(Duration::from_millis(20));
    }
    bail!("gave up waiting for {what}")
}

#[test]
fn live_reload_revokes_a_key_under_traffic_and_keeps_serving_through_a_broken_push() -> Result<()> {
    let gw = Running::start(&plugin_config(false))?;
    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(Mutex::new(Vec::new()));
    let traffic = steady_traffic(gw.client()?, gw.https(), stop.clone(), log.clone());
    let result = (|| -> Result<(usize, usize)> {
        wait_for(&log, "traffic before the push", |l| l.len() >= 40)?;

        // Revoke the parking app's key: the new listeners replace lds.json
        // atomically; Envoy applies them without a restart.
        gw.gateway
            .with_plugin_config(plugin_config(true).to_string())
            .push(&gw.envoy, "2")?;
        wait_for(&log, "the revoked key to get 401", |l| {
            l.iter()
                .any(|s| s.key == PARKING_KEY && s.outcome == Ok(401))
        })?;
        let revoked_at = log.lock().expect("log").len();
        wait_for(&log, "traffic after the revocation", |l| {
            l.len() >= revoked_at + 40
        })?;

        // A broken configuration (a string where a bool belongs): citygate
        // refuses it, Envoy rejects the listener update, the previous
        // configuration keeps serving.
        let rejected_before = gw.envoy.stat("listener_manager.lds.update_rejected")?;
        let mut broken = plugin_config(true);
        broken["auth"]["api_keys"]["keys"][1]["disabled"] = json!("no");
        gw.gateway
            .with_plugin_config(broken.to_string())
            .push(&gw.envoy, "3")?;
        let deadline = Instant::now() + RELOAD_DEADLINE;
        while gw.envoy.stat("listener_manager.lds.update_rejected")? <= rejected_before {
            ensure!(
                Instant::now() < deadline,
                "the broken push was not rejected"
            );
            sleep(Duration::from_millis(50));
        }
        let broken_at = log.lock().expect("log").len();
        wait_for(&log, "traffic after the broken push", |l| {
            l.len() >= broken_at + 40
        })?;
        Ok((revoked_at, broken_at))
    })();
    stop.store(true, Ordering::Relaxed);
    traffic.join().expect("traffic thread");
    let (revoked_at, broken_at) = result.with_context(|| gw.envoy.log())?;

    let sent = log.lock().expect("log").clone();
    let failures: Vec<&Sent> = sent
        .iter()
        .filter(|s| !matches!(s.outcome, Ok(200) | Ok(401)))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed during the reloads: {:?}",
        failures.len(),
        sent.len(),
        &failures[..failures.len().min(5)]
    );
    // The other app's key is never refused, before, during or after.
    assert!(
        sent.iter()
            .filter(|s| s.key == OTHER_KEY)
            .all(|s| s.outcome == Ok(200)),
        "the other key was refused"
    );
    // The parking key: 200 until the revocation shows, 401 from then on —
    // never a 200 again (an old keep-alive connection answers its last
    // request and is closed), including after the broken push.
    let parking: Vec<u16> = sent
        .iter()
        .filter(|s| s.key == PARKING_KEY)
        .filter_map(|s| s.outcome.clone().ok())
        .collect();
    let first_401 = parking
        .iter()
        .position(|&s| s == 401)
        .context("never revoked")?;
    assert!(first_401 > 0, "the key was refused before the push");
    assert!(parking[..first_401].iter().all(|&s| s == 200));
    assert!(
        parking[first_401..].iter().all(|&s| s == 401),
        "the revoked key was accepted again: {:?}",
        &parking[first_401..]
    );
    assert!(sent.len() >= broken_at + 40 && broken_at > revoked_at);
    eprintln!(
        "live reload: {} requests, none failed; parking key {} × 200 then {} × 401",
        sent.len(),
        first_401,
        parking.len() - first_401
    );

    let log = gw.envoy.log();
    assert!(
        log.contains("invalid configuration at $.auth.api_keys.keys[1].disabled"),
        "citygate's error line is missing:\n{log}"
    );
    assert!(
        gw.envoy.stat("listener_manager.lds.update_success")? >= 2,
        "initial listeners and the revocation"
    );
    // Both listeners still run the revocation's configuration; the broken
    // one is recorded as their failed update.
    let dump = gw.envoy.admin("/config_dump?resource=dynamic_listeners")?;
    let dump: Value = serde_json::from_str(&dump)?;
    let listeners = dump["configs"].as_array().context("dynamic listeners")?;
    let active: Vec<Value> = listeners
        .iter()
        .filter(|l| l.get("active_state").is_some())
        .map(|l| -> Result<Value> {
            let filters = &l["active_state"]["listener"]["filter_chains"][0]["filters"][0];
            let wasm = &filters["typed_config"]["http_filters"][0]["typed_config"]["config"];
            let config = wasm["configuration"]["value"]
                .as_str()
                .context("plugin config")?;
            Ok(serde_json::from_str(config)?)
        })
        .collect::<Result<_>>()?;
    assert_eq!(active.len(), 2, "two active listeners");
    assert!(active.iter().all(|config| *config == plugin_config(true)));
    let failed_details: Vec<&str> = listeners
        .iter()
        .filter_map(|l| l["error_state"]["details"].as_str())
        .collect();
    assert!(
        !failed_details.is_empty()
            && failed_details
                .iter()
                .all(|d| d.contains("Unable to create Wasm plugin citygate")),
        "{failed_details:?}"
    );
    Ok(())
}

/// Runs Envoy from a directory `citygate package --target envoy` wrote,
/// as the README tells an operator to.
struct Packaged {
    dir: std::path::PathBuf,
    https: u16,
    admin: u16,
    env: BTreeMap<String, String>,
}

impl EnvoyConfig for Packaged {
    fn prepare(&self, _run_dir: &std::path::Path) -> Result<Launch> {
        Ok(Launch {
            bootstrap: self.dir.join("bootstrap.json"),
            listener_port: self.https,
            admin_port: self.admin,
            ports: BTreeMap::from([("https".to_string(), self.https)]),
            concurrency: 2,
            args: ProductionGateway::envoy_args(),
            env: self.env.clone(),
        })
    }

    fn fixed_ports(&self) -> bool {
        true
    }
}

#[test]
fn citygate_package_envoy_writes_a_gateway_that_runs() -> Result<()> {
    let api = DemoApi::start()?;
    let out = tempfile::tempdir()?;
    let ports: Vec<u16> = (0..3)
        .map(|_| citygate_host::envoy::free_port())
        .collect::<Result<_>>()?;
    let wasm = filter_wasm()?;
    let inputs = tempfile::tempdir()?;
    let config = inputs.path().join("gateway.json");
    std::fs::write(&config, plugin_config(false).to_string())?;
    let env_file = inputs.path().join("secrets.env");
    std::fs::write(
        &env_file,
        format!("# test only\nCITYGATE_LOG_KEY={LOG_KEY}\n"),
    )?;
    let output = Command::new(env!("CARGO_BIN_EXE_citygate"))
        .arg("--wasm")
        .arg(&wasm)
        .args(["package", "--target", "envoy", "--out"])
        .arg(out.path())
        .arg("--config")
        .arg(&config)
        .arg("--env-file")
        .arg(&env_file)
        .args(["--bind", "127.0.0.1"])
        .args(["--upstream", &format!("127.0.0.1:{}", api.port)])
        .args(["--jwks", &format!("127.0.0.1:{}", api.port)])
        .args(["--https-port", &ports[0].to_string()])
        .args(["--devices-port", &ports[1].to_string()])
        .args(["--admin-port", &ports[2].to_string()])
        .output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(output.status.success(), "citygate package failed: {stderr}");
    for file in [
        "bootstrap.json",
        "xds/lds.json",
        "xds/rds.json",
        "citygate_filter.wasm",
        "citygate.env",
        "certs/server.crt",
        "certs/server.key",
        "certs/device-ca.crt",
        "certs/README.DEMO-ONLY",
    ] {
        assert!(out.path().join(file).is_file(), "{file} missing");
    }
    assert!(stderr.contains("DEMO ONLY"), "{stderr}");
    let env = citygate_host::env_file::read_env_file(&out.path().join("citygate.env"))?;
    assert!(env.contains_key("CITYGATE_LOG_KEY"), "{env:?}");

    let envoy = EnvoyProcess::start(&Packaged {
        dir: out.path().to_path_buf(),
        https: ports[0],
        admin: ports[2],
        env,
    })?;
    let ca = std::fs::read_to_string(out.path().join("certs/server-ca.crt"))?;
    let client = TlsClient::new(&ca, None)?;
    // The configuration it was given: open data through to the city API,
    // an API-key route refusing a request without a key, no route → 404.
    let open = client
        .get(ports[0], "/v2/entities?type=ParkingSpot", &[])
        .with_context(|| envoy.log())?;
    assert_eq!(open.status, 200, "{}\n{}", open.body, envoy.log());
    let keyless = client.get(ports[0], "/ngsi-ld/v1/entities", &[])?;
    assert_eq!(keyless.status, 401, "{}", keyless.body);
    let nothing = client.get(ports[0], "/no-such-api", &[])?;
    assert_eq!(nothing.status, 404, "{}", nothing.body);
    assert_eq!(api.count("/v2/entities"), 1);
    assert_eq!(api.request_count(), 1, "only open data reached the API");

    // A configuration citygate refuses is never written: the running
    // gateway's listeners stay as they were.
    let lds_before = std::fs::read(out.path().join("xds/lds.json"))?;
    let mut broken = plugin_config(false);
    broken["routes"][0]["match"]["path_prefx"] = json!("/");
    std::fs::write(&config, broken.to_string())?;
    let refused = Command::new(env!("CARGO_BIN_EXE_citygate"))
        .arg("--wasm")
        .arg(&wasm)
        .args(["package", "--target", "envoy", "--out"])
        .arg(out.path())
        .arg("--config")
        .arg(&config)
        .arg("--env-file")
        .arg(&env_file)
        .output()?;
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("routes[0].match"), "{stderr}");
    assert_eq!(std::fs::read(out.path().join("xds/lds.json"))?, lds_before);
    Ok(())
}

#[test]
fn bootstrap_with_upstream_tls_passes_envoy_validation() -> Result<()> {
    use citygate_host::envoy::production::{Ports, Upstream};
    let pki = GatewayPki::generate()?;
    let dir = tempfile::tempdir()?;
    let certs = dir.path().join("certs");
    pki.write(&certs, false)?;
    let mut gateway = ProductionGateway::new(
        filter_wasm()?,
        plugin_config(false).to_string(),
        443,
        &certs,
    );
    let ca = certs.join("server-ca.crt");
    gateway.city_api = Upstream::tls("city-api.internal.example", 443, &ca);
    gateway.jwks = Upstream::tls("idp.city.example", 443, &ca);
    let bootstrap = gateway.write(dir.path(), &Ports::default(), "1")?;
    let text = std::fs::read_to_string(&bootstrap)?;
    assert!(text.contains("UpstreamTlsContext") && text.contains("idp.city.example"));
    let output = Command::new(envoy_binary()?)
        .args(["--mode", "validate", "--config-path"])
        .arg(&bootstrap)
        .output()?;
    assert!(
        output.status.success(),
        "envoy --mode validate refused the bootstrap:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}
