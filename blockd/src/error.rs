//! The block daemon's one error type.
//!
//! Owns: [`BlockdError`], with a structured variant per failure, and its mapping to the
//! chunk-frame [`Status`] a client sees. Must never: carry a catch-all `String` variant for
//! failures that have a structure, or leak file contents into messages.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use proto::ChunkHash;
use proto::chunk_frame::Status;

#[derive(Debug, thiserror::Error)]
pub enum BlockdError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("chunk index: {0}")]
    Index(#[from] redb::Error),
    #[error("chunk index {path} has schema version {found:?}; this build understands {supported}")]
    IndexSchema { path: PathBuf, found: Option<u64>, supported: u64 },
    #[error("segment {path} has format version {found}; this build understands {supported}")]
    SegmentVersion { path: PathBuf, found: u16, supported: u16 },
    #[error("segment {path} has a malformed file header ({what})")]
    SegmentHeader { path: PathBuf, what: &'static str },
    #[error(
        "segment {path} holds a record of format version {found} at offset {offset}; this build understands {supported}"
    )]
    RecordVersion { path: PathBuf, offset: u64, found: u8, supported: u8 },
    #[error("segment {id} is listed in the index but its file is missing")]
    SegmentMissing { id: u32 },
    #[error("index entry for chunk {hash} is invalid ({what})")]
    IndexEntry { hash: ChunkHash, what: &'static str },
    #[error("chunk {hash} not found")]
    NotFound { hash: ChunkHash },
    #[error("chunk {hash} in segment {segment} at offset {offset} failed its hash check")]
    Corrupt { hash: ChunkHash, segment: u32, offset: u64 },
    #[error("disk has {free} bytes free, below the reserve of {min} bytes")]
    NoSpace { free: u64, min: u64 },
    #[error("chunk bytes do not match their name {hash}")]
    HashMismatch { hash: ChunkHash },
    #[error("chunk of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge { len: usize, limit: usize },
    #[error("the segment writer stopped after an earlier failure: {cause}")]
    WriterFailed { cause: String },
    #[error("the chunk store is closed")]
    Closed,
    #[error("TLS setup: {0}")]
    Tls(#[from] cluster::tls::TlsError),
    #[error("heartbeat setup: {0}")]
    Heartbeat(#[from] crate::heartbeat::HeartbeatError),
    #[error("repair setup: {0}")]
    Repair(#[from] Box<crate::repair::RepairError>),
    #[error("QUIC setup: {0}")]
    QuicCrypto(#[from] quinn::crypto::rustls::NoInitialCipherSuite),
    #[error("binding the QUIC endpoint on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    // S3 tier (issue 5)
    #[error("S3 tier: {0}")]
    Tier(#[from] crate::s3::TierError),
    #[error("a blockd task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl BlockdError {
    /// Wraps an I/O error with the operation and file it concerns.
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> BlockdError {
        let path = path.into();
        move |source| BlockdError::Io { op, path, source }
    }

    /// The chunk-frame status a client is told for this error.
    pub fn status(&self) -> Status {
        match self {
            BlockdError::NotFound { .. } => Status::NotFound,
            BlockdError::Corrupt { .. } => Status::Corrupt,
            BlockdError::NoSpace { .. } => Status::NoSpace,
            BlockdError::Tier(crate::s3::TierError::Backlogged { .. }) => Status::NoSpace,
            // S3 or metad out of reach: the chunk is there, just not now.
            BlockdError::Tier(t) if t.is_transient() => Status::Unavailable,
            BlockdError::HashMismatch { .. } | BlockdError::TooLarge { .. } => Status::BadRequest,
            _ => Status::Internal,
        }
    }
}

/// Converts any redb error into [`BlockdError::Index`].
pub(crate) fn index_err(e: impl Into<redb::Error>) -> BlockdError {
    BlockdError::Index(e.into())
}
