//! Starts, connects and stops a node's roles.
//!
//! Owns the order of things: metad before the gateway that needs it, the block daemon
//! before the gateway that writes to it; on SIGTERM the gateway stops taking requests and
//! flushes every buffered write before the block daemon and metad shut down, so nothing
//! acknowledged is lost on a clean stop.
//!
//! `tessera serve` (`run_serve`) runs the roles a config names; only `metad` for now: it
//! bootstraps, joins (`metad.join`) or restarts a member, and serves Meta + Raft + Control on
//! the internal port and Control on the control port.
//!
//! Must never: implement a role's logic. Roles in one process still talk over their real
//! network links (gRPC to metad, QUIC to blockd), as the cluster does.

use std::net::SocketAddr;
use std::sync::Arc;

use std::time::Duration;

use anyhow::Context;
use cluster::Shutdown;
use cluster::config::{Config, Role};
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;

/// How long a node started with `metad.join` keeps asking members to add it.
const JOIN_DEADLINE: Duration = Duration::from_secs(120);
/// Pause between two rounds of join attempts (each round tries every `metad.join` URL).
const JOIN_RETRY: Duration = Duration::from_millis(500);

/// Runs every role until SIGTERM/SIGINT.
pub async fn run_dev(config: Config) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
    // The dev cluster's own CA and its blockd/gateway certificates (mutual TLS on the chunk link).
    let pki = cluster::tls::DevPki::load_or_create(&config.tls_dir())?;
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
            .add_service(metad.raft_service())
            .add_service(metad.control_service());
        tokio::spawn(router.serve_with_incoming_shutdown(
            TcpIncoming::from(meta_listener).with_nodelay(Some(true)),
            stop.cancelled_owned(),
        ))
    };
    let control_listener =
        TcpListener::bind(config.control.addr()).await.context("binding the control API's listener")?;
    let control_addr = control_listener.local_addr()?;
    let control_server = {
        let stop = core_stop.clone();
        let router = tonic::transport::Server::builder().add_service(metad.control_service());
        tokio::spawn(router.serve_with_incoming_shutdown(TcpIncoming::from(control_listener).with_nodelay(Some(true)), stop.cancelled_owned()))
    };

    // blockd, with its S3 tier when a bucket is configured.
    let blockd = blockd::Blockd::start_with_tier(
        blockd::BlockdOptions {
            data_dir: config.blockd_dir(),
            listen: SocketAddr::new(config.blockd.bind, config.blockd.port),
            identity: pki.blockd_identity.clone(),
            client_auth: blockd::ClientAuth::Required(vec![pki.ca_anchor.clone()]),
            segment_bytes: config.blockd.segment_bytes,
            min_free_bytes: config.blockd.min_free_bytes,
            metad_endpoints: vec![format!("http://{meta_addr}")],
            advertise_addr: None,
            repair: blockd::RepairOptions::default(),
            scrub: blockd::ScrubOptions::default(),
        },
        s3_options(&config.blockd.s3, &config.blockd_dir())?,
        core_stop.clone(),
    )
    .await
    .context("starting blockd")?;
    let blockd_addr = blockd.local_addr();

    // gateway.
    let mut engine_opts = gateway::engine::EngineOptions::from_config(
        format!("http://{meta_addr}"),
        blockd_addr,
        vec![pki.ca_anchor.clone()],
        &config.gateway,
    );
    engine_opts.client_identity = Some(pki.gateway_identity.clone());
    let engine = gateway::engine::Engine::connect(engine_opts, gateway_stop.clone())
    .await
    .context("starting the gateway engine")?;
    let nfs_listener = TcpListener::bind(SocketAddr::new(config.nfs.bind, config.nfs.port))
        .await
        .context("binding the NFS listener")?;
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

/// The S3 tier's options, or `None` when no bucket is configured.
fn s3_options(s3: &cluster::config::S3Config, blockd_dir: &std::path::Path) -> anyhow::Result<Option<blockd::S3Options>> {
    if s3.bucket.is_empty() {
        return Ok(None);
    }
    let prefix = if s3.prefix.is_empty() {
        std::fs::create_dir_all(blockd_dir).with_context(|| format!("creating {}", blockd_dir.display()))?;
        blockd::daemon_id(blockd_dir)?.to_string()
    } else {
        s3.prefix.clone()
    };
    let endpoint = (!s3.endpoint.is_empty()).then(|| s3.endpoint.clone());
    let mut o = blockd::S3Options::new(endpoint, &s3.bucket, &s3.region, &s3.access_key, &s3.secret_key, prefix);
    o.local_bound_bytes = s3.local_bound_bytes;
    o.upload_concurrency = (s3.upload_concurrency as usize).max(1);
    o.read_timeout = Duration::from_millis(s3.read_timeout_ms);
    Ok(Some(o))
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

/// Runs the roles `config.roles` names until SIGTERM/SIGINT. Only `metad` is available in
/// `serve` for now: a config naming `blockd` or `gateway` is refused with a clear error
/// (`tessera dev` runs all three in one process).
pub async fn run_serve(config: Config) -> anyhow::Result<()> {
    if let Some(role) = config.roles.iter().find(|r| **r != Role::Metad) {
        anyhow::bail!(
            "roles: {role:?} is not available in `tessera serve` yet (only \"metad\"); `tessera dev` runs every role"
        );
    }
    if !config.roles.contains(&Role::Metad) {
        anyhow::bail!("roles: no role to run (set roles = [\"metad\"])");
    }
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
    cluster::metrics::install_exporter(config.metrics.addr())?;
    let stop = Shutdown::new();

    let m = &config.metad;
    let meta_listener = TcpListener::bind(m.addr()).await.context("binding metad's listener")?;
    let meta_addr = meta_listener.local_addr()?;
    let advertise = if m.advertise.is_empty() { format!("http://{meta_addr}") } else { m.advertise.clone() };
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
    let default_share = ("default".to_string(), "/export".to_string());
    let opts = metad::MetadOptions {
        node_id: config.node_id,
        data_dir: config.metad_dir(),
        advertise_addr: advertise.clone(),
        default_share: Some(default_share.clone()),
    };
    let tuning = metad::RaftTuning { snapshot_logs: m.snapshot_logs, keep_logs: m.keep_logs };
    let metad = metad::Metad::start_with(&opts, bootstrap, tuning).await.context("starting metad")?;

    let meta_server = {
        let router = tonic::transport::Server::builder()
            .add_service(metad.meta_service())
            .add_service(metad.raft_service())
            .add_service(metad.control_service());
        tokio::spawn(router.serve_with_incoming_shutdown(
            TcpIncoming::from(meta_listener).with_nodelay(Some(true)),
            stop.clone().cancelled_owned(),
        ))
    };
    let control_listener =
        TcpListener::bind(config.control.addr()).await.context("binding the control API's listener")?;
    let control_addr = control_listener.local_addr()?;
    let control_server = {
        let router = tonic::transport::Server::builder().add_service(metad.control_service());
        tokio::spawn(
            router.serve_with_incoming_shutdown(TcpIncoming::from(control_listener).with_nodelay(Some(true)), stop.clone().cancelled_owned()),
        )
    };

    if joining && !metad.raft().is_initialized().await.context("reading Raft state")? {
        join(&m.join, config.node_id, &advertise).await?;
    }
    // Once a leader is known, make sure the default share exists (through the leader, from any
    // node). A cluster whose other voters are not up yet keeps this node waiting, not failing.
    {
        let metad = metad.clone();
        tokio::spawn(async move {
            loop {
                match metad.wait_ready(Some(&default_share)).await {
                    Ok(()) => break,
                    Err(e) => tracing::info!(error = %e, "metad not ready yet"),
                }
            }
        });
    }
    println!("Tessera node {} is serving metad (data in {}).", config.node_id, config.data_dir.display());
    println!(
        "TESSERA_READY metad={meta_addr} advertise={advertise} control={control_addr} metrics={}",
        config.metrics.addr()
    );

    let signal = cluster::shutdown::wait_for_signal().await?;
    tracing::info!(signal, "stopping");
    stop.cancel();
    let _ = meta_server.await;
    let _ = control_server.await;
    metad.shutdown().await.context("stopping metad")?;
    tracing::info!("stopped");
    Ok(())
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
