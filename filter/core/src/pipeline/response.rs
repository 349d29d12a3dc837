//! The response side of a forwarded request: which headers change, whether
//! the body is held for minimization, and the minimized body, or the 502
//! that replaces a response that cannot be minimized.

use super::{CompiledConfig, Forwarded};
use crate::host::Host;
use crate::http::{HeaderEdits, LocalReply};
use crate::redact::{BodyAction, BufferPlan, Minimized};

/// What the response headers phase decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHeaders {
    /// Header edits for the client's response (lengths and digests of bytes
    /// the client will not get).
    pub edits: HeaderEdits,
    /// `Some` when the body is held until its end to be minimized.
    pub buffer: Option<BufferPlan>,
}

impl CompiledConfig {
    /// The response headers are in, with the plan's own edits
    /// ([`super::ResponsePlan`]) already applied: pass the body, buffer it
    /// for minimization, or answer 502 for what cannot be minimized.
    pub fn on_response_headers(
        &self,
        forwarded: &Forwarded,
        status: u16,
        headers: &[(String, String)],
        end_of_stream: bool,
        host: &dyn Host,
    ) -> Result<ResponseHeaders, LocalReply> {
        match self.redactor.on_response_headers(
            &forwarded.response.redaction,
            status,
            headers,
            end_of_stream,
            host,
        ) {
            Ok(BodyAction::PassThrough) => Ok(ResponseHeaders {
                edits: HeaderEdits::default(),
                buffer: None,
            }),
            Ok(BodyAction::Buffer { plan, edits }) => Ok(ResponseHeaders {
                edits,
                buffer: Some(plan),
            }),
            Err(denial) => Err(self.deny(&denial, forwarded.record.clone(), host)),
        }
    }

    /// A chunk of a held body arrived with `buffered` bytes in all: past the
    /// plan's bound the response is replaced by a 502 at once.
    pub fn check_buffered_size(
        &self,
        forwarded: &Forwarded,
        plan: &BufferPlan,
        buffered: usize,
        host: &dyn Host,
    ) -> Result<(), LocalReply> {
        if buffered <= plan.max_bytes {
            return Ok(());
        }
        let denial = self.redactor.too_large(plan.max_bytes);
        Err(self.deny(&denial, forwarded.record.clone(), host))
    }

    /// The whole held body: the minimized bytes to send instead, or the 502
    /// that replaces the response. The redaction counts go to the decision
    /// line written when the stream ends.
    pub fn minimize_response(
        &self,
        forwarded: &mut Forwarded,
        plan: &BufferPlan,
        body: &[u8],
        host: &dyn Host,
    ) -> Result<Vec<u8>, LocalReply> {
        match self
            .redactor
            .minimize(&forwarded.response.redaction, plan, body, host)
        {
            Ok(Minimized { body, summary }) => {
                forwarded.record.redaction = Some(summary);
                Ok(body)
            }
            Err(denial) => Err(self.deny(&denial, forwarded.record.clone(), host)),
        }
    }
}
