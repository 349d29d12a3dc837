//! What a test sends through a VM: the request as the client sends it and
//! the upstream's reply, both built fluently, each optionally cut into body
//! chunks the way they arrive on the wire.

use crate::abi::properties::encode_path;
use crate::abi::state::{Connection, Headers, PeerCert};
use std::collections::VecDeque;

/// A request as the client sends it.
#[derive(Debug, Clone)]
pub struct Request {
    pub headers: Headers,
    pub body: Vec<u8>,
    /// Split the body into chunks of this size (default: one chunk).
    pub chunk_size: Option<usize>,
    pub trailers: Option<Headers>,
    pub connection: Connection,
    pub properties: Vec<(Vec<u8>, Vec<u8>)>,
}

fn set_pseudo(h: &mut Headers, name: &str, value: &str) {
    match h.0.iter_mut().find(|(k, _)| k == name) {
        Some(e) => e.1 = value.to_string(),
        None => h.0.push((name.into(), value.into())),
    }
}

pub(super) fn chunks_of(body: &[u8], size: Option<usize>) -> VecDeque<Vec<u8>> {
    match size {
        _ if body.is_empty() => VecDeque::new(),
        Some(n) if n > 0 => body.chunks(n).map(<[u8]>::to_vec).collect(),
        _ => VecDeque::from([body.to_vec()]),
    }
}

impl Request {
    pub fn new(method: &str, path: &str) -> Self {
        let headers = Headers(vec![
            (":method".into(), method.into()),
            (":path".into(), path.into()),
            (":authority".into(), "api.city.example".into()),
            (":scheme".into(), "https".into()),
        ]);
        Request {
            headers,
            body: Vec::new(),
            chunk_size: None,
            trailers: None,
            connection: Connection::default(),
            properties: Vec::new(),
        }
    }

    pub fn get(path: &str) -> Self {
        Self::new("GET", path)
    }

    pub fn post(path: &str) -> Self {
        Self::new("POST", path)
    }

    /// Adds a header; a pseudo-header (`:path`…) is replaced instead.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        if name.starts_with(':') {
            set_pseudo(&mut self.headers, name, value);
        } else {
            self.headers.add(name, value);
        }
        self
    }

    /// Replaces all headers (pseudo-headers included) with these.
    pub fn headers<K: Into<String>, V: Into<String>>(
        mut self,
        all: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.headers = all.into_iter().collect();
        self
    }

    pub fn authority(self, host: &str) -> Self {
        self.header(":authority", host)
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// A JSON body with its content type.
    pub fn json(self, body: &str) -> Self {
        self.header("content-type", "application/json").body(body)
    }

    pub fn chunk_size(mut self, n: usize) -> Self {
        self.chunk_size = Some(n);
        self
    }

    pub fn trailer(mut self, name: &str, value: &str) -> Self {
        self.trailers
            .get_or_insert_with(Headers::new)
            .add(name, value);
        self
    }

    /// The client's `ip:port`.
    pub fn source(mut self, addr: &str) -> Self {
        self.connection.source = addr.into();
        self
    }

    pub fn destination(mut self, addr: &str) -> Self {
        self.connection.destination = addr.into();
        self
    }

    pub fn protocol(mut self, p: &str) -> Self {
        self.connection.protocol = p.into();
        self
    }

    /// Marks the connection mTLS with this verified peer certificate.
    pub fn mtls(mut self, cert: PeerCert) -> Self {
        self.connection.peer_cert = Some(cert);
        self
    }

    /// A property visible to this stream only, by dotted path.
    pub fn property(mut self, dotted: &str, value: impl Into<Vec<u8>>) -> Self {
        self.properties.push((encode_path(dotted), value.into()));
        self
    }
}

/// The upstream's reply.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub status: u16,
    pub headers: Headers,
    pub body: Vec<u8>,
    pub chunk_size: Option<usize>,
    pub trailers: Option<Headers>,
}

impl Upstream {
    pub fn new(status: u16) -> Self {
        Upstream {
            status,
            headers: Headers::new(),
            body: Vec::new(),
            chunk_size: None,
            trailers: None,
        }
    }

    pub fn ok() -> Self {
        Self::new(200)
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.add(name, value);
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    pub fn json(self, body: &str) -> Self {
        self.header("content-type", "application/json").body(body)
    }

    pub fn chunk_size(mut self, n: usize) -> Self {
        self.chunk_size = Some(n);
        self
    }

    pub fn trailer(mut self, name: &str, value: &str) -> Self {
        self.trailers
            .get_or_insert_with(Headers::new)
            .add(name, value);
        self
    }
}
