//! `GrpcMeta`: the `MetaApi` over tonic channels to metad.
//!
//! Owns the transport concerns: lazily connected channels to every configured metad node
//! (mutual TLS with the gateway's certificate in a cluster, `EngineOptions::metad_tls`),
//! mapping `tonic::Status` to `FsError` (`FsError::from_status`), failover, request ids,
//! and a bounded retry of `Unavailable`/`NotLeader` answers (an election, a restart) with
//! exponential backoff. Must never interpret filesystem semantics or retry any other error.
//!
//! Failover: any metad node answers (followers forward to the leader), so there is no
//! leader tracking. Calls go to the endpoint that answered last; an `Unavailable` answer
//! (including a transport failure) moves to the next endpoint at once, and the backoff
//! sleep comes only after every endpoint was tried. `NotLeader` (mid-election) waits and
//! retries the same endpoint.
//!
//! In-process: a node that also runs metad hands its `Meta` service to the gateway
//! (`GrpcMeta::with_in_process`); it becomes the first endpoint, called through tonic's
//! client and server code without a socket (`MetaTransport`), with the same encoding,
//! error mapping, retries and request ids as a remote endpoint, which stay behind it for
//! failover.
//!
//! Request ids: every mutation carries a `RequestId` (`client_id` random per `GrpcMeta`,
//! `seq` from a counter) set once before the first attempt, so a retry whose first
//! attempt did reach metad (reply lost, or a timeout) is answered from metad's dedup table
//! with the original reply instead of being applied twice.

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use cluster::grpc_tls::ClientTls;
use proto::FsError;
use proto::pb;
use proto::pb::meta_client::MetaClient;
use tonic::body::Body;
use tonic::codegen::StdError;
use tower::ServiceExt;
use tower::util::BoxCloneSyncService;

use super::api::MetaApi;
use super::error::EngineError;

/// Attempts per call, including the first (at least two rounds over the endpoints).
const ATTEMPTS: u32 = 5;
const FIRST_BACKOFF: Duration = Duration::from_millis(25);
const MAX_BACKOFF: Duration = Duration::from_millis(800);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Upper bound of one RPC (a Raft commit under load included).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// HTTP/2 PINGs on an open connection: a metad that stops answering them (paused, or gone
/// without a reset) is given up within `KEEPALIVE + KEEPALIVE_TIMEOUT`, and the calls
/// waiting on it fail over to the next endpoint instead of waiting out `REQUEST_TIMEOUT`.
const KEEPALIVE: Duration = Duration::from_secs(1);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(3);

/// Request ids of one client: a random `client_id` and an increasing `seq`.
#[derive(Debug)]
struct RequestIds {
    client_id: u64,
    seq: AtomicU64,
}

impl RequestIds {
    fn new() -> RequestIds {
        RequestIds { client_id: rand::random(), seq: AtomicU64::new(1) }
    }

    fn next(&self) -> pb::RequestId {
        pb::RequestId { client_id: self.client_id, seq: self.seq.fetch_add(1, Ordering::Relaxed) }
    }
}

/// How one metad endpoint is reached: a tonic channel, or metad's `Meta` service in this
/// process (no socket).
pub type MetaTransport = BoxCloneSyncService<http::Request<Body>, http::Response<Body>, TransportError>;

/// A transport's failure (a concrete type: tonic's client needs `Into<StdError>`, which a
/// bare boxed error does not satisfy for every lifetime in an `async fn`).
#[derive(Debug)]
pub struct TransportError(StdError);

impl std::fmt::Display for TransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for TransportError {
    /// The wrapped error itself, so tonic's mapping to a `Status` (which walks the source
    /// chain: a connect error is UNAVAILABLE, a timeout CANCELLED) sees it unchanged.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

/// `svc` (a tonic server, e.g. metad's `MetaServer`) as a transport the client calls
/// directly.
pub fn in_process_transport<S>(svc: S) -> MetaTransport
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<StdError>,
{
    BoxCloneSyncService::new(svc.map_err(|e| TransportError(e.into())))
}

/// The in-process metad an engine may use, if any (cheap to clone).
#[derive(Clone)]
pub struct LocalMeta(pub MetaTransport);

impl std::fmt::Debug for LocalMeta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LocalMeta(in-process metad)")
    }
}

pub struct GrpcMeta {
    clients: Vec<MetaClient<MetaTransport>>,
    /// The endpoint that answered last (calls start there).
    current: AtomicUsize,
    ids: RequestIds,
}

impl GrpcMeta {
    /// A plaintext client for one metad `endpoint` (e.g. `http://127.0.0.1:7100`; tests and
    /// tools on a private network); connects on first use.
    pub fn connect_lazy(endpoint: &str) -> Result<GrpcMeta, EngineError> {
        GrpcMeta::connect_lazy_many(&[endpoint.to_string()], &ClientTls::plaintext())
    }

    /// A client for the metad nodes at `endpoints` (any of them answers), dialed as `tls`
    /// says (mutual TLS with the gateway's certificate in a cluster: an `http://` endpoint
    /// is then dialed as `https://`); connects on first use.
    pub fn connect_lazy_many(endpoints: &[String], tls: &ClientTls) -> Result<GrpcMeta, EngineError> {
        if endpoints.is_empty() {
            return Err(EngineError::NoMetadEndpoint);
        }
        let clients = endpoints
            .iter()
            .map(|endpoint| {
                let ep = tls
                    .endpoint(endpoint)
                    .map_err(|source| EngineError::MetadEndpoint { endpoint: endpoint.clone(), source })?
                    .connect_timeout(CONNECT_TIMEOUT)
                    .timeout(REQUEST_TIMEOUT)
                    .http2_keep_alive_interval(KEEPALIVE)
                    .keep_alive_timeout(KEEPALIVE_TIMEOUT)
                    .keep_alive_while_idle(true)
                    .tcp_nodelay(true);
                Ok(MetaClient::new(BoxCloneSyncService::new(ep.connect_lazy().map_err(|e| TransportError(e.into())))))
            })
            .collect::<Result<Vec<_>, EngineError>>()?;
        Ok(GrpcMeta { clients, current: AtomicUsize::new(0), ids: RequestIds::new() })
    }

    /// Calls go to `local` (metad in this process) first; the network endpoints stay
    /// behind it for failover.
    pub fn with_in_process(mut self, local: Option<LocalMeta>) -> GrpcMeta {
        if let Some(LocalMeta(transport)) = local {
            self.clients.insert(0, MetaClient::new(transport));
            self.current = AtomicUsize::new(0);
        }
        self
    }

    /// The block daemons metad knows, with their liveness, and the cluster's default
    /// replication factor (`ReplicatedChunks`' membership view).
    pub async fn list_block_daemons(&self) -> Result<pb::ListBlockDaemonsReply, FsError> {
        self.call(|mut c| async move { c.list_block_daemons(pb::ListBlockDaemonsRequest {}).await }).await
    }

    /// `req` with a fresh request id, unless the caller pinned one.
    fn with_id<R>(&self, mut req: R, id: impl FnOnce(&mut R) -> &mut Option<pb::RequestId>) -> R {
        id(&mut req).get_or_insert_with(|| self.ids.next());
        req
    }

    async fn call<T, F, Fut>(&self, f: F) -> Result<T, FsError>
    where
        F: Fn(MetaClient<MetaTransport>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let n = self.clients.len();
        let attempts = ATTEMPTS.max(2 * n as u32);
        let mut idx = self.current.load(Ordering::Relaxed) % n;
        let mut backoff = FIRST_BACKOFF;
        let mut tried_this_round = 0;
        let mut attempt = 1;
        loop {
            let client = self.clients[idx].clone();
            match f(client).await {
                Ok(resp) => {
                    self.current.store(idx, Ordering::Relaxed);
                    return Ok(resp.into_inner());
                }
                Err(status) => {
                    let err = FsError::from_status(&status);
                    let failover = match err {
                        FsError::Unavailable(_) => true,
                        FsError::NotLeader { .. } => false,
                        _ => return Err(err),
                    };
                    if attempt >= attempts {
                        return Err(err);
                    }
                    tracing::debug!(attempt, endpoint = idx, error = %err, "metad unavailable, retrying");
                    tried_this_round += 1;
                    if failover {
                        idx = (idx + 1) % n;
                    }
                    if !failover || tried_this_round >= n {
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        tried_this_round = 0;
                    }
                    attempt += 1;
                }
            }
        }
    }
}

fn required<T>(v: Option<T>, what: &str) -> Result<T, FsError> {
    v.ok_or_else(|| FsError::Internal(format!("metad answered without {what}")))
}

impl MetaApi for GrpcMeta {
    async fn list_shares(&self) -> Result<Vec<pb::Share>, FsError> {
        let r = self.call(|mut c| async move { c.list_shares(pb::ListSharesRequest {}).await }).await?;
        Ok(r.shares)
    }

    async fn get_share(&self, export_path: &str) -> Result<pb::Share, FsError> {
        let req = pb::GetShareRequest { export_path: export_path.to_string() };
        self.call(|mut c| {
            let req = req.clone();
            async move { c.get_share(req).await }
        })
        .await
    }

    async fn get_attr(&self, node: pb::NodeRef) -> Result<pb::Attr, FsError> {
        let req = pb::GetAttrRequest { node: Some(node) };
        let r = self.call(|mut c| async move { c.get_attr(req).await }).await?;
        required(r.attr, "attributes")
    }

    async fn lookup(&self, req: pb::LookupRequest) -> Result<pb::LookupReply, FsError> {
        self.call(|mut c| {
            let req = req.clone();
            async move { c.lookup(req).await }
        })
        .await
    }

    async fn create(&self, req: pb::CreateRequest) -> Result<pb::CreateReply, FsError> {
        let req = self.with_id(req, |r| &mut r.request_id);
        self.call(|mut c| {
            let req = req.clone();
            async move { c.create(req).await }
        })
        .await
    }

    async fn read_dir(&self, req: pb::ReadDirRequest) -> Result<pb::ReadDirReply, FsError> {
        self.call(|mut c| {
            let req = req.clone();
            async move { c.read_dir(req).await }
        })
        .await
    }

    async fn remove(&self, req: pb::RemoveRequest) -> Result<pb::RemoveReply, FsError> {
        let req = self.with_id(req, |r| &mut r.request_id);
        self.call(|mut c| {
            let req = req.clone();
            async move { c.remove(req).await }
        })
        .await
    }

    async fn set_attr(&self, req: pb::SetAttrRequest) -> Result<pb::SetAttrReply, FsError> {
        let req = self.with_id(req, |r| &mut r.request_id);
        self.call(|mut c| {
            let req = req.clone();
            async move { c.set_attr(req).await }
        })
        .await
    }

    async fn commit_extents(&self, req: pb::CommitExtentsRequest) -> Result<pb::CommitExtentsReply, FsError> {
        let req = self.with_id(req, |r| &mut r.request_id);
        self.call(|mut c| {
            let req = req.clone();
            async move { c.commit_extents(req).await }
        })
        .await
    }

    async fn acquire_write_lease(&self, req: pb::AcquireWriteLeaseRequest) -> Result<pb::AcquireWriteLeaseReply, FsError> {
        let req = self.with_id(req, |r| &mut r.request_id);
        self.call(|mut c| {
            let req = req.clone();
            async move { c.acquire_write_lease(req).await }
        })
        .await
    }

    async fn get_extents(&self, req: pb::GetExtentsRequest) -> Result<pb::GetExtentsReply, FsError> {
        self.call(|mut c| {
            let req = req.clone();
            async move { c.get_extents(req).await }
        })
        .await
    }

    async fn fs_stat(&self, node: pb::NodeRef) -> Result<pb::FsStatReply, FsError> {
        let req = pb::FsStatRequest { node: Some(node) };
        self.call(|mut c| async move { c.fs_stat(req).await }).await
    }

    async fn symlink(&self, req: pb::SymlinkRequest) -> Result<pb::CreateReply, FsError> {
        let req = self.with_id(req, |r| &mut r.request_id);
        self.call(|mut c| {
            let req = req.clone();
            async move { c.symlink(req).await }
        })
        .await
    }

    async fn read_link(&self, req: pb::ReadLinkRequest) -> Result<pb::ReadLinkReply, FsError> {
        self.call(|mut c| {
            let req = req.clone();
            async move { c.read_link(req).await }
        })
        .await
    }

    async fn mknod(&self, req: pb::MknodRequest) -> Result<pb::CreateReply, FsError> {
        let req = self.with_id(req, |r| &mut r.request_id);
        self.call(|mut c| {
            let req = req.clone();
            async move { c.mknod(req).await }
        })
        .await
    }

    async fn link(&self, req: pb::LinkRequest) -> Result<pb::LinkReply, FsError> {
        let req = self.with_id(req, |r| &mut r.request_id);
        self.call(|mut c| {
            let req = req.clone();
            async move { c.link(req).await }
        })
        .await
    }

    async fn rename(&self, req: pb::RenameRequest) -> Result<pb::RenameReply, FsError> {
        let req = self.with_id(req, |r| &mut r.request_id);
        self.call(|mut c| {
            let req = req.clone();
            async move { c.rename(req).await }
        })
        .await
    }

    async fn access(&self, req: pb::AccessRequest) -> Result<pb::AccessReply, FsError> {
        self.call(|mut c| {
            let req = req.clone();
            async move { c.access(req).await }
        })
        .await
    }
}

#[cfg(test)]
#[path = "grpc_meta_tests.rs"]
mod tests;
