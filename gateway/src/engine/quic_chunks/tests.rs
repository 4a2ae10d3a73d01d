//! `QuicChunks` against a tiny QUIC chunk server written here (real quinn + rustls on
//! loopback): put/get/has, batching of HAS, verification of GET bytes, status mapping and
//! reconnection after the server closes the connection.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use proto::chunk_frame::{self, HEADER_LEN, MAX_HAS, Request, Status};
use proto::{ChunkHash, FsError};
use quinn::crypto::rustls::QuicServerConfig;
use rustls::pki_types::CertificateDer;

use super::QuicChunks;
use crate::engine::api::ChunkApi;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(in crate::engine) enum Mode {
    Honest,
    /// GET answers bytes that do not match the hash.
    Corrupt,
    /// PUT answers NoSpace.
    Full,
    /// Every connection is closed after serving one stream.
    OneStreamPerConnection,
    /// Reads requests and never answers (a daemon frozen or killed mid-request).
    Silent,
}

type Store = Arc<Mutex<HashMap<ChunkHash, Vec<u8>>>>;

fn hash_of(data: &[u8]) -> ChunkHash {
    ChunkHash(*blake3::hash(data).as_bytes())
}

/// Starts the stub; returns its address and the certificate to trust.
pub(in crate::engine) fn start_stub(mode: Mode) -> (SocketAddr, CertificateDer<'static>, quinn::Endpoint) {
    let id = cluster::tls::Identity::generate_self_signed().expect("identity");
    let tls = cluster::tls::server_config(&id, cluster::tls::CHUNK_ALPN).expect("server tls");
    let crypto = QuicServerConfig::try_from(tls).expect("quic tls");
    let config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let endpoint = quinn::Endpoint::server(config, "127.0.0.1:0".parse().expect("addr")).expect("bind");
    let addr = endpoint.local_addr().expect("local addr");
    let store: Store = Arc::default();
    let ep = endpoint.clone();
    tokio::spawn(async move {
        while let Some(incoming) = ep.accept().await {
            let store = store.clone();
            tokio::spawn(async move {
                let Ok(conn) = incoming.await else { return };
                while let Ok((send, recv)) = conn.accept_bi().await {
                    if mode == Mode::OneStreamPerConnection {
                        serve(send, recv, &store, mode).await;
                        conn.close(0u32.into(), b"one stream only");
                        return;
                    }
                    let store = store.clone();
                    tokio::spawn(async move { serve(send, recv, &store, mode).await });
                }
            });
        }
    });
    (addr, id.trust_anchor(), endpoint)
}

async fn serve(mut send: quinn::SendStream, mut recv: quinn::RecvStream, store: &Store, mode: Mode) {
    let mut head = [0u8; HEADER_LEN];
    if recv.read_exact(&mut head).await.is_err() {
        return;
    }
    let Ok(header) = chunk_frame::decode_request_header(&head) else { return };
    let mut body = vec![0u8; header.body_len];
    if recv.read_exact(&mut body).await.is_err() {
        return;
    }
    if mode == Mode::Silent {
        // Hold the stream open without answering until the client gives up.
        let _ = recv.read_to_end(0).await;
        let _ = send.stopped().await;
        return;
    }
    let answer = match chunk_frame::decode_request_body(&header, &body) {
        Err(e) => chunk_frame::encode_error(Status::BadRequest, &e.to_string()),
        Ok(Request::Put { .. }) if mode == Mode::Full => chunk_frame::encode_error(Status::NoSpace, "full"),
        Ok(Request::Put { hash, data }) => {
            store.lock().expect("store").insert(hash, data.to_vec());
            chunk_frame::encode_response(Status::Ok, &[])
        }
        Ok(Request::Get { hash }) => match store.lock().expect("store").get(&hash).cloned() {
            Some(mut data) => {
                if mode == Mode::Corrupt {
                    data[0] ^= 1;
                }
                chunk_frame::encode_response(Status::Ok, &data)
            }
            None => chunk_frame::encode_error(Status::NotFound, "no such chunk"),
        },
        Ok(Request::Has { hashes }) => {
            let s = store.lock().expect("store");
            let flags: Vec<u8> = hashes.iter().map(|h| u8::from(s.contains_key(h))).collect();
            chunk_frame::encode_response(Status::Ok, &flags)
        }
    };
    if send.write_all(&answer).await.is_ok() && send.finish().is_ok() {
        let _ = send.stopped().await;
    }
}

fn client(addr: SocketAddr, anchor: CertificateDer<'static>) -> QuicChunks {
    QuicChunks::new(addr, &[anchor]).expect("client")
}

#[tokio::test]
async fn put_get_has_round_trip() {
    let (addr, anchor, _server) = start_stub(Mode::Honest);
    let c = client(addr, anchor);
    let a = Bytes::from(vec![7u8; 100_000]);
    let b = Bytes::from_static(b"small chunk");
    let (ha, hb) = (hash_of(&a), hash_of(&b));
    assert_eq!(c.has(&[ha, hb]).await.expect("has"), vec![false, false]);
    c.put(ha, a.clone()).await.expect("put a");
    assert_eq!(c.has(&[ha, hb]).await.expect("has"), vec![true, false]);
    assert_eq!(c.get(ha).await.expect("get"), a);
    let missing = c.get(hb).await;
    assert!(matches!(missing, Err(FsError::Io(_))), "{missing:?}");
    // More hashes than one HAS frame may carry: batched.
    let many: Vec<ChunkHash> = (0..MAX_HAS + 10).map(|i| hash_of(&i.to_be_bytes())).chain([ha]).collect();
    let flags = c.has(&many).await.expect("batched has");
    assert_eq!(flags.len(), many.len());
    assert_eq!(flags.iter().filter(|f| **f).count(), 1);
    assert_eq!(flags.last(), Some(&true));
}

#[tokio::test]
async fn bytes_that_do_not_match_the_hash_are_an_io_error() {
    let (addr, anchor, _server) = start_stub(Mode::Corrupt);
    let c = client(addr, anchor);
    let data = Bytes::from_static(b"some chunk bytes");
    let h = hash_of(&data);
    c.put(h, data).await.expect("put");
    let r = c.get(h).await;
    assert!(matches!(r, Err(FsError::Io(_))), "{r:?}");
}

#[tokio::test]
async fn a_full_daemon_is_no_space() {
    let (addr, anchor, _server) = start_stub(Mode::Full);
    let c = client(addr, anchor);
    let data = Bytes::from_static(b"x");
    assert_eq!(c.put(hash_of(&data), data).await.err(), Some(FsError::NoSpace));
}

#[tokio::test]
async fn a_lost_connection_is_re_established() {
    let (addr, anchor, _server) = start_stub(Mode::OneStreamPerConnection);
    let c = client(addr, anchor);
    for i in 0..5u32 {
        let data = Bytes::from(i.to_be_bytes().to_vec());
        let h = hash_of(&data);
        c.put(h, data).await.expect("put on a fresh connection");
    }
}

#[tokio::test]
async fn an_unreachable_daemon_is_unavailable_not_a_hang() {
    // Nothing listens there any more: the handshake fails or times out.
    let (addr, anchor, server) = start_stub(Mode::Honest);
    server.close(0u32.into(), b"gone");
    drop(server);
    let mut c = client(addr, anchor);
    c.connect_timeout = std::time::Duration::from_millis(300);
    let r = c.has(&[hash_of(b"x")]).await;
    assert!(matches!(r, Err(FsError::Unavailable(_))), "{r:?}");
}

/// The chunk-status table: what each refusal of a block daemon means to the gateway. Only
/// "not now" is worth asking again (its client then sees NFS3ERR_JUKEBOX, not EIO); a
/// missing or corrupt copy is an I/O error of that daemon (the gateway asks the others).
#[test]
fn every_refusal_maps_to_its_filesystem_error() {
    let hash = hash_of(b"a chunk");
    let got = |s| super::check_status(s, b"why", Some(&hash));
    assert!(got(Status::Ok).is_ok());
    assert!(matches!(got(Status::NoSpace), Err(FsError::NoSpace)));
    assert!(matches!(got(Status::Unavailable), Err(FsError::Unavailable(_))), "S3 or metad out of the daemon's reach");
    for s in [Status::NotFound, Status::Corrupt, Status::BadRequest, Status::Internal] {
        assert!(matches!(got(s), Err(FsError::Io(_))), "{s:?}");
    }
}
