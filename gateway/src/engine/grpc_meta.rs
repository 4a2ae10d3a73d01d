//! `GrpcMeta`: the `MetaApi` over a tonic channel to metad.
//!
//! Owns the transport concerns: the lazily connected channel, mapping `tonic::Status` to
//! `FsError` (`FsError::from_status`), and a bounded retry of `Unavailable`/`NotLeader`
//! answers (a leader election or a metad restart) with exponential backoff. Must never
//! interpret filesystem semantics or retry any other error.
//!
//! A retried mutation whose first attempt did reach metad (reply lost) may answer as if
//! repeated (e.g. `Exists` for a create) — the same outcome as an NFS retransmission.

use std::future::Future;
use std::time::Duration;

use proto::FsError;
use proto::pb;
use proto::pb::meta_client::MetaClient;
use tonic::transport::{Channel, Endpoint};

use super::api::MetaApi;
use super::error::EngineError;

/// Attempts per call, including the first.
const ATTEMPTS: u32 = 5;
const FIRST_BACKOFF: Duration = Duration::from_millis(25);
const MAX_BACKOFF: Duration = Duration::from_millis(800);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Upper bound of one RPC (a Raft commit under load included).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone, Debug)]
pub struct GrpcMeta {
    client: MetaClient<Channel>,
}

impl GrpcMeta {
    /// A client for `endpoint` (e.g. `http://127.0.0.1:7100`); connects on first use.
    pub fn connect_lazy(endpoint: &str) -> Result<GrpcMeta, EngineError> {
        let ep = Endpoint::from_shared(endpoint.to_string())
            .map_err(|source| EngineError::MetadEndpoint { endpoint: endpoint.to_string(), source })?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .tcp_nodelay(true);
        Ok(GrpcMeta { client: MetaClient::new(ep.connect_lazy()) })
    }

    async fn call<T, F, Fut>(&self, f: F) -> Result<T, FsError>
    where
        F: Fn(MetaClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            match f(self.client.clone()).await {
                Ok(resp) => return Ok(resp.into_inner()),
                Err(status) => {
                    let err = FsError::from_status(&status);
                    let retryable = matches!(err, FsError::Unavailable(_) | FsError::NotLeader { .. });
                    if !retryable || attempt >= ATTEMPTS {
                        return Err(err);
                    }
                    tracing::debug!(attempt, error = %err, "metad unavailable, retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
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
        let r = self
            .call(|mut c| async move { c.get_attr(req).await })
            .await?;
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
        self.call(|mut c| {
            let req = req.clone();
            async move { c.remove(req).await }
        })
        .await
    }

    async fn set_attr(&self, req: pb::SetAttrRequest) -> Result<pb::SetAttrReply, FsError> {
        self.call(|mut c| {
            let req = req.clone();
            async move { c.set_attr(req).await }
        })
        .await
    }

    async fn commit_extents(&self, req: pb::CommitExtentsRequest) -> Result<pb::CommitExtentsReply, FsError> {
        self.call(|mut c| {
            let req = req.clone();
            async move { c.commit_extents(req).await }
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
        self.call(|mut c| async move { c.fs_stat(req).await })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_endpoint_is_a_setup_error() {
        assert!(matches!(GrpcMeta::connect_lazy("not a uri \u{1}"), Err(EngineError::MetadEndpoint { .. })));
    }

    #[tokio::test]
    async fn unreachable_metad_is_unavailable_after_bounded_retries() {
        // Port 1 on loopback: connection refused at once.
        let meta = GrpcMeta::connect_lazy("http://127.0.0.1:1").expect("valid endpoint");
        let started = std::time::Instant::now();
        let err = meta.get_attr(pb::NodeRef { share_id: 1, ino: 1, generation: 1 }).await;
        assert!(matches!(err, Err(FsError::Unavailable(_))), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
