//! Descriptor values → the bucket's key. Only a hash of the values is ever
//! stored, so shared data never holds a raw IP, subject or header value, and
//! every key has the same small size whatever a client sends.

use std::net::IpAddr;

use sha2::{Digest, Sha256};

use super::config::{Descriptor, OnMissing};
use crate::auth::api_key::KEY_ID_CLAIM;
use crate::config::RouteConfig;
use crate::identity::{Identity, IdentityKind};
use crate::normalize::RequestView;

/// 128 bits of SHA-256: collisions between honest keys are out of reach and
/// an attacker cannot aim at someone else's bucket.
pub type KeyHash = [u8; 16];

/// IPv6 clients usually hold a whole /64; keying by the full address would
/// let one client mint 2^64 buckets.
const IPV6_CLIENT_PREFIX_BITS: u32 = 64;

/// What a rule's key is made of, compiled.
#[derive(Debug, Clone)]
pub struct KeySpec {
    descriptors: Vec<Descriptor>,
    on_missing: OnMissing,
}

/// The request as the key sees it.
pub struct KeyInput<'a> {
    pub view: &'a RequestView,
    pub identity: &'a Identity,
    pub route: &'a RouteConfig,
}

impl KeySpec {
    /// Header names are matched lower-case, as the view stores them.
    pub fn new(descriptors: &[Descriptor], on_missing: OnMissing) -> Self {
        let descriptors = descriptors
            .iter()
            .map(|d| match d {
                Descriptor::Header(name) => Descriptor::Header(name.to_ascii_lowercase()),
                other => other.clone(),
            })
            .collect();
        Self {
            descriptors,
            on_missing,
        }
    }

    /// The bucket's key, or `None` when a value is missing and the rule
    /// skips such requests.
    pub fn hash(&self, input: &KeyInput<'_>) -> Option<KeyHash> {
        let mut hasher = Sha256::new();
        hasher.update(b"citygate-ratelimit-key-v1");
        for descriptor in &self.descriptors {
            // Tag and length prefixes keep ("ab","c") and ("a","bc") apart
            // and a missing value apart from an empty one.
            match value_of(descriptor, input) {
                Some(value) => {
                    hasher.update([1u8]);
                    hasher.update((value.len() as u64).to_be_bytes());
                    hasher.update(value.as_bytes());
                }
                None if self.on_missing == OnMissing::Skip => return None,
                None => hasher.update([0u8]),
            }
        }
        let digest = hasher.finalize();
        // Infallible (a digest is 32 bytes), and written so that no error
        // path can turn into "skip the rule".
        let mut key = [0u8; 16];
        for (slot, byte) in key.iter_mut().zip(digest.iter()) {
            *slot = *byte;
        }
        Some(key)
    }
}

fn value_of(descriptor: &Descriptor, input: &KeyInput<'_>) -> Option<String> {
    let identity = input.identity;
    match descriptor {
        Descriptor::Subject => identity.subject.clone(),
        Descriptor::ClientId => identity.client_id.clone(),
        // The key's configured `id`: the subject of an API-key identity is
        // its client application, which all of that client's keys share.
        Descriptor::ApiKeyId => match identity.kind {
            IdentityKind::ApiKey => identity
                .claims
                .get(KEY_ID_CLAIM)
                .and_then(|id| id.as_str())
                .map(str::to_string),
            _ => None,
        },
        Descriptor::ClientIp => input.view.client_ip.map(client_network),
        Descriptor::Route => Some(input.route.name.clone()),
        Descriptor::Method => Some(input.view.method.clone()),
        Descriptor::Header(name) => input.view.header(name).map(str::to_string),
        // Claims keep their JSON form so `1` and `"1"` stay different keys.
        Descriptor::Claim(name) => identity.claims.get(name).map(|v| v.to_string()),
    }
}

fn client_network(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let mask = u128::MAX << (128 - IPV6_CLIENT_PREFIX_BITS);
            format!(
                "{}/{IPV6_CLIENT_PREFIX_BITS}",
                std::net::Ipv6Addr::from(bits & mask)
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(name: &str) -> RouteConfig {
        serde_json::from_value(serde_json::json!({
            "name": name, "match": {"path_prefix": "/"}
        }))
        .unwrap()
    }

    fn view(ip: &str, headers: &[(&str, &str)]) -> RequestView {
        RequestView {
            method: "GET".into(),
            client_ip: ip.parse().ok(),
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    fn hash_of(spec: &KeySpec, view: &RequestView, identity: &Identity) -> Option<KeyHash> {
        let route = route("r");
        spec.hash(&KeyInput {
            view,
            identity,
            route: &route,
        })
    }

    #[test]
    fn different_values_give_different_keys_and_equal_values_equal_keys() {
        let spec = KeySpec::new(&[Descriptor::ClientIp], OnMissing::SharedBucket);
        let anon = Identity::anonymous();
        let a = hash_of(&spec, &view("10.0.0.1", &[]), &anon);
        let b = hash_of(&spec, &view("10.0.0.2", &[]), &anon);
        assert_ne!(a, b);
        assert_eq!(a, hash_of(&spec, &view("10.0.0.1", &[]), &anon));
        // The IPv4-mapped form of an address is the same client.
        assert_eq!(a, hash_of(&spec, &view("::ffff:10.0.0.1", &[]), &anon));
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64_prefix() {
        let spec = KeySpec::new(&[Descriptor::ClientIp], OnMissing::SharedBucket);
        let anon = Identity::anonymous();
        let a = hash_of(&spec, &view("2001:db8:1:2::1", &[]), &anon);
        let b = hash_of(&spec, &view("2001:db8:1:2:ffff::9", &[]), &anon);
        let c = hash_of(&spec, &view("2001:db8:1:3::1", &[]), &anon);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(
            client_network("2001:db8:1:2:ffff::9".parse().unwrap()),
            "2001:db8:1:2::/64"
        );
    }

    #[test]
    fn missing_values_share_a_bucket_or_skip_the_rule() {
        let shared = KeySpec::new(
            &[Descriptor::Header("X-Tenant".into())],
            OnMissing::SharedBucket,
        );
        let anon = Identity::anonymous();
        let missing = hash_of(&shared, &view("10.0.0.1", &[]), &anon);
        let empty = hash_of(&shared, &view("10.0.0.1", &[("x-tenant", "")]), &anon);
        let set = hash_of(&shared, &view("10.0.0.1", &[("x-tenant", "a")]), &anon);
        let upper = hash_of(&shared, &view("10.0.0.1", &[("x-tenant", "A")]), &anon);
        assert!(missing.is_some());
        assert_ne!(missing, empty);
        assert_ne!(set, upper, "header values are case-sensitive");
        assert_eq!(missing, hash_of(&shared, &view("10.9.9.9", &[]), &anon));

        let skip = KeySpec::new(&[Descriptor::Header("x-tenant".into())], OnMissing::Skip);
        assert_eq!(hash_of(&skip, &view("10.0.0.1", &[]), &anon), None);
        assert_eq!(
            hash_of(&skip, &view("10.0.0.1", &[("x-tenant", "a")]), &anon),
            set
        );
    }

    #[test]
    fn value_boundaries_cannot_be_shifted() {
        let spec = KeySpec::new(
            &[
                Descriptor::Header("a".into()),
                Descriptor::Header("b".into()),
            ],
            OnMissing::SharedBucket,
        );
        let anon = Identity::anonymous();
        let one = hash_of(&spec, &view("", &[("a", "xy"), ("b", "z")]), &anon);
        let two = hash_of(&spec, &view("", &[("a", "x"), ("b", "yz")]), &anon);
        assert_ne!(one, two);
    }

    #[test]
    fn identity_descriptors_read_the_identity() {
        let spec = KeySpec::new(
            &[Descriptor::ApiKeyId, Descriptor::Claim("plan".into())],
            OnMissing::Skip,
        );
        let mut identity = Identity::anonymous();
        identity.subject = Some("parking-app".into());
        identity
            .claims_mut()
            .insert(KEY_ID_CLAIM.into(), serde_json::json!("key-1"));
        identity
            .claims_mut()
            .insert("plan".into(), serde_json::json!("gold"));
        assert_eq!(hash_of(&spec, &view("", &[]), &identity), None);
        identity.kind = IdentityKind::ApiKey;
        let gold = hash_of(&spec, &view("", &[]), &identity);
        assert!(gold.is_some());
        // Another key of the same client application is another bucket.
        let mut other_key = identity.clone();
        other_key
            .claims_mut()
            .insert(KEY_ID_CLAIM.into(), serde_json::json!("key-2"));
        assert_ne!(gold, hash_of(&spec, &view("", &[]), &other_key));
        identity
            .claims_mut()
            .insert("plan".into(), serde_json::json!(1));
        let one = hash_of(&spec, &view("", &[]), &identity);
        identity
            .claims_mut()
            .insert("plan".into(), serde_json::json!("1"));
        assert_ne!(one, hash_of(&spec, &view("", &[]), &identity));
    }
}
