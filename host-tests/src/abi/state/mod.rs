//! The ABI state: the plain data the hostcalls read and write — the per-VM
//! store data, the streams, header maps, log lines, callouts, the clock and
//! the store VMs share. Nothing here imports a hostcall module, so every
//! hostcall family (and the runtime and harness above) imports it one way.

pub mod callout;
pub mod clock;
pub mod headers;
pub mod hostcalls;
pub mod log;
pub mod metrics;
pub mod queues;
pub mod shared_store;
pub mod stream;
pub mod vm;

pub use callout::{CallResponse, CalloutReply, CalloutRequest, GrpcCallRequest, GrpcReply};
pub use clock::Clock;
pub use headers::{serialize_pairs, Headers};
pub use hostcalls::Hostcalls;
pub use log::{LogEntry, ProxyLogLevel};
pub use metrics::MetricKind;
pub use shared_store::SharedStore;
pub use stream::{Connection, Flow, GuestLocalReply, PeerCert, StreamData};
pub use vm::{HostState, VmSettings};
