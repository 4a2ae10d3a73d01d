//! The S3 tier end to end, through `tessera dev`: sealed segments become pack objects in a
//! real S3 server over HTTP (s3s-fs in this test process), local segment files stay within
//! the configured bound once their packs are uploaded, and evicted chunks come back from
//! S3 verified — also after a restart, when nothing is cached.

mod common;

use common::*;
use std::path::Path;
use std::time::{Duration, Instant};

use blockd::s3::test_server::{AK, BUCKET, S3Server, SK};

const MIB: u64 = 1024 * 1024;
const SEGMENT: u64 = 2 * MIB;
const BOUND: u64 = 8 * MIB;

/// Bytes of every file under `dir` (recursively).
fn bytes_under(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| {
            let p = e.path();
            if p.is_dir() { bytes_under(&p) } else { e.metadata().map(|m| m.len()).unwrap_or(0) }
        })
        .sum()
}

/// Pack objects (`*.tpk`) under `dir` (recursively).
fn count_packs(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| {
            let p = e.path();
            if p.is_dir() {
                count_packs(&p)
            } else {
                usize::from(p.extension().is_some_and(|x| x == "tpk"))
            }
        })
        .sum()
}

#[test]
fn segments_upload_as_packs_evict_within_the_bound_and_read_back_from_s3() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let s3_root = tmp.path().join("s3");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let server = rt.block_on(S3Server::start(&s3_root, "127.0.0.1:0".parse().expect("addr")));
    let env = vec![
        ("TESSERA_BLOCKD__SEGMENT_BYTES", SEGMENT.to_string()),
        ("TESSERA_BLOCKD__MIN_FREE_BYTES", "0".to_string()),
        ("TESSERA_BLOCKD__S3__ENDPOINT", format!("\"http://{}\"", server.addr)),
        ("TESSERA_BLOCKD__S3__BUCKET", BUCKET.to_string()),
        ("TESSERA_BLOCKD__S3__ACCESS_KEY", AK.to_string()),
        ("TESSERA_BLOCKD__S3__SECRET_KEY", SK.to_string()),
        ("TESSERA_BLOCKD__S3__LOCAL_BOUND_BYTES", BOUND.to_string()),
        ("TESSERA_BLOCKD__S3__READ_TIMEOUT_MS", "3000".to_string()),
    ];
    let data_dir = tmp.path().join("data");
    let ports = Ports::pick();
    let mut dev = Dev::start_with(&data_dir, ports, &env);

    let content = random_bytes(24 * MIB as usize, 9);
    let local = tmp.path().join("big.bin");
    std::fs::write(&local, &content).expect("write");
    nfs_cp(local.to_str().expect("path"), &dev.url("tiered"));
    assert!(nfs_cat(&dev.url("tiered")).expect("nfs-cat") == content, "reads back while being tiered");

    // Every sealed segment becomes one pack; the local tier shrinks to the bound.
    let segments = data_dir.join("blockd/segments");
    let packs = s3_root.join(BUCKET);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let local_bytes = bytes_under(&segments);
        let uploaded = count_packs(&packs);
        if uploaded >= (24 * MIB / SEGMENT) as usize - 2 && local_bytes <= BOUND + SEGMENT {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "packs did not upload / evict in time: {uploaded} packs, {local_bytes} local bytes; log:\n{}",
            dev.log_tail()
        );
        std::thread::park_timeout(Duration::from_millis(100));
    }

    // After a restart nothing is cached in the gateway: evicted chunks come from S3.
    dev.stop();
    let dev = Dev::start_with(&data_dir, ports, &env);
    eprintln!("{} packs in S3, {} bytes of local segment files", count_packs(&packs), bytes_under(&segments));
    let back = nfs_cat(&dev.url("tiered")).expect("nfs-cat after restart");
    assert!(back == content, "evicted chunks come back from S3 and verify");
    assert!(bytes_under(&segments) <= BOUND + 2 * SEGMENT, "reading does not refill the local tier past its bound");
    drop(dev);
    rt.block_on(server.stop());
}
