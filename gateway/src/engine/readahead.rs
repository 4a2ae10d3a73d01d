//! Sequential read-ahead: which READs are sequential, and what to prefetch after them.
//!
//! Owns, per file handle, where the last READ ended and how far ahead was already asked
//! for. A READ that starts where the previous one of the same file ended is sequential;
//! after it, once less than half of the window is left ahead of the reader, the bytes up to
//! `window` past its end (never past the file size) are prefetched into the chunk cache by
//! one background task per file. A non-sequential READ resets the file's stream. The
//! window is at most `MAX_WINDOW_BYTES` and at most a quarter of the cache, so read-ahead
//! cannot evict what the readers are using; the table forgets its oldest streams beyond
//! `MAX_STREAMS`.
//!
//! Must never block a READ on a prefetch, run two prefetches of one file at once, or hold
//! its mutex across an `.await`. Fetching (and verifying) is `read.rs`'s business.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use proto::FileHandle;
use tokio::sync::watch;

use super::lock;

/// Most bytes prefetched ahead of one sequential reader.
pub const MAX_WINDOW_BYTES: u64 = 4 * 1024 * 1024;
/// Files whose read streams are tracked at once.
const MAX_STREAMS: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Stream {
    /// Where the last READ ended.
    next: u64,
    /// Bytes before this were prefetched (or read).
    ahead_to: u64,
    in_flight: bool,
    used: Instant,
}

/// The per-file read streams of an engine.
#[derive(Debug)]
pub struct ReadAhead {
    window: u64,
    streams: Mutex<HashMap<FileHandle, Stream>>,
    started: AtomicU64,
    /// Prefetches finished so far (tests wait on it).
    done: watch::Sender<u64>,
}

impl ReadAhead {
    /// Read-ahead for a chunk cache of `cache_bytes`.
    pub fn new(cache_bytes: u64) -> ReadAhead {
        ReadAhead {
            window: MAX_WINDOW_BYTES.min(cache_bytes / 4),
            streams: Mutex::new(HashMap::new()),
            started: AtomicU64::new(0),
            done: watch::Sender::new(0),
        }
    }

    /// Records a READ of `[offset, end)` of a file of `size` bytes; answers the range to
    /// prefetch now, if any (the caller must call `finished` when that prefetch ends).
    pub fn on_read(&self, node: FileHandle, offset: u64, end: u64, size: u64) -> Option<(u64, u64)> {
        if self.window == 0 || end <= offset {
            return None;
        }
        let now = Instant::now();
        let mut streams = lock(&self.streams);
        if streams.len() >= MAX_STREAMS && !streams.contains_key(&node) {
            let oldest = streams.iter().min_by_key(|(_, s)| s.used).map(|(k, _)| *k);
            if let Some(k) = oldest {
                streams.remove(&k);
            }
        }
        let s = streams.entry(node).or_insert(Stream { next: u64::MAX, ahead_to: 0, in_flight: false, used: now });
        let sequential = s.next == offset;
        s.next = end;
        s.used = now;
        if !sequential {
            s.ahead_to = end;
            return None;
        }
        s.ahead_to = s.ahead_to.max(end);
        let to = end.saturating_add(self.window).min(size);
        if s.in_flight || s.ahead_to >= to || s.ahead_to - end >= self.window / 2 {
            return None;
        }
        let from = s.ahead_to;
        s.ahead_to = to;
        s.in_flight = true;
        self.started.fetch_add(1, Ordering::Relaxed);
        Some((from, to))
    }

    /// The prefetch `on_read` asked for has ended (successfully or not).
    pub fn finished(&self, node: FileHandle) {
        if let Some(s) = lock(&self.streams).get_mut(&node) {
            s.in_flight = false;
        }
        self.done.send_modify(|n| *n += 1);
    }

    /// Prefetches started so far.
    #[cfg(test)]
    pub fn started(&self) -> u64 {
        self.started.load(Ordering::Relaxed)
    }

    /// Waits until `n` prefetches have finished.
    #[cfg(test)]
    pub async fn wait_finished(&self, n: u64) {
        let mut rx = self.done.subscribe();
        // The sender lives as long as `self`.
        let _ = rx.wait_for(|d| *d >= n).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: FileHandle = FileHandle { share_id: 1, ino: 2, generation: 1 };

    #[test]
    fn sequential_reads_prefetch_a_bounded_window_once() {
        let ra = ReadAhead::new(1 << 20); // window 256 KiB
        let k = 64 * 1024;
        assert_eq!(ra.on_read(F, 0, k, 10 << 20), None, "the first read is not yet a stream");
        assert_eq!(ra.on_read(F, k, 2 * k, 10 << 20), Some((2 * k, 2 * k + 256 * 1024)));
        assert_eq!(ra.on_read(F, 2 * k, 3 * k, 10 << 20), None, "one prefetch per file at a time");
        ra.finished(F);
        assert_eq!(ra.on_read(F, 3 * k, 4 * k, 10 << 20), None, "more than half the window still ahead");
        assert_eq!(ra.on_read(F, 4 * k, 5 * k, 10 << 20), Some((6 * k, 5 * k + 256 * 1024)));
        ra.finished(F);
        // Never past the end of the file.
        assert_eq!(ra.on_read(F, 5 * k, 6 * k, 6 * k + 100), None);
        assert_eq!(ra.started(), 2);
    }

    #[test]
    fn random_reads_never_prefetch() {
        let ra = ReadAhead::new(1 << 30);
        for (i, off) in [500_000u64, 3, 90_000, 20_000, 700_000, 4_096].into_iter().enumerate() {
            assert_eq!(ra.on_read(F, off, off + 4_096, 1 << 20), None, "read {i}");
        }
        assert_eq!(ra.started(), 0);
        // A tiny cache: no read-ahead at all.
        let tiny = ReadAhead::new(3);
        tiny.on_read(F, 0, 10, 100);
        assert_eq!(tiny.on_read(F, 10, 20, 100), None);
    }
}
