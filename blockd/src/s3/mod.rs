//! The S3 tier of a block daemon: sealed segments uploaded as packs, a bounded local tier,
//! and read-through of evicted chunks.
//!
//! Owns: [`S3Options`], the background task that uploads sealed segments (bounded
//! concurrency, capped exponential back-off, durable bookkeeping in `state`) and evicts
//! uploaded segments oldest first while local segment files exceed `local_bound_bytes`,
//! the admission check that makes puts wait while the not-yet-uploaded data is over the
//! bound, and remote reads (ranged GET of a chunk from its pack, BLAKE3-verified).
//!
//! Eviction truncates a segment file to its header (the file stays, so recovery and the
//! segment listing are unchanged) and keeps the chunk index as it is: a pack holds the
//! segment's bytes at the same offsets, so an index entry (segment, offset, length) plus
//! the segment's pack key locates the chunk in S3.
//!
//! Back-pressure (not NoSpace) is the policy: while sealed local segments not yet in S3
//! reach the bound, a put waits for uploads to catch up, up to `backpressure_timeout`; only
//! then is it answered [`TierError::Backlogged`] (`Status::NoSpace`). Local usage stays
//! within the bound plus the active segment (plus puts admitted since the last check, which
//! runs after every put); the active segment is never counted against the bound, so a bound
//! below one segment cannot stop the puts that would seal it.
//!
//! Must never: evict a segment that is not recorded as uploaded, evict the active
//! (unsealed) segment, serve remote bytes that fail their hash, or wait on S3 without a
//! deadline on a read path.

pub mod client;
pub mod pack;
mod state;
#[cfg(any(test, feature = "testing"))]
pub mod test_server;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashSet};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use proto::ChunkHash;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::error::BlockdError;
use crate::index::Location;
use crate::segment::{self, FIRST_RECORD};
use crate::store::Shared;
use client::{PackBucket, S3Error};
use state::PackRecord;

/// Metric names of the tier (to move into `cluster::metrics` with the others).
pub const METRIC_UPLOADED_BYTES: &str = "tessera_s3_uploaded_bytes_total";
pub const METRIC_UPLOADED_PACKS: &str = "tessera_s3_uploaded_packs_total";
pub const METRIC_UPLOAD_FAILURES: &str = "tessera_s3_upload_failures_total";
pub const METRIC_BACKLOG_SEGMENTS: &str = "tessera_s3_upload_backlog_segments";
pub const METRIC_BACKLOG_BYTES: &str = "tessera_s3_upload_backlog_bytes";
pub const METRIC_LOCAL_BYTES: &str = "tessera_s3_local_segment_bytes";
pub const METRIC_EVICTED_SEGMENTS: &str = "tessera_s3_evicted_segments_total";
pub const METRIC_REMOTE_READS: &str = "tessera_s3_remote_reads_total";

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
    /// sharing a bucket never collide.
    pub prefix: String,
    /// Bytes of local segment files kept; uploaded segments beyond it are evicted.
    pub local_bound_bytes: u64,
    /// Pack uploads in flight at once.
    pub upload_concurrency: usize,
    /// Deadline of one remote chunk read.
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
}

impl S3Options {
    /// Options with the default tunables (2 GiB local bound, 4 uploads, 5 s read timeout).
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
        }
    }
}

/// Why the tier failed an operation.
#[derive(Debug, thiserror::Error)]
pub enum TierError {
    #[error(transparent)]
    S3(#[from] S3Error),
    #[error("local tier is full of data not yet in S3 ({pending} bytes pending, bound {bound}); waited {waited:?}")]
    Backlogged { pending: u64, bound: u64, waited: Duration },
    #[error("segment {segment} is evicted but has no recorded pack")]
    NoPack { segment: u32 },
    #[error("remote read of chunk {hash} did not finish within {after:?}")]
    ReadTimeout { hash: ChunkHash, after: Duration },
    #[error("the S3 tier needs a tokio runtime")]
    NoRuntime,
    #[error("the S3 tier is stopped")]
    Stopped,
}

/// A snapshot of the tier's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TierStats {
    pub uploaded_packs: u64,
    pub uploaded_bytes: u64,
    pub upload_failures: u64,
    /// Sealed segments not yet uploaded.
    pub backlog_segments: u64,
    /// Bytes of sealed local segment files not yet in S3 (the active segment excluded).
    pub pending_bytes: u64,
    /// Bytes of local segment files.
    pub local_bytes: u64,
    pub evicted_segments: u64,
    pub remote_reads: u64,
}

#[derive(Default)]
struct Counters {
    uploaded_packs: AtomicU64,
    uploaded_bytes: AtomicU64,
    upload_failures: AtomicU64,
    backlog_segments: AtomicU64,
    pending_bytes: AtomicU64,
    admitted_since_check: AtomicU64,
    local_bytes: AtomicU64,
    evicted_segments: AtomicU64,
    remote_reads: AtomicU64,
}

pub(crate) struct Tier {
    opts: S3Options,
    bucket: PackBucket,
    shared: Arc<Shared>,
    packs: RwLock<BTreeMap<u32, PackRecord>>,
    counters: Counters,
    /// Woken by puts and finished uploads: re-check segments.
    wake: Notify,
    /// Woken when pending bytes drop: admit waiting puts.
    room: Notify,
    cancel: CancellationToken,
    runtime: tokio::runtime::Handle,
    /// Disconnects once the background task and every upload have ended.
    done: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
}

impl Tier {
    /// Loads the bookkeeping, finishes an eviction a crash interrupted, and starts the
    /// background task on the current tokio runtime. Blocking.
    pub fn start(shared: Arc<Shared>, opts: S3Options) -> Result<Arc<Tier>, BlockdError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| TierError::NoRuntime)?;
        let packs = state::load(shared.index.db())?;
        for (id, rec) in &packs {
            if rec.evicted {
                truncate_segment(&shared, *id)?;
            }
        }
        let evicted = packs.values().filter(|r| r.evicted).count() as u64;
        let tier = Arc::new(Tier {
            bucket: PackBucket::new(&opts),
            opts,
            shared,
            packs: RwLock::new(packs),
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
        TierStats {
            uploaded_packs: c.uploaded_packs.load(Ordering::Relaxed),
            uploaded_bytes: c.uploaded_bytes.load(Ordering::Relaxed),
            upload_failures: c.upload_failures.load(Ordering::Relaxed),
            backlog_segments: c.backlog_segments.load(Ordering::Relaxed),
            pending_bytes: c.pending_bytes.load(Ordering::Relaxed),
            local_bytes: c.local_bytes.load(Ordering::Relaxed),
            evicted_segments: c.evicted_segments.load(Ordering::Relaxed),
            remote_reads: c.remote_reads.load(Ordering::Relaxed),
        }
    }

    /// The recorded pack of segment `id`, if uploaded.
    pub fn pack_of(&self, id: u32) -> Option<PackRecord> {
        self.packs.read().unwrap_or_else(|e| e.into_inner()).get(&id).cloned()
    }

    pub fn is_evicted(&self, id: u32) -> bool {
        self.pack_of(id).is_some_and(|r| r.evicted)
    }

    /// Waits until the not-yet-uploaded local data is under the bound (back-pressure), up
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

    /// Reads an evicted chunk from its pack, from a thread that may block (not an async
    /// task): the read runs on the runtime, and this waits at most the read timeout.
    pub fn read_blocking(&self, hash: &ChunkHash, loc: Location) -> Result<Bytes, BlockdError> {
        let rec = self.pack_of(loc.segment).ok_or(TierError::NoPack { segment: loc.segment })?;
        let bucket = self.bucket.clone();
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let hash = *hash;
        self.runtime.spawn(async move {
            let _ = tx.send(bucket.get_range(&rec.key, loc.data_offset, u64::from(loc.len)).await);
        });
        let after = self.opts.read_timeout + Duration::from_millis(500);
        let bytes = match rx.recv_timeout(after) {
            Ok(r) => r.map_err(TierError::from)?,
            Err(_) => return Err(TierError::ReadTimeout { hash, after }.into()),
        };
        self.counters.remote_reads.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(METRIC_REMOTE_READS).increment(1);
        if blake3::hash(&bytes).as_bytes() != hash.as_bytes() {
            tracing::error!(%hash, key = %rec_key(self, loc.segment), "chunk read from S3 failed its hash check");
            return Err(BlockdError::Corrupt { hash, segment: loc.segment, offset: loc.data_offset });
        }
        Ok(bytes)
    }

    /// Stops the background task and waits (bounded) until it and its uploads ended, so
    /// the index can be reopened. Blocking.
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
        let mut uploads = tokio::task::JoinSet::new();
        let mut in_flight: HashSet<u32> = HashSet::new();
        loop {
            if let Err(e) = self.check(&mut uploads, &mut in_flight, done).await {
                tracing::warn!(error = %e, "S3 tier check failed; retrying");
            }
            tokio::select! {
                () = self.cancel.cancelled() => break,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(self.opts.scan_interval) => {}
                Some(finished) = uploads.join_next(), if !uploads.is_empty() => {
                    if let Ok(id) = finished {
                        in_flight.remove(&id);
                    }
                }
            }
        }
        uploads.shutdown().await;
    }

    /// One pass: start uploads of sealed segments, evict over the bound, update gauges.
    async fn check(
        self: &Arc<Tier>,
        uploads: &mut tokio::task::JoinSet<u32>,
        in_flight: &mut HashSet<u32>,
        done: &std::sync::mpsc::Sender<()>,
    ) -> Result<(), BlockdError> {
        // Reap finished uploads without waiting.
        while let Some(r) = uploads.try_join_next() {
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
        let packs = self.packs.read().unwrap_or_else(|e| e.into_inner()).clone();
        let (mut local, mut pending, mut backlog) = (0u64, 0u64, 0u64);
        let mut evictable = Vec::new();
        for &(id, st, size) in &segs {
            local += size;
            match packs.get(&id) {
                Some(rec) if !rec.evicted && st.sealed => evictable.push((id, size)),
                Some(_) => {}
                None => {
                    // The active segment is not counted: it cannot be uploaded before it
                    // is sealed, and counting it could stop the puts that would seal it.
                    if st.sealed {
                        pending += size;
                        backlog += 1;
                        if !in_flight.contains(&id) && in_flight.len() < self.opts.upload_concurrency.max(1) {
                            in_flight.insert(id);
                            let held = Held { tier: self.clone(), done: done.clone() };
                            uploads.spawn(async move {
                                held.tier.upload(id, st.end, &held.done).await;
                                held.tier.wake.notify_one();
                                id
                            });
                        }
                    }
                }
            }
        }
        // Oldest first: segment ids grow with time.
        for (id, size) in evictable {
            if local <= self.opts.local_bound_bytes {
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
        metrics::gauge!(METRIC_LOCAL_BYTES).set(local as f64);
        metrics::gauge!(METRIC_BACKLOG_BYTES).set(pending as f64);
        metrics::gauge!(METRIC_BACKLOG_SEGMENTS).set(backlog as f64);
        if pending < self.opts.local_bound_bytes {
            self.room.notify_waiters();
        }
        Ok(())
    }

    /// Uploads segment `id` (written up to `end`) until it succeeds or the tier stops.
    async fn upload(self: &Arc<Tier>, id: u32, end: u64, done: &std::sync::mpsc::Sender<()>) {
        let mut backoff = self.opts.min_backoff;
        let mut built: Option<(String, Bytes)> = None;
        loop {
            let attempt = async {
                let (key, body) = match &built {
                    Some(b) => b.clone(),
                    None => {
                        let b = self.build_pack(id, end).await?;
                        built = Some(b.clone());
                        b
                    }
                };
                self.bucket.put(&key, body.clone()).await.map_err(TierError::from)?;
                let rec = PackRecord { key, len: body.len() as u64, evicted: false };
                let shared = self.shared.clone();
                let to_store = rec.clone();
                let held = (shared, done.clone());
                tokio::task::spawn_blocking(move || state::store(held.0.index.db(), id, &to_store))
                    .await
                    .map_err(BlockdError::Task)??;
                Ok::<PackRecord, BlockdError>(rec)
            };
            let result = tokio::select! {
                () = self.cancel.cancelled() => return,
                r = attempt => r,
            };
            match result {
                Ok(rec) => {
                    let len = rec.len;
                    tracing::debug!(segment = id, key = %rec.key, bytes = len, "uploaded pack");
                    self.packs.write().unwrap_or_else(|e| e.into_inner()).insert(id, rec);
                    self.counters.uploaded_packs.fetch_add(1, Ordering::Relaxed);
                    self.counters.uploaded_bytes.fetch_add(len, Ordering::Relaxed);
                    metrics::counter!(METRIC_UPLOADED_PACKS).increment(1);
                    metrics::counter!(METRIC_UPLOADED_BYTES).increment(len);
                    return;
                }
                Err(e) => {
                    self.counters.upload_failures.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!(METRIC_UPLOAD_FAILURES).increment(1);
                    tracing::warn!(segment = id, error = %e, retry_in = ?backoff, "pack upload failed");
                    tokio::select! {
                        () = self.cancel.cancelled() => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(self.opts.max_backoff);
                }
            }
        }
    }

    /// Reads the written part of a sealed segment and turns it into a pack.
    async fn build_pack(&self, id: u32, end: u64) -> Result<(String, Bytes), BlockdError> {
        let path = segment::segment_path(&self.shared.seg_dir, id);
        let prefix = self.opts.prefix.clone();
        tokio::task::spawn_blocking(move || {
            let file = segment::open(&path, id, false)?;
            let len = usize::try_from(end).map_err(|_| BlockdError::SegmentHeader {
                path: path.clone(),
                what: "indexed end too large to upload",
            })?;
            let mut buf = vec![0u8; len];
            file.read_exact_at(&mut buf, 0).map_err(BlockdError::io("reading for upload", &path))?;
            let (pack, _, damaged) = pack::build(id, buf);
            if damaged > 0 {
                tracing::error!(segment = id, damaged, "records failed their hash check; left out of the pack footer");
            }
            let key = pack::key(&prefix, id, &pack);
            Ok((key, Bytes::from(pack)))
        })
        .await
        .map_err(BlockdError::Task)?
    }

    /// Marks segment `id` evicted (durably), then truncates its file to the header.
    fn evict(&self, id: u32) -> Result<(), BlockdError> {
        let Some(mut rec) = self.pack_of(id) else { return Err(TierError::NoPack { segment: id }.into()) };
        rec.evicted = true;
        state::store(self.shared.index.db(), id, &rec)?;
        self.packs.write().unwrap_or_else(|e| e.into_inner()).insert(id, rec);
        truncate_segment(&self.shared, id)?;
        self.counters.evicted_segments.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(METRIC_EVICTED_SEGMENTS).increment(1);
        tracing::debug!(segment = id, "evicted segment (kept in S3)");
        Ok(())
    }
}

/// Keeps the tier alive for a task, and signals `stop` once it is dropped (fields drop in
/// declaration order: the tier first).
struct Held {
    tier: Arc<Tier>,
    done: std::sync::mpsc::Sender<()>,
}

fn rec_key(tier: &Tier, id: u32) -> String {
    tier.pack_of(id).map(|r| r.key).unwrap_or_default()
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
