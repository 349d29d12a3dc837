//! A request stream from open to end: opening it, moving it on after
//! anything that may unblock it, running a local reply through the response
//! callbacks, settling what the upstream and the client get, and ending it
//! with `proxy_on_done`, `proxy_on_log`, `proxy_on_delete`.

use super::driver::{Dir, Driver, MessagePart, Phase, Pump};
use super::messages::{chunks_of, Request, Upstream};
use super::outcome::{
    local_response, reset_response, ClientResponse, RequestOutcome, UpstreamRequest,
};
use super::vm::Vm;
use crate::abi::state::{Flow, GuestLocalReply, Headers, StreamData};
use anyhow::{anyhow, bail, Result};

impl Vm {
    /// Sends a request and returns its stream (context) id.
    pub fn open(&mut self, req: Request) -> Result<u32> {
        let id = self.next_context;
        self.next_context += 1;
        let mut data = StreamData {
            connection: req.connection,
            ..StreamData::default()
        };
        data.request.headers = req.headers;
        data.request.started = true;
        data.properties.extend(req.properties);
        self.guest.state_mut().streams.insert(id, data);
        self.drivers.insert(
            id,
            Driver {
                phase: Phase::Request,
                req: Pump::new(chunks_of(&req.body, req.chunk_size), req.trailers),
                resp: Pump::default(),
                outcome: RequestOutcome::Pending,
                local: None,
                client: None,
            },
        );
        self.callback(
            "proxy_on_context_create",
            id,
            &[id as i32, self.root as i32],
        )?;
        self.advance_stream(id)?;
        Ok(id)
    }

    pub(super) fn driver(&mut self, id: u32) -> Result<&mut Driver> {
        self.drivers
            .get_mut(&id)
            .ok_or_else(|| anyhow!("no stream {id}"))
    }

    pub(super) fn stream(&mut self, id: u32) -> Result<&mut StreamData> {
        self.guest
            .state_mut()
            .streams
            .get_mut(&id)
            .ok_or_else(|| anyhow!("stream {id} has ended"))
    }

    /// Moves a stream forward after anything that may unblock it.
    pub(super) fn advance_stream(&mut self, id: u32) -> Result<()> {
        match self.driver(id)?.phase {
            Phase::Request => {
                self.pump(id, Dir::Request)?;
                self.settle_request(id)
            }
            Phase::LocalReply | Phase::Response => {
                if self.driver(id)?.resp.stage != MessagePart::Headers
                    || self.stream(id)?.response.started
                {
                    self.pump(id, Dir::Response)?;
                }
                self.settle_response(id)
            }
            Phase::Ended => Ok(()),
        }
    }

    fn settle_request(&mut self, id: u32) -> Result<()> {
        let s = self.stream(id)?;
        if let Some(reply) = s.local_reply.take() {
            return self.run_local_reply(id, reply);
        }
        if s.closed {
            self.driver(id)?.outcome = RequestOutcome::Reset;
            return self.end_stream(id);
        }
        let d = self.driver(id)?;
        if d.req.complete() {
            d.outcome = RequestOutcome::Forwarded(UpstreamRequest {
                headers: d.req.fwd_headers.clone().unwrap_or_default(),
                body: d.req.fwd_body.clone(),
                trailers: d.req.fwd_trailers.clone().unwrap_or_default(),
            });
            d.phase = Phase::Response;
        }
        Ok(())
    }

    /// Envoy sends a request-phase local reply through the encoder path,
    /// so the filter's response callbacks see it too.
    fn run_local_reply(&mut self, id: u32, reply: GuestLocalReply) -> Result<()> {
        let mut headers = Headers(vec![(":status".into(), reply.status.to_string())]);
        headers.0.extend(reply.headers.0.iter().cloned());
        if !reply.body.is_empty() {
            if !headers.contains("content-type") {
                headers.add("content-type", "text/plain");
            }
            headers.replace("content-length", &reply.body.len().to_string());
        }
        let s = self.stream(id)?;
        s.response = Flow {
            headers,
            started: true,
            ..Flow::default()
        };
        let d = self.driver(id)?;
        d.phase = Phase::LocalReply;
        d.resp = Pump::new(chunks_of(&reply.body, None), None);
        d.local = Some(reply);
        self.advance_stream(id)
    }

    fn settle_response(&mut self, id: u32) -> Result<()> {
        let s = self.stream(id)?;
        let late_local = s.local_reply.take();
        let closed = s.closed;
        let d = self.driver(id)?;
        let in_local = d.phase == Phase::LocalReply;
        let client = if closed {
            Some(reset_response())
        } else if let (Some(reply), false) = (late_local, in_local) {
            if d.resp.fwd_headers.is_some() {
                Some(reset_response())
            } else {
                Some(local_response(&reply))
            }
        } else if d.resp.complete() {
            Some(client_response(&d.resp, d.local.clone()))
        } else {
            None
        };
        let Some(client) = client else { return Ok(()) };
        if in_local {
            let original = d.local.clone();
            d.outcome = RequestOutcome::Local(GuestLocalReply {
                status: client.status,
                headers: client.headers.clone(),
                body: client.body.clone(),
                grpc_status: original.as_ref().and_then(|o| o.grpc_status),
                details: original.map(|o| o.details).unwrap_or_default(),
            });
        }
        d.client = Some(client);
        self.end_stream(id)
    }

    fn end_stream(&mut self, id: u32) -> Result<()> {
        self.driver(id)?.phase = Phase::Ended;
        let c = id as i32;
        // Envoy cancels the stream's callouts when it goes away.
        let s = self.guest.state_mut();
        s.http_calls.retain(|x| x.context_id != id);
        s.grpc_calls.retain(|x| x.context_id != id);
        self.guest.call("proxy_on_done", id, &[c])?;
        self.guest.call("proxy_on_log", id, &[c])?;
        self.guest.call("proxy_on_delete", id, &[c])?;
        self.guest.state_mut().streams.remove(&id);
        Ok(())
    }

    /// The request phase's outcome so far.
    pub fn outcome(&self, id: u32) -> RequestOutcome {
        self.drivers
            .get(&id)
            .map(|d| d.outcome.clone())
            .unwrap_or(RequestOutcome::Pending)
    }

    /// Whether the filter let the request's headers go upstream, even if
    /// it answered the request itself later: in Envoy the upstream then has
    /// seen the request start.
    pub fn upstream_saw_headers(&self, id: u32) -> bool {
        self.drivers
            .get(&id)
            .is_some_and(|d| d.req.fwd_headers.is_some())
    }

    /// Feeds the upstream's reply to a forwarded request.
    pub fn feed_upstream(&mut self, id: u32, up: Upstream) -> Result<()> {
        let d = self.driver(id)?;
        if d.phase != Phase::Response || d.resp.stage != MessagePart::Headers {
            bail!(
                "stream {id} is not waiting for an upstream reply (outcome {:?})",
                d.outcome
            );
        }
        d.resp = Pump::new(chunks_of(&up.body, up.chunk_size), up.trailers);
        let mut headers = Headers(vec![(":status".into(), up.status.to_string())]);
        headers.0.extend(up.headers.0);
        let s = self.stream(id)?;
        s.response = Flow {
            headers,
            started: true,
            ..Flow::default()
        };
        self.advance_stream(id)
    }

    /// What the client received, once the stream has ended.
    pub fn client_response(&self, id: u32) -> Option<ClientResponse> {
        self.drivers.get(&id).and_then(|d| d.client.clone())
    }

    /// Feeds the upstream reply and returns what the client receives; an
    /// error if the filter is still holding the response.
    pub fn respond(&mut self, id: u32, up: Upstream) -> Result<ClientResponse> {
        self.feed_upstream(id, up)?;
        self.client_response(id).ok_or_else(|| {
            anyhow!(
                "the filter is still holding the response of stream {id}\n{}",
                self.guest.report()
            )
        })
    }

    /// Another context (the root, after `proxy_set_effective_context`, on a
    /// tick or a callout reply) may have continued, answered or closed a
    /// stream; Envoy acts on that at once, so move those streams on.
    pub(super) fn advance_resumed_streams(&mut self) -> Result<()> {
        let mut ids: Vec<u32> = self
            .drivers
            .iter()
            .filter(|(_, d)| d.phase != Phase::Ended)
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        for id in ids {
            let touched = self.guest.state().streams.get(&id).is_some_and(|s| {
                s.continue_request || s.continue_response || s.local_reply.is_some() || s.closed
            });
            if touched {
                self.advance_stream(id)?;
            }
        }
        Ok(())
    }
}

fn client_response(p: &Pump, local: Option<GuestLocalReply>) -> ClientResponse {
    let mut headers = p.fwd_headers.clone().unwrap_or_default();
    let status = headers
        .get(":status")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    headers.remove(":status");
    ClientResponse {
        status,
        headers,
        body: p.fwd_body.clone(),
        trailers: p.fwd_trailers.clone().unwrap_or_default(),
        local,
        reset: false,
    }
}
