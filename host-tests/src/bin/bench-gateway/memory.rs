//! Memory after many requests with many distinct rate-limit keys.
//!
//! Envoy: its resident set before and after the run (a citygate Envoy with
//! one worker; the keys live in proxy-wasm shared data, i.e. Envoy's heap).
//! Linear memory of one VM: Envoy does not report it, so the same `.wasm`,
//! configuration and request sequence run in citygate's wasmtime host, and
//! the VM's memory size is read there.

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Result};
use citygate_host::{Clock, Plugin, Request, RequestOutcome, SharedStore, Upstream, Vm};
use serde::Serialize;

/// The header the memory run keys its extra rate-limit rule on.
pub const KEY_HEADER: &str = "x-bench-key";
const PAGE: u32 = 64 * 1024;

#[derive(Debug, Clone, Serialize)]
pub struct LinearMemory {
    pub requests: u64,
    pub keys: u64,
    pub bytes_after_start: u64,
    pub bytes_after_run: u64,
    pub overflow: u64,
    pub limited: u64,
}

/// The distinct key of request `i` (keys repeat every `keys` requests).
pub fn key(i: u64, keys: u64) -> String {
    format!("device-{:07}", i % keys)
}

/// Runs `requests` requests with `keys` distinct keys through one VM and
/// returns its linear memory before and after.
pub fn wasmtime_linear_memory(
    wasm: &Path,
    config: &str,
    env: &[(String, String)],
    token: &str,
    requests: u64,
    keys: u64,
) -> Result<LinearMemory> {
    let plugin = Plugin::load(wasm)?;
    let store = SharedStore::new();
    let clock = Clock::starting_now();
    let mut builder = plugin.vm().config(config).shared(&store).clock(&clock);
    for (name, value) in env {
        builder = builder.env(name.clone(), value.clone());
    }
    let mut vm = builder.start()?;
    let bytes_after_start = memory_bytes(&mut vm)?;
    let bearer = format!("Bearer {token}");
    let started = Instant::now();
    for i in 0..requests {
        let request = Request::get("/v2/entities/urn:ngsi-ld:Vehicle:example-city:bus-001")
            .header("authorization", &bearer)
            .header(KEY_HEADER, &key(i, keys));
        let mut exchange = vm.send(request)?;
        match exchange.outcome() {
            RequestOutcome::Forwarded(_) => {
                exchange.respond(Upstream::ok())?;
            }
            other => bail!("request {i} was not forwarded: {other:?}"),
        }
        if (i + 1) % 100_000 == 0 {
            eprintln!(
                "  wasmtime: {} requests, linear memory {} KiB ({:.0} s)",
                i + 1,
                memory_bytes(&mut vm)? / 1024,
                started.elapsed().as_secs_f64()
            );
        }
    }
    eprintln!(
        "  wasmtime: {requests} requests in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(LinearMemory {
        requests,
        keys,
        bytes_after_start,
        bytes_after_run: memory_bytes(&mut vm)?,
        overflow: vm.metric("citygate_ratelimit_overflow").unwrap_or(0),
        limited: vm.metric("citygate_ratelimit_limited").unwrap_or(0),
    })
}

/// The guest's linear memory size: the host exposes reads only, so find the
/// last readable 64 KiB page by bisection.
fn memory_bytes(vm: &mut Vm) -> Result<u64> {
    let guest = vm.guest();
    let readable = |guest: &mut citygate_host::runtime::Guest, pages: u32| {
        let last = u64::from(pages) * u64::from(PAGE);
        pages == 0 || u32::try_from(last - 1).is_ok_and(|at| guest.read_memory(at, 1).is_ok())
    };
    let (mut low, mut high) = (0u32, 65_536u32);
    while low < high {
        let mid = low + (high - low).div_ceil(2);
        if readable(guest, mid) {
            low = mid;
        } else {
            high = mid - 1;
        }
    }
    Ok(u64::from(low) * u64::from(PAGE))
}
