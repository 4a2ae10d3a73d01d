//! READDIR and READDIRPLUS (RFC 1813 §3.3.16-17): paging a directory into a size budget.
//!
//! Owns: computing each entry's encoded size and stopping before the reply would exceed
//! the client's `count` (READDIR) or `maxcount` / `dircount` (READDIRPLUS; `dircount`
//! counts fileid + name + cookie only, and 0 means "no separate limit"). Cookies and the
//! cookie verifier come from the `Vfs` (cookie 0 = start). `eof` is set only when the
//! `Vfs` said eof and every entry it returned fitted. "." (cookie 1) and ".." (cookie 2)
//! are listed first, as clients and tools expect: metad's directory slots start at 3
//! ([`FIRST_ENTRY_COOKIE`]), so these two cookies never name a real entry and a listing
//! resumed after either continues with metad's first entry. ".." of a share root is the root.
//!
//! Must never: send a reply larger than the client asked for, or claim eof early. The
//! client's cookie verifier is passed through, not checked here (metad owns cookie
//! validity: a stale one is NFS3ERR_BAD_COOKIE).

use bytes::Bytes;
use proto::{FsError, pb};

use crate::nfs3::args;
use crate::nfs3::procs::{fail, no_attr};
use crate::nfs3::status::NfsStat3;
use crate::nfs3::types::{self, POST_OP_ATTR_SIZE};
use crate::rpc::{CallContext, ProtocolError};
use crate::vfs::Vfs;
use crate::xdr::{XdrWriter, opaque_size};

/// status + post_op_attr(dir) + cookieverf + end-of-list + eof.
const FIXED_SIZE: usize = 4 + POST_OP_ATTR_SIZE + 8 + 4 + 4;
/// Smallest READDIR entry (value_follows + fileid + 1..4-byte name + cookie).
const MIN_ENTRY: usize = 4 + 8 + 8 + 8;
/// Cookie of ".", then of ".."; metad's first directory slot is [`FIRST_ENTRY_COOKIE`].
const DOT_COOKIE: u64 = 1;
const DOTDOT_COOKIE: u64 = 2;
/// The first cookie metad gives a directory entry (`metad::model::FIRST_SLOT`).
pub const FIRST_ENTRY_COOKIE: u64 = 3;
const _: () = assert!(DOT_COOKIE < DOTDOT_COOKIE && DOTDOT_COOKIE < FIRST_ENTRY_COOKIE);
/// Most entries asked of the Vfs in one call.
const MAX_ENTRIES: usize = 4096;

/// Encoded size of the directory part of an entry (value_follows, fileid, name, cookie).
fn dir_part_size(name: &[u8]) -> usize {
    4 + 8 + opaque_size(name.len()) + 8
}

/// Encoded size of the READDIRPLUS extras (post_op_attr + post_op_fh3).
fn plus_part_size(attr: Option<&pb::Attr>) -> usize {
    match attr {
        Some(a) => POST_OP_ATTR_SIZE + if a.node.is_some() { types::post_op_fh_size() } else { 4 },
        None => 4 + 4,
    }
}

pub async fn readdir<V: Vfs>(
    vfs: &V,
    ctx: &CallContext,
    args: &Bytes,
    w: &mut XdrWriter,
    plus: bool,
) -> Result<NfsStat3, ProtocolError> {
    let a = if plus { args::readdirplus_args(args)? } else { args::readdir_args(args)? };
    let max = a.maxcount as usize;
    let min_entry = MIN_ENTRY + if plus { plus_part_size(None) } else { 0 };
    let max_entries = (max.saturating_sub(FIXED_SIZE) / min_entry).clamp(1, MAX_ENTRIES) as u32;
    let verifier = u64::from_be_bytes(a.verifier);
    let cred = ctx.cred.cred();
    let r: Result<pb::ReadDirReply, FsError> = async {
        let dir = a.fh?;
        let mut reply = vfs.readdir(&cred, dir, a.cookie, verifier, max_entries).await?;
        if a.cookie < DOTDOT_COOKIE {
            let parent = vfs.lookup(&cred, dir, b"..").await?.attr;
            let mut dots = Vec::with_capacity(2);
            if a.cookie < DOT_COOKIE {
                dots.push(pb::DirEntry { name: b".".to_vec(), cookie: DOT_COOKIE, attr: reply.dir });
            }
            dots.push(pb::DirEntry { name: b"..".to_vec(), cookie: DOTDOT_COOKIE, attr: parent });
            reply.entries.splice(0..0, dots);
        }
        Ok(reply)
    }
    .await;
    let reply = match r {
        Ok(reply) => reply,
        Err(e) => return Ok(fail(w, &e, no_attr)),
    };

    let start = w.len();
    w.u32(NfsStat3::Ok as u32);
    types::write_post_op_attr(w, reply.dir.as_ref());
    w.fixed(&reply.cookie_verifier.to_be_bytes());
    let (mut used, mut dir_used, mut written) = (FIXED_SIZE, 0usize, 0usize);
    for e in &reply.entries {
        let dir_part = dir_part_size(&e.name);
        let size = dir_part + if plus { plus_part_size(e.attr.as_ref()) } else { 0 };
        let over_dircount = plus && a.dircount > 0 && dir_used + dir_part > a.dircount as usize;
        if used + size > max || over_dircount {
            break;
        }
        w.bool(true);
        w.u64(e.attr.as_ref().and_then(|a| a.node).map_or(0, |n| n.ino));
        w.opaque(&e.name);
        w.u64(e.cookie);
        if plus {
            types::write_post_op_attr(w, e.attr.as_ref());
            types::write_post_op_fh(w, e.attr.as_ref());
        }
        used += size;
        dir_used += dir_part;
        written += 1;
    }
    if written == 0 && !reply.entries.is_empty() {
        w.truncate(start);
        w.u32(NfsStat3::TooSmall as u32);
        types::write_post_op_attr(w, reply.dir.as_ref());
        return Ok(NfsStat3::TooSmall);
    }
    w.bool(false); // end of entry list
    w.bool(reply.eof && written == reply.entries.len());
    Ok(NfsStat3::Ok)
}
