//! The configuration types of IP rules (types only: `config` builds the
//! plugin document from them, [`super::IpRules`] compiles them).

use serde::Deserialize;

/// CIDR lists judged on the client address after `gateway.trusted_hops`,
/// before authentication. Written once under `gateway` (every request) and
/// per route. Entries are `network/prefix` (IPv4 or IPv6) or a bare address
/// (one host).
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, default)]
pub struct IpRulesConfig {
    /// When not empty, only clients inside one of these networks pass.
    pub allow: Vec<String>,
    /// Clients inside one of these networks are refused, even when `allow`
    /// holds them too.
    pub deny: Vec<String>,
}
