//! The data plane's bookkeeping in metad, through the `Meta` service: block daemon heartbeats
//! and liveness, pack locations, and per-share replication factors — on one voter, on a
//! three-voter group over real gRPC (the same view from every node), and through a snapshot.

#![allow(clippy::unwrap_used)] // tests may unwrap (workspace lint note)

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use metad::command::ShareChanges;
use metad::model::Squash;
use metad::fsm::query::ReadTables;
use metad::service::meta::MetaService;
use metad::snapshot_file::SnapshotDir;
use metad::state_machine::StateMachineStore;
use metad::{Bootstrap, Liveness, Metad, MetadOptions, RaftTuning, store};
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use proto::FsError;
use proto::pb::meta_client::MetaClient;
use proto::pb::meta_server::Meta;
use proto::pb::{self, PackLocation};
use redb::ReadableDatabase;
use tonic::Request;
use tonic::transport::Channel;
use tonic::transport::server::TcpIncoming;

const DEADLINE: Duration = Duration::from_secs(20);

/// Short enough that a silent daemon is declared dead quickly in tests.
fn quick() -> Liveness {
    Liveness { dead_after: Duration::from_millis(400), interval: Duration::from_millis(100) }
}

fn opts(id: u64, dir: &Path, addr: &str) -> MetadOptions {
    MetadOptions {
        node_id: id,
        data_dir: dir.to_path_buf(),
        advertise_addr: addr.to_string(),
        default_share: Some(("default".into(), "/export".into())),
        client_tls: cluster::grpc_tls::ClientTls::plaintext(),
    }
}

async fn single(dir: &Path, liveness: Liveness) -> Metad {
    let o = opts(1, dir, "http://127.0.0.1:1");
    let m = Metad::start_tuned(&o, Bootstrap::SingleVoter, RaftTuning::default(), liveness).await.unwrap();
    m.wait_ready(o.default_share.as_ref()).await.unwrap();
    m
}

fn err<T: std::fmt::Debug>(r: Result<T, tonic::Status>) -> FsError {
    FsError::from_status(&r.expect_err("expected an error"))
}

fn beat(id: u64, addr: &str, free: u64) -> pb::HeartbeatRequest {
    pb::HeartbeatRequest {
        id,
        addr: addr.to_string(),
        capacity_bytes: 1 << 40,
        free_bytes: free,
        chunks: id * 10,
        stored_bytes: id * 1000,
    }
}

fn hash(n: u8) -> Vec<u8> {
    blake3::hash(&[n]).as_bytes().to_vec()
}

fn loc(n: u8, pack: &str, offset: u64, length: u32) -> PackLocation {
    PackLocation { hash: hash(n), pack: pack.to_string(), offset, length }
}

async fn list(svc: &MetaService) -> pb::ListBlockDaemonsReply {
    svc.list_block_daemons(Request::new(pb::ListBlockDaemonsRequest {})).await.unwrap().into_inner()
}

fn by_id(reply: &pb::ListBlockDaemonsReply) -> BTreeMap<u64, pb::BlockDaemon> {
    reply.daemons.iter().map(|d| (d.id, d.clone())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_register_update_and_silent_daemons_go_dead() {
    let dir = tempfile::tempdir().unwrap();
    let m = single(dir.path(), quick()).await;
    let svc = MetaService::new(m.clone());
    assert!(list(&svc).await.daemons.is_empty());

    let reply = svc.heartbeat(Request::new(beat(7, "127.0.0.1:9001", 500))).await.unwrap().into_inner();
    assert_eq!((reply.dead_after_ms, reply.interval_ms), (400, 100));
    let view = list(&svc).await;
    assert_eq!(view.default_replication_factor, 1, "one live daemon");
    let d = &by_id(&view)[&7];
    assert_eq!((d.addr.as_str(), d.free_bytes, d.chunks, d.stored_bytes), ("127.0.0.1:9001", 500, 70, 7000));
    assert!(d.live);
    let first_beat = d.last_heartbeat_ms;

    // A later heartbeat replaces the row (new address, new counters, newer stamp).
    svc.heartbeat(Request::new(beat(7, "[::1]:9002", 400))).await.unwrap();
    let d = by_id(&list(&svc).await)[&7].clone();
    assert_eq!((d.addr.as_str(), d.free_bytes), ("[::1]:9002", 400));
    assert!(d.last_heartbeat_ms >= first_beat);

    svc.heartbeat(Request::new(beat(8, "127.0.0.1:9008", 1))).await.unwrap();
    svc.heartbeat(Request::new(beat(9, "127.0.0.1:9009", 1))).await.unwrap();
    assert_eq!(list(&svc).await.default_replication_factor, 3);

    // 8 and 9 keep beating, 7 falls silent: it is reported dead (and kept), the others live.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let view = loop {
        svc.heartbeat(Request::new(beat(8, "127.0.0.1:9008", 1))).await.unwrap();
        svc.heartbeat(Request::new(beat(9, "127.0.0.1:9009", 1))).await.unwrap();
        let view = list(&svc).await;
        let d = by_id(&view);
        if !d[&7].live && d[&8].live && d[&9].live {
            break view;
        }
        assert!(tokio::time::Instant::now() < deadline, "daemon 7 never went dead: {view:?}");
        tokio::time::sleep(quick().interval).await;
    };
    assert_eq!(view.daemons.len(), 3, "a dead daemon's row is kept");
    assert_eq!(view.default_replication_factor, 2, "two live daemons");
    let silent = &by_id(&view)[&7];
    assert_eq!(silent.addr, "[::1]:9002");
    m.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_heartbeats_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let m = single(dir.path(), Liveness::default()).await;
    let svc = MetaService::new(m.clone());
    let long = format!("127.0.0.1:{}", "1".repeat(260));
    for (id, addr) in [(0, "127.0.0.1:9001"), (1, ""), (1, "nope"), (1, "localhost:9001"), (1, "127.0.0.1"), (1, &long)]
    {
        let e = err(svc.heartbeat(Request::new(beat(id, addr, 1))).await);
        assert!(matches!(e, FsError::Invalid(_)), "id {id} addr {addr:?}: {e:?}");
    }
    assert!(list(&svc).await.daemons.is_empty());
    let reply = svc.heartbeat(Request::new(beat(1, "127.0.0.1:9001", 1))).await.unwrap().into_inner();
    assert_eq!((reply.dead_after_ms, reply.interval_ms), (10_000, 2_000), "the defaults");
    m.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pack_locations_round_trip_and_bad_batches_are_refused_whole() {
    let dir = tempfile::tempdir().unwrap();
    let m = single(dir.path(), Liveness::default()).await;
    let svc = MetaService::new(m.clone());
    let record = |locations: Vec<PackLocation>| svc.record_packs(Request::new(pb::RecordPacksRequest { locations }));
    let locate = |hashes: Vec<Vec<u8>>| svc.locate_chunks(Request::new(pb::LocateChunksRequest { hashes }));

    record(vec![loc(1, "packs/a", 0, 100), loc(2, "packs/a", 100, 50), loc(3, "packs/b", 7, 1)]).await.unwrap();
    let found = locate(vec![hash(3), hash(9), hash(1)]).await.unwrap().into_inner().locations;
    assert_eq!(found, vec![loc(3, "packs/b", 7, 1), loc(1, "packs/a", 0, 100)], "known ones, in the order asked");
    assert!(locate(vec![]).await.unwrap().into_inner().locations.is_empty());

    // A later location of a hash replaces the earlier one (a re-packed chunk).
    record(vec![loc(1, "packs/c", 4096, 100)]).await.unwrap();
    assert_eq!(locate(vec![hash(1)]).await.unwrap().into_inner().locations, vec![loc(1, "packs/c", 4096, 100)]);

    // One bad location refuses the whole batch: the good ones beside it are not recorded.
    let bad = [
        PackLocation { hash: vec![1; 31], pack: "p".into(), offset: 0, length: 1 },
        loc(5, "", 0, 1),
        loc(5, &"k".repeat(1025), 0, 1),
        loc(5, "p", 0, 0),
        loc(5, "p", u64::MAX, 1),
    ];
    for b in bad {
        let e = err(record(vec![loc(4, "packs/d", 0, 10), b.clone()]).await);
        assert!(matches!(e, FsError::Invalid(_)), "{b:?}: {e:?}");
    }
    let too_many: Vec<_> = (0..=65_536u32).map(|i| loc((i % 200) as u8, "p", u64::from(i), 1)).collect();
    assert!(matches!(err(record(too_many).await), FsError::Invalid(_)));
    assert!(locate(vec![hash(4)]).await.unwrap().into_inner().locations.is_empty());
    // A key of exactly 1024 bytes is fine.
    record(vec![loc(6, &"k".repeat(1024), 0, 1)]).await.unwrap();

    assert!(matches!(err(locate(vec![hash(1), vec![0; 33]]).await), FsError::Invalid(_)));
    assert!(matches!(err(locate(vec![hash(1); 4097]).await), FsError::Invalid(_)));
    assert_eq!(locate(vec![hash(1); 4096]).await.unwrap().into_inner().locations.len(), 4096);
    m.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn share_replication_factor_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let m = single(dir.path(), Liveness::default()).await;
    let svc = MetaService::new(m.clone());
    let get = || svc.get_share(Request::new(pb::GetShareRequest { export_path: "/export".into() }));
    assert_eq!(get().await.unwrap().into_inner().replication_factor, 0, "the cluster default");

    m.set_share_replication("/export", 2).await.unwrap();
    assert_eq!(get().await.unwrap().into_inner().replication_factor, 2);
    let shares = svc.list_shares(Request::new(pb::ListSharesRequest {})).await.unwrap().into_inner().shares;
    assert_eq!(shares.iter().map(|s| s.replication_factor).collect::<Vec<_>>(), vec![2]);
    // ensure_share leaves an existing share (and its factor) alone.
    m.ensure_share("default", "/export").await.unwrap();
    assert_eq!(get().await.unwrap().into_inner().replication_factor, 2);

    assert!(matches!(m.set_share_replication("/export", 17).await, Err(metad::MetadError::Fs(FsError::Invalid(_)))));
    assert!(matches!(m.set_share_replication("/nope", 1).await, Err(metad::MetadError::Fs(FsError::NotFound))));
    assert_eq!(get().await.unwrap().into_inner().replication_factor, 2);

    // The factor survives a restart (it is in the share record, not in memory).
    m.shutdown().await.unwrap();
    drop((svc, m));
    let m = single(dir.path(), Liveness::default()).await;
    let svc = MetaService::new(m.clone());
    let share =
        svc.get_share(Request::new(pb::GetShareRequest { export_path: "/export".into() })).await.unwrap().into_inner();
    assert_eq!(share.replication_factor, 2);
    m.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fs_stat_reports_live_capacity_divided_by_the_replication_factor() {
    let dir = tempfile::tempdir().unwrap();
    let m = single(dir.path(), Liveness::default()).await;
    let svc = MetaService::new(m.clone());
    let root = svc
        .get_share(Request::new(pb::GetShareRequest { export_path: "/export".into() }))
        .await
        .unwrap()
        .into_inner()
        .root
        .and_then(|a| a.node);
    let stat = || svc.fs_stat(Request::new(pb::FsStatRequest { node: root }));
    assert_eq!(stat().await.unwrap().into_inner().capacity_bytes, 0, "no daemon yet: unknown");
    for id in 1..=3 {
        svc.heartbeat(Request::new(beat(id, &format!("127.0.0.1:{}", 7000 + id), 100 << 30))).await.unwrap();
    }
    let s = stat().await.unwrap().into_inner();
    assert_eq!((s.capacity_bytes, s.free_bytes), (1 << 40, 100 << 30), "3 x (1 TiB, 100 GiB) at the default rf 3");
    m.set_share_replication("/export", 1).await.unwrap();
    let s = stat().await.unwrap().into_inner();
    assert_eq!((s.capacity_bytes, s.free_bytes), (3 << 40, 300 << 30), "rf 1: every byte counts");
    m.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_creates_shares_and_sets_their_replication() {
    use proto::pb::control_server::Control;
    let dir = tempfile::tempdir().unwrap();
    let m = single(dir.path(), Liveness::default()).await;
    let control = metad::service::control::ControlService::new(m.clone());
    let meta = MetaService::new(m.clone());
    let create = |name: &str, path: &str, rf: Option<u32>| {
        control.create_share(Request::new(pb::CreateShareRequest {
            name: name.into(),
            export_path: path.into(),
            replication_factor: rf,
            ..Default::default()
        }))
    };
    let s = create("projects", "/projects", Some(1)).await.unwrap().into_inner();
    assert_eq!((s.name.as_str(), s.export_path.as_str(), s.replication_factor), ("projects", "/projects", 1));
    assert!(s.root.is_some(), "a new share has a root directory");
    // Idempotent on the export path: the existing share is returned, the factor updated only when asked.
    let again = create("other-name", "/projects", None).await.unwrap().into_inner();
    assert_eq!((again.share_id, again.name.as_str(), again.replication_factor), (s.share_id, "projects", 1));
    let set = control
        .set_share_replication(Request::new(pb::SetShareReplicationRequest { export_path: "/projects".into(), replication_factor: 3 }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(set.replication_factor, 3);
    let listed = meta.list_shares(Request::new(pb::ListSharesRequest {})).await.unwrap().into_inner().shares;
    let mut paths: Vec<_> = listed.iter().map(|s| s.export_path.as_str()).collect();
    paths.sort();
    assert_eq!(paths, vec!["/export", "/projects"]);

    // Bad requests are refused and change nothing.
    for (name, path) in [("x", "relative"), ("", "/empty-name"), ("x", &format!("/{}", "p".repeat(2000)))] {
        let e = create(name, path, None).await.expect_err("refused");
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{name:?} {path:.20}: {e}");
    }
    let e = create("x", "/bad-rf", Some(99)).await.expect_err("factor over the maximum");
    assert!(matches!(FsError::from_status(&e), FsError::Invalid(_)), "{e}");
    let e = control
        .set_share_replication(Request::new(pb::SetShareReplicationRequest { export_path: "/nope".into(), replication_factor: 1 }))
        .await
        .expect_err("unknown share");
    assert!(matches!(FsError::from_status(&e), FsError::NotFound), "{e}");
    m.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_sets_and_updates_export_options() {
    use proto::pb::control_server::Control;
    let dir = tempfile::tempdir().unwrap();
    let m = single(dir.path(), Liveness::default()).await;
    let control = metad::service::control::ControlService::new(m.clone());
    let meta = MetaService::new(m.clone());
    let get = |path: &str| meta.get_share(Request::new(pb::GetShareRequest { export_path: path.into() }));

    // A share created without options: read-write, every client, no squashing, nobody.
    let d = get("/export").await.unwrap().into_inner();
    assert_eq!((d.read_only, d.squash, d.anon_uid, d.anon_gid), (false, pb::Squash::None as i32, Some(65534), Some(65534)));
    assert!(d.allowed_clients.is_empty());

    let created = control
        .create_share(Request::new(pb::CreateShareRequest {
            name: "ro".into(),
            export_path: "/ro".into(),
            read_only: Some(true),
            allowed_clients: vec!["10.0.0.0/8".into(), "192.168.1.7".into(), "fd00::/8".into()],
            squash: Some(pb::Squash::All as i32),
            anon_uid: Some(1500),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(created.read_only);
    assert_eq!(created.allowed_clients, vec!["10.0.0.0/8", "192.168.1.7", "fd00::/8"]);
    assert_eq!((created.squash, created.anon_uid, created.anon_gid), (pb::Squash::All as i32, Some(1500), Some(65534)));

    // Only the fields given change.
    let update = |req: pb::UpdateShareRequest| control.update_share(Request::new(req));
    let u = update(pb::UpdateShareRequest { export_path: "/ro".into(), read_only: Some(false), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert!(!u.read_only);
    assert_eq!((u.allowed_clients.len(), u.squash, u.anon_uid), (3, pb::Squash::All as i32, Some(1500)));
    let u = update(pb::UpdateShareRequest {
        export_path: "/ro".into(),
        allowed_clients: Some(pb::ClientList { entries: vec![] }),
        squash: Some(pb::Squash::Root as i32),
        anon_gid: Some(100),
        replication_factor: Some(2),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner();
    assert!(u.allowed_clients.is_empty(), "an empty list = every client");
    assert_eq!((u.squash, u.anon_uid, u.anon_gid, u.replication_factor), (pb::Squash::Root as i32, Some(1500), Some(100), 2));

    // Bad entries and unknown modes are refused, and change nothing.
    for bad in ["host.example.com", "10.0.0.0/33", "", "10.0.0.1 "] {
        let e = update(pb::UpdateShareRequest {
            export_path: "/ro".into(),
            read_only: Some(true),
            allowed_clients: Some(pb::ClientList { entries: vec!["*".into(), bad.into()] }),
            ..Default::default()
        })
        .await
        .expect_err("bad entry");
        assert!(matches!(FsError::from_status(&e), FsError::Invalid(_)), "{bad:?}: {e}");
    }
    let e = update(pb::UpdateShareRequest { export_path: "/ro".into(), squash: Some(7), ..Default::default() })
        .await
        .expect_err("unknown squash mode");
    assert!(matches!(FsError::from_status(&e), FsError::Invalid(_)), "{e}");
    let e = update(pb::UpdateShareRequest { export_path: "/ro".into(), replication_factor: Some(17), read_only: Some(true), ..Default::default() })
        .await
        .expect_err("factor over the maximum");
    assert!(matches!(FsError::from_status(&e), FsError::Invalid(_)), "{e}");
    let e = control
        .create_share(Request::new(pb::CreateShareRequest {
            name: "bad".into(),
            export_path: "/bad".into(),
            allowed_clients: vec!["nope".into()],
            ..Default::default()
        }))
        .await
        .expect_err("bad entry at create");
    assert!(matches!(FsError::from_status(&e), FsError::Invalid(_)), "{e}");
    assert!(matches!(FsError::from_status(&get("/bad").await.expect_err("not created")), FsError::NotFound));
    let e = update(pb::UpdateShareRequest { export_path: "/nope".into(), read_only: Some(true), ..Default::default() })
        .await
        .expect_err("unknown share");
    assert!(matches!(FsError::from_status(&e), FsError::NotFound), "{e}");
    let now = get("/ro").await.unwrap().into_inner();
    assert!(!now.read_only && now.allowed_clients.is_empty());

    // An UpdateShare is validated again when applied (a proposer that skipped the check).
    let r = m
        .update_share("/ro", ShareChanges { allowed_clients: Some(vec!["*/1".into()]), ..Default::default() })
        .await;
    assert!(matches!(r, Err(metad::MetadError::Fs(FsError::Invalid(_)))), "{r:?}");

    // The options survive a restart.
    m.shutdown().await.unwrap();
    drop((control, meta, m));
    let m = single(dir.path(), Liveness::default()).await;
    let meta = MetaService::new(m.clone());
    let s = meta.get_share(Request::new(pb::GetShareRequest { export_path: "/ro".into() })).await.unwrap().into_inner();
    assert_eq!((s.squash, s.anon_uid, s.anon_gid, s.replication_factor), (pb::Squash::Root as i32, Some(1500), Some(100), 2));
    m.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_carry_daemons_and_pack_locations() {
    let src = tempfile::tempdir().unwrap();
    {
        let m = single(src.path(), Liveness::default()).await;
        let svc = MetaService::new(m.clone());
        svc.heartbeat(Request::new(beat(3, "127.0.0.1:7003", 42))).await.unwrap();
        let locations = vec![loc(1, "packs/a", 0, 100), loc(2, "packs/b", 5, 9)];
        svc.record_packs(Request::new(pb::RecordPacksRequest { locations })).await.unwrap();
        m.set_share_replication("/export", 3).await.unwrap();
        let changes = ShareChanges {
            read_only: Some(true),
            allowed_clients: Some(vec!["10.0.0.0/8".into()]),
            squash: Some(Squash::All),
            anon_uid: Some(7),
            anon_gid: Some(8),
            ..Default::default()
        };
        m.update_share("/export", changes).await.unwrap();
        m.shutdown().await.unwrap();
    }
    let src_db = store::open(src.path()).unwrap();
    let mut src_sm = StateMachineStore::new(src_db.clone(), SnapshotDir::open(src.path()).unwrap());
    let snap = src_sm.build_snapshot().await.unwrap();

    let dst = tempfile::tempdir().unwrap();
    let dst_db = store::open(dst.path()).unwrap();
    let mut dst_sm = StateMachineStore::new(dst_db.clone(), SnapshotDir::open(dst.path()).unwrap());
    let mut image = snap.snapshot;
    let bytes = image.read_all().unwrap();
    let mut incoming = SnapshotDir::open(dst.path()).unwrap().incoming().unwrap();
    incoming.append(&bytes).unwrap();
    dst_sm.install_snapshot(&snap.meta, incoming.finish().unwrap()).await.unwrap();

    let rtx = dst_db.begin_read().unwrap();
    let t = ReadTables::open(&rtx).unwrap();
    let daemons = t.block_daemons().unwrap();
    assert_eq!(daemons.len(), 1);
    assert_eq!((daemons[0].0, daemons[0].1.addr.as_str(), daemons[0].1.free_bytes), (3, "127.0.0.1:7003", 42));
    let h = |n: u8| <[u8; 32]>::try_from(hash(n)).unwrap();
    let found = t.locate_chunks(&[h(2), h(1), h(3)]).unwrap();
    let found: Vec<_> = found.into_iter().map(|l| (l.hash, l.pack, l.offset, l.length)).collect();
    assert_eq!(found, vec![(h(2), "packs/b".to_string(), 5, 9), (h(1), "packs/a".to_string(), 0, 100)]);
    let share = t.share_by_path("/export").unwrap().rec;
    assert_eq!(share.replication_factor, 3);
    assert!(share.read_only);
    assert_eq!(share.allowed_clients, vec!["10.0.0.0/8"]);
    assert_eq!((share.squash, share.anon_uid, share.anon_gid), (Squash::All, 7, 8));
}

struct Node {
    metad: Metad,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

/// Starts a three-voter group, every node judging liveness by `liveness`, serving `Meta` and
/// `Raft` over gRPC on loopback; returns the nodes and a client per node.
async fn group(dirs: &[tempfile::TempDir], liveness: Liveness) -> (Vec<Node>, Vec<MetaClient<Channel>>) {
    let mut incomings = Vec::new();
    let mut members = BTreeMap::new();
    for id in 1..=3u64 {
        let incoming = TcpIncoming::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        members.insert(id, format!("http://{}", incoming.local_addr().unwrap()));
        incomings.push(incoming);
    }
    let mut nodes = Vec::new();
    for (i, incoming) in incomings.into_iter().enumerate() {
        let id = i as u64 + 1;
        let o = opts(id, dirs[i].path(), &members[&id]);
        let bootstrap = if id == 1 { Bootstrap::Members(members.clone()) } else { Bootstrap::Join };
        let metad = Metad::start_tuned(&o, bootstrap, RaftTuning::default(), liveness).await.unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let router =
            tonic::transport::Server::builder().add_service(metad.meta_service()).add_service(metad.raft_service());
        let server = tokio::spawn(router.serve_with_incoming_shutdown(incoming, async {
            let _ = stopped.await;
        }));
        nodes.push(Node { metad, stop, server });
    }
    for n in &nodes {
        n.metad.wait_ready(Some(&("default".to_string(), "/export".to_string()))).await.unwrap();
    }
    let clients =
        members.values().map(|a| MetaClient::new(Channel::from_shared(a.clone()).unwrap().connect_lazy())).collect();
    (nodes, clients)
}

async fn stop(nodes: Vec<Node>) {
    for n in nodes {
        let _ = n.stop.send(());
        n.server.await.unwrap().unwrap();
        n.metad.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_voters_answer_the_same_view_from_every_node() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let liveness = Liveness { dead_after: Duration::from_secs(60), interval: Duration::from_secs(1) };
    let (nodes, clients) = group(&dirs, liveness).await;

    // Every node takes heartbeats and pack records (followers forward them to the leader).
    for (i, c) in clients.iter().enumerate() {
        let id = 100 + i as u64;
        c.clone().heartbeat(beat(id, &format!("127.0.0.1:{}", 7000 + id), id)).await.unwrap();
        let locations = vec![loc(i as u8, &format!("packs/{i}"), 0, 10)];
        c.clone().record_packs(pb::RecordPacksRequest { locations }).await.unwrap();
    }
    // Linearizable reads: every node answers with every write above, and the same rows.
    let mut views = Vec::new();
    for c in &clients {
        let mut view = c.clone().list_block_daemons(pb::ListBlockDaemonsRequest {}).await.unwrap().into_inner();
        assert_eq!(view.default_replication_factor, 3);
        assert!(view.daemons.iter().all(|d| d.live));
        view.daemons.sort_by_key(|d| d.id);
        assert_eq!(view.daemons.iter().map(|d| d.id).collect::<Vec<_>>(), vec![100, 101, 102]);
        views.push(view);
        let hashes = (0..3).map(hash).collect();
        let found = c.clone().locate_chunks(pb::LocateChunksRequest { hashes }).await.unwrap().into_inner();
        assert_eq!(found.locations.len(), 3);
    }
    assert!(views.windows(2).all(|w| w[0] == w[1]), "{views:?}");
    // A bad heartbeat is refused on a follower too, before anything is forwarded.
    let e = FsError::from_status(&clients[2].clone().heartbeat(beat(0, "127.0.0.1:1", 0)).await.unwrap_err());
    assert!(matches!(e, FsError::Invalid(_)));
    stop(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_daemon_is_declared_dead_by_every_node() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (nodes, clients) = group(&dirs, quick()).await;
    clients[1].clone().heartbeat(beat(5, "127.0.0.1:7005", 1)).await.unwrap();
    for c in &clients {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let view = c.clone().list_block_daemons(pb::ListBlockDaemonsRequest {}).await.unwrap().into_inner();
            assert_eq!(view.daemons.len(), 1, "the row is known everywhere: {view:?}");
            if !view.daemons[0].live {
                assert_eq!(view.default_replication_factor, 1, "no live daemons: still at least 1");
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "daemon 5 never went dead: {view:?}");
            tokio::time::sleep(quick().interval).await;
        }
    }
    stop(nodes).await;
}
