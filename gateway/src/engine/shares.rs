//! Each share's export options and replication factor, as metad last said.
//!
//! Owns a small cache (share id -> parsed [`Export`] and `Share.replication_factor`, 0 = the
//! cluster default), each entry used for at most [`TTL`]: an older or missing entry makes
//! the next caller ask metad's `ListShares` again (one request at a time; callers that waited
//! use its answer), and a MNT's fresh `GetShare` answer replaces its share's entry. So an
//! `UpdateShare` reaches every gateway within `TTL` plus one call, without a restart.
//! Must never: guess. When metad cannot be asked and nothing fresh is cached, the call fails
//! (a flush is retried) rather than storing fewer copies than the share wants or applying
//! options older than `TTL`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proto::{FsError, pb};

use super::{ChunkApi, Engine, MetaApi, lock};
use crate::exports::Export;

/// How long a share's options and factor are used before metad is asked again.
pub const TTL: Duration = Duration::from_secs(2);

#[derive(Clone, Debug)]
struct Entry {
    export: Arc<Export>,
    rf: u32,
    at: Instant,
}

#[derive(Debug, Default)]
pub struct ShareCache {
    known: Mutex<HashMap<u64, Entry>>,
    /// Held while one caller refreshes the table from metad.
    refreshing: tokio::sync::Mutex<()>,
}

impl Entry {
    fn new(share: &pb::Share, at: Instant) -> Entry {
        Entry { export: Arc::new(Export::from_share(share)), rf: share.replication_factor, at }
    }
}

impl ShareCache {
    fn fresh(&self, share_id: u64) -> Option<Entry> {
        lock(&self.known).get(&share_id).filter(|e| e.at.elapsed() < TTL).cloned()
    }

    /// Remembers `share` as metad just answered it.
    pub(super) fn remember(&self, share: &pb::Share) {
        lock(&self.known).insert(share.share_id, Entry::new(share, Instant::now()));
    }

    /// Makes every entry older by `by` (tests: the TTL passes without waiting for it).
    #[cfg(test)]
    pub(super) fn age(&self, by: Duration) {
        for e in lock(&self.known).values_mut() {
            e.at = e.at.checked_sub(by).unwrap_or(e.at);
        }
    }
}

impl<M: MetaApi, C: ChunkApi> Engine<M, C> {
    /// The cached entry of `share_id`, refreshed from metad when stale; `None` for a share
    /// metad does not list.
    async fn share_entry(&self, share_id: u64) -> Result<Option<Entry>, FsError> {
        if let Some(e) = self.shares.fresh(share_id) {
            return Ok(Some(e));
        }
        let _one = self.shares.refreshing.lock().await;
        if let Some(e) = self.shares.fresh(share_id) {
            return Ok(Some(e)); // refreshed while this caller waited
        }
        let shares = self.meta.list_shares().await?;
        let now = Instant::now();
        let mut known = lock(&self.shares.known);
        known.clear();
        for s in &shares {
            known.insert(s.share_id, Entry::new(s, now));
        }
        Ok(known.get(&share_id).cloned())
    }

    /// The replication factor of `share_id` (0 = the cluster default; also for a share
    /// metad does not list, whose commit metad will refuse anyway).
    pub(super) async fn share_rf(&self, share_id: u64) -> Result<u32, FsError> {
        Ok(self.share_entry(share_id).await?.map_or(0, |e| e.rf))
    }

    /// The export options of `share_id`; `Stale` for a share metad does not list.
    pub(super) async fn share_export(&self, share_id: u64) -> Result<Arc<Export>, FsError> {
        self.share_entry(share_id).await?.map(|e| e.export).ok_or(FsError::Stale)
    }
}
