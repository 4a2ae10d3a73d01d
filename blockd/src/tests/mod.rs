//! Store behaviour tests: durability, recovery, dedup, corruption and group commit.
//!
//! They live inside the crate to reach the store's fault hooks (`store::Hooks`); the QUIC
//! server is tested through the public API in `tests/quic.rs`.

// The writer's gate is a std mutex held across awaits on purpose: it blocks the writer
// *thread* while the single-threaded test runtime queues puts.
#![allow(clippy::await_holding_lock)]

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use proto::ChunkHash;

use crate::format;
use crate::index::{Index, index_path};
use crate::segment;
use crate::{BlockdError, Chunk, PutOutcome, Store, StoreOptions, scan_records, verify_store};

fn opts(dir: &Path) -> StoreOptions {
    StoreOptions { data_dir: dir.join("blockd"), segment_bytes: 1 << 20, min_free_bytes: 0 }
}

/// Deterministic, distinct content for chunk `i`.
fn content(i: u32, len: usize) -> Bytes {
    let mut out = Vec::with_capacity(len);
    let mut x = u64::from(i).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

fn chunk(i: u32, len: usize) -> Chunk {
    Chunk::new(content(i, len)).expect("chunk within limit")
}

fn hash_of(i: u32, len: usize) -> ChunkHash {
    *chunk(i, len).hash()
}

async fn put_all(store: &Store, chunks: &[Chunk]) {
    for c in chunks {
        assert_eq!(store.put(c.clone()).await.expect("put"), PutOutcome::Stored);
    }
}

fn assert_all_readable(store: &Store, chunks: &[Chunk]) {
    for c in chunks {
        assert_eq!(&store.get(c.hash()).expect("get"), c.data(), "chunk {} differs", c.hash());
    }
}

/// Waits (with a deadline, no fixed sleeps) until `cond` holds.
async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::task::yield_now().await;
        std::thread::yield_now();
    }
}

fn segment_files(data_dir: &Path) -> Vec<PathBuf> {
    segment::list(&segment::segments_dir(data_dir)).expect("list").into_iter().map(|(_, p)| p).collect()
}

#[tokio::test]
async fn put_get_has_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(opts(dir.path())).expect("open");
    let chunks: Vec<Chunk> = (0..3).map(|i| chunk(i, 1000 + i as usize)).collect();
    put_all(&store, &chunks).await;
    assert_all_readable(&store, &chunks);
    let missing = hash_of(99, 10);
    assert_eq!(store.has(&[*chunks[1].hash(), missing]).expect("has"), vec![true, false]);
    assert!(matches!(store.get(&missing), Err(BlockdError::NotFound { .. })));
    let stats = store.stats();
    assert_eq!((stats.chunks, stats.bytes), (3, 3003));
}

#[tokio::test]
async fn async_reads_are_served_from_the_page_cache_once_a_segment_is_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(Store::open(opts(dir.path())).expect("open"));
    let chunks: Vec<Chunk> = (0..3).map(|i| chunk(i, 70_000 + i as usize)).collect();
    put_all(&store, &chunks).await;
    // No segment is open for reading yet: the caller must go to a blocking thread.
    assert_eq!(store.get_cached(chunks[0].hash()).expect("get_cached"), None);
    for c in &chunks {
        assert_eq!(&store.read(*c.hash()).await.expect("read"), c.data());
    }
    // Now open, and just read: served without blocking, the same bytes.
    for c in &chunks {
        assert_eq!(store.get_cached(c.hash()).expect("get_cached").as_ref(), Some(c.data()));
    }
    assert!(matches!(store.get_cached(&hash_of(99, 10)), Err(BlockdError::NotFound { .. })));
    assert!(matches!(store.read(hash_of(99, 10)).await, Err(BlockdError::NotFound { .. })));
}

#[tokio::test]
async fn chunks_survive_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let chunks: Vec<Chunk> = (0..10).map(|i| chunk(i, 5000)).collect();
    {
        let store = Store::open(opts(dir.path())).expect("open");
        put_all(&store, &chunks).await;
    }
    let store = Store::open(opts(dir.path())).expect("reopen");
    assert_all_readable(&store, &chunks);
    assert_eq!((store.stats().chunks, store.stats().bytes), (10, 50_000));
    // Appends continue after the reopened tail without clobbering it.
    let more = chunk(100, 777);
    put_all(&store, std::slice::from_ref(&more)).await;
    assert_all_readable(&store, &chunks);
    assert_all_readable(&store, &[more]);
}

#[tokio::test]
async fn same_chunk_is_stored_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(opts(dir.path())).expect("open");
    let c = chunk(1, 4096);
    assert_eq!(store.put(c.clone()).await.expect("put"), PutOutcome::Stored);
    let before = store.stats();
    assert_eq!(store.put(c.clone()).await.expect("put"), PutOutcome::Deduplicated);
    let after = store.stats();
    assert_eq!((after.chunks, after.bytes), (before.chunks, before.bytes));
    assert_eq!(after.deduplicated, before.deduplicated + 1);
    assert_eq!(after.fsyncs, before.fsyncs, "a deduplicated put must not fsync");
    assert_eq!(scan_records(store.data_dir()).expect("scan").len(), 1);
}

#[tokio::test]
async fn concurrent_puts_of_one_new_chunk_store_it_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(Store::open(opts(dir.path())).expect("open"));
    let c = chunk(7, 3000);
    let gate = store.shared().hooks.gate.lock().expect("gate");
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (store, c) = (store.clone(), c.clone());
            tokio::spawn(async move { store.put(c).await })
        })
        .collect();
    wait_until("8 queued puts", || store.shared().counters.submitted.load(Ordering::Relaxed) == 8).await;
    drop(gate);
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.expect("task").expect("put"));
    }
    assert_eq!(outcomes.iter().filter(|o| **o == PutOutcome::Stored).count(), 1);
    assert_eq!(outcomes.iter().filter(|o| **o == PutOutcome::Deduplicated).count(), 7);
    assert_eq!(scan_records(store.data_dir()).expect("scan").len(), 1);
    assert_eq!((store.stats().chunks, store.stats().bytes), (1, 3000));
}

#[tokio::test]
async fn group_commit_covers_a_batch_with_one_fsync() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(Store::open(opts(dir.path())).expect("open"));
    let n = 64u32;
    let gate = store.shared().hooks.gate.lock().expect("gate");
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.put(chunk(i, 2048)).await })
        })
        .collect();
    wait_until("64 queued puts", || store.shared().counters.submitted.load(Ordering::Relaxed) == u64::from(n)).await;
    let before = store.stats().fsyncs;
    drop(gate);
    for t in tasks {
        assert_eq!(t.await.expect("task").expect("put"), PutOutcome::Stored);
    }
    let fsyncs = store.stats().fsyncs - before;
    assert!(fsyncs < u64::from(n), "{fsyncs} fsyncs for {n} puts");
    assert_eq!(fsyncs, 1, "one queued batch in one segment takes one fsync");
    assert_eq!(store.stats().chunks, u64::from(n));
}

#[tokio::test]
async fn corrupt_record_is_refused_and_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(opts(dir.path())).expect("open");
    let chunks: Vec<Chunk> = (0..3).map(|i| chunk(i, 2000)).collect();
    put_all(&store, &chunks).await;
    let records = scan_records(store.data_dir()).expect("scan");
    assert_eq!(records.len(), 3);
    let victim = records.iter().find(|r| r.hash == *chunks[1].hash()).expect("record of chunk 1").clone();
    let f = std::fs::OpenOptions::new().write(true).open(&victim.segment).expect("open segment");
    let mut b = [0u8; 1];
    std::fs::File::open(&victim.segment).expect("open").read_exact_at(&mut b, victim.data_offset + 10).expect("read");
    f.write_all_at(&[b[0] ^ 0x01], victim.data_offset + 10).expect("flip");

    assert!(matches!(store.get(chunks[1].hash()), Err(BlockdError::Corrupt { .. })));
    // The page-cache path checks the hash too (the segment is open and cached now).
    assert!(matches!(store.get_cached(chunks[1].hash()), Err(BlockdError::Corrupt { .. })));
    assert_all_readable(&store, &[chunks[0].clone(), chunks[2].clone()]);
    assert_eq!(store.stats().corrupt, 2);
    // verify_store reads the segments directly while the store is open.
    let report = verify_store(store.data_dir()).expect("verify");
    assert_eq!(report.records, 3);
    assert_eq!(report.bytes, 6000);
    assert_eq!(report.corrupt, vec![victim]);
}

#[tokio::test]
async fn lost_index_is_rebuilt_from_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = StoreOptions { segment_bytes: 16 * 1024, ..opts(dir.path()) };
    let chunks: Vec<Chunk> = (0..20).map(|i| chunk(i, 3000)).collect();
    {
        let store = Store::open(o.clone()).expect("open");
        put_all(&store, &chunks).await;
        // A duplicate put must not make the rebuilt totals count twice.
        assert_eq!(store.put(chunks[0].clone()).await.expect("put"), PutOutcome::Deduplicated);
    }
    assert!(segment_files(&o.data_dir).len() > 1, "test needs several segments");
    std::fs::remove_file(index_path(&o.data_dir)).expect("delete index");
    let store = Store::open(o.clone()).expect("rebuild");
    assert_all_readable(&store, &chunks);
    assert_eq!((store.stats().chunks, store.stats().bytes), (20, 60_000));
    let more = chunk(500, 100);
    put_all(&store, std::slice::from_ref(&more)).await;
    drop(store);
    let store = Store::open(o).expect("reopen");
    assert_all_readable(&store, &chunks);
    assert_all_readable(&store, &[more]);
}

#[tokio::test]
async fn fsynced_but_unindexed_records_are_recovered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = opts(dir.path());
    let committed = chunk(1, 1500);
    let unindexed: Vec<Chunk> = (2..5).map(|i| chunk(i, 1500)).collect();
    {
        let store = Arc::new(Store::open(o.clone()).expect("open"));
        put_all(&store, std::slice::from_ref(&committed)).await;
        // One batch of three is appended and fsynced, then the "crash" loses its commit.
        store.shared().hooks.skip_index_commit.store(true, Ordering::Relaxed);
        let gate = store.shared().hooks.gate.lock().expect("gate");
        let tasks: Vec<_> = unindexed
            .iter()
            .map(|c| {
                let (store, c) = (store.clone(), c.clone());
                tokio::spawn(async move { store.put(c).await })
            })
            .collect();
        wait_until("3 queued puts", || store.shared().counters.submitted.load(Ordering::Relaxed) == 4).await;
        drop(gate);
        for t in tasks {
            assert!(matches!(t.await.expect("task"), Err(BlockdError::WriterFailed { .. })));
        }
        // Not visible: never indexed, never acknowledged.
        assert_eq!(store.has(&[*unindexed[0].hash()]).expect("has"), vec![false]);
        assert_eq!(scan_records(store.data_dir()).expect("scan").len(), 4);
        // After a failed commit the writer refuses further puts, and says so to whoever
        // waits for it (`tessera serve` exits to be restarted).
        assert!(matches!(store.put(chunk(9, 10)).await, Err(BlockdError::WriterFailed { .. })));
        let cause = tokio::time::timeout(std::time::Duration::from_secs(10), store.failed()).await.expect("failed");
        assert!(cause.contains("index commit skipped"), "{cause}");
    }
    let store = Store::open(o).expect("reopen");
    assert_all_readable(&store, &[committed]);
    assert_all_readable(&store, &unindexed);
    assert_eq!(store.stats().chunks, 4);
}

#[tokio::test]
async fn torn_tail_is_ignored_and_appends_continue() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = opts(dir.path());
    let first: Vec<Chunk> = (0..2).map(|i| chunk(i, 1000)).collect();
    {
        let store = Store::open(o.clone()).expect("open");
        put_all(&store, &first).await;
        // Leave one record unindexed so the next open rescans the tail.
        store.shared().hooks.skip_index_commit.store(true, Ordering::Relaxed);
        assert!(store.put(chunk(2, 1000)).await.is_err());
    }
    let records = scan_records(&o.data_dir).expect("scan");
    let last = records.last().expect("records").clone();
    let tail = last.data_offset + u64::from(last.len);
    let f = std::fs::OpenOptions::new().write(true).open(&last.segment).expect("open");
    // A torn record: a valid header whose data never fully reached the disk...
    let torn = chunk(3, 4000);
    f.write_all_at(&format::encode_record_header(torn.hash(), 4000), tail).expect("write");
    f.write_all_at(&torn.data()[..100], tail + format::RECORD_HEADER_LEN as u64).expect("write");
    // ...followed by garbage.
    f.write_all_at(&[0xAB; 300], tail + 5000).expect("write");

    let store = Store::open(o.clone()).expect("reopen");
    assert_all_readable(&store, &first);
    assert_all_readable(&store, &[chunk(2, 1000)]);
    assert_eq!(store.has(&[*torn.hash()]).expect("has"), vec![false]);
    let next = chunk(4, 2500);
    put_all(&store, std::slice::from_ref(&next)).await;
    drop(store);
    let store = Store::open(o.clone()).expect("reopen");
    assert_all_readable(&store, &[next]);
    assert_eq!(store.stats().chunks, 4);
    let report = verify_store(&o.data_dir).expect("verify");
    assert_eq!((report.records, report.corrupt.len()), (4, 0));

    // Garbage right at the tail of a cleanly closed store is ignored too.
    drop(store);
    let records = scan_records(&o.data_dir).expect("scan");
    let last = records.last().expect("records");
    let f = std::fs::OpenOptions::new().write(true).open(&last.segment).expect("open");
    f.write_all_at(&[0x5A; 64], last.data_offset + u64::from(last.len)).expect("write");
    let store = Store::open(o).expect("reopen");
    assert_eq!(store.stats().chunks, 4);
    put_all(&store, &[chunk(5, 10)]).await;
    assert_all_readable(&store, &[chunk(5, 10)]);
}

#[tokio::test]
async fn segments_roll_over_and_seal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = StoreOptions { segment_bytes: 4096, ..opts(dir.path()) };
    let mut chunks: Vec<Chunk> = (0..12).map(|i| chunk(i, 1000)).collect();
    // Larger than a whole segment: gets a segment of its own size.
    chunks.push(chunk(50, 10_000));
    {
        let store = Store::open(o.clone()).expect("open");
        put_all(&store, &chunks).await;
        assert_all_readable(&store, &chunks);
    }
    let files = segment_files(&o.data_dir);
    assert!(files.len() >= 4, "{} segments", files.len());
    {
        let index = Index::open(&index_path(&o.data_dir)).expect("index");
        let states = index.segments().expect("segments");
        let unsealed: Vec<u32> = states.iter().filter(|(_, s)| !s.sealed).map(|(id, _)| *id).collect();
        assert_eq!(unsealed, vec![*states.keys().last().expect("a segment")]);
    }
    let store = Store::open(o).expect("reopen");
    assert_all_readable(&store, &chunks);
    assert_eq!(store.stats().chunks, 13);
}

#[tokio::test]
async fn low_disk_space_refuses_new_chunks_but_not_duplicates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = opts(dir.path());
    let a = chunk(1, 100);
    {
        let store = Store::open(o.clone()).expect("open");
        put_all(&store, std::slice::from_ref(&a)).await;
    }
    let store = Store::open(StoreOptions { min_free_bytes: u64::MAX, ..o }).expect("reopen");
    assert_eq!(store.put(a).await.expect("dedup put"), PutOutcome::Deduplicated);
    let err = store.put(chunk(2, 100)).await.expect_err("no space");
    assert!(matches!(err, BlockdError::NoSpace { .. }), "{err}");
    assert_eq!(err.status(), proto::chunk_frame::Status::NoSpace);
    assert_eq!(store.stats().chunks, 1);
}

#[tokio::test]
async fn closed_store_refuses_puts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(opts(dir.path())).expect("open");
    store.close();
    assert!(matches!(store.put(chunk(1, 10)).await, Err(BlockdError::Closed)));
}

#[test]
fn wrong_name_is_refused_at_the_door() {
    let err = Chunk::verified(hash_of(1, 10), content(2, 10)).expect_err("mismatch");
    assert!(matches!(err, BlockdError::HashMismatch { .. }));
}

#[test]
fn unknown_segment_version_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = opts(dir.path());
    let seg_dir = segment::segments_dir(&o.data_dir);
    std::fs::create_dir_all(&seg_dir).expect("mkdir");
    let mut h = format::encode_segment_header(1);
    h[8..10].copy_from_slice(&7u16.to_be_bytes());
    let check = blake3::hash(&h[..24]);
    h[24..].copy_from_slice(&check.as_bytes()[..8]);
    std::fs::write(segment::segment_path(&seg_dir, 1), h).expect("write");
    assert!(matches!(Store::open(o), Err(BlockdError::SegmentVersion { found: 7, .. })));
}

#[tokio::test]
async fn rebuild_skips_a_corrupt_record_and_keeps_the_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = opts(dir.path());
    let chunks: Vec<Chunk> = (0..3).map(|i| chunk(i, 1200)).collect();
    {
        let store = Store::open(o.clone()).expect("open");
        put_all(&store, &chunks).await;
    }
    let victim = scan_records(&o.data_dir).expect("scan").into_iter().nth(1).expect("second record");
    let f = std::fs::OpenOptions::new().write(true).open(&victim.segment).expect("open");
    f.write_all_at(&[0u8; 8], victim.data_offset).expect("damage");
    std::fs::remove_file(index_path(&o.data_dir)).expect("delete index");
    let store = Store::open(o).expect("rebuild");
    assert_all_readable(&store, &[chunks[0].clone(), chunks[2].clone()]);
    assert!(matches!(store.get(chunks[1].hash()), Err(BlockdError::NotFound { .. })));
    assert_eq!((store.stats().chunks, store.stats().bytes), (2, 2400));
    // The damaged chunk can be stored again (a repair), and is then served.
    put_all(&store, &[chunks[1].clone()]).await;
    assert_all_readable(&store, &chunks);
}
