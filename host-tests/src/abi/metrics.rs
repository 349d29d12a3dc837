//! Metrics: `proxy_define_metric`, `proxy_increment_metric`,
//! `proxy_record_metric`, `proxy_get_metric`, over the metrics of the VM's
//! [`super::state::SharedStore`] (Envoy's rules live in
//! [`super::state::metrics`]).

use super::call::{finish, hostcall, ENV};
use super::memory::{self, Cx};
use super::state::{HostState, MetricKind};
use super::status::Status;
use wasmtime::Linker;

pub(crate) fn link(l: &mut Linker<HostState>) -> anyhow::Result<()> {
    hostcall(
        l,
        ENV,
        "proxy_define_metric",
        |mut c: Cx<'_>, kind: u32, p: u32, n: u32, rid: u32| {
            finish((|| {
                let kind = match kind {
                    0 => MetricKind::Counter,
                    1 => MetricKind::Gauge,
                    2 => MetricKind::Histogram,
                    _ => return Err(Status::BadArgument.into()),
                };
                let name = memory::read_str(&mut c, p, n)?;
                memory::check(&mut c, rid, 4)?;
                let id = c.data().shared.define_metric(kind, &name)?;
                memory::write_u32(&mut c, rid, id)
            })())
        },
    )?;
    hostcall(
        l,
        ENV,
        "proxy_increment_metric",
        |c: Cx<'_>, id: u32, offset: i64| {
            finish(
                c.data()
                    .shared
                    .increment_metric(id, offset)
                    .map_err(Into::into),
            )
        },
    )?;
    hostcall(
        l,
        ENV,
        "proxy_record_metric",
        |c: Cx<'_>, id: u32, value: u64| {
            finish(c.data().shared.record_metric(id, value).map_err(Into::into))
        },
    )?;
    hostcall(
        l,
        ENV,
        "proxy_get_metric",
        |mut c: Cx<'_>, id: u32, rp: u32| {
            finish((|| {
                memory::check(&mut c, rp, 8)?;
                let v = c.data().shared.get_metric(id)?;
                memory::write_u64(&mut c, rp, v)
            })())
        },
    )?;
    Ok(())
}
