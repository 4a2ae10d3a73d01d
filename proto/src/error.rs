//! The filesystem error vocabulary every daemon speaks, and how it crosses gRPC.
//!
//! Each crate keeps its own error enum; what must cross a process boundary is turned into
//! an `FsError`. On the wire an `FsError` is a `tonic::Status` whose `x-tessera-error`
//! metadata holds the stable code from [`FsError::code`] (documented in `docs/errors.md`).
//! Each protocol front end maps `FsError` to its own status in exactly one table
//! (`gateway::nfs3::status`), so adding a variant here breaks the build until it is mapped.

use tonic::{Code, Status};

/// Metadata key carrying the stable Tessera error code on a gRPC status.
pub const ERROR_CODE_KEY: &str = "x-tessera-error";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FsError {
    #[error("no such file or directory")]
    NotFound,
    #[error("file exists")]
    Exists,
    #[error("not a directory")]
    NotDir,
    #[error("is a directory")]
    IsDir,
    #[error("directory not empty")]
    NotEmpty,
    #[error("stale file handle")]
    Stale,
    #[error("malformed file handle")]
    BadHandle,
    #[error("name too long")]
    NameTooLong,
    #[error("invalid argument: {0}")]
    Invalid(String),
    #[error("permission denied")]
    Access,
    #[error("operation not permitted")]
    Perm,
    #[error("read-only file system")]
    ReadOnly,
    #[error("file too large")]
    TooBig,
    #[error("no space left on device")]
    NoSpace,
    #[error("not supported")]
    NotSupported,
    #[error("I/O error: {0}")]
    Io(String),
    #[error("cross-device link or rename")]
    CrossDevice,
    #[error("too many links")]
    TooManyLinks,
    #[error("the guard did not match: the object changed")]
    NotSync,
    #[error("the READDIR cookie or its verifier is no longer valid")]
    BadCookie,
    /// A commit made under a file's write lease after another gateway took it: what this
    /// gateway buffered for the file may be older than what the other one has written.
    #[error("fenced: another gateway holds the file's write lease now")]
    Fenced,
    #[error("this metad is not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<u64> },
    #[error("service unavailable: {0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl FsError {
    /// A stable code an operator can search for; never reuse or rename one.
    pub fn code(&self) -> &'static str {
        match self {
            FsError::NotFound => "TES-NOENT",
            FsError::Exists => "TES-EXIST",
            FsError::NotDir => "TES-NOTDIR",
            FsError::IsDir => "TES-ISDIR",
            FsError::NotEmpty => "TES-NOTEMPTY",
            FsError::Stale => "TES-STALE",
            FsError::BadHandle => "TES-BADHANDLE",
            FsError::NameTooLong => "TES-NAMETOOLONG",
            FsError::Invalid(_) => "TES-INVAL",
            FsError::Access => "TES-ACCES",
            FsError::Perm => "TES-PERM",
            FsError::ReadOnly => "TES-ROFS",
            FsError::TooBig => "TES-FBIG",
            FsError::NoSpace => "TES-NOSPC",
            FsError::NotSupported => "TES-NOTSUPP",
            FsError::Io(_) => "TES-IO",
            FsError::CrossDevice => "TES-XDEV",
            FsError::TooManyLinks => "TES-MLINK",
            FsError::NotSync => "TES-NOTSYNC",
            FsError::BadCookie => "TES-BADCOOKIE",
            FsError::Fenced => "TES-FENCED",
            FsError::NotLeader { .. } => "TES-NOTLEADER",
            FsError::Unavailable(_) => "TES-UNAVAIL",
            FsError::Internal(_) => "TES-INTERNAL",
        }
    }

    fn grpc_code(&self) -> Code {
        match self {
            FsError::NotFound | FsError::Stale => Code::NotFound,
            FsError::Exists => Code::AlreadyExists,
            FsError::NotDir
            | FsError::IsDir
            | FsError::NotEmpty
            | FsError::BadHandle
            | FsError::NameTooLong
            | FsError::CrossDevice
            | FsError::TooManyLinks
            | FsError::BadCookie
            | FsError::Invalid(_) => Code::InvalidArgument,
            FsError::NotSync => Code::FailedPrecondition,
            FsError::Fenced => Code::Aborted,
            FsError::Access | FsError::Perm | FsError::ReadOnly => Code::PermissionDenied,
            FsError::TooBig | FsError::NoSpace => Code::ResourceExhausted,
            FsError::NotSupported => Code::Unimplemented,
            FsError::NotLeader { .. } | FsError::Unavailable(_) => Code::Unavailable,
            FsError::Io(_) | FsError::Internal(_) => Code::Internal,
        }
    }

    /// The gRPC status that carries this error.
    pub fn to_status(&self) -> Status {
        let mut status = Status::new(self.grpc_code(), self.to_string());
        if let Ok(v) = self.code().parse() {
            status.metadata_mut().insert(ERROR_CODE_KEY, v);
        }
        if let FsError::NotLeader { leader: Some(id) } = self
            && let Ok(v) = id.to_string().parse() {
                status.metadata_mut().insert("x-tessera-leader", v);
            }
        status
    }

    /// Reads an error back from a gRPC status. A status without a Tessera code (transport
    /// failure, a peer of another version) becomes `Unavailable` or `Internal`: a status the
    /// client made itself from a broken connection (code `Unknown` with the transport error
    /// as its source, e.g. a connection reset mid-call when a node is killed) is
    /// `Unavailable` — the call may or may not have arrived, as with a timeout, and is
    /// retried (mutations carry request ids, so metad answers a repeat from its dedup table).
    pub fn from_status(status: &Status) -> FsError {
        let code = status.metadata().get(ERROR_CODE_KEY).and_then(|v| v.to_str().ok());
        let msg = || status.message().to_string();
        match code {
            Some("TES-NOENT") => FsError::NotFound,
            Some("TES-EXIST") => FsError::Exists,
            Some("TES-NOTDIR") => FsError::NotDir,
            Some("TES-ISDIR") => FsError::IsDir,
            Some("TES-NOTEMPTY") => FsError::NotEmpty,
            Some("TES-STALE") => FsError::Stale,
            Some("TES-BADHANDLE") => FsError::BadHandle,
            Some("TES-NAMETOOLONG") => FsError::NameTooLong,
            Some("TES-INVAL") => FsError::Invalid(msg()),
            Some("TES-ACCES") => FsError::Access,
            Some("TES-PERM") => FsError::Perm,
            Some("TES-ROFS") => FsError::ReadOnly,
            Some("TES-FBIG") => FsError::TooBig,
            Some("TES-NOSPC") => FsError::NoSpace,
            Some("TES-NOTSUPP") => FsError::NotSupported,
            Some("TES-IO") => FsError::Io(msg()),
            Some("TES-XDEV") => FsError::CrossDevice,
            Some("TES-MLINK") => FsError::TooManyLinks,
            Some("TES-NOTSYNC") => FsError::NotSync,
            Some("TES-BADCOOKIE") => FsError::BadCookie,
            Some("TES-FENCED") => FsError::Fenced,
            Some("TES-NOTLEADER") => FsError::NotLeader {
                leader: status
                    .metadata()
                    .get("x-tessera-leader")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|s| s.parse().ok()),
            },
            Some("TES-UNAVAIL") => FsError::Unavailable(msg()),
            Some("TES-INTERNAL") => FsError::Internal(msg()),
            _ => match status.code() {
                Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => FsError::Unavailable(msg()),
                Code::Unknown if std::error::Error::source(status).is_some() => {
                    FsError::Unavailable(format!("transport: {}", status.message()))
                }
                _ => FsError::Internal(format!("{:?}: {}", status.code(), status.message())),
            },
        }
    }
}

impl From<FsError> for Status {
    fn from(e: FsError) -> Status {
        e.to_status()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection broken mid-call is retried like a timeout; an `Unknown` answered by a
    /// server (no source) is not.
    #[test]
    fn a_broken_connection_is_unavailable_but_an_unknown_answer_is_internal() {
        let broken = Status::from_error(Box::new(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset")));
        assert_eq!(broken.code(), Code::Unknown);
        assert!(matches!(FsError::from_status(&broken), FsError::Unavailable(_)), "{broken:?}");
        let answered = Status::new(Code::Unknown, "transport error");
        assert!(matches!(FsError::from_status(&answered), FsError::Internal(_)));
    }

    #[test]
    fn every_error_survives_grpc() {
        let all = [
            FsError::NotFound,
            FsError::Exists,
            FsError::NotDir,
            FsError::IsDir,
            FsError::NotEmpty,
            FsError::Stale,
            FsError::BadHandle,
            FsError::NameTooLong,
            FsError::Invalid("bad name".into()),
            FsError::Access,
            FsError::Perm,
            FsError::ReadOnly,
            FsError::TooBig,
            FsError::NoSpace,
            FsError::NotSupported,
            FsError::CrossDevice,
            FsError::TooManyLinks,
            FsError::NotSync,
            FsError::BadCookie,
            FsError::Fenced,
            FsError::NotLeader { leader: Some(3) },
            FsError::NotLeader { leader: None },
            FsError::Internal("boom".into()),
        ];
        for e in all {
            let back = FsError::from_status(&e.to_status());
            match (&e, &back) {
                // Messages carry the Display text, so compare by code for the ones with text.
                (FsError::Invalid(_), FsError::Invalid(_)) | (FsError::Internal(_), FsError::Internal(_)) => {}
                _ => assert_eq!(back, e),
            }
        }
    }

    #[test]
    fn foreign_status_is_not_mistaken_for_a_filesystem_answer() {
        let s = Status::unavailable("connection refused");
        assert!(matches!(FsError::from_status(&s), FsError::Unavailable(_)));
        let s = Status::not_found("route");
        assert!(matches!(FsError::from_status(&s), FsError::Internal(_)));
    }
}
