//! Request-id deduplication: the remembered reply of each recent (client id, seq).
//!
//! Owns: the `requests`, `request_clients` and `request_lru` tables and their retention. A
//! mutation proposed with a request id is answered, if that id was applied before, with the
//! stored reply (success or refusal) instead of being applied twice. That is what makes a
//! gateway's retry across a timeout or a leader change safe.
//!
//! Retention is deterministic (part of the replicated state, so every replica and every
//! replay forgets the same entries): per client, only seqs within [`SEQS_PER_CLIENT`] of the
//! highest seq seen are kept (pruned by seq, never by time); at most [`MAX_CLIENTS`] clients
//! are remembered, and the least recently used one (by a logical tick that counts dedup
//! commands) is forgotten first. A retry older than the window is applied again.
//! Must never: read a clock, or decide what a command does.

use redb::{ReadableTable, ReadableTableMetadata, Table, WriteTransaction};

use crate::command::{CommandResult, RequestId};
use crate::error::{MetadError, Result};
use crate::model;
use crate::store;

/// Seqs remembered per client (the window below the highest seq seen).
pub const SEQS_PER_CLIENT: u64 = 1024;
/// Clients remembered; the least recently used is forgotten beyond this.
pub const MAX_CLIENTS: u64 = 256;

/// The dedup tables, open for writing.
pub struct DedupTables<'t> {
    requests: Table<'t, (u64, u64), &'static [u8]>,
    clients: Table<'t, u64, (u64, u64)>,
    lru: Table<'t, u64, u64>,
}

impl<'t> DedupTables<'t> {
    pub fn open(tx: &'t WriteTransaction) -> Result<Self> {
        Ok(DedupTables {
            requests: tx.open_table(store::REQUESTS)?,
            clients: tx.open_table(store::REQUEST_CLIENTS)?,
            lru: tx.open_table(store::REQUEST_LRU)?,
        })
    }

    /// The reply remembered for `id`, if any.
    pub fn lookup(&self, id: RequestId) -> Result<Option<CommandResult>> {
        match self.requests.get((id.client_id, id.seq))? {
            Some(v) => Ok(Some(model::decode_json("remembered reply", v.value())?)),
            None => Ok(None),
        }
    }

    /// Remembers `result` as the reply of `id`, then applies the retention rules.
    pub fn remember(&mut self, id: RequestId, result: &CommandResult) -> Result<()> {
        let bytes = model::encode_json("remembered reply", result)?;
        let tick = match self.lru.last()? {
            Some((k, _)) => k.value().saturating_add(1),
            None => 1,
        };
        let prev = self.clients.get(id.client_id)?.map(|v| v.value());
        let max_seq = match prev {
            Some((old_tick, max_seq)) => {
                self.lru.remove(old_tick)?;
                max_seq.max(id.seq)
            }
            None => {
                self.evict_beyond(MAX_CLIENTS.saturating_sub(1))?;
                id.seq
            }
        };
        self.clients.insert(id.client_id, (tick, max_seq))?;
        self.lru.insert(tick, id.client_id)?;
        self.requests.insert((id.client_id, id.seq), bytes.as_slice())?;
        // Keep (max_seq - SEQS_PER_CLIENT, max_seq]: prune everything at or below the floor.
        if let Some(floor) = max_seq.checked_sub(SEQS_PER_CLIENT) {
            self.forget_range(id.client_id, 0, floor)?;
        }
        Ok(())
    }

    /// Forgets least recently used clients until at most `keep` remain.
    fn evict_beyond(&mut self, keep: u64) -> Result<()> {
        while self.clients.len()? > keep {
            let Some(client) = self.lru.first()?.map(|(_, v)| v.value()) else {
                return Err(MetadError::Corrupt { what: "request lru", reason: "clients without lru rows".into() });
            };
            let Some((tick, _)) = self.clients.remove(client)?.map(|v| v.value()) else {
                return Err(MetadError::Corrupt { what: "request lru", reason: format!("client {client} missing") });
            };
            self.lru.remove(tick)?;
            self.forget_range(client, 0, u64::MAX)?;
        }
        Ok(())
    }

    /// Removes the remembered replies of `client` with seq in `[lo, hi]`.
    fn forget_range(&mut self, client: u64, lo: u64, hi: u64) -> Result<()> {
        let mut seqs = Vec::new();
        for row in self.requests.range((client, lo)..=(client, hi))? {
            let (k, _) = row?;
            seqs.push(k.value().1);
        }
        for s in seqs {
            self.requests.remove((client, s))?;
        }
        Ok(())
    }
}
