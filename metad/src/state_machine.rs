//! openraft's state machine over the redb file: apply batches, snapshots, applied state.
//!
//! Owns: the `sm_meta` and `snapshot` tables and the transaction boundaries of the state
//! machine. One apply batch = one write transaction that holds the data changes of every entry
//! *and* `last_applied`/`last_membership`, so a restart never sees one without the other.
//! Applies commit with `Durability::None`: the Raft log (fsynced on append) is the source of
//! truth, the next immediate commit (any log append) makes them durable, and entries at or
//! below `last_applied` are skipped so a replay after a crash is idempotent.
//!
//! Snapshots are a serde-JSON image of the state-machine tables, built from one MVCC read
//! transaction (apply is not blocked while it is serialised), written to a file under
//! `<data_dir>/snapshots/` (see `snapshot_file`) and recorded as the current snapshot in the
//! `snapshot` table (meta, file name, length, BLAKE3 hash). The image is still encoded and
//! decoded whole in memory (bounded by `snapshot_file::MAX_SNAPSHOT_BYTES`); only transport and
//! storage are streamed. A received image is verified against its hash before it is decoded, and
//! installed in one write transaction (tables, applied state, current-snapshot record).
//! Must never: touch the Raft log tables, or answer a client before its batch has committed.

use std::io;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend};
use redb::{Database, Durability, ReadTransaction, ReadableDatabase, ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};

use crate::blocking;
use crate::command::alias::{Entry, LogId, SnapshotMeta, StoredMembership};
use crate::command::{CommandResult, Reply, TypeConfig};
use crate::error::{MetadError, Result};
use crate::fsm::apply::WriteTables;
use crate::model;
use crate::snapshot_file::{Snapshot, SnapshotDir, SnapshotFile};
use crate::store::{self, access};

/// How often `get_current_snapshot` re-reads the record when a newer image replaced the file.
const OPEN_ATTEMPTS: usize = 3;

/// Version of the snapshot image format (2: symlink targets and request-id tables; 3: block
/// daemons and pack locations; 4: share records carry export options). A format-2 image
/// (from a node not yet upgraded) installs with the newer tables empty, a format-2 or -3
/// image's share records read with the default export options; any other format is
/// refused, so a node that would drop export options never installs a format-4 image.
const IMAGE_FORMAT: u32 = 4;
const OLDEST_IMAGE_FORMAT: u32 = 2;

/// The state machine of one metad node. Cheap to clone: clones share the database.
#[derive(Clone)]
pub struct StateMachineStore {
    db: Arc<Database>,
    snapshots: SnapshotDir,
}

impl StateMachineStore {
    /// The state machine over `db`, keeping snapshot images in `snapshots`.
    pub fn new(db: Arc<Database>, snapshots: SnapshotDir) -> Self {
        StateMachineStore { db, snapshots }
    }

    /// The database, for linearizable reads after the read index has been applied.
    pub fn db(&self) -> &Arc<Database> {
        &self.db
    }
}

/// Every state-machine row, as a snapshot carries it.
#[derive(Serialize, Deserialize, Default)]
struct Image {
    format: u32,
    counters: Vec<(String, u64)>,
    inodes: Vec<(u64, Vec<u8>)>,
    dentries: Vec<(u64, Vec<u8>, u64, u64)>,
    extents: Vec<(u64, u64, Vec<u8>)>,
    chunk_refs: Vec<(Vec<u8>, u64)>,
    shares: Vec<(u64, Vec<u8>)>,
    share_paths: Vec<(String, u64)>,
    symlinks: Vec<(u64, Vec<u8>)>,
    /// (client id, seq, remembered reply).
    requests: Vec<(u64, u64, Vec<u8>)>,
    /// (client id, last use tick, highest seq).
    request_clients: Vec<(u64, u64, u64)>,
    /// (daemon id, JSON `DaemonRec`).
    #[serde(default)]
    block_daemons: Vec<(u64, Vec<u8>)>,
    /// (chunk hash, pack key, offset, length).
    #[serde(default)]
    packs: Vec<(Vec<u8>, String, u64, u32)>,
}

fn applied_state(rtx: &ReadTransaction) -> Result<(Option<LogId>, StoredMembership)> {
    let meta = rtx.open_table(store::SM_META)?;
    let last: Option<LogId> = access::get_json(&meta, "last_applied", "last applied")?;
    let membership: Option<StoredMembership> = access::get_json(&meta, "last_membership", "membership")?;
    Ok((last, membership.unwrap_or_default()))
}

fn dump(rtx: &ReadTransaction) -> Result<Image> {
    let mut img = Image { format: IMAGE_FORMAT, ..Image::default() };
    for row in rtx.open_table(store::COUNTERS)?.iter()? {
        let (k, v) = row?;
        img.counters.push((k.value().to_string(), v.value()));
    }
    for row in rtx.open_table(store::INODES)?.iter()? {
        let (k, v) = row?;
        img.inodes.push((k.value(), v.value().to_vec()));
    }
    for row in rtx.open_table(store::DENTRIES)?.iter()? {
        let (k, v) = row?;
        let (dir, name) = k.value();
        let (slot, ino) = v.value();
        img.dentries.push((dir, name.to_vec(), slot, ino));
    }
    for row in rtx.open_table(store::EXTENTS)?.iter()? {
        let (k, v) = row?;
        let (ino, off) = k.value();
        img.extents.push((ino, off, v.value().to_vec()));
    }
    for row in rtx.open_table(store::CHUNK_REFS)?.iter()? {
        let (k, v) = row?;
        img.chunk_refs.push((k.value().to_vec(), v.value()));
    }
    for row in rtx.open_table(store::SHARES)?.iter()? {
        let (k, v) = row?;
        img.shares.push((k.value(), v.value().to_vec()));
    }
    for row in rtx.open_table(store::SHARE_PATHS)?.iter()? {
        let (k, v) = row?;
        img.share_paths.push((k.value().to_string(), v.value()));
    }
    for row in rtx.open_table(store::SYMLINKS)?.iter()? {
        let (k, v) = row?;
        img.symlinks.push((k.value(), v.value().to_vec()));
    }
    for row in rtx.open_table(store::REQUESTS)?.iter()? {
        let (k, v) = row?;
        let (client, seq) = k.value();
        img.requests.push((client, seq, v.value().to_vec()));
    }
    // `request_lru` is the inverse of `request_clients`; load rebuilds it.
    for row in rtx.open_table(store::REQUEST_CLIENTS)?.iter()? {
        let (k, v) = row?;
        let (tick, max_seq) = v.value();
        img.request_clients.push((k.value(), tick, max_seq));
    }
    for row in rtx.open_table(store::BLOCK_DAEMONS)?.iter()? {
        let (k, v) = row?;
        img.block_daemons.push((k.value(), v.value().to_vec()));
    }
    for row in rtx.open_table(store::PACKS)?.iter()? {
        let (k, v) = row?;
        let (pack, offset, length) = v.value();
        img.packs.push((k.value().to_vec(), pack.to_string(), offset, length));
    }
    Ok(img)
}

/// Decodes a received image, refusing a format this build does not understand.
fn decode_image(data: &[u8]) -> Result<Image> {
    let img: Image = model::decode_json("snapshot image", data)?;
    if !(OLDEST_IMAGE_FORMAT..=IMAGE_FORMAT).contains(&img.format) {
        return Err(MetadError::Corrupt { what: "snapshot image", reason: format!("format {}", img.format) });
    }
    Ok(img)
}

/// Replaces every state-machine table by the image's rows.
fn load(wtx: &WriteTransaction, img: &Image) -> Result<()> {
    let mut counters = wtx.open_table(store::COUNTERS)?;
    counters.retain(|_, _| false)?;
    for (k, v) in &img.counters {
        counters.insert(k.as_str(), *v)?;
    }
    let mut inodes = wtx.open_table(store::INODES)?;
    inodes.retain(|_, _| false)?;
    for (k, v) in &img.inodes {
        inodes.insert(*k, v.as_slice())?;
    }
    let mut dentries = wtx.open_table(store::DENTRIES)?;
    dentries.retain(|_, _| false)?;
    let mut slots = wtx.open_table(store::DIR_SLOTS)?;
    slots.retain(|_, _| false)?;
    for (dir, name, slot, ino) in &img.dentries {
        dentries.insert((*dir, name.as_slice()), (*slot, *ino))?;
        slots.insert((*dir, *slot), (name.as_slice(), *ino))?;
    }
    let mut extents = wtx.open_table(store::EXTENTS)?;
    extents.retain(|_, _| false)?;
    for (ino, off, v) in &img.extents {
        if v.len() != model::EXTENT_VALUE_LEN {
            return Err(MetadError::Corrupt { what: "snapshot extent", reason: format!("{} bytes", v.len()) });
        }
        extents.insert((*ino, *off), v.as_slice())?;
    }
    let mut refs = wtx.open_table(store::CHUNK_REFS)?;
    refs.retain(|_, _| false)?;
    for (k, v) in &img.chunk_refs {
        refs.insert(k.as_slice(), *v)?;
    }
    let mut shares = wtx.open_table(store::SHARES)?;
    shares.retain(|_, _| false)?;
    for (k, v) in &img.shares {
        shares.insert(*k, v.as_slice())?;
    }
    let mut paths = wtx.open_table(store::SHARE_PATHS)?;
    paths.retain(|_, _| false)?;
    for (k, v) in &img.share_paths {
        paths.insert(k.as_str(), *v)?;
    }
    let mut symlinks = wtx.open_table(store::SYMLINKS)?;
    symlinks.retain(|_, _| false)?;
    for (k, v) in &img.symlinks {
        symlinks.insert(*k, v.as_slice())?;
    }
    let mut requests = wtx.open_table(store::REQUESTS)?;
    requests.retain(|_, _| false)?;
    for (client, seq, v) in &img.requests {
        requests.insert((*client, *seq), v.as_slice())?;
    }
    let mut clients = wtx.open_table(store::REQUEST_CLIENTS)?;
    clients.retain(|_, _| false)?;
    let mut lru = wtx.open_table(store::REQUEST_LRU)?;
    lru.retain(|_, _| false)?;
    for (client, tick, max_seq) in &img.request_clients {
        clients.insert(*client, (*tick, *max_seq))?;
        if lru.insert(*tick, *client)?.is_some() {
            return Err(MetadError::Corrupt {
                what: "snapshot request clients",
                reason: format!("tick {tick} used twice"),
            });
        }
    }
    let mut daemons = wtx.open_table(store::BLOCK_DAEMONS)?;
    daemons.retain(|_, _| false)?;
    for (id, v) in &img.block_daemons {
        daemons.insert(*id, v.as_slice())?;
    }
    let mut packs = wtx.open_table(store::PACKS)?;
    packs.retain(|_, _| false)?;
    for (hash, pack, offset, length) in &img.packs {
        if hash.len() != model::HASH_LEN || pack.is_empty() || *length == 0 {
            return Err(MetadError::Corrupt {
                what: "snapshot pack location",
                reason: format!("{} byte hash", hash.len()),
            });
        }
        packs.insert(hash.as_slice(), (pack.as_str(), *offset, *length))?;
    }
    Ok(())
}

/// Where the current snapshot's image is, as the `snapshot` table records it.
#[derive(Serialize, Deserialize)]
struct ImageRecord {
    file: String,
    len: u64,
    hash: [u8; 32],
}

fn save_current_snapshot(wtx: &WriteTransaction, meta: &SnapshotMeta, image: &ImageRecord) -> Result<()> {
    let mut t = wtx.open_table(store::SNAPSHOT)?;
    access::put_json(&mut t, "meta", "snapshot meta", meta)?;
    access::put_json(&mut t, "image", "snapshot image record", image)?;
    // Images lived in the table before they moved to files.
    t.remove("data")?;
    Ok(())
}

/// Writes `data` as the current image file and returns its record.
fn store_image(snapshots: &SnapshotDir, meta: &SnapshotMeta, data: &[u8]) -> Result<ImageRecord> {
    let index = meta.last_log_id.as_ref().map(|l| l.index()).unwrap_or(0);
    let file = snapshots.store(index, data)?;
    Ok(ImageRecord { file, len: data.len() as u64, hash: *blake3::hash(data).as_bytes() })
}

/// Applies a batch in one write transaction; returns one result per entry.
fn apply_batch(db: &Database, entries: Vec<Entry>) -> Result<Vec<CommandResult>> {
    let mut wtx = db.begin_write()?;
    wtx.set_durability(Durability::None)?;
    let mut results = Vec::with_capacity(entries.len());
    {
        let mut meta = wtx.open_table(store::SM_META)?;
        let mut last: Option<LogId> = access::get_json(&meta, "last_applied", "last applied")?;
        let mut membership: Option<StoredMembership> = None;
        let mut tables = WriteTables::open(&wtx)?;
        for entry in entries {
            if last.as_ref().is_some_and(|l| l.index() >= entry.log_id.index()) {
                // Already applied before a restart: replaying must not apply it twice.
                results.push(Ok(Reply::Nothing));
                continue;
            }
            let r = match &entry.payload {
                EntryPayload::Blank => Ok(Reply::Nothing),
                EntryPayload::Normal(cmd) => tables.apply(cmd)?,
                EntryPayload::Membership(m) => {
                    membership = Some(StoredMembership::new(Some(entry.log_id), m.clone()));
                    Ok(Reply::Nothing)
                }
            };
            results.push(r);
            last = Some(entry.log_id);
        }
        access::put_json(&mut meta, "last_applied", "last applied", &last)?;
        if let Some(m) = membership {
            access::put_json(&mut meta, "last_membership", "membership", &m)?;
        }
    }
    wtx.commit()?;
    Ok(results)
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    type SnapshotData = SnapshotFile;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let snapshots = self.snapshots.clone();
        blocking::run(&self.db, move |db| {
            let (meta, data) = {
                let rtx = db.begin_read()?;
                let (last_log_id, last_membership) = applied_state(&rtx)?;
                let img = dump(&rtx)?;
                let data = model::encode_json("snapshot image", &img)?;
                (SnapshotMeta { last_log_id, last_membership }, data)
            };
            let record = store_image(&snapshots, &meta, &data)?;
            let mut wtx = db.begin_write()?;
            wtx.set_durability(Durability::None)?;
            save_current_snapshot(&wtx, &meta, &record)?;
            wtx.commit()?;
            snapshots.remove_others(&record.file);
            let file = snapshots.open_image(&record.file, record.len, record.hash)?.ok_or_else(|| {
                MetadError::Corrupt { what: "snapshot image", reason: "vanished after it was written".into() }
            })?;
            Ok(Snapshot { meta, snapshot: file })
        })
        .await
        .map_err(MetadError::into_io)
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotData = SnapshotFile;
    type SnapshotBuilder = StateMachineStore;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        blocking::run(&self.db, |db| applied_state(&db.begin_read()?)).await.map_err(MetadError::into_io)
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        let mut batch = Vec::new();
        let mut responders = Vec::new();
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            batch.push(entry);
            responders.push(responder);
        }
        if batch.is_empty() {
            return Ok(());
        }
        let n = batch.len() as u64;
        let results = blocking::run(&self.db, move |db| apply_batch(db, batch)).await.map_err(MetadError::into_io)?;
        metrics::counter!(cluster::metrics::RAFT_COMMITS).increment(n);
        for (responder, result) in responders.into_iter().zip(results) {
            if let Some(r) = responder {
                r.send(result);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, mut snapshot: SnapshotFile) -> Result<(), io::Error> {
        let meta = meta.clone();
        let snapshots = self.snapshots.clone();
        blocking::run(&self.db, move |db| {
            let data = snapshot.read_all()?;
            let img = decode_image(&data)?;
            let record = store_image(&snapshots, &meta, &data)?;
            let mut wtx = db.begin_write()?;
            wtx.set_durability(Durability::Immediate)?;
            load(&wtx, &img)?;
            {
                let mut m = wtx.open_table(store::SM_META)?;
                access::put_json(&mut m, "last_applied", "last applied", &meta.last_log_id)?;
                access::put_json(&mut m, "last_membership", "membership", &meta.last_membership)?;
            }
            save_current_snapshot(&wtx, &meta, &record)?;
            wtx.commit()?;
            snapshots.remove_others(&record.file);
            Ok(())
        })
        .await
        .map_err(MetadError::into_io)
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        let snapshots = self.snapshots.clone();
        blocking::run(&self.db, move |db| {
            // A snapshot built concurrently may replace the image between reading its record and
            // opening its file; the record is then already the new one, so read it again.
            for _ in 0..OPEN_ATTEMPTS {
                let rtx = db.begin_read()?;
                let t = rtx.open_table(store::SNAPSHOT)?;
                let meta: Option<SnapshotMeta> = access::get_json(&t, "meta", "snapshot meta")?;
                let record: Option<ImageRecord> = access::get_json(&t, "image", "snapshot image record")?;
                let (Some(meta), Some(record)) = (meta, record) else { return Ok(None) };
                if let Some(file) = snapshots.open_image(&record.file, record.len, record.hash)? {
                    return Ok(Some(Snapshot { meta, snapshot: file }));
                }
            }
            Err(MetadError::Corrupt { what: "snapshot image", reason: "the recorded image file is missing".into() })
        })
        .await
        .map_err(MetadError::into_io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(format: u32, drop: &[&str]) -> Vec<u8> {
        let img = Image { format, ..Image::default() };
        let mut v = serde_json::to_value(&img).unwrap();
        for key in drop {
            v.as_object_mut().unwrap().remove(*key);
        }
        serde_json::to_vec(&v).unwrap()
    }

    #[test]
    fn a_format_2_image_decodes_with_empty_data_plane_tables() {
        let img = decode_image(&encoded(2, &["block_daemons", "packs"])).unwrap();
        assert_eq!(img.format, 2);
        assert!(img.block_daemons.is_empty() && img.packs.is_empty());
        assert_eq!(decode_image(&encoded(IMAGE_FORMAT, &[])).unwrap().format, IMAGE_FORMAT);
    }

    #[test]
    fn unknown_image_formats_are_refused() {
        for format in [0, 1, IMAGE_FORMAT + 1] {
            assert!(matches!(decode_image(&encoded(format, &[])), Err(MetadError::Corrupt { .. })), "format {format}");
        }
    }
}
