//! Buckets in proxy-wasm shared data, which every Envoy worker's VM sees.
//!
//! Why shards and not one shared-data key per bucket: proxy-wasm cannot
//! delete a key (a "deleted" key stays in Envoy's map, written empty), so
//! per-bucket keys would let a client rotating IPs or tokens grow Envoy's
//! memory without end. Instead each rule owns a fixed set of shard keys
//! (`<prefix><n>`), each holding a small table of `(key hash, bucket)`
//! entries, plus one overflow key. Memory is bounded by configuration alone.
//!
//! Every change is a compare-and-swap on one shard key, so a bucket's read,
//! refill, take and write are atomic across workers, and creating a bucket
//! is just adding an entry under that same CAS: two workers can never both
//! create it. The one blind write left is the first creation of a shard key
//! itself (the ABI has no create-if-absent); it writes an *empty* shard,
//! happens at most once per shard key per worker for the life of the
//! process, and the worker then starts over with a CAS read.
//!
//! Stored format (fixed binary, little-endian): one version byte, then
//! entries of 40 bytes: 16-byte key hash, 16-byte level, 8-byte timestamp.

use super::bucket::{BucketParams, BucketState, Take};
use super::key::KeyHash;
use crate::host::{Host, SharedDataError};

const FORMAT_VERSION: u8 = 1;
const HASH_LEN: usize = 16;
const ENTRY_LEN: usize = HASH_LEN + 16 + 8;
/// Each shard's table is read and written whole on every check: keep it to
/// about 1.3 KB so a check copies little and workers rarely collide.
const TARGET_ENTRIES_PER_SHARD: u32 = 32;
/// Reads and CAS writes per check before giving up: a storm of concurrent
/// writers fails the request closed (429), never open.
pub const MAX_CAS_ATTEMPTS: usize = 8;
/// The overflow key's single entry.
const OVERFLOW_HASH: KeyHash = [0u8; HASH_LEN];

/// Why a check could not be decided: the caller refuses the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreError {
    /// Other workers kept winning the compare-and-swap.
    Contention,
    /// The host refused a shared-data write.
    HostFailure,
    /// A stored value is not in our format.
    Corrupt,
}

impl StoreError {
    pub fn describe(self) -> &'static str {
        match self {
            Self::Contention => "too many concurrent updates of one shard",
            Self::HostFailure => "the proxy refused a shared-data write",
            Self::Corrupt => "a stored bucket shard is not in the expected format",
        }
    }
}

/// One check's result: whether the token was taken, and the bucket as it
/// stands afterwards (for the RateLimit fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TakeOutcome {
    pub admitted: bool,
    pub state: BucketState,
    /// The key cap was reached and the overflow bucket decided.
    pub overflow: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    key: KeyHash,
    state: BucketState,
}

/// A rule's buckets.
#[derive(Debug, Clone)]
pub struct RuleStore {
    prefix: String,
    shard_count: u32,
    max_keys: u32,
    params: BucketParams,
}

enum CasAttempt {
    Decided(TakeOutcome),
    ShardFull,
}

impl RuleStore {
    /// `prefix` names the rule and its shape (see [`super::rule`]), so a
    /// changed rule never reads buckets written under other parameters.
    pub fn new(prefix: String, max_keys: u32, params: BucketParams) -> Self {
        let max_keys = max_keys.max(1);
        Self {
            prefix,
            shard_count: max_keys.div_ceil(TARGET_ENTRIES_PER_SHARD),
            max_keys,
            params,
        }
    }

    pub fn params(&self) -> &BucketParams {
        &self.params
    }

    pub fn shard_count(&self) -> u32 {
        self.shard_count
    }

    /// Takes one token from the key's bucket, or from the overflow bucket
    /// when the key has none and its shard is at its share of the cap.
    pub fn take(
        &self,
        key: &KeyHash,
        now: u64,
        host: &dyn Host,
    ) -> Result<TakeOutcome, StoreError> {
        let shard = self.shard_of(key);
        let shard_key = self.shard_key(shard);
        let capacity = self.shard_capacity(shard);
        let mut attempts = 0;
        match self.take_in(&shard_key, key, capacity, now, host, &mut attempts)? {
            CasAttempt::Decided(outcome) => Ok(outcome),
            CasAttempt::ShardFull => {
                let overflow_key = self.overflow_key();
                match self.take_in(&overflow_key, &OVERFLOW_HASH, 1, now, host, &mut attempts)? {
                    CasAttempt::Decided(outcome) => Ok(TakeOutcome {
                        overflow: true,
                        ..outcome
                    }),
                    // The overflow key holds one entry only, ever.
                    CasAttempt::ShardFull => Err(StoreError::Corrupt),
                }
            }
        }
    }

    fn take_in(
        &self,
        shard_key: &str,
        key: &KeyHash,
        capacity: usize,
        now: u64,
        host: &dyn Host,
        attempts: &mut usize,
    ) -> Result<CasAttempt, StoreError> {
        while *attempts < MAX_CAS_ATTEMPTS {
            *attempts += 1;
            let read = host.shared_get(shard_key);
            let Some(cas) = read.cas else {
                create_empty(shard_key, host)?;
                continue;
            };
            let mut entries = decode(read.bytes.as_deref().unwrap_or_default())?;
            let index = match entries.iter().position(|e| e.key == *key) {
                Some(index) => index,
                None => match self.make_room(&mut entries, key, capacity, now) {
                    Some(index) => index,
                    None => return Ok(CasAttempt::ShardFull),
                },
            };
            let Some(entry) = entries.get_mut(index) else {
                return Err(StoreError::Corrupt);
            };
            let next = match self.params.take(entry.state, now) {
                Take::Admitted(next) => next,
                // Nothing taken: no write, so refusals under a flood cost
                // one read and never contend.
                Take::Refused(current) => {
                    return Ok(CasAttempt::Decided(TakeOutcome {
                        admitted: false,
                        state: current,
                        overflow: false,
                    }))
                }
            };
            entry.state = next;
            match host.shared_set(shard_key, &encode(&entries), Some(cas)) {
                Ok(()) => {
                    return Ok(CasAttempt::Decided(TakeOutcome {
                        admitted: true,
                        state: next,
                        overflow: false,
                    }))
                }
                Err(SharedDataError::CasMismatch) => continue,
                Err(SharedDataError::Failed) => return Err(StoreError::HostFailure),
            }
        }
        Err(StoreError::Contention)
    }

    /// A new entry (full bucket) for `key`: appended while the shard is
    /// under its share of the cap, else in place of a bucket that has
    /// refilled completely (forgetting a full bucket changes nothing).
    fn make_room(
        &self,
        entries: &mut Vec<Entry>,
        key: &KeyHash,
        capacity: usize,
        now: u64,
    ) -> Option<usize> {
        let fresh = Entry {
            key: *key,
            state: self.params.full(now),
        };
        if entries.len() < capacity {
            entries.push(fresh);
            return Some(entries.len() - 1);
        }
        let index = entries
            .iter()
            .position(|e| self.params.is_full(e.state, now))?;
        let slot = entries.get_mut(index)?;
        *slot = fresh;
        Some(index)
    }

    /// Drops the buckets of one shard that have refilled completely. One CAS
    /// attempt: if a worker wrote meanwhile, the next pass tries again.
    /// Returns how many expired; a corrupt shard is reset (it would
    /// otherwise refuse its keys forever) and reported.
    pub fn sweep_shard(&self, shard: u32, now: u64, host: &dyn Host) -> Result<usize, StoreError> {
        let shard_key = self.shard_key(shard);
        let read = host.shared_get(&shard_key);
        let Some(cas) = read.cas else {
            return Ok(0);
        };
        let entries = match decode(read.bytes.as_deref().unwrap_or_default()) {
            Ok(entries) => entries,
            Err(error) => {
                let _ = host.shared_set(&shard_key, &encode(&[]), Some(cas));
                return Err(error);
            }
        };
        let live: Vec<Entry> = entries
            .iter()
            .filter(|e| !self.params.is_full(e.state, now))
            .copied()
            .collect();
        let expired = entries.len() - live.len();
        if expired == 0 {
            return Ok(0);
        }
        match host.shared_set(&shard_key, &encode(&live), Some(cas)) {
            Ok(()) => Ok(expired),
            Err(_) => Ok(0),
        }
    }

    /// How many buckets are live across the rule's shards.
    #[cfg(test)]
    pub fn live_keys(&self, host: &dyn Host) -> usize {
        (0..self.shard_count)
            .filter_map(|s| host.shared_get(&self.shard_key(s)).bytes)
            .filter_map(|bytes| decode(&bytes).ok())
            .map(|entries| entries.len())
            .sum()
    }

    fn shard_of(&self, key: &KeyHash) -> u32 {
        let head = [key[0], key[1], key[2], key[3]];
        u32::from_le_bytes(head) % self.shard_count.max(1)
    }

    /// The cap split exactly over the shards.
    fn shard_capacity(&self, shard: u32) -> usize {
        let base = self.max_keys / self.shard_count.max(1);
        let extra = u32::from(shard < self.max_keys % self.shard_count.max(1));
        (base + extra) as usize
    }

    pub(super) fn shard_key(&self, shard: u32) -> String {
        format!("{}{shard}", self.prefix)
    }

    fn overflow_key(&self) -> String {
        format!("{}overflow", self.prefix)
    }
}

/// The first write of a shard key (see the module comment). Writes an empty
/// shard so a racing duplicate of this write carries no state either.
fn create_empty(shard_key: &str, host: &dyn Host) -> Result<(), StoreError> {
    match host.shared_set(shard_key, &encode(&[]), None) {
        Ok(()) | Err(SharedDataError::CasMismatch) => Ok(()),
        Err(SharedDataError::Failed) => Err(StoreError::HostFailure),
    }
}

fn encode(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + entries.len() * ENTRY_LEN);
    out.push(FORMAT_VERSION);
    for entry in entries {
        out.extend_from_slice(&entry.key);
        out.extend_from_slice(&entry.state.level.to_le_bytes());
        out.extend_from_slice(&entry.state.updated_nanos.to_le_bytes());
    }
    out
}

/// An empty value is an empty shard (the host may hand back a key written
/// empty as no bytes).
fn decode(bytes: &[u8]) -> Result<Vec<Entry>, StoreError> {
    let Some((&version, body)) = bytes.split_first() else {
        return Ok(Vec::new());
    };
    if version != FORMAT_VERSION || body.len() % ENTRY_LEN != 0 {
        return Err(StoreError::Corrupt);
    }
    body.chunks_exact(ENTRY_LEN).map(decode_entry).collect()
}

fn decode_entry(chunk: &[u8]) -> Result<Entry, StoreError> {
    let (key, rest) = chunk
        .split_at_checked(HASH_LEN)
        .ok_or(StoreError::Corrupt)?;
    let (level, time) = rest.split_at_checked(16).ok_or(StoreError::Corrupt)?;
    Ok(Entry {
        key: key.try_into().map_err(|_| StoreError::Corrupt)?,
        state: BucketState {
            level: u128::from_le_bytes(level.try_into().map_err(|_| StoreError::Corrupt)?),
            updated_nanos: u64::from_le_bytes(time.try_into().map_err(|_| StoreError::Corrupt)?),
        },
    })
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;
    use crate::host::memory::MemoryHost;
    use crate::host::{Callout, DispatchError, LogLevel, SharedValue};
    use crate::metrics::Metric;

    const S: u64 = 1_000_000_000;

    fn store(max_keys: u32, capacity: u64) -> RuleStore {
        RuleStore::new(
            "citygate/rl/test/".into(),
            max_keys,
            BucketParams::new(capacity, 1, 10),
        )
    }

    fn key(n: u32) -> KeyHash {
        let mut key = [7u8; 16];
        key[..4].copy_from_slice(&n.to_le_bytes());
        key
    }

    fn admitted(store: &RuleStore, key: &KeyHash, now: u64, host: &dyn Host) -> bool {
        store.take(key, now, host).unwrap().admitted
    }

    #[test]
    fn buckets_are_per_key_and_persist_in_shared_data() {
        let host = MemoryHost::default();
        let store = store(100, 2);
        assert!(admitted(&store, &key(1), 0, &host));
        assert!(admitted(&store, &key(1), 0, &host));
        assert!(!admitted(&store, &key(1), 0, &host));
        assert!(admitted(&store, &key(2), 0, &host));
        // A second VM with the same compiled rule sees the same buckets.
        let other_vm = self::store(100, 2);
        assert!(!admitted(&other_vm, &key(1), 0, &host));
        assert!(admitted(&other_vm, &key(1), 10 * S, &host));
        assert_eq!(store.live_keys(&host), 2);
    }

    #[test]
    fn past_the_cap_new_keys_share_the_overflow_bucket() {
        let host = MemoryHost::default();
        let store = store(2, 3);
        assert_eq!(store.shard_count(), 1);
        assert!(!store.take(&key(1), 0, &host).unwrap().overflow);
        assert!(!store.take(&key(2), 0, &host).unwrap().overflow);
        let mut overflowed = 0;
        for n in 3..10 {
            let outcome = store.take(&key(n), 0, &host).unwrap();
            assert!(outcome.overflow);
            overflowed += u32::from(outcome.admitted);
        }
        // Seven minted keys got three tokens between them, not three each.
        assert_eq!(overflowed, 3);
        assert_eq!(store.live_keys(&host), 2);
        // Known keys keep their own buckets.
        assert!(!store.take(&key(1), 0, &host).unwrap().overflow);
    }

    #[test]
    fn a_refilled_bucket_makes_room_for_a_new_key() {
        let host = MemoryHost::default();
        let store = store(1, 1);
        assert!(admitted(&store, &key(1), 0, &host));
        assert!(store.take(&key(2), 0, &host).unwrap().overflow);
        let outcome = store.take(&key(2), 10 * S, &host).unwrap();
        assert!(!outcome.overflow);
        assert!(outcome.admitted);
    }

    #[test]
    fn the_cap_is_split_exactly_over_shards() {
        let store = store(70, 1);
        assert_eq!(store.shard_count(), 3);
        let total: usize = (0..3).map(|s| store.shard_capacity(s)).sum();
        assert_eq!(total, 70);
    }

    #[test]
    fn sweep_expires_full_buckets_only() {
        let host = MemoryHost::default();
        let store = store(100, 2);
        for n in 0..10 {
            assert!(admitted(&store, &key(n), n as u64 * S, &host));
        }
        assert_eq!(store.live_keys(&host), 10);
        // Bucket n is full again at n*S + 10 s.
        let now = 15 * S;
        let expired: usize = (0..store.shard_count())
            .map(|s| store.sweep_shard(s, now, &host).unwrap())
            .sum();
        assert_eq!(expired, 6);
        assert_eq!(store.live_keys(&host), 4);
    }

    #[test]
    fn corrupt_shards_refuse_then_the_sweeper_resets_them() {
        let host = MemoryHost::default();
        let store = store(10, 2);
        let shard_key = store.shard_key(store.shard_of(&key(1)));
        host.shared_set(&shard_key, b"not a shard", None).unwrap();
        assert_eq!(store.take(&key(1), 0, &host), Err(StoreError::Corrupt));
        assert_eq!(
            store.sweep_shard(store.shard_of(&key(1)), 0, &host),
            Err(StoreError::Corrupt)
        );
        assert!(admitted(&store, &key(1), 0, &host));
    }

    #[test]
    fn decode_rejects_wrong_versions_and_lengths() {
        assert_eq!(decode(&[]), Ok(Vec::new()));
        assert_eq!(decode(&[FORMAT_VERSION]), Ok(Vec::new()));
        assert_eq!(decode(&[2]), Err(StoreError::Corrupt));
        assert_eq!(decode(&[FORMAT_VERSION, 0, 0]), Err(StoreError::Corrupt));
        let entry = Entry {
            key: key(9),
            state: BucketState {
                level: u128::MAX - 3,
                updated_nanos: 42,
            },
        };
        let bytes = encode(&[entry, entry]);
        assert_eq!(bytes.len(), 1 + 2 * ENTRY_LEN);
        assert_eq!(decode(&bytes), Ok(vec![entry, entry]));
    }

    /// Another worker, modelled as a hook that runs between our read and our
    /// compare-and-swap write.
    struct RacingHost<'a> {
        inner: &'a MemoryHost,
        before_cas_write: &'a dyn Fn(&MemoryHost),
        races_left: Cell<usize>,
    }

    impl Host for RacingHost<'_> {
        fn now_unix_nanos(&self) -> u64 {
            self.inner.now_unix_nanos()
        }
        fn shared_get(&self, key: &str) -> SharedValue {
            self.inner.shared_get(key)
        }
        fn shared_set(
            &self,
            key: &str,
            value: &[u8],
            cas: Option<u32>,
        ) -> Result<(), SharedDataError> {
            if cas.is_some() && self.races_left.get() > 0 {
                self.races_left.set(self.races_left.get() - 1);
                (self.before_cas_write)(self.inner);
            }
            self.inner.shared_set(key, value, cas)
        }
        fn count(&self, metric: Metric, delta: u64) {
            self.inner.count(metric, delta)
        }
        fn count_named(&self, name: &str, delta: u64) {
            self.inner.count_named(name, delta)
        }
        fn record(&self, metric: Metric, value: u64) {
            self.inner.record(metric, value)
        }
        fn log(&self, level: LogLevel, message: &str) {
            self.inner.log(level, message)
        }
        fn dispatch(&self, callout: &Callout) -> Result<u32, DispatchError> {
            self.inner.dispatch(callout)
        }
    }

    #[test]
    fn a_concurrent_take_is_never_lost() {
        let host = MemoryHost::default();
        let store = store(10, 3);
        let other_worker = |h: &MemoryHost| assert!(admitted(&self::store(10, 3), &key(1), 0, h));
        let racing = RacingHost {
            inner: &host,
            before_cas_write: &other_worker,
            races_left: Cell::new(2),
        };
        // Our first two writes lose the race to the other worker's takes;
        // the retry sees them, so three takes happen in all, not more.
        assert!(admitted(&store, &key(1), 0, &racing));
        assert!(!admitted(&store, &key(1), 0, &host));
    }

    #[test]
    fn a_cas_storm_fails_closed() {
        let host = MemoryHost::default();
        let store = store(10, 1000);
        let other_worker = |h: &MemoryHost| {
            let _ = self::store(10, 1000).take(&key(1), 0, h);
        };
        let racing = RacingHost {
            inner: &host,
            before_cas_write: &other_worker,
            races_left: Cell::new(usize::MAX),
        };
        assert_eq!(store.take(&key(1), 0, &racing), Err(StoreError::Contention));
    }

    #[test]
    fn concurrent_creation_of_one_key_makes_one_bucket() {
        let host = MemoryHost::default();
        let store = store(10, 1);
        // The other worker creates the same key between our read (no entry)
        // and our write: our CAS fails, and the retry finds its bucket.
        let other_worker = |h: &MemoryHost| assert!(admitted(&self::store(10, 1), &key(5), 0, h));
        let racing = RacingHost {
            inner: &host,
            before_cas_write: &other_worker,
            races_left: Cell::new(1),
        };
        // Prime the shard key so the race is on the entry, not the key.
        assert!(admitted(&store, &key(6), 0, &host));
        assert!(!admitted(&store, &key(5), 0, &racing));
        assert_eq!(store.live_keys(&host), 2);
    }

    #[test]
    fn a_failing_host_fails_closed() {
        struct Refusing(MemoryHost);
        impl Host for Refusing {
            fn now_unix_nanos(&self) -> u64 {
                0
            }
            fn shared_get(&self, key: &str) -> SharedValue {
                self.0.shared_get(key)
            }
            fn shared_set(&self, _: &str, _: &[u8], _: Option<u32>) -> Result<(), SharedDataError> {
                Err(SharedDataError::Failed)
            }
            fn count(&self, _: Metric, _: u64) {}
            fn count_named(&self, _: &str, _: u64) {}
            fn record(&self, _: Metric, _: u64) {}
            fn log(&self, _: LogLevel, _: &str) {}
            fn dispatch(&self, _: &Callout) -> Result<u32, DispatchError> {
                Err(DispatchError {
                    cluster: String::new(),
                    status: "no".into(),
                })
            }
        }
        let host = Refusing(MemoryHost::default());
        assert_eq!(
            store(10, 1).take(&key(1), 0, &host),
            Err(StoreError::HostFailure)
        );
    }
}
