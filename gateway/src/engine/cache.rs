//! The read cache: verified chunk bytes keyed by hash, shared by all files, bounded in bytes.
//!
//! Owns eviction (CLOCK, an LRU approximation: a hit marks an entry, eviction skips marked
//! entries once). Because the key is the content hash, deduplicated content is cached once.
//! Must never hold bytes that were not verified against their hash (callers verify before
//! `insert`) and never exceed its byte bound (a chunk larger than the bound is not cached).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use bytes::Bytes;
use proto::ChunkHash;

use super::lock;

#[derive(Debug)]
struct Entry {
    data: Bytes,
    referenced: bool,
}

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<ChunkHash, Entry>,
    clock: VecDeque<ChunkHash>,
    bytes: u64,
}

#[derive(Debug)]
pub struct ChunkCache {
    capacity: u64,
    inner: Mutex<Inner>,
}

impl ChunkCache {
    pub fn new(capacity: u64) -> ChunkCache {
        ChunkCache { capacity, inner: Mutex::new(Inner::default()) }
    }

    pub fn get(&self, hash: &ChunkHash) -> Option<Bytes> {
        let mut inner = lock(&self.inner);
        let e = inner.map.get_mut(hash)?;
        e.referenced = true;
        Some(e.data.clone())
    }

    /// Whether `hash` is cached (without marking it used).
    pub fn contains(&self, hash: &ChunkHash) -> bool {
        lock(&self.inner).map.contains_key(hash)
    }

    /// Caches verified `data` for `hash`, evicting as needed.
    pub fn insert(&self, hash: ChunkHash, data: Bytes) {
        let len = data.len() as u64;
        if len > self.capacity {
            return;
        }
        let mut inner = lock(&self.inner);
        if inner.map.contains_key(&hash) {
            return;
        }
        while inner.bytes + len > self.capacity {
            let Some(victim) = inner.clock.pop_front() else { break };
            let second_chance = match inner.map.get_mut(&victim) {
                Some(e) if e.referenced => {
                    e.referenced = false;
                    true
                }
                _ => false,
            };
            if second_chance {
                inner.clock.push_back(victim);
            } else if let Some(e) = inner.map.remove(&victim) {
                inner.bytes -= e.data.len() as u64;
            }
        }
        inner.bytes += len;
        inner.map.insert(hash, Entry { data, referenced: false });
        inner.clock.push_back(hash);
    }

    #[cfg(test)]
    pub fn bytes(&self) -> u64 {
        lock(&self.inner).bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(i: u8) -> ChunkHash {
        ChunkHash([i; 32])
    }

    #[test]
    fn bounded_and_keeps_recently_used() {
        let c = ChunkCache::new(30);
        c.insert(h(1), Bytes::from(vec![1; 10]));
        c.insert(h(2), Bytes::from(vec![2; 10]));
        c.insert(h(3), Bytes::from(vec![3; 10]));
        assert!(c.get(&h(1)).is_some());
        c.insert(h(4), Bytes::from(vec![4; 10]));
        assert!(c.bytes() <= 30);
        assert!(c.get(&h(1)).is_some(), "recently used entry survives");
        assert!(c.get(&h(2)).is_none(), "oldest unused entry is evicted");
        c.insert(h(5), Bytes::from(vec![5; 31]));
        assert!(c.get(&h(5)).is_none(), "larger than the whole cache: not cached");
    }
}
