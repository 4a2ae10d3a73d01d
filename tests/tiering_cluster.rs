//! The S3 tier with real processes (`tessera serve`) and a real S3 server over HTTP (s3s-fs,
//! in this test process): deduplication across files and shares costs one copy per replica
//! and one set of packs; the local tier stays within its bound while far more is written
//! and read back; an S3 outage slows nothing that does not need S3, fails reads that do
//! within the configured time, and everything catches up when S3 returns.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use blockd::s3::test_server::{AK, BUCKET, S3Server, SK};
use common::cluster::Cluster;
use common::*;
use proto::pb;

const MIB: u64 = 1024 * 1024;

fn env(pairs: &[(&str, String)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

/// Settings for block daemons with an S3 tier on `s3`.
fn tier_env(s3: std::net::SocketAddr, segment: u64, bound: u64, read_timeout_ms: u64) -> Vec<(String, String)> {
    env(&[
        ("TESSERA_METAD__BLOCKD_DEAD_AFTER_MS", "3000".into()),
        ("TESSERA_METAD__BLOCKD_HEARTBEAT_MS", "300".into()),
        ("TESSERA_BLOCKD__MIN_FREE_BYTES", "0".into()),
        ("TESSERA_BLOCKD__SEGMENT_BYTES", segment.to_string()),
        ("TESSERA_BLOCKD__S3__ENDPOINT", format!("\"http://{s3}\"")),
        ("TESSERA_BLOCKD__S3__BUCKET", BUCKET.into()),
        ("TESSERA_BLOCKD__S3__ACCESS_KEY", AK.into()),
        ("TESSERA_BLOCKD__S3__SECRET_KEY", SK.into()),
        ("TESSERA_BLOCKD__S3__LOCAL_BOUND_BYTES", bound.to_string()),
        ("TESSERA_BLOCKD__S3__READ_TIMEOUT_MS", read_timeout_ms.to_string()),
        ("TESSERA_BLOCKD__S3__LOCATE_INTERVAL_MS", "500".into()),
    ])
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

/// Every pack object (`*.tpk`) under `dir`.
fn packs_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(packs_under(&p));
        } else if p.extension().is_some_and(|x| x == "tpk") {
            out.push(p);
        }
    }
    out
}

/// For every chunk whose bytes are in some pack: in how many packs, and its length.
fn chunks_in_s3(root: &Path) -> HashMap<proto::ChunkHash, (usize, u32)> {
    let mut out: HashMap<proto::ChunkHash, (usize, u32)> = HashMap::new();
    for p in packs_under(root) {
        let bytes = std::fs::read(&p).expect("read pack");
        let (_, entries) = blockd::s3::pack::parse(&bytes).expect("a pack the tier wrote parses");
        for e in entries.iter().filter(|e| e.pack_offset.is_some()) {
            out.entry(e.hash).or_insert((0, e.len)).0 += 1;
        }
    }
    out
}

/// Bytes of the segment files under a block daemon's directory.
fn segment_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir.join("segments")) else { return 0 };
    entries.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum()
}

fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, bytes).expect("write local file");
    p.to_str().expect("utf-8").to_string()
}

#[test]
fn the_same_data_in_three_files_and_two_shares_is_stored_once_per_replica_and_once_in_s3() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let rt = runtime();
    let s3_root = tmp.path().join("s3");
    let server = rt.block_on(S3Server::start(&s3_root, "127.0.0.1:0".parse().expect("addr")));
    let mut cluster = Cluster::new(tmp.path());
    cluster.common_env = tier_env(server.addr, 8 * MIB, 1 << 30, 5000);
    let front = cluster.add_node(&["metad", "gateway"]);
    let daemons: Vec<usize> = (0..3).map(|_| cluster.add_node(&["blockd"])).collect();
    cluster.start_all();

    // A second share, through the control API (replication factor: the default, 3).
    let control = format!("http://{}:{}", cluster.nodes[front].ip, cluster.nodes[front].control_port);
    let share = rt.block_on(async {
        let mut c = pb::control_client::ControlClient::connect(control).await.expect("control API");
        let req = pb::CreateShareRequest { name: "second".into(), export_path: "/second".into(), ..Default::default() };
        c.create_share(req).await.expect("create share").into_inner()
    });
    assert_eq!(share.export_path, "/second");
    let url = cluster.metad_urls()[0].clone();
    let tool = cluster.tool_client();
    cluster.wait_until("three block daemons are live", Duration::from_secs(30), || {
        rt.block_on(async {
            let mut m = common::grpc::meta(&tool, &url);
            let r = m.list_block_daemons(pb::ListBlockDaemonsRequest {}).await.expect("list").into_inner();
            r.daemons.iter().filter(|d| d.live).count() == 3
        })
    });

    let content = random_bytes(128 * MIB as usize, 21);
    let local = write_file(tmp.path(), "same.bin", &content);
    for (export, name) in [("/export", "a"), ("/export", "b"), ("/second", "c")] {
        nfs_cp(&local, &cluster.nfs_url(front, export, name));
    }
    for (export, name) in [("/export", "a"), ("/second", "c")] {
        assert!(nfs_cat(&cluster.nfs_url(front, export, name)).expect("nfs-cat") == content, "{export}/{name} reads back");
    }
    cluster.wait_until("the gateway flushed everything", Duration::from_secs(60), || {
        cluster.metric(front, "tessera_gateway_dirty_bytes") == 0.0
    });

    // 128 MiB on each of the three daemons (RF 3), not 3 x 128.
    let stored: Vec<f64> = daemons.iter().map(|&i| cluster.metric(i, "tessera_chunk_bytes_stored")).collect();
    for (i, s) in daemons.iter().zip(&stored) {
        assert!(
            (128.0 * MIB as f64..=132.0 * MIB as f64).contains(s),
            "daemon node{} stores {s} bytes of chunks for 3 x 128 MiB of identical files",
            i + 1
        );
    }

    // One set of packs: once every sealed segment is uploaded, no chunk is in S3 twice and
    // S3 holds at most the 128 MiB once (the active segment of each daemon is not sealed yet).
    let sealed = |i: usize| -> f64 {
        let files = std::fs::read_dir(cluster.blockd_dir(i).join("segments")).map(|d| d.count()).unwrap_or(0);
        files.saturating_sub(1) as f64 // all but the active one
    };
    cluster.wait_until("every sealed segment is uploaded", Duration::from_secs(120), || {
        daemons.iter().all(|&i| cluster.metric(i, "tessera_s3_uploaded_packs_total") >= sealed(i))
    });
    let in_s3 = chunks_in_s3(&s3_root.join(BUCKET));
    let twice: Vec<_> = in_s3.values().filter(|(n, _)| *n > 1).collect();
    let bytes: u64 = in_s3.values().map(|(_, len)| u64::from(*len)).sum();
    let packs = packs_under(&s3_root.join(BUCKET)).len();
    println!(
        "dedup: {:.1} MiB of chunks per daemon; {packs} packs holding {} chunks, {:.1} MiB, in S3",
        stored[0] / MIB as f64,
        in_s3.len(),
        bytes as f64 / MIB as f64
    );
    assert!(twice.is_empty(), "{} chunks are in more than one pack", twice.len());
    assert!(bytes <= 130 * MIB, "S3 holds {bytes} bytes of chunks for 128 MiB of distinct data");
    assert!(bytes >= 128 * MIB - 3 * 8 * MIB, "every sealed segment's chunks are in S3 ({bytes} bytes)");
    assert!(packs <= 3 * 17, "tens of packs, not thousands ({packs})");
    drop(cluster);
    rt.block_on(server.stop());
}

#[test]
fn half_a_gigabyte_through_a_64_mib_local_tier() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let rt = runtime();
    let s3_root = tmp.path().join("s3");
    let server = rt.block_on(S3Server::start(&s3_root, "127.0.0.1:0".parse().expect("addr")));
    const SEGMENT: u64 = 8 * MIB;
    const BOUND: u64 = 64 * MIB;
    let mut cluster = Cluster::new(tmp.path());
    cluster.common_env = tier_env(server.addr, SEGMENT, BOUND, 5000);
    let front = cluster.add_node(&["metad", "gateway"]);
    let daemon = cluster.add_node(&["blockd"]);
    cluster.start_all();

    let content = random_bytes(512 * MIB as usize, 33);
    let local = write_file(tmp.path(), "big.bin", &content);
    let dst = cluster.nfs_url(front, "/export", "big");
    let copy = std::thread::spawn(move || run_tool("nfs-cp", &[&local, &dst]));
    // Watch the local tier while the write goes on.
    let dir = cluster.blockd_dir(daemon);
    let mut peak = 0;
    while !copy.is_finished() {
        peak = peak.max(segment_bytes(&dir));
        std::thread::park_timeout(Duration::from_millis(50));
    }
    let (ok, out, err) = copy.join().expect("nfs-cp thread");
    assert!(ok, "nfs-cp of 512 MiB: {} {err}", String::from_utf8_lossy(&out));
    peak = peak.max(segment_bytes(&dir));
    println!("local tier: peak {:.1} MiB of segment files for a {} MiB bound", peak as f64 / MIB as f64, BOUND / MIB);
    assert!(peak <= BOUND + SEGMENT, "local segment files peaked at {peak} bytes: more than the bound plus one pack");

    // Restart the gateway (an empty cache), then read everything back: most of it from S3.
    cluster.stop(front);
    cluster.start(front);
    let reads0 = cluster.metric(daemon, "tessera_s3_remote_reads_total");
    let back = nfs_cat(&cluster.nfs_url(front, "/export", "big")).expect("nfs-cat");
    assert!(back == content, "512 MiB read back identical ({} bytes)", back.len());
    let remote = cluster.metric(daemon, "tessera_s3_remote_reads_total") - reads0;
    assert!(remote >= 2000.0, "evicted chunks came from S3 ({remote} remote reads)");
    assert!(segment_bytes(&dir) <= BOUND + SEGMENT, "reading does not refill the local tier past its bound");
    drop(cluster);
    rt.block_on(server.stop());
}

#[test]
fn an_s3_outage_keeps_writes_going_fails_remote_reads_in_time_and_catches_up() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let rt = runtime();
    let s3_root = tmp.path().join("s3");
    let server = rt.block_on(S3Server::start(&s3_root, "127.0.0.1:0".parse().expect("addr")));
    const SEGMENT: u64 = 4 * MIB;
    const BOUND: u64 = 16 * MIB;
    const READ_TIMEOUT_MS: u64 = 2000;
    let mut cluster = Cluster::new(tmp.path());
    cluster.common_env = tier_env(server.addr, SEGMENT, BOUND, READ_TIMEOUT_MS);
    let front = cluster.add_node(&["metad", "gateway"]);
    let daemon = cluster.add_node(&["blockd"]);
    cluster.start_all();

    // Before the outage: 48 MiB, mostly evicted to S3.
    let before = random_bytes(48 * MIB as usize, 41);
    nfs_cp(&write_file(tmp.path(), "before.bin", &before), &cluster.nfs_url(front, "/export", "before"));
    // Every sealed segment uploaded too: the outage's writes must fit under the bound on
    // their own (a loaded machine uploads slower than the write, and a backlog left over
    // from before the outage would hold them back, as the bound intends).
    cluster.wait_until("the old data is evicted and uploaded", Duration::from_secs(60), || {
        cluster.metric(daemon, "tessera_s3_evicted_segments_total") >= 6.0
            && cluster.metric(daemon, "tessera_s3_upload_backlog_bytes") == 0.0
    });

    // S3 goes away. Writes keep working up to the bound.
    let addr = rt.block_on(server.stop());
    let during = random_bytes(12 * MIB as usize, 42);
    nfs_cp(&write_file(tmp.path(), "during.bin", &during), &cluster.nfs_url(front, "/export", "during"));
    // A read of an evicted chunk is answered "try again later" (NFS3ERR_JUKEBOX: the data
    // is in a tier that is away; a kernel client waits and retries), within the read
    // timeout (plus the client's and gateway's overhead), instead of hanging. Restart the
    // gateway first so its cache holds nothing.
    cluster.stop(front);
    cluster.start(front);
    let started = Instant::now();
    let read = nfs_cat(&cluster.nfs_url(front, "/export", "before"));
    let took = started.elapsed();
    println!("S3 outage: a read of evicted data failed after {took:?} (read timeout {READ_TIMEOUT_MS} ms)");
    assert!(read.is_err(), "evicted data cannot be read during the outage");
    assert!(took < Duration::from_millis(4 * READ_TIMEOUT_MS), "the failure came in bounded time ({took:?})");
    assert!(nfs_cat(&cluster.nfs_url(front, "/export", "during")).expect("local data still reads") == during);

    // S3 returns at the same address: the backlog uploads, and everything reads back.
    let server = rt.block_on(S3Server::start(&s3_root, addr));
    cluster.wait_until("the backlog is uploaded", Duration::from_secs(60), || {
        cluster.metric(daemon, "tessera_s3_upload_backlog_segments") == 0.0
    });
    assert!(nfs_cat(&cluster.nfs_url(front, "/export", "before")).expect("nfs-cat before") == before);
    assert!(nfs_cat(&cluster.nfs_url(front, "/export", "during")).expect("nfs-cat during") == during);
    drop(cluster);
    rt.block_on(server.stop());
}
