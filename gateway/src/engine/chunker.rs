//! Content-defined chunking (FastCDC 2020) and BLAKE3 naming of a byte span.
//!
//! Owns the validated chunker parameters and the pure function that cuts a span into
//! chunks. Must never run on a request task for large spans (callers use
//! `spawn_blocking`), and must never accept sizes outside FastCDC's ranges: fastcdc checks
//! them only with `debug_assert!`, so a release build would silently chunk wrongly.

use fastcdc::v2020;
use proto::ChunkHash;

use super::error::EngineError;

/// FastCDC sizes, validated once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkerParams {
    min: usize,
    avg: usize,
    max: usize,
}

/// One chunk of a span: `offset` is relative to the span's start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkRef {
    pub offset: usize,
    pub len: usize,
    pub hash: ChunkHash,
}

impl ChunkerParams {
    pub fn new(min: u32, avg: u32, max: u32) -> Result<ChunkerParams, EngineError> {
        let err = |reason| EngineError::ChunkSizes { min, avg, max, reason };
        let (mn, av, mx) = (min as usize, avg as usize, max as usize);
        if !(v2020::MINIMUM_MIN..=v2020::MINIMUM_MAX).contains(&mn) {
            return Err(err("min must be within 64 B ..= 1 MiB"));
        }
        if !(v2020::AVERAGE_MIN..=v2020::AVERAGE_MAX).contains(&av) {
            return Err(err("avg must be within 256 B ..= 4 MiB"));
        }
        if !(v2020::MAXIMUM_MIN..=v2020::MAXIMUM_MAX).contains(&mx) {
            return Err(err("max must be within 1 KiB ..= 16 MiB"));
        }
        if !(mn <= av && av <= mx) {
            return Err(err("sizes must satisfy min <= avg <= max"));
        }
        if mn % 2 != 0 || av % 2 != 0 || mx % 2 != 0 {
            return Err(err("sizes must be even"));
        }
        Ok(ChunkerParams { min: mn, avg: av, max: mx })
    }
}

/// Cuts `data` into content-defined chunks and names each by its BLAKE3 hash.
pub fn chunk_and_hash(data: &[u8], params: ChunkerParams) -> Vec<ChunkRef> {
    if data.is_empty() {
        return Vec::new();
    }
    v2020::FastCDC::new(data, params.min, params.avg, params.max)
        .map(|c| {
            let bytes = &data[c.offset..c.offset + c.length];
            ChunkRef { offset: c.offset, len: c.length, hash: hash_of(bytes) }
        })
        .collect()
}

/// The BLAKE3 name of `data`.
pub fn hash_of(data: &[u8]) -> ChunkHash {
    ChunkHash(*blake3::hash(data).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_are_validated() {
        assert!(ChunkerParams::new(64, 256, 1024).is_ok());
        assert!(ChunkerParams::new(32, 256, 1024).is_err());
        assert!(ChunkerParams::new(512, 256, 1024).is_err());
        assert!(ChunkerParams::new(64, 256, 32 * 1024 * 1024).is_err());
        assert!(ChunkerParams::new(66, 258, 1025).is_err());
    }

    #[test]
    fn chunks_cover_the_span_in_order() {
        let data: Vec<u8> = (0..50_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let params = ChunkerParams::new(64, 256, 1024).expect("valid");
        let chunks = chunk_and_hash(&data, params);
        let mut next = 0;
        for c in &chunks {
            assert_eq!(c.offset, next);
            assert!(c.len <= 1024);
            assert_eq!(c.hash, hash_of(&data[c.offset..c.offset + c.len]));
            next += c.len;
        }
        assert_eq!(next, data.len());
        assert!(chunk_and_hash(&[], params).is_empty());
    }
}
