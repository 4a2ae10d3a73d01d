//! The `Control` service: node and cluster status, and membership changes, for operators.
//!
//! Owns: turning Raft metrics into `StatusReply`/`MembersReply`, forwarding membership
//! calls from a follower to the leader, and share creation / option changes (one Raft
//! command each, which `Metad::write` forwards itself; options are checked here and again
//! when applied). The `Control` service is served on the control port
//! *and* on metad's internal port (with `Meta` and `Raft`), so a follower reaches the leader's
//! control API at the leader's advertised Raft address. A forwarded call carries the
//! [`FORWARDED`] metadata key; a node that receives one and does not lead answers `NotLeader`
//! instead of forwarding again.
//! Must never: block on the Raft core for Status/Members (they read the metrics watch only).

use openraft::async_runtime::WatchReceiver;
use proto::pb;
use proto::pb::control_client::ControlClient;
use tonic::{Request, Response, Status};

use crate::error::MetadError;
use crate::service::convert;
use crate::service::meta::share_to_pb;
use crate::validate;
use crate::membership::MembersView;
use crate::node::{FORWARD_DEADLINE, Metad};

/// Metadata key marking a control call forwarded by another node.
pub const FORWARDED: &str = "x-tessera-forwarded";

/// Answers operator requests.
#[derive(Clone)]
pub struct ControlService {
    metad: Metad,
}

impl ControlService {
    pub fn new(metad: Metad) -> Self {
        ControlService { metad }
    }

    /// Forwards a call to the leader when `err` says this node does not lead and the call did
    /// not already come forwarded; otherwise returns `err` as a status.
    async fn forward<Req, F, Fut>(
        &self,
        forwarded: bool,
        err: MetadError,
        req: Req,
        call: F,
    ) -> Result<Response<pb::MembersReply>, Status>
    where
        F: FnOnce(ControlClient<tonic::transport::Channel>, Request<Req>) -> Fut,
        Fut: std::future::Future<Output = Result<Response<pb::MembersReply>, Status>>,
    {
        let MetadError::NotLeader { leader: Some(leader) } = err else { return Err(err.to_status()) };
        if forwarded || leader == self.metad.node_id() {
            return Err(err.to_status());
        }
        let Some(addr) = self.metad.node_addr(leader) else { return Err(err.to_status()) };
        let endpoint = self
            .metad
            .inner
            .client_tls
            .endpoint(&addr)
            .map_err(|e| Status::internal(e.to_string()))?
            .connect_timeout(std::time::Duration::from_secs(2));
        let client = ControlClient::new(endpoint.connect_lazy());
        let mut request = Request::new(req);
        request.metadata_mut().insert(FORWARDED, tonic::metadata::MetadataValue::from_static("1"));
        call(client, request).await
    }
}

fn is_forwarded<T>(request: &Request<T>) -> bool {
    request.metadata().contains_key(FORWARDED)
}

fn members_reply(v: MembersView) -> pb::MembersReply {
    pb::MembersReply {
        members: v
            .members
            .into_iter()
            .map(|m| pb::Member { node_id: m.node_id, addr: m.addr, voter: m.voter, matched_index: m.matched_index })
            .collect(),
        leader_id: v.leader_id,
        term: v.term,
        commit_index: v.commit_index,
    }
}

#[tonic::async_trait]
impl pb::control_server::Control for ControlService {
    async fn status(&self, _request: Request<pb::StatusRequest>) -> Result<Response<pb::StatusReply>, Status> {
        let rx = self.metad.raft().metrics();
        let m = rx.borrow_watched();
        Ok(Response::new(pb::StatusReply {
            node_id: self.metad.node_id(),
            leader_id: m.current_leader,
            term: m.current_term,
            last_log_index: m.last_log_index.unwrap_or(0),
            last_applied: m.last_applied.as_ref().map(|l| l.index()).unwrap_or(0),
            voters: m.membership_config.membership().voter_ids().count() as u32,
            version: env!("CARGO_PKG_VERSION").to_string(),
            snapshot_index: m.snapshot.as_ref().map(|l| l.index()),
            purged_index: m.purged.as_ref().map(|l| l.index()),
        }))
    }

    async fn members(&self, request: Request<pb::MembersRequest>) -> Result<Response<pb::MembersReply>, Status> {
        let forwarded = is_forwarded(&request);
        let view = self.metad.members();
        // Matched indexes are only known on the leader: ask it when this node does not lead.
        if view.leader_id.is_some_and(|l| l != self.metad.node_id()) && !forwarded {
            let err = MetadError::NotLeader { leader: view.leader_id };
            if let Ok(r) = self
                .forward(false, err, request.into_inner(), |mut c, r| async move {
                    tokio::time::timeout(FORWARD_DEADLINE, c.members(r))
                        .await
                        .map_err(|_| Status::deadline_exceeded("forwarding Members"))?
                })
                .await
            {
                return Ok(r);
            }
        }
        Ok(Response::new(members_reply(view)))
    }

    async fn add_node(&self, request: Request<pb::AddNodeRequest>) -> Result<Response<pb::MembersReply>, Status> {
        let forwarded = is_forwarded(&request);
        let req = request.into_inner();
        match self.metad.add_node(req.node_id, &req.addr, req.voter).await {
            Ok(v) => Ok(Response::new(members_reply(v))),
            Err(e) => self.forward(forwarded, e, req, |mut c, r| async move { c.add_node(r).await }).await,
        }
    }

    async fn remove_node(&self, request: Request<pb::RemoveNodeRequest>) -> Result<Response<pb::MembersReply>, Status> {
        let forwarded = is_forwarded(&request);
        let req = request.into_inner();
        match self.metad.remove_node(req.node_id).await {
            Ok(v) => Ok(Response::new(members_reply(v))),
            Err(e) => self.forward(forwarded, e, req, |mut c, r| async move { c.remove_node(r).await }).await,
        }
    }

    async fn create_share(&self, request: Request<pb::CreateShareRequest>) -> Result<Response<pb::Share>, Status> {
        let req = request.into_inner();
        check_share_path(&req.export_path)?;
        if req.name.is_empty() || req.name.len() > validate::MAX_NAME_LEN {
            return Err(Status::invalid_argument(format!("share name must be 1..={} bytes", validate::MAX_NAME_LEN)));
        }
        let changes = convert::create_share_changes(&req).map_err(|e| e.to_status())?;
        validate::check_share_changes(&changes).map_err(|e| proto::FsError::from(e).to_status())?;
        self.metad.create_share(&req.name, &req.export_path, changes).await.map_err(|e| e.to_status())?;
        self.share(req.export_path).await
    }

    async fn update_share(&self, request: Request<pb::UpdateShareRequest>) -> Result<Response<pb::Share>, Status> {
        let req = request.into_inner();
        check_share_path(&req.export_path)?;
        let changes = convert::update_share_changes(&req).map_err(|e| e.to_status())?;
        validate::check_share_changes(&changes).map_err(|e| proto::FsError::from(e).to_status())?;
        self.metad.update_share(&req.export_path, changes).await.map_err(|e| e.to_status())?;
        self.share(req.export_path).await
    }

    async fn set_share_replication(
        &self,
        request: Request<pb::SetShareReplicationRequest>,
    ) -> Result<Response<pb::Share>, Status> {
        let req = request.into_inner();
        check_share_path(&req.export_path)?;
        self.metad
            .set_share_replication(&req.export_path, req.replication_factor)
            .await
            .map_err(|e| e.to_status())?;
        self.share(req.export_path).await
    }
}

impl ControlService {
    /// The share at `path`, as the Meta service's GetShare answers it (linearizable read).
    async fn share(&self, path: String) -> Result<Response<pb::Share>, Status> {
        let share = self.metad.read(move |t| t.share_by_path(&path)).await.map_err(|e| e.to_status())?;
        Ok(Response::new(share_to_pb(&share)))
    }
}

/// An export path must be absolute and within the length limit.
fn check_share_path(path: &str) -> Result<(), Status> {
    if !path.starts_with('/') || path.len() > validate::MAX_SHARE_PATH_LEN {
        return Err(Status::invalid_argument(format!(
            "export path must start with '/' and be at most {} bytes",
            validate::MAX_SHARE_PATH_LEN
        )));
    }
    Ok(())
}
