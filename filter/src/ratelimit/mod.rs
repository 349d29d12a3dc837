//! Rate limits: token buckets in shared data, shared by all Envoy workers.
//! (Skeleton: no rules yet.)

use serde::Deserialize;

use crate::config::{ConfigError, RouteConfig};
use crate::deny::Denial;
use crate::host::Host;
use crate::identity::Identity;
use crate::normalize::RequestView;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {}

#[derive(Debug, Default)]
pub struct RateLimiter {}

impl RateLimiter {
    pub fn compile(_config: &RateLimitConfig) -> Result<Self, ConfigError> {
        Ok(Self {})
    }

    /// Ok with the headers to add to the response, or the 429 denial.
    pub fn check(
        &self,
        _view: &RequestView,
        _identity: &Identity,
        _route: &RouteConfig,
        _host: &dyn Host,
    ) -> Result<Vec<(String, String)>, Denial> {
        Ok(Vec::new())
    }

    /// Called on the root context's tick: drop idle buckets.
    pub fn sweep(&self, _host: &dyn Host) {}
}
