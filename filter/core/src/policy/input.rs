//! The policy input in OPA-Envoy's v3 shape (what OPA-Envoy builds from
//! Envoy's `CheckRequest`), plus citygate's `identity` and `route`. Built
//! directly as a `regorus::Value`: no JSON text is produced per request.
//!
//! Differences from OPA-Envoy, all on the safe side: `path`, `parsed_path`
//! and the `:path` header carry the *normalized* path (what upstream will
//! receive), and `size` is a number (`-1` when unknown) rather than
//! protojson's string.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::SocketAddr;

use regorus::Value;

use super::RequestContext;
use crate::auth::jwt::strict_json;
use crate::identity::Identity;
use crate::ngsi::{self, NgsiError, NgsiRequest};
use crate::normalize::{
    decode_form, RequestView, METHOD_OVERRIDE_HEADERS, SPOOFABLE_HEADER_PREFIX,
};

/// Why no input could be built; the request is denied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputError {
    /// A JSON request body that does not parse (OPA-Envoy fails the check too).
    BodyNotJson,
    /// A request on an NGSI route that `input.ngsi` cannot describe
    /// without ambiguity.
    Ngsi(NgsiError),
}

impl InputError {
    pub fn reason(&self) -> String {
        match self {
            Self::BodyNotJson => "request body is not valid JSON".to_string(),
            Self::Ngsi(error) => error.reason(),
        }
    }
}

pub fn build_input(request: &RequestContext<'_>) -> Result<Value, InputError> {
    let view = request.view;
    let upstream_path = view.upstream_path();
    let content_length = view
        .header("content-length")
        .and_then(|v| v.trim().parse::<u64>().ok());
    let truncated = request.body_truncated
        || matches!((request.body, content_length), (Some(body), Some(len)) if len > body.len() as u64);
    let parsed_body = match request.body {
        Some(body) if !truncated => parse_body(view.header("content-type"), body)?,
        _ => Value::Null,
    };

    let mut http = object([
        ("id", Value::from(view.id.as_str())),
        ("method", Value::from(view.method.as_str())),
        ("path", Value::from(upstream_path.as_str())),
        ("host", Value::from(view.host.as_str())),
        ("scheme", Value::from(view.scheme.as_str())),
        ("protocol", Value::from(view.protocol.as_str())),
        ("headers", headers(view, &upstream_path)),
        (
            "size",
            content_length
                .and_then(|n| i64::try_from(n).ok())
                .map_or(Value::from(-1i64), Value::from),
        ),
    ]);
    if let (Some(body), Ok(map)) = (request.body, http.as_object_mut()) {
        map.insert(
            Value::from("body"),
            Value::from(String::from_utf8_lossy(body).as_ref()),
        );
    }

    let ngsi = match request.route.ngsi {
        Some(api) => Some(
            ngsi::derive(
                api,
                &ngsi::RequestParts {
                    method: &view.method,
                    path: &view.path,
                    query: &view.query,
                    headers: &view.headers,
                    body: request.body.filter(|_| !truncated),
                    parse_json: &strict_json::value,
                },
            )
            .map_err(InputError::Ngsi)?,
        ),
        None => None,
    };

    let mut source = object([("address", SOURCE.with(|last| last.value(view.source)))]);
    if let (Some(principal), Ok(map)) = (peer_principal(view), source.as_object_mut()) {
        map.insert(Value::from("principal"), Value::from(principal));
    }

    let mut input = object([
        (
            "attributes",
            object([
                ("source", source),
                (
                    "destination",
                    object([(
                        "address",
                        DESTINATION.with(|last| last.value(view.destination)),
                    )]),
                ),
                ("request", object([("http", http)])),
            ]),
        ),
        ("parsed_path", parsed_path(&view.path)),
        ("parsed_query", multimap(&view.query)),
        ("parsed_body", parsed_body),
        ("truncated_body", Value::from(truncated)),
        ("version", VERSION.with(Value::clone)),
        ("identity", identity(request.identity)),
        // citygate's own: the client after the trusted-hops rule, which a
        // policy can test with `net.cidr_contains` (the socket peer is
        // `attributes.source.address`). Empty when Envoy reported no peer;
        // `net.cidr_contains` then errors, and the request is denied.
        (
            "client_ip",
            Value::from(view.client_ip.map(|ip| ip.to_string()).unwrap_or_default()),
        ),
        (
            "client_ip_chain",
            Value::from(
                view.client_ip_chain
                    .iter()
                    .map(|ip| Value::from(ip.to_string()))
                    .collect::<Vec<_>>(),
            ),
        ),
        (
            "route",
            object([("name", Value::from(request.route.name.as_str()))]),
        ),
    ]);
    if let (Some(ngsi), Ok(map)) = (&ngsi, input.as_object_mut()) {
        map.insert(Value::from("ngsi"), ngsi_value(ngsi));
    }
    Ok(input)
}

/// `input.ngsi`: absent on routes without `"ngsi"`.
fn ngsi_value(ngsi: &NgsiRequest) -> Value {
    let optional = |s: &Option<String>| s.as_deref().map_or(Value::Null, Value::from);
    let subscription = ngsi.subscription.as_ref().map_or(Value::Null, |s| {
        object([
            ("notification_url", optional(&s.notification_url)),
            (
                "entities",
                Value::from(
                    s.entities
                        .iter()
                        .map(|e| {
                            object([
                                ("id", optional(&e.id)),
                                ("id_pattern", optional(&e.id_pattern)),
                                ("type", optional(&e.entity_type)),
                            ])
                        })
                        .collect::<Vec<_>>(),
                ),
            ),
            ("attrs", strings(&s.attrs)),
        ])
    });
    object([
        ("api", Value::from(ngsi.api.as_str())),
        ("action", Value::from(ngsi.action.as_str())),
        ("tenant", optional(&ngsi.tenant)),
        ("service_path", strings(&ngsi.service_path)),
        ("entity_types", strings(&ngsi.entity_types)),
        ("entity_ids", strings(&ngsi.entity_ids)),
        ("id_patterns", strings(&ngsi.id_patterns)),
        ("attrs", strings(&ngsi.attrs)),
        ("query_attrs", strings(&ngsi.query_attrs)),
        ("q", optional(&ngsi.q)),
        ("mq", optional(&ngsi.mq)),
        ("georel", optional(&ngsi.georel)),
        ("context", optional(&ngsi.context)),
        ("batch", Value::from(ngsi.batch)),
        ("subscription", subscription),
    ])
}

fn object<const N: usize>(entries: [(&str, Value); N]) -> Value {
    map_of(entries.into_iter().map(|(k, v)| (Value::from(k), v)))
}

/// An object from its members, inserted one by one: cheaper than
/// `collect`, which buffers and sorts them first, for the few members
/// (mostly already in order) that input objects have.
fn map_of(members: impl Iterator<Item = (Value, Value)>) -> Value {
    let mut map = BTreeMap::new();
    for (k, v) in members {
        map.insert(k, v);
    }
    Value::from(map)
}

fn strings<'a>(items: impl IntoIterator<Item = &'a String>) -> Value {
    Value::from(
        items
            .into_iter()
            .map(|s| Value::from(s.as_str()))
            .collect::<Vec<_>>(),
    )
}

/// Names are already lower-case; repeated headers are joined with `,` as
/// Envoy does in a `CheckRequest`. `:path` is the normalized one. Headers
/// the gateway strips before upstream (client-sent `x-citygate-*`, method
/// overrides) are left out: a policy must not decide on a value upstream
/// never sees, nor on a forged identity header.
fn headers(view: &RequestView, upstream_path: &str) -> Value {
    // Borrowed until a header repeats: most values are copied once, into
    // the policy's value.
    let mut joined: BTreeMap<&str, Cow<'_, str>> = BTreeMap::new();
    let stripped = |name: &str| {
        name.starts_with(SPOOFABLE_HEADER_PREFIX) || METHOD_OVERRIDE_HEADERS.contains(&name)
    };
    for (name, value) in view.headers.iter().filter(|(n, _)| !stripped(n)) {
        let value = if name == ":path" {
            upstream_path
        } else {
            value.as_str()
        };
        joined
            .entry(name.as_str())
            .and_modify(|v| {
                let v = v.to_mut();
                v.push(',');
                v.push_str(value);
            })
            .or_insert(Cow::Borrowed(value));
    }
    map_of(
        joined
            .into_iter()
            .map(|(k, v)| (Value::from(k), Value::from(v.as_ref()))),
    )
}

thread_local! {
    /// The same on every request: built once per thread (once per Wasm VM).
    static VERSION: Value = object([
        ("encoding", Value::from("protojson")),
        ("ext_authz", Value::from("v3")),
    ]);
    /// A connection's requests share their source address, and a listener's
    /// its destination: the last of each is kept, built (formatted) once.
    static SOURCE: LastAddress = LastAddress::default();
    static DESTINATION: LastAddress = LastAddress::default();
}

/// The most recent address and its input value (regorus values are
/// reference-counted: a clone is a pointer copy).
#[derive(Default)]
struct LastAddress(RefCell<Option<(Option<SocketAddr>, Value)>>);

impl LastAddress {
    fn value(&self, address: Option<SocketAddr>) -> Value {
        let mut last = self.0.borrow_mut();
        match &*last {
            Some((seen, value)) if *seen == address => value.clone(),
            _ => {
                let value = socket_address(address);
                *last = Some((address, value.clone()));
                value
            }
        }
    }
}

fn socket_address(address: Option<SocketAddr>) -> Value {
    match address {
        Some(a) => object([(
            "socketAddress",
            object([
                ("address", Value::from(a.ip().to_string())),
                ("portValue", Value::from(u64::from(a.port()))),
            ]),
        )]),
        None => Value::new_object(),
    }
}

/// What Envoy reports as `source.principal`: the peer certificate's URI SAN,
/// else its subject.
fn peer_principal(view: &RequestView) -> Option<&str> {
    let cert = view.peer_certificate.as_ref()?;
    cert.uri_san.as_deref().or(cert.subject.as_deref())
}

/// `/a/b` → `["a","b"]`, `/` → `[""]`, `/a/` → `["a",""]`: Go's
/// `strings.Split(strings.TrimLeft(path, "/"), "/")`, as OPA-Envoy does.
pub fn parsed_path(path: &str) -> Value {
    Value::from(
        path.trim_start_matches('/')
            .split('/')
            .map(Value::from)
            .collect::<Vec<_>>(),
    )
}

/// Pairs → `{name: [values…]}` (parsed_query, form bodies).
pub fn multimap(pairs: &[(String, String)]) -> Value {
    let mut grouped: BTreeMap<&str, Vec<&String>> = BTreeMap::new();
    for (k, v) in pairs {
        grouped.entry(k.as_str()).or_default().push(v);
    }
    map_of(
        grouped
            .into_iter()
            .map(|(k, vs)| (Value::from(k), strings(vs))),
    )
}

/// JSON and form bodies are parsed; anything else is `null`.
fn parse_body(content_type: Option<&str>, body: &[u8]) -> Result<Value, InputError> {
    let content_type = content_type.unwrap_or("").to_ascii_lowercase();
    if body.is_empty() {
        return Ok(Value::Null);
    }
    if content_type.contains("application/json") {
        // Duplicate member names: the policy would judge one value while an
        // upstream whose parser keeps the other acts on it
        // (`{"account_id":"someone-else","account_id":"me"}`). Refused.
        if strict_json::value(body).is_none() {
            return Err(InputError::BodyNotJson);
        }
        let text = std::str::from_utf8(body).map_err(|_| InputError::BodyNotJson)?;
        return Value::from_json_str(text).map_err(|_| InputError::BodyNotJson);
    }
    if content_type.contains("application/x-www-form-urlencoded") {
        let text = String::from_utf8_lossy(body);
        let pairs: Vec<(String, String)> = text
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (decode_form(k), decode_form(v))
            })
            .collect();
        return Ok(multimap(&pairs));
    }
    Ok(Value::Null)
}

fn identity(identity: &Identity) -> Value {
    let optional = |s: &Option<String>| s.as_deref().map_or(Value::Null, Value::from);
    object([
        ("kind", Value::from(identity.kind.as_str())),
        ("subject", optional(&identity.subject)),
        ("client_id", optional(&identity.client_id)),
        ("roles", strings(&identity.roles)),
        ("scopes", strings(&identity.scopes)),
        (
            "claims",
            identity.claims.policy_value(|claims| {
                map_of(
                    claims
                        .iter()
                        .map(|(k, v)| (Value::from(k.as_str()), json(v))),
                )
            }),
        ),
    ])
}

/// serde_json → regorus without going through text.
pub fn json(value: &serde_json::Value) -> Value {
    match value {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::from(*b),
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                n.as_f64().map_or(Value::Null, Value::from)
            }
        }
        serde_json::Value::String(s) => Value::from(s.as_str()),
        serde_json::Value::Array(items) => Value::from(items.iter().map(json).collect::<Vec<_>>()),
        serde_json::Value::Object(map) => Value::from(
            map.iter()
                .map(|(k, v)| (Value::from(k.as_str()), json(v)))
                .collect::<BTreeMap<Value, Value>>(),
        ),
    }
}
