//! The NFSv3 namespace procedures beyond create/remove: SYMLINK, READLINK, MKNOD, LINK and
//! RENAME (RFC 1813 §3.3.5, 3.3.10, 3.3.11, 3.3.14, 3.3.15).
//!
//! Owns: checking names and targets, building the metad-shaped requests, and the resok /
//! resfail bodies (SYMLINK and MKNOD answer like CREATE; failure bodies carry no
//! attributes, which the RFC allows). MKNOD of a regular file, directory or symlink is
//! NFS3ERR_BADTYPE. New objects are owned by the caller; other sattr3 fields are applied
//! with a SETATTR afterwards (as for CREATE).
//!
//! Must never: map errors except through `status::nfsstat3_from`, or talk to anything but
//! the `Vfs`.

use proto::{FsError, pb};

use crate::nfs3::args::{self, MknodWhat};
use crate::nfs3::procs::{apply_rest, check_name, created, fail, no_attr, no_attrs, no_wcc, ok, rest_of};
use crate::nfs3::status::NfsStat3;
use crate::nfs3::types::{self, PATH_MAX};
use crate::rpc::{CallContext, ProtocolError};
use crate::vfs::Vfs;
use crate::xdr::XdrWriter;

type Res = Result<NfsStat3, ProtocolError>;

/// A symlink target metad may store: not empty, no NUL, at most `PATH_MAX` bytes.
fn check_target(t: &[u8]) -> Result<&[u8], FsError> {
    if t.len() > PATH_MAX {
        return Err(FsError::NameTooLong);
    }
    if t.is_empty() || t.contains(&0) {
        return Err(FsError::Invalid("symlink target empty or containing NUL".into()));
    }
    Ok(t)
}

pub async fn symlink<V: Vfs>(vfs: &V, ctx: &CallContext, args: &[u8], w: &mut XdrWriter) -> Res {
    let a = args::symlink_args(args)?;
    let cred = ctx.cred.cred();
    let r = async {
        let req = pb::SymlinkRequest {
            dir: Some(a.at.dir?.into()),
            name: check_name(a.at.name)?.to_vec(),
            target: check_target(a.target)?.to_vec(),
            mode: a.attr.mode.unwrap_or(0o777) & 0o7777,
            ..Default::default()
        };
        let reply = vfs.symlink(&cred, req).await?;
        apply_rest(vfs, &cred, reply, &rest_of(&a.attr, &cred, false)).await
    }
    .await;
    Ok(created(w, r))
}

pub async fn readlink<V: Vfs>(vfs: &V, ctx: &CallContext, args: &[u8], w: &mut XdrWriter) -> Res {
    let a = args::fh_args(args)?;
    let r = async { vfs.readlink(&ctx.cred.cred(), a.fh?).await }.await;
    Ok(match r {
        Ok(reply) => {
            let s = ok(w);
            types::write_post_op_attr(w, reply.attr.as_ref());
            w.opaque(&reply.target);
            s
        }
        Err(e) => fail(w, &e, no_attr),
    })
}

pub async fn mknod<V: Vfs>(vfs: &V, ctx: &CallContext, args: &[u8], w: &mut XdrWriter) -> Res {
    let a = args::mknod_args(args)?;
    let cred = ctx.cred.cred();
    let (kind, attr, major, minor) = match a.what {
        MknodWhat::Device { block, attr, major, minor } => {
            (if block { pb::FileType::BlockDevice } else { pb::FileType::CharDevice }, attr, major, minor)
        }
        MknodWhat::Pipe { socket, attr } => {
            (if socket { pb::FileType::Socket } else { pb::FileType::Fifo }, attr, 0, 0)
        }
        MknodWhat::BadType => {
            w.u32(NfsStat3::BadType as u32);
            no_wcc(w);
            return Ok(NfsStat3::BadType);
        }
    };
    let r = async {
        let req = pb::MknodRequest {
            dir: Some(a.at.dir?.into()),
            name: check_name(a.at.name)?.to_vec(),
            kind: kind as i32,
            mode: attr.mode.unwrap_or(0o644) & 0o7777,
            rdev_major: major,
            rdev_minor: minor,
            ..Default::default()
        };
        let reply = vfs.mknod(&cred, req).await?;
        apply_rest(vfs, &cred, reply, &rest_of(&attr, &cred, false)).await
    }
    .await;
    Ok(created(w, r))
}

pub async fn link<V: Vfs>(vfs: &V, ctx: &CallContext, args: &[u8], w: &mut XdrWriter) -> Res {
    let a = args::link_args(args)?;
    let r = async { vfs.link(&ctx.cred.cred(), a.file?, a.link.dir?, check_name(a.link.name)?).await }.await;
    Ok(match r.and_then(|reply| reply.attr.is_some().then_some(reply).ok_or_else(|| no_attrs("Link"))) {
        Ok(reply) => {
            let s = ok(w);
            types::write_post_op_attr(w, reply.attr.as_ref());
            types::write_wcc_dir(w, reply.dir.as_ref());
            s
        }
        Err(e) => fail(w, &e, |w| {
            no_attr(w);
            no_wcc(w);
        }),
    })
}

pub async fn rename<V: Vfs>(vfs: &V, ctx: &CallContext, args: &[u8], w: &mut XdrWriter) -> Res {
    let a = args::rename_args(args)?;
    let r = async {
        let from = (a.from.dir?, check_name(a.from.name)?);
        let to = (a.to.dir?, check_name(a.to.name)?);
        vfs.rename(&ctx.cred.cred(), from, to).await
    }
    .await;
    Ok(match r {
        Ok(reply) => {
            let s = ok(w);
            types::write_wcc_dir(w, reply.from_dir.as_ref());
            types::write_wcc_dir(w, reply.to_dir.as_ref());
            s
        }
        Err(e) => fail(w, &e, |w| {
            no_wcc(w);
            no_wcc(w);
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(check_target(b"/a/b"), Ok(&b"/a/b"[..]));
        assert!(matches!(check_target(b""), Err(FsError::Invalid(_))));
        assert!(matches!(check_target(b"a\0b"), Err(FsError::Invalid(_))));
        assert_eq!(check_target(&[b'a'; PATH_MAX + 1]), Err(FsError::NameTooLong));
        assert!(check_target(&[b'a'; PATH_MAX]).is_ok());
    }
}
