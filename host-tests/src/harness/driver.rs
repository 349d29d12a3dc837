//! What the harness tracks per stream to drive it like Envoy's filter
//! manager: the stream's phase, each direction's progress through the
//! filter's callbacks, and what came out so far.

use super::outcome::{ClientResponse, RequestOutcome};
use crate::abi::state::{Flow, GuestLocalReply, Headers, StreamData};
use std::collections::VecDeque;

/// The part of an HTTP message a direction's next filter callback gets;
/// `Done` once every part has been through the filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) enum MessagePart {
    #[default]
    Headers,
    Body,
    Trailers,
    Done,
}

/// One direction's progress through the filter.
#[derive(Debug, Default)]
pub(super) struct Pump {
    pub(super) stage: MessagePart,
    pub(super) stopped: Option<MessagePart>,
    pub(super) coalesce: bool,
    pub(super) chunks: VecDeque<Vec<u8>>,
    pub(super) trailers: Option<Headers>,
    pub(super) trailers_delivered: bool,
    pub(super) fwd_headers: Option<Headers>,
    pub(super) fwd_body: Vec<u8>,
    pub(super) fwd_trailers: Option<Headers>,
}

impl Pump {
    pub(super) fn new(chunks: VecDeque<Vec<u8>>, trailers: Option<Headers>) -> Self {
        Pump {
            chunks,
            trailers,
            ..Pump::default()
        }
    }

    pub(super) fn complete(&self) -> bool {
        self.stage == MessagePart::Done && self.stopped.is_none()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dir {
    Request,
    Response,
}

impl Dir {
    pub(super) fn callbacks(self) -> [&'static str; 3] {
        match self {
            Dir::Request => [
                "proxy_on_request_headers",
                "proxy_on_request_body",
                "proxy_on_request_trailers",
            ],
            Dir::Response => [
                "proxy_on_response_headers",
                "proxy_on_response_body",
                "proxy_on_response_trailers",
            ],
        }
    }

    pub(super) fn flow(self, s: &mut StreamData) -> &mut Flow {
        match self {
            Dir::Request => &mut s.request,
            Dir::Response => &mut s.response,
        }
    }

    pub(super) fn take_continue(self, s: &mut StreamData) -> bool {
        let flag = match self {
            Dir::Request => &mut s.continue_request,
            Dir::Response => &mut s.continue_response,
        };
        std::mem::take(flag)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    Request,
    /// Running a request-phase local reply through the response callbacks.
    LocalReply,
    /// UpstreamRequest; waiting for or processing the upstream reply.
    Response,
    Ended,
}

pub(super) struct Driver {
    pub(super) phase: Phase,
    pub(super) req: Pump,
    pub(super) resp: Pump,
    pub(super) outcome: RequestOutcome,
    pub(super) local: Option<GuestLocalReply>,
    pub(super) client: Option<ClientResponse>,
}

impl Driver {
    pub(super) fn pump(&mut self, dir: Dir) -> &mut Pump {
        match dir {
            Dir::Request => &mut self.req,
            Dir::Response => &mut self.resp,
        }
    }
}
