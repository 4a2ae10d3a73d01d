//! The S3 tier of a block daemon: one set of packs per cluster (each chunk uploaded by one
//! replica), pack locations in metad, a bounded local tier, and verified read-through.
//!
//! Owns: [`S3Options`], the background task that turns sealed segments into packs and
//! settles them (bounded concurrency, capped exponential back-off, durable bookkeeping in
//! `state`), eviction, the admission check that makes puts wait while the data not yet in
//! S3 is over the bound, remote reads, and the rebuild of its bookkeeping from pack footers.
//!
//! The rules, in the order a segment meets them:
//! 1. **Own pack.** When a segment is sealed, the daemon builds one pack from it (format in
//!    `pack.rs`): the bytes of the records it is *primary* for — the first of
//!    `cluster::placement::replicas(hash, live ∪ {self}, 1)` over the live daemons metad
//!    lists (no metad configured, or an empty list: primary for everything) — and a footer
//!    listing every intact record of the segment (its manifest). A pack is uploaded even
//!    when it carries no bytes, so the manifests can rebuild the index; a segment without
//!    records needs no pack. The key is content-addressed, so a retried upload is
//!    idempotent. After the PUT, RecordPacks sends every stored chunk's location to metad
//!    (batches of ≤ 65536; retried with the PUT's back-off until it succeeds); only then are
//!    the locations and the segment's state (`Packed`) committed to `blockd.redb`. A crash
//!    before that commit uploads the pack again on restart.
//! 2. **Located.** A segment is evictable (its local copy is cache) only when every record
//!    in it is located in S3: in this daemon's own packs, or known to metad (LocateChunks,
//!    ≤ 4096 hashes per call, answers cached in `blockd.redb`). A zero-length chunk needs
//!    no bytes and counts as located. A `Packed` segment is re-checked at most every
//!    `locate_interval`.
//! 3. **Leftovers.** A record still unlocated `leftover_grace` after its segment was packed
//!    (its primary died, lacks the chunk, or disagreed about who is live) is uploaded by this
//!    daemon in a *leftover* pack if it is now the record's primary among the live daemons;
//!    after `orphan_grace` (longer) it uploads every record metad still cannot locate,
//!    whoever is primary. So a segment always becomes evictable (at worst after
//!    `orphan_grace`), at the cost of an occasional duplicate, and unlocated data is never
//!    evicted. A record whose local bytes fail their hash cannot be uploaded: it is logged
//!    and no longer waited for (evicting it loses nothing that was intact).
//! 4. **Eviction.** While local segment files exceed `local_bound_bytes`, `Located`
//!    segments are evicted oldest first: marked `Evicted` durably, then truncated to their
//!    header (the file stays, so recovery and the segment listing are unchanged; the index
//!    keeps its entries).
//! 5. **Reads** of a chunk in an evicted segment: its location from `blockd.redb`, else
//!    from metad, then a ranged GET; the whole read is bounded by `read_timeout` and the
//!    bytes are BLAKE3-verified. During an S3 outage such a read fails fast
//!    ([`TierError::ReadTimeout`] or an S3 error; the server answers an error).
//! 6. **Back-pressure.** Sealed segments not yet located (rule 2) are the data "not yet in
//!    S3": while their bytes reach the bound, a put waits (up to `backpressure_timeout`,
//!    then [`TierError::Backlogged`], `Status::NoSpace`). Local usage stays within the bound
//!    plus the active segment (plus puts admitted since the last check, which runs after
//!    every put); the active segment is never counted, so a bound below one segment cannot
//!    stop the puts that would seal it. When S3 comes back, uploads catch up and waiting
//!    puts resume.
//! 7. **Rebuild.** The tier's tables carry a version stamp written last. Without it (new
//!    daemon, `blockd.redb` lost and rebuilt from the segments, or a version-1 file), the
//!    daemon first lists its own pack prefix (`packs/<prefix>/`), reads every footer and
//!    restores the chunk locations, the state of each segment with a manifest (a
//!    header-only file: `Evicted`, with the index entries of its records restored from the
//!    manifest; otherwise `Packed`) and the stamp; chunks of version-1 packs (whole
//!    segments) are recorded in metad too. Until then nothing is uploaded or evicted. A
//!    footer that does not decode is skipped with an error in the log; an S3 failure
//!    retries the rebuild with back-off.
//!
//! Must never: evict a segment with a record not located in S3, evict the active
//! (unsealed) segment, serve remote bytes that fail their hash, or wait on S3 or metad
//! without a deadline on a read path. Known gaps: packs orphaned by a crash between PUT and
//! the local commit, or superseded by a leftover, are not deleted (that is GC's job); a
//! segment whose file is missing entirely is not restored into the index by a rebuild.

pub mod client;
pub(crate) mod directory;
pub mod pack;
mod state;
#[cfg(any(test, feature = "testing"))]
pub mod test_server;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cluster::metrics as names;
use proto::ChunkHash;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::error::BlockdError;
use crate::format::{self, RECORD_HEADER_LEN};
use crate::index::{Location, SegmentState};
use crate::segment::{self, FIRST_RECORD};
use crate::store::Shared;
use client::{PackBucket, S3Error};
pub(crate) use directory::Directory;
use directory::{DirectoryError, MAX_LOCATE_BATCH, MAX_RECORD_BATCH};
use pack::Piece;
use state::{PackLoc, SegTier};

/// How a block daemon uses S3. Without it the daemon keeps everything on local disk.
#[derive(Debug, Clone)]
pub struct S3Options {
    /// Endpoint URL (`http://127.0.0.1:9000`); `None` for AWS itself.
    pub endpoint: Option<String>,
    pub bucket: String,
    pub region: String,
    pub access_key: String,
    pub secret_key: String,
    /// Key prefix of this daemon's packs (`packs/<prefix>/...`): its daemon id, so daemons
    /// sharing a bucket never collide. A rebuild lists it.
    pub prefix: String,
    /// Bytes of local segment files kept; located segments beyond it are evicted.
    pub local_bound_bytes: u64,
    /// Pack uploads (and segment checks) in flight at once.
    pub upload_concurrency: usize,
    /// Deadline of one remote chunk read (locating it included).
    pub read_timeout: Duration,
    /// Deadline of one pack upload attempt.
    pub upload_timeout: Duration,
    /// First retry delay of a failed upload; doubles up to `max_backoff`.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// How long a put waits for room while the local tier is full of data not yet in S3.
    pub backpressure_timeout: Duration,
    /// How often the tier re-checks segments without being woken by a put.
    pub scan_interval: Duration,
    /// How often a packed segment waiting for other daemons' packs asks metad again.
    pub locate_interval: Duration,
    /// After this long unlocated, a record is uploaded in a leftover pack by its primary
    /// among the live daemons.
    pub leftover_grace: Duration,
    /// After this long unlocated, a record is uploaded in a leftover pack by every daemon
    /// holding it (so eviction never waits forever).
    pub orphan_grace: Duration,
}

impl S3Options {
    /// Options with the default tunables (2 GiB local bound, 4 uploads, 5 s read timeout,
    /// leftovers after 2 min, orphans after 30 min).
    pub fn new(
        endpoint: Option<String>,
        bucket: impl Into<String>,
        region: impl Into<String>,
        access_key: impl Into<String>,
        secret_key: impl Into<String>,
        prefix: impl Into<String>,
    ) -> S3Options {
        S3Options {
            endpoint,
            bucket: bucket.into(),
            region: region.into(),
            access_key: access_key.into(),
            secret_key: secret_key.into(),
            prefix: prefix.into(),
            local_bound_bytes: 2 << 30,
            upload_concurrency: 4,
            read_timeout: Duration::from_secs(5),
            upload_timeout: Duration::from_secs(120),
            min_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(30),
            backpressure_timeout: Duration::from_secs(30),
            scan_interval: Duration::from_secs(1),
            locate_interval: Duration::from_secs(5),
            leftover_grace: Duration::from_secs(120),
            orphan_grace: Duration::from_secs(1800),
        }
    }
}

/// Why the tier failed an operation.
#[derive(Debug, thiserror::Error)]
pub enum TierError {
    #[error(transparent)]
    S3(#[from] S3Error),
    #[error(transparent)]
    Directory(#[from] DirectoryError),
    #[error("local tier is full of data not yet in S3 ({pending} bytes pending, bound {bound}); waited {waited:?}")]
    Backlogged { pending: u64, bound: u64, waited: Duration },
    #[error("chunk {hash} is evicted but neither this daemon nor metad knows its pack")]
    NotLocated { hash: ChunkHash },
    #[error("chunk {hash} is {indexed} bytes but its pack location says {located}")]
    LocationLength { hash: ChunkHash, indexed: u32, located: u32 },
    #[error("remote read of chunk {hash} did not finish within {after:?}")]
    ReadTimeout { hash: ChunkHash, after: Duration },
    #[error("the S3 tier's tables have version {found}; this build understands {supported}")]
    StateVersion { found: u64, supported: u64 },
    #[error("the S3 tier's state of segment {segment} is the unknown value {found}")]
    StateValue { segment: u32, found: u8 },
    #[error("the S3 tier needs a tokio runtime")]
    NoRuntime,
    #[error("the S3 tier is stopped")]
    Stopped,
}

impl TierError {
    /// Whether S3 or metad was out of reach (the chunk is there, just not now), rather
    /// than an answer that something is wrong.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            TierError::S3(S3Error::Timeout { .. } | S3Error::Unreachable { .. })
                | TierError::ReadTimeout { .. }
                | TierError::Directory(DirectoryError::Metad(_))
        )
    }
}

/// A snapshot of the tier's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TierStats {
    pub uploaded_packs: u64,
    pub uploaded_bytes: u64,
    pub upload_failures: u64,
    /// Leftover packs among the uploaded ones.
    pub leftover_packs: u64,
    /// Sealed segments not yet located in S3 (not evictable).
    pub backlog_segments: u64,
    /// Bytes of those segments (the active segment excluded).
    pub pending_bytes: u64,
    /// Bytes of local segment files.
    pub local_bytes: u64,
    pub evicted_segments: u64,
    pub remote_reads: u64,
    /// Chunks whose location metad answered (uploaded by another daemon).
    pub located_by_metad: u64,
    /// Chunk locations restored from pack footers by a rebuild.
    pub restored_locations: u64,
    /// The bookkeeping is complete (loaded, or rebuilt from S3); before, nothing is
    /// uploaded or evicted.
    pub ready: bool,
}

#[derive(Default)]
struct Counters {
    uploaded_packs: AtomicU64,
    uploaded_bytes: AtomicU64,
    upload_failures: AtomicU64,
    leftover_packs: AtomicU64,
    backlog_segments: AtomicU64,
    pending_bytes: AtomicU64,
    admitted_since_check: AtomicU64,
    local_bytes: AtomicU64,
    evicted_segments: AtomicU64,
    remote_reads: AtomicU64,
    located_by_metad: AtomicU64,
    restored_locations: AtomicU64,
}

/// A pack ready to upload.
struct Built {
    key: String,
    body: Bytes,
    /// Where each chunk it holds is (zero-length ones included; they are not sent to metad).
    rows: Vec<(ChunkHash, PackLoc)>,
}

/// A record of a segment: its hash and where its bytes are.
#[derive(Debug, Clone, Copy)]
struct Rec {
    hash: ChunkHash,
    data_offset: u64,
    len: u32,
}

/// When a segment may be looked at again, and the back-off after failures.
#[derive(Clone, Copy)]
struct Retry {
    at: Instant,
    backoff: Duration,
}

pub(crate) struct Tier {
    opts: S3Options,
    bucket: PackBucket,
    shared: Arc<Shared>,
    /// This daemon's id (placement).
    me: u64,
    directory: Option<Arc<dyn Directory>>,
    segs: RwLock<BTreeMap<u32, SegTier>>,
    ready: AtomicBool,
    retry: Mutex<HashMap<u32, Retry>>,
    /// The last live list metad gave (used while it cannot answer).
    live: Mutex<Option<Vec<u64>>>,
    counters: Counters,
    /// Woken by puts and finished jobs: re-check segments.
    wake: Notify,
    /// Woken when pending bytes drop: admit waiting puts.
    room: Notify,
    cancel: CancellationToken,
    runtime: tokio::runtime::Handle,
    /// Disconnects once the background task and every job have ended.
    done: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl Tier {
    /// Loads the bookkeeping, finishes an eviction a crash interrupted, and starts the
    /// background task on the current tokio runtime. Blocking.
    pub fn start(
        shared: Arc<Shared>,
        opts: S3Options,
        directory: Option<Arc<dyn Directory>>,
    ) -> Result<Arc<Tier>, BlockdError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| TierError::NoRuntime)?;
        let me = crate::heartbeat::daemon_id(&shared.data_dir)?;
        let loaded = state::load(shared.index.db())?;
        let ready = loaded.is_some();
        let segs = loaded.unwrap_or_default();
        for (id, st) in &segs {
            if *st == SegTier::Evicted {
                truncate_segment(&shared, *id)?;
            }
        }
        let evicted = segs.values().filter(|s| **s == SegTier::Evicted).count() as u64;
        let tier = Arc::new(Tier {
            bucket: PackBucket::new(&opts),
            opts,
            shared,
            me,
            directory,
            segs: RwLock::new(segs),
            ready: AtomicBool::new(ready),
            retry: Mutex::new(HashMap::new()),
            live: Mutex::new(None),
            counters: Counters::default(),
            wake: Notify::new(),
            room: Notify::new(),
            cancel: CancellationToken::new(),
            runtime: runtime.clone(),
            done: Mutex::new(None),
        });
        tier.counters.evicted_segments.store(evicted, Ordering::Relaxed);
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        *tier.done.lock().unwrap_or_else(|e| e.into_inner()) = Some(done_rx);
        runtime.spawn(tier.clone().run(done_tx));
        Ok(tier)
    }

    pub fn stats(&self) -> TierStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        TierStats {
            uploaded_packs: get(&c.uploaded_packs),
            uploaded_bytes: get(&c.uploaded_bytes),
            upload_failures: get(&c.upload_failures),
            leftover_packs: get(&c.leftover_packs),
            backlog_segments: get(&c.backlog_segments),
            pending_bytes: get(&c.pending_bytes),
            local_bytes: get(&c.local_bytes),
            evicted_segments: get(&c.evicted_segments),
            remote_reads: get(&c.remote_reads),
            located_by_metad: get(&c.located_by_metad),
            restored_locations: get(&c.restored_locations),
            ready: self.ready.load(Ordering::Acquire),
        }
    }

    fn seg_state(&self, id: u32) -> Option<SegTier> {
        self.segs.read().unwrap_or_else(|e| e.into_inner()).get(&id).copied()
    }

    /// The tier state of every segment that has one (tests).
    #[cfg(test)]
    pub(crate) fn states(&self) -> BTreeMap<u32, SegTier> {
        self.segs.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn is_evicted(&self, id: u32) -> bool {
        self.seg_state(id) == Some(SegTier::Evicted)
    }

    /// Waits until the not-yet-located local data is under the bound (back-pressure), up
    /// to `backpressure_timeout`; then refuses with [`TierError::Backlogged`].
    pub async fn admit(&self, len: usize) -> Result<(), TierError> {
        let bound = self.opts.local_bound_bytes;
        let started = tokio::time::Instant::now();
        let deadline = started + self.opts.backpressure_timeout;
        loop {
            let notified = self.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let pending = self.counters.pending_bytes.load(Ordering::Relaxed)
                + self.counters.admitted_since_check.load(Ordering::Relaxed);
            if pending < bound {
                self.counters.admitted_since_check.fetch_add(len as u64, Ordering::Relaxed);
                return Ok(());
            }
            if self.cancel.is_cancelled() {
                return Err(TierError::Stopped);
            }
            self.wake.notify_one();
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(TierError::Backlogged { pending, bound, waited: started.elapsed() });
            }
        }
    }

    /// Tells the background task that segments may have changed.
    pub fn poke(&self) {
        self.wake.notify_one();
    }

    /// Reads an evicted chunk from S3, from a thread that may block (not an async task):
    /// locating and fetching run on the runtime, and this waits at most the read timeout.
    pub fn read_blocking(&self, hash: &ChunkHash, loc: Location) -> Result<Bytes, BlockdError> {
        let hash = *hash;
        let verify = |bytes: Bytes, key: &str| {
            if blake3::hash(&bytes).as_bytes() != hash.as_bytes() {
                tracing::error!(%hash, %key, "chunk read from S3 failed its hash check");
                return Err(BlockdError::Corrupt { hash, segment: loc.segment, offset: loc.data_offset });
            }
            Ok(bytes)
        };
        if loc.len == 0 {
            return verify(Bytes::new(), "(empty chunk)");
        }
        let known = state::locate(self.shared.index.db(), &[hash])?.pop().flatten();
        let bucket = self.bucket.clone();
        let directory = self.directory.clone();
        let timeout = self.opts.read_timeout;
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.runtime.spawn(async move {
            let fetch = async {
                let at = match known {
                    Some(at) => at,
                    None => {
                        let dir = directory.ok_or(TierError::NotLocated { hash })?;
                        let found = dir.locate_chunks(vec![hash]).await?;
                        found
                            .into_iter()
                            .find(|(h, _)| *h == hash)
                            .map(|(_, at)| at)
                            .ok_or(TierError::NotLocated { hash })?
                    }
                };
                if at.len != loc.len {
                    return Err(TierError::LocationLength { hash, indexed: loc.len, located: at.len });
                }
                let bytes = bucket.get_range(&at.key, at.offset, u64::from(at.len)).await?;
                Ok::<_, TierError>((bytes, at.key))
            };
            let r = match tokio::time::timeout(timeout, fetch).await {
                Ok(r) => r,
                Err(_) => Err(TierError::ReadTimeout { hash, after: timeout }),
            };
            let _ = tx.send(r);
        });
        let after = timeout + Duration::from_millis(500);
        let (bytes, key) = match rx.recv_timeout(after) {
            Ok(r) => r?,
            Err(_) => return Err(TierError::ReadTimeout { hash, after }.into()),
        };
        self.counters.remote_reads.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(names::S3_REMOTE_READS).increment(1);
        verify(bytes, &key)
    }

    /// Stops the background task and waits (bounded) until it and its jobs ended, so the
    /// index can be reopened. Blocking.
    pub fn stop(&self) {
        self.cancel.cancel();
        self.room.notify_waiters();
        let rx = self.done.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(rx) = rx
            && let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(Duration::from_secs(30))
        {
            tracing::error!("the S3 tier did not stop within 30 s");
        }
    }

    async fn run(self: Arc<Tier>, done: std::sync::mpsc::Sender<()>) {
        // Field order is drop order: the tier (and with it the index) goes before `done`
        // tells `stop` that the task has ended.
        let held = Held { tier: self, done };
        held.tier.clone().run_loop(&held.done).await;
    }

    async fn run_loop(self: Arc<Tier>, done: &std::sync::mpsc::Sender<()>) {
        let mut jobs = tokio::task::JoinSet::new();
        let mut in_flight: HashSet<u32> = HashSet::new();
        let mut rebuild_at = Instant::now();
        let mut rebuild_backoff = self.opts.min_backoff;
        loop {
            if !self.ready.load(Ordering::Acquire) && Instant::now() >= rebuild_at {
                let rebuilt = tokio::select! {
                    () = self.cancel.cancelled() => break,
                    r = self.rebuild() => r,
                };
                match rebuilt {
                    Ok(()) => self.ready.store(true, Ordering::Release),
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in = ?rebuild_backoff, "rebuilding the S3 tier's bookkeeping failed");
                        rebuild_at = Instant::now() + rebuild_backoff;
                        rebuild_backoff = (rebuild_backoff * 2).min(self.opts.max_backoff);
                    }
                }
            }
            if let Err(e) = self.check(&mut jobs, &mut in_flight, done).await {
                tracing::warn!(error = %e, "S3 tier check failed; retrying");
            }
            tokio::select! {
                () = self.cancel.cancelled() => break,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(self.opts.scan_interval) => {}
                Some(finished) = jobs.join_next(), if !jobs.is_empty() => {
                    if let Ok(id) = finished {
                        in_flight.remove(&id);
                    }
                }
            }
        }
        jobs.shutdown().await;
    }

    /// One pass: start jobs for sealed segments not yet located, evict over the bound,
    /// update gauges.
    async fn check(
        self: &Arc<Tier>,
        jobs: &mut tokio::task::JoinSet<u32>,
        in_flight: &mut HashSet<u32>,
        done: &std::sync::mpsc::Sender<()>,
    ) -> Result<(), BlockdError> {
        while let Some(r) = jobs.try_join_next() {
            if let Ok(id) = r {
                in_flight.remove(&id);
            }
        }
        let shared = self.shared.clone();
        let admitted = self.counters.admitted_since_check.swap(0, Ordering::Relaxed);
        let segs = tokio::task::spawn_blocking(move || -> Result<_, BlockdError> {
            let states = shared.index.segments()?;
            let mut out = Vec::with_capacity(states.len());
            for (id, st) in states {
                let path = segment::segment_path(&shared.seg_dir, id);
                let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                out.push((id, st, size));
            }
            Ok(out)
        })
        .await
        .map_err(BlockdError::Task)?;
        let segs = match segs {
            Ok(s) => s,
            Err(e) => {
                self.counters.admitted_since_check.fetch_add(admitted, Ordering::Relaxed);
                return Err(e);
            }
        };
        let ready = self.ready.load(Ordering::Acquire);
        let states = self.segs.read().unwrap_or_else(|e| e.into_inner()).clone();
        let now = Instant::now();
        let (mut local, mut pending, mut backlog) = (0u64, 0u64, 0u64);
        let mut evictable = Vec::new();
        for &(id, st, size) in &segs {
            local += size;
            // The active segment is not counted: it cannot be packed before it is sealed,
            // and counting it could stop the puts that would seal it.
            if !st.sealed {
                continue;
            }
            match states.get(&id) {
                Some(SegTier::Evicted) => {}
                Some(SegTier::Located) => evictable.push((id, size)),
                None | Some(SegTier::Packed { .. }) => {
                    pending += size;
                    backlog += 1;
                    let due = self.retry.lock().unwrap_or_else(|e| e.into_inner()).get(&id).is_none_or(|r| r.at <= now);
                    if ready && due && !in_flight.contains(&id) && in_flight.len() < self.opts.upload_concurrency.max(1)
                    {
                        in_flight.insert(id);
                        let held = Held { tier: self.clone(), done: done.clone() };
                        jobs.spawn(async move {
                            held.tier.settle(id, st.end, &held.done).await;
                            held.tier.wake.notify_one();
                            id
                        });
                    }
                }
            }
        }
        // Oldest first: segment ids grow with time.
        for (id, size) in evictable {
            if !ready || local <= self.opts.local_bound_bytes {
                break;
            }
            let tier = self.clone();
            tokio::task::spawn_blocking(move || tier.evict(id)).await.map_err(BlockdError::Task)??;
            local = local.saturating_sub(size.saturating_sub(FIRST_RECORD));
        }
        let c = &self.counters;
        c.local_bytes.store(local, Ordering::Relaxed);
        c.pending_bytes.store(pending, Ordering::Relaxed);
        c.backlog_segments.store(backlog, Ordering::Relaxed);
        metrics::gauge!(names::S3_LOCAL_BYTES).set(local as f64);
        metrics::gauge!(names::S3_BACKLOG_BYTES).set(pending as f64);
        metrics::gauge!(names::S3_BACKLOG_SEGMENTS).set(backlog as f64);
        if pending < self.opts.local_bound_bytes {
            self.room.notify_waiters();
        }
        Ok(())
    }

    /// Moves segment `id` (written up to `end`) one step: its own pack, or locating the
    /// rest (and leftovers). Failures are logged and retried later with back-off.
    async fn settle(self: &Arc<Tier>, id: u32, end: u64, done: &std::sync::mpsc::Sender<()>) {
        let _keep = done;
        let step = match self.seg_state(id) {
            None => self.pack_own(id, end).await,
            Some(SegTier::Packed { at_ms }) => self.locate_rest(id, end, at_ms).await,
            Some(_) => Ok(()),
        };
        let mut retry = self.retry.lock().unwrap_or_else(|e| e.into_inner());
        match step {
            Ok(()) if matches!(self.seg_state(id), Some(SegTier::Located | SegTier::Evicted)) => {
                retry.remove(&id);
            }
            Ok(()) => {
                let backoff = self.opts.min_backoff;
                retry.insert(id, Retry { at: Instant::now() + self.opts.locate_interval, backoff });
            }
            Err(e) => {
                let backoff =
                    retry.get(&id).map_or(self.opts.min_backoff, |r| (r.backoff * 2).min(self.opts.max_backoff));
                tracing::warn!(segment = id, error = %e, retry_in = ?backoff, "S3 tier: segment step failed");
                retry.insert(id, Retry { at: Instant::now() + backoff, backoff });
            }
        }
    }

    /// The live daemons and this one (metad's last answer while it cannot answer).
    async fn live_set(&self) -> Result<Vec<u64>, TierError> {
        let Some(dir) = &self.directory else { return Ok(vec![self.me]) };
        let mut live = match dir.live_daemons().await {
            Ok(live) => {
                *self.live.lock().unwrap_or_else(|e| e.into_inner()) = Some(live.clone());
                live
            }
            Err(e) => match self.live.lock().unwrap_or_else(|e| e.into_inner()).clone() {
                Some(live) => live,
                None => return Err(e.into()),
            },
        };
        live.push(self.me);
        Ok(live)
    }

    fn is_primary(&self, hash: &ChunkHash, live: &[u64]) -> bool {
        cluster::placement::replicas(hash, live, 1).first() == Some(&self.me)
    }

    /// Rule 1: builds, uploads and records the segment's own pack.
    async fn pack_own(self: &Arc<Tier>, id: u32, end: u64) -> Result<(), BlockdError> {
        let live = self.live_set().await?;
        let tier = self.clone();
        let (built, elsewhere) =
            tokio::task::spawn_blocking(move || tier.build_own(id, end, &live)).await.map_err(BlockdError::Task)??;
        let rows = match built {
            Some(built) => {
                if !self.until_durable(id, &built, false).await {
                    return Err(TierError::Stopped.into());
                }
                built.rows
            }
            None => Vec::new(),
        };
        let next = if elsewhere { SegTier::Packed { at_ms: now_ms() } } else { SegTier::Located };
        self.commit(rows, vec![(id, next)]).await
    }

    /// Reads the written part of segment `id` and builds its own pack; `None` when the
    /// segment holds no record. The flag: some records are left to other daemons.
    fn build_own(&self, id: u32, end: u64, live: &[u64]) -> Result<(Option<Built>, bool), BlockdError> {
        let path = segment::segment_path(&self.shared.seg_dir, id);
        let file = segment::open(&path, id, false)?;
        let len = usize::try_from(end)
            .map_err(|_| BlockdError::SegmentHeader { path: path.clone(), what: "indexed end too large to upload" })?;
        let mut buf = vec![0u8; len];
        file.read_exact_at(&mut buf, 0).map_err(BlockdError::io("reading for upload", &path))?;
        let mut pieces = Vec::new();
        let mut damaged = 0usize;
        let mut elsewhere = false;
        pack::scan(&buf, |r| {
            if !r.intact {
                damaged += 1;
            } else {
                let mine = r.len == 0 || self.is_primary(&r.hash, live);
                elsewhere |= !mine;
                let data = mine.then(|| &buf[r.data_offset as usize..(r.data_offset + u64::from(r.len)) as usize]);
                pieces.push(Piece { hash: r.hash, segment_offset: r.data_offset, len: r.len, data });
            }
            std::ops::ControlFlow::Continue(())
        });
        if damaged > 0 {
            tracing::error!(segment = id, damaged, "records failed their hash check; left out of the pack");
        }
        if pieces.is_empty() {
            return Ok((None, false));
        }
        Ok((Some(self.built(id, false, &pieces)), elsewhere))
    }

    fn built(&self, id: u32, leftover: bool, pieces: &[Piece<'_>]) -> Built {
        let (body, entries) = pack::build(id, leftover, pieces);
        let key = pack::key(&self.opts.prefix, id, leftover, &body);
        let rows = entries
            .iter()
            .filter_map(|e| e.pack_offset.map(|offset| (e.hash, PackLoc { key: key.clone(), offset, len: e.len })))
            .collect();
        Built { key, body: Bytes::from(body), rows }
    }

    /// PUTs the pack and records its locations in metad, retrying with back-off until both
    /// succeeded (`true`) or the tier stops (`false`).
    async fn until_durable(&self, id: u32, built: &Built, leftover: bool) -> bool {
        let mut backoff = self.opts.min_backoff;
        let mut uploaded = false;
        loop {
            let attempt = async {
                if !uploaded {
                    self.bucket.put(&built.key, built.body.clone()).await?;
                    uploaded = true;
                }
                if let Some(dir) = &self.directory {
                    let rows: Vec<_> = built.rows.iter().filter(|(_, l)| l.len > 0).cloned().collect();
                    for batch in rows.chunks(MAX_RECORD_BATCH) {
                        dir.record_packs(batch.to_vec()).await?;
                    }
                }
                Ok::<(), TierError>(())
            };
            let result = tokio::select! {
                () = self.cancel.cancelled() => return false,
                r = attempt => r,
            };
            match result {
                Ok(()) => {
                    let len = built.body.len() as u64;
                    tracing::debug!(segment = id, key = %built.key, bytes = len, chunks = built.rows.len(), leftover, "uploaded pack");
                    self.counters.uploaded_packs.fetch_add(1, Ordering::Relaxed);
                    self.counters.uploaded_bytes.fetch_add(len, Ordering::Relaxed);
                    metrics::counter!(names::S3_UPLOADED_PACKS).increment(1);
                    metrics::counter!(names::S3_UPLOADED_BYTES).increment(len);
                    if leftover {
                        self.counters.leftover_packs.fetch_add(1, Ordering::Relaxed);
                        metrics::counter!(names::S3_LEFTOVER_PACKS).increment(1);
                    }
                    return true;
                }
                Err(e) => {
                    self.counters.upload_failures.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!(names::S3_UPLOAD_FAILURES).increment(1);
                    tracing::warn!(segment = id, key = %built.key, error = %e, retry_in = ?backoff, "pack upload failed");
                    tokio::select! {
                        () = self.cancel.cancelled() => return false,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(self.opts.max_backoff);
                }
            }
        }
    }

    /// Commits locations and segment states (fsynced), then mirrors the states in memory.
    async fn commit(&self, rows: Vec<(ChunkHash, PackLoc)>, segs: Vec<(u32, SegTier)>) -> Result<(), BlockdError> {
        let shared = self.shared.clone();
        let to_store = segs.clone();
        tokio::task::spawn_blocking(move || state::commit(shared.index.db(), &rows, &to_store, false))
            .await
            .map_err(BlockdError::Task)??;
        let mut mem = self.segs.write().unwrap_or_else(|e| e.into_inner());
        for (id, st) in segs {
            mem.insert(id, st);
        }
        Ok(())
    }

    /// Rules 2 and 3: locates the records of a packed segment not in this daemon's packs
    /// (metad), and uploads leftovers once their grace is over.
    async fn locate_rest(self: &Arc<Tier>, id: u32, end: u64, at_ms: u64) -> Result<(), BlockdError> {
        let shared = self.shared.clone();
        let mut unlocated = tokio::task::spawn_blocking(move || -> Result<Vec<Rec>, BlockdError> {
            let recs = record_headers(&shared, id, end)?;
            let recs: Vec<Rec> = recs.into_iter().filter(|r| r.len > 0).collect();
            let hashes: Vec<ChunkHash> = recs.iter().map(|r| r.hash).collect();
            let known = state::locate(shared.index.db(), &hashes)?;
            Ok(recs.into_iter().zip(known).filter(|(_, k)| k.is_none()).map(|(r, _)| r).collect())
        })
        .await
        .map_err(BlockdError::Task)??;
        if let Some(dir) = &self.directory
            && !unlocated.is_empty()
        {
            let mut found = Vec::new();
            for batch in unlocated.chunks(MAX_LOCATE_BATCH) {
                found.extend(dir.locate_chunks(batch.iter().map(|r| r.hash).collect()).await.map_err(TierError::from)?);
            }
            if !found.is_empty() {
                self.counters.located_by_metad.fetch_add(found.len() as u64, Ordering::Relaxed);
                let located: HashSet<ChunkHash> = found.iter().map(|(h, _)| *h).collect();
                unlocated.retain(|r| !located.contains(&r.hash));
                self.commit(found, Vec::new()).await?;
            }
        }
        if unlocated.is_empty() {
            return self.commit(Vec::new(), vec![(id, SegTier::Located)]).await;
        }
        let age = Duration::from_millis(now_ms().saturating_sub(at_ms));
        if age < self.opts.leftover_grace {
            return Ok(());
        }
        let live = self.live_set().await?;
        let orphaned = age >= self.opts.orphan_grace;
        let (pick, rest): (Vec<Rec>, Vec<Rec>) =
            unlocated.into_iter().partition(|r| orphaned || self.is_primary(&r.hash, &live));
        if pick.is_empty() {
            return Ok(());
        }
        let tier = self.clone();
        let built =
            tokio::task::spawn_blocking(move || tier.build_leftover(id, &pick)).await.map_err(BlockdError::Task)??;
        let rows = match built {
            Some(built) => {
                if !self.until_durable(id, &built, true).await {
                    return Err(TierError::Stopped.into());
                }
                built.rows
            }
            None => Vec::new(),
        };
        let next = if rest.is_empty() { vec![(id, SegTier::Located)] } else { Vec::new() };
        self.commit(rows, next).await
    }

    /// Reads the picked records of segment `id` (verifying each) and builds a leftover
    /// pack of the intact ones; `None` when none is intact.
    fn build_leftover(&self, id: u32, pick: &[Rec]) -> Result<Option<Built>, BlockdError> {
        let path = segment::segment_path(&self.shared.seg_dir, id);
        let file = segment::open(&path, id, false)?;
        let mut datas = Vec::with_capacity(pick.len());
        for r in pick {
            let mut data = vec![0u8; r.len as usize];
            file.read_exact_at(&mut data, r.data_offset).map_err(BlockdError::io("reading for upload", &path))?;
            if blake3::hash(&data).as_bytes() == r.hash.as_bytes() {
                datas.push((r, data));
            } else {
                tracing::error!(segment = id, hash = %r.hash, offset = r.data_offset,
                    "record failed its hash check; it cannot be uploaded and is no longer waited for");
            }
        }
        if datas.is_empty() {
            return Ok(None);
        }
        let pieces: Vec<Piece<'_>> = datas
            .iter()
            .map(|(r, d)| Piece { hash: r.hash, segment_offset: r.data_offset, len: r.len, data: Some(d) })
            .collect();
        Ok(Some(self.built(id, true, &pieces)))
    }

    /// Marks segment `id` evicted (durably), then truncates its file to the header.
    fn evict(&self, id: u32) -> Result<(), BlockdError> {
        if self.seg_state(id) != Some(SegTier::Located) {
            return Ok(());
        }
        state::commit(self.shared.index.db(), &[], &[(id, SegTier::Evicted)], false)?;
        self.segs.write().unwrap_or_else(|e| e.into_inner()).insert(id, SegTier::Evicted);
        truncate_segment(&self.shared, id)?;
        self.counters.evicted_segments.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(names::S3_EVICTED_SEGMENTS).increment(1);
        tracing::debug!(segment = id, "evicted segment (its chunks are in S3)");
        Ok(())
    }

    /// Rule 7: restores the bookkeeping from this daemon's pack footers.
    async fn rebuild(self: &Arc<Tier>) -> Result<(), BlockdError> {
        let prefix = pack::key_prefix(&self.opts.prefix);
        let listed = self.bucket.list(&prefix).await.map_err(TierError::from)?;
        let mut rows = Vec::new();
        let mut v1_rows = Vec::new();
        let mut manifests: BTreeMap<u32, Vec<pack::PackEntry>> = BTreeMap::new();
        for obj in listed.iter().filter(|o| o.key.ends_with(".tpk")) {
            let (trailer, entries) = match self.bucket.read_footer(&obj.key, Some(obj.size)).await {
                Ok(f) => f,
                Err(e @ S3Error::Pack { .. }) => {
                    tracing::error!(error = %e, "skipping a pack whose footer does not decode");
                    continue;
                }
                Err(e) => return Err(TierError::from(e).into()),
            };
            for e in &entries {
                if let Some(offset) = e.pack_offset {
                    let row = (e.hash, PackLoc { key: obj.key.clone(), offset, len: e.len });
                    if trailer.version == 1 && e.len > 0 {
                        v1_rows.push(row.clone());
                    }
                    rows.push(row);
                }
            }
            if !trailer.leftover {
                manifests.entry(trailer.segment).or_default().extend(entries);
            }
        }
        if let Some(dir) = &self.directory {
            for batch in v1_rows.chunks(MAX_RECORD_BATCH) {
                dir.record_packs(batch.to_vec()).await.map_err(TierError::from)?;
            }
        }
        let restored = rows.len() as u64;
        let tier = self.clone();
        let states =
            tokio::task::spawn_blocking(move || tier.restore(rows, manifests)).await.map_err(BlockdError::Task)??;
        self.counters.restored_locations.fetch_add(restored, Ordering::Relaxed);
        let evicted = states.values().filter(|s| **s == SegTier::Evicted).count() as u64;
        self.counters.evicted_segments.fetch_add(evicted, Ordering::Relaxed);
        tracing::info!(
            packs = listed.len(),
            locations = restored,
            evicted,
            "rebuilt the S3 tier's bookkeeping from pack footers"
        );
        *self.segs.write().unwrap_or_else(|e| e.into_inner()) = states;
        Ok(())
    }

    /// The blocking half of a rebuild: index entries of evicted segments, segment states,
    /// locations and the stamp.
    fn restore(
        &self,
        rows: Vec<(ChunkHash, PackLoc)>,
        manifests: BTreeMap<u32, Vec<pack::PackEntry>>,
    ) -> Result<BTreeMap<u32, SegTier>, BlockdError> {
        let index = &self.shared.index;
        let seg_states = index.segments()?;
        let mut states = BTreeMap::new();
        let mut entries = Vec::new();
        let mut seg_updates = Vec::new();
        for (id, manifest) in manifests {
            let path = segment::segment_path(&self.shared.seg_dir, id);
            let Ok(meta) = std::fs::metadata(&path) else {
                tracing::warn!(segment = id, "a pack names a segment whose file is missing; its index is not restored");
                continue;
            };
            if meta.len() > FIRST_RECORD {
                // Still on disk: its records were indexed by the segment scan.
                states.insert(id, SegTier::Packed { at_ms: now_ms() });
                continue;
            }
            let mut end = seg_states.get(&id).map_or(FIRST_RECORD, |s| s.end);
            for e in &manifest {
                entries.push((e.hash, Location { segment: id, data_offset: e.segment_offset, len: e.len }));
                end = end.max(e.segment_offset + u64::from(e.len));
            }
            seg_updates.push((id, SegmentState { end, sealed: true }));
            states.insert(id, SegTier::Evicted);
        }
        let totals = index.commit(&entries, &[], &seg_updates)?;
        self.shared.counters.set_totals(totals);
        let list: Vec<(u32, SegTier)> = states.iter().map(|(k, v)| (*k, *v)).collect();
        state::commit(index.db(), &rows, &list, true)?;
        for id in states.iter().filter(|(_, s)| **s == SegTier::Evicted).map(|(id, _)| *id) {
            self.shared.forget_reader(id);
        }
        Ok(states)
    }
}

/// Keeps the tier alive for a task, and signals `stop` once it is dropped (fields drop in
/// declaration order: the tier first).
struct Held {
    tier: Arc<Tier>,
    done: std::sync::mpsc::Sender<()>,
}

/// The records of segment `id` up to `end`, from their headers (data not read).
fn record_headers(shared: &Shared, id: u32, end: u64) -> Result<Vec<Rec>, BlockdError> {
    let path = segment::segment_path(&shared.seg_dir, id);
    let file = segment::open(&path, id, false)?;
    let mut out = Vec::new();
    let mut pos = FIRST_RECORD;
    while pos + RECORD_HEADER_LEN as u64 <= end {
        let mut h = [0u8; RECORD_HEADER_LEN];
        file.read_exact_at(&mut h, pos).map_err(BlockdError::io("reading", &path))?;
        let Ok(header) = format::decode_record_header(&h) else { break };
        let data_offset = pos + RECORD_HEADER_LEN as u64;
        if data_offset + u64::from(header.len) > end {
            break;
        }
        out.push(Rec { hash: header.hash, data_offset, len: header.len });
        pos = data_offset + u64::from(header.len);
    }
    Ok(out)
}

/// Truncates an evicted segment's file to its header (idempotent) and drops cached handles.
fn truncate_segment(shared: &Shared, id: u32) -> Result<(), BlockdError> {
    let path = segment::segment_path(&shared.seg_dir, id);
    let file = segment::open(&path, id, true)?;
    let len = file.metadata().map_err(BlockdError::io("inspecting", &path))?.len();
    if len > FIRST_RECORD {
        file.set_len(FIRST_RECORD).map_err(BlockdError::io("truncating evicted", &path))?;
        file.sync_all().map_err(BlockdError::io("syncing evicted", &path))?;
    }
    shared.forget_reader(id);
    Ok(())
}
