//! Read-only queries over one consistent read transaction.
//!
//! Owns: GetAttr, Lookup, ReadDir, GetExtents, FsStat and share lookups as functions of the
//! tables. The caller has already made the read linearizable (read index) before opening the
//! transaction.
//! Must never: write, or trust a handle without [`super::check_live`].

use redb::{ReadOnlyTable, ReadTransaction, ReadableTable};

use super::check_live;
use crate::command::{ApplyError, NodeKey};
use crate::error::{MetadError, Result};
use crate::extents;
use crate::model::{AttrOut, Extent, FileKind, Inode, ShareRec};
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
        })
    }

    fn inode(&self, ino: u64) -> Result<Inode> {
        access::get_inode(&self.inodes, ino)?
            .ok_or_else(|| MetadError::Corrupt { what: "inode", reason: format!("inode {ino} is referenced but missing") })
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

    /// Returns (child, dir). "." is the directory itself, ".." its parent.
    pub fn lookup(&self, dir_key: &NodeKey, name: &[u8]) -> Result<(AttrOut, AttrOut)> {
        validate::check_lookup_name(name).map_err(refuse)?;
        let dir = self.get_dir(dir_key)?;
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
    pub fn read_dir(&self, dir_key: &NodeKey, cookie: u64, max: u32) -> Result<(Vec<DirEntryOut>, bool, AttrOut)> {
        let dir = self.get_dir(dir_key)?;
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
                out.push(DirEntryOut { name: name.to_vec(), cookie: k.value().1, attr: AttrOut { ino, inode: self.inode(ino)? } });
            }
        }
        Ok((out, eof, dir))
    }

    /// The file's extents overlapping `[offset, offset + length)`, clipped to it, ascending.
    pub fn get_extents(&self, key: &NodeKey, offset: u64, length: u64) -> Result<(AttrOut, Vec<Extent>)> {
        let attr = self.get_attr(key)?;
        if attr.inode.kind != FileKind::Regular {
            return Err(refuse(ApplyError::IsDir));
        }
        let end = offset.saturating_add(length);
        let found = access::overlapping_extents(&self.extents, key.ino, offset, end)?;
        let clipped = found.iter().filter_map(|e| extents::clip(e, offset, end)).collect();
        Ok((attr, clipped))
    }

    /// (files, bytes used) of the share the handle lives in.
    pub fn fs_stat(&self, key: &NodeKey) -> Result<(u64, u64)> {
        let attr = self.get_attr(key)?;
        let share = access::get_share(&self.shares, attr.inode.share_id)?
            .ok_or_else(|| MetadError::Corrupt { what: "share", reason: format!("share {} missing", attr.inode.share_id) })?;
        Ok((share.files, share.bytes_used))
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
