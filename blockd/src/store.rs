//! The chunk store: put (group-committed), get (hash-verified) and has, over segments + index.
//!
//! Owns: the [`Store`] handle, the reader side (a cache of read-only segment file handles),
//! the counters behind the `tessera_chunk*` metrics, and the lifecycle of the writer thread.
//! Puts go to the single writer thread (`writer.rs`), which batches them so one segment
//! fsync and one index commit cover every put that arrived while the previous batch was
//! being synced. Gets and has read the committed index only: a chunk is visible once it is
//! durable.
//!
//! Must never: return chunk bytes whose BLAKE3 hash does not match their name (a mismatch
//! is counted, logged and answered with [`BlockdError::Corrupt`]); acknowledge a put before
//! its bytes and index entry are fsynced.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use cluster::metrics as names;
use proto::ChunkHash;
use tokio::sync::{mpsc, oneshot};

use crate::error::BlockdError;
use crate::format::MAX_CHUNK_LEN;
use crate::index::{Index, Totals};
use crate::recover;
use crate::s3::{Directory, S3Options, Tier, TierStats};
use crate::segment;
use crate::writer::{PutRequest, Writer};

/// Puts queued for the writer before `put` callers wait for room.
const PUT_QUEUE: usize = 1024;

/// Where and how the store keeps chunks.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// The daemon's own directory: `segments/` and `blockd.redb` live here.
    pub data_dir: PathBuf,
    /// Size a new segment is preallocated to.
    pub segment_bytes: u64,
    /// Puts are refused with [`BlockdError::NoSpace`] below this much free disk space.
    pub min_free_bytes: u64,
}

/// A chunk whose bytes are known to match its name.
#[derive(Debug, Clone)]
pub struct Chunk {
    hash: ChunkHash,
    data: Bytes,
}

impl Chunk {
    /// Names `data` by hashing it.
    pub fn new(data: Bytes) -> Result<Chunk, BlockdError> {
        check_len(data.len())?;
        Ok(Chunk { hash: ChunkHash(*blake3::hash(&data).as_bytes()), data })
    }

    /// Checks that `data` is named `hash`.
    pub fn verified(hash: ChunkHash, data: Bytes) -> Result<Chunk, BlockdError> {
        check_len(data.len())?;
        if blake3::hash(&data).as_bytes() != hash.as_bytes() {
            return Err(BlockdError::HashMismatch { hash });
        }
        Ok(Chunk { hash, data })
    }

    /// For callers that already verified the hash (the frame decoder does).
    pub(crate) fn trusted(hash: ChunkHash, data: Bytes) -> Result<Chunk, BlockdError> {
        check_len(data.len())?;
        Ok(Chunk { hash, data })
    }

    pub fn hash(&self) -> &ChunkHash {
        &self.hash
    }

    pub fn data(&self) -> &Bytes {
        &self.data
    }
}

fn check_len(len: usize) -> Result<(), BlockdError> {
    if len > MAX_CHUNK_LEN {
        return Err(BlockdError::TooLarge { len, limit: MAX_CHUNK_LEN });
    }
    Ok(())
}

/// What a successful put did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// The chunk was appended and fsynced.
    Stored,
    /// The chunk was already stored (or stored by a concurrent put); nothing was written.
    Deduplicated,
}

/// A snapshot of the store's counters (the same numbers the metrics report, per store).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Distinct chunks stored.
    pub chunks: u64,
    /// Content bytes of those chunks (record headers excluded).
    pub bytes: u64,
    /// Segment fsyncs made for puts since open.
    pub fsyncs: u64,
    /// Puts deduplicated since open.
    pub deduplicated: u64,
    /// Reads that found a corrupt record since open.
    pub corrupt: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub chunks: AtomicU64,
    pub bytes: AtomicU64,
    pub fsyncs: AtomicU64,
    pub deduplicated: AtomicU64,
    pub corrupt: AtomicU64,
    /// Puts handed to the writer (for tests that wait until a batch is queued).
    pub submitted: AtomicU64,
}

impl Counters {
    pub fn set_totals(&self, t: Totals) {
        self.chunks.store(t.chunks, Ordering::Relaxed);
        self.bytes.store(t.bytes, Ordering::Relaxed);
        metrics::gauge!(names::CHUNKS_STORED).set(t.chunks as f64);
        metrics::gauge!(names::CHUNK_BYTES_STORED).set(t.bytes as f64);
    }
}

/// Fault-injection points for this crate's tests.
#[derive(Default)]
pub(crate) struct Hooks {
    /// Held by the writer while it processes a batch; a test holds it to queue a batch.
    pub gate: Mutex<()>,
    /// Simulates a crash between the segment fsync and the index commit.
    pub skip_index_commit: AtomicBool,
}

/// State shared by the store handle and the writer thread.
pub(crate) struct Shared {
    pub index: Index,
    pub data_dir: PathBuf,
    pub seg_dir: PathBuf,
    pub counters: Counters,
    pub hooks: Hooks,
    readers: RwLock<HashMap<u32, Arc<File>>>,
}

/// The content-addressed chunk store. Dropping it drains queued puts and stops the writer.
pub struct Store {
    shared: Arc<Shared>,
    tx: Mutex<Option<mpsc::Sender<PutRequest>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The S3 tier, when configured (issue 5).
    tier: Option<Arc<Tier>>,
}

impl Store {
    /// Opens (or creates) the store: rebuilds a missing index from the segments, indexes
    /// records found after the last indexed position of unsealed segments (fsynced but not
    /// yet indexed when the daemon stopped), and starts the writer thread. Blocking.
    pub fn open(opts: StoreOptions) -> Result<Store, BlockdError> {
        Store::open_with_tier(opts, None)
    }

    /// [`Store::open`] with an optional S3 tier; with one, it must be called from within a
    /// tokio runtime (e.g. in `spawn_blocking`), which runs the tier's background task.
    pub fn open_with_tier(opts: StoreOptions, s3: Option<S3Options>) -> Result<Store, BlockdError> {
        Store::open_with_directory(opts, s3, None)
    }

    /// [`Store::open_with_tier`] with the cluster's directory (metad): the tier then uploads
    /// only the chunks this daemon is primary for and records pack locations there.
    pub(crate) fn open_with_directory(
        opts: StoreOptions,
        s3: Option<S3Options>,
        directory: Option<Arc<dyn Directory>>,
    ) -> Result<Store, BlockdError> {
        let seg_dir = segment::segments_dir(&opts.data_dir);
        std::fs::create_dir_all(&seg_dir).map_err(BlockdError::io("creating", &seg_dir))?;
        let recovered = recover::open_index(&opts.data_dir, &seg_dir)?;
        let shared = Arc::new(Shared {
            index: recovered.index,
            data_dir: opts.data_dir.clone(),
            seg_dir,
            counters: Counters::default(),
            hooks: Hooks::default(),
            readers: RwLock::new(HashMap::new()),
        });
        shared.counters.set_totals(shared.index.totals()?);
        let (tx, rx) = mpsc::channel(PUT_QUEUE);
        let writer = Writer::new(shared.clone(), rx, &opts, recovered.active, recovered.next_id);
        let handle = std::thread::Builder::new()
            .name("blockd-writer".into())
            .spawn(move || writer.run())
            .map_err(BlockdError::io("starting writer thread for", &opts.data_dir))?;
        let tier = match s3 {
            Some(s3) => match Tier::start(shared.clone(), s3, directory) {
                Ok(t) => Some(t),
                Err(e) => {
                    drop(tx);
                    let _ = handle.join();
                    return Err(e);
                }
            },
            None => None,
        };
        Ok(Store { shared, tx: Mutex::new(Some(tx)), writer: Mutex::new(Some(handle)), tier })
    }

    /// Stores a chunk; resolves once it is fsynced and indexed (or was already stored).
    pub async fn put(&self, chunk: Chunk) -> Result<PutOutcome, BlockdError> {
        let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner()).clone().ok_or(BlockdError::Closed)?;
        if let Some(tier) = &self.tier {
            // Back-pressure while the local tier is full of data not yet in S3.
            tier.admit(chunk.data().len()).await?;
        }
        let (reply, rx) = oneshot::channel();
        tx.send(PutRequest { chunk, reply }).await.map_err(|_| BlockdError::Closed)?;
        self.shared.counters.submitted.fetch_add(1, Ordering::Relaxed);
        let outcome = rx.await.map_err(|_| BlockdError::Closed)?;
        if let Some(tier) = &self.tier {
            tier.poke();
        }
        outcome
    }

    /// Reads a chunk and verifies its hash. Blocking (one index read and one pread). A chunk
    /// of a segment evicted to S3 is fetched from its pack (a ranged GET run on the tier's
    /// runtime, waited for at most the read timeout): call this from a blocking thread
    /// (`spawn_blocking`, as the server does), never from an async task.
    pub fn get(&self, hash: &ChunkHash) -> Result<Bytes, BlockdError> {
        let loc = self.shared.index.lookup(hash)?.ok_or(BlockdError::NotFound { hash: *hash })?;
        let len = loc.len as usize;
        if len > MAX_CHUNK_LEN {
            return Err(BlockdError::IndexEntry { hash: *hash, what: "length over the chunk limit" });
        }
        // S3 tier: an evicted segment's chunks are read from its pack (hash-verified there).
        if let Some(tier) = &self.tier
            && tier.is_evicted(loc.segment)
        {
            return tier.read_blocking(hash, loc);
        }
        let mut buf = vec![0u8; len];
        let local = self.shared.reader(loc.segment).and_then(|file| {
            file.read_exact_at(&mut buf, loc.data_offset)
                .map_err(BlockdError::io("reading", segment::segment_path(&self.shared.seg_dir, loc.segment)))
        });
        if let Err(e) = local {
            // Evicted while this read was under way?
            return match &self.tier {
                Some(tier) if tier.is_evicted(loc.segment) => tier.read_blocking(hash, loc),
                _ => Err(e),
            };
        }
        if blake3::hash(&buf).as_bytes() != hash.as_bytes() {
            self.shared.counters.corrupt.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(names::CHUNKS_CORRUPT).increment(1);
            tracing::error!(%hash, segment = loc.segment, offset = loc.data_offset, "stored chunk failed its hash check");
            return Err(BlockdError::Corrupt { hash: *hash, segment: loc.segment, offset: loc.data_offset });
        }
        Ok(Bytes::from(buf))
    }

    /// Which of `hashes` are stored. Blocking (one index read transaction).
    pub fn has(&self, hashes: &[ChunkHash]) -> Result<Vec<bool>, BlockdError> {
        self.shared.index.contains_many(hashes)
    }

    /// Up to `limit` stored hashes in ascending order after `after` (from the first when
    /// `None`): one page of a background pass over every chunk. Blocking.
    pub fn hashes_after(&self, after: Option<&ChunkHash>, limit: usize) -> Result<Vec<ChunkHash>, BlockdError> {
        self.shared.index.hashes_after(after, limit)
    }

    pub fn stats(&self) -> StoreStats {
        let c = &self.shared.counters;
        StoreStats {
            chunks: c.chunks.load(Ordering::Relaxed),
            bytes: c.bytes.load(Ordering::Relaxed),
            fsyncs: c.fsyncs.load(Ordering::Relaxed),
            deduplicated: c.deduplicated.load(Ordering::Relaxed),
            corrupt: c.corrupt.load(Ordering::Relaxed),
        }
    }

    /// The S3 tier's counters, when one is configured.
    pub fn tier_stats(&self) -> Option<TierStats> {
        self.tier.as_ref().map(|t| t.stats())
    }

    pub fn data_dir(&self) -> &Path {
        &self.shared.data_dir
    }

    /// Stops accepting puts (later ones get [`BlockdError::Closed`]), lets the writer finish
    /// every put already handed to it (fsynced and indexed, answers sent), and waits for it.
    /// Blocking; idempotent. Dropping the store does the same.
    pub fn close(&self) {
        if let Some(tier) = &self.tier {
            tier.stop();
        }
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
        let handle = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(handle) = handle
            && handle.join().is_err()
        {
            tracing::error!("the segment writer thread panicked");
        }
    }

    #[cfg(test)]
    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }

    #[cfg(test)]
    pub(crate) fn tier(&self) -> Option<&Arc<Tier>> {
        self.tier.as_ref()
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.close();
    }
}

impl Shared {
    /// Drops the cached read handle of segment `id` (after the S3 tier truncated it).
    pub(crate) fn forget_reader(&self, id: u32) {
        self.readers.write().unwrap_or_else(|e| e.into_inner()).remove(&id);
    }

    /// A read-only handle on segment `id`, opened (and its header checked) on first use.
    fn reader(&self, id: u32) -> Result<Arc<File>, BlockdError> {
        if let Some(f) = self.readers.read().unwrap_or_else(|e| e.into_inner()).get(&id) {
            return Ok(f.clone());
        }
        let path = segment::segment_path(&self.seg_dir, id);
        if !path.exists() {
            return Err(BlockdError::SegmentMissing { id });
        }
        let file = Arc::new(segment::open(&path, id, false)?);
        let mut readers = self.readers.write().unwrap_or_else(|e| e.into_inner());
        Ok(readers.entry(id).or_insert(file).clone())
    }
}
