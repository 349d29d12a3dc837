//! The configuration type of request limits (types only: `config` builds
//! the plugin document from it, [`super::RequestLimits`] compiles it).

use serde::Deserialize;

/// Bounds on what a client may send, judged before authentication. Written
/// once under `gateway` (the default of every route) and per route, where
/// each field set replaces the gateway's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
pub struct RequestLimitsConfig {
    /// Largest request body in bytes; a larger one is refused with 413
    /// before anything reaches the upstream. `0` admits no body at all.
    pub max_body_bytes: Option<u64>,
    /// Largest sum of the lengths of every header name and value the filter
    /// sees (pseudo-headers such as `:path` included); more is refused with
    /// 431 before authentication.
    pub max_header_bytes: Option<u64>,
}
