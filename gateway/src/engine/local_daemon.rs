//! `LocalDaemon`: a block daemon running in the gateway's own process (`tessera dev`, a
//! node with both the gateway and the blockd role), reached by function calls instead of
//! QUIC; `Daemon`: the client of one daemon, either way.
//!
//! The gateway crate does not depend on blockd: the node that starts both roles provides
//! the `LocalDaemon` (the root crate's `node::in_process`). Answers carry the same
//! `chunk_frame::Status` a QUIC answer would, mapped to `FsError` by the one table in
//! `quic_chunks::check_status`.
//!
//! Must never weaken what a QUIC daemon guarantees: `put` returns only after the chunk
//! is durable in the daemon's store; `get` returns only bytes the store checked against
//! their hash when it read them (the engine checks again before use, invariant 5). No
//! bytes cross a network here, so there is no third hash pass as `QuicChunks` makes.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use proto::chunk_frame::Status;
use proto::{ChunkHash, FsError};

use super::api::ChunkApi;
use super::quic_chunks::{QuicChunks, check_status};

/// A boxed future (the trait is used as a trait object).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a local daemon refused: the status its QUIC server would have sent, and the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalRefusal {
    pub status: Status,
    pub message: String,
}

/// A block daemon's store in this process.
pub trait LocalDaemon: Send + Sync + 'static {
    /// The daemon's id, as metad lists it.
    fn id(&self) -> u64;
    /// Which of `hashes` the store holds (a copy known to be bad counts as absent).
    fn has(&self, hashes: Vec<ChunkHash>) -> BoxFuture<'_, Result<Vec<bool>, LocalRefusal>>;
    /// Stores a chunk the caller named by its BLAKE3 hash; `Ok` once it is durable.
    fn put(&self, hash: ChunkHash, data: Bytes) -> BoxFuture<'_, Result<(), LocalRefusal>>;
    /// The chunk's bytes, checked against `hash` by the store as it read them.
    fn get(&self, hash: ChunkHash) -> BoxFuture<'_, Result<Bytes, LocalRefusal>>;
}

/// The in-process daemon an engine may use, if any (cheap to clone).
#[derive(Clone)]
pub struct LocalHandle(pub Arc<dyn LocalDaemon>);

impl std::fmt::Debug for LocalHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LocalHandle(block daemon {})", self.0.id())
    }
}

fn refused(r: LocalRefusal, hash: Option<&ChunkHash>) -> FsError {
    match check_status(r.status, r.message.as_bytes(), hash) {
        Err(e) => e,
        // A refusal that says Ok is not one the daemon makes; treat it as an internal error.
        Ok(()) => FsError::Io(format!("in-process block daemon refused without a reason: {}", r.message)),
    }
}

/// The client of one block daemon: over QUIC, or in this process.
pub enum Daemon {
    /// Boxed: a QUIC client is large and lives as long as its daemon's address.
    Quic(Box<QuicChunks>),
    Local(LocalHandle),
}

impl Daemon {
    fn count(&self, op: &'static str) {
        let path = match self {
            Daemon::Quic(_) => "quic",
            Daemon::Local(_) => "in_process",
        };
        metrics::counter!(cluster::metrics::GATEWAY_CHUNK_REQUESTS, "op" => op, "path" => path).increment(1);
    }
}

impl ChunkApi for Daemon {
    const RETURNS_VERIFIED: bool = true;

    async fn has(&self, hashes: &[ChunkHash]) -> Result<Vec<bool>, FsError> {
        self.count("has");
        match self {
            Daemon::Quic(c) => c.has(hashes).await,
            Daemon::Local(l) => {
                let found = l.0.has(hashes.to_vec()).await.map_err(|r| refused(r, None))?;
                if found.len() != hashes.len() {
                    return Err(FsError::Io(format!("in-process block daemon answered {} of {} hashes", found.len(), hashes.len())));
                }
                Ok(found)
            }
        }
    }

    async fn put(&self, hash: ChunkHash, data: Bytes) -> Result<(), FsError> {
        self.count("put");
        match self {
            Daemon::Quic(c) => c.put(hash, data).await,
            Daemon::Local(l) => l.0.put(hash, data).await.map_err(|r| refused(r, Some(&hash))),
        }
    }

    async fn get(&self, hash: ChunkHash) -> Result<Bytes, FsError> {
        self.count("get");
        match self {
            Daemon::Quic(c) => c.get(hash).await,
            Daemon::Local(l) => l.0.get(hash).await.map_err(|r| refused(r, Some(&hash))),
        }
    }
}

#[cfg(test)]
#[path = "local_daemon/tests.rs"]
mod tests;
