//! The per-VM host state: the wasmtime store data of one VM instance, and
//! the plugin and VM settings Envoy knows from its filter config.

use super::callout::{CallResponse, CalloutRequest, GrpcCallRequest};
use super::clock::Clock;
use super::headers::Headers;
use super::hostcalls::Hostcalls;
use super::log::{LogEntry, ProxyLogLevel};
use super::shared_store::SharedStore;
use super::stream::StreamData;
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
    pub log_level: ProxyLogLevel,
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
            log_level: ProxyLogLevel::Trace,
        }
    }
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
    /// Hostcalls of the running guest call, by name (moved to its
    /// [`crate::FuelUse`] when it returns).
    pub hostcalls: Hostcalls,
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
            hostcalls: Hostcalls::default(),
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
