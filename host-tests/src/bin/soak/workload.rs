//! The mix of requests the soak sends: one kind per role, profile and
//! denial, weighted so the many-subjects pool dominates (it is what pushes
//! the rate limiter to its key cap), with demo tokens re-minted while the
//! run lasts.

use std::sync::RwLock;

use anyhow::{Context, Result};
use citygate_host::env_file::read_env_file;
use citygate_host::scenario::credentials::{Credentials, Tamper};
use citygate_host::wasm_build::workspace_root;
use serde_json::json;

/// Statuses the mix may produce; anything else fails the run.
pub const INTENDED: &[u16] = &[200, 201, 400, 401, 403, 404, 429];

/// One kind of request in the mix.
#[derive(Debug, Clone)]
pub struct Kind {
    pub name: &'static str,
    pub method: &'static str,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// A demo token (name, damage) as the bearer; re-minted while the run
    /// lasts, since demo tokens live an hour.
    bearer: Option<(&'static str, Tamper)>,
    /// A token of the subject pool as the bearer instead.
    pub pooled: bool,
}

fn kind(name: &'static str, method: &'static str, path: &str, headers: &[(&str, &str)]) -> Kind {
    Kind {
        name,
        method,
        path: path.to_string(),
        headers: headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
        body: Vec::new(),
        bearer: None,
        pooled: false,
    }
}

fn with_token(mut kind: Kind, name: &'static str, tamper: Tamper) -> Kind {
    kind.bearer = Some((name, tamper));
    kind
}

pub struct Workload {
    pub kinds: Vec<Kind>,
    /// Weighted schedule: request `i` is `kinds[schedule[i % len]]`.
    pub schedule: Vec<usize>,
    pub pool: Vec<String>,
    /// `Bearer …` of each kind with a demo token (`None` otherwise).
    pub tokens: RwLock<Vec<Option<String>>>,
}

impl Workload {
    pub fn mint(&self, credentials: &Credentials, now: i64) -> Result<()> {
        let tokens = self
            .kinds
            .iter()
            .map(|k| match k.bearer {
                Some((name, tamper)) => Ok(Some(format!(
                    "Bearer {}",
                    credentials.mint(name, tamper, now)?
                ))),
                None => Ok(None),
            })
            .collect::<Result<Vec<_>>>()?;
        *self.tokens.write().unwrap_or_else(|p| p.into_inner()) = tokens;
        Ok(())
    }
}

pub fn workload(credentials: &Credentials, subjects: usize, now: i64) -> Result<Workload> {
    let api_key = credentials.api_key("parking-app")?.to_string();
    let item = "/open311/v2/requests/EX-2025-000102.json";
    let mut post = kind(
        "pool-write",
        "POST",
        "/open311/v2/requests.json",
        &[("content-type", "application/x-www-form-urlencoded")],
    );
    post.body = b"service_code=001&description=pothole".to_vec();
    post.pooled = true;
    let mut pool_read = kind("pool-read", "GET", item, &[]);
    pool_read.pooled = true;
    let kinds = vec![
        kind(
            "anon-open-data",
            "GET",
            "/v2/entities?type=ParkingSpot&options=keyValues",
            &[],
        ),
        kind("anon-person", "GET", "/v2/entities?type=Person", &[]),
        kind(
            "api-key",
            "GET",
            "/v2/entities?type=ParkingSpot",
            &[("x-api-key", &api_key)],
        ),
        with_token(
            kind("operator", "GET", "/v2/entities?type=Vehicle", &[]),
            "operator",
            Tamper::None,
        ),
        with_token(
            kind("analyst", "GET", "/open311/v2/requests.json", &[]),
            "analyst",
            Tamper::None,
        ),
        with_token(kind("citizen", "GET", item, &[]), "citizen", Tamper::None),
        with_token(
            kind(
                "emergency",
                "GET",
                "/ngsi-ld/v1/entities?type=Vehicle",
                &[("x-access-reason", "soak")],
            ),
            "emergency",
            Tamper::None,
        ),
        with_token(
            kind("emergency-no-reason", "GET", "/v2/entities", &[]),
            "emergency",
            Tamper::None,
        ),
        with_token(
            kind("forged-token", "GET", "/v2/entities", &[]),
            "operator",
            Tamper::Payload,
        ),
        kind("encoded-slash", "GET", "/v2%2Fentities", &[]),
        kind("no-route", "GET", "/admin", &[]),
        pool_read,
        post,
    ];
    // Weights: the subject pool dominates (keys), the rest covers every role,
    // profile and denial.
    let weights = [3, 1, 3, 3, 2, 2, 2, 1, 1, 1, 1, 8, 4];
    let schedule = weights
        .iter()
        .enumerate()
        .flat_map(|(i, w)| std::iter::repeat_n(i, *w))
        .collect();
    let secret = credentials_secret()?;
    let pool = (0..subjects)
        .map(|i| partner_token(&secret, &format!("soak-subject-{i}"), now))
        .collect::<Result<Vec<_>>>()?;
    let workload = Workload {
        kinds,
        schedule,
        pool,
        tokens: RwLock::new(Vec::new()),
    };
    workload.mint(credentials, now)?;
    Ok(workload)
}

fn credentials_secret() -> Result<String> {
    let env = read_env_file(&workspace_root().join("policies/config/demo.env"))?;
    env.get("CITYGATE_PARTNER_HS256_SECRET")
        .cloned()
        .context("demo.env has no CITYGATE_PARTNER_HS256_SECRET")
}

/// A `partner` (HS256) token of the demo: role citizen, no MFA.
fn partner_token(secret: &str, subject: &str, now: i64) -> Result<String> {
    use jsonwebtoken::{encode, EncodingKey, Header};
    let claims = json!({
        "iss": "https://partner.city.example",
        "aud": "citygate",
        "sub": subject,
        "iat": now,
        "exp": now + 6 * 3600,
        "realm_access": { "roles": ["citizen"] },
        "amr": ["pwd"],
    });
    Ok(encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )?)
}
