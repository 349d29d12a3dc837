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

use crate::abi::properties::encode_path;
use crate::abi::state::{
    CallResponse, CalloutReply, CalloutRequest, Clock, Connection, Flow, GrpcCallRequest,
    GrpcReply, Headers, LocalReply, LogEntry, LogLevel, PeerCert, SharedStore, StreamData,
    VmSettings,
};
use crate::runtime::{FuelUse, Guest, Plugin, DEFAULT_FUEL_PER_CALL};
use anyhow::{anyhow, bail, Result};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

const CONTINUE: i32 = 0;
/// Bounds callout ping-pong (a reply that triggers another callout…).
const MAX_DELIVERIES: usize = 1000;

type CalloutFn = Arc<dyn Fn(&CalloutRequest) -> CalloutReply + Send + Sync>;
type GrpcFn = Arc<dyn Fn(&GrpcCallRequest) -> GrpcReply + Send + Sync>;

/// When scripted callout replies reach the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Delivery {
    /// Right after the callback that made the call returns.
    #[default]
    Immediate,
    /// Only when the test calls `deliver_callout` / `deliver_scripted`.
    Manual,
}

/// Scripted answers to callouts: per cluster, else a closure.
#[derive(Clone, Default)]
struct Script {
    by_cluster: HashMap<String, CalloutReply>,
    handler: Option<CalloutFn>,
    grpc: Option<GrpcFn>,
}

impl Script {
    fn answer(&self, r: &CalloutRequest) -> Option<CalloutReply> {
        self.by_cluster
            .get(&r.cluster)
            .cloned()
            .or_else(|| self.handler.as_ref().map(|h| h(r)))
    }

    fn answer_grpc(&self, r: &GrpcCallRequest) -> GrpcReply {
        match &self.grpc {
            Some(h) => h(r),
            None => GrpcReply::Status(12, "unimplemented in citygate-host".into()),
        }
    }
}

/// Configures a VM before it starts.
pub struct VmBuilder {
    plugin: Plugin,
    settings: VmSettings,
    env: Vec<(String, String)>,
    properties: Vec<(Vec<u8>, Vec<u8>)>,
    shared: SharedStore,
    clock: Clock,
    script: Script,
    delivery: Delivery,
    fuel_per_call: u64,
    headers_stop_iteration: bool,
}

// Here rather than in `runtime`, so the runtime does not import the harness
// built on top of it.
impl Plugin {
    /// Starts configuring a VM instance of this plugin.
    pub fn vm(&self) -> VmBuilder {
        VmBuilder::new(self.clone())
    }
}

impl VmBuilder {
    fn new(plugin: Plugin) -> Self {
        VmBuilder {
            plugin,
            settings: VmSettings::default(),
            env: Vec::new(),
            properties: Vec::new(),
            shared: SharedStore::new(),
            clock: Clock::default(),
            script: Script::default(),
            delivery: Delivery::Immediate,
            fuel_per_call: DEFAULT_FUEL_PER_CALL,
            headers_stop_iteration: false,
        }
    }

    /// The plugin configuration (Envoy's `configuration`, Istio's `pluginConfig`).
    pub fn config(mut self, json: impl Into<String>) -> Self {
        self.settings.plugin_configuration = json.into().into_bytes();
        self
    }

    pub fn vm_config(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.settings.vm_configuration = bytes.into();
        self
    }

    /// A VM environment variable (`vm_config.environment_variables`).
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    /// A property every context can read, by dotted path.
    pub fn property(mut self, dotted: &str, value: impl Into<Vec<u8>>) -> Self {
        self.properties.push((encode_path(dotted), value.into()));
        self
    }

    pub fn vm_id(mut self, id: impl Into<String>) -> Self {
        self.settings.vm_id = id.into();
        self
    }

    pub fn root_id(mut self, id: impl Into<String>) -> Self {
        self.settings.root_id = id.into();
        self
    }

    pub fn plugin_name(mut self, name: impl Into<String>) -> Self {
        self.settings.plugin_name = name.into();
        self
    }

    /// Lines below this level are dropped (and `proxy_get_log_level` says so).
    pub fn log_level(mut self, level: LogLevel) -> Self {
        self.settings.log_level = level;
        self
    }

    /// Restricts callouts to these clusters (others get `BadArgument`).
    pub fn clusters<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.settings.known_clusters =
            Some(names.into_iter().map(Into::into).collect::<HashSet<_>>());
        self
    }

    /// Shares shared data, queues and metrics with other VMs (workers).
    pub fn shared(mut self, store: &SharedStore) -> Self {
        self.shared = store.clone();
        self
    }

    pub fn clock(mut self, clock: &Clock) -> Self {
        self.clock = clock.clone();
        self
    }

    /// Answers every callout to `cluster` with `reply`.
    pub fn callout(mut self, cluster: impl Into<String>, reply: CalloutReply) -> Self {
        self.script.by_cluster.insert(cluster.into(), reply);
        self
    }

    /// Answers callouts not scripted by cluster.
    pub fn callouts_with(
        mut self,
        f: impl Fn(&CalloutRequest) -> CalloutReply + Send + Sync + 'static,
    ) -> Self {
        self.script.handler = Some(Arc::new(f));
        self
    }

    /// Answers gRPC calls (default: status 12 Unimplemented).
    pub fn grpc_with(
        mut self,
        f: impl Fn(&GrpcCallRequest) -> GrpcReply + Send + Sync + 'static,
    ) -> Self {
        self.script.grpc = Some(Arc::new(f));
        self
    }

    pub fn delivery(mut self, d: Delivery) -> Self {
        self.delivery = d;
        self
    }

    pub fn fuel_per_call(mut self, fuel: u64) -> Self {
        self.fuel_per_call = fuel;
        self
    }

    /// Envoy's `allow_on_headers_stop_iteration` (the plugin config knob,
    /// Envoy >= 1.35; `envoy/gateway.yaml` sets it): `Pause` from
    /// `on_*_headers` holds the headers but the body callbacks still run,
    /// instead of cpp-host's default StopAllIteration.
    pub fn headers_stop_iteration(mut self, allow: bool) -> Self {
        self.headers_stop_iteration = allow;
        self
    }

    /// Instantiates the VM and runs `proxy_on_vm_start` and
    /// `proxy_on_configure` on the root context; a `false` from either is
    /// an error quoting the guest's log (that is how Envoy rejects a config).
    pub fn start(self) -> Result<Vm> {
        let vm_len = self.settings.vm_configuration.len() as i32;
        let cfg_len = self.settings.plugin_configuration.len() as i32;
        let mut guest = Guest::new(
            &self.plugin,
            self.settings,
            &self.env,
            self.shared,
            self.clock,
        )?;
        guest.fuel_per_call = self.fuel_per_call;
        guest.state_mut().vm_properties.extend(self.properties);
        let root = guest.state().root_context_id;
        let mut vm = Vm {
            guest,
            root,
            next_context: root + 1,
            script: self.script,
            delivery: self.delivery,
            drivers: HashMap::new(),
            headers_stop_iteration: self.headers_stop_iteration,
        };
        let r = root as i32;
        vm.callback("proxy_on_context_create", root, &[r, 0])?;
        if vm.callback("proxy_on_vm_start", root, &[r, vm_len])? == 0
            && vm.guest.has_export("proxy_on_vm_start")
        {
            bail!("proxy_on_vm_start returned false\n{}", vm.guest.report());
        }
        if vm.callback("proxy_on_configure", root, &[r, cfg_len])? == 0
            && vm.guest.has_export("proxy_on_configure")
        {
            bail!(
                "proxy_on_configure rejected the plugin configuration\n{}",
                vm.guest.report()
            );
        }
        Ok(vm)
    }
}

/// A request as the client sends it.
#[derive(Debug, Clone)]
pub struct Request {
    pub headers: Headers,
    pub body: Vec<u8>,
    /// Split the body into chunks of this size (default: one chunk).
    pub chunk_size: Option<usize>,
    pub trailers: Option<Headers>,
    pub connection: Connection,
    pub properties: Vec<(Vec<u8>, Vec<u8>)>,
}

fn set_pseudo(h: &mut Headers, name: &str, value: &str) {
    match h.0.iter_mut().find(|(k, _)| k == name) {
        Some(e) => e.1 = value.to_string(),
        None => h.0.push((name.into(), value.into())),
    }
}

fn chunks_of(body: &[u8], size: Option<usize>) -> VecDeque<Vec<u8>> {
    match size {
        _ if body.is_empty() => VecDeque::new(),
        Some(n) if n > 0 => body.chunks(n).map(<[u8]>::to_vec).collect(),
        _ => VecDeque::from([body.to_vec()]),
    }
}

impl Request {
    pub fn new(method: &str, path: &str) -> Self {
        let headers = Headers(vec![
            (":method".into(), method.into()),
            (":path".into(), path.into()),
            (":authority".into(), "api.city.example".into()),
            (":scheme".into(), "https".into()),
        ]);
        Request {
            headers,
            body: Vec::new(),
            chunk_size: None,
            trailers: None,
            connection: Connection::default(),
            properties: Vec::new(),
        }
    }

    pub fn get(path: &str) -> Self {
        Self::new("GET", path)
    }

    pub fn post(path: &str) -> Self {
        Self::new("POST", path)
    }

    /// Adds a header; a pseudo-header (`:path`…) is replaced instead.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        if name.starts_with(':') {
            set_pseudo(&mut self.headers, name, value);
        } else {
            self.headers.add(name, value);
        }
        self
    }

    /// Replaces all headers (pseudo-headers included) with these.
    pub fn headers<K: Into<String>, V: Into<String>>(
        mut self,
        all: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.headers = all.into_iter().collect();
        self
    }

    pub fn authority(self, host: &str) -> Self {
        self.header(":authority", host)
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// A JSON body with its content type.
    pub fn json(self, body: &str) -> Self {
        self.header("content-type", "application/json").body(body)
    }

    pub fn chunk_size(mut self, n: usize) -> Self {
        self.chunk_size = Some(n);
        self
    }

    pub fn trailer(mut self, name: &str, value: &str) -> Self {
        self.trailers
            .get_or_insert_with(Headers::new)
            .add(name, value);
        self
    }

    /// The client's `ip:port`.
    pub fn source(mut self, addr: &str) -> Self {
        self.connection.source = addr.into();
        self
    }

    pub fn destination(mut self, addr: &str) -> Self {
        self.connection.destination = addr.into();
        self
    }

    pub fn protocol(mut self, p: &str) -> Self {
        self.connection.protocol = p.into();
        self
    }

    /// Marks the connection mTLS with this verified peer certificate.
    pub fn mtls(mut self, cert: PeerCert) -> Self {
        self.connection.peer_cert = Some(cert);
        self
    }

    /// A property visible to this stream only, by dotted path.
    pub fn property(mut self, dotted: &str, value: impl Into<Vec<u8>>) -> Self {
        self.properties.push((encode_path(dotted), value.into()));
        self
    }
}

/// The upstream's reply.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub status: u16,
    pub headers: Headers,
    pub body: Vec<u8>,
    pub chunk_size: Option<usize>,
    pub trailers: Option<Headers>,
}

impl Upstream {
    pub fn new(status: u16) -> Self {
        Upstream {
            status,
            headers: Headers::new(),
            body: Vec::new(),
            chunk_size: None,
            trailers: None,
        }
    }

    pub fn ok() -> Self {
        Self::new(200)
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.add(name, value);
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    pub fn json(self, body: &str) -> Self {
        self.header("content-type", "application/json").body(body)
    }

    pub fn chunk_size(mut self, n: usize) -> Self {
        self.chunk_size = Some(n);
        self
    }

    pub fn trailer(mut self, name: &str, value: &str) -> Self {
        self.trailers
            .get_or_insert_with(Headers::new)
            .add(name, value);
        self
    }
}

/// What reached the upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarded {
    /// The request headers as the filter left them when it let them go.
    pub headers: Headers,
    pub body: Vec<u8>,
    pub trailers: Headers,
}

/// How the request phase ended (so far).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestOutcome {
    /// The filter answered; this is the reply as the client received it
    /// (after the filter's own response callbacks saw it).
    Local(LocalReply),
    Forwarded(Forwarded),
    /// Stopped, waiting for a callout reply or `continue_request`.
    Pending,
    /// The filter closed the stream.
    Reset,
}

/// What the client received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientResponse {
    pub status: u16,
    /// Without `:status`.
    pub headers: Headers,
    pub body: Vec<u8>,
    pub trailers: Headers,
    /// Set when a local reply replaced the upstream's response.
    pub local: Option<LocalReply>,
    /// The stream was reset (closed, or a local reply after the response
    /// headers had already gone out).
    pub reset: bool,
}

impl ClientResponse {
    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Result<serde_json::Value> {
        Ok(serde_json::from_slice(&self.body)?)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Stage {
    #[default]
    Headers,
    Body,
    Trailers,
    Done,
}

/// One direction's progress through the filter.
#[derive(Debug, Default)]
struct Pump {
    stage: Stage,
    stopped: Option<Stage>,
    coalesce: bool,
    chunks: VecDeque<Vec<u8>>,
    trailers: Option<Headers>,
    trailers_delivered: bool,
    fwd_headers: Option<Headers>,
    fwd_body: Vec<u8>,
    fwd_trailers: Option<Headers>,
}

impl Pump {
    fn new(chunks: VecDeque<Vec<u8>>, trailers: Option<Headers>) -> Self {
        Pump {
            chunks,
            trailers,
            ..Pump::default()
        }
    }

    fn complete(&self) -> bool {
        self.stage == Stage::Done && self.stopped.is_none()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    Request,
    Response,
}

impl Dir {
    fn callbacks(self) -> [&'static str; 3] {
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

    fn flow(self, s: &mut StreamData) -> &mut Flow {
        match self {
            Dir::Request => &mut s.request,
            Dir::Response => &mut s.response,
        }
    }

    fn take_continue(self, s: &mut StreamData) -> bool {
        let flag = match self {
            Dir::Request => &mut s.continue_request,
            Dir::Response => &mut s.continue_response,
        };
        std::mem::take(flag)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Request,
    /// Running a request-phase local reply through the response callbacks.
    LocalReply,
    /// Forwarded; waiting for or processing the upstream reply.
    Response,
    Ended,
}

struct Driver {
    phase: Phase,
    req: Pump,
    resp: Pump,
    outcome: RequestOutcome,
    local: Option<LocalReply>,
    client: Option<ClientResponse>,
}

impl Driver {
    fn pump(&mut self, dir: Dir) -> &mut Pump {
        match dir {
            Dir::Request => &mut self.req,
            Dir::Response => &mut self.resp,
        }
    }
}

/// A running VM instance of a plugin with its root context configured.
pub struct Vm {
    guest: Guest,
    root: u32,
    next_context: u32,
    script: Script,
    delivery: Delivery,
    drivers: HashMap<u32, Driver>,
    headers_stop_iteration: bool,
}

impl Vm {
    /// Calls a guest callback; a missing export counts as `Continue`/`true`
    /// is left to the caller (returns 0 here only for void callbacks).
    fn callback(&mut self, name: &'static str, ctx: u32, args: &[i32]) -> Result<i32> {
        let r = self.guest.call(name, ctx, args)?;
        if self.delivery == Delivery::Immediate {
            self.deliver_ready(ctx)?;
        }
        Ok(r.unwrap_or(CONTINUE))
    }

    /// Delivers scripted replies to callouts of `ctx` and of the root.
    fn deliver_ready(&mut self, ctx: u32) -> Result<()> {
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

    // ---- requests ------------------------------------------------------

    /// Sends a request through the filter; see [`Exchange`].
    pub fn send(&mut self, req: Request) -> Result<Exchange<'_>> {
        let id = self.open(req)?;
        Ok(Exchange { vm: self, id })
    }

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

    fn driver(&mut self, id: u32) -> Result<&mut Driver> {
        self.drivers
            .get_mut(&id)
            .ok_or_else(|| anyhow!("no stream {id}"))
    }

    fn stream(&mut self, id: u32) -> Result<&mut StreamData> {
        self.guest
            .state_mut()
            .streams
            .get_mut(&id)
            .ok_or_else(|| anyhow!("stream {id} has ended"))
    }

    /// Envoy's `continueDecoding`/`continueEncoding`: forwards what was held.
    fn resume(&mut self, id: u32, dir: Dir) -> Result<()> {
        let flow = std::mem::take(&mut dir.flow(self.stream(id)?).body);
        let (headers, trailers) = {
            let f = dir.flow(self.stream(id)?);
            (f.headers.clone(), f.trailers.clone())
        };
        let p = self.driver(id)?.pump(dir);
        p.stopped = None;
        if p.fwd_headers.is_none() {
            p.fwd_headers = Some(headers);
        }
        p.fwd_body.extend(flow);
        if p.trailers_delivered && p.fwd_trailers.is_none() {
            p.fwd_trailers = Some(trailers);
        }
        Ok(())
    }

    fn interrupted(&mut self, id: u32) -> Result<bool> {
        let s = self.stream(id)?;
        Ok(s.local_reply.is_some() || s.closed)
    }

    /// Runs one direction through the filter as far as it can go.
    fn pump(&mut self, id: u32, dir: Dir) -> Result<()> {
        let [on_headers, on_body, on_trailers] = dir.callbacks();
        let ctx = id as i32;
        loop {
            if self.interrupted(id)? {
                return Ok(());
            }
            let resumed = dir.take_continue(self.stream(id)?);
            if resumed && self.driver(id)?.pump(dir).stopped.is_some() {
                self.resume(id, dir)?;
            }
            let p = self.driver(id)?.pump(dir);
            match (p.stage, p.stopped) {
                (Stage::Headers, _) => {
                    let eos = p.chunks.is_empty() && p.trailers.is_none();
                    p.stage = Stage::Body;
                    let n = dir.flow(self.stream(id)?).headers.len() as i32;
                    if self.callback(on_headers, id, &[ctx, n, i32::from(eos)])? == CONTINUE {
                        self.resume(id, dir)?;
                    } else if self.headers_stop_iteration {
                        // Headers held; the body still reaches the filter.
                        self.driver(id)?.pump(dir).stopped = Some(Stage::Body);
                    } else {
                        let p = self.driver(id)?.pump(dir);
                        p.stopped = Some(Stage::Headers);
                        p.coalesce = true;
                    }
                }
                (Stage::Body, Some(Stage::Headers | Stage::Trailers)) => return Ok(()),
                (Stage::Body, _) if p.chunks.is_empty() => p.stage = Stage::Trailers,
                (Stage::Body, _) => {
                    let chunk: Vec<u8> = if std::mem::take(&mut p.coalesce) {
                        p.chunks.drain(..).flatten().collect()
                    } else {
                        p.chunks.pop_front().unwrap_or_default()
                    };
                    let eos = p.chunks.is_empty() && p.trailers.is_none();
                    let body = &mut dir.flow(self.stream(id)?).body;
                    body.extend(chunk);
                    let n = body.len() as i32;
                    if self.callback(on_body, id, &[ctx, n, i32::from(eos)])? == CONTINUE {
                        self.resume(id, dir)?;
                    } else {
                        self.driver(id)?.pump(dir).stopped = Some(Stage::Body);
                    }
                }
                (Stage::Trailers, Some(Stage::Headers)) => return Ok(()),
                (Stage::Trailers, _) => {
                    p.stage = Stage::Done;
                    let Some(t) = p.trailers.take() else { continue };
                    p.trailers_delivered = true;
                    let n = t.len() as i32;
                    dir.flow(self.stream(id)?).trailers = t;
                    if self.callback(on_trailers, id, &[ctx, n])? == CONTINUE {
                        self.resume(id, dir)?;
                    } else {
                        self.driver(id)?.pump(dir).stopped = Some(Stage::Trailers);
                    }
                }
                (Stage::Done, _) => return Ok(()),
            }
        }
    }

    /// Moves a stream forward after anything that may unblock it.
    fn advance_stream(&mut self, id: u32) -> Result<()> {
        match self.driver(id)?.phase {
            Phase::Request => {
                self.pump(id, Dir::Request)?;
                self.settle_request(id)
            }
            Phase::LocalReply | Phase::Response => {
                if self.driver(id)?.resp.stage != Stage::Headers
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
            d.outcome = RequestOutcome::Forwarded(Forwarded {
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
    fn run_local_reply(&mut self, id: u32, reply: LocalReply) -> Result<()> {
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
            d.outcome = RequestOutcome::Local(LocalReply {
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

    /// Feeds the upstream's reply to a forwarded request.
    pub fn feed_upstream(&mut self, id: u32, up: Upstream) -> Result<()> {
        let d = self.driver(id)?;
        if d.phase != Phase::Response || d.resp.stage != Stage::Headers {
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

    // ---- callouts ------------------------------------------------------

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

    /// Another context (the root, after `proxy_set_effective_context`, on a
    /// tick or a callout reply) may have continued, answered or closed a
    /// stream; Envoy acts on that at once, so move those streams on.
    fn advance_resumed_streams(&mut self) -> Result<()> {
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

    // ---- root context, time, queues -------------------------------------

    pub fn root_context_id(&self) -> u32 {
        self.root
    }

    /// Calls `proxy_on_tick` on the root context.
    pub fn tick(&mut self) -> Result<()> {
        let r = self.root;
        self.callback("proxy_on_tick", r, &[r as i32])?;
        self.advance_resumed_streams()
    }

    /// The period the guest asked for, if any.
    pub fn tick_period(&self) -> Option<Duration> {
        let ms = self.guest.state().tick_period_ms;
        (ms > 0).then(|| Duration::from_millis(u64::from(ms)))
    }

    /// Advances the clock by `by`, ticking once per elapsed tick period.
    pub fn advance(&mut self, by: Duration) -> Result<u32> {
        let Some(period) = self.tick_period() else {
            self.clock().advance(by);
            return Ok(0);
        };
        let mut left = by;
        let mut ticks = 0;
        while left >= period {
            self.clock().advance(period);
            left -= period;
            self.tick()?;
            ticks += 1;
        }
        self.clock().advance(left);
        Ok(ticks)
    }

    /// Delivers `proxy_on_queue_ready` for items enqueued to this VM's queues.
    pub fn deliver_queue_ready(&mut self) -> Result<usize> {
        let ready = self.shared().take_ready(self.guest.state().instance_id);
        for (queue, ctx) in &ready {
            self.callback("proxy_on_queue_ready", *ctx, &[*ctx as i32, *queue as i32])?;
        }
        self.advance_resumed_streams()?;
        Ok(ready.len())
    }

    /// `proxy_on_done` on the root context; true when it is done at once
    /// or called `proxy_done`.
    pub fn shutdown(&mut self) -> Result<bool> {
        let r = self.root;
        let done = self
            .guest
            .call("proxy_on_done", r, &[r as i32])?
            .unwrap_or(1)
            != 0;
        Ok(done || self.guest.state().done_called)
    }

    pub fn clock(&self) -> &Clock {
        &self.guest.state().clock
    }

    pub fn shared(&self) -> &SharedStore {
        &self.guest.state().shared
    }

    // ---- observation ---------------------------------------------------

    pub fn logs(&self) -> &[LogEntry] {
        &self.guest.state().logs
    }

    /// Whether some log line contains `needle`.
    pub fn logged(&self, needle: &str) -> bool {
        self.logs().iter().any(|l| l.message.contains(needle))
    }

    pub fn take_logs(&mut self) -> Vec<LogEntry> {
        std::mem::take(&mut self.guest.state_mut().logs)
    }

    /// A counter or gauge value by name.
    pub fn metric(&self, name: &str) -> Option<u64> {
        self.shared().metric(name)
    }

    pub fn histogram(&self, name: &str) -> Option<Vec<u64>> {
        self.shared().histogram(name)
    }

    pub fn fuel_used(&self) -> &[FuelUse] {
        self.guest.fuel_used()
    }

    pub fn take_fuel_used(&mut self) -> Vec<FuelUse> {
        self.guest.take_fuel_used()
    }

    /// Fuel of the most recent guest call.
    pub fn last_fuel(&self) -> Option<u64> {
        self.guest.fuel_used().last().map(|f| f.fuel)
    }

    /// The guest log and stdio, formatted.
    pub fn report(&self) -> String {
        self.guest.report()
    }

    /// Low-level access for tests of the ABI itself.
    pub fn guest(&mut self) -> &mut Guest {
        &mut self.guest
    }
}

fn reset_response() -> ClientResponse {
    ClientResponse {
        status: 0,
        headers: Headers::new(),
        body: Vec::new(),
        trailers: Headers::new(),
        local: None,
        reset: true,
    }
}

fn local_response(reply: &LocalReply) -> ClientResponse {
    ClientResponse {
        status: reply.status,
        headers: reply.headers.clone(),
        body: reply.body.clone(),
        trailers: Headers::new(),
        local: Some(reply.clone()),
        reset: false,
    }
}

fn client_response(p: &Pump, local: Option<LocalReply>) -> ClientResponse {
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
    pub fn forwarded(&self) -> Result<Forwarded> {
        match self.outcome() {
            RequestOutcome::Forwarded(f) => Ok(f),
            other => bail!("request was not forwarded: {other:?}\n{}", self.vm.report()),
        }
    }

    /// The local reply, or an error saying what happened instead.
    pub fn local(&self) -> Result<LocalReply> {
        match self.outcome() {
            RequestOutcome::Local(l) => Ok(l),
            other => bail!("no local reply: {other:?}\n{}", self.vm.report()),
        }
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
