//! Device identity from a client certificate Envoy has already verified
//! (the shell reads it only when `connection.mtls` is true). The mapping
//! from SPIFFE IDs or subject patterns to roles is configuration: a valid
//! certificate alone grants nothing unless mapped.

use regex::Regex;

use super::config::MtlsConfig;
use crate::config::ConfigError;
use crate::identity::{Identity, IdentityKind};
use crate::normalize::PeerCertificate;

#[derive(Debug)]
enum Matcher {
    UriSan(String),
    UriSanPrefix(String),
    Subject(Regex),
}

#[derive(Debug)]
struct DeviceRule {
    matcher: Matcher,
    client_id: Option<String>,
    roles: Vec<String>,
    scopes: Vec<String>,
}

#[derive(Debug, Default)]
pub struct DeviceMapper {
    require_mapping: bool,
    rules: Vec<DeviceRule>,
}

impl DeviceMapper {
    pub fn compile(config: &MtlsConfig) -> Result<Self, ConfigError> {
        let mut rules = Vec::new();
        for (index, device) in config.devices.iter().enumerate() {
            let at = format!("$.auth.mtls.devices[{index}]");
            let matcher = match (
                &device.uri_san,
                &device.uri_san_prefix,
                &device.subject_regex,
            ) {
                (Some(exact), None, None) if !exact.is_empty() => Matcher::UriSan(exact.clone()),
                (None, Some(prefix), None) => {
                    // A prefix that does not end a path segment would let
                    // `spiffe://city/sensors-evil` match `spiffe://city/sensors`.
                    if !prefix.contains("://") || !prefix.ends_with('/') {
                        return Err(ConfigError::new(
                            format!("{at}.uri_san_prefix"),
                            "must be a URI ending in `/` (e.g. spiffe://city.example/sensors/)",
                        ));
                    }
                    Matcher::UriSanPrefix(prefix.clone())
                }
                (None, None, Some(pattern)) => {
                    let anchored = format!("^(?:{pattern})$");
                    let regex = regex::RegexBuilder::new(&anchored)
                        .size_limit(1 << 20)
                        .build()
                        .map_err(|_| {
                            ConfigError::new(
                                format!("{at}.subject_regex"),
                                "is not a valid regular expression",
                            )
                        })?;
                    Matcher::Subject(regex)
                }
                _ => {
                    return Err(ConfigError::new(
                        at,
                        "exactly one of `uri_san`, `uri_san_prefix`, `subject_regex` is required",
                    ))
                }
            };
            rules.push(DeviceRule {
                matcher,
                client_id: device.client_id.clone(),
                roles: device.roles.clone(),
                scopes: device.scopes.clone(),
            });
        }
        Ok(Self {
            require_mapping: config.require_mapping,
            rules,
        })
    }

    /// The device identity, or `None` when the certificate names nothing or
    /// no mapping matches and one is required.
    pub fn identify(&self, certificate: &PeerCertificate) -> Option<Identity> {
        let uri = certificate.uri_san.as_deref().filter(|s| !s.is_empty());
        let subject = certificate.subject.as_deref().filter(|s| !s.is_empty());
        let name = uri.or(subject)?;
        let rule = self.rules.iter().find(|rule| match &rule.matcher {
            Matcher::UriSan(exact) => uri == Some(exact.as_str()),
            Matcher::UriSanPrefix(prefix) => {
                uri.is_some_and(|u| u.len() > prefix.len() && u.starts_with(prefix.as_str()))
            }
            Matcher::Subject(regex) => subject.is_some_and(|s| regex.is_match(s)),
        });
        if rule.is_none() && self.require_mapping {
            return None;
        }
        Some(Identity {
            kind: IdentityKind::Mtls,
            subject: Some(name.to_string()),
            client_id: Some(
                rule.and_then(|r| r.client_id.clone())
                    .unwrap_or_else(|| name.to_string()),
            ),
            roles: rule.map(|r| r.roles.clone()).unwrap_or_default(),
            scopes: rule.map(|r| r.scopes.clone()).unwrap_or_default(),
            claims: std::rc::Rc::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::config::DeviceMappingConfig;

    fn mapper() -> DeviceMapper {
        DeviceMapper::compile(&MtlsConfig {
            require_mapping: true,
            devices: vec![
                DeviceMappingConfig {
                    uri_san_prefix: Some("spiffe://city.example/sensors/parking/".into()),
                    roles: vec!["device:parking-sensor".into()],
                    ..Default::default()
                },
                DeviceMappingConfig {
                    subject_regex: Some(r"CN=meter-[0-9]+,O=City of Example".into()),
                    client_id: Some("parking-meters".into()),
                    roles: vec!["device:meter".into()],
                    ..Default::default()
                },
            ],
        })
        .unwrap()
    }

    fn cert(uri: Option<&str>, subject: Option<&str>) -> PeerCertificate {
        PeerCertificate {
            uri_san: uri.map(str::to_string),
            dns_san: None,
            subject: subject.map(str::to_string),
        }
    }

    #[test]
    fn spiffe_prefix_maps_to_device_roles() {
        let id = mapper()
            .identify(&cert(
                Some("spiffe://city.example/sensors/parking/p-17"),
                Some("CN=x"),
            ))
            .unwrap();
        assert_eq!(id.kind, IdentityKind::Mtls);
        assert_eq!(
            id.subject.as_deref(),
            Some("spiffe://city.example/sensors/parking/p-17")
        );
        assert_eq!(id.roles, vec!["device:parking-sensor"]);
    }

    #[test]
    fn subject_regex_is_anchored() {
        let m = mapper();
        let id = m
            .identify(&cert(None, Some("CN=meter-12,O=City of Example")))
            .unwrap();
        assert_eq!(id.client_id.as_deref(), Some("parking-meters"));
        assert!(m
            .identify(&cert(None, Some("CN=meter-12,O=City of Example,OU=evil")))
            .is_none());
    }

    #[test]
    fn unmapped_certificates_are_not_credentials_by_default() {
        let m = mapper();
        assert!(m
            .identify(&cert(Some("spiffe://city.example/sensors/parking"), None))
            .is_none());
        assert!(m
            .identify(&cert(Some("spiffe://other.example/x"), None))
            .is_none());
        assert!(m.identify(&cert(None, None)).is_none());
    }

    #[test]
    fn prefixes_must_end_a_segment() {
        let err = DeviceMapper::compile(&MtlsConfig {
            require_mapping: true,
            devices: vec![DeviceMappingConfig {
                uri_san_prefix: Some("spiffe://city.example/sensors".into()),
                ..Default::default()
            }],
        })
        .unwrap_err();
        assert_eq!(err.path, "$.auth.mtls.devices[0].uri_san_prefix");
    }
}
