//! Shared test harness: a cluster CA, block daemons under mutual TLS, and a minimal chunk
//! client written from the frame codec.
#![allow(dead_code)]

pub mod fake_metad;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use blockd::{Blockd, BlockdOptions, ClientAuth};
use cluster::Shutdown;
use cluster::tls::{CHUNK_ALPN, Ca, DEV_SERVER_NAME, Identity, Role};
use proto::ChunkHash;
use proto::chunk_frame::{self, HEADER_LEN, Op, Request, Status};

pub const DEADLINE: Duration = Duration::from_secs(20);

pub fn hash_of(data: &[u8]) -> ChunkHash {
    ChunkHash(*blake3::hash(data).as_bytes())
}

pub fn names() -> Vec<String> {
    vec![DEV_SERVER_NAME.to_string(), "localhost".to_string(), "127.0.0.1".to_string()]
}

pub fn issue(ca: &Ca, role: Role) -> Identity {
    ca.issue(&names(), &role).expect("issue certificate")
}

/// Options for a daemon under mutual TLS with `ca`, in `dir`, on a loopback port it picks.
pub fn options(ca: &Ca, dir: &std::path::Path) -> BlockdOptions {
    BlockdOptions {
        data_dir: dir.to_path_buf(),
        listen: "127.0.0.1:0".parse().expect("addr"),
        identity: issue(ca, Role::Blockd),
        client_auth: ClientAuth::Required(vec![ca.anchor()]),
        segment_bytes: 1 << 20,
        min_free_bytes: 0,
        metad_endpoints: Vec::new(),
        metad_tls: cluster::grpc_tls::ClientTls::plaintext(),
        advertise_addr: None,
        repair: blockd::RepairOptions { interval: None, max_copies_per_sec: 0 },
        scrub: blockd::ScrubOptions { interval: None, max_bytes_per_sec: 0 },
    }
}

pub async fn start(opts: BlockdOptions) -> (Blockd, Shutdown) {
    cluster::tls::install_crypto_provider();
    let shutdown = Shutdown::new();
    let blockd = Blockd::start(opts, shutdown.clone()).await.expect("start blockd");
    (blockd, shutdown)
}

pub async fn stop(blockd: Blockd, shutdown: Shutdown) {
    shutdown.cancel();
    tokio::time::timeout(DEADLINE, blockd.wait()).await.expect("shutdown in time").expect("clean shutdown");
}

/// A client endpoint presenting `identity` (or no certificate) and trusting `anchor`.
pub fn client(anchor: &rustls::pki_types::CertificateDer<'static>, identity: Option<&Identity>) -> quinn::Endpoint {
    cluster::tls::install_crypto_provider();
    let anchors = std::slice::from_ref(anchor);
    let tls = match identity {
        Some(id) => cluster::tls::client_config_with_cert(anchors, id, CHUNK_ALPN).expect("client tls"),
        None => cluster::tls::client_config(anchors, CHUNK_ALPN).expect("client tls"),
    };
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("quic crypto");
    let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
    cfg.transport_config(Arc::new(blockd::transport_config()));
    let mut client = quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("client endpoint");
    client.set_default_client_config(cfg);
    client
}

/// Connects, or returns the handshake error.
pub async fn try_connect(
    client: &quinn::Endpoint,
    addr: SocketAddr,
) -> Result<quinn::Connection, quinn::ConnectionError> {
    let connecting = client.connect(addr, DEV_SERVER_NAME).expect("connect");
    tokio::time::timeout(DEADLINE, connecting).await.expect("handshake in time")
}

pub async fn connect(client: &quinn::Endpoint, addr: SocketAddr) -> quinn::Connection {
    try_connect(client, addr).await.expect("handshake")
}

/// Sends raw request bytes on a new stream and reads one response; `None` if the
/// connection failed (as it does once a failed client-certificate check reaches the client).
pub async fn try_call_raw(conn: &quinn::Connection, op: Op, bytes: &[u8]) -> Option<(Status, Vec<u8>)> {
    tokio::time::timeout(DEADLINE, async {
        let (mut send, mut recv) = conn.open_bi().await.ok()?;
        send.write_all(bytes).await.ok()?;
        let _ = send.finish();
        let mut head = [0u8; HEADER_LEN];
        recv.read_exact(&mut head).await.ok()?;
        let header = chunk_frame::decode_response_header(&head, op).expect("valid response header");
        let mut body = vec![0u8; header.body_len];
        recv.read_exact(&mut body).await.ok()?;
        Some((header.status, body))
    })
    .await
    .expect("response in time")
}

pub async fn call_raw(conn: &quinn::Connection, op: Op, bytes: &[u8]) -> (Status, Vec<u8>) {
    try_call_raw(conn, op, bytes).await.expect("response")
}

pub async fn call(conn: &quinn::Connection, req: &Request<'_>) -> (Status, Vec<u8>) {
    call_raw(conn, req.op(), &chunk_frame::encode_request(req)).await
}

pub async fn put(conn: &quinn::Connection, data: &[u8]) -> Status {
    call(conn, &Request::Put { hash: hash_of(data), data }).await.0
}

pub async fn has(conn: &quinn::Connection, hashes: &[ChunkHash]) -> Vec<bool> {
    let (status, body) = call(conn, &Request::Has { hashes: hashes.to_vec() }).await;
    assert_eq!(status, Status::Ok);
    chunk_frame::decode_has_body(&body, hashes.len()).expect("has body")
}
