//! Fault injection against a real Envoy running the release `.wasm`: the
//! identity provider's key endpoint down, slow or answering garbage; the
//! upstream resetting in the middle of a body; a policy that hits its
//! evaluation bound; the plugin configuration replaced by a broken one; and
//! a guest that traps. For each: what the client gets, that nothing
//! unauthenticated or unminimized passes, and the metric or log line that
//! tells an operator.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{sleep, JoinHandle};
use std::time::Duration;

use anyhow::{Context, Result};
use citygate_host::demo_api::{DemoApi, JwksMode, ScriptedReply};
use citygate_host::envoy::{free_port, EnvoyConfig, EnvoyProcess, Gateway, HttpReply, Launch};
use citygate_host::scenario::credentials::{unix_now, Tamper};
use citygate_host::wasm_build::{filter_wasm, workspace_root};
use serde_json::{json, Value};

use crate::support::{bearer, demo_credentials, demo_env, eventually, log_tail};

const EMAIL: &str = "erika@example.org";
/// Upper bound for conditions that need Envoy's ticks or file watches; the
/// tests wait for conditions, never for durations.
const PATIENCE: Duration = Duration::from_secs(30);

fn read(path: &str) -> Result<String> {
    let path = workspace_root().join(path);
    std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
}

/// The city pack's configuration and its DEMO ONLY secrets.
fn city_gateway(wasm: &Path, upstream_port: u16, jwks_port: u16) -> Result<Gateway> {
    let mut gateway = Gateway::new(
        wasm,
        read("policies/config/city-gateway.json")?,
        upstream_port,
    )
    .jwks_port(jwks_port)
    .concurrency(2);
    for (name, value) in demo_env() {
        gateway = gateway.env(name, value);
    }
    Ok(gateway)
}

fn problem_type(reply: &HttpReply) -> Result<String> {
    Ok(reply.json()?["type"]
        .as_str()
        .unwrap_or_default()
        .to_string())
}

// --- the identity provider's keys -------------------------------------------------------------

/// With the key endpoint in `mode` from the start, a citizen's request gets
/// 503 keys-unavailable and never reaches the upstream; anonymous open data
/// (no keys needed) is still served, minimized.
fn without_keys(mode: JwksMode) -> Result<(EnvoyProcess, DemoApi)> {
    let wasm = filter_wasm()?;
    let api = DemoApi::start_with_jwks(demo_credentials().jwks("city-idp", None)?)?;
    api.jwks().set_mode(mode);
    let envoy = EnvoyProcess::start(&city_gateway(&wasm, api.port, api.port)?)?;
    let token = demo_credentials().mint("citizen", Tamper::None, unix_now())?;
    let reply = envoy.get(
        "/open311/v2/requests.json?account_id=citizen-anna",
        &[("authorization", &bearer(&token))],
    )?;
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert_eq!(reply.header("retry-after"), Some("1"));
    assert_eq!(
        problem_type(&reply)?,
        "urn:citygate:problem:keys-unavailable"
    );
    assert_eq!(
        api.count("/open311"),
        0,
        "an unverified token went upstream"
    );
    assert!(envoy.metric("citygate_auth_unavailable")? >= 1);

    let open = envoy.get("/v2/entities?type=ParkingSpot", &[])?;
    assert_eq!(open.status, 200, "{}", open.body);
    assert!(!open.body.contains("@example.org"), "{}", open.body);
    assert!(!envoy.log().contains(&token), "a token was logged");
    Ok((envoy, api))
}

#[test]
fn jwks_endpoint_down_gives_503_never_an_unauthenticated_pass() -> Result<()> {
    let (envoy, _api) = without_keys(JwksMode::Unavailable)?;
    assert!(envoy.metric("citygate_jwks_fetch_failed")? >= 1);
    assert_eq!(envoy.metric("citygate_jwks_fetched")?, 0);
    assert!(envoy
        .log()
        .contains("JWKS fetch through cluster `jwks` failed (status 503)"));
    Ok(())
}

#[test]
fn jwks_endpoint_slower_than_its_timeout_gives_503() -> Result<()> {
    // The pack waits 3 s for keys and times a fetch out after 2 s.
    let (envoy, _api) = without_keys(JwksMode::Slow(Duration::from_secs(30)))?;
    eventually(PATIENCE, "the timed-out fetch counted", || {
        Ok((envoy.metric("citygate_jwks_fetch_failed")? >= 1).then_some(()))
    })?;
    assert_eq!(envoy.metric("citygate_jwks_fetched")?, 0);
    // Envoy answers a timed-out callout with its own 504.
    assert!(envoy.log().contains("failed (status 504)"));
    Ok(())
}

#[test]
fn jwks_endpoint_answering_garbage_gives_503_and_the_garbage_is_not_logged() -> Result<()> {
    let (envoy, _api) = without_keys(JwksMode::Garbage)?;
    assert!(envoy.metric("citygate_jwks_fetch_failed")? >= 1);
    assert_eq!(envoy.metric("citygate_jwks_fetched")?, 0);
    let log = envoy.log();
    assert!(log.contains("JWKS fetch through cluster `jwks` failed (status 200)"));
    assert!(
        !log.contains("not a key set"),
        "the fetched body was logged"
    );
    Ok(())
}

#[test]
fn jwks_endpoint_resetting_mid_reply_gives_503_and_the_gateway_survives_it() -> Result<()> {
    let wasm = filter_wasm()?;
    let api = DemoApi::start()?;
    // The key endpoint starts a reply and drops the connection: Envoy
    // reports such a call as failed, with no response at all.
    let jwks = BrokenUpstream::start(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 4000\r\n\r\n",
        r#"{"keys":[{"kty":"RSA","#.to_string(),
    )?;
    let envoy = EnvoyProcess::start(&city_gateway(&wasm, api.port, jwks.port)?)?;
    eventually(PATIENCE, "two failed fetches", || {
        Ok((envoy.metric("citygate_jwks_fetch_failed")? >= 2).then_some(()))
    })
    .with_context(|| log_tail(&envoy, 30))?;
    let token = demo_credentials().mint("citizen", Tamper::None, unix_now())?;
    let reply = envoy.get(
        "/open311/v2/requests.json?account_id=citizen-anna",
        &[("authorization", &bearer(&token))],
    )?;
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert_eq!(
        problem_type(&reply)?,
        "urn:citygate:problem:keys-unavailable"
    );
    assert_eq!(api.count("/open311"), 0);
    // The VMs that handled the failed calls still serve: anonymous open
    // data on every worker, repeatedly.
    for _ in 0..10 {
        let open = envoy.get("/v2/entities?type=ParkingSpot", &[("connection", "close")])?;
        assert_eq!(open.status, 200, "{}", open.body);
    }
    let log = envoy.log();
    assert!(
        !log.contains("panicked"),
        "the filter crashed on a failed call"
    );
    assert!(log.contains("JWKS fetch through cluster `jwks` failed (status 0)"));
    Ok(())
}

// --- the upstream resetting mid-body ------------------------------------------------------------

/// An upstream that answers every request with `head` and the first half of
/// a body holding a personal value, then closes the connection.
struct BrokenUpstream {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl BrokenUpstream {
    fn start(head: &'static str, partial_body: String) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                let Ok((mut stream, _)) = listener.accept() else {
                    sleep(Duration::from_millis(10));
                    continue;
                };
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(partial_body.as_bytes());
                let _ = stream.flush();
                sleep(Duration::from_millis(50));
                let _ = stream.shutdown(Shutdown::Both);
            }
        });
        Ok(Self {
            port,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for BrokenUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[test]
fn an_upstream_resetting_mid_body_never_leaks_the_part_it_sent() -> Result<()> {
    let wasm = filter_wasm()?;
    let api = DemoApi::start_with_jwks(demo_credentials().jwks("city-idp", None)?)?;
    let half = format!(r#"[{{"type":"ParkingSpot","ownerEmail":"{EMAIL}","#);
    for head in [
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 4000\r\n\r\n",
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n",
    ] {
        let body = if head.contains("chunked") {
            format!("{:x}\r\n{half}\r\n", half.len())
        } else {
            half.clone()
        };
        let upstream = BrokenUpstream::start(head, body)?;
        let envoy = EnvoyProcess::start(&city_gateway(&wasm, upstream.port, api.port)?)?;
        let reply = envoy.get("/v2/entities?type=ParkingSpot", &[]);
        // Whatever the client gets (an error status or a broken stream),
        // it is never the personal value the upstream began to send.
        match &reply {
            Ok(reply) => {
                assert!(
                    reply.status >= 500,
                    "{head}: {} {}",
                    reply.status,
                    reply.body
                );
                assert!(!reply.body.contains(EMAIL), "{head}: {}", reply.body);
            }
            Err(error) => assert!(!format!("{error:#}").contains(EMAIL)),
        }
        // What tells the operator: Envoy's upstream reset counters.
        let resets = envoy.metric("envoy_cluster_upstream_cx_destroy_remote_with_active_rq")?
            + envoy.metric("envoy_cluster_upstream_rq_rx_reset")?;
        assert!(resets >= 1, "{head}: no upstream reset counted");
        assert_eq!(envoy.metric("citygate_redaction_responses")?, 0);
    }
    Ok(())
}

// --- a pathological policy ----------------------------------------------------------------------

#[test]
fn a_policy_that_exceeds_its_evaluation_bound_denies_with_403() -> Result<()> {
    let wasm = filter_wasm()?;
    let api = DemoApi::start()?;
    let mut config: Value = serde_json::from_str(&read("policies/attacks/admin.config.json")?)?;
    // A million interpreter steps for /public, under a 2 ms budget.
    config["policy"]["modules"]["slow.rego"] = json!(
        "package attacks.slow\n\nimport rego.v1\n\n\
         decision := {\"allowed\": true} if {\n\
         \tcount([x | some i in numbers.range(1, 1000); some j in numbers.range(1, 1000); x := i * j]) > 0\n}\n"
    );
    config["policy"]["max_eval_micros"] = json!(2000);
    config["routes"][1]["policy"] = json!({ "entrypoint": "data.attacks.slow.decision" });
    let gateway = Gateway::new(&wasm, config.to_string(), api.port)
        .env("CITYGATE_LOG_KEY", "demo-only-decision-log-key-change-me");
    let envoy = EnvoyProcess::start(&gateway)?;
    let reply = envoy.get("/public/map", &[])?;
    assert_eq!(reply.status, 403, "{}", reply.body);
    assert_eq!(problem_type(&reply)?, "urn:citygate:problem:policy-denied");
    assert_eq!(api.count("/public"), 0);
    assert_eq!(envoy.metric("citygate_policy_error")?, 1);
    assert!(envoy
        .log()
        .contains("route public: request denied: policy evaluation exceeded its time budget"));
    // The gateway keeps serving: the next request is judged again, alike.
    assert_eq!(envoy.get("/public/map", &[])?.status, 403);
    assert_eq!(envoy.metric("citygate_policy_error")?, 2);
    Ok(())
}

// --- the configuration replaced by a broken one ---------------------------------------------------

/// `envoy/gateway.yaml` with its listener served from a file (LDS on the
/// filesystem), so a test can replace the plugin configuration while Envoy
/// runs, as a control plane would.
struct ReloadableGateway {
    gateway: Gateway,
    lds_path: PathBuf,
}

impl ReloadableGateway {
    /// The LDS document: the bootstrap's listener with `plugin_config`.
    fn listeners(&self, plugin_config: &str, listener_port: u16) -> Result<Value> {
        let mut gateway = self.gateway.clone();
        gateway.plugin_config = plugin_config.to_string();
        let bootstrap = gateway.bootstrap(listener_port, 0, Path::new("/tmp"))?;
        let mut listener = bootstrap["static_resources"]["listeners"][0].clone();
        listener["@type"] = json!("type.googleapis.com/envoy.config.listener.v3.Listener");
        Ok(json!({ "version_info": unix_now().to_string(), "resources": [listener] }))
    }

    /// Writes the listeners file the way a deployment would: whole, by rename.
    fn publish(&self, plugin_config: &str, listener_port: u16) -> Result<()> {
        let next = self.lds_path.with_extension("next");
        let document = self.listeners(plugin_config, listener_port)?;
        std::fs::write(&next, serde_json::to_vec_pretty(&document)?)?;
        std::fs::rename(&next, &self.lds_path)?;
        Ok(())
    }
}

impl EnvoyConfig for ReloadableGateway {
    fn prepare(&self, run_dir: &Path) -> Result<Launch> {
        let launch = self.gateway.prepare(run_dir)?;
        let mut bootstrap: Value = serde_json::from_slice(&std::fs::read(&launch.bootstrap)?)?;
        let access_log = run_dir.join("access.log");
        let mut listeners = self.listeners(&self.gateway.plugin_config, launch.listener_port)?;
        let hcm = &mut listeners["resources"][0]["filter_chains"][0]["filters"][0]["typed_config"];
        hcm["access_log"][0]["typed_config"]["path"] = json!(access_log);
        std::fs::write(&self.lds_path, serde_json::to_vec_pretty(&listeners)?)?;
        bootstrap["static_resources"]
            .as_object_mut()
            .context("static resources")?
            .remove("listeners");
        bootstrap["node"] = json!({ "id": "citygate-faults", "cluster": "citygate" });
        bootstrap["dynamic_resources"] = json!({
            "lds_config": { "path_config_source": { "path": self.lds_path }, "resource_api_version": "V3" }
        });
        std::fs::write(&launch.bootstrap, serde_json::to_vec_pretty(&bootstrap)?)?;
        Ok(launch)
    }

    fn fixed_ports(&self) -> bool {
        false
    }
}

#[test]
fn a_broken_configuration_is_rejected_and_the_last_good_one_keeps_serving() -> Result<()> {
    let wasm = filter_wasm()?;
    let api = DemoApi::start_with_jwks(demo_credentials().jwks("city-idp", None)?)?;
    api.script(Some(ScriptedReply {
        status: 200,
        headers: vec![("content-type".into(), "application/json".into())],
        body: b"{}".to_vec(),
        ..ScriptedReply::default()
    }));
    let good = read("policies/attacks/admin.config.json")?;
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let reloadable = ReloadableGateway {
        gateway: Gateway::new(&wasm, good.clone(), api.port)
            .env("CITYGATE_LOG_KEY", "demo-only-decision-log-key-change-me")
            .listener_port(port),
        lds_path: dir.path().join("listeners.json"),
    };
    let envoy = EnvoyProcess::start(&reloadable)?;
    // Each request on a new connection: one kept alive would stay with the
    // listener it was accepted by while that drains.
    let get = |path: &str| envoy.get(path, &[("connection", "close")]);
    eventually(PATIENCE, "the listener from the file", || {
        Ok((get("/public/map").is_ok_and(|r| r.status == 200)).then_some(()))
    })
    .with_context(|| log_tail(&envoy, 30))?;
    assert_eq!(get("/admin/users")?.status, 401);

    // A typo in the new configuration: the update is rejected as a whole.
    let broken = good.replace("\"path_prefix\": \"/admin\"", "\"path_prefx\": \"/admin\"");
    assert_ne!(broken, good);
    reloadable.publish(&broken, port)?;
    eventually(PATIENCE, "the broken update rejected", || {
        Ok((envoy.stat("listener_manager.lds.update_rejected")? >= 1).then_some(()))
    })?;
    assert!(envoy
        .log()
        .contains("citygate: invalid configuration at $.routes[0].match.path_prefx"));
    // The last good configuration keeps serving, /admin still protected.
    for _ in 0..5 {
        assert_eq!(get("/admin/users")?.status, 401);
        assert_eq!(get("/public/map")?.status, 200);
    }
    assert_eq!(api.count("/admin"), 0);

    // A good update after it is taken: /public is gone from the new one.
    let mut without_public: Value = serde_json::from_str(&good)?;
    without_public["routes"]
        .as_array_mut()
        .context("routes")?
        .retain(|r| r["name"] != "public");
    reloadable.publish(&without_public.to_string(), port)?;
    eventually(PATIENCE, "the good update served", || {
        Ok((get("/public/map")?.status == 404).then_some(()))
    })?;
    assert_eq!(get("/admin/users")?.status, 401);
    Ok(())
}

// --- a guest that traps ---------------------------------------------------------------------------

/// A proxy-wasm module that configures fine and traps (`unreachable`) in
/// every request's headers callback.
const TRAPPING_GUEST: &str = r#"(module
  (memory (export "memory") 2)
  (global $next (mut i32) (i32.const 1024))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param $n i32) (result i32)
    (local $at i32)
    (local.set $at (global.get $next))
    (global.set $next (i32.add (global.get $next) (local.get $n)))
    (local.get $at))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) unreachable)
  (func (export "proxy_on_done") (param i32) (result i32) (i32.const 1))
  (func (export "proxy_on_log") (param i32))
  (func (export "proxy_on_delete") (param i32)))"#;

#[test]
fn a_trapping_guest_fails_closed_with_503_and_never_forwards() -> Result<()> {
    let api = DemoApi::start()?;
    let dir = tempfile::tempdir()?;
    let wasm = dir.path().join("trap.wasm");
    std::fs::write(&wasm, wat::parse_str(TRAPPING_GUEST)?)?;
    // The same bootstrap as the gateway's (FAIL_CLOSED), another module.
    let envoy = EnvoyProcess::start(&Gateway::new(&wasm, "{}", api.port))?;
    // The first request traps the VM; the later ones meet a failed plugin.
    for attempt in 0..3 {
        let reply = envoy.get("/v2/entities?type=ParkingSpot", &[])?;
        assert_eq!(reply.status, 503, "attempt {attempt}: {}", reply.body);
    }
    assert_eq!(api.request_count(), 0, "a request passed a crashed filter");
    // What tells the operator: the trap in Envoy's log, the 5xx count.
    assert!(envoy
        .log()
        .contains("Function: proxy_on_request_headers failed: Uncaught RuntimeError: unreachable"));
    assert_eq!(envoy.stat("http.citygate.downstream_rq_5xx")?, 3);
    Ok(())
}
