//! The keyed token-bucket rate limiter.

use std::sync::Arc;
use std::time::{Duration, Instant};

use latchkey_edge::rate::{RateLimiter, retry_after_header};

/// Sends `n` requests for `key` at `at`: whether each was admitted.
fn admitted(limiter: &RateLimiter, key: &str, at: Instant, n: usize) -> Vec<bool> {
    (0..n).map(|_| limiter.check_at(key, at).is_ok()).collect()
}

#[test]
fn burst_then_refusal_with_retry_time() {
    let limiter = RateLimiter::new(2, 5);
    let start = Instant::now();
    for i in 0..5 {
        assert!(limiter.check_at("10.0.0.1", start).is_ok(), "request {i}");
    }
    let wait = limiter
        .check_at("10.0.0.1", start)
        .expect_err("burst exhausted");
    // Two tokens per second: the next one is half a second away.
    assert!(wait > Duration::from_millis(490) && wait <= Duration::from_millis(500));
    assert_eq!(retry_after_header(wait), "1");
}

#[test]
fn refills_after_waiting() {
    let limiter = RateLimiter::new(2, 2);
    let start = Instant::now();
    assert_eq!(admitted(&limiter, "k", start, 3), [true, true, false]);
    let quarter = start + Duration::from_millis(250);
    assert_eq!(admitted(&limiter, "k", quarter, 1), [false]);
    let later = start + Duration::from_millis(500);
    assert_eq!(admitted(&limiter, "k", later, 2), [true, false]);
    // A long pause refills only up to the burst.
    let much_later = later + Duration::from_secs(3600);
    assert_eq!(admitted(&limiter, "k", much_later, 3), [true, true, false]);
}

#[test]
fn refills_in_real_time() {
    let limiter = RateLimiter::new(20, 1);
    assert!(limiter.check("k").is_ok());
    let wait = limiter.check("k").expect_err("empty");
    std::thread::sleep(wait + Duration::from_millis(10));
    assert!(limiter.check("k").is_ok());
}

#[test]
fn keys_are_isolated() {
    let limiter = RateLimiter::new(1, 1);
    let now = Instant::now();
    assert_eq!(admitted(&limiter, "alice", now, 2), [true, false]);
    assert_eq!(admitted(&limiter, "bob", now, 2), [true, false]);
}

#[test]
fn zero_rate_disables() {
    let limiter = RateLimiter::new(0, 0);
    assert!(!limiter.is_enabled());
    for _ in 0..10_000 {
        assert!(limiter.check("k").is_ok());
    }
    assert_eq!(limiter.tracked_keys(), 0);
}

#[test]
fn memory_is_bounded() {
    let limiter = RateLimiter::with_max_keys(1, 10, 1_000);
    let now = Instant::now();
    for i in 0..50_000 {
        assert!(limiter.check_at(&format!("client-{i}"), now).is_ok());
    }
    // 64 shards of ceil(1000 / 64) = 16 keys each.
    assert!(
        limiter.tracked_keys() <= 1_024,
        "{}",
        limiter.tracked_keys()
    );
}

#[test]
fn idle_buckets_are_evicted_before_active_ones() {
    // 64 shards of 2 keys each; a bucket is idle once it has refilled (1 s here).
    let limiter = RateLimiter::with_max_keys(1, 1, 128);
    let start = Instant::now();
    for i in 0..10_000 {
        let _ = limiter.check_at(&format!("idle-{i}"), start);
    }
    assert!(limiter.tracked_keys() <= 128);
    // Later, a new key uses up its token: idle buckets make room for it.
    let later = start + Duration::from_millis(1_500);
    assert!(limiter.check_at("active", later).is_ok());
    // Its empty bucket is still there (a fresh one would allow the request).
    let soon = later + Duration::from_millis(100);
    assert!(limiter.check_at("active", soon).is_err());
    assert!(limiter.tracked_keys() <= 128);
}

#[test]
fn default_bound_is_large_and_concurrent_use_is_safe() {
    let limiter = Arc::new(RateLimiter::new(1_000, 10));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let limiter = limiter.clone();
            std::thread::spawn(move || {
                let mut allowed = 0;
                for i in 0..20_000 {
                    if limiter.check(&format!("{}", i % 100)).is_ok() {
                        allowed += 1;
                    }
                    let _ = t;
                }
                allowed
            })
        })
        .collect();
    let allowed: u32 = threads.into_iter().map(|t| t.join().expect("thread")).sum();
    assert!(allowed >= 1_000);
    assert_eq!(limiter.tracked_keys(), 100);
}

#[test]
fn retry_after_rounds_up_to_whole_seconds() {
    assert_eq!(retry_after_header(Duration::ZERO), "1");
    assert_eq!(retry_after_header(Duration::from_millis(1)), "1");
    assert_eq!(retry_after_header(Duration::from_secs(1)), "1");
    assert_eq!(retry_after_header(Duration::from_millis(1001)), "2");
    assert_eq!(retry_after_header(Duration::from_secs(30)), "30");
}
