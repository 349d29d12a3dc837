//! The metric values one Envoy process keeps for a plugin, with Envoy's
//! rules: counters only grow, histograms can be recorded but not read back.
//! Ids start at 1 (index + 1) so 0 never names a metric.

use crate::abi::status::Status;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter = 0,
    Gauge = 1,
    Histogram = 2,
}

#[derive(Debug, Clone)]
struct Metric {
    name: String,
    kind: MetricKind,
    value: u64,
    samples: Vec<u64>,
}

/// Every metric defined so far, in definition order.
#[derive(Debug, Default)]
pub(crate) struct Metrics(Vec<Metric>);

impl Metrics {
    /// Defines a metric, or returns the id of the one already named so.
    pub(crate) fn define(&mut self, kind: MetricKind, name: &str) -> Result<u32, Status> {
        if let Some(i) = self.0.iter().position(|m| m.name == name) {
            if self.0[i].kind != kind {
                return Err(Status::BadArgument);
            }
            return Ok(i as u32 + 1);
        }
        self.0.push(Metric {
            name: name.into(),
            kind,
            value: 0,
            samples: Vec::new(),
        });
        Ok(self.0.len() as u32)
    }

    fn by_id(&mut self, id: u32) -> Result<&mut Metric, Status> {
        self.0
            .get_mut((id as usize).wrapping_sub(1))
            .ok_or(Status::NotFound)
    }

    pub(crate) fn increment(&mut self, id: u32, offset: i64) -> Result<(), Status> {
        let m = self.by_id(id)?;
        match m.kind {
            MetricKind::Counter if offset < 0 => Err(Status::BadArgument),
            MetricKind::Histogram => Err(Status::BadArgument),
            _ => {
                m.value = m.value.saturating_add_signed(offset);
                Ok(())
            }
        }
    }

    pub(crate) fn record(&mut self, id: u32, value: u64) -> Result<(), Status> {
        let m = self.by_id(id)?;
        match m.kind {
            MetricKind::Counter => m.value = m.value.saturating_add(value),
            MetricKind::Gauge => m.value = value,
            MetricKind::Histogram => m.samples.push(value),
        }
        Ok(())
    }

    pub(crate) fn get(&mut self, id: u32) -> Result<u64, Status> {
        let m = self.by_id(id)?;
        match m.kind {
            MetricKind::Histogram => Err(Status::BadArgument),
            _ => Ok(m.value),
        }
    }

    /// The value of a counter or gauge by name.
    pub(crate) fn value(&self, name: &str) -> Option<u64> {
        self.0
            .iter()
            .find(|m| m.name == name && m.kind != MetricKind::Histogram)
            .map(|m| m.value)
    }

    /// The samples recorded into a histogram, by name.
    pub(crate) fn histogram(&self, name: &str) -> Option<Vec<u64>> {
        self.0
            .iter()
            .find(|m| m.name == name && m.kind == MetricKind::Histogram)
            .map(|m| m.samples.clone())
    }

    /// Every metric as (name, kind, value or sample count).
    pub(crate) fn list(&self) -> Vec<(String, MetricKind, u64)> {
        self.0
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
