//! A three-voter metad cluster over real gRPC on loopback: replication through the `Raft`
//! service, followers serving reads and writes by forwarding to the leader, a learner catching
//! up from a snapshot streamed over `StreamSnapshot`, membership through the `Control` API,
//! and fail-over to a new leader without losing a committed change.
#![allow(clippy::unwrap_used)] // tests may unwrap (workspace lint note)

use std::collections::BTreeMap;
use std::time::Duration;

use metad::service::control::ControlService;
use metad::service::meta::MetaService;
use metad::{Bootstrap, Metad, MetadOptions};
use openraft::async_runtime::WatchReceiver;
use proto::FsError;
use proto::pb::control_server::Control;
use proto::pb::meta_server::Meta;
use proto::pb::{self, CreateHow, FileType};
use tonic::Request;
use tonic::transport::server::TcpIncoming;

const DEADLINE: Duration = Duration::from_secs(20);

struct Node {
    id: u64,
    metad: Metad,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

impl Node {
    async fn kill(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.server.await.unwrap().unwrap();
        self.metad.shutdown().await.unwrap();
    }
}

async fn leader_of(nodes: &[Node], not: Option<u64>) -> u64 {
    let m = nodes[0]
        .metad
        .raft()
        .wait(Some(DEADLINE))
        .metrics(|m| m.current_leader.is_some() && m.current_leader != not, "a leader")
        .await
        .unwrap();
    m.current_leader.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_voters_replicate_and_fail_over() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
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
        let opts = MetadOptions {
            node_id: id,
            data_dir: dirs[i].path().to_path_buf(),
            advertise_addr: members[&id].clone(),
            default_share: Some(("default".into(), "/export".into())),
            client_tls: cluster::grpc_tls::ClientTls::plaintext(),
        };
        let bootstrap = if id == 1 { Bootstrap::Members(members.clone()) } else { Bootstrap::Join };
        let metad = Metad::start(&opts, bootstrap).await.unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let router = tonic::transport::Server::builder()
            .add_service(metad.meta_service())
            .add_service(metad.raft_service())
            .add_service(metad.control_service());
        let server = tokio::spawn(router.serve_with_incoming_shutdown(incoming, async {
            let _ = stopped.await;
        }));
        nodes.push(Node { id, metad, stop: Some(stop), server });
    }
    for n in &nodes {
        n.metad.wait_ready(Some(&("default".to_string(), "/export".to_string()))).await.unwrap();
    }

    let leader_id = leader_of(&nodes, None).await;
    let leader = nodes.iter().find(|n| n.id == leader_id).unwrap();
    let meta = MetaService::new(leader.metad.clone());
    let share =
        meta.get_share(Request::new(pb::GetShareRequest { export_path: "/export".into() })).await.unwrap().into_inner();
    let root = share.root.unwrap().node.unwrap();
    let created = meta
        .create(Request::new(pb::CreateRequest {
            dir: Some(root),
            name: b"replicated".to_vec(),
            kind: FileType::Regular as i32,
            mode: 0o600,
            uid: 1,
            gid: 1,
            how: CreateHow::Guarded as i32,
            verifier: vec![],
            cred: cred(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let file = created.attr.unwrap().node.unwrap();
    let extent = pb::Extent { offset: 0, length: 4096, hash: vec![7; 32], chunk_offset: 0, chunk_length: 4096 };
    meta.commit_extents(Request::new(pb::CommitExtentsRequest {
        node: Some(file),
        range_start: 0,
        range_end: 4096,
        extents: vec![extent.clone()],
        cred: cred(),
        ..Default::default()
    }))
    .await
    .unwrap();
    let applied = leader.metad.raft().metrics().borrow_watched().last_applied.unwrap().index();

    // Followers apply the same log and serve clients too: reads through the leader's read
    // index, writes forwarded to the leader.
    for n in nodes.iter().filter(|n| n.id != leader_id) {
        n.metad.raft().wait(Some(DEADLINE)).applied_index_at_least(Some(applied), "replicated").await.unwrap();
        let svc = MetaService::new(n.metad.clone());
        let attr = svc.get_attr(Request::new(pb::GetAttrRequest { node: Some(file) })).await.unwrap().into_inner();
        assert_eq!(attr.attr.unwrap().size, 4096);
        let name = format!("via-{}", n.id).into_bytes();
        let req = pb::CreateRequest {
            dir: Some(root),
            name: name.clone(),
            kind: FileType::Regular as i32,
            mode: 0o600,
            how: CreateHow::Guarded as i32,
            cred: cred(),
            ..Default::default()
        };
        svc.create(Request::new(req.clone())).await.unwrap();
        // A write that reads its own effect on another follower: linearizable.
        let other = nodes.iter().find(|o| o.id != leader_id && o.id != n.id).unwrap();
        let seen = MetaService::new(other.metad.clone())
            .lookup(Request::new(pb::LookupRequest { dir: Some(root), name: name.clone(), cred: cred() }))
            .await;
        assert!(seen.is_ok(), "a forwarded create is visible through the other follower");
        let again = svc.create(Request::new(req)).await;
        assert_eq!(FsError::from_status(&again.unwrap_err()), FsError::Exists);
    }
    let applied = leader.metad.raft().metrics().borrow_watched().last_applied.unwrap().index();

    // A snapshot replaces the log; a new learner can then only catch up by receiving it
    // through the `StreamSnapshot` RPC.
    let lr = leader.metad.raft();
    lr.trigger().snapshot().await.unwrap();
    lr.wait(Some(DEADLINE))
        .metrics(|m| m.snapshot.is_some_and(|s| s.index() >= applied), "snapshot built")
        .await
        .unwrap();
    lr.trigger().purge_log(applied).await.unwrap();
    lr.wait(Some(DEADLINE)).metrics(|m| m.purged.is_some_and(|p| p.index() >= applied), "log purged").await.unwrap();
    let learner = start_learner(4).await;
    // Asked on a follower, AddNode is forwarded to the leader; it returns once node 4 caught up.
    let follower = nodes.iter().find(|n| n.id != leader_id).unwrap();
    let control = ControlService::new(follower.metad.clone());
    let added = control
        .add_node(Request::new(pb::AddNodeRequest { node_id: 4, addr: learner.1.clone(), voter: false }))
        .await
        .unwrap()
        .into_inner();
    let four = added.members.iter().find(|m| m.node_id == 4).unwrap();
    assert!(!four.voter && four.matched_index.is_some_and(|i| i >= applied), "{added:?}");
    let m = learner
        .0
        .metad
        .raft()
        .wait(Some(DEADLINE))
        .applied_index_at_least(Some(applied), "learner caught up")
        .await
        .unwrap();
    assert!(m.snapshot.is_some_and(|s| s.index() >= applied), "the learner installed the leader's snapshot");
    assert!(learner.0.metad.snapshot_dir().path().read_dir().unwrap().count() >= 1, "kept as a file");
    let members = control.members(Request::new(pb::MembersRequest {})).await.unwrap().into_inner();
    assert_eq!(members.leader_id, Some(leader_id));
    assert_eq!(members.members.iter().filter(|m| m.voter).count(), 3);
    // Removing the learner again, then re-adding it, works through any node.
    let removed = control.remove_node(Request::new(pb::RemoveNodeRequest { node_id: 4 })).await.unwrap().into_inner();
    assert!(removed.members.iter().all(|m| m.node_id != 4), "{removed:?}");
    control
        .add_node(Request::new(pb::AddNodeRequest { node_id: 4, addr: learner.1.clone(), voter: false }))
        .await
        .unwrap();
    let (learner_node, _, learner_dir) = learner;
    nodes.push(learner_node);

    // Kill the leader: the two survivors elect a new one that still has the committed change.
    let pos = nodes.iter().position(|n| n.id == leader_id).unwrap();
    nodes.remove(pos).kill().await;
    let new_leader_id = leader_of(&nodes, Some(leader_id)).await;
    let new_leader = nodes.iter().find(|n| n.id == new_leader_id).unwrap();
    let meta = MetaService::new(new_leader.metad.clone());
    let got = meta
        .get_extents(Request::new(pb::GetExtentsRequest { node: Some(file), offset: 0, length: 1 << 20, cred: cred() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.extents, vec![extent]);
    assert_eq!(got.attr.unwrap().size, 4096);
    let st = ControlService::new(new_leader.metad.clone())
        .status(Request::new(pb::StatusRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((st.leader_id, st.voters), (Some(new_leader_id), 3));
    // And it can still commit with two of three voters.
    meta.remove(Request::new(pb::RemoveRequest {
        dir: Some(root),
        name: b"replicated".to_vec(),
        directory: false,
        cred: cred(),
        ..Default::default()
    }))
    .await
    .unwrap();

    for n in nodes {
        n.kill().await;
    }
    drop(learner_dir);
}

fn cred() -> Option<pb::Cred> {
    Some(pb::Cred { uid: 0, gid: 0, gids: vec![] })
}

/// Starts a node that joins later (no bootstrap) and serves it; returns it and its address.
async fn start_learner(id: u64) -> (Node, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let incoming = TcpIncoming::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = format!("http://{}", incoming.local_addr().unwrap());
    let opts = MetadOptions {
        node_id: id,
        data_dir: dir.path().to_path_buf(),
        advertise_addr: addr.clone(),
        default_share: None,
        client_tls: cluster::grpc_tls::ClientTls::plaintext(),
    };
    let metad = Metad::start(&opts, Bootstrap::Join).await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let router = tonic::transport::Server::builder()
        .add_service(metad.meta_service())
        .add_service(metad.raft_service())
        .add_service(metad.control_service());
    let server = tokio::spawn(router.serve_with_incoming_shutdown(incoming, async {
        let _ = stopped.await;
    }));
    (Node { id, metad, stop: Some(stop), server }, addr, dir)
}
