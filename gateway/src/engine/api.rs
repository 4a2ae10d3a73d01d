//! The two narrow seams the engine core is written against: metadata (`MetaApi`, mirroring
//! metad's `Meta` gRPC service) and chunk storage (`ChunkApi`, mirroring a block daemon's
//! QUIC chunk frames).
//!
//! Owns only the trait definitions. Real implementations live in `grpc_meta` and
//! `quic_chunks`; tests use in-memory fakes. Must never carry engine logic: every method is
//! one remote call (plus transport-level retry), answering with `FsError`.

use std::future::Future;

use bytes::Bytes;
use proto::pb;
use proto::{ChunkHash, FsError};

/// metad's `Meta` service, one method per RPC the engine uses. Requests arrive with their
/// `cred` set by the engine; mutations get their `request_id` from the implementation
/// (the same id on every retry of one call).
pub trait MetaApi: Send + Sync + 'static {
    fn list_shares(&self) -> impl Future<Output = Result<Vec<pb::Share>, FsError>> + Send;
    fn get_share(&self, export_path: &str) -> impl Future<Output = Result<pb::Share, FsError>> + Send;
    fn get_attr(&self, node: pb::NodeRef) -> impl Future<Output = Result<pb::Attr, FsError>> + Send;
    fn lookup(&self, req: pb::LookupRequest) -> impl Future<Output = Result<pb::LookupReply, FsError>> + Send;
    fn create(&self, req: pb::CreateRequest) -> impl Future<Output = Result<pb::CreateReply, FsError>> + Send;
    fn read_dir(&self, req: pb::ReadDirRequest) -> impl Future<Output = Result<pb::ReadDirReply, FsError>> + Send;
    fn remove(&self, req: pb::RemoveRequest) -> impl Future<Output = Result<pb::RemoveReply, FsError>> + Send;
    fn set_attr(&self, req: pb::SetAttrRequest) -> impl Future<Output = Result<pb::SetAttrReply, FsError>> + Send;
    /// Replaces everything in `[range_start, range_end)` by `extents`; size becomes
    /// `max(size, range_end)`.
    fn commit_extents(
        &self,
        req: pb::CommitExtentsRequest,
    ) -> impl Future<Output = Result<pb::CommitExtentsReply, FsError>> + Send;
    /// Takes a file's write lease for a gateway instance (a new epoch), or returns the
    /// epoch it holds.
    fn acquire_write_lease(
        &self,
        req: pb::AcquireWriteLeaseRequest,
    ) -> impl Future<Output = Result<pb::AcquireWriteLeaseReply, FsError>> + Send;
    /// Extents clipped to the asked range, ascending, holes omitted, plus the attributes.
    fn get_extents(
        &self,
        req: pb::GetExtentsRequest,
    ) -> impl Future<Output = Result<pb::GetExtentsReply, FsError>> + Send;
    fn fs_stat(&self, node: pb::NodeRef) -> impl Future<Output = Result<pb::FsStatReply, FsError>> + Send;
    fn symlink(&self, req: pb::SymlinkRequest) -> impl Future<Output = Result<pb::CreateReply, FsError>> + Send;
    fn read_link(&self, req: pb::ReadLinkRequest) -> impl Future<Output = Result<pb::ReadLinkReply, FsError>> + Send;
    fn mknod(&self, req: pb::MknodRequest) -> impl Future<Output = Result<pb::CreateReply, FsError>> + Send;
    fn link(&self, req: pb::LinkRequest) -> impl Future<Output = Result<pb::LinkReply, FsError>> + Send;
    fn rename(&self, req: pb::RenameRequest) -> impl Future<Output = Result<pb::RenameReply, FsError>> + Send;
    fn access(&self, req: pb::AccessRequest) -> impl Future<Output = Result<pb::AccessReply, FsError>> + Send;
}

/// A block daemon's chunk store.
pub trait ChunkApi: Send + Sync + 'static {
    /// True when `get` only ever returns bytes it checked against their hash (the real
    /// implementations: over QUIC, in-process from a store that checks as it reads, and
    /// replicated over those). Callers hash again only when this is false, so the bytes
    /// of one read are hashed once in the gateway, never zero times (invariant 5).
    const RETURNS_VERIFIED: bool = false;

    /// Which of `hashes` the daemon holds, in order. Any number of hashes (implementations
    /// batch as their protocol requires).
    fn has(&self, hashes: &[ChunkHash]) -> impl Future<Output = Result<Vec<bool>, FsError>> + Send;
    /// Stores a chunk; `Ok` means it is durable (fsynced) on the daemon.
    fn put(&self, hash: ChunkHash, data: Bytes) -> impl Future<Output = Result<(), FsError>> + Send;
    /// The chunk's bytes. Implementations that cross a network verify the hash (and say so
    /// with `RETURNS_VERIFIED`); the engine verifies those of any other implementation
    /// before the bytes enter its cache.
    fn get(&self, hash: ChunkHash) -> impl Future<Output = Result<Bytes, FsError>> + Send;

    /// `has` for a chunk kept on `rf` replicas (0 = the cluster default): true only where
    /// every replica holds it. A store with a single copy ignores `rf`.
    fn has_replicated(&self, hashes: &[ChunkHash], rf: u32) -> impl Future<Output = Result<Vec<bool>, FsError>> + Send {
        let _ = rf;
        self.has(hashes)
    }

    /// `put` onto `rf` replicas (0 = the cluster default): `Ok` only when every replica has
    /// it durably. A store with a single copy ignores `rf`.
    fn put_replicated(
        &self,
        hash: ChunkHash,
        data: Bytes,
        rf: u32,
    ) -> impl Future<Output = Result<(), FsError>> + Send {
        let _ = rf;
        self.put(hash, data)
    }
}
