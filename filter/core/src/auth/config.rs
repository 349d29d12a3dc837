//! The `auth` section of the plugin configuration and each route's `auth`.
//! Plain serde structs; their semantic checks live in `compile` functions
//! next to the code that uses them.

use serde::Deserialize;
use serde_json::Value;

use crate::config::ConfigError;

#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub api_keys: ApiKeysConfig,
    pub jwt: JwtConfig,
    pub introspection: IntrospectionConfig,
    pub mtls: MtlsConfig,
    pub identity_headers: IdentityHeadersConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
pub struct ApiKeysConfig {
    /// Request header carrying the key. `Authorization: ApiKey <key>` is
    /// always accepted too.
    pub header: String,
    /// Query parameter carrying the key, read only on routes with
    /// `credentials_in_query: true`.
    pub query_param: String,
    pub keys: Vec<ApiKeyConfig>,
}

impl Default for ApiKeysConfig {
    fn default() -> Self {
        Self {
            header: "x-api-key".to_string(),
            query_param: "api_key".to_string(),
            keys: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// Names the key in logs and rate limits (never the key itself).
    pub id: String,
    /// Lower- or upper-case hex SHA-256 of the key (`citygate hash-key`).
    pub sha256: String,
    pub client_id: String,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Unix seconds or RFC 3339 (`2026-01-01T00:00:00Z`).
    #[serde(default)]
    pub not_before: Option<Timestamp>,
    #[serde(default)]
    pub not_after: Option<Timestamp>,
    /// Revoked: the key is refused (kept in the config so logs can name it).
    #[serde(default)]
    pub disabled: bool,
}

/// A secret from the configuration: its `Debug` never shows the value, so
/// printing a configuration cannot leak it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(untagged)]
pub enum Timestamp {
    Unix(u64),
    Rfc3339(String),
}

#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
pub struct JwtConfig {
    pub providers: Vec<JwtProviderConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct JwtProviderConfig {
    /// Referenced by routes' `jwt_providers`; names shared-data keys.
    pub name: String,
    /// Exact `iss` value.
    pub issuer: String,
    /// The token's `aud` must contain one of these (empty: `aud` not checked).
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Allowed `alg` values, e.g. `["RS256"]`. Required: no default list.
    pub algorithms: Vec<String>,
    #[serde(default = "default_clock_skew")]
    pub clock_skew_seconds: u64,
    #[serde(default = "default_max_token_bytes")]
    pub max_token_bytes: usize,
    /// Stricter than Envoy's jwt_authn: tokens without `exp` are refused.
    #[serde(default = "default_true")]
    pub require_exp: bool,
    /// Required `typ` header, e.g. `at+jwt` (RFC 9068).
    #[serde(default)]
    pub typ: Option<String>,
    /// Where tokens are read, in order. Default: `Authorization: Bearer`.
    #[serde(default = "default_sources")]
    pub sources: Vec<TokenSourceConfig>,
    pub keys: JwtKeysConfig,
    #[serde(default)]
    pub claims: ClaimMappingConfig,
}

fn default_clock_skew() -> u64 {
    60
}

fn default_max_token_bytes() -> usize {
    8192
}

fn default_true() -> bool {
    true
}

fn default_sources() -> Vec<TokenSourceConfig> {
    vec![TokenSourceConfig {
        header: Some("authorization".to_string()),
        prefix: Some("Bearer".to_string()),
        ..TokenSourceConfig::default()
    }]
}

/// Exactly one of `header`, `query`, `cookie`.
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct TokenSourceConfig {
    pub header: Option<String>,
    /// Authentication scheme before the token in a header (`Bearer`).
    pub prefix: Option<String>,
    /// Read only on routes with `credentials_in_query: true`.
    pub query: Option<String>,
    pub cookie: Option<String>,
}

/// Exactly one of `jwks` (inline), `pem`, `hmac_secret`, `remote`.
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct JwtKeysConfig {
    pub jwks: Option<Value>,
    /// A public key or certificate.
    pub pem: Option<String>,
    /// For HS*; write it as `${env:NAME}`. At least 32 bytes.
    pub hmac_secret: Option<Secret>,
    /// `kid` for a `pem` or `hmac_secret` key.
    pub kid: Option<String>,
    pub remote: Option<RemoteJwksConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RemoteJwksConfig {
    /// The Envoy cluster serving the JWKS (TLS configured on the cluster).
    pub cluster: String,
    /// `:authority` of the fetch, e.g. `idp.city.example`.
    pub authority: String,
    /// `:path`, e.g. `/realms/city/protocol/openid-connect/certs`.
    pub path: String,
    #[serde(default = "default_refresh")]
    pub refresh_seconds: u64,
    #[serde(default = "default_fetch_timeout")]
    pub timeout_ms: u64,
    /// How long a request waits for the first key set before a 503.
    #[serde(default = "default_max_wait")]
    pub max_wait_ms: u64,
    /// Minimum interval between refetches triggered by unknown `kid`s.
    #[serde(default = "default_min_refetch")]
    pub min_refetch_seconds: u64,
    /// Delay before retrying after a failed fetch.
    #[serde(default = "default_retry")]
    pub retry_seconds: u64,
}

fn default_refresh() -> u64 {
    600
}

fn default_fetch_timeout() -> u64 {
    5000
}

fn default_max_wait() -> u64 {
    3000
}

fn default_min_refetch() -> u64 {
    30
}

fn default_retry() -> u64 {
    5
}

/// Claim paths (dotted, e.g. Keycloak's `realm_access.roles`). A string
/// value is split on spaces (OAuth `scope`), an array gives its strings.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
pub struct ClaimMappingConfig {
    pub subject: String,
    /// The first path present wins.
    pub client_id: Vec<String>,
    /// Every path contributes.
    pub roles: Vec<String>,
    pub scopes: Vec<String>,
}

impl Default for ClaimMappingConfig {
    fn default() -> Self {
        Self {
            subject: "sub".to_string(),
            client_id: vec!["azp".to_string(), "client_id".to_string()],
            roles: vec!["roles".to_string()],
            scopes: vec!["scope".to_string(), "scp".to_string()],
        }
    }
}

/// Opaque bearer tokens, checked at an authorization server's RFC 7662
/// introspection endpoint.
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
pub struct IntrospectionConfig {
    pub providers: Vec<IntrospectionProviderConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct IntrospectionProviderConfig {
    /// Referenced by routes' `introspection_providers`; names metrics' log lines.
    pub name: String,
    /// The Envoy cluster of the authorization server (TLS on the cluster).
    pub cluster: String,
    /// `:authority` of the call, e.g. `idp.city.example`.
    pub authority: String,
    /// `:path` of the introspection endpoint, e.g.
    /// `/realms/city/protocol/openid-connect/token/introspect`.
    pub path: String,
    /// citygate's own client at the authorization server (HTTP Basic).
    pub client_id: String,
    /// Write it as `${env:NAME}`.
    pub client_secret: Secret,
    /// When set, the answer's `iss` must be exactly this.
    #[serde(default)]
    pub issuer: Option<String>,
    /// The answer's `aud` must contain one of these (empty: not checked).
    #[serde(default)]
    pub audiences: Vec<String>,
    /// The request waits at most this long for the answer, then 503.
    #[serde(default = "default_introspection_timeout")]
    pub timeout_ms: u64,
    /// An active answer is reused until the token's `exp`, at most this long.
    #[serde(default = "default_active_cache")]
    pub cache_seconds: u64,
    /// An inactive answer is reused this long, so a flood of made-up
    /// tokens costs the authorization server one call per token.
    #[serde(default = "default_inactive_cache")]
    pub inactive_cache_seconds: u64,
    /// Answers kept per worker (active and inactive each).
    #[serde(default = "default_introspection_cache_capacity")]
    pub cache_capacity: usize,
    /// Calls in flight per worker; past it a request gets 503 at once.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    #[serde(default = "default_max_opaque_token_bytes")]
    pub max_token_bytes: usize,
    /// Where tokens are read, in order. Default: `Authorization: Bearer`.
    #[serde(default = "default_sources")]
    pub sources: Vec<TokenSourceConfig>,
    /// Members of the introspection answer → identity (the same paths as
    /// a JWT's claims).
    #[serde(default)]
    pub claims: ClaimMappingConfig,
}

fn default_introspection_timeout() -> u64 {
    2000
}

fn default_active_cache() -> u64 {
    300
}

fn default_inactive_cache() -> u64 {
    10
}

fn default_introspection_cache_capacity() -> usize {
    4096
}

fn default_max_in_flight() -> usize {
    64
}

fn default_max_opaque_token_bytes() -> usize {
    4096
}

#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
pub struct MtlsConfig {
    /// Certificates no mapping matches are not accepted as credentials.
    pub require_mapping: bool,
    /// First match wins.
    pub devices: Vec<DeviceMappingConfig>,
}

impl Default for MtlsConfig {
    fn default() -> Self {
        Self {
            require_mapping: true,
            devices: Vec::new(),
        }
    }
}

/// Exactly one of `uri_san`, `uri_san_prefix`, `subject_regex`.
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct DeviceMappingConfig {
    /// Exact URI SAN, e.g. a SPIFFE ID.
    pub uri_san: Option<String>,
    /// SPIFFE-style prefix ending in `/`, e.g. `spiffe://city.example/sensors/`.
    pub uri_san_prefix: Option<String>,
    /// Anchored regular expression over the subject DN.
    pub subject_regex: Option<String>,
    /// `client_id` of the identity (default: the URI SAN or subject).
    pub client_id: Option<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// Upstream headers carrying the identity. `null` disables one. Whatever a
/// client sent under these names is removed first.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
pub struct IdentityHeadersConfig {
    pub kind: Option<String>,
    pub subject: Option<String>,
    pub client_id: Option<String>,
    pub roles: Option<String>,
    pub scopes: Option<String>,
}

impl Default for IdentityHeadersConfig {
    fn default() -> Self {
        Self {
            kind: Some("x-citygate-auth-kind".to_string()),
            subject: Some("x-citygate-subject".to_string()),
            client_id: Some("x-citygate-client-id".to_string()),
            roles: Some("x-citygate-roles".to_string()),
            scopes: Some("x-citygate-scopes".to_string()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    ApiKey,
    Jwt,
    /// An opaque bearer token, checked by RFC 7662 introspection.
    Introspection,
    Mtls,
}

/// What a route requires of the caller.
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RouteAuth {
    /// Callers without credentials pass as `anonymous`. A credential that is
    /// present but invalid is still refused, never downgraded.
    #[serde(default)]
    pub anonymous: bool,
    /// Accepted credentials; the first one present (in this order) is used.
    #[serde(default)]
    pub methods: Vec<AuthMethod>,
    /// Restricts `jwt` to these providers (default: all).
    #[serde(default)]
    pub jwt_providers: Vec<String>,
    /// Restricts `introspection` to these providers (default: all).
    #[serde(default)]
    pub introspection_providers: Vec<String>,
    /// The identity must hold every one of these scopes (else 403).
    #[serde(default)]
    pub required_scopes: Vec<String>,
    /// The identity must hold at least one of these roles (else 403).
    #[serde(default)]
    pub required_roles: Vec<String>,
    /// Allow API keys / tokens in the query string (removed before upstream).
    #[serde(default)]
    pub credentials_in_query: bool,
    /// Forward the credential header or cookie upstream (default: removed).
    #[serde(default)]
    pub forward_credential: bool,
}

/// A provider's `name` (JWT or introspection): it appears in route
/// configuration, metrics and log lines, so only letters, digits, `-` and
/// `_` are allowed.
pub(crate) fn check_provider_name(at: &str, name: &str) -> Result<(), ConfigError> {
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(ConfigError::new(
            format!("{at}.name"),
            "must be non-empty letters, digits, `-` or `_`",
        ))
    }
}
