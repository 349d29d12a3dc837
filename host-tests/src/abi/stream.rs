//! Stream control: `proxy_send_local_response`, `proxy_continue_stream`,
//! `proxy_close_stream`, the ABI 0.1 aliases `proxy_continue_request`,
//! `proxy_continue_response`, `proxy_clear_route_cache`, and
//! `proxy_set_effective_context`.

use super::call::{finish, hostcall, Call, ENV};
use super::memory::{self, Cx};
use super::state::{GuestLocalReply, Headers, HostState};
use super::status::Status;
use wasmtime::Linker;

pub const STREAM_REQUEST: u32 = 0;
pub const STREAM_RESPONSE: u32 = 1;

fn continue_stream(c: &mut Cx<'_>, which: u32) -> Call<()> {
    let s = c.data_mut().stream_mut().ok_or(Status::NotFound)?;
    match which {
        STREAM_REQUEST => s.continue_request = true,
        STREAM_RESPONSE => s.continue_response = true,
        2 | 3 => return Err(Status::Unimplemented.into()),
        _ => return Err(Status::BadArgument.into()),
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn send_local_response(
    c: &mut Cx<'_>,
    status: u32,
    (dp, dn): (u32, u32),
    (bp, bn): (u32, u32),
    (hp, hn): (u32, u32),
    grpc_status: i32,
) -> Call<()> {
    let details = memory::read_str(c, dp, dn)?;
    let body = memory::read(c, bp, bn)?;
    let headers = Headers::deserialize(&memory::read(c, hp, hn)?)?;
    let status = u16::try_from(status).map_err(|_| Status::BadArgument)?;
    if !(100..=599).contains(&status) {
        return Err(Status::BadArgument.into());
    }
    let s = c.data_mut().stream_mut().ok_or(Status::NotFound)?;
    // Only the first local reply reaches the client; Envoy ignores later ones.
    if s.local_reply.is_none() {
        s.local_reply = Some(GuestLocalReply {
            status,
            headers,
            body,
            grpc_status: (grpc_status >= 0).then_some(grpc_status),
            details,
        });
    }
    Ok(())
}

pub(crate) fn link(l: &mut Linker<HostState>) -> anyhow::Result<()> {
    hostcall(
        l,
        ENV,
        "proxy_send_local_response",
        |mut c: Cx<'_>,
         status: u32,
         dp: u32,
         dn: u32,
         bp: u32,
         bn: u32,
         hp: u32,
         hn: u32,
         grpc: i32| {
            finish(send_local_response(
                &mut c,
                status,
                (dp, dn),
                (bp, bn),
                (hp, hn),
                grpc,
            ))
        },
    )?;
    hostcall(l, ENV, "proxy_continue_stream", |mut c: Cx<'_>, t: u32| {
        finish(continue_stream(&mut c, t))
    })?;
    hostcall(l, ENV, "proxy_continue_request", |mut c: Cx<'_>| {
        finish(continue_stream(&mut c, STREAM_REQUEST))
    })?;
    hostcall(l, ENV, "proxy_continue_response", |mut c: Cx<'_>| {
        finish(continue_stream(&mut c, STREAM_RESPONSE))
    })?;
    hostcall(l, ENV, "proxy_close_stream", |mut c: Cx<'_>, t: u32| {
        finish((|| {
            if t > 3 {
                return Err(Status::BadArgument.into());
            }
            let s = c.data_mut().stream_mut().ok_or(Status::NotFound)?;
            s.closed = true;
            Ok(())
        })())
    })?;
    hostcall(l, ENV, "proxy_clear_route_cache", |mut c: Cx<'_>| {
        finish((|| {
            let s = c.data_mut().stream_mut().ok_or(Status::NotFound)?;
            s.route_cache_cleared += 1;
            Ok(())
        })())
    })?;
    hostcall(
        l,
        ENV,
        "proxy_set_effective_context",
        |mut c: Cx<'_>, ctx: u32| {
            finish((|| {
                let s = c.data_mut();
                if ctx != s.root_context_id && !s.streams.contains_key(&ctx) {
                    return Err(Status::BadArgument.into());
                }
                s.effective = ctx;
                Ok(())
            })())
        },
    )?;
    Ok(())
}
