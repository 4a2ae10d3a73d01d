//! The segment writer: one thread that appends puts and group-commits them.
//!
//! Owns: the active segment's tail, segment roll-over (seal + create the next), the
//! free-space check, and the batch protocol: take every queued put (up to a cap), append
//! the new ones, fsync each segment written (one `sync_data` per segment per batch), commit
//! their index entries in one fsynced redb transaction, then answer them all. Puts that
//! arrive meanwhile queue up and form the next batch, so N concurrent puts cost far fewer
//! than N fsyncs.
//!
//! A rewrite (scrub's repair, or a put of a chunk whose stored copy is known corrupt or
//! lost) is appended like a new chunk and re-points the hash's index entry in the same
//! commit; after that commit, and before the answers, the old record is healed in place
//! with its original bytes if its file is still whole (`Writer::heal`), so the segment
//! verifies clean again. The active segment is abandoned (sealed; the next record opens a
//! new segment) once it is marked lost, so no put is acknowledged into a deleted file.
//!
//! Must never: answer a put before both fsyncs; write a chunk twice (a hash already indexed
//! with a good copy, or already appended in the same batch, is deduplicated); keep writing
//! after a failed fsync or index commit (the page cache state is then unknown, so the
//! writer refuses all later puts until restart, whose recovery re-reads the segments).
//!
//! One thread keeps this simple and lock-free; its cost is that appends of the next batch
//! wait for the current fsync. Sequential throughput is bounded by the disk's fsync rate
//! times the batch size, which is the design's intent.

use std::collections::{BTreeMap, HashSet};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use cluster::metrics as names;
use proto::ChunkHash;
use tokio::sync::{mpsc, oneshot};

use crate::error::BlockdError;
use crate::format;
use crate::index::{Location, SegmentState};
use crate::recover::Active;
use crate::segment::{self, FIRST_RECORD};
use crate::store::{Chunk, PutOutcome, Shared, StoreOptions};

/// Most puts in one batch.
const MAX_BATCH: usize = 512;
/// Most content bytes in one batch (bounds the work one fsync waits for).
const MAX_BATCH_BYTES: usize = 128 * 1024 * 1024;

pub(crate) struct PutRequest {
    pub chunk: Chunk,
    pub reply: oneshot::Sender<Result<PutOutcome, BlockdError>>,
    /// Append even if the hash is indexed, and re-point its entry (`Store::rewrite`).
    pub rewrite: bool,
}

/// The fate of one put in a batch, decided before the fsync.
enum Fate {
    /// Already indexed before this batch: answered now.
    Done(Result<PutOutcome, BlockdError>),
    /// Appended (`Stored`) or deduplicated against an append of this batch: answered after
    /// the batch is durable.
    AfterCommit(PutOutcome),
}

pub(crate) struct Writer {
    shared: Arc<Shared>,
    rx: mpsc::Receiver<PutRequest>,
    segment_bytes: u64,
    min_free_bytes: u64,
    active: Option<Active>,
    next_id: u32,
    /// Set after a failed fsync or index commit; every later put is refused.
    failed: Option<String>,
}

impl Writer {
    pub fn new(
        shared: Arc<Shared>,
        rx: mpsc::Receiver<PutRequest>,
        opts: &StoreOptions,
        active: Option<Active>,
        next_id: u32,
    ) -> Writer {
        Writer {
            shared,
            rx,
            segment_bytes: opts.segment_bytes,
            min_free_bytes: opts.min_free_bytes,
            active,
            next_id,
            failed: None,
        }
    }

    /// Runs until every sender is gone and the queue is drained.
    pub fn run(mut self) {
        while let Some(first) = self.rx.blocking_recv() {
            let shared = self.shared.clone();
            let _gate = shared.hooks.gate.lock().unwrap_or_else(|e| e.into_inner());
            let mut bytes = first.chunk.data().len();
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
                match self.rx.try_recv() {
                    Ok(req) => {
                        bytes += req.chunk.data().len();
                        batch.push(req);
                    }
                    Err(_) => break,
                }
            }
            self.process(batch);
        }
    }

    fn process(&mut self, batch: Vec<PutRequest>) {
        if let Some(cause) = &self.failed {
            for req in batch {
                let _ = req.reply.send(Err(BlockdError::WriterFailed { cause: cause.clone() }));
            }
            return;
        }
        let mut fates = Vec::with_capacity(batch.len());
        let mut appended: HashSet<ChunkHash> = HashSet::new();
        let mut entries = Vec::new();
        let mut repoint = Vec::new();
        // (request index, old location) of re-pointed chunks whose old record to heal.
        let mut heal = Vec::new();
        let mut seg_updates: BTreeMap<u32, SegmentState> = BTreeMap::new();
        let mut to_sync: BTreeMap<u32, (Arc<std::fs::File>, PathBuf)> = BTreeMap::new();
        let mut space_checked: Option<Result<(), BlockdError>> = None;
        for (i, req) in batch.iter().enumerate() {
            let hash = *req.chunk.hash();
            let fate = if appended.contains(&hash) {
                Fate::AfterCommit(PutOutcome::Deduplicated)
            } else {
                match self.shared.index.lookup(&hash) {
                    Err(e) => Fate::Done(Err(e)),
                    Ok(Some(loc)) if !req.rewrite && !self.shared.known_bad(&hash, loc) => {
                        Fate::Done(Ok(PutOutcome::Deduplicated))
                    }
                    Ok(existing) => {
                        let space = space_checked.get_or_insert_with(|| self.check_space());
                        match space {
                            Err(e) => Fate::Done(Err(clone_space_error(e))),
                            Ok(()) => match self.append(&req.chunk, &mut seg_updates, &mut to_sync) {
                                Ok(loc) => {
                                    appended.insert(hash);
                                    if let Some(old) = existing {
                                        repoint.push((hash, loc));
                                        heal.push((i, old));
                                    } else {
                                        entries.push((hash, loc));
                                    }
                                    Fate::AfterCommit(PutOutcome::Stored)
                                }
                                Err(e) => Fate::Done(Err(e)),
                            },
                        }
                    }
                }
            };
            fates.push(fate);
        }

        let durable = if entries.is_empty() && repoint.is_empty() && seg_updates.is_empty() {
            Ok(())
        } else {
            self.make_durable(&entries, &repoint, &seg_updates, &to_sync)
        };
        if durable.is_ok() && !repoint.is_empty() {
            self.shared.clear_bad(repoint.iter().map(|(h, _)| *h));
            for (i, old) in heal {
                self.heal(&batch[i].chunk, old);
            }
        }
        let answers: Vec<Result<PutOutcome, BlockdError>> = fates
            .into_iter()
            .map(|fate| match fate {
                Fate::Done(r) => r,
                Fate::AfterCommit(outcome) => match &durable {
                    Ok(()) => Ok(outcome),
                    Err(cause) => Err(BlockdError::WriterFailed { cause: cause.clone() }),
                },
            })
            .collect();
        // Counters first, so a caller that reads them after its answer sees its own put.
        let deduplicated = answers.iter().filter(|a| matches!(a, Ok(PutOutcome::Deduplicated))).count() as u64;
        if deduplicated > 0 {
            self.shared.counters.deduplicated.fetch_add(deduplicated, Ordering::Relaxed);
            metrics::counter!(names::CHUNK_PUTS_DEDUPLICATED).increment(deduplicated);
        }
        for (req, answer) in batch.into_iter().zip(answers) {
            // The caller may have gone away (connection closed); the put is durable anyway.
            let _ = req.reply.send(answer);
        }
    }

    /// Fsyncs every segment written in this batch, then commits the index. On failure the
    /// writer stops accepting puts.
    fn make_durable(
        &mut self,
        entries: &[(ChunkHash, Location)],
        repoint: &[(ChunkHash, Location)],
        seg_updates: &BTreeMap<u32, SegmentState>,
        to_sync: &BTreeMap<u32, (Arc<std::fs::File>, PathBuf)>,
    ) -> Result<(), String> {
        let result = (|| {
            for (file, path) in to_sync.values() {
                file.sync_data().map_err(BlockdError::io("syncing", path))?;
                self.shared.counters.fsyncs.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(names::SEGMENT_FSYNCS).increment(1);
            }
            if self.shared.hooks.skip_index_commit.load(Ordering::Relaxed) {
                return Err(BlockdError::WriterFailed { cause: "test hook: index commit skipped".into() });
            }
            let updates: Vec<(u32, SegmentState)> = seg_updates.iter().map(|(id, s)| (*id, *s)).collect();
            self.shared.index.commit(entries, repoint, &updates)
        })();
        match result {
            Ok(totals) => {
                self.shared.counters.set_totals(totals);
                Ok(())
            }
            Err(e) => {
                let cause = e.to_string();
                tracing::error!(error = %cause, "segment fsync or index commit failed; refusing further puts until restart");
                self.failed = Some(cause.clone());
                self.shared.failure.send_replace(Some(cause.clone()));
                Err(cause)
            }
        }
    }

    /// Writes the original bytes of a re-pointed chunk's old record back in place (its
    /// header is a function of name and length, its data are the verified bytes), so the
    /// segment file verifies clean and the records after a damaged header are scannable
    /// again. Only the exact record the index named is touched, and only if its header is
    /// damaged or names this chunk; never in a lost segment (gone or cut short) or one
    /// evicted to S3. Best effort: the index already points at the new copy, so a failure
    /// only leaves unreferenced garbage. Known race: should the S3 tier evict the segment
    /// between the checks and the write, the write extends the header-only file again; the
    /// tier reads that segment from S3 regardless, and the next start truncates it back.
    fn heal(&self, chunk: &Chunk, old: Location) {
        if self.shared.is_lost(old.segment) || self.shared.is_evicted(old.segment) {
            return;
        }
        let path = segment::segment_path(&self.shared.seg_dir, old.segment);
        let healed = (|| -> Result<bool, BlockdError> {
            let Some(at) = old.data_offset.checked_sub(format::RECORD_HEADER_LEN as u64) else { return Ok(false) };
            let file = segment::open(&path, old.segment, true)?;
            let len = file.metadata().map_err(BlockdError::io("inspecting", &path))?.len();
            if len < old.data_offset + u64::from(old.len) || old.len as usize != chunk.data().len() {
                return Ok(false);
            }
            let mut h = [0u8; format::RECORD_HEADER_LEN];
            file.read_exact_at(&mut h, at).map_err(BlockdError::io("reading", &path))?;
            match format::decode_record_header(&h) {
                Ok(found) if found.hash != *chunk.hash() || found.len != old.len => return Ok(false),
                Err(format::RecordHeaderError::Version(_)) => return Ok(false),
                _ => {}
            }
            if self.shared.is_evicted(old.segment) {
                return Ok(false);
            }
            let header = format::encode_record_header(chunk.hash(), old.len);
            segment::write_record(&file, &path, at, &header, chunk.data())?;
            file.sync_data().map_err(BlockdError::io("syncing", &path))?;
            Ok(true)
        })();
        match healed {
            Ok(true) => {
                let (segment, offset) = (old.segment, old.data_offset);
                tracing::info!(segment, offset, hash = %chunk.hash(), "healed a damaged record in place")
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(segment = old.segment, error = %e, "could not heal a damaged record in place"),
        }
    }

    fn check_space(&self) -> Result<(), BlockdError> {
        let dir = &self.shared.data_dir;
        let st = rustix::fs::statvfs(dir).map_err(|e| BlockdError::io("statvfs", dir)(e.into()))?;
        let free = st.f_bavail.saturating_mul(st.f_frsize);
        if free < self.min_free_bytes {
            return Err(BlockdError::NoSpace { free, min: self.min_free_bytes });
        }
        Ok(())
    }

    /// Appends one record, rolling over to a new segment if it would not fit.
    fn append(
        &mut self,
        chunk: &Chunk,
        seg_updates: &mut BTreeMap<u32, SegmentState>,
        to_sync: &mut BTreeMap<u32, (Arc<std::fs::File>, PathBuf)>,
    ) -> Result<Location, BlockdError> {
        let data = chunk.data();
        let need = format::record_len(data.len());
        let active = self.room_for(need, seg_updates)?;
        let header = format::encode_record_header(chunk.hash(), data.len() as u32);
        segment::write_record(&active.file, &active.path, active.end, &header, data)?;
        let loc = Location {
            segment: active.id,
            data_offset: active.end + format::RECORD_HEADER_LEN as u64,
            len: data.len() as u32,
        };
        active.end += need;
        seg_updates.insert(active.id, SegmentState { end: active.end, sealed: false });
        to_sync.entry(active.id).or_insert_with(|| (active.file.clone(), active.path.clone()));
        Ok(loc)
    }

    /// The active segment, sealing it and creating the next one if `need` bytes do not fit.
    /// A record larger than a whole segment goes alone into a segment sized for it.
    fn room_for(
        &mut self,
        need: u64,
        seg_updates: &mut BTreeMap<u32, SegmentState>,
    ) -> Result<&mut Active, BlockdError> {
        let fits = self
            .active
            .as_ref()
            .is_some_and(|a| (a.end + need <= a.capacity || a.end == FIRST_RECORD) && !self.shared.is_lost(a.id));
        if !fits {
            if let Some(old) = self.active.take() {
                // Its records (if any in this batch) are already in `to_sync`, so they are
                // fsynced before the commit that records the seal.
                seg_updates.insert(old.id, SegmentState { end: old.end, sealed: true });
                tracing::debug!(segment = old.id, end = old.end, "sealed segment");
            }
            let id = self.next_id;
            let path = segment::segment_path(&self.shared.seg_dir, id);
            let size = self.segment_bytes.max(FIRST_RECORD + need);
            let file = segment::create(&self.shared.seg_dir, id, size)?;
            self.next_id = id
                .checked_add(1)
                .ok_or(BlockdError::SegmentHeader { path: path.clone(), what: "segment ids exhausted" })?;
            seg_updates.insert(id, SegmentState { end: FIRST_RECORD, sealed: false });
            self.active = Some(Active { id, path, file: Arc::new(file), end: FIRST_RECORD, capacity: size });
        }
        self.active.as_mut().ok_or(BlockdError::Closed)
    }
}

fn clone_space_error(e: &BlockdError) -> BlockdError {
    match e {
        BlockdError::NoSpace { free, min } => BlockdError::NoSpace { free: *free, min: *min },
        other => BlockdError::WriterFailed { cause: other.to_string() },
    }
}
