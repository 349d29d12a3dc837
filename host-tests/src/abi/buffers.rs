//! `proxy_get_buffer_bytes`, `proxy_set_buffer_bytes` and
//! `proxy_get_buffer_status` over the request/response bodies, the plugin
//! and VM configuration, and callout / gRPC reply bodies.

use super::call::{finish, hostcall, Call, ENV};
use super::memory::{self, Cx};
use super::state::HostState;
use super::status::Status;
use wasmtime::Linker;

pub const HTTP_REQUEST_BODY: u32 = 0;
pub const HTTP_RESPONSE_BODY: u32 = 1;
pub const HTTP_CALL_RESPONSE_BODY: u32 = 4;
pub const GRPC_RECEIVE_BUFFER: u32 = 5;
pub const VM_CONFIGURATION: u32 = 6;
pub const PLUGIN_CONFIGURATION: u32 = 7;

fn buffer(state: &mut HostState, t: u32) -> Result<&mut Vec<u8>, Status> {
    match t {
        HTTP_REQUEST_BODY => Ok(&mut state.stream_mut().ok_or(Status::NotFound)?.request.body),
        HTTP_RESPONSE_BODY => {
            let s = state.stream_mut().ok_or(Status::NotFound)?;
            if !s.response.started {
                return Err(Status::NotFound);
            }
            Ok(&mut s.response.body)
        }
        HTTP_CALL_RESPONSE_BODY => {
            Ok(&mut state.call_response.as_mut().ok_or(Status::NotFound)?.body)
        }
        GRPC_RECEIVE_BUFFER => state.grpc_message.as_mut().ok_or(Status::NotFound),
        VM_CONFIGURATION => Ok(&mut state.settings.vm_configuration),
        PLUGIN_CONFIGURATION => Ok(&mut state.settings.plugin_configuration),
        2 | 3 | 8 => Err(Status::NotFound),
        _ => Err(Status::BadArgument),
    }
}

/// Envoy's `Buffer::copyFrom`: start 0 replaces the first `size` bytes
/// (all of them when `size` covers the buffer), start at or past the end
/// appends; any other range is refused.
pub fn splice(buf: &mut Vec<u8>, start: usize, size: usize, data: &[u8]) -> Result<(), Status> {
    if start == 0 {
        let n = size.min(buf.len());
        buf.splice(0..n, data.iter().copied());
        Ok(())
    } else if start >= buf.len() {
        buf.extend_from_slice(data);
        Ok(())
    } else {
        Err(Status::BadArgument)
    }
}

fn get_bytes(c: &mut Cx<'_>, t: u32, start: u32, max: u32, rp: u32, rs: u32) -> Call<()> {
    memory::check(c, rp, 4)?;
    memory::check(c, rs, 4)?;
    let bytes = {
        let b = buffer(c.data_mut(), t)?;
        let start = start as usize;
        if start > b.len() {
            return Err(Status::BadArgument.into());
        }
        let end = start.saturating_add(max as usize).min(b.len());
        b[start..end].to_vec()
    };
    memory::return_bytes(c, &bytes, rp, rs)
}

pub(crate) fn link(l: &mut Linker<HostState>) -> anyhow::Result<()> {
    hostcall(
        l,
        ENV,
        "proxy_get_buffer_bytes",
        |mut c: Cx<'_>, t: u32, start: u32, max: u32, rp: u32, rs: u32| {
            finish(get_bytes(&mut c, t, start, max, rp, rs))
        },
    )?;
    hostcall(
        l,
        ENV,
        "proxy_set_buffer_bytes",
        |mut c: Cx<'_>, t: u32, start: u32, size: u32, p: u32, n: u32| {
            finish((|| {
                let data = memory::read(&mut c, p, n)?;
                if matches!(t, VM_CONFIGURATION | PLUGIN_CONFIGURATION) {
                    return Err(Status::BadArgument.into());
                }
                let b = buffer(c.data_mut(), t)?;
                Ok(splice(b, start as usize, size as usize, &data)?)
            })())
        },
    )?;
    hostcall(
        l,
        ENV,
        "proxy_get_buffer_status",
        |mut c: Cx<'_>, t: u32, rl: u32, rf: u32| {
            finish((|| {
                let len = buffer(c.data_mut(), t)?.len();
                memory::write_u32(&mut c, rl, len as u32)?;
                memory::write_u32(&mut c, rf, 0)
            })())
        },
    )?;
    Ok(())
}
