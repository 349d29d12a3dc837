//! The configuration type of CORS (types only: `config` builds the plugin
//! document from it, [`super::Cors`] compiles it).

use serde::Deserialize;

/// Cross-origin access for browser applications on other origins (a city's
/// maps or dashboards). citygate answers preflights itself, before
/// authentication and without the upstream, and writes the CORS headers of
/// actual responses; the upstream's own `access-control-*` headers are
/// dropped on a route that has this block.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct CorsConfig {
    /// Origins allowed, each `scheme://host[:port]` exactly as a browser
    /// sends it, or `"*"` for any origin (never with `allow_credentials`).
    /// `"null"` is refused: sandboxed documents and local files all send it.
    pub allow_origins: Vec<String>,
    /// Methods a preflight may ask for; empty means the route's
    /// `match.methods`, or `GET`, `HEAD`, `POST` when those are empty too.
    #[serde(default)]
    pub allow_methods: Vec<String>,
    /// Request headers a preflight may ask for (e.g. `authorization`,
    /// `content-type`, `x-api-key`); the CORS-safelisted `accept`,
    /// `accept-language` and `content-language` always pass.
    #[serde(default)]
    pub allow_headers: Vec<String>,
    /// Response headers the browser application may read (e.g. `ratelimit`).
    #[serde(default)]
    pub expose_headers: Vec<String>,
    /// How long a browser may cache a preflight answer.
    #[serde(default)]
    pub max_age_seconds: Option<u32>,
    /// Let browsers send cookies and `Authorization` cross-origin and read
    /// the answer (`access-control-allow-credentials: true`).
    #[serde(default)]
    pub allow_credentials: bool,
}
