//! Durable bookkeeping of the S3 tier: which segments are uploaded (under which key) and
//! which have been evicted from local disk, in the daemon's own redb file.
//!
//! Owns: the `packs` table (segment id -> (pack key, pack length, evicted)). Every write is
//! `Durability::Immediate` and made only after the fact it records is true (a pack is
//! recorded after its PUT succeeded; a segment is marked evicted before its file is
//! truncated, so a crash in between leaves it readable from S3). Must never: mark a segment
//! evicted that has no recorded pack.

use std::collections::BTreeMap;

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use crate::error::{BlockdError, index_err};

/// segment id -> (pack key, pack length in bytes, evicted from local disk)
const PACKS: TableDefinition<u32, (&str, u64, bool)> = TableDefinition::new("packs");

/// A segment's pack in S3.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackRecord {
    pub key: String,
    pub len: u64,
    pub evicted: bool,
}

/// Every recorded pack.
pub fn load(db: &Database) -> Result<BTreeMap<u32, PackRecord>, BlockdError> {
    let txn = db.begin_read().map_err(index_err)?;
    let table = match txn.open_table(PACKS) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(BTreeMap::new()),
        Err(e) => return Err(index_err(e)),
    };
    let mut out = BTreeMap::new();
    for entry in table.iter().map_err(index_err)? {
        let (k, v) = entry.map_err(index_err)?;
        let (key, len, evicted) = v.value();
        out.insert(k.value(), PackRecord { key: key.to_owned(), len, evicted });
    }
    Ok(out)
}

/// Records (fsynced) that segment `id` is stored as `rec`.
pub fn store(db: &Database, id: u32, rec: &PackRecord) -> Result<(), BlockdError> {
    let mut txn = db.begin_write().map_err(index_err)?;
    txn.set_durability(Durability::Immediate).map_err(index_err)?;
    {
        let mut t = txn.open_table(PACKS).map_err(index_err)?;
        t.insert(id, (rec.key.as_str(), rec.len, rec.evicted)).map_err(index_err)?;
    }
    txn.commit().map_err(index_err)
}
