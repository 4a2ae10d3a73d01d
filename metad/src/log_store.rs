//! openraft's log storage over the redb file: entries, vote, committed and purge marker.
//!
//! Owns: the `raft_log` and `raft_meta` tables. Vote, appends, truncation and purges commit
//! with `Durability::Immediate` (fsync) before returning or before the flush callback fires;
//! every write is one transaction, so the log never has a hole. All of a node's log writes are
//! issued one at a time by openraft and redb has a single writer, which serialises them.
//! The committed pointer is written with `Durability::None`: the next immediate commit makes
//! it durable, and a lagging value only means re-applying a little more on restart.
//! Must never: touch state-machine tables, or call the flush callback before the data is on disk.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::OptionalSend;
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use redb::{Database, Durability, ReadableDatabase, ReadableTable};

use crate::blocking;
use crate::command::TypeConfig;
use crate::command::alias::{Entry, LogId, Vote};
use crate::error::{MetadError, Result};
use crate::model;
use crate::store::{self, access};

/// The Raft log of one metad node. Cheap to clone: clones share the database.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
}

impl LogStore {
    pub fn new(db: Arc<Database>) -> Self {
        LogStore { db }
    }
}

fn read_meta<T: for<'de> serde::Deserialize<'de>>(db: &Database, key: &'static str) -> Result<Option<T>> {
    let rtx = db.begin_read()?;
    let t = rtx.open_table(store::RAFT_META)?;
    access::get_json(&t, key, "raft meta")
}

fn write_meta<T: serde::Serialize>(db: &Database, key: &'static str, value: &T, durability: Durability) -> Result<()> {
    let mut wtx = db.begin_write()?;
    wtx.set_durability(durability)?;
    {
        let mut t = wtx.open_table(store::RAFT_META)?;
        access::put_json(&mut t, key, "raft meta", value)?;
    }
    wtx.commit()?;
    Ok(())
}

fn decode_entry(bytes: &[u8]) -> Result<Entry> {
    model::decode_json("raft log entry", bytes)
}

fn owned_bounds<RB: RangeBounds<u64>>(range: &RB) -> (Bound<u64>, Bound<u64>) {
    (range.start_bound().cloned(), range.end_bound().cloned())
}

fn is_empty_range(b: &(Bound<u64>, Bound<u64>)) -> bool {
    let start = match b.0 {
        Bound::Included(s) => Some(s),
        Bound::Excluded(s) => s.checked_add(1),
        Bound::Unbounded => Some(0),
    };
    let Some(start) = start else { return true };
    match b.1 {
        Bound::Included(e) => start > e,
        Bound::Excluded(e) => start >= e,
        Bound::Unbounded => false,
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let bounds = owned_bounds(&range);
        if is_empty_range(&bounds) {
            return Ok(Vec::new());
        }
        blocking::run(&self.db, move |db| {
            let rtx = db.begin_read()?;
            let t = rtx.open_table(store::RAFT_LOG)?;
            let mut out = Vec::new();
            for row in t.range::<u64>(bounds)? {
                let (_, v) = row?;
                out.push(decode_entry(v.value())?);
            }
            Ok(out)
        })
        .await
        .map_err(MetadError::into_io)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        blocking::run(&self.db, |db| read_meta(db, "vote")).await.map_err(MetadError::into_io)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        blocking::run(&self.db, |db| {
            let last_purged_log_id: Option<LogId> = read_meta(db, "last_purged")?;
            let rtx = db.begin_read()?;
            let t = rtx.open_table(store::RAFT_LOG)?;
            let last = match t.last()? {
                Some((_, v)) => Some(decode_entry(v.value())?.log_id),
                None => None,
            };
            Ok(LogState { last_log_id: last.or(last_purged_log_id), last_purged_log_id })
        })
        .await
        .map_err(MetadError::into_io)
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let vote = *vote;
        blocking::run(&self.db, move |db| write_meta(db, "vote", &vote, Durability::Immediate))
            .await
            .map_err(MetadError::into_io)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        blocking::run(&self.db, move |db| write_meta(db, "committed", &committed, Durability::None))
            .await
            .map_err(MetadError::into_io)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        blocking::run(&self.db, |db| Ok(read_meta::<Option<LogId>>(db, "committed")?.flatten()))
            .await
            .map_err(MetadError::into_io)
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut rows = Vec::new();
        for e in entries {
            let bytes = model::encode_json("raft log entry", &e).map_err(MetadError::into_io)?;
            rows.push((e.log_id.index(), bytes));
        }
        let r = blocking::run(&self.db, move |db| {
            let mut wtx = db.begin_write()?;
            wtx.set_durability(Durability::Immediate)?;
            {
                let mut t = wtx.open_table(store::RAFT_LOG)?;
                for (index, bytes) in &rows {
                    t.insert(*index, bytes.as_slice())?;
                }
            }
            wtx.commit()?;
            Ok(())
        })
        .await
        .map_err(MetadError::into_io);
        match &r {
            Ok(()) => callback.io_completed(Ok(())),
            Err(e) => callback.io_completed(Err(io::Error::other(e.to_string()))),
        }
        r
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map(|l| l.index() + 1).unwrap_or(0);
        blocking::run(&self.db, move |db| {
            let mut wtx = db.begin_write()?;
            wtx.set_durability(Durability::Immediate)?;
            {
                let mut t = wtx.open_table(store::RAFT_LOG)?;
                t.retain_in(from.., |_, _| false)?;
            }
            wtx.commit()?;
            Ok(())
        })
        .await
        .map_err(MetadError::into_io)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        blocking::run(&self.db, move |db| {
            let upto = log_id.index();
            let mut wtx = db.begin_write()?;
            wtx.set_durability(Durability::Immediate)?;
            {
                let mut meta = wtx.open_table(store::RAFT_META)?;
                access::put_json(&mut meta, "last_purged", "raft meta", &Some(log_id))?;
                let mut t = wtx.open_table(store::RAFT_LOG)?;
                t.retain_in(..=upto, |_, _| false)?;
            }
            wtx.commit()?;
            Ok(())
        })
        .await
        .map_err(MetadError::into_io)
    }
}
