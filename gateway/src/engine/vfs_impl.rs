//! `Vfs` for `Engine`: each method is one of the engine's paths or one metad call.
//!
//! Owns the 1:1 mappings (exports, mount, lookup, create, remove, readdir, fsstat) and the
//! read-your-writes adjustment of attributes (size extended over this gateway's buffered
//! data). Must never bypass the write/flush paths for content, nor answer with attributes
//! that hide buffered writes.
//!
//! FSSTAT: no capacity source exists yet (block daemons do not report free space), so
//! total bytes is `ASSUMED_CAPACITY_BYTES` and free bytes that minus the share's logical
//! bytes; free files is `ASSUMED_FREE_FILES`. Replace when blockd reports capacity.

use bytes::Bytes;
use proto::{FileHandle, FsError, pb};

use super::{ChunkApi, Engine, MetaApi};
use crate::vfs::{FsStat, ReadReply, Stability, Vfs, WriteReply};

/// FSSTAT's total bytes until block daemons report capacity (1 PiB).
pub const ASSUMED_CAPACITY_BYTES: u64 = 1 << 50;
/// FSSTAT's free inodes until metad reports a limit.
pub const ASSUMED_FREE_FILES: u64 = 1 << 32;

impl<M: MetaApi, C: ChunkApi> Engine<M, C> {
    /// `attr` with its size extended over data buffered here for the same node.
    fn with_buffered(&self, mut attr: pb::Attr) -> pb::Attr {
        if let Some(n) = attr.node
            && let Some(end) = self.files.buffered_end(&FileHandle::from(n)) {
                attr.size = attr.size.max(end);
            }
        attr
    }
}

impl<M: MetaApi, C: ChunkApi> Vfs for Engine<M, C> {
    async fn exports(&self) -> Result<Vec<pb::Share>, FsError> {
        self.meta.list_shares().await
    }

    async fn mount(&self, export_path: &str) -> Result<pb::Share, FsError> {
        self.meta.get_share(export_path).await
    }

    async fn getattr(&self, node: FileHandle) -> Result<pb::Attr, FsError> {
        let attr = self.meta.get_attr(node.into()).await?;
        if let Some(f) = self.files.get(&node) {
            f.remember_attr(&attr);
        }
        Ok(self.with_buffered(attr))
    }

    async fn lookup(&self, dir: FileHandle, name: &[u8]) -> Result<pb::LookupReply, FsError> {
        let mut reply = self.meta.lookup(pb::LookupRequest { dir: Some(dir.into()), name: name.to_vec(), ..Default::default() }).await?;
        reply.attr = reply.attr.map(|a| self.with_buffered(a));
        Ok(reply)
    }

    async fn create(&self, req: pb::CreateRequest) -> Result<pb::CreateReply, FsError> {
        self.meta.create(req).await
    }

    async fn remove(&self, dir: FileHandle, name: &[u8], directory: bool) -> Result<pb::WccDir, FsError> {
        let reply = self
            .meta
            .remove(pb::RemoveRequest { dir: Some(dir.into()), name: name.to_vec(), directory, ..Default::default() })
            .await?;
        reply.dir.ok_or_else(|| FsError::Internal("metad answered Remove without directory attributes".into()))
    }

    async fn readdir(&self, dir: FileHandle, cookie: u64, max_entries: u32) -> Result<pb::ReadDirReply, FsError> {
        let mut reply = self.meta.read_dir(pb::ReadDirRequest { dir: Some(dir.into()), cookie, max_entries, ..Default::default() }).await?;
        for e in &mut reply.entries {
            e.attr = e.attr.take().map(|a| self.with_buffered(a));
        }
        Ok(reply)
    }

    async fn setattr(&self, req: pb::SetAttrRequest) -> Result<pb::SetAttrReply, FsError> {
        self.setattr_impl(req).await
    }

    async fn read(&self, node: FileHandle, offset: u64, count: u32) -> Result<ReadReply, FsError> {
        self.read_impl(node, offset, count).await
    }

    async fn write(&self, node: FileHandle, offset: u64, data: Bytes, stable: Stability) -> Result<WriteReply, FsError> {
        self.write_impl(node, offset, data, stable).await
    }

    async fn commit(&self, node: FileHandle) -> Result<pb::Attr, FsError> {
        self.commit_impl(node).await
    }

    async fn fsstat(&self, node: FileHandle) -> Result<FsStat, FsError> {
        let s = self.meta.fs_stat(node.into()).await?;
        Ok(FsStat {
            total_bytes: ASSUMED_CAPACITY_BYTES,
            free_bytes: ASSUMED_CAPACITY_BYTES.saturating_sub(s.bytes_used),
            total_files: s.files.saturating_add(ASSUMED_FREE_FILES),
            free_files: ASSUMED_FREE_FILES,
        })
    }

    fn write_verifier(&self) -> [u8; 8] {
        self.verifier.current()
    }
}
