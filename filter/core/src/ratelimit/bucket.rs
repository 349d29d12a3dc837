//! Token-bucket arithmetic, pure and exact. A level is kept in *units*: one
//! token is `period_nanos` units and every elapsed nanosecond adds
//! `refill_tokens` units, so refill is an integer product with no rounding
//! and no drift however often a bucket is updated.

const NANOS_PER_SECOND: u64 = 1_000_000_000;

/// A bucket's shape: `capacity` tokens, refilled by `refill_tokens` every
/// `period_nanos`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketParams {
    capacity: u64,
    refill_tokens: u64,
    period_nanos: u64,
}

/// A bucket's state as stored: its level in units and when it was last
/// brought up to date.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketState {
    pub level: u128,
    pub updated_nanos: u64,
}

/// The result of asking for one token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// The token was taken; this is the new state.
    Admitted(BucketState),
    /// Not enough; the state brought up to `now`, with nothing taken.
    Refused(BucketState),
}

impl BucketParams {
    /// Every argument is at least 1 (the config validation guarantees it);
    /// zeros are raised to 1 so the arithmetic below never divides by zero.
    pub fn new(capacity: u64, refill_tokens: u64, period_seconds: u64) -> Self {
        Self {
            capacity: capacity.max(1),
            refill_tokens: refill_tokens.max(1),
            period_nanos: period_seconds.max(1).saturating_mul(NANOS_PER_SECOND),
        }
    }

    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    fn token_units(&self) -> u128 {
        u128::from(self.period_nanos)
    }

    fn capacity_units(&self) -> u128 {
        u128::from(self.capacity) * self.token_units()
    }

    /// A bucket nobody has used: full.
    pub fn full(&self, now_nanos: u64) -> BucketState {
        BucketState {
            level: self.capacity_units(),
            updated_nanos: now_nanos,
        }
    }

    /// The state at `now`. A clock that went backwards (another worker's
    /// write stamped a later instant) refills nothing rather than
    /// subtracting: time never runs backwards for a bucket.
    pub fn refilled(&self, state: BucketState, now_nanos: u64) -> BucketState {
        let level = state.level.min(self.capacity_units());
        if now_nanos <= state.updated_nanos {
            return BucketState { level, ..state };
        }
        let elapsed = u128::from(now_nanos - state.updated_nanos);
        let gained = elapsed.saturating_mul(u128::from(self.refill_tokens));
        BucketState {
            level: level.saturating_add(gained).min(self.capacity_units()),
            updated_nanos: now_nanos,
        }
    }

    pub fn take(&self, state: BucketState, now_nanos: u64) -> Take {
        let current = self.refilled(state, now_nanos);
        match current.level.checked_sub(self.token_units()) {
            Some(level) => Take::Admitted(BucketState { level, ..current }),
            None => Take::Refused(current),
        }
    }

    /// Whole tokens left.
    pub fn remaining(&self, state: BucketState) -> u64 {
        u64::try_from(state.level / self.token_units()).unwrap_or(u64::MAX)
    }

    /// How long until one token is available (0 if one is).
    pub fn nanos_until_token(&self, state: BucketState) -> u64 {
        self.nanos_to_reach(state, self.token_units())
    }

    /// How long until the bucket is full again: the quota's reset.
    pub fn nanos_until_full(&self, state: BucketState) -> u64 {
        self.nanos_to_reach(state, self.capacity_units())
    }

    /// A full bucket is indistinguishable from a fresh one, so forgetting it
    /// loses nothing: this is when a bucket may expire.
    pub fn is_full(&self, state: BucketState, now_nanos: u64) -> bool {
        self.refilled(state, now_nanos).level >= self.capacity_units()
    }

    /// Seconds an empty bucket takes to fill: the `w` of `RateLimit-Policy`.
    pub fn window_seconds(&self) -> u64 {
        ceil_seconds(self.nanos_until_full(BucketState {
            level: 0,
            updated_nanos: 0,
        }))
    }

    fn nanos_to_reach(&self, state: BucketState, target: u128) -> u64 {
        let missing = target.saturating_sub(state.level);
        let rate = u128::from(self.refill_tokens);
        let nanos = missing.div_ceil(rate);
        u64::try_from(nanos).unwrap_or(u64::MAX)
    }
}

/// Whole seconds, rounded up: a client told to wait must not come back early.
pub fn ceil_seconds(nanos: u64) -> u64 {
    nanos.div_ceil(NANOS_PER_SECOND)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const S: u64 = NANOS_PER_SECOND;

    #[test]
    fn a_fresh_bucket_admits_capacity_then_refuses() {
        let params = BucketParams::new(3, 1, 10);
        let mut state = params.full(0);
        for _ in 0..3 {
            match params.take(state, 0) {
                Take::Admitted(next) => state = next,
                Take::Refused(_) => panic!("refused too early"),
            }
        }
        assert!(matches!(params.take(state, 0), Take::Refused(_)));
        assert_eq!(params.remaining(state), 0);
        assert_eq!(params.nanos_until_token(state), 10 * S);
        assert_eq!(params.nanos_until_full(state), 30 * S);
    }

    #[test]
    fn refill_is_exact_for_fractional_rates() {
        // 100 tokens per 60 s: one token every 0.6 s, never drifting.
        let params = BucketParams::new(100, 100, 60);
        let empty = BucketState {
            level: 0,
            updated_nanos: 0,
        };
        let mut state = empty;
        // Many tiny updates must add up exactly like one big one.
        for step in 1..=600u64 {
            state = params.refilled(state, step * S / 10);
        }
        assert_eq!(state, params.refilled(empty, 60 * S));
        assert_eq!(params.remaining(state), 100);
        assert_eq!(params.remaining(params.refilled(empty, 599_999_999)), 0);
        assert_eq!(params.remaining(params.refilled(empty, 600_000_000)), 1);
    }

    #[test]
    fn a_clock_going_backwards_refills_nothing() {
        let params = BucketParams::new(2, 1, 1);
        let state = BucketState {
            level: 0,
            updated_nanos: 10 * S,
        };
        let earlier = params.refilled(state, 5 * S);
        assert_eq!(earlier, state);
        assert!(matches!(params.take(state, 5 * S), Take::Refused(_)));
    }

    #[test]
    fn full_means_expirable_and_window_is_time_to_fill() {
        let params = BucketParams::new(100, 100, 60);
        assert_eq!(params.window_seconds(), 60);
        let Take::Admitted(state) = params.take(params.full(0), 0) else {
            panic!("fresh bucket refused");
        };
        assert!(!params.is_full(state, 0));
        assert!(!params.is_full(state, 599_999_999));
        assert!(params.is_full(state, 600_000_000));
        assert_eq!(BucketParams::new(10, 1, 3).window_seconds(), 30);
    }

    #[test]
    fn extreme_parameters_do_not_overflow() {
        let params = BucketParams::new(1_000_000_000, 1_000_000_000, 31_536_000);
        let state = params.full(0);
        let later = params.refilled(state, u64::MAX);
        assert_eq!(params.remaining(later), 1_000_000_000);
        assert!(matches!(params.take(later, u64::MAX), Take::Admitted(_)));
    }

    proptest! {
        /// Over any window of time, a bucket admits at most its capacity plus
        /// what it refills in that window, for any sequence of time steps.
        #[test]
        fn never_admits_more_than_capacity_plus_refill(
            capacity in 1u64..20,
            refill in 1u64..10,
            period_seconds in 1u64..5,
            steps in proptest::collection::vec((0u64..3 * S, 0usize..6), 1..60),
        ) {
            let params = BucketParams::new(capacity, refill, period_seconds);
            let mut now = 0u64;
            let mut state = params.full(now);
            let mut admitted_at = Vec::new();
            for (delta, requests) in steps {
                now += delta;
                for _ in 0..requests {
                    if let Take::Admitted(next) = params.take(state, now) {
                        state = next;
                        admitted_at.push(now);
                    }
                }
            }
            let period_nanos = u128::from(period_seconds * S);
            for (i, start) in admitted_at.iter().enumerate() {
                for (j, end) in admitted_at.iter().enumerate().skip(i) {
                    let in_window = (j - i + 1) as u128;
                    let refilled = u128::from(end - start) * u128::from(refill) / period_nanos;
                    prop_assert!(
                        in_window <= u128::from(capacity) + refilled,
                        "{in_window} admitted in [{start}, {end}]"
                    );
                }
            }
        }

        /// A bucket never refuses while it holds a whole token.
        #[test]
        fn admits_whenever_a_token_is_available(
            capacity in 1u64..20,
            refill in 1u64..10,
            steps in proptest::collection::vec(0u64..2 * S, 1..40),
        ) {
            let params = BucketParams::new(capacity, refill, 1);
            let mut now = 0u64;
            let mut state = params.full(now);
            for delta in steps {
                now += delta;
                let available = params.remaining(params.refilled(state, now));
                match params.take(state, now) {
                    Take::Admitted(next) => {
                        prop_assert!(available >= 1);
                        state = next;
                    }
                    Take::Refused(_) => prop_assert_eq!(available, 0),
                }
            }
        }
    }
}
