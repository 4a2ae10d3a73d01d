//! Opening the index at start: rebuild it from the segments when missing, and index the
//! tail of unsealed segments (records fsynced, maybe acknowledged, whose index commit was
//! lost in a crash).
//!
//! Owns: the start-up reconciliation between `segments/` and `blockd.redb`. A rebuilt index
//! is written under a temporary name and renamed into place once complete, so a crash
//! during a rebuild leaves no half-built index behind. Must never: trust bytes after the
//! last indexed position without re-hashing them, or skip a segment it does not
//! understand (that is an error: the daemon refuses to start rather than overwrite data).
//!
//! Everything past a segment's indexed end is unacknowledged (answers follow the index
//! commit), so the tail scan may drop it from the first damaged header or record on; it
//! zeroes that header so later scans stop there and new records overwrite it. A rebuild
//! (no index) cannot know what was acknowledged: it skips a record whose data fails its
//! hash and keeps scanning. Known limit: a damaged record *header* ends the scan of its
//! segment in both cases (the next record's position is unknown), so records after it
//! are not indexed by a rebuild; `verify_store` shows the same boundary.
//!
//! A segment the index lists but whose file is gone (deleted while the daemon was down)
//! does not stop the start: it is recreated as a sealed, header-only file and its index
//! entries are kept, so the store reports those chunks as lost (not held) and scrub
//! fetches them back (see `scrub`).

use std::fs::File;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::BlockdError;
use crate::index::{self, Index, Location, SegmentState};
use crate::segment::{self, FIRST_RECORD, ScanStop};

/// The segment new records are appended to.
pub(crate) struct Active {
    pub id: u32,
    pub path: PathBuf,
    pub file: Arc<File>,
    /// Where the next record goes.
    pub end: u64,
    /// Preallocated size: a record that would pass it goes to a new segment.
    pub capacity: u64,
}

pub(crate) struct Recovered {
    pub index: Index,
    pub active: Option<Active>,
    pub next_id: u32,
}

/// Opens `blockd.redb` (rebuilding it if missing) and reconciles it with the segments.
pub(crate) fn open_index(data_dir: &Path, seg_dir: &Path) -> Result<Recovered, BlockdError> {
    let path = index::index_path(data_dir);
    if !path.exists() {
        tracing::warn!(path = %path.display(), "chunk index missing; rebuilding it from the segments");
        let tmp = data_dir.join("blockd.redb.rebuild");
        let index = Index::create(&tmp)?;
        let recovered = reconcile(index, seg_dir)?;
        drop(recovered);
        std::fs::rename(&tmp, &path).map_err(BlockdError::io("renaming rebuilt index to", &path))?;
        segment::sync_dir(data_dir)?;
    }
    reconcile(Index::open(&path)?, seg_dir)
}

/// Scans every unsealed segment from its indexed end, indexes the intact records found,
/// zeroes a torn tail, seals all but the newest segment, and commits that in one go.
fn reconcile(index: Index, seg_dir: &Path) -> Result<Recovered, BlockdError> {
    let mut states = index.segments()?;
    let mut updates = Vec::new();
    let listed = segment::list(seg_dir)?;
    for (id, state) in states.iter_mut() {
        if listed.iter().any(|(f, _)| f == id) {
            continue;
        }
        // Deleted while the daemon was down. Start anyway and serve everything else; the
        // index keeps the segment's entries so scrub knows what to fetch back, and the
        // store treats them as lost (the file is shorter than its indexed end). A
        // header-only file takes its place, sealed, so nothing appends to it, its id is
        // never reused, and the S3 tier finds the file an evicted segment would have.
        tracing::error!(
            segment = *id,
            indexed_end = state.end,
            "segment file is missing; its chunks are lost until scrub repairs them"
        );
        segment::create(seg_dir, *id, FIRST_RECORD)?;
        state.sealed = true;
        updates.push((*id, *state));
    }
    let files = if updates.is_empty() { listed } else { segment::list(seg_dir)? };
    let last_id = files.last().map(|(id, _)| *id);
    let mut entries = Vec::new();
    let mut active = None;
    for (id, path) in files {
        let state = states.get(&id).copied();
        let is_last = Some(id) == last_id;
        if let Some(s) = state
            && s.sealed
        {
            if is_last {
                // Fully written: the next put opens a new segment.
                segment::open(&path, id, false)?;
            }
            continue;
        }
        let file = segment::open(&path, id, is_last)?;
        let start = state.map_or(FIRST_RECORD, |s| s.end);
        let mut found = 0usize;
        // Past an indexed end nothing was acknowledged (answers follow the index commit), so
        // the first record that fails its hash there is a torn write: it and everything
        // after it are dropped. Without an index state (a rebuild) every record may have
        // been acknowledged: a damaged one is skipped and the scan goes on.
        let rebuilding = state.is_none();
        let end = segment::scan(&file, &path, start, |rec| {
            if rec.intact {
                found += 1;
                entries.push((
                    rec.header.hash,
                    Location { segment: id, data_offset: rec.data_offset, len: rec.header.len },
                ));
                ControlFlow::Continue(())
            } else if rebuilding {
                tracing::error!(segment = id, offset = rec.data_offset, hash = %rec.header.hash,
                    "record failed its hash check; not indexing it");
                ControlFlow::Continue(())
            } else {
                ControlFlow::Break(())
            }
        })?;
        if found > 0 {
            tracing::info!(segment = id, records = found, "indexed records found after the last indexed position");
        }
        if matches!(end.stop, ScanStop::Torn | ScanStop::Refused) {
            if is_last {
                tracing::warn!(segment = id, offset = end.offset, "ignoring a torn record at the segment tail");
                segment::zero_header(&file, &path, end.offset)?;
            } else {
                tracing::warn!(
                    segment = id,
                    offset = end.offset,
                    "damaged record header ends an older segment; sealing it there"
                );
            }
        }
        updates.push((id, SegmentState { end: end.offset, sealed: !is_last }));
        if is_last {
            let capacity = file.metadata().map_err(BlockdError::io("inspecting", &path))?.len();
            active = Some(Active { id, path, file: Arc::new(file), end: end.offset, capacity });
        }
    }
    if !entries.is_empty() || !updates.is_empty() {
        index.commit(&entries, &[], &updates)?;
    }
    let next_id = last_id.map_or(1, |id| id.saturating_add(1));
    Ok(Recovered { index, active, next_id })
}
