//! The NFSv3 + MOUNTv3 TCP server: sockets and tasks around the sans-IO `rpc` core.
//!
//! Owns: accepting connections until shutdown, and per connection a reader that feeds
//! the record decoder and runs each complete record concurrently (at most
//! `MAX_IN_FLIGHT` per connection; reading pauses when the window is full), and a writer
//! that sends replies (single-fragment record marking) in completion order.
//!
//! Every connection consults the one duplicate request cache of the server's options
//! (`rpc::drc`), so a call retransmitted on a new connection gets the original's reply.
//!
//! A connection from a load balancer listed in `proxy_protocol_from` must start with a
//! PROXY protocol header (`proxy_header`); the client it names is the connection's peer
//! from then on (export rules, the DRC). From anyone else no header is read.
//!
//! Must never: let one connection's failure (oversized record, EOF, I/O error) affect
//! another, or buffer more than the in-flight window of replies per connection.

use std::io;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use cluster::Shutdown;
use cluster::metrics as names;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};

use proto::export::ClientMatch;

use crate::proxy_header::{self, Parsed};
use crate::rpc::{DuplicateRequestCache, handle_call_with_drc, record};
use crate::vfs::Vfs;
use crate::xdr::Encoded;

mod portmap;
#[cfg(test)]
mod tests;

pub use portmap::{serve_portmap, serve_portmap_udp};

/// Calls of one connection being served at once.
pub const MAX_IN_FLIGHT: usize = 64;
/// Default largest RPC record: a 1 MiB WRITE plus headers.
pub const DEFAULT_MAX_RECORD_BYTES: u32 = (1 << 20) + 64 * 1024;
/// How long a load balancer has to send its PROXY header after connecting.
const PROXY_HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Server settings.
#[derive(Clone, Debug)]
pub struct NfsServerOptions {
    /// Largest RPC record (all fragments) a client may send; a larger one closes the
    /// connection. Must be at least WTMAX plus headers for full-size WRITEs.
    pub max_record_bytes: u32,
    /// The process's duplicate request cache, shared by every connection.
    pub drc: Arc<DuplicateRequestCache>,
    /// Load balancers whose connections start with a PROXY protocol header
    /// (`nfs.proxy_protocol_from`).
    pub proxy_protocol_from: Arc<Vec<ClientMatch>>,
}

impl Default for NfsServerOptions {
    fn default() -> Self {
        NfsServerOptions {
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            drc: Arc::default(),
            proxy_protocol_from: Arc::default(),
        }
    }
}

/// Serves NFSv3 (program 100003 v3) and MOUNT v3 (100005 v3) on one TCP listener until
/// `shutdown`. Connections are closed when `shutdown` fires too.
pub async fn serve<V: Vfs>(
    listener: TcpListener,
    vfs: Arc<V>,
    opts: NfsServerOptions,
    shutdown: Shutdown,
) -> io::Result<()> {
    tracing::info!(addr = ?listener.local_addr().ok(), "NFS server listening");
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                let (vfs, opts, shutdown) = (vfs.clone(), opts.clone(), shutdown.clone());
                let open = OpenConnection::counted();
                tokio::spawn(async move {
                    match connection(stream, vfs, opts, shutdown).await {
                        Ok(()) => tracing::debug!(%peer, "NFS connection closed"),
                        Err(e) => tracing::debug!(%peer, error = %e, "NFS connection ended"),
                    }
                    drop(open);
                });
            }
            Err(e) => {
                // Out of descriptors and the like: back off briefly instead of spinning.
                tracing::warn!(error = %e, "accepting an NFS connection failed");
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(()),
                    () = tokio::time::sleep(std::time::Duration::from_millis(100)) => {}
                }
            }
        }
    }
}

/// One open connection in `tessera_nfs_connections` (counted down when dropped, however
/// the connection's task ends).
struct OpenConnection;

impl OpenConnection {
    fn counted() -> OpenConnection {
        metrics::counter!(names::NFS_CONNECTIONS_ACCEPTED).increment(1);
        metrics::gauge!(names::NFS_CONNECTIONS).increment(1.0);
        OpenConnection
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        metrics::gauge!(names::NFS_CONNECTIONS).decrement(1.0);
    }
}

async fn connection<V: Vfs>(
    mut stream: TcpStream,
    vfs: Arc<V>,
    opts: NfsServerOptions,
    shutdown: Shutdown,
) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut peer = stream.peer_addr().ok();
    let mut early = BytesMut::new();
    if let Some(lb) = peer.filter(|p| opts.proxy_protocol_from.iter().any(|m| m.matches(p.ip()))) {
        let header = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            r = tokio::time::timeout(PROXY_HEADER_TIMEOUT, read_proxy_header(&mut stream)) => r,
        };
        match header {
            Ok(Ok((client, rest))) => {
                peer = client.or(peer);
                early = rest;
            }
            Ok(Err(e)) => {
                tracing::warn!(%lb, error = %e, "closing a load balancer's connection: no valid PROXY header");
                return Err(e);
            }
            Err(_) => {
                tracing::warn!(%lb, "closing a load balancer's connection: no PROXY header within {PROXY_HEADER_TIMEOUT:?}");
                return Ok(());
            }
        }
    }
    let (reader, writer) = stream.into_split();
    let (tx, rx) = mpsc::channel::<Encoded>(MAX_IN_FLIGHT);
    let closed = shutdown.child_token();
    let writer_task = tokio::spawn(write_replies(writer, rx, closed.clone()));
    let read_result = read_calls(reader, early, peer, vfs, opts, tx, closed.clone()).await;
    // The reader is done; the writer drains the replies of calls still running, then ends
    // when the last of them drops its sender.
    let write_result = writer_task.await.unwrap_or_else(|e| Err(io::Error::other(e)));
    closed.cancel();
    read_result.and(write_result)
}

/// Reads a PROXY protocol header from `stream` (never more than
/// `proxy_header::MAX_HEADER_BYTES`): the client it names, if any, and the bytes read after
/// it (the start of the client's first record).
async fn read_proxy_header(stream: &mut TcpStream) -> io::Result<(Option<std::net::SocketAddr>, BytesMut)> {
    let mut buf = BytesMut::with_capacity(proxy_header::MAX_HEADER_BYTES);
    loop {
        match proxy_header::parse(&buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))? {
            Parsed::Header { len, client } => {
                let rest = buf.split_off(len);
                return Ok((client, rest));
            }
            Parsed::Incomplete => {
                // parse() refuses an incomplete header once the buffer is full, so there
                // is room here.
                let mut chunk = [0u8; 256];
                let room = (proxy_header::MAX_HEADER_BYTES - buf.len()).min(chunk.len());
                let n = stream.read(&mut chunk[..room]).await?;
                if n == 0 {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed before its PROXY header ended"));
                }
                buf.extend_from_slice(&chunk[..n]);
            }
        }
    }
}

async fn read_calls<V: Vfs>(
    mut reader: OwnedReadHalf,
    early: BytesMut,
    peer: Option<std::net::SocketAddr>,
    vfs: Arc<V>,
    opts: NfsServerOptions,
    tx: mpsc::Sender<Encoded>,
    closed: Shutdown,
) -> io::Result<()> {
    let mut decoder = record::RecordDecoder::new(opts.max_record_bytes);
    decoder.read_buffer().extend_from_slice(&early);
    let window = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    loop {
        while let Some(rec) = decoder.next_record().map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))? {
            let permit = tokio::select! {
                () = closed.cancelled() => return Ok(()),
                p = window.clone().acquire_owned() => p.map_err(io::Error::other)?,
            };
            let (vfs, drc, tx) = (vfs.clone(), opts.drc.clone(), tx.clone());
            tokio::spawn(async move {
                if let Some(reply) = handle_call_with_drc(&*vfs, Some(&drc), rec, peer).await {
                    let _ = tx.send(reply).await;
                }
                drop(permit);
            });
        }
        let n = tokio::select! {
            () = closed.cancelled() => return Ok(()),
            n = reader.read_buf(decoder.read_buffer()) => n?,
        };
        if n == 0 {
            return Ok(());
        }
    }
}

async fn write_replies(mut writer: OwnedWriteHalf, mut rx: mpsc::Receiver<Encoded>, closed: Shutdown) -> io::Result<()> {
    let result = async {
        loop {
            let reply = tokio::select! {
                () = closed.cancelled() => return Ok(()),
                r = rx.recv() => match r {
                    Some(r) => r,
                    None => return Ok(()),
                },
            };
            let mut out = Bytes::copy_from_slice(&record::marker(reply.len())).chain(reply.into_buf());
            writer.write_all_buf(&mut out).await?;
        }
    }
    .await;
    if result.is_err() {
        // Stop reading calls whose replies could not be delivered.
        closed.cancel();
    }
    let _ = writer.shutdown().await;
    result
}
