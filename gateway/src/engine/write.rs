//! WRITE, COMMIT and size-changing SETATTR: how client writes enter the dirty buffers and
//! when they must be made durable before the answer.
//!
//! Owns the permission check of data calls (`check_access`: metad's Access when the WRITE
//! arrives, unless granted within `access::ACCESS_TTL`; the owner may always write, as
//! metad's CommitExtents allows), the budget handshake (permits before data enters a buffer; a writer that must
//! wait wakes the background flusher), recording the last writer's credential for the
//! flush, and the stability rules (UNSTABLE answered from the
//! buffer, DATA_SYNC/FILE_SYNC flushed before the answer and reported as FILE_SYNC, and
//! not visible to this gateway's reads before then).
//! Per-file write fencing: data enters a buffer only under the file's write lease (taken
//! from metad on the first write if this gateway does not hold it), and is committed under
//! that lease or not at all (`flush`).
//! Must never answer FILE_SYNC before the flush succeeded, nor let a flush that started
//! before a truncation commit after it (the truncation holds the file's flush lock), nor
//! buffer data under a lease other than the one the file's buffer is under.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use bytes::Bytes;
use proto::{FileHandle, FsError, pb};

use super::files::{FileState, Lease};
use super::{ChunkApi, Engine, MetaApi, lock};
use crate::vfs::{ACCESS_WRITE, Stability, WriteReply};

/// Counts a writer waiting for budget while it exists (also if the write is cancelled).
struct WaitingWriter<'a>(&'a AtomicUsize);

impl<'a> WaitingWriter<'a> {
    fn enter(count: &'a AtomicUsize) -> WaitingWriter<'a> {
        count.fetch_add(1, Ordering::SeqCst);
        WaitingWriter(count)
    }
}

impl Drop for WaitingWriter<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Times a write takes its file's lease before giving up (`FsError::Fenced`: JUKEBOX).
const LEASE_ATTEMPTS: usize = 3;
/// How long a lease metad confirmed is trusted before a write checks it again.
const LEASE_TRUST: std::time::Duration = std::time::Duration::from_millis(500);

/// Largest file offset the engine accepts (keeps offsets representable as `i64` for NFS).
pub const MAX_FILE_SIZE: u64 = i64::MAX as u64;

impl<M: MetaApi, C: ChunkApi> Engine<M, C> {
    /// Attributes of a tracked file: cached if fresh, else from metad; size extended over
    /// the buffered data.
    pub(super) async fn file_attr(&self, node: FileHandle, file: &FileState) -> Result<pb::Attr, FsError> {
        let cached = lock(&file.inner).fresh_attr(Instant::now());
        let attr = match cached {
            Some(a) => a,
            None => {
                let a = self.meta.get_attr(node.into()).await?;
                file.remember_attr(&a);
                a
            }
        };
        Ok(lock(&file.inner).with_buffered_size(attr))
    }

    /// Fails with `Access` unless `cred` may `bit` (`ACCESS_READ`/`ACCESS_WRITE`) `node`:
    /// a grant remembered from the last `ACCESS_TTL`, else metad's Access answer. The owner
    /// counts as granted, as metad's GetExtents/CommitExtents allow ("or ownership").
    /// Only grants are remembered.
    pub(super) async fn check_access(&self, cred: &pb::Cred, node: FileHandle, bit: u32) -> Result<(), FsError> {
        if self.access.allows(node, cred, bit, Instant::now()) {
            return Ok(());
        }
        let reply = self
            .meta
            .access(pb::AccessRequest { node: Some(node.into()), cred: Some(cred.clone()), mask: bit })
            .await?;
        let owner = reply.attr.is_some_and(|a| a.uid == cred.uid);
        if reply.granted & bit == 0 && !owner {
            return Err(FsError::Access);
        }
        self.access.grant(node, cred, bit, Instant::now());
        Ok(())
    }

    pub(super) async fn write_impl(
        &self,
        cred: &pb::Cred,
        node: FileHandle,
        offset: u64,
        data: Bytes,
        stable: Stability,
    ) -> Result<WriteReply, FsError> {
        let len = data.len() as u64;
        offset.checked_add(len).filter(|e| *e <= MAX_FILE_SIZE).ok_or(FsError::TooBig)?;
        self.check_access(cred, node, ACCESS_WRITE).await?;
        let file = self.files.get_or_insert(node);
        let before = self.file_attr(node, &file).await?;
        match pb::FileType::try_from(before.kind) {
            Ok(pb::FileType::Regular) => {}
            Ok(pb::FileType::Directory) => return Err(FsError::IsDir),
            _ => return Err(FsError::Invalid("not a regular file".into())),
        }
        let (committed, verifier) = match stable {
            Stability::Unstable => {
                let verifier = match len {
                    0 => self.verifier.current(),
                    _ => self.leased_write(cred, node, &file, offset, data, stable).await?.0,
                };
                (Stability::Unstable, verifier)
            }
            Stability::DataSync | Stability::FileSync => {
                // Reads here wait until the data is committed (`FileState::stable`).
                let _invisible = file.stable.write().await;
                let seq = match len {
                    0 => 0,
                    _ => self.leased_write(cred, node, &file, offset, data, stable).await?.1,
                };
                self.flush_file(node, &file).await?;
                // The flush that took this data may have been another one (a background or
                // COMMIT flush running when it arrived) that failed or was fenced and
                // dropped it: then it is not durable, and the client must try again.
                if lock(&file.inner).buf.was_dropped(seq) {
                    return Err(FsError::Unavailable("its data was dropped by a failed or fenced flush".into()));
                }
                (Stability::FileSync, self.verifier.current())
            }
        };
        let after = self.file_attr(node, &file).await?;
        Ok(WriteReply { before, after, committed, verifier })
    }

    /// Buffers a write under the file's write lease, taking the lease first if this
    /// gateway holds none or has not had it confirmed for `LEASE_TRUST` (a Raft write at
    /// metad; a file this gateway created comes with it). Returns the write verifier the
    /// data was buffered under and its sequence number in the buffer.
    async fn leased_write(
        &self,
        cred: &pb::Cred,
        node: FileHandle,
        file: &Arc<FileState>,
        offset: u64,
        data: Bytes,
        stable: Stability,
    ) -> Result<([u8; 8], u64), FsError> {
        // The lease can be lost between taking it and buffering (a flush was fenced):
        // take it again, a few times at most.
        for _ in 0..LEASE_ATTEMPTS {
            let epoch = self.write_lease(cred, node, file).await?;
            if let Some(buffered) = self.buffer_write(cred, file, offset, data.clone(), stable, epoch).await? {
                return Ok(buffered);
            }
        }
        Err(FsError::Fenced)
    }

    /// The epoch of `node`'s write lease this gateway holds, taking the lease if it holds
    /// none or its last confirmation is older than `LEASE_TRUST`. Checking again after a
    /// while keeps a write that arrives long after another gateway took the lease from
    /// being buffered under the lost one and refused at commit (a needless "try again");
    /// within `LEASE_TRUST` that can still happen, and is safe. Concurrent WRITEs of one
    /// file share one acquisition (each was checked with Access before it got here).
    async fn write_lease(&self, cred: &pb::Cred, node: FileHandle, file: &FileState) -> Result<u64, FsError> {
        if let Some(l) = lock(&file.inner).lease
            && l.confirmed.elapsed() < LEASE_TRUST
        {
            return Ok(l.epoch);
        }
        self.lease_acquisitions
            .run(node, || async {
                let reply = self
                    .meta
                    .acquire_write_lease(pb::AcquireWriteLeaseRequest {
                        node: Some(node.into()),
                        instance: self.instance,
                        cred: Some(cred.clone()),
                        request_id: None,
                    })
                    .await?;
                self.adopt_lease(file, reply.epoch);
                Ok(reply.epoch)
            })
            .await
    }

    /// Records that metad just confirmed `epoch` as this gateway's lease on `file`. If the
    /// file was buffering under another epoch, the lease was lost in between (another
    /// gateway held it): what was buffered under the old one may be older than what was
    /// written there, so it is dropped.
    pub(super) fn adopt_lease(&self, file: &FileState, epoch: u64) {
        let now = Instant::now();
        let excess = {
            let mut inner = lock(&file.inner);
            let excess = match inner.lease {
                Some(l) if l.epoch != epoch => inner.drop_for_lost_lease(&self.verifier),
                _ => 0,
            };
            inner.lease = Some(Lease { epoch, confirmed: now });
            excess
        };
        self.budget.release(excess);
    }

    /// Takes budget (waiting if needed) and records the data in the file's buffer if the
    /// file's lease is still `epoch`; returns the write verifier it was buffered under
    /// (read with the data inserted, so a flush failure that drops it and changes the
    /// verifier is seen by this write's COMMIT) and its sequence number, or `None` if the
    /// lease changed.
    async fn buffer_write(
        &self,
        cred: &pb::Cred,
        file: &Arc<FileState>,
        offset: u64,
        data: Bytes,
        stable: Stability,
        epoch: u64,
    ) -> Result<Option<([u8; 8], u64)>, FsError> {
        let want = data.len() as u64;
        let got = match self.budget.try_acquire(want) {
            Some(n) => n,
            None => {
                let _waiting = WaitingWriter::enter(&self.writers_waiting);
                self.pressure.notify_one();
                self.budget.acquire(want).await?
            }
        };
        let (excess, buffered) = {
            let mut inner = lock(&file.inner);
            if inner.lease.map(|l| l.epoch) != Some(epoch) {
                drop(inner);
                self.budget.release(got);
                return Ok(None);
            }
            inner.held += got;
            let seq = inner.buf.insert(offset, data);
            inner.writer = Some(cred.clone());
            inner.last_write = Instant::now();
            if stable == Stability::Unstable {
                inner.unstable_acked = true;
            }
            (inner.excess_permits(), (self.verifier.current(), seq))
        };
        self.budget.release(excess);
        if self.budget.available() < self.budget.capacity() / 4 {
            self.pressure.notify_one();
        }
        Ok(Some(buffered))
    }

    pub(super) async fn commit_impl(&self, node: FileHandle) -> Result<pb::Attr, FsError> {
        match self.files.get(&node) {
            Some(file) => {
                self.flush_file(node, &file).await?;
                self.file_attr(node, &file).await
            }
            None => self.meta.get_attr(node.into()).await,
        }
    }

    pub(super) async fn setattr_impl(
        &self,
        cred: &pb::Cred,
        mut req: pb::SetAttrRequest,
    ) -> Result<pb::SetAttrReply, FsError> {
        req.cred = Some(cred.clone());
        let node: FileHandle = req.node.ok_or(FsError::BadHandle)?.into();
        if req.mode.is_some() || req.uid.is_some() || req.gid.is_some() {
            // Permissions change: remembered grants may no longer hold.
            self.access.forget(node);
        }
        if req.size.is_some() {
            // A truncation takes the file's write lease, so what another gateway buffered
            // before it cannot be committed over it afterwards (metad fences that commit).
            req.lease_instance = self.instance;
        }
        let Some(file) = self.files.get(&node) else {
            let reply = self.meta.set_attr(req).await?;
            if reply.lease_epoch != 0 {
                // The writes that usually follow (O_TRUNC) need no lease of their own.
                self.adopt_lease(&self.files.get_or_insert(node), reply.lease_epoch);
            }
            return Ok(reply);
        };
        // A size change must not race a flush: flush what is buffered, then truncate, all
        // under the flush lock so no older flush commits beyond the new size afterwards.
        let _guard = if req.size.is_some() {
            let guard = file.flush_lock.lock().await;
            self.flush_locked(node, &file).await?;
            Some(guard)
        } else {
            None
        };
        let mut reply = self.meta.set_attr(req).await?;
        if reply.lease_epoch != 0 {
            self.adopt_lease(&file, reply.lease_epoch);
        }
        if let Some(after) = &reply.after {
            file.remember_attr(after);
        }
        let inner = lock(&file.inner);
        reply.before = reply.before.map(|a| inner.with_buffered_size(a));
        reply.after = reply.after.map(|a| inner.with_buffered_size(a));
        Ok(reply)
    }
}
