//! POSIX permission rules: who may read, write or search an inode, and the ownership rules
//! that go with them (sticky directories, chmod/chown/chgrp, setuid/setgid clearing).
//!
//! Owns: every decision of the form "may this credential do that to this inode". Pure
//! functions over a [`Cred`] and [`Inode`]s, shared by apply and queries.
//! Must never: read tables or mutate anything; it only answers yes/no (or the refusal).
//!
//! uid 0 is root: it may read and write anything, and execute/search when the inode is a
//! directory or has any execute bit (as Linux does).

use crate::command::ApplyError;
use crate::model::{Cred, FileKind, Inode, S_ISGID, S_ISUID, S_ISVTX};

/// Permission bits as in a mode's rwx triplets.
pub const R: u32 = 4;
pub const W: u32 = 2;
pub const X: u32 = 1;

/// The rwx bits of `inode` that apply to `cred` (owner, else group, else other class); root
/// gets read and write always, execute as described in the module doc.
pub fn granted(cred: &Cred, inode: &Inode) -> u32 {
    if cred.is_root() {
        let any_x = inode.mode & 0o111 != 0;
        return R | W | if inode.kind == FileKind::Directory || any_x { X } else { 0 };
    }
    if cred.uid == inode.uid {
        (inode.mode >> 6) & 7
    } else if cred.in_group(inode.gid) {
        (inode.mode >> 3) & 7
    } else {
        inode.mode & 7
    }
}

/// `Ok` when `cred` holds every bit of `want` on `inode`, else `Access`.
pub fn require(cred: &Cred, inode: &Inode, want: u32) -> Result<(), ApplyError> {
    if granted(cred, inode) & want == want { Ok(()) } else { Err(ApplyError::Access) }
}

/// Root or the owner.
pub fn is_owner(cred: &Cred, inode: &Inode) -> bool {
    cred.is_root() || cred.uid == inode.uid
}

/// The sticky-directory rule for removing or replacing `child` in `dir`: in a sticky
/// directory only the entry's owner, the directory's owner or root may. Anyone else gets
/// EPERM (`Perm`), as unlink(2) and rename(2) specify, not EACCES.
pub fn sticky_ok(cred: &Cred, dir: &Inode, child: &Inode) -> Result<(), ApplyError> {
    if dir.mode & S_ISVTX == 0 || cred.is_root() || cred.uid == dir.uid || cred.uid == child.uid {
        Ok(())
    } else {
        Err(ApplyError::Perm)
    }
}

/// NFS ACCESS: of the asked `mask` (1 read, 2 write, 4 execute/search), the bits granted.
pub fn access_mask(cred: &Cred, inode: &Inode, mask: u32) -> u32 {
    let g = granted(cred, inode);
    let mut out = 0;
    if mask & 1 != 0 && g & R != 0 {
        out |= 1;
    }
    if mask & 2 != 0 && g & W != 0 {
        out |= 2;
    }
    if mask & 4 != 0 && g & X != 0 {
        out |= 4;
    }
    out
}

/// What a SetAttr asks to change, for [`check_setattr`].
#[derive(Debug, Default, Clone, Copy)]
pub struct AttrChange {
    pub size: bool,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// An explicit time (not "now") for atime or mtime.
    pub explicit_time: bool,
    /// atime or mtime set to the server's time.
    pub time_now: bool,
}

/// Checks a SetAttr against the ownership rules; on success returns the mode the inode must
/// end up with (setuid/setgid cleared where the rules say so).
pub fn check_setattr(cred: &Cred, inode: &Inode, c: &AttrChange) -> Result<u32, ApplyError> {
    let root = cred.is_root();
    let owner = is_owner(cred, inode);
    // chown to the current owner is a no-op the owner may do; anything else is root's.
    if let Some(uid) = c.uid
        && !root
        && (uid != inode.uid || cred.uid != inode.uid)
    {
        return Err(ApplyError::Perm);
    }
    // chgrp: the owner, to a group they belong to (or the current one).
    if let Some(gid) = c.gid
        && !root
        && !(cred.uid == inode.uid && (gid == inode.gid || cred.in_group(gid)))
    {
        return Err(ApplyError::Perm);
    }
    if c.mode.is_some() && !owner {
        return Err(ApplyError::Perm);
    }
    if c.explicit_time && !owner {
        return Err(ApplyError::Perm);
    }
    if c.time_now && !owner && granted(cred, inode) & W == 0 {
        return Err(ApplyError::Access);
    }
    if c.size {
        require(cred, inode, W)?;
    }
    let mut mode = c.mode.unwrap_or(inode.mode);
    let new_gid = c.gid.unwrap_or(inode.gid);
    if c.mode.is_some() && !root && !cred.in_group(new_gid) {
        mode &= !S_ISGID;
    }
    if !root && (c.uid.is_some() || c.gid.is_some()) && inode.kind != FileKind::Directory {
        mode &= !(S_ISUID | S_ISGID);
    }
    Ok(mode)
}

/// A write of content by a non-root caller clears setuid and setgid.
pub fn mode_after_write(cred: &Cred, mode: u32) -> u32 {
    if cred.is_root() { mode } else { mode & !(S_ISUID | S_ISGID) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inode(kind: FileKind, mode: u32, uid: u32, gid: u32) -> Inode {
        Inode {
            share_id: 1,
            generation: 1,
            kind,
            mode,
            uid,
            gid,
            nlink: 1,
            size: 0,
            used: 0,
            atime_ns: 0,
            mtime_ns: 0,
            ctime_ns: 0,
            btime_ns: 0,
            change: 1,
            parent: 0,
            next_slot: 3,
            verifier: None,
            rdev_major: 0,
            rdev_minor: 0,
            lease_holder: 0,
            lease_epoch: 0,
        }
    }

    fn cred(uid: u32, gid: u32, groups: &[u32]) -> Cred {
        Cred { uid, gid, groups: groups.to_vec() }
    }

    #[test]
    fn classes_are_exclusive_and_groups_count() {
        let f = inode(FileKind::Regular, 0o640, 10, 20);
        assert_eq!(granted(&cred(10, 99, &[]), &f), R | W);
        assert_eq!(granted(&cred(11, 20, &[]), &f), R);
        assert_eq!(granted(&cred(11, 99, &[5, 20]), &f), R, "supplementary group");
        assert_eq!(granted(&cred(11, 99, &[]), &f), 0);
        // The owner class applies even when it grants less than the group class.
        let g = inode(FileKind::Regular, 0o070, 10, 20);
        assert_eq!(granted(&cred(10, 20, &[]), &g), 0);
    }

    #[test]
    fn root_executes_only_directories_or_files_with_an_x_bit() {
        let root = cred(0, 0, &[]);
        assert_eq!(granted(&root, &inode(FileKind::Regular, 0o600, 1, 1)), R | W);
        assert_eq!(granted(&root, &inode(FileKind::Regular, 0o001, 1, 1)), R | W | X);
        assert_eq!(granted(&root, &inode(FileKind::Directory, 0, 1, 1)), R | W | X);
        assert_eq!(access_mask(&root, &inode(FileKind::Regular, 0o600, 1, 1), 7), 3);
    }

    #[test]
    fn sticky_directories_protect_other_users_entries() {
        let dir = inode(FileKind::Directory, 0o1777, 0, 0);
        let mine = inode(FileKind::Regular, 0o644, 10, 10);
        assert_eq!(sticky_ok(&cred(10, 10, &[]), &dir, &mine), Ok(()));
        assert_eq!(sticky_ok(&cred(11, 10, &[]), &dir, &mine), Err(ApplyError::Perm));
        assert_eq!(sticky_ok(&cred(0, 0, &[]), &dir, &mine), Ok(()));
        let plain = inode(FileKind::Directory, 0o777, 0, 0);
        assert_eq!(sticky_ok(&cred(11, 10, &[]), &plain, &mine), Ok(()));
    }

    #[test]
    fn setattr_ownership_rules() {
        let f = inode(FileKind::Regular, 0o6755, 10, 20);
        let owner = cred(10, 30, &[40]);
        let other = cred(11, 20, &[]);
        let chmod = AttrChange { mode: Some(0o2755), ..Default::default() };
        assert_eq!(check_setattr(&other, &f, &chmod), Err(ApplyError::Perm));
        assert_eq!(check_setattr(&owner, &f, &chmod), Ok(0o755), "owner outside the group loses setgid");
        let chown = AttrChange { uid: Some(11), ..Default::default() };
        assert_eq!(check_setattr(&owner, &f, &chown), Err(ApplyError::Perm));
        assert_eq!(check_setattr(&cred(0, 0, &[]), &f, &chown), Ok(0o6755));
        let chgrp = AttrChange { gid: Some(40), ..Default::default() };
        assert_eq!(check_setattr(&owner, &f, &chgrp), Ok(0o755), "chgrp by the owner clears setuid/setgid");
        let chgrp_foreign = AttrChange { gid: Some(50), ..Default::default() };
        assert_eq!(check_setattr(&owner, &f, &chgrp_foreign), Err(ApplyError::Perm));
        let same_group = AttrChange { gid: Some(20), ..Default::default() };
        assert_eq!(check_setattr(&other, &f, &same_group), Err(ApplyError::Perm), "only the owner, even as a no-op");
        let same_owner = AttrChange { uid: Some(10), ..Default::default() };
        assert_eq!(check_setattr(&owner, &f, &same_owner), Ok(0o755), "chown to oneself clears setuid/setgid");
        assert_eq!(check_setattr(&other, &f, &same_owner), Err(ApplyError::Perm));
        let times = AttrChange { explicit_time: true, ..Default::default() };
        assert_eq!(check_setattr(&other, &f, &times), Err(ApplyError::Perm));
        let now = AttrChange { time_now: true, ..Default::default() };
        assert_eq!(check_setattr(&other, &f, &now), Err(ApplyError::Access));
        let writable = inode(FileKind::Regular, 0o666, 10, 20);
        assert_eq!(check_setattr(&other, &writable, &now), Ok(0o666));
        let size = AttrChange { size: true, ..Default::default() };
        assert_eq!(check_setattr(&other, &f, &size), Err(ApplyError::Access));
        assert_eq!(check_setattr(&other, &writable, &size), Ok(0o666));
        assert_eq!(mode_after_write(&other, 0o6777), 0o777);
        assert_eq!(mode_after_write(&cred(0, 0, &[]), 0o6777), 0o6777);
    }
}
