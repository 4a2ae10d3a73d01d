//! TLS identities for inter-node links, the cluster CA, and the process-wide rustls crypto provider.
//!
//! Exactly one provider (aws-lc-rs) is compiled in; [`install_crypto_provider`] must run
//! first thing in every `main` and test that builds a TLS config, or rustls refuses to pick.
//!
//! The chunk link (QUIC) and metad's internal gRPC port (`crate::grpc_tls`) are mutual TLS:
//! every node certificate is issued by the cluster CA ([`Ca`]) and names the node's [`Role`]
//! as a URI subject alternative name `tessera:role:<role>` (e.g. `tessera:role:gateway`). A
//! SAN URI was chosen over an OU or an extended key usage because it is unambiguous, needs
//! no private OID, and sits next to the names the certificate is valid for.
//! [`mtls_server_config`] accepts only clients whose chain verifies against the CA;
//! [`peer_role`] reads the role back out of a verified peer chain so a server can authorize
//! by role (block daemons for PUT, metad per gRPC method). [`DevPki`] keeps a self-signed CA
//! and the dev node certificates under `<data_dir>/tls/` for `tessera dev`; [`NodeTls`] is the same layout
//! for a cluster node, written by `tessera issue-cert` from an operator's CA
//! (`tessera init-ca`) and read by `tessera serve`. Clients verify a block daemon's or a
//! metad's certificate against the IP address they connect to, so a node certificate lists
//! its addresses.
//!
//! Must never: trust a role read from a chain that the TLS handshake did not verify; write
//! a private key with a mode other than 0600; panic on a malformed certificate.

use std::path::Path;
use std::sync::Arc;

pub use rustls::pki_types::CertificateDer;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;

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
    #[error("building the client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("peer presented no certificate")]
    NoPeerCertificate,
    #[error("peer certificate cannot be parsed: {0}")]
    BadCertificate(String),
    #[error("peer certificate names no tessera role")]
    NoRole,
    #[error("peer certificate names more than one tessera role")]
    AmbiguousRole,
    #[error("gRPC endpoint {url:?}: {reason}")]
    Endpoint { url: String, reason: String },
    #[error("gRPC TLS: {0}")]
    Grpc(String),
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

/// Prefix of the URI subject alternative name that carries a node's role.
pub const ROLE_URI_PREFIX: &str = "tessera:role:";
/// Common name of the cluster CA's subject.
const CA_COMMON_NAME: &str = "Tessera cluster CA";
/// Longest role name accepted in a certificate.
const MAX_ROLE_LEN: usize = 64;

/// What a node is, as recorded in its certificate.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Role {
    /// A block daemon: serves chunks and copies them to its peers.
    Blockd,
    /// An NFS gateway: writes and reads chunks for clients.
    Gateway,
    /// A metadata server.
    Metad,
    /// An operator tool: may read, never write.
    Tool,
    /// A role this build does not know (issued by a newer CA); treated as read-only.
    Other(String),
}

impl Role {
    pub fn as_str(&self) -> &str {
        match self {
            Role::Blockd => "blockd",
            Role::Gateway => "gateway",
            Role::Metad => "metad",
            Role::Tool => "tool",
            Role::Other(s) => s,
        }
    }

    fn parse(s: &str) -> Role {
        match s {
            "blockd" => Role::Blockd,
            "gateway" => Role::Gateway,
            "metad" => Role::Metad,
            "tool" => Role::Tool,
            other => Role::Other(other.to_string()),
        }
    }

    /// Whether a peer with this role may store chunks on a block daemon.
    pub fn may_put(&self) -> bool {
        matches!(self, Role::Blockd | Role::Gateway)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The cluster certificate authority: a self-signed CA certificate and its key.
pub struct Ca {
    cert: CertificateDer<'static>,
    key: rcgen::KeyPair,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").field("cert_len", &self.cert.len()).finish_non_exhaustive()
    }
}

impl Ca {
    /// The CA's certificate parameters; deterministic, so a CA reloaded from its key issues
    /// certificates whose issuer matches the stored CA certificate.
    fn params() -> Result<rcgen::CertificateParams, TlsError> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(rcgen::DnType::CommonName, CA_COMMON_NAME);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        Ok(params)
    }

    /// A fresh CA.
    pub fn generate() -> Result<Ca, TlsError> {
        let key = rcgen::KeyPair::generate()?;
        let cert = Ca::params()?.self_signed(&key)?;
        Ok(Ca { cert: cert.der().clone(), key })
    }

    /// Loads `dir/ca.der` + `dir/ca.key.der`, creating them (key file mode 0600) on first use.
    pub fn load_or_create(dir: &Path) -> Result<Ca, TlsError> {
        let cert_path = dir.join("ca.der");
        let key_path = dir.join("ca.key.der");
        if cert_path.exists() && key_path.exists() {
            let cert = read_nonempty(&cert_path, dir)?;
            let key_der = read_nonempty(&key_path, dir)?;
            let key = rcgen::KeyPair::try_from(key_der.as_slice())
                .map_err(|_| TlsError::Malformed(key_path.display().to_string()))?;
            return Ok(Ca { cert: CertificateDer::from(cert), key });
        }
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let ca = Ca::generate()?;
        write_private(&key_path, &ca.key.serialize_der()).map_err(io_err(&key_path))?;
        std::fs::write(&cert_path, ca.cert.as_ref()).map_err(io_err(&cert_path))?;
        Ok(ca)
    }

    /// The certificate every cluster member trusts.
    pub fn anchor(&self) -> CertificateDer<'static> {
        self.cert.clone()
    }

    /// Issues a node certificate valid for `names` (DNS names or IP addresses) as a server
    /// and as a client, recording `role` as the SAN URI `tessera:role:<role>`.
    pub fn issue(&self, names: &[String], role: &Role) -> Result<Identity, TlsError> {
        let mut params = rcgen::CertificateParams::new(names.to_vec())?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(rcgen::DnType::CommonName, format!("tessera {role}"));
        let uri = rcgen::string::Ia5String::try_from(format!("{ROLE_URI_PREFIX}{role}"))?;
        params.subject_alt_names.push(rcgen::SanType::URI(uri));
        params.extended_key_usages =
            vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth, rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        let key = rcgen::KeyPair::generate()?;
        let issuer = rcgen::Issuer::new(Ca::params()?, &self.key);
        let cert = params.signed_by(&key, &issuer)?;
        Ok(Identity {
            chain: vec![cert.der().clone(), self.cert.clone()],
            key: PrivatePkcs8KeyDer::from(key.serialize_der()),
        })
    }
}

/// Issues a node certificate from `ca` (see [`Ca::issue`]).
pub fn issue(ca: &Ca, names: &[String], role: &Role) -> Result<Identity, TlsError> {
    ca.issue(names, role)
}

/// The PKI of a single-process `tessera dev` node: the CA and one certificate per role,
/// kept under one directory in the layout of [`NodeTls`] (`ca/`, `blockd/`, `gateway/`,
/// `metad/`).
#[derive(Debug, Clone)]
pub struct DevPki {
    pub ca_anchor: CertificateDer<'static>,
    pub blockd_identity: Identity,
    pub gateway_identity: Identity,
    /// metad's internal gRPC listener (and its Raft client, though dev has one voter).
    pub metad_identity: Identity,
}

impl DevPki {
    /// Loads the dev PKI from `tls_dir`, creating the CA and any missing node certificate.
    /// Node certificates are valid for [`DEV_SERVER_NAME`], `localhost`, 127.0.0.1 and
    /// `extra_names` (e.g. the block daemon's and metad's bind addresses, which clients
    /// verify); a stored certificate for other names is replaced.
    pub fn load_or_create(tls_dir: &Path, extra_names: &[String]) -> Result<DevPki, TlsError> {
        let ca = Ca::load_or_create(&tls_dir.join("ca"))?;
        let mut names = vec![DEV_SERVER_NAME.to_string(), "localhost".to_string(), "127.0.0.1".to_string()];
        for n in extra_names {
            if !names.contains(n) {
                names.push(n.clone());
            }
        }
        let blockd_identity = load_or_issue(&ca, &tls_dir.join("blockd"), &names, &Role::Blockd)?;
        let gateway_identity = load_or_issue(&ca, &tls_dir.join("gateway"), &names, &Role::Gateway)?;
        let metad_identity = load_or_issue(&ca, &tls_dir.join("metad"), &names, &Role::Metad)?;
        Ok(DevPki { ca_anchor: ca.anchor(), blockd_identity, gateway_identity, metad_identity })
    }
}

/// A node's TLS directory, as `tessera issue-cert` writes it and `tessera serve` reads it:
///
/// ```text
/// <dir>/ca/ca.der             the cluster CA certificate (DER; its key stays with the operator)
/// <dir>/<role>/cert.der       this node's certificate for <role> (DER, issued by the CA)
/// <dir>/<role>/key.der        its private key (PKCS#8 DER, mode 0600)
/// <dir>/<role>/names          the names it was issued for, one per line
/// ```
#[derive(Debug, Clone)]
pub struct NodeTls {
    dir: std::path::PathBuf,
}

impl NodeTls {
    pub fn new(dir: &Path) -> NodeTls {
        NodeTls { dir: dir.to_path_buf() }
    }

    /// The cluster CA certificate every link verifies against.
    pub fn ca_anchor(&self) -> Result<CertificateDer<'static>, TlsError> {
        let dir = self.dir.join("ca");
        Ok(CertificateDer::from(read_nonempty(&dir.join("ca.der"), &dir)?))
    }

    /// This node's identity for `role`: its certificate and key, chained to the CA.
    pub fn identity(&self, role: &Role) -> Result<Identity, TlsError> {
        let ca = self.ca_anchor()?;
        let dir = self.dir.join(role.as_str());
        let cert = read_nonempty(&dir.join("cert.der"), &dir)?;
        let key = read_nonempty(&dir.join("key.der"), &dir)?;
        let chain = vec![CertificateDer::from(cert), ca];
        if peer_role(&chain)? != *role {
            return Err(TlsError::Malformed(format!("{}: certificate is not for role {role}", dir.display())));
        }
        Ok(Identity { chain, key: PrivatePkcs8KeyDer::from(key) })
    }

    /// Issues a certificate for `role` valid for `names` from `ca` and writes it (and the
    /// CA certificate) into this directory, replacing an older one for the same role.
    pub fn issue(&self, ca: &Ca, role: &Role, names: &[String]) -> Result<Identity, TlsError> {
        let ca_dir = self.dir.join("ca");
        std::fs::create_dir_all(&ca_dir).map_err(io_err(&ca_dir))?;
        let ca_path = ca_dir.join("ca.der");
        std::fs::write(&ca_path, ca.cert.as_ref()).map_err(io_err(&ca_path))?;
        let dir = self.dir.join(role.as_str());
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let id = ca.issue(names, role)?;
        let key_path = dir.join("key.der");
        let cert_path = dir.join("cert.der");
        let names_path = dir.join("names");
        write_private(&key_path, id.key.secret_pkcs8_der()).map_err(io_err(&key_path))?;
        std::fs::write(&cert_path, id.chain[0].as_ref()).map_err(io_err(&cert_path))?;
        std::fs::write(&names_path, names.join("\n")).map_err(io_err(&names_path))?;
        Ok(id)
    }
}

/// Loads `dir/cert.der` (leaf) + `dir/key.der`, issuing them from `ca` on first use. A
/// stored leaf that was issued by another CA, or for other names, is replaced.
fn load_or_issue(ca: &Ca, dir: &Path, names: &[String], role: &Role) -> Result<Identity, TlsError> {
    let cert_path = dir.join("cert.der");
    let key_path = dir.join("key.der");
    let issuer_path = dir.join("issuer.der");
    let names_path = dir.join("names");
    if cert_path.exists() && key_path.exists() && issuer_path.exists() {
        let issuer = read_nonempty(&issuer_path, dir)?;
        let stored_names = std::fs::read_to_string(&names_path).unwrap_or_default();
        if issuer.as_slice() == ca.cert.as_ref() && stored_names == names.join("\n") {
            let cert = read_nonempty(&cert_path, dir)?;
            let key = read_nonempty(&key_path, dir)?;
            return Ok(Identity {
                chain: vec![CertificateDer::from(cert), ca.anchor()],
                key: PrivatePkcs8KeyDer::from(key),
            });
        }
    }
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let id = ca.issue(names, role)?;
    write_private(&key_path, id.key.secret_pkcs8_der()).map_err(io_err(&key_path))?;
    std::fs::write(&cert_path, id.chain[0].as_ref()).map_err(io_err(&cert_path))?;
    std::fs::write(&issuer_path, ca.cert.as_ref()).map_err(io_err(&issuer_path))?;
    std::fs::write(&names_path, names.join("\n")).map_err(io_err(&names_path))?;
    Ok(id)
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + use<> {
    let path = path.display().to_string();
    move |source| TlsError::Io { path, source }
}

fn read_nonempty(path: &Path, dir: &Path) -> Result<Vec<u8>, TlsError> {
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    if bytes.is_empty() {
        return Err(TlsError::Malformed(dir.display().to_string()));
    }
    Ok(bytes)
}

fn root_store(anchors: &[CertificateDer<'static>]) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for a in anchors {
        roots.add(a.clone())?;
    }
    Ok(roots)
}

/// A server config presenting `id` that requires every client to present a certificate
/// chaining to one of `client_anchors` (the handshake fails otherwise).
pub fn mtls_server_config(
    id: &Identity,
    client_anchors: &[CertificateDer<'static>],
    alpn: &[u8],
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    install_crypto_provider();
    let verifier = WebPkiClientVerifier::builder(Arc::new(root_store(client_anchors)?)).build()?;
    let mut cfg = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(id.chain.clone(), PrivateKeyDer::Pkcs8(id.key.clone_key()))?;
    cfg.alpn_protocols = vec![alpn.to_vec()];
    Ok(Arc::new(cfg))
}

/// A client config trusting exactly `anchors` and presenting `identity` as its client
/// certificate, for the given ALPN protocol.
pub fn client_config_with_cert(
    anchors: &[CertificateDer<'static>],
    identity: &Identity,
    alpn: &[u8],
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    install_crypto_provider();
    let mut cfg = rustls::ClientConfig::builder()
        .with_root_certificates(root_store(anchors)?)
        .with_client_auth_cert(identity.chain.clone(), PrivateKeyDer::Pkcs8(identity.key.clone_key()))?;
    cfg.alpn_protocols = vec![alpn.to_vec()];
    Ok(Arc::new(cfg))
}

/// The role named by the leaf of a peer's certificate chain. Call only with a chain the
/// TLS handshake verified (e.g. quinn's `Connection::peer_identity`).
pub fn peer_role(chain: &[CertificateDer<'_>]) -> Result<Role, TlsError> {
    let leaf = chain.first().ok_or(TlsError::NoPeerCertificate)?;
    let (_, cert) =
        x509_parser::parse_x509_certificate(leaf.as_ref()).map_err(|e| TlsError::BadCertificate(e.to_string()))?;
    let san = cert.subject_alternative_name().map_err(|e| TlsError::BadCertificate(e.to_string()))?;
    let mut role = None;
    for name in san.iter().flat_map(|ext| ext.value.general_names.iter()) {
        if let x509_parser::extensions::GeneralName::URI(uri) = name
            && let Some(r) = uri.strip_prefix(ROLE_URI_PREFIX)
        {
            if r.is_empty() || r.len() > MAX_ROLE_LEN {
                return Err(TlsError::BadCertificate(format!("role name of {} bytes", r.len())));
            }
            if role.is_some() {
                return Err(TlsError::AmbiguousRole);
            }
            role = Some(Role::parse(r));
        }
    }
    role.ok_or(TlsError::NoRole)
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

    #[test]
    fn dev_pki_is_created_once_and_names_roles() {
        let dir = std::env::temp_dir().join(format!("tessera-pki-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let a = DevPki::load_or_create(&dir, &[]).expect("create");
        let b = DevPki::load_or_create(&dir, &[]).expect("reload");
        assert_eq!(a.ca_anchor, b.ca_anchor);
        assert_eq!(a.blockd_identity.chain, b.blockd_identity.chain);
        assert_eq!(peer_role(&b.blockd_identity.chain).expect("role"), Role::Blockd);
        assert_eq!(peer_role(&b.gateway_identity.chain).expect("role"), Role::Gateway);
        assert_eq!(peer_role(&b.metad_identity.chain).expect("role"), Role::Metad);
        assert_eq!(a.metad_identity.chain, b.metad_identity.chain);
        assert!(mtls_server_config(&b.blockd_identity, std::slice::from_ref(&b.ca_anchor), CHUNK_ALPN).is_ok());
        assert!(client_config_with_cert(std::slice::from_ref(&b.ca_anchor), &b.gateway_identity, CHUNK_ALPN).is_ok());

        // A reloaded CA issues certificates that chain to the stored CA certificate.
        let ca = Ca::load_or_create(&dir.join("ca")).expect("reload ca");
        let tool = ca.issue(&["localhost".to_string()], &Role::Tool).expect("issue");
        assert_eq!(tool.chain[1], a.ca_anchor);
        assert_eq!(peer_role(&tool.chain).expect("role"), Role::Tool);
        assert!(!Role::Tool.may_put() && Role::Gateway.may_put() && Role::Blockd.may_put());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn dev_pki_reissues_for_new_names() {
        let dir = std::env::temp_dir().join(format!("tessera-pki-names-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let a = DevPki::load_or_create(&dir, &[]).expect("create");
        let b = DevPki::load_or_create(&dir, &["127.0.9.9".to_string()]).expect("new name");
        assert_ne!(a.blockd_identity.chain[0], b.blockd_identity.chain[0], "reissued for the new name");
        assert_eq!(a.ca_anchor, b.ca_anchor, "same CA");
        let c = DevPki::load_or_create(&dir, &["127.0.9.9".to_string()]).expect("reload");
        assert_eq!(b.blockd_identity.chain, c.blockd_identity.chain, "kept when the names are the same");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn node_tls_round_trip_and_role_check() {
        let dir = std::env::temp_dir().join(format!("tessera-nodetls-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let ca = Ca::load_or_create(&dir.join("operator-ca")).expect("ca");
        let node = NodeTls::new(&dir.join("node"));
        assert!(node.identity(&Role::Blockd).is_err(), "nothing issued yet");
        let issued = node.issue(&ca, &Role::Blockd, &["127.0.0.2".to_string()]).expect("issue");
        let loaded = node.identity(&Role::Blockd).expect("load");
        assert_eq!(issued.chain, loaded.chain);
        assert_eq!(node.ca_anchor().expect("anchor"), ca.anchor());
        assert!(node.identity(&Role::Gateway).is_err(), "no gateway certificate");
        // A certificate moved to the wrong role's directory is refused.
        std::fs::create_dir_all(dir.join("node/gateway")).expect("mkdir");
        for f in ["cert.der", "key.der"] {
            std::fs::copy(dir.join("node/blockd").join(f), dir.join("node/gateway").join(f)).expect("copy");
        }
        assert!(matches!(node.identity(&Role::Gateway), Err(TlsError::Malformed(_))));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn certificates_without_a_role_are_refused() {
        let plain = Identity::generate_self_signed().expect("identity");
        assert!(matches!(peer_role(&plain.chain), Err(TlsError::NoRole)));
        assert!(matches!(peer_role(&[]), Err(TlsError::NoPeerCertificate)));
        let junk = CertificateDer::from(vec![0x30, 0x03, 1, 2, 3]);
        assert!(matches!(peer_role(&[junk]), Err(TlsError::BadCertificate(_))));
    }
}
