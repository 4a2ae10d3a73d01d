//! `GrpcMeta` against in-process fake metad servers (real tonic, loopback TCP): retries,
//! request ids and endpoint failover.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proto::pb::meta_server::{Meta, MetaServer};
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

use super::*;
use crate::engine::lock;

/// A metad stand-in: answers GetAttr and Create, records Create's request ids, and can
/// refuse the first `fail_first` calls (or all of them) as unavailable.
#[derive(Clone, Default)]
struct Fake {
    hits: Arc<AtomicUsize>,
    fail_first: Arc<AtomicUsize>,
    always_unavailable: Arc<AtomicBool>,
    not_found: Arc<AtomicBool>,
    ids: Arc<Mutex<Vec<Option<pb::RequestId>>>>,
}

impl Fake {
    fn gate(&self) -> Result<(), Status> {
        self.hits.fetch_add(1, Ordering::SeqCst);
        if self.always_unavailable.load(Ordering::SeqCst) {
            return Err(Status::unavailable("down"));
        }
        if self.not_found.load(Ordering::SeqCst) {
            return Err(FsError::NotFound.to_status());
        }
        let first = self.fail_first.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if first.is_ok() {
            return Err(Status::unavailable("reply lost"));
        }
        Ok(())
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

fn unimplemented<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented("fake"))
}

#[tonic::async_trait]
impl Meta for Fake {
    async fn get_share(&self, _: Request<pb::GetShareRequest>) -> Result<Response<pb::Share>, Status> {
        unimplemented()
    }
    async fn list_shares(&self, _: Request<pb::ListSharesRequest>) -> Result<Response<pb::ListSharesReply>, Status> {
        unimplemented()
    }
    async fn get_attr(&self, r: Request<pb::GetAttrRequest>) -> Result<Response<pb::AttrReply>, Status> {
        self.gate()?;
        Ok(Response::new(pb::AttrReply { attr: Some(pb::Attr { node: r.into_inner().node, ..Default::default() }) }))
    }
    async fn lookup(&self, _: Request<pb::LookupRequest>) -> Result<Response<pb::LookupReply>, Status> {
        unimplemented()
    }
    async fn create(&self, r: Request<pb::CreateRequest>) -> Result<Response<pb::CreateReply>, Status> {
        lock(&self.ids).push(r.get_ref().request_id);
        self.gate()?;
        Ok(Response::new(pb::CreateReply::default()))
    }
    async fn read_dir(&self, _: Request<pb::ReadDirRequest>) -> Result<Response<pb::ReadDirReply>, Status> {
        unimplemented()
    }
    async fn remove(&self, _: Request<pb::RemoveRequest>) -> Result<Response<pb::RemoveReply>, Status> {
        unimplemented()
    }
    async fn set_attr(&self, _: Request<pb::SetAttrRequest>) -> Result<Response<pb::SetAttrReply>, Status> {
        unimplemented()
    }
    async fn commit_extents(
        &self,
        _: Request<pb::CommitExtentsRequest>,
    ) -> Result<Response<pb::CommitExtentsReply>, Status> {
        unimplemented()
    }
    async fn acquire_write_lease(
        &self,
        _: Request<pb::AcquireWriteLeaseRequest>,
    ) -> Result<Response<pb::AcquireWriteLeaseReply>, Status> {
        unimplemented()
    }
    async fn get_extents(&self, _: Request<pb::GetExtentsRequest>) -> Result<Response<pb::GetExtentsReply>, Status> {
        unimplemented()
    }
    async fn fs_stat(&self, _: Request<pb::FsStatRequest>) -> Result<Response<pb::FsStatReply>, Status> {
        unimplemented()
    }
    async fn symlink(&self, _: Request<pb::SymlinkRequest>) -> Result<Response<pb::CreateReply>, Status> {
        unimplemented()
    }
    async fn read_link(&self, _: Request<pb::ReadLinkRequest>) -> Result<Response<pb::ReadLinkReply>, Status> {
        unimplemented()
    }
    async fn mknod(&self, _: Request<pb::MknodRequest>) -> Result<Response<pb::CreateReply>, Status> {
        unimplemented()
    }
    async fn link(&self, _: Request<pb::LinkRequest>) -> Result<Response<pb::LinkReply>, Status> {
        unimplemented()
    }
    async fn rename(&self, _: Request<pb::RenameRequest>) -> Result<Response<pb::RenameReply>, Status> {
        unimplemented()
    }
    async fn access(&self, _: Request<pb::AccessRequest>) -> Result<Response<pb::AccessReply>, Status> {
        unimplemented()
    }
    async fn heartbeat(&self, _: Request<pb::HeartbeatRequest>) -> Result<Response<pb::HeartbeatReply>, Status> {
        unimplemented()
    }
    async fn list_block_daemons(
        &self,
        _: Request<pb::ListBlockDaemonsRequest>,
    ) -> Result<Response<pb::ListBlockDaemonsReply>, Status> {
        unimplemented()
    }
    async fn record_packs(&self, _: Request<pb::RecordPacksRequest>) -> Result<Response<pb::RecordPacksReply>, Status> {
        unimplemented()
    }
    async fn locate_chunks(&self, _: Request<pb::LocateChunksRequest>) -> Result<Response<pb::LocateChunksReply>, Status> {
        unimplemented()
    }
}

/// Serves `fake` on a loopback port; returns its endpoint URI.
async fn serve(fake: Fake) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(Server::builder().add_service(MetaServer::new(fake)).serve_with_incoming(TcpIncoming::from(listener)));
    format!("http://{addr}")
}

const NODE: pb::NodeRef = pb::NodeRef { share_id: 1, ino: 2, generation: 3 };

#[test]
fn bad_endpoints_are_setup_errors() {
    assert!(matches!(GrpcMeta::connect_lazy("not a uri \u{1}"), Err(EngineError::MetadEndpoint { .. })));
    assert!(matches!(GrpcMeta::connect_lazy_many(&[], &ClientTls::plaintext()), Err(EngineError::NoMetadEndpoint)));
    // Without a TLS identity an https:// endpoint cannot be dialed: a setup error, not a
    // plaintext connection.
    let https = ["https://127.0.0.1:1".to_string()];
    assert!(matches!(
        GrpcMeta::connect_lazy_many(&https, &ClientTls::plaintext()),
        Err(EngineError::MetadEndpoint { .. })
    ));
}

#[tokio::test]
async fn unreachable_metad_is_unavailable_after_bounded_retries() {
    // Port 1 on loopback: connection refused at once.
    let meta = GrpcMeta::connect_lazy("http://127.0.0.1:1").expect("valid endpoint");
    let started = std::time::Instant::now();
    let err = meta.get_attr(NODE).await;
    assert!(matches!(err, Err(FsError::Unavailable(_))), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn a_retried_mutation_carries_the_same_request_id() {
    let fake = Fake::default();
    fake.fail_first.store(1, Ordering::SeqCst);
    let meta = GrpcMeta::connect_lazy(&serve(fake.clone()).await).expect("endpoint");
    meta.create(pb::CreateRequest::default()).await.expect("create after one retry");
    meta.create(pb::CreateRequest::default()).await.expect("second create");
    let ids = lock(&fake.ids).clone();
    assert_eq!(ids.len(), 3, "{ids:?}");
    let first = ids[0].expect("a mutation carries a request id");
    assert_eq!(ids[1], Some(first), "the retry re-sends the same id");
    let second = ids[2].expect("id");
    assert_eq!(second.client_id, first.client_id);
    assert_ne!(second.seq, first.seq, "a new logical call gets a new seq");
    // Another gateway process (another GrpcMeta) has another client id.
    assert_ne!(GrpcMeta::connect_lazy("http://127.0.0.1:1").expect("endpoint").ids.client_id, first.client_id);
}

#[tokio::test]
async fn fails_over_to_the_next_endpoint_and_sticks_to_it() {
    let down = Fake::default();
    down.always_unavailable.store(true, Ordering::SeqCst);
    let up = Fake::default();
    let endpoints = ["http://127.0.0.1:1".to_string(), serve(down.clone()).await, serve(up.clone()).await];
    let meta = GrpcMeta::connect_lazy_many(&endpoints, &ClientTls::plaintext()).expect("endpoints");
    let attr = meta.get_attr(NODE).await.expect("answered by the third endpoint");
    assert_eq!(attr.node, Some(NODE));
    assert_eq!((down.hits(), up.hits()), (1, 1));
    meta.get_attr(NODE).await.expect("second call");
    assert_eq!((down.hits(), up.hits()), (1, 2), "the endpoint that worked is used first");
    // When it goes down too, the call moves on (and around) again.
    up.always_unavailable.store(true, Ordering::SeqCst);
    down.always_unavailable.store(false, Ordering::SeqCst);
    meta.get_attr(NODE).await.expect("answered after wrapping around");
    assert_eq!((down.hits(), up.hits()), (2, 3));
}

#[tokio::test]
async fn filesystem_errors_are_not_retried() {
    let fake = Fake::default();
    fake.not_found.store(true, Ordering::SeqCst);
    let meta = GrpcMeta::connect_lazy_many(
        &[serve(fake.clone()).await, serve(Fake::default()).await],
        &ClientTls::plaintext(),
    )
    .expect("endpoints");
    assert_eq!(meta.get_attr(NODE).await, Err(FsError::NotFound));
    assert_eq!(fake.hits(), 1);
}

/// metad of the same process, called without a socket, comes first; its errors map like a
/// remote endpoint's; when it is unavailable the network endpoints behind it answer.
#[tokio::test]
async fn the_in_process_endpoint_comes_first_and_fails_over_to_the_network() {
    let local = Fake::default();
    let remote = Fake::default();
    let meta = GrpcMeta::connect_lazy_many(&[serve(remote.clone()).await], &ClientTls::plaintext())
        .expect("endpoint")
        .with_in_process(Some(LocalMeta(in_process_transport(MetaServer::new(local.clone())))));
    assert_eq!(meta.get_attr(NODE).await.expect("answered in-process").node, Some(NODE));
    meta.create(pb::CreateRequest::default()).await.expect("create in-process");
    assert_eq!((local.hits(), remote.hits()), (2, 0), "no call left the process");
    assert!(lock(&local.ids)[0].is_some(), "in-process mutations carry request ids too");

    local.not_found.store(true, Ordering::SeqCst);
    assert_eq!(meta.get_attr(NODE).await, Err(FsError::NotFound), "filesystem errors map as over the network");
    assert_eq!(remote.hits(), 0, "and are not retried elsewhere");

    local.not_found.store(false, Ordering::SeqCst);
    local.always_unavailable.store(true, Ordering::SeqCst);
    assert_eq!(meta.get_attr(NODE).await.expect("answered by the network endpoint").node, Some(NODE));
    assert_eq!(remote.hits(), 1);
}

/// Serves `fake` on a loopback port over mutual TLS (clients need a certificate from `ca`)
/// behind a role gate; returns its endpoint URI, written `http://` as configurations may.
async fn serve_tls(fake: Fake, ca: &cluster::tls::Ca, policy: cluster::grpc_tls::Policy) -> String {
    use cluster::grpc_tls::{RoleGateLayer, server_tls};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server_id = ca.issue(&["127.0.0.1".to_string()], &cluster::tls::Role::Metad).expect("server certificate");
    let server = Server::builder()
        .tls_config(server_tls(&ca.anchor(), &server_id))
        .expect("server TLS")
        .layer(RoleGateLayer::new(policy))
        .add_service(MetaServer::new(fake));
    tokio::spawn(server.serve_with_incoming(TcpIncoming::from(listener)));
    format!("http://{addr}")
}

#[tokio::test]
async fn metad_over_mutual_tls_presents_the_gateway_certificate_and_obeys_the_gate() {
    use cluster::tls::{Ca, Role};
    let ca = Ca::generate().expect("ca");
    let fake = Fake::default();
    // Gateways may read; nobody may create (to see a refusal).
    let url = serve_tls(fake.clone(), &ca, |role, path| *role == Role::Gateway && !path.ends_with("/Create")).await;
    let as_role = |role: Role| {
        let id = ca.issue(&["127.0.0.1".to_string()], &role).expect("client certificate");
        ClientTls::mutual(&ca.anchor(), &id).expect("client TLS")
    };
    let gateway = GrpcMeta::connect_lazy_many(std::slice::from_ref(&url), &as_role(Role::Gateway)).expect("endpoint");
    assert_eq!(gateway.get_attr(NODE).await.expect("a gateway certificate may read").node, Some(NODE));
    let refused = gateway.create(pb::CreateRequest::default()).await;
    assert!(matches!(&refused, Err(FsError::Internal(m)) if m.contains("PermissionDenied")), "{refused:?}");
    assert_eq!(fake.hits(), 1, "a refused call never reaches the service, and is not retried");

    let tool = GrpcMeta::connect_lazy_many(std::slice::from_ref(&url), &as_role(Role::Tool)).expect("endpoint");
    assert!(matches!(tool.get_attr(NODE).await, Err(FsError::Internal(m)) if m.contains("PermissionDenied")));

    // A plaintext client, and one whose certificate comes from another CA, are refused by TLS.
    let plain = GrpcMeta::connect_lazy(&url).expect("endpoint");
    let r = plain.get_attr(NODE).await;
    assert!(r.is_err(), "{r:?}");
    let other = Ca::generate().expect("other ca");
    let stranger = other.issue(&["127.0.0.1".to_string()], &Role::Gateway).expect("certificate");
    let foreign = ClientTls::mutual(&ca.anchor(), &stranger).expect("client TLS");
    let foreign = GrpcMeta::connect_lazy_many(std::slice::from_ref(&url), &foreign).expect("endpoint");
    let r = foreign.get_attr(NODE).await;
    assert!(r.is_err(), "{r:?}");
    assert_eq!(fake.hits(), 1, "none of them reached the service");
}
