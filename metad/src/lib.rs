//! metad: Tessera's metadata service.
//!
//! An openraft Raft group whose log *and* state machine live in one redb file, serving the
//! `Meta`, `Raft` and `Control` gRPC services of `proto/meta.proto`. Every mutation of the
//! namespace is one Raft command ([`command::Command`]); reads are linearizable through the
//! leader's read index.
//!
//! Module map (each module's doc says what it owns and must never do):
//! - [`node`]: [`Metad`] (open / start + wait_ready / read / write / shutdown), [`MetadOptions`],
//!   [`Bootstrap`], [`RaftTuning`], [`Liveness`] (when a block daemon is declared dead).
//! - [`command`]: the Raft command enum, its replies, and the openraft type config.
//! - [`fsm`]: namespace rules: applying commands ([`fsm::apply`]) and answering queries
//!   ([`fsm::query`]) over the tables.
//! - [`extents`], [`validate`], [`model`]: pure range arithmetic, input checks and limits,
//!   record codecs.
//! - [`store`]: the redb tables and schema version; [`log_store`] and [`state_machine`]:
//!   openraft's storage traits over them; [`blocking`]: redb work off the async runtime.
//! - [`network`]: openraft's network over the gRPC `Raft` service (snapshots streamed from
//!   [`snapshot_file`]s); [`forward`]: a follower's link to the leader for forwarded writes and
//!   read indexes; [`membership`]: adding and removing nodes; [`service`]: the gRPC adapters
//!   (`Meta`, `Raft`, `Control`) and protobuf conversions.
//!
//! Architecture invariants: metad never knows which protocol (NFS/SMB) asked; apply never reads
//! a clock; nothing assumes a single voter.

// Tests may unwrap (workspace lint note); input paths may not.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod blocking;
pub mod command;
pub mod error;
pub mod extents;
pub mod forward;
pub mod fsm;
pub mod log_store;
pub mod membership;
pub mod model;
pub mod network;
pub mod node;
pub mod service;
pub mod snapshot_file;
pub mod state_machine;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;
pub mod validate;

pub use error::MetadError;
pub use node::{Bootstrap, Liveness, Metad, MetadOptions, RaftTuning};

#[cfg(test)]
mod storage_suite;
