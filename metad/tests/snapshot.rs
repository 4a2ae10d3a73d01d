//! A snapshot built from one store and installed into another reproduces the namespace:
//! shares, directory entries (with their cookies), extents, counters, chunk references,
//! symlink targets and the remembered replies of request ids.
#![allow(clippy::unwrap_used)] // tests may unwrap (workspace lint note)

use metad::command::NodeKey;
use metad::fsm::query::ReadTables;
use metad::model::Cred;
use metad::service::meta::MetaService;
use metad::snapshot_file::SnapshotDir;
use metad::state_machine::StateMachineStore;
use metad::{Metad, MetadOptions, store};
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use proto::pb::meta_server::Meta;
use proto::pb::{self, CreateHow, FileType};
use redb::{ReadableDatabase, ReadableTable};
use tonic::Request;

fn rows<K: redb::Key + 'static, V: redb::Value + 'static>(
    rtx: &redb::ReadTransaction,
    def: redb::TableDefinition<K, V>,
) -> Vec<String>
where
    for<'a> K::SelfType<'a>: std::fmt::Debug,
    for<'a> V::SelfType<'a>: std::fmt::Debug,
{
    rtx.open_table(def)
        .unwrap()
        .iter()
        .unwrap()
        .map(|r| {
            let (k, v) = r.unwrap();
            format!("{:?}={:?}", k.value(), v.value())
        })
        .collect()
}

fn dump(db: &redb::Database, root: NodeKey, file: NodeKey) -> String {
    let rtx = db.begin_read().unwrap();
    let t = ReadTables::open(&rtx).unwrap();
    let root_cred = Cred::default();
    let refs: Vec<(Vec<u8>, u64)> = rtx
        .open_table(store::CHUNK_REFS)
        .unwrap()
        .iter()
        .unwrap()
        .map(|r| {
            let (k, v) = r.unwrap();
            (k.value().to_vec(), v.value())
        })
        .collect();
    let counters: Vec<(String, u64)> = rtx
        .open_table(store::COUNTERS)
        .unwrap()
        .iter()
        .unwrap()
        .map(|r| {
            let (k, v) = r.unwrap();
            (k.value().to_string(), v.value())
        })
        .collect();
    format!(
        "{:?}\n{:?}\n{:?}\n{:?}\n{refs:?}\n{counters:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}",
        t.list_shares().unwrap(),
        t.read_dir(&root_cred, &root, 0, 0, 100).unwrap(),
        t.get_extents(&root_cred, &file, 0, u64::MAX).unwrap(),
        t.fs_stat(&root).unwrap(),
        rows(&rtx, store::INODES),
        rows(&rtx, store::SYMLINKS),
        rows(&rtx, store::REQUESTS),
        rows(&rtx, store::REQUEST_CLIENTS),
        rows(&rtx, store::REQUEST_LRU),
    )
}

fn cred() -> pb::Cred {
    pb::Cred { uid: 0, gid: 0, gids: vec![] }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_round_trip_reproduces_the_namespace() {
    let src = tempfile::tempdir().unwrap();
    let (root, file) = {
        let m = Metad::open(MetadOptions {
            node_id: 1,
            data_dir: src.path().to_path_buf(),
            advertise_addr: "http://127.0.0.1:1".into(),
            default_share: Some(("default".into(), "/export".into())),
            client_tls: cluster::grpc_tls::ClientTls::plaintext(),
        })
        .await
        .unwrap();
        let svc = MetaService::new(m.clone());
        let share = svc
            .get_share(Request::new(pb::GetShareRequest { export_path: "/export".into() }))
            .await
            .unwrap()
            .into_inner();
        let root = share.root.unwrap().node.unwrap();
        let mut file = None;
        for (name, kind) in [("d", FileType::Directory), ("f", FileType::Regular), ("g", FileType::Regular)] {
            let r = svc
                .create(Request::new(pb::CreateRequest {
                    dir: Some(root),
                    name: name.as_bytes().to_vec(),
                    kind: kind as i32,
                    mode: 0o640,
                    uid: 5,
                    gid: 6,
                    how: CreateHow::Guarded as i32,
                    verifier: vec![],
                    cred: Some(cred()),
                    request_id: Some(pb::RequestId { client_id: 9, seq: name.as_bytes()[0].into() }),
                    ..Default::default()
                }))
                .await
                .unwrap()
                .into_inner();
            if name == "f" {
                file = r.attr.unwrap().node;
            }
        }
        let file = file.unwrap();
        let extents = vec![
            pb::Extent { offset: 0, length: 10, hash: vec![1; 32], chunk_offset: 0, chunk_length: 10 },
            pb::Extent { offset: 10, length: 5, hash: vec![1; 32], chunk_offset: 5, chunk_length: 10 },
        ];
        svc.commit_extents(Request::new(pb::CommitExtentsRequest {
            node: Some(file),
            range_start: 0,
            range_end: 15,
            extents,
            cred: Some(cred()),
            ..Default::default()
        }))
        .await
        .unwrap();
        svc.remove(Request::new(pb::RemoveRequest {
            dir: Some(root),
            name: b"g".to_vec(),
            directory: false,
            cred: Some(cred()),
            ..Default::default()
        }))
        .await
        .unwrap();
        let link = pb::LinkRequest {
            node: Some(file),
            dir: Some(root),
            name: b"f2".to_vec(),
            cred: Some(cred()),
            request_id: None,
        };
        svc.link(Request::new(link)).await.unwrap();
        let symlink = pb::SymlinkRequest {
            dir: Some(root),
            name: b"l".to_vec(),
            target: b"f".to_vec(),
            mode: 0o777,
            cred: Some(cred()),
            request_id: None,
        };
        svc.symlink(Request::new(symlink)).await.unwrap();
        m.shutdown().await.unwrap();
        let key = |n: pb::NodeRef| NodeKey { share_id: n.share_id, ino: n.ino, generation: n.generation };
        (key(root), key(file))
    };

    let src_db = store::open(src.path()).unwrap();
    let mut src_sm = StateMachineStore::new(src_db.clone(), SnapshotDir::open(src.path()).unwrap());
    let snap = src_sm.build_snapshot().await.unwrap();
    assert!(snap.meta.last_log_id.is_some());

    let dst = tempfile::tempdir().unwrap();
    let dst_db = store::open(dst.path()).unwrap();
    let mut dst_sm = StateMachineStore::new(dst_db.clone(), SnapshotDir::open(dst.path()).unwrap());
    // The image is a file under snapshots/; install it through a received copy, as a follower does.
    let mut image = snap.snapshot;
    let bytes = image.read_all().unwrap();
    let received = |data: &[u8]| {
        let dir = SnapshotDir::open(dst.path()).unwrap();
        let mut inc = dir.incoming().unwrap();
        inc.append(data).unwrap();
        inc.finish().unwrap()
    };
    dst_sm.install_snapshot(&snap.meta, received(&bytes)).await.unwrap();

    let before = dump(&src_db, root, file);
    assert!(before.contains("[1, 1, 1"), "the chunk is referenced: {before}");
    assert!(before.contains("=[102]"), "the symlink target is in the image: {before}");
    assert!(before.contains("(9, 100)="), "remembered replies are in the image: {before}");
    assert_eq!(dump(&dst_db, root, file), before);
    assert_eq!(dst_sm.applied_state().await.unwrap(), src_sm.applied_state().await.unwrap());
    let mut current = dst_sm.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(current.meta, snap.meta);
    assert_eq!(current.snapshot.read_all().unwrap(), bytes, "the installed image is kept as a file");

    // A corrupt image is refused, not half-installed.
    let err = dst_sm.install_snapshot(&snap.meta, received(b"{not json")).await;
    assert!(err.is_err());
    assert_eq!(dump(&dst_db, root, file), before);
}
