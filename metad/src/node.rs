//! A metad node: opening the store, starting Raft, and the read/write paths services use.
//!
//! Owns: [`MetadOptions`], [`RaftTuning`], [`Liveness`], [`Metad`] (start-up, first-start bootstrap, default
//! share, shutdown), the Raft configuration, and the two ways into the state machine:
//! [`Metad::write`] (one command through the log) and [`Metad::read`] (read index, then one
//! read transaction). Any node serves both: on a follower, a write is forwarded to the leader
//! (`ClientWrite`) and a read asks the leader for its read index (`ReadIndex`), waits until
//! this node has applied that far, then reads locally. Across a leader change both retry until
//! [`FORWARD_DEADLINE`], except that a write whose forwarding failed in transit is *not*
//! retried here (its outcome is unknown): the client gets `Unavailable` and retries with the
//! same request id, which the state machine deduplicates.
//! Must never: apply a mutation outside Raft, or read the state machine for a client without
//! the read index. Nothing here assumes a single voter: bootstrap only happens on a store that
//! has never been initialised.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cluster::grpc_tls::ClientTls;
use openraft::async_runtime::WatchReceiver;
use openraft::errors::{ClientWriteError, RaftError};
use openraft::{BasicNode, Config, ReadPolicy, ServerState, SnapshotPolicy};
use proto::FsError;
use redb::{Database, ReadableDatabase};

use crate::blocking;
use crate::command::alias::Raft;
use crate::command::{Command, Reply, ShareChanges};
use crate::error::{MetadError, Result};
use crate::forward::Forwarder;
use crate::fsm::query::ReadTables;
use crate::log_store::LogStore;
use crate::network::NetworkFactory;
use crate::network::codec::{ForwardedRead, ForwardedWrite};
use crate::service::convert::now_ns;
use crate::snapshot_file::SnapshotDir;
use crate::state_machine::StateMachineStore;

/// How long [`Metad::open`] waits for a leader before giving up.
pub const LEADER_DEADLINE: Duration = Duration::from_secs(15);

/// How long a read or write keeps retrying across leader changes before answering
/// `NotLeader`/`Unavailable` (gateways map both to NFS3ERR_JUKEBOX, so clients retry).
pub const FORWARD_DEADLINE: Duration = Duration::from_secs(5);

/// How long [`Metad::shutdown`] waits for Raft's tasks to release the store.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);

/// How to start a metad node.
#[derive(Debug, Clone)]
pub struct MetadOptions {
    /// This node's Raft id; must be stable across restarts.
    pub node_id: u64,
    /// metad's own directory (created if missing); the store is `metad.redb` inside.
    pub data_dir: PathBuf,
    /// Where this node's Meta and Raft gRPC services are served, e.g. `http://127.0.0.1:7001`.
    pub advertise_addr: String,
    /// A share to ensure exists, as (name, export path), e.g. `("default", "/export")`.
    pub default_share: Option<(String, String)>,
    /// How this node dials its peers' internal ports (Raft, forwarded writes and reads,
    /// forwarded control calls): mutual TLS with its `metad` certificate in `tessera serve`
    /// and `tessera dev`, plaintext in in-process test groups.
    pub client_tls: ClientTls,
}

/// When snapshots are taken and how much log is kept behind them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RaftTuning {
    /// Build a snapshot once this many entries were applied since the last one (at least 1).
    pub snapshot_logs: u64,
    /// Entries kept in the log behind the latest snapshot (so a briefly lagging follower catches
    /// up from the log instead of a whole snapshot).
    pub keep_logs: u64,
}

impl Default for RaftTuning {
    fn default() -> Self {
        RaftTuning { snapshot_logs: 10_000, keep_logs: 1_000 }
    }
}

/// How block daemons' liveness is judged and how often they are told to heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Liveness {
    /// A daemon whose latest heartbeat is older than this (by the answering node's clock) is
    /// reported dead.
    pub dead_after: Duration,
    /// How often daemons are told to send heartbeats (well below `dead_after`).
    pub interval: Duration,
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness { dead_after: Duration::from_secs(10), interval: Duration::from_secs(2) }
    }
}

/// How a node whose store has never been initialised forms its cluster.
#[derive(Debug, Clone)]
pub enum Bootstrap {
    /// Become a one-voter cluster of this node (what `tessera dev` does).
    SingleVoter,
    /// Initialise with these voters (node id -> advertised address); run on one node only.
    Members(BTreeMap<u64, String>),
    /// Do nothing: wait to be added by an existing cluster.
    Join,
}

/// A running metad node. Cheap to clone.
#[derive(Clone)]
pub struct Metad {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) node_id: u64,
    pub(crate) raft: Raft,
    pub(crate) db: Arc<Database>,
    pub(crate) snapshots: SnapshotDir,
    pub(crate) liveness: Liveness,
    forwarder: Forwarder,
    /// How peers' internal ports are dialed (also by the control service's forwarding).
    pub(crate) client_tls: ClientTls,
}

fn raft_config(tuning: RaftTuning) -> Result<Config> {
    let config = Config {
        cluster_name: "tessera-metad".to_string(),
        heartbeat_interval: 100,
        election_timeout_min: 300,
        election_timeout_max: 600,
        // Snapshots are streamed in one RPC (see `network`); give large ones time.
        install_snapshot_timeout: 120_000,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(tuning.snapshot_logs.max(1)),
        max_in_snapshot_log_to_keep: tuning.keep_logs,
        // A member restarted with an empty data directory (a replaced disk) has "lost" its log;
        // the leader must re-sync it (from a snapshot) instead of treating that as a bug.
        allow_log_reversion: Some(true),
        // A member cut off from the others asks first whether it could win (Pre-Vote) and
        // does not raise its term when it could not: when the partition heals it rejoins
        // without deposing the leader the majority kept (tests/metad_cluster.rs
        // `readiness_follows_the_quorum`; the chaos harness's `partition` fault).
        enable_pre_vote: Some(true),
        ..Default::default()
    };
    Ok(config.validate()?)
}

fn raft_err(e: impl std::fmt::Display) -> MetadError {
    MetadError::Raft(e.to_string())
}

impl Metad {
    /// Opens (or creates) the store, starts Raft, initialises a single-voter cluster on the
    /// very first start, waits (up to [`LEADER_DEADLINE`]) for a leader, and — on the leader —
    /// ensures the default share exists.
    pub async fn open(opts: MetadOptions) -> Result<Metad> {
        let metad = Metad::start(&opts, Bootstrap::SingleVoter).await?;
        metad.wait_ready(opts.default_share.as_ref()).await?;
        Ok(metad)
    }

    /// Opens the store and starts Raft without waiting for a leader. On a store that has never
    /// been initialised, `bootstrap` says how the cluster is formed; on any other store it is
    /// ignored (membership lives in the log).
    pub async fn start(opts: &MetadOptions, bootstrap: Bootstrap) -> Result<Metad> {
        Metad::start_with(opts, bootstrap, RaftTuning::default()).await
    }

    /// [`Metad::start`] with explicit snapshot and log-retention thresholds.
    pub async fn start_with(opts: &MetadOptions, bootstrap: Bootstrap, tuning: RaftTuning) -> Result<Metad> {
        Metad::start_tuned(opts, bootstrap, tuning, Liveness::default()).await
    }

    /// [`Metad::start_with`] with an explicit block daemon [`Liveness`] judgement.
    pub async fn start_tuned(
        opts: &MetadOptions,
        bootstrap: Bootstrap,
        tuning: RaftTuning,
        liveness: Liveness,
    ) -> Result<Metad> {
        let db = crate::store::open(&opts.data_dir)?;
        let snapshots = SnapshotDir::open(&opts.data_dir)?;
        let raft = Raft::new(
            opts.node_id,
            Arc::new(raft_config(tuning)?),
            NetworkFactory::new(opts.client_tls.clone()),
            LogStore::new(db.clone()),
            StateMachineStore::new(db.clone(), snapshots.clone()),
        )
        .await
        .map_err(raft_err)?;
        let inner = Inner {
            node_id: opts.node_id,
            raft,
            db,
            snapshots,
            liveness,
            forwarder: Forwarder::new(opts.client_tls.clone()),
            client_tls: opts.client_tls.clone(),
        };
        let metad = Metad { inner: Arc::new(inner) };
        metad.spawn_term_gauge();

        let raft = &metad.inner.raft;
        if !raft.is_initialized().await.map_err(raft_err)? {
            let members = match bootstrap {
                Bootstrap::SingleVoter => Some(BTreeMap::from([(opts.node_id, opts.advertise_addr.clone())])),
                Bootstrap::Members(m) => Some(m),
                Bootstrap::Join => None,
            };
            if let Some(members) = members {
                let nodes: BTreeMap<u64, BasicNode> =
                    members.into_iter().map(|(id, addr)| (id, BasicNode::new(addr))).collect();
                raft.initialize(nodes).await.map_err(raft_err)?;
            }
        }
        Ok(metad)
    }

    /// Waits (up to [`LEADER_DEADLINE`]) until a leader is known, then ensures `default_share`
    /// (name, export path) exists (through the leader, from any node).
    pub async fn wait_ready(&self, default_share: Option<&(String, String)>) -> Result<()> {
        let m = self
            .inner
            .raft
            .wait(Some(LEADER_DEADLINE))
            .metrics(|m| m.current_leader.is_some() && m.state != ServerState::Candidate, "a known leader")
            .await
            .map_err(|_| MetadError::Timeout { what: "a Raft leader" })?;
        if let Some((name, path)) = default_share {
            self.ensure_share(name, path).await?;
        }
        tracing::info!(node_id = self.inner.node_id, leader = ?m.current_leader, term = m.current_term, "metad ready");
        Ok(())
    }

    /// Ensures a share exists (idempotent: an existing export path is left alone).
    pub async fn ensure_share(&self, name: &str, export_path: &str) -> Result<()> {
        let path = export_path.to_string();
        match self.read(move |t| t.share_by_path(&path)).await {
            Ok(_) => Ok(()),
            Err(MetadError::Fs(FsError::NotFound)) => {
                let cmd = Command::CreateShare {
                    name: name.to_string(),
                    export_path: export_path.to_string(),
                    now_ns: now_ns(),
                    changes: ShareChanges::default(),
                };
                self.write(cmd).await.map(|_| ())
            }
            Err(e) => Err(e),
        }
    }

    /// Creates the share at `export_path` if it does not exist and applies `changes` to it
    /// (new or existing), in one Raft command. `Invalid` for a bad name, path or option.
    pub async fn create_share(&self, name: &str, export_path: &str, changes: ShareChanges) -> Result<()> {
        let cmd =
            Command::CreateShare { name: name.to_string(), export_path: export_path.to_string(), now_ns: now_ns(), changes };
        self.write(cmd).await.map(|_| ())
    }

    /// Changes the options of the share at `export_path` in one Raft command (all of them or,
    /// when one is invalid, none). `NotFound` for an unknown share.
    pub async fn update_share(&self, export_path: &str, changes: ShareChanges) -> Result<()> {
        let cmd = Command::UpdateShare { export_path: export_path.to_string(), changes };
        self.write(cmd).await.map(|_| ())
    }

    /// Sets the replication factor of the share exported at `export_path` (0 = the cluster
    /// default). `NotFound` for an unknown share, `Invalid` above the maximum.
    pub async fn set_share_replication(&self, export_path: &str, replication_factor: u32) -> Result<()> {
        let cmd = Command::SetShareReplication { export_path: export_path.to_string(), replication_factor };
        self.write(cmd).await.map(|_| ())
    }

    /// How this node judges block daemons' liveness.
    pub fn liveness(&self) -> Liveness {
        self.inner.liveness
    }

    /// Stops Raft and waits (up to [`SHUTDOWN_DEADLINE`]) until openraft's background tasks
    /// have released the store. The file closes when the last clone of this handle (and of
    /// the services built from it) is dropped.
    pub async fn shutdown(&self) -> Result<()> {
        self.inner.raft.shutdown().await.map_err(raft_err)?;
        // openraft's workers (state machine, replication) finish shortly after the core task
        // and drop their store handles then; there is no event for it, so poll the count.
        let deadline = tokio::time::Instant::now() + SHUTDOWN_DEADLINE;
        while Arc::strong_count(&self.inner.db) > 1 {
            if tokio::time::Instant::now() >= deadline {
                return Err(MetadError::Timeout { what: "Raft tasks to release the store" });
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }

    /// The Raft handle (membership changes, metrics), for the binary and tests.
    pub fn raft(&self) -> &Raft {
        &self.inner.raft
    }

    /// This node's Raft id.
    pub fn node_id(&self) -> u64 {
        self.inner.node_id
    }

    /// The directory holding this node's snapshot images.
    pub fn snapshot_dir(&self) -> &SnapshotDir {
        &self.inner.snapshots
    }

    /// Proposes one command and waits until it is applied; refusals come back as
    /// [`MetadError::Fs`]. On a follower the command is forwarded to the leader.
    pub async fn write(&self, cmd: Command) -> Result<Reply> {
        let deadline = tokio::time::Instant::now() + FORWARD_DEADLINE;
        let mut target = None;
        loop {
            let next = match target {
                None => match self.inner.raft.client_write(cmd.clone()).await {
                    Ok(resp) => return resp.data.map_err(|e| MetadError::Fs(e.into())),
                    // Not proposed here: safe to send elsewhere.
                    Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => f.leader_id,
                    // Proposed, then discarded or overtaken: the outcome is unknown.
                    Err(e) if e.forward_to_leader().is_some() => {
                        return Err(MetadError::Forward { leader: self.inner.node_id, reason: e.to_string() });
                    }
                    Err(e) => return Err(raft_err(e)),
                },
                Some(leader) => {
                    let Some(addr) = self.node_addr(leader) else {
                        target = self.await_leader(Some(leader), deadline).await?;
                        continue;
                    };
                    match self.inner.forwarder.write(leader, &addr, &cmd, remaining(deadline)).await? {
                        ForwardedWrite::Applied(r) => return (*r).map_err(|e| MetadError::Fs(e.into())),
                        ForwardedWrite::NotLeader(hint) => self.other_leader(leader, hint, deadline).await?,
                        ForwardedWrite::Unknown(reason) => return Err(MetadError::Forward { leader, reason }),
                        ForwardedWrite::Failed(reason) => return Err(MetadError::Raft(reason)),
                    }
                }
            };
            target = self.route(target, next, deadline).await?;
        }
    }

    /// Runs `f` over one read transaction on the blocking pool, after making the read
    /// linearizable (read index). On a follower the read index comes from the leader; the
    /// read itself is local. For reads that may touch many rows (directories, lists).
    pub async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&ReadTables) -> Result<T> + Send + 'static,
    {
        self.read_index().await?;
        blocking::run(&self.inner.db, move |db| {
            let rtx = db.begin_read()?;
            let tables = ReadTables::open(&rtx)?;
            f(&tables)
        })
        .await
    }

    /// Like [`Metad::read`], but runs `f` on the calling task: for point reads of a few
    /// keys (attributes, a lookup, a file's extents for one READ), which redb's page cache
    /// serves from memory; the hop to the blocking pool would cost more than the read
    /// (docs/benchmarks.md), and a rare page miss costs one pread.
    pub async fn read_small<T, F>(&self, f: F) -> Result<T>
    where
        F: FnOnce(&ReadTables) -> Result<T>,
    {
        self.read_index().await?;
        let rtx = self.inner.db.begin_read()?;
        let tables = ReadTables::open(&rtx)?;
        f(&tables)
    }

    /// Makes the next read linearizable: this node's applied state covers the read index of
    /// the leader (this node's own, or asked of the leader).
    async fn read_index(&self) -> Result<()> {
        let deadline = tokio::time::Instant::now() + FORWARD_DEADLINE;
        let mut target = None;
        loop {
            let next = match target {
                None => match self.inner.raft.ensure_linearizable(ReadPolicy::ReadIndex).await {
                    Ok(_) => break,
                    Err(e) => match e.forward_to_leader() {
                        Some(f) => f.leader_id,
                        None => return Err(raft_err(e)),
                    },
                },
                Some(leader) => {
                    let answer = match self.node_addr(leader) {
                        // Reads are idempotent: a transport error just means "ask again".
                        Some(addr) => self.inner.forwarder.read_index(leader, &addr, remaining(deadline)).await.ok(),
                        None => None,
                    };
                    match answer {
                        Some(ForwardedRead::ReadIndex(index)) => {
                            self.inner
                                .raft
                                .wait(Some(remaining(deadline)))
                                .applied_index_at_least(Some(index), "the leader's read index")
                                .await
                                .map_err(|_| MetadError::Timeout { what: "applying up to the leader's read index" })?;
                            break;
                        }
                        Some(ForwardedRead::NotLeader(hint)) => self.other_leader(leader, hint, deadline).await?,
                        Some(ForwardedRead::Failed(reason)) => return Err(MetadError::Raft(reason)),
                        None => self.await_leader(Some(leader), deadline).await?,
                    }
                }
            };
            target = self.route(target, next, deadline).await?;
        }
        Ok(())
    }

    /// Where to send the next attempt, given the last target and the leader it pointed at:
    /// `None` = this node. Waits for a leader when none is known, and for any Raft change when
    /// this node is told it leads but cannot serve yet; fails once `deadline` has passed.
    async fn route(&self, last: Option<u64>, next: Option<u64>, deadline: tokio::time::Instant) -> Result<Option<u64>> {
        if tokio::time::Instant::now() >= deadline {
            return Err(MetadError::NotLeader { leader: next });
        }
        let me = self.inner.node_id;
        match next {
            Some(l) if l != me => Ok(Some(l)),
            Some(_) => {
                // "Leader" but not yet able to serve (e.g. a fresh leader's lease): wait for
                // the next metrics change, then try locally again.
                let mut rx = self.inner.raft.metrics();
                let _ = tokio::time::timeout(remaining(deadline), rx.changed()).await;
                Ok(None)
            }
            None => {
                let l = self.await_leader(last.filter(|l| *l != me), deadline).await?;
                Ok(l.filter(|l| *l != me))
            }
        }
    }

    /// After `was` answered that it does not lead: its hint if that names another node, else
    /// the next leader this node learns of.
    async fn other_leader(&self, was: u64, hint: Option<u64>, deadline: tokio::time::Instant) -> Result<Option<u64>> {
        match hint.filter(|h| *h != was) {
            Some(h) => Ok(Some(h)),
            None => self.await_leader(Some(was), deadline).await,
        }
    }

    /// Waits until a leader other than `not` is known; `NotLeader` after `deadline`.
    async fn await_leader(&self, not: Option<u64>, deadline: tokio::time::Instant) -> Result<Option<u64>> {
        let m = self
            .inner
            .raft
            .wait(Some(remaining(deadline)))
            .metrics(|m| m.current_leader.is_some() && m.current_leader != not, "a new leader")
            .await
            .map_err(|_| MetadError::NotLeader { leader: None })?;
        Ok(m.current_leader)
    }

    /// The advertised address of a member, from the current membership.
    pub(crate) fn node_addr(&self, id: u64) -> Option<String> {
        let rx = self.inner.raft.metrics();
        let m = rx.borrow_watched();
        m.membership_config.membership().get_node(&id).map(|n| n.addr.clone())
    }

    /// Resolves once the Raft core has stopped on a fatal error (a log or state-machine write
    /// failed, e.g. on a full disk, or it panicked), with the cause: this member takes no
    /// further part until it is restarted, so `tessera serve` exits then (fail-stop) and
    /// its service manager restarts it. A normal shutdown never resolves it.
    pub async fn failed(&self) -> String {
        // The cause, if the core stopped on anything but a normal shutdown.
        fn fatal(m: &openraft::RaftMetrics<crate::command::TypeConfig>) -> Option<String> {
            match &m.running_state {
                Err(openraft::errors::Fatal::Stopped) | Ok(()) => None,
                Err(fatal) => Some(fatal.to_string()),
            }
        }
        let mut rx = self.inner.raft.metrics();
        loop {
            if let Some(cause) = fatal(&rx.borrow_watched()) {
                return cause;
            }
            if rx.changed().await.is_err() {
                // The core is gone: its last word decides (a normal shutdown never resolves).
                let last = fatal(&rx.borrow_watched());
                return match last {
                    Some(cause) => cause,
                    None => std::future::pending().await,
                };
            }
        }
    }

    /// Publishes the Raft term as the `tessera_raft_term` gauge until Raft stops.
    fn spawn_term_gauge(&self) {
        let mut rx = self.inner.raft.metrics();
        tokio::spawn(async move {
            loop {
                let term = rx.borrow_watched().current_term;
                metrics::gauge!(cluster::metrics::RAFT_TERM).set(term as f64);
                if rx.changed().await.is_err() {
                    break;
                }
            }
        });
    }
}

fn remaining(deadline: tokio::time::Instant) -> Duration {
    deadline.saturating_duration_since(tokio::time::Instant::now()).max(Duration::from_millis(1))
}
