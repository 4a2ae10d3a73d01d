//! Mutual TLS on the gRPC links (metad's internal port) and authorization by certificate role.
//!
//! Owns: [`ClientTls`], how a node dials metad's internal port (plaintext, or mutual TLS
//! presenting one role certificate and verifying the server against the cluster CA and the
//! address dialed); [`server_tls`], the listener side (a client certificate chaining to the
//! cluster CA is required, the handshake has a deadline); and [`RoleGateLayer`], a tower layer
//! that reads the role out of the client's verified certificate ([`crate::tls::peer_role`])
//! and lets a call through only when a policy allows that role that method.
//!
//! URLs: with TLS, an `http://` URL is dialed as `https://` (so `metad.advertise`,
//! `metad.initial_members`, `metad_endpoints` and addresses stored in the Raft membership keep
//! working whichever scheme they were written with); without TLS an `https://` URL is refused,
//! since there is no identity to present.
//!
//! Must never: send a call in plaintext on a link configured for TLS (tonic only does TLS for
//! an `https` URI, hence the rewrite); let a call through the gate without a role read from a
//! chain the handshake verified; decide which role may call what (the policy belongs to the
//! service that is gated, e.g. metad's `service::authz`); panic on a hostile peer.

use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::{Either, Ready, ready};
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, ServerTlsConfig};

use crate::tls::{CertificateDer, Identity, Role, TlsError, install_crypto_provider, peer_role};

/// Deadline of a TLS handshake, on both ends (a peer that stalls one is dropped).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

fn cert_pem(der: &CertificateDer<'_>) -> String {
    pem::encode(&pem::Pem::new("CERTIFICATE", der.as_ref().to_vec()))
}

/// `identity` in the PEM form tonic reads (the whole chain, then the PKCS#8 key).
fn tonic_identity(identity: &Identity) -> tonic::transport::Identity {
    let chain: String = identity.chain.iter().map(cert_pem).collect();
    let key = pem::encode(&pem::Pem::new("PRIVATE KEY", identity.key.secret_pkcs8_der().to_vec()));
    tonic::transport::Identity::from_pem(chain, key)
}

/// How a node dials metad's internal gRPC port. Cheap to clone; the default is plaintext.
#[derive(Clone, Default)]
pub struct ClientTls {
    config: Option<ClientTlsConfig>,
}

impl std::fmt::Debug for ClientTls {
    // Never prints the identity (its key).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.config.is_some() { "ClientTls(mutual)" } else { "ClientTls(plaintext)" })
    }
}

impl ClientTls {
    /// No TLS: `http://` URLs only (in-process test groups, tools on a private network).
    pub fn plaintext() -> ClientTls {
        ClientTls { config: None }
    }

    /// Mutual TLS: presents `identity` (a role certificate issued by the cluster CA) and
    /// accepts only a server whose certificate chains to `ca` and names the host of the URL
    /// dialed (an IP address or a DNS name).
    pub fn mutual(ca: &CertificateDer<'static>, identity: &Identity) -> Result<ClientTls, TlsError> {
        install_crypto_provider();
        let config = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(cert_pem(ca)))
            .identity(tonic_identity(identity))
            .timeout(HANDSHAKE_TIMEOUT);
        // Parse the certificates and key now, so a bad identity fails at start, not on first use.
        Endpoint::from_static("https://127.0.0.1")
            .tls_config(config.clone())
            .map_err(|e| TlsError::Grpc(format!("client TLS identity: {e}")))?;
        Ok(ClientTls { config: Some(config) })
    }

    /// Whether links made from this are mutual TLS.
    pub fn is_tls(&self) -> bool {
        self.config.is_some()
    }

    /// `url` with the scheme this link dials: with TLS `http://` becomes `https://`; without
    /// TLS an `https://` URL is refused. Anything but `http(s)://` is refused.
    pub fn url(&self, url: &str) -> Result<String, TlsError> {
        let bad = |reason: &str| TlsError::Endpoint { url: url.to_string(), reason: reason.to_string() };
        match (url.strip_prefix("http://"), url.strip_prefix("https://"), self.is_tls()) {
            (Some(rest), _, true) => Ok(format!("https://{rest}")),
            (Some(_), _, false) => Ok(url.to_string()),
            (_, Some(_), true) => Ok(url.to_string()),
            (_, Some(_), false) => Err(bad("an https:// URL, but this link has no TLS identity to present")),
            _ => Err(bad("not an http:// or https:// URL")),
        }
    }

    /// A tonic endpoint for `url` (see [`ClientTls::url`]), with this link's TLS settings;
    /// connection settings (timeouts, nodelay) are the caller's.
    pub fn endpoint(&self, url: &str) -> Result<Endpoint, TlsError> {
        let url = self.url(url)?;
        let bad = |e: tonic::transport::Error| TlsError::Endpoint { url: url.clone(), reason: e.to_string() };
        let endpoint = Endpoint::from_shared(url.clone()).map_err(bad)?;
        match &self.config {
            Some(config) => endpoint.tls_config(config.clone()).map_err(bad),
            None => Ok(endpoint),
        }
    }
}

/// The TLS settings of an internal listener: presents `identity`, requires every client to
/// present a certificate chaining to `ca` (the handshake fails otherwise), within
/// [`HANDSHAKE_TIMEOUT`].
pub fn server_tls(ca: &CertificateDer<'static>, identity: &Identity) -> ServerTlsConfig {
    install_crypto_provider();
    ServerTlsConfig::new()
        .identity(tonic_identity(identity))
        .client_ca_root(Certificate::from_pem(cert_pem(ca)))
        .timeout(HANDSHAKE_TIMEOUT)
}

/// Whether a caller with this certificate role may call the gRPC method at this path
/// (`/package.Service/Method`).
pub type Policy = fn(&Role, &str) -> bool;

/// The role of the client that sent `req`, from the certificate chain its TLS handshake
/// verified; `Unauthenticated` when there is none (no TLS, no certificate, no role in it).
pub fn caller_role<B>(req: &http::Request<B>) -> Result<Role, tonic::Status> {
    let certs = req
        .extensions()
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(|info| info.peer_certs())
        .ok_or_else(|| tonic::Status::unauthenticated("a client certificate from the cluster CA is required"))?;
    peer_role(&certs).map_err(|e| tonic::Status::unauthenticated(format!("client certificate: {e}")))
}

/// Wraps a gRPC server so that every call is checked against a [`Policy`] first.
#[derive(Clone, Copy)]
pub struct RoleGateLayer {
    policy: Policy,
}

impl RoleGateLayer {
    pub fn new(policy: Policy) -> RoleGateLayer {
        RoleGateLayer { policy }
    }
}

impl<S> tower::Layer<S> for RoleGateLayer {
    type Service = RoleGate<S>;

    fn layer(&self, inner: S) -> RoleGate<S> {
        RoleGate { inner, policy: self.policy }
    }
}

/// The service [`RoleGateLayer`] builds: answers `Unauthenticated` (no role certificate) or
/// `PermissionDenied` (the policy refuses the role this method) without calling `inner`.
#[derive(Clone)]
pub struct RoleGate<S> {
    inner: S,
    policy: Policy,
}

impl<S, B, ResBody> tower::Service<http::Request<B>> for RoleGate<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<ResBody>>,
    ResBody: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<Ready<Result<S::Response, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let path = req.uri().path();
        let refusal = match caller_role(&req) {
            Ok(role) if (self.policy)(&role, path) => None,
            Ok(role) => {
                tracing::warn!(%role, path, peer = ?remote(&req), "gRPC call refused: role may not call this method");
                Some(tonic::Status::permission_denied(format!("a {role} certificate may not call {path}")))
            }
            Err(status) => {
                tracing::warn!(path, peer = ?remote(&req), reason = status.message(), "gRPC call refused");
                Some(status)
            }
        };
        match refusal {
            None => Either::Right(self.inner.call(req)),
            Some(status) => Either::Left(ready(Ok(status.into_http()))),
        }
    }
}

fn remote<B>(req: &http::Request<B>) -> Option<std::net::SocketAddr> {
    req.extensions().get::<TlsConnectInfo<TcpConnectInfo>>().and_then(|i| i.get_ref().remote_addr())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::Ca;

    #[test]
    fn urls_follow_the_link() {
        let plain = ClientTls::plaintext();
        assert_eq!(plain.url("http://127.0.0.1:7100").expect("http"), "http://127.0.0.1:7100");
        assert!(matches!(plain.url("https://127.0.0.1:7100"), Err(TlsError::Endpoint { .. })));
        assert!(plain.url("ftp://x").is_err() && plain.url("").is_err());
        assert!(plain.endpoint("http://127.0.0.1:7100").is_ok());

        let ca = Ca::generate().expect("ca");
        let id = ca.issue(&["127.0.0.1".to_string()], &Role::Gateway).expect("issue");
        let tls = ClientTls::mutual(&ca.anchor(), &id).expect("mutual");
        assert!(tls.is_tls() && !plain.is_tls());
        assert_eq!(tls.url("http://127.0.0.1:7100").expect("upgraded"), "https://127.0.0.1:7100");
        assert_eq!(tls.url("https://[::1]:7100").expect("kept"), "https://[::1]:7100");
        assert!(tls.url("127.0.0.1:7100").is_err());
        assert!(tls.endpoint("http://127.0.0.1:7100").is_ok());
        assert!(tls.endpoint("http://bad host\u{1}:1").is_err());
        assert_eq!(format!("{tls:?}"), "ClientTls(mutual)", "the key is never printed");
    }

    #[test]
    fn a_malformed_identity_is_refused_at_once() {
        let ca = Ca::generate().expect("ca");
        let mut id = ca.issue(&["127.0.0.1".to_string()], &Role::Tool).expect("issue");
        id.key = rustls::pki_types::PrivatePkcs8KeyDer::from(vec![1, 2, 3]);
        assert!(matches!(ClientTls::mutual(&ca.anchor(), &id), Err(TlsError::Grpc(_))));
    }

    #[test]
    fn calls_without_a_verified_role_are_unauthenticated() {
        let req = http::Request::new(());
        assert_eq!(caller_role(&req).expect_err("no TLS").code(), tonic::Code::Unauthenticated);
    }
}
