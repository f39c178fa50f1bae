//! A keyed token-bucket rate limiter with bounded memory.
//!
//! Each key (a client address, a user id) has a bucket holding up to `burst` tokens
//! that refills at `per_second` tokens per second; a request takes one token. Keys
//! are spread over [`SHARDS`] independently locked maps, so concurrent requests for
//! different keys rarely contend. At most `max_keys` buckets are kept (default
//! [`DEFAULT_MAX_KEYS`]): when a shard is full, buckets that have refilled completely
//! (and are therefore indistinguishable from new ones) are dropped first, then the
//! least recently used one.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use http::HeaderValue;

/// Number of independently locked shards.
pub const SHARDS: usize = 64;

/// Default bound on the number of tracked keys.
pub const DEFAULT_MAX_KEYS: usize = 100_000;

/// A keyed token-bucket rate limiter. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct RateLimiter {
    per_second: f64,
    capacity: f64,
    max_per_shard: usize,
    hasher: RandomState,
    shards: Box<[Mutex<Shard>]>,
}

type Shard = HashMap<Box<str>, Bucket>;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl RateLimiter {
    /// A limiter allowing `per_second` requests per second per key, with bursts of up
    /// to `burst` (a `burst` of 0 is treated as 1). `per_second == 0` disables it.
    pub fn new(per_second: u32, burst: u32) -> Self {
        Self::with_max_keys(per_second, burst, DEFAULT_MAX_KEYS)
    }

    /// Like [`RateLimiter::new`], keeping at most about `max_keys` buckets.
    pub fn with_max_keys(per_second: u32, burst: u32, max_keys: usize) -> Self {
        let shards = (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect();
        Self {
            per_second: f64::from(per_second),
            capacity: f64::from(burst.max(1)),
            max_per_shard: max_keys.div_ceil(SHARDS).max(1),
            hasher: RandomState::new(),
            shards,
        }
    }

    /// Whether the limiter does anything (`per_second > 0`).
    pub fn is_enabled(&self) -> bool {
        self.per_second > 0.0
    }

    /// Takes a token for `key`. `Err` carries the time until the next token.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        self.check_at(key, Instant::now())
    }

    /// [`RateLimiter::check`] at a given instant (for tests that move time).
    pub fn check_at(&self, key: &str, now: Instant) -> Result<(), Duration> {
        if !self.is_enabled() {
            return Ok(());
        }
        let shard = &self.shards[self.shard_of(key)];
        let mut buckets = shard.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(bucket) = buckets.get_mut(key) {
            return self.take(bucket, now);
        }
        if buckets.len() >= self.max_per_shard {
            self.evict(&mut buckets, now);
        }
        let mut bucket = Bucket {
            tokens: self.capacity,
            updated: now,
        };
        let result = self.take(&mut bucket, now);
        buckets.insert(key.into(), bucket);
        result
    }

    /// The number of buckets currently held.
    pub fn tracked_keys(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }

    fn shard_of(&self, key: &str) -> usize {
        // The modulo keeps the value below SHARDS, so the cast cannot truncate.
        (self.hasher.hash_one(key) % SHARDS as u64) as usize
    }

    fn take(&self, bucket: &mut Bucket, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_second).min(self.capacity);
        bucket.updated = now.max(bucket.updated);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - bucket.tokens) / self.per_second,
            ))
        }
    }

    fn evict(&self, buckets: &mut Shard, now: Instant) {
        let full_after = Duration::from_secs_f64(self.capacity / self.per_second);
        buckets.retain(|_, b| now.saturating_duration_since(b.updated) < full_after);
        if buckets.len() >= self.max_per_shard {
            let oldest = buckets
                .iter()
                .min_by_key(|(_, b)| b.updated)
                .map(|(k, _)| k.clone());
            if let Some(key) = oldest {
                buckets.remove(&key);
            }
        }
    }
}

/// A `Retry-After` value: whole seconds, rounded up, at least 1.
pub fn retry_after_header(wait: Duration) -> HeaderValue {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    HeaderValue::from(seconds.max(1))
}
