//! The metad role of a node: its gRPC listeners and, in `serve`, how it forms or joins the
//! group.
//!
//! Owns: binding the internal listener (Meta + Raft + Control; mutual TLS against the
//! cluster CA, every call checked against `metad::service::authz` by the role of the
//! caller's certificate) and the control listener (plaintext, no client certificate: the
//! operators' API, see docs/cluster.md), the bootstrap decision from configuration, joining
//! through members' control APIs, and making sure the default share exists once a leader is
//! known. Must never: decide anything Raft decides (leadership, membership changes beyond
//! asking to be added); serve the internal services without TLS and the role gate.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use anyhow::Context;
use cluster::Shutdown;
use cluster::config::Config;
use cluster::grpc_tls::{ClientTls, RoleGateLayer, server_tls};
use cluster::tls::{CertificateDer, Identity};
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

/// metad's TLS material: the cluster CA and this node's `metad` certificate, which its
/// internal listener presents and its Raft, forwarding and control-forwarding clients present
/// to the other members.
pub struct MetadTls {
    pub ca: CertificateDer<'static>,
    pub identity: Identity,
}

impl MetadTls {
    fn client(&self) -> anyhow::Result<ClientTls> {
        ClientTls::mutual(&self.ca, &self.identity).context("metad's client TLS identity")
    }
}

/// The address clients dial for a listener bound to `ip`: a wildcard bind is reached on the
/// loopback address of its family (which `tessera dev`'s certificates name).
fn dial_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        other => other,
    }
}

/// The host `tessera dev`'s metad certificate must name (see [`dial_ip`]).
pub fn dev_dial_host(config: &Config) -> String {
    dial_ip(config.metad.bind).to_string()
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
    /// Its internal listener is mutual TLS like a cluster node's (the block daemon's
    /// heartbeats reach it over the network; the gateway calls it in-process).
    pub async fn start_dev(config: &Config, tls: &MetadTls, stop: &Shutdown) -> anyhow::Result<MetadRole> {
        let listener = TcpListener::bind(config.metad.addr()).await.context("binding metad's listener")?;
        let addr = listener.local_addr()?;
        let advertise = format!("https://{}", SocketAddr::new(dial_ip(addr.ip()), addr.port()));
        let metad = metad::Metad::open(metad::MetadOptions {
            node_id: config.node_id,
            data_dir: config.metad_dir(),
            advertise_addr: advertise.clone(),
            default_share: Some(default_share()),
            client_tls: tls.client()?,
        })
        .await
        .context("starting metad")?;
        MetadRole::serve(metad, listener, advertise, config, tls, stop).await
    }

    /// `tessera serve`: bootstrap, join or restart a member as `config.metad` says. Returns
    /// once the listeners are up (and a join request was accepted); the default share is
    /// created in the background once a leader is known.
    /// Member URLs may be written `http://` or `https://`: they are dialed (and advertised)
    /// as `https://`.
    pub async fn start_member(config: &Config, tls: &MetadTls, stop: &Shutdown) -> anyhow::Result<MetadRole> {
        let m = &config.metad;
        let client_tls = tls.client()?;
        let listener = TcpListener::bind(m.addr()).await.context("binding metad's listener")?;
        let addr = listener.local_addr()?;
        let advertise = if m.advertise.is_empty() {
            format!("https://{addr}")
        } else {
            client_tls.url(&m.advertise).context("metad.advertise")?
        };
        let members = m
            .initial_member_ids()?
            .into_iter()
            .map(|(id, url)| Ok((id, client_tls.url(&url).context("metad.initial_members")?)))
            .collect::<anyhow::Result<std::collections::BTreeMap<u64, String>>>()?;
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
            client_tls,
        };
        let tuning = metad::RaftTuning { snapshot_logs: m.snapshot_logs, keep_logs: m.keep_logs };
        let liveness = metad::Liveness {
            dead_after: Duration::from_millis(m.blockd_dead_after_ms),
            interval: Duration::from_millis(m.blockd_heartbeat_ms),
        };
        let metad =
            metad::Metad::start_tuned(&opts, bootstrap, tuning, liveness).await.context("starting metad")?;
        let role = MetadRole::serve(metad, listener, advertise.clone(), config, tls, stop).await?;

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
        tls: &MetadTls,
        stop: &Shutdown,
    ) -> anyhow::Result<MetadRole> {
        let internal_addr = listener.local_addr()?;
        let internal = tonic::transport::Server::builder()
            .tls_config(server_tls(&tls.ca, &tls.identity))
            .context("metad's internal listener: TLS identity")?
            .layer(RoleGateLayer::new(metad::service::authz::may_call))
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
