//! Metrics: `proxy_define_metric`, `proxy_increment_metric`,
//! `proxy_record_metric`, `proxy_get_metric`, with Envoy's rules (counters
//! only grow, histograms can be recorded but not read back).

use super::context::HostState;
use super::memory::{self, Cx};
use super::shared_data::SharedStore;
use super::{finish, Status, ENV};
use wasmtime::Linker;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter = 0,
    Gauge = 1,
    Histogram = 2,
}

#[derive(Debug, Clone)]
pub(crate) struct Metric {
    pub(crate) name: String,
    pub(crate) kind: MetricKind,
    pub(crate) value: u64,
    pub(crate) samples: Vec<u64>,
}

impl SharedStore {
    /// Defines a metric, or returns the id of the one already named so.
    pub fn define_metric(&self, kind: MetricKind, name: &str) -> Result<u32, Status> {
        let mut s = self.lock();
        if let Some(i) = s.metrics.iter().position(|m| m.name == name) {
            if s.metrics[i].kind != kind {
                return Err(Status::BadArgument);
            }
            return Ok(i as u32 + 1);
        }
        s.metrics.push(Metric {
            name: name.into(),
            kind,
            value: 0,
            samples: Vec::new(),
        });
        Ok(s.metrics.len() as u32)
    }

    fn with_metric<T>(
        &self,
        id: u32,
        f: impl FnOnce(&mut Metric) -> Result<T, Status>,
    ) -> Result<T, Status> {
        let mut s = self.lock();
        let m = s
            .metrics
            .get_mut((id as usize).wrapping_sub(1))
            .ok_or(Status::NotFound)?;
        f(m)
    }

    pub fn increment_metric(&self, id: u32, offset: i64) -> Result<(), Status> {
        self.with_metric(id, |m| match m.kind {
            MetricKind::Counter if offset < 0 => Err(Status::BadArgument),
            MetricKind::Histogram => Err(Status::BadArgument),
            _ => {
                m.value = m.value.saturating_add_signed(offset);
                Ok(())
            }
        })
    }

    pub fn record_metric(&self, id: u32, value: u64) -> Result<(), Status> {
        self.with_metric(id, |m| {
            match m.kind {
                MetricKind::Counter => m.value = m.value.saturating_add(value),
                MetricKind::Gauge => m.value = value,
                MetricKind::Histogram => m.samples.push(value),
            }
            Ok(())
        })
    }

    pub fn get_metric(&self, id: u32) -> Result<u64, Status> {
        self.with_metric(id, |m| match m.kind {
            MetricKind::Histogram => Err(Status::BadArgument),
            _ => Ok(m.value),
        })
    }

    /// The value of a counter or gauge by name.
    pub fn metric(&self, name: &str) -> Option<u64> {
        let s = self.lock();
        s.metrics
            .iter()
            .find(|m| m.name == name && m.kind != MetricKind::Histogram)
            .map(|m| m.value)
    }

    /// The samples recorded into a histogram, by name.
    pub fn histogram(&self, name: &str) -> Option<Vec<u64>> {
        let s = self.lock();
        s.metrics
            .iter()
            .find(|m| m.name == name && m.kind == MetricKind::Histogram)
            .map(|m| m.samples.clone())
    }

    /// Every metric as (name, kind, value or sample count).
    pub fn metrics(&self) -> Vec<(String, MetricKind, u64)> {
        let s = self.lock();
        s.metrics
            .iter()
            .map(|m| {
                let v = match m.kind {
                    MetricKind::Histogram => m.samples.len() as u64,
                    _ => m.value,
                };
                (m.name.clone(), m.kind, v)
            })
            .collect()
    }
}

pub(crate) fn link(l: &mut Linker<HostState>) -> anyhow::Result<()> {
    l.func_wrap(
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
    l.func_wrap(
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
    l.func_wrap(
        ENV,
        "proxy_record_metric",
        |c: Cx<'_>, id: u32, value: u64| {
            finish(c.data().shared.record_metric(id, value).map_err(Into::into))
        },
    )?;
    l.func_wrap(
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
