//! The per-field strategies and the HMAC key.
//!
//! - `Redact` → the string `"[REDACTED]"`.
//! - `Partial` (`keepLast: N`, default 4) → every letter or digit except the
//!   last N letters/digits becomes `*`; every other character (separators
//!   such as `-`, space, `.`, `(`, `@`) stays, so `838-39-8865` → `***-**-8865`.
//!   When the value has N or fewer letters/digits all of them are masked, so
//!   `Partial` never reveals a whole value.
//! - `Hash` → `"h:"` + the first 16 bytes of HMAC-SHA256(key, value) in hex
//!   (32 hex digits): the same input and key give the same pseudonym, so
//!   joins and counts still work; another key gives unrelated pseudonyms.
//! - `Remove` → the member (or array element) is left out.
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The marker written for `Redact`.
pub const REDACTED: &str = "[REDACTED]";

/// The HMAC key for `Hash`. Debug never shows the bytes (nor their length).
#[derive(Clone, PartialEq, Eq)]
pub struct HashKey(Vec<u8>);

impl HashKey {
    /// Wraps key bytes (read from the mounted Secret). An empty key is
    /// refused by [`HashKey::new`] because it would make pseudonyms guessable.
    pub fn new(bytes: Vec<u8>) -> Option<Self> {
        if bytes.is_empty() {
            None
        } else {
            Some(Self(bytes))
        }
    }
}

impl std::fmt::Debug for HashKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HashKey(<redacted>)")
    }
}

/// `Hash`: a stable pseudonym for `value` under `key`.
pub fn pseudonym(key: &HashKey, value: &[u8]) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = match Hmac::<Sha256>::new_from_slice(&key.0) {
        Ok(m) => m,
        Err(_) => return REDACTED.to_string(),
    };
    mac.update(value);
    let digest = mac.finalize().into_bytes();
    format!("h:{}", hex::encode(&digest[..16]))
}

/// HMAC-SHA256 of the concatenated `parts` under `key`, truncated to 16
/// bytes (the `Hash` pseudonyms' and the audit trail's patient pseudonyms'
/// width: collisions stay negligible far past any patient population).
pub fn mac16(key: &HashKey, parts: &[&[u8]]) -> [u8; 16] {
    let mut out = [0u8; 16];
    // HMAC accepts keys of any length, so this cannot fail.
    if let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&key.0) {
        for p in parts {
            mac.update(p);
        }
        out.copy_from_slice(&mac.finalize().into_bytes()[..16]);
    }
    out
}

/// `Partial`: keep the last `keep_last` letters/digits, mask the others, keep separators.
pub fn partial(value: &str, keep_last: usize) -> String {
    let maskable = value.chars().filter(|c| c.is_alphanumeric()).count();
    let keep = if maskable <= keep_last { 0 } else { keep_last };
    let mut seen = 0usize;
    value
        .chars()
        .map(|c| {
            if c.is_alphanumeric() {
                seen += 1;
                if seen > maskable - keep { c } else { '*' }
            } else {
                c
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_keeps_separators_and_last_n() {
        assert_eq!(partial("838-39-8865", 4), "***-**-8865");
        assert_eq!(partial("4708073826424685", 4), "************4685");
        assert_eq!(partial("351-555-0121", 2), "***-***-**21");
        assert_eq!(partial("abc", 0), "***");
        // Never reveals a whole value.
        assert_eq!(partial("1234", 4), "****");
        assert_eq!(partial("12-3", 4), "**-*");
        assert_eq!(partial("Zoë-1", 1), "***-1");
    }

    #[test]
    fn hash_is_stable_and_keyed() {
        let k1 = HashKey::new(b"key-one".to_vec()).unwrap();
        let k2 = HashKey::new(b"key-two".to_vec()).unwrap();
        let a = pseudonym(&k1, b"James Silva");
        assert_eq!(a, pseudonym(&k1, b"James Silva"));
        assert_ne!(a, pseudonym(&k2, b"James Silva"));
        assert_ne!(a, pseudonym(&k1, b"James Silvb"));
        assert!(a.starts_with("h:") && a.len() == 34, "{a}");
        // RFC 4231 test case 2 (key "Jefe"), truncated to 16 bytes.
        let jefe = HashKey::new(b"Jefe".to_vec()).unwrap();
        assert_eq!(
            pseudonym(&jefe, b"what do ya want for nothing?"),
            "h:5bdcc146bf60754e6a042426089575c7"
        );
    }

    #[test]
    fn key_debug_hides_the_bytes() {
        let k = HashKey::new(b"super-secret".to_vec()).unwrap();
        let shown = format!("{k:?}");
        assert!(
            !shown.contains("super") && !shown.contains("115"),
            "{shown}"
        );
        assert!(HashKey::new(Vec::new()).is_none());
    }
}
