//! The gateway's in-process path to a block daemon of the same process (`tessera dev`, a
//! node running both roles; `gateway.in_process`).
//!
//! Owns only the translation between `gateway::engine::LocalDaemon` and `blockd::Store`:
//! the same store calls the daemon's QUIC server makes (a put is verified against its
//! name and resolves once fsynced; a read is served on the caller's task when its bytes are
//! in the page cache, else on the blocking pool), and the same
//! `chunk_frame::Status` its answers would carry. Must never add chunk logic of its own.

use std::sync::Arc;

use bytes::Bytes;
use gateway::engine::{BoxFuture, LocalDaemon, LocalHandle, LocalRefusal};
use proto::ChunkHash;
use proto::chunk_frame::Status;

/// A block daemon's store, as the gateway of its process sees it.
pub struct InProcessBlockd {
    id: u64,
    store: Arc<blockd::Store>,
}

impl InProcessBlockd {
    pub fn handle(daemon: &blockd::Blockd) -> LocalHandle {
        LocalHandle(Arc::new(InProcessBlockd { id: daemon.id(), store: daemon.store() }))
    }
}

fn refusal(e: &blockd::BlockdError) -> LocalRefusal {
    LocalRefusal { status: e.status(), message: e.to_string() }
}

fn task_failed(e: &tokio::task::JoinError) -> LocalRefusal {
    LocalRefusal { status: Status::Internal, message: format!("block store task failed: {e}") }
}

impl LocalDaemon for InProcessBlockd {
    fn id(&self) -> u64 {
        self.id
    }

    fn has(&self, hashes: Vec<ChunkHash>) -> BoxFuture<'_, Result<Vec<bool>, LocalRefusal>> {
        let store = Arc::clone(&self.store);
        Box::pin(async move {
            match tokio::task::spawn_blocking(move || store.has(&hashes)).await {
                Ok(answer) => answer.map_err(|e| refusal(&e)),
                Err(e) => Err(task_failed(&e)),
            }
        })
    }

    fn put(&self, hash: ChunkHash, data: Bytes) -> BoxFuture<'_, Result<(), LocalRefusal>> {
        Box::pin(async move {
            let chunk = blockd::Chunk::verified(hash, data).map_err(|e| refusal(&e))?;
            self.store.put(chunk).await.map(|_| ()).map_err(|e| refusal(&e))
        })
    }

    fn get(&self, hash: ChunkHash) -> BoxFuture<'_, Result<Bytes, LocalRefusal>> {
        Box::pin(async move { self.store.read(hash).await.map_err(|e| refusal(&e)) })
    }
}
