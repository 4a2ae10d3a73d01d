//! Sequential read-ahead: which READs are sequential, and what to prefetch after them.
//!
//! Owns, per file handle, the furthest point READs have reached and how far ahead was
//! already asked for. A READ is sequential when it starts at most `MAX_BEHIND_BYTES` before
//! that point or at most its own length past it: a client with several READs in flight
//! sends them in order, but they arrive and are served out of order, and such a window of
//! concurrent READs must still look like one stream. After a sequential READ that moves the
//! furthest point on, once less than half of the window is left ahead of it, the bytes up
//! to `window` past it (never past the file size) are prefetched into the chunk cache by
//! one background task per file. Any other READ restarts the file's stream where it ended.
//! The window is at most `MAX_WINDOW_BYTES` and at most a quarter of the cache, so
//! read-ahead cannot evict what the readers are using; the table forgets its oldest
//! streams beyond `MAX_STREAMS`.
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
/// How far before a stream's furthest point a READ may start and still belong to it (16
/// READs of 1 MiB in flight).
const MAX_BEHIND_BYTES: u64 = 16 * 1024 * 1024;
/// Files whose read streams are tracked at once.
const MAX_STREAMS: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Stream {
    /// The furthest end of the stream's READs.
    front: u64,
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
        let s = streams.entry(node).or_insert(Stream { front: u64::MAX, ahead_to: 0, in_flight: false, used: now });
        let len = end - offset;
        let sequential = s.front != u64::MAX
            && offset >= s.front.saturating_sub(MAX_BEHIND_BYTES)
            && offset <= s.front.saturating_add(len);
        s.used = now;
        if !sequential {
            s.front = end;
            s.ahead_to = end;
            return None;
        }
        if end <= s.front {
            // Behind the front: a READ of the window already asked for.
            return None;
        }
        s.front = end;
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
    fn concurrent_reads_served_out_of_order_are_one_stream() {
        let ra = ReadAhead::new(1 << 30); // window 4 MiB
        let m = 1 << 20;
        // Four 1 MiB READs in flight, served in the order 0, 2, 1, 3, then 5, 4.
        assert_eq!(ra.on_read(F, 0, m, 64 * m), None);
        assert_eq!(ra.on_read(F, 2 * m, 3 * m, 64 * m), Some((3 * m, 7 * m)), "one READ past the front");
        assert_eq!(ra.on_read(F, m, 2 * m, 64 * m), None, "behind the front: nothing new to ask for");
        ra.finished(F);
        assert_eq!(ra.on_read(F, 3 * m, 4 * m, 64 * m), None, "more than half the window still ahead");
        assert_eq!(ra.on_read(F, 5 * m, 6 * m, 64 * m), Some((7 * m, 10 * m)));
        assert_eq!(ra.on_read(F, 4 * m, 5 * m, 64 * m), None);
        assert_eq!(ra.started(), 2);
        // A jump far ahead starts a new stream there.
        assert_eq!(ra.on_read(F, 40 * m, 41 * m, 64 * m), None);
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
