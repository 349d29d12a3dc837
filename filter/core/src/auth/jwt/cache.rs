//! Verified tokens, per provider and per VM, keyed by the token's SHA-256:
//! a repeated token costs a hash instead of a signature check. Entries end
//! with the token (`exp` + skew) and with the key set they were verified
//! against, so a key removed from the JWKS stops its tokens at once.

use std::cell::RefCell;
use std::collections::HashMap;

use sha2::{Digest, Sha256};

use crate::identity::Identity;

pub type TokenDigest = [u8; 32];

pub fn digest(token: &str) -> TokenDigest {
    Sha256::digest(token.as_bytes()).into()
}

struct Entry {
    identity: Identity,
    valid_until: u64,
    key_generation: u64,
}

pub struct TokenCache {
    capacity: usize,
    entries: RefCell<HashMap<TokenDigest, Entry>>,
}

impl TokenCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            entries: RefCell::new(HashMap::new()),
        }
    }

    pub fn get(&self, digest: &TokenDigest, now: u64, key_generation: u64) -> Option<Identity> {
        let mut entries = self.entries.borrow_mut();
        let entry = entries.get(digest)?;
        if now >= entry.valid_until || entry.key_generation != key_generation {
            entries.remove(digest);
            return None;
        }
        Some(entry.identity.clone())
    }

    pub fn insert(
        &self,
        digest: TokenDigest,
        identity: Identity,
        valid_until: u64,
        key_generation: u64,
        now: u64,
    ) {
        if self.capacity == 0 || valid_until <= now {
            return;
        }
        let mut entries = self.entries.borrow_mut();
        if entries.len() >= self.capacity && !entries.contains_key(&digest) {
            entries.retain(|_, e| now < e.valid_until && e.key_generation == key_generation);
            if entries.len() >= self.capacity {
                // Full of live tokens: drop the one that would expire first.
                let oldest = entries
                    .iter()
                    .min_by_key(|(_, e)| e.valid_until)
                    .map(|(d, _)| *d);
                if let Some(oldest) = oldest {
                    entries.remove(&oldest);
                }
            }
        }
        entries.insert(
            digest,
            Entry {
                identity,
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
        let cache = TokenCache::new(4);
        let d = digest("t1");
        cache.insert(d, Identity::anonymous(), 100, 1, 10);
        assert!(cache.get(&d, 99, 1).is_some());
        assert!(cache.get(&d, 100, 1).is_none());
        cache.insert(d, Identity::anonymous(), 100, 1, 10);
        assert!(cache.get(&d, 50, 2).is_none(), "keys changed");
        assert!(cache.is_empty());
    }

    #[test]
    fn size_is_bounded() {
        let cache = TokenCache::new(2);
        for (i, token) in ["a", "b", "c"].iter().enumerate() {
            cache.insert(digest(token), Identity::anonymous(), 100 + i as u64, 1, 10);
        }
        assert_eq!(cache.len(), 2);
        assert!(
            cache.get(&digest("a"), 11, 1).is_none(),
            "earliest expiry evicted"
        );
        assert!(cache.get(&digest("c"), 11, 1).is_some());
    }
}
