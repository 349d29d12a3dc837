//! The header map the host keeps per stream and callout: Envoy's ordered,
//! lower-cased map, and the proxy-wasm wire format it crosses the ABI in.

use crate::abi::status::Status;

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
