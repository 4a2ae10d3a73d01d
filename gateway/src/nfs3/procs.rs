//! The NFSv3 procedures that map one-to-one onto `Vfs` calls (everything but READDIR).
//!
//! Each procedure decodes its arguments first (a `ProtocolError` means GARBAGE_ARGS and
//! nothing was written), then calls the `Vfs` and writes `status` + the resok or resfail
//! body of RFC 1813 §3.3. The returned `NfsStat3` is only for metrics.
//!
//! Known simplifications: failure bodies carry no attributes (post_op_attr/wcc_data
//! absent, which the RFC allows); the SETATTR guard is checked with a GETATTR before the
//! SETATTR, so it is not atomic with it (the `Vfs` has no guarded setattr yet).
//!
//! Must never: map errors except through `status::nfsstat3_from`, or copy WRITE data.

use bytes::Bytes;
use proto::{FileHandle, FsError, pb};

use crate::nfs3::args::{self, CreateHow};
use crate::nfs3::status::{NfsStat3, nfsstat3_from};
use crate::nfs3::types::{self, NAME_MAX, NfsTime, Sattr3};
use crate::nfs3::{RTMAX, WTMAX};
use crate::rpc::{CallContext, Credentials, ProtocolError};
use crate::vfs::{Stability, Vfs};
use crate::xdr::XdrWriter;

type Res = Result<NfsStat3, ProtocolError>;

const ACCESS3_READ: u32 = 0x01;
const ACCESS3_LOOKUP: u32 = 0x02;
const ACCESS3_MODIFY: u32 = 0x04;
const ACCESS3_EXTEND: u32 = 0x08;
const ACCESS3_DELETE: u32 = 0x10;
const ACCESS3_EXECUTE: u32 = 0x20;

const FSF3_HOMOGENEOUS: u32 = 0x08;
const FSF3_CANSETTIME: u32 = 0x10;

/// Writes an error status and the procedure's failure body.
pub(super) fn fail(w: &mut XdrWriter, e: &FsError, body: impl FnOnce(&mut XdrWriter)) -> NfsStat3 {
    let s = nfsstat3_from(e);
    w.u32(s as u32);
    body(w);
    s
}

fn ok(w: &mut XdrWriter) -> NfsStat3 {
    w.u32(NfsStat3::Ok as u32);
    NfsStat3::Ok
}

pub(super) fn no_attr(w: &mut XdrWriter) {
    w.bool(false);
}

fn no_wcc(w: &mut XdrWriter) {
    types::write_wcc(w, None, None);
}

fn void(_: &mut XdrWriter) {}

/// A name a procedure may pass to the Vfs.
fn check_name(name: &[u8]) -> Result<&[u8], FsError> {
    if name.len() > NAME_MAX {
        return Err(FsError::NameTooLong);
    }
    if name.is_empty() {
        return Err(FsError::Invalid("empty file name".into()));
    }
    Ok(name)
}

/// The handle of the node an Attr describes (a Vfs answer without one is a server fault).
fn handle_of(attr: &pb::Attr) -> Result<FileHandle, FsError> {
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

pub async fn setattr<V: Vfs>(vfs: &V, args: &[u8], w: &mut XdrWriter) -> Res {
    let a = args::setattr_args(args)?;
    let h = match a.fh {
        Ok(h) => h,
        Err(e) => return Ok(fail(w, &e, no_wcc)),
    };
    if let Some(guard) = a.guard {
        match vfs.getattr(h).await {
            Ok(cur) if NfsTime::from_pb(cur.ctime.as_ref()) != guard => {
                w.u32(NfsStat3::NotSync as u32);
                types::write_wcc(w, Some(&cur), Some(&cur));
                return Ok(NfsStat3::NotSync);
            }
            Ok(_) => {}
            Err(e) => return Ok(fail(w, &e, no_wcc)),
        }
    }
    Ok(match vfs.setattr(setattr_request(h, &a.attr)).await {
        Ok(reply) => {
            let s = ok(w);
            types::write_wcc(w, reply.before.as_ref(), reply.after.as_ref());
            s
        }
        Err(e) => fail(w, &e, no_wcc),
    })
}

fn setattr_request(h: FileHandle, s: &Sattr3) -> pb::SetAttrRequest {
    pb::SetAttrRequest {
        node: Some(h.into()),
        size: s.size,
        mode: s.mode.map(|m| m & 0o7777),
        uid: s.uid,
        gid: s.gid,
        atime: s.atime.resolve(),
        mtime: s.mtime.resolve(),
        ..Default::default()
    }
}

pub async fn lookup<V: Vfs>(vfs: &V, args: &[u8], w: &mut XdrWriter) -> Res {
    let a = args::dirop_args(args)?;
    let r: Result<(FileHandle, pb::LookupReply), FsError> = async {
        let reply = vfs.lookup(a.dir?, check_name(a.name)?).await?;
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

/// The ACCESS3 bits the mode allows `cred` (a hint: metad enforces permissions).
pub fn allowed_access(attr: &pb::Attr, cred: &Credentials, requested: u32) -> u32 {
    if cred.uid() == 0 {
        return requested;
    }
    let mode = attr.mode;
    let bits = if cred.uid() == attr.uid {
        (mode >> 6) & 7
    } else if cred.in_group(attr.gid) {
        (mode >> 3) & 7
    } else {
        mode & 7
    };
    let dir = attr.kind == pb::FileType::Directory as i32;
    let mut allowed = 0;
    if bits & 4 != 0 {
        allowed |= ACCESS3_READ;
    }
    if bits & 2 != 0 {
        allowed |= ACCESS3_MODIFY | ACCESS3_EXTEND;
        if dir {
            allowed |= ACCESS3_DELETE;
        }
    }
    if bits & 1 != 0 {
        allowed |= if dir { ACCESS3_LOOKUP } else { ACCESS3_EXECUTE };
    }
    requested & allowed
}

pub async fn access<V: Vfs>(vfs: &V, ctx: &CallContext, args: &[u8], w: &mut XdrWriter) -> Res {
    let a = args::access_args(args)?;
    let r: Result<pb::Attr, FsError> = async { vfs.getattr(a.fh?).await }.await;
    Ok(match r {
        Ok(attr) => {
            let s = ok(w);
            types::write_post_op_attr(w, Some(&attr));
            w.u32(allowed_access(&attr, &ctx.cred, a.access));
            s
        }
        Err(e) => fail(w, &e, no_attr),
    })
}

pub async fn read<V: Vfs>(vfs: &V, args: &[u8], w: &mut XdrWriter) -> Res {
    let a = args::range_args(args)?;
    let count = a.count.min(RTMAX);
    let r = async { vfs.read(a.fh?, a.offset, count).await }.await;
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

pub async fn write<V: Vfs>(vfs: &V, args: &Bytes, w: &mut XdrWriter) -> Res {
    let a = args::write_args(args)?;
    let mut data = args.slice(a.data.clone());
    if data.len() > WTMAX as usize {
        data = data.slice(..WTMAX as usize);
    }
    let len = data.len() as u32;
    tracing::debug!(offset = a.offset, count = a.count, stable = ?a.stable, "NFS WRITE");
    let r = async { vfs.write(a.fh?, a.offset, data, a.stable).await }.await;
    Ok(match r {
        Ok(reply) => {
            let s = ok(w);
            types::write_wcc(w, Some(&reply.before), Some(&reply.after));
            w.u32(len);
            w.u32(stable_how(reply.committed));
            w.fixed(&vfs.write_verifier());
            s
        }
        Err(e) => fail(w, &e, no_wcc),
    })
}

/// Answers a CREATE or MKDIR from the Vfs reply.
fn created(w: &mut XdrWriter, r: Result<pb::CreateReply, FsError>) -> NfsStat3 {
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

/// Applies the parts of a create's sattr3 that CreateRequest cannot carry.
async fn apply_rest<V: Vfs>(vfs: &V, mut reply: pb::CreateReply, s: &Sattr3) -> Result<pb::CreateReply, FsError> {
    let rest = Sattr3 { mode: None, uid: None, gid: None, ..*s };
    if rest == Sattr3::NONE {
        return Ok(reply);
    }
    let h = handle_of(reply.attr.as_ref().ok_or(FsError::Internal("create without attributes".into()))?)?;
    let after = vfs.setattr(setattr_request(h, &rest)).await?;
    reply.attr = after.after;
    Ok(reply)
}

pub async fn create<V: Vfs>(vfs: &V, ctx: &CallContext, args: &[u8], w: &mut XdrWriter) -> Res {
    let a = args::create_args(args)?;
    let r = async {
        let dir = a.at.dir?;
        let name = check_name(a.at.name)?;
        let (how, sattr, verifier) = match a.how {
            CreateHow::Unchecked(s) => (pb::CreateHow::Unchecked, s, Vec::new()),
            CreateHow::Guarded(s) => (pb::CreateHow::Guarded, s, Vec::new()),
            CreateHow::Exclusive(v) => (pb::CreateHow::Exclusive, Sattr3::NONE, v.to_vec()),
        };
        let req = pb::CreateRequest {
            dir: Some(dir.into()),
            name: name.to_vec(),
            kind: pb::FileType::Regular as i32,
            mode: sattr.mode.unwrap_or(0o644) & 0o7777,
            uid: ctx.cred.uid(),
            gid: ctx.cred.gid(),
            how: how as i32,
            verifier,
            ..Default::default()
        };
        let reply = vfs.create(req).await?;
        apply_rest(vfs, reply, &sattr).await
    }
    .await;
    Ok(created(w, r))
}

pub async fn mkdir<V: Vfs>(vfs: &V, ctx: &CallContext, args: &[u8], w: &mut XdrWriter) -> Res {
    let a = args::mkdir_args(args)?;
    let r = async {
        let req = pb::CreateRequest {
            dir: Some(a.at.dir?.into()),
            name: check_name(a.at.name)?.to_vec(),
            kind: pb::FileType::Directory as i32,
            mode: a.attr.mode.unwrap_or(0o755) & 0o7777,
            uid: ctx.cred.uid(),
            gid: ctx.cred.gid(),
            // An existing entry of any kind is NFS3ERR_EXIST for MKDIR.
            how: pb::CreateHow::Guarded as i32,
            verifier: Vec::new(),
            ..Default::default()
        };
        let reply = vfs.create(req).await?;
        apply_rest(vfs, reply, &a.attr).await
    }
    .await;
    Ok(created(w, r))
}

pub async fn remove<V: Vfs>(vfs: &V, args: &[u8], w: &mut XdrWriter, directory: bool) -> Res {
    let a = args::dirop_args(args)?;
    let r = async { vfs.remove(a.dir?, check_name(a.name)?, directory).await }.await;
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
            w.u32(1); // linkmax: no hard links yet
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

pub async fn commit<V: Vfs>(vfs: &V, args: &[u8], w: &mut XdrWriter) -> Res {
    let a = args::range_args(args)?;
    tracing::debug!(offset = a.offset, count = a.count, "NFS COMMIT");
    let r: Result<pb::Attr, FsError> = async { vfs.commit(a.fh?).await }.await;
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
    use crate::rpc::auth::AuthSys;

    fn attr(kind: pb::FileType, mode: u32) -> pb::Attr {
        pb::Attr { kind: kind as i32, mode, uid: 100, gid: 200, ..Default::default() }
    }

    fn sys(uid: u32, gid: u32, gids: &[u32]) -> Credentials {
        Credentials::Sys(AuthSys { stamp: 0, machine_name: vec![], uid, gid, gids: gids.to_vec() })
    }

    fn check(a: pb::Attr, cred: Credentials, expected: u32) {
        assert_eq!(allowed_access(&a, &cred, 0x3f), expected, "{a:?} {cred:?}");
    }

    #[test]
    fn access_from_mode_bits() {
        use pb::FileType::{Directory, Regular};
        check(attr(Regular, 0o640), sys(100, 1, &[]), ACCESS3_READ | ACCESS3_MODIFY | ACCESS3_EXTEND);
        check(attr(Regular, 0o640), sys(7, 1, &[200]), ACCESS3_READ);
        check(attr(Regular, 0o640), sys(7, 1, &[]), 0);
        check(attr(Regular, 0o755), Credentials::None, ACCESS3_READ | ACCESS3_EXECUTE);
        check(attr(Directory, 0o700), sys(100, 1, &[]), 0x1f); // no EXECUTE on a directory
        check(attr(Directory, 0o000), sys(0, 0, &[]), 0x3f);
        assert_eq!(allowed_access(&attr(Regular, 0o777), &sys(1, 1, &[]), ACCESS3_READ), ACCESS3_READ);
    }
}
