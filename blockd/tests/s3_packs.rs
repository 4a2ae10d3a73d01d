//! The S3 tier across replicas: three in-process block daemons, a fake metad (daemon list,
//! RecordPacks, LocateChunks) and an in-process S3 server. Each chunk is uploaded once, by
//! its primary; a chunk whose primary died is uploaded as a leftover after a grace; every
//! daemon evicts and reads every chunk back, verified.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use blockd::s3::client::PackBucket;
use blockd::s3::pack;
use blockd::s3::test_server::{AK, BUCKET, S3Server, SK};
use blockd::{Blockd, S3Options};
use cluster::Shutdown;
use cluster::tls::{Ca, Role};
use common::fake_metad::FakeMetad;
use common::*;
use proto::ChunkHash;
use proto::chunk_frame::{Request, Status};

const SEGMENT: u64 = 1 << 20;
const CHUNK: usize = 64 * 1024;

fn s3_opts(addr: std::net::SocketAddr, prefix: &str) -> S3Options {
    let mut o = S3Options::new(Some(format!("http://{addr}")), BUCKET, "us-east-1", AK, SK, prefix);
    o.local_bound_bytes = SEGMENT;
    o.read_timeout = Duration::from_millis(800);
    o.upload_timeout = Duration::from_secs(10);
    o.min_backoff = Duration::from_millis(20);
    o.max_backoff = Duration::from_millis(200);
    o.scan_interval = Duration::from_millis(50);
    o.locate_interval = Duration::from_millis(50);
    o.leftover_grace = Duration::from_millis(300);
    o.orphan_grace = Duration::from_secs(600);
    o
}

async fn daemon(ca: &Ca, dir: &Path, metad: &str, s3: S3Options) -> (Blockd, Shutdown) {
    cluster::tls::install_crypto_provider();
    let mut opts = options(ca, dir);
    opts.segment_bytes = SEGMENT;
    opts.metad_endpoints = vec![metad.to_string()];
    let shutdown = Shutdown::new();
    let blockd = Blockd::start_with_tier(opts, Some(s3), shutdown.clone()).await.expect("start blockd");
    (blockd, shutdown)
}

fn chunk(i: u32) -> Vec<u8> {
    let mut data = vec![0u8; CHUNK];
    let mut x = u64::from(i).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for b in data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    data
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How many packs hold each chunk's bytes, over every pack in the bucket.
async fn copies_in_s3(bucket: &PackBucket) -> (usize, BTreeMap<ChunkHash, usize>) {
    let listed = bucket.list("packs/").await.expect("list");
    let mut copies = BTreeMap::new();
    for o in &listed {
        let (t, entries) = bucket.read_footer(&o.key, Some(o.size)).await.expect("footer");
        assert_eq!(t.version, pack::PACK_VERSION);
        for e in entries {
            if let Some(off) = e.pack_offset {
                let bytes = bucket.get_range(&o.key, off, u64::from(e.len)).await.expect("range");
                assert_eq!(blake3::hash(&bytes).as_bytes(), e.hash.as_bytes(), "pack bytes verify");
                *copies.entry(e.hash).or_insert(0) += 1;
            }
        }
    }
    (listed.len(), copies)
}

async fn get(conn: &quinn::Connection, data: &[u8]) -> (Status, Vec<u8>) {
    call(conn, &Request::Get { hash: hash_of(data) }).await
}

/// 48 chunks of 64 KiB over 1 MiB segments: 3 sealed segments of 15 chunks and 3 in the
/// active one, identical on every daemon that receives them in this order.
const CHUNKS: u32 = 48;
const SEALED: usize = 45;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_upload_each_chunk_once_and_every_daemon_evicts_and_reads_back() {
    let ca = Ca::generate().expect("ca");
    let fake = FakeMetad::default();
    fake.state.lock().expect("lock").rf = 3;
    let url = fake.serve().await;
    let s3dir = tempfile::tempdir().expect("tmp");
    let server = S3Server::start(s3dir.path(), "127.0.0.1:0".parse().expect("addr")).await;
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().expect("tempdir")).collect();
    let mut ds = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        ds.push(daemon(&ca, dir.path(), &url, s3_opts(server.addr, &format!("d{i}"))).await);
    }
    for (d, _) in &ds {
        fake.set(d.id(), d.local_addr(), true);
    }

    // The same chunks on all three daemons (RF = 3).
    let gateway = client(&ca.anchor(), Some(&issue(&ca, Role::Gateway)));
    let chunks: Vec<Vec<u8>> = (0..CHUNKS).map(chunk).collect();
    let mut conns = Vec::new();
    for (d, _) in &ds {
        conns.push(connect(&gateway, d.local_addr()).await);
    }
    // As a gateway does: each chunk to every replica before the next. (A daemon's sealed
    // segment is "not yet in S3" until the others uploaded their share of it, so under a
    // one-segment bound a daemon written alone waits for its peers: back-pressure.)
    for c in &chunks {
        for conn in &conns {
            assert_eq!(put(conn, c).await, Status::Ok);
        }
    }

    // Every daemon settles its sealed segments and evicts them under the 1 MiB bound.
    for (d, _) in &ds {
        let store = d.store();
        wait_until("every sealed segment located and evicted", || {
            let s = store.tier_stats().expect("tier");
            s.backlog_segments == 0 && s.evicted_segments == 3
        })
        .await;
    }

    // S3 holds ONE set of packs: each sealed chunk's bytes in exactly one pack.
    let bucket = PackBucket::new(&s3_opts(server.addr, "d0"));
    let (objects, copies) = copies_in_s3(&bucket).await;
    assert_eq!(objects, 3 * 3, "one primary pack per daemon and sealed segment, no leftovers");
    assert_eq!(copies.len(), SEALED, "every sealed chunk is in S3");
    assert!(copies.values().all(|n| *n == 1), "each chunk uploaded once: {copies:?}");
    let stored: usize = ds.iter().map(|(d, _)| d.store().tier_stats().expect("tier").uploaded_packs as usize).sum();
    assert_eq!(stored, 9);
    let uploaded_bytes: u64 = ds.iter().map(|(d, _)| d.store().tier_stats().expect("tier").uploaded_bytes).sum();
    let data_bytes = (SEALED * CHUNK) as u64;
    assert!(uploaded_bytes < data_bytes + data_bytes / 10, "{uploaded_bytes} bytes uploaded for {data_bytes} of data");
    // metad locates every one of them, in the pack that holds it.
    {
        let s = fake.state.lock().expect("lock");
        assert_eq!(s.packs.len(), SEALED);
        assert!(s.record_calls <= 9, "one RecordPacks per pack, not per chunk: {}", s.record_calls);
    }
    // Each daemon located the chunks the others uploaded through metad.
    for (d, _) in &ds {
        assert!(d.store().tier_stats().expect("tier").located_by_metad > 0);
    }

    // Every daemon reads every chunk back, verified (evicted ones from S3).
    for ((d, _), conn) in ds.iter().zip(&conns) {
        for c in &chunks {
            let (status, body) = get(conn, c).await;
            assert_eq!(status, Status::Ok);
            assert!(body == *c, "chunk bytes");
        }
        assert!(d.store().tier_stats().expect("tier").remote_reads >= SEALED as u64);
    }

    // One daemon loses blockd.redb: it rebuilds from its segments and its pack footers
    // (the manifests list the chunks other daemons uploaded) and reads everything again.
    let (d0, stop0) = ds.remove(0);
    let id0 = d0.id();
    stop(d0, stop0).await;
    std::fs::remove_file(dirs[0].path().join("blockd.redb")).expect("remove index");
    let (d0, stop0) = daemon(&ca, dirs[0].path(), &url, s3_opts(server.addr, "d0")).await;
    assert_eq!(d0.id(), id0);
    fake.set(id0, d0.local_addr(), true);
    let store = d0.store();
    wait_until("rebuild", || store.tier_stats().expect("tier").ready).await;
    let conn = connect(&gateway, d0.local_addr()).await;
    for c in &chunks {
        let (status, body) = get(&conn, c).await;
        assert_eq!(status, Status::Ok, "after the rebuild");
        assert!(body == *c);
    }
    assert_eq!(store.tier_stats().expect("tier").uploaded_packs, 0, "nothing uploaded again");
    stop(d0, stop0).await;
    for (d, s) in ds {
        stop(d, s).await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_of_a_dead_primary_are_uploaded_as_leftovers_and_then_evicted() {
    let ca = Ca::generate().expect("ca");
    let fake = FakeMetad::default();
    fake.state.lock().expect("lock").rf = 3;
    let url = fake.serve().await;
    let s3dir = tempfile::tempdir().expect("tmp");
    let server = S3Server::start(s3dir.path(), "127.0.0.1:0".parse().expect("addr")).await;
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().expect("tempdir")).collect();
    // Room for the three sealed segments that wait for C (not yet in S3, so not evictable
    // and counted against the bound), and one eviction once they are located.
    let opts = |prefix: &str| {
        let mut o = s3_opts(server.addr, prefix);
        o.local_bound_bytes = 3 * SEGMENT + SEGMENT / 2;
        o
    };
    let (a, a_stop) = daemon(&ca, dirs[0].path(), &url, opts("a")).await;
    let (b, b_stop) = daemon(&ca, dirs[1].path(), &url, opts("b")).await;
    // C dies before it uploads anything, but metad still lists it as live.
    let (c, c_stop) = daemon(&ca, dirs[2].path(), &url, s3_opts(server.addr, "c")).await;
    let (c_id, c_addr) = (c.id(), c.local_addr());
    stop(c, c_stop).await;
    for (id, addr) in [(a.id(), a.local_addr()), (b.id(), b.local_addr()), (c_id, c_addr)] {
        fake.set(id, addr, true);
    }
    let ids = [a.id(), b.id(), c_id];
    let chunks: Vec<Vec<u8>> = (0..CHUNKS).map(chunk).collect();
    let sealed = &chunks[..SEALED];
    let of_c = sealed.iter().filter(|c| cluster::placement::replicas(&hash_of(c), &ids, 1) == [c_id]).count();
    assert!(of_c > 0 && of_c < SEALED, "C is the primary of some chunks: {of_c}");

    let gateway = client(&ca.anchor(), Some(&issue(&ca, Role::Gateway)));
    let conns = [connect(&gateway, a.local_addr()).await, connect(&gateway, b.local_addr()).await];
    for c in &chunks {
        for conn in &conns {
            assert_eq!(put(conn, c).await, Status::Ok);
        }
    }
    // A and B upload their own packs and find each other's chunks through metad, but
    // nobody has C's: nothing is evictable while metad says C is live.
    for d in [&a, &b] {
        let store = d.store();
        wait_until("own packs and a locate pass", || {
            let s = store.tier_stats().expect("tier");
            s.uploaded_packs == 3 && s.located_by_metad > 0
        })
        .await;
    }
    let bucket = PackBucket::new(&s3_opts(server.addr, "a"));
    let (_, copies) = copies_in_s3(&bucket).await;
    assert_eq!(copies.len(), SEALED - of_c, "C's chunks are not in S3 yet");
    for d in [&a, &b] {
        let s = d.store().tier_stats().expect("tier");
        assert_eq!((s.evicted_segments, s.leftover_packs), (0, 0), "{s:?}");
        assert_eq!(s.backlog_segments, 3, "unlocated data is not evictable: {s:?}");
    }

    // metad declares C dead: after the grace, the new primary of each of C's chunks (A or
    // B) uploads it in a leftover pack; then both evict everything.
    fake.set(c_id, c_addr, false);
    for d in [&a, &b] {
        let store = d.store();
        wait_until("leftovers and eviction", || {
            let s = store.tier_stats().expect("tier");
            s.backlog_segments == 0 && s.evicted_segments == 1
        })
        .await;
    }
    let (_, copies) = copies_in_s3(&bucket).await;
    assert_eq!(copies.len(), SEALED, "every sealed chunk is in S3 now");
    assert!(copies.values().all(|n| *n == 1), "still one copy each: {copies:?}");
    let leftovers: u64 = [&a, &b].iter().map(|d| d.store().tier_stats().expect("tier").leftover_packs).sum();
    assert!(leftovers >= 1);
    // Nothing was lost: both read every chunk back.
    for conn in &conns {
        for c in &chunks {
            let (status, body) = get(conn, c).await;
            assert_eq!(status, Status::Ok);
            assert!(body == *c);
        }
    }
    stop(a, a_stop).await;
    stop(b, b_stop).await;
    server.stop().await;
}
