//! API keys, configured as SHA-256 digests. A presented key is hashed and
//! looked up by digest: plaintext keys are never stored or compared, and a
//! leaked configuration does not leak usable keys.

use std::collections::HashMap;
use std::rc::Rc;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::config::{ApiKeysConfig, Timestamp};
use super::credential::{self, Found};
use super::time::parse_rfc3339;
use crate::config::ConfigError;
use crate::identity::{Claims, Identity, IdentityKind};
use crate::normalize::RequestView;

/// The claim naming the API key's `id` in `Identity.claims` (rate limits and
/// policies key on it; `client_id` names the application).
pub const KEY_ID_CLAIM: &str = "api_key_id";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiKeyError {
    Unknown,
    Revoked,
    NotYetValid,
    Expired,
}

impl ApiKeyError {
    /// Shown to the client: one text for all, so an attacker cannot tell a
    /// revoked key from a guessed one.
    pub fn description(self) -> &'static str {
        "the API key is not valid"
    }

    pub fn reason(self) -> &'static str {
        match self {
            Self::Unknown => "api-key-unknown",
            Self::Revoked => "api-key-revoked",
            Self::NotYetValid => "api-key-not-yet-valid",
            Self::Expired => "api-key-expired",
        }
    }
}

#[derive(Debug)]
struct ApiKey {
    client_id: String,
    /// `{"api_key_id": id}`, shared by every request with this key, so its
    /// policy view is built once.
    claims: Rc<Claims>,
    roles: Vec<String>,
    scopes: Vec<String>,
    not_before: Option<u64>,
    not_after: Option<u64>,
    disabled: bool,
}

#[derive(Debug, Default)]
pub struct ApiKeyStore {
    header: String,
    query_param: String,
    by_digest: HashMap<[u8; 32], ApiKey>,
}

impl ApiKeyStore {
    pub fn compile(config: &ApiKeysConfig) -> Result<Self, ConfigError> {
        let at = "$.auth.api_keys";
        if !is_header_name(&config.header) {
            return Err(ConfigError::new(
                format!("{at}.header"),
                "must be a lower-case header name",
            ));
        }
        let mut by_digest = HashMap::new();
        let mut ids = std::collections::HashSet::new();
        for (index, key) in config.keys.iter().enumerate() {
            let at = format!("{at}.keys[{index}]");
            if key.id.is_empty() || !ids.insert(key.id.as_str()) {
                return Err(ConfigError::new(
                    format!("{at}.id"),
                    "key ids must be non-empty and unique",
                ));
            }
            if key.client_id.is_empty() {
                return Err(ConfigError::new(
                    format!("{at}.client_id"),
                    "must not be empty",
                ));
            }
            let digest = parse_digest(&key.sha256).ok_or_else(|| {
                ConfigError::new(
                    format!("{at}.sha256"),
                    "must be 64 hex digits (the SHA-256 of the key, never the key)",
                )
            })?;
            let not_before = timestamp(key.not_before.as_ref(), &format!("{at}.not_before"))?;
            let not_after = timestamp(key.not_after.as_ref(), &format!("{at}.not_after"))?;
            let mut claims = Map::new();
            claims.insert(KEY_ID_CLAIM.to_string(), Value::String(key.id.clone()));
            let entry = ApiKey {
                claims: Rc::new(claims.into()),
                client_id: key.client_id.clone(),
                roles: key.roles.clone(),
                scopes: key.scopes.clone(),
                not_before,
                not_after,
                disabled: key.disabled,
            };
            if by_digest.insert(digest, entry).is_some() {
                return Err(ConfigError::new(
                    format!("{at}.sha256"),
                    "the same digest is configured twice",
                ));
            }
        }
        Ok(Self {
            header: config.header.clone(),
            query_param: config.query_param.clone(),
            by_digest,
        })
    }

    pub fn query_param(&self) -> &str {
        &self.query_param
    }

    /// The key from the configured header, `Authorization: ApiKey …`, or —
    /// where the route allows it — the query.
    pub fn find(&self, view: &RequestView, allow_query: bool) -> Option<Found> {
        credential::from_header(view, &self.header, None)
            .or_else(|| credential::from_header(view, "authorization", Some("ApiKey")))
            .or_else(|| {
                allow_query
                    .then(|| credential::from_query(view, &self.query_param))
                    .flatten()
            })
    }

    /// Every API key in the request's headers (the key header and
    /// `Authorization: ApiKey`), found or not by [`ApiKeyStore::find`].
    pub fn in_headers(&self, view: &RequestView) -> Vec<Found> {
        [
            credential::from_header(view, &self.header, None),
            credential::from_header(view, "authorization", Some("ApiKey")),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    pub fn authenticate(&self, key: &str, now: u64) -> Result<Identity, ApiKeyError> {
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        let entry = self.by_digest.get(&digest).ok_or(ApiKeyError::Unknown)?;
        if entry.disabled {
            return Err(ApiKeyError::Revoked);
        }
        if entry.not_before.is_some_and(|nbf| now < nbf) {
            return Err(ApiKeyError::NotYetValid);
        }
        if entry.not_after.is_some_and(|naf| now >= naf) {
            return Err(ApiKeyError::Expired);
        }
        Ok(Identity {
            kind: IdentityKind::ApiKey,
            subject: Some(entry.client_id.clone()),
            client_id: Some(entry.client_id.clone()),
            roles: entry.roles.clone(),
            scopes: entry.scopes.clone(),
            claims: Rc::clone(&entry.claims),
        })
    }
}

fn parse_digest(hex_digest: &str) -> Option<[u8; 32]> {
    let bytes = hex::decode(hex_digest).ok()?;
    bytes.try_into().ok()
}

fn timestamp(value: Option<&Timestamp>, at: &str) -> Result<Option<u64>, ConfigError> {
    match value {
        None => Ok(None),
        Some(Timestamp::Unix(seconds)) => Ok(Some(*seconds)),
        Some(Timestamp::Rfc3339(text)) => parse_rfc3339(text).map(Some).ok_or_else(|| {
            ConfigError::new(
                at,
                "must be Unix seconds or RFC 3339 (2026-01-01T00:00:00Z)",
            )
        }),
    }
}

pub(super) fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::config::ApiKeyConfig;

    fn digest(key: &str) -> String {
        hex::encode(Sha256::digest(key.as_bytes()))
    }

    fn entry(id: &str, key: &str) -> ApiKeyConfig {
        ApiKeyConfig {
            id: id.into(),
            sha256: digest(key),
            client_id: format!("{id}-app"),
            roles: vec!["app".into()],
            scopes: vec!["parking:read".into()],
            not_before: None,
            not_after: None,
            disabled: false,
        }
    }

    fn store(keys: Vec<ApiKeyConfig>) -> ApiKeyStore {
        ApiKeyStore::compile(&ApiKeysConfig {
            keys,
            ..ApiKeysConfig::default()
        })
        .unwrap()
    }

    #[test]
    fn valid_key_gives_an_api_key_identity_with_its_id() {
        let store = store(vec![entry("parking", "pk_live_1")]);
        let identity = store.authenticate("pk_live_1", 1_000).unwrap();
        assert_eq!(identity.kind, IdentityKind::ApiKey);
        assert_eq!(identity.client_id.as_deref(), Some("parking-app"));
        assert_eq!(identity.claims[KEY_ID_CLAIM], "parking");
        assert_eq!(identity.scopes, vec!["parking:read"]);
    }

    #[test]
    fn wrong_revoked_and_expired_keys_are_refused() {
        let mut revoked = entry("old", "pk_old");
        revoked.disabled = true;
        let mut timed = entry("timed", "pk_timed");
        timed.not_before = Some(Timestamp::Unix(100));
        timed.not_after = Some(Timestamp::Rfc3339("1970-01-01T00:03:20Z".into()));
        let store = store(vec![revoked, timed]);
        assert_eq!(
            store.authenticate("pk_nope", 150),
            Err(ApiKeyError::Unknown)
        );
        assert_eq!(store.authenticate("pk_old", 150), Err(ApiKeyError::Revoked));
        assert_eq!(
            store.authenticate("pk_timed", 99),
            Err(ApiKeyError::NotYetValid)
        );
        assert!(store.authenticate("pk_timed", 100).is_ok());
        assert_eq!(
            store.authenticate("pk_timed", 200),
            Err(ApiKeyError::Expired)
        );
    }

    #[test]
    fn config_errors_name_the_path_and_never_the_digest() {
        let mut bad = entry("x", "k");
        bad.sha256 = "pk_plaintext_by_mistake".into();
        let err = ApiKeyStore::compile(&ApiKeysConfig {
            keys: vec![entry("a", "k1"), bad],
            ..ApiKeysConfig::default()
        })
        .unwrap_err();
        assert_eq!(err.path, "$.auth.api_keys.keys[1].sha256");
        assert!(!err.message.contains("pk_plaintext"));
        let err = ApiKeyStore::compile(&ApiKeysConfig {
            keys: vec![entry("a", "k1"), entry("a", "k2")],
            ..ApiKeysConfig::default()
        })
        .unwrap_err();
        assert_eq!(err.path, "$.auth.api_keys.keys[1].id");
        let mut bad_time = entry("t", "k");
        bad_time.not_after = Some(Timestamp::Rfc3339("tomorrow".into()));
        let err = ApiKeyStore::compile(&ApiKeysConfig {
            keys: vec![bad_time],
            ..ApiKeysConfig::default()
        })
        .unwrap_err();
        assert_eq!(err.path, "$.auth.api_keys.keys[0].not_after");
    }

    #[test]
    fn keys_are_found_in_header_authorization_and_allowed_query_only() {
        let store = store(vec![]);
        let view = |headers: &[(&str, &str)], query: &str| RequestView {
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            query: crate::normalize::parse_query(query),
            raw_query: query.into(),
            ..Default::default()
        };
        let found = store
            .find(&view(&[("x-api-key", "k1")], ""), false)
            .unwrap();
        assert_eq!(found.value, "k1");
        let found = store
            .find(&view(&[("authorization", "ApiKey k2")], ""), false)
            .unwrap();
        assert_eq!(found.value, "k2");
        assert!(store.find(&view(&[], "api_key=k3"), false).is_none());
        assert_eq!(
            store.find(&view(&[], "api_key=k3"), true).unwrap().value,
            "k3"
        );
    }
}
