//! Durable bookkeeping of the S3 tier in the daemon's own redb file: where each segment is
//! in its life (packed, located, evicted) and the pack location of chunks.
//!
//! Owns the tables `tier_meta` (the version stamp), `tier_segments` (segment id -> state,
//! time of the state's start) and `chunk_packs` (hash -> pack key, offset, length: the
//! chunks of this daemon's own packs, and locations learned from metad). Every write is
//! `Durability::Immediate` and made only after the fact it records is true (a segment is
//! `Packed` after its pack's PUT and RecordPacks succeeded; `Evicted` is written before its
//! file is truncated, so a crash in between leaves it readable from S3).
//!
//! The version stamp is written last, when the tables are complete: a file without it (a
//! new daemon, a lost and rebuilt `blockd.redb`, or one written before version 2, whose
//! `packs` table is dropped) is rebuilt from the daemon's pack footers in S3 first. A
//! stamp of another version is refused. Must never: mark a segment evicted whose every
//! record is not located in S3.

use std::collections::BTreeMap;

use proto::ChunkHash;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use super::TierError;
use crate::error::{BlockdError, index_err};

/// Version of these tables this build writes and reads.
pub const TIER_STATE_VERSION: u64 = 2;

const META: TableDefinition<&str, u64> = TableDefinition::new("tier_meta");
/// segment id -> (state, unix ms the state began)
const SEGMENTS: TableDefinition<u32, (u8, u64)> = TableDefinition::new("tier_segments");
/// hash -> (pack key, offset of the bytes in the pack, length)
const CHUNK_PACKS: TableDefinition<&[u8; 32], (&str, u64, u32)> = TableDefinition::new("chunk_packs");
/// Version 1's table (segment id -> (key, len, evicted)); dropped once rebuilt.
const OLD_PACKS: TableDefinition<u32, (&str, u64, bool)> = TableDefinition::new("packs");
const KEY_VERSION: &str = "version";

const PACKED: u8 = 1;
const LOCATED: u8 = 2;
const EVICTED: u8 = 3;

/// Where a sealed segment is in the tier. A sealed segment without a state has not had its
/// own pack uploaded yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegTier {
    /// Its pack (the records this daemon is primary for) is in S3 and recorded in metad;
    /// some records may still wait for another daemon's pack. `at_ms`: when (unix ms).
    Packed { at_ms: u64 },
    /// Every record is located in S3: the local copy is cache.
    Located,
    /// The file is truncated to its header; reads go to S3.
    Evicted,
}

/// A chunk's bytes in a pack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackLoc {
    pub key: String,
    pub offset: u64,
    pub len: u32,
}

fn encode(s: SegTier) -> (u8, u64) {
    match s {
        SegTier::Packed { at_ms } => (PACKED, at_ms),
        SegTier::Located => (LOCATED, 0),
        SegTier::Evicted => (EVICTED, 0),
    }
}

/// The segment states, or `None` when the tables are not stamped (to be rebuilt).
pub fn load(db: &Database) -> Result<Option<BTreeMap<u32, SegTier>>, BlockdError> {
    let txn = db.begin_read().map_err(index_err)?;
    let found = match txn.open_table(META) {
        Ok(t) => t.get(KEY_VERSION).map_err(index_err)?.map(|v| v.value()),
        Err(redb::TableError::TableDoesNotExist(_)) => None,
        Err(e) => return Err(index_err(e)),
    };
    match found {
        None => return Ok(None),
        Some(TIER_STATE_VERSION) => {}
        Some(found) => return Err(TierError::StateVersion { found, supported: TIER_STATE_VERSION }.into()),
    }
    let table = match txn.open_table(SEGMENTS) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Some(BTreeMap::new())),
        Err(e) => return Err(index_err(e)),
    };
    let mut out = BTreeMap::new();
    for entry in table.iter().map_err(index_err)? {
        let (k, v) = entry.map_err(index_err)?;
        let state = match v.value() {
            (PACKED, at_ms) => SegTier::Packed { at_ms },
            (LOCATED, _) => SegTier::Located,
            (EVICTED, _) => SegTier::Evicted,
            (other, _) => return Err(TierError::StateValue { segment: k.value(), found: other }.into()),
        };
        out.insert(k.value(), state);
    }
    Ok(Some(out))
}

/// Records chunk locations and segment states in one fsynced transaction; with `stamp`,
/// also the version stamp (and drops version 1's table).
pub fn commit(
    db: &Database,
    rows: &[(ChunkHash, PackLoc)],
    segments: &[(u32, SegTier)],
    stamp: bool,
) -> Result<(), BlockdError> {
    let mut txn = db.begin_write().map_err(index_err)?;
    txn.set_durability(Durability::Immediate).map_err(index_err)?;
    {
        let mut t = txn.open_table(CHUNK_PACKS).map_err(index_err)?;
        for (hash, loc) in rows {
            t.insert(hash.as_bytes(), (loc.key.as_str(), loc.offset, loc.len)).map_err(index_err)?;
        }
        let mut s = txn.open_table(SEGMENTS).map_err(index_err)?;
        for (id, state) in segments {
            s.insert(*id, encode(*state)).map_err(index_err)?;
        }
        if stamp {
            txn.open_table(META).map_err(index_err)?.insert(KEY_VERSION, TIER_STATE_VERSION).map_err(index_err)?;
        }
    }
    if stamp {
        match txn.delete_table(OLD_PACKS) {
            Ok(_) | Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(index_err(e)),
        }
    }
    txn.commit().map_err(index_err)
}

/// The recorded pack locations of `hashes`, in order (`None` where unknown).
pub fn locate(db: &Database, hashes: &[ChunkHash]) -> Result<Vec<Option<PackLoc>>, BlockdError> {
    let txn = db.begin_read().map_err(index_err)?;
    let table = match txn.open_table(CHUNK_PACKS) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(vec![None; hashes.len()]),
        Err(e) => return Err(index_err(e)),
    };
    hashes
        .iter()
        .map(|h| {
            Ok(table.get(h.as_bytes()).map_err(index_err)?.map(|v| {
                let (key, offset, len) = v.value();
                PackLoc { key: key.to_string(), offset, len }
            }))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_and_locations_round_trip_and_the_stamp_is_checked() {
        let dir = tempfile::tempdir().expect("tmp");
        let db = Database::create(dir.path().join("t.redb")).expect("db");
        assert_eq!(load(&db).expect("load"), None, "unstamped: to be rebuilt");
        let h = ChunkHash([7; 32]);
        let loc = PackLoc { key: "packs/a/1".into(), offset: 56, len: 9 };
        commit(&db, &[(h, loc.clone())], &[(1, SegTier::Packed { at_ms: 5 }), (2, SegTier::Evicted)], true)
            .expect("commit");
        let states = load(&db).expect("load").expect("stamped");
        assert_eq!(states.get(&1), Some(&SegTier::Packed { at_ms: 5 }));
        assert_eq!(states.get(&2), Some(&SegTier::Evicted));
        assert_eq!(locate(&db, &[h, ChunkHash([1; 32])]).expect("locate"), vec![Some(loc), None]);
        let txn = db.begin_write().expect("txn");
        txn.open_table(META).expect("meta").insert(KEY_VERSION, 9).expect("insert");
        txn.commit().expect("commit");
        assert!(matches!(
            load(&db),
            Err(BlockdError::Tier(TierError::StateVersion { found: 9, supported: TIER_STATE_VERSION }))
        ));
    }
}
