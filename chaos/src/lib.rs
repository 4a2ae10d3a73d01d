//! The fault-injection harness: a real cluster under load and faults, and a check that
//! nothing acknowledged was lost.
//!
//! `run` starts the three-node example of `deploy/three-node` (docs/deploy.md) with HAProxy
//! and an S3 server (`cluster`), lets `clients` NFS clients work through the load balancer
//! (`client`), injects `faults` faults from a schedule drawn from `seed` (`faults`), heals
//! everything, and checks (`check`): every acknowledged write reads back with exactly its
//! bytes, every acknowledged create/rename/remove is reflected in the directory, every read
//! during the run returned the acknowledged state (each client's files have one writer, so
//! that is their linearizable history), the histories of a directory all clients share —
//! whole-file writes and reads, creates, removes and lookups by several clients at once
//! (`shared`) — are linearizable per file and per name (`linear`, a model checker), and
//! no process panicked. The outcome is one
//! [`Summary`] (printed as a JSON line by the `chaos` binary).
//!
//! Must never: be a dependency of a daemon (it is a harness); send traffic beyond
//! 127.0.0.0/8 and the private bridge it creates (`netns`); leave a process running, a
//! namespace or a mount behind when it returns.

pub mod check;
pub mod client;
pub mod cluster;
pub mod faults;
pub mod linear;
pub mod netns;
pub mod shared;
pub mod tcp;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    pub seed: u64,
    pub faults: usize,
    pub clients: usize,
    /// Fault kinds to draw from (`faults::KINDS`); empty = all.
    pub kinds: Vec<String>,
    /// The `tessera` binary to run.
    pub tessera: PathBuf,
    /// Where the cluster's files go (a temporary folder when `None`; kept when given).
    pub dir: Option<PathBuf>,
}

/// The run's outcome (one JSON line).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    pub seed: u64,
    pub faults_injected: usize,
    pub faults_by_kind: std::collections::BTreeMap<String, usize>,
    pub operations_acknowledged: u64,
    /// Acknowledged writes, creates, renames or removes not reflected after healing.
    pub acknowledged_but_lost: usize,
    /// Reads during the run that did not return the acknowledged state, and keys of the
    /// shared directory whose history is not linearizable (`linear`).
    pub linearizability_violations: usize,
    /// Answered operations on the shared directory (all clients), checked by `linear`.
    pub shared_operations: usize,
    /// Operations that never completed (or got an error no fault explains).
    pub failed_operations: usize,
    /// Writes refused with NFS3ERR_NOSPC while a block daemon's disk was full (expected;
    /// outside a `disk_full` fault they count as failed).
    pub refused_no_space: usize,
    pub panics: usize,
    /// Node processes that exited on their own and were restarted, as a service manager
    /// would (`tessera serve` exits when its block store fails): expected while a disk is
    /// full (`expected_exits`), a failure otherwise (`unexpected_exits`).
    pub expected_exits: usize,
    pub unexpected_exits: usize,
    /// Longest time one client operation took (retries included) while a fault of that
    /// kind was active or within 2 s after it, per kind, in milliseconds.
    pub longest_stall_ms: std::collections::BTreeMap<String, u64>,
    /// Calls that failed without an answer (connection broken or timed out) after which a
    /// client reconnected through the load balancer, per kind of the fault they fell in.
    /// `gateway_kill` > 0 shows clients were on the gateway that was lost.
    pub reconnects_by_kind: std::collections::BTreeMap<String, usize>,
    /// The operation behind each longest stall, with its calls: how many, how many got
    /// no answer, and the longest single one — so one long wait on a gateway can be told
    /// from a series of "try again" answers or of broken connections.
    pub slowest_operations: Vec<String>,
    /// Time from killing the metad leader until another node reported a new leader, ms.
    pub leader_failover_ms: Vec<u64>,
    pub duration_s: f64,
    /// The first few problems, for the reader.
    pub problems: Vec<String>,
}

impl Summary {
    /// Nothing acknowledged lost, no violation, no failed operation, no panic, no node that
    /// exited when no fault explains it.
    pub fn passed(&self) -> bool {
        self.acknowledged_but_lost == 0
            && self.linearizability_violations == 0
            && self.failed_operations == 0
            && self.panics == 0
            && self.unexpected_exits == 0
    }
}

/// Runs the harness once.
pub async fn run(opts: &Options) -> Result<Summary> {
    let started = Instant::now();
    let tmp;
    let dir = match &opts.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let wants = |kinds: &[&str]| opts.kinds.is_empty() || opts.kinds.iter().any(|k| kinds.contains(&k.as_str()));
    let (small_disk, namespaces) = (wants(&["disk_full"]), wants(faults::NETWORK_KINDS));
    let mut cluster = cluster::ChaosCluster::start(&dir, &opts.tessera, small_disk, namespaces)
        .await
        .context("starting the cluster")?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut workers = Vec::new();
    for id in 0..opts.clients {
        let mut w = client::Worker::new(id, cluster.lb, opts.seed);
        let stop = stop_rx.clone();
        workers.push(tokio::spawn(async move {
            if w.setup().await {
                w.run(stop).await;
            }
            w.report
        }));
    }
    let fault_log = faults::inject(&mut cluster, opts.seed, opts.faults, &opts.kinds).await?;
    cluster.heal().await?;
    // Let every client finish a few operations on the healed cluster.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = stop_tx.send(true);
    let mut reports = Vec::new();
    for w in workers {
        reports.push(w.await.context("a client task failed")?);
    }
    let mut summary = check::check(&cluster, &reports, &fault_log).await;
    summary.seed = opts.seed;
    summary.duration_s = started.elapsed().as_secs_f64();
    drop(cluster);
    Ok(summary)
}
