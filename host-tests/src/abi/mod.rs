//! The proxy-wasm ABI 0.2.1 hostcalls, one module per family. Each family
//! exposes `link`, which adds its imports to the linker; [`link_all`] adds
//! every one the Rust SDK 0.2.5 (and Envoy's older ABI aliases) can import.

pub mod buffers;
pub mod callouts;
pub mod context;
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

use context::HostState;
use wasmtime::Linker;

/// The module name every proxy-wasm hostcall is imported from.
pub const ENV: &str = "env";

/// proxy-wasm status codes (`WasmResult` in Envoy), as the spec numbers them.
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    Ok = 0,
    NotFound = 1,
    BadArgument = 2,
    SerializationFailure = 3,
    ParseFailure = 4,
    BadExpression = 5,
    InvalidMemoryAccess = 6,
    Empty = 7,
    CasMismatch = 8,
    ResultMismatch = 9,
    InternalFailure = 10,
    BrokenConnection = 11,
    Unimplemented = 12,
}

/// Why a hostcall did not succeed: a status returned to the guest, or a trap
/// (the guest's allocator failed) that aborts the guest call.
#[derive(Debug)]
pub enum Fail {
    Status(Status),
    Trap(wasmtime::Error),
}

impl From<Status> for Fail {
    fn from(s: Status) -> Self {
        Fail::Status(s)
    }
}

/// Result of a hostcall body.
pub type Call<T> = Result<T, Fail>;

/// Turns a hostcall body's result into the i32 status the guest sees.
pub(crate) fn finish(r: Call<()>) -> wasmtime::Result<i32> {
    match r {
        Ok(()) => Ok(Status::Ok as i32),
        Err(Fail::Status(s)) => Ok(s as i32),
        Err(Fail::Trap(e)) => Err(e),
    }
}

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
