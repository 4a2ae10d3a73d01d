//! `Vfs` for `Engine`: each method is one of the engine's paths or one metad call.
//!
//! Owns the 1:1 mappings (exports and mount, which also refresh the share cache of
//! `shares`; export_of answers from that cache; lookup, create, remove, readdir, fsstat,
//! symlink, readlink, mknod, link, access), filling each request's `cred`, the
//! read-your-writes adjustment of attributes (size extended over this gateway's buffered
//! data), and keeping buffered data consistent across namespace changes that replace
//! content: an UNCHECKED CREATE with a size and a RENAME onto an existing file first flush
//! the target's buffered writes (they came before the call) and hold its flush lock across
//! the metad call, so nothing older commits after it. If that flush fails the data stays
//! buffered and the usual rule applies: flushed later if the inode lives on (another hard
//! link), dropped when metad answers `Stale`/`NotFound`. Must never bypass the write/flush
//! paths for content, nor answer with attributes that hide buffered writes.
//!
//! FSSTAT: no capacity source exists yet (block daemons do not report free space), so
//! total bytes is `ASSUMED_CAPACITY_BYTES` and free bytes that minus the share's logical
//! bytes; free files is `ASSUMED_FREE_FILES`. Replace when blockd reports capacity.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use proto::{FileHandle, FsError, pb};

use super::files::FileState;
use super::{ChunkApi, Engine, MetaApi};
use crate::exports::{Export, MountTable};
use crate::vfs::{ACCESS_READ, ACCESS_WRITE, FsStat, ReadReply, Stability, Vfs, WriteReply};

/// FSSTAT's total bytes until block daemons report capacity (1 PiB).
pub const ASSUMED_CAPACITY_BYTES: u64 = 1 << 50;
/// FSSTAT's free inodes until metad reports a limit.
pub const ASSUMED_FREE_FILES: u64 = 1 << 32;

impl<M: MetaApi, C: ChunkApi> Engine<M, C> {
    /// `attr` with its size extended over data buffered here for the same node.
    fn with_buffered(&self, mut attr: pb::Attr) -> pb::Attr {
        if let Some(n) = attr.node
            && let Some(end) = self.files.buffered_end(&FileHandle::from(n))
        {
            attr.size = attr.size.max(end);
        }
        attr
    }

    /// Primes the permission cache from an answer metad just gave: `granted` bits, and
    /// read/write for the owner (who passes `check_access` anyway), so the WRITE that
    /// follows a CREATE or an ACCESS does not ask again.
    fn remember_grants(&self, cred: &pb::Cred, attr: &pb::Attr, granted: u32) {
        let Some(node) = attr.node.map(FileHandle::from) else { return };
        let owner = if attr.uid == cred.uid { ACCESS_READ | ACCESS_WRITE } else { 0 };
        let now = Instant::now();
        for bit in [ACCESS_READ, ACCESS_WRITE] {
            if (granted | owner) & bit != 0 {
                self.access.grant(node, cred, bit, now);
            }
        }
    }

    /// The file named `name` in `dir` if this gateway tracks it (it may hold buffered
    /// writes). Costs a Lookup only while some file has buffered data.
    async fn tracked_entry(
        &self,
        cred: &pb::Cred,
        dir: FileHandle,
        name: &[u8],
    ) -> Result<Option<(FileHandle, Arc<FileState>)>, FsError> {
        if self.budget.available() >= self.budget.capacity() {
            return Ok(None); // no permits out: nothing is buffered anywhere
        }
        let req = pb::LookupRequest { dir: Some(dir.into()), name: name.to_vec(), cred: Some(cred.clone()) };
        let attr = match self.meta.lookup(req).await {
            Ok(r) => r.attr,
            Err(FsError::NotFound) => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(attr.and_then(|a| a.node).map(FileHandle::from).and_then(|h| self.files.get(&h).map(|f| (h, f))))
    }

    /// Runs `op` (a metad call that may replace the content of `name` in `dir`) after
    /// flushing that file's buffered writes, holding its flush lock across `op`.
    async fn replacing<T>(
        &self,
        cred: &pb::Cred,
        dir: FileHandle,
        name: &[u8],
        op: impl Future<Output = Result<T, FsError>>,
    ) -> Result<T, FsError> {
        let Some((node, file)) = self.tracked_entry(cred, dir, name).await? else {
            return op.await;
        };
        let _guard = file.flush_lock.lock().await;
        if let Err(e) = self.flush_locked(node, &file).await {
            // Kept buffered (or dropped if gone); retried by the background flusher.
            tracing::debug!(?node, error = %e, "flush before replacing a file failed");
        }
        op.await
    }
}

impl<M: MetaApi, C: ChunkApi> Vfs for Engine<M, C> {
    async fn exports(&self) -> Result<Vec<pb::Share>, FsError> {
        let shares = self.meta.list_shares().await?;
        shares.iter().for_each(|s| self.shares.remember(s));
        Ok(shares)
    }

    async fn mount(&self, export_path: &str) -> Result<pb::Share, FsError> {
        let share = self.meta.get_share(export_path).await?;
        self.shares.remember(&share);
        Ok(share)
    }

    async fn export_of(&self, share_id: u64) -> Result<Arc<Export>, FsError> {
        self.share_export(share_id).await
    }

    fn mount_table(&self) -> &MountTable {
        &self.mounts
    }

    async fn getattr(&self, node: FileHandle) -> Result<pb::Attr, FsError> {
        let attr = self.meta.get_attr(node.into()).await?;
        if let Some(f) = self.files.get(&node) {
            f.remember_attr(&attr);
        }
        Ok(self.with_buffered(attr))
    }

    async fn lookup(&self, cred: &pb::Cred, dir: FileHandle, name: &[u8]) -> Result<pb::LookupReply, FsError> {
        let req = pb::LookupRequest { dir: Some(dir.into()), name: name.to_vec(), cred: Some(cred.clone()) };
        let mut reply = self.meta.lookup(req).await?;
        reply.attr = reply.attr.map(|a| self.with_buffered(a));
        Ok(reply)
    }

    async fn create(&self, cred: &pb::Cred, mut req: pb::CreateRequest) -> Result<pb::CreateReply, FsError> {
        req.cred = Some(cred.clone());
        if req.kind == pb::FileType::Regular as i32 {
            // A new file comes with its write lease: its first WRITE needs no Raft write.
            req.lease_instance = self.instance;
        }
        let mut reply = match (req.size, req.dir) {
            (Some(_), Some(dir)) => {
                let name = req.name.clone();
                self.replacing(cred, dir.into(), &name, self.meta.create(req)).await?
            }
            _ => self.meta.create(req).await?,
        };
        reply.attr = reply.attr.map(|a| self.with_buffered(a));
        if let Some(a) = &reply.attr {
            self.remember_grants(cred, a, 0);
            if let (Some(node), epoch @ 1..) = (a.node, reply.lease_epoch) {
                // A new file's lease, or an existing one's taken by truncating it (UNCHECKED
                // with a size; what this gateway buffered under a lost lease is dropped).
                self.adopt_lease(&self.files.get_or_insert(node.into()), epoch);
            }
        }
        Ok(reply)
    }

    async fn remove(
        &self,
        cred: &pb::Cred,
        dir: FileHandle,
        name: &[u8],
        directory: bool,
    ) -> Result<pb::WccDir, FsError> {
        let req = pb::RemoveRequest {
            dir: Some(dir.into()),
            name: name.to_vec(),
            directory,
            cred: Some(cred.clone()),
            request_id: None,
        };
        let reply = self.meta.remove(req).await?;
        reply.dir.ok_or_else(|| FsError::Internal("metad answered Remove without directory attributes".into()))
    }

    async fn readdir(
        &self,
        cred: &pb::Cred,
        dir: FileHandle,
        cookie: u64,
        cookie_verifier: u64,
        max_entries: u32,
    ) -> Result<pb::ReadDirReply, FsError> {
        let req = pb::ReadDirRequest {
            dir: Some(dir.into()),
            cookie,
            max_entries,
            cookie_verifier,
            cred: Some(cred.clone()),
        };
        let mut reply = self.meta.read_dir(req).await?;
        for e in &mut reply.entries {
            e.attr = e.attr.take().map(|a| self.with_buffered(a));
        }
        Ok(reply)
    }

    async fn setattr(&self, cred: &pb::Cred, req: pb::SetAttrRequest) -> Result<pb::SetAttrReply, FsError> {
        self.setattr_impl(cred, req).await
    }

    async fn read(&self, cred: &pb::Cred, node: FileHandle, offset: u64, count: u32) -> Result<ReadReply, FsError> {
        self.read_impl(cred, node, offset, count).await
    }

    async fn write(
        &self,
        cred: &pb::Cred,
        node: FileHandle,
        offset: u64,
        data: Bytes,
        stable: Stability,
    ) -> Result<WriteReply, FsError> {
        self.write_impl(cred, node, offset, data, stable).await
    }

    /// Flushes with the credential of the buffered data's writer (the committer may be
    /// another user; the data was authorized when written).
    async fn commit(&self, _cred: &pb::Cred, node: FileHandle) -> Result<pb::Attr, FsError> {
        self.commit_impl(node).await
    }

    async fn fsstat(&self, node: FileHandle) -> Result<FsStat, FsError> {
        let s = self.meta.fs_stat(node.into()).await?;
        // The cluster's capacity as metad knows it from block daemon heartbeats; before any
        // daemon has reported, an assumed capacity (clients refuse a zero-sized filesystem).
        let (total_bytes, free_bytes) = if s.capacity_bytes > 0 {
            (s.capacity_bytes, s.free_bytes.min(s.capacity_bytes))
        } else {
            (ASSUMED_CAPACITY_BYTES, ASSUMED_CAPACITY_BYTES.saturating_sub(s.bytes_used))
        };
        Ok(FsStat {
            total_bytes,
            free_bytes,
            total_files: s.files.saturating_add(ASSUMED_FREE_FILES),
            free_files: ASSUMED_FREE_FILES,
        })
    }

    async fn symlink(&self, cred: &pb::Cred, mut req: pb::SymlinkRequest) -> Result<pb::CreateReply, FsError> {
        req.cred = Some(cred.clone());
        self.meta.symlink(req).await
    }

    async fn readlink(&self, cred: &pb::Cred, node: FileHandle) -> Result<pb::ReadLinkReply, FsError> {
        self.meta.read_link(pb::ReadLinkRequest { node: Some(node.into()), cred: Some(cred.clone()) }).await
    }

    async fn mknod(&self, cred: &pb::Cred, mut req: pb::MknodRequest) -> Result<pb::CreateReply, FsError> {
        req.cred = Some(cred.clone());
        self.meta.mknod(req).await
    }

    async fn link(
        &self,
        cred: &pb::Cred,
        node: FileHandle,
        dir: FileHandle,
        name: &[u8],
    ) -> Result<pb::LinkReply, FsError> {
        let req = pb::LinkRequest {
            node: Some(node.into()),
            dir: Some(dir.into()),
            name: name.to_vec(),
            cred: Some(cred.clone()),
            request_id: None,
        };
        let mut reply = self.meta.link(req).await?;
        reply.attr = reply.attr.map(|a| self.with_buffered(a));
        Ok(reply)
    }

    async fn rename(
        &self,
        cred: &pb::Cred,
        from: (FileHandle, &[u8]),
        to: (FileHandle, &[u8]),
    ) -> Result<pb::RenameReply, FsError> {
        let req = pb::RenameRequest {
            from_dir: Some(from.0.into()),
            from_name: from.1.to_vec(),
            to_dir: Some(to.0.into()),
            to_name: to.1.to_vec(),
            cred: Some(cred.clone()),
            request_id: None,
        };
        self.replacing(cred, to.0, to.1, self.meta.rename(req)).await
    }

    async fn access(&self, cred: &pb::Cred, node: FileHandle, mask: u32) -> Result<pb::AccessReply, FsError> {
        let req = pb::AccessRequest { node: Some(node.into()), cred: Some(cred.clone()), mask };
        let mut reply = self.meta.access(req).await?;
        reply.attr = reply.attr.map(|a| self.with_buffered(a));
        if let Some(a) = &reply.attr {
            self.remember_grants(cred, a, reply.granted);
        }
        Ok(reply)
    }

    fn write_verifier(&self) -> [u8; 8] {
        self.verifier.current()
    }
}
