//! What an NGSI-v2 or NGSI-LD request does, for policies (`input.ngsi`):
//! its action, tenant, the entities and attributes it touches (batch and
//! subscription bodies included) and every attribute its query parameters
//! reference. Derived from the normalized request on routes that declare
//! `"ngsi"`; the OPA-Envoy input beside it is unchanged.
//!
//! Where a request could be read two ways (a repeated tenant header or
//! NGSI parameter, a body that does not parse or exceeds the buffer) it is
//! refused rather than described: a policy cannot judge what a broker might
//! read differently. Names citygate cannot determine are [`ANY`].

mod body;
mod query;
#[cfg(test)]
mod tests;

use serde::Deserialize;

pub use query::ANY;

/// The NGSI flavour a route serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum Api {
    /// NGSI-v2 (Orion): `…/v2/…`.
    V2,
    /// NGSI-LD (Orion-LD, Scorpio, Stellio): `…/ngsi-ld/v1/…`.
    Ld,
}

impl Api {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V2 => "v2",
            Self::Ld => "ld",
        }
    }
}

/// What a request does, by resource. Removing an attribute is an update
/// of its entity; a batch is the action of its operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    ReadEntities,
    CreateEntities,
    UpdateEntities,
    /// Creates what does not exist, updates what does (v2 `append`,
    /// NGSI-LD `upsert`).
    UpsertEntities,
    DeleteEntities,
    /// The type and attribute catalogues (`/types`, `/attributes`).
    ReadTypes,
    ReadSubscriptions,
    CreateSubscriptions,
    UpdateSubscriptions,
    DeleteSubscriptions,
    ReadRegistrations,
    CreateRegistrations,
    UpdateRegistrations,
    DeleteRegistrations,
    ReadTemporal,
    CreateTemporal,
    UpdateTemporal,
    DeleteTemporal,
    /// NGSI-v2 `POST /v2/op/notify`: a notification pushed into the broker.
    Notify,
    /// Anything else under the API root (including its own root).
    Unknown,
}

impl Action {
    /// Reads or writes entities (current or temporal), whose types the
    /// request may restrict.
    pub fn is_about_entities(self) -> bool {
        matches!(
            self,
            Self::ReadEntities
                | Self::CreateEntities
                | Self::UpdateEntities
                | Self::UpsertEntities
                | Self::DeleteEntities
                | Self::ReadTemporal
                | Self::CreateTemporal
                | Self::UpdateTemporal
                | Self::DeleteTemporal
                | Self::Notify
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ReadEntities => "read_entities",
            Self::CreateEntities => "create_entities",
            Self::UpdateEntities => "update_entities",
            Self::UpsertEntities => "upsert_entities",
            Self::DeleteEntities => "delete_entities",
            Self::ReadTypes => "read_types",
            Self::ReadSubscriptions => "read_subscriptions",
            Self::CreateSubscriptions => "create_subscriptions",
            Self::UpdateSubscriptions => "update_subscriptions",
            Self::DeleteSubscriptions => "delete_subscriptions",
            Self::ReadRegistrations => "read_registrations",
            Self::CreateRegistrations => "create_registrations",
            Self::UpdateRegistrations => "update_registrations",
            Self::DeleteRegistrations => "delete_registrations",
            Self::ReadTemporal => "read_temporal",
            Self::CreateTemporal => "create_temporal",
            Self::UpdateTemporal => "update_temporal",
            Self::DeleteTemporal => "delete_temporal",
            Self::Notify => "notify",
            Self::Unknown => "unknown",
        }
    }
}

/// One entity a subscription or registration names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntitySelector {
    pub id: Option<String>,
    pub id_pattern: Option<String>,
    pub entity_type: Option<String>,
}

/// What a subscription sends, and where: its data leaves later, by the
/// broker's own request, past the gateway's response path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subscription {
    pub notification_url: Option<String>,
    pub entities: Vec<EntitySelector>,
    /// Attributes notified; [`ANY`] when the subscription sends all of
    /// them (no list, or a list of exceptions).
    pub attrs: Vec<String>,
}

/// `input.ngsi`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NgsiRequest {
    pub api: Api,
    pub action: Action,
    /// `Fiware-Service` (NGSI-v2) or `NGSILD-Tenant` (NGSI-LD), trimmed
    /// and lower-cased as Orion stores it.
    pub tenant: Option<String>,
    /// `Fiware-ServicePath`, split at commas, each trimmed.
    pub service_path: Vec<String>,
    /// Sorted, without repeats, from the path, the query and the body.
    pub entity_types: Vec<String>,
    pub entity_ids: Vec<String>,
    pub id_patterns: Vec<String>,
    /// Attributes read, written, projected or notified.
    pub attrs: Vec<String>,
    /// Attributes a filter, sort, projection or geo-query references.
    pub query_attrs: Vec<String>,
    pub q: Option<String>,
    pub mq: Option<String>,
    pub georel: Option<String>,
    /// The JSON-LD context a caller brings in its `Link` header: names in
    /// the request (and the answer) are compacted with it.
    pub context: Option<String>,
    pub batch: bool,
    pub subscription: Option<Subscription>,
}

/// Why a request on an NGSI route is refused before its policy runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NgsiError {
    /// A header citygate reads appears more than once (for the NGSI-LD
    /// tenant: both of its forms count).
    RepeatedHeader(&'static str),
    /// A query parameter citygate reads appears more than once.
    RepeatedParameter(&'static str),
    /// A tenant or service-path header not of the form the broker takes.
    MalformedHeader(&'static str),
    /// The action depends on a body that was not buffered or exceeds
    /// `request_body.max_bytes`.
    BodyUnread,
    /// The body is not JSON of the shape the action takes.
    BodyInvalid,
}

impl NgsiError {
    pub fn reason(&self) -> String {
        match self {
            Self::RepeatedHeader(name) => format!("the NGSI request repeats its `{name}` header"),
            Self::RepeatedParameter(name) => {
                format!("the NGSI request repeats its `{name}` query parameter")
            }
            Self::MalformedHeader(name) => {
                format!("the NGSI request's `{name}` header is not of the form the broker takes")
            }
            Self::BodyUnread => {
                "the NGSI request's body is needed to authorize it and was not read whole"
                    .to_string()
            }
            Self::BodyInvalid => {
                "the NGSI request's body is not JSON of the shape its operation takes".to_string()
            }
        }
    }
}

/// The parts of a request the derivation reads.
#[derive(Clone, Copy)]
pub struct RequestParts<'a> {
    pub method: &'a str,
    /// The normalized path, without the query.
    pub path: &'a str,
    pub query: &'a [(String, String)],
    /// Lower-case names.
    pub headers: &'a [(String, String)],
    /// The whole body, or `None` when it was not buffered or was cut.
    pub body: Option<&'a [u8]>,
    /// Parses a body as JSON, `None` for anything two parsers could read
    /// differently (the policy's strict parser: repeated members refused).
    pub parse_json: &'a dyn Fn(&[u8]) -> Option<serde_json::Value>,
}

/// Query parameters whose meaning citygate derives; each may appear once.
const READ_PARAMETERS: &[&str] = &[
    "id",
    "type",
    "idPattern",
    "typePattern",
    "q",
    "mq",
    "georel",
    "geoproperty",
    "attrs",
    "pick",
    "omit",
    "orderBy",
];

pub fn derive(api: Api, request: &RequestParts<'_>) -> Result<NgsiRequest, NgsiError> {
    for name in READ_PARAMETERS {
        if request.query.iter().filter(|(n, _)| n == name).count() > 1 {
            return Err(NgsiError::RepeatedParameter(name));
        }
    }
    let mut ngsi = NgsiRequest {
        api,
        action: Action::Unknown,
        tenant: tenant(api, request.headers)?.map(|t| t.to_ascii_lowercase()),
        service_path: match api {
            Api::V2 => single_header(
                request.headers,
                &["fiware-servicepath"],
                "fiware-servicepath",
            )?
            .map(|v| v.split(',').map(|p| p.trim().to_string()).collect())
            .unwrap_or_default(),
            Api::Ld => Vec::new(),
        },
        entity_types: Vec::new(),
        entity_ids: Vec::new(),
        id_patterns: Vec::new(),
        attrs: Vec::new(),
        query_attrs: Vec::new(),
        q: param(request, "q").map(str::to_string),
        mq: param(request, "mq").map(str::to_string),
        georel: param(request, "georel").map(str::to_string),
        context: match api {
            Api::Ld => single_header(request.headers, &["link"], "link")?,
            Api::V2 => None,
        },
        batch: false,
        subscription: None,
    };
    read_query(api, request, &mut ngsi);
    let resource = resource(api, request.path);
    let (action, body_kind) = classify(api, request.method, &resource);
    ngsi.action = action;
    if let Some(segment) = resource.entity_type {
        ngsi.entity_types.push(segment.to_string());
    }
    if let Some(id) = resource.entity_id {
        ngsi.entity_ids.push(id.to_string());
    }
    if let Some(name) = resource.attr {
        ngsi.attrs.push(name.to_string());
    }
    if let Some(kind) = body_kind {
        let bytes = request.body.ok_or(NgsiError::BodyUnread)?;
        let document = crate::auth::jwt::strict_json::value(bytes).ok_or(NgsiError::BodyInvalid)?;
        body::read(api, kind, &document, &mut ngsi).ok_or(NgsiError::BodyInvalid)?;
    }
    check_tenant(&ngsi)?;
    let reads = matches!(request.method, "GET" | "HEAD")
        || (ngsi.batch && matches!(ngsi.action, Action::ReadEntities | Action::ReadTemporal));
    check_service_paths(&ngsi.service_path, reads)?;
    // Nothing restricts the type: the entities could be of any type (an
    // empty list would make `every` rules hold vacuously).
    if ngsi.entity_types.is_empty() && ngsi.action.is_about_entities() {
        ngsi.entity_types.push(ANY.to_string());
    }
    for list in [
        &mut ngsi.entity_types,
        &mut ngsi.entity_ids,
        &mut ngsi.id_patterns,
        &mut ngsi.attrs,
        &mut ngsi.query_attrs,
    ] {
        list.sort();
        list.dedup();
    }
    Ok(ngsi)
}

/// Orion's service names: 1-50 letters, digits or `_` (case does not
/// matter: it stores them lower-cased, as the input gives them).
fn check_tenant(ngsi: &NgsiRequest) -> Result<(), NgsiError> {
    let Some(tenant) = &ngsi.tenant else {
        return Ok(());
    };
    let valid = (1..=50).contains(&tenant.len())
        && tenant
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(NgsiError::MalformedHeader(match ngsi.api {
            Api::V2 => "fiware-service",
            Api::Ld => "ngsild-tenant",
        }))
    }
}

/// Orion's service paths: `/` or up to 10 levels of 1-50 letters, digits
/// or `_`. A write names exactly one; a read up to 10, each of which may
/// end in `/#` (the subtree). Anything else (`/a/../b`, `//a`, `/a/`) is
/// a path two components could read differently.
fn check_service_paths(paths: &[String], reads: bool) -> Result<(), NgsiError> {
    let malformed = Err(NgsiError::MalformedHeader("fiware-servicepath"));
    if paths.is_empty() {
        return Ok(());
    }
    if paths.len() > if reads { 10 } else { 1 } {
        return malformed;
    }
    for path in paths {
        let (levels, subtree) = match path.strip_suffix("/#") {
            Some(rest) if reads => (rest, true),
            Some(_) => return malformed,
            None => (path.as_str(), false),
        };
        let valid = match levels {
            "" => subtree,
            "/" => !subtree,
            _ => {
                let segments: Vec<&str> = match levels.strip_prefix('/') {
                    Some(rest) => rest.split('/').collect(),
                    None => return malformed,
                };
                segments.len() <= 10
                    && segments.iter().all(|s| {
                        (1..=50).contains(&s.len())
                            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                    })
            }
        };
        if !valid {
            return malformed;
        }
    }
    Ok(())
}

fn param<'a>(request: &RequestParts<'a>, name: &str) -> Option<&'a str> {
    request
        .query
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// The one value of a header sent under any of `names`; more than one
/// occurrence is ambiguous (which one would the broker take?).
fn single_header(
    headers: &[(String, String)],
    names: &[&str],
    label: &'static str,
) -> Result<Option<String>, NgsiError> {
    let mut values = headers
        .iter()
        .filter(|(n, _)| names.contains(&n.as_str()))
        .map(|(_, v)| v.trim().to_string());
    let first = values.next();
    if values.next().is_some() {
        return Err(NgsiError::RepeatedHeader(label));
    }
    Ok(first)
}

/// Orion-LD also takes NGSI-v2's header as the tenant: both count.
fn tenant(api: Api, headers: &[(String, String)]) -> Result<Option<String>, NgsiError> {
    match api {
        Api::V2 => single_header(headers, &["fiware-service"], "fiware-service"),
        Api::Ld => single_header(
            headers,
            &["ngsild-tenant", "fiware-service"],
            "ngsild-tenant",
        ),
    }
}

fn read_query(api: Api, request: &RequestParts<'_>, ngsi: &mut NgsiRequest) {
    let list = |value: &str| -> Vec<String> {
        value
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    };
    if let Some(ids) = param(request, "id") {
        ngsi.entity_ids.extend(list(ids));
    }
    if let Some(types) = param(request, "type") {
        // NGSI-LD 1.6 selects types with `,` `;` `|` and parentheses.
        ngsi.entity_types.extend(
            types
                .split([',', ';', '|', '(', ')'])
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string),
        );
    }
    if param(request, "typePattern").is_some() {
        ngsi.entity_types.push(ANY.to_string());
    }
    if let Some(pattern) = param(request, "idPattern") {
        ngsi.id_patterns.push(pattern.to_string());
    }
    let names = &mut ngsi.query_attrs;
    for name in ["q", "mq"] {
        if let Some(expression) = param(request, name) {
            query::q_attributes(api, expression, names);
        }
    }
    if let Some(order) = param(request, "orderBy") {
        query::order_by_attributes(api, order, names);
    }
    for name in ["attrs", "pick", "omit"] {
        if let Some(projection) = param(request, name) {
            query::list_attributes(api, projection, names);
            query::list_attributes(api, projection, &mut ngsi.attrs);
        }
    }
    if param(request, "georel").is_some() {
        geo_attribute(api, param(request, "geoproperty"), names);
    }
}

/// The attribute a geo-query tests: NGSI-LD's `geoproperty` (default
/// `location`); NGSI-v2 tests whichever attribute has a geo type, which
/// the request does not name.
fn geo_attribute(api: Api, geoproperty: Option<&str>, names: &mut Vec<String>) {
    match api {
        Api::V2 => names.push(ANY.to_string()),
        Api::Ld => query::list_attributes(api, geoproperty.unwrap_or("location"), names),
    }
}

/// The resource a path addresses below the API root.
#[derive(Debug, Default)]
struct Resource<'a> {
    /// Segments after `v2` or `ngsi-ld/v1`; `None` when the path is not
    /// under the API root.
    segments: Option<Vec<&'a str>>,
    entity_id: Option<&'a str>,
    entity_type: Option<&'a str>,
    attr: Option<&'a str>,
}

fn nonempty<'a>(segment: Option<&&'a str>) -> Option<&'a str> {
    segment.copied().filter(|s| !s.is_empty())
}

fn resource(api: Api, path: &str) -> Resource<'_> {
    let all: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let root = match api {
        Api::V2 => all.iter().position(|s| *s == "v2").map(|i| i + 1),
        Api::Ld => all
            .windows(2)
            .position(|w| w == ["ngsi-ld", "v1"])
            .map(|i| i + 2),
    };
    let Some(segments) = root.and_then(|i| all.get(i..)).map(<[&str]>::to_vec) else {
        return Resource::default();
    };
    let (entity_id, entity_type, attr) = match segments.as_slice() {
        ["entities", rest @ ..] | ["temporal", "entities", rest @ ..] => (
            nonempty(rest.first()),
            None,
            (rest.get(1) == Some(&"attrs"))
                .then(|| nonempty(rest.get(2)))
                .flatten(),
        ),
        ["types", t] => (None, nonempty(Some(t)), None),
        ["attributes", a] => (None, None, nonempty(Some(a))),
        _ => (None, None, None),
    };
    Resource {
        segments: Some(segments),
        entity_id,
        entity_type,
        attr,
    }
}

/// Which body shape an action takes (read by [`body::read`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyKind {
    /// One entity (create).
    Entity,
    /// An object of attributes (`…/attrs`, NGSI-LD entity merge/replace).
    Attributes,
    /// One attribute named in the path: its content is not read.
    Attribute,
    /// NGSI-v2 `op/update`: its `actionType` decides the action.
    V2BatchUpdate,
    /// NGSI-LD `entityOperations/{create,upsert,update,merge}`: entities.
    LdBatchEntities,
    /// NGSI-LD `entityOperations/delete`: ids.
    LdBatchIds,
    /// A query body (`v2/op/query`, NGSI-LD `entityOperations/query`).
    Query,
    Subscription,
    Registration,
    /// A notification pushed in (`v2/op/notify`): entities.
    Notification,
}

fn classify(api: Api, method: &str, resource: &Resource<'_>) -> (Action, Option<BodyKind>) {
    use Action::*;
    let Some(segments) = &resource.segments else {
        return (Unknown, None);
    };
    let method = if method == "HEAD" { "GET" } else { method };
    let ld = api == Api::Ld;
    match (method, segments.as_slice()) {
        ("GET", ["entities"]) => (ReadEntities, None),
        ("POST", ["entities"]) => (CreateEntities, Some(BodyKind::Entity)),
        ("GET", ["entities", _]) => (ReadEntities, None),
        ("DELETE", ["entities", _]) => (DeleteEntities, None),
        ("PATCH" | "PUT", ["entities", _]) if ld => (UpdateEntities, Some(BodyKind::Attributes)),
        ("GET", ["entities", _, "attrs"]) if !ld => (ReadEntities, None),
        ("POST" | "PATCH", ["entities", _, "attrs"]) => {
            (UpdateEntities, Some(BodyKind::Attributes))
        }
        ("PUT", ["entities", _, "attrs"]) if !ld => (UpdateEntities, Some(BodyKind::Attributes)),
        ("GET", ["entities", _, "attrs", _]) if !ld => (ReadEntities, None),
        ("GET", ["entities", _, "attrs", _, "value"]) if !ld => (ReadEntities, None),
        ("PUT", ["entities", _, "attrs", _, "value"]) if !ld => {
            (UpdateEntities, Some(BodyKind::Attribute))
        }
        ("PUT" | "PATCH", ["entities", _, "attrs", _]) => {
            (UpdateEntities, Some(BodyKind::Attribute))
        }
        ("DELETE", ["entities", _, "attrs", _]) => (UpdateEntities, None),
        ("GET", ["types"] | ["types", _]) => (ReadTypes, None),
        ("GET", ["attributes"] | ["attributes", _]) if ld => (ReadTypes, None),
        ("POST", ["op", "update"]) if !ld => (Unknown, Some(BodyKind::V2BatchUpdate)),
        ("POST", ["op", "query"]) if !ld => (ReadEntities, Some(BodyKind::Query)),
        ("POST", ["op", "notify"]) if !ld => (Notify, Some(BodyKind::Notification)),
        ("POST", ["entityOperations", operation]) if ld => match *operation {
            "create" => (CreateEntities, Some(BodyKind::LdBatchEntities)),
            "upsert" => (UpsertEntities, Some(BodyKind::LdBatchEntities)),
            "update" | "merge" => (UpdateEntities, Some(BodyKind::LdBatchEntities)),
            "delete" => (DeleteEntities, Some(BodyKind::LdBatchIds)),
            "query" => (ReadEntities, Some(BodyKind::Query)),
            _ => (Unknown, None),
        },
        ("GET", [collection] | [collection, _]) if collection == &"subscriptions" => {
            (ReadSubscriptions, None)
        }
        ("POST", [collection]) if collection == &"subscriptions" => {
            (CreateSubscriptions, Some(BodyKind::Subscription))
        }
        ("PATCH", [collection, _]) if collection == &"subscriptions" => {
            (UpdateSubscriptions, Some(BodyKind::Subscription))
        }
        ("DELETE", [collection, _]) if collection == &"subscriptions" => {
            (DeleteSubscriptions, None)
        }
        ("GET", [collection] | [collection, _]) if is_registrations(api, collection) => {
            (ReadRegistrations, None)
        }
        ("POST", [collection]) if is_registrations(api, collection) => {
            (CreateRegistrations, Some(BodyKind::Registration))
        }
        ("PATCH", [collection, _]) if is_registrations(api, collection) => {
            (UpdateRegistrations, Some(BodyKind::Registration))
        }
        ("DELETE", [collection, _]) if is_registrations(api, collection) => {
            (DeleteRegistrations, None)
        }
        ("GET", ["temporal", "entities"] | ["temporal", "entities", _]) if ld => {
            (ReadTemporal, None)
        }
        ("POST", ["temporal", "entities"]) if ld => (CreateTemporal, Some(BodyKind::Entity)),
        ("DELETE", ["temporal", "entities", _]) if ld => (DeleteTemporal, None),
        ("POST", ["temporal", "entities", _, "attrs"]) if ld => {
            (UpdateTemporal, Some(BodyKind::Attributes))
        }
        ("DELETE", ["temporal", "entities", _, "attrs", _])
        | ("PATCH" | "DELETE", ["temporal", "entities", _, "attrs", _, _])
            if ld =>
        {
            (UpdateTemporal, None)
        }
        ("POST", ["temporal", "entityOperations", "query"]) if ld => {
            (ReadTemporal, Some(BodyKind::Query))
        }
        _ => (Unknown, None),
    }
}

fn is_registrations(api: Api, segment: &str) -> bool {
    match api {
        Api::V2 => segment == "registrations",
        Api::Ld => segment == "csourceRegistrations",
    }
}
