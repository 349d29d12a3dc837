//! The authentication stage's denials: RFC 6750 `WWW-Authenticate`
//! challenges for Bearer tokens, the same shape for `ApiKey`, 403
//! `insufficient_scope`, and 503 while keys are unavailable. Descriptions are
//! fixed texts: nothing from the request is echoed.

use super::api_key::ApiKeyError;
use super::config::AuthMethod;
use super::jwt::JwtError;
use crate::deny::{Denial, Stage};
use crate::identity::{Identity, IdentityKind};
use crate::metrics::Metric;

/// A quoted-string (RFC 9110 §5.6.4).
fn quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars().filter(|c| !c.is_control()) {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

fn challenge(scheme: &str, realm: &str, error: Option<(&str, &str)>) -> String {
    let mut value = format!("{scheme} realm={}", quoted(realm));
    if let Some((code, description)) = error {
        value.push_str(&format!(
            ", error={}, error_description={}",
            quoted(code),
            quoted(description)
        ));
    }
    value
}

/// No credential (RFC 6750 §3.1: no `error` then). One challenge per
/// accepted scheme; an mTLS-only route has no HTTP scheme to offer.
pub fn missing_credentials(realm: &str, methods: &[AuthMethod]) -> Denial {
    let mut denial = Denial::new(
        401,
        Stage::Auth,
        "missing-credentials",
        "Unauthorized",
        "this API requires credentials",
        Metric::AuthMissingCredentials,
    );
    let mut schemes: Vec<&str> = Vec::new();
    for method in methods {
        let scheme = match method {
            AuthMethod::Jwt | AuthMethod::Introspection => "Bearer",
            AuthMethod::ApiKey => "ApiKey",
            AuthMethod::Mtls => continue,
        };
        if !schemes.contains(&scheme) {
            schemes.push(scheme);
        }
    }
    if methods.is_empty() {
        schemes.push("Bearer");
    }
    for scheme in schemes {
        denial = denial.with_header("www-authenticate", challenge(scheme, realm, None));
    }
    denial
}

pub fn invalid_token(realm: &str, error: JwtError) -> Denial {
    invalid_bearer(realm, error.description())
}

/// An opaque token the authorization server does not vouch for. The client
/// learns no more (RFC 7662 §2.2: expired, revoked and unknown look alike).
pub fn inactive_token(realm: &str) -> Denial {
    invalid_bearer(realm, "the token is not active")
}

fn invalid_bearer(realm: &str, description: &'static str) -> Denial {
    Denial::new(
        401,
        Stage::Auth,
        "invalid-token",
        "Unauthorized",
        description,
        Metric::AuthInvalidCredentials,
    )
    .with_header(
        "www-authenticate",
        challenge("Bearer", realm, Some(("invalid_token", description))),
    )
}

pub fn invalid_api_key(realm: &str, error: ApiKeyError) -> Denial {
    Denial::new(
        401,
        Stage::Auth,
        "invalid-api-key",
        "Unauthorized",
        error.description(),
        Metric::AuthInvalidCredentials,
    )
    .with_header(
        "www-authenticate",
        challenge("ApiKey", realm, Some(("invalid_key", error.description()))),
    )
}

/// Authenticated, but the route needs a scope or role the identity lacks.
pub fn insufficient_scope(realm: &str, identity: &Identity, required_scopes: &[String]) -> Denial {
    let description = "the credential does not grant access to this API";
    let mut denial = Denial::new(
        403,
        Stage::Auth,
        "insufficient-scope",
        "Forbidden",
        description,
        Metric::AuthInsufficientScope,
    );
    let scheme = match identity.kind {
        IdentityKind::Jwt | IdentityKind::OpaqueToken => Some("Bearer"),
        IdentityKind::ApiKey => Some("ApiKey"),
        IdentityKind::Mtls | IdentityKind::Anonymous => None,
    };
    if let Some(scheme) = scheme {
        let mut value = challenge(scheme, realm, Some(("insufficient_scope", description)));
        if !required_scopes.is_empty() {
            value.push_str(&format!(", scope={}", quoted(&required_scopes.join(" "))));
        }
        denial = denial.with_header("www-authenticate", value);
    }
    denial
}

/// Remote keys have not arrived within the wait: fail closed, never allow.
pub fn keys_unavailable() -> Denial {
    Denial::new(
        503,
        Stage::Auth,
        "keys-unavailable",
        "Service Unavailable",
        "the identity provider's keys are not available yet; retry shortly",
        Metric::AuthUnavailable,
    )
    .with_header("retry-after", "1")
}

/// The authorization server did not answer usably in time (or too many
/// calls are in flight): fail closed, never allow.
pub fn introspection_unavailable() -> Denial {
    Denial::new(
        503,
        Stage::Auth,
        "introspection-unavailable",
        "Service Unavailable",
        "the authorization server could not check the token; retry shortly",
        Metric::AuthUnavailable,
    )
    .with_header("retry-after", "1")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(denial: &Denial) -> Vec<&str> {
        denial
            .headers
            .iter()
            .filter(|(n, _)| n == "www-authenticate")
            .map(|(_, v)| v.as_str())
            .collect()
    }

    #[test]
    fn missing_credentials_has_no_error_attribute() {
        let d = missing_credentials("city \"x\"", &[AuthMethod::Jwt, AuthMethod::ApiKey]);
        assert_eq!(d.status, 401);
        assert_eq!(
            header(&d),
            vec![
                r#"Bearer realm="city \"x\"""#,
                r#"ApiKey realm="city \"x\"""#
            ]
        );
    }

    #[test]
    fn invalid_token_follows_rfc_6750() {
        let d = invalid_token("citygate", JwtError::Expired);
        assert_eq!(
            header(&d),
            vec![
                r#"Bearer realm="citygate", error="invalid_token", error_description="the token has expired""#
            ]
        );
        assert_eq!(d.detail, "the token has expired");
    }

    #[test]
    fn insufficient_scope_is_403_with_the_scope() {
        let mut id = Identity::anonymous();
        id.kind = IdentityKind::Jwt;
        let d = insufficient_scope("citygate", &id, &["parking:write".into()]);
        assert_eq!(d.status, 403);
        assert!(header(&d)[0].contains(r#"error="insufficient_scope""#));
        assert!(header(&d)[0].ends_with(r#"scope="parking:write""#));
    }
}
