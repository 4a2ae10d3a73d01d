//! The metad role of a node: its gRPC listeners and, in `serve`, how it forms or joins the
//! group.
//!
//! Owns: binding the internal listener (Meta + Raft + Control) and the control listener,
//! the bootstrap decision from configuration, joining through members' control APIs, and
//! making sure the default share exists once a leader is known. Must never: decide
//! anything Raft decides (leadership, membership changes beyond asking to be added).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use cluster::Shutdown;
use cluster::config::Config;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;

/// How long a node started with `metad.join` keeps asking members to add it.
const JOIN_DEADLINE: Duration = Duration::from_secs(120);
/// How long a stopping node lets in-flight gRPC calls finish before closing connections.
const DRAIN_DEADLINE: Duration = Duration::from_secs(3);
/// Pause between two rounds of join attempts (each round tries every `metad.join` URL).
const JOIN_RETRY: Duration = Duration::from_millis(500);

/// The share every new cluster starts with.
pub fn default_share() -> (String, String) {
    ("default".to_string(), "/export".to_string())
}

/// A running metad with its listeners.
pub struct MetadRole {
    pub metad: metad::Metad,
    /// The internal listener's bound address.
    pub internal_addr: SocketAddr,
    /// The URL other nodes reach it at.
    pub advertise: String,
    pub control_addr: SocketAddr,
    servers: Vec<JoinHandle<Result<(), tonic::transport::Error>>>,
}

impl MetadRole {
    /// `tessera dev`: a single voter, ready (leader elected, default share present) on return.
    pub async fn start_dev(config: &Config, stop: &Shutdown) -> anyhow::Result<MetadRole> {
        let listener = TcpListener::bind(config.metad.addr()).await.context("binding metad's listener")?;
        let addr = listener.local_addr()?;
        let metad = metad::Metad::open(metad::MetadOptions {
            node_id: config.node_id,
            data_dir: config.metad_dir(),
            advertise_addr: format!("http://{addr}"),
            default_share: Some(default_share()),
        })
        .await
        .context("starting metad")?;
        MetadRole::serve(metad, listener, format!("http://{addr}"), config, stop).await
    }

    /// `tessera serve`: bootstrap, join or restart a member as `config.metad` says. Returns
    /// once the listeners are up (and a join request was accepted); the default share is
    /// created in the background once a leader is known.
    pub async fn start_member(config: &Config, stop: &Shutdown) -> anyhow::Result<MetadRole> {
        let m = &config.metad;
        let listener = TcpListener::bind(m.addr()).await.context("binding metad's listener")?;
        let addr = listener.local_addr()?;
        let advertise = if m.advertise.is_empty() { format!("http://{addr}") } else { m.advertise.clone() };
        let members = m.initial_member_ids()?;
        let joining = !m.join.is_empty();
        let lowest = members.keys().next().copied();
        let bootstrap = if members.is_empty() && !joining {
            metad::Bootstrap::SingleVoter
        } else if m.bootstrap || (!joining && lowest == Some(config.node_id)) {
            metad::Bootstrap::Members(members)
        } else {
            metad::Bootstrap::Join
        };
        let opts = metad::MetadOptions {
            node_id: config.node_id,
            data_dir: config.metad_dir(),
            advertise_addr: advertise.clone(),
            default_share: Some(default_share()),
        };
        let tuning = metad::RaftTuning { snapshot_logs: m.snapshot_logs, keep_logs: m.keep_logs };
        let liveness = metad::Liveness {
            dead_after: Duration::from_millis(m.blockd_dead_after_ms),
            interval: Duration::from_millis(m.blockd_heartbeat_ms),
        };
        let metad =
            metad::Metad::start_tuned(&opts, bootstrap, tuning, liveness).await.context("starting metad")?;
        let role = MetadRole::serve(metad, listener, advertise.clone(), config, stop).await?;

        if joining && !role.metad.raft().is_initialized().await.context("reading Raft state")? {
            join(&m.join, config.node_id, &advertise).await?;
        }
        // Once a leader is known, make sure the default share exists (through the leader, from
        // any node). A cluster whose other voters are not up yet keeps this waiting, not failing.
        let metad = role.metad.clone();
        tokio::spawn(async move {
            let share = default_share();
            while let Err(e) = metad.wait_ready(Some(&share)).await {
                tracing::info!(error = %e, "metad not ready yet");
            }
        });
        Ok(role)
    }

    async fn serve(
        metad: metad::Metad,
        listener: TcpListener,
        advertise: String,
        config: &Config,
        stop: &Shutdown,
    ) -> anyhow::Result<MetadRole> {
        let internal_addr = listener.local_addr()?;
        let internal = tonic::transport::Server::builder()
            .add_service(metad.meta_service())
            .add_service(metad.raft_service())
            .add_service(metad.control_service());
        let control_listener =
            TcpListener::bind(config.control.addr()).await.context("binding the control API's listener")?;
        let control_addr = control_listener.local_addr()?;
        let control = tonic::transport::Server::builder().add_service(metad.control_service());
        // TCP_NODELAY: without it every small reply waits ~40 ms for a delayed ACK.
        let servers = vec![
            tokio::spawn(internal.serve_with_incoming_shutdown(
                TcpIncoming::from(listener).with_nodelay(Some(true)),
                stop.clone().cancelled_owned(),
            )),
            tokio::spawn(control.serve_with_incoming_shutdown(
                TcpIncoming::from(control_listener).with_nodelay(Some(true)),
                stop.clone().cancelled_owned(),
            )),
        ];
        Ok(MetadRole { metad, internal_addr, advertise, control_addr, servers })
    }

    /// Waits for the listeners (stopped by the `stop` given at start) and shuts metad down.
    /// Clients on other nodes (block daemons' heartbeats, gateways) keep their connections
    /// open, so a graceful drain gets [`DRAIN_DEADLINE`] before the listeners are dropped.
    pub async fn stop(self) -> anyhow::Result<()> {
        for mut s in self.servers {
            match tokio::time::timeout(DRAIN_DEADLINE, &mut s).await {
                Ok(Ok(Err(e))) => tracing::warn!(error = %e, "a metad listener ended with an error"),
                Ok(Err(e)) => tracing::warn!(error = %e, "a metad listener task ended abnormally"),
                Ok(Ok(Ok(()))) => {}
                Err(_) => {
                    tracing::info!("closing metad connections still open after {DRAIN_DEADLINE:?}");
                    s.abort();
                }
            }
        }
        self.metad.shutdown().await.context("stopping metad")
    }
}

/// Asks the members at `urls` (control API), in turn, to add this node as a voter, until one
/// succeeds or [`JOIN_DEADLINE`] passes.
async fn join(urls: &[String], node_id: u64, advertise: &str) -> anyhow::Result<()> {
    use proto::pb::control_client::ControlClient;
    let deadline = tokio::time::Instant::now() + JOIN_DEADLINE;
    loop {
        for url in urls {
            let attempt = async {
                let mut client = ControlClient::connect(url.clone()).await?;
                let req = proto::pb::AddNodeRequest { node_id, addr: advertise.to_string(), voter: true };
                client.add_node(req).await.map_err(anyhow::Error::from)
            };
            match tokio::time::timeout_at(deadline, attempt).await {
                Ok(Ok(reply)) => {
                    tracing::info!(url, members = reply.get_ref().members.len(), "joined the metad group");
                    return Ok(());
                }
                Ok(Err(e)) => tracing::info!(url, error = %e, "join attempt failed"),
                Err(_) => anyhow::bail!("metad.join: no member added this node within {JOIN_DEADLINE:?}"),
            }
        }
        if tokio::time::Instant::now() + JOIN_RETRY >= deadline {
            anyhow::bail!("metad.join: no member added this node within {JOIN_DEADLINE:?}");
        }
        tokio::time::sleep(JOIN_RETRY).await;
    }
}
