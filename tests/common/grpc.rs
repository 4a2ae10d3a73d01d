//! Clients of metad's internal gRPC port over mutual TLS, as a node or an operator tool dials
//! it: the certificate of one role from a TLS directory `tessera issue-cert` wrote.

use std::path::Path;
use std::time::Duration;

use cluster::grpc_tls::ClientTls;
use cluster::tls::{NodeTls, Role};
use proto::pb::meta_client::MetaClient;
use tonic::transport::Channel;

/// Deadline of one call (connecting included).
const CALL_DEADLINE: Duration = Duration::from_secs(30);

/// Mutual TLS presenting the `role` certificate in `tls_dir`, trusting its `ca/ca.der`.
pub fn client_tls(tls_dir: &Path, role: Role) -> ClientTls {
    let tls = NodeTls::new(tls_dir);
    let ca = tls.ca_anchor().expect("CA certificate");
    let id = tls.identity(&role).expect("role certificate");
    ClientTls::mutual(&ca, &id).expect("client TLS")
}

/// A lazily connected channel to `url` (an `http://` URL is dialed as `https://`). Call
/// inside a tokio runtime.
pub fn channel(tls: &ClientTls, url: &str) -> Channel {
    tls.endpoint(url)
        .expect("metad endpoint")
        .connect_timeout(Duration::from_secs(5))
        .timeout(CALL_DEADLINE)
        .connect_lazy()
}

/// A `Meta` client of `url`.
pub fn meta(tls: &ClientTls, url: &str) -> MetaClient<Channel> {
    MetaClient::new(channel(tls, url))
}
