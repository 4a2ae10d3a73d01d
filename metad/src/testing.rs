//! A metad group in one process, for tests and benchmarks: `voters` nodes, each with its
//! own redb file in a temporary directory and its own gRPC server (Meta + Raft) on a
//! loopback port with TCP_NODELAY, talking Raft to each other over gRPC as separate
//! machines would. Behind the `testing` feature; never part of a daemon.

use std::collections::BTreeMap;

use tonic::transport::server::TcpIncoming;

use crate::error::{MetadError, Result};
use crate::{Bootstrap, Metad, MetadOptions};

/// The share every local group is created with.
pub const SHARE: (&str, &str) = ("default", "/export");

/// A running local group.
pub struct LocalGroup {
    pub nodes: Vec<Metad>,
    /// Node id -> its gRPC URL.
    pub addrs: BTreeMap<u64, String>,
    stops: Vec<tokio::sync::oneshot::Sender<()>>,
    _dirs: Vec<tempfile::TempDir>,
}

fn io(e: std::io::Error) -> MetadError {
    MetadError::Raft(format!("starting a local group: {e}"))
}

impl LocalGroup {
    /// Starts `voters` nodes (node 1 bootstraps the group) and waits until the default
    /// share exists on every one.
    pub async fn start(voters: u64) -> Result<LocalGroup> {
        let mut incomings = Vec::new();
        let mut addrs = BTreeMap::new();
        for id in 1..=voters {
            let addr = "127.0.0.1:0".parse().map_err(|e| MetadError::Raft(format!("{e}")))?;
            let incoming = TcpIncoming::bind(addr).map_err(io)?.with_nodelay(Some(true));
            addrs.insert(id, format!("http://{}", incoming.local_addr().map_err(io)?));
            incomings.push(incoming);
        }
        let (mut nodes, mut stops, mut dirs) = (Vec::new(), Vec::new(), Vec::new());
        for (i, incoming) in incomings.into_iter().enumerate() {
            let id = i as u64 + 1;
            let dir = tempfile::tempdir().map_err(io)?;
            let opts = MetadOptions {
                node_id: id,
                data_dir: dir.path().to_path_buf(),
                advertise_addr: addrs[&id].clone(),
                default_share: Some((SHARE.0.into(), SHARE.1.into())),
                client_tls: cluster::grpc_tls::ClientTls::plaintext(),
            };
            let bootstrap = if id == 1 { Bootstrap::Members(addrs.clone()) } else { Bootstrap::Join };
            let metad = Metad::start(&opts, bootstrap).await?;
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let router =
                tonic::transport::Server::builder().add_service(metad.meta_service()).add_service(metad.raft_service());
            tokio::spawn(router.serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            }));
            nodes.push(metad);
            stops.push(stop);
            dirs.push(dir);
        }
        for m in &nodes {
            m.wait_ready(Some(&(SHARE.0.to_string(), SHARE.1.to_string()))).await?;
        }
        Ok(LocalGroup { nodes, addrs, stops, _dirs: dirs })
    }

    /// The current leader's gRPC URL.
    pub async fn leader_addr(&self) -> Result<String> {
        let leader = match self.nodes.first() {
            Some(n) => n.raft().current_leader().await,
            None => None,
        };
        leader
            .and_then(|id| self.addrs.get(&id).cloned())
            .ok_or_else(|| MetadError::Raft("the local group has no leader".into()))
    }

    /// Stops every server and node.
    pub async fn stop(self) {
        for stop in self.stops {
            let _ = stop.send(());
        }
        for m in self.nodes {
            let _ = m.shutdown().await;
        }
    }
}
