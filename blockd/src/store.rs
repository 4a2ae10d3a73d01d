//! The chunk store: put (group-committed), get (hash-verified) and has, over segments + index.
//!
//! Owns: the [`Store`] handle, the reader side (a cache of read-only segment file handles),
//! the counters behind the `tessera_chunk*` metrics, and the lifecycle of the writer thread.
//! Puts go to the single writer thread (`writer.rs`), which batches them so one segment
//! fsync and one index commit cover every put that arrived while the previous batch was
//! being synced. Gets and has read the committed index only: a chunk is visible once it is
//! durable.
//!
//! Known-bad copies: a chunk whose record failed its hash check (on a read or a scrub) is
//! remembered as *bad*, and a segment whose file is gone, shorter than its indexed end (and
//! not evicted to S3) or unusable is remembered as *lost* (found at open and by scrub).
//! [`Store::has`] answers false for such a chunk, so a gateway's flush or a peer's repair
//! sends it again instead of counting on a copy that cannot be read; a put of it is not
//! deduplicated but rewritten (appended anew, index re-pointed), as [`Store::rewrite`]
//! does for scrub. The marks are in memory: after a restart a lost segment is found again
//! from its file length, a corrupt record on its next read or scrub.
//!
//! Must never: return chunk bytes whose BLAKE3 hash does not match their name (a mismatch
//! is counted, logged and answered with [`BlockdError::Corrupt`]); read a chunk of a lost
//! segment through a handle cached before the loss (it is dropped); acknowledge a put
//! before its bytes and index entry are fsynced.

use std::collections::{HashMap, HashSet};
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
use crate::index::{Index, Location, Totals};
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
    /// Segments whose file is gone, short or unusable (not evicted): their chunks are lost.
    lost: RwLock<HashSet<u32>>,
    /// Chunks whose record failed its hash check, until rewritten.
    bad: Mutex<HashSet<ChunkHash>>,
    /// The S3 tier, for the writer to leave evicted segments alone.
    tier: std::sync::OnceLock<std::sync::Weak<Tier>>,
    /// Why the writer stopped taking puts (a failed fsync or index commit), once it has.
    pub failure: tokio::sync::watch::Sender<Option<String>>,
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
            lost: RwLock::new(HashSet::new()),
            bad: Mutex::new(HashSet::new()),
            tier: std::sync::OnceLock::new(),
            failure: tokio::sync::watch::Sender::new(None),
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
                Ok(t) => {
                    let _ = shared.tier.set(Arc::downgrade(&t));
                    Some(t)
                }
                Err(e) => {
                    drop(tx);
                    let _ = handle.join();
                    return Err(e);
                }
            },
            None => None,
        };
        let store = Store { shared, tx: Mutex::new(Some(tx)), writer: Mutex::new(Some(handle)), tier };
        store.find_lost_segments()?;
        Ok(store)
    }

    /// Marks every segment whose file is shorter than its indexed end (and not evicted to
    /// S3) as lost: recovery recreated a deleted one header-only. Blocking.
    fn find_lost_segments(&self) -> Result<(), BlockdError> {
        for (id, state) in self.shared.index.segments()? {
            if self.is_evicted(id) {
                continue;
            }
            let path = segment::segment_path(&self.shared.seg_dir, id);
            let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            if len < state.end {
                tracing::error!(
                    segment = id,
                    len,
                    indexed_end = state.end,
                    "segment file is shorter than its index; its chunks are lost until scrub repairs them"
                );
                self.shared.mark_lost(id);
            }
        }
        Ok(())
    }

    /// Stores a chunk; resolves once it is fsynced and indexed (or was already stored). A
    /// chunk whose stored copy is known bad or lost is written again (see the module docs).
    pub async fn put(&self, chunk: Chunk) -> Result<PutOutcome, BlockdError> {
        self.submit(chunk, false).await
    }

    /// Writes `chunk` as a new record even though its hash is indexed, and re-points the
    /// index entry to it once the record is fsynced (one index commit, totals unchanged: the
    /// old record becomes unreferenced garbage). Scrub's repair of a corrupt or lost copy;
    /// the bytes are known to match the name (a [`Chunk`] is verified or hashed on
    /// creation). Resolves once durable.
    pub async fn rewrite(&self, chunk: Chunk) -> Result<(), BlockdError> {
        self.submit(chunk, true).await.map(|_| ())
    }

    async fn submit(&self, chunk: Chunk, rewrite: bool) -> Result<PutOutcome, BlockdError> {
        let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner()).clone().ok_or(BlockdError::Closed)?;
        if let Some(tier) = &self.tier {
            // Back-pressure while the local tier is full of data not yet in S3.
            tier.admit(chunk.data().len()).await?;
        }
        let (reply, rx) = oneshot::channel();
        tx.send(PutRequest { chunk, reply, rewrite }).await.map_err(|_| BlockdError::Closed)?;
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
    /// (`spawn_blocking`, as `read` does), never from an async task.
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
        if self.shared.is_lost(loc.segment) {
            return Err(BlockdError::SegmentMissing { id: loc.segment });
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
                _ => {
                    if let BlockdError::SegmentMissing { id } = e {
                        self.shared.mark_lost(id);
                    }
                    Err(e)
                }
            };
        }
        self.checked(hash, loc, buf)
    }

    /// `get` without blocking, for an async task: the chunk if its segment is open and its
    /// bytes are in the page cache (one `preadv2` with `RWF_NOWAIT`), `None` when reading
    /// it would wait for the disk or S3 (then call `get` on a blocking thread). Serving
    /// page-cache hits here saves a hop to the blocking pool per chunk, and the allocation
    /// churn of its many short-lived threads.
    pub fn get_cached(&self, hash: &ChunkHash) -> Result<Option<Bytes>, BlockdError> {
        let Some(loc) = self.shared.index.lookup(hash)? else { return Err(BlockdError::NotFound { hash: *hash }) };
        let len = loc.len as usize;
        if len > MAX_CHUNK_LEN
            || self.tier.as_ref().is_some_and(|t| t.is_evicted(loc.segment))
            || self.shared.is_lost(loc.segment)
        {
            return Ok(None);
        }
        let Some(file) = self.shared.open_reader(loc.segment) else { return Ok(None) };
        let mut buf = vec![0u8; len];
        let mut slices = [std::io::IoSliceMut::new(&mut buf)];
        match rustix::io::preadv2(&*file, &mut slices, loc.data_offset, rustix::io::ReadWriteFlags::NOWAIT) {
            // A short read (part of it not cached) or any error: `get` reads it again and
            // reports what went wrong.
            Ok(n) if n == len => self.checked(hash, loc, buf).map(Some),
            _ => Ok(None),
        }
    }

    /// `buf`, read from `loc`, as the chunk `hash` once its hash is checked.
    fn checked(&self, hash: &ChunkHash, loc: Location, buf: Vec<u8>) -> Result<Bytes, BlockdError> {
        if blake3::hash(&buf).as_bytes() != hash.as_bytes() {
            self.shared.mark_bad(*hash);
            self.shared.counters.corrupt.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(names::CHUNKS_CORRUPT).increment(1);
            tracing::error!(%hash, segment = loc.segment, offset = loc.data_offset, "stored chunk failed its hash check");
            return Err(BlockdError::Corrupt { hash: *hash, segment: loc.segment, offset: loc.data_offset });
        }
        Ok(Bytes::from(buf))
    }

    /// A chunk's verified bytes for an async caller: from the page cache on this task
    /// (`get_cached`), else `get` on the blocking pool.
    pub async fn read(self: &Arc<Self>, hash: ChunkHash) -> Result<Bytes, BlockdError> {
        if let Some(data) = self.get_cached(&hash)? {
            return Ok(data);
        }
        let store = Arc::clone(self);
        tokio::task::spawn_blocking(move || store.get(&hash)).await.map_err(BlockdError::Task)?
    }

    /// Which of `hashes` are stored, not counting a copy known to be corrupt or lost.
    /// Blocking (one index read transaction).
    pub fn has(&self, hashes: &[ChunkHash]) -> Result<Vec<bool>, BlockdError> {
        if !self.shared.any_known_bad() {
            return self.shared.index.contains_many(hashes);
        }
        let found = self.shared.index.locate_many(hashes)?;
        Ok(hashes.iter().zip(found).map(|(h, loc)| loc.is_some_and(|loc| !self.shared.known_bad(h, loc))).collect())
    }

    /// Where `hash` is stored, if indexed (for scrub). Blocking.
    pub(crate) fn locate(&self, hash: &ChunkHash) -> Result<Option<Location>, BlockdError> {
        self.shared.index.lookup(hash)
    }

    /// Every segment's indexed end and seal (for scrub). Blocking.
    pub(crate) fn segment_states(
        &self,
    ) -> Result<std::collections::BTreeMap<u32, crate::index::SegmentState>, BlockdError> {
        self.shared.index.segments()
    }

    /// Whether segment `id` was evicted to S3 (its file holds only the header).
    pub(crate) fn is_evicted(&self, id: u32) -> bool {
        self.tier.as_ref().is_some_and(|t| t.is_evicted(id))
    }

    /// Retires lost segment `id` once no index entry points into it any more (scrub
    /// rewrote all its chunks): a header-only file takes its place if it is gone, and its
    /// indexed end becomes the first record, so it is an empty, sealed segment again (no
    /// longer lost; the S3 tier packs it as empty). The caller must know the segment was
    /// sealed before its entries were counted (nothing is appended to a sealed segment).
    /// A file that exists but cannot be opened as segment `id` is left as it is. Blocking.
    pub(crate) fn retire_lost_segment(&self, id: u32) -> Result<(), BlockdError> {
        let shared = &self.shared;
        let path = segment::segment_path(&shared.seg_dir, id);
        match segment::open(&path, id, false) {
            Ok(_) => {}
            Err(BlockdError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                segment::create(&shared.seg_dir, id, segment::FIRST_RECORD)?;
            }
            Err(e) => return Err(e),
        }
        let empty = crate::index::SegmentState { end: segment::FIRST_RECORD, sealed: true };
        shared.index.commit(&[], &[], &[(id, empty)])?;
        shared.lost.write().unwrap_or_else(|e| e.into_inner()).remove(&id);
        shared.forget_reader(id);
        tracing::info!(segment = id, "lost segment retired: all its chunks were rewritten elsewhere");
        Ok(())
    }

    /// The one call site through which scrub reads a good copy from S3: `None` without a
    /// tier, else the tier's verified ranged read (located in this daemon's packs or by
    /// metad; an error when S3 does not hold the chunk). Blocking.
    pub(crate) fn read_from_pack(&self, hash: &ChunkHash, loc: Location) -> Option<Result<Bytes, BlockdError>> {
        let tier = self.tier.as_ref()?;
        Some(tier.read_blocking(hash, loc))
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

    /// Resolves once the writer has stopped taking puts (a failed fsync or index commit:
    /// the store must be reopened, which recovery does), with the cause.
    pub async fn failed(&self) -> String {
        let mut rx = self.shared.failure.subscribe();
        // The guard is dropped before any further await (the future stays Send).
        let cause = rx.wait_for(Option::is_some).await.map(|c| c.clone().unwrap_or_default());
        match cause {
            Ok(cause) => cause,
            // The sender is gone (the store is being dropped): never resolves.
            Err(_) => std::future::pending().await,
        }
    }

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
    /// Drops the cached read handle of segment `id` (after the S3 tier truncated it, or
    /// its file was found gone: the handle may still reach the unlinked inode).
    pub(crate) fn forget_reader(&self, id: u32) {
        self.readers.write().unwrap_or_else(|e| e.into_inner()).remove(&id);
    }

    /// Records that segment `id`'s file is gone or unusable: its chunks are not held.
    pub(crate) fn mark_lost(&self, id: u32) {
        self.forget_reader(id);
        if self.lost.write().unwrap_or_else(|e| e.into_inner()).insert(id) {
            tracing::warn!(segment = id, "segment marked lost: its chunks are reported missing until rewritten");
        }
    }

    /// Whether segment `id` was evicted to S3 (its file holds only the header).
    pub(crate) fn is_evicted(&self, id: u32) -> bool {
        self.tier.get().and_then(std::sync::Weak::upgrade).is_some_and(|t| t.is_evicted(id))
    }

    pub(crate) fn is_lost(&self, id: u32) -> bool {
        self.lost.read().unwrap_or_else(|e| e.into_inner()).contains(&id)
    }

    /// Records that `hash`'s stored record failed its hash check.
    pub(crate) fn mark_bad(&self, hash: ChunkHash) {
        self.bad.lock().unwrap_or_else(|e| e.into_inner()).insert(hash);
    }

    /// Forgets the bad marks of chunks that were just rewritten.
    pub(crate) fn clear_bad(&self, hashes: impl Iterator<Item = ChunkHash>) {
        let mut bad = self.bad.lock().unwrap_or_else(|e| e.into_inner());
        if bad.is_empty() {
            return;
        }
        for h in hashes {
            bad.remove(&h);
        }
    }

    fn any_known_bad(&self) -> bool {
        !self.lost.read().unwrap_or_else(|e| e.into_inner()).is_empty()
            || !self.bad.lock().unwrap_or_else(|e| e.into_inner()).is_empty()
    }

    /// Whether the copy of `hash` at `loc` is known to be corrupt or lost: not to be
    /// counted as held, and to be rewritten by a put.
    pub(crate) fn known_bad(&self, hash: &ChunkHash, loc: Location) -> bool {
        self.is_lost(loc.segment) || self.bad.lock().unwrap_or_else(|e| e.into_inner()).contains(hash)
    }

    /// A read-only handle on segment `id`, opened (and its header checked) on first use.
    /// The segment's reader if it is already open (never opens a file).
    fn open_reader(&self, id: u32) -> Option<Arc<File>> {
        self.readers.read().unwrap_or_else(|e| e.into_inner()).get(&id).cloned()
    }

    fn reader(&self, id: u32) -> Result<Arc<File>, BlockdError> {
        if let Some(f) = self.open_reader(id) {
            return Ok(f);
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
