//! The server side of the `Raft` service: decode a peer's payload, hand it to openraft, encode
//! openraft's answer.
//!
//! Owns: nothing but the adapter; the payload codec is `network::codec`.
//! Must never: panic on a malformed payload (it gets `InvalidArgument`).

use proto::pb;
use tonic::{Request, Response, Status};

use crate::command::alias::{Raft, Snapshot};
use crate::network::codec;

/// Answers Raft RPCs from peers.
#[derive(Clone)]
pub struct RaftService {
    raft: Raft,
}

impl RaftService {
    pub fn new(raft: Raft) -> Self {
        RaftService { raft }
    }
}

fn decode<T: for<'de> serde::Deserialize<'de>>(what: &str, data: &[u8]) -> Result<T, Status> {
    serde_json::from_slice(data).map_err(|e| Status::invalid_argument(format!("malformed {what} payload: {e}")))
}

fn encode<T: serde::Serialize>(value: &T) -> Result<Response<pb::RaftPayload>, Status> {
    let data = serde_json::to_vec(value).map_err(|e| Status::internal(format!("encoding reply: {e}")))?;
    Ok(Response::new(pb::RaftPayload { data }))
}

#[tonic::async_trait]
impl pb::raft_server::Raft for RaftService {
    async fn append_entries(&self, request: Request<pb::RaftPayload>) -> Result<Response<pb::RaftPayload>, Status> {
        let req = decode("append entries", &request.get_ref().data)?;
        encode(&self.raft.append_entries(req).await)
    }

    async fn vote(&self, request: Request<pb::RaftPayload>) -> Result<Response<pb::RaftPayload>, Status> {
        let rpc: codec::VoteRpc = decode("vote", &request.get_ref().data)?;
        let r = if rpc.pre_vote { self.raft.pre_vote(rpc.req).await } else { self.raft.vote(rpc.req).await };
        encode(&r)
    }

    async fn full_snapshot(&self, request: Request<pb::RaftPayload>) -> Result<Response<pb::RaftPayload>, Status> {
        let (header, data) = codec::decode_snapshot(&request.get_ref().data).map_err(Status::invalid_argument)?;
        let snapshot = Snapshot { meta: header.meta, snapshot: data };
        encode(&self.raft.install_full_snapshot(header.vote, snapshot).await)
    }

    async fn stream_snapshot(
        &self,
        _request: Request<tonic::Streaming<pb::SnapshotChunk>>,
    ) -> Result<Response<pb::RaftPayload>, Status> {
        Err(Status::unimplemented("streamed snapshots are not implemented yet"))
    }
}
