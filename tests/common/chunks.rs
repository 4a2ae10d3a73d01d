//! Asks block daemons over their real QUIC port which chunks they hold, as an operator tool
//! would: a `tool` certificate from the cluster CA (which may ask, never store).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cluster::tls::{CHUNK_ALPN, NodeTls, Role};
use proto::ChunkHash;
use proto::chunk_frame::{self, HEADER_LEN, Request, Status};

const DEADLINE: Duration = Duration::from_secs(20);

pub struct ChunkProbe {
    endpoint: quinn::Endpoint,
}

impl ChunkProbe {
    /// A client presenting the `tool` certificate in `tls_dir` (see `tessera issue-cert`).
    pub fn new(tls_dir: &Path) -> ChunkProbe {
        cluster::tls::install_crypto_provider();
        let tls = NodeTls::new(tls_dir);
        let anchor = tls.ca_anchor().expect("CA certificate");
        let id = tls.identity(&Role::Tool).expect("tool certificate");
        let cfg = cluster::tls::client_config_with_cert(&[anchor], &id, CHUNK_ALPN).expect("client tls");
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(cfg).expect("quic crypto");
        let mut client = quinn::ClientConfig::new(Arc::new(crypto));
        client.transport_config(Arc::new(blockd::transport_config()));
        let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("endpoint");
        endpoint.set_default_client_config(client);
        ChunkProbe { endpoint }
    }

    /// Which of `hashes` the daemon at `addr` holds (HAS, in batches).
    pub async fn has(&self, addr: SocketAddr, hashes: &[ChunkHash]) -> Vec<bool> {
        let conn = tokio::time::timeout(DEADLINE, self.endpoint.connect(addr, &addr.ip().to_string()).expect("connect"))
            .await
            .expect("handshake in time")
            .expect("handshake");
        let mut out = Vec::with_capacity(hashes.len());
        for batch in hashes.chunks(1024) {
            let req = Request::Has { hashes: batch.to_vec() };
            let bytes = chunk_frame::encode_request(&req);
            let answer = tokio::time::timeout(DEADLINE, async {
                let (mut send, mut recv) = conn.open_bi().await.expect("stream");
                send.write_all(&bytes).await.expect("send");
                let _ = send.finish();
                let mut head = [0u8; HEADER_LEN];
                recv.read_exact(&mut head).await.expect("response header");
                let header = chunk_frame::decode_response_header(&head, req.op()).expect("valid header");
                let mut body = vec![0u8; header.body_len];
                recv.read_exact(&mut body).await.expect("response body");
                assert_eq!(header.status, Status::Ok, "HAS answered {:?}", header.status);
                chunk_frame::decode_has_body(&body, batch.len()).expect("HAS body")
            })
            .await
            .expect("HAS in time");
            out.extend(answer);
        }
        conn.close(0u32.into(), b"done");
        out
    }

    /// For each of `hashes`, how many of the daemons at `addrs` hold it.
    pub async fn holders(&self, addrs: &[SocketAddr], hashes: &[ChunkHash]) -> HashMap<ChunkHash, usize> {
        let mut count: HashMap<ChunkHash, usize> = hashes.iter().map(|h| (*h, 0)).collect();
        for &a in addrs {
            for (h, held) in hashes.iter().zip(self.has(a, hashes).await) {
                if held {
                    *count.entry(*h).or_default() += 1;
                }
            }
        }
        count
    }
}
