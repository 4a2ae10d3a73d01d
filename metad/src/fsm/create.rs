//! Operations that add a name: Create (files and directories), Mknod, Symlink and Link.
//!
//! Owns: the rules for new names — write and search permission on the directory, who owns
//! a new inode (the caller; root may name another owner), setgid inheritance from the
//! directory, device nodes for root only, symlink targets, the hard-link limit and
//! cross-share links.
//! Must never: mutate before every refusal has been checked (see `apply`).

use super::apply::{R, WriteTables, new_inode, touch_changed, touch_modified, wcc};
use super::perm::{self, W, X};
use crate::command::{ApplyError, CreateMode, NodeKey, Reply};
use crate::model::{AttrOut, Cred, FileKind, Inode, S_ISGID};
use crate::validate;

/// How a Create treats an existing name and a new file.
pub(super) struct How {
    pub how: CreateMode,
    /// UNCHECKED on an existing (or new) regular file: truncate/extend to this size.
    pub size: Option<u64>,
    /// A gateway instance (non-zero) that gets a new regular file's write lease.
    pub lease_for: u64,
}

/// What a new inode is, before it gets a number.
struct NewNode<'a> {
    kind: FileKind,
    mode: u32,
    /// The owner asked for (honoured for root only; others own what they create).
    owner: (u32, u32),
    rdev: (u32, u32),
    size: u64,
    verifier: Option<[u8; 8]>,
    target: Option<&'a [u8]>,
    /// Its first write lease holder (0: nobody).
    lease_for: u64,
}

impl WriteTables<'_> {
    /// The directory a new name goes into, with the permission to add it checked, and the
    /// name refused if it exists.
    fn dir_for_new(&self, cred: &Cred, dir_key: &NodeKey, name: &[u8]) -> R<Inode> {
        validate::check_name(name)?;
        let dir = self.live_dir(dir_key)?;
        perm::require(cred, &dir, W | X)?;
        if self.entry(dir_key.ino, name)?.is_some() {
            return Err(ApplyError::Exists.into());
        }
        Ok(dir)
    }

    /// Creates `name` in `dir` (checked by the caller) as a new inode.
    fn insert_new(
        &mut self,
        cred: &Cred,
        dir_key: &NodeKey,
        dir: Inode,
        name: &[u8],
        n: NewNode<'_>,
        now: i64,
    ) -> R<Reply> {
        let is_dir = n.kind == FileKind::Directory;
        let (uid, mut gid) = if cred.is_root() { n.owner } else { (cred.uid, cred.gid) };
        let mut mode = n.mode;
        if dir.mode & S_ISGID != 0 {
            gid = dir.gid;
            if is_dir {
                mode |= S_ISGID;
            }
        }
        if !is_dir && mode & S_ISGID != 0 && !cred.is_root() && !cred.in_group(gid) {
            mode &= !S_ISGID;
        }

        // Checks done; mutate.
        let ino = self.take_counter("next_ino")?;
        let mut child = new_inode(dir.share_id, n.kind, mode, (uid, gid), now);
        child.rdev_major = n.rdev.0;
        child.rdev_minor = n.rdev.1;
        child.size = n.size;
        child.verifier = n.verifier;
        if n.lease_for != 0 && n.kind == FileKind::Regular {
            (child.lease_holder, child.lease_epoch) = (n.lease_for, 1);
        }
        if is_dir {
            child.parent = dir_key.ino;
        }
        if let Some(t) = n.target {
            self.symlinks.insert(ino, t)?;
        }
        let before = dir.clone();
        let mut after = dir;
        if is_dir {
            after.nlink = after.nlink.saturating_add(1);
        }
        self.add_entry(dir_key.ino, &mut after, name, ino)?;
        touch_modified(&mut after, now);
        self.put(ino, &child)?;
        self.put(dir_key.ino, &after)?;
        self.add_usage(after.share_id, 0, 1)?;
        Ok(Reply::Created { attr: AttrOut { ino, inode: child }, dir: wcc(dir_key.ino, before, &after) })
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn create(
        &mut self,
        cred: &Cred,
        dir_key: &NodeKey,
        name: &[u8],
        kind: FileKind,
        mode: u32,
        owner: (u32, u32),
        how: How,
        now: i64,
    ) -> R<Reply> {
        let How { how, size, lease_for } = how;
        validate::check_name(name)?;
        validate::check_mode(mode)?;
        if !matches!(kind, FileKind::Regular | FileKind::Directory) {
            return Err(ApplyError::Invalid(format!("Create makes files and directories, not {kind:?}")).into());
        }
        if let Some(s) = size {
            if kind != FileKind::Regular {
                return Err(ApplyError::Invalid("a size is for regular files only".into()).into());
            }
            if s > validate::MAX_FILE_SIZE {
                return Err(ApplyError::TooBig.into());
            }
        }
        let dir = self.live_dir(dir_key)?;
        perm::require(cred, &dir, W | X)?;
        if let Some((_slot, child_ino)) = self.entry(dir_key.ino, name)? {
            let child = self.inode(child_ino)?;
            let reuse = match (kind, how) {
                (FileKind::Regular, CreateMode::Unchecked) => child.kind == FileKind::Regular,
                (FileKind::Regular, CreateMode::Exclusive(v)) => {
                    child.kind == FileKind::Regular && child.verifier == Some(v)
                }
                _ => false,
            };
            if !reuse {
                return Err(ApplyError::Exists.into());
            }
            let same = dir.clone();
            let attr = match (how, size) {
                (CreateMode::Unchecked, Some(s)) => self.truncate_existing(cred, child_ino, child, s, lease_for, now)?,
                _ => AttrOut { ino: child_ino, inode: child },
            };
            return Ok(Reply::Created { attr, dir: wcc(dir_key.ino, same, &dir) });
        }
        let verifier = match how {
            CreateMode::Exclusive(v) => Some(v),
            _ => None,
        };
        let n = NewNode { kind, mode, owner, rdev: (0, 0), size: size.unwrap_or(0), verifier, target: None, lease_for };
        self.insert_new(cred, dir_key, dir, name, n, now)
    }

    /// UNCHECKED create of an existing regular file with a size: truncate or extend it.
    /// UNCHECKED create of an existing file with a size. `lease_for` (non-zero) takes the
    /// file's write lease as a truncating SetAttr does (0, as in entries from before
    /// schema 5, leaves it alone).
    fn truncate_existing(
        &mut self,
        cred: &Cred,
        ino: u64,
        child: Inode,
        size: u64,
        lease_for: u64,
        now: i64,
    ) -> R<AttrOut> {
        perm::require(cred, &child, W)?;
        let mut after = child;
        let take_lease = lease_for != 0 && after.take_lease(lease_for);
        let mut delta = 0;
        let resized = size != after.size;
        if resized {
            delta = self.resize(ino, &mut after, size, now)?;
            touch_changed(&mut after, now);
        }
        if resized || take_lease {
            self.put(ino, &after)?;
            self.add_usage(after.share_id, delta, 0)?;
        }
        Ok(AttrOut { ino, inode: after })
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn mknod(
        &mut self,
        cred: &Cred,
        dir_key: &NodeKey,
        name: &[u8],
        kind: FileKind,
        mode: u32,
        rdev: (u32, u32),
        now: i64,
    ) -> R<Reply> {
        validate::check_mode(mode)?;
        match kind {
            FileKind::Fifo | FileKind::Socket if rdev != (0, 0) => {
                return Err(ApplyError::Invalid(format!("a device number on a {kind:?}")).into());
            }
            FileKind::Fifo | FileKind::Socket | FileKind::CharDevice | FileKind::BlockDevice => {}
            _ => {
                return Err(ApplyError::Invalid(format!("Mknod makes FIFOs, sockets and devices, not {kind:?}")).into());
            }
        }
        validate::check_name(name)?;
        if kind.is_device() && !cred.is_root() {
            return Err(ApplyError::Perm.into());
        }
        let dir = self.dir_for_new(cred, dir_key, name)?;
        let n = NewNode { kind, mode, owner: (cred.uid, cred.gid), rdev, size: 0, verifier: None, target: None, lease_for: 0 };
        self.insert_new(cred, dir_key, dir, name, n, now)
    }

    pub(super) fn symlink(
        &mut self,
        cred: &Cred,
        dir_key: &NodeKey,
        name: &[u8],
        target: &[u8],
        mode: u32,
        now: i64,
    ) -> R<Reply> {
        validate::check_mode(mode)?;
        validate::check_symlink_target(target)?;
        let dir = self.dir_for_new(cred, dir_key, name)?;
        let size = target.len() as u64;
        let n = NewNode {
            kind: FileKind::Symlink,
            mode,
            owner: (cred.uid, cred.gid),
            rdev: (0, 0),
            size,
            verifier: None,
            target: Some(target),
            lease_for: 0,
        };
        self.insert_new(cred, dir_key, dir, name, n, now)
    }

    pub(super) fn link(
        &mut self,
        cred: &Cred,
        node_key: &NodeKey,
        dir_key: &NodeKey,
        name: &[u8],
        now: i64,
    ) -> R<Reply> {
        validate::check_name(name)?;
        let node = self.live(node_key)?;
        let dir = self.live_dir(dir_key)?;
        if node.kind == FileKind::Directory {
            return Err(ApplyError::IsDir.into());
        }
        if node.share_id != dir.share_id {
            return Err(ApplyError::CrossDevice.into());
        }
        perm::require(cred, &dir, W | X)?;
        if self.entry(dir_key.ino, name)?.is_some() {
            return Err(ApplyError::Exists.into());
        }
        if node.nlink >= validate::MAX_LINKS {
            return Err(ApplyError::TooManyLinks.into());
        }

        // Checks done; mutate.
        let mut file = node;
        file.nlink += 1;
        touch_changed(&mut file, now);
        let before = dir.clone();
        let mut after = dir;
        self.add_entry(dir_key.ino, &mut after, name, node_key.ino)?;
        touch_modified(&mut after, now);
        self.put(node_key.ino, &file)?;
        self.put(dir_key.ino, &after)?;
        Ok(Reply::Linked { attr: AttrOut { ino: node_key.ino, inode: file }, dir: wcc(dir_key.ino, before, &after) })
    }
}
