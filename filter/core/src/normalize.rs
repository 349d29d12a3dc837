//! First stage: turns what arrived into the one view every later stage uses.
//! Policies, routes and limits only ever see the normalized path, so `/./admin`,
//! `//admin` and `/%61dmin` cannot slip past a rule written for `/admin`.

use std::net::{IpAddr, SocketAddr};

use crate::config::GatewayConfig;

/// What the shell read from the proxy for one request.
#[derive(Debug, Clone, Default)]
pub struct RawRequest {
    /// All request headers as received, pseudo-headers included.
    pub headers: Vec<(String, String)>,
    pub connection: ConnectionInfo,
}

#[derive(Debug, Clone, Default)]
pub struct ConnectionInfo {
    /// `source.address` (`ip:port`), the socket peer.
    pub source: Option<String>,
    /// `destination.address` (`ip:port`).
    pub destination: Option<String>,
    /// `request.protocol` (`HTTP/1.1`, `HTTP/2`).
    pub protocol: Option<String>,
    /// The client certificate, when the connection verified one.
    pub peer_certificate: Option<PeerCertificate>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerCertificate {
    pub uri_san: Option<String>,
    pub dns_san: Option<String>,
    pub subject: Option<String>,
}

/// The normalized request.
#[derive(Debug, Clone, Default)]
pub struct RequestView {
    pub id: String,
    pub method: String,
    /// `:path` exactly as received (for logs, never for decisions).
    pub raw_path: String,
    /// Percent-decoded once, dot segments removed, slashes folded, no query.
    pub path: String,
    /// The query string as received, without `?`.
    pub raw_query: String,
    pub query: Vec<(String, String)>,
    pub host: String,
    pub scheme: String,
    pub protocol: String,
    /// Lower-cased names, in arrival order, pseudo-headers included.
    pub headers: Vec<(String, String)>,
    /// The client after the trusted-hops rule.
    pub client_ip: Option<IpAddr>,
    /// The addresses that rule trusted, from `client_ip` to the socket peer
    /// (the trusted proxies between them); what the client itself claimed
    /// is not in it.
    pub client_ip_chain: Vec<IpAddr>,
    pub source: Option<SocketAddr>,
    pub destination: Option<SocketAddr>,
    pub peer_certificate: Option<PeerCertificate>,
}

impl RequestView {
    /// The first value of a header (names are lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The `:path` to send upstream: the normalized path, re-encoded, with the
    /// original query. Upstream sees what the policy judged, nothing else.
    pub fn upstream_path(&self) -> String {
        let mut out = encode_path(&self.path);
        if !self.raw_query.is_empty() {
            out.push('?');
            out.push_str(&self.raw_query);
        }
        out
    }
}

/// Why a request cannot be normalized safely (answered with 400).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NormalizeError {
    MissingPseudoHeader(&'static str),
    PathNotAbsolute,
    BadPercentEncoding,
    EncodedSeparator,
    ControlCharacter,
    InvalidUtf8,
    PathParameter,
    Fragment,
}

impl NormalizeError {
    /// A client-safe explanation (never echoes the path).
    pub fn detail(&self) -> &'static str {
        match self {
            Self::MissingPseudoHeader(_) => "the request lacks a method or path",
            Self::PathNotAbsolute => "the path must start with `/`",
            Self::BadPercentEncoding => "the path has an invalid percent-encoding",
            Self::EncodedSeparator => "the path encodes a path separator (`%2F` or `%5C`)",
            Self::ControlCharacter => "the path contains a control character",
            Self::InvalidUtf8 => "the decoded path is not valid UTF-8",
            Self::PathParameter => "path parameters (`;`) are not accepted",
            Self::Fragment => "a fragment (`#`) is not accepted in the request target",
        }
    }
}

/// Headers a client may not set: citygate's own namespace (identity forwarded
/// upstream) and method overrides an upstream might honour behind the policy.
pub const SPOOFABLE_HEADER_PREFIX: &str = "x-citygate-";
pub const METHOD_OVERRIDE_HEADERS: &[&str] = &[
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

pub fn normalize(raw: &RawRequest, gateway: &GatewayConfig) -> Result<RequestView, NormalizeError> {
    let headers: Vec<(String, String)> = raw
        .headers
        .iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
        .collect();
    let find = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let method = find(":method")
        .filter(|m| !m.is_empty())
        .ok_or(NormalizeError::MissingPseudoHeader(":method"))?
        .to_ascii_uppercase();
    let raw_path = find(":path")
        .filter(|p| !p.is_empty())
        .ok_or(NormalizeError::MissingPseudoHeader(":path"))?;
    let (path_part, raw_query) = match raw_path.split_once('?') {
        Some((p, q)) => (p, q.to_string()),
        None => (raw_path.as_str(), String::new()),
    };
    if raw_path.contains('#') {
        return Err(NormalizeError::Fragment);
    }
    let path = normalize_path(path_part)?;
    let source = raw.connection.source.as_deref().and_then(parse_socket_addr);
    let destination = raw
        .connection
        .destination
        .as_deref()
        .and_then(parse_socket_addr);
    // Repeated x-forwarded-for headers are one list (RFC 9110 §5.3): the
    // first alone could be the client's own, with the entry a trusted proxy
    // appended in a later one.
    let forwarded_for: Vec<&str> = headers
        .iter()
        .filter(|(n, _)| n == "x-forwarded-for")
        .map(|(_, v)| v.as_str())
        .collect();
    let client = client_address(
        (!forwarded_for.is_empty())
            .then(|| forwarded_for.join(","))
            .as_deref(),
        source.map(|s| s.ip()),
        gateway.trusted_hops,
    );
    Ok(RequestView {
        id: find("x-request-id").unwrap_or_default(),
        method,
        query: parse_query(&raw_query),
        raw_query,
        raw_path: raw_path.clone(),
        path,
        host: find(":authority")
            .or_else(|| find("host"))
            .unwrap_or_default(),
        scheme: find(":scheme").unwrap_or_else(|| "http".to_string()),
        protocol: raw.connection.protocol.clone().unwrap_or_default(),
        client_ip: client.ip,
        client_ip_chain: client.chain,
        source,
        destination,
        peer_certificate: raw.connection.peer_certificate.clone(),
        headers,
    })
}

/// Percent-decodes once, refuses what would be ambiguous to an upstream, then
/// folds slashes and removes dot segments (RFC 3986 §5.2.4).
pub fn normalize_path(path: &str) -> Result<String, NormalizeError> {
    if !path.starts_with('/') {
        return Err(NormalizeError::PathNotAbsolute);
    }
    let decoded = percent_decode_path(path)?;
    if decoded.contains(';') {
        return Err(NormalizeError::PathParameter);
    }
    let mut segments: Vec<&str> = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    let keeps_trailing_slash =
        decoded.ends_with('/') || decoded.ends_with("/.") || decoded.ends_with("/..");
    if out.is_empty() || (keeps_trailing_slash && !segments.is_empty()) {
        out.push('/');
    }
    Ok(out)
}

fn percent_decode_path(path: &str) -> Result<String, NormalizeError> {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .ok_or(NormalizeError::BadPercentEncoding)?;
            let text = std::str::from_utf8(hex).map_err(|_| NormalizeError::BadPercentEncoding)?;
            let value =
                u8::from_str_radix(text, 16).map_err(|_| NormalizeError::BadPercentEncoding)?;
            if value == b'/' || value == b'\\' {
                return Err(NormalizeError::EncodedSeparator);
            }
            out.push(value);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    if out.iter().any(|b| *b < 0x20 || *b == 0x7f) {
        return Err(NormalizeError::ControlCharacter);
    }
    if out.contains(&b'\\') {
        return Err(NormalizeError::EncodedSeparator);
    }
    // Overlong UTF-8 (`%C0%AE` for `.`) is invalid UTF-8 and refused here.
    let path = String::from_utf8(out).map_err(|_| NormalizeError::InvalidUtf8)?;
    // C1 controls (U+0080–U+009F, e.g. NEL, a line break to some log
    // readers) are controls too (found by fuzzing the request stage).
    if path.chars().any(char::is_control) {
        return Err(NormalizeError::ControlCharacter);
    }
    Ok(path)
}

/// Characters that must stay percent-encoded in a path sent upstream.
const PATH_ENCODE: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'|')
    .add(b'\\')
    .add(b'^')
    .add(b'[')
    .add(b']');

fn encode_path(path: &str) -> String {
    percent_encoding::utf8_percent_encode(path, PATH_ENCODE).to_string()
}

/// `a=1&b=x+y` → pairs, decoded like an HTML form (`+` is a space).
pub fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode_form(k), decode_form(v))
        })
        .collect()
}

pub fn decode_form(text: &str) -> String {
    let spaced = text.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8_lossy()
        .into_owned()
}

fn parse_socket_addr(text: &str) -> Option<SocketAddr> {
    text.parse().ok()
}

/// The client under the trusted-hops rule, and the addresses the rule
/// trusted to find it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientAddress {
    pub ip: Option<IpAddr>,
    /// From `ip` to the socket peer.
    pub chain: Vec<IpAddr>,
}

/// The client address under the trusted-hops rule: the chain is the
/// `x-forwarded-for` entries followed by the socket peer; with N trusted
/// proxies in front of Envoy the client is the (N+1)-th entry from the right.
/// Entries left of that are the client's own claims and are ignored.
pub fn client_address(xff: Option<&str>, peer: Option<IpAddr>, trusted_hops: u8) -> ClientAddress {
    let peer_only = ClientAddress {
        ip: peer,
        chain: peer.into_iter().collect(),
    };
    if trusted_hops == 0 {
        return peer_only;
    }
    let mut chain: Vec<Option<IpAddr>> = xff
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<IpAddr>().ok())
        .collect();
    // Envoy with `use_remote_address` already appended the peer itself.
    if chain.last().copied().flatten() != peer {
        chain.push(peer);
    }
    let hops = usize::from(trusted_hops);
    if chain.len() <= hops {
        // Fewer hops than configured: the request bypassed a trusted proxy,
        // so nothing but the socket peer is trustworthy.
        return peer_only;
    }
    let trusted = &chain[chain.len() - 1 - hops..];
    match trusted.first().copied().flatten() {
        Some(ip) => ClientAddress {
            ip: Some(ip),
            chain: trusted.iter().flatten().copied().collect(),
        },
        // Garbage where the client should be: the peer, never a guess.
        None => peer_only,
    }
}

/// [`client_address`]'s client alone.
pub fn client_ip(xff: Option<&str>, peer: Option<IpAddr>, trusted_hops: u8) -> Option<IpAddr> {
    client_address(xff, peer, trusted_hops).ip
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, path: &str) -> RawRequest {
        RawRequest {
            headers: vec![
                (":method".into(), method.into()),
                (":path".into(), path.into()),
                (":authority".into(), "api.city.example".into()),
                (":scheme".into(), "https".into()),
                ("X-Request-Id".into(), "r-1".into()),
            ],
            connection: ConnectionInfo {
                source: Some("192.0.2.10:5555".into()),
                ..Default::default()
            },
        }
    }

    #[test]
    fn bypass_spellings_of_admin_normalize_to_admin_or_are_refused() {
        for (input, expected) in [
            ("/admin", Ok("/admin")),
            ("//admin", Ok("/admin")),
            ("/./admin", Ok("/admin")),
            ("/public/../admin", Ok("/admin")),
            ("/%61dmin", Ok("/admin")),
            ("/%2e/admin", Ok("/admin")),
            ("/public/%2e%2e/admin", Ok("/admin")),
            ("/../../admin", Ok("/admin")),
            ("/admin/", Ok("/admin/")),
            ("/admin%2F", Err(NormalizeError::EncodedSeparator)),
            ("/admin%5cx", Err(NormalizeError::EncodedSeparator)),
            ("/admin\\x", Err(NormalizeError::EncodedSeparator)),
            ("/admin;x", Err(NormalizeError::PathParameter)),
            ("/admin%3bx", Err(NormalizeError::PathParameter)),
            ("/%C0%AEadmin", Err(NormalizeError::InvalidUtf8)),
            ("/admin%00", Err(NormalizeError::ControlCharacter)),
            ("/admin%C2%85x", Err(NormalizeError::ControlCharacter)),
            ("/admin\u{8b}", Err(NormalizeError::ControlCharacter)),
            ("/admin%zz", Err(NormalizeError::BadPercentEncoding)),
            ("/admin%4", Err(NormalizeError::BadPercentEncoding)),
            ("admin", Err(NormalizeError::PathNotAbsolute)),
        ] {
            assert_eq!(
                normalize_path(input).as_deref().map_err(Clone::clone),
                expected,
                "{input}"
            );
        }
    }

    #[test]
    fn view_carries_method_query_and_lowercase_headers() {
        let view = normalize(
            &request("get", "/v2//entities?type=Parking+Spot&limit=5"),
            &GatewayConfig::default(),
        )
        .unwrap();
        assert_eq!(view.method, "GET");
        assert_eq!(view.path, "/v2/entities");
        assert_eq!(view.raw_path, "/v2//entities?type=Parking+Spot&limit=5");
        assert_eq!(view.query_param("type"), Some("Parking Spot"));
        assert_eq!(view.header("x-request-id"), Some("r-1"));
        assert_eq!(view.id, "r-1");
        assert_eq!(view.host, "api.city.example");
        assert_eq!(
            view.upstream_path(),
            "/v2/entities?type=Parking+Spot&limit=5"
        );
    }

    #[test]
    fn upstream_path_reencodes_what_was_decoded() {
        let view = normalize(&request("GET", "/a%20b/%3F"), &GatewayConfig::default()).unwrap();
        assert_eq!(view.path, "/a b/?");
        assert_eq!(view.upstream_path(), "/a%20b/%3F");
    }

    #[test]
    fn missing_path_is_refused() {
        let mut raw = request("GET", "/");
        raw.headers.retain(|(n, _)| n != ":path");
        assert_eq!(
            normalize(&raw, &GatewayConfig::default()).unwrap_err(),
            NormalizeError::MissingPseudoHeader(":path")
        );
    }

    #[test]
    fn repeated_forwarded_for_headers_are_one_list() {
        let mut raw = request("GET", "/v2/entities");
        raw.headers
            .push(("X-Forwarded-For".into(), "6.6.6.6".into()));
        raw.headers
            .push(("x-forwarded-for".into(), "203.0.113.7".into()));
        let gateway = GatewayConfig {
            trusted_hops: 1,
            ..GatewayConfig::default()
        };
        let view = normalize(&raw, &gateway).unwrap();
        assert_eq!(view.client_ip, "203.0.113.7".parse().ok());
    }

    #[test]
    fn trusted_hops_rule() {
        let peer: Option<IpAddr> = "10.0.0.1".parse().ok();
        let ip = |s: &str| s.parse::<IpAddr>().ok();
        // No trusted hop: x-forwarded-for is ignored entirely.
        assert_eq!(client_ip(Some("6.6.6.6"), peer, 0), peer);
        // One trusted proxy (the peer): its claim about the client is used...
        assert_eq!(client_ip(Some("203.0.113.7"), peer, 1), ip("203.0.113.7"));
        // ...but what the client itself prepended is not.
        assert_eq!(
            client_ip(Some("6.6.6.6, 203.0.113.7"), peer, 1),
            ip("203.0.113.7")
        );
        // Envoy already appended the peer.
        assert_eq!(
            client_ip(Some("203.0.113.7, 10.0.0.1"), peer, 1),
            ip("203.0.113.7")
        );
        // Too few hops: fall back to the peer.
        assert_eq!(client_ip(None, peer, 2), peer);
        // Garbage where the client should be: the peer, never a guess.
        assert_eq!(client_ip(Some("not-an-ip"), peer, 1), peer);
    }

    #[test]
    fn the_chain_holds_the_client_and_the_trusted_proxies_never_a_claim() {
        let peer: Option<IpAddr> = "10.0.0.1".parse().ok();
        let ips =
            |list: &[&str]| -> Vec<IpAddr> { list.iter().filter_map(|s| s.parse().ok()).collect() };
        // Two trusted proxies (10.0.0.2 appended the client, the peer
        // appended 10.0.0.2); 6.6.6.6 is the client's own claim.
        let two = client_address(Some("6.6.6.6, 203.0.113.7, 10.0.0.2"), peer, 2);
        assert_eq!(two.ip, "203.0.113.7".parse().ok());
        assert_eq!(two.chain, ips(&["203.0.113.7", "10.0.0.2", "10.0.0.1"]));
        // No trusted hop, too few hops, garbage: the peer alone.
        for (xff, hops) in [(Some("6.6.6.6"), 0), (None, 2), (Some("x, 10.0.0.2"), 2)] {
            let only = client_address(xff, peer, hops);
            assert_eq!(only.ip, peer, "{xff:?} {hops}");
            assert_eq!(only.chain, ips(&["10.0.0.1"]), "{xff:?} {hops}");
        }
        assert_eq!(client_address(None, None, 1), ClientAddress::default());
    }
}
