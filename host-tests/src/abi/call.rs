//! The hostcall calling convention every family shares: the import module
//! name, and how a hostcall body's result becomes the i32 status the guest
//! sees (or a trap); and `hostcall`, through which every family defines
//! its imports so each call is counted by name.

use super::state::HostState;
use super::status::Status;
use wasmtime::{Caller, Linker, WasmRet, WasmTy};

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

/// A hostcall body as the families write it: a closure over the caller and
/// the wasm arguments, for any arity the ABI uses.
pub(crate) trait HostFn<Args, R>: Send + Sync + 'static {
    fn define(
        self,
        l: &mut Linker<HostState>,
        module: &str,
        name: &'static str,
    ) -> anyhow::Result<()>;
}

macro_rules! host_fn {
    ($($arg:ident $ty:ident),*) => {
        impl<F, $($ty,)* R> HostFn<($($ty,)*), R> for F
        where
            F: Fn(Caller<'_, HostState>, $($ty),*) -> R + Send + Sync + 'static,
            $($ty: WasmTy,)*
            R: WasmRet,
        {
            fn define(
                self,
                l: &mut Linker<HostState>,
                module: &str,
                name: &'static str,
            ) -> anyhow::Result<()> {
                l.func_wrap(module, name, move |mut c: Caller<'_, HostState>, $($arg: $ty),*| {
                    c.data_mut().hostcalls.count(name);
                    self(c, $($arg),*)
                })?;
                Ok(())
            }
        }
    };
}

host_fn!();
host_fn!(a A);
host_fn!(a A, b B);
host_fn!(a A, b B, c C);
host_fn!(a A, b B, c C, d D);
host_fn!(a A, b B, c C, d D, e E);
host_fn!(a A, b B, c C, d D, e E, f F1);
host_fn!(a A, b B, c C, d D, e E, f F1, g G);
host_fn!(a A, b B, c C, d D, e E, f F1, g G, h H);
host_fn!(a A, b B, c C, d D, e E, f F1, g G, h H, i I);
host_fn!(a A, b B, c C, d D, e E, f F1, g G, h H, i I, j J);
host_fn!(a A, b B, c C, d D, e E, f F1, g G, h H, i I, j J, k K);
host_fn!(a A, b B, c C, d D, e E, f F1, g G, h H, i I, j J, k K, m M);

/// Defines hostcall `name` in `linker` as `Linker::func_wrap` would, counting
/// each call in [`HostState::hostcalls`] (the one place hostcalls are
/// counted; every family defines its imports through here).
pub(crate) fn hostcall<Args, R>(
    linker: &mut Linker<HostState>,
    module: &str,
    name: &'static str,
    body: impl HostFn<Args, R>,
) -> anyhow::Result<()> {
    body.define(linker, module, name)
}
