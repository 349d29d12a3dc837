//! Data minimization of responses (GDPR art. 5(1)(c), art. 25): each caller
//! receives only what its purpose needs. The policy's `redact` (or the
//! route's default) names profiles; each profile allowlists and/or removes,
//! replaces, masks, pseudonymizes, generalizes or drops what its rules
//! select in the JSON body. Anything that cannot be minimized becomes a 502:
//! no failure path passes the upstream's bytes on.

mod actions;
mod body;
mod config;
mod detect;
mod generalize;
mod profile;
mod pseudonym;
mod request;
mod select;

use std::collections::BTreeMap;

pub use actions::Counts;
pub use body::{is_json_media_type, BodyAction, BufferPlan, ContentCoding};
pub use config::{
    ActionConfig, DetectorsConfig, GeneralizeConfig, Mode, PredicateConfig, ProfileConfig,
    RedactionConfig, RouteRedaction, RuleConfig, Secret, TimeUnit, DEFAULT_MAX_BODY_BYTES,
};
pub use request::request_edits;

use crate::config::{ConfigError, RouteConfig};
use crate::decision_log::RedactionSummary;
use crate::deny::{Denial, Stage};
use crate::host::Host;
use crate::metrics::Metric;
use actions::Work;
use detect::DetectorLibrary;
use profile::{Needs, Profile};
use pseudonym::{Pseudonymizer, MIN_KEY_BYTES};

/// Largest `max_body_bytes` a route may set: the whole body and its rewrite
/// sit in the worker's memory at once.
pub const MAX_BODY_BYTES_LIMIT: usize = 64 * 1024 * 1024;

/// Response headers a route may not remove: minimization depends on them.
const PROTECTED_RESPONSE_HEADERS: &[&str] = &[
    "content-type",
    "content-encoding",
    "content-length",
    "transfer-encoding",
];
/// Request headers a route may not drop: the request would not route.
const PROTECTED_REQUEST_HEADERS: &[&str] = &["host", "content-length", "transfer-encoding"];

/// What the response of one forwarded request gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseRedaction {
    /// Profiles applied in order; empty means the body passes untouched.
    pub profiles: Vec<String>,
    pub allow_non_json: bool,
    pub max_body_bytes: usize,
    /// A HEAD response has no body to minimize.
    pub head_request: bool,
    /// The reply is one NGSI attribute whose name is only in the path
    /// (see [`ngsi_attribute`]); it is minimized as that attribute.
    pub ngsi_attribute: Option<String>,
}

/// The attribute an NGSI attribute sub-resource serves:
/// `…/entities/{id}/attrs/{name}` (the attribute) and
/// `…/entities/{id}/attrs/{name}/value` (its value). Their replies do not
/// carry the name, so a rule naming the attribute would miss them.
pub fn ngsi_attribute(path: &str) -> Option<String> {
    let segments: Vec<&str> = path.split('/').collect();
    match segments.as_slice() {
        [.., "entities", id, "attrs", name] | [.., "entities", id, "attrs", name, "value"]
            if !id.is_empty() && !name.is_empty() =>
        {
            Some((*name).to_string())
        }
        _ => None,
    }
}

impl Default for ResponseRedaction {
    fn default() -> Self {
        Self {
            profiles: Vec::new(),
            allow_non_json: false,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            head_request: false,
            ngsi_attribute: None,
        }
    }
}

/// A minimized body and what was done to it (counts only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Minimized {
    pub body: Vec<u8>,
    pub summary: RedactionSummary,
}

#[derive(Debug, Default)]
pub struct Redactor {
    profiles: BTreeMap<String, Profile>,
    pseudonyms: Option<Pseudonymizer>,
    startup_warnings: Vec<String>,
}

impl Redactor {
    pub fn compile(config: &RedactionConfig, routes: &[RouteConfig]) -> Result<Self, ConfigError> {
        let library =
            DetectorLibrary::compile(&config.detectors.licence_plates, &config.detectors.custom)
                .map_err(|(relative, message)| {
                    ConfigError::new(format!("$.redaction.detectors{relative}"), message)
                })?;
        let mut needs = Needs::default();
        let mut profiles = BTreeMap::new();
        for (name, profile) in &config.profiles {
            let at = format!("$.redaction.profiles{}", member(name));
            if name.is_empty() {
                return Err(ConfigError::new(at, "profile names must not be empty"));
            }
            profiles.insert(
                name.clone(),
                Profile::compile(&at, profile, &library, &mut needs)?,
            );
        }
        let pseudonyms = compile_keys(config, &needs)?;
        let startup_warnings = validate_routes(routes, &profiles)?;
        Ok(Self {
            profiles,
            pseudonyms,
            startup_warnings,
        })
    }

    /// Fail-open switches in force, one line each, for the start-up log.
    pub fn startup_warnings(&self) -> &[String] {
        &self.startup_warnings
    }

    /// What the response gets: the decision's profiles, else the route's
    /// default. Refused up-front (500, nothing reaches the upstream) when a
    /// policy names a profile that does not exist or a route that requires
    /// one has none: nothing sensible could be served.
    pub fn plan_response(
        &self,
        route: &RouteConfig,
        chosen: &[String],
        method: &str,
    ) -> Result<ResponseRedaction, Denial> {
        let options = &route.redaction;
        let mut profiles: Vec<String> = Vec::new();
        let names = if chosen.is_empty() {
            options.profile.iter().cloned().collect()
        } else {
            chosen.to_vec()
        };
        for name in names {
            if !self.profiles.contains_key(&name) {
                return Err(profile_denial(
                    "redaction-profile-unknown",
                    "the access policy chose a redaction profile that is not configured",
                ));
            }
            if !profiles.contains(&name) {
                profiles.push(name);
            }
        }
        if profiles.is_empty() && options.require_profile {
            return Err(profile_denial(
                "redaction-profile-missing",
                "this API requires a redaction profile and none was chosen",
            ));
        }
        Ok(ResponseRedaction {
            profiles,
            allow_non_json: options.allow_non_json,
            max_body_bytes: options.max_body_bytes,
            head_request: method == "HEAD",
            ngsi_attribute: None,
        })
    }

    /// Upstream headers that never reach the client on this route.
    pub fn response_headers_to_remove(&self, route: &RouteConfig) -> Vec<String> {
        route.redaction.remove_response_headers.clone()
    }

    /// The response headers are in: pass the body, buffer it for
    /// minimization, or refuse what cannot be minimized right away.
    pub fn on_response_headers(
        &self,
        redaction: &ResponseRedaction,
        status: u16,
        headers: &[(String, String)],
        end_of_stream: bool,
        host: &dyn Host,
    ) -> Result<BodyAction, Denial> {
        body::plan(redaction, status, headers, end_of_stream, host)
    }

    /// The whole body is in: decode, parse, apply the profiles in order,
    /// re-serialize. Duplicate member names collapse to the last one while
    /// parsing, so no hidden duplicate survives the rewrite; nesting deeper
    /// than serde_json's limit (128) and invalid UTF-8 fail to parse (502).
    pub fn minimize(
        &self,
        redaction: &ResponseRedaction,
        buffer: &BufferPlan,
        body: &[u8],
        host: &dyn Host,
    ) -> Result<Minimized, Denial> {
        let decoded = body::decode(buffer, body)?;
        let mut summary = RedactionSummary {
            profiles: redaction.profiles.clone(),
            counts: BTreeMap::new(),
        };
        if decoded.is_empty() {
            return Ok(Minimized {
                body: Vec::new(),
                summary,
            });
        }
        let mut document: serde_json::Value = serde_json::from_slice(&decoded)
            .map_err(|_| Denial::bad_gateway("the upstream response is not well-formed JSON"))?;
        let mut work = Work {
            pseudonyms: self.pseudonyms.as_ref(),
            counts: Counts::default(),
        };
        // An attribute served alone is minimized as that attribute of an
        // entity, then unwrapped (`null` if a profile removed it).
        if let Some(name) = &redaction.ngsi_attribute {
            let mut entity = serde_json::Map::new();
            entity.insert(name.clone(), document);
            document = serde_json::Value::Object(entity);
        }
        for name in &redaction.profiles {
            let profile = self.profiles.get(name).ok_or_else(|| {
                Denial::bad_gateway("the response's redaction profile is not configured")
            })?;
            profile.apply(&mut document, &mut work);
        }
        if let Some(name) = &redaction.ngsi_attribute {
            document = match document {
                serde_json::Value::Object(mut entity) => {
                    entity.remove(name).unwrap_or(serde_json::Value::Null)
                }
                _ => serde_json::Value::Null,
            };
        }
        let body = serde_json::to_vec(&document)
            .map_err(|_| Denial::bad_gateway("the minimized response cannot be written"))?;
        record_metrics(&work.counts, host);
        summary.counts = work.counts.as_map();
        Ok(Minimized { body, summary })
    }

    pub fn too_large(&self, max_bytes: usize) -> Denial {
        body::too_large(max_bytes)
    }
}

fn profile_denial(problem: &'static str, detail: &str) -> Denial {
    Denial::new(
        500,
        Stage::Redaction,
        problem,
        "Internal Server Error",
        detail,
        Metric::RedactionFailedClosed,
    )
}

fn record_metrics(counts: &Counts, host: &dyn Host) {
    host.count(Metric::RedactionResponses, 1);
    let by_metric = [
        (Metric::RedactionFields, counts.fields()),
        (
            Metric::RedactionRemoved,
            counts.removed + counts.dropped_entities,
        ),
        (Metric::RedactionMasked, counts.masked + counts.replaced),
        (Metric::RedactionHashed, counts.hashed),
        (Metric::RedactionGeneralized, counts.generalized),
        (Metric::RedactionDetectorHits, counts.detector_hits),
    ];
    for (metric, n) in by_metric {
        if n > 0 {
            host.count(metric, n);
        }
    }
}

/// `.name` or `["odd name"]`, as config::error prints JSON paths.
fn member(key: &str) -> String {
    if !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        format!(".{key}")
    } else {
        format!("[{}]", serde_json::Value::String(key.to_string()))
    }
}

fn compile_keys(
    config: &RedactionConfig,
    needs: &Needs,
) -> Result<Option<Pseudonymizer>, ConfigError> {
    for (id, secret) in &config.keys {
        let at = format!("$.redaction.keys{}", member(id));
        if !pseudonym::valid_key_id(id) {
            return Err(ConfigError::new(
                at,
                "key ids are 1-16 characters from a-z, 0-9, `_`, `-`",
            ));
        }
        if secret.0.len() < MIN_KEY_BYTES {
            return Err(ConfigError::new(
                at,
                format!("pseudonym keys must be at least {MIN_KEY_BYTES} bytes"),
            ));
        }
    }
    let Some(active) = &config.active_key else {
        return match &needs.first_hash_rule {
            Some(rule) => Err(ConfigError::new(
                rule.clone(),
                "`hash` needs `redaction.active_key` and its key in `redaction.keys`",
            )),
            None => Ok(None),
        };
    };
    let Some(key) = config.keys.get(active) else {
        return Err(ConfigError::new(
            "$.redaction.active_key",
            format!("`{active}` is not a key id in `redaction.keys`"),
        ));
    };
    let ids: Vec<&str> = config.keys.keys().map(String::as_str).collect();
    let mut prefixes: Vec<&str> = needs.hash_prefixes.iter().map(String::as_str).collect();
    if prefixes.is_empty() {
        prefixes.push("pn_");
    }
    Pseudonymizer::new(active, key.0.as_bytes(), &ids, &prefixes)
        .map(Some)
        .map_err(|_| ConfigError::new("$.redaction.keys", "key ids cannot form a token pattern"))
}

fn validate_routes(
    routes: &[RouteConfig],
    profiles: &BTreeMap<String, Profile>,
) -> Result<Vec<String>, ConfigError> {
    let mut warnings = Vec::new();
    for (index, route) in routes.iter().enumerate() {
        let at = format!("$.routes[{index}].redaction");
        let options = &route.redaction;
        if let Some(name) = &options.profile {
            if !profiles.contains_key(name) {
                return Err(ConfigError::new(
                    format!("{at}.profile"),
                    format!("unknown redaction profile `{name}`"),
                ));
            }
        }
        if options.max_body_bytes == 0 || options.max_body_bytes > MAX_BODY_BYTES_LIMIT {
            return Err(ConfigError::new(
                format!("{at}.max_body_bytes"),
                format!("must be between 1 and {MAX_BODY_BYTES_LIMIT}"),
            ));
        }
        if options.client_ip_prefix_v4.is_some_and(|p| p > 32) {
            return Err(ConfigError::new(
                format!("{at}.client_ip_prefix_v4"),
                "must be at most 32",
            ));
        }
        if options.client_ip_prefix_v6.is_some_and(|p| p > 128) {
            return Err(ConfigError::new(
                format!("{at}.client_ip_prefix_v6"),
                "must be at most 128",
            ));
        }
        check_header_names(
            &format!("{at}.remove_response_headers"),
            &options.remove_response_headers,
            PROTECTED_RESPONSE_HEADERS,
        )?;
        check_header_names(
            &format!("{at}.drop_request_headers"),
            &options.drop_request_headers,
            PROTECTED_REQUEST_HEADERS,
        )?;
        if options.allow_non_json {
            warnings.push(format!(
                "citygate: route `{}` lets non-JSON responses pass unminimized (redaction.allow_non_json)",
                route.name
            ));
        }
    }
    Ok(warnings)
}

fn check_header_names(at: &str, names: &[String], protected: &[&str]) -> Result<(), ConfigError> {
    for (i, name) in names.iter().enumerate() {
        let token = !name.is_empty()
            && name.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.!#$%&'*+^`|~".contains(&b)
            });
        if !token {
            return Err(ConfigError::new(
                format!("{at}[{i}]"),
                "header names are lower-case HTTP tokens (no pseudo-headers)",
            ));
        }
        if protected.contains(&name.as_str()) {
            return Err(ConfigError::new(
                format!("{at}[{i}]"),
                format!("`{name}` cannot be removed: minimization or routing depends on it"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
