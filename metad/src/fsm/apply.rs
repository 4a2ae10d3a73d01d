//! Applying one command to the state-machine tables inside the caller's write transaction.
//!
//! Owns: the namespace rules of every mutation (create/remove/setattr/commit-extents/shares),
//! POSIX time and link-count bookkeeping, extent replacement and chunk reference counts.
//! Must never: leave a partial change behind a refusal. Every command first checks everything
//! that can refuse it (reads only), then mutates; after the first write the only possible
//! failure is a storage error, which aborts the whole transaction.

use redb::{ReadableTable, Table, WriteTransaction};

use super::check_live;
use crate::command::{ApplyError, Command, CommandResult, CreateMode, NodeKey, Reply, Wcc};
use crate::error::MetadError;
use crate::extents::{self, RangePlan};
use crate::model::{AttrOut, Extent, FileKind, FIRST_SLOT, Inode, ShareRec};
use crate::store::{self, access};
use crate::validate;

/// Why a command did not apply: refused by the rules (deterministic, recorded as the reply)
/// or a storage failure (aborts the batch).
enum Fail {
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

type R<T> = Result<T, Fail>;

/// The state-machine tables, open for writing in one transaction.
pub struct WriteTables<'t> {
    inodes: Table<'t, u64, &'static [u8]>,
    dentries: Table<'t, (u64, &'static [u8]), (u64, u64)>,
    dir_slots: Table<'t, (u64, u64), (&'static [u8], u64)>,
    extents: Table<'t, (u64, u64), &'static [u8]>,
    chunk_refs: Table<'t, &'static [u8], u64>,
    shares: Table<'t, u64, &'static [u8]>,
    share_paths: Table<'t, &'static str, u64>,
    counters: Table<'t, &'static str, u64>,
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
        })
    }

    /// Applies one command. `Err` only for storage failures; refusals are `Ok(Err(..))`.
    pub fn apply(&mut self, cmd: &Command) -> Result<CommandResult, MetadError> {
        let r = match cmd {
            Command::CreateShare { name, export_path, now_ns } => self.create_share(name, export_path, *now_ns),
            Command::Create { dir, name, kind, mode, uid, gid, how, now_ns } => {
                self.create(dir, name, *kind, (*mode, *uid, *gid), *how, *now_ns)
            }
            Command::Remove { dir, name, directory, now_ns } => self.remove(dir, name, *directory, *now_ns),
            Command::SetAttr { node, size, mode, uid, gid, atime_ns, mtime_ns, now_ns } => {
                self.set_attr(node, *size, *mode, *uid, *gid, *atime_ns, *mtime_ns, *now_ns)
            }
            Command::CommitExtents { node, range_start, range_end, extents, now_ns } => {
                self.commit_extents(node, *range_start, *range_end, extents, *now_ns)
            }
        };
        match r {
            Ok(reply) => Ok(Ok(reply)),
            Err(Fail::Refused(e)) => Ok(Err(e)),
            Err(Fail::Store(e)) => Err(e),
        }
    }

    // ---------------------------------------------------------------- helpers

    fn inode(&self, ino: u64) -> R<Inode> {
        access::get_inode(&self.inodes, ino)?
            .ok_or_else(|| Fail::Store(MetadError::Corrupt { what: "inode", reason: format!("inode {ino} is referenced but missing") }))
    }

    fn live(&self, key: &NodeKey) -> R<Inode> {
        Ok(check_live(access::get_inode(&self.inodes, key.ino)?, key)?)
    }

    fn live_dir(&self, key: &NodeKey) -> R<Inode> {
        let dir = self.live(key)?;
        if dir.kind != FileKind::Directory {
            return Err(ApplyError::NotDir.into());
        }
        Ok(dir)
    }

    fn share(&self, share_id: u64) -> R<ShareRec> {
        access::get_share(&self.shares, share_id)?
            .ok_or_else(|| Fail::Store(MetadError::Corrupt { what: "share", reason: format!("share {share_id} is referenced but missing") }))
    }

    /// Returns the counter's current value (starting at 1) and advances it.
    fn take_counter(&mut self, name: &str) -> R<u64> {
        let cur = self.counters.get(name)?.map(|v| v.value()).unwrap_or(1);
        self.counters.insert(name, cur + 1)?;
        Ok(cur)
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
    fn apply_plan(&mut self, ino: u64, plan: &RangePlan) -> R<i128> {
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

    fn add_bytes_used(&mut self, share_id: u64, delta: i128, files_delta: i64) -> R<()> {
        if delta == 0 && files_delta == 0 {
            return Ok(());
        }
        let mut share = self.share(share_id)?;
        share.bytes_used = clamp_add(share.bytes_used, delta);
        share.files = clamp_add(share.files, i128::from(files_delta));
        access::put_share(&mut self.shares, share_id, &share)?;
        Ok(())
    }

    // ---------------------------------------------------------------- commands

    fn create_share(&mut self, name: &str, export_path: &str, now_ns: i64) -> R<Reply> {
        if name.is_empty() || name.len() > validate::MAX_SHARE_PATH_LEN {
            return Err(ApplyError::Invalid("share name must be 1..=1024 bytes".into()).into());
        }
        if !export_path.starts_with('/') || export_path.len() > validate::MAX_SHARE_PATH_LEN {
            return Err(ApplyError::Invalid("export path must be absolute and at most 1024 bytes".into()).into());
        }
        if let Some(id) = self.share_paths.get(export_path)?.map(|v| v.value()) {
            let share = self.share(id)?;
            let root = self.inode(share.root_ino)?;
            return Ok(Reply::Share { share_id: id, root: AttrOut { ino: share.root_ino, inode: root } });
        }
        let share_id = self.take_counter("next_share_id")?;
        let ino = self.take_counter("next_ino")?;
        let root = Inode {
            share_id,
            generation: generation(now_ns),
            kind: FileKind::Directory,
            mode: 0o755,
            uid: 0,
            gid: 0,
            nlink: 2,
            size: 0,
            used: 0,
            atime_ns: now_ns,
            mtime_ns: now_ns,
            ctime_ns: now_ns,
            btime_ns: now_ns,
            change: 1,
            parent: ino,
            next_slot: FIRST_SLOT,
            verifier: None,
        };
        access::put_inode(&mut self.inodes, ino, &root)?;
        let rec = ShareRec { name: name.to_string(), export_path: export_path.to_string(), root_ino: ino, files: 1, bytes_used: 0 };
        access::put_share(&mut self.shares, share_id, &rec)?;
        self.share_paths.insert(export_path, share_id)?;
        Ok(Reply::Share { share_id, root: AttrOut { ino, inode: root } })
    }

    fn create(
        &mut self,
        dir_key: &NodeKey,
        name: &[u8],
        kind: FileKind,
        (mode, uid, gid): (u32, u32, u32),
        how: CreateMode,
        now_ns: i64,
    ) -> R<Reply> {
        validate::check_name(name)?;
        let dir = self.live_dir(dir_key)?;
        let existing = self.dentries.get((dir_key.ino, name))?.map(|v| v.value());
        if let Some((_slot, child_ino)) = existing {
            let child = self.inode(child_ino)?;
            let same = AttrOut { ino: dir_key.ino, inode: dir.clone() };
            let reuse = match (kind, how) {
                (FileKind::Directory, _) | (_, CreateMode::Guarded) => false,
                (FileKind::Regular, CreateMode::Unchecked) => child.kind == FileKind::Regular,
                (FileKind::Regular, CreateMode::Exclusive(v)) => child.kind == FileKind::Regular && child.verifier == Some(v),
            };
            if !reuse {
                return Err(ApplyError::Exists.into());
            }
            return Ok(Reply::Created { attr: AttrOut { ino: child_ino, inode: child }, dir: Wcc { before: same.clone(), after: same } });
        }

        // Checks done; mutate.
        let ino = self.take_counter("next_ino")?;
        let is_dir = kind == FileKind::Directory;
        let child = Inode {
            share_id: dir.share_id,
            generation: generation(now_ns),
            kind,
            mode: mode & 0o7777,
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
            parent: if is_dir { dir_key.ino } else { 0 },
            next_slot: FIRST_SLOT,
            verifier: match how {
                CreateMode::Exclusive(v) => Some(v),
                _ => None,
            },
        };
        let before = dir.clone();
        let mut after = dir;
        let slot = after.next_slot;
        after.next_slot += 1;
        after.size += 1;
        if is_dir {
            after.nlink = after.nlink.saturating_add(1);
        }
        touch_modified(&mut after, now_ns);

        access::put_inode(&mut self.inodes, ino, &child)?;
        self.dentries.insert((dir_key.ino, name), (slot, ino))?;
        self.dir_slots.insert((dir_key.ino, slot), (name, ino))?;
        access::put_inode(&mut self.inodes, dir_key.ino, &after)?;
        self.add_bytes_used(after.share_id, 0, 1)?;
        Ok(Reply::Created {
            attr: AttrOut { ino, inode: child },
            dir: Wcc { before: AttrOut { ino: dir_key.ino, inode: before }, after: AttrOut { ino: dir_key.ino, inode: after } },
        })
    }

    fn remove(&mut self, dir_key: &NodeKey, name: &[u8], directory: bool, now_ns: i64) -> R<Reply> {
        validate::check_name(name)?;
        let dir = self.live_dir(dir_key)?;
        let (slot, child_ino) = self.dentries.get((dir_key.ino, name))?.map(|v| v.value()).ok_or(ApplyError::NotFound)?;
        let child = self.inode(child_ino)?;
        match (directory, child.kind) {
            (true, FileKind::Regular) => return Err(ApplyError::NotDir.into()),
            (false, FileKind::Directory) => return Err(ApplyError::IsDir.into()),
            (true, FileKind::Directory) => {
                if self.dir_slots.range((child_ino, 0)..=(child_ino, u64::MAX))?.next().is_some() {
                    return Err(ApplyError::NotEmpty.into());
                }
            }
            (false, FileKind::Regular) => {}
        }

        // Checks done; mutate.
        let mut freed: i128 = 0;
        if child.kind == FileKind::Regular {
            let all = access::overlapping_extents(&self.extents, child_ino, 0, u64::MAX)?;
            let plan = RangePlan { remove: all, insert: Vec::new() };
            freed = self.apply_plan(child_ino, &plan)?;
        }
        self.dentries.remove((dir_key.ino, name))?;
        self.dir_slots.remove((dir_key.ino, slot))?;
        self.inodes.remove(child_ino)?;
        let before = dir.clone();
        let mut after = dir;
        after.size = after.size.saturating_sub(1);
        if child.kind == FileKind::Directory {
            after.nlink = after.nlink.saturating_sub(1).max(2);
        }
        touch_modified(&mut after, now_ns);
        access::put_inode(&mut self.inodes, dir_key.ino, &after)?;
        self.add_bytes_used(after.share_id, freed, -1)?;
        Ok(Reply::Removed {
            dir: Wcc { before: AttrOut { ino: dir_key.ino, inode: before }, after: AttrOut { ino: dir_key.ino, inode: after } },
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn set_attr(
        &mut self,
        key: &NodeKey,
        size: Option<u64>,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        atime_ns: Option<i64>,
        mtime_ns: Option<i64>,
        now_ns: i64,
    ) -> R<Reply> {
        let node = self.live(key)?;
        if let Some(size) = size {
            if node.kind == FileKind::Directory {
                return Err(ApplyError::IsDir.into());
            }
            if size > validate::MAX_FILE_SIZE {
                return Err(ApplyError::TooBig.into());
            }
        }

        // Checks done; mutate.
        let before = node.clone();
        let mut after = node;
        let mut delta: i128 = 0;
        let mut changed = false;
        if let Some(size) = size {
            if size < after.size {
                let ov = access::overlapping_extents(&self.extents, key.ino, size, u64::MAX)?;
                let plan = extents::replace_range(&ov, size, u64::MAX, &[]);
                delta = self.apply_plan(key.ino, &plan)?;
                after.used = clamp_add(after.used, delta);
            }
            if size != after.size {
                after.size = size;
                after.mtime_ns = now_ns;
            }
            changed = true;
        }
        if let Some(m) = mode {
            after.mode = m & 0o7777;
            changed = true;
        }
        if let Some(u) = uid {
            after.uid = u;
            changed = true;
        }
        if let Some(g) = gid {
            after.gid = g;
            changed = true;
        }
        if let Some(a) = atime_ns {
            after.atime_ns = a;
            changed = true;
        }
        if let Some(m) = mtime_ns {
            after.mtime_ns = m;
            changed = true;
        }
        if changed {
            after.ctime_ns = now_ns;
            after.change += 1;
            access::put_inode(&mut self.inodes, key.ino, &after)?;
            self.add_bytes_used(after.share_id, delta, 0)?;
        }
        Ok(Reply::Changed { before: AttrOut { ino: key.ino, inode: before }, after: AttrOut { ino: key.ino, inode: after } })
    }

    fn commit_extents(&mut self, key: &NodeKey, start: u64, end: u64, new: &[Extent], now_ns: i64) -> R<Reply> {
        let node = self.live(key)?;
        if node.kind != FileKind::Regular {
            return Err(ApplyError::IsDir.into());
        }
        validate::check_commit(start, end, new)?;

        // Checks done; mutate.
        let ov = access::overlapping_extents(&self.extents, key.ino, start, end)?;
        let plan = extents::replace_range(&ov, start, end, new);
        let delta = self.apply_plan(key.ino, &plan)?;
        let before = node.clone();
        let mut after = node;
        after.used = clamp_add(after.used, delta);
        after.size = after.size.max(end);
        touch_modified(&mut after, now_ns);
        access::put_inode(&mut self.inodes, key.ino, &after)?;
        self.add_bytes_used(after.share_id, delta, 0)?;
        Ok(Reply::Changed { before: AttrOut { ino: key.ino, inode: before }, after: AttrOut { ino: key.ino, inode: after } })
    }
}

/// Content or entries changed: mtime, ctime and the change counter move.
fn touch_modified(inode: &mut Inode, now_ns: i64) {
    inode.mtime_ns = now_ns;
    inode.ctime_ns = now_ns;
    inode.change += 1;
}

/// New inodes get the proposer's timestamp as generation: inode numbers are never reused
/// within a store, and the timestamp also tells apart handles from a wiped and re-created one.
fn generation(now_ns: i64) -> u64 {
    u64::try_from(now_ns).unwrap_or(0).max(1)
}

fn clamp_add(v: u64, delta: i128) -> u64 {
    let r = i128::from(v) + delta;
    u64::try_from(r.max(0)).unwrap_or(u64::MAX)
}
