//! The embedded portmapper's TCP listener and UDP socket around the sans-IO `portmap` core.
//!
//! Owns: accepting connections until shutdown and answering each one's records in order
//! (portmapper calls are tiny and cheap: no per-connection concurrency), and answering
//! UDP datagrams one by one.
//!
//! Must never: accept a record over `portmap::MAX_RECORD_BYTES` (the connection is
//! closed), or let one connection's failure affect another.

use std::io;
use std::sync::Arc;

use bytes::{Buf, Bytes};
use cluster::Shutdown;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use crate::portmap::{MAX_RECORD_BYTES, Portmap};
use crate::rpc::record;

/// Serves the portmapper on `listener` until `shutdown` (which closes connections too).
pub async fn serve_portmap(listener: TcpListener, map: Portmap, shutdown: Shutdown) -> io::Result<()> {
    tracing::info!(addr = ?listener.local_addr().ok(), "portmapper listening");
    let map = Arc::new(map);
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                let (map, shutdown) = (map.clone(), shutdown.clone());
                tokio::spawn(async move {
                    if let Err(e) = connection(stream, &map, &shutdown).await {
                        tracing::debug!(%peer, error = %e, "portmapper connection ended");
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "accepting a portmapper connection failed");
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(()),
                    () = tokio::time::sleep(std::time::Duration::from_millis(100)) => {}
                }
            }
        }
    }
}

async fn connection(mut stream: TcpStream, map: &Portmap, shutdown: &Shutdown) -> io::Result<()> {
    let mut decoder = record::RecordDecoder::new(MAX_RECORD_BYTES);
    loop {
        while let Some(rec) = decoder.next_record().map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))? {
            if let Some(reply) = map.handle_record(&rec) {
                let mut out = Bytes::copy_from_slice(&record::marker(reply.len())).chain(reply.into_buf());
                stream.write_all_buf(&mut out).await?;
            }
        }
        let n = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            n = stream.read_buf(decoder.read_buffer()) => n?,
        };
        if n == 0 {
            return Ok(());
        }
    }
}

/// Serves the portmapper on UDP `socket` until `shutdown`: one reply datagram per call
/// datagram (a datagram is a whole record; larger ones are cut to the buffer and then
/// fail to decode).
pub async fn serve_portmap_udp(socket: UdpSocket, map: Portmap, shutdown: Shutdown) -> io::Result<()> {
    let mut buf = vec![0u8; MAX_RECORD_BYTES as usize];
    loop {
        let (n, peer) = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            r = socket.recv_from(&mut buf) => match r {
                Ok(r) => r,
                Err(e) => {
                    // ICMP errors of earlier replies surface here on some systems: not fatal.
                    tracing::debug!(error = %e, "portmapper UDP receive failed");
                    continue;
                }
            },
        };
        let Some(reply) = buf.get(..n).and_then(|d| map.handle_record(d)) else { continue };
        if let Err(e) = socket.send_to(&reply.to_vec(), peer).await {
            tracing::debug!(%peer, error = %e, "portmapper UDP reply not sent");
        }
    }
}
