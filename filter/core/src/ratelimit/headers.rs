//! The RateLimit fields of draft-ietf-httpapi-ratelimit-headers (structured
//! fields: `RateLimit-Policy: "name";q=100;w=60`, `RateLimit:
//! "name";r=0;t=12`), `Retry-After`, and optionally the legacy
//! `X-RateLimit-*` trio.
//!
//! A token bucket maps onto the draft as: `q` the capacity, `w` the seconds
//! an empty bucket takes to fill, `r` the whole tokens left, `t` the seconds
//! until the bucket is full again (the quota's reset).

use super::bucket::{ceil_seconds, BucketParams, BucketState};

/// One rule's quota as a client sees it after a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaView<'a> {
    /// The rule's name; validated at compile time to be a safe sf-string.
    pub policy: &'a str,
    pub quota: u64,
    pub window_seconds: u64,
    pub remaining: u64,
    pub reset_seconds: u64,
}

impl<'a> QuotaView<'a> {
    pub fn new(
        policy: &'a str,
        params: &BucketParams,
        window_seconds: u64,
        state: BucketState,
    ) -> Self {
        Self {
            policy,
            quota: params.capacity(),
            window_seconds,
            remaining: params.remaining(state),
            reset_seconds: ceil_seconds(params.nanos_until_full(state)),
        }
    }

    /// The tighter of two quotas: fewer tokens left, then the later reset.
    pub fn is_tighter_than(&self, other: &QuotaView<'_>) -> bool {
        (self.remaining, std::cmp::Reverse(self.reset_seconds))
            < (other.remaining, std::cmp::Reverse(other.reset_seconds))
    }
}

/// Fields for an allowed response.
pub fn quota_headers(quota: &QuotaView<'_>, legacy: bool) -> Vec<(String, String)> {
    let mut headers = vec![
        (
            "ratelimit-policy".to_string(),
            format!(
                "\"{}\";q={};w={}",
                quota.policy, quota.quota, quota.window_seconds
            ),
        ),
        (
            "ratelimit".to_string(),
            format!(
                "\"{}\";r={};t={}",
                quota.policy, quota.remaining, quota.reset_seconds
            ),
        ),
    ];
    if legacy {
        headers.extend([
            ("x-ratelimit-limit".to_string(), quota.quota.to_string()),
            (
                "x-ratelimit-remaining".to_string(),
                quota.remaining.to_string(),
            ),
            (
                "x-ratelimit-reset".to_string(),
                quota.reset_seconds.to_string(),
            ),
        ]);
    }
    headers
}

/// `Retry-After` in whole seconds, at least 1: a client told 0 would retry
/// at once and be refused again.
pub fn retry_after_seconds(nanos_until_token: u64) -> u64 {
    ceil_seconds(nanos_until_token).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quota(remaining: u64, reset: u64) -> QuotaView<'static> {
        QuotaView {
            policy: "per-ip",
            quota: 100,
            window_seconds: 60,
            remaining,
            reset_seconds: reset,
        }
    }

    #[test]
    fn ietf_structured_fields() {
        let headers = quota_headers(&quota(0, 12), false);
        assert_eq!(
            headers,
            vec![
                (
                    "ratelimit-policy".to_string(),
                    "\"per-ip\";q=100;w=60".to_string()
                ),
                ("ratelimit".to_string(), "\"per-ip\";r=0;t=12".to_string()),
            ]
        );
    }

    #[test]
    fn legacy_fields_on_request() {
        let headers = quota_headers(&quota(7, 3), true);
        assert!(headers.contains(&("x-ratelimit-limit".into(), "100".into())));
        assert!(headers.contains(&("x-ratelimit-remaining".into(), "7".into())));
        assert!(headers.contains(&("x-ratelimit-reset".into(), "3".into())));
    }

    #[test]
    fn bucket_state_maps_onto_the_draft() {
        let params = BucketParams::new(100, 100, 60);
        let state = BucketState {
            level: 40 * 60_000_000_000u128 + 1,
            updated_nanos: 0,
        };
        let view = QuotaView::new("p", &params, params.window_seconds(), state);
        assert_eq!(view.quota, 100);
        assert_eq!(view.window_seconds, 60);
        assert_eq!(view.remaining, 40);
        // 60 tokens missing at 0.6 s each: 36 s, rounded up.
        assert_eq!(view.reset_seconds, 36);
    }

    #[test]
    fn tightest_is_fewest_remaining_then_latest_reset() {
        assert!(quota(1, 5).is_tighter_than(&quota(2, 1)));
        assert!(quota(1, 9).is_tighter_than(&quota(1, 5)));
        assert!(!quota(3, 9).is_tighter_than(&quota(1, 5)));
    }

    #[test]
    fn retry_after_rounds_up_and_is_never_zero() {
        assert_eq!(retry_after_seconds(0), 1);
        assert_eq!(retry_after_seconds(1), 1);
        assert_eq!(retry_after_seconds(1_000_000_001), 2);
    }
}
