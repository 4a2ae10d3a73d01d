//! A metad node: opening the store, starting Raft, and the read/write paths services use.
//!
//! Owns: [`MetadOptions`], [`Metad`] (start-up, first-start bootstrap, default share, shutdown),
//! the Raft configuration, and the two ways into the state machine: [`Metad::write`] (one
//! command through the log) and [`Metad::read`] (read index, then one read transaction).
//! Must never: apply a mutation outside Raft, or read the state machine for a client without
//! the read index. Nothing here assumes a single voter: bootstrap only happens on a store that
//! has never been initialised, and the default share is ensured only by the leader.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::{BasicNode, Config, ReadPolicy, ServerState, SnapshotPolicy};
use proto::FsError;
use redb::{Database, ReadableDatabase};

use crate::blocking;
use crate::command::alias::Raft;
use crate::command::{Command, Reply};
use crate::error::{MetadError, Result};
use crate::fsm::query::ReadTables;
use crate::log_store::LogStore;
use crate::network::NetworkFactory;
use crate::service::convert::now_ns;
use crate::state_machine::StateMachineStore;

/// How long [`Metad::open`] waits for a leader before giving up.
pub const LEADER_DEADLINE: Duration = Duration::from_secs(15);

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
}

fn raft_config() -> Result<Config> {
    let config = Config {
        cluster_name: "tessera-metad".to_string(),
        heartbeat_interval: 100,
        election_timeout_min: 300,
        election_timeout_max: 600,
        // Whole snapshots travel in one RPC (see `network`); give them time.
        install_snapshot_timeout: 60_000,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(10_000),
        max_in_snapshot_log_to_keep: 1_000,
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
        let db = crate::store::open(&opts.data_dir)?;
        let raft = Raft::new(
            opts.node_id,
            Arc::new(raft_config()?),
            NetworkFactory,
            LogStore::new(db.clone()),
            StateMachineStore::new(db.clone()),
        )
        .await
        .map_err(raft_err)?;
        let metad = Metad { inner: Arc::new(Inner { node_id: opts.node_id, raft, db }) };
        metad.spawn_term_gauge();

        let raft = &metad.inner.raft;
        if !raft.is_initialized().await.map_err(raft_err)? {
            let members = match bootstrap {
                Bootstrap::SingleVoter => Some(BTreeMap::from([(opts.node_id, opts.advertise_addr.clone())])),
                Bootstrap::Members(m) => Some(m),
                Bootstrap::Join => None,
            };
            if let Some(members) = members {
                let nodes: BTreeMap<u64, BasicNode> = members.into_iter().map(|(id, addr)| (id, BasicNode::new(addr))).collect();
                raft.initialize(nodes).await.map_err(raft_err)?;
            }
        }
        Ok(metad)
    }

    /// Waits (up to [`LEADER_DEADLINE`]) until a leader is known; if it is this node, ensures
    /// `default_share` (name, export path) exists.
    pub async fn wait_ready(&self, default_share: Option<&(String, String)>) -> Result<()> {
        let m = self
            .inner
            .raft
            .wait(Some(LEADER_DEADLINE))
            .metrics(|m| m.current_leader.is_some() && m.state != ServerState::Candidate, "a known leader")
            .await
            .map_err(|_| MetadError::Timeout { what: "a Raft leader" })?;
        if let (true, Some((name, path))) = (m.current_leader == Some(self.inner.node_id), default_share) {
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
                let cmd = Command::CreateShare { name: name.to_string(), export_path: export_path.to_string(), now_ns: now_ns() };
                self.write(cmd).await.map(|_| ())
            }
            Err(e) => Err(e),
        }
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

    /// Proposes one command and waits until it is applied; refusals come back as
    /// [`MetadError::Fs`].
    pub async fn write(&self, cmd: Command) -> Result<Reply> {
        let resp = self.inner.raft.client_write(cmd).await.map_err(|e| match e.forward_to_leader() {
            Some(f) => MetadError::NotLeader { leader: f.leader_id },
            None => raft_err(e),
        })?;
        resp.data.map_err(|e| MetadError::Fs(e.into()))
    }

    /// Runs `f` over one read transaction, after making the read linearizable (read index).
    pub async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&ReadTables) -> Result<T> + Send + 'static,
    {
        self.inner.raft.ensure_linearizable(ReadPolicy::ReadIndex).await.map_err(|e| match e.forward_to_leader() {
            Some(f) => MetadError::NotLeader { leader: f.leader_id },
            None => raft_err(e),
        })?;
        blocking::run(&self.inner.db, move |db| {
            let rtx = db.begin_read()?;
            let tables = ReadTables::open(&rtx)?;
            f(&tables)
        })
        .await
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
