//! Tests of the S3 tier against an in-process S3 server (s3s + s3s-fs on 127.0.0.1, a
//! temp dir, static credentials). Stopping the server closes its listener and every open
//! connection, so "S3 down" is real; restarting binds the same port over the same folder.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use proto::chunk_frame::Status;

use super::client::PackBucket;
use super::state::SegTier;
use super::test_server::S3Server;
use super::{S3Options, pack};
use crate::{BlockdError, Chunk, Store, StoreOptions};

use super::test_server::{AK, BUCKET, SK};
const SEGMENT: u64 = 1024 * 1024;
const CHUNK: usize = 64 * 1024;

fn s3_opts(addr: SocketAddr, bound: u64) -> S3Options {
    let mut o = S3Options::new(Some(format!("http://{addr}")), BUCKET, "us-east-1", AK, SK, "daemon-1");
    o.local_bound_bytes = bound;
    o.upload_concurrency = 2;
    o.read_timeout = Duration::from_millis(800);
    o.upload_timeout = Duration::from_secs(10);
    o.min_backoff = Duration::from_millis(20);
    o.max_backoff = Duration::from_millis(200);
    o.backpressure_timeout = Duration::from_secs(20);
    o.scan_interval = Duration::from_millis(50);
    o
}

fn store_opts(dir: &Path) -> StoreOptions {
    StoreOptions { data_dir: dir.to_path_buf(), segment_bytes: SEGMENT, min_free_bytes: 0 }
}

/// Opens the store; a reopen waits (bounded) while a read of the previous instance that its
/// caller abandoned at the read timeout still holds the index on a blocking thread.
async fn open(dir: &Path, s3: S3Options) -> Arc<Store> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (opts, s3) = (store_opts(dir), s3.clone());
        match tokio::task::spawn_blocking(move || Store::open_with_tier(opts, Some(s3))).await.expect("join") {
            Ok(store) => return Arc::new(store),
            Err(crate::BlockdError::Index(redb::Error::DatabaseAlreadyOpen)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("open: {e:?}"),
        }
    }
}

async fn close(store: Arc<Store>) {
    tokio::task::spawn_blocking(move || store.close()).await.expect("join");
}

fn chunk(i: u32) -> Chunk {
    let mut data = vec![0u8; CHUNK];
    let mut x = u64::from(i).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for b in data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    Chunk::new(Bytes::from(data)).expect("chunk")
}

/// Bytes of local segment files, as the disk sees them.
fn local_bytes(dir: &Path) -> u64 {
    let segs = crate::segment::segments_dir(dir);
    std::fs::read_dir(segs).expect("read_dir").map(|e| e.expect("entry").metadata().expect("meta").len()).sum()
}

async fn get(store: &Arc<Store>, c: &Chunk) -> Result<Bytes, BlockdError> {
    let (store, hash) = (store.clone(), *c.hash());
    tokio::task::spawn_blocking(move || store.get(&hash)).await.expect("join")
}

async fn wait_until(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + deadline;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until every sealed segment is located in S3 (uploaded, or evicted already).
async fn wait_uploaded(store: &Store) {
    wait_until("uploads", Duration::from_secs(60), || {
        let states = store.tier().expect("tier").states();
        let sealed: Vec<u32> = store
            .shared()
            .index
            .segments()
            .expect("segments")
            .into_iter()
            .filter(|(_, s)| s.sealed)
            .map(|(id, _)| id)
            .collect();
        let settled = sealed.iter().all(|id| matches!(states.get(id), Some(SegTier::Located | SegTier::Evicted)));
        settled && store.tier_stats().expect("tier").backlog_segments == 0
    })
    .await;
}

/// Every pack under `prefix`, with its decoded footer.
async fn packs(bucket: &PackBucket, prefix: &str) -> Vec<(String, pack::Trailer, Vec<pack::PackEntry>)> {
    let mut out = Vec::new();
    for o in bucket.list(&pack::key_prefix(prefix)).await.expect("list") {
        let (t, e) = bucket.read_footer(&o.key, Some(o.size)).await.expect("footer");
        out.push((o.key, t, e));
    }
    out
}

async fn put_range(store: &Arc<Store>, range: std::ops::Range<u32>) -> Vec<Chunk> {
    let chunks: Vec<Chunk> = range.map(chunk).collect();
    for group in chunks.chunks(8) {
        let puts = group.iter().map(|c| {
            let (store, c) = (store.clone(), c.clone());
            tokio::spawn(async move { store.put(c).await })
        });
        for p in futures::future::join_all(puts).await {
            p.expect("join").expect("put");
        }
    }
    chunks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pack_round_trip_ranged_reads_verify() {
    cluster::tls::install_crypto_provider();
    let (s3dir, dir) = (tempfile::tempdir().expect("tmp"), tempfile::tempdir().expect("tmp"));
    let server = S3Server::start(s3dir.path(), "127.0.0.1:0".parse().expect("addr")).await;
    let opts = s3_opts(server.addr, 1 << 40);
    let store = open(dir.path(), opts.clone()).await;
    let chunks = put_range(&store, 0..40).await; // 40 x 64 KiB over 1 MiB segments
    wait_uploaded(&store).await;
    let bucket = PackBucket::new(&opts);
    let packs = packs(&bucket, "daemon-1").await;
    assert!(packs.len() >= 2, "expected several sealed segments, got {}", packs.len());
    assert_eq!(packs.len() as u64, store.tier_stats().expect("tier").uploaded_packs);
    let mut seen = 0;
    for (key, trailer, entries) in &packs {
        let id = trailer.segment;
        assert!(key.starts_with(&format!("packs/daemon-1/{id:08}-p")), "key {key}");
        assert_eq!((trailer.version, trailer.leftover), (pack::PACK_VERSION, false));
        for e in entries {
            // Without metad the daemon is primary for everything: every chunk is in its pack.
            let off = e.pack_offset.expect("in this pack");
            let bytes = bucket.get_range(key, off, u64::from(e.len)).await.expect("range");
            assert_eq!(blake3::hash(&bytes).as_bytes(), e.hash.as_bytes());
            let loc = store.shared().index.lookup(&e.hash).expect("lookup").expect("indexed");
            assert_eq!((loc.segment, loc.data_offset, loc.len), (id, e.segment_offset, e.len));
            seen += 1;
        }
    }
    assert!(seen >= 30 && seen < chunks.len(), "sealed segments hold {seen} chunks");
    // Nothing was evicted (the bound is huge): reads are local.
    for c in &chunks {
        assert_eq!(&get(&store, c).await.expect("get"), c.data());
    }
    assert_eq!(store.tier_stats().expect("tier").remote_reads, 0);
    close(store).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounded_local_tier_evicts_uploaded_segments_and_reads_through() {
    cluster::tls::install_crypto_provider();
    let (s3dir, dir) = (tempfile::tempdir().expect("tmp"), tempfile::tempdir().expect("tmp"));
    let server = S3Server::start(s3dir.path(), "127.0.0.1:0".parse().expect("addr")).await;
    let bound = 4 * SEGMENT;
    let store = open(dir.path(), s3_opts(server.addr, bound)).await;
    let mut chunks = Vec::new();
    let mut max_local = 0;
    for i in 0..32 {
        // 32 x 16 x 64 KiB = 32 MiB
        chunks.extend(put_range(&store, i * 16..(i + 1) * 16).await);
        max_local = max_local.max(local_bytes(dir.path()));
    }
    wait_uploaded(&store).await;
    wait_until("eviction down to the bound", Duration::from_secs(30), || local_bytes(dir.path()) <= bound + SEGMENT)
        .await;
    // Within the bound plus the active segment (plus the 32-byte stubs of evicted ones).
    let stubs = 64 * crate::segment::FIRST_RECORD;
    assert!(max_local <= bound + SEGMENT + stubs, "local usage peaked at {max_local} (bound {bound})");
    let stats = store.tier_stats().expect("tier");
    assert!(stats.uploaded_packs >= 30, "{stats:?}");
    assert!(stats.evicted_segments >= 25, "{stats:?}");
    for c in &chunks {
        assert_eq!(&get(&store, c).await.expect("get"), c.data());
    }
    assert!(store.tier_stats().expect("tier").remote_reads >= 300);
    close(store).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_outage_backpressure_timeout_and_recovery_across_restart() {
    cluster::tls::install_crypto_provider();
    let (s3dir, dir) = (tempfile::tempdir().expect("tmp"), tempfile::tempdir().expect("tmp"));
    let server = S3Server::start(s3dir.path(), "127.0.0.1:0".parse().expect("addr")).await;
    let bound = 3 * SEGMENT;
    let mut opts = s3_opts(server.addr, bound);
    opts.backpressure_timeout = Duration::from_millis(300);
    let store = open(dir.path(), opts.clone()).await;
    let mut chunks = put_range(&store, 0..96).await; // 6 MiB: some segments evicted
    wait_uploaded(&store).await;
    wait_until("eviction", Duration::from_secs(30), || store.tier_stats().expect("tier").evicted_segments > 0).await;
    let uploaded_before = store.tier_stats().expect("tier").uploaded_packs;
    let evicted = chunks[0].clone();
    let addr = server.stop().await;

    // S3 down: a read of an evicted chunk fails within the timeout, as "not now"
    // (Unavailable: the gateway asks again, its client gets NFS3ERR_JUKEBOX, not EIO).
    let started = Instant::now();
    let err = get(&store, &evicted).await.expect_err("S3 is down");
    assert!(started.elapsed() < Duration::from_secs(3), "read took {:?}", started.elapsed());
    assert_eq!(err.status(), Status::Unavailable, "the chunk is there, not now: {err}");
    // Puts go on until the local tier is full of data not in S3, then answer NoSpace.
    let mut next = 96u32;
    let refused = loop {
        assert!(next < 96 + 200, "puts were never refused");
        let c = chunk(next);
        match store.put(c.clone()).await {
            Ok(_) => chunks.push(c),
            Err(e) => break e,
        }
        next += 1;
    };
    assert_eq!(refused.status(), Status::NoSpace, "{refused}");
    assert!(local_bytes(dir.path()) <= bound + 2 * SEGMENT);
    let backlog = store.tier_stats().expect("tier").backlog_segments;
    assert!(backlog > 0);
    assert!(store.tier_stats().expect("tier").upload_failures > 0);

    // The daemon restarts while S3 is still down; then S3 comes back on the same port.
    close(store).await;
    let store = open(dir.path(), opts.clone()).await;
    let server = S3Server::start(s3dir.path(), addr).await;
    wait_uploaded(&store).await;
    let stats = store.tier_stats().expect("tier");
    // Only the backlog was uploaded after the restart; finished packs were not repeated.
    assert_eq!(stats.uploaded_packs, backlog, "{stats:?} (before: {uploaded_before})");
    let more = put_range(&store, 1000..1016).await;
    for c in chunks.iter().chain(&more) {
        assert_eq!(&get(&store, c).await.expect("get"), c.data());
    }
    close(store).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_pack_bytes_are_never_served() {
    cluster::tls::install_crypto_provider();
    let (s3dir, dir) = (tempfile::tempdir().expect("tmp"), tempfile::tempdir().expect("tmp"));
    let server = S3Server::start(s3dir.path(), "127.0.0.1:0".parse().expect("addr")).await;
    let store = open(dir.path(), s3_opts(server.addr, SEGMENT)).await;
    let chunks = put_range(&store, 0..40).await;
    wait_uploaded(&store).await;
    wait_until("eviction", Duration::from_secs(30), || store.tier_stats().expect("tier").evicted_segments > 0).await;
    let c = &chunks[0];
    let loc = store.shared().index.lookup(c.hash()).expect("lookup").expect("indexed");
    assert!(store.tier().expect("tier").is_evicted(loc.segment));
    let at = super::state::locate(store.shared().index.db(), &[*c.hash()])
        .expect("locate")
        .pop()
        .flatten()
        .expect("located");
    assert_eq!(&get(&store, c).await.expect("verified read"), c.data());
    // Flip one byte of the chunk inside the stored object.
    let object = s3dir.path().join(BUCKET).join(&at.key);
    let mut bytes = std::fs::read(&object).expect("object file");
    bytes[at.offset as usize + 5] ^= 0x55;
    std::fs::write(&object, bytes).expect("tamper");
    let err = get(&store, c).await.expect_err("tampered bytes must be refused");
    assert!(matches!(err, BlockdError::Corrupt { .. }), "{err}");
    assert_eq!(err.status(), Status::Corrupt);
    close(store).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_index_is_rebuilt_from_segments_and_pack_footers() {
    cluster::tls::install_crypto_provider();
    let (s3dir, dir) = (tempfile::tempdir().expect("tmp"), tempfile::tempdir().expect("tmp"));
    let server = S3Server::start(s3dir.path(), "127.0.0.1:0".parse().expect("addr")).await;
    let opts = s3_opts(server.addr, 2 * SEGMENT);
    let store = open(dir.path(), opts.clone()).await;
    let chunks = put_range(&store, 0..96).await; // 6 MiB over 1 MiB segments
    wait_uploaded(&store).await;
    wait_until("eviction", Duration::from_secs(30), || store.tier_stats().expect("tier").evicted_segments >= 3).await;
    let before = store.tier_stats().expect("tier");
    let stored = store.stats().chunks;
    close(store).await;

    // blockd.redb is lost; the evicted segments are header-only files.
    std::fs::remove_file(crate::index::index_path(dir.path())).expect("remove index");
    let store = open(dir.path(), opts.clone()).await;
    assert!(store.stats().chunks < stored, "the segment scan alone cannot see evicted chunks");
    wait_until("rebuild", Duration::from_secs(30), || store.tier_stats().expect("tier").ready).await;
    let after = store.tier_stats().expect("tier");
    assert_eq!(after.evicted_segments, before.evicted_segments, "{after:?}");
    assert!(after.restored_locations as usize >= chunks.len() - 16, "{after:?}");
    assert_eq!(store.stats().chunks, stored, "the index is whole again");
    for c in &chunks {
        assert_eq!(&get(&store, c).await.expect("get after rebuild"), c.data());
    }
    let stats = store.tier_stats().expect("tier");
    assert!(stats.remote_reads > 0, "{stats:?}");
    wait_uploaded(&store).await;
    assert_eq!(store.tier_stats().expect("tier").uploaded_packs, 0, "nothing was uploaded again");
    close(store).await;

    // A restart with the rebuilt index needs no rebuild.
    let store = open(dir.path(), opts).await;
    assert!(store.tier_stats().expect("tier").ready);
    assert_eq!(&get(&store, &chunks[0]).await.expect("get"), chunks[0].data());
    close(store).await;
    server.stop().await;
}
