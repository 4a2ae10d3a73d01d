//! Chunk placement for the engine: the cluster's one rendezvous function.
//!
//! Every gateway and block daemon must compute the same replica set for a chunk, so the
//! engine only re-exports `cluster::placement` (BLAKE3-scored highest-random-weight hashing;
//! its property tests live there). Must never grow a placement rule of its own.

pub use cluster::placement::{default_rf, replicas};
