//! Engine behaviour against the in-memory fakes: the write path, flush widening and dedup,
//! failure handling, back-pressure and the read path.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use proptest::prelude::*;
use proto::{ChunkHash, FileHandle, FsError, pb};

use super::chunker::{ChunkerParams, chunk_and_hash};
use super::fakes::{FakeChunks, FakeMeta, root};
use super::{Engine, EngineOptions};
use crate::vfs::{Stability, Vfs};

pub(super) type TestEngine = Arc<Engine<FakeMeta, FakeChunks>>;

/// The caller of most tests: not the owner of the fakes' files (uid 0).
pub(super) fn cred() -> pb::Cred {
    pb::Cred { uid: 1000, gid: 1000, gids: vec![4, 5] }
}

const MIN: u32 = 64;
const AVG: u32 = 256;
const MAX: u32 = 1024;

pub(super) fn options() -> EngineOptions {
    EngineOptions {
        metad_endpoints: Vec::new(),
        metad_tls: cluster::grpc_tls::ClientTls::plaintext(),
        blockd: super::BlockdSource::Static("127.0.0.1:1".parse().expect("addr")),
        replication: super::ReplicationOptions::default(),
        client_identity: None,
        blockd_trust: Vec::new(),
        chunk_min_bytes: MIN,
        chunk_avg_bytes: AVG,
        chunk_max_bytes: MAX,
        write_buffer_bytes: 1 << 20,
        cache_bytes: 1 << 20,
        // Long enough that the idle flusher never runs unless a test asks for it.
        flush_idle: Duration::from_secs(3600),
        local_daemon: None,
        local_metad: None,
    }
}

pub(super) struct Fixture {
    pub engine: TestEngine,
    pub meta: FakeMeta,
    pub chunks: FakeChunks,
    pub shutdown: cluster::Shutdown,
}

pub(super) fn fixture_with(opts: EngineOptions) -> Fixture {
    let meta = FakeMeta::new();
    let chunks = FakeChunks::default();
    let shutdown = cluster::Shutdown::new();
    let engine = Engine::new(meta.clone(), chunks.clone(), opts, shutdown.clone()).expect("valid options");
    Fixture { engine, meta, chunks, shutdown }
}

pub(super) fn fixture() -> Fixture {
    fixture_with(options())
}

pub(super) async fn create(engine: &TestEngine, name: &str) -> FileHandle {
    let req = pb::CreateRequest {
        dir: Some(root().into()),
        name: name.as_bytes().to_vec(),
        kind: pb::FileType::Regular as i32,
        mode: 0o644,
        ..Default::default()
    };
    let reply = engine.create(&cred(), req).await.expect("create");
    reply.attr.and_then(|a| a.node).expect("node").into()
}

/// Deterministic pseudo-random bytes (xorshift).
pub(super) fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

pub(super) async fn read_all(engine: &TestEngine, node: FileHandle, len: u64) -> Vec<u8> {
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let r = engine.read(&cred(), node, offset, 7_000).await.expect("read");
        out.extend_from_slice(&r.data);
        offset += r.data.len() as u64;
        if r.eof {
            break;
        }
        assert!(!r.data.is_empty(), "short read without eof");
    }
    assert_eq!(out.len() as u64, len);
    out
}

async fn write_in_pieces(engine: &TestEngine, node: FileHandle, bytes: &[u8], piece: usize, stable: Stability) {
    for (i, p) in bytes.chunks(piece).enumerate() {
        let r =
            engine.write(&cred(), node, (i * piece) as u64, Bytes::copy_from_slice(p), stable).await.expect("write");
        assert_eq!(r.after.size, ((i * piece) + p.len()) as u64);
    }
}

/// Asserts committed extents tile `[0, size)` exactly with whole chunks.
fn assert_tiled(meta: &FakeMeta, ino: u64, size: u64) {
    let mut next = 0;
    for e in meta.extents(ino) {
        assert_eq!(e.offset, next, "extents must tile the file");
        assert_eq!(e.chunk_offset, 0);
        assert_eq!(e.chunk_length, e.length);
        next += e.length;
    }
    assert_eq!(next, size);
}

/// Asserts committed extents are ascending, non-overlapping, whole chunks within the size.
fn assert_well_formed(meta: &FakeMeta, ino: u64, size: u64) {
    let mut next = 0;
    for e in meta.extents(ino) {
        assert!(e.offset >= next, "extents must not overlap");
        assert_eq!((e.chunk_offset, e.chunk_length), (0, e.length));
        next = e.offset + e.length;
    }
    assert!(next <= size);
    assert_eq!(meta.size(ino), Some(size));
}

#[tokio::test]
async fn unstable_writes_are_readable_at_once_and_durable_after_commit() {
    let f = fixture();
    let node = create(&f.engine, "a").await;
    let bytes = data(20_000, 1);
    write_in_pieces(&f.engine, node, &bytes, 3_000, Stability::Unstable).await;
    // Nothing reached metad yet, but the gateway shows the writes.
    assert_eq!(f.meta.size(node.ino), Some(0));
    assert_eq!(f.engine.getattr(node).await.expect("getattr").size, 20_000);
    assert_eq!(read_all(&f.engine, node, 20_000).await, bytes);

    let attr = f.engine.commit(&cred(), node).await.expect("commit");
    assert_eq!(attr.size, 20_000);
    assert_eq!(f.meta.size(node.ino), Some(20_000));
    assert_tiled(&f.meta, node.ino, 20_000);
    assert_eq!(read_all(&f.engine, node, 20_000).await, bytes);
}

#[tokio::test]
async fn file_sync_writes_are_committed_before_the_reply() {
    let f = fixture();
    let node = create(&f.engine, "a").await;
    let bytes = data(5_000, 2);
    let r = f.engine.write(&cred(), node, 0, Bytes::from(bytes.clone()), Stability::FileSync).await.expect("write");
    assert_eq!(r.committed, Stability::FileSync);
    assert_eq!(r.before.size, 0);
    assert_eq!(r.after.size, 5_000);
    assert_eq!(f.meta.size(node.ino), Some(5_000));
    assert_tiled(&f.meta, node.ino, 5_000);
    let r =
        f.engine.write(&cred(), node, 5_000, Bytes::from_static(b"tail"), Stability::DataSync).await.expect("write");
    assert_eq!(r.committed, Stability::FileSync);
    assert_eq!(f.meta.size(node.ino), Some(5_004));
}

/// A READ here while a FILE_SYNC write's commit is in flight does not return the new bytes:
/// a READ through another gateway, made after it, could not see them yet.
#[tokio::test]
async fn a_stable_write_is_not_read_here_before_it_is_committed() {
    let f = fixture();
    let node = create(&f.engine, "a").await;
    let (old, new) = (data(4_096, 1), data(4_096, 2));
    f.engine.write(&cred(), node, 0, Bytes::from(old.clone()), Stability::FileSync).await.expect("write");
    let held = f.meta.0.commit_gate.write().await;
    let e = f.engine.clone();
    let bytes = Bytes::from(new.clone());
    let writer = tokio::spawn(async move { e.write(&cred(), node, 0, bytes, Stability::FileSync).await });
    f.meta.0.commit_arrived.notified().await;
    let e = f.engine.clone();
    let mut reader = tokio::spawn(async move { read_all(&e, node, 4_096).await });
    // The read may wait for the commit; if it answers meanwhile, it is the committed state.
    let early = tokio::time::timeout(Duration::from_millis(100), &mut reader).await.ok();
    drop(held);
    writer.await.expect("writer").expect("write");
    match early {
        Some(r) => assert_eq!(r.expect("reader"), old, "a read returned a stable write before its commit"),
        None => assert_eq!(reader.await.expect("reader"), new, "a read that waited for the commit sees it"),
    }
    assert_eq!(read_all(&f.engine, node, 4_096).await, new);
}

#[tokio::test]
async fn overwrite_in_the_middle_reads_back_the_new_bytes() {
    let f = fixture();
    let node = create(&f.engine, "a").await;
    let mut model = data(10_000, 3);
    f.engine.write(&cred(), node, 0, Bytes::from(model.clone()), Stability::FileSync).await.expect("write");
    let patch = data(500, 4);
    f.engine.write(&cred(), node, 4_000, Bytes::from(patch.clone()), Stability::Unstable).await.expect("write");
    model[4_000..4_500].copy_from_slice(&patch);
    assert_eq!(read_all(&f.engine, node, 10_000).await, model, "read-your-writes over committed data");
    f.engine.commit(&cred(), node).await.expect("commit");
    assert_eq!(read_all(&f.engine, node, 10_000).await, model);
    assert_tiled(&f.meta, node.ino, 10_000);
}

#[tokio::test]
async fn a_sparse_write_leaves_zeros_before_it() {
    let f = fixture();
    let node = create(&f.engine, "a").await;
    f.engine.write(&cred(), node, 5_000, Bytes::from_static(b"hello"), Stability::Unstable).await.expect("write");
    f.engine.commit(&cred(), node).await.expect("commit");
    assert_eq!(f.engine.getattr(node).await.expect("getattr").size, 5_005);
    let got = read_all(&f.engine, node, 5_005).await;
    assert!(got[..5_000].iter().all(|b| *b == 0));
    assert_eq!(&got[5_000..], b"hello");
    let r = f.engine.read(&cred(), node, 5_005, 10).await.expect("read at eof");
    assert!(r.eof && r.data.is_empty());
}

#[tokio::test]
async fn identical_content_in_a_second_file_stores_no_new_chunk() {
    let f = fixture();
    let bytes = data(30_000, 5);
    let a = create(&f.engine, "a").await;
    write_in_pieces(&f.engine, a, &bytes, 4_096, Stability::FileSync).await;
    let puts = f.chunks.puts();
    assert!(puts > 0);
    assert_eq!(f.chunks.gets(), 0, "sequential flushes re-chunk the tail without fetching it back");
    let b = create(&f.engine, "b").await;
    // Other write sizes, flushed differently: still the same chunks.
    write_in_pieces(&f.engine, b, &bytes, 7_777, Stability::Unstable).await;
    f.engine.commit(&cred(), b).await.expect("commit");
    assert_eq!(f.chunks.puts(), puts, "the second copy must deduplicate completely");
    let hashes = |ino| f.meta.extents(ino).into_iter().map(|e| e.hash).collect::<Vec<_>>();
    assert_eq!(hashes(a.ino), hashes(b.ino));
    assert_eq!(read_all(&f.engine, b, 30_000).await, bytes);
}

#[tokio::test]
async fn reads_of_deduplicated_content_are_cached_once() {
    let f = fixture();
    let bytes = data(8_000, 6);
    let a = create(&f.engine, "a").await;
    let b = create(&f.engine, "b").await;
    f.engine.write(&cred(), a, 0, Bytes::from(bytes.clone()), Stability::FileSync).await.expect("write");
    f.engine.write(&cred(), b, 0, Bytes::from(bytes.clone()), Stability::FileSync).await.expect("write");
    assert_eq!(f.chunks.gets(), 0, "the write path does not read chunks it did not need");
    read_all(&f.engine, a, 8_000).await;
    let gets = f.chunks.gets();
    assert!(gets > 0);
    assert_eq!(read_all(&f.engine, b, 8_000).await, bytes);
    assert_eq!(f.chunks.gets(), gets, "file b is served from the cache filled by file a");
}

#[tokio::test]
async fn a_failed_flush_changes_the_verifier_and_drops_the_data() {
    let f = fixture();
    let node = create(&f.engine, "a").await;
    let bytes = data(6_000, 7);
    let v0 = f.engine.write_verifier();
    f.engine.write(&cred(), node, 0, Bytes::from(bytes.clone()), Stability::Unstable).await.expect("write");
    f.chunks.0.fail_puts.store(true, Ordering::SeqCst);
    let err = f.engine.commit(&cred(), node).await;
    assert!(matches!(err, Err(FsError::Unavailable(_))), "{err:?}");
    let v1 = f.engine.write_verifier();
    assert_ne!(v0, v1, "clients must resend after a lost flush");
    assert_eq!(
        read_all(&f.engine, node, 0).await,
        Vec::<u8>::new(),
        "the data is dropped: a later flush must not overwrite what the client writes elsewhere"
    );
    f.chunks.0.fail_puts.store(false, Ordering::SeqCst);
    f.engine.commit(&cred(), node).await.expect("nothing left to flush");
    assert_eq!(f.meta.size(node.ino), Some(0), "nothing was flushed behind the client's back");

    // metad failing is handled the same way.
    f.meta.0.fail_commits.store(true, Ordering::SeqCst);
    f.engine.write(&cred(), node, 0, Bytes::from(bytes.clone()), Stability::Unstable).await.expect("resend");
    assert!(f.engine.commit(&cred(), node).await.is_err());
    let v2 = f.engine.write_verifier();
    assert_ne!(v1, v2);

    f.meta.0.fail_commits.store(false, Ordering::SeqCst);
    // The client sees the new verifier in the COMMIT reply and resends.
    f.engine.write(&cred(), node, 0, Bytes::from(bytes.clone()), Stability::Unstable).await.expect("resend again");
    f.engine.commit(&cred(), node).await.expect("commit after recovery");
    assert_eq!(f.engine.write_verifier(), v2, "a successful flush keeps the verifier");
    assert_eq!(f.meta.size(node.ino), Some(6_000));
    assert_eq!(read_all(&f.engine, node, 6_000).await, bytes);
}

/// Per-file write fencing: when another gateway has taken the file's write lease, this
/// gateway's flush is refused; it drops everything it buffered for the file (which may be
/// older than what was written there) and changes the verifier, so its clients resend; the
/// next WRITE takes the lease back and commits.
#[tokio::test]
async fn a_flush_fenced_by_another_gateway_drops_the_files_data_and_changes_the_verifier() {
    let f = fixture();
    let node = create(&f.engine, "a").await;
    let old = data(6_000, 8);
    let w = f.engine.write(&cred(), node, 0, Bytes::from(old.clone()), Stability::Unstable).await.expect("write");
    assert_eq!(f.meta.0.lease_calls.load(Ordering::SeqCst), 0, "the creating gateway holds a new file's lease");
    f.meta.take_lease(node.ino, 0xb);
    let err = f.engine.commit(&cred(), node).await;
    assert!(matches!(err, Err(FsError::Fenced)), "{err:?}");
    assert_ne!(f.engine.write_verifier(), w.verifier, "the client is told to resend");
    assert_eq!(f.meta.size(node.ino), Some(0), "nothing of the fenced data was committed");
    assert_eq!(read_all(&f.engine, node, 0).await, Vec::<u8>::new(), "nor is it served from the buffer");

    // The resend takes the lease back (one AcquireWriteLease) and commits.
    let new = data(6_000, 9);
    let w = f.engine.write(&cred(), node, 0, Bytes::from(new.clone()), Stability::Unstable).await.expect("resend");
    assert_eq!(w.verifier, f.engine.write_verifier());
    f.engine.commit(&cred(), node).await.expect("commit under the new lease");
    assert_eq!(f.meta.0.lease_calls.load(Ordering::SeqCst), 1);
    assert_eq!(read_all(&f.engine, node, 6_000).await, new);

    // A FILE_SYNC write after another gateway took the lease: answered "try again"
    // (JUKEBOX) having committed nothing, if this gateway still trusted its lease (it was
    // confirmed moments ago); or, if it checked the lease first, done under a new one.
    f.meta.take_lease(node.ino, 0xb);
    match f.engine.write(&cred(), node, 0, Bytes::from(old.clone()), Stability::FileSync).await {
        Err(FsError::Fenced) => {
            assert_eq!(read_all(&f.engine, node, 6_000).await, new);
            f.engine.write(&cred(), node, 0, Bytes::from(old.clone()), Stability::FileSync).await.expect("retry");
        }
        other => assert_eq!(other.expect("write").committed, Stability::FileSync),
    }
    assert_eq!(read_all(&f.engine, node, 6_000).await, old);
    assert_eq!(f.meta.0.lease_calls.load(Ordering::SeqCst), 2);
}

/// Another gateway truncates a file this one has buffered writes for: the truncation
/// takes the file's lease, so those writes are not committed over it afterwards (the
/// client is told to resend them), and the truncating gateway writes on without taking
/// the lease again.
#[tokio::test]
async fn a_truncation_through_another_gateway_fences_the_writes_buffered_before_it() {
    let f = fixture();
    let other = Engine::new(f.meta.clone(), f.chunks.clone(), options(), f.shutdown.clone()).expect("engine");
    let node = create(&f.engine, "t").await;
    let w = f.engine.write(&cred(), node, 0, Bytes::from(data(6_000, 1)), Stability::Unstable).await.expect("write");
    let truncate = pb::SetAttrRequest { node: Some(node.into()), size: Some(0), ..Default::default() };
    other.setattr(&cred(), truncate).await.expect("truncate");
    assert!(matches!(f.engine.commit(&cred(), node).await, Err(FsError::Fenced)));
    assert_ne!(f.engine.write_verifier(), w.verifier, "the client is told to resend");
    assert_eq!(f.meta.size(node.ino), Some(0), "the truncation stands");
    assert!(f.meta.extents(node.ino).is_empty());

    let leases = f.meta.0.lease_calls.load(Ordering::SeqCst);
    let new = data(4_000, 2);
    other.write(&cred(), node, 0, Bytes::from(new.clone()), Stability::FileSync).await.expect("write after truncating");
    assert_eq!(f.meta.0.lease_calls.load(Ordering::SeqCst), leases, "the truncation brought the lease with it");
    assert_eq!(read_all(&f.engine, node, 4_000).await, new);
}

/// Many WRITEs in flight that find the file's lease due for a check take it once, not once
/// each (a Raft write apiece).
#[tokio::test]
async fn concurrent_writes_share_one_lease_acquisition() {
    let f = fixture();
    let node = create(&f.engine, "w").await;
    f.meta.take_lease(node.ino, 0xb);
    f.meta.0.slow_leases.store(true, Ordering::SeqCst);
    let file = f.engine.files.get_or_insert(node);
    super::lock(&file.inner).lease = None;
    let c = cred();
    let writes = (0..8u64).map(|i| {
        f.engine.write(&c, node, i * 1_000, Bytes::from(data(1_000, i)), Stability::Unstable)
    });
    for w in futures::future::join_all(writes).await {
        w.expect("write");
    }
    assert_eq!(f.meta.0.lease_calls.load(Ordering::SeqCst), 1, "one acquisition for eight WRITEs");
    f.engine.commit(&cred(), node).await.expect("commit under the lease taken");
    assert_eq!(f.meta.size(node.ino), Some(8_000));
}

/// A FILE_SYNC write whose data another flush took (a COMMIT or background flush already
/// running when it arrived) and lost is not acknowledged: its own flush then finds nothing
/// to do, but the data was dropped, not made durable.
#[tokio::test]
async fn a_stable_write_dropped_by_another_failed_flush_is_not_acknowledged() {
    let f = fixture();
    let node = create(&f.engine, "a").await;
    let file = f.engine.files.get_or_insert(node);
    let running = file.flush_lock.lock().await;
    let e = f.engine.clone();
    let writer =
        tokio::spawn(async move { e.write(&cred(), node, 0, Bytes::from(data(3_000, 4)), Stability::FileSync).await });
    // The write is buffered and waits for the flush lock the "running flush" holds.
    let deadline = Instant::now() + Duration::from_secs(10);
    while f.engine.files.buffered_end(&node).is_none() {
        assert!(Instant::now() < deadline, "the write never reached the buffer");
        tokio::task::yield_now().await;
    }
    f.chunks.0.fail_puts.store(true, Ordering::SeqCst);
    assert!(f.engine.flush_locked(node, &file).await.is_err(), "the running flush fails and drops the data");
    f.chunks.0.fail_puts.store(false, Ordering::SeqCst);
    drop(running);
    let r = writer.await.expect("writer");
    assert!(r.is_err(), "a FILE_SYNC write was acknowledged whose data was dropped: {:?}", r.map(|w| w.committed));
    assert_eq!(f.meta.size(node.ino), Some(0));
}

/// A WRITE's reply carries the verifier its data was buffered under: if a failed flush
/// drops the data and changes the verifier as the write is answered, the COMMIT still
/// differs from what the write said.
#[tokio::test]
async fn a_write_reply_names_the_verifier_its_data_was_buffered_under() {
    let f = fixture();
    let node = create(&f.engine, "a").await;
    let w = f.engine.write(&cred(), node, 0, Bytes::from(data(100, 1)), Stability::Unstable).await.expect("write");
    assert_eq!(w.verifier, f.engine.write_verifier());
    f.chunks.0.fail_puts.store(true, Ordering::SeqCst);
    assert!(f.engine.commit(&cred(), node).await.is_err());
    assert_ne!(f.engine.write_verifier(), w.verifier);
}

#[tokio::test]
async fn a_removed_file_drops_its_buffer_without_changing_the_verifier() {
    let f = fixture();
    let node = create(&f.engine, "a").await;
    f.engine.write(&cred(), node, 0, Bytes::from(data(3_000, 8)), Stability::Unstable).await.expect("write");
    let v0 = f.engine.write_verifier();
    f.engine.remove(&cred(), root(), b"a", false).await.expect("remove");
    assert_eq!(f.engine.commit(&cred(), node).await.err(), Some(FsError::Stale));
    assert_eq!(f.engine.write_verifier(), v0);
    assert_eq!(f.engine.files.buffered_end(&node), None);
    assert_eq!(f.engine.budget.available(), f.engine.budget.capacity(), "its budget is returned");
    f.engine.flush_all().await.expect("nothing left to flush");
}

#[tokio::test]
async fn a_small_budget_applies_back_pressure_and_loses_nothing() {
    let f = fixture_with(EngineOptions { write_buffer_bytes: 4_096, ..options() });
    let mut tasks = Vec::new();
    let mut expected = Vec::new();
    for i in 0..4u64 {
        let node = create(&f.engine, &format!("f{i}")).await;
        let bytes = data(40_000, 100 + i);
        expected.push((node, bytes.clone()));
        let engine = f.engine.clone();
        tasks.push(tokio::spawn(async move {
            write_in_pieces(&engine, node, &bytes, 1_000, Stability::Unstable).await;
        }));
    }
    let all = futures::future::join_all(tasks);
    let done = tokio::time::timeout(Duration::from_secs(30), all).await.expect("writers must not deadlock");
    assert!(done.iter().all(|r| r.is_ok()));
    for (node, bytes) in expected {
        f.engine.commit(&cred(), node).await.expect("commit");
        assert_eq!(f.meta.size(node.ino), Some(40_000));
        assert_eq!(read_all(&f.engine, node, 40_000).await, bytes);
    }
    assert_eq!(f.engine.budget.available(), 4_096, "every permit is returned");
}

#[tokio::test]
async fn a_corrupt_chunk_reads_as_an_io_error() {
    let f = fixture();
    let node = create(&f.engine, "a").await;
    f.engine.write(&cred(), node, 0, Bytes::from(data(3_000, 9)), Stability::FileSync).await.expect("write");
    let first = f.meta.extents(node.ino).first().cloned().expect("an extent");
    let hash = ChunkHash::from_slice(&first.hash).expect("hash");
    f.chunks.corrupt(hash);
    let r = f.engine.read(&cred(), node, 0, 100).await;
    assert!(matches!(r, Err(FsError::Io(_))), "{r:?}");
    // Nor is the bad copy cached: it fails again.
    assert!(matches!(f.engine.read(&cred(), node, 0, 100).await, Err(FsError::Io(_))));
}

#[tokio::test]
async fn idle_files_are_flushed_in_the_background() {
    let f = fixture_with(EngineOptions { flush_idle: Duration::from_millis(20), ..options() });
    let node = create(&f.engine, "a").await;
    f.engine.write(&cred(), node, 0, Bytes::from(data(2_000, 10)), Stability::Unstable).await.expect("write");
    let deadline = Instant::now() + Duration::from_secs(10);
    while f.meta.size(node.ino) != Some(2_000) {
        assert!(Instant::now() < deadline, "idle flush did not happen");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_tiled(&f.meta, node.ino, 2_000);
}

#[tokio::test]
async fn flush_all_after_shutdown_makes_everything_durable() {
    let f = fixture();
    let a = create(&f.engine, "a").await;
    let b = create(&f.engine, "b").await;
    f.engine.write(&cred(), a, 0, Bytes::from(data(1_500, 11)), Stability::Unstable).await.expect("write");
    f.engine.write(&cred(), b, 100, Bytes::from(data(2_500, 12)), Stability::Unstable).await.expect("write");
    f.shutdown.cancel();
    f.engine.flush_all().await.expect("flush_all");
    assert_eq!(f.meta.size(a.ino), Some(1_500));
    assert_eq!(f.meta.size(b.ino), Some(2_600));
}

#[tokio::test]
async fn truncation_flushes_first_and_then_shrinks() {
    let f = fixture();
    let node = create(&f.engine, "a").await;
    let bytes = data(10_000, 13);
    f.engine.write(&cred(), node, 0, Bytes::from(bytes.clone()), Stability::Unstable).await.expect("write");
    let req = pb::SetAttrRequest { node: Some(node.into()), size: Some(3_000), ..Default::default() };
    let reply = f.engine.setattr(&cred(), req).await.expect("setattr");
    assert_eq!(reply.after.map(|a| a.size), Some(3_000));
    assert_eq!(read_all(&f.engine, node, 3_000).await, bytes[..3_000]);
    // Extending again shows zeros, not the old bytes.
    f.engine.write(&cred(), node, 5_000, Bytes::from_static(b"x"), Stability::FileSync).await.expect("write");
    let got = read_all(&f.engine, node, 5_001).await;
    assert_eq!(got[..3_000], bytes[..3_000]);
    assert!(got[3_000..5_000].iter().all(|b| *b == 0));
}

#[tokio::test]
async fn writes_to_a_directory_are_refused() {
    let f = fixture();
    let r = f.engine.write(&cred(), root(), 0, Bytes::from_static(b"x"), Stability::Unstable).await;
    assert_eq!(r.err(), Some(FsError::IsDir));
    let r = f.engine.write(&cred(), root(), u64::MAX - 1, Bytes::from_static(b"xx"), Stability::Unstable).await;
    assert_eq!(r.err(), Some(FsError::TooBig));
}

#[tokio::test]
async fn metadata_calls_pass_through() {
    let f = fixture();
    assert_eq!(f.engine.exports().await.expect("exports").len(), 1);
    let share = f.engine.mount("/export").await.expect("mount");
    assert_eq!(share.root.and_then(|a| a.node).map(FileHandle::from), Some(root()));
    assert_eq!(f.engine.mount("/nope").await.err(), Some(FsError::NotFound));
    let node = create(&f.engine, "a").await;
    f.engine.write(&cred(), node, 0, Bytes::from_static(b"12345"), Stability::Unstable).await.expect("write");
    let l = f.engine.lookup(&cred(), root(), b"a").await.expect("lookup");
    assert_eq!(l.attr.map(|a| a.size), Some(5), "lookup sees buffered size");
    let d = f.engine.readdir(&cred(), root(), 0, 0, 10).await.expect("readdir");
    assert_eq!(d.entries.len(), 1);
    assert_eq!(d.entries[0].attr.as_ref().map(|a| a.size), Some(5));
    f.engine.commit(&cred(), node).await.expect("commit");
    let s = f.engine.fsstat(root()).await.expect("fsstat");
    assert_eq!(s.total_bytes - s.free_bytes, 5);
}

/// Runs `fut` on a fresh single-threaded runtime (proptest bodies are synchronous).
fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime").block_on(fut)
}

#[test]
fn bad_options_and_a_missing_runtime_are_setup_errors() {
    let err = Engine::new(FakeMeta::new(), FakeChunks::default(), options(), cluster::Shutdown::new()).err();
    assert!(matches!(err, Some(super::EngineError::NoRuntime)));
    block_on(async {
        let bad = EngineOptions { chunk_min_bytes: 2_000, ..options() };
        let err = Engine::new(FakeMeta::new(), FakeChunks::default(), bad, cluster::Shutdown::new()).err();
        assert!(matches!(err, Some(super::EngineError::ChunkSizes { .. })));
        let bad = EngineOptions { write_buffer_bytes: 0, ..options() };
        let err = Engine::new(FakeMeta::new(), FakeChunks::default(), bad, cluster::Shutdown::new()).err();
        assert!(matches!(err, Some(super::EngineError::WriteBuffer { .. })));
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Widening makes a file written sequentially, each write flushed on its own, end with
    /// exactly the chunks of chunking the whole file at once.
    #[test]
    fn sequential_flushes_chunk_like_the_whole_file(
        seed in any::<u64>(),
        sizes in proptest::collection::vec(1usize..3_000, 1..25),
    ) {
        let total: usize = sizes.iter().sum();
        let bytes = data(total, seed);
        let (got, puts_second) = block_on(async {
            let f = fixture();
            let node = create(&f.engine, "a").await;
            let mut offset = 0;
            for s in &sizes {
                let piece = Bytes::copy_from_slice(&bytes[offset..offset + s]);
                f.engine.write(&cred(), node, offset as u64, piece, Stability::FileSync).await.expect("write");
                offset += s;
            }
            assert_eq!(read_all(&f.engine, node, total as u64).await, bytes);
            let got: Vec<(u64, u64, Vec<u8>)> =
                f.meta.extents(node.ino).into_iter().map(|e| (e.offset, e.length, e.hash)).collect();
            // Writing the same content again, all at once, stores nothing new.
            let puts = f.chunks.puts();
            let other = create(&f.engine, "b").await;
            f.engine.write(&cred(), other, 0, Bytes::from(bytes.clone()), Stability::FileSync).await.expect("write");
            (got, f.chunks.puts() - puts)
        });
        let params = ChunkerParams::new(MIN, AVG, MAX).expect("params");
        let want: Vec<(u64, u64, Vec<u8>)> = chunk_and_hash(&bytes, params)
            .into_iter()
            .map(|c| (c.offset as u64, c.len as u64, c.hash.as_bytes().to_vec()))
            .collect();
        prop_assert_eq!(got, want);
        prop_assert_eq!(puts_second, 0);
    }

    /// Random writes (any offsets, overlaps, stabilities, commits) read back like a byte
    /// model, before and after the final commit, and the extents tile the file.
    #[test]
    fn random_writes_match_a_byte_model(
        ops in proptest::collection::vec((0usize..12_000, 1usize..2_500, 0u8..4), 1..30),
    ) {
        block_on(async {
            let f = fixture();
            let node = create(&f.engine, "a").await;
            let mut model: Vec<u8> = Vec::new();
            for (i, (offset, len, how)) in ops.iter().enumerate() {
                let piece = data(*len, i as u64 + 1);
                let stable = match how { 0 => Stability::FileSync, _ => Stability::Unstable };
                f.engine.write(&cred(), node, *offset as u64, Bytes::from(piece.clone()), stable).await.expect("write");
                if model.len() < offset + len {
                    model.resize(offset + len, 0);
                }
                model[*offset..offset + len].copy_from_slice(&piece);
                if *how == 3 {
                    f.engine.commit(&cred(), node).await.expect("commit");
                }
            }
            assert_eq!(read_all(&f.engine, node, model.len() as u64).await, model);
            f.engine.commit(&cred(), node).await.expect("commit");
            assert_eq!(read_all(&f.engine, node, model.len() as u64).await, model);
            assert_well_formed(&f.meta, node.ino, model.len() as u64);
        });
    }
}

#[tokio::test]
async fn sequential_reads_prefetch_and_random_reads_do_not() {
    // Cache 1 MiB: a read-ahead window of 256 KiB.
    let f = fixture();
    let node = create(&f.engine, "seq").await;
    let bytes = data(200_000, 3);
    f.engine.write(&cred(), node, 0, Bytes::from(bytes.clone()), Stability::FileSync).await.expect("write");
    let first = f.engine.read(&cred(), node, 0, 8_192).await.expect("read");
    let second = f.engine.read(&cred(), node, 8_192, 8_192).await.expect("read");
    assert_eq!([first.data, second.data].concat(), bytes[..16_384]);
    assert_eq!(f.engine.readahead.started(), 1, "the second sequential read starts a prefetch");
    tokio::time::timeout(Duration::from_secs(10), f.engine.readahead.wait_finished(1)).await.expect("prefetch ends");
    let gets = f.chunks.gets();
    let rest = f.engine.read(&cred(), node, 16_384, 200_000).await.expect("read");
    assert_eq!(rest.data, bytes[16_384..]);
    assert_eq!(f.chunks.gets(), gets, "the rest of the file came from the cache");

    let other = create(&f.engine, "random").await;
    let bytes = data(200_000, 4);
    f.engine.write(&cred(), other, 0, Bytes::from(bytes.clone()), Stability::FileSync).await.expect("write");
    for off in [150_000u64, 3_000, 90_000, 40_000, 120_000] {
        let r = f.engine.read(&cred(), other, off, 4_096).await.expect("read");
        assert_eq!(r.data, bytes[off as usize..off as usize + 4_096]);
    }
    assert_eq!(f.engine.readahead.started(), 1, "random reads start no prefetch");
}

#[tokio::test]
async fn concurrent_reads_of_one_chunk_fetch_it_once() {
    let f = fixture();
    let node = create(&f.engine, "shared").await;
    let bytes = data(300_000, 5);
    f.engine.write(&cred(), node, 0, Bytes::from(bytes.clone()), Stability::FileSync).await.expect("write");
    let chunks = f.meta.extents(node.ino).len();
    assert!(chunks > 1, "the file spans several chunks");
    f.chunks.0.slow_gets.store(true, Ordering::SeqCst);
    let gets = f.chunks.gets();
    // Four READs at once over the whole file, as a client with several in flight sends.
    let c = cred();
    let reads = (0..4).map(|_| f.engine.read(&c, node, 0, 300_000));
    for r in futures::future::join_all(reads).await {
        assert_eq!(r.expect("read").data, bytes);
    }
    assert_eq!(f.chunks.gets() - gets, chunks, "each chunk fetched once for all four READs");
}

#[tokio::test]
async fn export_options_are_cached_for_the_ttl_and_refreshed_by_mnt() {
    let f = fixture();
    let calls = || f.meta.0.list_shares_calls.load(Ordering::SeqCst);
    let share = root().share_id;
    assert!(!f.engine.export_of(share).await.expect("options").read_only);
    for _ in 0..20 {
        f.engine.export_of(share).await.expect("options");
    }
    assert_eq!(calls(), 1, "one ListShares within the TTL");
    assert!(matches!(f.engine.export_of(share + 1).await, Err(FsError::Stale)), "a share metad does not list");

    // Changed in metad: still the cached answer until a MNT (or the TTL) refreshes it.
    f.meta.0.share_read_only.store(true, Ordering::SeqCst);
    let before = calls();
    assert!(!f.engine.export_of(share).await.expect("options").read_only);
    f.engine.mount("/export").await.expect("mount");
    assert!(f.engine.export_of(share).await.expect("options").read_only, "MNT refreshed the entry");
    assert_eq!(calls(), before);

    f.meta.0.share_read_only.store(false, Ordering::SeqCst);
    f.engine.shares.age(super::shares::TTL);
    assert!(!f.engine.export_of(share).await.expect("options").read_only, "refreshed after the TTL");
    assert_eq!(calls(), before + 1);
}

/// A process stall (SIGSTOP, a VM pause) drops what was buffered and changes the verifier:
/// its clients timed out meanwhile and may have rewritten those ranges through another
/// gateway, which a late flush of the old copy would overwrite.
#[tokio::test(start_paused = true)]
async fn a_stalled_process_drops_its_buffers_and_changes_the_verifier() {
    let f = fixture();
    let node = create(&f.engine, "a").await;
    f.engine.write(&cred(), node, 0, Bytes::from(data(5_000, 3)), Stability::Unstable).await.expect("write");
    let v0 = f.engine.write_verifier();
    // Ticks that come on time change nothing.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(f.engine.write_verifier(), v0, "no stall, no change");
    assert_eq!(f.engine.files.buffered_end(&node), Some(5_000));
    // The whole runtime's clock jumps ten seconds at once: the flusher wakes late.
    tokio::time::advance(Duration::from_secs(10)).await;
    for _ in 0..100 {
        if f.engine.write_verifier() != v0 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_ne!(f.engine.write_verifier(), v0, "clients must resend what they had not committed");
    assert_eq!(f.engine.files.buffered_end(&node), None, "nothing old is flushed later");
    assert_eq!(f.engine.budget.available(), f.engine.budget.capacity());
}
