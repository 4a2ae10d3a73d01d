//! `Daemon::Local` against an in-memory `LocalDaemon`: round trips, the refusal table, and
//! `QuicConnector` choosing the in-process path only for the daemon with its id.

use std::collections::HashMap;
use std::sync::Mutex;

use super::*;
use crate::engine::replicated::{Connector, QuicConnector};

/// An in-memory daemon that refuses every put with `refuse_puts`, if set.
struct MemDaemon {
    id: u64,
    chunks: Mutex<HashMap<ChunkHash, Bytes>>,
    refuse_puts: Option<Status>,
    /// `has` answers this many entries fewer than asked (a broken daemon).
    short_has: usize,
}

impl MemDaemon {
    fn handle(id: u64, refuse_puts: Option<Status>, short_has: usize) -> LocalHandle {
        LocalHandle(Arc::new(MemDaemon { id, chunks: Mutex::new(HashMap::new()), refuse_puts, short_has }))
    }
}

impl LocalDaemon for MemDaemon {
    fn id(&self) -> u64 {
        self.id
    }

    fn has(&self, hashes: Vec<ChunkHash>) -> BoxFuture<'_, Result<Vec<bool>, LocalRefusal>> {
        let chunks = self.chunks.lock().expect("lock");
        let mut found: Vec<bool> = hashes.iter().map(|h| chunks.contains_key(h)).collect();
        found.truncate(found.len().saturating_sub(self.short_has));
        Box::pin(async move { Ok(found) })
    }

    fn put(&self, hash: ChunkHash, data: Bytes) -> BoxFuture<'_, Result<(), LocalRefusal>> {
        let answer = match self.refuse_puts {
            Some(status) => Err(LocalRefusal { status, message: "refused by the test".into() }),
            None => {
                self.chunks.lock().expect("lock").insert(hash, data);
                Ok(())
            }
        };
        Box::pin(async move { answer })
    }

    fn get(&self, hash: ChunkHash) -> BoxFuture<'_, Result<Bytes, LocalRefusal>> {
        let answer = self.chunks.lock().expect("lock").get(&hash).cloned().ok_or(LocalRefusal {
            status: Status::NotFound,
            message: format!("chunk {hash} not found"),
        });
        Box::pin(async move { answer })
    }
}

fn named(data: &'static [u8]) -> (ChunkHash, Bytes) {
    (ChunkHash(*blake3::hash(data).as_bytes()), Bytes::from_static(data))
}

#[tokio::test]
async fn in_process_put_has_get_round_trip() {
    let d = Daemon::Local(MemDaemon::handle(7, None, 0));
    let (a, data) = named(b"chunk a");
    let (b, _) = named(b"chunk b");
    assert_eq!(d.has(&[a, b]).await, Ok(vec![false, false]));
    d.put(a, data.clone()).await.expect("put");
    assert_eq!(d.has(&[a, b]).await, Ok(vec![true, false]));
    assert_eq!(d.get(a).await, Ok(data));
}

#[tokio::test]
async fn refusals_map_through_the_chunk_status_table() {
    let (a, data) = named(b"chunk a");
    let full = Daemon::Local(MemDaemon::handle(7, Some(Status::NoSpace), 0));
    assert_eq!(full.put(a, data.clone()).await, Err(FsError::NoSpace), "a full daemon is ENOSPC, as over QUIC");
    let broken = Daemon::Local(MemDaemon::handle(7, Some(Status::Internal), 0));
    assert!(matches!(broken.put(a, data).await, Err(FsError::Io(m)) if m.contains("refused by the test")));
    match full.get(a).await {
        Err(FsError::Io(m)) => assert!(m.contains("not found"), "{m}"),
        other => panic!("a missing chunk is an I/O error, got {other:?}"),
    }
    let short = Daemon::Local(MemDaemon::handle(7, None, 1));
    assert!(matches!(short.has(&[a]).await, Err(FsError::Io(_))), "a HAS answer of the wrong length is refused");
}

#[tokio::test]
async fn the_connector_calls_only_the_daemon_with_the_local_id_in_process() {
    let connector = QuicConnector::new(Vec::new()).with_local(Some(MemDaemon::handle(7, None, 0)));
    assert!(matches!(connector.connect(7, "127.0.0.1:1").await, Ok(Daemon::Local(_))));
    assert!(matches!(connector.connect(8, "127.0.0.1:1").await, Ok(Daemon::Quic(_))));
    let without = QuicConnector::new(Vec::new());
    assert!(matches!(without.connect(7, "127.0.0.1:1").await, Ok(Daemon::Quic(_))));
}
