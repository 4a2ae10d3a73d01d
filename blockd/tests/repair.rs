//! Heartbeats and anti-entropy re-replication across in-process block daemons, with a fake
//! metad deciding who is live.

mod common;

use std::collections::{BTreeMap, HashSet};

use blockd::Blockd;
use cluster::placement::replicas;
use cluster::tls::{Ca, Role};
use common::fake_metad::FakeMetad;
use common::*;
use proto::ChunkHash;
use proto::chunk_frame::Status;

async fn daemon(ca: &Ca, dir: &std::path::Path, metad: &str) -> (Blockd, cluster::Shutdown) {
    let mut opts = options(ca, dir);
    opts.metad_endpoints = vec!["http://127.0.0.1:1".to_string(), metad.to_string()];
    start(opts).await
}

/// Every chunk's replica set over `ids`, and where each chunk is (asked with HAS).
async fn placement(
    tool: &quinn::Endpoint,
    daemons: &BTreeMap<u64, &Blockd>,
    hashes: &[ChunkHash],
) -> BTreeMap<u64, Vec<bool>> {
    let mut out = BTreeMap::new();
    for (id, d) in daemons {
        let conn = connect(tool, d.local_addr()).await;
        out.insert(*id, has(&conn, hashes).await);
    }
    out
}

#[tokio::test]
async fn chunks_reach_their_replica_set_and_only_changed_sets_are_copied() {
    let ca = Ca::generate().expect("ca");
    let fake = FakeMetad::default();
    fake.state.lock().expect("lock").rf = 2;
    let url = fake.serve().await;
    let dirs: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir().expect("tempdir")).collect();
    let (a, a_stop) = daemon(&ca, dirs[0].path(), &url).await;
    let (b, b_stop) = daemon(&ca, dirs[1].path(), &url).await;
    let (c, c_stop) = daemon(&ca, dirs[2].path(), &url).await;
    for d in [&a, &b, &c] {
        fake.set(d.id(), d.local_addr(), true);
    }

    // Heartbeats arrive (the first metad endpoint is dead: the client moves on).
    tokio::time::timeout(DEADLINE, fake.beat.notified()).await.expect("a heartbeat");
    {
        let s = fake.state.lock().expect("lock");
        let ids: HashSet<u64> = [a.id(), b.id(), c.id()].into();
        let (id, addr, _) = s.heartbeats.first().expect("heartbeat").clone();
        assert!(ids.contains(&id));
        let expected = [&a, &b, &c].iter().find(|d| d.id() == id).expect("daemon").local_addr().to_string();
        assert_eq!(addr, expected);
    }

    // A gateway writes every chunk to A only; A's pass places each on its set.
    let gateway = client(&ca.anchor(), Some(&issue(&ca, Role::Gateway)));
    let conn = connect(&gateway, a.local_addr()).await;
    let chunks: Vec<Vec<u8>> = (0..40u32).map(|i| format!("chunk number {i}").repeat(50).into_bytes()).collect();
    let hashes: Vec<ChunkHash> = chunks.iter().map(|c| hash_of(c)).collect();
    for c in &chunks {
        assert_eq!(put(&conn, c).await, Status::Ok);
    }
    let first = a.repair_pass().await.expect("repair on").expect("pass");
    assert_eq!(first.checked, 40);
    assert_eq!(first.skipped, 0);
    let old_ids = [a.id(), b.id(), c.id()];
    let old_sets: Vec<Vec<u64>> = hashes.iter().map(|h| replicas(h, &old_ids, 2)).collect();
    // A is in some sets and not in others; it copied to every member but itself.
    let expected_first: u64 = old_sets.iter().map(|s| s.iter().filter(|m| **m != a.id()).count() as u64).sum();
    assert_eq!(first.copied, expected_first);
    // Passes on B and C find nothing to do.
    assert_eq!(b.repair_pass().await.expect("on").expect("pass").copied, 0);
    assert_eq!(c.repair_pass().await.expect("on").expect("pass").copied, 0);

    // C dies; D joins.
    let c_id = c.id();
    stop(c, c_stop).await;
    fake.set(c_id, "127.0.0.1:9".parse().expect("addr"), false);
    let (d, d_stop) = daemon(&ca, dirs[3].path(), &url).await;
    fake.set(d.id(), d.local_addr(), true);
    let new_ids = [a.id(), b.id(), d.id()];
    let new_sets: Vec<Vec<u64>> = hashes.iter().map(|h| replicas(h, &new_ids, 2)).collect();
    let changed = old_sets.iter().zip(&new_sets).filter(|(o, n)| o != n).count();
    assert!(changed > 0 && changed < hashes.len(), "the test data must move some chunks, not all");
    // What must be copied: each new-set member lacking the chunk. (A still holds every
    // chunk the gateway wrote to it, in its set or not.) Unchanged sets lack nothing.
    let tool = client(&ca.anchor(), Some(&issue(&ca, Role::Tool)));
    let live: BTreeMap<u64, &Blockd> = [(a.id(), &a), (b.id(), &b), (d.id(), &d)].into();
    let before = placement(&tool, &live, &hashes).await;
    let lacking = |i: usize, set: &[u64]| set.iter().filter(|m| !before[*m][i]).count() as u64;
    let expected: u64 = new_sets.iter().enumerate().map(|(i, set)| lacking(i, set)).sum();
    assert!(expected > 0);
    for (i, (old, new)) in old_sets.iter().zip(&new_sets).enumerate() {
        if old == new {
            assert_eq!(lacking(i, new), 0, "chunk {i}: an unchanged set lacks nothing");
        }
    }

    let mut copied = 0;
    for x in [&a, &b, &d] {
        let r = x.repair_pass().await.expect("on").expect("pass");
        assert_eq!(r.skipped, 0);
        copied += r.copied;
    }
    assert_eq!(copied, expected, "exactly the missing copies are made, once each");

    // Every chunk is on each member of its new set.
    let found = placement(&tool, &live, &hashes).await;
    for (i, set) in new_sets.iter().enumerate() {
        let holders = set.iter().filter(|m| found[m][i]).count();
        assert_eq!(holders, 2, "chunk {i} on {holders} of its replica set");
    }
    // A further round copies nothing.
    for x in [&a, &b, &d] {
        assert_eq!(x.repair_pass().await.expect("on").expect("pass").copied, 0);
    }

    stop(a, a_stop).await;
    stop(b, b_stop).await;
    stop(d, d_stop).await;
}
