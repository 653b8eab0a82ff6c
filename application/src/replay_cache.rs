//! Finished answers kept in the API process, so a replay of a key this
//! process has seen finished is answered without a statement.
//!
//! A finished key's answer never changes, so a copy of it is as good as the
//! stored one, with its request's fingerprint so a different request under
//! the key is still refused (422). Only finished keys are kept (an answer
//! the phases stored, or a replay the store gave); an unknown outcome, an
//! in-flight key or an error never is. Entries live `ttl` at most, far below
//! the reaper's age (`REAPER_MAX_AGE`, 72h): a key the reaper deleted is
//! never answered from here. The cache holds at most `max_entries` answers
//! and `max_bytes` of them (keys, fingerprints and bodies), the oldest
//! dropped first.
//!
//! An entry is one allocation (its key, fingerprint and body end to end)
//! under a slot of the user and the key's hash: a full cache is ten thousand
//! blocks of its answers' size, not five times as many scattered among the
//! requests' short-lived ones (which kept several MB more resident after a
//! load). Two keys of one user with the same 64-bit hash share a slot: the
//! later replaces the earlier, and the earlier is then a miss (answered by
//! the store), never another key's answer.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use domain::{IdempotencyKey, RequestFingerprint, StoredResponse, UserId};

use crate::ports::Clock;

/// What bounds the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayCacheLimits {
    /// How long an answer is kept; at most `MAX_TTL`.
    pub ttl: Duration,
    /// Answers kept at most (0: no cache).
    pub max_entries: usize,
    /// Bytes of answers kept at most.
    pub max_bytes: usize,
}

impl ReplayCacheLimits {
    pub const DEFAULT: Self = Self {
        ttl: Duration::from_secs(300),
        max_entries: 10_000,
        max_bytes: 16 * 1024 * 1024,
    };
    /// Far below the reaper's age, whatever it is set to in practice.
    pub const MAX_TTL: Duration = Duration::from_secs(3600);
}

/// What the cache says of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cached {
    /// The key's stored answer, for the same request.
    Replay(StoredResponse),
    /// The key was finished for a different request: 422.
    Mismatch,
}

/// A user and their key's hash.
type Slot = (UserId, u64);

struct Entry {
    /// The key, the request's fingerprint and the answer's body, end to end.
    text: Box<str>,
    key_len: u32,
    fingerprint_len: u32,
    status: u16,
    kept_at: SystemTime,
    /// Which insertion of the slot this is (an older one in `order` is stale).
    serial: u64,
    bytes: usize,
}

impl Entry {
    fn key(&self) -> &str {
        &self.text[..self.key_len as usize]
    }

    fn fingerprint(&self) -> &str {
        &self.text[self.key_len as usize..(self.key_len + self.fingerprint_len) as usize]
    }

    fn response(&self) -> StoredResponse {
        StoredResponse {
            status: self.status,
            body: self.text[(self.key_len + self.fingerprint_len) as usize..].to_owned(),
        }
    }
}

#[derive(Default)]
struct Kept {
    entries: HashMap<Slot, Entry>,
    /// Slots in the order they were kept, oldest first, with their serial.
    order: VecDeque<(Slot, u64)>,
    bytes: usize,
    serial: u64,
}

pub struct ReplayCache {
    kept: Mutex<Kept>,
    limits: ReplayCacheLimits,
    clock: Arc<dyn Clock>,
    /// Hashes keys into slots, seeded per process.
    hasher: RandomState,
}

/// What one entry costs: its strings and a fixed overhead for the maps.
fn size(key: &IdempotencyKey, fingerprint: &RequestFingerprint, body: &str) -> usize {
    key.as_str().len() + fingerprint.as_str().len() + body.len() + 96
}

impl ReplayCache {
    pub fn new(limits: ReplayCacheLimits, clock: Arc<dyn Clock>) -> Self {
        Self {
            kept: Mutex::default(),
            limits: ReplayCacheLimits {
                ttl: limits.ttl.min(ReplayCacheLimits::MAX_TTL),
                ..limits
            },
            clock,
            hasher: RandomState::new(),
        }
    }

    fn slot(&self, user: UserId, key: &IdempotencyKey) -> Slot {
        (user, self.hasher.hash_one(key.as_str()))
    }

    fn kept(&self) -> MutexGuard<'_, Kept> {
        self.kept
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The kept answer of `user`'s `key`, judged against this request's
    /// `fingerprint`; `None` when none is kept (or it is too old).
    pub fn get(
        &self,
        user: UserId,
        key: &IdempotencyKey,
        fingerprint: &RequestFingerprint,
    ) -> Option<Cached> {
        let now = self.clock.now();
        let mut kept = self.kept();
        let slot = self.slot(user, key);
        let found = match kept.entries.get(&slot) {
            Some(entry) if entry.key() != key.as_str() => None,
            Some(entry) if self.fresh(entry, now) => {
                Some(if entry.fingerprint() == fingerprint.as_str() {
                    Cached::Replay(entry.response())
                } else {
                    Cached::Mismatch
                })
            }
            Some(_) => {
                kept.remove(&slot);
                None
            }
            None => None,
        };
        let result = match &found {
            Some(Cached::Replay(_)) => "hit",
            Some(Cached::Mismatch) => "mismatch",
            None => "miss",
        };
        metrics::counter!("rocket_rides_replay_cache_total", "result" => result).increment(1);
        found
    }

    /// Keeps a finished key's answer; the oldest answers go while the cache
    /// is over its limits.
    pub fn put(
        &self,
        user: UserId,
        key: &IdempotencyKey,
        fingerprint: &RequestFingerprint,
        response: &StoredResponse,
    ) {
        if self.limits.max_entries == 0 {
            return;
        }
        let bytes = size(key, fingerprint, &response.body);
        if bytes > self.limits.max_bytes {
            return;
        }
        let (Ok(key_len), Ok(fingerprint_len)) = (
            u32::try_from(key.as_str().len()),
            u32::try_from(fingerprint.as_str().len()),
        ) else {
            return;
        };
        let mut text = String::with_capacity(bytes);
        text.push_str(key.as_str());
        text.push_str(fingerprint.as_str());
        text.push_str(&response.body);
        let text = text.into_boxed_str();
        let now = self.clock.now();
        let slot = self.slot(user, key);
        let mut kept = self.kept();
        kept.remove(&slot);
        kept.serial += 1;
        let serial = kept.serial;
        kept.order.push_back((slot, serial));
        kept.bytes += bytes;
        kept.entries.insert(
            slot,
            Entry {
                text,
                key_len,
                fingerprint_len,
                status: response.status,
                kept_at: now,
                serial,
                bytes,
            },
        );
        let mut evicted = 0u64;
        while kept.entries.len() > self.limits.max_entries || kept.bytes > self.limits.max_bytes {
            let Some((oldest, serial)) = kept.order.pop_front() else {
                break;
            };
            if kept
                .entries
                .get(&oldest)
                .is_some_and(|e| e.serial == serial)
            {
                kept.remove(&oldest);
                evicted += 1;
            }
        }
        // From the front (the oldest): answers past their time go, and
        // order entries of slots kept again since or removed.
        while let Some(&(slot, serial)) = kept.order.front() {
            match kept.entries.get(&slot) {
                Some(entry) if entry.serial == serial && self.fresh(entry, now) => break,
                Some(entry) if entry.serial == serial => kept.remove(&slot),
                _ => {}
            }
            kept.order.pop_front();
        }
        if evicted > 0 {
            metrics::counter!("rocket_rides_replay_cache_total", "result" => "eviction")
                .increment(evicted);
        }
        metrics::gauge!("rocket_rides_replay_cache_entries").set(kept.entries.len() as f64);
        metrics::gauge!("rocket_rides_replay_cache_bytes").set(kept.bytes as f64);
    }

    /// How many answers are kept, and their bytes.
    pub fn usage(&self) -> (usize, usize) {
        let kept = self.kept();
        (kept.entries.len(), kept.bytes)
    }

    fn fresh(&self, entry: &Entry, now: SystemTime) -> bool {
        now.duration_since(entry.kept_at)
            .is_ok_and(|age| age < self.limits.ttl)
    }
}

impl Kept {
    fn remove(&mut self, slot: &Slot) {
        if let Some(entry) = self.entries.remove(slot) {
            self.bytes -= entry.bytes;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use domain::RideParams;

    struct Fixed;

    #[async_trait]
    impl Clock for Fixed {
        fn now(&self) -> SystemTime {
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
        }
        async fn sleep(&self, _duration: Duration) {}
    }

    fn key(text: &str) -> IdempotencyKey {
        IdempotencyKey::parse(text).expect("valid")
    }

    /// Two keys whose hashes meet share a slot: the one not in it is a
    /// miss (the store answers it), never the other key's answer.
    #[test]
    fn a_key_that_shares_another_keys_slot_is_a_miss() {
        let cache = ReplayCache::new(ReplayCacheLimits::DEFAULT, Arc::new(Fixed));
        let params = RideParams::from_numbers([1.0, 2.0, 3.0, 4.0]).expect("valid");
        let fingerprint = RequestFingerprint::for_ride("POST", "/rides", &params);
        let (first, second) = (key("first-key-of-the-two"), key("second-key-of-the-two"));
        let answer = StoredResponse {
            status: 201,
            body: "{\"ride\":1}".into(),
        };
        cache.put(UserId(1), &first, &fingerprint, &answer);
        assert_eq!(
            cache.get(UserId(1), &first, &fingerprint),
            Some(Cached::Replay(answer))
        );
        // As if `second` hashed where `first` is kept.
        {
            let mut kept = cache.kept();
            let entry = kept
                .entries
                .remove(&cache.slot(UserId(1), &first))
                .expect("kept");
            kept.entries.insert(cache.slot(UserId(1), &second), entry);
        }
        assert_eq!(cache.get(UserId(1), &second, &fingerprint), None);
    }
}
