//! Segment files: naming, creation (preallocated), appending a record, and scanning.
//!
//! Owns: the files under `<data_dir>/segments/` and every byte written to them. A segment
//! is append-only: a record is written once at the tail and never rewritten, except that
//! recovery zeroes the header of an unacknowledged torn record at the tail so later scans
//! stop there, and the writer heals a damaged record whose chunk was rewritten elsewhere by
//! writing its original bytes back (the same header and verified data, see `writer.rs`).
//! Must never: fsync on its own initiative (the store decides when, to group commits),
//! interpret the index, or allocate a length read from disk before
//! [`format::decode_record_header`] has checked it.
//!
//! A record is written data first, then header: a concurrent reader (a live `verify`)
//! that sees a valid header also sees the data written before it.

use std::fs::{File, OpenOptions};
use std::ops::ControlFlow;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::BlockdError;
use crate::format::{self, RECORD_HEADER_LEN, RecordHeader, RecordHeaderError, SEGMENT_HEADER_LEN, SegmentHeaderError};

const SEGMENTS_DIR: &str = "segments";
const PREFIX: &str = "seg-";
const SUFFIX: &str = ".tsg";

/// Offset of the first record in every segment.
pub const FIRST_RECORD: u64 = SEGMENT_HEADER_LEN as u64;

pub fn segments_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(SEGMENTS_DIR)
}

pub fn segment_path(dir: &Path, id: u32) -> PathBuf {
    dir.join(format!("{PREFIX}{id:08}{SUFFIX}"))
}

fn parse_name(name: &str) -> Option<u32> {
    let digits = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    if digits.len() != 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The segment files in `dir`, sorted by id. Other files are ignored.
pub fn list(dir: &Path) -> Result<Vec<(u32, PathBuf)>, BlockdError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(BlockdError::io("listing", dir))? {
        let entry = entry.map_err(BlockdError::io("listing", dir))?;
        if let Some(id) = entry.file_name().to_str().and_then(parse_name) {
            out.push((id, entry.path()));
        }
    }
    out.sort_by_key(|(id, _)| *id);
    Ok(out)
}

/// Fsyncs a directory so a file created or renamed in it survives a crash.
pub fn sync_dir(dir: &Path) -> Result<(), BlockdError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(BlockdError::io("syncing directory", dir))
}

/// Creates segment `id` preallocated to `size` bytes, with its header written and synced.
pub fn create(dir: &Path, id: u32, size: u64) -> Result<File, BlockdError> {
    let path = segment_path(dir, id);
    let io = |op| BlockdError::io(op, &path);
    let file = OpenOptions::new().read(true).write(true).create_new(true).open(&path).map_err(io("creating"))?;
    let prepared = (|| {
        file.write_all_at(&format::encode_segment_header(id), 0).map_err(io("writing header of"))?;
        let size = size.max(FIRST_RECORD);
        if let Err(e) = rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, size) {
            // Filesystems without fallocate (e.g. some overlays) get a sparse file instead.
            tracing::debug!(path = %path.display(), error = %e, "fallocate unsupported; extending sparsely");
            file.set_len(size).map_err(io("extending"))?;
        }
        file.sync_all().map_err(io("syncing"))?;
        sync_dir(dir)
    })();
    if let Err(e) = prepared {
        // Nothing was written to it yet: remove it so the id can be retried.
        let _ = std::fs::remove_file(&path);
        return Err(e);
    }
    Ok(file)
}

/// Opens an existing segment, checking that its header is understood and names `id`.
pub fn open(path: &Path, id: u32, writable: bool) -> Result<File, BlockdError> {
    let file = OpenOptions::new().read(true).write(writable).open(path).map_err(BlockdError::io("opening", path))?;
    let found = read_header(&file, path)?;
    if found != id {
        return Err(BlockdError::SegmentHeader { path: path.to_path_buf(), what: "id does not match file name" });
    }
    Ok(file)
}

/// Reads and checks a segment's file header; returns the id it names.
pub fn read_header(file: &File, path: &Path) -> Result<u32, BlockdError> {
    let mut h = [0u8; SEGMENT_HEADER_LEN];
    file.read_exact_at(&mut h, 0).map_err(BlockdError::io("reading header of", path))?;
    format::decode_segment_header(&h).map_err(|e| {
        let path = path.to_path_buf();
        match e {
            SegmentHeaderError::Version(found) => {
                BlockdError::SegmentVersion { path, found, supported: format::SEGMENT_VERSION }
            }
            SegmentHeaderError::Magic => BlockdError::SegmentHeader { path, what: "bad magic" },
            SegmentHeaderError::Checksum => BlockdError::SegmentHeader { path, what: "bad checksum" },
            SegmentHeaderError::Flags => BlockdError::SegmentHeader { path, what: "unknown flags" },
        }
    })
}

/// Writes one record at `offset` (data first, then header). Not synced.
pub fn write_record(
    file: &File,
    path: &Path,
    offset: u64,
    header: &[u8; RECORD_HEADER_LEN],
    data: &[u8],
) -> Result<(), BlockdError> {
    let io = BlockdError::io("appending to", path);
    file.write_all_at(data, offset + RECORD_HEADER_LEN as u64)
        .and_then(|()| file.write_all_at(header, offset))
        .map_err(io)
}

/// Overwrites the record header at `offset` with zeros and syncs, so scans end there.
pub fn zero_header(file: &File, path: &Path, offset: u64) -> Result<(), BlockdError> {
    file.write_all_at(&[0u8; RECORD_HEADER_LEN], offset)
        .and_then(|()| file.sync_data())
        .map_err(BlockdError::io("zeroing torn tail of", path))
}

/// One record met by [`scan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scanned {
    /// Offset of the record's data (its header is just before).
    pub data_offset: u64,
    pub header: RecordHeader,
    /// Whether the data matched the hash in the header.
    pub intact: bool,
}

/// Why a scan stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanStop {
    /// An all-zero header: the clean end of the written part.
    Zero,
    /// The end of the file.
    EndOfFile,
    /// A damaged or torn header, or a record running past the end of the file.
    Torn,
    /// The visitor refused the record at `offset` (e.g. a torn data write).
    Refused,
}

/// Where and why a scan stopped: `offset` is where the next record would be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanEnd {
    pub offset: u64,
    pub stop: ScanStop,
}

/// Scans the records of a segment from `start` (a record boundary), calling `visit` for
/// each record with a valid header and hashing its data. Stops at the first header that is
/// zero, torn or damaged, or when `visit` breaks. A record of an unknown version is an
/// error (a newer build wrote it; it must not be overwritten).
pub fn scan(
    file: &File,
    path: &Path,
    start: u64,
    mut visit: impl FnMut(Scanned) -> ControlFlow<()>,
) -> Result<ScanEnd, BlockdError> {
    let size = file.metadata().map_err(BlockdError::io("inspecting", path))?.len();
    let mut pos = start.max(FIRST_RECORD);
    let mut data = Vec::new();
    loop {
        if pos + RECORD_HEADER_LEN as u64 > size {
            return Ok(ScanEnd { offset: pos, stop: ScanStop::EndOfFile });
        }
        let mut h = [0u8; RECORD_HEADER_LEN];
        file.read_exact_at(&mut h, pos).map_err(BlockdError::io("reading", path))?;
        let header = match format::decode_record_header(&h) {
            Ok(header) => header,
            Err(RecordHeaderError::Zero) => return Ok(ScanEnd { offset: pos, stop: ScanStop::Zero }),
            Err(RecordHeaderError::Invalid | RecordHeaderError::TooLong(_)) => {
                return Ok(ScanEnd { offset: pos, stop: ScanStop::Torn });
            }
            Err(RecordHeaderError::Version(found)) => {
                return Err(BlockdError::RecordVersion {
                    path: path.to_path_buf(),
                    offset: pos,
                    found,
                    supported: format::RECORD_VERSION,
                });
            }
        };
        let data_offset = pos + RECORD_HEADER_LEN as u64;
        let end = data_offset + u64::from(header.len);
        if end > size {
            return Ok(ScanEnd { offset: pos, stop: ScanStop::Torn });
        }
        // `header.len` was checked against MAX_CHUNK_LEN by decode_record_header.
        data.resize(header.len as usize, 0);
        file.read_exact_at(&mut data, data_offset).map_err(BlockdError::io("reading", path))?;
        let intact = blake3::hash(&data).as_bytes() == header.hash.as_bytes();
        if visit(Scanned { data_offset, header, intact }).is_break() {
            return Ok(ScanEnd { offset: pos, stop: ScanStop::Refused });
        }
        pos = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::ChunkHash;

    fn put(file: &File, path: &Path, offset: u64, data: &[u8]) -> u64 {
        let hash = ChunkHash(*blake3::hash(data).as_bytes());
        let h = format::encode_record_header(&hash, data.len() as u32);
        write_record(file, path, offset, &h, data).expect("write");
        offset + format::record_len(data.len())
    }

    #[test]
    fn names_round_trip_and_strangers_are_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(parse_name("seg-00000012.tsg"), Some(12));
        assert_eq!(parse_name("seg-12.tsg"), None);
        assert_eq!(parse_name("seg-0000001x.tsg"), None);
        std::fs::write(dir.path().join("notes.txt"), b"x").expect("write");
        create(dir.path(), 3, 4096).expect("create");
        create(dir.path(), 1, 4096).expect("create");
        let ids: Vec<u32> = list(dir.path()).expect("list").into_iter().map(|(id, _)| id).collect();
        assert_eq!(ids, vec![1, 3]);
    }

    #[test]
    fn create_preallocates_and_refuses_to_clobber() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = create(dir.path(), 1, 1 << 20).expect("create");
        assert_eq!(f.metadata().expect("meta").len(), 1 << 20);
        assert!(create(dir.path(), 1, 1 << 20).is_err());
        let path = segment_path(dir.path(), 1);
        assert!(open(&path, 1, false).is_ok());
        assert!(matches!(open(&path, 2, false), Err(BlockdError::SegmentHeader { .. })));
    }

    #[test]
    fn scan_visits_records_and_stops_at_zero_or_torn() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = create(dir.path(), 1, 8192).expect("create");
        let path = segment_path(dir.path(), 1);
        let mut pos = put(&f, &path, FIRST_RECORD, b"one");
        pos = put(&f, &path, pos, b"two two");
        let mut seen = Vec::new();
        let end = scan(&f, &path, FIRST_RECORD, |s| {
            seen.push(s);
            ControlFlow::Continue(())
        })
        .expect("scan");
        assert_eq!(end, ScanEnd { offset: pos, stop: ScanStop::Zero });
        assert_eq!(seen.len(), 2);
        assert!(seen.iter().all(|s| s.intact));

        // Garbage after the last record is a torn tail.
        f.write_all_at(&[0xAB; 20], pos).expect("write");
        let end = scan(&f, &path, FIRST_RECORD, |_| ControlFlow::Continue(())).expect("scan");
        assert_eq!(end, ScanEnd { offset: pos, stop: ScanStop::Torn });
        zero_header(&f, &path, pos).expect("zero");
        let end = scan(&f, &path, FIRST_RECORD, |_| ControlFlow::Continue(())).expect("scan");
        assert_eq!(end.stop, ScanStop::Zero);

        // Damaged data is reported, and the scan goes on past it.
        f.write_all_at(b"X", seen[0].data_offset).expect("write");
        let mut intact = Vec::new();
        scan(&f, &path, FIRST_RECORD, |s| {
            intact.push(s.intact);
            ControlFlow::Continue(())
        })
        .expect("scan");
        assert_eq!(intact, vec![false, true]);
        // A visitor can stop at a record; the scan reports where that record starts.
        let end = scan(&f, &path, FIRST_RECORD, |_| ControlFlow::Break(())).expect("scan");
        assert_eq!(end, ScanEnd { offset: FIRST_RECORD, stop: ScanStop::Refused });
    }

    #[test]
    fn record_running_past_the_file_is_torn() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = create(dir.path(), 1, 128).expect("create");
        let path = segment_path(dir.path(), 1);
        let hash = ChunkHash(*blake3::hash(b"big").as_bytes());
        f.write_all_at(&format::encode_record_header(&hash, 1000), FIRST_RECORD).expect("write");
        let end = scan(&f, &path, FIRST_RECORD, |_| panic!("no record expected")).expect("scan");
        assert_eq!(end, ScanEnd { offset: FIRST_RECORD, stop: ScanStop::Torn });
    }
}
