//! The fault schedule: `inject` draws faults from a seeded RNG and applies them one after
//! another to the running cluster, each for a drawn duration, with a pause between them.
//!
//! Kinds: `kill9` (SIGKILL a node — its metad, block daemon and gateway at once — then
//! restart it), `pause` (SIGSTOP, then SIGCONT: a node that hangs with its sockets open),
//! `s3_outage` (the S3 server stops, then comes back on the same address), `gateway_kill`
//! (SIGKILL the gateway-only node, then restart it: a gateway lost behind HAProxy while the
//! metadata and block services stay whole), `disk_full` (node 3's block daemon's disk is
//! filled to less than a segment free, then emptied: puts that need it are refused with
//! NFS3ERR_NOSPC, nothing acknowledged may be lost), and three that cut links (the nodes
//! then run in network namespaces, `netns`; packets vanish silently): `partition` (one
//! core node cut from every other node while clients and HAProxy still reach its gateway:
//! a minority that must not serve what it cannot know), `link_cut` (the link between two
//! core nodes only: each still sees the third), `isolate` (one core node cut from
//! everyone, clients and HAProxy too). Each picks one of nodes 1-3. One node is faulted at
//! a time, so the three metad voters keep a quorum and every chunk keeps a live replica:
//! what is tested is that nothing acknowledged is lost and service continues, not what
//! happens past the designed fault tolerance. When the node killed or cut off is metad's
//! leader, the time until another node names a new leader is measured.
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
/// How long `gateway_kill` waits for a client to be connected to the gateway it kills.
const GATEWAY_CLIENT_WAIT: Duration = Duration::from_secs(10);

/// Waits (at most `GATEWAY_CLIENT_WAIT`) until node `g`'s gateway holds a client's NFS
/// session: HAProxy reports a session to it twice, `SETTLE` apart. (HAProxy's sessions, not
/// the gateway's connection count, which its health checks inflate every 500 ms; twice,
/// because a client's MOUNT call has a short session of its own, and its NFS connection
/// may then go to another gateway.)
async fn wait_for_a_client(cluster: &ChaosCluster, g: usize) {
    const SETTLE: Duration = Duration::from_millis(300);
    let waiting = Instant::now();
    while waiting.elapsed() < GATEWAY_CLIENT_WAIT {
        if cluster.lb_sessions(g).await.unwrap_or(0) >= 1 {
            tokio::time::sleep(SETTLE).await;
            if cluster.lb_sessions(g).await.unwrap_or(0) >= 1 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

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
/// (A seed's schedule over the first three kinds is the same as before `gateway_kill` was
/// added, so `--kinds kill9,pause,s3_outage` replays the seeds that found bugs.)
pub const KINDS: [(&str, u32); 8] = [
    ("kill9", 45),
    ("pause", 35),
    ("s3_outage", 20),
    ("gateway_kill", 20),
    ("disk_full", 10),
    ("partition", 25),
    ("link_cut", 15),
    ("isolate", 15),
];

/// The kinds that cut links: they need the nodes in network namespaces (`netns`).
pub const NETWORK_KINDS: &[&str] = &["partition", "link_cut", "isolate"];

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
    cluster.supervise(Duration::from_secs(2)).await?;
    for _ in 0..n {
        let mut p: u32 = rng.random_range(0..total);
        let kind = chosen.iter().find(|(_, w)| if p < *w { true } else { p -= w; false }).map_or("kill9", |k| k.0);
        let core = cluster.core_nodes();
        let i = core[rng.random_range(0..core.len())];
        let hold = Duration::from_millis(rng.random_range(500..3000));
        let start = Instant::now();
        let (kind, node, failover_ms) = if kind == "kill9" {
            let leader = leader_seen_by(cluster, i).await;
            cluster.kill9(i);
            let killed_leader = leader == Some(cluster.nodes[i].id);
            let failover = if killed_leader { wait_new_leader(cluster, cluster.nodes[i].id, start).await } else { None };
            cluster.supervise(hold).await?;
            cluster.restart(i).await?;
            ("kill9", Some(i), failover)
        } else if kind == "gateway_kill" {
            let gateways = cluster.gateway_nodes();
            let Some(&g) = gateways.get(i % gateways.len().max(1)) else {
                anyhow::bail!("gateway_kill: the example has no gateway-only node")
            };
            // Lose it while it serves someone: clients remount now and then (client.rs)
            // and HAProxy's leastconn sends new connections to the emptiest gateway.
            wait_for_a_client(cluster, g).await;
            cluster.kill9(g);
            cluster.supervise(hold).await?;
            cluster.restart(g).await?;
            ("gateway_kill", Some(g), None)
        } else if kind == "disk_full" {
            cluster.fill_disk()?;
            cluster.supervise(hold * 2).await?;
            cluster.free_disk()?;
            ("disk_full", cluster.nodes.iter().position(|n| n.id == 3), None)
        } else if NETWORK_KINDS.contains(&kind) {
            let leader = leader_seen_by(cluster, i).await;
            let kind = if kind == "partition" {
                for j in 0..cluster.nodes.len() {
                    if j != i {
                        cluster.cut(i, j)?;
                    }
                }
                "partition"
            } else if kind == "link_cut" {
                let others: Vec<usize> = core.iter().copied().filter(|&j| j != i).collect();
                cluster.cut(i, others[rng.random_range(0..others.len())])?;
                "link_cut"
            } else {
                cluster.isolate(i)?;
                "isolate"
            };
            // A leader cut off from the majority is replaced (a single cut link need not be).
            let failover = if kind != "link_cut" && leader == Some(cluster.nodes[i].id) {
                wait_new_leader(cluster, cluster.nodes[i].id, start).await
            } else {
                None
            };
            cluster.supervise(hold * 2).await?;
            cluster.mend_all()?;
            (kind, Some(i), failover)
        } else if kind == "pause" {
            cluster.pause(i)?;
            cluster.supervise(hold).await?;
            cluster.resume(i)?;
            ("pause", Some(i), None)
        } else {
            cluster.s3_down().await;
            cluster.supervise(hold * 2).await?;
            cluster.s3_up().await;
            ("s3_outage", None, None)
        };
        log.push(Fault { kind, node, start, end: Instant::now(), failover_ms });
        // Time to recover before the next fault (drawn, so faults also come close together).
        cluster.supervise(Duration::from_millis(rng.random_range(300..2000))).await?;
    }
    Ok(log)
}
