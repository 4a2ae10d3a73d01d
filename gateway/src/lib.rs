//! gateway
pub mod vfs;
pub mod engine;
