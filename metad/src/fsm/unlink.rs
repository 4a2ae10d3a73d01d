//! Operations that take a name away: Remove/Rmdir and Rename.
//!
//! Owns: the rules for dropping and moving names — write and search permission on the
//! directories, the sticky-directory rule, link counts (an inode and its extents and chunk
//! references are freed when its last name goes), directory emptiness, what a rename may
//! replace, moving a directory under itself, parent pointers and the parents' link counts.
//! Must never: mutate before every refusal has been checked (see `apply`).

use super::apply::{R, WriteTables, touch_changed, touch_modified, wcc};
use super::perm::{self, W, X};
use crate::command::{ApplyError, NodeKey, Reply};
use crate::model::{Cred, FileKind, Inode};
use crate::validate;

/// The directory a rename writes into: the source directory itself, or another one.
fn target_dir<'a>(from: &'a mut Inode, to: &'a mut Option<Inode>) -> &'a mut Inode {
    match to {
        Some(t) => t,
        None => from,
    }
}

impl WriteTables<'_> {
    pub(super) fn remove(
        &mut self,
        cred: &Cred,
        dir_key: &NodeKey,
        name: &[u8],
        directory: bool,
        now: i64,
    ) -> R<Reply> {
        validate::check_name(name)?;
        let dir = self.live_dir(dir_key)?;
        perm::require(cred, &dir, W | X)?;
        let (slot, child_ino) = self.entry(dir_key.ino, name)?.ok_or(ApplyError::NotFound)?;
        let child = self.inode(child_ino)?;
        let child_is_dir = child.kind == FileKind::Directory;
        match (directory, child_is_dir) {
            (true, false) => return Err(ApplyError::NotDir.into()),
            (false, true) => return Err(ApplyError::IsDir.into()),
            (true, true) if !self.is_empty_dir(child_ino)? => return Err(ApplyError::NotEmpty.into()),
            _ => {}
        }
        perm::sticky_ok(cred, &dir, &child)?;

        // Checks done; mutate.
        let before = dir.clone();
        let mut after = dir;
        self.remove_entry(dir_key.ino, &mut after, name, slot)?;
        let (bytes, files) = if child_is_dir {
            after.nlink = after.nlink.saturating_sub(1).max(2);
            (self.free_inode(child_ino, &child)?, -1)
        } else {
            self.unlink_inode(child_ino, child, now)?
        };
        touch_modified(&mut after, now);
        self.put(dir_key.ino, &after)?;
        self.add_usage(after.share_id, bytes, files)?;
        Ok(Reply::Removed { dir: wcc(dir_key.ino, before, &after) })
    }

    pub(super) fn rename(
        &mut self,
        cred: &Cred,
        from_key: &NodeKey,
        from_name: &[u8],
        to_key: &NodeKey,
        to_name: &[u8],
        now: i64,
    ) -> R<Reply> {
        validate::check_name(from_name)?;
        validate::check_name(to_name)?;
        let from_dir = self.live_dir(from_key)?;
        let to_dir = self.live_dir(to_key)?;
        if from_dir.share_id != to_dir.share_id {
            return Err(ApplyError::CrossDevice.into());
        }
        perm::require(cred, &from_dir, W | X)?;
        perm::require(cred, &to_dir, W | X)?;
        let (src_slot, src_ino) = self.entry(from_key.ino, from_name)?.ok_or(ApplyError::NotFound)?;
        let src = self.inode(src_ino)?;
        perm::sticky_ok(cred, &from_dir, &src)?;
        let same_dir = from_key.ino == to_key.ino;
        let target = self.entry(to_key.ino, to_name)?;
        if let Some((_, t_ino)) = target
            && t_ino == src_ino
        {
            // Same inode (same name, or two hard links of one file): nothing to do.
            return Ok(Reply::Renamed {
                from_dir: wcc(from_key.ino, from_dir.clone(), &from_dir),
                to_dir: wcc(to_key.ino, to_dir.clone(), &to_dir),
            });
        }
        let src_is_dir = src.kind == FileKind::Directory;
        let replaced = match target {
            Some((t_slot, t_ino)) => {
                let t = self.inode(t_ino)?;
                perm::sticky_ok(cred, &to_dir, &t)?;
                match (src_is_dir, t.kind == FileKind::Directory) {
                    (true, false) => return Err(ApplyError::NotDir.into()),
                    (false, true) => return Err(ApplyError::IsDir.into()),
                    (true, true) if !self.is_empty_dir(t_ino)? => return Err(ApplyError::NotEmpty.into()),
                    _ => {}
                }
                Some((t_slot, t_ino, t))
            }
            None => None,
        };
        if src_is_dir && !same_dir {
            // Its ".." changes, which is a write to the directory itself.
            perm::require(cred, &src, W)?;
            if self.is_within(to_key.ino, src_ino)? {
                return Err(ApplyError::Invalid("cannot move a directory into itself".into()).into());
            }
        }

        // Checks done; mutate.
        let from_before = from_dir.clone();
        let to_before = to_dir.clone();
        let mut from = from_dir;
        let mut to = if same_dir { None } else { Some(to_dir) };
        let (mut bytes, mut files) = (0, 0);
        if let Some((t_slot, t_ino, t)) = replaced {
            let td = target_dir(&mut from, &mut to);
            self.remove_entry(to_key.ino, td, to_name, t_slot)?;
            if t.kind == FileKind::Directory {
                td.nlink = td.nlink.saturating_sub(1).max(2);
                bytes = self.free_inode(t_ino, &t)?;
                files = -1;
            } else {
                (bytes, files) = self.unlink_inode(t_ino, t, now)?;
            }
        }
        self.remove_entry(from_key.ino, &mut from, from_name, src_slot)?;
        self.add_entry(to_key.ino, target_dir(&mut from, &mut to), to_name, src_ino)?;
        let mut moved = src;
        if src_is_dir && !same_dir {
            from.nlink = from.nlink.saturating_sub(1).max(2);
            let td = target_dir(&mut from, &mut to);
            td.nlink = td.nlink.saturating_add(1);
            moved.parent = to_key.ino;
        }
        touch_changed(&mut moved, now);
        self.put(src_ino, &moved)?;
        touch_modified(&mut from, now);
        self.put(from_key.ino, &from)?;
        if let Some(t) = to.as_mut() {
            touch_modified(t, now);
            self.put(to_key.ino, t)?;
        }
        let to_after = to.as_ref().unwrap_or(&from);
        let reply = Reply::Renamed {
            from_dir: wcc(from_key.ino, from_before, &from),
            to_dir: wcc(to_key.ino, to_before, to_after),
        };
        self.add_usage(from.share_id, bytes, files)?;
        Ok(reply)
    }
}
