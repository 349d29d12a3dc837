//! Header and trailer maps: `proxy_{get,set}_header_map_pairs`,
//! `proxy_{get,add,replace,remove}_header_map_value`,
//! `proxy_get_header_map_size`, and the proxy-wasm map serialization.

use super::context::HostState;
use super::memory::{self, Cx};
use super::{finish, Call, Status, ENV};
use wasmtime::Linker;

/// An ordered header map. Names are stored lower-case, like Envoy's
/// `LowerCaseString`; repeated names are separate entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<(String, String)>);

impl Headers {
    pub fn new() -> Self {
        Headers(Vec::new())
    }

    /// The first value of `name` (case-insensitive), as Envoy returns it.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn get_all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    pub fn add(&mut self, name: &str, value: &str) {
        self.0.push((name.to_ascii_lowercase(), value.to_string()));
    }

    pub fn remove(&mut self, name: &str) {
        self.0.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
    }

    /// Replaces every `name` entry with one, or adds it.
    pub fn replace(&mut self, name: &str, value: &str) {
        self.remove(name);
        self.add(name, value);
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The proxy-wasm wire format: `u32` count, then `(u32 key_len,
    /// u32 value_len)` per pair, then each key and value NUL-terminated.
    pub fn serialize(&self) -> Vec<u8> {
        let pairs: Vec<(&[u8], &[u8])> = self
            .iter()
            .map(|(k, v)| (k.as_bytes(), v.as_bytes()))
            .collect();
        serialize_pairs(&pairs)
    }

    /// Parses the wire format; any inconsistency is a `ParseFailure`.
    pub fn deserialize(bytes: &[u8]) -> Result<Headers, Status> {
        let word = |at: usize| -> Result<usize, Status> {
            let b = bytes.get(at..at + 4).ok_or(Status::ParseFailure)?;
            Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        };
        if bytes.is_empty() {
            return Ok(Headers::new());
        }
        let n = word(0)?;
        let mut sizes_at = 4usize;
        let mut data_at = n
            .checked_mul(8)
            .and_then(|s| s.checked_add(4))
            .ok_or(Status::ParseFailure)?;
        if data_at > bytes.len() {
            return Err(Status::ParseFailure);
        }
        let mut take = |len: usize| -> Result<String, Status> {
            let end = data_at.checked_add(len).ok_or(Status::ParseFailure)?;
            let s = bytes.get(data_at..end).ok_or(Status::ParseFailure)?;
            if bytes.get(end) != Some(&0) {
                return Err(Status::ParseFailure);
            }
            data_at = end + 1;
            Ok(String::from_utf8_lossy(s).into_owned())
        };
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let (kl, vl) = (word(sizes_at)?, word(sizes_at + 4)?);
            sizes_at += 8;
            let k = take(kl)?;
            let v = take(vl)?;
            out.push((k, v));
        }
        Ok(Headers(out))
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Headers(
            iter.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}

/// Serializes byte pairs in the proxy-wasm map format.
pub fn serialize_pairs(pairs: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = (pairs.len() as u32).to_le_bytes().to_vec();
    for (k, v) in pairs {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k);
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
    out
}

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
    l.func_wrap(
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
    l.func_wrap(
        ENV,
        "proxy_get_header_map_pairs",
        |mut c: Cx<'_>, t: u32, rp: u32, rs: u32| {
            finish((|| {
                let bytes = with_map(&mut c, t, |m| m.serialize())?;
                memory::return_bytes(&mut c, &bytes, rp, rs)
            })())
        },
    )?;
    l.func_wrap(
        ENV,
        "proxy_get_header_map_size",
        |mut c: Cx<'_>, t: u32, rs: u32| {
            finish((|| {
                let n = with_map(&mut c, t, |m| m.serialize().len())?;
                memory::write_u32(&mut c, rs, n as u32)
            })())
        },
    )?;
    l.func_wrap(
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
    l.func_wrap(
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
    l.func_wrap(
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
    l.func_wrap(
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
