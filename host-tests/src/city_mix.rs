//! The city-mix workload: traffic that looks like a city's, so no cache can
//! make the benchmark flatter than the city will.
//!
//! Over a thousand distinct callers of every role of the city pack (JWTs of
//! four algorithms from two issuers, application API keys, anonymous
//! callers from thousands of addresses behind one load balancer), over ten
//! thousand distinct entity and service-request paths of the pack's APIs
//! (NGSI-v2, NGSI-LD, Open311), Open311 reports whose body the policy reads,
//! and the denials a city sees: about a tenth 403, a fiftieth 401, some 429
//! from a tight bucket on three hot application keys, a few paths no route
//! serves.
//!
//! The driver writes the requests, whole HTTP/1.1 messages, into one file
//! that wrk replays (envoy/bench/city-mix.lua): every variant gets the same
//! bytes in the same order. Each kind of request says what citygate must
//! answer; before measuring, one request of every kind is sent and its
//! status checked.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::scenario::credentials::{Credentials, Tamper};
use anyhow::{ensure, Result};
use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// What the issue asks of the mix at the least.
pub const MIN_TOKENS: usize = 1000;
pub const MIN_PATHS: usize = 10_000;
/// The role the tight `hot-apps` bucket of envoy/bench/citygate-city-mix.json
/// matches.
const HOT_APP_ROLE: &str = "bench-hot-app";

/// One request of the mix.
#[derive(Debug, Clone)]
pub struct MixRequest {
    pub kind: &'static str,
    pub method: &'static str,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<(&'static str, String)>,
    /// What citygate answers; `429` kinds may also be answered 200.
    pub intended: u16,
}

/// The generated mix and what it is made of.
pub struct CityMix {
    pub requests: Vec<MixRequest>,
    /// `auth.api_keys.keys` entries for the generated application keys.
    pub api_keys: Vec<Value>,
    pub census: Census,
}

/// How varied the mix is (reported with the results).
#[derive(Debug, Clone, Serialize)]
pub struct Census {
    pub requests: usize,
    pub distinct_tokens: usize,
    pub distinct_api_keys: usize,
    pub distinct_paths: usize,
    pub distinct_client_ips: usize,
    /// Intended answers by status, in requests.
    pub intended: BTreeMap<u16, usize>,
    /// Requests by kind.
    pub kinds: BTreeMap<&'static str, usize>,
    pub with_body: usize,
}

/// A caller with a bearer token.
struct Bearer {
    subject: String,
    token: String,
}

struct AppKey {
    secret: String,
}

struct Population {
    citizens: Vec<Bearer>,
    operators: Vec<Bearer>,
    analysts: Vec<Bearer>,
    emergency: Vec<Bearer>,
    partners: Vec<Bearer>,
    expired: Vec<Bearer>,
    forged: Vec<Bearer>,
    apps: Vec<AppKey>,
    hot_apps: Vec<AppKey>,
    client_ips: Vec<String>,
}

/// Entity types of the pack's open-data list (data.json) and the personal
/// ones only some roles may read.
const OPEN_DATA_TYPES: [&str; 4] = [
    "ParkingSpot",
    "OffStreetParking",
    "TrafficFlowObserved",
    "AirQualityObserved",
];
const PERSONAL_TYPES: [&str; 2] = ["Vehicle", "Person"];
const ENTITIES_PER_TYPE: u64 = 4000;
const SERVICE_REQUESTS: u64 = 20_000;

impl Population {
    fn mint(credentials: &Credentials, now: i64) -> Result<Self> {
        let pool =
            |template: &str, prefix: &str, n: usize, tamper: Tamper| -> Result<Vec<Bearer>> {
                (0..n)
                    .map(|i| {
                        let subject = format!("{prefix}-{i:04}");
                        let token = credentials.mint_as(template, Some(&subject), tamper, now)?;
                        Ok(Bearer { subject, token })
                    })
                    .collect()
            };
        // Citizens sign in with RS256 and ES256 keys of the city's IdP.
        let mut citizens = pool("citizen", "citizen", 400, Tamper::None)?;
        citizens.extend(pool("citizen-bernd", "resident", 400, Tamper::None)?);
        let app = |prefix: &str, i: usize| AppKey {
            secret: format!(
                "cg_bench_{prefix}_{i:04}_{:016x}",
                fnv(&format!("{prefix}{i}"))
            ),
        };
        Ok(Self {
            citizens,
            operators: pool("operator", "operator", 100, Tamper::None)?,
            analysts: pool("analyst", "analyst", 100, Tamper::None)?,
            emergency: pool("emergency", "dispatcher", 50, Tamper::None)?,
            partners: pool("partner", "partner-app", 50, Tamper::None)?,
            expired: pool("citizen", "former", 50, Tamper::Expired)?,
            forged: pool("operator", "intruder", 20, Tamper::Payload)?,
            apps: (0..40).map(|i| app("app", i)).collect(),
            hot_apps: (0..3).map(|i| app("hot", i)).collect(),
            client_ips: (0..3000)
                .map(|i| format!("100.{}.{}.{}", 64 + i / 65_536, (i / 256) % 256, i % 256))
                .collect(),
        })
    }

    fn api_key_entries(&self) -> Vec<Value> {
        let entry = |prefix: &str, i: usize, key: &AppKey, roles: &[&str]| {
            json!({
                "id": format!("bench-{prefix}-{i:04}"),
                "client_id": format!("bench-{prefix}-{i:04}"),
                "sha256": hex::encode(Sha256::digest(key.secret.as_bytes())),
                "roles": roles,
                "scopes": ["open-data:read"],
            })
        };
        let apps = self
            .apps
            .iter()
            .enumerate()
            .map(|(i, k)| entry("app", i, k, &[]));
        let hot = self
            .hot_apps
            .iter()
            .enumerate()
            .map(|(i, k)| entry("hot", i, k, &[HOT_APP_ROLE]));
        apps.chain(hot).collect()
    }
}

/// A stable, seedless hash for generated key material.
fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The kinds of request, with their weights (requests per 200).
const KINDS: &[(&str, u32)] = &[
    ("citizen-service-request", 32),
    ("citizen-own-requests", 10),
    ("citizen-report", 8),
    ("citizen-open-data", 16),
    ("citizen-vehicle-denied", 8),
    ("citizen-report-for-another-denied", 2),
    ("operator-vehicle", 16),
    ("operator-ngsi-ld", 6),
    ("operator-update", 4),
    ("analyst-traffic", 8),
    ("analyst-requests", 4),
    ("analyst-update-denied", 2),
    ("emergency-vehicle", 4),
    ("partner-service-request", 4),
    ("partner-report-without-mfa-denied", 2),
    ("app-open-data", 20),
    ("app-vehicle-denied", 2),
    ("hot-app-open-data", 6),
    ("anonymous-open-data", 24),
    ("anonymous-air-quality", 6),
    ("anonymous-person-denied", 4),
    ("anonymous-requests-denied", 2),
    ("expired-token", 2),
    ("forged-token", 1),
    ("unknown-api-key", 1),
    ("no-route", 1),
];

struct Draw<'a> {
    rng: fastrand::Rng,
    people: &'a Population,
}

impl Draw<'_> {
    fn pick<'b, T>(&mut self, items: &'b [T]) -> &'b T {
        &items[self.rng.usize(..items.len())]
    }

    fn entity(&mut self, types: &[&str]) -> String {
        let kind = *self.pick(types);
        format!(
            "urn:ngsi-ld:{kind}:example-city:{:05}",
            self.rng.u64(..ENTITIES_PER_TYPE)
        )
    }

    fn service_request(&mut self) -> String {
        format!("EX-2026-{:06}", self.rng.u64(..SERVICE_REQUESTS))
    }

    fn request(&mut self, kind: &'static str) -> MixRequest {
        let people = self.people;
        let ip = self.pick(&people.client_ips).clone();
        let mut req = MixRequest {
            kind,
            method: "GET",
            path: String::new(),
            headers: vec![("x-forwarded-for".into(), ip)],
            body: None,
            intended: 200,
        };
        let bearer = |req: &mut MixRequest, who: &Bearer| {
            req.headers
                .push(("authorization".into(), format!("Bearer {}", who.token)));
        };
        let api_key = |req: &mut MixRequest, key: &str| {
            req.headers.push(("x-api-key".into(), key.to_owned()));
        };
        let report = |req: &mut MixRequest, account: &str, n: u64| {
            req.method = "POST";
            req.path = "/open311/v2/requests.json".into();
            req.body = Some((
                "application/x-www-form-urlencoded",
                format!(
                    "service_code=POTHOLE&description=pothole+near+stop+{n}&lat=48.{n:04}&long=11.5&account_id={account}"
                ),
            ));
        };
        let update = |req: &mut MixRequest, entity: String| {
            req.method = "PATCH";
            req.path = format!("/v2/entities/{entity}/attrs");
            req.body = Some((
                "application/json",
                r#"{"status":{"type":"Text","value":"inService"}}"#.to_owned(),
            ));
        };
        match kind {
            "citizen-service-request" => {
                let who = self.pick(&people.citizens);
                bearer(&mut req, who);
                req.path = format!("/open311/v2/requests/{}.json", self.service_request());
            }
            "citizen-own-requests" => {
                let who = self.pick(&people.citizens);
                bearer(&mut req, who);
                req.path = format!("/open311/v2/requests.json?account_id={}", who.subject);
            }
            "citizen-report" => {
                let who = self.pick(&people.citizens);
                bearer(&mut req, who);
                let n = self.rng.u64(..10_000);
                report(&mut req, &who.subject, n);
            }
            "citizen-open-data" => {
                let who = self.pick(&people.citizens);
                bearer(&mut req, who);
                req.path = format!("/v2/entities/{}", self.entity(&OPEN_DATA_TYPES));
            }
            "citizen-vehicle-denied" => {
                let who = self.pick(&people.citizens);
                bearer(&mut req, who);
                req.path = format!("/v2/entities/{}", self.entity(&PERSONAL_TYPES));
                req.intended = 403;
            }
            "citizen-report-for-another-denied" => {
                let who = self.pick(&people.citizens);
                let other = self.pick(&people.operators);
                bearer(&mut req, who);
                let n = self.rng.u64(..10_000);
                report(&mut req, &other.subject, n);
                req.intended = 403;
            }
            "operator-vehicle" => {
                let who = self.pick(&people.operators);
                bearer(&mut req, who);
                req.path = format!(
                    "/v2/entities/{}?options=keyValues",
                    self.entity(&PERSONAL_TYPES)
                );
            }
            "operator-ngsi-ld" => {
                let who = self.pick(&people.operators);
                bearer(&mut req, who);
                let all = [OPEN_DATA_TYPES.as_slice(), PERSONAL_TYPES.as_slice()].concat();
                req.path = format!("/ngsi-ld/v1/entities/{}", self.entity(&all));
            }
            "operator-update" => {
                let who = self.pick(&people.operators);
                bearer(&mut req, who);
                let entity = self.entity(&["Streetlight", "ParkingSpot"]);
                update(&mut req, entity);
            }
            "analyst-traffic" => {
                let who = self.pick(&people.analysts);
                bearer(&mut req, who);
                req.path = format!(
                    "/v2/entities/{}",
                    self.entity(&["TrafficFlowObserved", "Vehicle"])
                );
            }
            "analyst-requests" => {
                let who = self.pick(&people.analysts);
                bearer(&mut req, who);
                req.path = format!(
                    "/open311/v2/requests.json?status=open&page={}",
                    self.rng.u32(..500)
                );
            }
            "analyst-update-denied" => {
                let who = self.pick(&people.analysts);
                bearer(&mut req, who);
                let entity = self.entity(&["TrafficFlowObserved"]);
                update(&mut req, entity);
                req.intended = 403;
            }
            "emergency-vehicle" => {
                let who = self.pick(&people.emergency);
                bearer(&mut req, who);
                let incident = self.rng.u32(..100_000);
                req.headers
                    .push(("x-access-reason".into(), format!("incident {incident}")));
                req.path = format!("/ngsi-ld/v1/entities/{}", self.entity(&PERSONAL_TYPES));
            }
            "partner-service-request" => {
                let who = self.pick(&people.partners);
                bearer(&mut req, who);
                req.path = format!("/open311/v2/requests/{}.json", self.service_request());
            }
            "partner-report-without-mfa-denied" => {
                let who = self.pick(&people.partners);
                bearer(&mut req, who);
                let n = self.rng.u64(..10_000);
                report(&mut req, &who.subject, n);
                req.intended = 403;
            }
            "app-open-data" => {
                let key = self.pick(&people.apps).secret.clone();
                api_key(&mut req, &key);
                req.path = format!("/v2/entities/{}", self.entity(&OPEN_DATA_TYPES));
            }
            "app-vehicle-denied" => {
                let key = self.pick(&people.apps).secret.clone();
                api_key(&mut req, &key);
                req.path = format!("/v2/entities/{}", self.entity(&PERSONAL_TYPES));
                req.intended = 403;
            }
            "hot-app-open-data" => {
                let key = self.pick(&people.hot_apps).secret.clone();
                api_key(&mut req, &key);
                req.path = format!(
                    "/ngsi-ld/v1/entities/{}",
                    self.entity(&["ParkingSpot", "OffStreetParking"])
                );
                req.intended = 429;
            }
            "anonymous-open-data" => {
                req.path = format!("/v2/entities/{}", self.entity(&OPEN_DATA_TYPES));
            }
            "anonymous-air-quality" => {
                req.path = format!(
                    "/ngsi-ld/v1/entities/{}",
                    self.entity(&["AirQualityObserved"])
                );
            }
            "anonymous-person-denied" => {
                req.path = format!("/v2/entities/{}", self.entity(&PERSONAL_TYPES));
                req.intended = 403;
            }
            "anonymous-requests-denied" => {
                req.path = format!("/open311/v2/requests/{}.json", self.service_request());
                req.intended = 403;
            }
            "expired-token" => {
                let who = self.pick(&people.expired);
                bearer(&mut req, who);
                req.path = format!("/open311/v2/requests/{}.json", self.service_request());
                req.intended = 401;
            }
            "forged-token" => {
                let who = self.pick(&people.forged);
                bearer(&mut req, who);
                req.path = format!("/v2/entities/{}", self.entity(&PERSONAL_TYPES));
                req.intended = 401;
            }
            "unknown-api-key" => {
                let n = self.rng.u64(..);
                api_key(&mut req, &format!("cg_guess_{n:016x}"));
                req.path = format!("/v2/entities/{}", self.entity(&OPEN_DATA_TYPES));
                req.intended = 401;
            }
            _ => {
                // "no-route": paths the city does not expose through citygate.
                req.path = format!("/v2/registrations/{:08x}", self.rng.u32(..));
                req.intended = 404;
            }
        }
        req
    }
}

/// Generates `count` requests (deterministic for a seed; the tokens are
/// minted at `now`, valid an hour).
pub fn generate(credentials: &Credentials, count: usize, seed: u64, now: i64) -> Result<CityMix> {
    let people = Population::mint(credentials, now)?;
    let total: u32 = KINDS.iter().map(|(_, w)| w).sum();
    let mut draw = Draw {
        rng: fastrand::Rng::with_seed(seed),
        people: &people,
    };
    let mut requests = Vec::with_capacity(count);
    // Every kind at least once (the check sends one of each), then draws.
    for (kind, _) in KINDS {
        requests.push(draw.request(kind));
    }
    while requests.len() < count {
        let mut ticket = draw.rng.u32(..total);
        let kind = KINDS
            .iter()
            .find(|(_, w)| {
                if ticket < *w {
                    true
                } else {
                    ticket -= w;
                    false
                }
            })
            .map_or("no-route", |(k, _)| k);
        requests.push(draw.request(kind));
    }
    let census = census(&requests);
    ensure!(
        census.distinct_tokens >= MIN_TOKENS && census.distinct_paths >= MIN_PATHS,
        "the city mix is too narrow: {} tokens (at least {MIN_TOKENS}), {} paths (at least {MIN_PATHS}); raise --city-mix-requests",
        census.distinct_tokens,
        census.distinct_paths
    );
    Ok(CityMix {
        requests,
        api_keys: people.api_key_entries(),
        census,
    })
}

fn census(requests: &[MixRequest]) -> Census {
    let mut tokens = BTreeSet::new();
    let mut keys = BTreeSet::new();
    let mut paths = BTreeSet::new();
    let mut ips = BTreeSet::new();
    let mut intended = BTreeMap::new();
    let mut kinds = BTreeMap::new();
    for r in requests {
        paths.insert(r.path.split('?').next().unwrap_or_default());
        for (name, value) in &r.headers {
            match name.as_str() {
                "authorization" if r.intended != 401 => {
                    tokens.insert(value.as_str());
                }
                "x-api-key" if r.intended != 401 => {
                    keys.insert(value.as_str());
                }
                "x-forwarded-for" => {
                    ips.insert(value.as_str());
                }
                _ => {}
            }
        }
        *intended.entry(r.intended).or_insert(0) += 1;
        *kinds.entry(r.kind).or_insert(0) += 1;
    }
    Census {
        requests: requests.len(),
        distinct_tokens: tokens.len(),
        distinct_api_keys: keys.len(),
        distinct_paths: paths.len(),
        distinct_client_ips: ips.len(),
        intended,
        kinds,
        with_body: requests.iter().filter(|r| r.body.is_some()).count(),
    }
}

impl MixRequest {
    /// The whole HTTP/1.1 message, as wrk sends it.
    pub fn wire(&self) -> String {
        let mut text = format!(
            "{} {} HTTP/1.1\r\nHost: api.city.example\r\n",
            self.method, self.path
        );
        for (name, value) in &self.headers {
            let _ = write!(text, "{name}: {value}\r\n");
        }
        match &self.body {
            Some((content_type, body)) => {
                let _ = write!(
                    text,
                    "content-type: {content_type}\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
            }
            None => text.push_str("\r\n"),
        }
        text
    }
}

impl CityMix {
    /// The file envoy/bench/city-mix.lua reads: each message preceded by its
    /// length in bytes and a newline.
    pub fn wire_file(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for r in &self.requests {
            let wire = r.wire();
            out.extend_from_slice(format!("{}\n", wire.len()).as_bytes());
            out.extend_from_slice(wire.as_bytes());
        }
        out
    }

    /// One request of every kind, for the check before measuring.
    pub fn one_of_each(&self) -> Vec<&MixRequest> {
        let mut seen = BTreeSet::new();
        self.requests
            .iter()
            .filter(|r| seen.insert(r.kind))
            .collect()
    }
}
