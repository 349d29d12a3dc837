//! Which handler answers which path: NGSI-v2, NGSI-LD and Open311 (lists,
//! single resources, creation), `/echo` (what reached upstream), the JWKS and
//! the `/test/*` bodies.

use serde_json::{json, Map, Value};
use tiny_http::Method;

use super::datasets::{
    filtered, find, key_values, ngsi_v2_list, open311_list, wants_key_values, NGSI_LD, NGSI_V2,
    OPEN311,
};
use super::fixtures;
use super::jwks::{self, JwksControl};
use super::reply::{json_reply, ld_reply, Reply};
use super::request::ReceivedRequest;

pub(super) fn route(req: &ReceivedRequest, jwks: &JwksControl) -> Reply {
    let path = req.path.as_str();
    let get = req.method == Method::Get.as_str() || req.method == Method::Head.as_str();
    let post = req.method == Method::Post.as_str();
    match path {
        "/echo" => json_reply(200, &echo(req)),
        "/.well-known/jwks.json" => jwks::reply(jwks),
        "/v2/entities" | "/ngsi-ld/v1/entities" | "/open311/v2/requests.json" if post => {
            created(req)
        }
        "/v2/entities" if get => json_reply(200, &ngsi_v2_list(req)),
        "/ngsi-ld/v1/entities" if get => ld_reply(200, &filtered(NGSI_LD, req, "type")),
        "/open311/v2/requests.json" if get => json_reply(200, &open311_list(req)),
        "/test/chunked" => fixtures::chunked(),
        "/test/gzip" => fixtures::gzip(),
        "/test/malformed" => fixtures::malformed(),
        "/test/big" => fixtures::big(req),
        "/test/text" => fixtures::text(),
        _ => by_id(req, get, post).unwrap_or_else(|| not_found(path)),
    }
}

/// `/v2/entities/{id}`, `/ngsi-ld/v1/entities/{id}`, `/open311/v2/requests/{id}.json`.
fn by_id(req: &ReceivedRequest, get: bool, post: bool) -> Option<Reply> {
    let path = req.path.as_str();
    if let Some(id) = path.strip_prefix("/v2/entities/") {
        if post {
            return Some(created(req));
        }
        let keyvalues = wants_key_values(req);
        return Some(match find(NGSI_V2, "id", id) {
            Some(e) if get => json_reply(200, &if keyvalues { key_values(&e) } else { e }),
            Some(_) => method_not_allowed(),
            None => json_reply(
                404,
                &json!({"error": "NotFound", "description": "The requested entity has not been found. Check type and id"}),
            ),
        });
    }
    if let Some(id) = path.strip_prefix("/ngsi-ld/v1/entities/") {
        return Some(match find(NGSI_LD, "id", id) {
            Some(e) if get => ld_reply(200, &e),
            Some(_) => method_not_allowed(),
            None => ld_reply(
                404,
                &json!({"type": "https://uri.etsi.org/ngsi-ld/errors/ResourceNotFound", "title": "Entity not found", "detail": id}),
            ),
        });
    }
    let id = path
        .strip_prefix("/open311/v2/requests/")?
        .strip_suffix(".json")?;
    Some(match find(OPEN311, "service_request_id", id) {
        Some(r) if get => json_reply(200, &json!([r])),
        Some(_) => method_not_allowed(),
        None => json_reply(
            404,
            &json!([{"code": 404, "description": "Service request not found"}]),
        ),
    })
}

fn not_found(path: &str) -> Reply {
    json_reply(
        404,
        &json!({"error": "NotFound", "description": format!("no such resource: {path}")}),
    )
}

fn method_not_allowed() -> Reply {
    json_reply(
        405,
        &json!({"error": "MethodNotAllowed", "description": "method not allowed"}),
    )
}

fn created(req: &ReceivedRequest) -> Reply {
    let echoed: Value = serde_json::from_slice(&req.body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&req.body).into_owned()));
    let location = echoed
        .get("id")
        .and_then(Value::as_str)
        .map(|id| format!("{}/{id}", req.path))
        .unwrap_or_else(|| req.path.clone());
    Reply::Body {
        status: 201,
        content_type: "application/json",
        headers: vec![("location", location)],
        body: echoed.to_string().into_bytes(),
    }
}

fn echo(req: &ReceivedRequest) -> Value {
    let headers: Map<String, Value> = req.headers.iter().fold(Map::new(), |mut map, (k, v)| {
        // Repeated headers are joined the way HTTP allows.
        let joined = match map.get(k).and_then(Value::as_str) {
            Some(prev) => format!("{prev}, {v}"),
            None => v.clone(),
        };
        map.insert(k.clone(), Value::String(joined));
        map
    });
    json!({
        "method": req.method,
        "path": req.path,
        "query": req.query,
        "headers": headers,
        "body": String::from_utf8_lossy(&req.body),
    })
}
