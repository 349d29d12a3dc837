//! The fluent API: start a VM of a plugin, send requests through it the way
//! Envoy's HTTP filter chain would, answer its callouts, feed upstream
//! replies, and read what the client and the upstream receive.
//!
//! Envoy semantics emulated here (proxy-wasm-cpp-host + Envoy's filter
//! manager): `Pause` from `on_*_headers` stops everything (cpp-host turns
//! StopIteration into StopAllIteration) and the body that arrives meanwhile
//! is delivered in one call after `continue_*` (unless the VM is built
//! with Envoy's `allow_on_headers_stop_iteration`: `headers_stop_iteration`);
//! `Pause` from `on_*_body` is StopIterationAndBuffer (the next call sees
//! the accumulated buffer);
//! `Continue` from any callback forwards what is buffered; with trailers the
//! last body call has `end_of_stream = false`; a local reply sent in the
//! request phase runs through the filter's response callbacks; at stream end
//! the host calls `proxy_on_done`, `proxy_on_log`, `proxy_on_delete`; a
//! stream another context continued, answered or closed (the root context
//! after `proxy_set_effective_context`, on a tick or a callout reply) moves
//! on right after that callback.
//!
//! One file per idea, imports running one way. The types come first and
//! import no file that uses them:
//! `messages` (what a test sends: the client's request, the upstream's
//! reply), `outcome` (what comes out), `script` (scripted callout
//! replies), `driver` (each stream's progress). `vm` holds the [`Vm`]
//! and its root-context, clock and observation calls; `impl Vm` goes on in
//! `chain` (one direction through the filter's callbacks), `stream` (a
//! stream from open to end), `callouts` (answering callouts) and
//! `exchange` (one stream, borrowed); `builder` configures and starts
//! a [`Vm`].

mod builder;
mod callouts;
mod chain;
mod driver;
mod exchange;
mod messages;
mod outcome;
mod script;
mod stream;
mod vm;

pub use builder::VmBuilder;
pub use exchange::Exchange;
pub use messages::{Request, Upstream};
pub use outcome::{ClientResponse, RequestOutcome, UpstreamRequest};
pub use script::Delivery;
pub use vm::Vm;
