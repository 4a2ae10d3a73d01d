//! The data plane as a cluster of real processes (`tessera serve`): one node with metad and
//! a gateway, and four block daemons on their own loopback addresses, mutual TLS from a CA
//! made with `tessera init-ca` / `tessera issue-cert`.
//!
//! What users rely on: a block daemon killed with SIGKILL in the middle of a large write
//! loses nothing that was acknowledged, and once it is declared dead every chunk is back at
//! its replication factor on the survivors; a corrupt or deleted copy on one daemon is never
//! served, and scrub puts it back.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use std::net::SocketAddr;
use std::path::PathBuf;

use ::cluster::grpc_tls::ClientTls;
use common::chunks::ChunkProbe;
use common::cluster::Cluster;
use common::*;
use proto::ChunkHash;
use proto::pb;
use proto::pb::meta_client::MetaClient;

const MIB: usize = 1024 * 1024;

/// Settings that make failure detection and repair quick enough for a test.
fn fast() -> Vec<(String, String)> {
    [
        ("TESSERA_METAD__BLOCKD_DEAD_AFTER_MS", "1500"),
        ("TESSERA_METAD__BLOCKD_HEARTBEAT_MS", "300"),
        ("TESSERA_BLOCKD__MIN_FREE_BYTES", "0"),
        ("TESSERA_BLOCKD__REPAIR_INTERVAL_MS", "1000"),
        ("TESSERA_BLOCKD__REPAIR_MAX_COPIES_PER_SEC", "0"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

/// A `Meta` client with the `tool` certificate (`Cluster::tool_client`): everything here
/// only reads.
async fn meta(tool: &ClientTls, url: &str) -> MetaClient<tonic::transport::Channel> {
    common::grpc::meta(tool, url)
}

/// Live block daemons as metad reports them: id -> address.
fn live_daemons(rt: &tokio::runtime::Runtime, tool: &ClientTls, url: &str) -> HashMap<u64, String> {
    rt.block_on(async {
        let mut m = meta(tool, url).await;
        let reply = m.list_block_daemons(pb::ListBlockDaemonsRequest {}).await.expect("list daemons").into_inner();
        reply.daemons.into_iter().filter(|d| d.live).map(|d| (d.id, d.addr)).collect()
    })
}

fn root_cred() -> Option<pb::Cred> {
    Some(pb::Cred { uid: 0, gid: 0, gids: vec![] })
}

/// The distinct chunk hashes metad lists for `name` in the root of `export`.
fn file_chunks(
    rt: &tokio::runtime::Runtime,
    tool: &ClientTls,
    url: &str,
    export: &str,
    name: &str,
) -> HashSet<Vec<u8>> {
    rt.block_on(async {
        let mut m = meta(tool, url).await;
        let share = m.get_share(pb::GetShareRequest { export_path: export.into() }).await.expect("share").into_inner();
        let root = share.root.and_then(|a| a.node).expect("share root");
        let attr = m
            .lookup(pb::LookupRequest { dir: Some(root), name: name.as_bytes().to_vec(), cred: root_cred() })
            .await
            .expect("lookup")
            .into_inner()
            .attr
            .expect("attr");
        let req = pb::GetExtentsRequest { node: attr.node, offset: 0, length: u64::MAX, cred: root_cred() };
        let extents = m.get_extents(req).await.expect("extents").into_inner().extents;
        extents.into_iter().map(|e| e.hash).collect()
    })
}

/// How many of the given daemons' stores hold each hash (by scanning their segment files).
fn holders(cluster: &Cluster, nodes: &[usize]) -> HashMap<Vec<u8>, usize> {
    let mut count: HashMap<Vec<u8>, usize> = HashMap::new();
    for &i in nodes {
        let records = blockd::scan_records(&cluster.blockd_dir(i)).expect("scan a daemon's segments");
        let distinct: HashSet<Vec<u8>> = records.into_iter().map(|r| r.hash.as_bytes().to_vec()).collect();
        for h in distinct {
            *count.entry(h).or_default() += 1;
        }
    }
    count
}

#[test]
fn killing_a_block_daemon_mid_write_loses_nothing_and_chunks_return_to_three_replicas() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut cluster = Cluster::new(tmp.path());
    cluster.common_env = fast();
    let front = cluster.add_node(&["metad", "gateway"]);
    // A write buffer well below the file, so chunks reach the daemons while nfs-cp still writes.
    cluster.nodes[front].env.push(("TESSERA_GATEWAY__WRITE_BUFFER_BYTES".into(), (32 * MIB).to_string()));
    let daemons: Vec<usize> = (0..4).map(|_| cluster.add_node(&["blockd"])).collect();
    cluster.start_all();
    let rt = runtime();
    let url = cluster.metad_urls()[0].clone();
    let tool = cluster.tool_client();
    cluster.wait_until("four block daemons are live", Duration::from_secs(30), || {
        live_daemons(&rt, &tool, &url).len() == 4
    });

    let content = random_bytes(256 * MIB, 5);
    let local = tmp.path().join("big.bin");
    std::fs::write(&local, &content).expect("write local file");
    let dst = cluster.nfs_url(front, "/export", "big");
    let src = local.to_str().expect("utf-8").to_string();
    let copy = std::thread::spawn(move || run_tool("nfs-cp", &[&src, &dst]));

    // Kill one block daemon once it holds a good share of the file (~1250 chunks would be
    // its whole share), while the write goes on.
    let victim = daemons[1];
    let victim_id = cluster.nodes[victim].blockd_id.expect("victim id");
    cluster.wait_until("the victim holds 300 chunks", Duration::from_secs(120), || {
        cluster.metric(victim, "tessera_chunks_stored") >= 300.0
    });
    let writes_before_kill = cluster.metric(front, r#"tessera_nfs_requests_total{proc="WRITE"}"#);
    cluster.kill9(victim);
    let killed_at = Instant::now();
    // Note when metad declares it dead, while the write goes on.
    let watcher = {
        let url = url.clone();
        let tool = tool.clone();
        std::thread::spawn(move || {
            let rt = runtime();
            while killed_at.elapsed() < Duration::from_secs(60) {
                if !live_daemons(&rt, &tool, &url).contains_key(&victim_id) {
                    return Some(killed_at.elapsed());
                }
                std::thread::park_timeout(Duration::from_millis(50));
            }
            None
        })
    };

    let (ok, out, err) = copy.join().expect("nfs-cp thread");
    assert!(ok, "nfs-cp through a block daemon's death failed: {} {err}", String::from_utf8_lossy(&out));
    assert!(writes_before_kill < 256.0, "the daemon died during the write ({writes_before_kill} of 256 WRITEs before)");
    let write_done = killed_at.elapsed();
    let declared_dead = watcher.join().expect("watcher").expect("metad declared the killed daemon dead within 60 s");
    let back = nfs_cat(&cluster.nfs_url(front, "/export", "big")).expect("nfs-cat");
    assert!(back == content, "the file reads back identical ({} bytes)", back.len());

    // Every chunk of the file back on three of the surviving daemons.
    let chunks = file_chunks(&rt, &tool, &url, "/export", "big");
    assert!(chunks.len() > 256, "a 256 MiB file has more than 256 chunks ({})", chunks.len());
    let survivors: Vec<usize> = daemons.iter().copied().filter(|&i| i != victim).collect();
    // Ask the survivors over QUIC (HAS, with a `tool` certificate) until every chunk has 3 holders.
    let probe = {
        let _runtime = rt.enter();
        ChunkProbe::new(&cluster.tool_tls())
    };
    let addrs: Vec<SocketAddr> = survivors
        .iter()
        .map(|&i| cluster.nodes[i].blockd_addr.as_deref().expect("blockd address").parse().expect("addr"))
        .collect();
    let hashes: Vec<ChunkHash> =
        chunks.iter().map(|h| ChunkHash(h.as_slice().try_into().expect("32-byte hash"))).collect();
    cluster.wait_until("the survivors hold three copies of every chunk", Duration::from_secs(180), || {
        rt.block_on(probe.holders(&addrs, &hashes)).values().all(|&n| n >= 3)
    });
    let copies: f64 = survivors.iter().map(|&i| cluster.metric(i, "tessera_repair_copies_total")).sum();
    println!(
        "re-replication: SIGKILL at t=0; declared dead at {:.1} s; 256 MiB write acknowledged (COMMIT) at {:.1} s; \
         all {} chunks at 3 copies on the survivors at {:.1} s ({copies} copies made by repair)",
        declared_dead.as_secs_f64(),
        write_done.as_secs_f64(),
        chunks.len(),
        killed_at.elapsed().as_secs_f64(),
    );
    assert!(copies >= 100.0, "chunks the dead daemon held were copied to their new replica sets ({copies})");

    // Count them on disk, with every process stopped.
    for i in std::iter::once(front).chain(survivors.iter().copied()) {
        cluster.stop(i);
    }
    let count = holders(&cluster, &survivors);
    let short: Vec<usize> = chunks.iter().map(|h| count.get(h).copied().unwrap_or(0)).filter(|&n| n < 3).collect();
    assert!(short.is_empty(), "{} of {} chunks have fewer than 3 copies: {short:?}", short.len(), chunks.len());
    for i in std::iter::once(front).chain(survivors.iter().copied()) {
        assert!(cluster.panics(i).is_empty(), "node {} panicked: {:?}", i + 1, cluster.panics(i));
    }
}

#[test]
fn a_flipped_byte_and_a_deleted_segment_read_correctly_and_scrub_repairs_both() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut cluster = Cluster::new(tmp.path());
    cluster.common_env = fast();
    cluster.common_env.push(("TESSERA_BLOCKD__SEGMENT_BYTES".into(), (4 * MIB).to_string()));
    let front = cluster.add_node(&["metad", "gateway"]);
    let daemons: Vec<usize> = (0..3).map(|_| cluster.add_node(&["blockd"])).collect();
    cluster.start_all();
    let rt = runtime();
    let url = cluster.metad_urls()[0].clone();
    let tool = cluster.tool_client();
    cluster.wait_until("three block daemons are live", Duration::from_secs(30), || {
        live_daemons(&rt, &tool, &url).len() == 3
    });

    let content = random_bytes(32 * MIB, 7);
    let local = tmp.path().join("f.bin");
    std::fs::write(&local, &content).expect("write local file");
    nfs_cp(local.to_str().expect("utf-8"), &cluster.nfs_url(front, "/export", "f"));
    cluster.wait_until("the gateway flushed everything", Duration::from_secs(60), || {
        cluster.metric(front, "tessera_gateway_dirty_bytes") == 0.0
    });

    // With daemon X stopped: flip one byte of a chunk in one segment, delete another segment.
    let x = daemons[0];
    cluster.stop(x);
    let dir = cluster.blockd_dir(x);
    let records = blockd::scan_records(&dir).expect("scan");
    let before: HashSet<ChunkHash> = records.iter().map(|r| r.hash).collect();
    let mut by_segment: HashMap<PathBuf, Vec<&blockd::RecordLocation>> = HashMap::new();
    for r in &records {
        by_segment.entry(r.segment.clone()).or_default().push(r);
    }
    let mut segments: Vec<_> = by_segment.into_iter().filter(|(_, rs)| rs.len() >= 2).collect();
    segments.sort_by_key(|(p, _)| p.clone());
    assert!(segments.len() >= 3, "several full segments ({})", segments.len());
    let flipped = segments[0].1[1];
    let (deleted, deleted_records) = (&segments[1].0, segments[1].1.len());
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().read(true).write(true).open(&flipped.segment).expect("open segment");
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, flipped.data_offset + 100).expect("read");
        f.write_all_at(&[b[0] ^ 0x5a], flipped.data_offset + 100).expect("flip");
    }
    std::fs::remove_file(deleted).expect("delete a segment");
    assert_eq!(blockd::verify_store(&dir).expect("verify").corrupt.len(), 1, "the flipped record is seen as corrupt");

    // X restarts with a short scrub interval; clients read correct bytes meanwhile (the
    // gateway, restarted so its cache is empty, falls back to the other replicas).
    cluster.nodes[x].env.push(("TESSERA_BLOCKD__SCRUB_INTERVAL_MS".into(), "1000".into()));
    cluster.start(x);
    cluster.stop(front);
    cluster.start(front);
    let back = nfs_cat(&cluster.nfs_url(front, "/export", "f"))
        .unwrap_or_else(|e| panic!("nfs-cat: {e}; warnings:\n{}", cluster.warnings()));
    assert!(back == content, "the file reads back identical with a corrupt and a missing copy on one daemon");

    // Scrub finds both; the copies come back from a peer, rewritten by scrub itself or by a
    // peer's replication repair (X answers `has` false for a known-bad copy) — whichever
    // gets there first. Done once a pass that began after the finding sees every copy good.
    cluster.wait_until("scrub found the flipped chunk and the deleted segment", Duration::from_secs(60), || {
        cluster.metric(x, "tessera_scrub_corrupt_total") >= 1.0
            && cluster.metric(x, "tessera_scrub_missing_total") >= deleted_records as f64
    });
    let passes = cluster.metric(x, "tessera_scrub_passes_total");
    cluster.wait_until("a later scrub pass found every copy good", Duration::from_secs(60), || {
        cluster.metric(x, "tessera_scrub_passes_total") >= passes + 2.0
            && cluster.metric(x, "tessera_scrub_last_pass_damaged_chunks") == 0.0
    });
    println!(
        "scrub on node{}: {} corrupt, {} missing, {} repaired by scrub, {} copies sent by repair",
        x + 1,
        cluster.metric(x, "tessera_scrub_corrupt_total"),
        cluster.metric(x, "tessera_scrub_missing_total"),
        cluster.metric(x, "tessera_scrub_repaired_total"),
        daemons.iter().map(|&d| cluster.metric(d, "tessera_repair_copies_total")).sum::<f64>()
    );
    cluster.stop(x);
    let report = blockd::verify_store(&dir).expect("verify after scrub");
    assert!(report.corrupt.is_empty(), "verify finds nothing corrupt after scrub: {:?}", report.corrupt);
    let after: HashSet<ChunkHash> = blockd::scan_records(&dir).expect("scan").into_iter().map(|r| r.hash).collect();
    let lost: Vec<_> = before.difference(&after).collect();
    assert!(lost.is_empty(), "{} chunks the daemon held are not back on its disk", lost.len());
    for i in [front, daemons[1], daemons[2]] {
        assert!(cluster.panics(i).is_empty(), "node {} panicked", i + 1);
    }
}
