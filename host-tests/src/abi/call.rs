//! The hostcall calling convention every family shares: the import module
//! name, and how a hostcall body's result becomes the i32 status the guest
//! sees (or a trap).

use super::status::Status;

/// The module name every proxy-wasm hostcall is imported from.
pub const ENV: &str = "env";

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
