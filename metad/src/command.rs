//! The Raft command vocabulary: one serde enum, one variant per mutation, and its replies.
//!
//! Owns: [`Command`] (what a proposer puts in the log), [`Op`] (the namespace mutations, each
//! carried with the caller's [`Cred`], its optional [`RequestId`] and the proposer's time),
//! [`Reply`]/[`ApplyError`] (what apply answers) and the openraft type configuration
//! [`TypeConfig`].
//! Must never: read clocks or randomness when applied. Everything apply needs to be
//! deterministic (the time, the verifier, the caller) is stamped into the command by the
//! proposer, so every replica and every replay computes the same state.
//!
//! Replies and refusals are also persisted (the request-id table remembers them for
//! retries), so their serde shape is covered by the store's schema version.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::model::{AttrOut, Cred, DaemonRec, Extent, FileKind, PackLoc, Squash};

/// The identity a client names an inode by (what a file handle encodes).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeKey {
    pub share_id: u64,
    pub ino: u64,
    pub generation: u64,
}

/// Identifies one client request across retries (see `RequestId` in meta.proto).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestId {
    pub client_id: u64,
    pub seq: u64,
}

/// How a create treats an existing name (NFSv3 createhow3).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum CreateMode {
    /// An existing regular file is returned as is (truncated/extended to `size` if given).
    Unchecked,
    /// An existing name is an error.
    Guarded,
    /// Exactly-once create: the verifier is stored on the inode, so a retransmission with the
    /// same verifier returns the same inode.
    Exclusive([u8; 8]),
}

/// How a SetAttr changes one of the times.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TimeSet {
    #[default]
    Keep,
    /// The proposer's time (the command's `now_ns`).
    Now,
    /// A time chosen by the client, in ns since the epoch.
    At(i64),
}

/// Share options a `CreateShare` or `UpdateShare` sets; `None` leaves one as it is.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct ShareChanges {
    pub replication_factor: Option<u32>,
    pub read_only: Option<bool>,
    /// The whole list (empty = every client).
    pub allowed_clients: Option<Vec<String>>,
    pub squash: Option<Squash>,
    pub anon_uid: Option<u32>,
    pub anon_gid: Option<u32>,
}

impl ShareChanges {
    /// Nothing to change.
    pub fn is_empty(&self) -> bool {
        *self == ShareChanges::default()
    }
}

/// One mutation of the namespace = one Raft log entry.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Ensures a share with this export path exists (with a root directory), then applies
    /// `changes` to it (new or existing). Entries written before schema 4 have no changes.
    CreateShare {
        name: String,
        export_path: String,
        now_ns: i64,
        #[serde(default)]
        changes: ShareChanges,
    },
    /// Changes the options of the share exported at `export_path` (all or nothing).
    UpdateShare { export_path: String, changes: ShareChanges },
    /// A filesystem operation on behalf of `cred`. With `request` set, a second command with
    /// the same id answers the first one's reply without applying again.
    Fs { cred: Cred, request: Option<RequestId>, now_ns: i64, op: Op },
    /// Registers or refreshes block daemon `id` (the proposer stamps
    /// `daemon.last_heartbeat_ms`).
    Heartbeat { id: u64, daemon: DaemonRec },
    /// Records where chunks live in the S3 tier (a later location of a hash replaces an
    /// earlier one).
    RecordPacks { locations: Vec<PackLoc> },
    /// Sets the replication factor of the share exported at `export_path` (0 = the default).
    SetShareReplication { export_path: String, replication_factor: u32 },
}

/// The filesystem mutations.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Creates a regular file or a directory in `dir`.
    Create {
        dir: NodeKey,
        name: Vec<u8>,
        kind: FileKind,
        mode: u32,
        uid: u32,
        gid: u32,
        how: CreateMode,
        /// UNCHECKED on an existing (or new) regular file: truncate/extend to this size.
        size: Option<u64>,
        /// A gateway instance (non-zero) that gets a new regular file's write lease at
        /// epoch 1 (schema 5; older entries read as 0: none).
        #[serde(default)]
        lease_for: u64,
    },
    /// Creates a FIFO, socket or device node.
    Mknod { dir: NodeKey, name: Vec<u8>, kind: FileKind, mode: u32, rdev: (u32, u32) },
    /// Creates a symbolic link.
    Symlink { dir: NodeKey, name: Vec<u8>, target: Vec<u8>, mode: u32 },
    /// Adds a name for an existing non-directory.
    Link { node: NodeKey, dir: NodeKey, name: Vec<u8> },
    /// Moves a name, atomically replacing a compatible target.
    Rename { from_dir: NodeKey, from_name: Vec<u8>, to_dir: NodeKey, to_name: Vec<u8> },
    /// Removes a name: a non-directory (`directory == false`) or an empty directory.
    Remove { dir: NodeKey, name: Vec<u8>, directory: bool },
    /// Changes attributes; a size change truncates (dropping/clipping extents) or grows sparsely.
    SetAttr {
        node: NodeKey,
        size: Option<u64>,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        atime: TimeSet,
        mtime: TimeSet,
        /// NFS guard: apply only if the ctime still equals this.
        guard_ctime_ns: Option<i64>,
        /// On a size change, the file's write lease: `Some(instance)` (non-zero) takes it
        /// for that gateway instance (a new epoch unless it holds it already), so a
        /// gateway that buffered writes before the truncation cannot commit them over it;
        /// `Some(0)` ends any lease. `None` (entries from before this field) leaves the
        /// lease as it is.
        #[serde(default)]
        lease_for: Option<u64>,
    },
    /// Replaces everything in `[range_start, range_end)` by `extents`. With `lease`
    /// (instance, epoch): refused as [`ApplyError::Fenced`] unless that is still the file's
    /// lease; without: ends any lease (epoch + 1, nobody holds it) — schema 5, older entries
    /// read as without.
    CommitExtents {
        node: NodeKey,
        range_start: u64,
        range_end: u64,
        extents: Vec<Extent>,
        #[serde(default)]
        lease: Option<(u64, u64)>,
    },
    /// Gives a regular file's write lease to gateway `instance` (epoch + 1), or leaves it
    /// as it is if that instance holds it (schema 5).
    AcquireWriteLease { node: NodeKey, instance: u64 },
}

fn lossy(name: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(name)
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Create { dir, name, kind, .. } => write!(f, "Create({}/{}, {kind:?})", dir.ino, lossy(name)),
            Op::Mknod { dir, name, kind, .. } => write!(f, "Mknod({}/{}, {kind:?})", dir.ino, lossy(name)),
            Op::Symlink { dir, name, .. } => write!(f, "Symlink({}/{})", dir.ino, lossy(name)),
            Op::Link { node, dir, name } => write!(f, "Link({} -> {}/{})", node.ino, dir.ino, lossy(name)),
            Op::Rename { from_dir, from_name, to_dir, to_name } => {
                write!(f, "Rename({}/{} -> {}/{})", from_dir.ino, lossy(from_name), to_dir.ino, lossy(to_name))
            }
            Op::Remove { dir, name, directory } => write!(f, "Remove({}/{}, dir={directory})", dir.ino, lossy(name)),
            Op::SetAttr { node, size, .. } => write!(f, "SetAttr({}, size={size:?})", node.ino),
            Op::CommitExtents { node, range_start, range_end, extents, lease } => {
                write!(f, "CommitExtents({}, [{range_start}, {range_end}), {} extents", node.ino, extents.len())?;
                match lease {
                    Some((instance, epoch)) => write!(f, ", lease {instance:x}@{epoch})"),
                    None => write!(f, ")"),
                }
            }
            Op::AcquireWriteLease { node, instance } => write!(f, "AcquireWriteLease({}, {instance:x})", node.ino),
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::CreateShare { export_path, .. } => write!(f, "CreateShare({export_path})"),
            Command::Heartbeat { id, daemon } => write!(f, "Heartbeat({id}, {})", daemon.addr),
            Command::RecordPacks { locations } => write!(f, "RecordPacks({} locations)", locations.len()),
            Command::SetShareReplication { export_path, replication_factor } => {
                write!(f, "SetShareReplication({export_path}, {replication_factor})")
            }
            Command::UpdateShare { export_path, changes } => write!(f, "UpdateShare({export_path}, {changes:?})"),
            Command::Fs { cred, request, op, .. } => {
                write!(f, "{op} uid={}", cred.uid)?;
                if let Some(r) = request {
                    write!(f, " req={}:{}", r.client_id, r.seq)?;
                }
                Ok(())
            }
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
    Share {
        share_id: u64,
        root: AttrOut,
    },
    /// Create / Mknod / Symlink.
    Created {
        attr: AttrOut,
        dir: Wcc,
    },
    Removed {
        dir: Wcc,
    },
    /// SetAttr / CommitExtents.
    Changed {
        before: AttrOut,
        after: AttrOut,
    },
    /// AcquireWriteLease: the caller's epoch.
    Lease {
        epoch: u64,
    },
    Linked {
        attr: AttrOut,
        dir: Wcc,
    },
    Renamed {
        from_dir: Wcc,
        to_dir: Wcc,
    },
}

/// A command refused by the namespace rules. Deterministic: every replica refuses it alike,
/// and a refused command changes nothing (except remembering the refusal for its request id).
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
    #[error("permission denied")]
    Access,
    #[error("operation not permitted")]
    Perm,
    #[error("cross-device link or rename")]
    CrossDevice,
    #[error("too many links")]
    TooManyLinks,
    #[error("the guard did not match")]
    NotSync,
    #[error("the cookie verifier is no longer valid")]
    BadCookie,
    #[error("fenced: another gateway holds the file's write lease")]
    Fenced,
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
            ApplyError::Access => F::Access,
            ApplyError::Perm => F::Perm,
            ApplyError::CrossDevice => F::CrossDevice,
            ApplyError::TooManyLinks => F::TooManyLinks,
            ApplyError::NotSync => F::NotSync,
            ApplyError::BadCookie => F::BadCookie,
            ApplyError::Fenced => F::Fenced,
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
