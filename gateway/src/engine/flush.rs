//! Flushing one file: its dirty ranges become stored chunks and committed extents.
//!
//! For each contiguous dirty run `[lo, hi)` (cut into spans of at most `MAX_SPAN_BYTES`,
//! flushed in ascending order): the span is widened to the start of the existing extent's
//! chunk that holds byte `lo - 1` and to the end of the one that holds byte `hi` (clamped
//! to the file size); its bytes are the existing content overlaid with the dirty data
//! (holes are zeros); it is cut with FastCDC and named with BLAKE3 on a blocking thread;
//! chunks not yet on every replica of their set (the share's replication factor, `shares`)
//! are PUT (bounded concurrency; `ChunkApi::put_replicated`); and the span's extents are
//! committed to metad in one CommitExtents over the widened range.
//!
//! Why widening: FastCDC cut points depend only on the bytes from a chunk's start, so
//! re-chunking from the chunk that held `lo - 1` makes a file written sequentially (each
//! write flushed alone) end with exactly the chunks of chunking it whole — identical
//! content deduplicates completely (see the property test in `tests`).
//!
//! Credentials: the CommitExtents acts as the file's last writer (`FileInner::writer`;
//! every buffered write was checked when it arrived). The GetExtents calls that widen the
//! span use `FLUSH_READ_CRED` (root): they are the gateway's own reads, their bytes only
//! go back into the same file, and a writer allowed to write but not to read (mode 0200,
//! not the owner) must still be able to flush.
//!
//! Failure policy: the data the failed flush held is dropped from the buffer; if UNSTABLE
//! data had been acknowledged the write verifier changes first, so clients resend it (as
//! with Linux nfsd), and a FILE_SYNC write waiting on the flush gets the error and is
//! retried by its client. Not keeping it matters with several gateways: a client told to
//! resend may write the same range again through another gateway, and a copy kept here
//! and flushed later would overwrite that newer data (the chaos harness found this:
//! docs/reliability.md). If the file is gone (`Stale`/`NotFound`) its buffer is dropped
//! and the verifier kept. Write fencing: each CommitExtents carries the write lease the
//! data was buffered under; if another gateway has taken it since (`Fenced`), all of the
//! file's buffered data is dropped and the lease forgotten (the next WRITE takes it
//! anew). Data dropped uncommitted is remembered by the buffer (`DirtyBuffer::was_dropped`),
//! so a FILE_SYNC write whose data went is not acknowledged. Must never drop acknowledged
//! UNSTABLE data without changing the verifier, and never run two flushes of one file at
//! once (callers hold the file's flush lock).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use proto::{ChunkHash, FileHandle, FsError, pb};

use super::buffer::{Snapshot, overlay, runs};
use super::chunker::{ChunkRef, chunk_and_hash};
use super::files::FileState;
use super::read::{CacheFill, check_extent};
use super::{ChunkApi, Engine, MetaApi, lock};

/// Who a flush commits as: the file's last writer, under the write lease its data was
/// buffered under (`None`: an unfenced commit, which ends any lease).
struct Writer {
    cred: pb::Cred,
    lease: Option<pb::WriteLease>,
}

/// The identity of a flush's own widening reads (see the module comment).
pub const FLUSH_READ_CRED: pb::Cred = pb::Cred { uid: 0, gid: 0, gids: Vec::new() };

/// Largest span chunked and committed at once (bounds the flush's memory).
const MAX_SPAN_BYTES: u64 = 64 * 1024 * 1024;
/// Chunk PUTs in flight per span; the block daemon group-commits concurrent puts.
const PUT_CONCURRENCY: usize = 16;
const FIRST_RETRY: Duration = Duration::from_millis(100);
const MAX_RETRY: Duration = Duration::from_secs(10);

/// Delay before the background flusher retries after `failures` consecutive failures.
fn retry_delay(failures: u32) -> Duration {
    FIRST_RETRY.saturating_mul(1u32 << failures.min(16)).min(MAX_RETRY)
}

impl<M: MetaApi, C: ChunkApi> Engine<M, C> {
    /// Flushes `file`, waiting for any flush of it already running.
    pub(super) async fn flush_file(&self, node: FileHandle, file: &FileState) -> Result<(), FsError> {
        let _guard = file.flush_lock.lock().await;
        self.flush_locked(node, file).await
    }

    /// Flushes `file`; the caller holds its flush lock.
    pub(super) async fn flush_locked(&self, node: FileHandle, file: &FileState) -> Result<(), FsError> {
        let (snap, writer, lease) = {
            let inner = lock(&file.inner);
            (inner.buf.snapshot(), inner.writer.clone(), inner.lease.map(|l| l.epoch))
        };
        if snap.pieces.is_empty() {
            return Ok(());
        }
        let cred = writer.ok_or_else(|| FsError::Internal("buffered data without a writer".into()))?;
        let writer = Writer { cred, lease: lease.map(|epoch| pb::WriteLease { instance: self.instance, epoch }) };
        match self.commit_snapshot(&writer, node, file, &snap).await {
            Ok(attr) => {
                let excess = {
                    let mut inner = lock(&file.inner);
                    inner.buf.remove_upto(snap.upto_seq);
                    if let Some(a) = attr {
                        inner.attr = Some((a, Instant::now()));
                    }
                    inner.retry_at = None;
                    inner.failures = 0;
                    let now = Instant::now();
                    if let Some(l) = inner.lease.as_mut().filter(|l| Some(l.epoch) == lease) {
                        l.confirmed = now;
                    }
                    if inner.buf.is_empty() {
                        inner.unstable_acked = false;
                    }
                    inner.excess_permits()
                };
                self.budget.release(excess);
                metrics::counter!(cluster::metrics::GATEWAY_FLUSHES).increment(1);
                Ok(())
            }
            Err(FsError::Fenced) => {
                // Another gateway took the file's lease: everything buffered here under it
                // (this flush's data and any that arrived meanwhile) may be older than what
                // was written there, so none of it may be committed. If a write has taken
                // the lease again meanwhile, it dropped that data already and what is
                // buffered now is under the new lease.
                let excess = {
                    let mut inner = lock(&file.inner);
                    if inner.lease.map(|l| l.epoch) == lease {
                        inner.drop_for_lost_lease(&self.verifier)
                    } else {
                        inner.buf.discard_upto(snap.upto_seq);
                        inner.excess_permits()
                    }
                };
                self.budget.release(excess);
                metrics::counter!(cluster::metrics::GATEWAY_FENCED).increment(1);
                tracing::warn!(?node, "another gateway took the file's write lease; dropped its buffered writes (clients resend)");
                Err(FsError::Fenced)
            }
            Err(e @ (FsError::Stale | FsError::NotFound)) => {
                let excess = {
                    let mut inner = lock(&file.inner);
                    inner.buf.clear();
                    inner.unstable_acked = false;
                    inner.excess_permits()
                };
                self.budget.release(excess);
                tracing::warn!(?node, error = %e, "file is gone; dropped its buffered writes");
                Err(e)
            }
            Err(e) => {
                let rotate = std::mem::take(&mut lock(&file.inner).unstable_acked);
                // The verifier changes before the data goes: a COMMIT answered from now on
                // tells its client to resend.
                if rotate {
                    self.verifier.rotate();
                }
                let (excess, failures) = {
                    let mut inner = lock(&file.inner);
                    inner.buf.discard_upto(snap.upto_seq);
                    inner.failures = inner.failures.saturating_add(1);
                    inner.retry_at = Some(Instant::now() + retry_delay(inner.failures));
                    // Writes that arrived during the flush stay (acknowledged with the old
                    // verifier: their COMMIT will now differ, so they are resent too).
                    inner.unstable_acked = !inner.buf.is_empty();
                    (inner.excess_permits(), inner.failures)
                };
                self.budget.release(excess);
                tracing::error!(?node, error = %e, failures, verifier_changed = rotate, "flush failed; its data dropped (clients resend)");
                Err(e)
            }
        }
    }

    /// Commits every run of `snap`; returns the attributes after the last commit.
    async fn commit_snapshot(
        &self,
        writer: &Writer,
        node: FileHandle,
        file: &FileState,
        snap: &Snapshot,
    ) -> Result<Option<pb::Attr>, FsError> {
        let mut attr = None;
        for run in runs(&snap.pieces) {
            let mut lo = run.lo;
            while lo < run.hi {
                let hi = run.hi.min(lo.saturating_add(MAX_SPAN_BYTES));
                attr = Some(self.flush_span(writer, node, file, lo, hi, &snap.pieces).await?);
                lo = hi;
            }
        }
        Ok(attr)
    }

    /// Widens, chunks, stores and commits the dirty span `[lo, hi)`.
    async fn flush_span(
        &self,
        writer: &Writer,
        node: FileHandle,
        file: &FileState,
        lo: u64,
        hi: u64,
        pieces: &[(u64, Bytes)],
    ) -> Result<pb::Attr, FsError> {
        let probe_lo = lo.saturating_sub(1);
        let probe = self
            .meta
            .get_extents(pb::GetExtentsRequest {
                node: Some(node.into()),
                offset: probe_lo,
                length: hi + 1 - probe_lo,
                cred: Some(FLUSH_READ_CRED),
            })
            .await?;
        let size = probe.attr.as_ref().map(|a| a.size).ok_or_else(|| no_attr("GetExtents"))?;
        let (span_lo, span_hi) = widen(lo, hi, size, &probe.extents)?;
        let span_len = usize::try_from(span_hi - span_lo).map_err(|_| FsError::TooBig)?;
        let mut buf = vec![0u8; span_len];
        if span_lo < lo || span_hi > hi {
            let existing = self
                .meta
                .get_extents(pb::GetExtentsRequest {
                    node: Some(node.into()),
                    offset: span_lo,
                    length: span_hi - span_lo,
                    cred: Some(FLUSH_READ_CRED),
                })
                .await?;
            let (left, rest) = buf.split_at_mut((lo - span_lo) as usize);
            let right = &mut rest[(hi - lo) as usize..];
            let tail = lock(&file.inner).tail.clone();
            self.fill_from_extents(&existing.extents, span_lo, left, CacheFill::No, tail.as_ref()).await?;
            self.fill_from_extents(&existing.extents, hi, right, CacheFill::No, tail.as_ref()).await?;
        }
        overlay(pieces, span_lo, &mut buf);

        let params = self.chunker;
        let (buf, chunks) = tokio::task::spawn_blocking(move || {
            let chunks = chunk_and_hash(&buf, params);
            (buf, chunks)
        })
        .await
        .map_err(|e| FsError::Internal(format!("chunking task failed: {e}")))?;
        let data = Bytes::from(buf);
        let rf = self.share_rf(node.share_id).await?;
        self.store_chunks(&data, &chunks, rf).await?;

        let extents = chunks
            .iter()
            .map(|c| pb::Extent {
                offset: span_lo + c.offset as u64,
                length: c.len as u64,
                hash: c.hash.as_bytes().to_vec(),
                chunk_offset: 0,
                chunk_length: c.len as u64,
            })
            .collect();
        let reply = self
            .meta
            .commit_extents(pb::CommitExtentsRequest {
                node: Some(node.into()),
                range_start: span_lo,
                range_end: span_hi,
                extents,
                cred: Some(writer.cred.clone()),
                lease: writer.lease,
                request_id: None,
            })
            .await?;
        if let Some(last) = chunks.last() {
            // A copy: a slice would pin the whole span's buffer.
            let bytes = Bytes::copy_from_slice(&data[last.offset..last.offset + last.len]);
            lock(&file.inner).tail = Some((last.hash, bytes));
        }
        reply.after.ok_or_else(|| no_attr("CommitExtents"))
    }

    /// PUTs the chunks of `data` that are not yet on all `rf` replicas (0 = the cluster
    /// default) of their replica sets.
    async fn store_chunks(&self, data: &Bytes, chunks: &[ChunkRef], rf: u32) -> Result<(), FsError> {
        // Owned values only past this point: iterator adaptors over borrowed tuples make
        // the future's Send proof fail (higher-ranked lifetimes in closures).
        let mut seen = HashSet::new();
        let mut unique: Vec<(ChunkHash, usize, usize)> = Vec::new();
        for c in chunks {
            if seen.insert(c.hash) {
                unique.push((c.hash, c.offset, c.len));
            }
        }
        let hashes: Vec<ChunkHash> = unique.iter().map(|u| u.0).collect();
        let present = self.chunks.has_replicated(&hashes, rf).await?;
        if present.len() != hashes.len() {
            return Err(FsError::Io(format!("HAS answered {} flags for {} chunks", present.len(), hashes.len())));
        }
        let mut missing: Vec<(ChunkHash, Bytes)> = Vec::new();
        for ((hash, offset, len), have) in unique.into_iter().zip(present) {
            if !have {
                missing.push((hash, data.slice(offset..offset + len)));
            }
        }
        futures::stream::iter(missing)
            .map(|(hash, bytes)| self.chunks.put_replicated(hash, bytes, rf))
            .buffer_unordered(PUT_CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }
}

fn no_attr(call: &str) -> FsError {
    FsError::Internal(format!("metad answered {call} without attributes"))
}

/// The span to rewrite for dirty bytes `[lo, hi)`: widened to the chunk holding `lo - 1`
/// and the chunk holding `hi` (ending no later than `size`), given the extents around it.
fn widen(lo: u64, hi: u64, size: u64, extents: &[pb::Extent]) -> Result<(u64, u64), FsError> {
    let (mut span_lo, mut span_hi) = (lo, hi);
    for e in extents {
        let v = check_extent(e)?;
        if lo > 0 && v.offset < lo && lo - 1 < v.end {
            span_lo = span_lo.min(v.chunk_start);
        }
        if v.offset <= hi && hi < v.end {
            span_hi = span_hi.max(v.chunk_end.min(size));
        }
    }
    Ok((span_lo, span_hi))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext(offset: u64, length: u64, chunk_offset: u64, chunk_length: u64) -> pb::Extent {
        pb::Extent { offset, length, hash: vec![7; 32], chunk_offset, chunk_length }
    }

    #[test]
    fn widening_reaches_the_neighbouring_chunk_boundaries() {
        // A clipped one-byte extent at 99 that is byte 39 of a 100-byte chunk starting at 60,
        // and one at 200 that is byte 0 of a 50-byte chunk.
        let extents = [ext(99, 1, 39, 100), ext(200, 1, 0, 50)];
        assert_eq!(widen(100, 200, 1_000, &extents).ok(), Some((60, 250)));
        // Clamped to the file size.
        assert_eq!(widen(100, 200, 230, &extents).ok(), Some((60, 230)));
        // No neighbours: unchanged.
        assert_eq!(widen(100, 200, 1_000, &[]).ok(), Some((100, 200)));
        // A malformed extent is an error, not a panic.
        assert!(widen(100, 200, 1_000, &[ext(99, 1, 200, 100)]).is_err());
    }

    #[test]
    fn retry_delay_is_bounded() {
        assert_eq!(retry_delay(1), Duration::from_millis(200));
        assert_eq!(retry_delay(1_000), MAX_RETRY);
    }
}
