//! The one redb file behind a metad node: its tables, its schema version, and opening it.
//!
//! Owns: every table definition (Raft log, Raft meta, state machine, snapshot, schema), the
//! schema-version check at open, and small typed accessors shared by apply, reads and
//! snapshots ([`access`]).
//! Must never: decide filesystem semantics (that is `fsm`) or talk to openraft (that is
//! `log_store` / `state_machine`).

pub mod access;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::error::{MetadError, Result};

/// The schema version this build writes and understands.
///
/// 2: file kinds beyond regular/directory and device numbers in inode records, the
/// `symlinks`, `requests`, `request_clients` and `request_lru` tables.
/// 3: the `block_daemons` and `packs` tables, and a replication factor in share records. A
/// version-2 store is upgraded in place at open (the new tables are created empty; share
/// records without the field read as 0, the cluster default).
/// 4: export options in share records (read-only, allowed clients, squash mode, anonymous
/// uid/gid) and in the `CreateShare`/`UpdateShare` commands. A version-2 or -3 store is
/// upgraded in place at open: records without the options read as the defaults
/// (read-write, every client, no squashing, anonymous ids 65534), which is how those
/// shares behaved before.
/// 5: per-file write leases — `lease_holder`/`lease_epoch` in inode records, and the
/// `AcquireWriteLease` command, a lease on `CommitExtents`, `lease_for` on `Create` and on
/// a truncating `SetAttr`.
/// A version-2 to -4 store is upgraded in place at open: records and log entries without
/// them read as no lease (epoch 0), which the first acquisition or commit replaces.
pub const SCHEMA_VERSION: u64 = 5;
/// The oldest schema version this build upgrades at open.
const UPGRADABLE_FROM: u64 = 2;
/// File name of the store inside metad's data directory.
pub const DB_FILE: &str = "metad.redb";

/// `"version"` -> schema version, stamped at creation.
pub const SCHEMA: TableDefinition<&str, u64> = TableDefinition::new("schema");

// ---- Raft log and Raft meta (written with Durability::Immediate) ----
/// log index -> serde-JSON `Entry<TypeConfig>`.
pub const RAFT_LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
/// `"vote"`, `"committed"`, `"last_purged"` -> serde JSON.
pub const RAFT_META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");

// ---- State machine (written once per apply batch) ----
/// `"last_applied"`, `"last_membership"` -> serde JSON.
pub const SM_META: TableDefinition<&str, &[u8]> = TableDefinition::new("sm_meta");
/// Named counters: `"next_ino"`, `"next_share_id"`.
pub const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");
/// ino -> JSON [`crate::model::Inode`].
pub const INODES: TableDefinition<u64, &[u8]> = TableDefinition::new("inodes");
/// (dir ino, name) -> (slot, child ino).
pub const DENTRIES: TableDefinition<(u64, &[u8]), (u64, u64)> = TableDefinition::new("dentries");
/// (dir ino, slot) -> (name, child ino): the readdir order.
pub const DIR_SLOTS: TableDefinition<(u64, u64), (&[u8], u64)> = TableDefinition::new("dir_slots");
/// (ino, file offset) -> 56-byte extent value.
pub const EXTENTS: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("extents");
/// chunk hash -> number of extents referencing it.
pub const CHUNK_REFS: TableDefinition<&[u8], u64> = TableDefinition::new("chunk_refs");
/// share id -> JSON [`crate::model::ShareRec`].
pub const SHARES: TableDefinition<u64, &[u8]> = TableDefinition::new("shares");
/// export path -> share id.
pub const SHARE_PATHS: TableDefinition<&str, u64> = TableDefinition::new("share_paths");
/// block daemon id -> JSON [`crate::model::DaemonRec`].
pub const BLOCK_DAEMONS: TableDefinition<u64, &[u8]> = TableDefinition::new("block_daemons");
/// chunk hash -> (pack object key, offset, length): where the chunk lives in the S3 tier.
pub const PACKS: TableDefinition<&[u8], (&str, u64, u32)> = TableDefinition::new("packs");
/// symlink ino -> target bytes.
pub const SYMLINKS: TableDefinition<u64, &[u8]> = TableDefinition::new("symlinks");
/// (client id, seq) -> JSON `CommandResult`: the remembered reply of a request.
pub const REQUESTS: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("requests");
/// client id -> (last use tick, highest seq seen): retention bookkeeping of `requests`.
pub const REQUEST_CLIENTS: TableDefinition<u64, (u64, u64)> = TableDefinition::new("request_clients");
/// last use tick -> client id: which client to forget first when there are too many.
pub const REQUEST_LRU: TableDefinition<u64, u64> = TableDefinition::new("request_lru");

// ---- The current snapshot (built or installed) ----
/// `"meta"` -> JSON `SnapshotMeta`, `"data"` -> snapshot image bytes.
pub const SNAPSHOT: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshot");

/// Opens (or creates) `dir/metad.redb`, creating every table and stamping the schema version
/// on a new file; refuses a file stamped with a version this build does not understand.
pub fn open(dir: &Path) -> Result<Arc<Database>> {
    std::fs::create_dir_all(dir).map_err(|source| MetadError::DataDir { path: dir.to_path_buf(), source })?;
    let path = dir.join(DB_FILE);
    let db = Database::create(&path)?;
    check_or_stamp_schema(&db, &path)?;
    Ok(Arc::new(db))
}

fn check_or_stamp_schema(db: &Database, path: &Path) -> Result<()> {
    let found = {
        let rtx = db.begin_read()?;
        match rtx.open_table(SCHEMA) {
            Ok(t) => t.get("version")?.map(|v| v.value()),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(e.into()),
        }
    };
    match found {
        Some(SCHEMA_VERSION) => Ok(()),
        Some(found) if (UPGRADABLE_FROM..SCHEMA_VERSION).contains(&found) => {
            let wtx = db.begin_write()?;
            wtx.open_table(BLOCK_DAEMONS)?;
            wtx.open_table(PACKS)?;
            wtx.open_table(SCHEMA)?.insert("version", SCHEMA_VERSION)?;
            wtx.commit()?;
            tracing::info!(path = %path.display(), from = found, to = SCHEMA_VERSION, "metad store upgraded");
            Ok(())
        }
        Some(found) => Err(MetadError::SchemaVersion { path: PathBuf::from(path), found, supported: SCHEMA_VERSION }),
        None => {
            let wtx = db.begin_write()?;
            {
                // A file without a schema stamp is new only if it has no Raft state either.
                let log = wtx.open_table(RAFT_LOG)?;
                if log.iter()?.next().is_some() {
                    return Err(MetadError::Corrupt {
                        what: "schema",
                        reason: "store has a log but no schema version".into(),
                    });
                }
                let mut schema = wtx.open_table(SCHEMA)?;
                schema.insert("version", SCHEMA_VERSION)?;
                wtx.open_table(RAFT_META)?;
                wtx.open_table(SM_META)?;
                wtx.open_table(COUNTERS)?;
                wtx.open_table(INODES)?;
                wtx.open_table(DENTRIES)?;
                wtx.open_table(DIR_SLOTS)?;
                wtx.open_table(EXTENTS)?;
                wtx.open_table(CHUNK_REFS)?;
                wtx.open_table(SHARES)?;
                wtx.open_table(SHARE_PATHS)?;
                wtx.open_table(SYMLINKS)?;
                wtx.open_table(REQUESTS)?;
                wtx.open_table(REQUEST_CLIENTS)?;
                wtx.open_table(REQUEST_LRU)?;
                wtx.open_table(BLOCK_DAEMONS)?;
                wtx.open_table(PACKS)?;
                wtx.open_table(SNAPSHOT)?;
            }
            wtx.commit()?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::ReadableTableMetadata;

    #[test]
    fn refuses_a_schema_version_it_does_not_understand() {
        let dir = tempfile::tempdir().unwrap();
        drop(open(dir.path()).unwrap());
        {
            let db = Database::create(dir.path().join(DB_FILE)).unwrap();
            let wtx = db.begin_write().unwrap();
            wtx.open_table(SCHEMA).unwrap().insert("version", SCHEMA_VERSION + 1).unwrap();
            wtx.commit().unwrap();
        }
        match open(dir.path()) {
            Err(MetadError::SchemaVersion { found, supported, .. }) => {
                assert_eq!(found, SCHEMA_VERSION + 1);
                assert_eq!(supported, SCHEMA_VERSION);
            }
            other => panic!("expected a schema version error, got {other:?}"),
        }
    }

    #[test]
    fn a_version_2_store_is_upgraded_with_the_new_tables() {
        let dir = tempfile::tempdir().unwrap();
        drop(open(dir.path()).unwrap());
        {
            let db = Database::create(dir.path().join(DB_FILE)).unwrap();
            let wtx = db.begin_write().unwrap();
            wtx.delete_table(BLOCK_DAEMONS).unwrap();
            wtx.delete_table(PACKS).unwrap();
            wtx.open_table(SCHEMA).unwrap().insert("version", 2).unwrap();
            wtx.commit().unwrap();
        }
        let db = open(dir.path()).unwrap();
        let rtx = db.begin_read().unwrap();
        assert_eq!(rtx.open_table(SCHEMA).unwrap().get("version").unwrap().map(|g| g.value()), Some(SCHEMA_VERSION));
        assert!(rtx.open_table(BLOCK_DAEMONS).unwrap().is_empty().unwrap());
        assert!(rtx.open_table(PACKS).unwrap().is_empty().unwrap());
    }

    #[test]
    fn a_version_3_store_is_upgraded_and_its_shares_read_with_default_export_options() {
        let dir = tempfile::tempdir().unwrap();
        drop(open(dir.path()).unwrap());
        {
            let db = Database::create(dir.path().join(DB_FILE)).unwrap();
            let wtx = db.begin_write().unwrap();
            let v3 = br#"{"name":"s","export_path":"/s","root_ino":1,"files":1,"bytes_used":0,"replication_factor":2}"#;
            wtx.open_table(SHARES).unwrap().insert(7, v3.as_slice()).unwrap();
            wtx.open_table(SCHEMA).unwrap().insert("version", 3).unwrap();
            wtx.commit().unwrap();
        }
        let db = open(dir.path()).unwrap();
        let rtx = db.begin_read().unwrap();
        assert_eq!(rtx.open_table(SCHEMA).unwrap().get("version").unwrap().map(|g| g.value()), Some(SCHEMA_VERSION));
        let shares = rtx.open_table(SHARES).unwrap();
        let rec = access::get_share(&shares, 7).unwrap().unwrap();
        assert_eq!((rec.replication_factor, rec.read_only, rec.anon_uid), (2, false, crate::model::DEFAULT_ANON_ID));
        assert!(rec.allowed_clients.is_empty());
    }

    #[test]
    fn reopening_keeps_the_stamp() {
        let dir = tempfile::tempdir().unwrap();
        drop(open(dir.path()).unwrap());
        let db = open(dir.path()).unwrap();
        let v = db.begin_read().unwrap().open_table(SCHEMA).unwrap().get("version").unwrap().map(|g| g.value());
        assert_eq!(v, Some(SCHEMA_VERSION));
    }
}
