//! Scrub: a background, rate-limited pass that re-verifies every local chunk copy and
//! repairs a corrupt or missing one from a good copy held by a peer or the S3 tier.
//!
//! Owns: [`ScrubOptions`], [`ScrubReport`], the pass ([`Scrubber::pass`]), its background
//! loop, its counters and `tessera_scrub_*` metrics, and the token bucket that bounds the
//! bytes it reads and rewrites per second.
//!
//! A pass pages through the local index (`hashes_after`). Each chunk's segment is looked at
//! by path, once per segment per pass: evicted to S3 (a header-only file) → its chunks are
//! skipped, S3 holds them; the file gone, shorter than its indexed end, or unopenable → the
//! segment is marked lost (which also drops the store's cached read handle: it may still
//! reach an unlinked inode and so hide the loss) and each of its chunks is *missing*;
//! otherwise the record is read through a handle opened on that path for this pass and its
//! header (magic, version, checksum, name, length) and BLAKE3 hash are checked: any
//! mismatch or read error makes the copy *corrupt*. For a corrupt or missing copy the pass
//! fetches a good one — first from the live peers metad lists (GET over QUIC with the
//! daemon's certificate, hash-verified, the chunk's replica set first), else from the S3
//! pack of the chunk's segment if one was uploaded — and writes it back with
//! [`Store::rewrite`] (a new record, fsynced, the index entry re-pointed). With no good copy
//! anywhere the chunk is *unrepairable* for this pass; it stays marked bad. A lost segment
//! that was sealed when the pass began and whose chunks were all rewritten is retired: an
//! empty header-only segment again, so the next start and the S3 tier find nothing amiss.
//!
//! Known-bad copies and HAS (the decision): a chunk whose copy is known corrupt or lost is
//! reported as not held by HAS, and a PUT of it rewrites it instead of being deduplicated
//! (`store.rs`). Gateways decide from HAS which replicas to send a chunk to, and repair
//! which peers to copy to; answering true for a copy that cannot be read would let a flush
//! be acknowledged with fewer than `rf` good copies. The index entry is kept (not dropped)
//! so scrub still knows what to fetch back. Reads of such a chunk fail (`Corrupt`, or
//! `SegmentMissing` → `Internal`), never return wrong bytes, and the gateway reads another
//! replica.
//!
//! Must never: delete a record or overwrite one with anything but its own original bytes
//! (a repair appends a new record; the writer may then heal the old one in place, which
//! leaves it intact but unreferenced garbage for compaction); write bytes that do not match their name (every
//! fetched copy goes through [`Chunk::verified`]); report a chunk of an evicted segment as
//! missing; run two passes at once; read or rewrite faster than `max_bytes_per_sec`; block
//! the data path (its own task, file reads on the blocking pool).

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cluster::Shutdown;
use cluster::metrics as names;
use proto::ChunkHash;
use tokio::time::Instant;

use crate::error::BlockdError;
use crate::format::{self, MAX_CHUNK_LEN, RECORD_HEADER_LEN};
use crate::heartbeat::Metad;
use crate::index::{Location, SegmentState};
use crate::repair::PeerClient;
use crate::segment;
use crate::store::{Chunk, Store};

/// Chunks read from the index per page of a pass.
const PAGE: usize = 1024;
/// Default time between passes.
pub const DEFAULT_SCRUB_INTERVAL: Duration = Duration::from_secs(24 * 60 * 60);
/// Default read budget of a pass.
pub const DEFAULT_SCRUB_BYTES_PER_SEC: u64 = 64 * 1024 * 1024;

/// How the background scrub runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrubOptions {
    /// Time between the end of one pass and the start of the next (the first starts one
    /// interval after the daemon); `None`: no background loop (passes can still be run
    /// with [`crate::Blockd::scrub_pass`]).
    pub interval: Option<Duration>,
    /// Most bytes a pass reads from local segments plus rewrites, per second (0: unlimited).
    pub max_bytes_per_sec: u64,
}

impl Default for ScrubOptions {
    fn default() -> Self {
        ScrubOptions { interval: Some(DEFAULT_SCRUB_INTERVAL), max_bytes_per_sec: DEFAULT_SCRUB_BYTES_PER_SEC }
    }
}

/// What one pass found and did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScrubReport {
    /// Local chunk copies checked (read and verified, or found missing); chunks of segments
    /// evicted to S3 are not counted.
    pub checked: u64,
    /// Content bytes read and verified.
    pub bytes_checked: u64,
    /// Copies whose record header or hash was wrong, or that could not be read.
    pub corrupt: u64,
    /// Copies whose segment file was gone or cut short.
    pub missing: u64,
    /// Corrupt or missing copies rewritten from a good copy.
    pub repaired: u64,
    /// Corrupt or missing copies with no good copy found (still bad).
    pub unrepairable: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ScrubError {
    #[error("local store: {0}")]
    Store(#[from] BlockdError),
}

/// Totals since the daemon started.
#[derive(Debug, Default)]
pub struct ScrubCounters {
    pub passes: AtomicU64,
    pub checked: AtomicU64,
    pub bytes_checked: AtomicU64,
    pub corrupt: AtomicU64,
    pub missing: AtomicU64,
    pub repaired: AtomicU64,
    pub unrepairable: AtomicU64,
}

/// Where scrub fetches good copies from: metad's list of live daemons, and a QUIC client.
pub(crate) struct Peers {
    pub metad: Metad,
    pub client: Arc<PeerClient>,
}

/// Runs scrub passes for one daemon.
pub struct Scrubber {
    id: u64,
    store: Arc<Store>,
    peers: Option<Peers>,
    max_bytes_per_sec: u64,
    clock: Clock,
    /// One pass at a time.
    running: tokio::sync::Mutex<()>,
    pub counters: ScrubCounters,
}

/// The time the rate limit is kept in: tokio's clock, or (tests) a virtual clock that only
/// the pacing waits advance, so a test measures the limit exactly and never waits.
enum Clock {
    Tokio,
    #[cfg(test)]
    Virtual(std::sync::Mutex<Instant>),
}

impl Clock {
    fn now(&self) -> Instant {
        match self {
            Clock::Tokio => Instant::now(),
            #[cfg(test)]
            Clock::Virtual(t) => *t.lock().unwrap_or_else(|e| e.into_inner()),
        }
    }

    async fn sleep(&self, d: Duration) {
        match self {
            Clock::Tokio => tokio::time::sleep(d).await,
            #[cfg(test)]
            Clock::Virtual(t) => *t.lock().unwrap_or_else(|e| e.into_inner()) += d,
        }
    }
}

/// A segment as this pass found it.
#[derive(Clone)]
enum Health {
    /// Readable through this handle (opened by path this pass).
    Present(Arc<File>),
    /// Its file is gone, short or unusable: every chunk in it is missing.
    Lost,
    /// Evicted to S3: not scrubbed here.
    Evicted,
}

/// The state of one chunk copy.
enum Verdict {
    Good {
        bytes: u64,
    },
    Corrupt(Location),
    Missing(Location),
    /// Evicted, or no longer indexed: nothing to check.
    Skipped,
}

/// The peers of this pass (listed once, on the first repair): id, address, judged live.
type PeerList = Option<Vec<(u64, SocketAddr, bool)>>;

impl Scrubber {
    pub(crate) fn new(id: u64, store: Arc<Store>, peers: Option<Peers>, opts: &ScrubOptions) -> Scrubber {
        Scrubber {
            id,
            store,
            peers,
            max_bytes_per_sec: opts.max_bytes_per_sec,
            clock: Clock::Tokio,
            running: tokio::sync::Mutex::new(()),
            counters: ScrubCounters::default(),
        }
    }

    /// One pass over every local chunk (see the module docs).
    pub async fn pass(&self) -> Result<ScrubReport, ScrubError> {
        let _one = self.running.lock().await;
        let mut report = ScrubReport::default();
        let mut bucket =
            (self.max_bytes_per_sec > 0).then(|| TokenBucket::new(self.max_bytes_per_sec, self.clock.now()));
        // Shared with the blocking check; only this task changes it (after each check ends).
        let mut segments: Arc<HashMap<u32, Health>> = Arc::new(HashMap::new());
        let mut states = Arc::new(self.blocking(|s| s.segment_states()).await?);
        let mut peers: PeerList = None;
        // Lost segments met this pass -> their chunks not repaired.
        let mut lost: HashMap<u32, u64> = HashMap::new();
        let sealed_at_start: Vec<u32> = states.iter().filter(|(_, s)| s.sealed).map(|(id, _)| *id).collect();
        let mut after: Option<ChunkHash> = None;
        loop {
            let cursor = after;
            let page = self.blocking(move |s| s.hashes_after(cursor.as_ref(), PAGE)).await?;
            let Some(last) = page.last() else { break };
            after = Some(*last);
            let hashes = page.clone();
            let located = self.blocking(move |s| s.shared().index.locate_many(&hashes)).await?;
            for (hash, loc) in page.into_iter().zip(located) {
                let Some(loc) = loc else { continue };
                if let Some(b) = bucket.as_mut()
                    && !self.store.is_evicted(loc.segment)
                    && !self.store.shared().is_lost(loc.segment)
                {
                    self.pace(b, format::record_len(loc.len as usize)).await;
                }
                if !states.contains_key(&loc.segment) {
                    // A segment created since the pass started.
                    states = Arc::new(self.blocking(|s| s.segment_states()).await?);
                }
                let (store, known, st) = (self.store.clone(), segments.clone(), states.clone());
                let (verdict, health) = tokio::task::spawn_blocking(move || check_chunk(&store, &hash, &known, &st))
                    .await
                    .map_err(BlockdError::Task)??;
                if let Some((id, h)) = health {
                    if matches!(h, Health::Lost) {
                        lost.insert(id, 0);
                    }
                    Arc::make_mut(&mut segments).insert(id, h);
                }
                let bad = match verdict {
                    Verdict::Skipped => continue,
                    Verdict::Good { bytes } => {
                        report.checked += 1;
                        report.bytes_checked += bytes;
                        metrics::counter!(names::SCRUB_CHECKED).increment(1);
                        continue;
                    }
                    Verdict::Corrupt(loc) => {
                        report.checked += 1;
                        report.corrupt += 1;
                        metrics::counter!(names::SCRUB_CHECKED).increment(1);
                        metrics::counter!(names::SCRUB_CORRUPT).increment(1);
                        self.store.shared().mark_bad(hash);
                        let (segment, offset) = (loc.segment, loc.data_offset);
                        tracing::error!(%hash, segment, offset, "scrub found a corrupt chunk copy");
                        loc
                    }
                    Verdict::Missing(loc) => {
                        report.checked += 1;
                        report.missing += 1;
                        metrics::counter!(names::SCRUB_CHECKED).increment(1);
                        metrics::counter!(names::SCRUB_MISSING).increment(1);
                        loc
                    }
                };
                if self.repair(hash, bad, &mut peers, bucket.as_mut()).await {
                    report.repaired += 1;
                    metrics::counter!(names::SCRUB_REPAIRED).increment(1);
                } else {
                    report.unrepairable += 1;
                    metrics::counter!(names::SCRUB_UNREPAIRABLE).increment(1);
                    if let Some(n) = lost.get_mut(&bad.segment) {
                        *n += 1;
                    }
                }
            }
        }
        // A lost segment that was sealed when the pass began and whose every chunk was
        // rewritten holds nothing any more (entries only leave a sealed segment, and the
        // pass met every entry that existed when it began): retire it.
        for (id, unrepaired) in lost {
            if unrepaired == 0
                && sealed_at_start.contains(&id)
                && let Err(e) = self.blocking(move |s| s.retire_lost_segment(id)).await
            {
                tracing::warn!(segment = id, error = %e, "could not retire a lost segment");
            }
        }
        let c = &self.counters;
        c.passes.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(names::SCRUB_PASSES).increment(1);
        metrics::gauge!(names::SCRUB_LAST_PASS_DAMAGED).set((report.corrupt + report.missing) as f64);
        c.checked.fetch_add(report.checked, Ordering::Relaxed);
        c.bytes_checked.fetch_add(report.bytes_checked, Ordering::Relaxed);
        c.corrupt.fetch_add(report.corrupt, Ordering::Relaxed);
        c.missing.fetch_add(report.missing, Ordering::Relaxed);
        c.repaired.fetch_add(report.repaired, Ordering::Relaxed);
        c.unrepairable.fetch_add(report.unrepairable, Ordering::Relaxed);
        Ok(report)
    }

    /// Waits until the bucket allows `bytes` more.
    async fn pace(&self, bucket: &mut TokenBucket, bytes: u64) {
        let wait = bucket.take(bytes, self.clock.now());
        if !wait.is_zero() {
            self.clock.sleep(wait).await;
        }
    }

    /// Runs `f` on the store on the blocking pool.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, BlockdError> + Send + 'static,
    ) -> Result<T, BlockdError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&store)).await.map_err(BlockdError::Task)?
    }

    /// Fetches a good copy of `hash` and rewrites it locally; whether that succeeded.
    async fn repair(
        &self,
        hash: ChunkHash,
        loc: Location,
        peers: &mut PeerList,
        bucket: Option<&mut TokenBucket>,
    ) -> bool {
        let Some(chunk) = self.fetch(hash, loc, peers).await else {
            tracing::error!(%hash, "scrub found no good copy of a damaged chunk (no peer holds it, no pack in S3)");
            return false;
        };
        if let Some(b) = bucket {
            self.pace(b, chunk.data().len() as u64).await;
        }
        match self.store.rewrite(chunk).await {
            Ok(()) => {
                tracing::info!(%hash, "scrub rewrote a damaged chunk from a good copy");
                true
            }
            Err(e) => {
                tracing::error!(%hash, error = %e, "scrub could not rewrite a chunk");
                false
            }
        }
    }

    /// A verified copy of `hash`: from a live peer (its replica set first), else from the
    /// S3 pack of its segment.
    async fn fetch(&self, hash: ChunkHash, loc: Location, peers: &mut PeerList) -> Option<Chunk> {
        if let Some(p) = &self.peers {
            if peers.is_none() {
                *peers = Some(self.live_peers(p).await);
            }
            let list = peers.as_deref().unwrap_or_default();
            // Live peers in rendezvous order, then those metad lists but does not judge
            // live (a copy is verified, so asking a daemon metad missed costs only time).
            let ids = |live: bool| -> Vec<u64> { list.iter().filter(|p| p.2 == live).map(|p| p.0).collect() };
            let (live, others) = (ids(true), ids(false));
            let mut order = cluster::placement::replicas(&hash, &live, live.len());
            order.extend(cluster::placement::replicas(&hash, &others, others.len()));
            for id in order {
                let Some((_, addr, _)) = list.iter().find(|(i, _, _)| *i == id) else { continue };
                match p.client.get(*addr, hash).await {
                    Ok(chunk) => return Some(chunk),
                    Err(e) => tracing::debug!(%hash, peer = %addr, error = %e, "no good copy from this peer"),
                }
            }
        }
        let store = self.store.clone();
        let remote = tokio::task::spawn_blocking(move || store.read_from_pack(&hash, loc)).await.ok().flatten()?;
        match remote.and_then(|bytes| Chunk::verified(hash, bytes)) {
            Ok(chunk) => Some(chunk),
            Err(e) => {
                tracing::warn!(%hash, error = %e, "no good copy in the S3 pack");
                None
            }
        }
    }

    /// The daemons other than this one, from metad, with whether metad judges them live
    /// (none if metad cannot answer).
    async fn live_peers(&self, p: &Peers) -> Vec<(u64, SocketAddr, bool)> {
        match p.metad.list_block_daemons().await {
            Ok(list) => list
                .daemons
                .iter()
                .filter(|d| d.id != self.id)
                .filter_map(|d| d.addr.parse().ok().map(|a| (d.id, a, d.live)))
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "scrub could not list the block daemons; repairing from S3 only this pass");
                Vec::new()
            }
        }
    }
}

/// Checks one chunk's copy. `known` holds the health of the segments this pass already
/// looked at; the health of the chunk's segment, if not among them, is found (and
/// returned, to be remembered). Blocking.
fn check_chunk(
    store: &Store,
    hash: &ChunkHash,
    known: &HashMap<u32, Health>,
    states: &BTreeMap<u32, SegmentState>,
) -> Result<(Verdict, Option<(u32, Health)>), BlockdError> {
    // Looked up again: a put may have rewritten it since the page was read, so its
    // segment's health is looked up by this location, never the page's.
    let Some(loc) = store.locate(hash)? else { return Ok((Verdict::Skipped, None)) };
    let (health, found) = match known.get(&loc.segment) {
        Some(h) => (h.clone(), None),
        None => {
            let h = segment_health(store, loc.segment, states.get(&loc.segment).copied());
            (h.clone(), Some((loc.segment, h)))
        }
    };
    let verdict = match health {
        Health::Evicted => Verdict::Skipped,
        Health::Lost => Verdict::Missing(loc),
        Health::Present(file) => match verify_record(&file, hash, loc) {
            true => Verdict::Good { bytes: u64::from(loc.len) },
            // Evicted (truncated) while we read?
            false if store.is_evicted(loc.segment) => Verdict::Skipped,
            false => Verdict::Corrupt(loc),
        },
    };
    Ok((verdict, found))
}

/// How segment `id` is, judged from its file by path. Blocking.
fn segment_health(store: &Store, id: u32, state: Option<SegmentState>) -> Health {
    if store.is_evicted(id) {
        return Health::Evicted;
    }
    let shared = store.shared();
    let path = segment::segment_path(&shared.seg_dir, id);
    let indexed_end = state.map_or(segment::FIRST_RECORD, |s| s.end);
    let usable = segment::open(&path, id, false).and_then(|f| {
        let len = f.metadata().map_err(BlockdError::io("inspecting", &path))?.len();
        Ok((f, len))
    });
    match usable {
        Ok((file, len)) if len >= indexed_end => Health::Present(Arc::new(file)),
        // Truncated by eviction between the check above and the open?
        _ if store.is_evicted(id) => Health::Evicted,
        Ok((_, len)) => {
            tracing::error!(segment = id, len, indexed_end, "segment file is shorter than its index");
            shared.mark_lost(id);
            Health::Lost
        }
        Err(e) => {
            tracing::error!(segment = id, error = %e, "segment file is gone or unusable");
            shared.mark_lost(id);
            Health::Lost
        }
    }
}

/// Whether the record at `loc` has a valid header naming `hash` with the indexed length,
/// and data that hashes to `hash`. Blocking.
fn verify_record(file: &File, hash: &ChunkHash, loc: Location) -> bool {
    let len = loc.len as usize;
    let Some(header_at) = loc.data_offset.checked_sub(RECORD_HEADER_LEN as u64) else { return false };
    if len > MAX_CHUNK_LEN {
        return false;
    }
    let mut buf = vec![0u8; RECORD_HEADER_LEN + len];
    if file.read_exact_at(&mut buf, header_at).is_err() {
        return false;
    }
    let (head, data) = buf.split_at(RECORD_HEADER_LEN);
    let Ok(head) = <&[u8; RECORD_HEADER_LEN]>::try_from(head) else { return false };
    match format::decode_record_header(head) {
        Ok(h) if h.hash == *hash && h.len == loc.len => blake3::hash(data).as_bytes() == hash.as_bytes(),
        _ => false,
    }
}

/// Runs a pass every `interval` until `shutdown`.
pub(crate) async fn run(scrubber: Arc<Scrubber>, interval: Duration, shutdown: Shutdown) {
    crate::periodic::every(interval, shutdown, || async {
        match scrubber.pass().await {
            Ok(r) => tracing::info!(
                checked = r.checked,
                bytes = r.bytes_checked,
                corrupt = r.corrupt,
                missing = r.missing,
                repaired = r.repaired,
                unrepairable = r.unrepairable,
                "scrub pass done"
            ),
            Err(e) => tracing::warn!(error = %e, "scrub pass failed"),
        }
    })
    .await;
}

/// A token bucket over bytes: `rate` per second, holding at most one second's worth.
///
/// Exact integer arithmetic: tokens are counted in byte-nanoseconds (a byte is 10^9 of
/// them, and `rate` of them accrue per nanosecond), so no rounding ever lets more through.
/// [`TokenBucket::take`] charges first and returns how long to wait before using the
/// bytes; a charge larger than the bucket is allowed and paid off by the wait. Over any
/// run, the bytes used by time `t` are at most `rate` (one second of burst) plus `rate`
/// per second since the bucket was made.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    rate: u128,
    capacity: i128,
    /// May be negative: a debt the caller is waiting off.
    tokens: i128,
    last: Instant,
}

const NANOS_PER_SEC: u128 = 1_000_000_000;

impl TokenBucket {
    /// A full bucket; `rate` must be positive.
    pub fn new(rate: u64, now: Instant) -> TokenBucket {
        let rate = u128::from(rate.max(1));
        let capacity = i128::try_from(rate * NANOS_PER_SEC).unwrap_or(i128::MAX);
        TokenBucket { rate, capacity, tokens: capacity, last: now }
    }

    /// Charges `bytes` at `now`; returns how long to wait before using them.
    pub fn take(&mut self, bytes: u64, now: Instant) -> Duration {
        if now > self.last {
            let elapsed = (now - self.last).as_nanos();
            let refill = i128::try_from(elapsed.saturating_mul(self.rate)).unwrap_or(i128::MAX);
            self.tokens = self.tokens.saturating_add(refill).min(self.capacity);
            self.last = now;
        }
        self.tokens -= i128::from(bytes) * NANOS_PER_SEC as i128;
        if self.tokens >= 0 {
            return Duration::ZERO;
        }
        let debt = self.tokens.unsigned_abs();
        let nanos = debt.div_ceil(self.rate);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StoreOptions;
    use bytes::Bytes;

    /// A pass over 32 records of 64 KiB with a budget of 256 KiB/s: the bucket starts with
    /// one second of budget and the rest is paid at the rate, in virtual time (advanced only
    /// by the pass's waits), so the measure is exact and the test never waits for real.
    #[tokio::test]
    async fn a_pass_reads_no_faster_than_its_budget() {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = StoreOptions { data_dir: dir.path().to_path_buf(), segment_bytes: 1 << 20, min_free_bytes: 0 };
        let store = Arc::new(Store::open(opts).expect("open"));
        const N: u64 = 32;
        const LEN: usize = 64 * 1024;
        for i in 0..N {
            let chunk = Chunk::new(Bytes::from(vec![i as u8; LEN])).expect("chunk");
            store.put(chunk).await.expect("put");
        }
        let pass = |rate| {
            let mut s =
                Scrubber::new(1, store.clone(), None, &ScrubOptions { interval: None, max_bytes_per_sec: rate });
            let t0 = Instant::now();
            s.clock = Clock::Virtual(std::sync::Mutex::new(t0));
            async move {
                let r = s.pass().await.expect("pass");
                (r, s.clock.now() - t0)
            }
        };
        let rate = 256 * 1024;
        let (r, elapsed) = pass(rate).await;
        assert_eq!((r.checked, r.bytes_checked, r.corrupt), (N, N * LEN as u64, 0));
        let charged = N * format::record_len(LEN);
        let min = Duration::from_nanos((charged - rate) * 1_000_000_000 / rate);
        assert!(elapsed >= min, "read {charged} bytes in {elapsed:?}, budget needs {min:?}");
        assert!(elapsed <= min + Duration::from_millis(1), "the budget is used, not wasted: {elapsed:?}");
        // Unlimited: no waiting at all.
        let (r, elapsed) = pass(0).await;
        assert_eq!(r.checked, N);
        assert_eq!(elapsed, Duration::ZERO);
        store.close();
    }

    /// A chunk rewritten into another segment after the pass noted its old segment's
    /// health is checked in its new segment, not read from the old file at the new offset
    /// (which made scrub call a good copy corrupt).
    #[tokio::test]
    async fn a_chunk_moved_to_another_segment_is_checked_where_it_now_is() {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = StoreOptions { data_dir: dir.path().to_path_buf(), segment_bytes: 1 << 20, min_free_bytes: 0 };
        let store = Arc::new(Store::open(opts).expect("open"));
        let chunks: Vec<Chunk> =
            (0..24u8).map(|i| Chunk::new(Bytes::from(vec![i; 64 * 1024])).expect("chunk")).collect();
        for c in &chunks {
            store.put(c.clone()).await.expect("put");
        }
        let first = *chunks[0].hash();
        let old = store.locate(&first).expect("locate").expect("stored");
        let states = store.segment_states().expect("states");
        let health = segment_health(&store, old.segment, states.get(&old.segment).copied());
        let known = HashMap::from([(old.segment, health)]);
        store.rewrite(chunks[0].clone()).await.expect("rewrite");
        let new = store.locate(&first).expect("locate").expect("stored");
        assert_ne!(new.segment, old.segment, "the rewrite went to the active segment");
        let states = store.segment_states().expect("states");
        let (verdict, found) = check_chunk(&store, &first, &known, &states).expect("check");
        assert!(matches!(verdict, Verdict::Good { .. }), "the moved copy is good");
        assert_eq!(found.map(|(id, _)| id), Some(new.segment), "the new segment's health is found and remembered");
        store.close();
    }

    /// Over a long run of charges of mixed sizes (some larger than the bucket), used at
    /// the time the bucket says, the bytes used never exceed one second of burst plus
    /// `rate` per elapsed second; and waits are no longer than needed.
    #[test]
    fn token_bucket_never_lets_more_than_the_budget_through() {
        let rate = 1000u64;
        let t0 = Instant::now();
        let mut b = TokenBucket::new(rate, t0);
        let mut now = t0;
        let mut used: u128 = 0;
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        for i in 0..5000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let bytes = x % 2500; // up to 2.5 s of budget in one charge
            let wait = b.take(bytes, now);
            now += wait;
            used += u128::from(bytes);
            let allowed = u128::from(rate) + u128::from(rate) * (now - t0).as_nanos() / NANOS_PER_SEC;
            assert!(used <= allowed, "charge {i}: used {used} > allowed {allowed}");
            // Some callers arrive late; a late caller must not build up more than the burst.
            if x.is_multiple_of(7) {
                now += Duration::from_millis(x % 3000);
            }
        }
        // The budget is actually used: after a full second the bucket lets a second's
        // worth through at once, and no more.
        let mut b = TokenBucket::new(rate, t0);
        assert_eq!(b.take(rate, t0), Duration::ZERO);
        assert_eq!(b.take(rate / 2, t0), Duration::from_millis(500));
        let later = t0 + Duration::from_secs(10);
        assert_eq!(b.take(rate, later), Duration::ZERO, "refilled to the brim");
        assert_eq!(b.take(1, later), Duration::from_millis(1), "and not beyond it");
    }
}
