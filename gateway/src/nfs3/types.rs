//! NFSv3 data types on the wire (RFC 1813 §2.5-2.6): how Tessera's attributes are encoded
//! (fattr3, pre_op_attr/wcc_attr, post_op_attr, wcc_data, nfs_fh3) and how the shared
//! argument types (nfs_fh3, filename3, sattr3, nfstime3) are decoded.
//!
//! Owns: the translation between `proto::pb::Attr` and fattr3 (fsid = share id,
//! fileid = inode number, rdev = major/minor) and the encoded sizes used for READDIR budgeting.
//!
//! Must never: fail on a Vfs answer (an absent time encodes as 0, an unknown file type as
//! a regular file, out-of-range seconds are clamped) or panic on client input.

use proto::handle::MAX_HANDLE_LEN;
use proto::{FileHandle, FsError, pb};

use crate::rpc::ProtocolError;
use crate::xdr::{XdrReader, XdrWriter};

/// Longest file name accepted on the wire (longer is GARBAGE_ARGS); names over
/// `NAME_MAX` get NFS3ERR_NAMETOOLONG from the procedure.
pub const MAX_WIRE_NAME: usize = 1024;
/// Longest nfspath3 (symlink target) accepted on the wire (longer is GARBAGE_ARGS);
/// targets over `PATH_MAX` get NFS3ERR_NAMETOOLONG from the procedure.
pub const MAX_WIRE_PATH: usize = 8192;
/// Longest symlink target (metad's limit).
pub const PATH_MAX: usize = 4096;
/// Longest file name a procedure accepts (PATHCONF name_max).
pub const NAME_MAX: usize = 255;
/// Encoded size of a fattr3.
pub const FATTR3_SIZE: usize = 84;
/// Encoded size of a post_op_attr carrying attributes.
pub const POST_OP_ATTR_SIZE: usize = 4 + FATTR3_SIZE;

const NF3REG: u32 = 1;
const NF3DIR: u32 = 2;
const NF3BLK: u32 = 3;
const NF3CHR: u32 = 4;
const NF3LNK: u32 = 5;
const NF3SOCK: u32 = 6;
const NF3FIFO: u32 = 7;

/// A decoded nfs_fh3: a well-formed Tessera handle, or `BadHandle` if the client sent
/// bytes that are not one (the procedure answers NFS3ERR_BADHANDLE, not GARBAGE_ARGS).
pub type Fh = Result<FileHandle, FsError>;

/// An nfstime3.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NfsTime {
    pub secs: u32,
    pub nsecs: u32,
}

impl NfsTime {
    pub fn from_pb(t: Option<&pb::Time>) -> NfsTime {
        match t {
            None => NfsTime { secs: 0, nsecs: 0 },
            Some(t) => {
                NfsTime { secs: u32::try_from(t.secs.max(0)).unwrap_or(u32::MAX), nsecs: t.nanos.min(999_999_999) }
            }
        }
    }

    pub fn to_pb(self) -> pb::Time {
        pb::Time { secs: i64::from(self.secs), nanos: self.nsecs.min(999_999_999) }
    }
}

/// `set_atime` / `set_mtime` of a sattr3.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetTime {
    DontChange,
    ServerTime,
    ClientTime(NfsTime),
}

impl SetTime {
    /// The client's time to store, and whether metad should stamp its own time instead
    /// (SET_TO_SERVER_TIME: the proposer's clock, not this gateway's).
    pub fn to_pb(self) -> (Option<pb::Time>, bool) {
        match self {
            SetTime::DontChange => (None, false),
            SetTime::ClientTime(t) => (Some(t.to_pb()), false),
            SetTime::ServerTime => (None, true),
        }
    }
}

/// A decoded sattr3.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sattr3 {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: SetTime,
    pub mtime: SetTime,
}

impl Sattr3 {
    pub const NONE: Sattr3 =
        Sattr3 { mode: None, uid: None, gid: None, size: None, atime: SetTime::DontChange, mtime: SetTime::DontChange };
}

// ---- decoding ----

pub fn read_fh(r: &mut XdrReader<'_>) -> Result<Fh, ProtocolError> {
    let bytes = r.opaque(MAX_HANDLE_LEN)?;
    Ok(FileHandle::decode(bytes).map_err(|_| FsError::BadHandle))
}

pub fn read_name<'a>(r: &mut XdrReader<'a>) -> Result<&'a [u8], ProtocolError> {
    r.opaque(MAX_WIRE_NAME)
}

pub fn read_time(r: &mut XdrReader<'_>) -> Result<NfsTime, ProtocolError> {
    Ok(NfsTime { secs: r.u32()?, nsecs: r.u32()? })
}

fn read_optional<T>(
    r: &mut XdrReader<'_>,
    f: impl FnOnce(&mut XdrReader<'_>) -> Result<T, ProtocolError>,
) -> Result<Option<T>, ProtocolError> {
    if r.bool()? { f(r).map(Some) } else { Ok(None) }
}

fn read_set_time(r: &mut XdrReader<'_>) -> Result<SetTime, ProtocolError> {
    match r.u32()? {
        0 => Ok(SetTime::DontChange),
        1 => Ok(SetTime::ServerTime),
        2 => Ok(SetTime::ClientTime(read_time(r)?)),
        v => Err(ProtocolError::BadDiscriminant { what: "time_how", value: v }),
    }
}

pub fn read_sattr3(r: &mut XdrReader<'_>) -> Result<Sattr3, ProtocolError> {
    Ok(Sattr3 {
        mode: read_optional(r, |r| r.u32())?,
        uid: read_optional(r, |r| r.u32())?,
        gid: read_optional(r, |r| r.u32())?,
        size: read_optional(r, |r| r.u64())?,
        atime: read_set_time(r)?,
        mtime: read_set_time(r)?,
    })
}

pub fn read_optional_time(r: &mut XdrReader<'_>) -> Result<Option<NfsTime>, ProtocolError> {
    read_optional(r, read_time)
}

// ---- encoding ----

fn ftype3(kind: i32) -> u32 {
    match pb::FileType::try_from(kind) {
        Ok(pb::FileType::Directory) => NF3DIR,
        Ok(pb::FileType::Symlink) => NF3LNK,
        Ok(pb::FileType::Fifo) => NF3FIFO,
        Ok(pb::FileType::Socket) => NF3SOCK,
        Ok(pb::FileType::CharDevice) => NF3CHR,
        Ok(pb::FileType::BlockDevice) => NF3BLK,
        Ok(pb::FileType::Regular | pb::FileType::Unspecified) | Err(_) => NF3REG,
    }
}

pub fn write_time(w: &mut XdrWriter, t: Option<&pb::Time>) {
    let t = NfsTime::from_pb(t);
    w.u32(t.secs);
    w.u32(t.nsecs);
}

pub fn write_fattr3(w: &mut XdrWriter, a: &pb::Attr) {
    let node = a.node.unwrap_or_default();
    w.u32(ftype3(a.kind));
    w.u32(a.mode & 0o7777);
    w.u32(a.nlink);
    w.u32(a.uid);
    w.u32(a.gid);
    w.u64(a.size);
    w.u64(a.used);
    w.u32(a.rdev_major); // rdev specdata1
    w.u32(a.rdev_minor); // rdev specdata2
    w.u64(node.share_id);
    w.u64(node.ino);
    write_time(w, a.atime.as_ref());
    write_time(w, a.mtime.as_ref());
    write_time(w, a.ctime.as_ref());
}

pub fn write_post_op_attr(w: &mut XdrWriter, a: Option<&pb::Attr>) {
    match a {
        Some(a) => {
            w.bool(true);
            write_fattr3(w, a);
        }
        None => w.bool(false),
    }
}

/// pre_op_attr: size, mtime and ctime before the operation.
pub fn write_pre_op_attr(w: &mut XdrWriter, a: Option<&pb::Attr>) {
    match a {
        Some(a) => {
            w.bool(true);
            w.u64(a.size);
            write_time(w, a.mtime.as_ref());
            write_time(w, a.ctime.as_ref());
        }
        None => w.bool(false),
    }
}

pub fn write_wcc(w: &mut XdrWriter, before: Option<&pb::Attr>, after: Option<&pb::Attr>) {
    write_pre_op_attr(w, before);
    write_post_op_attr(w, after);
}

pub fn write_wcc_dir(w: &mut XdrWriter, wcc: Option<&pb::WccDir>) {
    write_wcc(w, wcc.and_then(|d| d.before.as_ref()), wcc.and_then(|d| d.after.as_ref()));
}

pub fn write_fh(w: &mut XdrWriter, h: FileHandle) {
    w.opaque(&h.encode());
}

/// post_op_fh3 for the node an Attr describes (absent if the Attr names none).
pub fn write_post_op_fh(w: &mut XdrWriter, a: Option<&pb::Attr>) {
    match a.and_then(|a| a.node) {
        Some(n) => {
            w.bool(true);
            write_fh(w, n.into());
        }
        None => w.bool(false),
    }
}

/// Encoded size of a post_op_fh3 carrying a Tessera handle.
pub fn post_op_fh_size() -> usize {
    4 + crate::xdr::opaque_size(proto::handle::HANDLE_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn attr() -> pb::Attr {
        pb::Attr {
            node: Some(pb::NodeRef { share_id: 7, ino: 42, generation: 1 }),
            kind: pb::FileType::Directory as i32,
            mode: 0o40755,
            uid: 1,
            gid: 2,
            nlink: 3,
            size: 4,
            used: 5,
            atime: Some(pb::Time { secs: 6, nanos: 7 }),
            mtime: Some(pb::Time { secs: -1, nanos: 2_000_000_000 }),
            ctime: None,
            btime: None,
            change: 9,
            rdev_major: 0,
            rdev_minor: 0,
        }
    }

    fn words(w: &[u32]) -> Vec<u8> {
        w.iter().flat_map(|v| v.to_be_bytes()).collect()
    }

    #[test]
    fn fattr3_layout() {
        let mut w = XdrWriter::new();
        write_fattr3(&mut w, &attr());
        assert_eq!(w.len(), FATTR3_SIZE);
        #[rustfmt::skip]
        let expected = words(&[
            2, 0o755, 3, 1, 2, 0, 4, 0, 5, 0, 0, 0, 7, 0, 42,
            6, 7, // atime
            0, 999_999_999, // mtime clamped
            0, 0, // ctime absent
        ]);
        assert_eq!(w.as_slice(), expected);
    }

    #[test]
    fn wcc_layout() {
        let mut w = XdrWriter::new();
        write_wcc(&mut w, Some(&attr()), None);
        assert_eq!(w.as_slice(), words(&[1, 0, 4, 0, 999_999_999, 0, 0, 0]));
    }

    fn check_sattr(input: &[u32], expected: Result<Sattr3, ProtocolError>) {
        let bytes = words(input);
        assert_eq!(read_sattr3(&mut XdrReader::new(&bytes)), expected);
    }

    #[test]
    fn sattr3_decoding() {
        check_sattr(&[0, 0, 0, 0, 0, 0], Ok(Sattr3::NONE));
        check_sattr(
            &[1, 0o644, 1, 10, 1, 20, 1, 0, 99, 1, 2, 5, 6],
            Ok(Sattr3 {
                mode: Some(0o644),
                uid: Some(10),
                gid: Some(20),
                size: Some(99),
                atime: SetTime::ServerTime,
                mtime: SetTime::ClientTime(NfsTime { secs: 5, nsecs: 6 }),
            }),
        );
        check_sattr(&[0, 0, 0, 0, 3, 0], Err(ProtocolError::BadDiscriminant { what: "time_how", value: 3 }));
        check_sattr(&[2], Err(ProtocolError::BadDiscriminant { what: "bool", value: 2 }));
    }

    #[test]
    fn bad_handles_are_not_garbage() {
        let mut w = XdrWriter::new();
        w.opaque(&[1, 2, 3]);
        let bytes = w.into_inner();
        assert_eq!(read_fh(&mut XdrReader::new(&bytes)), Ok(Err(FsError::BadHandle)));
        // But an opaque over NFS3_FHSIZE is a protocol violation.
        let mut w = XdrWriter::new();
        w.opaque(&[0; 65]);
        let bytes = w.into_inner();
        assert_eq!(read_fh(&mut XdrReader::new(&bytes)), Err(ProtocolError::TooLong { len: 65, max: 64 }));
    }
}
