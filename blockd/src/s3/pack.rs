//! The pack format: chunks of one sealed segment as one S3 object, with a footer index.
//!
//! Owns: the footer layouts (versions 1 and 2), the encoder of version 2, the
//! length-checked decoder of both, the object key of a pack, and the scan that lists the
//! records of in-memory segment bytes. Pure functions over byte slices (no I/O), so every
//! malformed input can be tested. Must never: trust a count, offset or length read from a
//! pack before checking it against the object's own bounds, [`MAX_PACK_ENTRIES`] and
//! [`MAX_CHUNK_LEN`], or accept a footer version it does not understand.
//!
//! ```text
//! version 2 (written by this build):
//! pack = records: (record header[56] | data) for each chunk stored in this pack, laid out
//!                 contiguously from offset 0, in segment order       [0, records_end)
//!      | entries: count x 56 bytes: hash[32] | segment_offset:u64 BE | pack_offset:u64 BE
//!                 | len:u32 BE | flags:u8 (bit 0: the bytes are in this pack) | reserved[3]=0
//!      | trailer (40 bytes, the very end of the object):
//!          version:u16 BE = 2 | flags:u16 BE (bit 0: leftover pack) | segment id:u32 BE
//!          | count:u32 BE | footer_len:u32 BE (= count*56 + 40) | records_end:u64 BE
//!          | check:u64 = first 8 bytes of BLAKE3(entries | trailer[0..24])
//!          | magic "TSPKFOOT"
//! version 1 (read only): records = the segment bytes [0, records_end) unchanged (segment
//!      header first), entries of 44 bytes: hash[32] | data_offset:u64 | len:u32, every
//!      entry in the pack at its segment offset; trailer flags 0.
//! key  = "packs/<prefix>/<segment id, 8 digits>-<p|l><first 8 bytes of BLAKE3(pack), hex>.tpk"
//!        (p: the segment's primary pack, l: a leftover pack)
//! ```
//!
//! A version-2 *primary* pack's entries list every intact record of its segment (the
//! segment's manifest), with the bytes of only those this daemon uploads (it is their
//! primary); the others are marked as elsewhere (another daemon's pack, found through
//! metad). A *leftover* pack lists only the records it holds. So the footers of a daemon's
//! primary packs are enough to rebuild the index of its evicted segments.
//!
//! A reader fetches the last 40 bytes, checks magic, version and bounds, then fetches
//! exactly `footer_len - 40` bytes of entries and checks the checksum and every entry. The
//! content hash in the key makes an upload idempotent: the same pack always lands under the
//! same key.

use std::ops::ControlFlow;

use proto::ChunkHash;

use crate::format::{self, MAX_CHUNK_LEN, RECORD_HEADER_LEN, RecordHeaderError};
use crate::segment::FIRST_RECORD;

/// Bytes of the fixed trailer at the very end of a pack (every version).
pub const TRAILER_LEN: usize = 40;
/// Bytes of one version-1 footer entry.
pub const ENTRY_LEN_V1: usize = 44;
/// Bytes of one version-2 footer entry.
pub const ENTRY_LEN: usize = 56;
/// The footer version this build writes.
pub const PACK_VERSION: u16 = 2;
/// The oldest footer version this build still reads.
pub const OLDEST_READABLE: u16 = 1;
const MAGIC: &[u8; 8] = b"TSPKFOOT";
const CHECKED: usize = 24;
/// Longest pack this build reads (a segment is tens of MiB; this is a sanity bound).
pub const MAX_PACK_LEN: u64 = 16 * 1024 * 1024 * 1024;
/// Most entries a pack footer may have (a segment of 64 MiB holds ~500 chunks).
pub const MAX_PACK_ENTRIES: u32 = 1 << 20;
const TRAILER_LEFTOVER: u16 = 1;
const ENTRY_IN_PACK: u8 = 1;

/// One chunk listed in a pack footer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackEntry {
    pub hash: ChunkHash,
    /// Offset of the chunk's bytes in the segment it was sealed in.
    pub segment_offset: u64,
    pub len: u32,
    /// Offset of the chunk's bytes in this pack; `None`: uploaded by another daemon.
    pub pack_offset: Option<u64>,
}

/// A chunk to put in a pack: its bytes, or `None` to list it as stored elsewhere.
#[derive(Debug, Clone, Copy)]
pub struct Piece<'a> {
    pub hash: ChunkHash,
    pub segment_offset: u64,
    pub len: u32,
    pub data: Option<&'a [u8]>,
}

/// The decoded trailer: enough to fetch and check the entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trailer {
    pub version: u16,
    /// A leftover pack (chunks whose primary did not upload them), not a segment's manifest.
    pub leftover: bool,
    pub segment: u32,
    pub count: u32,
    pub footer_len: u32,
    pub records_end: u64,
    check: [u8; 8],
    raw_checked: [u8; CHECKED],
}

impl Trailer {
    fn entry_len(&self) -> u64 {
        if self.version == 1 { ENTRY_LEN_V1 as u64 } else { ENTRY_LEN as u64 }
    }

    /// Byte range `[start, end)` of the entries inside the pack.
    pub fn entries_range(&self) -> (u64, u64) {
        let start = self.records_end;
        (start, start + u64::from(self.count) * self.entry_len())
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
    #[error("pack footer version {0} is not understood (this build reads {OLDEST_READABLE}..={PACK_VERSION})")]
    Version(u16),
    #[error("pack trailer has unknown flags")]
    Flags,
    #[error("pack footer length {footer_len} does not match {count} entries")]
    FooterLen { count: u32, footer_len: u32 },
    #[error("pack records end {0} is out of bounds")]
    RecordsEnd(u64),
    #[error("pack footer checksum mismatch")]
    Checksum,
    #[error("pack entry {0} is out of bounds or malformed")]
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

fn encode_trailer(
    version: u16,
    flags: u16,
    segment: u32,
    count: u32,
    footer_len: u32,
    records_end: u64,
    entries: &[u8],
) -> [u8; TRAILER_LEN] {
    let mut t = [0u8; TRAILER_LEN];
    t[0..2].copy_from_slice(&version.to_be_bytes());
    t[2..4].copy_from_slice(&flags.to_be_bytes());
    t[4..8].copy_from_slice(&segment.to_be_bytes());
    t[8..12].copy_from_slice(&count.to_be_bytes());
    t[12..16].copy_from_slice(&footer_len.to_be_bytes());
    t[16..24].copy_from_slice(&records_end.to_be_bytes());
    let check = check64(entries, &t[..CHECKED]);
    t[24..32].copy_from_slice(&check);
    t[32..40].copy_from_slice(MAGIC);
    t
}

/// Builds a version-2 pack of `pieces` (in segment order) sealed in `segment`: the bytes of
/// the pieces that carry data, then the footer listing every piece. Returns the pack and
/// its entries.
pub fn build(segment: u32, leftover: bool, pieces: &[Piece<'_>]) -> (Vec<u8>, Vec<PackEntry>) {
    let data_len: u64 = pieces.iter().filter_map(|p| p.data).map(|d| format::record_len(d.len())).sum();
    let mut out = Vec::with_capacity(data_len as usize + pieces.len() * ENTRY_LEN + TRAILER_LEN);
    let mut entries = Vec::with_capacity(pieces.len());
    for p in pieces {
        let pack_offset = p.data.map(|data| {
            out.extend_from_slice(&format::encode_record_header(&p.hash, data.len() as u32));
            let at = out.len() as u64;
            out.extend_from_slice(data);
            at
        });
        entries.push(PackEntry { hash: p.hash, segment_offset: p.segment_offset, len: p.len, pack_offset });
    }
    let records_end = out.len() as u64;
    let mut raw = Vec::with_capacity(entries.len() * ENTRY_LEN);
    for e in &entries {
        raw.extend_from_slice(e.hash.as_bytes());
        raw.extend_from_slice(&e.segment_offset.to_be_bytes());
        raw.extend_from_slice(&e.pack_offset.unwrap_or(0).to_be_bytes());
        raw.extend_from_slice(&e.len.to_be_bytes());
        raw.push(if e.pack_offset.is_some() { ENTRY_IN_PACK } else { 0 });
        raw.extend_from_slice(&[0u8; 3]);
    }
    let count = entries.len() as u32;
    let footer_len = (raw.len() + TRAILER_LEN) as u32;
    let flags = if leftover { TRAILER_LEFTOVER } else { 0 };
    let t = encode_trailer(PACK_VERSION, flags, segment, count, footer_len, records_end, &raw);
    out.extend_from_slice(&raw);
    out.extend_from_slice(&t);
    (out, entries)
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
    if !(OLDEST_READABLE..=PACK_VERSION).contains(&version) {
        return Err(PackError::Version(version));
    }
    let flags = u16::from_be_bytes([t[2], t[3]]);
    let known = if version == 1 { 0 } else { TRAILER_LEFTOVER };
    if flags & !known != 0 {
        return Err(PackError::Flags);
    }
    let segment = be32(&t[4..8]);
    let count = be32(&t[8..12]);
    let footer_len = be32(&t[12..16]);
    let records_end = be64(&t[16..24]);
    let entry_len = if version == 1 { ENTRY_LEN_V1 } else { ENTRY_LEN } as u64;
    if count > MAX_PACK_ENTRIES || u64::from(count) * entry_len + TRAILER_LEN as u64 != u64::from(footer_len) {
        return Err(PackError::FooterLen { count, footer_len });
    }
    let first = if version == 1 { FIRST_RECORD } else { 0 };
    if !(first..=MAX_PACK_LEN).contains(&records_end) {
        return Err(PackError::RecordsEnd(records_end));
    }
    // A version-1 entry needs at least a record header before its data in the pack.
    if version == 1 && u64::from(count) > (records_end - FIRST_RECORD) / RECORD_HEADER_LEN as u64 {
        return Err(PackError::FooterLen { count, footer_len });
    }
    let mut check = [0u8; 8];
    check.copy_from_slice(&t[24..32]);
    let mut raw_checked = [0u8; CHECKED];
    raw_checked.copy_from_slice(&t[..CHECKED]);
    Ok(Trailer {
        version,
        leftover: flags & TRAILER_LEFTOVER != 0,
        segment,
        count,
        footer_len,
        records_end,
        check,
        raw_checked,
    })
}

/// Decodes and checks the entries (exactly the bytes of [`Trailer::entries_range`]).
pub fn decode_entries(trailer: &Trailer, bytes: &[u8]) -> Result<Vec<PackEntry>, PackError> {
    let (start, end) = trailer.entries_range();
    if bytes.len() as u64 != end - start {
        return Err(PackError::Short);
    }
    if check64(bytes, &trailer.raw_checked) != trailer.check {
        return Err(PackError::Checksum);
    }
    let entry_len = trailer.entry_len() as usize;
    let mut out = Vec::with_capacity(trailer.count as usize);
    // The bytes of a stored chunk lie inside the records region, after a record header.
    let in_records = |offset: u64, len: u32, min: u64| {
        offset >= min && offset.checked_add(u64::from(len)).is_some_and(|end| end <= trailer.records_end)
    };
    for (i, e) in bytes.chunks_exact(entry_len).enumerate() {
        let bad = PackError::Entry(i as u32);
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&e[..32]);
        let hash = ChunkHash(hash);
        let entry = if trailer.version == 1 {
            let data_offset = be64(&e[32..40]);
            let len = be32(&e[40..44]);
            if len as usize > MAX_CHUNK_LEN || !in_records(data_offset, len, FIRST_RECORD + RECORD_HEADER_LEN as u64) {
                return Err(bad);
            }
            PackEntry { hash, segment_offset: data_offset, len, pack_offset: Some(data_offset) }
        } else {
            let segment_offset = be64(&e[32..40]);
            let pack_offset = be64(&e[40..48]);
            let len = be32(&e[48..52]);
            let flags = e[52];
            if flags & !ENTRY_IN_PACK != 0 || e[53..56] != [0, 0, 0] || len as usize > MAX_CHUNK_LEN {
                return Err(bad);
            }
            let seg_ok = segment_offset >= FIRST_RECORD + RECORD_HEADER_LEN as u64
                && segment_offset.checked_add(u64::from(len)).is_some_and(|end| end <= MAX_PACK_LEN);
            if !seg_ok {
                return Err(bad);
            }
            let pack_offset = if flags & ENTRY_IN_PACK != 0 {
                if !in_records(pack_offset, len, RECORD_HEADER_LEN as u64) {
                    return Err(bad);
                }
                Some(pack_offset)
            } else {
                if pack_offset != 0 {
                    return Err(bad);
                }
                None
            };
            PackEntry { hash, segment_offset, len, pack_offset }
        };
        out.push(entry);
    }
    Ok(out)
}

/// Decodes a whole pack held in memory (trailer, object length, entries).
pub fn parse(pack: &[u8]) -> Result<(Trailer, Vec<PackEntry>), PackError> {
    let tail = pack.get(pack.len().checked_sub(TRAILER_LEN).ok_or(PackError::Short)?..).ok_or(PackError::Short)?;
    let t = decode_trailer(tail)?;
    if t.pack_len() != pack.len() as u64 {
        return Err(PackError::ObjectLen { found: pack.len() as u64, expected: t.pack_len() });
    }
    let (s, e) = t.entries_range();
    let entries = decode_entries(&t, pack.get(s as usize..e as usize).ok_or(PackError::Short)?)?;
    Ok((t, entries))
}

/// A record found in segment bytes by [`scan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScannedRecord {
    pub hash: ChunkHash,
    pub data_offset: u64,
    pub len: u32,
    /// Whether the bytes match the hash.
    pub intact: bool,
}

/// Walks the records of in-memory segment bytes from [`FIRST_RECORD`]; stops at the first
/// zero, torn or unknown header or at the end. Returns where it stopped.
pub fn scan(bytes: &[u8], mut visit: impl FnMut(ScannedRecord) -> ControlFlow<()>) -> u64 {
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
        let rec = ScannedRecord { hash: header.hash, data_offset: start as u64, len: header.len, intact };
        if visit(rec).is_break() {
            return pos as u64;
        }
        pos = start + header.len as usize;
    }
}

/// The object key of a pack of `segment`.
pub fn key(prefix: &str, segment: u32, leftover: bool, pack: &[u8]) -> String {
    let h = blake3::hash(pack);
    let hex: String = h.as_bytes()[..8].iter().map(|b| format!("{b:02x}")).collect();
    let kind = if leftover { 'l' } else { 'p' };
    format!("{}{segment:08}-{kind}{hex}.tpk", key_prefix(prefix))
}

/// The common prefix of every pack key of a daemon whose key prefix is `prefix`.
pub fn key_prefix(prefix: &str) -> String {
    let prefix = prefix.trim_matches('/');
    if prefix.is_empty() { "packs/".to_string() } else { format!("packs/{prefix}/") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hash(c: &[u8]) -> ChunkHash {
        ChunkHash(*blake3::hash(c).as_bytes())
    }

    /// Pieces as if `chunks` were sealed one after another in a segment; those at the
    /// indexes in `here` carry their bytes.
    fn pieces<'a>(chunks: &[&'a [u8]], here: &[usize]) -> Vec<Piece<'a>> {
        let mut at = FIRST_RECORD;
        chunks
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let p = Piece {
                    hash: hash(c),
                    segment_offset: at + RECORD_HEADER_LEN as u64,
                    len: c.len() as u32,
                    data: here.contains(&i).then_some(*c),
                };
                at += format::record_len(c.len());
                p
            })
            .collect()
    }

    /// A version-1 pack (the whole segment image plus a 44-byte-entry footer), as builds
    /// before version 2 wrote them.
    fn v1_pack(segment: u32, chunks: &[&[u8]]) -> Vec<u8> {
        let mut out = format::encode_segment_header(segment).to_vec();
        let mut raw = Vec::new();
        for c in chunks {
            out.extend_from_slice(&format::encode_record_header(&hash(c), c.len() as u32));
            raw.extend_from_slice(hash(c).as_bytes());
            raw.extend_from_slice(&(out.len() as u64).to_be_bytes());
            raw.extend_from_slice(&(c.len() as u32).to_be_bytes());
            out.extend_from_slice(c);
        }
        let count = chunks.len() as u32;
        let footer_len = (raw.len() + TRAILER_LEN) as u32;
        let t = encode_trailer(1, 0, segment, count, footer_len, out.len() as u64, &raw);
        out.extend_from_slice(&raw);
        out.extend_from_slice(&t);
        out
    }

    #[test]
    fn build_and_parse_round_trip() {
        let chunks: [&[u8]; 3] = [b"alpha", b"", b"gamma gamma"];
        let ps = pieces(&chunks, &[0, 1]);
        let (pack, entries) = build(7, false, &ps);
        let (t, parsed) = parse(&pack).expect("parse");
        assert_eq!((t.version, t.leftover, t.segment, t.count), (2, false, 7, 3));
        assert_eq!(parsed, entries);
        assert_eq!(parsed[2].pack_offset, None, "the third is listed as stored elsewhere");
        for (e, p) in parsed.iter().zip(&ps) {
            assert_eq!((e.hash, e.segment_offset, e.len), (p.hash, p.segment_offset, p.len));
            if let Some(off) = e.pack_offset {
                let data = &pack[off as usize..(off + u64::from(e.len)) as usize];
                assert_eq!(blake3::hash(data).as_bytes(), e.hash.as_bytes());
            }
        }
        // The records region scans like a segment's records (a header before each chunk).
        assert_eq!(t.records_end, format::record_len(5) + format::record_len(0));
        let (lpack, _) = build(7, true, &ps[2..]);
        assert!(parse(&lpack).expect("parse").0.leftover);
        let k = key("d1", 7, false, &pack);
        assert!(k.starts_with("packs/d1/00000007-p") && k.ends_with(".tpk"), "{k}");
        assert!(key("d1", 7, true, &lpack).starts_with("packs/d1/00000007-l"));
        assert_eq!(key("/d1/", 7, false, &pack), k);
        assert_ne!(key("d1", 7, false, &lpack), key("d1", 7, true, &lpack));
    }

    #[test]
    fn version_1_packs_are_still_read() {
        let pack = v1_pack(3, &[b"one", b"two two"]);
        let (t, entries) = parse(&pack).expect("v1 parses");
        assert_eq!((t.version, t.segment, t.count, t.leftover), (1, 3, 2, false));
        for e in &entries {
            let off = e.pack_offset.expect("a v1 pack holds every entry");
            assert_eq!(off, e.segment_offset);
            let data = &pack[off as usize..(off + u64::from(e.len)) as usize];
            assert_eq!(blake3::hash(data).as_bytes(), e.hash.as_bytes());
        }
    }

    #[test]
    fn malformed_footers_are_refused() {
        let chunks: [&[u8]; 2] = [b"abc", b"defg"];
        let (pack, _) = build(7, false, &pieces(&chunks, &[0]));
        let n = pack.len();
        let tr = n - TRAILER_LEN;
        assert_eq!(parse(&pack[..10]).err(), Some(PackError::Short));
        let mut p = pack.clone();
        p[n - 1] ^= 1;
        assert_eq!(parse(&p).err(), Some(PackError::Magic));
        for v in [0u16, 3, 0xFFFF] {
            let mut p = pack.clone();
            p[tr..tr + 2].copy_from_slice(&v.to_be_bytes());
            assert_eq!(parse(&p).err(), Some(PackError::Version(v)));
        }
        let mut p = pack.clone();
        p[tr + 3] = 2; // unknown trailer flag
        assert_eq!(parse(&p).err(), Some(PackError::Flags));
        let mut p = pack.clone();
        p[tr + 11] = 200; // count
        assert!(matches!(parse(&p), Err(PackError::FooterLen { .. })));
        // A huge count with a matching footer length is refused before any allocation.
        let mut p = pack.clone();
        let huge: u32 = 70_000_000;
        p[tr + 8..tr + 12].copy_from_slice(&huge.to_be_bytes());
        let fl = (u64::from(huge) * ENTRY_LEN as u64 + TRAILER_LEN as u64) as u32;
        p[tr + 12..tr + 16].copy_from_slice(&fl.to_be_bytes());
        assert!(matches!(decode_trailer(&p[tr..]), Err(PackError::FooterLen { .. })));
        // Records end past the sanity bound.
        let mut p = pack.clone();
        p[tr + 16..tr + 24].copy_from_slice(&(MAX_PACK_LEN + 1).to_be_bytes());
        assert_eq!(decode_trailer(&p[tr..]).err(), Some(PackError::RecordsEnd(MAX_PACK_LEN + 1)));
        // Flipping an entry byte breaks the checksum.
        let (t, _) = parse(&pack).expect("parse");
        let mut p = pack.clone();
        p[t.records_end as usize + 35] ^= 1;
        assert_eq!(parse(&p).err(), Some(PackError::Checksum));
        // A truncated object does not match its footer.
        let mut p = pack[..10].to_vec();
        p.extend_from_slice(&pack[t.records_end as usize..]);
        assert!(matches!(parse(&p), Err(PackError::ObjectLen { .. })));
        // A v1 trailer with v2 flags is refused.
        let v1 = v1_pack(3, &[b"x"]);
        let mut p = v1.clone();
        let tr1 = p.len() - TRAILER_LEN;
        p[tr1 + 3] = 1;
        assert_eq!(parse(&p).err(), Some(PackError::Flags));
    }

    /// Re-encodes `entries` under a valid checksum, so only the entry checks can refuse.
    fn with_entries(records: &[u8], raw: &[u8]) -> Vec<u8> {
        let mut pack = records.to_vec();
        let count = (raw.len() / ENTRY_LEN) as u32;
        let t = encode_trailer(2, 0, 7, count, (raw.len() + TRAILER_LEN) as u32, records.len() as u64, raw);
        pack.extend_from_slice(raw);
        pack.extend_from_slice(&t);
        pack
    }

    #[test]
    fn bad_entries_are_refused_even_with_a_valid_checksum() {
        let chunks: [&[u8]; 1] = [b"abc"];
        let (pack, _) = build(7, false, &pieces(&chunks, &[0]));
        let (t, _) = parse(&pack).expect("parse");
        let records = &pack[..t.records_end as usize];
        let good = pack[t.records_end as usize..t.records_end as usize + ENTRY_LEN].to_vec();
        assert!(parse(&with_entries(records, &good)).is_ok());
        type Mutation = fn(&mut Vec<u8>);
        let cases: Vec<(&str, Mutation)> = vec![
            ("length past the records", |e| e[48..52].copy_from_slice(&1000u32.to_be_bytes())),
            ("pack offset before a header", |e| e[40..48].copy_from_slice(&3u64.to_be_bytes())),
            ("segment offset before the first record", |e| e[32..40].copy_from_slice(&8u64.to_be_bytes())),
            ("segment offset overflowing", |e| e[32..40].copy_from_slice(&u64::MAX.to_be_bytes())),
            ("unknown entry flag", |e| e[52] = 3),
            ("reserved bytes", |e| e[54] = 1),
            ("elsewhere entry with an offset", |e| e[52] = 0),
        ];
        for (what, mutate) in cases {
            let mut e = good.clone();
            mutate(&mut e);
            assert_eq!(parse(&with_entries(records, &e)).err(), Some(PackError::Entry(0)), "{what}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Random bytes never panic the decoder, and are (almost always) refused.
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse(&bytes);
            if bytes.len() >= TRAILER_LEN {
                let _ = decode_trailer(&bytes[bytes.len() - TRAILER_LEN..]);
            }
        }

        /// A valid pack with any byte of its footer changed is refused or decodes to the
        /// same entries (never a panic, never a different answer silently).
        #[test]
        fn mutated_footers_are_refused(at in 0usize..200, bit in 0u8..8, n in 1usize..4) {
            let chunks: Vec<Vec<u8>> = (0..n).map(|i| vec![i as u8; 10 + i]).collect();
            let refs: Vec<&[u8]> = chunks.iter().map(|c| c.as_slice()).collect();
            let (pack, entries) = build(9, false, &pieces(&refs, &[0]));
            let (t, _) = parse(&pack).expect("valid");
            let footer = pack.len() - t.records_end as usize;
            let i = t.records_end as usize + at % footer;
            let mut p = pack.clone();
            p[i] ^= 1 << bit;
            if let Ok((_, got)) = parse(&p) {
                prop_assert_eq!(got, entries);
            }
        }

        /// A valid trailer followed by random entries never panics.
        #[test]
        fn random_entries_never_panic(raw in proptest::collection::vec(any::<u8>(), ENTRY_LEN * 2)) {
            let records = vec![0u8; 200];
            let _ = parse(&with_entries(&records, &raw));
        }
    }
}
