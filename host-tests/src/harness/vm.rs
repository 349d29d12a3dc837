//! [`Vm`]: a running VM instance of a plugin. Here the guest callbacks,
//! the root context, the clock, shared queues and what a test observes (log
//! lines, metrics, fuel, hostcalls); streams and callouts go on in `stream`, `chain`
//! and `callouts`.

use super::driver::Driver;
use super::script::{Delivery, Script};
use crate::abi::state::{Clock, Hostcalls, LogEntry, SharedStore};
use crate::runtime::{FuelUse, Guest};
use anyhow::Result;
use std::collections::HashMap;
use std::time::Duration;

/// proxy-wasm's `Action::Continue`; a callback the guest does not export
/// counts as it, as in Envoy.
pub(super) const CONTINUE: i32 = 0;

/// A running VM instance of a plugin with its root context configured.
pub struct Vm {
    pub(super) guest: Guest,
    pub(super) root: u32,
    pub(super) next_context: u32,
    pub(super) script: Script,
    pub(super) delivery: Delivery,
    pub(super) drivers: HashMap<u32, Driver>,
    pub(super) headers_stop_iteration: bool,
}

impl Vm {
    /// Calls a guest callback; a missing export counts as `Continue`/`true`
    /// is left to the caller (returns 0 here only for void callbacks).
    pub(super) fn callback(&mut self, name: &'static str, ctx: u32, args: &[i32]) -> Result<i32> {
        let r = self.guest.call(name, ctx, args)?;
        if self.delivery == Delivery::Immediate {
            self.deliver_ready(ctx)?;
        }
        Ok(r.unwrap_or(CONTINUE))
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

    /// Hostcalls of the most recent request: summed over every callback
    /// recorded (since the last [`Vm::take_fuel_used`]) for the latest HTTP
    /// context, from its headers to its log. Empty before any request.
    pub fn last_request_hostcalls(&self) -> Hostcalls {
        let root = self.guest.state().root_context_id;
        let used = self.guest.fuel_used();
        let Some(ctx) = used.iter().rev().map(|f| f.context_id).find(|c| *c != root) else {
            return Hostcalls::default();
        };
        used.iter()
            .filter(|f| f.context_id == ctx)
            .map(|f| &f.hostcalls)
            .collect()
    }

    /// Hostcalls of every guest call recorded (since the last
    /// [`Vm::take_fuel_used`]), summed by name.
    pub fn hostcalls(&self) -> Hostcalls {
        self.guest
            .fuel_used()
            .iter()
            .map(|f| &f.hostcalls)
            .collect()
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
