//! The proxy-wasm ABI 0.2.1 hostcalls, one module per family, over the
//! plain data in [`state`]. Each family exposes `link`, which adds its
//! imports to the linker through `call::hostcall` (so every call is
//! counted by name, per guest callback); [`link_all`] adds every one the
//! Rust SDK 0.2.5 (and Envoy's older ABI aliases) can import.
//!
//! Imports run one way: the families import [`call`], [`memory`],
//! [`state`] and [`status`]; `state` imports only `status`; nothing below
//! imports this module or a family.

pub mod call;
pub mod state;
pub mod status;

pub mod buffers;
pub mod callouts;
pub mod done;
pub mod headers;
pub mod logging;
pub mod memory;
pub mod metrics;
pub mod properties;
pub mod shared_data;
pub mod shared_queue;
pub mod stream;
pub mod timers;

pub use call::{Call, Fail, ENV};
pub use status::Status;

use state::HostState;
use wasmtime::Linker;

/// Adds every proxy-wasm hostcall to `linker`.
pub fn link_all(linker: &mut Linker<HostState>) -> anyhow::Result<()> {
    logging::link(linker)?;
    headers::link(linker)?;
    buffers::link(linker)?;
    properties::link(linker)?;
    shared_data::link(linker)?;
    shared_queue::link(linker)?;
    metrics::link(linker)?;
    timers::link(linker)?;
    callouts::link(linker)?;
    stream::link(linker)?;
    done::link(linker)?;
    Ok(())
}
