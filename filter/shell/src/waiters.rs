//! Requests paused until their identity provider's keys arrive. Only the
//! root context learns when they do, so it re-judges each request under the
//! request's context id (`proxy_set_effective_context`) and leaves the
//! outcome for the request's own context to adopt.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use crate::state::{RequestState, ResponseState};

/// A request waiting for keys.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeyWaiter {
    pub(crate) context_id: u32,
    pub(crate) deadline_nanos: u64,
    pub(crate) end_of_stream: bool,
    /// The request body ended while waiting: its size (`None` after trailers).
    pub(crate) body_done: Option<Option<usize>>,
}

/// Per-VM state shared by the root and its HTTP contexts (one thread).
#[derive(Default, Clone)]
pub(crate) struct Shared {
    pub(crate) waiters: Rc<RefCell<Vec<KeyWaiter>>>,
    /// States the root settled for waiting contexts, adopted by each
    /// context at its next callback.
    pub(crate) settled: Rc<RefCell<HashMap<u32, (RequestState, ResponseState)>>>,
}
