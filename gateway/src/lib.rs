//! The gateway: protocol front ends and the file I/O engine.
//!
//! Owns: ONC RPC (`rpc`, `xdr`, incl. the duplicate request cache), NFSv3 and MOUNTv3
//! (`nfs3`, `mount`), export options and their enforcement (`exports`: client lists,
//! read-only, squashing), the embedded portmapper (`portmap`), the TCP servers (`server`),
//! the seam between protocols and the engine (`vfs`), and the engine itself (`engine`:
//! write buffering, FastCDC chunking, BLAKE3, the chunk cache, and the clients of metad
//! and blockd).
//!
//! The duplicate request cache holds replies of non-idempotent calls for retransmissions:
//! volatile by design (after a restart a retransmission runs again, as with knfsd).
//!
//! Must never: open redb or a segment, or hold state a client cannot recover — handles,
//! the namespace and locks live in metad (invariant 1). Protocol handlers translate and
//! delegate to `Vfs`; they never talk to metad or blockd themselves.

pub mod engine;
#[cfg(test)]
mod fuzz_tests;
pub mod exports;
pub mod mount;
pub mod nfs3;
pub mod portmap;
pub mod proxy_header;
pub mod rpc;
pub mod server;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod vfs;
pub mod xdr;

pub use server::{NfsServerOptions, serve};
