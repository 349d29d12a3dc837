//! One JSON line per decision, at info level. It carries what an operator
//! needs to explain a decision and nothing a log reader could abuse: the
//! subject only as a keyed pseudonym, never a token, key, body value or raw IP.

use std::collections::BTreeMap;
use std::fmt;
use std::rc::Rc;

use chrono::{DateTime, SecondsFormat, Utc};
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;

use crate::deny::{Denial, Stage};
use crate::host::{Host, LogLevel};
use crate::identity::Identity;

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct DecisionRecord {
    pub time: String,
    pub request_id: String,
    pub route: Option<String>,
    pub method: String,
    pub path: String,
    pub identity_kind: Option<&'static str>,
    /// The subject's pseudonym, computed when the line is written.
    pub subject: Option<String>,
    /// The subject and the key it is pseudonymized with, until then: an
    /// HMAC per request is not worth paying for a line the proxy drops.
    #[serde(skip)]
    pub(crate) pending_subject: Option<PendingSubject>,
    pub outcome: Outcome,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<Stage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The policy failed rather than decided (its denial is fail-closed):
    /// tells an operator a broken policy from a deliberate refusal.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub policy_error: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redaction: Option<RedactionSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_eval_us: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    #[default]
    Allowed,
    Denied,
    /// The policy would have denied but runs in dry-run mode.
    DryRunDenied,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct RedactionSummary {
    pub profiles: Vec<String>,
    /// Counts per action (`removed`, `masked`, …); never values.
    pub counts: BTreeMap<String, u64>,
}

/// A raw subject waiting for its pseudonym; never serialized, and its
/// `Debug` does not show it.
#[derive(Clone, PartialEq)]
pub(crate) struct PendingSubject {
    subject: String,
    key: Rc<[u8]>,
}

impl fmt::Debug for PendingSubject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PendingSubject(..)")
    }
}

impl DecisionRecord {
    pub fn identify(&mut self, identity: &Identity, pseudonym_key: Option<&Rc<[u8]>>) {
        self.identity_kind = Some(identity.kind.as_str());
        self.subject = None;
        self.pending_subject = match (pseudonym_key, &identity.subject) {
            (Some(key), Some(subject)) => Some(PendingSubject {
                subject: subject.clone(),
                key: Rc::clone(key),
            }),
            _ => None,
        };
    }

    pub fn deny(&mut self, denial: &Denial) {
        self.outcome = Outcome::Denied;
        self.status = denial.status;
        self.stage = Some(denial.stage);
        if self.reason.is_none() {
            self.reason = Some(denial.problem.to_string());
        }
    }

    /// Writes the line. Serialization cannot fail for this type; if it ever
    /// did, a fixed line still records that a decision happened.
    pub fn emit(mut self, host: &dyn Host) {
        if !host.log_enabled(LogLevel::Info) {
            return;
        }
        if let Some(pending) = self.pending_subject.take() {
            self.subject = Some(pseudonym(&pending.key, &pending.subject));
        }
        self.time = rfc3339_utc(host.now_unix_nanos());
        let line = serde_json::to_string(&self)
            .unwrap_or_else(|_| r#"{"outcome":"unlogged"}"#.to_string());
        host.log(LogLevel::Info, &line);
    }
}

/// `p_` + 16 hex digits of HMAC-SHA256(key, subject): stable for one key, so
/// an operator can follow one caller across lines without learning who it is.
pub fn pseudonym(key: &[u8], subject: &str) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return "p_unavailable".to_string();
    };
    mac.update(subject.as_bytes());
    let digest = mac.finalize().into_bytes();
    format!("p_{}", hex::encode(&digest[..8]))
}

/// RFC 3339 in UTC with millisecond precision (`2023-11-14T22:13:20.123Z`).
pub fn rfc3339_utc(unix_nanos: u64) -> String {
    let seconds = i64::try_from(unix_nanos / 1_000_000_000).unwrap_or(i64::MAX);
    // Below one billion: always a valid sub-second part.
    let nanos = u32::try_from(unix_nanos % 1_000_000_000).unwrap_or(0);
    DateTime::<Utc>::from_timestamp(seconds, nanos)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::IdentityKind;

    #[test]
    fn time_format() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339_utc(1_700_000_000_123_000_000),
            "2023-11-14T22:13:20.123Z"
        );
        assert_eq!(
            rfc3339_utc(951_782_400_000_000_000),
            "2000-02-29T00:00:00.000Z"
        );
    }

    #[test]
    fn pseudonyms_are_keyed_and_stable() {
        let a = pseudonym(b"k1", "alice");
        assert_eq!(a, pseudonym(b"k1", "alice"));
        assert_ne!(a, pseudonym(b"k2", "alice"));
        assert_ne!(a, pseudonym(b"k1", "bob"));
        assert!(a.starts_with("p_") && a.len() == 18);
        assert!(!a.contains("alice"));
    }

    #[test]
    fn the_line_never_carries_the_raw_subject() {
        let host = crate::host::memory::MemoryHost::at_unix_seconds(1_700_000_000);
        let mut identity = Identity::anonymous();
        identity.kind = IdentityKind::Jwt;
        identity.subject = Some("citizen-4711".into());
        let mut record = DecisionRecord::default();
        let key: Rc<[u8]> = Rc::from(&b"log-key"[..]);
        record.identify(&identity, Some(&key));
        assert!(!format!("{record:?}").contains("citizen-4711"));
        record.emit(&host);
        let line = &host.log_lines()[0];
        assert!(!line.contains("citizen-4711"));
        assert!(line.contains(&pseudonym(b"log-key", "citizen-4711")));
        assert!(line.contains("\"identity_kind\":\"jwt\""));
    }

    #[test]
    fn no_line_is_built_when_the_proxy_would_drop_it() {
        let host = crate::host::memory::MemoryHost::at_unix_seconds(1_700_000_000);
        host.log_level.set(Some(LogLevel::Warn));
        DecisionRecord::default().emit(&host);
        assert!(host.log_lines().is_empty());
        host.log_level.set(Some(LogLevel::Info));
        DecisionRecord::default().emit(&host);
        assert_eq!(host.log_lines().len(), 1);
    }
}
