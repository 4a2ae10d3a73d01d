//! The on-disk segment format: the segment file header and the record header.
//!
//! Owns: byte layouts, versions and their checks, as pure functions over byte arrays (no
//! I/O), so they can be tested exhaustively. Must never: trust a length it decodes without
//! checking it against [`MAX_CHUNK_LEN`], or accept a version it does not understand.
//!
//! ```text
//! segment file header (32 bytes, at offset 0):
//!   "TSSEGMNT" | version:u16 BE = 1 | flags:u16 = 0 | segment id:u32 BE | reserved[8] = 0
//!   | check:u64 = first 8 bytes of BLAKE3(bytes 0..24)
//! record (header of 56 bytes, then `len` bytes of chunk data):
//!   "TSRC" | version:u8 = 1 | flags:u8 = 0 | reserved:u16 = 0 | len:u32 BE | hash[32]
//!   | reserved:u32 = 0 | check:u64 = first 8 bytes of BLAKE3(bytes 0..48)
//! ```
//!
//! The header checksum makes a torn or zeroed header detectable; an all-zero header is the
//! normal end of the written part of a preallocated segment.

use proto::ChunkHash;
use proto::chunk::HASH_LEN;
pub use proto::chunk_frame::MAX_CHUNK_LEN;

pub const SEGMENT_HEADER_LEN: usize = 32;
pub const SEGMENT_VERSION: u16 = 1;
const SEGMENT_MAGIC: &[u8; 8] = b"TSSEGMNT";
const SEGMENT_CHECKED: usize = 24;

pub const RECORD_HEADER_LEN: usize = 56;
pub const RECORD_VERSION: u8 = 1;
const RECORD_MAGIC: &[u8; 4] = b"TSRC";
const RECORD_CHECKED: usize = 48;

/// Why a segment file header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentHeaderError {
    Magic,
    Checksum,
    Flags,
    /// A format version this build does not understand.
    Version(u16),
}

/// Why a record header ends the readable part of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordHeaderError {
    /// All zero: the unwritten (preallocated) tail.
    Zero,
    /// Magic, checksum or reserved fields wrong: a torn write or damage.
    Invalid,
    /// A valid header of a version this build does not understand.
    Version(u8),
    /// The header claims more than [`MAX_CHUNK_LEN`] bytes.
    TooLong(u32),
}

/// A decoded record header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    pub len: u32,
    pub hash: ChunkHash,
}

fn check64(bytes: &[u8]) -> [u8; 8] {
    let h = blake3::hash(bytes);
    let mut out = [0u8; 8];
    out.copy_from_slice(&h.as_bytes()[..8]);
    out
}

pub fn encode_segment_header(id: u32) -> [u8; SEGMENT_HEADER_LEN] {
    let mut h = [0u8; SEGMENT_HEADER_LEN];
    h[..8].copy_from_slice(SEGMENT_MAGIC);
    h[8..10].copy_from_slice(&SEGMENT_VERSION.to_be_bytes());
    h[12..16].copy_from_slice(&id.to_be_bytes());
    let check = check64(&h[..SEGMENT_CHECKED]);
    h[SEGMENT_CHECKED..].copy_from_slice(&check);
    h
}

/// Decodes a segment file header and returns the segment id it names.
pub fn decode_segment_header(h: &[u8; SEGMENT_HEADER_LEN]) -> Result<u32, SegmentHeaderError> {
    if &h[..8] != SEGMENT_MAGIC {
        return Err(SegmentHeaderError::Magic);
    }
    if h[SEGMENT_CHECKED..] != check64(&h[..SEGMENT_CHECKED]) {
        return Err(SegmentHeaderError::Checksum);
    }
    let version = u16::from_be_bytes([h[8], h[9]]);
    if version != SEGMENT_VERSION {
        return Err(SegmentHeaderError::Version(version));
    }
    if h[10..12] != [0, 0] || h[16..24] != [0; 8] {
        return Err(SegmentHeaderError::Flags);
    }
    Ok(u32::from_be_bytes([h[12], h[13], h[14], h[15]]))
}

/// Encodes a record header for `len` bytes of data named `hash`.
pub fn encode_record_header(hash: &ChunkHash, len: u32) -> [u8; RECORD_HEADER_LEN] {
    let mut h = [0u8; RECORD_HEADER_LEN];
    h[..4].copy_from_slice(RECORD_MAGIC);
    h[4] = RECORD_VERSION;
    h[8..12].copy_from_slice(&len.to_be_bytes());
    h[12..12 + HASH_LEN].copy_from_slice(hash.as_bytes());
    let check = check64(&h[..RECORD_CHECKED]);
    h[RECORD_CHECKED..].copy_from_slice(&check);
    h
}

/// Decodes a record header. The length is checked against [`MAX_CHUNK_LEN`].
pub fn decode_record_header(h: &[u8; RECORD_HEADER_LEN]) -> Result<RecordHeader, RecordHeaderError> {
    if h.iter().all(|b| *b == 0) {
        return Err(RecordHeaderError::Zero);
    }
    if &h[..4] != RECORD_MAGIC || h[RECORD_CHECKED..] != check64(&h[..RECORD_CHECKED]) {
        return Err(RecordHeaderError::Invalid);
    }
    if h[4] != RECORD_VERSION {
        return Err(RecordHeaderError::Version(h[4]));
    }
    if h[5] != 0 || h[6..8] != [0, 0] || h[44..48] != [0; 4] {
        return Err(RecordHeaderError::Invalid);
    }
    let len = u32::from_be_bytes([h[8], h[9], h[10], h[11]]);
    if len as usize > MAX_CHUNK_LEN {
        return Err(RecordHeaderError::TooLong(len));
    }
    let hash = ChunkHash::from_slice(&h[12..12 + HASH_LEN]).ok_or(RecordHeaderError::Invalid)?;
    Ok(RecordHeader { len, hash })
}

/// Bytes a record of `len` data bytes occupies in a segment.
pub fn record_len(len: usize) -> u64 {
    (RECORD_HEADER_LEN + len) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(data: &[u8]) -> ChunkHash {
        ChunkHash(*blake3::hash(data).as_bytes())
    }

    #[test]
    fn segment_header_round_trips_and_rejects_damage() {
        let h = encode_segment_header(7);
        assert_eq!(decode_segment_header(&h), Ok(7));
        let mut bad = h;
        bad[13] ^= 1;
        assert_eq!(decode_segment_header(&bad), Err(SegmentHeaderError::Checksum));
        let mut bad = h;
        bad[0] = b'X';
        assert_eq!(decode_segment_header(&bad), Err(SegmentHeaderError::Magic));
    }

    #[test]
    fn unknown_segment_version_is_refused() {
        let mut h = encode_segment_header(1);
        h[8..10].copy_from_slice(&2u16.to_be_bytes());
        let check = check64(&h[..SEGMENT_CHECKED]);
        h[SEGMENT_CHECKED..].copy_from_slice(&check);
        assert_eq!(decode_segment_header(&h), Err(SegmentHeaderError::Version(2)));
    }

    #[test]
    fn record_header_round_trips() {
        let hh = hash(b"abc");
        let h = encode_record_header(&hh, 3);
        assert_eq!(decode_record_header(&h), Ok(RecordHeader { len: 3, hash: hh }));
    }

    #[test]
    fn record_header_damage_is_detected() {
        let h = encode_record_header(&hash(b"abc"), 3);
        assert_eq!(decode_record_header(&[0; RECORD_HEADER_LEN]), Err(RecordHeaderError::Zero));
        for i in 0..RECORD_HEADER_LEN {
            let mut bad = h;
            bad[i] ^= 0x40;
            assert!(decode_record_header(&bad).is_err(), "flip at byte {i} went unnoticed");
        }
        // A torn header: the first half written, the rest still zero.
        let mut torn = [0u8; RECORD_HEADER_LEN];
        torn[..28].copy_from_slice(&h[..28]);
        assert_eq!(decode_record_header(&torn), Err(RecordHeaderError::Invalid));
    }

    #[test]
    fn record_version_and_length_limits() {
        let mut h = encode_record_header(&hash(b"x"), 1);
        h[4] = 9;
        let check = check64(&h[..RECORD_CHECKED]);
        h[RECORD_CHECKED..].copy_from_slice(&check);
        assert_eq!(decode_record_header(&h), Err(RecordHeaderError::Version(9)));
        let h = encode_record_header(&hash(b"x"), MAX_CHUNK_LEN as u32 + 1);
        assert_eq!(decode_record_header(&h), Err(RecordHeaderError::TooLong(MAX_CHUNK_LEN as u32 + 1)));
    }
}
