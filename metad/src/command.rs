//! The Raft command vocabulary: one serde enum, one variant per mutation, and its replies.
//!
//! Owns: [`Command`] (what a proposer puts in the log), [`Reply`]/[`ApplyError`] (what apply
//! answers) and the openraft type configuration [`TypeConfig`].
//! Must never: read clocks or randomness when applied. Everything apply needs to be
//! deterministic (the time, the verifier) is stamped into the command by the proposer, so
//! every replica and every replay computes the same state.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::model::{AttrOut, Extent, FileKind};

/// The identity a client names an inode by (what a file handle encodes).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeKey {
    pub share_id: u64,
    pub ino: u64,
    pub generation: u64,
}

/// How a create treats an existing name (NFSv3 createhow3).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum CreateMode {
    /// An existing regular file is returned as is.
    Unchecked,
    /// An existing name is an error.
    Guarded,
    /// Exactly-once create: the verifier is stored on the inode, so a retransmission with the
    /// same verifier returns the same inode.
    Exclusive([u8; 8]),
}

/// One mutation of the namespace = one Raft log entry.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Ensures a share with this export path exists (with a root directory).
    CreateShare { name: String, export_path: String, now_ns: i64 },
    /// Creates a regular file or a directory in `dir`.
    Create {
        dir: NodeKey,
        name: Vec<u8>,
        kind: FileKind,
        mode: u32,
        uid: u32,
        gid: u32,
        how: CreateMode,
        now_ns: i64,
    },
    /// Removes a name: a file (`directory == false`) or an empty directory.
    Remove { dir: NodeKey, name: Vec<u8>, directory: bool, now_ns: i64 },
    /// Changes attributes; a size change truncates (dropping/clipping extents) or grows sparsely.
    SetAttr {
        node: NodeKey,
        size: Option<u64>,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        atime_ns: Option<i64>,
        mtime_ns: Option<i64>,
        now_ns: i64,
    },
    /// Replaces everything in `[range_start, range_end)` by `extents`.
    CommitExtents { node: NodeKey, range_start: u64, range_end: u64, extents: Vec<Extent>, now_ns: i64 },
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::CreateShare { export_path, .. } => write!(f, "CreateShare({export_path})"),
            Command::Create { dir, name, kind, .. } => {
                write!(f, "Create({}/{}, {kind:?})", dir.ino, String::from_utf8_lossy(name))
            }
            Command::Remove { dir, name, directory, .. } => {
                write!(f, "Remove({}/{}, dir={directory})", dir.ino, String::from_utf8_lossy(name))
            }
            Command::SetAttr { node, size, .. } => write!(f, "SetAttr({}, size={size:?})", node.ino),
            Command::CommitExtents { node, range_start, range_end, extents, .. } => write!(
                f,
                "CommitExtents({}, [{range_start}, {range_end}), {} extents)",
                node.ino,
                extents.len()
            ),
        }
    }
}

/// Pre- and post-operation attributes of a directory.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Wcc {
    pub before: AttrOut,
    pub after: AttrOut,
}

/// A successful apply.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// Blank and membership entries.
    Nothing,
    /// The share (existing or created) and its root.
    Share { share_id: u64, root: AttrOut },
    Created { attr: AttrOut, dir: Wcc },
    Removed { dir: Wcc },
    /// SetAttr / CommitExtents.
    Changed { before: AttrOut, after: AttrOut },
}

/// A command refused by the namespace rules. Deterministic: every replica refuses it alike,
/// and a refused command changes nothing.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
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
    #[error("name too long")]
    NameTooLong,
    #[error("invalid argument: {0}")]
    Invalid(String),
    #[error("file too large")]
    TooBig,
}

impl From<ApplyError> for proto::FsError {
    fn from(e: ApplyError) -> Self {
        use proto::FsError as F;
        match e {
            ApplyError::NotFound => F::NotFound,
            ApplyError::Exists => F::Exists,
            ApplyError::NotDir => F::NotDir,
            ApplyError::IsDir => F::IsDir,
            ApplyError::NotEmpty => F::NotEmpty,
            ApplyError::Stale => F::Stale,
            ApplyError::NameTooLong => F::NameTooLong,
            ApplyError::Invalid(m) => F::Invalid(m),
            ApplyError::TooBig => F::TooBig,
        }
    }
}

/// What apply returns for each entry.
pub type CommandResult = Result<Reply, ApplyError>;

openraft::declare_raft_types!(
    /// openraft type configuration for metad.
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = u64,
        Node = openraft::BasicNode,
);

/// Shorthands for openraft types under [`TypeConfig`].
pub mod alias {
    use super::TypeConfig;
    pub type Raft = openraft::Raft<TypeConfig, crate::state_machine::StateMachineStore>;
    pub type Entry = openraft::type_config::alias::EntryOf<TypeConfig>;
    pub type LogId = openraft::type_config::alias::LogIdOf<TypeConfig>;
    pub type Vote = openraft::type_config::alias::VoteOf<TypeConfig>;
    pub type StoredMembership = openraft::type_config::alias::StoredMembershipOf<TypeConfig>;
    pub type SnapshotMeta = openraft::type_config::alias::SnapshotMetaOf<TypeConfig>;
    pub type Snapshot = openraft::type_config::alias::SnapshotOf<TypeConfig, Vec<u8>>;
}
