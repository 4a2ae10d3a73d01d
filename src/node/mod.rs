//! Starts, connects and stops a node's roles.
//!
//! Owns the order of things: metad before the roles that need it, the block daemon before
//! the gateway that writes to it; on SIGTERM the gateway stops taking requests and flushes
//! every buffered write before the block daemon and metad shut down, so nothing
//! acknowledged is lost on a clean stop.
//!
//! `tessera dev` (`run_dev`) runs all three roles on one node with its own CA
//! (`cluster::tls::DevPki`) and one block daemon. `tessera serve` (`run_serve`) runs the
//! roles a config names: metad bootstraps, joins (`metad.join`) or restarts a member;
//! every role uses its certificate from the cluster CA under `tls.dir` (the QUIC chunk
//! links and metad's internal gRPC port are mutual TLS), blockd and gateway reach the metad
//! members of `metad_endpoints` (or the node's own metad); the gateway places chunks on the
//! live block daemons metad lists.
//!
//! Must never: implement a role's logic. Roles in one process talk through the same
//! interfaces as over the network, except that a gateway reaches the metad and the block
//! daemon of its own process without a socket (`gateway.in_process`: metad's `Meta`
//! service called through tonic in memory, the block store through `in_process`); other
//! nodes are reached over gRPC and QUIC.

mod blockd_role;
mod failure;
mod gateway_role;
mod in_process;
mod metad_role;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use cluster::Shutdown;
use cluster::config::{Config, Role};
use cluster::health::Readiness;
use cluster::tls::{NodeTls, Role as CertRole};
use gateway::engine::BlockdSource;

use gateway_role::{GatewayRole, LocalRoles};
use failure::Failure;
use metad_role::{MetadRole, MetadTls};

/// Runs every role until SIGTERM/SIGINT, or until the block store or metad's Raft core fails
/// (then returns an error, so the process exits non-zero and is restarted: `failure.rs`).
pub async fn run_dev(config: Config) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
    // The dev cluster's own CA and its blockd/gateway/metad certificates (mutual TLS on the
    // chunk link and on metad's internal port); they name the addresses clients dial.
    let pki = cluster::tls::DevPki::load_or_create(
        &config.tls_dir(),
        &[config.blockd.bind.to_string(), metad_role::dev_dial_host(&config)],
    )?;
    // Two shutdown phases: the gateway first (stop taking requests, flush), then the core.
    let core_stop = Shutdown::new();
    let gateway_stop = Shutdown::new();
    let readiness = serve_metrics_port(&config, &core_stop).await?;

    let failure = Failure::new();
    let metad_tls = MetadTls { ca: pki.ca_anchor.clone(), identity: pki.metad_identity.clone() };
    let metad = MetadRole::start_dev(&config, &metad_tls, &core_stop).await?;
    failure.watch_metad(metad.metad.clone());
    probe_metad(&readiness, &metad.metad, &core_stop);
    let blockd = failure
        .before(blockd_role::start(
            &config,
            pki.blockd_identity.clone(),
            pki.ca_anchor.clone(),
            vec![metad.advertise.clone()],
            &core_stop,
        ))
        .await?;
    failure.watch_blockd(blockd.store());
    readiness.signal("blockd").ok();
    let gateway = failure
        .before(GatewayRole::start(
            &config,
            vec![metad.advertise.clone()],
            BlockdSource::Static(blockd.local_addr()),
            LocalRoles { metad: Some(&metad.metad), blockd: Some(&blockd) },
            pki.ca_anchor.clone(),
            pki.gateway_identity.clone(),
            &gateway_stop,
        ))
        .await?;
    gateway.probe_readiness(readiness.signal("gateway"), &core_stop);

    print_banner(&config, gateway.nfs_addr, gateway.portmap_addr, metad.control_addr);

    let stop = wait_for_stop(&failure).await?;
    drop(failure);
    gateway_stop.cancel();
    gateway.stop(stop.flushes()).await;
    core_stop.cancel();
    blockd.wait().await.context("stopping blockd")?;
    metad.stop().await?;
    tracing::info!("stopped");
    stop.into_result()
}

/// Serves the metrics port from now on (`/metrics`, `/health`, `/health/ready`: see
/// `cluster::health`); the roles add their readiness signals as they start.
async fn serve_metrics_port(config: &Config, stop: &Shutdown) -> anyhow::Result<Arc<Readiness>> {
    let metrics = cluster::metrics::install_recorder(config.metrics.addr())?;
    let readiness = Readiness::new();
    cluster::health::serve(config.metrics.addr(), metrics, Arc::clone(&readiness), stop).await?;
    Ok(readiness)
}

/// Metad is ready while it can serve a linearizable read: a leader confirmed by a quorum
/// gives it a read index (a member on the minority side of a partition cannot get one;
/// with Pre-Vote it may still name the old leader, so knowing a leader is not enough).
fn probe_metad(readiness: &Readiness, metad: &metad::Metad, stop: &Shutdown) {
    let metad = metad.clone();
    cluster::health::spawn_probe(readiness.signal("metad"), Duration::from_secs(1), stop, move || {
        let metad = metad.clone();
        async move { metad.read_small(|_| Ok(())).await.map_err(|e| format!("no linearizable read: {e}")) }
    });
}

/// Why a node stops.
enum Stop {
    /// SIGTERM or SIGINT.
    Signal,
    /// The block store's writer failed (a failed fsync, or an index commit that ran out of
    /// space), or metad's Raft core stopped on a fatal error (a log write failed): the node
    /// exits with an error, so its service manager restarts it and recovery re-reads its
    /// data (fail-stop; nothing unacknowledged was promised).
    Failed(String),
}

impl Stop {
    /// Whether the gateway flushes its buffered writes while stopping: on a signal, yes; on
    /// a failure, no (see `GatewayRole::stop`).
    fn flushes(&self) -> bool {
        matches!(self, Stop::Signal)
    }

    fn into_result(self) -> anyhow::Result<()> {
        match self {
            Stop::Signal => Ok(()),
            Stop::Failed(cause) => {
                anyhow::bail!("{cause}; exiting so that the node is restarted")
            }
        }
    }
}

/// Waits for SIGTERM/SIGINT, or for a failure of the node's stores.
async fn wait_for_stop(failure: &Failure) -> anyhow::Result<Stop> {
    let stop = tokio::select! {
        signal = cluster::shutdown::wait_for_signal() => {
            tracing::info!(signal = signal?, "stopping: gateway first, then blockd and metad");
            Stop::Signal
        }
        cause = failure.wait() => Stop::Failed(cause),
    };
    if let Stop::Failed(cause) = &stop {
        tracing::error!(%cause, "stopping the node so that it is restarted");
    }
    Ok(stop)
}

fn print_banner(config: &Config, nfs: SocketAddr, portmap: Option<SocketAddr>, control: SocketAddr) {
    let host = nfs.ip();
    let port = nfs.port();
    println!("Tessera dev is running (data in {}).", config.data_dir.display());
    println!("  NFSv3 + MOUNT: {nfs}   export: /export");
    if let Some(pm) = portmap {
        println!("  portmapper:    {pm}");
    }
    println!("  control API:   {control}");
    println!("  metrics:       http://{}/metrics", config.metrics.addr());
    println!("Try it:");
    println!("  nfs-ls 'nfs://{host}/export?version=3&nfsport={port}&mountport={port}'");
    println!("  nfs-cp ./file 'nfs://{host}/export/file?version=3&nfsport={port}&mountport={port}'");
    match portmap {
        Some(pm) if pm.port() == 111 => println!("  sudo mount -t nfs -o vers=3,tcp,nolock {host}:/export /mnt"),
        _ => println!("  sudo mount -t nfs -o vers=3,port={port},mountport={port},tcp,nolock {host}:/export /mnt"),
    }
    // One machine-readable line, for scripts and tests.
    let pm = portmap.map(|a| format!(" portmap={a}")).unwrap_or_default();
    println!("TESSERA_READY nfs={nfs} control={control} metrics={}{pm}", config.metrics.addr());
}

/// Runs the roles `config.roles` names until SIGTERM/SIGINT (or a failed block store or Raft
/// core, then returns an error: fail-stop), then stops them gateway first.
pub async fn run_serve(config: Config) -> anyhow::Result<()> {
    if config.roles.is_empty() {
        anyhow::bail!("roles: no role to run (set roles = [\"metad\", \"blockd\", \"gateway\"] or a subset)");
    }
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
    let tls = NodeTls::new(&config.tls_dir());
    // Load every certificate first: a node missing one fails at once, naming the file.
    let ca =
        tls.ca_anchor().with_context(|| format!("tls.dir {}: run `tessera issue-cert`", config.tls_dir().display()))?;
    let identity = |role: CertRole| {
        tls.identity(&role)
            .with_context(|| format!("tls.dir {}: no usable {role} certificate (run `tessera issue-cert --role {role}`)", config.tls_dir().display()))
    };
    let metad_identity = config.roles.contains(&Role::Metad).then(|| identity(CertRole::Metad)).transpose()?;
    let blockd_identity = config.roles.contains(&Role::Blockd).then(|| identity(CertRole::Blockd)).transpose()?;
    let gateway_identity = config.roles.contains(&Role::Gateway).then(|| identity(CertRole::Gateway)).transpose()?;
    let core_stop = Shutdown::new();
    let gateway_stop = Shutdown::new();
    let readiness = serve_metrics_port(&config, &core_stop).await?;
    let mut ready = vec![format!("node={}", config.node_id)];
    let failure = Failure::new();

    let metad = if let Some(identity) = metad_identity {
        let m = MetadRole::start_member(&config, &MetadTls { ca: ca.clone(), identity }, &core_stop).await?;
        failure.watch_metad(m.metad.clone());
        probe_metad(&readiness, &m.metad, &core_stop);
        ready.push(format!("metad={} advertise={} control={}", m.internal_addr, m.advertise, m.control_addr));
        Some(m)
    } else {
        None
    };
    let metad_endpoints = match (&metad, config.metad_endpoints.is_empty()) {
        (_, false) => config.metad_endpoints.clone(),
        (Some(m), true) => vec![m.advertise.clone()],
        (None, true) => anyhow::bail!("metad_endpoints: a node without the metad role must name metad members"),
    };
    let blockd = match blockd_identity {
        Some(id) => {
            let b = failure.before(blockd_role::start(&config, id, ca.clone(), metad_endpoints.clone(), &core_stop)).await?;
            failure.watch_blockd(b.store());
            // Its probe is the process itself: a failed store stops the node (failure.rs).
            readiness.signal("blockd").ok();
            ready.push(format!("blockd={} blockd_id={}", b.local_addr(), b.id()));
            Some(b)
        }
        None => None,
    };
    let gateway = match gateway_identity {
        Some(id) => {
            let g = failure
                .before(GatewayRole::start(
                    &config,
                    metad_endpoints,
                    BlockdSource::FromMetad,
                    LocalRoles { metad: metad.as_ref().map(|m| &m.metad), blockd: blockd.as_ref() },
                    ca.clone(),
                    id,
                    &gateway_stop,
                ))
                .await?;
            g.probe_readiness(readiness.signal("gateway"), &core_stop);
            ready.push(format!("nfs={}", g.nfs_addr));
            if let Some(pm) = g.portmap_addr {
                ready.push(format!("portmap={pm}"));
            }
            Some(g)
        }
        None => None,
    };
    ready.push(format!("metrics={}", config.metrics.addr()));
    let roles: Vec<String> = config.roles.iter().map(|r| format!("{r:?}").to_lowercase()).collect();
    println!("Tessera node {} is serving {} (data in {}).", config.node_id, roles.join(", "), config.data_dir.display());
    println!("TESSERA_READY {}", ready.join(" "));

    let stop = wait_for_stop(&failure).await?;
    drop(failure);
    gateway_stop.cancel();
    if let Some(g) = gateway {
        g.stop(stop.flushes()).await;
    }
    core_stop.cancel();
    if let Some(b) = blockd {
        b.wait().await.context("stopping blockd")?;
    }
    if let Some(m) = metad {
        m.stop().await?;
    }
    tracing::info!("stopped");
    stop.into_result()
}
