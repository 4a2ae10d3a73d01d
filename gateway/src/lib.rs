//! gateway
pub mod vfs;
