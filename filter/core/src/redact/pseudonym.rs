//! Keyed pseudonyms: `<prefix><key id>:<hex of HMAC-SHA256(key, value)>`.
//! The key id in the token tells a downstream join which key made it, so a
//! rotation (new `active_key`) never mixes two pseudonym spaces silently.
//! Tokens of every configured key are recognized and left as they are, which
//! keeps redaction idempotent and never re-hashes a pseudonym.

use std::ops::Range;

use hmac::{Hmac, Mac};
use regex::Regex;
use sha2::Sha256;

pub const MIN_KEY_BYTES: usize = 16;
pub const MIN_TOKEN_HEX: usize = 8;
pub const MAX_TOKEN_HEX: usize = 64;

pub fn valid_key_id(id: &str) -> bool {
    (1..=16).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

pub fn valid_prefix(prefix: &str) -> bool {
    prefix.len() <= 16
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

pub struct Pseudonymizer {
    active_id: String,
    active_key: Vec<u8>,
    /// Matches a token of any configured key and any prefix in use.
    token: Regex,
    whole_token: Regex,
}

impl std::fmt::Debug for Pseudonymizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pseudonymizer")
            .field("active_id", &self.active_id)
            .finish_non_exhaustive()
    }
}

impl Pseudonymizer {
    /// `key_ids` are every configured id (the active one included);
    /// `prefixes` every prefix a hash rule uses. Ids and prefixes are
    /// validated by the caller, so the pattern is literal text.
    pub fn new(
        active_id: &str,
        active_key: &[u8],
        key_ids: &[&str],
        prefixes: &[&str],
    ) -> Result<Self, regex::Error> {
        let alternation = |items: &[&str]| {
            items
                .iter()
                .map(|s| regex::escape(s))
                .collect::<Vec<_>>()
                .join("|")
        };
        let body = format!(
            "(?:{})(?:{}):[0-9a-f]{{{MIN_TOKEN_HEX},{MAX_TOKEN_HEX}}}",
            alternation(prefixes),
            alternation(key_ids)
        );
        Ok(Self {
            active_id: active_id.to_string(),
            active_key: active_key.to_vec(),
            token: Regex::new(&format!("{body}\\b"))?,
            whole_token: Regex::new(&format!("^{body}$"))?,
        })
    }

    pub fn token(&self, prefix: &str, hex_len: usize, value: &str) -> String {
        let digest = match Hmac::<Sha256>::new_from_slice(&self.active_key) {
            Ok(mut mac) => {
                mac.update(value.as_bytes());
                hex::encode(mac.finalize().into_bytes())
            }
            // HMAC accepts keys of any length; this arm cannot be reached,
            // and if it were, no value would leak.
            Err(_) => "0".repeat(MAX_TOKEN_HEX),
        };
        let hex = digest.get(..hex_len).unwrap_or(&digest);
        format!("{prefix}{}:{hex}", self.active_id)
    }

    pub fn is_token(&self, text: &str) -> bool {
        self.whole_token.is_match(text)
    }

    /// Where tokens sit in a text, so detectors never cut into one.
    pub fn token_spans(&self, text: &str) -> Vec<Range<usize>> {
        self.token.find_iter(text).map(|m| m.range()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(active: &str, key: &[u8]) -> Pseudonymizer {
        Pseudonymizer::new(active, key, &["k2025", "k2026"], &["pn_"]).unwrap()
    }

    #[test]
    fn tokens_are_stable_per_key_and_differ_across_keys() {
        let a = keys("k2026", b"0123456789abcdef-new");
        let b = keys("k2025", b"0123456789abcdef-old");
        let token = a.token("pn_", 16, "Erika Mustermann");
        assert_eq!(token, a.token("pn_", 16, "Erika Mustermann"));
        assert_ne!(token, a.token("pn_", 16, "Max Mustermann"));
        assert_ne!(
            token.split(':').nth(1),
            b.token("pn_", 16, "Erika Mustermann").split(':').nth(1)
        );
        assert!(token.starts_with("pn_k2026:"));
        assert_eq!(token.len(), "pn_k2026:".len() + 16);
        assert!(!token.contains("Erika"));
    }

    #[test]
    fn tokens_of_every_configured_key_are_recognized() {
        let new = keys("k2026", b"0123456789abcdef-new");
        let old = keys("k2025", b"0123456789abcdef-old");
        let old_token = old.token("pn_", 16, "x");
        assert!(new.is_token(&old_token));
        assert!(new.is_token(&new.token("pn_", 16, "x")));
        assert!(!new.is_token("pn_k2027:0123456789abcdef"));
        assert!(!new.is_token("Erika"));
        let text = format!("driver {old_token} reported");
        assert_eq!(new.token_spans(&text), vec![7..7 + old_token.len()]);
    }
}
