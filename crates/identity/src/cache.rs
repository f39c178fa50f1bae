//! A small per-replica TTL cache for hot-path facts (credentials, workload facts, verified
//! workload access tokens, API-key envelopes). Bounded: when full it starts over, so a
//! flood of unknown keys costs memory only up to the cap. Changes made through this replica
//! invalidate at once; other replicas see them within the TTL.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::RwLock;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct TtlCache<K, V> {
    ttl: Duration,
    cap: usize,
    entries: RwLock<HashMap<K, (Instant, V)>>,
}

impl<K: Eq + Hash, V: Clone> TtlCache<K, V> {
    pub fn new(ttl: Duration, cap: usize) -> Self {
        Self {
            ttl,
            cap,
            entries: RwLock::new(HashMap::new()),
        }
    }

    /// The value, if present and younger than the TTL.
    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        let map = self.entries.read().ok()?;
        let (at, value) = map.get(key)?;
        (at.elapsed() < self.ttl).then(|| value.clone())
    }

    pub fn put(&self, key: K, value: V) {
        if self.ttl.is_zero() {
            return;
        }
        if let Ok(mut map) = self.entries.write() {
            if map.len() >= self.cap {
                map.clear();
            }
            map.insert(key, (Instant::now(), value));
        }
    }

    pub fn invalidate<Q>(&self, key: &Q)
    where
        K: std::borrow::Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        if let Ok(mut map) = self.entries.write() {
            map.remove(key);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn expires_invalidates_and_stays_bounded() {
        let c: TtlCache<String, u32> = TtlCache::new(Duration::from_millis(30), 2);
        c.put("a".into(), 1);
        assert_eq!(c.get("a"), Some(1));
        c.invalidate("a");
        assert_eq!(c.get("a"), None);
        c.put("a".into(), 1);
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(c.get("a"), None, "expired");
        c.put("b".into(), 2);
        c.put("c".into(), 3);
        c.put("d".into(), 4);
        assert!(c.entries.read().unwrap().len() <= 2);
        let off: TtlCache<String, u32> = TtlCache::new(Duration::ZERO, 2);
        off.put("a".into(), 1);
        assert_eq!(off.get("a"), None, "a zero TTL disables caching");
    }
}
