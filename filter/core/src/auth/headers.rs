//! The identity as upstream headers. Each configured name is removed first,
//! so a client can never pre-set one; values are percent-encoded where they
//! could break a header or a list.

use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};

use super::api_key::is_header_name;
use super::config::IdentityHeadersConfig;
use crate::config::ConfigError;
use crate::http::UpstreamEdits;
use crate::identity::Identity;

const VALUE: &AsciiSet = &CONTROLS.add(b'%');
/// List items additionally escape their separators.
const ITEM: &AsciiSet = &VALUE.add(b',').add(b' ');

/// Headers citygate must never overwrite with identity data.
const RESERVED: &[&str] = &[
    "authorization",
    "cookie",
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
];

#[derive(Debug, Default)]
pub struct IdentityHeaders {
    kind: Option<String>,
    subject: Option<String>,
    client_id: Option<String>,
    roles: Option<String>,
    scopes: Option<String>,
}

impl IdentityHeaders {
    pub fn compile(config: &IdentityHeadersConfig) -> Result<Self, ConfigError> {
        let fields = [
            ("kind", &config.kind),
            ("subject", &config.subject),
            ("client_id", &config.client_id),
            ("roles", &config.roles),
            ("scopes", &config.scopes),
        ];
        for (field, name) in fields {
            if let Some(name) = name {
                if !is_header_name(name) || RESERVED.contains(&name.as_str()) {
                    return Err(ConfigError::new(
                        format!("$.auth.identity_headers.{field}"),
                        "must be a lower-case header name that is not a standard request header",
                    ));
                }
            }
        }
        Ok(Self {
            kind: config.kind.clone(),
            subject: config.subject.clone(),
            client_id: config.client_id.clone(),
            roles: config.roles.clone(),
            scopes: config.scopes.clone(),
        })
    }

    pub fn edits(&self, identity: &Identity) -> UpstreamEdits {
        let mut edits = UpstreamEdits::default();
        let list = |items: &[String], separator: &str| {
            (!items.is_empty()).then(|| {
                items
                    .iter()
                    .map(|i| utf8_percent_encode(i, ITEM).to_string())
                    .collect::<Vec<_>>()
                    .join(separator)
            })
        };
        let values = [
            (&self.kind, Some(identity.kind.as_str().to_string())),
            (
                &self.subject,
                identity
                    .subject
                    .as_deref()
                    .map(|s| utf8_percent_encode(s, VALUE).to_string()),
            ),
            (
                &self.client_id,
                identity
                    .client_id
                    .as_deref()
                    .map(|s| utf8_percent_encode(s, VALUE).to_string()),
            ),
            (&self.roles, list(&identity.roles, ",")),
            (&self.scopes, list(&identity.scopes, " ")),
        ];
        for (name, value) in values {
            let Some(name) = name else { continue };
            edits.remove_headers.push(name.clone());
            if let Some(value) = value {
                edits.set_headers.push((name.clone(), value));
            }
        }
        edits
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::IdentityKind;

    #[test]
    fn every_configured_header_is_removed_then_set_when_known() {
        let headers = IdentityHeaders::compile(&IdentityHeadersConfig {
            scopes: None,
            ..IdentityHeadersConfig::default()
        })
        .unwrap();
        let mut id = Identity::anonymous();
        id.kind = IdentityKind::Jwt;
        id.subject = Some("u-1\r\nx-evil: 1".into());
        id.roles = vec!["operator".into(), "a,b".into()];
        id.scopes = vec!["parking:read".into()];
        let edits = headers.edits(&id);
        assert_eq!(
            edits.remove_headers,
            vec![
                "x-citygate-auth-kind",
                "x-citygate-subject",
                "x-citygate-client-id",
                "x-citygate-roles"
            ]
        );
        assert!(edits
            .set_headers
            .contains(&("x-citygate-subject".into(), "u-1%0D%0Ax-evil: 1".into())));
        assert!(edits
            .set_headers
            .contains(&("x-citygate-roles".into(), "operator,a%2Cb".into())));
        assert!(!edits
            .set_headers
            .iter()
            .any(|(n, _)| n == "x-citygate-client-id"));
    }

    #[test]
    fn reserved_names_are_refused() {
        let err = IdentityHeaders::compile(&IdentityHeadersConfig {
            subject: Some("authorization".into()),
            ..IdentityHeadersConfig::default()
        })
        .unwrap_err();
        assert_eq!(err.path, "$.auth.identity_headers.subject");
    }
}
