//! TLS identities for inter-node links, and the process-wide rustls crypto provider.
//!
//! Exactly one provider (aws-lc-rs) is compiled in; [`install_crypto_provider`] must run
//! first thing in every `main` and test that builds a TLS config, or rustls refuses to pick.
//!
//! `tessera dev` uses a self-signed identity created on first start under
//! `<data_dir>/tls/` and trusted by its own clients. The cluster CA with mutual TLS and
//! client-certificate authorization replaces it in a later issue; [`server_config`] and
//! [`client_config`] are the seam.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// ALPN protocol of the QUIC chunk link.
pub const CHUNK_ALPN: &[u8] = b"tessera-chunk/1";
/// Server name that dev certificates are issued for and clients verify.
pub const DEV_SERVER_NAME: &str = "tessera.local";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS identity file {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("generating a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("building a TLS config: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("TLS identity in {0} is malformed")]
    Malformed(String),
}

/// Installs aws-lc-rs as the process-wide rustls provider. Idempotent.
pub fn install_crypto_provider() {
    // An Err means a provider is already installed (by an earlier call): fine.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// A certificate chain and its private key.
#[derive(Debug)]
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivatePkcs8KeyDer<'static>,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Identity { chain: self.chain.clone(), key: self.key.clone_key() }
    }
}

impl Identity {
    /// A fresh self-signed identity for [`DEV_SERVER_NAME`], `localhost` and 127.0.0.1.
    pub fn generate_self_signed() -> Result<Identity, TlsError> {
        let names = vec![DEV_SERVER_NAME.to_string(), "localhost".to_string(), "127.0.0.1".to_string()];
        let ck = rcgen::generate_simple_self_signed(names)?;
        Ok(Identity {
            chain: vec![ck.cert.der().clone()],
            key: PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()),
        })
    }

    /// Loads `dir/cert.der` + `dir/key.der`, creating them (key file mode 0600) on first use.
    pub fn load_or_create(dir: &Path) -> Result<Identity, TlsError> {
        let cert_path = dir.join("cert.der");
        let key_path = dir.join("key.der");
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| TlsError::Io { path, source }
        };
        if cert_path.exists() && key_path.exists() {
            let cert = std::fs::read(&cert_path).map_err(io(&cert_path))?;
            let key = std::fs::read(&key_path).map_err(io(&key_path))?;
            if cert.is_empty() || key.is_empty() {
                return Err(TlsError::Malformed(dir.display().to_string()));
            }
            return Ok(Identity { chain: vec![CertificateDer::from(cert)], key: PrivatePkcs8KeyDer::from(key) });
        }
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let id = Identity::generate_self_signed()?;
        write_private(&key_path, id.key.secret_pkcs8_der()).map_err(io(&key_path))?;
        std::fs::write(&cert_path, id.chain[0].as_ref()).map_err(io(&cert_path))?;
        Ok(id)
    }

    /// The certificate that clients of this identity's server should trust.
    pub fn trust_anchor(&self) -> CertificateDer<'static> {
        self.chain[0].clone()
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// A server config presenting `id`, for the given ALPN protocol.
pub fn server_config(id: &Identity, alpn: &[u8]) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    install_crypto_provider();
    let mut cfg = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(id.chain.clone(), PrivateKeyDer::Pkcs8(id.key.clone_key()))?;
    cfg.alpn_protocols = vec![alpn.to_vec()];
    Ok(Arc::new(cfg))
}

/// A client config trusting exactly `anchors`, for the given ALPN protocol.
pub fn client_config(anchors: &[CertificateDer<'static>], alpn: &[u8]) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    for a in anchors {
        roots.add(a.clone())?;
    }
    let mut cfg = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    cfg.alpn_protocols = vec![alpn.to_vec()];
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_created_once_and_reloaded() {
        let dir = std::env::temp_dir().join(format!("tessera-tls-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let a = Identity::load_or_create(&dir).expect("create");
        let b = Identity::load_or_create(&dir).expect("reload");
        assert_eq!(a.chain, b.chain);
        assert!(server_config(&b, CHUNK_ALPN).is_ok());
        assert!(client_config(&[b.trust_anchor()], CHUNK_ALPN).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
