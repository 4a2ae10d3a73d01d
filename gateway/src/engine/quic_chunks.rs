//! `QuicChunks`: the `ChunkApi` over QUIC to one block daemon, speaking
//! `proto::chunk_frame`.
//!
//! Owns the client endpoint, one connection (reused, re-established when lost), and the
//! request/response exchange: one bidirectional stream per request; header + body written,
//! stream finished, the 12-byte response header read and validated (length limit checked
//! before the body is allocated), then exactly `body_len` bytes read. GET bytes are
//! verified against the asked hash before they are returned (invariant 5).
//!
//! Must never return unverified chunk bytes, allocate a length from the wire before
//! `decode_response_header` has checked it, or panic on anything the daemon sends.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use proto::chunk_frame::{self, HEADER_LEN, MAX_HAS, Op, Status};
use proto::{ChunkHash, FsError};
use quinn::crypto::rustls::QuicClientConfig;
use quinn::{ClientConfig, Connection, Endpoint, TransportConfig, VarInt};
use rustls::pki_types::CertificateDer;
use tokio::sync::Mutex;

use super::api::ChunkApi;
use super::error::EngineError;

/// Upper bound of a connection handshake (a LAN peer answers in milliseconds).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Upper bound of one request (a 16 MiB put included).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// A peer that sends nothing (not even the ACK of a keep-alive) for this long is gone: the
/// connection closes and its requests fail, instead of waiting out `REQUEST_TIMEOUT`.
const IDLE_TIMEOUT_MS: u32 = 10_000;
const KEEP_ALIVE: Duration = Duration::from_secs(2);
/// LAN round trips are well under a millisecond; quinn's default (333 ms) assumes the
/// internet and makes the first loss recovery slow.
const INITIAL_RTT: Duration = Duration::from_millis(5);
/// Per stream: a whole maximal chunk plus its frame fits without waiting for credit.
const STREAM_WINDOW: u32 = 24 * 1024 * 1024;
/// Per connection: several puts in flight at once.
const CONNECTION_WINDOW: u32 = 128 * 1024 * 1024;
const MAX_STREAMS: u32 = 256;

/// A client of one block daemon.
pub struct QuicChunks {
    endpoint: Endpoint,
    config: ClientConfig,
    addr: SocketAddr,
    conn: Mutex<Option<Connection>>,
    connect_timeout: Duration,
}

/// Why one exchange failed: a lost connection is retried once on a new one.
enum Failure {
    ConnectionLost(String),
    Fs(FsError),
}

impl From<FsError> for Failure {
    fn from(e: FsError) -> Self {
        Failure::Fs(e)
    }
}

impl QuicChunks {
    /// A client of the daemon at `addr`, trusting exactly `anchors`, presenting no client
    /// certificate. Must be called inside a tokio runtime; connects on first use.
    pub fn new(addr: SocketAddr, anchors: &[CertificateDer<'static>]) -> Result<QuicChunks, EngineError> {
        QuicChunks::with_identity(addr, anchors, None)
    }

    /// Like [`QuicChunks::new`], presenting `identity` (the gateway's certificate from the
    /// cluster CA) when given, as block daemons that require mutual TLS expect.
    pub fn with_identity(
        addr: SocketAddr,
        anchors: &[CertificateDer<'static>],
        identity: Option<&cluster::tls::Identity>,
    ) -> Result<QuicChunks, EngineError> {
        let tls = match identity {
            Some(id) => cluster::tls::client_config_with_cert(anchors, id, cluster::tls::CHUNK_ALPN)?,
            None => cluster::tls::client_config(anchors, cluster::tls::CHUNK_ALPN)?,
        };
        let crypto = QuicClientConfig::try_from(tls).map_err(|e| EngineError::QuicTls { reason: e.to_string() })?;
        let mut transport = TransportConfig::default();
        transport
            .initial_rtt(INITIAL_RTT)
            .stream_receive_window(VarInt::from_u32(STREAM_WINDOW))
            .receive_window(VarInt::from_u32(CONNECTION_WINDOW))
            .send_window(u64::from(CONNECTION_WINDOW))
            .max_concurrent_bidi_streams(VarInt::from_u32(MAX_STREAMS))
            .max_idle_timeout(Some(VarInt::from_u32(IDLE_TIMEOUT_MS).into()))
            .keep_alive_interval(Some(KEEP_ALIVE));
        let mut config = ClientConfig::new(Arc::new(crypto));
        config.transport_config(Arc::new(transport));
        let bind_ip = match addr.ip() {
            ip if ip.is_loopback() => ip,
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        let bind = SocketAddr::new(bind_ip, 0);
        tokio::runtime::Handle::try_current().map_err(|_| EngineError::NoRuntime)?;
        let endpoint = Endpoint::client(bind).map_err(|source| EngineError::Bind { addr: bind, source })?;
        Ok(QuicChunks { endpoint, config, addr, conn: Mutex::new(None), connect_timeout: CONNECT_TIMEOUT })
    }

    /// The live connection, connecting if there is none or the last one was lost.
    async fn connection(&self) -> Result<Connection, FsError> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref()
            && c.close_reason().is_none() {
                return Ok(c.clone());
            }
        *slot = None;
        let unavailable = |e: &dyn std::fmt::Display| FsError::Unavailable(format!("block daemon {}: {e}", self.addr));
        // A daemon is named by the IP address it is reached at, which its certificate lists.
        let name = self.addr.ip().to_string();
        let connecting = self
            .endpoint
            .connect_with(self.config.clone(), self.addr, &name)
            .map_err(|e| unavailable(&e))?;
        let conn = tokio::time::timeout(self.connect_timeout, connecting)
            .await
            .map_err(|_| unavailable(&"connect timed out"))?
            .map_err(|e| unavailable(&e))?;
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// Forgets `conn` if it is still the current connection.
    async fn forget(&self, conn: &Connection) {
        let mut slot = self.conn.lock().await;
        if slot.as_ref().is_some_and(|c| c.stable_id() == conn.stable_id()) {
            *slot = None;
        }
    }

    /// One request with a retry on a fresh connection if the connection was lost.
    async fn request(&self, op: Op, parts: &[Bytes]) -> Result<(Status, Bytes), FsError> {
        let mut retried = false;
        loop {
            let conn = self.connection().await?;
            let outcome = tokio::time::timeout(REQUEST_TIMEOUT, exchange(&conn, op, parts)).await;
            match outcome {
                Err(_) => {
                    return Err(FsError::Unavailable(format!("block daemon {}: {op:?} timed out", self.addr)));
                }
                Ok(Ok(answer)) => return Ok(answer),
                Ok(Err(Failure::Fs(e))) => return Err(e),
                Ok(Err(Failure::ConnectionLost(why))) => {
                    self.forget(&conn).await;
                    if retried {
                        return Err(FsError::Unavailable(format!("block daemon {}: {why}", self.addr)));
                    }
                    tracing::debug!(addr = %self.addr, %why, "chunk connection lost, reconnecting");
                    retried = true;
                }
            }
        }
    }

    async fn has_batch(&self, hashes: &[ChunkHash]) -> Result<Vec<bool>, FsError> {
        let mut body = Vec::with_capacity(hashes.len() * proto::chunk::HASH_LEN);
        for h in hashes {
            body.extend_from_slice(h.as_bytes());
        }
        let head = Bytes::copy_from_slice(&chunk_frame::request_header(Op::Has, body.len()));
        let (status, body) = self.request(Op::Has, &[head, Bytes::from(body)]).await?;
        check_status(status, &body, None)?;
        chunk_frame::decode_has_body(&body, hashes.len())
            .map_err(|e| FsError::Io(format!("block daemon {}: bad HAS answer: {e}", self.addr)))
    }
}

/// Writes the request, reads the validated response.
async fn exchange(conn: &Connection, op: Op, parts: &[Bytes]) -> Result<(Status, Bytes), Failure> {
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| Failure::ConnectionLost(e.to_string()))?;
    let mut chunks = parts.to_vec();
    send.write_all_chunks(&mut chunks).await.map_err(|e| match e {
        quinn::WriteError::ConnectionLost(c) => Failure::ConnectionLost(c.to_string()),
        other => Failure::Fs(FsError::Io(format!("sending {op:?}: {other}"))),
    })?;
    // Finishing an already-finished stream cannot happen here; a closed stream shows up as
    // a read error below.
    let _ = send.finish();
    let read_err = |e: quinn::ReadExactError| match e {
        quinn::ReadExactError::ReadError(quinn::ReadError::ConnectionLost(c)) => Failure::ConnectionLost(c.to_string()),
        other => Failure::Fs(FsError::Io(format!("reading {op:?} answer: {other}"))),
    };
    let mut head = [0u8; HEADER_LEN];
    recv.read_exact(&mut head).await.map_err(read_err)?;
    let header = chunk_frame::decode_response_header(&head, op)
        .map_err(|e| Failure::Fs(FsError::Io(format!("bad {op:?} answer header: {e}"))))?;
    // `body_len` is within the operation's limit (decode_response_header checked it).
    let mut body = vec![0u8; header.body_len];
    recv.read_exact(&mut body).await.map_err(read_err)?;
    Ok((header.status, Bytes::from(body)))
}

/// How an `Unavailable` answered by a daemon itself begins (its S3 tier or metad is out of
/// reach; see `ReplicatedChunks::get_round`), as opposed to a daemon that did not answer.
const NOT_NOW: &str = "the block daemon cannot serve it now";

/// Whether `e` is a daemon's own "not now" (it answered), as opposed to one that did not
/// answer at all.
pub(crate) fn is_not_now(e: &FsError) -> bool {
    matches!(e, FsError::Unavailable(why) if why.starts_with(NOT_NOW))
}

/// Maps a non-OK status to the filesystem error.
pub(super) fn check_status(status: Status, body: &[u8], hash: Option<&ChunkHash>) -> Result<(), FsError> {
    let msg = || String::from_utf8_lossy(body).into_owned();
    let what = || hash.map(|h| format!("chunk {h}")).unwrap_or_else(|| "request".to_string());
    match status {
        Status::Ok => Ok(()),
        Status::NoSpace => Err(FsError::NoSpace),
        Status::NotFound => Err(FsError::Io(format!("{} not found on the block daemon", what()))),
        Status::Corrupt => Err(FsError::Io(format!("{} is corrupt on the block daemon", what()))),
        Status::Unavailable => {
            Err(FsError::Unavailable(format!("{NOT_NOW}: {}: {}", what(), msg())))
        }
        Status::BadRequest | Status::Internal => {
            Err(FsError::Io(format!("block daemon refused {} ({status:?}): {}", what(), msg())))
        }
    }
}

impl ChunkApi for QuicChunks {
    const RETURNS_VERIFIED: bool = true;

    async fn has(&self, hashes: &[ChunkHash]) -> Result<Vec<bool>, FsError> {
        let mut out = Vec::with_capacity(hashes.len());
        for batch in hashes.chunks(MAX_HAS) {
            out.extend(self.has_batch(batch).await?);
        }
        Ok(out)
    }

    async fn put(&self, hash: ChunkHash, data: Bytes) -> Result<(), FsError> {
        if data.is_empty() || data.len() > chunk_frame::MAX_CHUNK_LEN {
            return Err(FsError::Invalid(format!("chunk of {} bytes cannot be stored", data.len())));
        }
        let body_len = proto::chunk::HASH_LEN + data.len();
        let head = Bytes::copy_from_slice(&chunk_frame::request_header(Op::Put, body_len));
        let parts = [head, Bytes::copy_from_slice(hash.as_bytes()), data];
        let (status, body) = self.request(Op::Put, &parts).await?;
        check_status(status, &body, Some(&hash))
    }

    async fn get(&self, hash: ChunkHash) -> Result<Bytes, FsError> {
        let head = Bytes::copy_from_slice(&chunk_frame::request_header(Op::Get, proto::chunk::HASH_LEN));
        let parts = [head, Bytes::copy_from_slice(hash.as_bytes())];
        let (status, body) = self.request(Op::Get, &parts).await?;
        check_status(status, &body, Some(&hash))?;
        if blake3::hash(&body).as_bytes() != hash.as_bytes() {
            return Err(FsError::Io(format!("chunk {hash} from block daemon {} fails its hash check", self.addr)));
        }
        Ok(body)
    }
}

#[cfg(test)]
pub(super) mod tests;
