//! `ReplicatedChunks`: the `ChunkApi` over every live block daemon of the cluster, placing
//! each chunk on its rendezvous replica set (`placement`).
//!
//! Owns the membership view (metad's `ListBlockDaemons`, through the `Membership` seam:
//! refreshed when older than `refresh_every` and at once after a replica failed; only
//! `live` daemons are candidates), one client per daemon (`Connector`, made on first use
//! and reused while the daemon keeps its address), and the replication rules:
//! - put: HAS on the whole replica set, PUT to every replica lacking the chunk, in
//!   parallel; `Ok` only when all `rf` replicas hold it durably (invariant 3). A failed
//!   replica (or an attempt unanswered after `attempt_timeout`) refreshes the view and the
//!   put is retried on the new replica set, with backoff, until `put_deadline`; then `FsError::Unavailable` (NFS3ERR_JUKEBOX: the
//!   client retries). `NoSpace` from any replica is `FsError::NoSpace` at once.
//! - get: the replicas in rendezvous order, then every other live daemon (placement may
//!   have changed since the chunk was written), then the daemons metad lists as not live
//!   (a daemon whose heartbeats metad missed, e.g. across a metad restart); an answer is taken only if its BLAKE3 hash
//!   matches; corrupt, missing or unreachable moves to the next. None left: if some daemon
//!   could not be reached, the round is repeated on a fresh view until `put_deadline`, then
//!   `FsError::Unavailable` (JUKEBOX: the copy may be on a daemon that is restarting);
//!   `FsError::Io` only when every daemon answered and none had good bytes.
//! - has: true only if every replica of the set holds the chunk, so the write path's
//!   dedup never skips a missing replica; a replica that cannot answer counts as lacking.
//! - suspects: a daemon that failed as unreachable or did not answer within
//!   `attempt_timeout` (a killed or hung daemon says nothing until QUIC gives up) is
//!   *suspect* for `suspect_for`: puts and HAS place as if metad had already judged it dead
//!   (with the cluster default rf, that is the live count without it, as metad will say
//!   once its heartbeats stop), and gets ask it last. So one timeout is paid per daemon
//!   lost, not one per chunk until metad notices. If every live daemon is suspect, none is.
//! - every request to one daemon is bounded by `attempt_timeout`.
//!
//! Must never acknowledge a put with fewer than `rf` durable copies, return bytes that fail
//! their hash check, hold a std mutex across an `.await`, or panic on anything metad or a
//! daemon answers. Re-replicating chunks already stored is not its business (blockd's).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use proto::{ChunkHash, FsError, pb};
use rustls::pki_types::CertificateDer;

use super::api::ChunkApi;
use super::grpc_meta::GrpcMeta;
use super::quic_chunks::is_not_now;
use super::local_daemon::{Daemon, LocalHandle};
use super::lock;
use super::placement;
use super::quic_chunks::QuicChunks;

/// Where the list of block daemons comes from (metad's `ListBlockDaemons`).
pub trait Membership: Send + Sync + 'static {
    fn list_block_daemons(&self) -> impl Future<Output = Result<pb::ListBlockDaemonsReply, FsError>> + Send;
}

/// Makes the client of one block daemon.
pub trait Connector: Send + Sync + 'static {
    type Daemon: ChunkApi;
    /// A client of daemon `id` at `addr` (`host:port`). Connecting itself may be lazy.
    fn connect(&self, id: u64, addr: &str) -> impl Future<Output = Result<Self::Daemon, FsError>> + Send;
}

impl Membership for GrpcMeta {
    async fn list_block_daemons(&self) -> Result<pb::ListBlockDaemonsReply, FsError> {
        GrpcMeta::list_block_daemons(self).await
    }
}

/// `QuicChunks` clients trusting the given certificates (one QUIC endpoint per daemon),
/// except for the daemon running in this process, if any, which is called directly.
pub struct QuicConnector {
    anchors: Vec<CertificateDer<'static>>,
    identity: Option<cluster::tls::Identity>,
    local: Option<LocalHandle>,
}

impl QuicConnector {
    pub fn new(anchors: Vec<CertificateDer<'static>>) -> QuicConnector {
        QuicConnector { anchors, identity: None, local: None }
    }

    /// Connections present `identity` (mutual TLS).
    pub fn with_identity(anchors: Vec<CertificateDer<'static>>, identity: Option<cluster::tls::Identity>) -> QuicConnector {
        QuicConnector { anchors, identity, local: None }
    }

    /// The daemon `local.id()` is reached through `local` instead of QUIC.
    pub fn with_local(mut self, local: Option<LocalHandle>) -> QuicConnector {
        self.local = local;
        self
    }
}

impl Connector for QuicConnector {
    type Daemon = Daemon;

    async fn connect(&self, id: u64, addr: &str) -> Result<Daemon, FsError> {
        if let Some(local) = self.local.as_ref().filter(|l| l.0.id() == id) {
            return Ok(Daemon::Local(local.clone()));
        }
        let unavailable = |why: String| FsError::Unavailable(format!("block daemon {id} at {addr:?}: {why}"));
        let mut resolved = tokio::net::lookup_host(addr).await.map_err(|e| unavailable(e.to_string()))?;
        let sock = resolved.next().ok_or_else(|| unavailable("address resolves to nothing".into()))?;
        QuicChunks::with_identity(sock, &self.anchors, self.identity.as_ref())
            .map(|c| Daemon::Quic(Box::new(c)))
            .map_err(|e| unavailable(e.to_string()))
    }
}

/// Timing of `ReplicatedChunks`.
#[derive(Clone, Debug)]
pub struct ReplicationOptions {
    /// A membership view older than this is fetched again before use.
    pub refresh_every: Duration,
    /// A put that cannot reach its full replica set by then fails with `Unavailable`.
    pub put_deadline: Duration,
    /// One attempt on a replica set that has not answered by then is abandoned and retried
    /// on a fresh view (a daemon killed mid-request answers nothing until QUIC times out).
    pub attempt_timeout: Duration,
    /// First wait between put attempts (doubled each time, up to `max_backoff`).
    pub first_backoff: Duration,
    pub max_backoff: Duration,
    /// How long a daemon that failed or did not answer stays suspect (module docs).
    pub suspect_for: Duration,
}

impl Default for ReplicationOptions {
    fn default() -> Self {
        ReplicationOptions {
            refresh_every: Duration::from_secs(3),
            put_deadline: Duration::from_secs(20),
            attempt_timeout: Duration::from_secs(5),
            first_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
            suspect_for: Duration::from_secs(10),
        }
    }
}

/// One answer of `ListBlockDaemons`, reduced to what placement needs.
#[derive(Debug)]
struct View {
    /// Increases with every fetch (a failed replica asks for a view newer than the one it
    /// used).
    generation: u64,
    /// Live daemons' ids.
    live: Vec<u64>,
    /// Daemons metad lists but does not judge live (silent for a while, or metad itself just
    /// restarted): never placed on, but asked for a chunk when no live daemon can serve it.
    others: Vec<u64>,
    /// Addresses of both.
    addrs: HashMap<u64, String>,
    default_rf: usize,
    fetched: Instant,
}

impl View {
    fn from_reply(reply: pb::ListBlockDaemonsReply, generation: u64) -> View {
        let mut live = Vec::new();
        let mut others = Vec::new();
        let mut addrs = HashMap::new();
        for d in reply.daemons {
            if !d.addr.is_empty() && addrs.insert(d.id, d.addr).is_none() {
                if d.live { live.push(d.id) } else { others.push(d.id) }
            }
        }
        let default_rf = match reply.default_replication_factor {
            0 => placement::default_rf(live.len()),
            n => n as usize,
        };
        View { generation, live, others, addrs, default_rf, fetched: Instant::now() }
    }

    /// The copies wanted for a share's `rf` over `usable` daemons (0 = the cluster
    /// default, which follows the live count: without suspects, as metad will count).
    fn want(&self, rf: u32, usable: usize) -> usize {
        match rf {
            0 => self.default_rf.min(placement::default_rf(usable)),
            n => n as usize,
        }
    }
}

/// Why one put attempt over a replica set failed.
enum Attempt {
    /// Retrying elsewhere cannot help (no space, an invalid chunk).
    Fatal(FsError),
    /// Some replica failed; a new view may give a set that works.
    Retry(String),
}

/// A client of the daemon `id`, with the address it was made for.
struct Link<D> {
    addr: String,
    daemon: Arc<D>,
}

/// The chunk store of a cluster: see the module comment.
pub struct ReplicatedChunks<S: Membership, K: Connector> {
    source: S,
    connector: K,
    opts: ReplicationOptions,
    view: Mutex<Option<Arc<View>>>,
    /// One fetch of the view at a time.
    refreshing: tokio::sync::Mutex<()>,
    links: Mutex<HashMap<u64, Link<K::Daemon>>>,
    /// Daemons that failed or did not answer, and until when they are suspect.
    suspects: Mutex<HashMap<u64, Instant>>,
}

impl<S: Membership, K: Connector> ReplicatedChunks<S, K> {
    pub fn new(source: S, connector: K, opts: ReplicationOptions) -> Self {
        ReplicatedChunks {
            source,
            connector,
            opts,
            view: Mutex::new(None),
            refreshing: tokio::sync::Mutex::new(()),
            links: Mutex::new(HashMap::new()),
            suspects: Mutex::new(HashMap::new()),
        }
    }

    /// Daemon `id` failed as unreachable or did not answer in time.
    fn suspect(&self, id: u64, why: &str) {
        let until = Instant::now() + self.opts.suspect_for;
        if lock(&self.suspects).insert(id, until).is_none() {
            tracing::warn!(daemon = id, %why, for_ = ?self.opts.suspect_for, "block daemon suspect: placing around it");
        }
    }

    /// Whether daemon `id` is suspect now (expired marks are dropped).
    fn is_suspect(&self, id: u64) -> bool {
        let mut s = lock(&self.suspects);
        match s.get(&id) {
            Some(until) if *until > Instant::now() => true,
            Some(_) => {
                s.remove(&id);
                false
            }
            None => false,
        }
    }

    /// The live daemons of `view` placement may use: without the suspects, unless every one
    /// is suspect.
    fn usable(&self, view: &View) -> Vec<u64> {
        let ok: Vec<u64> = view.live.iter().copied().filter(|&id| !self.is_suspect(id)).collect();
        if ok.is_empty() { view.live.clone() } else { ok }
    }

    /// `request` to daemon `id`, bounded by `attempt_timeout`; an unreachable daemon or one
    /// that does not answer in time becomes suspect.
    async fn ask<T>(&self, id: u64, request: impl Future<Output = Result<T, FsError>>) -> Result<T, FsError> {
        let answer = match tokio::time::timeout(self.opts.attempt_timeout, request).await {
            Ok(r) => r,
            Err(_) => Err(FsError::Unavailable(format!("no answer within {:?}", self.opts.attempt_timeout))),
        };
        // A daemon that answered "not now" is alive; one that did not answer is suspect.
        if let Err(e @ FsError::Unavailable(why)) = &answer
            && !is_not_now(e)
        {
            self.suspect(id, why);
        }
        answer
    }

    /// The current view, fetched first if it is missing or older than `refresh_every`.
    async fn current_view(&self) -> Result<Arc<View>, FsError> {
        if let Some(v) = lock(&self.view).clone()
            && v.fetched.elapsed() < self.opts.refresh_every
        {
            return Ok(v);
        }
        self.refresh(None).await
    }

    /// Fetches a new view. With `stale = Some(g)`, a view newer than generation `g` that
    /// another caller fetched meanwhile is taken instead. If metad cannot answer, the last
    /// view stays in use (it is the best knowledge there is).
    async fn refresh(&self, stale: Option<u64>) -> Result<Arc<View>, FsError> {
        let _one = self.refreshing.lock().await;
        let old = lock(&self.view).clone();
        if let Some(v) = &old {
            let newer = match stale {
                Some(g) => v.generation > g,
                None => v.fetched.elapsed() < self.opts.refresh_every,
            };
            if newer {
                return Ok(v.clone());
            }
        }
        match self.source.list_block_daemons().await {
            Ok(reply) => {
                let generation = old.as_ref().map_or(1, |v| v.generation + 1);
                let view = Arc::new(View::from_reply(reply, generation));
                tracing::debug!(generation, live = ?view.live, default_rf = view.default_rf, "block daemon view");
                *lock(&self.view) = Some(view.clone());
                Ok(view)
            }
            Err(e) => match old {
                Some(v) => {
                    tracing::warn!(error = %e, "cannot refresh the block daemon list; using the last one");
                    Ok(v)
                }
                None => Err(FsError::Unavailable(format!("listing block daemons: {e}"))),
            },
        }
    }

    /// The client of daemon `id` of `view`, made on first use.
    async fn daemon(&self, view: &View, id: u64) -> Result<Arc<K::Daemon>, FsError> {
        let addr = view.addrs.get(&id).ok_or_else(|| FsError::Internal(format!("daemon {id} not in the view")))?;
        if let Some(link) = lock(&self.links).get(&id)
            && link.addr == *addr
        {
            return Ok(link.daemon.clone());
        }
        let daemon = Arc::new(self.connector.connect(id, addr).await?);
        let mut links = lock(&self.links);
        // Another caller may have connected meanwhile: keep the first client of this address.
        match links.get(&id) {
            Some(link) if link.addr == *addr => Ok(link.daemon.clone()),
            _ => {
                links.insert(id, Link { addr: addr.clone(), daemon: daemon.clone() });
                Ok(daemon)
            }
        }
    }

    /// Stores `data` on all `rf` replicas of `hash` (see the module comment).
    pub async fn put_rf(&self, hash: ChunkHash, data: Bytes, rf: u32) -> Result<(), FsError> {
        let deadline = Instant::now() + self.opts.put_deadline;
        let mut backoff = self.opts.first_backoff;
        let mut view = self.current_view().await?;
        loop {
            let usable = self.usable(&view);
            let want = view.want(rf, usable.len());
            let set = placement::replicas(&hash, &usable, want);
            let why = if want == 0 || set.len() < want {
                format!("{} usable live block daemons for {want} replicas", usable.len())
            } else {
                // Each replica's requests are bounded by `attempt_timeout` (`ask`); this
                // bounds the attempt by the deadline too.
                let left = deadline.saturating_duration_since(Instant::now()).min(self.opts.attempt_timeout * 2);
                match tokio::time::timeout(left, self.put_on(&view, &set, hash, &data)).await {
                    Ok(Ok(())) => return Ok(()),
                    Ok(Err(Attempt::Fatal(e))) => return Err(e),
                    Ok(Err(Attempt::Retry(why))) => why,
                    Err(_) => "replicas did not answer in time".to_string(),
                }
            };
            if Instant::now() + backoff >= deadline {
                return Err(FsError::Unavailable(format!(
                    "chunk {hash} could not be stored on {want} replicas within {:?}: {why}",
                    self.opts.put_deadline
                )));
            }
            tracing::warn!(%hash, want, replicas = ?set, %why, "replicated put failed; retrying on a fresh view");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(self.opts.max_backoff);
            view = self.refresh(Some(view.generation)).await?;
        }
    }

    /// One attempt: every replica of `set` ends up holding `hash`, or why not.
    async fn put_on(&self, view: &View, set: &[u64], hash: ChunkHash, data: &Bytes) -> Result<(), Attempt> {
        let results = futures::future::join_all(set.iter().map(|&id| async move {
            let daemon = self.ask(id, self.daemon(view, id)).await?;
            if self.ask(id, daemon.has(&[hash])).await?.first() == Some(&true) {
                return Ok(());
            }
            self.ask(id, daemon.put(hash, data.clone())).await
        }))
        .await;
        let mut failed = Vec::new();
        for (id, r) in set.iter().zip(results) {
            match r {
                Ok(()) => {}
                Err(FsError::NoSpace) => return Err(Attempt::Fatal(FsError::NoSpace)),
                Err(e @ FsError::Invalid(_)) => return Err(Attempt::Fatal(e)),
                Err(e) => failed.push(format!("daemon {id}: {e}")),
            }
        }
        if failed.is_empty() { Ok(()) } else { Err(Attempt::Retry(failed.join("; "))) }
    }

    /// Which of `hashes` are held by every one of their `rf` replicas.
    pub async fn has_rf(&self, hashes: &[ChunkHash], rf: u32) -> Result<Vec<bool>, FsError> {
        let mut all = vec![true; hashes.len()];
        let view = match self.current_view().await {
            Ok(v) => v,
            // The puts that follow report the outage.
            Err(_) => return Ok(vec![false; hashes.len()]),
        };
        let usable = self.usable(&view);
        let want = view.want(rf, usable.len());
        let mut asks: HashMap<u64, Vec<usize>> = HashMap::new();
        for (i, h) in hashes.iter().enumerate() {
            let set = placement::replicas(h, &usable, want);
            if want == 0 || set.len() < want {
                all[i] = false;
                continue;
            }
            for id in set {
                asks.entry(id).or_default().push(i);
            }
        }
        let view = &view;
        let answers = futures::future::join_all(asks.into_iter().map(|(id, idx)| async move {
            let wanted: Vec<ChunkHash> = idx.iter().map(|&i| hashes[i]).collect();
            let answer = match self.ask(id, self.daemon(view, id)).await {
                Ok(d) => self.ask(id, d.has(&wanted)).await,
                Err(e) => Err(e),
            };
            (id, idx, answer)
        }))
        .await;
        for (id, idx, answer) in answers {
            match answer {
                Ok(flags) if flags.len() == idx.len() => {
                    for (i, have) in idx.into_iter().zip(flags) {
                        all[i] &= have;
                    }
                }
                other => {
                    if let Err(e) = other {
                        tracing::debug!(daemon = id, error = %e, "HAS failed; its chunks count as missing");
                    }
                    for i in idx {
                        all[i] = false;
                    }
                }
            }
        }
        Ok(all)
    }

    /// The verified bytes of `hash` from the first daemon that has them (see the module
    /// comment). While some daemon could not be reached, rounds are repeated on a fresh view
    /// until `put_deadline`; then the answer is `Unavailable` (the chunk may well be on a
    /// daemon that is restarting: NFS3ERR_JUKEBOX, the client retries), and `Io` only when
    /// every daemon answered and none had good bytes.
    pub async fn get_any(&self, hash: ChunkHash) -> Result<Bytes, FsError> {
        let deadline = Instant::now() + self.opts.put_deadline;
        let mut backoff = self.opts.first_backoff;
        let mut view = self.current_view().await.map_err(|e| FsError::Io(format!("chunk {hash}: {e}")))?;
        loop {
            let Missed { errors, unreachable, not_now } = match self.get_round(&view, hash).await {
                Ok(bytes) => return Ok(bytes),
                Err(missed) => missed,
            };
            if errors.is_empty() {
                return Err(FsError::Io(format!("chunk {hash}: no live block daemon")));
            }
            let why = errors.join("; ");
            if not_now && !unreachable {
                // Every daemon answered, and one holds the chunk in a tier it cannot reach
                // now (it waited its own read timeout): "try again later" at once, as
                // RFC 1813 means JUKEBOX for data on a slow or absent tier.
                return Err(FsError::Unavailable(format!("chunk {hash}: not readable now: {why}")));
            }
            if !unreachable {
                return Err(FsError::Io(format!("chunk {hash}: no block daemon could serve it: {why}")));
            }
            if Instant::now() + backoff >= deadline {
                return Err(FsError::Unavailable(format!(
                    "chunk {hash}: no block daemon served it within {:?}: {why}",
                    self.opts.put_deadline
                )));
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(self.opts.max_backoff);
            // The next round should not start with a daemon that is gone.
            view = self.refresh(Some(view.generation)).await.unwrap_or(view);
        }
    }

    /// One pass over the daemons for `hash`: its bytes, or what the daemons answered.
    async fn get_round(&self, view: &View, hash: ChunkHash) -> Result<Bytes, Missed> {
        // Live daemons in rendezvous order (suspects after the others), then (last resort:
        // the bytes are verified, so asking costs only time) the ones metad does not
        // currently judge live.
        let live = placement::replicas(&hash, &view.live, view.live.len());
        let (mut order, suspects): (Vec<u64>, Vec<u64>) = live.into_iter().partition(|&id| !self.is_suspect(id));
        order.extend(suspects);
        order.extend(placement::replicas(&hash, &view.others, view.others.len()));
        let mut missed = Missed::default();
        for id in order {
            let answer = match self.ask(id, self.daemon(view, id)).await {
                Ok(d) => self.ask(id, d.get(hash)).await,
                Err(e) => Err(e),
            };
            match answer {
                Ok(bytes) if K::Daemon::RETURNS_VERIFIED || blake3::hash(&bytes).as_bytes() == hash.as_bytes() => {
                    return Ok(bytes);
                }
                Ok(_) => missed.errors.push(format!("daemon {id}: bytes fail the hash check")),
                Err(e) => {
                    if is_not_now(&e) {
                        missed.not_now = true;
                    } else {
                        missed.unreachable |= matches!(e, FsError::Unavailable(_));
                    }
                    missed.errors.push(format!("daemon {id}: {e}"));
                }
            }
            tracing::warn!(%hash, daemon = id, error = missed.errors.last().map(String::as_str), "chunk read failed; trying the next daemon");
        }
        Err(missed)
    }
}

/// What a round over the daemons met when none served a chunk.
#[derive(Default)]
struct Missed {
    /// One line per daemon asked.
    errors: Vec<String>,
    /// Some daemon could not be reached.
    unreachable: bool,
    /// Some daemon answered that it holds the chunk but cannot serve it now.
    not_now: bool,
}

impl<S: Membership, K: Connector> ChunkApi for ReplicatedChunks<S, K> {
    const RETURNS_VERIFIED: bool = true;

    async fn has(&self, hashes: &[ChunkHash]) -> Result<Vec<bool>, FsError> {
        self.has_rf(hashes, 0).await
    }

    async fn put(&self, hash: ChunkHash, data: Bytes) -> Result<(), FsError> {
        self.put_rf(hash, data, 0).await
    }

    async fn get(&self, hash: ChunkHash) -> Result<Bytes, FsError> {
        self.get_any(hash).await
    }

    async fn has_replicated(&self, hashes: &[ChunkHash], rf: u32) -> Result<Vec<bool>, FsError> {
        self.has_rf(hashes, rf).await
    }

    async fn put_replicated(&self, hash: ChunkHash, data: Bytes, rf: u32) -> Result<(), FsError> {
        self.put_rf(hash, data, rf).await
    }
}

#[cfg(test)]
mod tests;
