//! Answering callouts: scripted replies delivered right after the callback
//! that made the call (or when the test says), hand-made replies, and the
//! `proxy_on_http_call_response` / `proxy_on_grpc_*` calls that carry them.

use super::script::Delivery;
use super::vm::Vm;
use crate::abi::state::{
    CallResponse, CalloutReply, CalloutRequest, GrpcCallRequest, GrpcReply, Headers,
};
use anyhow::{anyhow, bail, Result};

/// Bounds callout ping-pong (a reply that triggers another callout…).
const MAX_DELIVERIES: usize = 1000;

impl Vm {
    /// Delivers scripted replies to callouts of `ctx` and of the root.
    pub(super) fn deliver_ready(&mut self, ctx: u32) -> Result<()> {
        for _ in 0..MAX_DELIVERIES {
            let s = self.guest.state();
            let mine = |c: u32| c == ctx || c == self.root;
            if let Some(call) = s.http_calls.iter().find(|c| mine(c.context_id)) {
                let Some(reply) = self.script.answer(call) else {
                    return Ok(());
                };
                let token = call.token;
                self.deliver(token, reply)?;
            } else if let Some(call) = s
                .grpc_calls
                .iter()
                .find(|c| mine(c.context_id) && !c.streaming)
            {
                let (token, reply) = (call.token, self.script.answer_grpc(call));
                self.deliver_grpc_raw(token, reply)?;
            } else {
                return Ok(());
            }
        }
        bail!("more than {MAX_DELIVERIES} callouts in a row: the guest loops on callouts")
    }

    /// Delivers one reply (no stream progress; see `deliver_callout`).
    fn deliver(&mut self, token: u32, reply: CalloutReply) -> Result<u32> {
        let s = self.guest.state_mut();
        let i = s
            .http_calls
            .iter()
            .position(|c| c.token == token)
            .ok_or_else(|| anyhow!("no pending callout with token {token}"))?;
        let call = s.http_calls.remove(i);
        let response = match reply {
            CalloutReply::Reply {
                status,
                headers,
                body,
            } => {
                let mut h = Headers(vec![(":status".into(), status.to_string())]);
                h.0.extend(headers);
                CallResponse {
                    headers: h,
                    body,
                    trailers: Headers::new(),
                }
            }
            CalloutReply::Timeout | CalloutReply::Failure => CallResponse::default(),
        };
        let args = [
            call.context_id as i32,
            token as i32,
            response.headers.len() as i32,
            response.body.len() as i32,
            0,
        ];
        s.call_response = Some(response);
        let r = self
            .guest
            .call("proxy_on_http_call_response", call.context_id, &args);
        self.guest.state_mut().call_response = None;
        r?;
        Ok(call.context_id)
    }

    fn deliver_grpc_raw(&mut self, token: u32, reply: GrpcReply) -> Result<u32> {
        let s = self.guest.state_mut();
        let i = s
            .grpc_calls
            .iter()
            .position(|c| c.token == token)
            .ok_or_else(|| anyhow!("no pending gRPC call with token {token}"))?;
        let call = s.grpc_calls.remove(i);
        let ctx = call.context_id;
        let (c, t) = (ctx as i32, token as i32);
        match reply {
            GrpcReply::Message(m) => {
                let len = m.len() as i32;
                s.grpc_status = (0, Vec::new());
                s.grpc_message = Some(m);
                let r = self.guest.call("proxy_on_grpc_receive", ctx, &[c, t, len]);
                self.guest.state_mut().grpc_message = None;
                r?;
                if call.streaming {
                    self.guest.call("proxy_on_grpc_close", ctx, &[c, t, 0])?;
                }
            }
            GrpcReply::Status(code, msg) => {
                s.grpc_status = (code, msg.into_bytes());
                self.guest
                    .call("proxy_on_grpc_close", ctx, &[c, t, code as i32])?;
            }
        }
        Ok(ctx)
    }

    /// Callouts made and not yet answered.
    pub fn pending_callouts(&self) -> &[CalloutRequest] {
        &self.guest.state().http_calls
    }

    pub fn pending_grpc(&self) -> &[GrpcCallRequest] {
        &self.guest.state().grpc_calls
    }

    /// Answers one callout and lets its stream go on.
    pub fn deliver_callout(&mut self, token: u32, reply: CalloutReply) -> Result<()> {
        let ctx = self.deliver(token, reply)?;
        self.after_delivery(ctx)
    }

    pub fn deliver_grpc(&mut self, token: u32, reply: GrpcReply) -> Result<()> {
        let ctx = self.deliver_grpc_raw(token, reply)?;
        self.after_delivery(ctx)
    }

    fn after_delivery(&mut self, ctx: u32) -> Result<()> {
        if self.delivery == Delivery::Immediate {
            self.deliver_ready(ctx)?;
        }
        if self.drivers.contains_key(&ctx) {
            self.advance_stream(ctx)?;
        }
        self.advance_resumed_streams()
    }

    /// Answers every pending callout the script knows; returns how many.
    pub fn deliver_scripted(&mut self) -> Result<usize> {
        let mut n = 0;
        while n < MAX_DELIVERIES {
            let next = self
                .guest
                .state()
                .http_calls
                .iter()
                .find_map(|c| self.script.answer(c).map(|r| (c.token, r)));
            let Some((token, reply)) = next else { break };
            self.deliver_callout(token, reply)?;
            n += 1;
        }
        Ok(n)
    }
}
