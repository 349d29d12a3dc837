//! [`Exchange`]: one request stream, borrowed from its [`Vm`], with the
//! calls a test makes on it (read the outcome, answer its callouts, feed
//! the upstream reply).

use super::messages::{Request, Upstream};
use super::outcome::{ClientResponse, RequestOutcome, UpstreamRequest};
use super::vm::Vm;
use crate::abi::state::{CalloutReply, CalloutRequest, GuestLocalReply};
use anyhow::{bail, Result};

impl Vm {
    /// Sends a request through the filter; see [`Exchange`].
    pub fn send(&mut self, req: Request) -> Result<Exchange<'_>> {
        let id = self.open(req)?;
        Ok(Exchange { vm: self, id })
    }
}

/// One request stream, borrowed from its [`Vm`].
pub struct Exchange<'a> {
    vm: &'a mut Vm,
    id: u32,
}

impl Exchange<'_> {
    pub fn id(&self) -> u32 {
        self.id
    }

    pub fn outcome(&self) -> RequestOutcome {
        self.vm.outcome(self.id)
    }

    /// The request as the upstream got it, or an error saying what happened.
    pub fn forwarded(&self) -> Result<UpstreamRequest> {
        match self.outcome() {
            RequestOutcome::Forwarded(f) => Ok(f),
            other => bail!("request was not forwarded: {other:?}\n{}", self.vm.report()),
        }
    }

    /// The local reply, or an error saying what happened instead.
    pub fn local(&self) -> Result<GuestLocalReply> {
        match self.outcome() {
            RequestOutcome::Local(l) => Ok(l),
            other => bail!("no local reply: {other:?}\n{}", self.vm.report()),
        }
    }

    /// See [`Vm::upstream_saw_headers`].
    pub fn upstream_saw_headers(&self) -> bool {
        self.vm.upstream_saw_headers(self.id)
    }

    pub fn is_pending(&self) -> bool {
        self.outcome() == RequestOutcome::Pending
    }

    /// This stream's unanswered callouts.
    pub fn callouts(&self) -> Vec<CalloutRequest> {
        self.vm
            .pending_callouts()
            .iter()
            .filter(|c| c.context_id == self.id)
            .cloned()
            .collect()
    }

    pub fn deliver(&mut self, token: u32, reply: CalloutReply) -> Result<()> {
        self.vm.deliver_callout(token, reply)
    }

    /// Answers each of this stream's pending callouts with `f`.
    pub fn deliver_all(&mut self, f: impl Fn(&CalloutRequest) -> CalloutReply) -> Result<()> {
        while let Some(c) = self.callouts().first().cloned() {
            self.vm.deliver_callout(c.token, f(&c))?;
        }
        Ok(())
    }

    pub fn respond(&mut self, up: Upstream) -> Result<ClientResponse> {
        self.vm.respond(self.id, up)
    }

    pub fn feed_upstream(&mut self, up: Upstream) -> Result<()> {
        self.vm.feed_upstream(self.id, up)
    }

    pub fn client_response(&self) -> Option<ClientResponse> {
        self.vm.client_response(self.id)
    }

    pub fn vm(&mut self) -> &mut Vm {
        self.vm
    }
}
