//! The gateway role of a node: the I/O engine and the NFS listener.
//!
//! Owns: building the engine from `gateway.*` keys (one static block daemon in `tessera
//! dev`, the live daemons metad lists in `tessera serve`; a daemon of the same process
//! and metad reached in-process when `gateway.in_process`; metad's network endpoints over
//! mutual TLS with the gateway's certificate), serving NFSv3 + MOUNT with the
//! process's duplicate request cache (`nfs.drc_*`), the embedded portmapper when
//! `nfs.portmap_port` is set, and the gateway-first half of shutdown (stop taking
//! requests, then flush every buffered write).
//! Must never: hold protocol or engine logic.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use cluster::config::Config;
use cluster::grpc_tls::ClientTls;
use cluster::tls::CertificateDer;
use gateway::engine::{BlockdSource, Engine, EngineOptions, LocalMeta, in_process_transport};

use super::in_process::InProcessBlockd;
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinHandle;

/// The other roles running in the gateway's process, reached without a socket when
/// `gateway.in_process` is set.
#[derive(Clone, Copy, Default)]
pub struct LocalRoles<'a> {
    pub metad: Option<&'a metad::Metad>,
    pub blockd: Option<&'a blockd::Blockd>,
}

/// How long the readiness probe waits for metad.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

pub struct GatewayRole {
    pub nfs_addr: SocketAddr,
    /// The embedded portmapper's address, when `nfs.portmap_port` is set.
    pub portmap_addr: Option<SocketAddr>,
    engine: Arc<Engine>,
    server: JoinHandle<std::io::Result<()>>,
    portmap: Vec<JoinHandle<std::io::Result<()>>>,
}

impl GatewayRole {
    /// Connects the engine (lazily: metad and daemons are reached on first use) and binds
    /// the NFS listener. `stop` stops the listener.
    pub async fn start(
        config: &Config,
        metad_endpoints: Vec<String>,
        blockd: BlockdSource,
        local: LocalRoles<'_>,
        ca: CertificateDer<'static>,
        identity: cluster::tls::Identity,
        stop: &cluster::Shutdown,
    ) -> anyhow::Result<GatewayRole> {
        anyhow::ensure!(!metad_endpoints.is_empty(), "no metad endpoint for the gateway");
        let mut opts = EngineOptions::for_cluster(metad_endpoints, blockd, vec![ca.clone()], &config.gateway);
        opts.metad_tls = ClientTls::mutual(&ca, &identity).context("the gateway's client TLS identity")?;
        opts.client_identity = Some(identity);
        if config.gateway.in_process {
            opts.local_daemon = local.blockd.map(InProcessBlockd::handle);
            opts.local_metad = local.metad.map(|m| LocalMeta(in_process_transport(m.meta_service())));
        }
        let engine = Engine::connect(opts, stop.clone()).await.context("starting the gateway engine")?;
        let listener = TcpListener::bind(SocketAddr::new(config.nfs.bind, config.nfs.port))
            .await
            .context("binding the NFS listener")?;
        let nfs_addr = listener.local_addr()?;
        // Bind the portmapper before serving, so a bind error leaves nothing running.
        let portmap_sockets = match config.nfs.portmap_port {
            0 => None,
            port => {
                let addr = SocketAddr::new(config.nfs.bind, port);
                let tcp = TcpListener::bind(addr).await.context("binding the portmapper's TCP port (nfs.portmap_port)")?;
                let udp = UdpSocket::bind(addr).await.context("binding the portmapper's UDP port (nfs.portmap_port)")?;
                Some((tcp, udp))
            }
        };
        let proxy_protocol_from =
            config.nfs.proxy_sources().map_err(|e| anyhow::anyhow!("nfs.proxy_protocol_from: {e}"))?;
        let drc = gateway::rpc::DuplicateRequestCache::new(gateway::rpc::DrcOptions {
            max_entries: usize::try_from(config.nfs.drc_entries).unwrap_or(usize::MAX),
            max_bytes: usize::try_from(config.nfs.drc_bytes).unwrap_or(usize::MAX),
        });
        let server = tokio::spawn(gateway::server::serve(
            listener,
            Arc::clone(&engine),
            gateway::server::NfsServerOptions {
                max_record_bytes: config.nfs.max_record_bytes,
                drc: Arc::new(drc),
                proxy_protocol_from: Arc::new(proxy_protocol_from),
            },
            stop.clone(),
        ));
        let mut portmap_addr = None;
        let mut portmap = Vec::new();
        if let Some((tcp, udp)) = portmap_sockets {
            let addr = tcp.local_addr()?;
            portmap_addr = Some(addr);
            let map = gateway::portmap::Portmap::new(nfs_addr.port(), addr.port());
            portmap.push(tokio::spawn(gateway::server::serve_portmap(tcp, map.clone(), stop.clone())));
            portmap.push(tokio::spawn(gateway::server::serve_portmap_udp(udp, map, stop.clone())));
        }
        Ok(GatewayRole { nfs_addr, portmap_addr, engine, server, portmap })
    }

    /// Feeds `signal` from now on: ready while metad answers the gateway's linearizable
    /// reads (a gateway on the minority side of a partition does not).
    pub fn probe_readiness(&self, signal: Arc<cluster::health::Signal>, stop: &cluster::Shutdown) {
        let engine = Arc::clone(&self.engine);
        cluster::health::spawn_probe(signal, PROBE_TIMEOUT, stop, move || {
            let engine = Arc::clone(&engine);
            async move { engine.probe_metad().await.map_err(|e| format!("metad does not answer: {e}")) }
        });
    }

    /// After `stop` was cancelled: waits for the listener, then makes every buffered write
    /// durable (with `flush`), or drops them (without: the node is failing, and a late flush
    /// could land over writes its clients have since made through another gateway; they
    /// resend what was not committed, since this process's write verifier dies with it).
    pub async fn stop(self, flush: bool) {
        match self.server.await {
            Ok(Err(e)) => tracing::warn!(error = %e, "NFS server ended with an error"),
            Err(e) => tracing::warn!(error = %e, "NFS server task ended abnormally"),
            Ok(Ok(())) => {}
        }
        for portmap in self.portmap {
            match portmap.await {
                Ok(Err(e)) => tracing::warn!(error = %e, "portmapper ended with an error"),
                Err(e) => tracing::warn!(error = %e, "portmapper task ended abnormally"),
                Ok(Ok(())) => {}
            }
        }
        if !flush {
            tracing::warn!("failing: buffered UNSTABLE writes are dropped, not flushed (clients resend them)");
            return;
        }
        if let Err(e) = self.engine.flush_all().await {
            tracing::error!(error = %e, "flushing buffered writes at shutdown failed");
        }
    }
}
