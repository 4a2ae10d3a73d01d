//! The pack format: a sealed segment as one S3 object, with its index as a footer.
//!
//! Owns: the footer layout, its encoder, its length-checked decoder, the object key of a
//! pack, and the scan that builds a footer from a segment's bytes. Pure functions over
//! byte slices (no I/O), so every malformed input can be tested. Must never: trust a count,
//! offset or length read from a pack before checking it against the object's own bounds and
//! [`MAX_CHUNK_LEN`], or accept a footer version it does not understand.
//!
//! ```text
//! pack = segment bytes [0, records_end)         (header + records, exactly as on disk,
//!                                                so a chunk's offset is the same in both)
//!      | entries: count x (hash[32] | data_offset:u64 BE | len:u32 BE)    (44 bytes each)
//!      | trailer (40 bytes, the very end of the object):
//!          version:u16 BE = 1 | flags:u16 = 0 | segment id:u32 BE | count:u32 BE
//!          | footer_len:u32 BE (= count*44 + 40) | records_end:u64 BE
//!          | check:u64 = first 8 bytes of BLAKE3(entries | trailer[0..24])
//!          | magic "TSPKFOOT"
//! key  = "packs/<prefix>/<segment id, 8 digits>-<first 4 bytes of BLAKE3(pack), hex>.tpk"
//! ```
//!
//! A reader fetches the last 40 bytes, checks magic, version and checksum-independent
//! bounds, then fetches exactly `footer_len - 40` bytes of entries and checks the checksum
//! and every entry. The content hash in the key makes an upload idempotent: the same
//! segment bytes always land under the same key.

use std::ops::ControlFlow;

use proto::ChunkHash;

use crate::format::{self, MAX_CHUNK_LEN, RECORD_HEADER_LEN, RecordHeaderError};
use crate::segment::FIRST_RECORD;

/// Bytes of the fixed trailer at the very end of a pack.
pub const TRAILER_LEN: usize = 40;
/// Bytes of one footer entry.
pub const ENTRY_LEN: usize = 44;
/// The footer version this build writes and reads.
pub const PACK_VERSION: u16 = 1;
const MAGIC: &[u8; 8] = b"TSPKFOOT";
const CHECKED: usize = 24;
/// Longest pack this build reads (a segment is tens of MiB; this is a sanity bound).
pub const MAX_PACK_LEN: u64 = 16 * 1024 * 1024 * 1024;

/// One chunk in a pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackEntry {
    pub hash: ChunkHash,
    /// Offset of the chunk's bytes in the pack (and in the segment it came from).
    pub data_offset: u64,
    pub len: u32,
}

/// The decoded trailer: enough to fetch and check the entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trailer {
    pub segment: u32,
    pub count: u32,
    pub footer_len: u32,
    pub records_end: u64,
    check: [u8; 8],
    raw_checked: [u8; CHECKED],
}

impl Trailer {
    /// Byte range `[start, end)` of the entries inside the pack.
    pub fn entries_range(&self) -> (u64, u64) {
        let start = self.records_end;
        (start, start + u64::from(self.count) * ENTRY_LEN as u64)
    }

    /// Total object length this trailer describes.
    pub fn pack_len(&self) -> u64 {
        self.records_end + u64::from(self.footer_len)
    }
}

/// Why a pack footer was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PackError {
    #[error("pack is shorter than its trailer")]
    Short,
    #[error("pack trailer has a bad magic")]
    Magic,
    #[error("pack footer version {0} is not understood (this build reads {PACK_VERSION})")]
    Version(u16),
    #[error("pack trailer has unknown flags")]
    Flags,
    #[error("pack footer length {footer_len} does not match {count} entries")]
    FooterLen { count: u32, footer_len: u32 },
    #[error("pack records end {0} is out of bounds")]
    RecordsEnd(u64),
    #[error("pack footer checksum mismatch")]
    Checksum,
    #[error("pack entry {0} is out of bounds")]
    Entry(u32),
    #[error("pack object is {found} bytes; its footer describes {expected}")]
    ObjectLen { found: u64, expected: u64 },
}

fn check64(entries: &[u8], trailer_head: &[u8]) -> [u8; 8] {
    let mut h = blake3::Hasher::new();
    h.update(entries);
    h.update(trailer_head);
    let mut out = [0u8; 8];
    out.copy_from_slice(&h.finalize().as_bytes()[..8]);
    out
}

/// Encodes the footer (entries + trailer) appended after `records_end` bytes of segment.
pub fn encode_footer(segment: u32, records_end: u64, entries: &[PackEntry]) -> Vec<u8> {
    let count = entries.len() as u32;
    let footer_len = entries.len() * ENTRY_LEN + TRAILER_LEN;
    let mut out = Vec::with_capacity(footer_len);
    for e in entries {
        out.extend_from_slice(e.hash.as_bytes());
        out.extend_from_slice(&e.data_offset.to_be_bytes());
        out.extend_from_slice(&e.len.to_be_bytes());
    }
    let mut t = [0u8; TRAILER_LEN];
    t[0..2].copy_from_slice(&PACK_VERSION.to_be_bytes());
    t[4..8].copy_from_slice(&segment.to_be_bytes());
    t[8..12].copy_from_slice(&count.to_be_bytes());
    t[12..16].copy_from_slice(&(footer_len as u32).to_be_bytes());
    t[16..24].copy_from_slice(&records_end.to_be_bytes());
    let check = check64(&out, &t[..CHECKED]);
    t[24..32].copy_from_slice(&check);
    t[32..40].copy_from_slice(MAGIC);
    out.extend_from_slice(&t);
    out
}

fn be32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(b);
    u32::from_be_bytes(a)
}

fn be64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    u64::from_be_bytes(a)
}

/// Decodes the last [`TRAILER_LEN`] bytes of a pack. Checks everything that does not need
/// the entries; the checksum is checked by [`decode_entries`].
pub fn decode_trailer(t: &[u8]) -> Result<Trailer, PackError> {
    if t.len() != TRAILER_LEN {
        return Err(PackError::Short);
    }
    if &t[32..40] != MAGIC {
        return Err(PackError::Magic);
    }
    let version = u16::from_be_bytes([t[0], t[1]]);
    if version != PACK_VERSION {
        return Err(PackError::Version(version));
    }
    if t[2..4] != [0, 0] {
        return Err(PackError::Flags);
    }
    let segment = be32(&t[4..8]);
    let count = be32(&t[8..12]);
    let footer_len = be32(&t[12..16]);
    let records_end = be64(&t[16..24]);
    if u64::from(count) * ENTRY_LEN as u64 + TRAILER_LEN as u64 != u64::from(footer_len) {
        return Err(PackError::FooterLen { count, footer_len });
    }
    if !(FIRST_RECORD..=MAX_PACK_LEN).contains(&records_end) {
        return Err(PackError::RecordsEnd(records_end));
    }
    // Every entry needs at least a record header before its data.
    if u64::from(count) > (records_end - FIRST_RECORD) / RECORD_HEADER_LEN as u64 {
        return Err(PackError::FooterLen { count, footer_len });
    }
    let mut check = [0u8; 8];
    check.copy_from_slice(&t[24..32]);
    let mut raw_checked = [0u8; CHECKED];
    raw_checked.copy_from_slice(&t[..CHECKED]);
    Ok(Trailer { segment, count, footer_len, records_end, check, raw_checked })
}

/// Decodes and checks the entries (exactly `count * ENTRY_LEN` bytes) of a pack.
pub fn decode_entries(trailer: &Trailer, bytes: &[u8]) -> Result<Vec<PackEntry>, PackError> {
    let (start, end) = trailer.entries_range();
    if bytes.len() as u64 != end - start {
        return Err(PackError::Short);
    }
    if check64(bytes, &trailer.raw_checked) != trailer.check {
        return Err(PackError::Checksum);
    }
    let mut out = Vec::with_capacity(trailer.count as usize);
    for (i, e) in bytes.chunks_exact(ENTRY_LEN).enumerate() {
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&e[..32]);
        let data_offset = be64(&e[32..40]);
        let len = be32(&e[40..44]);
        let ok = data_offset >= FIRST_RECORD + RECORD_HEADER_LEN as u64
            && len as usize <= MAX_CHUNK_LEN
            && data_offset.checked_add(u64::from(len)).is_some_and(|end| end <= trailer.records_end);
        if !ok {
            return Err(PackError::Entry(i as u32));
        }
        out.push(PackEntry { hash: ChunkHash(hash), data_offset, len });
    }
    Ok(out)
}

/// Builds a whole pack from the written part of a sealed segment (`segment[..records_end]`):
/// scans its records, keeps those whose bytes match their hash (a damaged one is left out
/// of the footer and reported in the second value) and appends the footer.
pub fn build(segment: u32, mut bytes: Vec<u8>) -> (Vec<u8>, Vec<PackEntry>, usize) {
    let records_end = bytes.len() as u64;
    let mut entries = Vec::new();
    let mut damaged = 0usize;
    let _ = scan(&bytes, |e, intact| {
        if intact {
            entries.push(e);
        } else {
            damaged += 1;
        }
        ControlFlow::Continue(())
    });
    let footer = encode_footer(segment, records_end, &entries);
    bytes.extend_from_slice(&footer);
    (bytes, entries, damaged)
}

/// Walks the records of in-memory segment bytes from [`FIRST_RECORD`]; stops at the first
/// zero, torn or unknown header or at the end. Returns where it stopped.
fn scan(bytes: &[u8], mut visit: impl FnMut(PackEntry, bool) -> ControlFlow<()>) -> u64 {
    let mut pos = FIRST_RECORD as usize;
    loop {
        let Some(h) = bytes.get(pos..pos + RECORD_HEADER_LEN) else { return pos as u64 };
        let mut arr = [0u8; RECORD_HEADER_LEN];
        arr.copy_from_slice(h);
        let header = match format::decode_record_header(&arr) {
            Ok(h) => h,
            Err(RecordHeaderError::Zero | RecordHeaderError::Invalid)
            | Err(RecordHeaderError::TooLong(_) | RecordHeaderError::Version(_)) => return pos as u64,
        };
        let start = pos + RECORD_HEADER_LEN;
        let Some(data) = bytes.get(start..start + header.len as usize) else { return pos as u64 };
        let intact = blake3::hash(data).as_bytes() == header.hash.as_bytes();
        let entry = PackEntry { hash: header.hash, data_offset: start as u64, len: header.len };
        if visit(entry, intact).is_break() {
            return pos as u64;
        }
        pos = start + header.len as usize;
    }
}

/// The object key of a pack.
pub fn key(prefix: &str, segment: u32, pack: &[u8]) -> String {
    let h = blake3::hash(pack);
    let b = h.as_bytes();
    let prefix = prefix.trim_matches('/');
    let hash8 = format!("{:02x}{:02x}{:02x}{:02x}", b[0], b[1], b[2], b[3]);
    if prefix.is_empty() {
        format!("packs/{segment:08}-{hash8}.tpk")
    } else {
        format!("packs/{prefix}/{segment:08}-{hash8}.tpk")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment_bytes(chunks: &[&[u8]]) -> (Vec<u8>, Vec<PackEntry>) {
        let mut out = format::encode_segment_header(7).to_vec();
        let mut entries = Vec::new();
        for c in chunks {
            let hash = ChunkHash(*blake3::hash(c).as_bytes());
            out.extend_from_slice(&format::encode_record_header(&hash, c.len() as u32));
            entries.push(PackEntry { hash, data_offset: out.len() as u64, len: c.len() as u32 });
            out.extend_from_slice(c);
        }
        (out, entries)
    }

    fn parse(pack: &[u8]) -> Result<(Trailer, Vec<PackEntry>), PackError> {
        let t = decode_trailer(pack.get(pack.len().saturating_sub(TRAILER_LEN)..).ok_or(PackError::Short)?)?;
        if t.pack_len() != pack.len() as u64 {
            return Err(PackError::ObjectLen { found: pack.len() as u64, expected: t.pack_len() });
        }
        let (s, e) = t.entries_range();
        let entries = decode_entries(&t, &pack[s as usize..e as usize])?;
        Ok((t, entries))
    }

    #[test]
    fn build_and_parse_round_trip() {
        let (seg, expected) = segment_bytes(&[b"alpha", b"", b"gamma gamma"]);
        let records_end = seg.len() as u64;
        let (pack, entries, damaged) = build(7, seg.clone());
        assert_eq!((entries.clone(), damaged), (expected.clone(), 0));
        let (t, parsed) = parse(&pack).expect("parse");
        assert_eq!((t.segment, t.count, t.records_end), (7, 3, records_end));
        assert_eq!(parsed, expected);
        for e in &parsed {
            let data = &pack[e.data_offset as usize..(e.data_offset + u64::from(e.len)) as usize];
            assert_eq!(blake3::hash(data).as_bytes(), e.hash.as_bytes());
        }
        // The pack starts with the segment bytes unchanged.
        assert_eq!(&pack[..seg.len()], &seg[..]);
        assert!(key("d1", 7, &pack).starts_with("packs/d1/00000007-"));
        assert!(key("d1", 7, &pack).ends_with(".tpk"));
        assert_eq!(key("/d1/", 7, &pack), key("d1", 7, &pack));
    }

    #[test]
    fn damaged_record_is_left_out() {
        let (mut seg, expected) = segment_bytes(&[b"one", b"two"]);
        let off = expected[0].data_offset as usize;
        seg[off] ^= 0xFF;
        let (pack, entries, damaged) = build(7, seg);
        assert_eq!((entries, damaged), (vec![expected[1]], 1));
        assert_eq!(parse(&pack).expect("parse").1, vec![expected[1]]);
    }

    #[test]
    fn malformed_footers_are_refused() {
        let (seg, _) = segment_bytes(&[b"abc", b"defg"]);
        let (pack, _, _) = build(7, seg);
        let n = pack.len();
        assert_eq!(parse(&pack[..10]).err(), Some(PackError::Short));
        let mut p = pack.clone();
        p[n - 1] ^= 1;
        assert_eq!(parse(&p).err(), Some(PackError::Magic));
        let mut p = pack.clone();
        p[n - TRAILER_LEN + 1] = 2;
        assert_eq!(parse(&p).err(), Some(PackError::Version(2)));
        let mut p = pack.clone();
        p[n - TRAILER_LEN + 11] = 200; // count
        assert!(matches!(parse(&p), Err(PackError::FooterLen { .. })));
        // A huge count with a matching footer length is refused before any allocation.
        let mut p = pack.clone();
        let huge: u32 = 90_000_000;
        p[n - TRAILER_LEN + 8..n - TRAILER_LEN + 12].copy_from_slice(&huge.to_be_bytes());
        let fl = (huge as u64 * ENTRY_LEN as u64 + TRAILER_LEN as u64) as u32;
        p[n - TRAILER_LEN + 12..n - TRAILER_LEN + 16].copy_from_slice(&fl.to_be_bytes());
        assert!(decode_trailer(&p[n - TRAILER_LEN..]).is_err());
        // Flipping an entry byte breaks the checksum.
        let (t, _) = parse(&pack).expect("parse");
        let mut p = pack.clone();
        p[t.records_end as usize + 35] ^= 1;
        assert_eq!(parse(&p).err(), Some(PackError::Checksum));
        // A truncated object does not match its footer.
        let mut p = pack[..40].to_vec();
        p.extend_from_slice(&pack[n - TRAILER_LEN..]);
        assert!(parse(&p).is_err());
    }

    #[test]
    fn entry_out_of_bounds_is_refused_even_with_a_valid_checksum() {
        let (seg, mut entries) = segment_bytes(&[b"abc"]);
        let records_end = seg.len() as u64;
        entries[0].len = 1000;
        let mut pack = seg;
        pack.extend_from_slice(&encode_footer(7, records_end, &entries));
        assert_eq!(parse(&pack).err(), Some(PackError::Entry(0)));
    }
}
