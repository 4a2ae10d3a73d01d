//! Errors of setting the engine up (`EngineError`).
//!
//! Owns only setup failures: bad options, an unparsable metad endpoint, TLS or socket
//! setup. Must never be used for filesystem operations: those answer with `proto::FsError`,
//! which the protocol front ends map to their status codes.

use std::net::SocketAddr;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("invalid chunk sizes (min {min}, avg {avg}, max {max}): {reason}")]
    ChunkSizes { min: u32, avg: u32, max: u32, reason: &'static str },
    #[error("write buffer budget of {bytes} bytes is invalid: {reason}")]
    WriteBuffer { bytes: u64, reason: &'static str },
    #[error("no metad endpoint configured")]
    NoMetadEndpoint,
    #[error("metad endpoint {endpoint:?} is invalid: {source}")]
    MetadEndpoint { endpoint: String, source: cluster::tls::TlsError },
    #[error("TLS configuration for the block daemon link: {0}")]
    Tls(#[from] cluster::tls::TlsError),
    #[error("QUIC cannot use this TLS configuration: {reason}")]
    QuicTls { reason: String },
    #[error("the engine must be created inside a tokio runtime")]
    NoRuntime,
    #[error("binding the QUIC client socket on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
}
