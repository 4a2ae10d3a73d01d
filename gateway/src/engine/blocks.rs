//! `Blocks`: the chunk store a real engine uses, chosen by `BlockdSource`: one block daemon
//! at a fixed address or in this process (`tessera dev`), or every live block daemon metad lists, with
//! replication (`ReplicatedChunks`).
//!
//! Owns only the choice and the delegation; must never add behaviour of its own.

use bytes::Bytes;
use proto::{ChunkHash, FsError};

use super::api::ChunkApi;
use super::grpc_meta::GrpcMeta;
use super::local_daemon::Daemon;
use super::replicated::{QuicConnector, ReplicatedChunks};

/// The real chunk store of an engine.
#[allow(clippy::large_enum_variant, reason = "one per engine, built once")]
pub enum Blocks {
    /// One block daemon (over QUIC, or in this process); replication factors are ignored
    /// (there is one copy).
    Single(Daemon),
    /// The cluster's block daemons, as metad lists them.
    Replicated(ReplicatedChunks<GrpcMeta, QuicConnector>),
}

impl ChunkApi for Blocks {
    const RETURNS_VERIFIED: bool = true;

    async fn has(&self, hashes: &[ChunkHash]) -> Result<Vec<bool>, FsError> {
        match self {
            Blocks::Single(c) => c.has(hashes).await,
            Blocks::Replicated(c) => c.has(hashes).await,
        }
    }

    async fn put(&self, hash: ChunkHash, data: Bytes) -> Result<(), FsError> {
        match self {
            Blocks::Single(c) => c.put(hash, data).await,
            Blocks::Replicated(c) => c.put(hash, data).await,
        }
    }

    async fn get(&self, hash: ChunkHash) -> Result<Bytes, FsError> {
        match self {
            Blocks::Single(c) => c.get(hash).await,
            Blocks::Replicated(c) => c.get(hash).await,
        }
    }

    async fn has_replicated(&self, hashes: &[ChunkHash], rf: u32) -> Result<Vec<bool>, FsError> {
        match self {
            Blocks::Single(c) => c.has(hashes).await,
            Blocks::Replicated(c) => c.has_rf(hashes, rf).await,
        }
    }

    async fn put_replicated(&self, hash: ChunkHash, data: Bytes, rf: u32) -> Result<(), FsError> {
        match self {
            Blocks::Single(c) => c.put(hash, data).await,
            Blocks::Replicated(c) => c.put_rf(hash, data, rf).await,
        }
    }
}
