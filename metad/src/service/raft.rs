//! The server side of the `Raft` service: decode a peer's payload, hand it to openraft, encode
//! openraft's answer; receive streamed snapshots; answer forwarded writes and read-index
//! requests when this node leads.
//!
//! Owns: the adapter, and the checks a streamed snapshot passes before openraft sees it: the
//! header comes first and only once, chunk and image sizes stay within limits (checked before
//! anything is written), the image is written to a temporary file and must match the declared
//! length and BLAKE3 hash, and its meta must be consistent with the sender's vote and with what
//! this node has committed. openraft panics on a snapshot that contradicts the vote or the
//! local committed log; these checks refuse what can be detected from the outside, but a peer
//! that forges a *consistent* header is still trusted: the Raft port must only be reachable by
//! cluster members (mTLS between members arrives with a later issue).
//! Must never: panic on a malformed payload (it gets `InvalidArgument`), or forward a request
//! it received forwarded (a non-leader answers `NotLeader`).

use openraft::ReadPolicy;
use openraft::async_runtime::WatchReceiver;
use openraft::errors::{ClientWriteError, RaftError};
use proto::pb;
use tonic::{Request, Response, Status};

use crate::command::Command;
use crate::command::alias::Raft;
use crate::network::codec::{self, ForwardedRead, ForwardedWrite};
use crate::snapshot_file::{MAX_SNAPSHOT_BYTES, Snapshot, SnapshotDir};

/// Largest image slice accepted in one `SnapshotChunk` (senders use 1 MiB).
pub const MAX_SNAPSHOT_CHUNK: usize = 8 * 1024 * 1024;

/// Answers Raft RPCs from peers.
#[derive(Clone)]
pub struct RaftService {
    raft: Raft,
    snapshots: SnapshotDir,
}

impl RaftService {
    pub fn new(raft: Raft, snapshots: SnapshotDir) -> Self {
        RaftService { raft, snapshots }
    }

    /// Refuses a snapshot whose meta contradicts the sender's vote or this node's committed
    /// log (the cases in which openraft's `install_full_snapshot` panics).
    fn check_consistent(&self, header: &codec::SnapshotHeader) -> Result<(), Status> {
        let Some(last) = header.meta.last_log_id.as_ref() else { return Ok(()) };
        if last.committed_leader_id() > &header.vote.leader_id {
            return Err(Status::invalid_argument(format!(
                "snapshot up to {last} is beyond the sender's vote {}",
                header.vote
            )));
        }
        if let Some(m) = header.meta.last_membership.log_id()
            && m > last
        {
            return Err(Status::invalid_argument("snapshot membership is newer than its last log id"));
        }
        let rx = self.raft.metrics();
        let metrics = rx.borrow_watched();
        if let Some(committed) = metrics.local_committed.as_ref()
            && last > committed
            && last.index() <= committed.index()
        {
            return Err(Status::invalid_argument(format!(
                "snapshot up to {last} contradicts the locally committed {committed}"
            )));
        }
        Ok(())
    }
}

fn decode<T: for<'de> serde::Deserialize<'de>>(what: &str, data: &[u8]) -> Result<T, Status> {
    serde_json::from_slice(data).map_err(|e| Status::invalid_argument(format!("malformed {what} payload: {e}")))
}

fn encode<T: serde::Serialize>(value: &T) -> Result<Response<pb::RaftPayload>, Status> {
    let data = serde_json::to_vec(value).map_err(|e| Status::internal(format!("encoding reply: {e}")))?;
    Ok(Response::new(pb::RaftPayload { data }))
}

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
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

    async fn full_snapshot(&self, _request: Request<pb::RaftPayload>) -> Result<Response<pb::RaftPayload>, Status> {
        Err(Status::unimplemented("whole-message snapshots were replaced by StreamSnapshot"))
    }

    async fn stream_snapshot(
        &self,
        request: Request<tonic::Streaming<pb::SnapshotChunk>>,
    ) -> Result<Response<pb::RaftPayload>, Status> {
        let mut stream = request.into_inner();
        let first = stream.message().await?.ok_or_else(|| Status::invalid_argument("empty snapshot stream"))?;
        let header = codec::decode_header(&first.header).map_err(Status::invalid_argument)?;
        if header.len > MAX_SNAPSHOT_BYTES {
            return Err(Status::invalid_argument(format!(
                "snapshot of {} bytes is over the {MAX_SNAPSHOT_BYTES}-byte limit",
                header.len
            )));
        }
        self.check_consistent(&header)?;
        let snapshots = self.snapshots.clone();
        let mut incoming =
            tokio::task::spawn_blocking(move || snapshots.incoming()).await.map_err(internal)?.map_err(internal)?;
        let mut next = Some(first);
        let mut is_first = true;
        while let Some(chunk) = next {
            if !is_first && !chunk.header.is_empty() {
                return Err(Status::invalid_argument("snapshot header repeated after the first chunk"));
            }
            is_first = false;
            if chunk.data.len() > MAX_SNAPSHOT_CHUNK {
                return Err(Status::invalid_argument(format!("snapshot chunk of {} bytes", chunk.data.len())));
            }
            if incoming.len() + chunk.data.len() as u64 > header.len {
                return Err(Status::invalid_argument("snapshot stream is longer than its header says"));
            }
            incoming = tokio::task::spawn_blocking(move || incoming.append(&chunk.data).map(|()| incoming))
                .await
                .map_err(internal)?
                .map_err(internal)?;
            next = stream.message().await?;
        }
        if incoming.len() != header.len {
            return Err(Status::invalid_argument(format!(
                "snapshot stream ended after {} of {} bytes",
                incoming.len(),
                header.len
            )));
        }
        let (incoming, file) = tokio::task::spawn_blocking(move || incoming.finish().map(|f| (incoming, f)))
            .await
            .map_err(internal)?
            .map_err(internal)?;
        if file.hash != header.hash {
            return Err(Status::invalid_argument("snapshot image does not match its BLAKE3 hash"));
        }
        let snapshot = Snapshot { meta: header.meta, snapshot: file };
        let r = self.raft.install_full_snapshot(header.vote, snapshot).await;
        drop(incoming);
        encode(&r)
    }

    async fn client_write(&self, request: Request<pb::RaftPayload>) -> Result<Response<pb::RaftPayload>, Status> {
        let cmd: Command = decode("forwarded command", &request.get_ref().data)?;
        let answer = match self.raft.client_write(cmd).await {
            Ok(resp) => ForwardedWrite::Applied(Box::new(resp.data)),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => ForwardedWrite::NotLeader(f.leader_id),
            Err(e) if e.forward_to_leader().is_some() => ForwardedWrite::Unknown(e.to_string()),
            Err(e) => ForwardedWrite::Failed(e.to_string()),
        };
        encode(&answer)
    }

    async fn read_index(&self, _request: Request<pb::RaftPayload>) -> Result<Response<pb::RaftPayload>, Status> {
        let answer = match self.raft.get_read_linearizer(ReadPolicy::ReadIndex).await {
            Ok(linearizer) => ForwardedRead::ReadIndex(linearizer.read_log_id().index()),
            Err(e) => match e.forward_to_leader() {
                Some(f) => ForwardedRead::NotLeader(f.leader_id),
                None => ForwardedRead::Failed(e.to_string()),
            },
        };
        encode(&answer)
    }
}
