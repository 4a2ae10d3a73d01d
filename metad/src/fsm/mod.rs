//! The filesystem state machine: namespace rules over the redb tables.
//!
//! Owns: what each [`crate::command::Command`] does to the tables ([`apply`], with the
//! operations in `create`, `unlink` and `attrs`, and request-id dedup in [`dedup`]), how
//! queries read them ([`query`]), the data plane's bookkeeping (`dataplane`: block daemon
//! heartbeats, pack locations, share replication factors), the permission rules both share
//! ([`perm`]) and the handle-liveness rule ([`check_live`]).
//! Must never: read a clock, a random source or anything outside the command and the tables
//! (apply must be deterministic), begin or commit transactions (callers do), or know gRPC.

pub mod apply;
mod attrs;
mod create;
mod dataplane;
pub mod dedup;
pub mod perm;
pub mod query;
mod unlink;

use crate::command::{ApplyError, NodeKey};
use crate::model::Inode;

/// A handle names a live inode only if the inode exists, belongs to the handle's share and has
/// the handle's generation; anything else is stale (invariant 2).
pub fn check_live(inode: Option<Inode>, key: &NodeKey) -> Result<Inode, ApplyError> {
    match inode {
        Some(i) if i.generation == key.generation && i.share_id == key.share_id => Ok(i),
        _ => Err(ApplyError::Stale),
    }
}

#[cfg(test)]
mod tests;
