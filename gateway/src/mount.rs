//! The MOUNT protocol version 3 (RFC 1813 §5), program 100005, served on the NFS port.
//!
//! Owns: all six procedures: NULL; MNT (export path -> root file handle + accepted auth
//! flavours, after the export's client list: MNT3ERR_ACCES for a client not on it); DUMP
//! (the mounts this gateway handed out: client address + path, from the `Vfs`'s
//! [`MountTable`](crate::exports::MountTable), advisory and bounded); UMNT and UMNTALL (drop
//! the caller's entries); EXPORT (every share with its group list: the allowed-client
//! entries, or `*` for a share open to every client).
//!
//! Must never: hand out a handle that is not `FileHandle::encode()` of the share root's
//! node, or a handle to a client the share's list does not allow.

use proto::{FileHandle, FsError};

use crate::exports::Export;
use crate::nfs3::status::{MountStat3, mountstat3_from};
use crate::rpc::auth::{AUTH_NONE, AUTH_SYS};
use crate::rpc::{CallContext, ProcOutcome, ProtocolError};
use crate::vfs::Vfs;
use crate::xdr::{XdrReader, XdrWriter};

pub const PROGRAM: u32 = 100_005;
pub const VERSION: u32 = 3;
/// Longest export path (MNTPATHLEN).
pub const MNT_PATH_LEN: usize = 1024;
/// Longest host or group name (MNTNAMLEN).
pub const MNT_NAME_LEN: usize = 255;

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
        0 => ProcOutcome::Ok,
        1 => match dirpath_args(args) {
            Ok(path) => mnt(vfs, ctx, path, w).await,
            Err(_) => ProcOutcome::GarbageArgs,
        },
        2 => {
            dump(vfs, w);
            ProcOutcome::Ok
        }
        3 => match dirpath_args(args) {
            Ok(path) => {
                if let (Some(host), Ok(path)) = (host_of(ctx), std::str::from_utf8(path)) {
                    vfs.mount_table().remove(&host, normalize_export_path(path));
                }
                ProcOutcome::Ok
            }
            Err(_) => ProcOutcome::GarbageArgs,
        },
        4 => {
            if let Some(host) = host_of(ctx) {
                vfs.mount_table().remove_host(&host);
            }
            ProcOutcome::Ok
        }
        5 => export(vfs, w).await,
        _ => ProcOutcome::ProcUnavail,
    }
}

/// `/export/` and `/export` name the same export, as they do for knfsd.
fn normalize_export_path(path: &str) -> &str {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() { "/" } else { trimmed }
}

/// The caller's host as DUMP lists it (its address), if known.
fn host_of(ctx: &CallContext) -> Option<String> {
    ctx.client.map(|a| a.ip().to_string())
}

async fn mnt<V: Vfs>(vfs: &V, ctx: &CallContext, path: &[u8], w: &mut XdrWriter) -> ProcOutcome {
    let r: Result<FileHandle, FsError> = async {
        let path = std::str::from_utf8(path).map_err(|_| FsError::NotFound)?;
        let share = vfs.mount(normalize_export_path(path)).await?;
        if !Export::from_share(&share).allows(ctx.client.map(|a| a.ip())) {
            return Err(FsError::Access);
        }
        let h = share
            .root
            .and_then(|root| root.node)
            .map(FileHandle::from)
            .ok_or_else(|| FsError::Internal(format!("share {} has no root node", share.share_id)))?;
        if let Some(host) = host_of(ctx) {
            vfs.mount_table().record(&host, &share.export_path);
        }
        Ok(h)
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

/// DUMP: `mountlist` = (hostname, directory, next)*.
fn dump<V: Vfs>(vfs: &V, w: &mut XdrWriter) {
    for m in vfs.mount_table().list() {
        if m.host.len() <= MNT_NAME_LEN && m.path.len() <= MNT_PATH_LEN {
            w.bool(true);
            w.opaque(m.host.as_bytes());
            w.opaque(m.path.as_bytes());
        }
    }
    w.bool(false);
}

/// EXPORT: `exports` = (dirpath, groups, next)*, groups = (name, next)*.
async fn export<V: Vfs>(vfs: &V, w: &mut XdrWriter) -> ProcOutcome {
    match vfs.exports().await {
        Ok(shares) => {
            for share in shares.iter().filter(|s| s.export_path.len() <= MNT_PATH_LEN) {
                w.bool(true);
                w.opaque(share.export_path.as_bytes());
                let groups: Vec<&str> = if share.allowed_clients.is_empty() {
                    vec!["*"]
                } else {
                    share.allowed_clients.iter().map(String::as_str).collect()
                };
                for g in groups.into_iter().filter(|g| g.len() <= MNT_NAME_LEN) {
                    w.bool(true);
                    w.opaque(g.as_bytes());
                }
                w.bool(false);
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
