//! Pure admission control for approval requests: a client that retries a
//! refused Produce every 100 ms must not create an AccessApproval (or call
//! the API server) every 100 ms.
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug)]
pub struct DedupConfig {
    /// After a request for a key, the same key is not asked again for this long.
    /// (The object's name is deterministic, so a repeat would only hit AlreadyExists.)
    pub per_key: Duration,
    /// At most `burst` new requests (all keys together) per `window`.
    pub burst: usize,
    pub window: Duration,
}

impl Default for DedupConfig {
    fn default() -> Self {
        DedupConfig {
            per_key: Duration::from_secs(60),
            burst: 10,
            window: Duration::from_secs(60),
        }
    }
}

/// Remembers which requests were made and when.
#[derive(Debug)]
pub struct Dedup {
    config: DedupConfig,
    last: HashMap<String, Instant>,
    recent: VecDeque<Instant>,
}

impl Dedup {
    pub fn new(config: DedupConfig) -> Self {
        Dedup {
            config,
            last: HashMap::new(),
            recent: VecDeque::new(),
        }
    }

    /// May a request for `key` go out at `now`? Records it when yes.
    pub fn admit(&mut self, key: &str, now: Instant) -> bool {
        if let Some(at) = self.last.get(key)
            && now.saturating_duration_since(*at) < self.config.per_key
        {
            return false;
        }
        while let Some(front) = self.recent.front() {
            if now.saturating_duration_since(*front) >= self.config.window {
                self.recent.pop_front();
            } else {
                break;
            }
        }
        if self.recent.len() >= self.config.burst {
            return false;
        }
        self.recent.push_back(now);
        self.last.insert(key.to_string(), now);
        // Forget keys that can no longer suppress anything (bounded memory).
        let per_key = self.config.per_key;
        self.last
            .retain(|_, at| now.saturating_duration_since(*at) < per_key);
        true
    }

    /// A key whose request failed may be retried at once.
    pub fn forget(&mut self, key: &str) {
        self.last.remove(key);
    }
}
