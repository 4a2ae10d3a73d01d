//! NFS version 3 (RFC 1813), program 100003, over the `Vfs` trait.
//!
//! Owns: procedure numbers and names, routing a call to its procedure (all 22 of RFC 1813
//! are implemented) after the export check (`crate::exports`), and the server's transfer
//! limits (FSINFO).
//!
//! Must never: map an `FsError` to a status anywhere but `status`, or talk to metad or
//! block daemons (everything goes through `Vfs`).

pub mod args;
mod namespace;
mod procs;
pub(crate) mod readdir;
pub mod status;
pub mod types;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_exports;

use bytes::Bytes;

use crate::exports::{self, Admission};
use crate::rpc::{CallContext, ProcOutcome, ProtocolError};
use crate::vfs::Vfs;
use crate::xdr::XdrWriter;
use status::NfsStat3;

pub const PROGRAM: u32 = 100_003;
pub const VERSION: u32 = 3;
/// Largest READ answered (bytes); larger requests are shortened.
pub const RTMAX: u32 = 1 << 20;
/// Largest WRITE accepted (bytes); larger requests are shortened (the reply says so).
pub const WTMAX: u32 = 1 << 20;

const NAMES: [&str; 22] = [
    "NULL",
    "GETATTR",
    "SETATTR",
    "LOOKUP",
    "ACCESS",
    "READLINK",
    "READ",
    "WRITE",
    "CREATE",
    "MKDIR",
    "SYMLINK",
    "MKNOD",
    "REMOVE",
    "RMDIR",
    "RENAME",
    "LINK",
    "READDIR",
    "READDIRPLUS",
    "FSSTAT",
    "FSINFO",
    "PATHCONF",
    "COMMIT",
];

/// The procedure's name in capitals (the metrics label), if it exists.
pub fn proc_name(proc_num: u32) -> Option<&'static str> {
    NAMES.get(proc_num as usize).copied()
}

/// Runs NFSv3 procedure `proc_num`, appending its results (status first) to `w`. Every
/// procedure but NULL first passes `exports::admit` (client list, read-only, squashing).
pub async fn call<V: Vfs>(vfs: &V, ctx: &CallContext, proc_num: u32, args: &Bytes, w: &mut XdrWriter) -> ProcOutcome {
    if proc_num == 0 {
        return ProcOutcome::Ok;
    }
    if proc_name(proc_num).is_none() {
        return ProcOutcome::ProcUnavail;
    }
    let (ctx, read_only) = match exports::admit(vfs, ctx, proc_num, args).await {
        Admission::Run { ctx, read_only } => (ctx, read_only),
        Admission::Refuse(e) => {
            tracing::debug!(xid = ctx.xid, proc = proc_name(proc_num), error = %e, "NFS call refused by the export");
            procs::refuse(w, proc_num, &e);
            return ProcOutcome::Failed;
        }
    };
    let ctx = &ctx;
    let result: Result<NfsStat3, ProtocolError> = match proc_num {
        1 => procs::getattr(vfs, args, w).await,
        2 => procs::setattr(vfs, ctx, args, w).await,
        3 => procs::lookup(vfs, ctx, args, w).await,
        4 => procs::access(vfs, ctx, args, w, read_only).await,
        5 => namespace::readlink(vfs, ctx, args, w).await,
        6 => procs::read(vfs, ctx, args, w).await,
        7 => procs::write(vfs, ctx, args, w).await,
        8 => procs::create(vfs, ctx, args, w).await,
        9 => procs::mkdir(vfs, ctx, args, w).await,
        10 => namespace::symlink(vfs, ctx, args, w).await,
        11 => namespace::mknod(vfs, ctx, args, w).await,
        12 => procs::remove(vfs, ctx, args, w, false).await,
        13 => procs::remove(vfs, ctx, args, w, true).await,
        14 => namespace::rename(vfs, ctx, args, w).await,
        15 => namespace::link(vfs, ctx, args, w).await,
        16 => readdir::readdir(vfs, ctx, args, w, false).await,
        17 => readdir::readdir(vfs, ctx, args, w, true).await,
        18 => procs::fsstat(vfs, args, w).await,
        19 => procs::fsinfo(vfs, args, w).await,
        20 => procs::pathconf(vfs, args, w).await,
        21 => procs::commit(vfs, ctx, args, w).await,
        _ => return ProcOutcome::ProcUnavail,
    };
    match result {
        Ok(NfsStat3::Ok) => ProcOutcome::Ok,
        Ok(_) => ProcOutcome::Failed,
        Err(e) => {
            tracing::debug!(xid = ctx.xid, proc = proc_name(proc_num), error = %e, "undecodable NFS arguments");
            ProcOutcome::GarbageArgs
        }
    }
}
