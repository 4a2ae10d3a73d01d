//! Conversions between protobuf messages and metad's model, checking hostile input.
//!
//! Owns: the only mapping of `proto::pb` types to and from [`crate::model`] /
//! [`crate::command`] types. Every conversion from the wire validates (missing handles, hash
//! lengths, verifier lengths, time ranges) and returns an [`FsError`] instead of panicking.
//! Must never: decide filesystem semantics.

use proto::FsError;
use proto::pb;

use crate::command::{CreateMode, NodeKey, RequestId, ShareChanges};
use crate::model::{AttrOut, Cred, Extent, FileKind, HASH_LEN, Squash};
use crate::validate::MAX_GROUPS;

const NANOS_PER_SEC: i64 = 1_000_000_000;

/// Nanoseconds since the epoch -> protobuf time.
pub fn time_to_pb(ns: i64) -> pb::Time {
    let secs = ns.div_euclid(NANOS_PER_SEC);
    let nanos = ns.rem_euclid(NANOS_PER_SEC) as u32;
    pb::Time { secs, nanos }
}

/// Protobuf time -> nanoseconds since the epoch (must fit an i64 of nanoseconds).
pub fn time_from_pb(t: &pb::Time) -> Result<i64, FsError> {
    if t.nanos >= 1_000_000_000 {
        return Err(FsError::Invalid(format!("time nanos {} out of range", t.nanos)));
    }
    t.secs
        .checked_mul(NANOS_PER_SEC)
        .and_then(|s| s.checked_add(i64::from(t.nanos)))
        .ok_or_else(|| FsError::Invalid(format!("time {}s out of range", t.secs)))
}

/// Squash mode -> protobuf enum value.
pub fn squash_to_pb(s: Squash) -> i32 {
    match s {
        Squash::None => pb::Squash::None as i32,
        Squash::Root => pb::Squash::Root as i32,
        Squash::All => pb::Squash::All as i32,
    }
}

/// Protobuf enum value -> squash mode (an unknown value is `Invalid`).
pub fn squash_from_pb(v: i32) -> Result<Squash, FsError> {
    match pb::Squash::try_from(v) {
        Ok(pb::Squash::None) => Ok(Squash::None),
        Ok(pb::Squash::Root) => Ok(Squash::Root),
        Ok(pb::Squash::All) => Ok(Squash::All),
        Err(_) => Err(FsError::Invalid(format!("unknown squash mode {v}"))),
    }
}

/// The options a `CreateShareRequest` sets (a non-empty `allowed_clients` replaces the list).
pub fn create_share_changes(r: &pb::CreateShareRequest) -> Result<ShareChanges, FsError> {
    Ok(ShareChanges {
        replication_factor: r.replication_factor,
        read_only: r.read_only,
        allowed_clients: (!r.allowed_clients.is_empty()).then(|| r.allowed_clients.clone()),
        squash: r.squash.map(squash_from_pb).transpose()?,
        anon_uid: r.anon_uid,
        anon_gid: r.anon_gid,
    })
}

/// The options an `UpdateShareRequest` changes.
pub fn update_share_changes(r: &pb::UpdateShareRequest) -> Result<ShareChanges, FsError> {
    Ok(ShareChanges {
        replication_factor: r.replication_factor,
        read_only: r.read_only,
        allowed_clients: r.allowed_clients.as_ref().map(|l| l.entries.clone()),
        squash: r.squash.map(squash_from_pb).transpose()?,
        anon_uid: r.anon_uid,
        anon_gid: r.anon_gid,
    })
}

/// The current time, stamped into commands by the proposer.
pub fn now_ns() -> i64 {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// This node's clock in unix milliseconds (heartbeat stamps and liveness judgements).
pub fn now_ms() -> i64 {
    now_ns() / 1_000_000
}

pub fn node_key(n: Option<&pb::NodeRef>) -> Result<NodeKey, FsError> {
    let n = n.ok_or(FsError::BadHandle)?;
    if n.ino == 0 {
        return Err(FsError::BadHandle);
    }
    Ok(NodeKey { share_id: n.share_id, ino: n.ino, generation: n.generation })
}

/// The caller's credential. Missing is refused (`Invalid`), never taken as root; more than
/// [`MAX_GROUPS`] supplementary groups are refused before anything is copied.
pub fn cred_from_pb(c: Option<&pb::Cred>) -> Result<Cred, FsError> {
    let c = c.ok_or_else(|| FsError::Invalid("the request carries no credential".into()))?;
    if c.gids.len() > MAX_GROUPS {
        return Err(FsError::Invalid(format!("{} supplementary groups, at most {MAX_GROUPS}", c.gids.len())));
    }
    Ok(Cred { uid: c.uid, gid: c.gid, groups: c.gids.clone() })
}

pub fn request_id_from_pb(r: Option<&pb::RequestId>) -> Option<RequestId> {
    r.map(|r| RequestId { client_id: r.client_id, seq: r.seq })
}

/// Any concrete file type; UNSPECIFIED and unknown values are `Invalid`.
pub fn kind_from_pb(kind: i32) -> Result<FileKind, FsError> {
    match pb::FileType::try_from(kind) {
        Ok(pb::FileType::Regular) => Ok(FileKind::Regular),
        Ok(pb::FileType::Directory) => Ok(FileKind::Directory),
        Ok(pb::FileType::Symlink) => Ok(FileKind::Symlink),
        Ok(pb::FileType::Fifo) => Ok(FileKind::Fifo),
        Ok(pb::FileType::Socket) => Ok(FileKind::Socket),
        Ok(pb::FileType::CharDevice) => Ok(FileKind::CharDevice),
        Ok(pb::FileType::BlockDevice) => Ok(FileKind::BlockDevice),
        Ok(pb::FileType::Unspecified) | Err(_) => Err(FsError::Invalid(format!("file type {kind}"))),
    }
}

pub fn kind_to_pb(kind: FileKind) -> pb::FileType {
    match kind {
        FileKind::Regular => pb::FileType::Regular,
        FileKind::Directory => pb::FileType::Directory,
        FileKind::Symlink => pb::FileType::Symlink,
        FileKind::Fifo => pb::FileType::Fifo,
        FileKind::Socket => pb::FileType::Socket,
        FileKind::CharDevice => pb::FileType::CharDevice,
        FileKind::BlockDevice => pb::FileType::BlockDevice,
    }
}

pub fn create_mode(how: i32, verifier: &[u8]) -> Result<CreateMode, FsError> {
    match pb::CreateHow::try_from(how) {
        Ok(pb::CreateHow::Unchecked) => Ok(CreateMode::Unchecked),
        Ok(pb::CreateHow::Guarded) => Ok(CreateMode::Guarded),
        Ok(pb::CreateHow::Exclusive) => {
            let v: [u8; 8] = verifier.try_into().map_err(|_| {
                FsError::Invalid(format!("exclusive create verifier has {} bytes, expected 8", verifier.len()))
            })?;
            Ok(CreateMode::Exclusive(v))
        }
        Err(_) => Err(FsError::Invalid(format!("create how {how}"))),
    }
}

/// Wire extents -> model extents sorted by offset. The count is checked against the limit
/// before anything is allocated for them.
pub fn extents_from_pb(list: &[pb::Extent]) -> Result<Vec<Extent>, FsError> {
    if list.len() > crate::validate::MAX_EXTENTS_PER_COMMIT {
        return Err(FsError::Invalid(format!(
            "{} extents, at most {}",
            list.len(),
            crate::validate::MAX_EXTENTS_PER_COMMIT
        )));
    }
    let mut out = Vec::with_capacity(list.len());
    for e in list {
        let hash: [u8; HASH_LEN] =
            e.hash.as_slice().try_into().map_err(|_| {
                FsError::Invalid(format!("extent hash has {} bytes, expected {HASH_LEN}", e.hash.len()))
            })?;
        out.push(Extent {
            offset: e.offset,
            length: e.length,
            hash,
            chunk_offset: e.chunk_offset,
            chunk_length: e.chunk_length,
        });
    }
    out.sort_by_key(|e| e.offset);
    Ok(out)
}

pub fn extent_to_pb(e: &Extent) -> pb::Extent {
    pb::Extent {
        offset: e.offset,
        length: e.length,
        hash: e.hash.to_vec(),
        chunk_offset: e.chunk_offset,
        chunk_length: e.chunk_length,
    }
}

pub fn attr_to_pb(a: &AttrOut) -> pb::Attr {
    let i = &a.inode;
    pb::Attr {
        node: Some(pb::NodeRef { share_id: i.share_id, ino: a.ino, generation: i.generation }),
        kind: kind_to_pb(i.kind) as i32,
        mode: i.mode,
        uid: i.uid,
        gid: i.gid,
        nlink: i.nlink,
        size: i.size,
        used: i.used,
        atime: Some(time_to_pb(i.atime_ns)),
        mtime: Some(time_to_pb(i.mtime_ns)),
        ctime: Some(time_to_pb(i.ctime_ns)),
        btime: Some(time_to_pb(i.btime_ns)),
        change: i.change,
        rdev_major: i.rdev_major,
        rdev_minor: i.rdev_minor,
    }
}

pub fn wcc_to_pb(w: &crate::command::Wcc) -> pb::WccDir {
    pb::WccDir { before: Some(attr_to_pb(&w.before)), after: Some(attr_to_pb(&w.after)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_and_reject_out_of_range() {
        for ns in [0i64, 1, 1_500_000_000, -1, -1_500_000_001, i64::MAX / 2] {
            assert_eq!(time_from_pb(&time_to_pb(ns)), Ok(ns));
        }
        assert!(time_from_pb(&pb::Time { secs: 0, nanos: 1_000_000_000 }).is_err());
        assert!(time_from_pb(&pb::Time { secs: i64::MAX, nanos: 0 }).is_err());
    }

    #[test]
    fn hostile_handles_and_extents_are_refused() {
        assert_eq!(node_key(None), Err(FsError::BadHandle));
        assert_eq!(node_key(Some(&pb::NodeRef { share_id: 1, ino: 0, generation: 1 })), Err(FsError::BadHandle));
        let bad = pb::Extent { offset: 0, length: 1, hash: vec![0; 31], chunk_offset: 0, chunk_length: 1 };
        assert!(matches!(extents_from_pb(&[bad]), Err(FsError::Invalid(_))));
        assert!(matches!(create_mode(pb::CreateHow::Exclusive as i32, &[1, 2, 3]), Err(FsError::Invalid(_))));
        assert!(matches!(create_mode(99, &[]), Err(FsError::Invalid(_))));
        assert!(matches!(kind_from_pb(0), Err(FsError::Invalid(_))));
        assert!(matches!(kind_from_pb(99), Err(FsError::Invalid(_))));
        assert!(matches!(cred_from_pb(None), Err(FsError::Invalid(_))));
        let many = pb::Cred { uid: 1, gid: 1, gids: vec![7; MAX_GROUPS + 1] };
        assert!(matches!(cred_from_pb(Some(&many)), Err(FsError::Invalid(_))));
        let ok = pb::Cred { uid: 1, gid: 2, gids: vec![3; MAX_GROUPS] };
        assert_eq!(cred_from_pb(Some(&ok)).map(|c| c.groups.len()), Ok(MAX_GROUPS));
    }

    #[test]
    fn every_file_kind_round_trips() {
        for k in [
            FileKind::Regular,
            FileKind::Directory,
            FileKind::Symlink,
            FileKind::Fifo,
            FileKind::Socket,
            FileKind::CharDevice,
            FileKind::BlockDevice,
        ] {
            assert_eq!(kind_from_pb(kind_to_pb(k) as i32), Ok(k));
        }
    }
}
