//! The read path: READ from buffered data and committed extents, and chunk fetching.
//!
//! Owns turning extents into bytes: validating every extent metad returns, fetching each
//! distinct chunk once (cache first, then the block daemon, bounded concurrency, one fetch
//! per hash across concurrent READs and read-ahead: `single_flight`),
//! verifying its hash (here, unless the `ChunkApi` already did: `RETURNS_VERIFIED`) and
//! length before use, slicing, and zero-filling holes. Dirty data of this gateway is
//! overlaid last (read-your-writes; a stable write's only once it is committed, so reads
//! here and through other gateways agree). metad checks the caller's read permission on
//! GetExtents; a read served from the buffer alone is checked with Access. Must never
//! return or cache bytes that failed verification (corrupt -> `FsError::Io`), never index
//! with an unchecked offset from metad, and never allocate more than `MAX_READ_BYTES` for
//! one READ. Sequential READs start a background prefetch of the next bytes into the cache
//! (`readahead` decides when and how much; `spawn_prefetch` fetches).

use std::collections::HashMap;
use std::time::Instant;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use proto::{ChunkHash, FileHandle, FsError, pb};

use super::buffer::{covers, overlay};
use super::{ChunkApi, Engine, MetaApi, lock};
use crate::vfs::{ACCESS_READ, ReadReply};

/// Largest READ served at once; larger requests get a short read (legal in NFS).
pub const MAX_READ_BYTES: u32 = 4 * 1024 * 1024;
/// Chunk fetches in flight for one read.
const FETCH_CONCURRENCY: usize = 8;

/// Whether fetched chunks enter the cache (reads: yes; the write path: no).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheFill {
    Yes,
    No,
}

/// An extent from metad, validated.
#[derive(Clone, Copy, Debug)]
pub struct ExtentView {
    pub offset: u64,
    pub end: u64,
    pub hash: ChunkHash,
    pub chunk_offset: u64,
    pub chunk_length: u64,
    /// Where the whole chunk would start in the file.
    pub chunk_start: u64,
    /// Where the whole chunk would end in the file.
    pub chunk_end: u64,
}

/// Validates an extent metad returned (hostile input: invariant 6).
pub fn check_extent(e: &pb::Extent) -> Result<ExtentView, FsError> {
    let bad = |why: &str| FsError::Io(format!("metad returned a malformed extent at {}: {why}", e.offset));
    let hash = ChunkHash::from_slice(&e.hash).ok_or_else(|| bad("hash is not 32 bytes"))?;
    if e.length == 0 {
        return Err(bad("empty"));
    }
    if e.chunk_length > proto::chunk_frame::MAX_CHUNK_LEN as u64 {
        return Err(bad("chunk longer than any chunk can be"));
    }
    let slice_end = e.chunk_offset.checked_add(e.length).ok_or_else(|| bad("overflow"))?;
    if slice_end > e.chunk_length {
        return Err(bad("slice exceeds its chunk"));
    }
    let end = e.offset.checked_add(e.length).ok_or_else(|| bad("overflow"))?;
    let chunk_start = e.offset.checked_sub(e.chunk_offset).ok_or_else(|| bad("chunk starts before the file"))?;
    let chunk_end = chunk_start.checked_add(e.chunk_length).ok_or_else(|| bad("overflow"))?;
    Ok(ExtentView {
        offset: e.offset,
        end,
        hash,
        chunk_offset: e.chunk_offset,
        chunk_length: e.chunk_length,
        chunk_start,
        chunk_end,
    })
}

impl<M: MetaApi, C: ChunkApi> Engine<M, C> {
    pub(super) async fn read_impl(
        &self,
        cred: &pb::Cred,
        node: FileHandle,
        offset: u64,
        count: u32,
    ) -> Result<ReadReply, FsError> {
        let count = u64::from(count.min(MAX_READ_BYTES));
        let end = offset.saturating_add(count);
        // Dirty data is taken before the extents: a flush removes data from the buffer only
        // after committing it, so whatever we miss here the extents already have.
        let file = self.files.get(&node);
        // No stable write's uncommitted data (see `FileState::stable`): held until the
        // extents are in hand.
        let committed_only = match &file {
            Some(f) => Some(f.stable.read().await),
            None => None,
        };
        let (dirty, dirty_end, cached) = match &file {
            Some(f) => {
                let inner = lock(&f.inner);
                (inner.buf.overlapping(offset, end), inner.buf.end(), inner.fresh_attr(Instant::now()))
            }
            None => (Vec::new(), None, None),
        };
        let (mut attr, extents) = match cached {
            Some(a) if count > 0 && covers(&dirty, offset, end) => {
                // Served from the buffer without metad: the permission check is ours.
                self.check_access(cred, node, ACCESS_READ).await?;
                (a, Vec::new())
            }
            _ => {
                let r = self
                    .meta
                    .get_extents(pb::GetExtentsRequest {
                        node: Some(node.into()),
                        offset,
                        length: count,
                        cred: Some(cred.clone()),
                    })
                    .await?;
                let a =
                    r.attr.ok_or_else(|| FsError::Internal("metad answered GetExtents without attributes".into()))?;
                if let Some(f) = &file {
                    f.remember_attr(&a);
                }
                (a, r.extents)
            }
        };
        drop(committed_only);
        if attr.kind == pb::FileType::Directory as i32 {
            return Err(FsError::IsDir);
        }
        let size = attr.size.max(dirty_end.unwrap_or(0));
        let n = if offset >= size { 0 } else { (size - offset).min(count) };
        // n <= MAX_READ_BYTES.
        let mut buf = vec![0u8; n as usize];
        self.fill_from_extents(&extents, offset, &mut buf, CacheFill::Yes, None).await?;
        overlay(&dirty, offset, &mut buf);
        attr.size = size;
        if let Some((from, to)) = self.readahead.on_read(node, offset, offset + n, size) {
            self.spawn_prefetch(cred.clone(), node, from, to);
        }
        Ok(ReadReply { data: Bytes::from(buf), eof: offset + n >= size, attr })
    }

    /// Copies the committed content of `[start, start + out.len())` described by `extents`
    /// into `out`; bytes no extent covers are left as they are (zeros for a fresh buffer).
    /// `known` is a chunk already held and verified by the caller (used before the cache).
    pub(super) async fn fill_from_extents(
        &self,
        extents: &[pb::Extent],
        start: u64,
        out: &mut [u8],
        fill: CacheFill,
        known: Option<&(ChunkHash, Bytes)>,
    ) -> Result<(), FsError> {
        if out.is_empty() {
            return Ok(());
        }
        let end = start + out.len() as u64;
        let mut views = Vec::new();
        for e in extents {
            let v = check_extent(e)?;
            if v.offset < end && v.end > start {
                views.push(v);
            }
        }
        let mut wanted: HashMap<ChunkHash, u64> = HashMap::new();
        for v in &views {
            wanted.insert(v.hash, v.chunk_length);
        }
        let fetched: HashMap<ChunkHash, Bytes> = futures::stream::iter(wanted)
            .map(|(hash, len)| async move {
                match known {
                    Some((h, b)) if *h == hash && b.len() as u64 == len => Ok((hash, b.clone())),
                    _ => self.fetch_chunk(hash, len, fill).await.map(|b| (hash, b)),
                }
            })
            .buffer_unordered(FETCH_CONCURRENCY)
            .try_collect()
            .await?;
        for v in &views {
            let chunk =
                fetched.get(&v.hash).ok_or_else(|| FsError::Internal(format!("chunk {} not fetched", v.hash)))?;
            let (lo, hi) = (v.offset.max(start), v.end.min(end));
            // In bounds: check_extent proved chunk_offset + length <= chunk_length and
            // fetch_chunk proved chunk.len() == chunk_length.
            let src_lo = (v.chunk_offset + (lo - v.offset)) as usize;
            let src = &chunk[src_lo..src_lo + (hi - lo) as usize];
            out[(lo - start) as usize..(hi - start) as usize].copy_from_slice(src);
        }
        Ok(())
    }

    /// Fetches the committed chunks of `[from, to)` into the cache in the background
    /// (read-ahead); failures only cost the later READ a fetch of its own.
    fn spawn_prefetch(&self, cred: pb::Cred, node: FileHandle, from: u64, to: u64) {
        let Some(engine) = self.me.upgrade() else { return };
        tokio::spawn(async move {
            if let Err(e) = engine.prefetch(cred, node, from, to).await {
                tracing::debug!(?node, from, to, error = %e, "read-ahead failed");
            }
            engine.readahead.finished(node);
        });
    }

    async fn prefetch(&self, cred: pb::Cred, node: FileHandle, from: u64, to: u64) -> Result<(), FsError> {
        let r = self
            .meta
            .get_extents(pb::GetExtentsRequest {
                node: Some(node.into()),
                offset: from,
                length: to - from,
                cred: Some(cred),
            })
            .await?;
        let mut wanted: HashMap<ChunkHash, u64> = HashMap::new();
        for e in &r.extents {
            let v = check_extent(e)?;
            if !self.cache.contains(&v.hash) {
                wanted.insert(v.hash, v.chunk_length);
            }
        }
        futures::stream::iter(wanted)
            .map(|(hash, len)| self.fetch_chunk(hash, len, CacheFill::Yes))
            .buffer_unordered(FETCH_CONCURRENCY)
            .try_for_each(|_| async { Ok(()) })
            .await
    }

    /// A chunk's verified bytes, from the cache or the block daemon.
    async fn fetch_chunk(&self, hash: ChunkHash, chunk_length: u64, fill: CacheFill) -> Result<Bytes, FsError> {
        let data = match self.cache.get(&hash) {
            Some(d) => d,
            None => {
                // One fetch per hash at a time: a READ joins the read-ahead's or another
                // READ's fetch of the same chunk.
                let d = self
                    .fetches
                    .run(hash, || async {
                        if let Some(d) = self.cache.get(&hash) {
                            return Ok(d);
                        }
                        let d = self.chunks.get(hash).await?;
                        if !C::RETURNS_VERIFIED && blake3::hash(&d).as_bytes() != hash.as_bytes() {
                            tracing::error!(%hash, "chunk failed its hash check");
                            return Err(FsError::Io(format!("chunk {hash} failed its hash check")));
                        }
                        Ok(d)
                    })
                    .await?;
                if fill == CacheFill::Yes {
                    self.cache.insert(hash, d.clone());
                }
                d
            }
        };
        if data.len() as u64 != chunk_length {
            return Err(FsError::Io(format!(
                "chunk {hash} has {} bytes but metad's extent says {chunk_length}",
                data.len()
            )));
        }
        Ok(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_extents_are_refused() {
        let ok = pb::Extent { offset: 10, length: 5, hash: vec![1; 32], chunk_offset: 2, chunk_length: 8 };
        let v = check_extent(&ok).expect("valid");
        assert_eq!((v.chunk_start, v.chunk_end, v.end), (8, 16, 15));
        let cases = [
            pb::Extent { hash: vec![1; 31], ..ok.clone() },
            pb::Extent { length: 0, ..ok.clone() },
            pb::Extent { chunk_offset: 4, ..ok.clone() },
            pb::Extent { offset: 1, ..ok.clone() },
            pb::Extent { offset: u64::MAX, ..ok.clone() },
            pb::Extent { chunk_length: u64::MAX, length: u64::MAX - 2, ..ok.clone() },
        ];
        for c in cases {
            assert!(matches!(check_extent(&c), Err(FsError::Io(_))), "{c:?}");
        }
    }
}
