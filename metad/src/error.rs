//! The crate's one error type, and its single mapping onto the filesystem vocabulary.
//!
//! Owns: [`MetadError`] (everything that can go wrong inside metad: storage, Raft, the on-disk
//! schema, corrupt records) and [`MetadError::to_fs_error`], the only place where an internal
//! failure becomes an [`FsError`] that crosses the gRPC boundary.
//! Must never: leak storage internals as a filesystem answer other than `Io`/`Internal`, or
//! carry free-form messages where a structured field fits.

use proto::FsError;

/// Everything that can fail inside metad.
#[derive(Debug, thiserror::Error)]
pub enum MetadError {
    /// The redb store failed (I/O, corruption detected by redb, transaction errors).
    #[error("metadata store: {0}")]
    Storage(#[from] redb::Error),
    /// The data directory could not be created or opened.
    #[error("data directory {path}: {source}")]
    DataDir { path: std::path::PathBuf, source: std::io::Error },
    /// The store was written by a schema version this build does not understand.
    #[error("metadata store {path} has schema version {found}, this build understands {supported}")]
    SchemaVersion { path: std::path::PathBuf, found: u64, supported: u64 },
    /// A record in the store could not be decoded.
    #[error("corrupt {what} record: {reason}")]
    Corrupt { what: &'static str, reason: String },
    /// A Raft log entry or snapshot could not be (de)serialized.
    #[error("encoding {what}: {source}")]
    Codec { what: &'static str, source: serde_json::Error },
    /// The Raft node failed (stopped, fatal storage error, ...).
    #[error("raft: {0}")]
    Raft(String),
    /// The Raft configuration is invalid.
    #[error("raft config: {0}")]
    Config(#[from] openraft::ConfigError),
    /// This node is not the leader.
    #[error("not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<u64> },
    /// Forwarding a request to the leader failed in transit; for a write its outcome is
    /// unknown, so the client retries (with the same request id).
    #[error("forwarding to the leader (node {leader}): {reason}")]
    Forward { leader: u64, reason: String },
    /// A deadline passed while waiting for a condition (leadership, apply).
    #[error("timed out waiting for {what}")]
    Timeout { what: &'static str },
    /// A blocking storage task was cancelled or panicked.
    #[error("storage task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// A filesystem-level refusal computed by metad (validation, namespace rules).
    #[error(transparent)]
    Fs(#[from] FsError),
}

macro_rules! redb_error_from {
    ($($t:ty),*) => {$(
        impl From<$t> for MetadError {
            fn from(e: $t) -> Self {
                MetadError::Storage(redb::Error::from(e))
            }
        }
    )*};
}
redb_error_from!(
    redb::StorageError,
    redb::TableError,
    redb::TransactionError,
    redb::CommitError,
    redb::DatabaseError,
    redb::SetDurabilityError
);

impl MetadError {
    /// Maps an internal failure onto the filesystem vocabulary (the only such mapping).
    pub fn to_fs_error(&self) -> FsError {
        match self {
            MetadError::Fs(e) => e.clone(),
            MetadError::NotLeader { leader } => FsError::NotLeader { leader: *leader },
            MetadError::Storage(e) => FsError::Io(e.to_string()),
            MetadError::DataDir { .. } => FsError::Io(self.to_string()),
            MetadError::Timeout { .. } => FsError::Unavailable(self.to_string()),
            MetadError::Raft(_) | MetadError::Forward { .. } => FsError::Unavailable(self.to_string()),
            MetadError::SchemaVersion { .. }
            | MetadError::Corrupt { .. }
            | MetadError::Codec { .. }
            | MetadError::Config(_)
            | MetadError::Task(_) => FsError::Internal(self.to_string()),
        }
    }

    /// The gRPC status carrying [`Self::to_fs_error`].
    pub fn to_status(&self) -> tonic::Status {
        self.to_fs_error().to_status()
    }

    /// Wraps this error for openraft's storage traits, which speak `std::io::Error`.
    pub fn into_io(self) -> std::io::Error {
        std::io::Error::other(self)
    }
}

/// Shorthand used across the crate.
pub type Result<T, E = MetadError> = std::result::Result<T, E>;
