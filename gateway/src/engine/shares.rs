//! The replication factor of each share, as metad's `ListShares` last said.
//!
//! Owns a small cache (share id -> `Share.replication_factor`, 0 = the cluster default)
//! refreshed when older than `TTL`, so a flush does not ask metad for every span. Must never
//! guess a factor: when metad cannot be asked and nothing fresh is cached, the flush fails
//! (and is retried) rather than storing fewer copies than the share wants.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use proto::FsError;

use super::{ChunkApi, Engine, MetaApi, lock};

/// How long a share's factor is used before metad is asked again.
pub const TTL: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
pub struct ShareFactors {
    known: Mutex<HashMap<u64, (u32, Instant)>>,
}

impl ShareFactors {
    fn fresh(&self, share_id: u64) -> Option<u32> {
        lock(&self.known).get(&share_id).filter(|(_, at)| at.elapsed() < TTL).map(|(rf, _)| *rf)
    }
}

impl<M: MetaApi, C: ChunkApi> Engine<M, C> {
    /// The replication factor of `share_id` (0 = the cluster default; also for a share
    /// metad does not list, whose commit metad will refuse anyway).
    pub(super) async fn share_rf(&self, share_id: u64) -> Result<u32, FsError> {
        if let Some(rf) = self.shares.fresh(share_id) {
            return Ok(rf);
        }
        let shares = self.meta.list_shares().await?;
        let now = Instant::now();
        let mut known = lock(&self.shares.known);
        known.clear();
        for s in &shares {
            known.insert(s.share_id, (s.replication_factor, now));
        }
        Ok(known.get(&share_id).map_or(0, |(rf, _)| *rf))
    }
}
