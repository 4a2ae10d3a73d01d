//! The protocol front end's error type: everything that can be wrong with bytes a client sent.
//!
//! Owns: `ProtocolError`, shared by the XDR, record-marking, RPC and NFS/MOUNT decoders.
//! Filesystem failures are not here: they are `proto::FsError` and become an `nfsstat3`
//! through `nfs3::status`. Must never: carry a free-form message where a field will do.

/// Malformed or oversized protocol input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("input truncated: needed {needed} bytes, {remaining} remain")]
    Truncated { needed: usize, remaining: usize },
    #[error("length {len} exceeds the limit of {max}")]
    TooLong { len: usize, max: usize },
    #[error("invalid {what} discriminant {value}")]
    BadDiscriminant { what: &'static str, value: u32 },
    #[error("RPC record of at least {len} bytes exceeds the limit of {max}")]
    RecordTooLarge { len: usize, max: usize },
}
