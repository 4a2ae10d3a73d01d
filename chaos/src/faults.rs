//! The fault schedule: `inject` draws faults from a seeded RNG and applies them one after
//! another to the running cluster, each for a drawn duration, with a pause between them.
//!
//! Kinds: `kill9` (SIGKILL a node — its metad, block daemon and gateway at once — then
//! restart it), `pause` (SIGSTOP, then SIGCONT: a node that hangs with its sockets open),
//! `s3_outage` (the S3 server stops, then comes back on the same address). One node is
//! faulted at a time, so the three metad voters keep a quorum and every chunk keeps a live
//! replica: what is tested is that nothing acknowledged is lost and service continues, not
//! what happens past the designed fault tolerance. When the node killed is metad's leader,
//! the time until another node names a new leader is measured.
//! Must never: leave a node paused or down when it returns (the caller heals anyway).

use std::time::{Duration, Instant};

use anyhow::Result;
use proto::pb;
use proto::pb::control_client::ControlClient;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::cluster::ChaosCluster;

/// One fault as applied.
#[derive(Clone, Debug)]
pub struct Fault {
    pub kind: &'static str,
    pub node: Option<usize>,
    pub start: Instant,
    pub end: Instant,
    /// For a kill of the leader: ms until a new leader was named.
    pub failover_ms: Option<u64>,
}

const CONTROL_PORT: u16 = 7000;

/// The leader node `i` reports, if it answers within a second.
async fn leader_seen_by(cluster: &ChaosCluster, i: usize) -> Option<u64> {
    let url = format!("http://{}:{CONTROL_PORT}", cluster.nodes[i].ip);
    let call = async {
        let mut c = ControlClient::connect(url).await.ok()?;
        c.status(pb::StatusRequest {}).await.ok()?.into_inner().leader_id
    };
    tokio::time::timeout(Duration::from_secs(1), call).await.ok().flatten()
}

/// Waits (at most 30 s) until a running node other than `old`'s names a leader other than
/// `old`; returns how long that took.
async fn wait_new_leader(cluster: &ChaosCluster, old: u64, since: Instant) -> Option<u64> {
    while since.elapsed() < Duration::from_secs(30) {
        for i in 0..cluster.nodes.len() {
            if cluster.nodes[i].id != old
                && cluster.nodes[i].is_running()
                && let Some(l) = leader_seen_by(cluster, i).await
                && l != old
            {
                return Some(since.elapsed().as_millis() as u64);
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// Every kind of fault, with its weight in the draw.
pub const KINDS: [(&str, u32); 3] = [("kill9", 45), ("pause", 35), ("s3_outage", 20)];

/// Applies `n` faults drawn from `seed` among `kinds` (empty = all); returns what was done,
/// in order.
pub async fn inject(cluster: &mut ChaosCluster, seed: u64, n: usize, kinds: &[String]) -> Result<Vec<Fault>> {
    let chosen: Vec<(&str, u32)> = KINDS.iter().copied().filter(|(k, _)| kinds.is_empty() || kinds.iter().any(|x| x == k)).collect();
    if chosen.is_empty() {
        anyhow::bail!("no fault kind among {kinds:?}; known: {:?}", KINDS.map(|k| k.0));
    }
    let total: u32 = chosen.iter().map(|k| k.1).sum();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut log = Vec::new();
    // Let the clients get going before the first fault.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for _ in 0..n {
        let mut p: u32 = rng.random_range(0..total);
        let kind = chosen.iter().find(|(_, w)| if p < *w { true } else { p -= w; false }).map_or("kill9", |k| k.0);
        let i = rng.random_range(0..cluster.nodes.len());
        let hold = Duration::from_millis(rng.random_range(500..3000));
        let start = Instant::now();
        let (kind, node, failover_ms) = if kind == "kill9" {
            let leader = leader_seen_by(cluster, i).await;
            cluster.kill9(i);
            let killed_leader = leader == Some(cluster.nodes[i].id);
            let failover = if killed_leader { wait_new_leader(cluster, cluster.nodes[i].id, start).await } else { None };
            tokio::time::sleep(hold).await;
            cluster.restart(i).await?;
            ("kill9", Some(i), failover)
        } else if kind == "pause" {
            cluster.pause(i)?;
            tokio::time::sleep(hold).await;
            cluster.resume(i)?;
            ("pause", Some(i), None)
        } else {
            cluster.s3_down().await;
            tokio::time::sleep(hold * 2).await;
            cluster.s3_up().await;
            ("s3_outage", None, None)
        };
        log.push(Fault { kind, node, start, end: Instant::now(), failover_ms });
        // Time to recover before the next fault (drawn, so faults also come close together).
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..2000))).await;
    }
    Ok(log)
}
