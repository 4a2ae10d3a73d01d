//! gateway
pub mod mount;
pub mod nfs3;
pub mod rpc;
pub mod server;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod vfs;
pub mod xdr;

pub use server::{NfsServerOptions, serve};
