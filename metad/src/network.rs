//! openraft's network: Raft RPCs to peer metad nodes over the gRPC `Raft` service.
//!
//! Owns: the client side of the `Raft` service ([`NetworkFactory`], [`PeerClient`]) and the
//! payload codec both sides share ([`codec`]): openraft's request/response types as serde
//! JSON in `RaftPayload.data`. Snapshots are streamed with `StreamSnapshot`: the first
//! `SnapshotChunk` carries a JSON [`codec::SnapshotHeader`] (vote, meta, image length and
//! BLAKE3 hash), every chunk carries at most [`SNAPSHOT_CHUNK_BYTES`] of the image file, read
//! from disk as it is sent (the image is never held whole in memory here). The old one-message
//! `FullSnapshot` RPC is no longer sent, and receivers answer it `Unimplemented`.
//! Must never: interpret Raft messages (openraft does), or block on a peer past the deadline
//! openraft gives.

use std::future::Future;

use cluster::grpc_tls::ClientTls;
use openraft::BasicNode;
use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse};
use proto::pb;
use proto::pb::raft_client::RaftClient;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tonic::transport::Channel;

use crate::command::TypeConfig;
use crate::command::alias::Vote;
use crate::snapshot_file::{Snapshot, SnapshotFile};

/// Largest Raft message metad sends or accepts (append batches, forwarded commands).
pub const MAX_RAFT_MESSAGE: usize = 256 * 1024 * 1024;

/// Image bytes per `SnapshotChunk`.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1024 * 1024;

/// Payload codec shared by the client here and the server in `service::raft`.
pub mod codec {
    use serde::{Deserialize, Serialize};

    use crate::command::alias::{SnapshotMeta, Vote};
    use crate::command::{CommandResult, TypeConfig};
    use openraft::raft::VoteRequest;

    /// The `Vote` RPC carries both real votes and pre-votes.
    #[derive(Serialize, Deserialize)]
    pub struct VoteRpc {
        pub pre_vote: bool,
        pub req: VoteRequest<TypeConfig>,
    }

    /// Header of a streamed snapshot (first `SnapshotChunk.header`).
    #[derive(Serialize, Deserialize, Debug)]
    pub struct SnapshotHeader {
        pub vote: Vote,
        pub meta: SnapshotMeta,
        /// Length of the whole image, in bytes.
        pub len: u64,
        /// BLAKE3 of the whole image.
        pub hash: [u8; 32],
    }

    /// Largest snapshot header accepted.
    pub const MAX_SNAPSHOT_HEADER: usize = 1024 * 1024;

    /// Decodes a snapshot header, checking its length first.
    pub fn decode_header(bytes: &[u8]) -> Result<SnapshotHeader, String> {
        if bytes.is_empty() || bytes.len() > MAX_SNAPSHOT_HEADER {
            return Err(format!("snapshot header of {} bytes (1 ..= {MAX_SNAPSHOT_HEADER} accepted)", bytes.len()));
        }
        serde_json::from_slice(bytes).map_err(|e| format!("malformed snapshot header: {e}"))
    }

    /// The leader's answer to a forwarded `ClientWrite`.
    #[derive(Serialize, Deserialize, Debug)]
    pub enum ForwardedWrite {
        /// Proposed, committed and applied: the state machine's answer.
        Applied(Box<CommandResult>),
        /// Not proposed: the receiver is not the leader (the leader it knows, if any).
        NotLeader(Option<u64>),
        /// Proposed but its fate is unknown (e.g. leadership lost before commit): the client
        /// must retry with the same request id.
        Unknown(String),
        /// Raft failed on the receiver.
        Failed(String),
    }

    /// The leader's answer to a `ReadIndex` request.
    #[derive(Serialize, Deserialize, Debug)]
    pub enum ForwardedRead {
        /// Apply up to this log index, then read locally.
        ReadIndex(u64),
        /// The receiver is not the leader (the leader it knows, if any).
        NotLeader(Option<u64>),
        /// Raft failed on the receiver.
        Failed(String),
    }
}

/// Creates a [`PeerClient`] per target; connections are made lazily on first use, over
/// mutual TLS when the node has a `metad` identity (`MetadOptions::client_tls`).
#[derive(Clone, Default)]
pub struct NetworkFactory {
    tls: ClientTls,
}

impl NetworkFactory {
    pub fn new(tls: ClientTls) -> NetworkFactory {
        NetworkFactory { tls }
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> PeerClient {
        PeerClient { target, addr: node.addr.clone(), tls: self.tls.clone(), client: None }
    }
}

/// A connection to one peer's `Raft` service.
pub struct PeerClient {
    target: u64,
    addr: String,
    tls: ClientTls,
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
        let endpoint = self
            .tls
            .endpoint(&self.addr)
            .map_err(|e| unreachable(format!("bad address {:?} for node {}: {e}", self.addr, self.target)))?
            .connect_timeout(std::time::Duration::from_secs(2));
        let c = RaftClient::new(endpoint.connect_lazy())
            .max_decoding_message_size(MAX_RAFT_MESSAGE)
            .max_encoding_message_size(MAX_RAFT_MESSAGE);
        self.client = Some(c.clone());
        Ok(c)
    }

    /// Sends one payload and decodes the JSON `Result` the peer answers with.
    async fn call<Resp, E>(
        &mut self,
        kind: Rpc,
        data: Vec<u8>,
        option: &RPCOption,
    ) -> Result<Result<Resp, E>, RPCError<TypeConfig>>
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
}

/// A remote node's fatal error means it cannot take part now: back off as if unreachable.
fn remote_fatal<E: std::fmt::Display>(target: u64, e: E) -> RPCError<TypeConfig> {
    RPCError::Unreachable(unreachable(format!("node {target} failed: {e}")))
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = SnapshotFile;

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

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.send_vote(false, rpc, option).await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.send_vote(true, rpc, option).await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + openraft::OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let target = self.target;
        let network = |e: String| StreamingError::Network(NetworkError::from_string(e));
        let SnapshotFile { file, len, hash } = snapshot.snapshot;
        let header = codec::SnapshotHeader { vote, meta: snapshot.meta, len, hash };
        let header = serde_json::to_vec(&header).map_err(|e| network(e.to_string()))?;
        let mut file = tokio::fs::File::from_std(file);
        file.seek(std::io::SeekFrom::Start(0))
            .await
            .map_err(|e| network(format!("reading the snapshot image: {e}")))?;
        let chunks = snapshot_chunks(file, header, len);
        let mut client = self.client().map_err(StreamingError::Unreachable)?;
        let mut req = tonic::Request::new(chunks);
        req.set_timeout(option.hard_ttl());
        let send = async move {
            match client.stream_snapshot(req).await {
                Ok(r) => serde_json::from_slice::<
                    Result<SnapshotResponse<TypeConfig>, openraft::errors::Fatal<TypeConfig>>,
                >(&r.into_inner().data)
                .map_err(|e| network(e.to_string())),
                Err(status) => Err(StreamingError::Unreachable(unreachable(format!("node {target}: {status}")))),
            }
        };
        let r = tokio::select! {
            closed = cancel => return Err(StreamingError::Closed(closed)),
            r = send => r,
        };
        match r {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(fatal)) => Err(StreamingError::Unreachable(unreachable(format!("node {target} failed: {fatal}")))),
            Err(e) => {
                self.client = None;
                Err(e)
            }
        }
    }
}

/// The chunks of one snapshot: the header rides on the first; the image is read from `file`
/// [`SNAPSHOT_CHUNK_BYTES`] at a time. A read error ends the stream early, which the receiver
/// refuses as a short image.
fn snapshot_chunks(
    file: tokio::fs::File,
    header: Vec<u8>,
    len: u64,
) -> impl futures::Stream<Item = pb::SnapshotChunk> + Send + 'static {
    futures::stream::unfold((file, Some(header), len), |(mut file, header, remaining)| async move {
        if header.is_none() && remaining == 0 {
            return None;
        }
        let n = remaining.min(SNAPSHOT_CHUNK_BYTES as u64) as usize;
        let mut data = vec![0u8; n];
        if let Err(e) = file.read_exact(&mut data).await {
            tracing::warn!(error = %e, "reading the snapshot image while sending it");
            return None;
        }
        let chunk = pb::SnapshotChunk { header: header.unwrap_or_default(), data };
        Some((chunk, (file, None, remaining - n as u64)))
    })
}

impl PeerClient {
    async fn send_vote(
        &mut self,
        pre_vote: bool,
        req: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let data = serde_json::to_vec(&codec::VoteRpc { pre_vote, req })
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let r: Result<VoteResponse<TypeConfig>, openraft::errors::RaftError<TypeConfig>> =
            self.call(Rpc::Vote, data, &option).await?;
        r.map_err(|e| remote_fatal(self.target, e))
    }
}

#[cfg(test)]
mod tests {
    use super::codec::*;

    #[test]
    fn snapshot_header_round_trips() {
        let header =
            SnapshotHeader { vote: openraft::Vote::new(3, 1), meta: Default::default(), len: 7, hash: [9; 32] };
        let bytes = serde_json::to_vec(&header).unwrap();
        let back = decode_header(&bytes).unwrap();
        assert_eq!((back.meta, back.len, back.hash), (header.meta, 7, [9; 32]));
    }

    #[test]
    fn snapshot_header_rejects_bad_input() {
        assert!(decode_header(&[]).is_err());
        assert!(decode_header(b"{").is_err());
        assert!(decode_header(&vec![b' '; MAX_SNAPSHOT_HEADER + 1]).is_err());
    }

    #[tokio::test]
    async fn snapshot_chunks_carry_the_header_once_and_the_image_in_order() {
        use futures::StreamExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img");
        let image: Vec<u8> = (0..(super::SNAPSHOT_CHUNK_BYTES * 2 + 5)).map(|i| i as u8).collect();
        std::fs::write(&path, &image).unwrap();
        let file = tokio::fs::File::open(&path).await.unwrap();
        let chunks: Vec<_> = super::snapshot_chunks(file, b"hdr".to_vec(), image.len() as u64).collect().await;
        assert_eq!(chunks.len(), 3);
        assert_eq!(chunks[0].header, b"hdr");
        assert!(chunks[1..].iter().all(|c| c.header.is_empty()));
        let joined: Vec<u8> = chunks.iter().flat_map(|c| c.data.clone()).collect();
        assert_eq!(joined, image);
        // An empty image is one chunk with the header.
        let file = tokio::fs::File::open(&path).await.unwrap();
        let chunks: Vec<_> = super::snapshot_chunks(file, b"h".to_vec(), 0).collect().await;
        assert_eq!(chunks.len(), 1);
    }
}
