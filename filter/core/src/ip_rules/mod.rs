//! IP allow and deny rules: the client address (after the trusted-hops rule
//! of `normalize`) against CIDR lists, globally before a route is chosen and
//! per route before authentication. A client no rule can place — no address
//! at all — is refused wherever a rule applies: fail closed.

mod config;

pub use config::IpRulesConfig;

use std::net::IpAddr;

use ipnet::IpNet;

use crate::config::{ConfigError, RouteConfig};
use crate::deny::{Denial, Stage};
use crate::metrics::Metric;

/// One compiled list pair.
#[derive(Debug, Clone, Default)]
struct NetworkRules {
    /// `None`: no allow list, every address not denied passes.
    allow: Option<Vec<IpNet>>,
    deny: Vec<IpNet>,
}

/// Why a client was refused; the decision log's `reason`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: String,
}

impl Refusal {
    /// The denial the client gets: the same for every refusal, because which
    /// list or network refused it is for the decision log only.
    pub fn denial(&self) -> Denial {
        Denial::new(
            403,
            Stage::IpRules,
            "client-address-refused",
            "Forbidden",
            "requests from this client address are not accepted here",
            Metric::IpRulesDenied,
        )
    }
}

impl NetworkRules {
    fn compile(config: &IpRulesConfig, at: &str) -> Result<Self, ConfigError> {
        let allow = if config.allow.is_empty() {
            None
        } else {
            Some(parse_networks(&config.allow, &format!("{at}.allow"))?)
        };
        Ok(Self {
            allow,
            deny: parse_networks(&config.deny, &format!("{at}.deny"))?,
        })
    }

    fn is_empty(&self) -> bool {
        self.allow.is_none() && self.deny.is_empty()
    }

    /// `scope` names the rules in the reason (`gateway`, `route`).
    fn judge(&self, client: Option<IpAddr>, scope: &str) -> Result<(), Refusal> {
        if self.is_empty() {
            return Ok(());
        }
        let Some(client) = client else {
            return Err(Refusal {
                reason: format!("client address unknown and {scope} ip_rules apply"),
            });
        };
        // `::ffff:198.51.100.4` is the IPv4 client 198.51.100.4: judged by
        // the IPv4 lists, so a mapped address cannot step around them.
        let client = client.to_canonical();
        if let Some(network) = self.deny.iter().find(|n| n.contains(&client)) {
            return Err(Refusal {
                reason: format!("client address in denied network {network} ({scope} ip_rules)"),
            });
        }
        match &self.allow {
            Some(allowed) if !allowed.iter().any(|n| n.contains(&client)) => Err(Refusal {
                reason: format!("client address outside the allowed networks ({scope} ip_rules)"),
            }),
            _ => Ok(()),
        }
    }
}

/// Every IP rule of a configuration, compiled once per VM.
#[derive(Debug, Clone, Default)]
pub struct IpRules {
    gateway: NetworkRules,
    /// Per route, in route order.
    routes: Vec<NetworkRules>,
}

impl IpRules {
    pub fn compile(gateway: &IpRulesConfig, routes: &[RouteConfig]) -> Result<Self, ConfigError> {
        Ok(Self {
            gateway: NetworkRules::compile(gateway, "$.gateway.ip_rules")?,
            routes: routes
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    NetworkRules::compile(&r.ip_rules, &format!("$.routes[{i}].ip_rules"))
                })
                .collect::<Result<_, _>>()?,
        })
    }

    /// The gateway's rules, before a route is chosen: a refused network
    /// learns nothing about which paths exist.
    pub fn check_gateway(&self, client: Option<IpAddr>) -> Result<(), Refusal> {
        self.gateway.judge(client, "gateway")
    }

    /// The rules of the route at `route_index`, before authentication.
    pub fn check_route(&self, route_index: usize, client: Option<IpAddr>) -> Result<(), Refusal> {
        match self.routes.get(route_index) {
            Some(rules) => rules.judge(client, "route"),
            None => Ok(()),
        }
    }
}

fn parse_networks(entries: &[String], at: &str) -> Result<Vec<IpNet>, ConfigError> {
    let mut networks = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        networks.push(parse_network(entry).map_err(|m| ConfigError::new(format!("{at}[{i}]"), m))?);
    }
    // Overlapping and adjacent networks merge: fewer to scan per request.
    Ok(IpNet::aggregate(&networks))
}

fn parse_network(entry: &str) -> Result<IpNet, String> {
    let entry = entry.trim();
    if let Ok(address) = entry.parse::<IpAddr>() {
        return Ok(IpNet::from(address.to_canonical()));
    }
    let network: IpNet = entry.parse().map_err(|_| {
        format!("`{entry}` is not a CIDR network (`192.0.2.0/24`, `2001:db8::/32`) or an address")
    })?;
    // `10.1.2.3/8` could mean the host or the /8: refuse to guess.
    if network.addr() != network.network() {
        return Err(format!(
            "`{entry}` has host bits set; write the network `{}`",
            network.trunc()
        ));
    }
    Ok(network)
}

#[cfg(test)]
mod tests;
