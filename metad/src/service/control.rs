//! The `Control` service: node and cluster status for operators.
//!
//! Owns: turning Raft metrics into `StatusReply`.
//! Must never: block on the Raft core (it reads the metrics watch only).

use openraft::async_runtime::WatchReceiver;
use proto::pb;
use tonic::{Request, Response, Status};

use crate::node::Metad;

/// Answers operator requests.
#[derive(Clone)]
pub struct ControlService {
    metad: Metad,
}

impl ControlService {
    pub fn new(metad: Metad) -> Self {
        ControlService { metad }
    }
}

#[tonic::async_trait]
impl pb::control_server::Control for ControlService {
    async fn status(&self, _request: Request<pb::StatusRequest>) -> Result<Response<pb::StatusReply>, Status> {
        let rx = self.metad.raft().metrics();
        let m = rx.borrow_watched();
        Ok(Response::new(pb::StatusReply {
            node_id: self.metad.inner.node_id,
            leader_id: m.current_leader,
            term: m.current_term,
            last_log_index: m.last_log_index.unwrap_or(0),
            last_applied: m.last_applied.as_ref().map(|l| l.index()).unwrap_or(0),
            voters: m.membership_config.membership().voter_ids().count() as u32,
            version: env!("CARGO_PKG_VERSION").to_string(),
        }))
    }

    async fn members(&self, _request: Request<pb::MembersRequest>) -> Result<Response<pb::MembersReply>, Status> {
        Err(proto::FsError::NotSupported.to_status())
    }

    async fn add_node(&self, _request: Request<pb::AddNodeRequest>) -> Result<Response<pb::MembersReply>, Status> {
        Err(proto::FsError::NotSupported.to_status())
    }

    async fn remove_node(&self, _request: Request<pb::RemoveNodeRequest>) -> Result<Response<pb::MembersReply>, Status> {
        Err(proto::FsError::NotSupported.to_status())
    }
}
