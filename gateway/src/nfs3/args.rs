//! NFSv3 procedure arguments (RFC 1813 §3.3), decoded by pure functions over `&[u8]`.
//!
//! Owns: one decoder per implemented procedure. Each reads only what its procedure
//! defines and ignores trailing bytes. A malformed nfs_fh3 is kept as `Err(BadHandle)`
//! inside the arguments (the procedure answers NFS3ERR_BADHANDLE); anything else
//! malformed is a `ProtocolError` (the call is answered GARBAGE_ARGS).
//!
//! Must never: copy bulk data (WRITE's payload is returned as a range of the input) or
//! allocate from a length read off the wire.

use std::ops::Range;

use crate::nfs3::types::{Fh, MAX_WIRE_PATH, NfsTime, Sattr3, read_fh, read_name, read_optional_time, read_sattr3};
use crate::rpc::ProtocolError;
use crate::vfs::Stability;
use crate::xdr::XdrReader;

/// GETATTR, READLINK, FSSTAT, FSINFO, PATHCONF.
#[derive(Debug, PartialEq, Eq)]
pub struct FhArgs {
    pub fh: Fh,
}

/// diropargs3: a directory and a name in it.
#[derive(Debug, PartialEq, Eq)]
pub struct DirOpArgs<'a> {
    pub dir: Fh,
    pub name: &'a [u8],
}

#[derive(Debug, PartialEq, Eq)]
pub struct SetAttrArgs {
    pub fh: Fh,
    pub attr: Sattr3,
    /// Only apply if the object's ctime still equals this.
    pub guard: Option<NfsTime>,
}

#[derive(Debug, PartialEq, Eq)]
pub struct AccessArgs {
    pub fh: Fh,
    pub access: u32,
}

/// READ and COMMIT.
#[derive(Debug, PartialEq, Eq)]
pub struct RangeArgs {
    pub fh: Fh,
    pub offset: u64,
    pub count: u32,
}

#[derive(Debug, PartialEq, Eq)]
pub struct WriteArgs {
    pub fh: Fh,
    pub offset: u64,
    pub count: u32,
    pub stable: Stability,
    /// Where the payload lies in the decoded input.
    pub data: Range<usize>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum CreateHow {
    Unchecked(Sattr3),
    Guarded(Sattr3),
    Exclusive([u8; 8]),
}

#[derive(Debug, PartialEq, Eq)]
pub struct CreateArgs<'a> {
    pub at: DirOpArgs<'a>,
    pub how: CreateHow,
}

#[derive(Debug, PartialEq, Eq)]
pub struct MkdirArgs<'a> {
    pub at: DirOpArgs<'a>,
    pub attr: Sattr3,
}

/// SYMLINK: where, the new link's attributes and its target (nfspath3).
#[derive(Debug, PartialEq, Eq)]
pub struct SymlinkArgs<'a> {
    pub at: DirOpArgs<'a>,
    pub attr: Sattr3,
    pub target: &'a [u8],
}

/// What MKNOD creates (mknoddata3).
#[derive(Debug, PartialEq, Eq)]
pub enum MknodWhat {
    /// NF3CHR or NF3BLK with its attributes and (major, minor).
    Device { block: bool, attr: Sattr3, major: u32, minor: u32 },
    /// NF3SOCK or NF3FIFO.
    Pipe { socket: bool, attr: Sattr3 },
    /// NF3REG, NF3DIR or NF3LNK: answered NFS3ERR_BADTYPE.
    BadType,
}

#[derive(Debug, PartialEq, Eq)]
pub struct MknodArgs<'a> {
    pub at: DirOpArgs<'a>,
    pub what: MknodWhat,
}

/// LINK: the existing file and the new name.
#[derive(Debug, PartialEq, Eq)]
pub struct LinkArgs<'a> {
    pub file: Fh,
    pub link: DirOpArgs<'a>,
}

#[derive(Debug, PartialEq, Eq)]
pub struct RenameArgs<'a> {
    pub from: DirOpArgs<'a>,
    pub to: DirOpArgs<'a>,
}

/// READDIR (`maxcount` = `count`, `dircount` unused) and READDIRPLUS.
#[derive(Debug, PartialEq, Eq)]
pub struct ReadDirArgs {
    pub fh: Fh,
    pub cookie: u64,
    pub verifier: [u8; 8],
    pub dircount: u32,
    pub maxcount: u32,
}

pub fn fh_args(b: &[u8]) -> Result<FhArgs, ProtocolError> {
    let mut r = XdrReader::new(b);
    Ok(FhArgs { fh: read_fh(&mut r)? })
}

fn read_dirop<'a>(r: &mut XdrReader<'a>) -> Result<DirOpArgs<'a>, ProtocolError> {
    Ok(DirOpArgs { dir: read_fh(r)?, name: read_name(r)? })
}

pub fn dirop_args(b: &[u8]) -> Result<DirOpArgs<'_>, ProtocolError> {
    read_dirop(&mut XdrReader::new(b))
}

pub fn setattr_args(b: &[u8]) -> Result<SetAttrArgs, ProtocolError> {
    let mut r = XdrReader::new(b);
    Ok(SetAttrArgs { fh: read_fh(&mut r)?, attr: read_sattr3(&mut r)?, guard: read_optional_time(&mut r)? })
}

pub fn access_args(b: &[u8]) -> Result<AccessArgs, ProtocolError> {
    let mut r = XdrReader::new(b);
    Ok(AccessArgs { fh: read_fh(&mut r)?, access: r.u32()? })
}

pub fn range_args(b: &[u8]) -> Result<RangeArgs, ProtocolError> {
    let mut r = XdrReader::new(b);
    Ok(RangeArgs { fh: read_fh(&mut r)?, offset: r.u64()?, count: r.u32()? })
}

pub fn write_args(b: &[u8]) -> Result<WriteArgs, ProtocolError> {
    let mut r = XdrReader::new(b);
    let fh = read_fh(&mut r)?;
    let offset = r.u64()?;
    let count = r.u32()?;
    let stable = match r.u32()? {
        0 => Stability::Unstable,
        1 => Stability::DataSync,
        2 => Stability::FileSync,
        v => return Err(ProtocolError::BadDiscriminant { what: "stable_how", value: v }),
    };
    // The payload must be exactly `count` bytes (as Linux nfsd requires).
    let data = r.opaque_range(count as usize)?;
    if data.len() != count as usize {
        return Err(ProtocolError::Truncated { needed: count as usize, remaining: data.len() });
    }
    Ok(WriteArgs { fh, offset, count, stable, data })
}

pub fn create_args(b: &[u8]) -> Result<CreateArgs<'_>, ProtocolError> {
    let mut r = XdrReader::new(b);
    let at = read_dirop(&mut r)?;
    let how = match r.u32()? {
        0 => CreateHow::Unchecked(read_sattr3(&mut r)?),
        1 => CreateHow::Guarded(read_sattr3(&mut r)?),
        2 => CreateHow::Exclusive(r.fixed::<8>()?),
        v => return Err(ProtocolError::BadDiscriminant { what: "createmode3", value: v }),
    };
    Ok(CreateArgs { at, how })
}

pub fn mkdir_args(b: &[u8]) -> Result<MkdirArgs<'_>, ProtocolError> {
    let mut r = XdrReader::new(b);
    Ok(MkdirArgs { at: read_dirop(&mut r)?, attr: read_sattr3(&mut r)? })
}

pub fn symlink_args(b: &[u8]) -> Result<SymlinkArgs<'_>, ProtocolError> {
    let mut r = XdrReader::new(b);
    Ok(SymlinkArgs { at: read_dirop(&mut r)?, attr: read_sattr3(&mut r)?, target: r.opaque(MAX_WIRE_PATH)? })
}

pub fn mknod_args(b: &[u8]) -> Result<MknodArgs<'_>, ProtocolError> {
    let mut r = XdrReader::new(b);
    let at = read_dirop(&mut r)?;
    let what = match r.u32()? {
        t @ (3 | 4) => {
            let attr = read_sattr3(&mut r)?;
            MknodWhat::Device { block: t == 3, attr, major: r.u32()?, minor: r.u32()? }
        }
        t @ (6 | 7) => MknodWhat::Pipe { socket: t == 6, attr: read_sattr3(&mut r)? },
        1 | 2 | 5 => MknodWhat::BadType,
        v => return Err(ProtocolError::BadDiscriminant { what: "ftype3", value: v }),
    };
    Ok(MknodArgs { at, what })
}

pub fn link_args(b: &[u8]) -> Result<LinkArgs<'_>, ProtocolError> {
    let mut r = XdrReader::new(b);
    Ok(LinkArgs { file: read_fh(&mut r)?, link: read_dirop(&mut r)? })
}

pub fn rename_args(b: &[u8]) -> Result<RenameArgs<'_>, ProtocolError> {
    let mut r = XdrReader::new(b);
    Ok(RenameArgs { from: read_dirop(&mut r)?, to: read_dirop(&mut r)? })
}

pub fn readdir_args(b: &[u8]) -> Result<ReadDirArgs, ProtocolError> {
    let mut r = XdrReader::new(b);
    let (fh, cookie, verifier) = (read_fh(&mut r)?, r.u64()?, r.fixed::<8>()?);
    let count = r.u32()?;
    Ok(ReadDirArgs { fh, cookie, verifier, dircount: count, maxcount: count })
}

pub fn readdirplus_args(b: &[u8]) -> Result<ReadDirArgs, ProtocolError> {
    let mut r = XdrReader::new(b);
    let (fh, cookie, verifier) = (read_fh(&mut r)?, r.u64()?, r.fixed::<8>()?);
    Ok(ReadDirArgs { fh, cookie, verifier, dircount: r.u32()?, maxcount: r.u32()? })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xdr::XdrWriter;
    use proptest::prelude::*;
    use proto::{FileHandle, FsError};

    const H: FileHandle = FileHandle { share_id: 1, ino: 2, generation: 3 };

    fn fh_bytes(w: &mut XdrWriter) {
        w.opaque(&H.encode());
    }

    fn check<T: std::fmt::Debug + PartialEq>(
        build: impl FnOnce(&mut XdrWriter),
        decode: impl for<'a> Fn(&'a [u8]) -> Result<T, ProtocolError>,
        expected: Result<T, ProtocolError>,
    ) {
        let mut w = XdrWriter::new();
        build(&mut w);
        let bytes = w.into_inner();
        assert_eq!(decode(&bytes), expected);
    }

    #[test]
    fn write_payload_is_a_range_and_must_match_count() {
        let build = |count: u32, data: &'static [u8], stable: u32| {
            move |w: &mut XdrWriter| {
                fh_bytes(w);
                w.u64(10);
                w.u32(count);
                w.u32(stable);
                w.opaque(data);
            }
        };
        check(
            build(3, b"abc", 0),
            write_args,
            Ok(WriteArgs { fh: Ok(H), offset: 10, count: 3, stable: Stability::Unstable, data: 52..55 }),
        );
        check(build(3, b"ab", 2), write_args, Err(ProtocolError::Truncated { needed: 3, remaining: 2 }));
        check(build(2, b"abc", 2), write_args, Err(ProtocolError::TooLong { len: 3, max: 2 }));
        check(build(3, b"abc", 3), write_args, Err(ProtocolError::BadDiscriminant { what: "stable_how", value: 3 }));
    }

    fn build(f: impl FnOnce(&mut XdrWriter)) -> Vec<u8> {
        let mut w = XdrWriter::new();
        f(&mut w);
        w.into_inner().to_vec()
    }

    #[test]
    fn create_modes() {
        let exclusive = build(|w| {
            fh_bytes(w);
            w.opaque(b"f");
            w.u32(2);
            w.fixed(&[1, 2, 3, 4, 5, 6, 7, 8]);
        });
        assert_eq!(
            create_args(&exclusive),
            Ok(CreateArgs {
                at: DirOpArgs { dir: Ok(H), name: b"f" },
                how: CreateHow::Exclusive([1, 2, 3, 4, 5, 6, 7, 8])
            })
        );
        let guarded_bad_handle = build(|w| {
            w.opaque(&[9; 8]);
            w.opaque(b"f");
            w.u32(1);
            for v in [1, 0o600, 0, 0, 0, 0, 0] {
                w.u32(v);
            }
        });
        assert_eq!(
            create_args(&guarded_bad_handle),
            Ok(CreateArgs {
                at: DirOpArgs { dir: Err(FsError::BadHandle), name: b"f" },
                how: CreateHow::Guarded(Sattr3 { mode: Some(0o600), ..Sattr3::NONE }),
            })
        );
        let bad_mode = build(|w| {
            fh_bytes(w);
            w.opaque(b"f");
            w.u32(3);
        });
        assert_eq!(create_args(&bad_mode), Err(ProtocolError::BadDiscriminant { what: "createmode3", value: 3 }));
    }

    #[test]
    fn readdirplus_counts() {
        check(
            |w| {
                fh_bytes(w);
                w.u64(5);
                w.fixed(&[0; 8]);
                w.u32(100);
                w.u32(200);
            },
            readdirplus_args,
            Ok(ReadDirArgs { fh: Ok(H), cookie: 5, verifier: [0; 8], dircount: 100, maxcount: 200 }),
        );
    }

    #[test]
    fn mknod_kinds() {
        let args = |t: u32, tail: &[u32]| {
            build(|w| {
                fh_bytes(w);
                w.opaque(b"n");
                w.u32(t);
                for v in tail {
                    w.u32(*v);
                }
            })
        };
        let at = || DirOpArgs { dir: Ok(H), name: b"n" };
        let none = [0, 0, 0, 0, 0, 0];
        let dev = [0, 0, 0, 0, 0, 0, 8, 1];
        assert_eq!(
            mknod_args(&args(4, &dev)),
            Ok(MknodArgs {
                at: at(),
                what: MknodWhat::Device { block: false, attr: Sattr3::NONE, major: 8, minor: 1 }
            })
        );
        assert_eq!(
            mknod_args(&args(7, &none)),
            Ok(MknodArgs { at: at(), what: MknodWhat::Pipe { socket: false, attr: Sattr3::NONE } })
        );
        assert_eq!(mknod_args(&args(2, &[])), Ok(MknodArgs { at: at(), what: MknodWhat::BadType }));
        assert_eq!(mknod_args(&args(9, &[])), Err(ProtocolError::BadDiscriminant { what: "ftype3", value: 9 }));
        // A device without its specdata3 is truncated.
        assert!(matches!(mknod_args(&args(3, &none)), Err(ProtocolError::Truncated { .. })));
    }

    #[test]
    fn symlink_and_rename() {
        let b = build(|w| {
            fh_bytes(w);
            w.opaque(b"l");
            for v in [0, 0, 0, 0, 0, 0] {
                w.u32(v);
            }
            w.opaque(b"/target");
        });
        assert_eq!(
            symlink_args(&b),
            Ok(SymlinkArgs { at: DirOpArgs { dir: Ok(H), name: b"l" }, attr: Sattr3::NONE, target: b"/target" })
        );
        let b = build(|w| {
            fh_bytes(w);
            w.opaque(b"a");
            fh_bytes(w);
            w.opaque(b"b");
        });
        assert_eq!(
            rename_args(&b),
            Ok(RenameArgs { from: DirOpArgs { dir: Ok(H), name: b"a" }, to: DirOpArgs { dir: Ok(H), name: b"b" } })
        );
    }

    fn no_panic(bytes: &[u8]) {
        let _ = fh_args(bytes);
        let _ = dirop_args(bytes);
        let _ = setattr_args(bytes);
        let _ = access_args(bytes);
        let _ = range_args(bytes);
        if let Ok(a) = write_args(bytes) {
            assert!(a.data.end <= bytes.len());
        }
        let _ = create_args(bytes);
        let _ = mkdir_args(bytes);
        let _ = readdir_args(bytes);
        let _ = readdirplus_args(bytes);
        let _ = symlink_args(bytes);
        let _ = mknod_args(bytes);
        let _ = link_args(bytes);
        let _ = rename_args(bytes);
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic_any_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            no_panic(&bytes);
        }

        #[test]
        fn random_tails_after_a_good_handle_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..120)) {
            let mut w = XdrWriter::new();
            fh_bytes(&mut w);
            let mut bytes = w.into_inner().to_vec();
            bytes.extend(tail);
            no_panic(&bytes);
        }
    }
}
