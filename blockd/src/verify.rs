//! Offline and online verification: scan segment files directly and re-hash every record.
//!
//! Owns: [`scan_records`] and [`verify_store`], which read only `segments/` (read-only file
//! handles) and so work while the daemon runs. Must never: open `blockd.redb` (the daemon
//! holds its lock), write anything, or allocate a record length before the record header's
//! checksum and length limit were checked.
//!
//! A record being appended at the moment of the scan is either not yet visible (its header
//! is written last) or complete. A scan of a segment stops at its first zero or damaged
//! header, so a damaged header hides the records after it from this report; the records'
//! data is still checked record by record.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use proto::ChunkHash;

use crate::error::BlockdError;
use crate::format::SEGMENT_HEADER_LEN;
use crate::segment;

/// Where one record's chunk bytes are on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordLocation {
    pub segment: PathBuf,
    /// Offset of the chunk bytes in the segment file (the record header is just before).
    pub data_offset: u64,
    pub len: u32,
    pub hash: ChunkHash,
}

/// The result of [`verify_store`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Records with a valid header (intact or not).
    pub records: u64,
    /// Content bytes of those records.
    pub bytes: u64,
    /// Records whose bytes do not match their hash.
    pub corrupt: Vec<RecordLocation>,
}

/// Visits every record of every segment of `data_dir`, with whether its data is intact.
fn for_each_record(data_dir: &Path, mut visit: impl FnMut(RecordLocation, bool)) -> Result<(), BlockdError> {
    let dir = segment::segments_dir(data_dir);
    if !dir.exists() {
        return Ok(());
    }
    for (id, path) in segment::list(&dir)? {
        let file = std::fs::File::open(&path).map_err(BlockdError::io("opening", &path))?;
        let len = file.metadata().map_err(BlockdError::io("inspecting", &path))?.len();
        if len < SEGMENT_HEADER_LEN as u64 {
            // Being created right now: nothing in it yet.
            continue;
        }
        if segment::read_header(&file, &path)? != id {
            return Err(BlockdError::SegmentHeader { path, what: "id does not match file name" });
        }
        segment::scan(&file, &path, segment::FIRST_RECORD, |rec| {
            let loc = RecordLocation {
                segment: path.clone(),
                data_offset: rec.data_offset,
                len: rec.header.len,
                hash: rec.header.hash,
            };
            visit(loc, rec.intact);
            ControlFlow::Continue(())
        })?;
    }
    Ok(())
}

/// Where each record's chunk bytes are on disk, in segment order.
pub fn scan_records(data_dir: &Path) -> Result<Vec<RecordLocation>, BlockdError> {
    let mut out = Vec::new();
    for_each_record(data_dir, |loc, _| out.push(loc))?;
    Ok(out)
}

/// Re-hashes every record of every segment and reports those that do not match.
pub fn verify_store(data_dir: &Path) -> Result<VerifyReport, BlockdError> {
    let mut report = VerifyReport::default();
    for_each_record(data_dir, |loc, intact| {
        report.records += 1;
        report.bytes += u64::from(loc.len);
        if !intact {
            report.corrupt.push(loc);
        }
    })?;
    Ok(report)
}
