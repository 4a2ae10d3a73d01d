//! The NFSv3 procedures that map one-to-one onto `Vfs` calls on one object (attributes,
//! data, create/remove); READDIR is in `readdir`, the namespace procedures (SYMLINK,
//! READLINK, MKNOD, LINK, RENAME) in `namespace`.
//!
//! Each procedure decodes its arguments first (a `ProtocolError` means GARBAGE_ARGS and
//! nothing was written), then calls the `Vfs` with the caller's credential and writes
//! `status` + the resok or resfail body of RFC 1813 §3.3. The returned `NfsStat3` is only
//! for metrics. The SETATTR guard and SET_TO_SERVER_TIME are passed to metad, which
//! applies them atomically with the change; ACCESS asks metad which bits are granted.
//!
//! Known simplification: failure bodies carry no attributes (post_op_attr/wcc_data
//! absent, which the RFC allows), except SETATTR's NFS3ERR_NOT_SYNC (current attributes).
//!
//! Must never: map errors except through `status::nfsstat3_from`, or copy WRITE data.

use bytes::Bytes;
use proto::{FileHandle, FsError, pb};

use crate::nfs3::args::{self, CreateHow};
use crate::nfs3::status::{NfsStat3, nfsstat3_from};
use crate::nfs3::types::{self, NAME_MAX, Sattr3};
use crate::nfs3::{RTMAX, WTMAX};
use crate::rpc::{CallContext, ProtocolError};
use crate::vfs::{ACCESS_EXECUTE, ACCESS_READ, ACCESS_WRITE, Stability, Vfs};
use crate::xdr::XdrWriter;

type Res = Result<NfsStat3, ProtocolError>;

const ACCESS3_READ: u32 = 0x01;
const ACCESS3_LOOKUP: u32 = 0x02;
const ACCESS3_MODIFY: u32 = 0x04;
const ACCESS3_EXTEND: u32 = 0x08;
const ACCESS3_DELETE: u32 = 0x10;
const ACCESS3_EXECUTE: u32 = 0x20;

/// PATHCONF linkmax (metad refuses more links with TES-MLINK).
const LINK_MAX: u32 = 65_000;

const FSF3_HOMOGENEOUS: u32 = 0x08;
const FSF3_CANSETTIME: u32 = 0x10;

/// Writes an error status and the procedure's failure body.
pub(super) fn fail(w: &mut XdrWriter, e: &FsError, body: impl FnOnce(&mut XdrWriter)) -> NfsStat3 {
    let s = nfsstat3_from(e);
    match e {
        // A fault of ours (or of metad's): the operator needs to see why.
        FsError::Internal(why) => tracing::error!(error = %why, "NFS call failed with a server fault"),
        FsError::Io(why) => tracing::warn!(error = %why, "NFS call failed with an I/O error"),
        _ => {}
    }
    w.u32(s as u32);
    body(w);
    s
}

pub(super) fn no_attr(w: &mut XdrWriter) {
    w.bool(false);
}

pub(super) fn ok(w: &mut XdrWriter) -> NfsStat3 {
    w.u32(NfsStat3::Ok as u32);
    NfsStat3::Ok
}

pub(super) fn no_wcc(w: &mut XdrWriter) {
    types::write_wcc(w, None, None);
}

fn void(_: &mut XdrWriter) {}

/// A name a procedure may pass to the Vfs.
pub(super) fn check_name(name: &[u8]) -> Result<&[u8], FsError> {
    if name.len() > NAME_MAX {
        return Err(FsError::NameTooLong);
    }
    if name.is_empty() {
        return Err(FsError::Invalid("empty file name".into()));
    }
    Ok(name)
}

/// The handle of the node an Attr describes (a Vfs answer without one is a server fault).
pub(super) fn handle_of(attr: &pb::Attr) -> Result<FileHandle, FsError> {
    attr.node.map(FileHandle::from).ok_or_else(|| FsError::Internal("attributes without a node".into()))
}

fn stable_how(s: Stability) -> u32 {
    match s {
        Stability::Unstable => 0,
        Stability::DataSync => 1,
        Stability::FileSync => 2,
    }
}

pub async fn getattr<V: Vfs>(vfs: &V, args: &[u8], w: &mut XdrWriter) -> Res {
    let a = args::fh_args(args)?;
    let r: Result<pb::Attr, FsError> = async { vfs.getattr(a.fh?).await }.await;
    Ok(match r {
        Ok(attr) => {
            let s = ok(w);
            types::write_fattr3(w, &attr);
            s
        }
        Err(e) => fail(w, &e, void),
    })
}

pub async fn setattr<V: Vfs>(vfs: &V, ctx: &CallContext, args: &[u8], w: &mut XdrWriter) -> Res {
    let a = args::setattr_args(args)?;
    let h = match a.fh {
        Ok(h) => h,
        Err(e) => return Ok(fail(w, &e, no_wcc)),
    };
    let mut req = setattr_request(h, &a.attr);
    req.guard_ctime = a.guard.map(|t| t.to_pb());
    Ok(match vfs.setattr(&ctx.cred.cred(), req).await {
        Ok(reply) => {
            let s = ok(w);
            types::write_wcc(w, reply.before.as_ref(), reply.after.as_ref());
            s
        }
        Err(FsError::NotSync) => {
            // Nothing changed: the current attributes are both before and after.
            let cur = vfs.getattr(h).await.ok();
            fail(w, &FsError::NotSync, |w| types::write_wcc(w, cur.as_ref(), cur.as_ref()))
        }
        Err(e) => fail(w, &e, no_wcc),
    })
}

/// A SetAttrRequest for `h` from a sattr3 (server times stamped by metad).
pub(super) fn setattr_request(h: FileHandle, s: &Sattr3) -> pb::SetAttrRequest {
    let (atime, atime_now) = s.atime.to_pb();
    let (mtime, mtime_now) = s.mtime.to_pb();
    pb::SetAttrRequest {
        node: Some(h.into()),
        size: s.size,
        mode: s.mode.map(|m| m & 0o7777),
        uid: s.uid,
        gid: s.gid,
        atime,
        mtime,
        atime_now,
        mtime_now,
        ..Default::default()
    }
}

pub async fn lookup<V: Vfs>(vfs: &V, ctx: &CallContext, args: &[u8], w: &mut XdrWriter) -> Res {
    let a = args::dirop_args(args)?;
    let r: Result<(FileHandle, pb::LookupReply), FsError> = async {
        let reply = vfs.lookup(&ctx.cred.cred(), a.dir?, check_name(a.name)?).await?;
        let h = handle_of(reply.attr.as_ref().ok_or(FsError::Internal("lookup without attributes".into()))?)?;
        Ok((h, reply))
    }
    .await;
    Ok(match r {
        Ok((h, reply)) => {
            let s = ok(w);
            types::write_fh(w, h);
            types::write_post_op_attr(w, reply.attr.as_ref());
            types::write_post_op_attr(w, reply.dir.as_ref());
            s
        }
        Err(e) => fail(w, &e, no_attr),
    })
}

/// The ACCESS3 bits metad's `granted` (read/write/execute) allow on an object of `kind`,
/// limited to `requested` (RFC 1813 §3.3.4, as Linux nfsd maps them): on a directory
/// LOOKUP needs search, MODIFY/EXTEND/DELETE need write and search, EXECUTE means
/// nothing; on anything else MODIFY/EXTEND need write, EXECUTE needs execute, LOOKUP and
/// DELETE mean nothing.
pub fn access3_bits(kind: i32, granted: u32, requested: u32) -> u32 {
    let (r, wr, x) = (granted & ACCESS_READ != 0, granted & ACCESS_WRITE != 0, granted & ACCESS_EXECUTE != 0);
    let mut allowed = 0;
    if r {
        allowed |= ACCESS3_READ;
    }
    if kind == pb::FileType::Directory as i32 {
        if x {
            allowed |= ACCESS3_LOOKUP;
        }
        if wr && x {
            allowed |= ACCESS3_MODIFY | ACCESS3_EXTEND | ACCESS3_DELETE;
        }
    } else {
        if wr {
            allowed |= ACCESS3_MODIFY | ACCESS3_EXTEND;
        }
        if x {
            allowed |= ACCESS3_EXECUTE;
        }
    }
    requested & allowed
}

/// Writes the refusal of procedure `proc_num` (1..=21) with `e`: the status and the
/// procedure's failure body with every attribute absent, as the procedures write it (void
/// for GETATTR, post_op_attr for the reads, wcc_data for the changes, two wcc_data for
/// RENAME, post_op_attr + wcc_data for LINK).
pub(super) fn refuse(w: &mut XdrWriter, proc_num: u32, e: &FsError) -> NfsStat3 {
    fail(w, e, |w| match proc_num {
        1 => {}
        2 | 7..=13 | 21 => no_wcc(w),
        14 => {
            no_wcc(w);
            no_wcc(w);
        }
        15 => {
            no_attr(w);
            no_wcc(w);
        }
        _ => no_attr(w),
    })
}

/// ACCESS3 bits a read-only export never grants.
const ACCESS3_CHANGES: u32 = ACCESS3_MODIFY | ACCESS3_EXTEND | ACCESS3_DELETE;

pub async fn access<V: Vfs>(vfs: &V, ctx: &CallContext, args: &[u8], w: &mut XdrWriter, read_only: bool) -> Res {
    let a = args::access_args(args)?;
    let mask = ACCESS_READ | ACCESS_WRITE | ACCESS_EXECUTE;
    let r = async { vfs.access(&ctx.cred.cred(), a.fh?, mask).await }.await;
    Ok(match r.and_then(|reply| reply.attr.map(|attr| (attr, reply.granted)).ok_or_else(|| no_attrs("Access"))) {
        Ok((attr, granted)) => {
            let s = ok(w);
            types::write_post_op_attr(w, Some(&attr));
            let bits = access3_bits(attr.kind, granted, a.access);
            w.u32(if read_only { bits & !ACCESS3_CHANGES } else { bits });
            s
        }
        Err(e) => fail(w, &e, no_attr),
    })
}

pub(super) fn no_attrs(call: &str) -> FsError {
    FsError::Internal(format!("{call} answered without attributes"))
}

pub async fn read<V: Vfs>(vfs: &V, ctx: &CallContext, args: &[u8], w: &mut XdrWriter) -> Res {
    let a = args::range_args(args)?;
    let count = a.count.min(RTMAX);
    let r = async { vfs.read(&ctx.cred.cred(), a.fh?, a.offset, count).await }.await;
    Ok(match r {
        Ok(reply) => {
            let data = if reply.data.len() > count as usize { reply.data.slice(..count as usize) } else { reply.data };
            let s = ok(w);
            types::write_post_op_attr(w, Some(&reply.attr));
            w.u32(data.len() as u32);
            w.bool(reply.eof);
            w.opaque_tail(data); // last item of READ3resok: sent without a copy
            s
        }
        Err(e) => fail(w, &e, no_attr),
    })
}

pub async fn write<V: Vfs>(vfs: &V, ctx: &CallContext, args: &Bytes, w: &mut XdrWriter) -> Res {
    let a = args::write_args(args)?;
    let mut data = args.slice(a.data.clone());
    if data.len() > WTMAX as usize {
        data = data.slice(..WTMAX as usize);
    }
    let len = data.len() as u32;
    tracing::debug!(offset = a.offset, count = a.count, stable = ?a.stable, "NFS WRITE");
    let r = async { vfs.write(&ctx.cred.cred(), a.fh?, a.offset, data, a.stable).await }.await;
    Ok(match r {
        Ok(reply) => {
            let s = ok(w);
            types::write_wcc(w, Some(&reply.before), Some(&reply.after));
            w.u32(len);
            w.u32(stable_how(reply.committed));
            w.fixed(&reply.verifier);
            s
        }
        Err(e) => fail(w, &e, no_wcc),
    })
}

/// Answers a CREATE, MKDIR, SYMLINK or MKNOD from the Vfs reply.
pub(super) fn created(w: &mut XdrWriter, r: Result<pb::CreateReply, FsError>) -> NfsStat3 {
    match r {
        Ok(reply) => {
            let s = ok(w);
            types::write_post_op_fh(w, reply.attr.as_ref());
            types::write_post_op_attr(w, reply.attr.as_ref());
            types::write_wcc_dir(w, reply.dir.as_ref());
            s
        }
        Err(e) => fail(w, &e, no_wcc),
    }
}

/// Applies the parts of a create's sattr3 that the create request could not carry.
pub(super) async fn apply_rest<V: Vfs>(
    vfs: &V,
    cred: &pb::Cred,
    mut reply: pb::CreateReply,
    rest: &Sattr3,
) -> Result<pb::CreateReply, FsError> {
    if *rest == Sattr3::NONE {
        return Ok(reply);
    }
    let h = handle_of(reply.attr.as_ref().ok_or_else(|| no_attrs("create"))?)?;
    let after = vfs.setattr(cred, setattr_request(h, rest)).await?;
    reply.attr = after.after;
    Ok(reply)
}

/// The sattr3 fields a create request did not carry: it carries the mode and the
/// caller's uid/gid (an owner other than the caller is a SETATTR, which metad checks),
/// and the size when `size_carried`.
pub(super) fn rest_of(s: &Sattr3, cred: &pb::Cred, size_carried: bool) -> Sattr3 {
    Sattr3 {
        mode: None,
        uid: s.uid.filter(|u| *u != cred.uid),
        gid: s.gid.filter(|g| *g != cred.gid),
        size: if size_carried { None } else { s.size },
        ..*s
    }
}

pub async fn create<V: Vfs>(vfs: &V, ctx: &CallContext, args: &[u8], w: &mut XdrWriter) -> Res {
    let a = args::create_args(args)?;
    let cred = ctx.cred.cred();
    let r = async {
        let dir = a.at.dir?;
        let name = check_name(a.at.name)?;
        let (how, sattr, verifier) = match a.how {
            CreateHow::Unchecked(s) => (pb::CreateHow::Unchecked, s, Vec::new()),
            CreateHow::Guarded(s) => (pb::CreateHow::Guarded, s, Vec::new()),
            CreateHow::Exclusive(v) => (pb::CreateHow::Exclusive, Sattr3::NONE, v.to_vec()),
        };
        // UNCHECKED carries the size (truncating an existing file in the same command).
        let size = if how == pb::CreateHow::Unchecked { sattr.size } else { None };
        let req = pb::CreateRequest {
            dir: Some(dir.into()),
            name: name.to_vec(),
            kind: pb::FileType::Regular as i32,
            mode: sattr.mode.unwrap_or(0o644) & 0o7777,
            uid: cred.uid,
            gid: cred.gid,
            how: how as i32,
            verifier,
            size,
            ..Default::default()
        };
        let reply = vfs.create(&cred, req).await?;
        apply_rest(vfs, &cred, reply, &rest_of(&sattr, &cred, size.is_some())).await
    }
    .await;
    Ok(created(w, r))
}

pub async fn mkdir<V: Vfs>(vfs: &V, ctx: &CallContext, args: &[u8], w: &mut XdrWriter) -> Res {
    let a = args::mkdir_args(args)?;
    let cred = ctx.cred.cred();
    let r = async {
        let req = pb::CreateRequest {
            dir: Some(a.at.dir?.into()),
            name: check_name(a.at.name)?.to_vec(),
            kind: pb::FileType::Directory as i32,
            mode: a.attr.mode.unwrap_or(0o755) & 0o7777,
            uid: cred.uid,
            gid: cred.gid,
            // An existing entry of any kind is NFS3ERR_EXIST for MKDIR.
            how: pb::CreateHow::Guarded as i32,
            verifier: Vec::new(),
            ..Default::default()
        };
        let reply = vfs.create(&cred, req).await?;
        apply_rest(vfs, &cred, reply, &rest_of(&a.attr, &cred, false)).await
    }
    .await;
    Ok(created(w, r))
}

pub async fn remove<V: Vfs>(vfs: &V, ctx: &CallContext, args: &[u8], w: &mut XdrWriter, directory: bool) -> Res {
    let a = args::dirop_args(args)?;
    let r = async { vfs.remove(&ctx.cred.cred(), a.dir?, check_name(a.name)?, directory).await }.await;
    Ok(match r {
        Ok(wcc) => {
            let s = ok(w);
            types::write_wcc_dir(w, Some(&wcc));
            s
        }
        Err(e) => fail(w, &e, no_wcc),
    })
}

pub async fn fsstat<V: Vfs>(vfs: &V, args: &[u8], w: &mut XdrWriter) -> Res {
    let a = args::fh_args(args)?;
    let r = async { vfs.fsstat(a.fh?).await }.await;
    Ok(match r {
        Ok(st) => {
            let s = ok(w);
            no_attr(w);
            w.u64(st.total_bytes);
            w.u64(st.free_bytes);
            w.u64(st.free_bytes); // abytes
            w.u64(st.total_files);
            w.u64(st.free_files);
            w.u64(st.free_files); // afiles
            w.u32(0); // invarsec
            s
        }
        Err(e) => fail(w, &e, no_attr),
    })
}

pub async fn fsinfo<V: Vfs>(vfs: &V, args: &[u8], w: &mut XdrWriter) -> Res {
    let a = args::fh_args(args)?;
    let r: Result<pb::Attr, FsError> = async { vfs.getattr(a.fh?).await }.await;
    Ok(match r {
        Ok(attr) => {
            let s = ok(w);
            types::write_post_op_attr(w, Some(&attr));
            w.u32(RTMAX); // rtmax
            w.u32(RTMAX); // rtpref
            w.u32(4096); // rtmult
            w.u32(WTMAX); // wtmax
            w.u32(WTMAX); // wtpref
            w.u32(4096); // wtmult
            w.u32(64 * 1024); // dtpref
            w.u64(i64::MAX as u64); // maxfilesize
            w.u32(0); // time_delta seconds
            w.u32(1); // time_delta nanoseconds
            w.u32(FSF3_HOMOGENEOUS | FSF3_CANSETTIME);
            s
        }
        Err(e) => fail(w, &e, no_attr),
    })
}

pub async fn pathconf<V: Vfs>(vfs: &V, args: &[u8], w: &mut XdrWriter) -> Res {
    let a = args::fh_args(args)?;
    let r: Result<pb::Attr, FsError> = async { vfs.getattr(a.fh?).await }.await;
    Ok(match r {
        Ok(attr) => {
            let s = ok(w);
            types::write_post_op_attr(w, Some(&attr));
            w.u32(LINK_MAX);
            w.u32(NAME_MAX as u32);
            w.bool(true); // no_trunc
            w.bool(true); // chown_restricted
            w.bool(false); // case_insensitive
            w.bool(true); // case_preserving
            s
        }
        Err(e) => fail(w, &e, no_attr),
    })
}

pub async fn commit<V: Vfs>(vfs: &V, ctx: &CallContext, args: &[u8], w: &mut XdrWriter) -> Res {
    let a = args::range_args(args)?;
    tracing::debug!(offset = a.offset, count = a.count, "NFS COMMIT");
    let r: Result<pb::Attr, FsError> = async { vfs.commit(&ctx.cred.cred(), a.fh?).await }.await;
    Ok(match r {
        Ok(attr) => {
            let s = ok(w);
            types::write_wcc(w, None, Some(&attr));
            w.fixed(&vfs.write_verifier());
            s
        }
        Err(e) => fail(w, &e, no_wcc),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: u32 = 0x3f;

    #[test]
    fn access_bits_from_granted() {
        let (dir, file) = (pb::FileType::Directory as i32, pb::FileType::Regular as i32);
        assert_eq!(access3_bits(file, 7, ALL), ACCESS3_READ | ACCESS3_MODIFY | ACCESS3_EXTEND | ACCESS3_EXECUTE);
        assert_eq!(access3_bits(file, ACCESS_READ, ALL), ACCESS3_READ);
        assert_eq!(access3_bits(file, 0, ALL), 0);
        assert_eq!(access3_bits(dir, 7, ALL), 0x1f); // no EXECUTE on a directory
        assert_eq!(access3_bits(dir, ACCESS_WRITE, ALL), 0); // write without search: nothing
        assert_eq!(access3_bits(dir, ACCESS_EXECUTE, ALL), ACCESS3_LOOKUP);
        assert_eq!(access3_bits(file, 7, ACCESS3_READ), ACCESS3_READ);
    }
}
