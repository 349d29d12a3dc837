//! The client threads: each sends its share of the mix on its own
//! keep-alive connection pool and tallies the statuses it got.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::workload::{Kind, Workload, INTENDED};

#[derive(Default)]
pub struct Tally {
    /// (kind, status) → count.
    pub statuses: BTreeMap<(String, u16), u64>,
    /// Transport failures (connection reset, timeout).
    pub errors: u64,
    pub first_failures: Vec<String>,
}

pub fn client(
    url: &str,
    load: &Workload,
    total: u64,
    deadline: Instant,
    next: &AtomicU64,
    done: &AtomicU64,
    tally: &Mutex<Tally>,
) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let mut local: BTreeMap<(String, u16), u64> = BTreeMap::new();
    let mut errors = 0u64;
    let mut failures = Vec::new();
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= total || Instant::now() > deadline {
            break;
        }
        let kind = &load.kinds[load.schedule[(i as usize) % load.schedule.len()]];
        match send(&agent, url, kind, load, i) {
            Ok((status, body)) => {
                if !INTENDED.contains(&status) && failures.len() < 10 {
                    // The body says who answered (citygate's problem type or
                    // Envoy's own text) and why.
                    let body = String::from_utf8_lossy(&body[..body.len().min(400)]).into_owned();
                    failures.push(format!(
                        "request {i} ({}): status {status}: {body}",
                        kind.name
                    ));
                }
                *local.entry((kind.name.to_string(), status)).or_default() += 1;
            }
            Err(e) => {
                errors += 1;
                if failures.len() < 10 {
                    failures.push(format!("request {i} ({}): {e:#}", kind.name));
                }
            }
        }
        done.fetch_add(1, Ordering::Relaxed);
    }
    let mut tally = tally.lock().unwrap_or_else(|p| p.into_inner());
    for (key, n) in local {
        *tally.statuses.entry(key).or_default() += n;
    }
    tally.errors += errors;
    tally.first_failures.extend(failures);
}

/// The status and body of one request of the mix.
pub fn send(
    agent: &ureq::Agent,
    url: &str,
    kind: &Kind,
    load: &Workload,
    i: u64,
) -> Result<(u16, Vec<u8>)> {
    let mut builder = ureq::http::Request::builder()
        .method(kind.method)
        .uri(format!("{url}{}", kind.path.trim_start_matches('/')));
    for (name, value) in &kind.headers {
        builder = builder.header(name, value);
    }
    let kind_index = load.schedule[(i as usize) % load.schedule.len()];
    if let Some(Some(token)) = load
        .tokens
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get(kind_index)
    {
        builder = builder.header("authorization", token);
    }
    if kind.pooled && !load.pool.is_empty() {
        // Spread the pool over the run: consecutive pooled requests hit
        // different subjects.
        let subject = (i as usize).wrapping_mul(7919) % load.pool.len();
        builder = builder.header("authorization", format!("Bearer {}", load.pool[subject]));
    }
    let mut response = agent.run(builder.body(kind.body.clone())?)?;
    let status = response.status().as_u16();
    // Read the body whole so the connection is reused.
    let body = response
        .body_mut()
        .with_config()
        .limit(16 * 1024 * 1024)
        .read_to_vec()?;
    Ok((status, body))
}
