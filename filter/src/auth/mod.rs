//! Authentication: credentials → [`Identity`].
//! (Skeleton: anonymous routes only; API keys, JWT and mTLS come next.)

pub mod jwt;

use serde::Deserialize;

use crate::config::{ConfigError, RouteConfig};
use crate::deny::{Denial, Stage};
use crate::host::Host;
use crate::identity::Identity;
use crate::metrics::Metric;
use crate::normalize::RequestView;
use crate::pipeline::UpstreamEdits;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {}

/// What a route requires of the caller.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteAuth {
    /// Callers without credentials are let through as `anonymous`.
    #[serde(default)]
    pub anonymous: bool,
}

pub enum AuthOutcome {
    Authenticated(Identity, UpstreamEdits),
    Denied(Denial),
}

#[derive(Debug, Default)]
pub struct Authenticator {}

impl Authenticator {
    pub fn compile(_config: &AuthConfig, _routes: &[RouteConfig]) -> Result<Self, ConfigError> {
        Ok(Self {})
    }

    pub fn authenticate(
        &self,
        _view: &RequestView,
        route: &RouteConfig,
        realm: &str,
        _host: &dyn Host,
    ) -> AuthOutcome {
        if route.auth.anonymous {
            return AuthOutcome::Authenticated(Identity::anonymous(), UpstreamEdits::default());
        }
        AuthOutcome::Denied(
            Denial::new(
                401,
                Stage::Auth,
                "missing-credentials",
                "Unauthorized",
                "this API requires credentials",
                Metric::AuthDenied,
            )
            .with_header("www-authenticate", format!("Bearer realm=\"{realm}\"")),
        )
    }
}
