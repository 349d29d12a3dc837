//! [`VmBuilder`]: configures a VM of a plugin (configuration, environment,
//! properties, shared store, clock, scripted callouts, fuel) and starts it
//! the way Envoy does.

use super::script::{Delivery, Script};
use super::vm::Vm;
use crate::abi::properties::encode_path;
use crate::abi::state::{
    CalloutReply, CalloutRequest, Clock, GrpcCallRequest, GrpcReply, ProxyLogLevel, SharedStore,
    VmSettings,
};
use crate::runtime::{Guest, Plugin, DEFAULT_FUEL_PER_CALL};
use anyhow::{bail, Result};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

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
    pub fn log_level(mut self, level: ProxyLogLevel) -> Self {
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
