//! The MOUNT protocol version 3 (RFC 1813 §5), program 100005, served on the NFS port.
//!
//! Owns: NULL, MNT (export path -> root file handle + accepted auth flavours), DUMP
//! (always empty: the gateway keeps no mount list, invariant 1), UMNT and UMNTALL (no-ops
//! for the same reason) and EXPORT (the `Vfs`'s shares, without group lists).
//!
//! Must never: hand out a handle that is not `FileHandle::encode()` of the share root's
//! node, or keep per-client state.

use proto::{FileHandle, FsError};

use crate::nfs3::status::{MountStat3, mountstat3_from};
use crate::rpc::auth::{AUTH_NONE, AUTH_SYS};
use crate::rpc::{CallContext, ProcOutcome, ProtocolError};
use crate::vfs::Vfs;
use crate::xdr::{XdrReader, XdrWriter};

pub const PROGRAM: u32 = 100_005;
pub const VERSION: u32 = 3;
/// Longest export path (MNTPATHLEN).
pub const MNT_PATH_LEN: usize = 1024;

const NAMES: [&str; 6] = ["NULL", "MNT", "DUMP", "UMNT", "UMNTALL", "EXPORT"];

/// The procedure's name in capitals (the metrics label), if it exists.
pub fn proc_name(proc_num: u32) -> Option<&'static str> {
    NAMES.get(proc_num as usize).copied()
}

/// Decodes the `dirpath` argument of MNT and UMNT.
pub fn dirpath_args(b: &[u8]) -> Result<&[u8], ProtocolError> {
    XdrReader::new(b).opaque(MNT_PATH_LEN)
}

/// Runs MOUNT procedure `proc_num`, appending its results to `w`.
pub async fn call<V: Vfs>(vfs: &V, ctx: &CallContext, proc_num: u32, args: &[u8], w: &mut XdrWriter) -> ProcOutcome {
    match proc_num {
        0 | 4 => ProcOutcome::Ok,
        1 => match dirpath_args(args) {
            Ok(path) => mnt(vfs, ctx, path, w).await,
            Err(_) => ProcOutcome::GarbageArgs,
        },
        2 => {
            w.bool(false); // empty mountlist
            ProcOutcome::Ok
        }
        3 => match dirpath_args(args) {
            Ok(_) => ProcOutcome::Ok,
            Err(_) => ProcOutcome::GarbageArgs,
        },
        5 => export(vfs, w).await,
        _ => ProcOutcome::ProcUnavail,
    }
}

/// `/export/` and `/export` name the same export, as they do for knfsd.
fn normalize_export_path(path: &str) -> &str {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() { "/" } else { trimmed }
}

async fn mnt<V: Vfs>(vfs: &V, ctx: &CallContext, path: &[u8], w: &mut XdrWriter) -> ProcOutcome {
    let r: Result<FileHandle, FsError> = async {
        let path = std::str::from_utf8(path).map_err(|_| FsError::NotFound)?;
        let share = vfs.mount(normalize_export_path(path)).await?;
        share
            .root
            .and_then(|root| root.node)
            .map(FileHandle::from)
            .ok_or_else(|| FsError::Internal(format!("share {} has no root node", share.share_id)))
    }
    .await;
    match r {
        Ok(h) => {
            w.u32(MountStat3::Ok as u32);
            w.opaque(&h.encode());
            w.u32(2);
            w.u32(AUTH_SYS);
            w.u32(AUTH_NONE);
            ProcOutcome::Ok
        }
        Err(e) => {
            tracing::debug!(xid = ctx.xid, path = %String::from_utf8_lossy(path), error = %e, "MOUNT refused");
            w.u32(mountstat3_from(&e) as u32);
            ProcOutcome::Failed
        }
    }
}

async fn export<V: Vfs>(vfs: &V, w: &mut XdrWriter) -> ProcOutcome {
    match vfs.exports().await {
        Ok(shares) => {
            for share in shares.iter().filter(|s| s.export_path.len() <= MNT_PATH_LEN) {
                w.bool(true);
                w.opaque(share.export_path.as_bytes());
                w.bool(false); // no groups
            }
            w.bool(false);
            ProcOutcome::Ok
        }
        Err(e) => {
            // EXPORT has no status field: the only way to say "failed" is SYSTEM_ERR.
            tracing::warn!(error = %e, "listing exports failed");
            ProcOutcome::SystemErr
        }
    }
}

#[cfg(test)]
mod path_tests {
    use super::normalize_export_path;

    #[test]
    fn trailing_slashes_name_the_same_export() {
        assert_eq!(normalize_export_path("/export/"), "/export");
        assert_eq!(normalize_export_path("/export//"), "/export");
        assert_eq!(normalize_export_path("/export"), "/export");
        assert_eq!(normalize_export_path("/"), "/");
        assert_eq!(normalize_export_path(""), "/");
    }
}
