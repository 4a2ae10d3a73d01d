//! The records metad persists: inodes, shares, extents and credentials, and their byte encodings.
//!
//! Owns: the in-store shape of every state-machine value and the functions that encode and
//! decode them. Decoding is the only place that trusts bytes from disk, so it never panics and
//! reports a [`MetadError::Corrupt`] for anything malformed.
//! Must never: open tables or transactions (that is `store`), or know about gRPC.
//!
//! Encodings: inode and share records are versioned serde-JSON structs (the store's schema
//! version in the `schema` table covers their layout); extents, the hottest and most numerous
//! rows, use a fixed 56-byte big-endian layout. Symlink targets live in their own table as raw
//! bytes, so attribute replies never carry them.

use serde::{Deserialize, Serialize};

use crate::error::{MetadError, Result};

/// Length of a chunk name (BLAKE3).
pub const HASH_LEN: usize = 32;

/// What kind of object an inode is.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    Regular,
    Directory,
    Symlink,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
}

impl FileKind {
    /// Character and block devices: the kinds that carry a device number.
    pub fn is_device(self) -> bool {
        matches!(self, FileKind::CharDevice | FileKind::BlockDevice)
    }
}

/// Who is asking, after the gateway's squashing rules. uid 0 is root.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct Cred {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (at most [`crate::validate::MAX_GROUPS`]).
    pub groups: Vec<u32>,
}

impl Cred {
    pub fn is_root(&self) -> bool {
        self.uid == 0
    }

    /// The primary group or one of the supplementary groups is `gid`.
    pub fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.contains(&gid)
    }
}

/// One inode. Times are nanoseconds since the Unix epoch, stamped by the proposer.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Inode {
    pub share_id: u64,
    pub generation: u64,
    pub kind: FileKind,
    /// Permission bits only (07777).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub size: u64,
    /// Bytes of content referenced by extents.
    pub used: u64,
    pub atime_ns: i64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub btime_ns: i64,
    /// Bumped on every change of the inode (NFS change attribute).
    pub change: u64,
    /// Directories: the parent directory's inode (the root names itself).
    pub parent: u64,
    /// Directories: the slot (readdir cookie) the next entry gets. Starts at [`FIRST_SLOT`].
    pub next_slot: u64,
    /// Regular files created EXCLUSIVE: the client's verifier, for retransmissions.
    pub verifier: Option<[u8; 8]>,
    /// Character/block devices: the device number (zero for every other kind).
    #[serde(default)]
    pub rdev_major: u32,
    #[serde(default)]
    pub rdev_minor: u32,
    /// Regular files: the gateway instance holding the write lease (0: nobody) and the
    /// lease's epoch, which only grows (schema 5; older records read as 0, 0). Not a file
    /// attribute: taking a lease changes neither `change` nor a time.
    #[serde(default)]
    pub lease_holder: u64,
    #[serde(default)]
    pub lease_epoch: u64,
}

impl Inode {
    /// Gives the write lease to gateway `instance` (0: to nobody, ending it): a new epoch,
    /// unless a non-zero `instance` holds it already. Whether anything changed.
    pub fn take_lease(&mut self, instance: u64) -> bool {
        if instance != 0 && self.lease_holder == instance {
            return false;
        }
        self.lease_holder = instance;
        self.lease_epoch = self.lease_epoch.saturating_add(1);
        true
    }

    /// The epoch of the lease `instance` holds (0 if it holds none).
    pub fn lease_epoch_of(&self, instance: u64) -> u64 {
        if instance != 0 && self.lease_holder == instance { self.lease_epoch } else { 0 }
    }
}

/// Mode bits with a meaning beyond rwx.
pub const S_ISUID: u32 = 0o4000;
pub const S_ISGID: u32 = 0o2000;
pub const S_ISVTX: u32 = 0o1000;

/// Cookies 1 and 2 are reserved for "." and ".."; real entries start here.
pub const FIRST_SLOT: u64 = 3;

/// An inode together with its number: what attribute replies are built from.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct AttrOut {
    pub ino: u64,
    pub inode: Inode,
}

/// A share: an exported namespace with its own root directory and usage counters.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ShareRec {
    pub name: String,
    pub export_path: String,
    pub root_ino: u64,
    /// Inodes in use in the share (the root included).
    pub files: u64,
    /// Sum of extent lengths of the share's files.
    pub bytes_used: u64,
    /// Copies of each chunk written to the share; 0 = the cluster default (schema 3; older
    /// records read as 0).
    #[serde(default)]
    pub replication_factor: u32,
    /// Export options (schema 4; older records read as the defaults: read-write, every
    /// client, no squashing, anonymous ids [`DEFAULT_ANON_ID`]).
    #[serde(default)]
    pub read_only: bool,
    /// Allowed-client entries (`proto::export` syntax); empty = every client.
    #[serde(default)]
    pub allowed_clients: Vec<String>,
    #[serde(default)]
    pub squash: Squash,
    #[serde(default = "default_anon_id")]
    pub anon_uid: u32,
    #[serde(default = "default_anon_id")]
    pub anon_gid: u32,
}

/// The anonymous uid/gid of a share unless set (`nobody`).
pub const DEFAULT_ANON_ID: u32 = 65534;

fn default_anon_id() -> u32 {
    DEFAULT_ANON_ID
}

/// Which callers a gateway maps to a share's anonymous identity.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Squash {
    /// Identities pass as the client claims them.
    #[default]
    None,
    /// uid 0 and gid 0 become the anonymous ids.
    Root,
    /// Every caller becomes the anonymous identity.
    All,
}

/// A block daemon as its latest heartbeat described it. Rows are kept while the daemon is
/// silent (it is then reported dead, not forgotten).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct DaemonRec {
    /// Its QUIC chunk address (a socket address, at most 255 bytes).
    pub addr: String,
    pub capacity_bytes: u64,
    pub free_bytes: u64,
    pub chunks: u64,
    pub stored_bytes: u64,
    /// Unix ms of the latest heartbeat, as stamped by its proposer.
    pub last_heartbeat_ms: i64,
}

/// Where a chunk lives in the S3 tier: `length` bytes at `offset` of the pack object `pack`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct PackLoc {
    pub hash: [u8; HASH_LEN],
    pub pack: String,
    pub offset: u64,
    pub length: u32,
}

/// A byte range `[offset, offset + length)` of a file mapped onto a slice of a chunk.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    pub offset: u64,
    pub length: u64,
    pub hash: [u8; HASH_LEN],
    pub chunk_offset: u64,
    pub chunk_length: u64,
}

impl Extent {
    /// One past the last file byte this extent covers (validated extents never overflow).
    pub fn end(&self) -> u64 {
        self.offset.saturating_add(self.length)
    }
}

/// Encoded length of an extent value (everything but the offset, which is in the key).
pub const EXTENT_VALUE_LEN: usize = 8 + HASH_LEN + 8 + 8;

/// Encodes the value part of an extent row: `length | hash | chunk_offset | chunk_length`.
pub fn encode_extent_value(e: &Extent) -> [u8; EXTENT_VALUE_LEN] {
    let mut out = [0u8; EXTENT_VALUE_LEN];
    out[0..8].copy_from_slice(&e.length.to_be_bytes());
    out[8..40].copy_from_slice(&e.hash);
    out[40..48].copy_from_slice(&e.chunk_offset.to_be_bytes());
    out[48..56].copy_from_slice(&e.chunk_length.to_be_bytes());
    out
}

/// Decodes an extent row whose key carried `offset`.
pub fn decode_extent_value(offset: u64, bytes: &[u8]) -> Result<Extent> {
    let b: &[u8; EXTENT_VALUE_LEN] = bytes.try_into().map_err(|_| MetadError::Corrupt {
        what: "extent",
        reason: format!("{} bytes, expected {EXTENT_VALUE_LEN}", bytes.len()),
    })?;
    let word = |i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&b[i..i + 8]);
        u64::from_be_bytes(w)
    };
    let mut hash = [0u8; HASH_LEN];
    hash.copy_from_slice(&b[8..40]);
    Ok(Extent { offset, length: word(0), hash, chunk_offset: word(40), chunk_length: word(48) })
}

/// Encodes a JSON record.
pub fn encode_json<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|source| MetadError::Codec { what, source })
}

/// Decodes a JSON record read from the store.
pub fn decode_json<T: for<'de> Deserialize<'de>>(what: &'static str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| MetadError::Corrupt { what, reason: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extent_value_round_trips_and_rejects_bad_lengths() {
        let e = Extent { offset: 7, length: 100, hash: [9; 32], chunk_offset: 5, chunk_length: 200 };
        let v = encode_extent_value(&e);
        assert_eq!(decode_extent_value(7, &v).unwrap(), e);
        assert!(matches!(decode_extent_value(7, &v[..55]), Err(MetadError::Corrupt { .. })));
        assert!(matches!(decode_json::<Inode>("inode", b"{nope"), Err(MetadError::Corrupt { .. })));
    }

    #[test]
    fn a_schema_3_share_record_reads_with_default_export_options() {
        let v3 = br#"{"name":"default","export_path":"/export","root_ino":1,"files":1,"bytes_used":0,"replication_factor":2}"#;
        let rec: ShareRec = decode_json("share", v3).unwrap();
        assert_eq!(rec.replication_factor, 2);
        assert!(!rec.read_only && rec.allowed_clients.is_empty());
        assert_eq!((rec.squash, rec.anon_uid, rec.anon_gid), (Squash::None, DEFAULT_ANON_ID, DEFAULT_ANON_ID));
    }
}
