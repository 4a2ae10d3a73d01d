//! Heartbeats to metad, the daemon's stable id, and the metad client shared with repair
//! and the S3 tier.
//!
//! Owns: the daemon id file (`<data_dir>/daemon-id`, a decimal u64 chosen once), the list
//! of metad endpoints ([`Metad`]: each call tries the endpoint that answered last, then
//! the others in order; mutual TLS with the daemon's `blockd` certificate when
//! `BlockdOptions::metad_tls` says so), and the heartbeat task, which reports the daemon's QUIC address,
//! store counters and disk capacity at the interval metad's reply asks for.
//!
//! Must never: block or slow the data path (it runs as its own task, reads counters only,
//! and does its one filesystem call on the blocking pool); stop the daemon because metad
//! is unreachable (failures are logged and retried at the current interval).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cluster::Shutdown;
use cluster::grpc_tls::ClientTls;
use proto::pb;
use proto::pb::meta_client::MetaClient;
use tonic::transport::Channel;

use crate::store::Store;

/// Interval before metad has told us one, and after a failed heartbeat.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// Bounds on the interval metad may ask for.
const MIN_INTERVAL: Duration = Duration::from_millis(50);
const MAX_INTERVAL: Duration = Duration::from_secs(60);
/// Deadline of one metad call (per endpoint).
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
const ID_FILE: &str = "daemon-id";

#[derive(Debug, thiserror::Error)]
pub enum HeartbeatError {
    #[error("daemon id file {path}: {source}")]
    IdFile { path: PathBuf, source: std::io::Error },
    #[error("daemon id file {path} does not hold a non-zero decimal u64")]
    BadId { path: PathBuf },
    #[error("metad endpoint {endpoint:?} is not a valid URI: {reason}")]
    Endpoint { endpoint: String, reason: String },
    #[error("no metad endpoint is configured")]
    NoEndpoints,
    #[error("every metad endpoint failed; last error: {0}")]
    Unavailable(tonic::Status),
}

/// The daemon's stable id: read from `<data_dir>/daemon-id`, or chosen and written
/// (atomically, fsynced) on first start. Blocking.
pub fn daemon_id(data_dir: &Path) -> Result<u64, HeartbeatError> {
    let path = data_dir.join(ID_FILE);
    let io = |source| HeartbeatError::IdFile { path: path.clone(), source };
    match std::fs::read_to_string(&path) {
        Ok(text) => match text.trim().parse::<u64>() {
            Ok(id) if id != 0 => Ok(id),
            _ => Err(HeartbeatError::BadId { path: path.clone() }),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = fresh_id(data_dir);
            std::fs::create_dir_all(data_dir).map_err(io)?;
            let tmp = data_dir.join(format!("{ID_FILE}.tmp"));
            {
                use std::io::Write;
                let mut f = std::fs::File::create(&tmp).map_err(io)?;
                writeln!(f, "{id}").map_err(io)?;
                f.sync_all().map_err(io)?;
            }
            std::fs::rename(&tmp, &path).map_err(io)?;
            std::fs::File::open(data_dir).and_then(|d| d.sync_all()).map_err(io)?;
            Ok(id)
        }
        Err(e) => Err(io(e)),
    }
}

/// A random-enough non-zero id: BLAKE3 over the clock, the process and the directory.
fn fresh_id(data_dir: &Path) -> u64 {
    let mut h = blake3::Hasher::new();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    h.update(&now.as_nanos().to_le_bytes());
    h.update(&std::process::id().to_le_bytes());
    h.update(data_dir.as_os_str().as_encoded_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&h.finalize().as_bytes()[..8]);
    u64::from_le_bytes(b).max(1)
}

/// Clients of every configured metad endpoint (connected lazily).
#[derive(Clone)]
pub(crate) struct Metad {
    clients: Arc<Vec<MetaClient<Channel>>>,
    /// Index of the endpoint that answered last; calls start there.
    preferred: Arc<AtomicUsize>,
}

impl Metad {
    /// Clients of `endpoints`, dialed as `tls` says (mutual TLS with the daemon's `blockd`
    /// certificate in a cluster).
    pub fn new(endpoints: &[String], tls: &ClientTls) -> Result<Metad, HeartbeatError> {
        if endpoints.is_empty() {
            return Err(HeartbeatError::NoEndpoints);
        }
        let clients = endpoints
            .iter()
            .map(|e| {
                let ep = tls
                    .endpoint(e)
                    .map_err(|err| HeartbeatError::Endpoint { endpoint: e.clone(), reason: err.to_string() })?
                    .connect_timeout(CALL_TIMEOUT)
                    .timeout(CALL_TIMEOUT);
                Ok(MetaClient::new(ep.connect_lazy()))
            })
            .collect::<Result<Vec<_>, HeartbeatError>>()?;
        Ok(Metad { clients: Arc::new(clients), preferred: Arc::new(AtomicUsize::new(0)) })
    }

    /// Runs `call` against the preferred endpoint, then each other one, until one answers.
    async fn each<T, F, Fut>(&self, call: F) -> Result<T, HeartbeatError>
    where
        F: Fn(MetaClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let n = self.clients.len();
        let start = self.preferred.load(Ordering::Relaxed) % n;
        let mut last = tonic::Status::unavailable("no endpoint tried");
        for i in 0..n {
            let k = (start + i) % n;
            match call(self.clients[k].clone()).await {
                Ok(reply) => {
                    self.preferred.store(k, Ordering::Relaxed);
                    return Ok(reply.into_inner());
                }
                Err(status) => {
                    tracing::debug!(endpoint = k, %status, "metad call failed; trying the next endpoint");
                    last = status;
                }
            }
        }
        Err(HeartbeatError::Unavailable(last))
    }

    pub async fn heartbeat(&self, req: pb::HeartbeatRequest) -> Result<pb::HeartbeatReply, HeartbeatError> {
        self.each(|mut c| {
            let req = req.clone();
            async move { c.heartbeat(req).await }
        })
        .await
    }

    pub async fn list_block_daemons(&self) -> Result<pb::ListBlockDaemonsReply, HeartbeatError> {
        self.each(|mut c| async move { c.list_block_daemons(pb::ListBlockDaemonsRequest {}).await }).await
    }

    /// Records chunk pack locations (the S3 tier; at most 65536 per call).
    pub async fn record_packs(&self, req: pb::RecordPacksRequest) -> Result<pb::RecordPacksReply, HeartbeatError> {
        self.each(|mut c| {
            let req = req.clone();
            async move { c.record_packs(req).await }
        })
        .await
    }

    /// The known pack locations of chunks (the S3 tier; at most 4096 hashes per call).
    pub async fn locate_chunks(&self, req: pb::LocateChunksRequest) -> Result<pb::LocateChunksReply, HeartbeatError> {
        self.each(|mut c| {
            let req = req.clone();
            async move { c.locate_chunks(req).await }
        })
        .await
    }
}

/// Total and available bytes of the filesystem holding `dir`. Blocking.
fn capacity(dir: &Path) -> Option<(u64, u64)> {
    let st = rustix::fs::statvfs(dir).ok()?;
    Some((st.f_blocks.saturating_mul(st.f_frsize), st.f_bavail.saturating_mul(st.f_frsize)))
}

/// Sends heartbeats until `shutdown`.
pub(crate) async fn run(metad: Metad, id: u64, addr: SocketAddr, store: Arc<Store>, shutdown: Shutdown) {
    let mut interval = DEFAULT_HEARTBEAT_INTERVAL;
    loop {
        let stats = store.stats();
        let dir = store.data_dir().to_path_buf();
        let (capacity_bytes, free_bytes) =
            tokio::task::spawn_blocking(move || capacity(&dir)).await.ok().flatten().unwrap_or((0, 0));
        let req = pb::HeartbeatRequest {
            id,
            addr: addr.to_string(),
            capacity_bytes,
            free_bytes,
            chunks: stats.chunks,
            stored_bytes: stats.bytes,
        };
        let sent = tokio::select! {
            _ = shutdown.cancelled() => return,
            sent = metad.heartbeat(req) => sent,
        };
        match sent {
            Ok(reply) => {
                metrics::counter!("tessera_blockd_heartbeats_total").increment(1);
                if reply.interval_ms > 0 {
                    interval = Duration::from_millis(reply.interval_ms).clamp(MIN_INTERVAL, MAX_INTERVAL);
                }
            }
            Err(e) => {
                metrics::counter!("tessera_blockd_heartbeat_failures_total").increment(1);
                tracing::warn!(error = %e, "heartbeat to metad failed");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daemon_id_is_chosen_once_and_kept() {
        let dir = std::env::temp_dir().join(format!("tessera-blockd-id-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let a = daemon_id(&dir).expect("create");
        assert_ne!(a, 0);
        assert_eq!(daemon_id(&dir).expect("reload"), a);
        std::fs::write(dir.join(ID_FILE), "not a number").expect("write");
        assert!(matches!(daemon_id(&dir), Err(HeartbeatError::BadId { .. })));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn endpoints_are_validated() {
        let plain = ClientTls::plaintext();
        assert!(matches!(Metad::new(&[], &plain), Err(HeartbeatError::NoEndpoints)));
        // Without a TLS identity an https:// endpoint cannot be dialed: refused at start.
        let https = ["https://127.0.0.1:1".to_string()];
        assert!(matches!(Metad::new(&https, &plain), Err(HeartbeatError::Endpoint { .. })));
    }
}
