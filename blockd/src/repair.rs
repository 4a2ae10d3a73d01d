//! Anti-entropy re-replication: every chunk this daemon holds ends up on its replica set.
//!
//! Owns: the repair pass ([`Repairer::pass`]), its background loop and its progress
//! counters, and the QUIC client a daemon uses to talk to its peers (it presents the
//! daemon's own `blockd` certificate, which the peers' servers allow to PUT; scrub uses it
//! too, to GET good copies).
//!
//! A pass lists the live daemons and the default replication factor from metad, then pages
//! through the local index. For each chunk it computes the replica set over the live
//! daemons with `cluster::placement::replicas` (the one function gateways place chunks
//! with, so repair copies to the daemons readers will ask), asks the other members which
//! of them hold it (HAS, batched per peer), and if this daemon is the first member of the
//! set that holds it (or no member holds it and this daemon does) copies it to every
//! member that lacks it, at most `max_copies_per_sec`. A peer that cannot be reached is
//! skipped for the pass: nothing is decided from a missing answer.
//!
//! Must never: delete or overwrite anything (it only adds copies); send bytes that did not
//! pass the local hash check (`Store::get` verifies); block the data path (one pass at a
//! time, on its own task, rate-limited).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use cluster::Shutdown;
use cluster::metrics as names;
use proto::ChunkHash;
use proto::chunk_frame::{self, HEADER_LEN, Request, Status};
use rustls::pki_types::CertificateDer;

use crate::error::BlockdError;
use crate::heartbeat::{HeartbeatError, Metad};
use crate::store::{Chunk, Store};

/// Chunks read from the index per page of a pass.
const PAGE: usize = 1024;
/// Deadline for one request to a peer (including connecting).
const PEER_TIMEOUT: Duration = Duration::from_secs(30);

/// How the background repair loop runs.
#[derive(Debug, Clone)]
pub struct RepairOptions {
    /// Time between the end of one pass and the start of the next; `None` disables the
    /// background loop (passes can still be run with [`crate::Blockd::repair_pass`]).
    pub interval: Option<Duration>,
    /// Most chunk copies sent per second (0: unlimited).
    pub max_copies_per_sec: u32,
}

impl Default for RepairOptions {
    fn default() -> Self {
        RepairOptions { interval: Some(Duration::from_secs(60)), max_copies_per_sec: 200 }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RepairError {
    #[error("asking metad for the block daemons: {0}")]
    Metad(#[from] HeartbeatError),
    #[error("local store: {0}")]
    Store(#[from] BlockdError),
    #[error("peer {addr}: {reason}")]
    Peer { addr: SocketAddr, reason: String },
    #[error("peer {addr} answered {status:?}: {message}")]
    Refused { addr: SocketAddr, status: Status, message: String },
    #[error("building the peer client: {0}")]
    Client(String),
}

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RepairReport {
    /// Local chunks whose replica set was checked.
    pub checked: u64,
    /// Copies sent to peers that lacked a chunk.
    pub copied: u64,
    /// Chunks skipped because a member of their set could not be asked or written.
    pub skipped: u64,
}

/// Totals since the daemon started.
#[derive(Debug, Default)]
pub struct RepairCounters {
    pub passes: AtomicU64,
    pub checked: AtomicU64,
    pub copied: AtomicU64,
    pub skipped: AtomicU64,
}

/// A QUIC client to peer daemons, presenting this daemon's certificate.
pub(crate) struct PeerClient {
    endpoint: quinn::Endpoint,
    conns: tokio::sync::Mutex<HashMap<SocketAddr, quinn::Connection>>,
}

impl PeerClient {
    pub fn new(
        identity: &cluster::tls::Identity,
        anchors: &[CertificateDer<'static>],
    ) -> Result<PeerClient, RepairError> {
        let client_err = |e: &dyn std::fmt::Display| RepairError::Client(e.to_string());
        let tls = cluster::tls::client_config_with_cert(anchors, identity, cluster::tls::CHUNK_ALPN)
            .map_err(|e| client_err(&e))?;
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(|e| client_err(&e))?;
        let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
        cfg.transport_config(Arc::new(crate::server::transport_config()));
        let bind: SocketAddr = ([0, 0, 0, 0], 0).into();
        let mut endpoint = quinn::Endpoint::client(bind).map_err(|e| client_err(&e))?;
        endpoint.set_default_client_config(cfg);
        Ok(PeerClient { endpoint, conns: tokio::sync::Mutex::new(HashMap::new()) })
    }

    async fn connection(&self, addr: SocketAddr) -> Result<quinn::Connection, RepairError> {
        let mut conns = self.conns.lock().await;
        if let Some(c) = conns.get(&addr)
            && c.close_reason().is_none()
        {
            return Ok(c.clone());
        }
        let peer = |reason: String| RepairError::Peer { addr, reason };
        // Peers are named by their advertised IP, which their certificate must list.
        let name = addr.ip().to_string();
        let conn = self
            .endpoint
            .connect(addr, &name)
            .map_err(|e| peer(e.to_string()))?
            .await
            .map_err(|e| peer(e.to_string()))?;
        conns.insert(addr, conn.clone());
        Ok(conn)
    }

    /// One request, one response; an error status becomes [`RepairError::Refused`].
    pub async fn call(&self, addr: SocketAddr, req: &Request<'_>) -> Result<Vec<u8>, RepairError> {
        let op = req.op();
        let frame = chunk_frame::encode_request(req);
        let peer = |reason: String| RepairError::Peer { addr, reason };
        let exchange = async {
            let conn = self.connection(addr).await?;
            let (mut send, mut recv) = conn.open_bi().await.map_err(|e| peer(e.to_string()))?;
            send.write_all(&frame).await.map_err(|e| peer(e.to_string()))?;
            let _ = send.finish();
            let mut head = [0u8; HEADER_LEN];
            recv.read_exact(&mut head).await.map_err(|e| peer(e.to_string()))?;
            // Checks the length against the operation's limit before we allocate it.
            let header = chunk_frame::decode_response_header(&head, op).map_err(|e| peer(e.to_string()))?;
            let mut body = vec![0u8; header.body_len];
            recv.read_exact(&mut body).await.map_err(|e| peer(e.to_string()))?;
            if header.status != Status::Ok {
                let message = String::from_utf8_lossy(&body).into_owned();
                return Err(RepairError::Refused { addr, status: header.status, message });
            }
            Ok(body)
        };
        tokio::time::timeout(PEER_TIMEOUT, exchange).await.map_err(|_| peer("timed out".into()))?
    }

    pub async fn has(&self, addr: SocketAddr, hashes: &[ChunkHash]) -> Result<Vec<bool>, RepairError> {
        let mut out = Vec::with_capacity(hashes.len());
        for batch in hashes.chunks(chunk_frame::MAX_HAS) {
            let body = self.call(addr, &Request::Has { hashes: batch.to_vec() }).await?;
            out.extend(
                chunk_frame::decode_has_body(&body, batch.len())
                    .map_err(|e| RepairError::Peer { addr, reason: e.to_string() })?,
            );
        }
        Ok(out)
    }

    pub async fn put(&self, addr: SocketAddr, hash: ChunkHash, data: &[u8]) -> Result<(), RepairError> {
        self.call(addr, &Request::Put { hash, data }).await.map(|_| ())
    }

    /// The peer's copy of `hash`, verified against the name (the peer verified it too).
    pub async fn get(&self, addr: SocketAddr, hash: ChunkHash) -> Result<Chunk, RepairError> {
        let body = self.call(addr, &Request::Get { hash }).await?;
        Chunk::verified(hash, Bytes::from(body)).map_err(|e| RepairError::Peer { addr, reason: e.to_string() })
    }
}

/// Runs repair passes for one daemon.
pub struct Repairer {
    id: u64,
    store: Arc<Store>,
    metad: Metad,
    peers: Arc<PeerClient>,
    max_copies_per_sec: u32,
    /// One pass at a time.
    running: tokio::sync::Mutex<()>,
    pub counters: RepairCounters,
}

impl Repairer {
    pub(crate) fn new(
        id: u64,
        store: Arc<Store>,
        metad: Metad,
        peers: Arc<PeerClient>,
        max_copies_per_sec: u32,
    ) -> Repairer {
        Repairer {
            id,
            store,
            metad,
            peers,
            max_copies_per_sec,
            running: tokio::sync::Mutex::new(()),
            counters: RepairCounters::default(),
        }
    }

    /// One pass over every local chunk (see the module docs).
    pub async fn pass(&self) -> Result<RepairReport, RepairError> {
        let _one = self.running.lock().await;
        let list = self.metad.list_block_daemons().await?;
        let rf = list.default_replication_factor as usize;
        let mut addrs: HashMap<u64, SocketAddr> = HashMap::new();
        for d in list.daemons.iter().filter(|d| d.live) {
            match d.addr.parse::<SocketAddr>() {
                Ok(a) => {
                    addrs.insert(d.id, a);
                }
                Err(_) => tracing::warn!(id = d.id, addr = %d.addr, "live daemon with an unusable address skipped"),
            }
        }
        let mut ids: Vec<u64> = addrs.keys().copied().collect();
        ids.sort_unstable();
        let mut report = RepairReport::default();
        if rf == 0 || ids.is_empty() {
            return Ok(report);
        }
        let mut pace = (self.max_copies_per_sec > 0).then(|| {
            let mut t = tokio::time::interval(Duration::from_secs(1) / self.max_copies_per_sec);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        let mut after: Option<ChunkHash> = None;
        loop {
            let store = self.store.clone();
            let cursor = after;
            let page = tokio::task::spawn_blocking(move || store.hashes_after(cursor.as_ref(), PAGE))
                .await
                .map_err(BlockdError::Task)??;
            let Some(last) = page.last() else { break };
            after = Some(*last);
            let sets: Vec<Vec<u64>> = page.iter().map(|h| cluster::placement::replicas(h, &ids, rf)).collect();

            // Ask every other member about the chunks of its sets, one batch per peer.
            let mut asks: HashMap<u64, Vec<usize>> = HashMap::new();
            for (i, set) in sets.iter().enumerate() {
                for m in set.iter().filter(|m| **m != self.id) {
                    asks.entry(*m).or_default().push(i);
                }
            }
            // held[(chunk index, member)] = answer; missing entries: the peer was unreachable.
            let mut held: HashMap<(usize, u64), bool> = HashMap::new();
            for (member, idx) in &asks {
                let Some(addr) = addrs.get(member).copied() else { continue };
                let hashes: Vec<ChunkHash> = idx.iter().map(|i| page[*i]).collect();
                match self.peers.has(addr, &hashes).await {
                    Ok(found) => {
                        for (i, f) in idx.iter().zip(found) {
                            held.insert((*i, *member), f);
                        }
                    }
                    Err(e) => {
                        // Down or stuck: leave it out for the rest of the pass (its chunks
                        // are skipped, not waited on), it is asked again next pass.
                        tracing::warn!(peer = %addr, error = %e, "repair could not ask a peer; skipping it this pass");
                        addrs.remove(member);
                    }
                }
            }

            for (i, (hash, set)) in page.iter().zip(&sets).enumerate() {
                report.checked += 1;
                let holds = |m: u64| if m == self.id { Some(true) } else { held.get(&(i, m)).copied() };
                if set.iter().any(|m| holds(*m).is_none()) {
                    report.skipped += 1;
                    continue;
                }
                let first_holder = set.iter().copied().find(|m| holds(*m) == Some(true));
                if first_holder.is_some_and(|m| m != self.id) {
                    continue;
                }
                let missing: Vec<u64> = set.iter().copied().filter(|m| holds(*m) == Some(false)).collect();
                if missing.is_empty() {
                    continue;
                }
                let store = self.store.clone();
                let h = *hash;
                let data = match tokio::task::spawn_blocking(move || store.get(&h)).await.map_err(BlockdError::Task)? {
                    Ok(d) => d,
                    Err(e) => {
                        // Corrupt or vanished locally: scrub's business, not a copy to send.
                        tracing::warn!(%hash, error = %e, "repair could not read a local chunk");
                        report.skipped += 1;
                        continue;
                    }
                };
                for m in missing {
                    let Some(addr) = addrs.get(&m).copied() else { continue };
                    if let Some(p) = pace.as_mut() {
                        p.tick().await;
                    }
                    match self.peers.put(addr, *hash, &data).await {
                        Ok(()) => {
                            report.copied += 1;
                            metrics::counter!(names::REPAIR_COPIES).increment(1);
                        }
                        Err(e) => {
                            tracing::warn!(%hash, peer = %addr, error = %e, "repair copy failed; skipping the peer this pass");
                            addrs.remove(&m);
                            report.skipped += 1;
                        }
                    }
                }
            }
        }
        let c = &self.counters;
        c.passes.fetch_add(1, Ordering::Relaxed);
        c.checked.fetch_add(report.checked, Ordering::Relaxed);
        c.copied.fetch_add(report.copied, Ordering::Relaxed);
        c.skipped.fetch_add(report.skipped, Ordering::Relaxed);
        metrics::counter!(names::REPAIR_CHECKED).increment(report.checked);
        metrics::gauge!(names::REPAIR_UNCONFIRMED).set(report.skipped as f64);
        Ok(report)
    }
}

/// Runs a pass every `interval` until `shutdown`.
pub(crate) async fn run(repairer: Arc<Repairer>, interval: Duration, shutdown: Shutdown) {
    crate::periodic::every(interval, shutdown, || async {
        match repairer.pass().await {
            Ok(r) => tracing::info!(checked = r.checked, copied = r.copied, skipped = r.skipped, "repair pass done"),
            Err(e) => tracing::warn!(error = %e, "repair pass failed"),
        }
    })
    .await;
}
