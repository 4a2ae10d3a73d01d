//! The QUIC chunk server over loopback, with a minimal client written here from the frame
//! codec (the real client lives in the gateway crate).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use blockd::{Blockd, BlockdOptions, Store, StoreOptions};
use cluster::Shutdown;
use cluster::tls::{CHUNK_ALPN, DEV_SERVER_NAME, Identity};
use proto::ChunkHash;
use proto::chunk_frame::{self, HEADER_LEN, Op, Request, Status};

const DEADLINE: Duration = Duration::from_secs(20);

fn hash_of(data: &[u8]) -> ChunkHash {
    ChunkHash(*blake3::hash(data).as_bytes())
}

struct Harness {
    _dir: tempfile::TempDir,
    data_dir: std::path::PathBuf,
    blockd: Blockd,
    shutdown: Shutdown,
    client: quinn::Endpoint,
    anchor: rustls::pki_types::CertificateDer<'static>,
}

async fn start() -> Harness {
    cluster::tls::install_crypto_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("blockd");
    let identity = Identity::generate_self_signed().expect("identity");
    let anchor = identity.trust_anchor();
    let shutdown = Shutdown::new();
    let opts = BlockdOptions {
        data_dir: data_dir.clone(),
        listen: "127.0.0.1:0".parse().expect("addr"),
        identity,
        client_auth: blockd::ClientAuth::Disabled,
        segment_bytes: 1 << 20,
        min_free_bytes: 0,
        metad_endpoints: Vec::new(),
        metad_tls: cluster::grpc_tls::ClientTls::plaintext(),
        advertise_addr: None,
        repair: blockd::RepairOptions::default(),
        scrub: blockd::ScrubOptions::default(),
    };
    let blockd = Blockd::start(opts, shutdown.clone()).await.expect("start blockd");
    let tls = cluster::tls::client_config(std::slice::from_ref(&anchor), CHUNK_ALPN).expect("client tls");
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("quic crypto");
    let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
    cfg.transport_config(Arc::new(blockd::transport_config()));
    let mut client = quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("client endpoint");
    client.set_default_client_config(cfg);
    Harness { _dir: dir, data_dir, blockd, shutdown, client, anchor }
}

impl Harness {
    async fn connect(&self) -> quinn::Connection {
        connect(&self.client, self.blockd.local_addr()).await
    }
}

async fn connect(client: &quinn::Endpoint, addr: SocketAddr) -> quinn::Connection {
    let connecting = client.connect(addr, DEV_SERVER_NAME).expect("connect");
    tokio::time::timeout(DEADLINE, connecting).await.expect("handshake in time").expect("handshake")
}

/// Sends raw request bytes on a new stream and reads one response.
async fn call_raw(conn: &quinn::Connection, op: Op, bytes: &[u8]) -> (Status, Vec<u8>) {
    tokio::time::timeout(DEADLINE, async {
        let (mut send, mut recv) = conn.open_bi().await.expect("open stream");
        send.write_all(bytes).await.expect("send request");
        let _ = send.finish();
        let mut head = [0u8; HEADER_LEN];
        recv.read_exact(&mut head).await.expect("response header");
        let header = chunk_frame::decode_response_header(&head, op).expect("valid response header");
        let mut body = vec![0u8; header.body_len];
        recv.read_exact(&mut body).await.expect("response body");
        (header.status, body)
    })
    .await
    .expect("response in time")
}

async fn call(conn: &quinn::Connection, req: &Request<'_>) -> (Status, Vec<u8>) {
    call_raw(conn, req.op(), &chunk_frame::encode_request(req)).await
}

async fn put(conn: &quinn::Connection, data: &[u8]) -> Status {
    call(conn, &Request::Put { hash: hash_of(data), data }).await.0
}

#[tokio::test]
async fn put_get_has_over_quic() {
    let h = start().await;
    let conn = h.connect().await;
    let a = vec![7u8; 100_000];
    let b = b"a small chunk".to_vec();
    assert_eq!(put(&conn, &a).await, Status::Ok);
    assert_eq!(put(&conn, &b).await, Status::Ok);
    // Deduplicated puts are acknowledged too.
    assert_eq!(put(&conn, &b).await, Status::Ok);

    let (status, body) = call(&conn, &Request::Get { hash: hash_of(&a) }).await;
    assert_eq!((status, body), (Status::Ok, a.clone()));
    let (status, _) = call(&conn, &Request::Get { hash: hash_of(b"missing") }).await;
    assert_eq!(status, Status::NotFound);
    let (status, body) =
        call(&conn, &Request::Has { hashes: vec![hash_of(&b), hash_of(b"missing"), hash_of(&a)] }).await;
    assert_eq!(status, Status::Ok);
    assert_eq!(chunk_frame::decode_has_body(&body, 3).expect("has body"), vec![true, false, true]);
    assert_eq!(h.blockd.store().stats().chunks, 2);

    // Many concurrent puts on one connection.
    let chunks: Vec<Vec<u8>> = (0..32u32).map(|i| i.to_le_bytes().repeat(1000)).collect();
    let puts = chunks.iter().map(|c| put(&conn, c));
    for status in futures::future::join_all(puts).await {
        assert_eq!(status, Status::Ok);
    }
    assert_eq!(h.blockd.store().stats().chunks, 34);

    h.shutdown.cancel();
    tokio::time::timeout(DEADLINE, h.blockd.wait()).await.expect("shutdown in time").expect("clean shutdown");
    // The daemon released its files: the store reopens with everything acknowledged.
    let store = Store::open(StoreOptions { data_dir: h.data_dir.clone(), segment_bytes: 1 << 20, min_free_bytes: 0 })
        .expect("reopen after shutdown");
    assert_eq!(store.get(&hash_of(&a)).expect("get").as_ref(), a.as_slice());
    assert_eq!(store.stats().chunks, 34);
}

#[tokio::test]
async fn bad_requests_are_refused_and_the_server_keeps_serving() {
    let h = start().await;
    let conn = h.connect().await;

    // A header claiming a 4 GiB body: refused from the header alone.
    let huge = chunk_frame::request_header(Op::Put, u32::MAX as usize);
    let (status, msg) = call_raw(&conn, Op::Put, &huge).await;
    assert_eq!(status, Status::BadRequest);
    assert!(String::from_utf8_lossy(&msg).contains("exceeds"), "{}", String::from_utf8_lossy(&msg));

    // Bytes that do not match their name are not stored.
    let data = b"honest bytes";
    let lie = chunk_frame::encode_request(&Request::Put { hash: hash_of(b"other bytes"), data });
    assert_eq!(call_raw(&conn, Op::Put, &lie).await.0, Status::BadRequest);
    let (_, body) = call(&conn, &Request::Has { hashes: vec![hash_of(b"other bytes"), hash_of(data)] }).await;
    assert_eq!(body, vec![0, 0]);

    // Garbage, and a body shorter than its header says (stream finished early).
    assert_eq!(call_raw(&conn, Op::Get, b"GARBAGE!GARBAGE!").await.0, Status::BadRequest);
    let mut short = chunk_frame::request_header(Op::Get, 32).to_vec();
    short.extend_from_slice(&[1; 10]);
    let (mut send, _recv) = conn.open_bi().await.expect("stream");
    send.write_all(&short).await.expect("send");
    let _ = send.finish();

    // A stream abandoned mid-body.
    let (mut send, _recv2) = conn.open_bi().await.expect("stream");
    send.write_all(&chunk_frame::request_header(Op::Put, 1000)).await.expect("send");
    send.write_all(&[0u8; 10]).await.expect("send");
    let _ = send.reset(quinn::VarInt::from_u32(9));

    // The same connection, and a new one, still work.
    assert_eq!(put(&conn, data).await, Status::Ok);
    let other = h.connect().await;
    let (status, body) = call(&other, &Request::Get { hash: hash_of(data) }).await;
    assert_eq!((status, body.as_slice()), (Status::Ok, &data[..]));

    h.shutdown.cancel();
    tokio::time::timeout(DEADLINE, h.blockd.wait()).await.expect("shutdown in time").expect("clean shutdown");
}

#[tokio::test]
async fn corrupt_chunk_is_reported_not_served() {
    let h = start().await;
    let conn = h.connect().await;
    let good = b"good chunk".repeat(100);
    let bad = b"soon corrupt".repeat(100);
    assert_eq!(put(&conn, &good).await, Status::Ok);
    assert_eq!(put(&conn, &bad).await, Status::Ok);
    let rec =
        blockd::scan_records(&h.data_dir).expect("scan").into_iter().find(|r| r.hash == hash_of(&bad)).expect("record");
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(&rec.segment).expect("open");
    f.write_all_at(b"X", rec.data_offset).expect("flip");

    let (status, body) = call(&conn, &Request::Get { hash: hash_of(&bad) }).await;
    assert_eq!(status, Status::Corrupt);
    assert!(!body.windows(bad.len()).any(|w| w == bad.as_slice()));
    let (status, body) = call(&conn, &Request::Get { hash: hash_of(&good) }).await;
    assert_eq!((status, body), (Status::Ok, good));
    let report = blockd::verify_store(&h.data_dir).expect("verify");
    assert_eq!(report.corrupt, vec![rec]);

    // A client that does not trust the daemon's certificate cannot connect.
    let stranger = Identity::generate_self_signed().expect("identity").trust_anchor();
    assert_ne!(stranger, h.anchor);
    let tls = cluster::tls::client_config(&[stranger], CHUNK_ALPN).expect("tls");
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("crypto");
    let connecting = h
        .client
        .connect_with(quinn::ClientConfig::new(Arc::new(crypto)), h.blockd.local_addr(), DEV_SERVER_NAME)
        .expect("connect");
    assert!(tokio::time::timeout(DEADLINE, connecting).await.expect("in time").is_err());

    h.shutdown.cancel();
    tokio::time::timeout(DEADLINE, h.blockd.wait()).await.expect("shutdown in time").expect("clean shutdown");
}
