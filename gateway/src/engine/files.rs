//! Per-file state of the engine and the table that holds it.
//!
//! Owns, for each file with buffered writes (or recently written): the dirty buffer, the
//! credential of its last writer, the write lease it was buffered under, the write-buffer
//! permits it holds, whether UNSTABLE data was acknowledged from it, flush retry timing,
//! the last attributes metad returned, the last chunk it committed, the flush lock that
//! serializes this file's flushes (so its extents are committed in order), and the lock
//! that keeps stable writes invisible to reads here until committed. Must never hold the
//! `inner` mutex across an `.await` (it is a std mutex), and never drop a file whose
//! buffer is not empty.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use proto::{ChunkHash, FileHandle, pb};

use super::buffer::DirtyBuffer;
use super::verifier::WriteVerifier;
use super::lock;

/// How long attributes from metad may stand in for a GetAttr in a WRITE reply.
pub const ATTR_TTL: Duration = Duration::from_secs(1);
/// A clean file's state is forgotten after this long without writes.
pub const FORGET_CLEAN_AFTER: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub struct FileInner {
    pub buf: DirtyBuffer,
    /// Write-buffer permits this file holds (>= `buf.bytes()` except after an oversized write).
    pub held: u64,
    /// UNSTABLE data was acknowledged under the current verifier and is still buffered.
    pub unstable_acked: bool,
    pub last_write: Instant,
    /// After a failed flush: no background retry before this instant.
    pub retry_at: Option<Instant>,
    pub failures: u32,
    /// Last attributes from metad, and when they were received.
    pub attr: Option<(pb::Attr, Instant)>,
    /// Who wrote the buffered data last: its flush acts as this caller (every write was
    /// checked for permission when it arrived).
    pub writer: Option<pb::Cred>,
    /// The last chunk this gateway committed for the file (hashed here, so verified): a
    /// sequential writer's next flush re-chunks from its start without fetching it back.
    pub tail: Option<(ChunkHash, Bytes)>,
    /// The file's write lease as this gateway last knew it (metad has the last word: a
    /// commit under a lease taken since is refused). Everything in `buf` was buffered under
    /// it; `None`: a WRITE takes the lease before buffering.
    pub lease: Option<Lease>,
}

/// A write lease this gateway holds: its epoch, and when metad last confirmed it (an
/// acquisition, or a commit under it).
#[derive(Debug, Clone, Copy)]
pub struct Lease {
    pub epoch: u64,
    pub confirmed: Instant,
}

impl FileInner {
    /// Permits no longer backed by buffered bytes, to be given back to the budget.
    pub fn excess_permits(&mut self) -> u64 {
        let bytes = self.buf.bytes();
        if self.held > bytes {
            let excess = self.held - bytes;
            self.held = bytes;
            excess
        } else {
            0
        }
    }

    /// Drops everything buffered because the file's write lease was lost (all of it was
    /// buffered under that lease), changing the verifier first if UNSTABLE data had been
    /// acknowledged — under the same lock, so every write whose data goes was answered
    /// with the old verifier. Returns the permits to give back.
    pub fn drop_for_lost_lease(&mut self, verifier: &WriteVerifier) -> u64 {
        if std::mem::take(&mut self.unstable_acked) {
            verifier.rotate();
        }
        self.buf.clear();
        self.lease = None;
        self.excess_permits()
    }

    /// Cached attributes if still fresh.
    pub fn fresh_attr(&self, now: Instant) -> Option<pb::Attr> {
        self.attr.as_ref().filter(|(_, at)| now.duration_since(*at) < ATTR_TTL).map(|(a, _)| *a)
    }

    /// `attr` with its size extended over the buffered data (read-your-writes).
    pub fn with_buffered_size(&self, mut attr: pb::Attr) -> pb::Attr {
        if let Some(end) = self.buf.end() {
            attr.size = attr.size.max(end);
        }
        attr
    }
}

#[derive(Debug)]
pub struct FileState {
    /// Held for the whole of a flush (and of a truncating setattr).
    pub flush_lock: tokio::sync::Mutex<()>,
    /// Keeps a stable write's data out of this gateway's reads until it is committed:
    /// held exclusively by a DATA_SYNC/FILE_SYNC WRITE from before its data enters the
    /// buffer until its flush ends, shared by a READ while it gathers buffered data and
    /// extents. Otherwise a READ here could return bytes that a READ through another
    /// gateway, made after it, does not see yet (not linearizable). Fair (FIFO), so
    /// neither side starves the other.
    pub stable: tokio::sync::RwLock<()>,
    pub inner: Mutex<FileInner>,
}

impl FileState {
    fn new() -> FileState {
        FileState {
            flush_lock: tokio::sync::Mutex::new(()),
            stable: tokio::sync::RwLock::new(()),
            inner: Mutex::new(FileInner {
                buf: DirtyBuffer::default(),
                held: 0,
                unstable_acked: false,
                last_write: Instant::now(),
                retry_at: None,
                failures: 0,
                attr: None,
                writer: None,
                tail: None,
                lease: None,
            }),
        }
    }

    /// Records attributes metad just returned for this file.
    pub fn remember_attr(&self, attr: &pb::Attr) {
        lock(&self.inner).attr = Some((*attr, Instant::now()));
    }
}

/// All files the engine currently tracks.
#[derive(Debug, Default)]
pub struct FileTable {
    map: Mutex<HashMap<FileHandle, Arc<FileState>>>,
}

impl FileTable {
    pub fn get(&self, node: &FileHandle) -> Option<Arc<FileState>> {
        lock(&self.map).get(node).cloned()
    }

    pub fn get_or_insert(&self, node: FileHandle) -> Arc<FileState> {
        lock(&self.map).entry(node).or_insert_with(|| Arc::new(FileState::new())).clone()
    }

    /// Every tracked file.
    pub fn all(&self) -> Vec<(FileHandle, Arc<FileState>)> {
        lock(&self.map).iter().map(|(k, v)| (*k, v.clone())).collect()
    }

    /// Forgets files that are clean, unused by any task and not written for a while.
    pub fn forget_clean(&self, now: Instant) {
        lock(&self.map).retain(|_, f| {
            if Arc::strong_count(f) > 1 {
                return true;
            }
            let inner = lock(&f.inner);
            !inner.buf.is_empty() || now.duration_since(inner.last_write) < FORGET_CLEAN_AFTER
        });
    }

    /// Buffered end of `node`, if it has dirty data.
    pub fn buffered_end(&self, node: &FileHandle) -> Option<u64> {
        self.get(node).and_then(|f| lock(&f.inner).buf.end())
    }
}
