//! The TCP connection the harness's NFS clients use: tokio's, with end-of-stream reported.
//!
//! Owns [`Tcp`] and [`TcpConnector`] for `nfs3_client`. That crate's `read_exact` (0.9)
//! treats a read of 0 bytes (the peer closed) as "nothing yet" and reads again, so a call on
//! a connection the load balancer closed — its gateway was killed — spins until the
//! harness's call timeout instead of failing at once. A kernel client sees the close and
//! reconnects; so must the harness's clients, or a gateway loss would be measured as a
//! 30 s stall that only this client library causes. Here a read of 0 bytes into a non-empty
//! buffer is `UnexpectedEof`.
//! Must never: connect anywhere but the address `nfs3_client` asks for.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A client connection (see the module docs).
pub struct Tcp(TcpStream);

impl nfs3_client::io::AsyncRead for Tcp {
    async fn async_read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        match self.0.read(buf).await? {
            0 => Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the server closed the connection")),
            n => Ok(n),
        }
    }
}

impl nfs3_client::io::AsyncWrite for Tcp {
    async fn async_write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf).await
    }
}

/// Makes [`Tcp`] connections from unprivileged ports (Tessera does not ask for privileged
/// ones unless an export says so; the example's do not).
pub struct TcpConnector;

impl nfs3_client::net::Connector for TcpConnector {
    type Connection = Tcp;

    async fn connect(&self, addr: SocketAddr) -> std::io::Result<Tcp> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Tcp(stream))
    }

    async fn connect_with_port(&self, _addr: SocketAddr, _local_port: u16) -> std::io::Result<Tcp> {
        Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "the harness connects from unprivileged ports"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nfs3_client::io::AsyncRead;

    /// A read on a connection the peer closed fails instead of returning 0 forever.
    #[tokio::test]
    async fn end_of_stream_is_an_error() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            s.write_all(b"ab").await.expect("write");
        });
        let mut c = nfs3_client::net::Connector::connect(&TcpConnector, addr).await.expect("connect");
        server.await.expect("server");
        let mut buf = [0u8; 4];
        let err = c.async_read_exact(&mut buf).await.expect_err("the peer sent 2 bytes and closed");
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
    }
}
