//! Verified tokens, per provider and per VM, keyed by the token itself: a
//! repeated token costs one SipHash of its bytes (std's `HashMap`, keyed
//! with per-process random keys, so chosen tokens cannot flood one bucket)
//! and one exact comparison, instead of a SHA-256 and a signature check.
//! Envoy's jwt_authn keys its cache by the raw token too. Entries end with
//! the token (`exp` + skew) and with the key set they were verified
//! against, so a key removed from the JWKS stops its tokens at once.
//!
//! A provider keeps two: verified tokens, and refused ones with the reason
//! (so a replayed bad token is not checked again), each at most `capacity`
//! entries (each token at most the provider's `max_token_bytes`). A full cache drops one arbitrary entry per
//! insert (the hash order is random), never scanning the whole cache on the
//! request path; expired entries go when they are next looked up.

use std::cell::RefCell;
use std::collections::HashMap;

use crate::identity::Identity;

struct Entry<V> {
    value: V,
    valid_until: u64,
    key_generation: u64,
}

/// What is kept per token: the identity of a verified JWT by default; the
/// introspection cache keeps its answers in the same structure.
pub struct TokenCache<V = Identity> {
    capacity: usize,
    entries: RefCell<HashMap<Box<str>, Entry<V>>>,
}

impl<V: Clone> TokenCache<V> {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            entries: RefCell::new(HashMap::new()),
        }
    }

    pub fn get(&self, token: &str, now: u64, key_generation: u64) -> Option<V> {
        let mut entries = self.entries.borrow_mut();
        let entry = entries.get(token)?;
        if now >= entry.valid_until || entry.key_generation != key_generation {
            entries.remove(token);
            return None;
        }
        Some(entry.value.clone())
    }

    pub fn insert(&self, token: &str, value: V, valid_until: u64, key_generation: u64, now: u64) {
        if self.capacity == 0 || valid_until <= now {
            return;
        }
        let mut entries = self.entries.borrow_mut();
        if entries.len() >= self.capacity && !entries.contains_key(token) {
            let victim = entries.keys().next().cloned();
            if let Some(victim) = victim {
                entries.remove(&victim);
            }
        }
        entries.insert(
            token.into(),
            Entry {
                value,
                valid_until,
                key_generation,
            },
        );
    }

    pub fn len(&self) -> usize {
        self.entries.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_with_the_token_and_the_key_set() {
        let cache: TokenCache = TokenCache::new(4);
        cache.insert("t1", Identity::anonymous(), 100, 1, 10);
        assert!(cache.get("t1", 99, 1).is_some());
        assert!(cache.get("t1", 100, 1).is_none());
        cache.insert("t1", Identity::anonymous(), 100, 1, 10);
        assert!(cache.get("t1", 50, 2).is_none(), "keys changed");
        assert!(cache.is_empty());
    }

    #[test]
    fn a_token_is_found_only_by_its_exact_bytes() {
        let cache: TokenCache = TokenCache::new(4);
        cache.insert("eyJ.payload.sig", Identity::anonymous(), 100, 1, 10);
        assert!(cache.get("eyJ.payload.sig", 11, 1).is_some());
        assert!(cache.get("eyJ.payload.sig ", 11, 1).is_none());
        assert!(cache.get("eyJ.payload.si", 11, 1).is_none());
        assert!(cache.get("eyJ.payload.siG", 11, 1).is_none());
    }

    #[test]
    fn size_is_bounded_and_the_newest_token_is_kept() {
        let cache: TokenCache = TokenCache::new(2);
        for (i, token) in ["a", "b", "c", "d", "e"].iter().enumerate() {
            cache.insert(token, Identity::anonymous(), 100 + i as u64, 1, 10);
            assert!(cache.len() <= 2);
            assert!(cache.get(token, 11, 1).is_some(), "{token} was just added");
        }
        assert_eq!(cache.len(), 2);
        // Re-inserting a cached token does not evict another.
        cache.insert("e", Identity::anonymous(), 200, 1, 10);
        assert_eq!(cache.len(), 2);
    }
}
