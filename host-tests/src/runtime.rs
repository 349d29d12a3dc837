//! The wasmtime side: one [`Runtime`] (engine, linker, compile cache) per
//! caller, [`Plugin`]s (a compiled module ready to instantiate cheaply), the
//! import policy (only what Envoy provides), and [`Guest`], one VM instance
//! whose every call is fuel-metered so a runaway guest fails instead of
//! hanging.

use crate::abi::state::clock::WasiClock;
use crate::abi::state::{Clock, HostState, Hostcalls, SharedStore, VmSettings};
use crate::abi::{self, ENV};
use anyhow::{anyhow, bail, Context as _, Result};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;
use wasmtime::{
    Config, Engine, Instance, InstancePre, Linker, Module, Store, StoreLimitsBuilder, Val,
};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::WasiCtxBuilder;

/// Fuel for one guest callback unless the VM says otherwise: far above any
/// sane request (the filter uses a few million) yet a loop ends in seconds.
pub const DEFAULT_FUEL_PER_CALL: u64 = 2_000_000_000;

/// Guest linear memory cap, like a production VM limit.
pub const MEMORY_LIMIT: usize = 512 << 20;

/// The WASI preview1 functions Envoy (proxy-wasm-cpp-host) provides. A
/// filter importing anything else fails to load in Envoy, so it fails here.
pub const ENVOY_WASI: &[&str] = &[
    "fd_write",
    "fd_read",
    "fd_seek",
    "fd_close",
    "fd_fdstat_get",
    "environ_get",
    "environ_sizes_get",
    "args_get",
    "args_sizes_get",
    "clock_time_get",
    "random_get",
    "proc_exit",
    "path_open",
    "fd_prestat_get",
    "fd_prestat_dir_name",
];

const WASI: &str = "wasi_snapshot_preview1";

/// The ABI versions Envoy accepts, marked by an exported function.
const ABI_MARKERS: &[&str] = &["proxy_abi_version_0_2_1", "proxy_abi_version_0_2_0"];

/// Compiled plugins by path, with the modification time they were built from.
type CompileCache = HashMap<PathBuf, (Option<SystemTime>, Plugin)>;

/// Engine, linker and compile cache. Clone it freely (it is a handle).
#[derive(Clone)]
pub struct Runtime {
    engine: Engine,
    linker: Arc<Linker<HostState>>,
    cache: Arc<Mutex<CompileCache>>,
}

impl Runtime {
    pub fn new() -> Result<Runtime> {
        let mut config = Config::new();
        config.consume_fuel(true);
        let engine = Engine::new(&config)?;
        let mut linker = Linker::new(&engine);
        abi::link_all(&mut linker)?;
        wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |s: &mut HostState| &mut s.wasi)?;
        linker.allow_shadowing(true);
        abi::timers::link_wasi_clock(&mut linker, WASI)?;
        linker.allow_shadowing(false);
        Ok(Runtime {
            engine,
            linker: Arc::new(linker),
            cache: Arc::default(),
        })
    }

    /// A process-wide runtime. It holds only compiled code (keyed by path
    /// and mtime), no observable state, so parallel tests can share it.
    pub fn shared() -> Result<Runtime> {
        static SHARED: OnceLock<std::result::Result<Runtime, String>> = OnceLock::new();
        SHARED
            .get_or_init(|| Runtime::new().map_err(|e| format!("{e:#}")))
            .clone()
            .map_err(|e| anyhow!(e))
    }

    /// Loads a `.wasm` file, compiling it once per path and modification time.
    pub fn load(&self, path: impl AsRef<Path>) -> Result<Plugin> {
        let path = path.as_ref().to_path_buf();
        let mtime = std::fs::metadata(&path)
            .with_context(|| format!("cannot read {}", path.display()))?
            .modified()
            .ok();
        let cache = self
            .cache
            .lock()
            .map_err(|_| anyhow!("compile cache poisoned"))?;
        if let Some((t, p)) = cache.get(&path) {
            if *t == mtime {
                return Ok(p.clone());
            }
        }
        drop(cache);
        let bytes =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let plugin = self.compile(&bytes, &path.display().to_string())?;
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(path, (mtime, plugin.clone()));
        }
        Ok(plugin)
    }

    /// Compiles a module from wasm bytes or WAT text.
    pub fn compile(&self, bytes: &[u8], name: &str) -> Result<Plugin> {
        let module = Module::new(&self.engine, bytes)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("cannot compile {name}"))?;
        check_imports(&module).with_context(|| format!("{name} would not load in Envoy"))?;
        if !ABI_MARKERS.iter().any(|m| module.get_export(m).is_some()) {
            bail!(
                "{name} exports no supported proxy-wasm ABI version (want proxy_abi_version_0_2_1)"
            );
        }
        let pre = self
            .linker
            .instantiate_pre(&module)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("cannot link {name}"))?;
        Ok(Plugin {
            pre,
            name: name.to_string(),
        })
    }
}

/// Refuses imports Envoy does not provide.
pub fn check_imports(module: &Module) -> Result<()> {
    let mut bad = Vec::new();
    for i in module.imports() {
        let ok = match i.module() {
            WASI => ENVOY_WASI.contains(&i.name()),
            ENV => true, // resolved (or refused) by the linker
            _ => false,
        };
        if !ok {
            bad.push(format!("{}::{}", i.module(), i.name()));
        }
    }
    if bad.is_empty() {
        Ok(())
    } else {
        bail!("imports not provided by Envoy: {}", bad.join(", "))
    }
}

/// A compiled plugin, cheap to clone and to instantiate.
#[derive(Clone)]
pub struct Plugin {
    pre: InstancePre<HostState>,
    name: String,
}

impl Plugin {
    /// Loads through the shared runtime.
    pub fn load(path: impl AsRef<Path>) -> Result<Plugin> {
        Runtime::shared()?.load(path)
    }

    /// Compiles WAT text or wasm bytes through the shared runtime.
    pub fn from_bytes(bytes: impl AsRef<[u8]>) -> Result<Plugin> {
        Runtime::shared()?.compile(bytes.as_ref(), "inline module")
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Fuel one guest callback used, and the hostcalls it made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FuelUse {
    pub callback: &'static str,
    pub context_id: u32,
    pub fuel: u64,
    pub hostcalls: Hostcalls,
}

/// One VM instance: a store and an instance, with metered calls.
pub struct Guest {
    store: Store<HostState>,
    instance: Instance,
    pub fuel_per_call: u64,
    fuel: Vec<FuelUse>,
    trace: Vec<(&'static str, Vec<i32>)>,
    crashed: Option<String>,
}

impl Guest {
    pub(crate) fn new(
        plugin: &Plugin,
        settings: VmSettings,
        env: &[(String, String)],
        shared: SharedStore,
        clock: Clock,
    ) -> Result<Guest> {
        let stdout = MemoryOutputPipe::new(1 << 20);
        let stderr = MemoryOutputPipe::new(1 << 20);
        let wasi = WasiCtxBuilder::new()
            .envs(env)
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .wall_clock(WasiClock(clock.clone()))
            .monotonic_clock(WasiClock(clock.clone()))
            .build_p1();
        let limits = StoreLimitsBuilder::new().memory_size(MEMORY_LIMIT).build();
        let state = HostState::new(wasi, limits, (stdout, stderr), settings, shared, clock);
        let mut store = Store::new(plugin.pre.module().engine(), state);
        store.limiter(|s| &mut s.limits);
        store.set_fuel(DEFAULT_FUEL_PER_CALL)?;
        let instance = plugin
            .pre
            .instantiate(&mut store)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("cannot instantiate {}", plugin.name))?;
        let mut guest = Guest {
            store,
            instance,
            fuel_per_call: DEFAULT_FUEL_PER_CALL,
            fuel: Vec::new(),
            trace: Vec::new(),
            crashed: None,
        };
        let root = guest.state().root_context_id;
        for init in ["_initialize", "_start"] {
            if guest.has_export(init) {
                guest.call(init, root, &[])?;
                break;
            }
        }
        Ok(guest)
    }

    pub fn has_export(&mut self, name: &str) -> bool {
        self.instance.get_func(&mut self.store, name).is_some()
    }

    pub fn state(&self) -> &HostState {
        self.store.data()
    }

    pub fn state_mut(&mut self) -> &mut HostState {
        self.store.data_mut()
    }

    /// Fuel used by every call so far, in order.
    pub fn fuel_used(&self) -> &[FuelUse] {
        &self.fuel
    }

    pub fn take_fuel_used(&mut self) -> Vec<FuelUse> {
        std::mem::take(&mut self.fuel)
    }

    /// Calls an exported callback for context `ctx` with i32 arguments;
    /// `Ok(None)` when the guest does not export it (Envoy then skips it).
    /// A trap or exhausted fuel is an error quoting the guest's log, and
    /// leaves the VM unusable, as Envoy would.
    pub fn call(&mut self, callback: &'static str, ctx: u32, args: &[i32]) -> Result<Option<i32>> {
        let params: Vec<Val> = args.iter().map(|a| Val::I32(*a)).collect();
        self.call_vals(callback, ctx, &params)
    }

    /// [`Guest::call`] with arbitrary wasm values (e.g. i64 arguments).
    pub fn call_vals(
        &mut self,
        callback: &'static str,
        ctx: u32,
        params: &[Val],
    ) -> Result<Option<i32>> {
        if let Some(why) = &self.crashed {
            bail!("VM crashed earlier, cannot call {callback}: {why}");
        }
        let Some(func) = self.instance.get_func(&mut self.store, callback) else {
            return Ok(None);
        };
        let args = params
            .iter()
            .map(|v| v.i32().or(v.i64().map(|x| x as i32)).unwrap_or(0))
            .collect();
        self.trace.push((callback, args));
        let mut results = vec![Val::I32(0); func.ty(&self.store).results().len()];
        self.store.set_fuel(self.fuel_per_call)?;
        let (prev_active, prev_effective) = (self.state().active, self.state().effective);
        self.state_mut().active = ctx;
        self.state_mut().effective = ctx;
        let outer_hostcalls = std::mem::take(&mut self.state_mut().hostcalls);
        let r = func.call(&mut self.store, params, &mut results);
        let left = self.store.get_fuel().unwrap_or(0);
        self.state_mut().active = prev_active;
        self.state_mut().effective = prev_effective;
        let hostcalls = std::mem::replace(&mut self.state_mut().hostcalls, outer_hostcalls);
        self.fuel.push(FuelUse {
            callback,
            context_id: ctx,
            fuel: self.fuel_per_call.saturating_sub(left),
            hostcalls,
        });
        if let Err(trap) = r {
            let report = format!(
                "guest {callback}(context {ctx}) failed: {trap:?}\n{}",
                self.report()
            );
            self.crashed = Some(format!("{trap}"));
            bail!(report);
        }
        Ok(results.first().and_then(|v| v.i32()))
    }

    /// Every exported callback called so far, with its arguments.
    pub fn trace(&self) -> &[(&'static str, Vec<i32>)] {
        &self.trace
    }

    pub fn take_trace(&mut self) -> Vec<(&'static str, Vec<i32>)> {
        std::mem::take(&mut self.trace)
    }

    fn memory(&mut self) -> Result<wasmtime::Memory> {
        self.instance
            .get_memory(&mut self.store, "memory")
            .ok_or_else(|| anyhow!("guest exports no memory"))
    }

    /// Copies bytes out of guest memory (for ABI tests).
    pub fn read_memory(&mut self, ptr: u32, len: u32) -> Result<Vec<u8>> {
        let m = self.memory()?;
        let start = ptr as usize;
        m.data(&self.store)
            .get(start..start + len as usize)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| anyhow!("read outside guest memory"))
    }

    pub fn read_u32(&mut self, ptr: u32) -> Result<u32> {
        let b = self.read_memory(ptr, 4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Copies bytes into guest memory (for ABI tests).
    pub fn write_memory(&mut self, ptr: u32, bytes: &[u8]) -> Result<()> {
        let m = self.memory()?;
        m.write(&mut self.store, ptr as usize, bytes)
            .map_err(|_| anyhow!("write outside guest memory"))
    }

    /// The guest's log lines and stdio, for error messages.
    pub fn report(&self) -> String {
        let s = self.state();
        let mut out = String::from("--- guest log ---\n");
        for l in &s.logs {
            let _ = writeln!(out, "{l}");
        }
        let stdio = s.stdio();
        if !stdio.is_empty() {
            let _ = write!(out, "--- guest stdout/stderr ---\n{stdio}");
        }
        out
    }
}
