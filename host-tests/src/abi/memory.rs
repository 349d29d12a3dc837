//! Guest memory access. Every pointer and length comes from the guest, so
//! each access is bounds-checked and a bad one becomes
//! `InvalidMemoryAccess`, never a host panic.

use super::call::{Call, Fail};
use super::state::HostState;
use super::status::Status;
use wasmtime::{Caller, Extern, Memory};

/// The caller type every hostcall receives.
pub type Cx<'a> = Caller<'a, HostState>;

fn memory(c: &mut Cx<'_>) -> Call<Memory> {
    match c.get_export("memory") {
        Some(Extern::Memory(m)) => Ok(m),
        _ => Err(Status::InternalFailure.into()),
    }
}

fn range(ptr: u32, len: u32, size: usize) -> Call<std::ops::Range<usize>> {
    let start = ptr as usize;
    let end = start
        .checked_add(len as usize)
        .ok_or(Status::InvalidMemoryAccess)?;
    if end > size {
        return Err(Status::InvalidMemoryAccess.into());
    }
    Ok(start..end)
}

/// Copies `len` bytes at `ptr` out of guest memory.
pub fn read(c: &mut Cx<'_>, ptr: u32, len: u32) -> Call<Vec<u8>> {
    let m = memory(c)?;
    let data = m.data(&*c);
    let r = range(ptr, len, data.len())?;
    Ok(data[r].to_vec())
}

/// Reads a UTF-8 string; invalid UTF-8 is a `BadArgument`.
pub fn read_str(c: &mut Cx<'_>, ptr: u32, len: u32) -> Call<String> {
    String::from_utf8(read(c, ptr, len)?).map_err(|_| Status::BadArgument.into())
}

/// Writes `bytes` at `ptr`.
pub fn write(c: &mut Cx<'_>, ptr: u32, bytes: &[u8]) -> Call<()> {
    let m = memory(c)?;
    let data = m.data_mut(&mut *c);
    let len = u32::try_from(bytes.len()).map_err(|_| Status::InvalidMemoryAccess)?;
    let r = range(ptr, len, data.len())?;
    data[r].copy_from_slice(bytes);
    Ok(())
}

pub fn write_u32(c: &mut Cx<'_>, ptr: u32, v: u32) -> Call<()> {
    write(c, ptr, &v.to_le_bytes())
}

pub fn write_u64(c: &mut Cx<'_>, ptr: u32, v: u64) -> Call<()> {
    write(c, ptr, &v.to_le_bytes())
}

/// Fails with `InvalidMemoryAccess` unless `[ptr, ptr+len)` is in bounds;
/// used before allocating so a bad return pointer leaks nothing.
pub fn check(c: &mut Cx<'_>, ptr: u32, len: u32) -> Call<()> {
    let m = memory(c)?;
    let size = m.data_size(&*c);
    range(ptr, len, size).map(|_| ())
}

/// Allocates `size` bytes in the guest through its exported allocator
/// (`proxy_on_memory_allocate`, or `malloc` as Envoy also accepts).
pub fn alloc(c: &mut Cx<'_>, size: u32) -> Call<u32> {
    let f = c
        .get_export("proxy_on_memory_allocate")
        .or_else(|| c.get_export("malloc"))
        .and_then(Extern::into_func)
        .ok_or(Status::InternalFailure)?;
    let f = f
        .typed::<i32, i32>(&*c)
        .map_err(|_| Fail::Status(Status::InternalFailure))?;
    let p = f.call(&mut *c, size as i32).map_err(Fail::Trap)? as u32;
    if p == 0 {
        return Err(Status::InternalFailure.into());
    }
    Ok(p)
}

/// Returns `bytes` to the guest the proxy-wasm way: allocates a copy in guest
/// memory and writes its address and size to `ret_ptr` / `ret_size`. Empty
/// data is returned as a null pointer and size 0, like Envoy.
pub fn return_bytes(c: &mut Cx<'_>, bytes: &[u8], ret_ptr: u32, ret_size: u32) -> Call<()> {
    check(c, ret_ptr, 4)?;
    check(c, ret_size, 4)?;
    let size = u32::try_from(bytes.len()).map_err(|_| Status::InternalFailure)?;
    let addr = if bytes.is_empty() {
        0
    } else {
        let p = alloc(c, size)?;
        write(c, p, bytes)?;
        p
    };
    write_u32(c, ret_ptr, addr)?;
    write_u32(c, ret_size, size)
}
