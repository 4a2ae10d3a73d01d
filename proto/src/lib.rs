//! The wire contract between Tessera's daemons, and its codecs.
//!
//! Owns: the metad gRPC service (`pb`, generated from `proto/meta.proto`), the QUIC chunk
//! frames (`chunk_frame`), the NFS file-handle encoding (`handle`), the filesystem error
//! vocabulary shared by every daemon (`error`), the chunk name type (`chunk`) and the syntax
//! of a share's allowed-client entries (`export`).
//!
//! Must never: hold business logic, open sockets or files, or panic on any input. Every
//! decoder here is a pure function over bytes that checks lengths before allocating.

pub mod chunk;
pub mod chunk_frame;
pub mod error;
pub mod export;
pub mod handle;

/// Generated protobuf messages and tonic services (package `tessera.meta.v1`).
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("tessera.meta.v1");
}

pub use chunk::ChunkHash;
pub use error::FsError;
pub use handle::FileHandle;
