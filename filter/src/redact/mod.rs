//! Data minimization of responses. (Skeleton: no profiles yet, so a plan that
//! names one fails closed.)

use serde::Deserialize;

use crate::config::{ConfigError, RouteConfig};
use crate::decision_log::RedactionSummary;
use crate::deny::Denial;
use crate::host::Host;
use crate::pipeline::UpstreamEdits;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedactionConfig {}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteRedaction {}

/// What the response headers phase decided about the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyAction {
    PassThrough,
    /// Hold the body until its end (at most `max_bytes`), with these header
    /// edits (e.g. `content-length` removed).
    Buffer {
        max_bytes: usize,
        edits: UpstreamEdits,
    },
}

/// A minimized body and what was done to it (counts only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Minimized {
    pub body: Vec<u8>,
    pub summary: RedactionSummary,
}

#[derive(Debug, Default)]
pub struct Redactor {}

impl Redactor {
    pub fn compile(
        _config: &RedactionConfig,
        _routes: &[RouteConfig],
    ) -> Result<Self, ConfigError> {
        Ok(Self {})
    }

    /// The profiles a forwarded response gets: the decision's choice, else
    /// the route's default.
    pub fn profiles_for(&self, _route: &RouteConfig, chosen: &[String]) -> Vec<String> {
        chosen.to_vec()
    }

    /// Upstream headers that never reach the client on this route.
    pub fn response_headers_to_remove(&self, _route: &RouteConfig) -> Vec<String> {
        Vec::new()
    }

    pub fn on_response_headers(
        &self,
        profiles: &[String],
        _status: u16,
        _headers: &[(String, String)],
        _end_of_stream: bool,
    ) -> Result<BodyAction, Denial> {
        if profiles.is_empty() {
            Ok(BodyAction::PassThrough)
        } else {
            Err(Denial::bad_gateway("the response cannot be minimized"))
        }
    }

    pub fn minimize(
        &self,
        _profiles: &[String],
        _headers: &[(String, String)],
        _body: &[u8],
        _host: &dyn Host,
    ) -> Result<Minimized, Denial> {
        Err(Denial::bad_gateway("the response cannot be minimized"))
    }

    pub fn too_large(&self, max_bytes: usize) -> Denial {
        Denial::bad_gateway(format!(
            "the response is larger than the {max_bytes}-byte minimization bound"
        ))
    }
}
