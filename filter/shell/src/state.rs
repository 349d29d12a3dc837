//! Where one HTTP stream stands. Each variant holds exactly what its phase
//! needs, so a callback cannot act on state its phase does not have.

use citygate_core::normalize::RawRequest;
use citygate_core::pipeline::{Admitted, Forwarded, PendingIntrospection};
use citygate_core::redact::BufferPlan;

/// The request side of a stream.
pub(crate) enum RequestState {
    /// Waiting for the request headers.
    Headers,
    /// Paused until the identity provider's keys arrive (the root resumes it).
    AwaitingKeys,
    /// Paused until the authorization server answers about the request's
    /// opaque token (the answer comes to this context).
    AwaitingIntrospection(Box<Introspecting>),
    /// Admitted; the body is held until it ends, for the policy or for
    /// the size limit (`admitted.body`).
    AwaitingBody(Box<Admitted>),
    /// On its way upstream (or its response on the way back).
    Forwarded(Box<Forwarded>),
    /// A local reply was sent; nothing more to do.
    Answered,
}

/// The response side of a stream.
pub(crate) enum ResponseState {
    /// Headers and body pass (headers possibly edited).
    Streaming,
    /// The body is held until its end so it can be minimized.
    Buffering(BufferPlan),
    Done,
}

/// A request whose token is being introspected, and how far its body got
/// meanwhile.
pub(crate) struct Introspecting {
    pub(crate) pending: PendingIntrospection,
    /// The request as first read, for its judgement after the answer.
    pub(crate) raw: RawRequest,
    /// The request had no body (headers ended the stream).
    pub(crate) end_of_stream: bool,
    /// The body ended while waiting: its size (`None` after trailers).
    pub(crate) body_done: Option<Option<usize>>,
}
