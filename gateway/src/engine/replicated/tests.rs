//! `ReplicatedChunks` against in-memory daemons (`FakeChunks`) and a scripted membership.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use proto::{ChunkHash, FsError, pb};

use super::super::fakes::FakeChunks;
use super::super::lock;
use super::super::placement;
use super::{ChunkApi, Connector, Membership, ReplicatedChunks, ReplicationOptions};

/// metad's daemon list: `current`, replaced by `next` (if set) on the first call after
/// `next` was set.
#[derive(Clone, Default)]
struct FakeMembership(Arc<MembershipInner>);

#[derive(Default)]
struct MembershipInner {
    current: Mutex<pb::ListBlockDaemonsReply>,
    next: Mutex<Option<pb::ListBlockDaemonsReply>>,
    calls: AtomicUsize,
}

impl FakeMembership {
    fn calls(&self) -> usize {
        self.0.calls.load(Ordering::SeqCst)
    }
}

impl Membership for FakeMembership {
    async fn list_block_daemons(&self) -> Result<pb::ListBlockDaemonsReply, FsError> {
        self.0.calls.fetch_add(1, Ordering::SeqCst);
        let mut current = lock(&self.0.current);
        if let Some(next) = lock(&self.0.next).take() {
            *current = next;
        }
        Ok(current.clone())
    }
}

/// Daemons by address; counts the clients made.
#[derive(Clone, Default)]
struct FakeConnector {
    daemons: Arc<HashMap<String, FakeChunks>>,
    connects: Arc<AtomicUsize>,
}

impl Connector for FakeConnector {
    type Daemon = FakeChunks;

    async fn connect(&self, id: u64, addr: &str) -> Result<FakeChunks, FsError> {
        self.connects.fetch_add(1, Ordering::SeqCst);
        self.daemons.get(addr).cloned().ok_or_else(|| FsError::Unavailable(format!("no daemon {id} at {addr}")))
    }
}

fn addr(id: u64) -> String {
    format!("10.0.0.{id}:7200")
}

fn listing(ids: &[u64], dead: &[u64], default_rf: u32) -> pb::ListBlockDaemonsReply {
    pb::ListBlockDaemonsReply {
        daemons: ids
            .iter()
            .map(|&id| pb::BlockDaemon { id, addr: addr(id), live: !dead.contains(&id), ..Default::default() })
            .collect(),
        default_replication_factor: default_rf,
    }
}

struct Cluster {
    store: ReplicatedChunks<FakeMembership, FakeConnector>,
    membership: FakeMembership,
    daemons: HashMap<u64, FakeChunks>,
    connects: Arc<AtomicUsize>,
}

impl Cluster {
    fn new(ids: &[u64], default_rf: u32) -> Cluster {
        Cluster::with(ids, default_rf, Duration::from_millis(300))
    }

    fn with(ids: &[u64], default_rf: u32, put_deadline: Duration) -> Cluster {
        let daemons: HashMap<u64, FakeChunks> = ids.iter().map(|&id| (id, FakeChunks::default())).collect();
        let membership = FakeMembership::default();
        *lock(&membership.0.current) = listing(ids, &[], default_rf);
        let connector = FakeConnector {
            daemons: Arc::new(daemons.iter().map(|(id, d)| (addr(*id), d.clone())).collect()),
            connects: Arc::default(),
        };
        let connects = connector.connects.clone();
        let opts = ReplicationOptions {
            // Refreshes in these tests happen only because of failures.
            refresh_every: Duration::from_secs(3600),
            put_deadline,
            attempt_timeout: put_deadline,
            first_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(20),
            suspect_for: Duration::from_secs(3600),
        };
        let store = ReplicatedChunks::new(membership.clone(), connector, opts);
        Cluster { store, membership, daemons, connects }
    }

    fn holders(&self, hash: &ChunkHash) -> Vec<u64> {
        let mut ids: Vec<u64> = self.daemons.iter().filter(|(_, d)| d.contains(hash)).map(|(id, _)| *id).collect();
        ids.sort_unstable();
        ids
    }

    fn daemon(&self, id: u64) -> &FakeChunks {
        &self.daemons[&id]
    }
}

fn chunk(seed: u8) -> (ChunkHash, Bytes) {
    let data = Bytes::from(vec![seed; 1000 + usize::from(seed)]);
    (ChunkHash(*blake3::hash(&data).as_bytes()), data)
}

fn sorted(mut ids: Vec<u64>) -> Vec<u64> {
    ids.sort_unstable();
    ids
}

#[tokio::test]
async fn put_reaches_every_replica_of_the_set_and_only_those() {
    let ids = [1, 2, 3, 4, 5];
    let c = Cluster::new(&ids, 3);
    for seed in 0..8 {
        let (hash, data) = chunk(seed);
        c.store.put_replicated(hash, data.clone(), 0).await.expect("put with the cluster default");
        assert_eq!(c.holders(&hash), sorted(placement::replicas(&hash, &ids, 3)), "default rf 3");
        assert_eq!(c.store.has_replicated(&[hash], 0).await.expect("has"), vec![true]);
        // A share asking for 4 copies gets a fourth; the first three are not sent again.
        let puts_before: usize = c.daemons.values().map(FakeChunks::puts).sum();
        c.store.put_replicated(hash, data, 4).await.expect("put rf 4");
        assert_eq!(c.holders(&hash), sorted(placement::replicas(&hash, &ids, 4)));
        assert_eq!(c.daemons.values().map(FakeChunks::puts).sum::<usize>(), puts_before + 1);
    }
    assert_eq!(c.connects.load(Ordering::SeqCst), ids.len(), "one client per daemon, reused");
}

#[tokio::test]
async fn a_failed_replica_moves_the_put_to_the_next_live_set() {
    let ids = [1, 2, 3, 4];
    let c = Cluster::new(&ids, 3);
    let (hash, data) = chunk(7);
    let victim = placement::replicas(&hash, &ids, 3)[0];
    assert_eq!(c.store.has_replicated(&[hash], 3).await.expect("has"), vec![false], "loads the first view");
    c.daemon(victim).0.down.store(true, std::sync::atomic::Ordering::SeqCst);
    // metad declares the victim dead: the refresh after the failure sees it.
    *lock(&c.membership.0.next) = Some(listing(&ids, &[victim], 3));
    c.store.put_replicated(hash, data, 3).await.expect("put on the new replica set");
    let survivors: Vec<u64> = ids.iter().copied().filter(|&id| id != victim).collect();
    assert_eq!(c.holders(&hash), sorted(placement::replicas(&hash, &survivors, 3)));
    assert_eq!(c.holders(&hash).len(), 3);
    assert_eq!(c.membership.calls(), 2, "the failure refreshed the view once");
}

#[tokio::test]
async fn never_acknowledges_fewer_than_rf_copies() {
    let ids = [1, 2, 3];
    // The dead daemon is still listed as live: every attempt fails, until the deadline.
    let c = Cluster::with(&ids, 3, Duration::from_millis(100));
    let (hash, data) = chunk(1);
    c.daemon(2).0.down.store(true, Ordering::SeqCst);
    let err = c.store.put_replicated(hash, data.clone(), 3).await.expect_err("two copies are not three");
    assert!(matches!(err, FsError::Unavailable(_)), "{err:?}");
    assert!(c.membership.calls() >= 2, "failures refreshed the view");
    assert_eq!(c.store.has_replicated(&[hash], 3).await.expect("has"), vec![false]);

    // Declared dead: two live daemons cannot hold three copies either.
    *lock(&c.membership.0.next) = Some(listing(&ids, &[2], 3));
    let err = c.store.put_replicated(hash, data.clone(), 3).await.expect_err("only two live daemons");
    assert!(matches!(err, FsError::Unavailable(_)), "{err:?}");
    // A share with rf 2 is satisfied by the two survivors.
    c.store.put_replicated(hash, data, 2).await.expect("rf 2 on two live daemons");
    assert_eq!(c.holders(&hash), vec![1, 3]);
}

#[tokio::test]
async fn no_space_on_any_replica_is_no_space() {
    let ids = [1, 2, 3];
    let c = Cluster::new(&ids, 3);
    c.daemon(3).0.no_space.store(true, Ordering::SeqCst);
    let (hash, data) = chunk(3);
    let err = c.store.put_replicated(hash, data, 3).await.expect_err("a full replica");
    assert!(matches!(err, FsError::NoSpace), "{err:?}");
    assert_eq!(c.membership.calls(), 1, "no space is not retried elsewhere");
}

#[tokio::test]
async fn get_falls_back_past_corrupt_down_and_moved_copies() {
    let ids = [1, 2, 3, 4];
    let c = Cluster::new(&ids, 2);
    let (hash, data) = chunk(9);
    c.store.put_replicated(hash, data.clone(), 2).await.expect("put");
    let set = placement::replicas(&hash, &ids, 2);
    // The primary answers bytes that do not match: the secondary's copy is served.
    c.daemon(set[0]).corrupt(hash);
    assert_eq!(c.store.get(hash).await.expect("from the secondary"), data);
    assert_eq!(c.daemon(set[1]).gets(), 1);
    // The primary is down instead: same.
    c.daemon(set[0]).0.down.store(true, Ordering::SeqCst);
    assert_eq!(c.store.get(hash).await.expect("from the secondary"), data);
    // Only a daemon outside the replica set still has it (placement changed): found too.
    let outsider = ids.iter().copied().find(|id| !set.contains(id)).expect("an outsider");
    c.daemon(outsider).put(hash, data.clone()).await.expect("seed");
    c.daemon(set[1]).0.down.store(true, Ordering::SeqCst);
    assert_eq!(c.store.get(hash).await.expect("from the outsider"), data);
    // No good copy among the daemons that answer while two cannot be reached: unavailable
    // (try again later: they may be restarting), not an I/O error or bad bytes.
    c.daemon(outsider).corrupt(hash);
    let err = c.store.get(hash).await.expect_err("no good copy reachable");
    assert!(matches!(err, FsError::Unavailable(_)), "{err:?}");
    // Every daemon answers and none has good bytes: an I/O error.
    c.daemon(set[1]).corrupt(hash);
    for id in [set[0], set[1]] {
        c.daemon(id).0.down.store(false, Ordering::SeqCst);
    }
    let err = c.store.get(hash).await.expect_err("no good copy");
    assert!(matches!(err, FsError::Io(_)), "{err:?}");
}

#[tokio::test]
async fn has_is_false_unless_every_replica_holds_the_chunk() {
    let ids = [1, 2, 3, 4, 5];
    let c = Cluster::new(&ids, 3);
    let (hash, data) = chunk(4);
    let (other, other_data) = chunk(5);
    c.store.put_replicated(other, other_data, 3).await.expect("put other");
    let set = placement::replicas(&hash, &ids, 3);
    for &id in &set[..2] {
        c.daemon(id).put(hash, data.clone()).await.expect("seed");
    }
    assert_eq!(c.store.has_replicated(&[hash, other], 3).await.expect("has"), vec![false, true]);
    // The put completes the set, sending only the missing copy.
    c.store.put_replicated(hash, data, 3).await.expect("put");
    assert_eq!(c.daemon(set[2]).puts(), 1 + usize::from(c.daemon(set[2]).contains(&other)));
    assert_eq!(c.store.has_replicated(&[hash, other], 3).await.expect("has"), vec![true, true]);
    // A replica that cannot answer counts as lacking.
    c.daemon(set[1]).0.down.store(true, Ordering::SeqCst);
    assert_eq!(c.store.has_replicated(&[hash], 3).await.expect("has"), vec![false]);
}

#[tokio::test]
async fn get_asks_daemons_not_judged_live_when_no_live_one_can_serve() {
    let ids = [1, 2, 3];
    let c = Cluster::new(&ids, 3);
    let (hash, data) = chunk(9);
    // Only daemon 3 holds the chunk, and metad does not currently judge it live.
    c.daemon(3).put(hash, data.clone()).await.expect("seed");
    *lock(&c.membership.0.current) = listing(&ids, &[3], 3);
    assert_eq!(c.store.get(hash).await.expect("served by the daemon listed as not live"), data);
    // Never placed on it: a put with rf 2 lands on the two live daemons only.
    let (other, other_data) = chunk(10);
    c.store.put_replicated(other, other_data, 2).await.expect("put");
    assert_eq!(c.holders(&other), vec![1, 2]);
}

/// The engine over a replicated store of in-memory daemons.
mod engine {
    use super::*;
    use crate::engine::Engine;
    use crate::engine::fakes::FakeMeta;
    use crate::engine::fakes::root;
    use crate::engine::tests::{cred, data, options};
    use crate::vfs::{Stability, Vfs};

    fn chunk_hashes(meta: &FakeMeta, ino: u64) -> Vec<ChunkHash> {
        meta.extents(ino).iter().map(|e| ChunkHash::from_slice(&e.hash).expect("32 bytes")).collect()
    }

    #[tokio::test]
    async fn file_sync_writes_land_on_the_share_rf_and_read_back_with_a_daemon_down() {
        let ids = [1, 2, 3, 4];
        let c = Cluster::new(&ids, 3);
        let meta = FakeMeta::new();
        meta.0.share_rf.store(2, Ordering::SeqCst);
        let shutdown = cluster::Shutdown::new();
        let engine = Engine::new(meta.clone(), c.store, options(), shutdown.clone()).expect("engine");
        let req = pb::CreateRequest {
            dir: Some(root().into()),
            name: b"f".to_vec(),
            kind: pb::FileType::Regular as i32,
            mode: 0o644,
            ..Default::default()
        };
        let reply = engine.create(&cred(), req).await.expect("create");
        let node: proto::FileHandle = reply.attr.and_then(|a| a.node).expect("node").into();
        let bytes = data(20_000, 11);
        engine.write(&cred(), node, 0, Bytes::from(bytes.clone()), Stability::FileSync).await.expect("write");
        let hashes = chunk_hashes(&meta, node.ino);
        assert!(hashes.len() > 10, "{} chunks", hashes.len());
        for h in &hashes {
            let holders: Vec<u64> =
                sorted(c.daemons.iter().filter(|(_, d)| d.contains(h)).map(|(id, _)| *id).collect());
            assert_eq!(holders, sorted(placement::replicas(h, &ids, 2)), "the share's rf of 2, not the default 3");
        }
        // Any one daemon down: every byte still reads back (from the other replica).
        c.daemons[&1].0.down.store(true, Ordering::SeqCst);
        let r = engine.read(&cred(), node, 0, 20_000).await.expect("read");
        assert_eq!(r.data, bytes);
        shutdown.cancel();
    }
}

/// `ReplicatedChunks` with `QuicConnector` over real QUIC stub daemons on loopback.
mod quic {
    use super::*;
    use crate::engine::quic_chunks::tests::{Mode, start_stub};
    use crate::engine::replicated::QuicConnector;

    /// Three stub daemons, ids 1..=3, daemon `i + 1` behaving as `modes[i]`; default rf 3.
    async fn quic_cluster(modes: [Mode; 3]) -> (ReplicatedChunks<FakeMembership, QuicConnector>, Vec<quinn::Endpoint>) {
        let mut anchors = Vec::new();
        let mut endpoints = Vec::new();
        let mut daemons = Vec::new();
        for (i, mode) in modes.into_iter().enumerate() {
            let (sock, cert, ep) = start_stub(mode);
            anchors.push(cert);
            endpoints.push(ep);
            daemons.push(pb::BlockDaemon {
                id: i as u64 + 1,
                addr: sock.to_string(),
                live: true,
                ..Default::default()
            });
        }
        let membership = FakeMembership::default();
        *lock(&membership.0.current) = pb::ListBlockDaemonsReply { daemons, default_replication_factor: 3 };
        let opts = ReplicationOptions { put_deadline: Duration::from_secs(5), ..ReplicationOptions::default() };
        (ReplicatedChunks::new(membership, QuicConnector::new(anchors), opts), endpoints)
    }

    /// A chunk whose rendezvous primary among 1..=3 is `primary`.
    fn chunk_with_primary(primary: u64) -> (ChunkHash, Bytes) {
        (0..=255u8)
            .map(chunk)
            .find(|(h, _)| placement::replicas(h, &[1, 2, 3], 1) == [primary])
            .expect("some chunk has each primary")
    }

    #[tokio::test]
    async fn replicated_put_and_get_over_quic() {
        let (store, _eps) = quic_cluster([Mode::Corrupt, Mode::Honest, Mode::Honest]).await;
        let (hash, data) = chunk_with_primary(1);
        assert_eq!(store.has_replicated(&[hash], 3).await.expect("has"), vec![false]);
        store.put_replicated(hash, data.clone(), 3).await.expect("put on three daemons");
        assert_eq!(store.has_replicated(&[hash], 3).await.expect("has"), vec![true]);
        // The primary (id 1) answers bad bytes; the next replica's copy is served.
        assert_eq!(store.get(hash).await.expect("get"), data);
    }

    #[tokio::test]
    async fn a_silent_replica_is_abandoned_per_attempt_and_the_put_lands_on_a_fresh_view() {
        let (mut store, _eps) = quic_cluster([Mode::Honest, Mode::Silent, Mode::Honest]).await;
        store.opts.attempt_timeout = Duration::from_millis(300);
        let (hash, data) = chunk_with_primary(2);
        // The first view lists daemon 2 (the chunk's primary) as live; then metad declares it
        // dead, which the engine learns on the refresh after the first attempt times out. rf 2
        // over the two live daemons then succeeds, well within the put deadline (5 s),
        // although daemon 2 never answers.
        let _ = store.current_view().await.expect("first view");
        let mut next = lock(&store.source.0.current).clone();
        next.daemons[1].live = false;
        *lock(&store.source.0.next) = Some(next);
        let started = std::time::Instant::now();
        store.put_replicated(hash, data.clone(), 2).await.expect("put lands on daemons 1 and 3");
        assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
        assert_eq!(store.get(hash).await.expect("get"), data);
    }

    /// A daemon that hangs while metad still lists it live (its heartbeats have not been
    /// missed yet): the first put that needs it waits one `attempt_timeout`, then it is
    /// suspect — that put and the next ones land on the two others at once (the cluster
    /// default rf follows the daemons usable), a HAS does not wait for it, and a read whose
    /// primary it is asks another replica first.
    #[tokio::test]
    async fn a_hung_daemon_costs_one_timeout_not_one_per_chunk() {
        let (mut store, _eps) = quic_cluster([Mode::Honest, Mode::Silent, Mode::Honest]).await;
        // Long enough that the puts after the first cannot take as long even on a loaded
        // machine, unless they wait for daemon 2.
        let timeout = Duration::from_secs(3);
        store.opts.attempt_timeout = timeout;
        let (first, data) = chunk_with_primary(2);
        let started = std::time::Instant::now();
        store.put_replicated(first, data.clone(), 0).await.expect("the first put lands on daemons 1 and 3");
        assert!(started.elapsed() >= timeout, "it waited for daemon 2 once: {:?}", started.elapsed());
        let others: Vec<(ChunkHash, Bytes)> =
            (0..=255u8).map(chunk).filter(|(h, _)| placement::replicas(h, &[1, 2, 3], 1) == [2]).skip(1).take(5).collect();
        assert_eq!(others.len(), 5);
        let started = std::time::Instant::now();
        for (h, d) in &others {
            store.put_replicated(*h, d.clone(), 0).await.expect("put around the suspect");
        }
        assert_eq!(store.has_replicated(&[first], 0).await.expect("has"), vec![true], "held by both usable replicas");
        assert_eq!(store.get(first).await.expect("get"), data);
        assert!(
            started.elapsed() < timeout,
            "five puts, a HAS and a read whose primary hangs, without waiting for it: {:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn a_full_daemon_over_quic_is_no_space() {
        let (store, _eps) = quic_cluster([Mode::Honest, Mode::Full, Mode::Honest]).await;
        let (hash, data) = chunk_with_primary(3);
        let err = store.put_replicated(hash, data.clone(), 3).await.expect_err("daemon 2 is full");
        assert!(matches!(err, FsError::NoSpace), "{err:?}");
        // A share with rf 1 whose only replica (daemon 3) has room is stored.
        store.put_replicated(hash, data, 1).await.expect("rf 1 on daemon 3");
    }
}
