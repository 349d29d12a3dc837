//! Rego access policies evaluated in the filter with regorus.
//! (Skeleton: without a policy every authenticated request is allowed.)

use serde::Deserialize;

use crate::config::ConfigError;
use crate::config::RouteConfig;
use crate::host::Host;
use crate::identity::Identity;
use crate::normalize::RequestView;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutePolicy {}

/// The policy's verdict (DESIGN.md "Decision").
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decision {
    pub allowed: bool,
    /// Status of the denial (default 403).
    pub http_status: Option<u16>,
    /// Added to the upstream request on allow, to the client reply on deny.
    pub headers: Vec<(String, String)>,
    pub response_headers_to_add: Vec<(String, String)>,
    pub request_headers_to_remove: Vec<String>,
    pub body: Option<String>,
    /// Redaction profiles the response gets.
    pub redact: Vec<String>,
    pub reason: Option<String>,
    /// Evaluation time, for the decision log.
    pub eval_micros: u64,
    /// Dry-run: the decision is logged, never enforced.
    pub dry_run: bool,
}

pub struct RequestContext<'a> {
    pub view: &'a RequestView,
    pub identity: &'a Identity,
    pub route: &'a RouteConfig,
    /// Buffered request body, when the route buffers it.
    pub body: Option<&'a [u8]>,
    pub body_truncated: bool,
}

#[derive(Debug, Default)]
pub struct PolicyEngine {}

impl PolicyEngine {
    pub fn compile(_config: Option<&PolicyConfig>) -> Result<Self, ConfigError> {
        Ok(Self {})
    }

    pub fn authorize(&self, _request: &RequestContext<'_>, _host: &dyn Host) -> Decision {
        Decision {
            allowed: true,
            ..Decision::default()
        }
    }
}
