//! The file I/O engine: implements `Vfs` against metad (`MetaApi`) and the block daemons
//! (`ChunkApi`: one daemon, or every live one with replication, `BlockdSource`).
//!
//! Owns write buffering (per-file dirty ranges under a global byte budget with
//! back-pressure), flushing (widen the dirty span to the neighbouring chunk boundaries,
//! FastCDC re-chunking and BLAKE3 naming on a blocking thread, HAS-deduplicated PUTs, one
//! CommitExtents per span), the write verifier, the read path (extents -> chunks through a
//! hash-keyed verified cache, with sequential read-ahead) and the background idle flusher.
//!
//! Must never: acknowledge FILE_SYNC/COMMIT before the chunks are stored and the extents
//! committed (invariant 3); drop buffered data except when its file is gone or its write
//! lease was taken by another gateway (`write`, `flush`); return chunk
//! bytes that failed their hash check (invariant 5); panic on anything metad or a block
//! daemon answers (invariant 6). Protocol encoding is not its business (`nfs3` does that).
//!
//! Credentials: every metad call carries the caller's `pb::Cred`. Buffered writes are
//! checked when they arrive (metad's Access, positive answers remembered briefly in
//! `access`; a refusal is NFS3ERR_ACCES and nothing is buffered) and flushed later with
//! the credential of the file's last writer, kept with the buffered data. The reads a
//! flush makes to widen its span use `flush::FLUSH_READ_CRED` (see there).
//!
//! Module map: `api` (the two seams), `grpc_meta`/`quic_chunks` (real seams),
//! `local_daemon` (a block daemon in this process, called without QUIC), `blocks`
//! (the real chunk store: one daemon or `replicated`), `replicated` (replica sets over the
//! live daemons metad lists), `placement` (rendezvous hashing), `shares` (each share's
//! export options and replication factor, cached for `shares::TTL`), `readahead` (sequential-read detection), `single_flight` (one fetch per chunk
//! at a time), `access`
//! (granted-permission cache), `buffer`
//! (dirty ranges), `budget` (byte permits), `files` (per-file state), `write` (WRITE,
//! COMMIT, SETATTR), `flush` (one file's flush), `read` (READ and chunk fetching), `cache`,
//! `chunker`, `verifier`, `background` (idle/pressure flusher, `flush_all`), `vfs_impl`.
//!
//! Simplifications, documented: one CommitExtents per contiguous dirty span (not one per file); FSSTAT capacity is the live
//! block daemons' as of their last heartbeats, divided by the share's replication factor
//! (`fsstat` in `vfs_impl`); attributes in WRITE replies may come from a cache of
//! metad's last answer for this file no older than `files::ATTR_TTL` (size extended over the
//! buffer; mtime/change move only when a flush commits). Each file keeps its last committed
//! chunk (`FileInner::tail`, at most one chunk, outside the write budget) so a sequential
//! writer's next flush re-chunks from it without a GET.

mod access;
mod api;
mod background;
mod blocks;
mod budget;
mod buffer;
mod cache;
pub mod chunker;
mod error;
mod files;
mod flush;
mod grpc_meta;
mod local_daemon;
mod placement;
mod quic_chunks;
mod read;
mod readahead;
mod replicated;
mod shares;
mod single_flight;
mod verifier;
mod vfs_impl;
mod write;

#[cfg(test)]
mod fakes;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_creds;

use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use cluster::grpc_tls::ClientTls;
use rustls::pki_types::CertificateDer;
use tokio::sync::Notify;

pub use api::{ChunkApi, MetaApi};
pub use blocks::Blocks;
pub use error::EngineError;
pub use grpc_meta::{GrpcMeta, LocalMeta, MetaTransport, in_process_transport};
pub use local_daemon::{BoxFuture, Daemon, LocalDaemon, LocalHandle, LocalRefusal};
pub use quic_chunks::QuicChunks;
pub use replicated::{Connector, Membership, QuicConnector, ReplicatedChunks, ReplicationOptions};

use access::AccessCache;
use budget::Budget;
use cache::ChunkCache;
use chunker::ChunkerParams;
use files::FileTable;
use readahead::ReadAhead;
use shares::ShareCache;
use verifier::WriteVerifier;

/// Where the engine finds its block daemons.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlockdSource {
    /// One block daemon at this QUIC address, one copy of each chunk (`tessera dev`).
    Static(SocketAddr),
    /// Every live block daemon metad lists (`ListBlockDaemons`); each chunk on its share's
    /// replication factor of them (`ReplicatedChunks`).
    FromMetad,
}

/// Settings of one engine.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// metad's gRPC endpoints, e.g. `https://127.0.0.1:7100`: any node answers (followers
    /// forward to the leader); the engine fails over between them.
    pub metad_endpoints: Vec<String>,
    /// How metad's endpoints are dialed: mutual TLS presenting the gateway's certificate
    /// (`tessera serve`, `tessera dev`), or plaintext (tests).
    pub metad_tls: ClientTls,
    /// Where the block daemons are.
    pub blockd: BlockdSource,
    /// Timing of replicated puts and of the block daemon list (`BlockdSource::FromMetad`).
    pub replication: ReplicationOptions,
    /// Certificates trusted for the block daemons' TLS identity.
    pub blockd_trust: Vec<CertificateDer<'static>>,
    /// The gateway's own certificate (role `gateway`, from the cluster CA), presented to
    /// block daemons that require mutual TLS; `None` presents none.
    pub client_identity: Option<cluster::tls::Identity>,
    pub chunk_min_bytes: u32,
    pub chunk_avg_bytes: u32,
    pub chunk_max_bytes: u32,
    /// Dirty bytes all files may buffer together before writes wait.
    pub write_buffer_bytes: u64,
    /// Bytes of the shared chunk cache.
    pub cache_bytes: u64,
    /// A block daemon in this process, called directly instead of over QUIC (for
    /// `BlockdSource::Static`, in place of the daemon at that address; for `FromMetad`, for
    /// the daemon with its id).
    pub local_daemon: Option<LocalHandle>,
    /// metad's `Meta` service in this process, called before the network endpoints.
    pub local_metad: Option<LocalMeta>,
    /// A file's buffered writes are flushed after this long without a write.
    pub flush_idle: Duration,
}

impl EngineOptions {
    /// Options from the node's gateway configuration, with one metad endpoint and one
    /// block daemon (`tessera dev`; for a cluster set `metad_endpoints` and `blockd:
    /// BlockdSource::FromMetad`).
    pub fn from_config(
        metad_endpoint: String,
        blockd_addr: SocketAddr,
        blockd_trust: Vec<CertificateDer<'static>>,
        cfg: &cluster::config::GatewayConfig,
    ) -> EngineOptions {
        EngineOptions::for_cluster(vec![metad_endpoint], BlockdSource::Static(blockd_addr), blockd_trust, cfg)
    }

    /// Options from the node's gateway configuration for any metad endpoints and block
    /// daemon source (`tessera serve`: every member's URL and `BlockdSource::FromMetad`).
    pub fn for_cluster(
        metad_endpoints: Vec<String>,
        blockd: BlockdSource,
        blockd_trust: Vec<CertificateDer<'static>>,
        cfg: &cluster::config::GatewayConfig,
    ) -> EngineOptions {
        EngineOptions {
            metad_endpoints,
            metad_tls: ClientTls::plaintext(),
            blockd,
            replication: ReplicationOptions::default(),
            blockd_trust,
            client_identity: None,
            chunk_min_bytes: cfg.chunk_min_bytes,
            chunk_avg_bytes: cfg.chunk_avg_bytes,
            chunk_max_bytes: cfg.chunk_max_bytes,
            write_buffer_bytes: cfg.write_buffer_bytes,
            cache_bytes: cfg.cache_bytes,
            flush_idle: Duration::from_millis(cfg.flush_idle_ms),
            local_daemon: None,
            local_metad: None,
        }
    }
}

/// The file I/O engine. Create with [`Engine::connect`] (real metad and block daemon) or
/// [`Engine::new`] (any `MetaApi`/`ChunkApi`).
pub struct Engine<M: MetaApi = GrpcMeta, C: ChunkApi = Blocks> {
    meta: M,
    chunks: C,
    chunker: ChunkerParams,
    flush_idle: Duration,
    files: FileTable,
    budget: Budget,
    cache: ChunkCache,
    verifier: WriteVerifier,
    access: AccessCache,
    readahead: ReadAhead,
    /// Chunk fetches in flight, joined by concurrent readers of the same chunk.
    fetches: single_flight::SingleFlight<proto::ChunkHash, bytes::Bytes, proto::FsError>,
    /// Write-lease acquisitions in flight, joined by concurrent WRITEs of the same file.
    lease_acquisitions: single_flight::SingleFlight<proto::FileHandle, u64, proto::FsError>,
    shares: ShareCache,
    /// The mounts handed out by this gateway (MOUNT DUMP).
    mounts: crate::exports::MountTable,
    /// The engine itself, for the background tasks it spawns (read-ahead).
    me: Weak<Self>,
    /// Wakes the background flusher when a writer waits for budget.
    pressure: Arc<Notify>,
    /// Writers currently waiting for budget.
    writers_waiting: AtomicUsize,
    /// This engine's identity for per-file write leases (random, non-zero, new on every
    /// start): metad refuses a commit under a lease another instance has taken since.
    instance: u64,
}

impl Engine {
    /// An engine over metad at `opts.metad_endpoints` and the block daemons of
    /// `opts.blockd`. Connections are made on first use. Must be called inside a tokio
    /// runtime; the background flusher stops when `shutdown` is cancelled (call
    /// [`Engine::flush_all`] afterwards to make buffered writes durable).
    pub async fn connect(opts: EngineOptions, shutdown: cluster::Shutdown) -> Result<Arc<Engine>, EngineError> {
        let meta = GrpcMeta::connect_lazy_many(&opts.metad_endpoints, &opts.metad_tls)?
            .with_in_process(opts.local_metad.clone());
        let chunks = match opts.blockd {
            BlockdSource::Static(addr) => Blocks::Single(match &opts.local_daemon {
                Some(local) => Daemon::Local(local.clone()),
                None => Daemon::Quic(Box::new(QuicChunks::with_identity(
                    addr,
                    &opts.blockd_trust,
                    opts.client_identity.as_ref(),
                )?)),
            }),
            BlockdSource::FromMetad => Blocks::Replicated(ReplicatedChunks::new(
                GrpcMeta::connect_lazy_many(&opts.metad_endpoints, &opts.metad_tls)?
                    .with_in_process(opts.local_metad.clone()),
                QuicConnector::with_identity(opts.blockd_trust.clone(), opts.client_identity.clone())
                    .with_local(opts.local_daemon.clone()),
                opts.replication.clone(),
            )),
        };
        Engine::new(meta, chunks, opts, shutdown)
    }
}

impl<M: MetaApi, C: ChunkApi> Engine<M, C> {
    /// An engine over the given seams (tests use in-memory fakes). Spawns the background
    /// flusher on the current tokio runtime. `metad_endpoints`, `blockd`,
    /// `replication` and `blockd_trust` of `opts` are not used here.
    pub fn new(meta: M, chunks: C, opts: EngineOptions, shutdown: cluster::Shutdown) -> Result<Arc<Self>, EngineError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| EngineError::NoRuntime)?;
        let chunker = ChunkerParams::new(opts.chunk_min_bytes, opts.chunk_avg_bytes, opts.chunk_max_bytes)?;
        if opts.write_buffer_bytes == 0 {
            return Err(EngineError::WriteBuffer { bytes: 0, reason: "must be at least one byte" });
        }
        let engine = Arc::new_cyclic(|me| Engine {
            meta,
            chunks,
            chunker,
            flush_idle: opts.flush_idle,
            files: FileTable::default(),
            budget: Budget::new(opts.write_buffer_bytes),
            cache: ChunkCache::new(opts.cache_bytes),
            verifier: WriteVerifier::new(),
            access: AccessCache::default(),
            readahead: ReadAhead::new(opts.cache_bytes),
            fetches: Default::default(),
            lease_acquisitions: Default::default(),
            shares: ShareCache::default(),
            mounts: crate::exports::MountTable::default(),
            me: me.clone(),
            pressure: Arc::new(Notify::new()),
            writers_waiting: AtomicUsize::new(0),
            instance: rand::random::<u64>().max(1),
        });
        background::spawn(&runtime, &engine, shutdown);
        Ok(engine)
    }
}

/// Locks a std mutex, ignoring poisoning: every critical section here leaves its data
/// consistent before any point that could panic.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
