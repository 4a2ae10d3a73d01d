//! An S3-compatible server in the test process (s3s + s3s-fs over a folder, on a loopback
//! port, static credentials), for tests of the S3 tier here and end to end.
//!
//! Stopping it closes its listener and every open connection, so "S3 down" is real;
//! starting it again on the same address over the same folder brings the bucket back.
//! Sets TCP_NODELAY on accepted sockets (without it every GET stalls ~40 ms).
//! Must never be used outside tests (feature `testing`).

use std::net::SocketAddr;
use std::path::Path;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use tokio_util::sync::CancellationToken;

/// Access key the server accepts.
pub const AK: &str = "tessera-test";
/// Secret key the server accepts.
pub const SK: &str = "tessera-test-secret";
/// The bucket it serves (a folder under its root).
pub const BUCKET: &str = "packs-bucket";

pub struct S3Server {
    pub addr: SocketAddr,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl S3Server {
    pub async fn start(root: &Path, addr: SocketAddr) -> S3Server {
        // Test-only code: a failure to set up the server is the test's failure.
        std::fs::create_dir_all(root.join(BUCKET)).expect("bucket dir");
        let fs = s3s_fs::FileSystem::new(root).expect("s3s-fs");
        let mut b = s3s::service::S3ServiceBuilder::new(fs);
        b.set_auth(s3s::auth::SimpleAuth::from_single(AK, SK));
        let service = b.build();
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind S3");
        let addr = listener.local_addr().expect("addr");
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        let task = tokio::spawn(async move {
            let http = ConnBuilder::new(TokioExecutor::new());
            let conns = tokio_util::task::TaskTracker::new();
            loop {
                let socket = tokio::select! {
                    () = stop.cancelled() => break,
                    r = listener.accept() => match r { Ok((s, _)) => s, Err(_) => continue },
                };
                // Without it every GET stalls ~40 ms (Nagle + delayed ACK).
                let _ = socket.set_nodelay(true);
                let conn = http.serve_connection(TokioIo::new(socket), service.clone()).into_owned();
                let stop = stop.clone();
                conns.spawn(async move {
                    tokio::select! {
                        () = stop.cancelled() => {}
                        _ = conn => {}
                    }
                });
            }
            drop(listener);
            conns.close();
            conns.wait().await;
        });
        S3Server { addr, cancel, task }
    }

    /// Closes the listener and every connection; returns once the port is free.
    pub async fn stop(self) -> SocketAddr {
        self.cancel.cancel();
        self.task.await.expect("S3 server task");
        self.addr
    }
}
