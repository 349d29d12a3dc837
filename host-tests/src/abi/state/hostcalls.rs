//! Hostcalls counted by name: what one guest callback (or a sum of them,
//! e.g. a whole request) asked of the host.

use std::collections::BTreeMap;
use std::fmt;

/// Hostcalls by import name (`proxy_get_header_map_value` → 3), counted by
/// the linker wrapper in [`crate::abi::call`]. Of the WASI imports only
/// `clock_time_get` is counted (the one a request calls).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hostcalls(BTreeMap<&'static str, u64>);

impl Hostcalls {
    pub(crate) fn count(&mut self, name: &'static str) {
        *self.0.entry(name).or_default() += 1;
    }

    /// Every hostcall counted.
    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }

    /// Calls of one hostcall by name (0 if never called).
    pub fn get(&self, name: &str) -> u64 {
        self.0.get(name).copied().unwrap_or(0)
    }

    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &Hostcalls) {
        for (name, n) in &other.0 {
            *self.0.entry(name).or_default() += n;
        }
    }

    /// Names and counts, most called first (then by name).
    pub fn by_count(&self) -> Vec<(&'static str, u64)> {
        let mut v: Vec<_> = self.0.iter().map(|(k, n)| (*k, *n)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        v
    }

    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.0.iter().map(|(k, n)| (*k, *n))
    }
}

impl<'a> FromIterator<&'a Hostcalls> for Hostcalls {
    fn from_iter<I: IntoIterator<Item = &'a Hostcalls>>(iter: I) -> Self {
        let mut sum = Hostcalls::default();
        for h in iter {
            sum.add(h);
        }
        sum
    }
}

/// `name×n, …`, most called first.
impl fmt::Display for Hostcalls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (name, n)) in self.by_count().into_iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{name}×{n}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_sum_and_sort_by_count() {
        let mut a = Hostcalls::default();
        a.count("proxy_log");
        a.count("proxy_get_header_map_value");
        a.count("proxy_get_header_map_value");
        let mut b = Hostcalls::default();
        b.count("proxy_log");
        b.count("proxy_log");
        let sum: Hostcalls = [&a, &b].into_iter().collect();
        assert_eq!(sum.total(), 5);
        assert_eq!(sum.get("proxy_log"), 3);
        assert_eq!(sum.get("proxy_done"), 0);
        assert_eq!(sum.to_string(), "proxy_log×3, proxy_get_header_map_value×2");
    }
}
