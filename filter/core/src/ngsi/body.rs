//! The entities, attributes and notification targets in NGSI request
//! bodies. Each reader answers `None` for a body not of its shape: the
//! request is then refused, never described from what could be read.

use serde_json::{Map, Value};

use super::query::{self, ANY};
use super::{Action, Api, BodyKind, EntitySelector, NgsiRequest, Subscription};

pub(super) fn read(
    api: Api,
    kind: BodyKind,
    document: &Value,
    ngsi: &mut NgsiRequest,
) -> Option<()> {
    match kind {
        BodyKind::Entity => entity(document.as_object()?, ngsi),
        BodyKind::Attributes => {
            attribute_names(document.as_object()?, &mut ngsi.attrs);
            Some(())
        }
        // The attribute is named in the path; its content names nothing.
        BodyKind::Attribute => Some(()),
        BodyKind::V2BatchUpdate => {
            let body = document.as_object()?;
            ngsi.batch = true;
            ngsi.action = match body.get("actionType")?.as_str()? {
                "append" | "appendStrict" => Action::UpsertEntities,
                "update" | "replace" => Action::UpdateEntities,
                "delete" => Action::DeleteEntities,
                _ => return None,
            };
            entities(body.get("entities")?, ngsi)
        }
        BodyKind::LdBatchEntities => {
            ngsi.batch = true;
            entities(document, ngsi)
        }
        BodyKind::LdBatchIds => {
            ngsi.batch = true;
            for id in document.as_array()? {
                ngsi.entity_ids.push(id.as_str()?.to_string());
            }
            Some(())
        }
        BodyKind::Query => {
            ngsi.batch = true;
            query_body(api, document.as_object()?, ngsi)
        }
        BodyKind::Subscription => subscription(api, document.as_object()?, ngsi),
        BodyKind::Registration => registration(api, document.as_object()?, ngsi),
        BodyKind::Notification => entities(document.as_object()?.get("data")?, ngsi),
    }
}

fn entities(list: &Value, ngsi: &mut NgsiRequest) -> Option<()> {
    for item in list.as_array()? {
        entity(item.as_object()?, ngsi)?;
    }
    Some(())
}

/// One entity as written (create, batch, notification): id, type(s) and
/// attribute names. Without a type an entity could be of any type.
fn entity(fields: &Map<String, Value>, ngsi: &mut NgsiRequest) -> Option<()> {
    if let Some(id) = fields.get("id") {
        ngsi.entity_ids.push(id.as_str()?.to_string());
    }
    match fields.get("type") {
        None => ngsi.entity_types.push(ANY.to_string()),
        // NGSI-LD entities may have several types.
        Some(Value::Array(types)) => {
            for t in types {
                ngsi.entity_types.push(t.as_str()?.to_string());
            }
        }
        Some(t) => ngsi.entity_types.push(t.as_str()?.to_string()),
    }
    attribute_names(fields, &mut ngsi.attrs);
    Some(())
}

fn attribute_names(fields: &Map<String, Value>, names: &mut Vec<String>) {
    names.extend(
        fields
            .keys()
            .filter(|k| !matches!(k.as_str(), "id" | "type" | "@context"))
            .cloned(),
    );
}

/// `[{id, idPattern, type, typePattern}]` of queries, subscriptions and
/// registrations; also added to the request's own lists.
fn selectors(list: Option<&Value>, ngsi: &mut NgsiRequest) -> Option<Vec<EntitySelector>> {
    let Some(list) = list else {
        return Some(Vec::new());
    };
    let mut found = Vec::new();
    for item in list.as_array()? {
        let fields = item.as_object()?;
        let text = |name: &str| -> Option<Option<String>> {
            match fields.get(name) {
                None => Some(None),
                Some(v) => Some(Some(v.as_str()?.to_string())),
            }
        };
        let selector = EntitySelector {
            id: text("id")?,
            id_pattern: text("idPattern")?,
            entity_type: text("type")?,
        };
        ngsi.entity_ids.extend(selector.id.clone());
        ngsi.id_patterns.extend(selector.id_pattern.clone());
        match (&selector.entity_type, text("typePattern")?) {
            (Some(t), None) => ngsi.entity_types.push(t.clone()),
            _ => ngsi.entity_types.push(ANY.to_string()),
        }
        found.push(selector);
    }
    Some(found)
}

/// A list of names, or `None` when the member is there and is not one.
fn names(value: Option<&Value>) -> Option<Vec<String>> {
    match value {
        None => Some(Vec::new()),
        Some(list) => list
            .as_array()?
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect(),
    }
}

fn text<'a>(fields: &'a Map<String, Value>, name: &str) -> Option<Option<&'a str>> {
    match fields.get(name) {
        None => Some(None),
        Some(v) => Some(Some(v.as_str()?)),
    }
}

/// The filters of a query or subscription body (v2 `expression`, NGSI-LD
/// `q` and `geoQ`) into `query_attrs`.
fn filters(api: Api, fields: &Map<String, Value>, ngsi: &mut NgsiRequest) -> Option<()> {
    let (filter_fields, geo) = match api {
        Api::V2 => match fields.get("expression") {
            None => return Some(()),
            Some(expression) => {
                let expression = expression.as_object()?;
                (expression, expression)
            }
        },
        Api::Ld => match fields.get("geoQ") {
            None => (fields, fields),
            Some(geo) => (fields, geo.as_object()?),
        },
    };
    for name in ["q", "mq"] {
        if let Some(expression) = text(filter_fields, name)? {
            query::q_attributes(api, expression, &mut ngsi.query_attrs);
            let slot = if name == "q" {
                &mut ngsi.q
            } else {
                &mut ngsi.mq
            };
            if slot.is_some() {
                // In the URL and the body: which one would the broker use?
                return None;
            }
            *slot = Some(expression.to_string());
        }
    }
    if let Some(georel) = text(geo, "georel")? {
        if ngsi.georel.is_some() {
            return None;
        }
        ngsi.georel = Some(georel.to_string());
        super::geo_attribute(api, text(geo, "geoproperty")?, &mut ngsi.query_attrs);
    }
    Some(())
}

fn query_body(api: Api, fields: &Map<String, Value>, ngsi: &mut NgsiRequest) -> Option<()> {
    selectors(fields.get("entities"), ngsi)?;
    if api == Api::Ld {
        // NGSI-LD's Query may select types directly.
        if let Some(types) = text(fields, "type")?.filter(|t| *t != "Query") {
            ngsi.entity_types.extend(
                types
                    .split([',', ';', '|', '(', ')'])
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string),
            );
        }
    }
    let projected = names(fields.get("attrs"))?;
    for name in &projected {
        query::list_attributes(api, name, &mut ngsi.query_attrs);
    }
    ngsi.attrs.extend(projected);
    filters(api, fields, ngsi)
}

fn subscription(api: Api, fields: &Map<String, Value>, ngsi: &mut NgsiRequest) -> Option<()> {
    let (entities, watched, notification) = match api {
        Api::V2 => {
            let subject = match fields.get("subject") {
                None => None,
                Some(s) => Some(s.as_object()?),
            };
            let condition = match subject.and_then(|s| s.get("condition")) {
                None => None,
                Some(c) => Some(c.as_object()?),
            };
            if let Some(condition) = condition {
                filters(api, condition, ngsi)?;
            }
            (
                subject.and_then(|s| s.get("entities")),
                names(condition.and_then(|c| c.get("attrs")))?,
                fields.get("notification"),
            )
        }
        Api::Ld => {
            filters(api, fields, ngsi)?;
            (
                fields.get("entities"),
                names(fields.get("watchedAttributes"))?,
                fields.get("notification"),
            )
        }
    };
    let entities = selectors(entities, ngsi)?;
    for name in &watched {
        query::list_attributes(api, name, &mut ngsi.query_attrs);
    }
    let mut subscription = Subscription {
        notification_url: None,
        entities,
        attrs: Vec::new(),
    };
    if let Some(notification) = notification {
        let notification = notification.as_object()?;
        subscription.notification_url = notification_url(api, notification)?;
        let (listed, excepted) = match api {
            Api::V2 => (
                names(notification.get("attrs"))?,
                notification.contains_key("exceptAttrs"),
            ),
            Api::Ld => (names(notification.get("attributes"))?, false),
        };
        if listed.is_empty() || excepted {
            subscription.attrs.push(ANY.to_string());
        } else {
            for name in &listed {
                query::list_attributes(api, name, &mut subscription.attrs);
            }
        }
        subscription.attrs.sort();
        subscription.attrs.dedup();
        ngsi.attrs.extend(subscription.attrs.iter().cloned());
    }
    ngsi.subscription = Some(subscription);
    Some(())
}

/// Where the notifications go: one URL, or `None` for a body that names
/// two (which one would the broker use?) or a URL that is not a string.
fn notification_url(api: Api, notification: &Map<String, Value>) -> Option<Option<String>> {
    let mut urls = Vec::new();
    match api {
        Api::V2 => {
            for channel in ["http", "httpCustom", "mqtt", "mqttCustom"] {
                if let Some(target) = notification.get(channel) {
                    urls.push(target.as_object()?.get("url")?.as_str()?.to_string());
                }
            }
        }
        Api::Ld => {
            if let Some(endpoint) = notification.get("endpoint") {
                urls.push(endpoint.as_object()?.get("uri")?.as_str()?.to_string());
            }
        }
    }
    match urls.len() {
        0 => Some(None),
        1 => Some(urls.pop()),
        _ => None,
    }
}

fn registration(api: Api, fields: &Map<String, Value>, ngsi: &mut NgsiRequest) -> Option<()> {
    match api {
        Api::V2 => {
            let Some(provided) = fields.get("dataProvided") else {
                return Some(());
            };
            let provided = provided.as_object()?;
            selectors(provided.get("entities"), ngsi)?;
            ngsi.attrs.extend(names(provided.get("attrs"))?);
        }
        Api::Ld => {
            let Some(information) = fields.get("information") else {
                return Some(());
            };
            for item in information.as_array()? {
                let item = item.as_object()?;
                selectors(item.get("entities"), ngsi)?;
                ngsi.attrs.extend(names(item.get("propertyNames"))?);
                ngsi.attrs.extend(names(item.get("relationshipNames"))?);
            }
        }
    }
    Some(())
}
