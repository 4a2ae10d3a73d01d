//! Read-only queries over one consistent read transaction.
//!
//! Owns: GetAttr, Lookup, ReadDir (with its cookie verifier), GetExtents, ReadLink, Access,
//! FsStat and share lookups as functions of the tables, with the caller's permissions
//! checked (`perm`). The caller has already made the read linearizable (read index) before
//! opening the transaction.
//! Must never: write, or trust a handle without [`super::check_live`].
//!
//! The READDIR cookie verifier is the directory's generation: cookies are stable slots, so
//! they stay valid across gateways and restarts, and only a different directory (a recreated
//! one has a new inode and generation) has a different verifier.

use redb::{ReadOnlyTable, ReadTransaction, ReadableTable};

use super::check_live;
use super::perm::{self, R, X};
use crate::command::{ApplyError, NodeKey};
use crate::error::{MetadError, Result};
use crate::extents;
use crate::model::{AttrOut, Cred, Extent, FileKind, Inode, ShareRec};
use crate::store::{self, access};
use crate::validate;

/// A directory entry as ReadDir returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntryOut {
    pub name: Vec<u8>,
    pub cookie: u64,
    pub attr: AttrOut,
}

/// A share with its root attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareOut {
    pub share_id: u64,
    pub rec: ShareRec,
    pub root: AttrOut,
}

/// The state-machine tables, open for reading in one snapshot.
pub struct ReadTables {
    inodes: ReadOnlyTable<u64, &'static [u8]>,
    dentries: ReadOnlyTable<(u64, &'static [u8]), (u64, u64)>,
    dir_slots: ReadOnlyTable<(u64, u64), (&'static [u8], u64)>,
    extents: ReadOnlyTable<(u64, u64), &'static [u8]>,
    shares: ReadOnlyTable<u64, &'static [u8]>,
    share_paths: ReadOnlyTable<&'static str, u64>,
    symlinks: ReadOnlyTable<u64, &'static [u8]>,
    pub(super) block_daemons: ReadOnlyTable<u64, &'static [u8]>,
    pub(super) packs: ReadOnlyTable<&'static [u8], (&'static str, u64, u32)>,
}

/// One page of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirPage {
    pub entries: Vec<DirEntryOut>,
    pub eof: bool,
    pub dir: AttrOut,
    /// The directory's cookie verifier (never 0).
    pub verifier: u64,
}

fn refuse(e: ApplyError) -> MetadError {
    MetadError::Fs(e.into())
}

impl ReadTables {
    pub fn open(tx: &ReadTransaction) -> Result<Self> {
        Ok(ReadTables {
            inodes: tx.open_table(store::INODES)?,
            dentries: tx.open_table(store::DENTRIES)?,
            dir_slots: tx.open_table(store::DIR_SLOTS)?,
            extents: tx.open_table(store::EXTENTS)?,
            shares: tx.open_table(store::SHARES)?,
            share_paths: tx.open_table(store::SHARE_PATHS)?,
            symlinks: tx.open_table(store::SYMLINKS)?,
            block_daemons: tx.open_table(store::BLOCK_DAEMONS)?,
            packs: tx.open_table(store::PACKS)?,
        })
    }

    fn inode(&self, ino: u64) -> Result<Inode> {
        access::get_inode(&self.inodes, ino)?.ok_or_else(|| MetadError::Corrupt {
            what: "inode",
            reason: format!("inode {ino} is referenced but missing"),
        })
    }

    pub fn get_attr(&self, key: &NodeKey) -> Result<AttrOut> {
        let inode = check_live(access::get_inode(&self.inodes, key.ino)?, key).map_err(refuse)?;
        Ok(AttrOut { ino: key.ino, inode })
    }

    fn get_dir(&self, key: &NodeKey) -> Result<AttrOut> {
        let dir = self.get_attr(key)?;
        if dir.inode.kind != FileKind::Directory {
            return Err(refuse(ApplyError::NotDir));
        }
        Ok(dir)
    }

    /// Returns (child, dir). "." is the directory itself, ".." its parent (the share root's
    /// ".." is itself). Needs search permission on the directory.
    pub fn lookup(&self, cred: &Cred, dir_key: &NodeKey, name: &[u8]) -> Result<(AttrOut, AttrOut)> {
        validate::check_lookup_name(name).map_err(refuse)?;
        let dir = self.get_dir(dir_key)?;
        perm::require(cred, &dir.inode, X).map_err(refuse)?;
        let child_ino = match name {
            b"." => dir_key.ino,
            b".." => dir.inode.parent,
            _ => match self.dentries.get((dir_key.ino, name))? {
                Some(v) => v.value().1,
                None => return Err(refuse(ApplyError::NotFound)),
            },
        };
        let child = AttrOut { ino: child_ino, inode: self.inode(child_ino)? };
        Ok((child, dir))
    }

    /// Entries with a cookie (slot) greater than `cookie`, in cookie order, at most `max`
    /// (capped at [`validate::MAX_READDIR_ENTRIES`]); `eof` when none are left after them.
    /// Needs read permission; a non-zero `verifier` must be this directory's.
    pub fn read_dir(&self, cred: &Cred, dir_key: &NodeKey, cookie: u64, verifier: u64, max: u32) -> Result<DirPage> {
        let dir = self.get_dir(dir_key)?;
        perm::require(cred, &dir.inode, R).map_err(refuse)?;
        let dir_verifier = cookie_verifier(&dir.inode);
        if verifier != 0 && verifier != dir_verifier {
            return Err(refuse(ApplyError::BadCookie));
        }
        let max = match max {
            0 => validate::MAX_READDIR_ENTRIES,
            n => n.min(validate::MAX_READDIR_ENTRIES),
        } as usize;
        let from = cookie.saturating_add(1);
        let mut out = Vec::new();
        let mut eof = true;
        if cookie < u64::MAX {
            for row in self.dir_slots.range((dir_key.ino, from)..=(dir_key.ino, u64::MAX))? {
                let (k, v) = row?;
                if out.len() == max {
                    eof = false;
                    break;
                }
                let (name, ino) = v.value();
                out.push(DirEntryOut {
                    name: name.to_vec(),
                    cookie: k.value().1,
                    attr: AttrOut { ino, inode: self.inode(ino)? },
                });
            }
        }
        Ok(DirPage { entries: out, eof, dir, verifier: dir_verifier })
    }

    /// The file's extents overlapping `[offset, offset + length)`, clipped to it, ascending.
    /// Needs read permission or ownership.
    pub fn get_extents(&self, cred: &Cred, key: &NodeKey, offset: u64, length: u64) -> Result<(AttrOut, Vec<Extent>)> {
        let attr = self.get_attr(key)?;
        match attr.inode.kind {
            FileKind::Regular => {}
            FileKind::Directory => return Err(refuse(ApplyError::IsDir)),
            other => return Err(refuse(ApplyError::Invalid(format!("a {other:?} has no content")))),
        }
        if !perm::is_owner(cred, &attr.inode) {
            perm::require(cred, &attr.inode, R).map_err(refuse)?;
        }
        let end = offset.saturating_add(length);
        let found = access::overlapping_extents(&self.extents, key.ino, offset, end)?;
        let clipped = found.iter().filter_map(|e| extents::clip(e, offset, end)).collect();
        Ok((attr, clipped))
    }

    /// A symlink's target. Anything else is `Invalid`.
    pub fn read_link(&self, key: &NodeKey) -> Result<(Vec<u8>, AttrOut)> {
        let attr = self.get_attr(key)?;
        if attr.inode.kind != FileKind::Symlink {
            return Err(refuse(ApplyError::Invalid(format!("a {:?} is not a symlink", attr.inode.kind))));
        }
        let target = self.symlinks.get(key.ino)?.map(|v| v.value().to_vec()).ok_or_else(|| MetadError::Corrupt {
            what: "symlink",
            reason: format!("symlink {} has no target", key.ino),
        })?;
        Ok((target, attr))
    }

    /// NFS ACCESS: which bits of `mask` (1 read, 2 write, 4 execute/search) `cred` holds.
    pub fn access(&self, cred: &Cred, key: &NodeKey, mask: u32) -> Result<(u32, AttrOut)> {
        let attr = self.get_attr(key)?;
        Ok((perm::access_mask(cred, &attr.inode, mask), attr))
    }

    /// (files, bytes used, replication factor — 0 for the cluster default) of the share the
    /// handle lives in.
    pub fn fs_stat(&self, key: &NodeKey) -> Result<(u64, u64, u32)> {
        let attr = self.get_attr(key)?;
        let share = access::get_share(&self.shares, attr.inode.share_id)?.ok_or_else(|| MetadError::Corrupt {
            what: "share",
            reason: format!("share {} missing", attr.inode.share_id),
        })?;
        Ok((share.files, share.bytes_used, share.replication_factor))
    }

    fn share_out(&self, share_id: u64, rec: ShareRec) -> Result<ShareOut> {
        let root = AttrOut { ino: rec.root_ino, inode: self.inode(rec.root_ino)? };
        Ok(ShareOut { share_id, rec, root })
    }

    pub fn share_by_path(&self, export_path: &str) -> Result<ShareOut> {
        let id = self.share_paths.get(export_path)?.map(|v| v.value()).ok_or(refuse(ApplyError::NotFound))?;
        let rec = access::get_share(&self.shares, id)?
            .ok_or_else(|| MetadError::Corrupt { what: "share", reason: format!("share {id} missing") })?;
        self.share_out(id, rec)
    }

    pub fn list_shares(&self) -> Result<Vec<ShareOut>> {
        let mut out = Vec::new();
        for row in self.shares.iter()? {
            let (k, v) = row?;
            let rec: ShareRec = crate::model::decode_json("share", v.value())?;
            out.push(self.share_out(k.value(), rec)?);
        }
        Ok(out)
    }
}

/// A directory's READDIR cookie verifier (see the module doc); never 0.
pub fn cookie_verifier(dir: &Inode) -> u64 {
    dir.generation.max(1)
}
