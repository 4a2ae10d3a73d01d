//! The chunk index: hash -> (segment, data offset, length), in the daemon's own redb file.
//!
//! Owns: `blockd.redb` and its schema (tables `meta`, `chunks`, `segments`), the schema
//! version stamp, and the totals (distinct chunks, content bytes) kept in the same
//! transaction as the entries so the gauges are exact across restarts. Every commit is
//! `Durability::Immediate` (fsynced) and is only made after the segment bytes it points to
//! were fsynced.
//!
//! Must never: be the only copy of anything. Everything here can be rebuilt by scanning the
//! segments (see `store::recover`); `segments.end` records how far each segment has been
//! indexed so recovery only rescans the unindexed tail.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use proto::ChunkHash;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use crate::error::{BlockdError, index_err};

/// Schema version this build writes and understands.
pub const SCHEMA_VERSION: u64 = 1;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// hash -> (segment id, data offset, length)
const CHUNKS: TableDefinition<&[u8; 32], (u32, u64, u32)> = TableDefinition::new("chunks");
/// segment id -> (indexed end offset, sealed)
const SEGMENTS: TableDefinition<u32, (u64, bool)> = TableDefinition::new("segments");

const KEY_SCHEMA: &str = "schema_version";
const KEY_CHUNKS: &str = "chunks";
const KEY_BYTES: &str = "bytes";

/// Where a chunk's bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub segment: u32,
    pub data_offset: u64,
    pub len: u32,
}

/// How far a segment is indexed, and whether it is closed for appends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentState {
    pub end: u64,
    pub sealed: bool,
}

/// Distinct chunks and their content bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub chunks: u64,
    pub bytes: u64,
}

pub struct Index {
    db: Database,
}

impl Index {
    /// Opens an existing index, refusing a schema version this build does not understand.
    pub fn open(path: &Path) -> Result<Index, BlockdError> {
        let db = Database::open(path).map_err(index_err)?;
        let found = {
            let txn = db.begin_read().map_err(index_err)?;
            match txn.open_table(META) {
                Ok(meta) => meta.get(KEY_SCHEMA).map_err(index_err)?.map(|v| v.value()),
                Err(redb::TableError::TableDoesNotExist(_)) => None,
                Err(e) => return Err(index_err(e)),
            }
        };
        if found != Some(SCHEMA_VERSION) {
            return Err(BlockdError::IndexSchema { path: path.to_path_buf(), found, supported: SCHEMA_VERSION });
        }
        Ok(Index { db })
    }

    /// Creates a new, empty index stamped with [`SCHEMA_VERSION`], replacing any stale file
    /// at `path` (callers create at a temporary name and rename once it is complete).
    pub fn create(path: &Path) -> Result<Index, BlockdError> {
        if path.exists() {
            std::fs::remove_file(path).map_err(BlockdError::io("removing stale", path))?;
        }
        let db = Database::create(path).map_err(index_err)?;
        let index = Index { db };
        let txn = index.begin()?;
        {
            let mut meta = txn.open_table(META).map_err(index_err)?;
            meta.insert(KEY_SCHEMA, SCHEMA_VERSION).map_err(index_err)?;
            meta.insert(KEY_CHUNKS, 0).map_err(index_err)?;
            meta.insert(KEY_BYTES, 0).map_err(index_err)?;
            txn.open_table(CHUNKS).map_err(index_err)?;
            txn.open_table(SEGMENTS).map_err(index_err)?;
        }
        txn.commit().map_err(index_err)?;
        Ok(index)
    }

    /// The underlying database, for tables owned by other modules (the S3 tier's `packs`).
    pub(crate) fn db(&self) -> &Database {
        &self.db
    }

    fn begin(&self) -> Result<redb::WriteTransaction, BlockdError> {
        let mut txn = self.db.begin_write().map_err(index_err)?;
        txn.set_durability(Durability::Immediate).map_err(index_err)?;
        Ok(txn)
    }

    pub fn lookup(&self, hash: &ChunkHash) -> Result<Option<Location>, BlockdError> {
        let txn = self.db.begin_read().map_err(index_err)?;
        let table = txn.open_table(CHUNKS).map_err(index_err)?;
        let found = table.get(hash.as_bytes()).map_err(index_err)?;
        Ok(found.map(|v| {
            let (segment, data_offset, len) = v.value();
            Location { segment, data_offset, len }
        }))
    }

    pub fn contains_many(&self, hashes: &[ChunkHash]) -> Result<Vec<bool>, BlockdError> {
        let txn = self.db.begin_read().map_err(index_err)?;
        let table = txn.open_table(CHUNKS).map_err(index_err)?;
        hashes.iter().map(|h| Ok(table.get(h.as_bytes()).map_err(index_err)?.is_some())).collect()
    }

    /// Where each of `hashes` is stored, in one read transaction.
    pub fn locate_many(&self, hashes: &[ChunkHash]) -> Result<Vec<Option<Location>>, BlockdError> {
        let txn = self.db.begin_read().map_err(index_err)?;
        let table = txn.open_table(CHUNKS).map_err(index_err)?;
        hashes
            .iter()
            .map(|h| {
                Ok(table.get(h.as_bytes()).map_err(index_err)?.map(|v| {
                    let (segment, data_offset, len) = v.value();
                    Location { segment, data_offset, len }
                }))
            })
            .collect()
    }

    /// Up to `limit` stored hashes in ascending order, starting after `after` (from the
    /// first when `None`). For paged background passes (repair, scrub).
    pub fn hashes_after(&self, after: Option<&ChunkHash>, limit: usize) -> Result<Vec<ChunkHash>, BlockdError> {
        let txn = self.db.begin_read().map_err(index_err)?;
        let table = txn.open_table(CHUNKS).map_err(index_err)?;
        let range = match after {
            Some(h) => table.range::<&[u8; 32]>((std::ops::Bound::Excluded(h.as_bytes()), std::ops::Bound::Unbounded)),
            None => table.range::<&[u8; 32]>(..),
        }
        .map_err(index_err)?;
        let mut out = Vec::with_capacity(limit.min(4096));
        for entry in range.take(limit) {
            let (k, _) = entry.map_err(index_err)?;
            out.push(ChunkHash(*k.value()));
        }
        Ok(out)
    }

    pub fn segments(&self) -> Result<BTreeMap<u32, SegmentState>, BlockdError> {
        let txn = self.db.begin_read().map_err(index_err)?;
        let table = txn.open_table(SEGMENTS).map_err(index_err)?;
        let mut out = BTreeMap::new();
        for entry in table.iter().map_err(index_err)? {
            let (k, v) = entry.map_err(index_err)?;
            let (end, sealed) = v.value();
            out.insert(k.value(), SegmentState { end, sealed });
        }
        Ok(out)
    }

    pub fn totals(&self) -> Result<Totals, BlockdError> {
        let txn = self.db.begin_read().map_err(index_err)?;
        let meta = txn.open_table(META).map_err(index_err)?;
        let get =
            |k| -> Result<u64, BlockdError> { Ok(meta.get(k).map_err(index_err)?.map(|v| v.value()).unwrap_or(0)) };
        Ok(Totals { chunks: get(KEY_CHUNKS)?, bytes: get(KEY_BYTES)? })
    }

    /// Commits new entries, re-pointed entries and segment states in one fsynced
    /// transaction. A new entry whose hash is already indexed is skipped (the first copy
    /// stays authoritative). A `repoint` entry replaces the hash's location (a rewritten
    /// copy of a corrupt or lost record): the totals count distinct chunks and their content
    /// bytes, so a re-pointed chunk is not counted again; the old record's bytes become
    /// garbage that no entry references (reclaimed by compaction, not counted anywhere).
    /// Returns the new totals.
    pub fn commit(
        &self,
        entries: &[(ChunkHash, Location)],
        repoint: &[(ChunkHash, Location)],
        segments: &[(u32, SegmentState)],
    ) -> Result<Totals, BlockdError> {
        let txn = self.begin()?;
        let totals = {
            let mut meta = txn.open_table(META).map_err(index_err)?;
            let mut chunks = txn.open_table(CHUNKS).map_err(index_err)?;
            let mut segs = txn.open_table(SEGMENTS).map_err(index_err)?;
            let get = |meta: &redb::Table<&str, u64>, k| -> Result<u64, BlockdError> {
                Ok(meta.get(k).map_err(index_err)?.map(|v| v.value()).unwrap_or(0))
            };
            let mut totals = Totals { chunks: get(&meta, KEY_CHUNKS)?, bytes: get(&meta, KEY_BYTES)? };
            for (hash, loc) in entries {
                if chunks.get(hash.as_bytes()).map_err(index_err)?.is_some() {
                    continue;
                }
                chunks.insert(hash.as_bytes(), (loc.segment, loc.data_offset, loc.len)).map_err(index_err)?;
                totals.chunks += 1;
                totals.bytes += u64::from(loc.len);
            }
            for (hash, loc) in repoint {
                let old = chunks
                    .insert(hash.as_bytes(), (loc.segment, loc.data_offset, loc.len))
                    .map_err(index_err)?
                    .map(|v| v.value().2);
                match old {
                    // Same name, same content: only the location changes (exact even if
                    // the old entry's length was damaged).
                    Some(old_len) => totals.bytes = totals.bytes - u64::from(old_len) + u64::from(loc.len),
                    None => {
                        totals.chunks += 1;
                        totals.bytes += u64::from(loc.len);
                    }
                }
            }
            for (id, state) in segments {
                segs.insert(*id, (state.end, state.sealed)).map_err(index_err)?;
            }
            meta.insert(KEY_CHUNKS, totals.chunks).map_err(index_err)?;
            meta.insert(KEY_BYTES, totals.bytes).map_err(index_err)?;
            totals
        };
        txn.commit().map_err(index_err)?;
        Ok(totals)
    }
}

/// Path of the index file in a data dir.
pub fn index_path(data_dir: &Path) -> PathBuf {
    data_dir.join("blockd.redb")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(b: u8) -> ChunkHash {
        ChunkHash([b; 32])
    }

    #[test]
    fn commit_lookup_and_totals() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("i.redb");
        let index = Index::create(&path).expect("create");
        let loc = Location { segment: 1, data_offset: 88, len: 10 };
        let t = index
            .commit(
                &[(h(1), loc), (h(2), Location { len: 5, ..loc })],
                &[],
                &[(1, SegmentState { end: 200, sealed: false })],
            )
            .expect("commit");
        assert_eq!(t, Totals { chunks: 2, bytes: 15 });
        // A duplicate entry is not counted twice and does not move the chunk.
        let t = index.commit(&[(h(1), Location { segment: 9, ..loc })], &[], &[]).expect("commit");
        assert_eq!(t, Totals { chunks: 2, bytes: 15 });
        assert_eq!(index.lookup(&h(1)).expect("lookup"), Some(loc));
        assert_eq!(index.contains_many(&[h(2), h(3)]).expect("has"), vec![true, false]);
        drop(index);
        let index = Index::open(&path).expect("reopen");
        assert_eq!(index.totals().expect("totals"), Totals { chunks: 2, bytes: 15 });
        assert_eq!(index.segments().expect("segs").get(&1), Some(&SegmentState { end: 200, sealed: false }));
        // A re-pointed entry moves the chunk without counting it again.
        let moved = Location { segment: 2, data_offset: 4000, len: 10 };
        let t = index.commit(&[], &[(h(1), moved)], &[]).expect("repoint");
        assert_eq!(t, Totals { chunks: 2, bytes: 15 });
        assert_eq!(index.lookup(&h(1)).expect("lookup"), Some(moved));
        assert_eq!(index.locate_many(&[h(1), h(3)]).expect("locate"), vec![Some(moved), None]);
        // Re-pointing a hash not indexed yet adds it.
        let t = index.commit(&[], &[(h(3), Location { len: 7, ..moved })], &[]).expect("repoint new");
        assert_eq!(t, Totals { chunks: 3, bytes: 22 });
        let t = index.commit(&[], &[(h(3), moved)], &[]).expect("repoint back");
        assert_eq!(t, Totals { chunks: 3, bytes: 25 });
    }

    #[test]
    fn unknown_schema_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("i.redb");
        {
            let db = Database::create(&path).expect("create");
            let txn = db.begin_write().expect("txn");
            txn.open_table(META).expect("meta").insert(KEY_SCHEMA, 99).expect("insert");
            txn.commit().expect("commit");
        }
        assert!(matches!(Index::open(&path), Err(BlockdError::IndexSchema { found: Some(99), .. })));
    }
}
