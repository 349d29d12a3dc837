//! The per-VM host state (wasmtime store data) and the per-stream data the
//! hostcalls read and write.

use super::callouts::{CalloutRequest, GrpcCallRequest};
use super::headers::Headers;
use super::logging::{LogEntry, LogLevel};
use super::shared_data::SharedStore;
use super::timers::Clock;
use std::collections::{BTreeMap, HashMap, HashSet};
use wasmtime::StoreLimits;
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;

/// The plugin and VM settings Envoy knows from its filter config.
#[derive(Debug, Clone)]
pub struct VmSettings {
    pub vm_id: String,
    pub plugin_name: String,
    pub root_id: String,
    pub vm_configuration: Vec<u8>,
    pub plugin_configuration: Vec<u8>,
    /// Clusters an `http_call` may target; `None` accepts any.
    pub known_clusters: Option<HashSet<String>>,
    pub log_level: LogLevel,
}

impl Default for VmSettings {
    fn default() -> Self {
        VmSettings {
            vm_id: String::new(),
            plugin_name: "citygate".into(),
            root_id: String::new(),
            vm_configuration: Vec::new(),
            plugin_configuration: Vec::new(),
            known_clusters: None,
            log_level: LogLevel::Trace,
        }
    }
}

/// A peer certificate as Envoy's connection properties report it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerCert {
    pub uri_san: String,
    pub dns_san: String,
    pub subject: String,
}

/// The downstream connection of a request stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    /// `ip:port`, as Envoy's `source.address`.
    pub source: String,
    pub destination: String,
    pub protocol: String,
    pub requested_server_name: String,
    /// The verified client certificate when the connection is mTLS.
    pub peer_cert: Option<PeerCert>,
    pub id: u64,
}

impl Default for Connection {
    fn default() -> Self {
        Connection {
            source: "203.0.113.10:40000".into(),
            destination: "10.0.0.1:8443".into(),
            protocol: "HTTP/1.1".into(),
            requested_server_name: String::new(),
            peer_cert: None,
            id: 1,
        }
    }
}

/// A reply sent with `proxy_send_local_response`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    pub status: u16,
    pub headers: Headers,
    pub body: Vec<u8>,
    /// `None` when the guest passed -1 (no gRPC status).
    pub grpc_status: Option<i32>,
    pub details: String,
}

/// One direction of a stream as the filter sees it: the live header map,
/// the body buffer (what `proxy_get_buffer_bytes` returns) and trailers.
#[derive(Debug, Clone, Default)]
pub struct Flow {
    pub headers: Headers,
    pub body: Vec<u8>,
    pub trailers: Headers,
    /// Whether this direction has started (response headers exist).
    pub started: bool,
}

/// The data of one HTTP stream context.
#[derive(Debug, Clone, Default)]
pub struct StreamData {
    pub request: Flow,
    pub response: Flow,
    pub connection: Connection,
    pub local_reply: Option<LocalReply>,
    /// `continue_stream` / `continue_request` requests, applied after the
    /// current callback returns (Envoy defers them the same way).
    pub continue_request: bool,
    pub continue_response: bool,
    pub closed: bool,
    /// Values set with `proxy_set_property` on this stream, by encoded path.
    pub properties: HashMap<Vec<u8>, Vec<u8>>,
    pub route_cache_cleared: u32,
}

/// The body and maps of an HTTP callout reply, visible only while
/// `proxy_on_http_call_response` runs.
#[derive(Debug, Clone, Default)]
pub struct CallResponse {
    pub headers: Headers,
    pub body: Vec<u8>,
    pub trailers: Headers,
}

/// Store data of one VM instance.
pub struct HostState {
    pub(crate) wasi: WasiP1Ctx,
    pub(crate) limits: StoreLimits,
    pub(crate) stderr: MemoryOutputPipe,
    pub(crate) stdout: MemoryOutputPipe,
    pub settings: VmSettings,
    pub shared: SharedStore,
    pub clock: Clock,
    /// Identifies this VM among those sharing one [`SharedStore`].
    pub instance_id: u64,
    pub logs: Vec<LogEntry>,
    pub root_context_id: u32,
    /// The context whose callback is running.
    pub active: u32,
    /// The context hostcalls act on (`proxy_set_effective_context`).
    pub effective: u32,
    pub streams: BTreeMap<u32, StreamData>,
    /// Properties configured on the VM or set from the root context.
    pub vm_properties: HashMap<Vec<u8>, Vec<u8>>,
    pub tick_period_ms: u32,
    pub http_calls: Vec<CalloutRequest>,
    pub grpc_calls: Vec<GrpcCallRequest>,
    pub next_token: u32,
    pub call_response: Option<CallResponse>,
    pub grpc_status: (u32, Vec<u8>),
    pub grpc_message: Option<Vec<u8>>,
    pub grpc_metadata: Headers,
    pub done_called: bool,
}

impl HostState {
    pub(crate) fn new(
        wasi: WasiP1Ctx,
        limits: StoreLimits,
        pipes: (MemoryOutputPipe, MemoryOutputPipe),
        settings: VmSettings,
        shared: SharedStore,
        clock: Clock,
    ) -> Self {
        let instance_id = shared.next_instance_id();
        HostState {
            wasi,
            limits,
            stdout: pipes.0,
            stderr: pipes.1,
            settings,
            shared,
            clock,
            instance_id,
            logs: Vec::new(),
            root_context_id: 1,
            active: 0,
            effective: 0,
            streams: BTreeMap::new(),
            vm_properties: HashMap::new(),
            tick_period_ms: 0,
            http_calls: Vec::new(),
            grpc_calls: Vec::new(),
            next_token: 1,
            call_response: None,
            grpc_status: (0, Vec::new()),
            grpc_message: None,
            grpc_metadata: Headers::default(),
            done_called: false,
        }
    }

    /// The stream the running hostcall acts on, if it is an HTTP context.
    pub fn stream(&self) -> Option<&StreamData> {
        self.streams.get(&self.effective)
    }

    pub fn stream_mut(&mut self) -> Option<&mut StreamData> {
        self.streams.get_mut(&self.effective)
    }

    /// Everything the guest wrote to stdout and stderr (Rust panics land
    /// on stderr when no panic hook logs them).
    pub fn stdio(&self) -> String {
        let mut s = String::from_utf8_lossy(&self.stdout.contents()).into_owned();
        s.push_str(&String::from_utf8_lossy(&self.stderr.contents()));
        s
    }

    pub(crate) fn take_token(&mut self) -> u32 {
        let t = self.next_token;
        self.next_token = self.next_token.wrapping_add(1).max(1);
        t
    }
}
