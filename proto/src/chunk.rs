//! Chunk names: a chunk is immutable and named by the BLAKE3 hash of its bytes (invariant 5).

use std::fmt;

/// Length of a chunk name in bytes.
pub const HASH_LEN: usize = 32;

/// The BLAKE3 hash that names a chunk.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkHash(pub [u8; HASH_LEN]);

impl ChunkHash {
    /// Parses a name from exactly 32 bytes (e.g. a protobuf `bytes` field).
    pub fn from_slice(bytes: &[u8]) -> Option<ChunkHash> {
        <[u8; HASH_LEN]>::try_from(bytes).ok().map(ChunkHash)
    }

    pub fn as_bytes(&self) -> &[u8; HASH_LEN] {
        &self.0
    }
}

impl fmt::Display for ChunkHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ChunkHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkHash({self})")
    }
}
