//! The blockd role of a node: its options from configuration.
//!
//! Owns: turning `blockd.*` keys and the node's TLS identity into `blockd::BlockdOptions`
//! and the S3 tier's options. Must never: hold chunk logic (that is the `blockd` crate).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use cluster::config::Config;
use cluster::grpc_tls::ClientTls;
use cluster::tls::CertificateDer;

/// Starts the block daemon: mutual TLS against `ca`, presenting `identity` (to its clients and
/// peers, and to metad at `metad_endpoints` for heartbeats), with the S3 tier when a bucket
/// is configured.
pub async fn start(
    config: &Config,
    identity: cluster::tls::Identity,
    ca: CertificateDer<'static>,
    metad_endpoints: Vec<String>,
    stop: &cluster::Shutdown,
) -> anyhow::Result<blockd::Blockd> {
    let b = &config.blockd;
    let advertise_addr = if b.advertise.is_empty() {
        None
    } else {
        Some(b.advertise.parse::<SocketAddr>().context("blockd.advertise")?)
    };
    let repair = blockd::RepairOptions {
        interval: (b.repair_interval_ms > 0).then(|| Duration::from_millis(b.repair_interval_ms)),
        max_copies_per_sec: b.repair_max_copies_per_sec,
    };
    let opts = blockd::BlockdOptions {
        data_dir: config.blockd_dir(),
        listen: SocketAddr::new(b.bind, b.port),
        identity: identity.clone(),
        client_auth: blockd::ClientAuth::Required(vec![ca.clone()]),
        segment_bytes: b.segment_bytes,
        min_free_bytes: b.min_free_bytes,
        metad_tls: ClientTls::mutual(&ca, &identity).context("blockd's client TLS identity")?,
        metad_endpoints,
        advertise_addr,
        repair,
        scrub: blockd::ScrubOptions {
            interval: (b.scrub_interval_ms > 0).then(|| Duration::from_millis(b.scrub_interval_ms)),
            max_bytes_per_sec: b.scrub_max_bytes_per_sec,
        },
    };
    blockd::Blockd::start_with_tier(opts, s3_options(&b.s3, &config.blockd_dir())?, stop.clone())
        .await
        .context("starting blockd")
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
    o.locate_interval = Duration::from_millis(s3.locate_interval_ms);
    o.leftover_grace = Duration::from_millis(s3.leftover_grace_ms);
    o.orphan_grace = Duration::from_millis(s3.orphan_grace_ms);
    Ok(Some(o))
}
