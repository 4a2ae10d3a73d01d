//! The client side of leader forwarding: a follower's link to the leader's `Raft` service for
//! `ClientWrite` (a serialized [`Command`]) and `ReadIndex`.
//!
//! Owns: one lazily connected channel per leader address, and the encoding of forwarded
//! requests (the payload types are `network::codec`). Deciding *when* to forward and retrying
//! across leader changes is `node`'s job.
//! Must never: retry a write itself (a transport error after sending leaves its outcome
//! unknown), or forward a request it received forwarded (the leader answers `NotLeader`
//! instead, so requests never travel in circles).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use cluster::grpc_tls::ClientTls;
use proto::pb;
use proto::pb::raft_client::RaftClient;
use tonic::transport::Channel;

use crate::command::Command;
use crate::error::{MetadError, Result};
use crate::network::MAX_RAFT_MESSAGE;
use crate::network::codec::{ForwardedRead, ForwardedWrite};

/// Channels to leaders, by address (over mutual TLS when the node has a `metad` identity).
#[derive(Default)]
pub struct Forwarder {
    tls: ClientTls,
    clients: Mutex<HashMap<String, RaftClient<Channel>>>,
}

impl Forwarder {
    pub fn new(tls: ClientTls) -> Forwarder {
        Forwarder { tls, clients: Mutex::default() }
    }

    fn client(&self, leader: u64, addr: &str) -> Result<RaftClient<Channel>> {
        let mut clients = self.clients.lock().map_err(|_| MetadError::Raft("forwarder lock poisoned".into()))?;
        if let Some(c) = clients.get(addr) {
            return Ok(c.clone());
        }
        let endpoint = self
            .tls
            .endpoint(addr)
            .map_err(|e| MetadError::Forward { leader, reason: format!("bad address {addr:?}: {e}") })?
            .connect_timeout(Duration::from_secs(2));
        let c = RaftClient::new(endpoint.connect_lazy())
            .max_decoding_message_size(MAX_RAFT_MESSAGE)
            .max_encoding_message_size(MAX_RAFT_MESSAGE);
        clients.insert(addr.to_string(), c.clone());
        Ok(c)
    }

    fn forget(&self, addr: &str) {
        if let Ok(mut clients) = self.clients.lock() {
            clients.remove(addr);
        }
    }

    /// Sends `cmd` to the leader at `addr`.
    pub async fn write(&self, leader: u64, addr: &str, cmd: &Command, timeout: Duration) -> Result<ForwardedWrite> {
        let data = serde_json::to_vec(cmd).map_err(|source| MetadError::Codec { what: "forwarded command", source })?;
        let mut client = self.client(leader, addr)?;
        let mut req = tonic::Request::new(pb::RaftPayload { data });
        req.set_timeout(timeout);
        match client.client_write(req).await {
            Ok(r) => serde_json::from_slice(&r.into_inner().data)
                .map_err(|source| MetadError::Codec { what: "forwarded write reply", source }),
            Err(status) => {
                self.forget(addr);
                Err(MetadError::Forward { leader, reason: status.message().to_string() })
            }
        }
    }

    /// Asks the leader at `addr` for its read index.
    pub async fn read_index(&self, leader: u64, addr: &str, timeout: Duration) -> Result<ForwardedRead> {
        let mut client = self.client(leader, addr)?;
        let mut req = tonic::Request::new(pb::RaftPayload { data: Vec::new() });
        req.set_timeout(timeout);
        match client.read_index(req).await {
            Ok(r) => serde_json::from_slice(&r.into_inner().data)
                .map_err(|source| MetadError::Codec { what: "read index reply", source }),
            Err(status) => {
                self.forget(addr);
                Err(MetadError::Forward { leader, reason: status.message().to_string() })
            }
        }
    }
}
