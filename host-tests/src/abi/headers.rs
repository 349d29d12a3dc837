//! Header and trailer maps: `proxy_{get,set}_header_map_pairs`,
//! `proxy_{get,add,replace,remove}_header_map_value`,
//! `proxy_get_header_map_size`, over the maps of the effective context
//! (the map type and its wire format live in [`super::state::headers`]).

use super::call::{finish, hostcall, Call, ENV};
use super::memory::{self, Cx};
use super::state::{Headers, HostState};
use super::status::Status;
use wasmtime::Linker;

/// The map a `MapType` names, if the current context has it now.
pub(crate) fn map_mut(state: &mut HostState, map_type: u32) -> Result<&mut Headers, Status> {
    if map_type > 7 {
        return Err(Status::BadArgument);
    }
    match map_type {
        4 | 5 => return Ok(&mut state.grpc_metadata),
        6 | 7 => {
            let r = state.call_response.as_mut().ok_or(Status::NotFound)?;
            return Ok(if map_type == 6 {
                &mut r.headers
            } else {
                &mut r.trailers
            });
        }
        _ => {}
    }
    let s = state.stream_mut().ok_or(Status::NotFound)?;
    match map_type {
        0 => Ok(&mut s.request.headers),
        1 => Ok(&mut s.request.trailers),
        _ if !s.response.started => Err(Status::NotFound),
        2 => Ok(&mut s.response.headers),
        _ => Ok(&mut s.response.trailers),
    }
}

fn with_map<T>(c: &mut Cx<'_>, map_type: u32, f: impl FnOnce(&mut Headers) -> T) -> Call<T> {
    Ok(f(map_mut(c.data_mut(), map_type)?))
}

pub(crate) fn link(l: &mut Linker<HostState>) -> anyhow::Result<()> {
    hostcall(
        l,
        ENV,
        "proxy_get_header_map_value",
        |mut c: Cx<'_>, t: u32, kp: u32, kl: u32, rp: u32, rs: u32| {
            finish((|| {
                let key = memory::read_str(&mut c, kp, kl)?;
                let v = with_map(&mut c, t, |m| m.get(&key).map(str::to_string))?;
                let v = v.ok_or(Status::NotFound)?;
                memory::return_bytes(&mut c, v.as_bytes(), rp, rs)
            })())
        },
    )?;
    hostcall(
        l,
        ENV,
        "proxy_get_header_map_pairs",
        |mut c: Cx<'_>, t: u32, rp: u32, rs: u32| {
            finish((|| {
                let bytes = with_map(&mut c, t, |m| m.serialize())?;
                memory::return_bytes(&mut c, &bytes, rp, rs)
            })())
        },
    )?;
    hostcall(
        l,
        ENV,
        "proxy_get_header_map_size",
        |mut c: Cx<'_>, t: u32, rs: u32| {
            finish((|| {
                let n = with_map(&mut c, t, |m| m.serialize().len())?;
                memory::write_u32(&mut c, rs, n as u32)
            })())
        },
    )?;
    hostcall(
        l,
        ENV,
        "proxy_set_header_map_pairs",
        |mut c: Cx<'_>, t: u32, p: u32, s: u32| {
            finish((|| {
                let parsed = Headers::deserialize(&memory::read(&mut c, p, s)?)?;
                let lowered = parsed
                    .0
                    .into_iter()
                    .map(|(k, v)| (k.to_ascii_lowercase(), v))
                    .collect();
                with_map(&mut c, t, |m| *m = Headers(lowered))
            })())
        },
    )?;
    hostcall(
        l,
        ENV,
        "proxy_add_header_map_value",
        |mut c: Cx<'_>, t: u32, kp: u32, kl: u32, vp: u32, vl: u32| {
            finish((|| {
                let k = memory::read_str(&mut c, kp, kl)?;
                let v = memory::read_str(&mut c, vp, vl)?;
                with_map(&mut c, t, |m| m.add(&k, &v))
            })())
        },
    )?;
    hostcall(
        l,
        ENV,
        "proxy_replace_header_map_value",
        |mut c: Cx<'_>, t: u32, kp: u32, kl: u32, vp: u32, vl: u32| {
            finish((|| {
                let k = memory::read_str(&mut c, kp, kl)?;
                let v = memory::read_str(&mut c, vp, vl)?;
                with_map(&mut c, t, |m| m.replace(&k, &v))
            })())
        },
    )?;
    hostcall(
        l,
        ENV,
        "proxy_remove_header_map_value",
        |mut c: Cx<'_>, t: u32, kp: u32, kl: u32| {
            finish((|| {
                let k = memory::read_str(&mut c, kp, kl)?;
                with_map(&mut c, t, |m| m.remove(&k))
            })())
        },
    )?;
    Ok(())
}
