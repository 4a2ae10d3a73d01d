//! Applying one command to the state-machine tables inside the caller's write transaction.
//!
//! Owns: [`WriteTables`] (the tables open for one apply batch), the dispatch of each
//! [`Command`] (request-id dedup first, then the operation), and the bookkeeping helpers every
//! operation shares: directory entries and their slots, link counts, freeing an inode with its
//! extents and chunk references, resizing, and the per-share counters. The operations
//! themselves live in `create` (create/mknod/symlink/link), `unlink` (remove/rename) and
//! `attrs` (setattr/commit-extents); shares are created and their options changed here.
//! Must never: leave a partial change behind a refusal. Every command first checks everything
//! that can refuse it (reads only), then mutates; after the first write the only possible
//! failure is a storage error, which aborts the whole transaction. Never reads a clock.

use redb::{ReadableTable, Table, WriteTransaction};

use super::check_live;
use super::dedup::DedupTables;
use crate::command::{ApplyError, Command, CommandResult, NodeKey, Op, Reply, ShareChanges, Wcc};
use crate::error::MetadError;
use crate::extents::{self, RangePlan};
use crate::model::{AttrOut, Cred, DEFAULT_ANON_ID, FIRST_SLOT, FileKind, Inode, ShareRec, Squash};
use crate::store::{self, access};
use crate::validate;

/// Why a command did not apply: refused by the rules (deterministic, recorded as the reply)
/// or a storage failure (aborts the batch).
pub(super) enum Fail {
    Refused(ApplyError),
    Store(MetadError),
}

impl From<ApplyError> for Fail {
    fn from(e: ApplyError) -> Self {
        Fail::Refused(e)
    }
}

// Storage failures only: an `FsError` must never reach apply as a storage failure (it would
// stop Raft), so there is deliberately no blanket conversion.
macro_rules! store_fail_from {
    ($($t:ty),*) => {$(
        impl From<$t> for Fail {
            fn from(e: $t) -> Self {
                Fail::Store(e.into())
            }
        }
    )*};
}
store_fail_from!(MetadError, redb::StorageError);

pub(super) type R<T> = Result<T, Fail>;

/// Deepest directory nesting a rename walks through before declaring the tree corrupt.
const MAX_DEPTH: usize = 1 << 20;

/// The state-machine tables, open for writing in one transaction.
pub struct WriteTables<'t> {
    pub(super) inodes: Table<'t, u64, &'static [u8]>,
    pub(super) dentries: Table<'t, (u64, &'static [u8]), (u64, u64)>,
    pub(super) dir_slots: Table<'t, (u64, u64), (&'static [u8], u64)>,
    pub(super) extents: Table<'t, (u64, u64), &'static [u8]>,
    pub(super) chunk_refs: Table<'t, &'static [u8], u64>,
    pub(super) shares: Table<'t, u64, &'static [u8]>,
    pub(super) share_paths: Table<'t, &'static str, u64>,
    pub(super) counters: Table<'t, &'static str, u64>,
    pub(super) symlinks: Table<'t, u64, &'static [u8]>,
    pub(super) block_daemons: Table<'t, u64, &'static [u8]>,
    pub(super) packs: Table<'t, &'static [u8], (&'static str, u64, u32)>,
    dedup: DedupTables<'t>,
}

impl<'t> WriteTables<'t> {
    pub fn open(tx: &'t WriteTransaction) -> Result<Self, MetadError> {
        Ok(WriteTables {
            inodes: tx.open_table(store::INODES)?,
            dentries: tx.open_table(store::DENTRIES)?,
            dir_slots: tx.open_table(store::DIR_SLOTS)?,
            extents: tx.open_table(store::EXTENTS)?,
            chunk_refs: tx.open_table(store::CHUNK_REFS)?,
            shares: tx.open_table(store::SHARES)?,
            share_paths: tx.open_table(store::SHARE_PATHS)?,
            counters: tx.open_table(store::COUNTERS)?,
            symlinks: tx.open_table(store::SYMLINKS)?,
            block_daemons: tx.open_table(store::BLOCK_DAEMONS)?,
            packs: tx.open_table(store::PACKS)?,
            dedup: DedupTables::open(tx)?,
        })
    }

    /// Applies one command. `Err` only for storage failures; refusals are `Ok(Err(..))`.
    pub fn apply(&mut self, cmd: &Command) -> Result<CommandResult, MetadError> {
        match cmd {
            Command::CreateShare { name, export_path, now_ns, changes } => {
                settle(self.create_share(name, export_path, *now_ns, changes))
            }
            Command::UpdateShare { export_path, changes } => settle(self.update_share(export_path, changes)),
            Command::Fs { cred, request, now_ns, op } => {
                if let Some(id) = request
                    && let Some(stored) = self.dedup.lookup(*id)?
                {
                    return Ok(stored);
                }
                let result = settle(self.apply_op(cred, *now_ns, op))?;
                if let Some(id) = request {
                    self.dedup.remember(*id, &result)?;
                }
                Ok(result)
            }
            Command::Heartbeat { id, daemon } => settle(self.heartbeat(*id, daemon)),
            Command::RecordPacks { locations } => settle(self.record_packs(locations)),
            Command::SetShareReplication { export_path, replication_factor } => {
                settle(self.set_share_replication(export_path, *replication_factor))
            }
        }
    }

    fn apply_op(&mut self, cred: &Cred, now: i64, op: &Op) -> R<Reply> {
        match op {
            Op::Create { dir, name, kind, mode, uid, gid, how, size, lease_for } => {
                let how = super::create::How { how: *how, size: *size, lease_for: *lease_for };
                self.create(cred, dir, name, *kind, *mode, (*uid, *gid), how, now)
            }
            Op::Mknod { dir, name, kind, mode, rdev } => self.mknod(cred, dir, name, *kind, *mode, *rdev, now),
            Op::Symlink { dir, name, target, mode } => self.symlink(cred, dir, name, target, *mode, now),
            Op::Link { node, dir, name } => self.link(cred, node, dir, name, now),
            Op::Rename { from_dir, from_name, to_dir, to_name } => {
                self.rename(cred, from_dir, from_name, to_dir, to_name, now)
            }
            Op::Remove { dir, name, directory } => self.remove(cred, dir, name, *directory, now),
            Op::SetAttr { node, size, mode, uid, gid, atime, mtime, guard_ctime_ns, lease_for } => {
                let change = super::attrs::SetAttr {
                    size: *size,
                    mode: *mode,
                    uid: *uid,
                    gid: *gid,
                    atime: *atime,
                    mtime: *mtime,
                    guard_ctime_ns: *guard_ctime_ns,
                    lease_for: *lease_for,
                };
                self.set_attr(cred, node, &change, now)
            }
            Op::CommitExtents { node, range_start, range_end, extents, lease } => {
                self.commit_extents(cred, node, (*range_start, *range_end), extents, *lease, now)
            }
            Op::AcquireWriteLease { node, instance } => self.acquire_write_lease(cred, node, *instance),
        }
    }

    // ---------------------------------------------------------------- lookups

    /// An inode that a table references: missing means the store is corrupt.
    pub(super) fn inode(&self, ino: u64) -> R<Inode> {
        access::get_inode(&self.inodes, ino)?.ok_or_else(|| {
            Fail::Store(MetadError::Corrupt { what: "inode", reason: format!("inode {ino} is referenced but missing") })
        })
    }

    pub(super) fn live(&self, key: &NodeKey) -> R<Inode> {
        Ok(check_live(access::get_inode(&self.inodes, key.ino)?, key)?)
    }

    pub(super) fn live_dir(&self, key: &NodeKey) -> R<Inode> {
        let dir = self.live(key)?;
        if dir.kind != FileKind::Directory {
            return Err(ApplyError::NotDir.into());
        }
        Ok(dir)
    }

    /// `(slot, child ino)` of `name` in `dir`.
    pub(super) fn entry(&self, dir: u64, name: &[u8]) -> R<Option<(u64, u64)>> {
        Ok(self.dentries.get((dir, name))?.map(|v| v.value()))
    }

    pub(super) fn is_empty_dir(&self, ino: u64) -> R<bool> {
        Ok(self.dir_slots.range((ino, 0)..=(ino, u64::MAX))?.next().is_none())
    }

    /// Whether `ino` is `ancestor` or lies below it, walking parent pointers up to the root.
    pub(super) fn is_within(&self, mut ino: u64, ancestor: u64) -> R<bool> {
        for _ in 0..MAX_DEPTH {
            if ino == ancestor {
                return Ok(true);
            }
            let parent = self.inode(ino)?.parent;
            if parent == ino || parent == 0 {
                return Ok(false);
            }
            ino = parent;
        }
        Err(Fail::Store(MetadError::Corrupt {
            what: "directory tree",
            reason: format!("parent chain of {ino} too deep"),
        }))
    }

    pub(super) fn share(&self, share_id: u64) -> R<ShareRec> {
        access::get_share(&self.shares, share_id)?.ok_or_else(|| {
            Fail::Store(MetadError::Corrupt {
                what: "share",
                reason: format!("share {share_id} is referenced but missing"),
            })
        })
    }

    // ---------------------------------------------------------------- mutations

    pub(super) fn put(&mut self, ino: u64, inode: &Inode) -> R<()> {
        access::put_inode(&mut self.inodes, ino, inode)?;
        Ok(())
    }

    /// Returns the counter's current value (starting at 1) and advances it.
    pub(super) fn take_counter(&mut self, name: &str) -> R<u64> {
        let cur = self.counters.get(name)?.map(|v| v.value()).unwrap_or(1);
        self.counters.insert(name, cur.saturating_add(1))?;
        Ok(cur)
    }

    /// Adds `name -> child` to `dir` (whose record the caller writes back) in a new slot.
    pub(super) fn add_entry(&mut self, dir_ino: u64, dir: &mut Inode, name: &[u8], child: u64) -> R<()> {
        let slot = dir.next_slot;
        dir.next_slot = dir.next_slot.saturating_add(1);
        dir.size = dir.size.saturating_add(1);
        self.dentries.insert((dir_ino, name), (slot, child))?;
        self.dir_slots.insert((dir_ino, slot), (name, child))?;
        Ok(())
    }

    /// Removes `name` (in `slot`) from `dir` (whose record the caller writes back).
    pub(super) fn remove_entry(&mut self, dir_ino: u64, dir: &mut Inode, name: &[u8], slot: u64) -> R<()> {
        self.dentries.remove((dir_ino, name))?;
        self.dir_slots.remove((dir_ino, slot))?;
        dir.size = dir.size.saturating_sub(1);
        Ok(())
    }

    fn chunk_ref(&mut self, hash: &[u8], delta: i64) -> R<()> {
        let cur = self.chunk_refs.get(hash)?.map(|v| v.value()).unwrap_or(0);
        let next = if delta >= 0 {
            cur.saturating_add(delta.unsigned_abs())
        } else {
            if cur < delta.unsigned_abs() {
                tracing::warn!(hash = %proto::ChunkHash::from_slice(hash).map(|h| h.to_string()).unwrap_or_default(), cur, "chunk reference count would go negative");
            }
            cur.saturating_sub(delta.unsigned_abs())
        };
        if next == 0 {
            self.chunk_refs.remove(hash)?;
        } else {
            self.chunk_refs.insert(hash, next)?;
        }
        Ok(())
    }

    /// Writes a range plan: rows, reference counts. Returns the change of referenced bytes.
    pub(super) fn apply_plan(&mut self, ino: u64, plan: &RangePlan) -> R<i128> {
        let mut delta: i128 = 0;
        for e in &plan.remove {
            self.extents.remove((ino, e.offset))?;
            self.chunk_ref(&e.hash, -1)?;
            delta -= i128::from(e.length);
        }
        for e in &plan.insert {
            let v = crate::model::encode_extent_value(e);
            self.extents.insert((ino, e.offset), v.as_slice())?;
            self.chunk_ref(&e.hash, 1)?;
            delta += i128::from(e.length);
        }
        Ok(delta)
    }

    /// Sets a regular file's size, dropping or clipping extents beyond a smaller size (and
    /// their chunk references). Returns the change of referenced bytes.
    pub(super) fn resize(&mut self, ino: u64, inode: &mut Inode, size: u64, now: i64) -> R<i128> {
        let mut delta = 0;
        if size < inode.size {
            let ov = access::overlapping_extents(&self.extents, ino, size, u64::MAX)?;
            let plan = extents::replace_range(&ov, size, u64::MAX, &[]);
            delta = self.apply_plan(ino, &plan)?;
            inode.used = clamp_add(inode.used, delta);
        }
        if size != inode.size {
            inode.size = size;
            inode.mtime_ns = now;
        }
        Ok(delta)
    }

    /// Deletes an inode whose last name is gone: its extents (and chunk references), its
    /// symlink target and its record. Returns the change of referenced bytes.
    pub(super) fn free_inode(&mut self, ino: u64, inode: &Inode) -> R<i128> {
        let mut freed = 0;
        if inode.kind == FileKind::Regular {
            let all = access::overlapping_extents(&self.extents, ino, 0, u64::MAX)?;
            freed = self.apply_plan(ino, &RangePlan { remove: all, insert: Vec::new() })?;
        }
        if inode.kind == FileKind::Symlink {
            self.symlinks.remove(ino)?;
        }
        self.inodes.remove(ino)?;
        Ok(freed)
    }

    /// Drops one name of a non-directory: frees it at nlink 0, else writes the decremented
    /// link count. Returns (change of referenced bytes, change of inodes in use).
    pub(super) fn unlink_inode(&mut self, ino: u64, mut inode: Inode, now: i64) -> R<(i128, i64)> {
        if inode.nlink <= 1 {
            return Ok((self.free_inode(ino, &inode)?, -1));
        }
        inode.nlink -= 1;
        touch_changed(&mut inode, now);
        self.put(ino, &inode)?;
        Ok((0, 0))
    }

    pub(super) fn add_usage(&mut self, share_id: u64, bytes: i128, files: i64) -> R<()> {
        if bytes == 0 && files == 0 {
            return Ok(());
        }
        let mut share = self.share(share_id)?;
        share.bytes_used = clamp_add(share.bytes_used, bytes);
        share.files = clamp_add(share.files, i128::from(files));
        access::put_share(&mut self.shares, share_id, &share)?;
        Ok(())
    }

    // ---------------------------------------------------------------- shares

    fn create_share(&mut self, name: &str, export_path: &str, now_ns: i64, changes: &ShareChanges) -> R<Reply> {
        if name.is_empty() || name.len() > validate::MAX_SHARE_PATH_LEN {
            return Err(ApplyError::Invalid("share name must be 1..=1024 bytes".into()).into());
        }
        if !export_path.starts_with('/') || export_path.len() > validate::MAX_SHARE_PATH_LEN {
            return Err(ApplyError::Invalid("export path must be absolute and at most 1024 bytes".into()).into());
        }
        validate::check_share_changes(changes)?;
        if let Some(id) = self.share_paths.get(export_path)?.map(|v| v.value()) {
            let mut share = self.share(id)?;
            if !changes.is_empty() {
                changes.apply_to(&mut share);
                access::put_share(&mut self.shares, id, &share)?;
            }
            let root = self.inode(share.root_ino)?;
            return Ok(Reply::Share { share_id: id, root: AttrOut { ino: share.root_ino, inode: root } });
        }
        let share_id = self.take_counter("next_share_id")?;
        let ino = self.take_counter("next_ino")?;
        let mut root = new_inode(share_id, FileKind::Directory, 0o755, (0, 0), now_ns);
        root.parent = ino;
        self.put(ino, &root)?;
        let mut rec = ShareRec {
            name: name.to_string(),
            export_path: export_path.to_string(),
            root_ino: ino,
            files: 1,
            bytes_used: 0,
            replication_factor: 0,
            read_only: false,
            allowed_clients: Vec::new(),
            squash: Squash::None,
            anon_uid: DEFAULT_ANON_ID,
            anon_gid: DEFAULT_ANON_ID,
        };
        changes.apply_to(&mut rec);
        access::put_share(&mut self.shares, share_id, &rec)?;
        self.share_paths.insert(export_path, share_id)?;
        Ok(Reply::Share { share_id, root: AttrOut { ino, inode: root } })
    }

    /// Changes the options of an existing share: all of `changes` or, if any is invalid,
    /// nothing.
    fn update_share(&mut self, export_path: &str, changes: &ShareChanges) -> R<Reply> {
        validate::check_share_changes(changes)?;
        let Some(id) = self.share_paths.get(export_path)?.map(|v| v.value()) else {
            return Err(ApplyError::NotFound.into());
        };
        let mut share = self.share(id)?;
        changes.apply_to(&mut share);
        access::put_share(&mut self.shares, id, &share)?;
        Ok(Reply::Nothing)
    }
}

impl ShareChanges {
    /// Sets the given options on `share`.
    fn apply_to(&self, share: &mut ShareRec) {
        share.replication_factor = self.replication_factor.unwrap_or(share.replication_factor);
        share.read_only = self.read_only.unwrap_or(share.read_only);
        if let Some(list) = &self.allowed_clients {
            share.allowed_clients.clone_from(list);
        }
        share.squash = self.squash.unwrap_or(share.squash);
        share.anon_uid = self.anon_uid.unwrap_or(share.anon_uid);
        share.anon_gid = self.anon_gid.unwrap_or(share.anon_gid);
    }
}

/// Splits an operation's outcome into the recorded result and a storage failure.
fn settle(r: R<Reply>) -> Result<CommandResult, MetadError> {
    match r {
        Ok(reply) => Ok(Ok(reply)),
        Err(Fail::Refused(e)) => Ok(Err(e)),
        Err(Fail::Store(e)) => Err(e),
    }
}

/// A fresh inode of `kind`, stamped with the proposer's time.
pub(super) fn new_inode(share_id: u64, kind: FileKind, mode: u32, (uid, gid): (u32, u32), now_ns: i64) -> Inode {
    let is_dir = kind == FileKind::Directory;
    Inode {
        share_id,
        generation: generation(now_ns),
        kind,
        mode,
        uid,
        gid,
        nlink: if is_dir { 2 } else { 1 },
        size: 0,
        used: 0,
        atime_ns: now_ns,
        mtime_ns: now_ns,
        ctime_ns: now_ns,
        btime_ns: now_ns,
        change: 1,
        parent: 0,
        next_slot: FIRST_SLOT,
        verifier: None,
        rdev_major: 0,
        rdev_minor: 0,
        lease_holder: 0,
        lease_epoch: 0,
    }
}

/// The pre/post attributes of a directory.
pub(super) fn wcc(ino: u64, before: Inode, after: &Inode) -> Wcc {
    Wcc { before: AttrOut { ino, inode: before }, after: AttrOut { ino, inode: after.clone() } }
}

/// Content or entries changed: mtime, ctime and the change counter move.
pub(super) fn touch_modified(inode: &mut Inode, now_ns: i64) {
    inode.mtime_ns = now_ns;
    touch_changed(inode, now_ns);
}

/// Only the inode's metadata changed: ctime and the change counter move.
pub(super) fn touch_changed(inode: &mut Inode, now_ns: i64) {
    inode.ctime_ns = now_ns;
    inode.change = inode.change.saturating_add(1);
}

/// New inodes get the proposer's timestamp as generation: inode numbers are never reused
/// within a store, and the timestamp also tells apart handles from a wiped and re-created one.
fn generation(now_ns: i64) -> u64 {
    u64::try_from(now_ns).unwrap_or(0).max(1)
}

pub(super) fn clamp_add(v: u64, delta: i128) -> u64 {
    let r = i128::from(v) + delta;
    u64::try_from(r.max(0)).unwrap_or(u64::MAX)
}
