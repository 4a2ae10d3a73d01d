//! Starts, connects and stops a node's roles.
//!
//! Owns the order of things: metad before the gateway that needs it, the block daemon
//! before the gateway that writes to it; on SIGTERM the gateway stops taking requests and
//! flushes every buffered write before the block daemon and metad shut down, so nothing
//! acknowledged is lost on a clean stop.
//!
//! Must never: implement a role's logic. Roles in one process still talk over their real
//! network links (gRPC to metad, QUIC to blockd), as the cluster does.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use cluster::config::Config;
use cluster::Shutdown;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;

/// Runs every role until SIGTERM/SIGINT.
pub async fn run_dev(config: Config) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
    let identity = cluster::tls::Identity::load_or_create(&config.tls_dir())?;
    cluster::metrics::install_exporter(config.metrics.addr())?;

    // Two shutdown phases: the gateway first (stop taking requests, flush), then the core.
    let core_stop = Shutdown::new();
    let gateway_stop = Shutdown::new();

    // metad: its internal gRPC (Meta + Raft) on a free port, the control API on its own.
    let meta_listener = TcpListener::bind(config.metad.addr()).await.context("binding metad's listener")?;
    let meta_addr = meta_listener.local_addr()?;
    let metad = metad::Metad::open(metad::MetadOptions {
        node_id: config.node_id,
        data_dir: config.metad_dir(),
        advertise_addr: format!("http://{meta_addr}"),
        default_share: Some(("default".to_string(), "/export".to_string())),
    })
    .await
    .context("starting metad")?;
    let meta_server = {
        let stop = core_stop.clone();
        let router = tonic::transport::Server::builder()
            .add_service(metad.meta_service())
            .add_service(metad.raft_service());
        tokio::spawn(router.serve_with_incoming_shutdown(TcpIncoming::from(meta_listener).with_nodelay(Some(true)), stop.cancelled_owned()))
    };
    let control_listener =
        TcpListener::bind(config.control.addr()).await.context("binding the control API's listener")?;
    let control_addr = control_listener.local_addr()?;
    let control_server = {
        let stop = core_stop.clone();
        let router = tonic::transport::Server::builder().add_service(metad.control_service());
        tokio::spawn(router.serve_with_incoming_shutdown(TcpIncoming::from(control_listener), stop.cancelled_owned()))
    };

    // blockd.
    let blockd = blockd::Blockd::start(
        blockd::BlockdOptions {
            data_dir: config.blockd_dir(),
            listen: SocketAddr::new(config.blockd.bind, config.blockd.port),
            identity: identity.clone(),
            segment_bytes: config.blockd.segment_bytes,
            min_free_bytes: config.blockd.min_free_bytes,
        },
        core_stop.clone(),
    )
    .await
    .context("starting blockd")?;
    let blockd_addr = blockd.local_addr();

    // gateway.
    let engine = gateway::engine::Engine::connect(
        gateway::engine::EngineOptions::from_config(
            format!("http://{meta_addr}"),
            blockd_addr,
            vec![identity.trust_anchor()],
            &config.gateway,
        ),
        gateway_stop.clone(),
    )
    .await
    .context("starting the gateway engine")?;
    let nfs_listener = TcpListener::bind(SocketAddr::new(config.nfs.bind, config.nfs.port)).await.context("binding the NFS listener")?;
    let nfs_addr = nfs_listener.local_addr()?;
    let nfs_server = tokio::spawn(gateway::server::serve(
        nfs_listener,
        Arc::clone(&engine),
        gateway::server::NfsServerOptions { max_record_bytes: config.nfs.max_record_bytes },
        gateway_stop.clone(),
    ));

    print_banner(&config, nfs_addr, control_addr);

    let signal = cluster::shutdown::wait_for_signal().await?;
    tracing::info!(signal, "stopping: gateway first, then blockd and metad");
    gateway_stop.cancel();
    if let Err(e) = nfs_server.await {
        tracing::warn!(error = %e, "NFS server task ended abnormally");
    }
    if let Err(e) = engine.flush_all().await {
        tracing::error!(error = %e, "flushing buffered writes at shutdown failed");
    }
    core_stop.cancel();
    blockd.wait().await.context("stopping blockd")?;
    let _ = meta_server.await;
    let _ = control_server.await;
    metad.shutdown().await.context("stopping metad")?;
    tracing::info!("stopped");
    Ok(())
}

fn print_banner(config: &Config, nfs: SocketAddr, control: SocketAddr) {
    let host = nfs.ip();
    let port = nfs.port();
    println!("Tessera dev is running (data in {}).", config.data_dir.display());
    println!("  NFSv3 + MOUNT: {nfs}   export: /export");
    println!("  control API:   {control}");
    println!("  metrics:       http://{}/metrics", config.metrics.addr());
    println!("Try it:");
    println!("  nfs-ls 'nfs://{host}/export?version=3&nfsport={port}&mountport={port}'");
    println!("  nfs-cp ./file 'nfs://{host}/export/file?version=3&nfsport={port}&mountport={port}'");
    println!("  sudo mount -t nfs -o vers=3,port={port},mountport={port},tcp,nolock {host}:/export /mnt");
    // One machine-readable line, for scripts and tests.
    println!("TESSERA_READY nfs={nfs} control={control} metrics={}", config.metrics.addr());
}
