//! openraft's network: Raft RPCs to peer metad nodes over the gRPC `Raft` service.
//!
//! Owns: the client side of the `Raft` service ([`NetworkFactory`], [`PeerClient`]) and the
//! payload codec both sides share ([`codec`]): openraft's request/response types as serde
//! JSON in `RaftPayload.data`; a snapshot travels as a length-prefixed JSON header (vote and
//! snapshot meta) followed by the raw snapshot image.
//! Must never: interpret Raft messages (openraft does), or block on a peer past the deadline
//! openraft gives.

use std::future::Future;

use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse};
use openraft::BasicNode;
use proto::pb;
use proto::pb::raft_client::RaftClient;
use tonic::transport::{Channel, Endpoint};

use crate::command::TypeConfig;
use crate::command::alias::{Snapshot, Vote};

/// Largest Raft message metad sends or accepts (append batches, whole snapshots).
pub const MAX_RAFT_MESSAGE: usize = 256 * 1024 * 1024;

/// Payload codec shared by the client here and the server in `service::raft`.
pub mod codec {
    use serde::{Deserialize, Serialize};

    use crate::command::TypeConfig;
    use crate::command::alias::{SnapshotMeta, Vote};
    use openraft::raft::VoteRequest;

    /// The `Vote` RPC carries both real votes and pre-votes.
    #[derive(Serialize, Deserialize)]
    pub struct VoteRpc {
        pub pre_vote: bool,
        pub req: VoteRequest<TypeConfig>,
    }

    /// Header of a `FullSnapshot` payload.
    #[derive(Serialize, Deserialize)]
    pub struct SnapshotHeader {
        pub vote: Vote,
        pub meta: SnapshotMeta,
    }

    /// Largest snapshot header accepted.
    pub const MAX_SNAPSHOT_HEADER: usize = 16 * 1024 * 1024;

    /// `len:u32be | header JSON | snapshot image`.
    pub fn encode_snapshot(header: &SnapshotHeader, data: &[u8]) -> Result<Vec<u8>, String> {
        let h = serde_json::to_vec(header).map_err(|e| e.to_string())?;
        let len = u32::try_from(h.len()).ok().filter(|l| *l as usize <= MAX_SNAPSHOT_HEADER).ok_or("snapshot header too large")?;
        let mut out = Vec::with_capacity(4 + h.len() + data.len());
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(data);
        Ok(out)
    }

    /// Splits a `FullSnapshot` payload; checks the header length before using it.
    pub fn decode_snapshot(bytes: &[u8]) -> Result<(SnapshotHeader, Vec<u8>), String> {
        let len_bytes: [u8; 4] = bytes.get(..4).and_then(|b| b.try_into().ok()).ok_or("snapshot payload shorter than its length prefix")?;
        let len = u32::from_be_bytes(len_bytes) as usize;
        if len > MAX_SNAPSHOT_HEADER || len > bytes.len() - 4 {
            return Err(format!("snapshot header length {len} out of range"));
        }
        let header: SnapshotHeader = serde_json::from_slice(&bytes[4..4 + len]).map_err(|e| e.to_string())?;
        Ok((header, bytes[4 + len..].to_vec()))
    }
}

/// Creates a [`PeerClient`] per target; connections are made lazily on first use.
#[derive(Clone, Default)]
pub struct NetworkFactory;

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> PeerClient {
        PeerClient { target, addr: node.addr.clone(), client: None }
    }
}

/// A connection to one peer's `Raft` service.
pub struct PeerClient {
    target: u64,
    addr: String,
    client: Option<RaftClient<Channel>>,
}

fn unreachable(msg: impl ToString) -> Unreachable<TypeConfig> {
    Unreachable::from_string(msg)
}

impl PeerClient {
    fn client(&mut self) -> Result<RaftClient<Channel>, Unreachable<TypeConfig>> {
        if let Some(c) = &self.client {
            return Ok(c.clone());
        }
        let endpoint = Endpoint::from_shared(self.addr.clone())
            .map_err(|e| unreachable(format!("bad address {:?} for node {}: {e}", self.addr, self.target)))?
            .connect_timeout(std::time::Duration::from_secs(2));
        let c = RaftClient::new(endpoint.connect_lazy())
            .max_decoding_message_size(MAX_RAFT_MESSAGE)
            .max_encoding_message_size(MAX_RAFT_MESSAGE);
        self.client = Some(c.clone());
        Ok(c)
    }

    /// Sends one payload and decodes the JSON `Result` the peer answers with.
    async fn call<Resp, E>(&mut self, kind: Rpc, data: Vec<u8>, option: &RPCOption) -> Result<Result<Resp, E>, RPCError<TypeConfig>>
    where
        Resp: for<'de> serde::Deserialize<'de>,
        E: for<'de> serde::Deserialize<'de>,
    {
        let mut client = self.client()?;
        let mut req = tonic::Request::new(pb::RaftPayload { data });
        req.set_timeout(option.hard_ttl());
        let reply = match kind {
            Rpc::Append => client.append_entries(req).await,
            Rpc::Vote => client.vote(req).await,
            Rpc::Snapshot => client.full_snapshot(req).await,
        };
        let reply = match reply {
            Ok(r) => r.into_inner(),
            Err(status) => {
                // A broken connection is rebuilt on the next call.
                self.client = None;
                return Err(RPCError::Unreachable(unreachable(format!("node {}: {status}", self.target))));
            }
        };
        serde_json::from_slice(&reply.data).map_err(|e| RPCError::Network(NetworkError::new(&e)))
    }
}

#[derive(Clone, Copy)]
enum Rpc {
    Append,
    Vote,
    Snapshot,
}

/// A remote node's fatal error means it cannot take part now: back off as if unreachable.
fn remote_fatal<E: std::fmt::Display>(target: u64, e: E) -> RPCError<TypeConfig> {
    RPCError::Unreachable(unreachable(format!("node {target} failed: {e}")))
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = Vec<u8>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let data = serde_json::to_vec(&rpc).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let r: Result<AppendEntriesResponse<TypeConfig>, openraft::errors::RaftError<TypeConfig>> =
            self.call(Rpc::Append, data, &option).await?;
        r.map_err(|e| remote_fatal(self.target, e))
    }

    async fn vote(&mut self, rpc: VoteRequest<TypeConfig>, option: RPCOption) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.send_vote(false, rpc, option).await
    }

    async fn pre_vote(&mut self, rpc: VoteRequest<TypeConfig>, option: RPCOption) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.send_vote(true, rpc, option).await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + openraft::OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let header = codec::SnapshotHeader { vote, meta: snapshot.meta };
        let data = codec::encode_snapshot(&header, &snapshot.snapshot).map_err(|e| StreamingError::Network(NetworkError::from_string(e)))?;
        let target = self.target;
        let send = self.call::<SnapshotResponse<TypeConfig>, openraft::errors::Fatal<TypeConfig>>(Rpc::Snapshot, data, &option);
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            r = send => match r {
                Ok(Ok(resp)) => Ok(resp),
                Ok(Err(fatal)) => Err(StreamingError::Unreachable(unreachable(format!("node {target} failed: {fatal}")))),
                Err(e) => Err(StreamingError::from(e)),
            },
        }
    }
}

impl PeerClient {
    async fn send_vote(
        &mut self,
        pre_vote: bool,
        req: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let data = serde_json::to_vec(&codec::VoteRpc { pre_vote, req }).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let r: Result<VoteResponse<TypeConfig>, openraft::errors::RaftError<TypeConfig>> = self.call(Rpc::Vote, data, &option).await?;
        r.map_err(|e| remote_fatal(self.target, e))
    }
}

#[cfg(test)]
mod tests {
    use super::codec::*;

    #[test]
    fn snapshot_payload_round_trips() {
        let header = SnapshotHeader { vote: openraft::Vote::new(3, 1), meta: Default::default() };
        let bytes = encode_snapshot(&header, b"image").unwrap();
        let (back, data) = decode_snapshot(&bytes).unwrap();
        assert_eq!(back.meta, header.meta);
        assert_eq!(data, b"image");
    }

    #[test]
    fn snapshot_payload_rejects_bad_lengths() {
        assert!(decode_snapshot(&[]).is_err());
        assert!(decode_snapshot(&[0, 0, 0]).is_err());
        assert!(decode_snapshot(&[0xff, 0xff, 0xff, 0xff, 1]).is_err());
        assert!(decode_snapshot(&[0, 0, 0, 2, b'{']).is_err());
    }
}
