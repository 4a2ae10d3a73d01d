//! A fake metad for tests: answers Heartbeat and ListBlockDaemons from a shared table of
//! daemons (tests decide who is live), and RecordPacks / LocateChunks from a table of pack
//! locations (with metad's limits and checks); every other call is unimplemented.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use proto::pb;
use tonic::{Request, Response, Status};

#[derive(Default)]
pub struct State {
    /// id -> (QUIC address, live)
    pub daemons: BTreeMap<u64, (String, bool)>,
    pub rf: u32,
    /// Heartbeats received: (id, addr, chunks).
    pub heartbeats: Vec<(u64, String, u64)>,
    /// hash -> its latest recorded pack location.
    pub packs: BTreeMap<Vec<u8>, pb::PackLocation>,
    /// RecordPacks calls answered.
    pub record_calls: u64,
}

#[derive(Clone, Default)]
pub struct FakeMetad {
    pub state: Arc<Mutex<State>>,
    /// Notified (one stored permit) on every heartbeat.
    pub beat: Arc<tokio::sync::Notify>,
}

impl FakeMetad {
    /// Serves on a loopback port; returns the endpoint URL.
    pub async fn serve(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind fake metad");
        let addr: SocketAddr = listener.local_addr().expect("addr");
        let svc = pb::meta_server::MetaServer::new(self.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        format!("http://{addr}")
    }

    pub fn set(&self, id: u64, addr: SocketAddr, live: bool) {
        self.state.lock().expect("lock").daemons.insert(id, (addr.to_string(), live));
    }
}

#[tonic::async_trait]
impl pb::meta_server::Meta for FakeMetad {
    async fn heartbeat(&self, r: Request<pb::HeartbeatRequest>) -> Result<Response<pb::HeartbeatReply>, Status> {
        let r = r.into_inner();
        let mut s = self.state.lock().expect("lock");
        s.heartbeats.push((r.id, r.addr.clone(), r.chunks));
        s.daemons.entry(r.id).or_insert((r.addr, true));
        self.beat.notify_one();
        Ok(Response::new(pb::HeartbeatReply { dead_after_ms: 10_000, interval_ms: 60_000 }))
    }

    async fn list_block_daemons(
        &self,
        _: Request<pb::ListBlockDaemonsRequest>,
    ) -> Result<Response<pb::ListBlockDaemonsReply>, Status> {
        let s = self.state.lock().expect("lock");
        let daemons = s
            .daemons
            .iter()
            .map(|(id, (addr, live))| pb::BlockDaemon {
                id: *id,
                addr: addr.clone(),
                live: *live,
                ..Default::default()
            })
            .collect();
        Ok(Response::new(pb::ListBlockDaemonsReply { daemons, default_replication_factor: s.rf }))
    }

    async fn get_share(&self, _: Request<pb::GetShareRequest>) -> Result<Response<pb::Share>, Status> {
        Err(Status::unimplemented("fake metad"))
    }

    async fn list_shares(&self, _: Request<pb::ListSharesRequest>) -> Result<Response<pb::ListSharesReply>, Status> {
        Err(Status::unimplemented("fake metad"))
    }

    async fn get_attr(&self, _: Request<pb::GetAttrRequest>) -> Result<Response<pb::AttrReply>, Status> {
        Err(Status::unimplemented("fake metad"))
    }

    async fn lookup(&self, _: Request<pb::LookupRequest>) -> Result<Response<pb::LookupReply>, Status> {
        Err(Status::unimplemented("fake metad"))
    }

    async fn create(&self, _: Request<pb::CreateRequest>) -> Result<Response<pb::CreateReply>, Status> {
        Err(Status::unimplemented("fake metad"))
    }

    async fn read_dir(&self, _: Request<pb::ReadDirRequest>) -> Result<Response<pb::ReadDirReply>, Status> {
        Err(Status::unimplemented("fake metad"))
    }

    async fn remove(&self, _: Request<pb::RemoveRequest>) -> Result<Response<pb::RemoveReply>, Status> {
        Err(Status::unimplemented("fake metad"))
    }

    async fn set_attr(&self, _: Request<pb::SetAttrRequest>) -> Result<Response<pb::SetAttrReply>, Status> {
        Err(Status::unimplemented("fake metad"))
    }

    async fn get_extents(&self, _: Request<pb::GetExtentsRequest>) -> Result<Response<pb::GetExtentsReply>, Status> {
        Err(Status::unimplemented("fake metad"))
    }

    async fn fs_stat(&self, _: Request<pb::FsStatRequest>) -> Result<Response<pb::FsStatReply>, Status> {
        Err(Status::unimplemented("fake metad"))
    }

    async fn symlink(&self, _: Request<pb::SymlinkRequest>) -> Result<Response<pb::CreateReply>, Status> {
        Err(Status::unimplemented("fake metad"))
    }

    async fn read_link(&self, _: Request<pb::ReadLinkRequest>) -> Result<Response<pb::ReadLinkReply>, Status> {
        Err(Status::unimplemented("fake metad"))
    }

    async fn mknod(&self, _: Request<pb::MknodRequest>) -> Result<Response<pb::CreateReply>, Status> {
        Err(Status::unimplemented("fake metad"))
    }

    async fn link(&self, _: Request<pb::LinkRequest>) -> Result<Response<pb::LinkReply>, Status> {
        Err(Status::unimplemented("fake metad"))
    }

    async fn rename(&self, _: Request<pb::RenameRequest>) -> Result<Response<pb::RenameReply>, Status> {
        Err(Status::unimplemented("fake metad"))
    }

    async fn access(&self, _: Request<pb::AccessRequest>) -> Result<Response<pb::AccessReply>, Status> {
        Err(Status::unimplemented("fake metad"))
    }
    async fn commit_extents(
        &self,
        _: Request<pb::CommitExtentsRequest>,
    ) -> Result<Response<pb::CommitExtentsReply>, Status> {
        Err(Status::unimplemented("fake metad"))
    }
    async fn acquire_write_lease(
        &self,
        _: Request<pb::AcquireWriteLeaseRequest>,
    ) -> Result<Response<pb::AcquireWriteLeaseReply>, Status> {
        Err(Status::unimplemented("fake metad"))
    }

    async fn record_packs(&self, r: Request<pb::RecordPacksRequest>) -> Result<Response<pb::RecordPacksReply>, Status> {
        let r = r.into_inner();
        if r.locations.len() > 65_536 {
            return Err(Status::invalid_argument("too many pack locations"));
        }
        for l in &r.locations {
            if l.hash.len() != 32 || l.pack.is_empty() || l.pack.len() > 1024 || l.length == 0 {
                return Err(Status::invalid_argument("invalid pack location"));
            }
        }
        let mut s = self.state.lock().expect("lock");
        s.record_calls += 1;
        for l in r.locations {
            s.packs.insert(l.hash.clone(), l);
        }
        Ok(Response::new(pb::RecordPacksReply {}))
    }

    async fn locate_chunks(
        &self,
        r: Request<pb::LocateChunksRequest>,
    ) -> Result<Response<pb::LocateChunksReply>, Status> {
        let r = r.into_inner();
        if r.hashes.len() > 4096 {
            return Err(Status::invalid_argument("too many hashes"));
        }
        let s = self.state.lock().expect("lock");
        let locations = r.hashes.iter().filter_map(|h| s.packs.get(h).cloned()).collect();
        Ok(Response::new(pb::LocateChunksReply { locations }))
    }
}
