//! The gRPC services metad serves: thin adapters from protobuf to [`crate::Metad`].
//!
//! Owns: [`meta::MetaService`], [`raft::RaftService`], [`control::ControlService`], the
//! tonic server wrappers built from a [`Metad`] (with their message-size limits), the
//! protobuf conversions in [`convert`], and [`authz`]: which certificate role may call which
//! method on the internal port.
//! Must never: hold filesystem logic (that is `fsm`) or let an internal error out other than
//! through `MetadError::to_status`.

pub mod authz;
pub mod control;
pub mod convert;
pub mod meta;
pub mod raft;

use proto::pb::control_server::ControlServer;
use proto::pb::meta_server::MetaServer;
use proto::pb::raft_server::RaftServer;

use crate::network::MAX_RAFT_MESSAGE;
use crate::node::Metad;

/// Largest Meta request accepted (a full CommitExtents of 65,536 extents fits).
pub const MAX_META_MESSAGE: usize = 16 * 1024 * 1024;

impl Metad {
    /// The `Meta` service (filesystem operations), to serve on the internal port.
    pub fn meta_service(&self) -> MetaServer<meta::MetaService> {
        MetaServer::new(meta::MetaService::new(self.clone())).max_decoding_message_size(MAX_META_MESSAGE)
    }

    /// The `Raft` service (peer traffic), to serve on the internal port with `Meta`.
    pub fn raft_service(&self) -> RaftServer<raft::RaftService> {
        RaftServer::new(raft::RaftService::new(self.inner.raft.clone(), self.inner.snapshots.clone()))
            .max_decoding_message_size(MAX_RAFT_MESSAGE)
            .max_encoding_message_size(MAX_RAFT_MESSAGE)
    }

    /// The `Control` service (operators), to serve on the control port.
    pub fn control_service(&self) -> ControlServer<control::ControlService> {
        ControlServer::new(control::ControlService::new(self.clone()))
    }
}
