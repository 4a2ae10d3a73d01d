//! What the tier asks the cluster: which block daemons are live (to know which chunks it is
//! primary for), and where chunks are in S3 (metad's RecordPacks / LocateChunks).
//!
//! Owns: the [`Directory`] seam and its implementation over the metad client
//! (`heartbeat::Metad`), including the checks of metad's answers (hash length, a location
//! for a hash that was asked, key and range bounds). Must never: trust a location for
//! anything but finding bytes (every byte read through one is BLAKE3-verified), or send a
//! RecordPacks or LocateChunks batch over metad's limits.

use std::collections::HashSet;

use futures::future::BoxFuture;
use proto::{ChunkHash, pb};

use super::state::PackLoc;
use crate::format::MAX_CHUNK_LEN;
use crate::heartbeat::{HeartbeatError, Metad};

/// Most locations one RecordPacks call carries (metad's limit).
pub const MAX_RECORD_BATCH: usize = 65_536;
/// Most hashes one LocateChunks call asks for (metad's limit).
pub const MAX_LOCATE_BATCH: usize = 4096;
const MAX_KEY_LEN: usize = 1024;

/// Why the directory could not answer.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("metad: {0}")]
    Metad(#[from] HeartbeatError),
    #[error("metad answered a malformed {what}")]
    Malformed { what: &'static str },
}

/// The cluster as the tier sees it.
pub(crate) trait Directory: Send + Sync + 'static {
    /// Ids of the block daemons metad considers live.
    fn live_daemons(&self) -> BoxFuture<'_, Result<Vec<u64>, DirectoryError>>;
    /// Records where chunks are (at most [`MAX_RECORD_BATCH`]).
    fn record_packs(&self, locations: Vec<(ChunkHash, PackLoc)>) -> BoxFuture<'_, Result<(), DirectoryError>>;
    /// The known locations of `hashes` (at most [`MAX_LOCATE_BATCH`]); unknown ones are left out.
    fn locate_chunks(&self, hashes: Vec<ChunkHash>)
    -> BoxFuture<'_, Result<Vec<(ChunkHash, PackLoc)>, DirectoryError>>;
}

impl Directory for Metad {
    fn live_daemons(&self) -> BoxFuture<'_, Result<Vec<u64>, DirectoryError>> {
        Box::pin(async move {
            let reply = self.list_block_daemons().await?;
            Ok(reply.daemons.iter().filter(|d| d.live).map(|d| d.id).collect())
        })
    }

    fn record_packs(&self, locations: Vec<(ChunkHash, PackLoc)>) -> BoxFuture<'_, Result<(), DirectoryError>> {
        Box::pin(async move {
            let locations = locations
                .into_iter()
                .map(|(hash, l)| pb::PackLocation {
                    hash: hash.as_bytes().to_vec(),
                    pack: l.key,
                    offset: l.offset,
                    length: l.len,
                })
                .collect();
            self.record_packs(pb::RecordPacksRequest { locations }).await?;
            Ok(())
        })
    }

    fn locate_chunks(
        &self,
        hashes: Vec<ChunkHash>,
    ) -> BoxFuture<'_, Result<Vec<(ChunkHash, PackLoc)>, DirectoryError>> {
        Box::pin(async move {
            let asked: HashSet<ChunkHash> = hashes.iter().copied().collect();
            let req = pb::LocateChunksRequest { hashes: hashes.iter().map(|h| h.as_bytes().to_vec()).collect() };
            let reply = self.locate_chunks(req).await?;
            checked_locations(&asked, reply.locations)
        })
    }
}

/// Metad's answer to LocateChunks, checked: only asked hashes, keys and ranges in bounds.
pub(crate) fn checked_locations(
    asked: &HashSet<ChunkHash>,
    locations: Vec<pb::PackLocation>,
) -> Result<Vec<(ChunkHash, PackLoc)>, DirectoryError> {
    if locations.len() > asked.len() {
        return Err(DirectoryError::Malformed { what: "LocateChunks reply (more locations than hashes asked)" });
    }
    locations
        .into_iter()
        .map(|l| {
            let hash: [u8; 32] =
                l.hash.as_slice().try_into().map_err(|_| DirectoryError::Malformed { what: "chunk hash" })?;
            let hash = ChunkHash(hash);
            if !asked.contains(&hash) {
                return Err(DirectoryError::Malformed { what: "location of a chunk that was not asked for" });
            }
            let ok = !l.pack.is_empty()
                && l.pack.len() <= MAX_KEY_LEN
                && l.length as usize <= MAX_CHUNK_LEN
                && l.offset.checked_add(u64::from(l.length)).is_some();
            if !ok {
                return Err(DirectoryError::Malformed { what: "pack location" });
            }
            Ok((hash, PackLoc { key: l.pack, offset: l.offset, len: l.length }))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locate_answers_are_checked() {
        let h = ChunkHash([1; 32]);
        let asked: HashSet<ChunkHash> = [h].into();
        let good = pb::PackLocation { hash: h.as_bytes().to_vec(), pack: "packs/a".into(), offset: 56, length: 3 };
        assert_eq!(checked_locations(&asked, vec![good.clone()]).expect("ok").len(), 1);
        let bad = [
            pb::PackLocation { hash: vec![1; 31], ..good.clone() },
            pb::PackLocation { hash: vec![2; 32], ..good.clone() },
            pb::PackLocation { pack: String::new(), ..good.clone() },
            pb::PackLocation { pack: "k".repeat(2000), ..good.clone() },
            pb::PackLocation { length: u32::MAX, ..good.clone() },
            pb::PackLocation { offset: u64::MAX, ..good.clone() },
        ];
        for b in bad {
            assert!(checked_locations(&asked, vec![b.clone()]).is_err(), "{b:?}");
        }
        assert!(checked_locations(&asked, vec![good.clone(), good]).is_err(), "more answers than questions");
    }
}
