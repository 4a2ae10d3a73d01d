//! Scrub across in-process block daemons over QUIC with mutual TLS: a corrupt record, a
//! segment deleted while the daemon runs and while it is down, a repair from S3, a chunk
//! corrupt everywhere, and segments evicted to S3.

mod common;

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use blockd::s3::test_server::{AK, BUCKET, S3Server, SK};
use blockd::{Blockd, RecordLocation, S3Options, ScrubOptions, ScrubReport, scan_records, verify_store};
use cluster::Shutdown;
use cluster::tls::{Ca, Role};
use common::fake_metad::FakeMetad;
use common::*;
use proto::ChunkHash;
use proto::chunk_frame::{Request, Status};

/// 40 distinct chunks of 64 KiB: three segments of 1 MiB (15 records fill one).
const CHUNKS: u32 = 40;
const CHUNK_LEN: usize = 64 * 1024;

fn content(i: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(CHUNK_LEN);
    let mut x = u64::from(i).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while out.len() < CHUNK_LEN {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(CHUNK_LEN);
    out
}

fn all_chunks() -> Vec<Vec<u8>> {
    (0..CHUNKS).map(content).collect()
}

async fn daemon(ca: &Ca, dir: &Path, metad: &str) -> (Blockd, Shutdown) {
    daemon_scrubbing(ca, dir, metad, ScrubOptions { interval: None, max_bytes_per_sec: 0 }).await
}

async fn daemon_scrubbing(ca: &Ca, dir: &Path, metad: &str, scrub: ScrubOptions) -> (Blockd, Shutdown) {
    let mut opts = options(ca, dir);
    opts.metad_endpoints = vec![metad.to_string()];
    opts.scrub = scrub;
    start(opts).await
}

/// Three daemons known live to a fake metad, every chunk put to each of them.
struct Three {
    ca: Ca,
    fake: FakeMetad,
    url: String,
    dirs: Vec<tempfile::TempDir>,
    daemons: Vec<(Blockd, Shutdown)>,
    chunks: Vec<Vec<u8>>,
    gateway: quinn::Endpoint,
}

impl Three {
    async fn start() -> Three {
        Three::start_with(ScrubOptions { interval: None, max_bytes_per_sec: 0 }).await
    }

    /// With `scrub` as the first daemon's (A's) scrub options.
    async fn start_with(scrub: ScrubOptions) -> Three {
        let ca = Ca::generate().expect("ca");
        let fake = FakeMetad::default();
        fake.state.lock().expect("lock").rf = 3;
        let url = fake.serve().await;
        let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().expect("tempdir")).collect();
        let mut daemons = Vec::new();
        for (i, d) in dirs.iter().enumerate() {
            let opts = if i == 0 { scrub.clone() } else { ScrubOptions { interval: None, max_bytes_per_sec: 0 } };
            let (b, s) = daemon_scrubbing(&ca, d.path(), &url, opts).await;
            fake.set(b.id(), b.local_addr(), true);
            daemons.push((b, s));
        }
        let gateway = client(&ca.anchor(), Some(&issue(&ca, Role::Gateway)));
        let chunks = all_chunks();
        for (b, _) in &daemons {
            let conn = connect(&gateway, b.local_addr()).await;
            for c in &chunks {
                assert_eq!(put(&conn, c).await, Status::Ok);
            }
        }
        Three { ca, fake, url, dirs, daemons, chunks, gateway }
    }

    fn a(&self) -> &Blockd {
        &self.daemons[0].0
    }

    fn dir(&self, i: usize) -> &Path {
        self.dirs[i].path()
    }

    async fn conn(&self, i: usize) -> quinn::Connection {
        connect(&self.gateway, self.daemons[i].0.local_addr()).await
    }

    async fn stop(self) {
        for (b, s) in self.daemons {
            stop(b, s).await;
        }
    }
}

async fn get(conn: &quinn::Connection, hash: ChunkHash) -> (Status, Vec<u8>) {
    call(conn, &Request::Get { hash }).await
}

/// Every chunk is served with its exact bytes and reported held.
async fn assert_serves_all(conn: &quinn::Connection, chunks: &[Vec<u8>]) {
    for (i, c) in chunks.iter().enumerate() {
        let (status, body) = get(conn, hash_of(c)).await;
        assert_eq!(status, Status::Ok, "chunk {i}");
        assert!(body == *c, "chunk {i} came back with other bytes");
    }
    let hashes: Vec<ChunkHash> = chunks.iter().map(|c| hash_of(c)).collect();
    assert!(has(conn, &hashes).await.iter().all(|h| *h), "every chunk is held");
}

fn segment_path(dir: &Path, id: u32) -> PathBuf {
    dir.join("segments").join(format!("seg-{id:08}.tsg"))
}

fn record_of(dir: &Path, hash: &ChunkHash) -> RecordLocation {
    scan_records(dir).expect("scan").into_iter().find(|r| r.hash == *hash).expect("record of the chunk")
}

/// Flips one byte of a record's chunk data on disk.
fn flip(rec: &RecordLocation) {
    let f = std::fs::OpenOptions::new().read(true).write(true).open(&rec.segment).expect("open segment");
    let at = rec.data_offset + u64::from(rec.len) / 2;
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).expect("read");
    b[0] ^= 0x5A;
    f.write_all_at(&b, at).expect("write");
    f.sync_all().expect("sync");
}

fn assert_clean(dir: &Path, records: u64) {
    let v = verify_store(dir).expect("verify");
    assert!(v.corrupt.is_empty(), "corrupt records left: {:?}", v.corrupt);
    assert_eq!(v.records, records);
}

#[tokio::test]
async fn a_flipped_byte_is_refused_then_repaired_from_a_peer() {
    let t = Three::start().await;
    let a = t.conn(0).await;
    let victim = t.chunks[7].clone();
    let h = hash_of(&victim);
    let before = t.a().store().stats();
    flip(&record_of(t.dir(0), &h));

    assert_eq!(get(&a, h).await.0, Status::Corrupt, "a corrupt copy is refused, never served");
    assert_eq!(has(&a, &[h]).await, vec![false], "a copy known corrupt is not reported held");

    let r = t.a().scrub_pass().await.expect("scrub");
    let expected = ScrubReport {
        checked: u64::from(CHUNKS),
        bytes_checked: u64::from(CHUNKS - 1) * CHUNK_LEN as u64,
        corrupt: 1,
        missing: 0,
        repaired: 1,
        unrepairable: 0,
    };
    assert_eq!(r, expected);
    // The new copy was appended and the old record healed in place: every record verifies.
    assert_clean(t.dir(0), u64::from(CHUNKS) + 1);
    assert_serves_all(&a, &t.chunks).await;
    let after = t.a().store().stats();
    assert_eq!((after.chunks, after.bytes), (before.chunks, before.bytes), "a rewrite is not counted twice");
    // A second pass finds nothing.
    let again = t.a().scrub_pass().await.expect("scrub");
    assert_eq!((again.checked, again.corrupt, again.repaired), (u64::from(CHUNKS), 0, 0));
    t.stop().await;
}

#[tokio::test]
async fn a_segment_deleted_while_running_is_found_and_refilled() {
    let t = Three::start().await;
    let a = t.conn(0).await;
    let seg = segment_path(t.dir(0), 1);
    let lost: Vec<ChunkHash> =
        scan_records(t.dir(0)).expect("scan").into_iter().filter(|r| r.segment == seg).map(|r| r.hash).collect();
    assert!(lost.len() > 10, "segment 1 holds {} records", lost.len());
    // Read one first, so the store caches a handle that outlives the unlink.
    assert_eq!(get(&a, lost[0]).await.0, Status::Ok);
    std::fs::remove_file(&seg).expect("delete segment");
    // Whatever a read answers now, it is never wrong bytes.
    let (status, body) = get(&a, lost[0]).await;
    assert!(status != Status::Ok || hash_of(&body) == lost[0]);

    let r = t.a().scrub_pass().await.expect("scrub");
    assert_eq!(r.missing, lost.len() as u64, "{r:?}");
    assert_eq!((r.repaired, r.corrupt, r.unrepairable), (lost.len() as u64, 0, 0), "{r:?}");
    assert_eq!(r.checked, u64::from(CHUNKS));
    assert_clean(t.dir(0), u64::from(CHUNKS));
    assert_serves_all(&a, &t.chunks).await;
    // Emptied, the segment was retired: an empty header-only file in its place.
    assert_eq!(std::fs::metadata(&seg).expect("segment 1 recreated").len(), 32);
    // Puts still work.
    let extra = content(1000);
    assert_eq!(put(&a, &extra).await, Status::Ok);
    assert_eq!(get(&a, hash_of(&extra)).await, (Status::Ok, extra));
    let again = t.a().scrub_pass().await.expect("scrub");
    assert_eq!((again.missing, again.repaired, again.checked), (0, 0, u64::from(CHUNKS) + 1));
    t.stop().await;
}

#[tokio::test]
async fn a_segment_deleted_while_down_does_not_stop_the_start_and_is_refilled() {
    let mut t = Three::start().await;
    let seg = segment_path(t.dir(0), 2);
    let lost: Vec<ChunkHash> =
        scan_records(t.dir(0)).expect("scan").into_iter().filter(|r| r.segment == seg).map(|r| r.hash).collect();
    assert!(lost.len() > 10);
    let (a, a_stop) = t.daemons.remove(0);
    let id = a.id();
    stop(a, a_stop).await;
    std::fs::remove_file(&seg).expect("delete segment");

    let restarted = daemon(&t.ca, t.dir(0), &t.url).await;
    assert_eq!(restarted.0.id(), id);
    t.fake.set(id, restarted.0.local_addr(), true);
    t.daemons.insert(0, restarted);
    let a = t.conn(0).await;
    // Every other chunk is served; the lost ones are not reported held and not served.
    let held = has(&a, &t.chunks.iter().map(|c| hash_of(c)).collect::<Vec<_>>()).await;
    for (c, held) in t.chunks.iter().zip(held) {
        let h = hash_of(c);
        let is_lost = lost.contains(&h);
        assert_eq!(held, !is_lost);
        let (status, body) = get(&a, h).await;
        if is_lost {
            assert_ne!(status, Status::Ok);
        } else {
            assert_eq!((status, &body), (Status::Ok, c));
        }
    }

    let r = t.a().scrub_pass().await.expect("scrub");
    assert_eq!((r.missing, r.repaired, r.unrepairable, r.corrupt), (lost.len() as u64, lost.len() as u64, 0, 0));
    assert_clean(t.dir(0), u64::from(CHUNKS));
    assert_serves_all(&a, &t.chunks).await;

    // The repair is durable: after another restart everything is held and served.
    let (a_daemon, a_stop) = t.daemons.remove(0);
    stop(a_daemon, a_stop).await;
    let restarted = daemon(&t.ca, t.dir(0), &t.url).await;
    t.fake.set(id, restarted.0.local_addr(), true);
    t.daemons.insert(0, restarted);
    assert_serves_all(&t.conn(0).await, &t.chunks).await;
    let again = t.a().scrub_pass().await.expect("scrub");
    assert_eq!((again.missing, again.corrupt, again.checked), (0, 0, u64::from(CHUNKS)));
    t.stop().await;
}

#[tokio::test]
async fn a_chunk_corrupt_everywhere_is_unrepairable_and_nothing_else_changes() {
    let t = Three::start().await;
    let h = hash_of(&t.chunks[3]);
    for i in 0..3 {
        flip(&record_of(t.dir(i), &h));
    }
    let peers_before: Vec<_> = (1..3).map(|i| verify_store(t.dir(i)).expect("verify")).collect();
    let stats_before = t.a().store().stats();

    let r = t.a().scrub_pass().await.expect("scrub");
    assert_eq!((r.corrupt, r.unrepairable, r.repaired, r.missing), (1, 1, 0, 0));
    assert_eq!(r.checked, u64::from(CHUNKS));
    // Nothing was written anywhere.
    for (i, before) in (1..3).zip(&peers_before) {
        assert_eq!(&verify_store(t.dir(i)).expect("verify"), before);
    }
    let v = verify_store(t.dir(0)).expect("verify");
    assert_eq!((v.records, v.corrupt.len()), (u64::from(CHUNKS), 1));
    let stats = t.a().store().stats();
    assert_eq!((stats.chunks, stats.bytes), (stats_before.chunks, stats_before.bytes));
    // The daemon keeps serving: the bad chunk is refused, the rest served, puts work.
    let a = t.conn(0).await;
    assert_eq!(get(&a, h).await.0, Status::Corrupt);
    let others: Vec<Vec<u8>> = t.chunks.iter().filter(|c| hash_of(c) != h).cloned().collect();
    assert_serves_all(&a, &others).await;
    let extra = content(2000);
    assert_eq!(put(&a, &extra).await, Status::Ok);
    // Once a good copy exists again (a gateway re-writes it), a PUT heals it at once.
    assert_eq!(put(&a, &t.chunks[3]).await, Status::Ok);
    assert_eq!(get(&a, h).await, (Status::Ok, t.chunks[3].clone()));
    t.stop().await;
}

#[tokio::test]
async fn the_background_loop_repairs_without_being_asked() {
    let t = Three::start_with(ScrubOptions { interval: Some(Duration::from_millis(50)), max_bytes_per_sec: 0 }).await;
    let h = hash_of(&t.chunks[11]);
    flip(&record_of(t.dir(0), &h));
    let a = t.conn(0).await;
    let end = Instant::now() + DEADLINE;
    loop {
        let (status, body) = get(&a, h).await;
        if status == Status::Ok {
            assert!(body == t.chunks[11]);
            break;
        }
        assert_eq!(status, Status::Corrupt);
        assert!(Instant::now() < end, "no background scrub pass repaired the chunk");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    t.stop().await;
}

fn s3_options(addr: std::net::SocketAddr, bound: u64) -> S3Options {
    let mut o = S3Options::new(Some(format!("http://{addr}")), BUCKET, "us-east-1", AK, SK, "scrub-test");
    o.local_bound_bytes = bound;
    o.read_timeout = Duration::from_secs(5);
    o.min_backoff = Duration::from_millis(20);
    o.max_backoff = Duration::from_millis(200);
    o.scan_interval = Duration::from_millis(20);
    o
}

/// One daemon with an S3 tier and no peers, holding every chunk.
async fn with_s3(ca: &Ca, dir: &Path, s3: S3Options) -> (Blockd, Shutdown) {
    cluster::tls::install_crypto_provider();
    let shutdown = Shutdown::new();
    let b = Blockd::start_with_tier(options(ca, dir), Some(s3), shutdown.clone()).await.expect("start");
    let gateway = client(&ca.anchor(), Some(&issue(ca, Role::Gateway)));
    let conn = connect(&gateway, b.local_addr()).await;
    for c in &all_chunks() {
        assert_eq!(put(&conn, c).await, Status::Ok);
    }
    (b, shutdown)
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_chunk_no_peer_holds_is_repaired_from_its_s3_pack() {
    let ca = Ca::generate().expect("ca");
    let (s3dir, dir) = (tempfile::tempdir().expect("tmp"), tempfile::tempdir().expect("tmp"));
    let server = S3Server::start(s3dir.path(), "127.0.0.1:0".parse().expect("addr")).await;
    let (b, shutdown) = with_s3(&ca, dir.path(), s3_options(server.addr, 1 << 40)).await;
    let store = b.store();
    wait_until("segments 1 and 2 uploaded", || store.tier_stats().is_some_and(|s| s.uploaded_packs >= 2)).await;
    let victim = scan_records(dir.path())
        .expect("scan")
        .into_iter()
        .find(|r| r.segment == segment_path(dir.path(), 1))
        .expect("a record of segment 1");
    flip(&victim);

    let r = b.scrub_pass().await.expect("scrub");
    assert_eq!((r.corrupt, r.repaired, r.unrepairable, r.missing), (1, 1, 0, 0), "{r:?}");
    assert_clean(dir.path(), u64::from(CHUNKS) + 1);
    let (store, h) = (b.store(), victim.hash);
    let got = tokio::task::spawn_blocking(move || store.get(&h)).await.expect("join").expect("get");
    assert_eq!(hash_of(&got), victim.hash);
    stop(b, shutdown).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_of_segments_evicted_to_s3_are_skipped_not_missing() {
    let ca = Ca::generate().expect("ca");
    let (s3dir, dir) = (tempfile::tempdir().expect("tmp"), tempfile::tempdir().expect("tmp"));
    let server = S3Server::start(s3dir.path(), "127.0.0.1:0".parse().expect("addr")).await;
    // A bound of one segment: both sealed segments are evicted once uploaded.
    let (b, shutdown) = with_s3(&ca, dir.path(), s3_options(server.addr, 1 << 20)).await;
    let store = b.store();
    wait_until("two segments evicted", || store.tier_stats().is_some_and(|s| s.evicted_segments >= 2)).await;
    let local = verify_store(dir.path()).expect("verify").records;
    assert!(local < u64::from(CHUNKS));

    let r = b.scrub_pass().await.expect("scrub");
    assert_eq!((r.missing, r.corrupt, r.unrepairable), (0, 0, 0), "{r:?}");
    assert_eq!(r.checked, local, "only chunks in local segments are checked");
    stop(b, shutdown).await;
    server.stop().await;
}
