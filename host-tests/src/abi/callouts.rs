//! Callouts: `proxy_http_call`, `proxy_grpc_{call,stream,send,cancel,close}`,
//! `proxy_get_status` and `proxy_call_foreign_function`. Calls are recorded
//! as pending; the harness answers them (scripted or by hand) and delivers
//! `proxy_on_http_call_response` / `proxy_on_grpc_*`.

use super::call::{finish, hostcall, Call, ENV};
use super::memory::{self, Cx};
use super::state::{CalloutRequest, GrpcCallRequest, Headers, HostState};
use super::status::Status;
use wasmtime::Linker;

fn check_cluster(c: &Cx<'_>, cluster: &str) -> Call<()> {
    match &c.data().settings.known_clusters {
        Some(known) if !known.contains(cluster) => Err(Status::BadArgument.into()),
        _ => Ok(()),
    }
}

#[allow(clippy::too_many_arguments)]
fn http_call(
    c: &mut Cx<'_>,
    (up, upn): (u32, u32),
    (hp, hn): (u32, u32),
    (bp, bn): (u32, u32),
    (tp, tn): (u32, u32),
    timeout_ms: u32,
    rt: u32,
) -> Call<()> {
    let cluster = memory::read_str(c, up, upn)?;
    let headers = Headers::deserialize(&memory::read(c, hp, hn)?)?;
    let body = memory::read(c, bp, bn)?;
    let trailers = Headers::deserialize(&memory::read(c, tp, tn)?)?;
    memory::check(c, rt, 4)?;
    check_cluster(c, &cluster)?;
    // Envoy refuses a callout without these pseudo-headers.
    if [":method", ":path", ":authority"]
        .iter()
        .any(|h| headers.get(h).is_none())
    {
        return Err(Status::BadArgument.into());
    }
    let s = c.data_mut();
    let token = s.take_token();
    let context_id = s.effective;
    s.http_calls.push(CalloutRequest {
        token,
        context_id,
        cluster,
        headers,
        body,
        trailers,
        timeout_ms,
    });
    memory::write_u32(c, rt, token)
}

struct GrpcTarget {
    cluster: String,
    service: String,
    method: String,
    metadata: Headers,
}

fn grpc_target(c: &mut Cx<'_>, p: [u32; 8]) -> Call<GrpcTarget> {
    let cluster = memory::read_str(c, p[0], p[1])?;
    let service = memory::read_str(c, p[2], p[3])?;
    let method = memory::read_str(c, p[4], p[5])?;
    let metadata = Headers::deserialize(&memory::read(c, p[6], p[7])?)?;
    check_cluster(c, &cluster)?;
    Ok(GrpcTarget {
        cluster,
        service,
        method,
        metadata,
    })
}

fn open_grpc(c: &mut Cx<'_>, t: GrpcTarget, message: Option<Vec<u8>>, timeout_ms: u32) -> u32 {
    let s = c.data_mut();
    let token = s.take_token();
    let streaming = message.is_none();
    s.grpc_calls.push(GrpcCallRequest {
        token,
        context_id: s.effective,
        cluster: t.cluster,
        service: t.service,
        method: t.method,
        initial_metadata: t.metadata,
        messages: message.into_iter().collect(),
        timeout_ms,
        streaming,
    });
    token
}

fn grpc_index(c: &Cx<'_>, token: u32) -> Call<usize> {
    c.data()
        .grpc_calls
        .iter()
        .position(|g| g.token == token)
        .ok_or_else(|| Status::NotFound.into())
}

pub(crate) fn link(l: &mut Linker<HostState>) -> anyhow::Result<()> {
    hostcall(
        l,
        ENV,
        "proxy_http_call",
        |mut c: Cx<'_>,
         up: u32,
         upn: u32,
         hp: u32,
         hn: u32,
         bp: u32,
         bn: u32,
         tp: u32,
         tn: u32,
         timeout: u32,
         rt: u32| {
            finish(http_call(
                &mut c,
                (up, upn),
                (hp, hn),
                (bp, bn),
                (tp, tn),
                timeout,
                rt,
            ))
        },
    )?;
    hostcall(
        l,
        ENV,
        "proxy_grpc_call",
        |mut c: Cx<'_>,
         a: u32,
         b: u32,
         s: u32,
         sn: u32,
         m: u32,
         mn: u32,
         md: u32,
         mdn: u32,
         msg: u32,
         msgn: u32,
         timeout: u32,
         rt: u32| {
            finish((|| {
                let t = grpc_target(&mut c, [a, b, s, sn, m, mn, md, mdn])?;
                let message = memory::read(&mut c, msg, msgn)?;
                memory::check(&mut c, rt, 4)?;
                let token = open_grpc(&mut c, t, Some(message), timeout);
                memory::write_u32(&mut c, rt, token)
            })())
        },
    )?;
    hostcall(
        l,
        ENV,
        "proxy_grpc_stream",
        |mut c: Cx<'_>,
         a: u32,
         b: u32,
         s: u32,
         sn: u32,
         m: u32,
         mn: u32,
         md: u32,
         mdn: u32,
         rt: u32| {
            finish((|| {
                let t = grpc_target(&mut c, [a, b, s, sn, m, mn, md, mdn])?;
                memory::check(&mut c, rt, 4)?;
                let token = open_grpc(&mut c, t, None, 0);
                memory::write_u32(&mut c, rt, token)
            })())
        },
    )?;
    hostcall(
        l,
        ENV,
        "proxy_grpc_send",
        |mut c: Cx<'_>, token: u32, p: u32, n: u32, _end: u32| {
            finish((|| {
                let msg = memory::read(&mut c, p, n)?;
                let i = grpc_index(&c, token)?;
                c.data_mut().grpc_calls[i].messages.push(msg);
                Ok(())
            })())
        },
    )?;
    for name in ["proxy_grpc_cancel", "proxy_grpc_close"] {
        hostcall(l, ENV, name, |mut c: Cx<'_>, token: u32| {
            finish((|| {
                let i = grpc_index(&c, token)?;
                c.data_mut().grpc_calls.remove(i);
                Ok(())
            })())
        })?;
    }
    hostcall(
        l,
        ENV,
        "proxy_get_status",
        |mut c: Cx<'_>, rc: u32, rp: u32, rs: u32| {
            finish((|| {
                memory::check(&mut c, rc, 4)?;
                let (code, msg) = c.data().grpc_status.clone();
                memory::return_bytes(&mut c, &msg, rp, rs)?;
                memory::write_u32(&mut c, rc, code)
            })())
        },
    )?;
    hostcall(
        l,
        ENV,
        "proxy_call_foreign_function",
        |mut c: Cx<'_>, np: u32, nn: u32, ap: u32, an: u32, _rp: u32, _rs: u32| {
            finish((|| {
                memory::read(&mut c, np, nn)?;
                memory::read(&mut c, ap, an)?;
                Err(Status::NotFound.into())
            })())
        },
    )?;
    Ok(())
}
