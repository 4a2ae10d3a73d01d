//! The block daemon: a content-addressed chunk store on local disk and its QUIC server.
//!
//! Owns: chunks named by their BLAKE3 hash, appended to preallocated segment files
//! (`segment`, `format`), the hash index in the daemon's own redb file (`index`), start-up
//! recovery (`recover`), group-committed puts (`writer`), hash-verified reads (`store`),
//! offline/online verification (`verify`), the chunk protocol over QUIC (`server`) and the
//! optional S3 tier (`s3`: each chunk uploaded in a pack by one replica, pack locations
//! in metad, a bounded local tier, verified read-through of evicted chunks), anti-entropy
//! re-replication to peers (`repair`) and scrub (`scrub`: re-verifies local copies and
//! rewrites a corrupt or missing one from a peer or S3). Later: compaction.
//!
//! Must never: acknowledge a put before the chunk is fsynced and indexed; serve bytes that
//! fail their hash check; allocate a length read from the network or disk before checking
//! it against a limit; panic on outside input.
//!
//! Entry points: [`Blockd::start`] for the daemon, [`Store`] for in-process use,
//! [`verify_store`] / [`scan_records`] for tools.

mod error;
mod format;
pub mod heartbeat;
mod periodic;
mod index;
mod recover;
pub mod repair;
pub mod s3;
pub mod scrub;
mod segment;
mod server;
mod store;
mod verify;
mod writer;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

pub use error::BlockdError;
pub use heartbeat::daemon_id;
pub use repair::{RepairOptions, RepairReport, Repairer};
pub use s3::{S3Options, TierError, TierStats};
pub use scrub::{ScrubError, ScrubOptions, ScrubReport, Scrubber};
pub use server::{ClientAuth, FORBIDDEN_PUT, MAX_STREAMS_PER_CONNECTION, transport_config};
pub use store::{Chunk, PutOutcome, Store, StoreOptions, StoreStats};
pub use verify::{RecordLocation, VerifyReport, scan_records, verify_store};

/// Default size a segment is preallocated to.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

/// How to run a block daemon.
#[derive(Debug, Clone)]
pub struct BlockdOptions {
    /// The daemon's own directory (created if missing): `segments/` and `blockd.redb`.
    pub data_dir: PathBuf,
    /// UDP address of the QUIC listener; port 0 picks a free one.
    pub listen: SocketAddr,
    /// The certificate presented to clients, and to peers when copying chunks to them.
    pub identity: cluster::tls::Identity,
    /// Who may connect: mutual TLS against the cluster CA, or (dev only) anyone.
    pub client_auth: ClientAuth,
    /// Size a new segment is preallocated to (default [`DEFAULT_SEGMENT_BYTES`]).
    pub segment_bytes: u64,
    /// Puts are refused with `Status::NoSpace` when the disk has less free space than this.
    pub min_free_bytes: u64,
    /// metad gRPC endpoints (`http(s)://host:port`) for heartbeats and the daemon list; empty:
    /// no heartbeats and no repair.
    pub metad_endpoints: Vec<String>,
    /// How metad is dialed: mutual TLS presenting the daemon's `blockd` certificate in a
    /// cluster (an `http://` endpoint is then dialed as `https://`), plaintext in tests.
    pub metad_tls: cluster::grpc_tls::ClientTls,
    /// QUIC address announced to metad (default: the bound address).
    pub advertise_addr: Option<SocketAddr>,
    /// Anti-entropy re-replication (needs metad endpoints and [`ClientAuth::Required`]).
    pub repair: RepairOptions,
    /// Scrub of local copies. Always available; it fetches good copies from peers only with
    /// metad endpoints and [`ClientAuth::Required`], and from S3 with a tier.
    pub scrub: ScrubOptions,
}

/// A running block daemon.
pub struct Blockd {
    local_addr: SocketAddr,
    store: Arc<Store>,
    server: tokio::task::JoinHandle<()>,
    id: u64,
    repairer: Option<Arc<Repairer>>,
    scrubber: Arc<Scrubber>,
    background: tokio_util::task::TaskTracker,
}

impl Blockd {
    /// Opens the store (recovering it if needed) and starts serving QUIC on `opts.listen`
    /// until `shutdown` is cancelled.
    pub async fn start(opts: BlockdOptions, shutdown: cluster::Shutdown) -> Result<Blockd, BlockdError> {
        Blockd::start_with_tier(opts, None, shutdown).await
    }

    /// [`Blockd::start`] with an optional S3 tier (issue 5; the lead wires the config).
    pub async fn start_with_tier(
        opts: BlockdOptions,
        s3: Option<S3Options>,
        shutdown: cluster::Shutdown,
    ) -> Result<Blockd, BlockdError> {
        let store_opts = StoreOptions {
            data_dir: opts.data_dir.clone(),
            segment_bytes: opts.segment_bytes,
            min_free_bytes: opts.min_free_bytes,
        };
        // The S3 tier asks metad who is live and where chunks are, when metad is configured.
        let metad = if opts.metad_endpoints.is_empty() {
            None
        } else {
            Some(heartbeat::Metad::new(&opts.metad_endpoints, &opts.metad_tls)?)
        };
        let directory = metad.clone().map(|m| Arc::new(m) as Arc<dyn s3::Directory>);
        let store = Arc::new(
            tokio::task::spawn_blocking(move || Store::open_with_directory(store_opts, s3, directory)).await??,
        );
        let endpoint = server::bind(&opts.identity, &opts.client_auth, opts.listen)?;
        let local_addr = endpoint.local_addr().map_err(|source| BlockdError::Bind { addr: opts.listen, source })?;
        tracing::info!(%local_addr, data_dir = %opts.data_dir.display(), "block daemon serving");
        let server = tokio::spawn(server::serve(endpoint, store.clone(), opts.client_auth.clone(), shutdown.clone()));

        // Background work that talks to metad and peers: heartbeats and repair.
        let dir = opts.data_dir.clone();
        let id = tokio::task::spawn_blocking(move || heartbeat::daemon_id(&dir)).await??;
        let background = tokio_util::task::TaskTracker::new();
        let mut repairer = None;
        let mut scrub_peers = None;
        if let Some(metad) = metad {
            let advertise = opts.advertise_addr.unwrap_or(local_addr);
            background.spawn(heartbeat::run(metad.clone(), id, advertise, store.clone(), shutdown.clone()));
            if let ClientAuth::Required(anchors) = &opts.client_auth {
                let peers = Arc::new(repair::PeerClient::new(&opts.identity, anchors).map_err(Box::new)?);
                let r = Arc::new(Repairer::new(
                    id,
                    store.clone(),
                    metad.clone(),
                    peers.clone(),
                    opts.repair.max_copies_per_sec,
                ));
                if let Some(interval) = opts.repair.interval {
                    background.spawn(repair::run(r.clone(), interval, shutdown.clone()));
                }
                repairer = Some(r);
                scrub_peers = Some(scrub::Peers { metad, client: peers });
            } else {
                tracing::warn!("repair is off, and scrub repairs from S3 only: peers need mutual TLS");
            }
        }
        let scrubber = Arc::new(Scrubber::new(id, store.clone(), scrub_peers, &opts.scrub));
        if let Some(interval) = opts.scrub.interval {
            background.spawn(scrub::run(scrubber.clone(), interval, shutdown.clone()));
        }
        background.close();
        Ok(Blockd { local_addr, store, server, id, repairer, scrubber, background })
    }

    /// The daemon's stable id (kept in its data dir).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Runs one repair pass now; `None` when repair is not configured.
    pub async fn repair_pass(&self) -> Option<Result<RepairReport, repair::RepairError>> {
        match &self.repairer {
            Some(r) => Some(r.pass().await),
            None => None,
        }
    }

    /// Runs one scrub pass now (waiting for a pass under way to finish first).
    pub async fn scrub_pass(&self) -> Result<ScrubReport, ScrubError> {
        self.scrubber.pass().await
    }

    /// The bound QUIC address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The chunk store, for in-process callers (`tessera dev`). Holding it past
    /// [`Blockd::wait`] is harmless: the store is closed there regardless.
    /// Resolves once the store's writer has stopped taking puts (see `Store::failed`): the
    /// daemon is useless for writes until it is restarted, whose recovery re-reads the
    /// segments. `tessera serve` exits then, so its service manager restarts it.
    pub async fn failed(&self) -> String {
        self.store.failed().await
    }

    pub fn store(&self) -> Arc<Store> {
        self.store.clone()
    }

    /// Resolves once shutdown has completed: the endpoint is closed, every stream task has
    /// ended, every put handed to the store is fsynced and indexed, and the writer stopped.
    pub async fn wait(self) -> Result<(), BlockdError> {
        let served = self.server.await;
        self.background.wait().await;
        let store = self.store;
        tokio::task::spawn_blocking(move || store.close()).await?;
        served?;
        tracing::info!("block daemon stopped");
        Ok(())
    }
}
