//! Operations that change one inode in place: SetAttr, CommitExtents and AcquireWriteLease.
//!
//! Owns: the NFS guard (ctime compare inside apply, so it is atomic with the change), the
//! ownership rules of chmod/chown/chgrp/utimes (through `perm`), server-time flags (the
//! proposer's time in the command), truncation and extension, extent replacement with
//! its chunk reference counts, and per-file write fencing (a commit under a lease that is
//! no longer the file's is refused, so a gateway that lost its clients cannot commit what
//! it held over what they wrote since through another one).
//! Must never: mutate before every refusal has been checked (see `apply`).

use super::apply::{R, WriteTables, clamp_add, touch_modified};
use super::perm::{self, AttrChange, W};
use crate::command::{ApplyError, NodeKey, Reply, TimeSet};
use crate::extents;
use crate::model::{AttrOut, Cred, Extent, FileKind};
use crate::store::access;
use crate::validate;

/// What a SetAttr asks for.
#[derive(Debug, Clone, Copy)]
pub(super) struct SetAttr {
    pub size: Option<u64>,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub atime: TimeSet,
    pub mtime: TimeSet,
    pub guard_ctime_ns: Option<i64>,
    /// The write lease on a size change (see `Op::SetAttr`).
    pub lease_for: Option<u64>,
}

fn pick_time(set: TimeSet, current: i64, now: i64) -> i64 {
    match set {
        TimeSet::Keep => current,
        TimeSet::Now => now,
        TimeSet::At(t) => t,
    }
}

/// The refusal for content operations on something that has no content.
fn not_regular(kind: FileKind) -> ApplyError {
    match kind {
        FileKind::Directory => ApplyError::IsDir,
        other => ApplyError::Invalid(format!("a {other:?} has no content")),
    }
}

impl WriteTables<'_> {
    pub(super) fn set_attr(&mut self, cred: &Cred, key: &NodeKey, s: &SetAttr, now: i64) -> R<Reply> {
        let node = self.live(key)?;
        if let Some(guard) = s.guard_ctime_ns
            && guard != node.ctime_ns
        {
            return Err(ApplyError::NotSync.into());
        }
        if let Some(size) = s.size {
            if node.kind != FileKind::Regular {
                return Err(not_regular(node.kind).into());
            }
            if size > validate::MAX_FILE_SIZE {
                return Err(ApplyError::TooBig.into());
            }
        }
        if let Some(m) = s.mode {
            validate::check_mode(m)?;
        }
        let is_at = |t: TimeSet| matches!(t, TimeSet::At(_));
        let change = AttrChange {
            size: s.size.is_some(),
            mode: s.mode,
            uid: s.uid,
            gid: s.gid,
            explicit_time: is_at(s.atime) || is_at(s.mtime),
            time_now: s.atime == TimeSet::Now || s.mtime == TimeSet::Now,
        };
        let mode = perm::check_setattr(cred, &node, &change)?;
        let changed = s.size.is_some()
            || s.mode.is_some()
            || s.uid.is_some()
            || s.gid.is_some()
            || s.atime != TimeSet::Keep
            || s.mtime != TimeSet::Keep;
        let before = node.clone();
        if !changed {
            return Ok(Reply::Changed {
                before: AttrOut { ino: key.ino, inode: before },
                after: AttrOut { ino: key.ino, inode: node },
            });
        }

        // Checks done; mutate.
        let mut after = node;
        let mut delta = 0;
        if let Some(size) = s.size {
            delta = self.resize(key.ino, &mut after, size, now)?;
            // A truncation fences whoever buffered writes before it (see `Op::SetAttr`).
            if let Some(instance) = s.lease_for {
                after.take_lease(instance);
            }
        }
        after.mode = mode;
        after.uid = s.uid.unwrap_or(after.uid);
        after.gid = s.gid.unwrap_or(after.gid);
        after.atime_ns = pick_time(s.atime, after.atime_ns, now);
        after.mtime_ns = pick_time(s.mtime, after.mtime_ns, now);
        after.ctime_ns = now;
        after.change = after.change.saturating_add(1);
        self.put(key.ino, &after)?;
        self.add_usage(after.share_id, delta, 0)?;
        Ok(Reply::Changed {
            before: AttrOut { ino: key.ino, inode: before },
            after: AttrOut { ino: key.ino, inode: after },
        })
    }

    /// Replaces `[start, end)` by `new`, if `lease` (instance, epoch) is still the file's
    /// write lease; without a lease, ends whatever lease there is.
    pub(super) fn commit_extents(
        &mut self,
        cred: &Cred,
        key: &NodeKey,
        (start, end): (u64, u64),
        new: &[Extent],
        lease: Option<(u64, u64)>,
        now: i64,
    ) -> R<Reply> {
        let node = self.live(key)?;
        if node.kind != FileKind::Regular {
            return Err(not_regular(node.kind).into());
        }
        validate::check_commit(start, end, new)?;
        if !perm::is_owner(cred, &node) {
            perm::require(cred, &node, W)?;
        }
        if lease.is_some_and(|l| l != (node.lease_holder, node.lease_epoch)) {
            return Err(ApplyError::Fenced.into());
        }

        // Checks done; mutate.
        let ov = access::overlapping_extents(&self.extents, key.ino, start, end)?;
        let plan = extents::replace_range(&ov, start, end, new);
        let delta = self.apply_plan(key.ino, &plan)?;
        let before = node.clone();
        let mut after = node;
        after.used = clamp_add(after.used, delta);
        after.size = after.size.max(end);
        after.mode = perm::mode_after_write(cred, after.mode);
        if lease.is_none() {
            after.take_lease(0);
        }
        touch_modified(&mut after, now);
        self.put(key.ino, &after)?;
        self.add_usage(after.share_id, delta, 0)?;
        Ok(Reply::Changed {
            before: AttrOut { ino: key.ino, inode: before },
            after: AttrOut { ino: key.ino, inode: after },
        })
    }

    /// Gives `key`'s write lease to `instance` (a new epoch), unless it holds it already.
    pub(super) fn acquire_write_lease(&mut self, cred: &Cred, key: &NodeKey, instance: u64) -> R<Reply> {
        let mut node = self.live(key)?;
        if node.kind != FileKind::Regular {
            return Err(not_regular(node.kind).into());
        }
        if instance == 0 {
            return Err(ApplyError::Invalid("a write lease needs a non-zero instance".into()).into());
        }
        if !perm::is_owner(cred, &node) {
            perm::require(cred, &node, W)?;
        }
        if node.take_lease(instance) {
            self.put(key.ino, &node)?;
        }
        Ok(Reply::Lease { epoch: node.lease_epoch })
    }
}
