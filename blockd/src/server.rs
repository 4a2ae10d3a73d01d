//! The QUIC chunk server: PUT/GET/HAS frames (`proto::chunk_frame`) over quinn.
//!
//! Owns: the endpoint's transport settings, the accept loop, one task per connection and
//! one per bidirectional stream (one request, one response), the in-flight body budget, and
//! authorization by client certificate: with [`ClientAuth::Required`] the TLS handshake
//! fails for a client without a certificate issued by the cluster CA, and only peers whose
//! certificate role may write (`cluster::tls::Role::may_put`: gateways and block daemons)
//! may PUT; any cluster certificate may GET and HAS.
//! Must never: store a chunk for a peer whose role may not write, or read the body of such
//! a PUT; allocate a body before its header passed `decode_request_header` (which
//! checks the per-operation limit) and the in-flight budget; panic or let one connection's
//! misbehaviour reach another (every failure is answered on, or ends, its own stream);
//! acknowledge a put before the store says it is durable.
//!
//! Shutdown closes the endpoint (in-flight requests that are not yet handed to the store
//! are dropped unanswered; clients retry), then waits for every stream task: a put already
//! handed to the store is fsynced and indexed by it whether or not its answer can still be
//! delivered.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cluster::Shutdown;
use proto::chunk_frame::{self, HEADER_LEN, Request, Status};
use quinn::{Endpoint, RecvStream, SendStream, VarInt};
use rustls::pki_types::CertificateDer;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::task::TaskTracker;

use crate::error::BlockdError;
use crate::store::{Chunk, Store};

/// Concurrent bidirectional streams (requests) a client may have open per connection.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 256;
/// Request bodies held in memory across all connections before new ones wait.
const MAX_INFLIGHT_BODY_BYTES: usize = 256 * 1024 * 1024;
/// A request must arrive completely within this time.
const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(30);
const STREAM_RECEIVE_WINDOW: u32 = 16 * 1024 * 1024;
const CONNECTION_RECEIVE_WINDOW: u32 = 32 * 1024 * 1024;
const SEND_WINDOW: u64 = 32 * 1024 * 1024;
/// LAN round trips are well under a millisecond; a few ms avoids spurious early retransmits.
const INITIAL_RTT: Duration = Duration::from_millis(5);
const IDLE_TIMEOUT_MS: u32 = 60_000;
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Answer to a PUT from a peer whose certificate role may not write.
pub const FORBIDDEN_PUT: &str = "this client's certificate role may not store chunks";
const HANDSHAKES_FAILED: &str = "tessera_chunk_handshakes_failed_total";
const PUTS_FORBIDDEN: &str = "tessera_chunk_puts_forbidden_total";

/// Application error codes on streams and connections.
const CODE_SHUTDOWN: u32 = 0;
const CODE_BAD_REQUEST: u32 = 1;
const CODE_TIMEOUT: u32 = 2;

/// Transport settings for a LAN data plane (shared with clients that want the same).
pub fn transport_config() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(VarInt::from_u32(MAX_STREAMS_PER_CONNECTION))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .stream_receive_window(VarInt::from_u32(STREAM_RECEIVE_WINDOW))
        .receive_window(VarInt::from_u32(CONNECTION_RECEIVE_WINDOW))
        .send_window(SEND_WINDOW)
        .initial_rtt(INITIAL_RTT)
        .max_idle_timeout(Some(VarInt::from_u32(IDLE_TIMEOUT_MS).into()))
        .keep_alive_interval(Some(KEEP_ALIVE));
    t
}

/// Who may connect to the chunk server.
#[derive(Debug, Clone)]
pub enum ClientAuth {
    /// Mutual TLS: a client must present a certificate chaining to one of these anchors (the
    /// cluster CA); its role decides whether it may PUT.
    Required(Vec<CertificateDer<'static>>),
    /// No client certificates: anyone who reaches the port may read and write. Only for
    /// `tessera dev` while its gateway does not present a certificate yet.
    Disabled,
}

/// Binds the QUIC endpoint on `listen`, presenting `identity` with the chunk ALPN.
pub(crate) fn bind(
    identity: &cluster::tls::Identity,
    auth: &ClientAuth,
    listen: SocketAddr,
) -> Result<Endpoint, BlockdError> {
    let tls = match auth {
        ClientAuth::Required(anchors) => cluster::tls::mtls_server_config(identity, anchors, cluster::tls::CHUNK_ALPN)?,
        ClientAuth::Disabled => cluster::tls::server_config(identity, cluster::tls::CHUNK_ALPN)?,
    };
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(Arc::new(transport_config()));
    Endpoint::server(config, listen).map_err(|source| BlockdError::Bind { addr: listen, source })
}

/// Accepts connections until `shutdown`, then closes the endpoint and waits for every
/// connection and stream task to end.
pub(crate) async fn serve(endpoint: Endpoint, store: Arc<Store>, auth: ClientAuth, shutdown: Shutdown) {
    let mutual = matches!(auth, ClientAuth::Required(_));
    let tracker = TaskTracker::new();
    let budget = Arc::new(Semaphore::new(MAX_INFLIGHT_BODY_BYTES));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            incoming = endpoint.accept() => match incoming {
                Some(incoming) => {
                    tracker.spawn(connection(incoming, mutual, store.clone(), budget.clone(), tracker.clone()));
                }
                None => break,
            },
        }
    }
    tracing::info!("chunk server shutting down");
    endpoint.set_server_config(None);
    endpoint.close(VarInt::from_u32(CODE_SHUTDOWN), b"shutting down");
    tracker.close();
    tracker.wait().await;
    endpoint.wait_idle().await;
}

async fn connection(
    incoming: quinn::Incoming,
    mutual: bool,
    store: Arc<Store>,
    budget: Arc<Semaphore>,
    tracker: TaskTracker,
) {
    let conn = match incoming.await {
        Ok(conn) => conn,
        Err(e) => {
            metrics::counter!(HANDSHAKES_FAILED).increment(1);
            tracing::debug!(error = %e, "QUIC handshake failed");
            return;
        }
    };
    let peer = conn.remote_address();
    let may_put = if mutual { peer_may_put(&conn) } else { true };
    tracing::debug!(%peer, may_put, "chunk connection open");
    loop {
        match conn.accept_bi().await {
            Ok((send, recv)) => {
                tracker.spawn(stream(send, recv, may_put, store.clone(), budget.clone()));
            }
            Err(e) => {
                tracing::debug!(%peer, reason = %e, "chunk connection closed");
                return;
            }
        }
    }
}

/// Whether the peer's verified certificate names a role that may PUT.
fn peer_may_put(conn: &quinn::Connection) -> bool {
    let Some(chain) = conn.peer_identity().and_then(|id| id.downcast::<Vec<CertificateDer<'static>>>().ok()) else {
        return false;
    };
    match cluster::tls::peer_role(&chain) {
        Ok(role) => role.may_put(),
        Err(e) => {
            tracing::debug!(peer = %conn.remote_address(), error = %e, "peer certificate names no usable role");
            false
        }
    }
}

enum Action {
    Put(proto::ChunkHash),
    Get(proto::ChunkHash),
    Has(Vec<proto::ChunkHash>),
}

/// What to send back on a stream.
enum Reply {
    Error(Status, String),
    Ok(Bytes),
}

impl Reply {
    fn from_error(e: &BlockdError) -> Reply {
        Reply::Error(e.status(), e.to_string())
    }
}

async fn stream(mut send: SendStream, mut recv: RecvStream, may_put: bool, store: Arc<Store>, budget: Arc<Semaphore>) {
    let read = match tokio::time::timeout(REQUEST_READ_TIMEOUT, read_request(&mut recv, may_put, &budget)).await {
        Ok(read) => read,
        Err(_) => {
            let _ = recv.stop(VarInt::from_u32(CODE_TIMEOUT));
            Read::Refused("request not received in time".into())
        }
    };
    let reply = match read {
        Read::Broken => {
            // The peer reset or abandoned the stream mid-request: nobody to answer.
            let _ = send.reset(VarInt::from_u32(CODE_BAD_REQUEST));
            return;
        }
        Read::Refused(message) => Reply::Error(Status::BadRequest, message),
        Read::Request { action, body, permit } => {
            let reply = execute(action, body, &store).await;
            drop(permit);
            reply
        }
    };
    let written = match reply {
        Reply::Ok(body) => {
            let head = chunk_frame::response_header(Status::Ok, body.len());
            match send.write_all(&head).await {
                Ok(()) => send.write_all(&body).await,
                Err(e) => Err(e),
            }
        }
        Reply::Error(status, message) => {
            if status == Status::BadRequest {
                // Whatever else the peer sends on this stream is not wanted.
                let _ = recv.stop(VarInt::from_u32(CODE_BAD_REQUEST));
            }
            send.write_all(&chunk_frame::encode_error(status, &message)).await
        }
    };
    match written {
        Ok(()) => {
            let _ = send.finish();
        }
        Err(e) => tracing::debug!(error = %e, "could not send a chunk response"),
    }
}

/// The outcome of reading one request off a stream.
enum Read {
    /// A well-formed request; `permit` holds the body's share of the in-flight budget.
    Request { action: Action, body: Vec<u8>, permit: OwnedSemaphorePermit },
    /// A malformed request, answered with `BadRequest` and this message.
    Refused(String),
    /// The stream broke (reset, finished early, connection lost): nobody to answer.
    Broken,
}

/// Reads one request: header, limit check, budget, then exactly the announced body.
async fn read_request(recv: &mut RecvStream, may_put: bool, budget: &Arc<Semaphore>) -> Read {
    let mut head = [0u8; HEADER_LEN];
    if recv.read_exact(&mut head).await.is_err() {
        return Read::Broken;
    }
    let header = match chunk_frame::decode_request_header(&head) {
        Ok(h) => h,
        Err(e) => return Read::Refused(e.to_string()),
    };
    if header.op == chunk_frame::Op::Put && !may_put {
        metrics::counter!(PUTS_FORBIDDEN).increment(1);
        return Read::Refused(FORBIDDEN_PUT.into());
    }
    // body_len is within the operation's limit (at most a chunk plus its hash), which is
    // below the budget, so this always completes once earlier bodies are released.
    let permits = u32::try_from(header.body_len).unwrap_or(u32::MAX);
    let Ok(permit) = budget.clone().acquire_many_owned(permits).await else {
        return Read::Broken;
    };
    let mut body = vec![0u8; header.body_len];
    if recv.read_exact(&mut body).await.is_err() {
        return Read::Broken;
    }
    // Decoded into owned parts so the body can be handed on without a copy.
    let action = match chunk_frame::decode_request_body(&header, &body) {
        Ok(Request::Put { hash, .. }) => Action::Put(hash),
        Ok(Request::Get { hash }) => Action::Get(hash),
        Ok(Request::Has { hashes }) => Action::Has(hashes),
        Err(e) => return Read::Refused(e.to_string()),
    };
    Read::Request { action, body, permit }
}

/// Serves one well-formed request.
async fn execute(action: Action, body: Vec<u8>, store: &Arc<Store>) -> Reply {
    match action {
        Action::Put(hash) => {
            // The decoder checked the data against the hash; keep the body, drop the name.
            let data = Bytes::from(body).slice(proto::chunk::HASH_LEN..);
            match Chunk::trusted(hash, data) {
                Ok(chunk) => match store.put(chunk).await {
                    Ok(_) => Reply::Ok(Bytes::new()),
                    Err(e) => Reply::from_error(&e),
                },
                Err(e) => Reply::from_error(&e),
            }
        }
        Action::Get(hash) => {
            match store.read(hash).await {
                Ok(bytes) => Reply::Ok(bytes),
                Err(e) => Reply::from_error(&e),
            }
        }
        Action::Has(hashes) => {
            let store = store.clone();
            match tokio::task::spawn_blocking(move || store.has(&hashes)).await {
                Ok(Ok(found)) => Reply::Ok(found.into_iter().map(u8::from).collect::<Vec<u8>>().into()),
                Ok(Err(e)) => Reply::from_error(&e),
                Err(e) => Reply::from_error(&BlockdError::Task(e)),
            }
        }
    }
}
