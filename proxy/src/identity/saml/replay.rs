//! One-time use: assertion IDs seen, each kept until the assertion could no
//! longer be accepted anyway.
use std::collections::HashMap;

/// Bound on remembered IDs: when full of live IDs, new assertions are
/// refused (fail closed) rather than forgetting one that could be replayed.
pub const MAX_IDS: usize = 100_000;

#[derive(Debug, Default)]
pub struct ReplayCache {
    /// ID → keep until (seconds since the epoch).
    seen: HashMap<String, u64>,
}

impl ReplayCache {
    /// Record `id`, valid until `until`; false if it was seen and is still
    /// live (a replay), or if the cache is full of live IDs.
    pub fn insert(&mut self, id: &str, until: u64, now: u64) -> bool {
        if self.seen.get(id).is_some_and(|&u| u > now) {
            return false;
        }
        if self.seen.len() >= MAX_IDS {
            self.seen.retain(|_, &mut u| u > now);
            if self.seen.len() >= MAX_IDS {
                return false;
            }
        }
        self.seen.insert(id.to_string(), until);
        true
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_refused_until_it_expires() {
        let mut c = ReplayCache::default();
        assert!(c.insert("a", 100, 10));
        assert!(!c.insert("a", 100, 50));
        assert!(c.insert("b", 100, 50));
        // Expired: the assertion itself would be refused now; the slot is reused.
        assert!(c.insert("a", 200, 100));
        assert_eq!(c.len(), 2);
    }
}
