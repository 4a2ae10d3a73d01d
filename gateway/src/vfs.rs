//! The seam between protocol front ends and the file I/O engine.
//!
//! A protocol handler (NFSv3 now, SMB later) decodes a request, calls one method here and
//! encodes the answer: it never talks to metad or blockd itself. The engine (`engine`)
//! implements this against metad (gRPC) and block daemons (QUIC); unit tests of protocol
//! code may implement it in memory.
//!
//! Types are the wire contract's (`proto::pb`) so nothing is translated twice.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use proto::pb;
use proto::{FileHandle, FsError};

use crate::exports::{Export, MountTable};

/// How durable a WRITE must be before it is answered (NFSv3 `stable_how`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stability {
    /// May be answered from the gateway's buffer; made durable by COMMIT.
    Unstable,
    /// Data durable before the answer (Tessera treats it as FileSync).
    DataSync,
    /// Data and metadata durable before the answer.
    FileSync,
}

/// `AccessRequest.mask` / `AccessReply.granted` bits (metad's contract).
pub const ACCESS_READ: u32 = 1;
pub const ACCESS_WRITE: u32 = 2;
/// Execute a file, or search a directory.
pub const ACCESS_EXECUTE: u32 = 4;

#[derive(Clone, Debug)]
pub struct ReadReply {
    pub data: Bytes,
    pub eof: bool,
    pub attr: pb::Attr,
}

#[derive(Clone, Debug)]
pub struct WriteReply {
    pub before: pb::Attr,
    pub after: pb::Attr,
    /// The stability actually achieved (may exceed the one asked for).
    pub committed: Stability,
    /// The write verifier the data was buffered under: a COMMIT answering another one
    /// tells the client to resend (it may have changed as soon as the data was in).
    pub verifier: [u8; 8],
}

#[derive(Clone, Debug)]
pub struct FsStat {
    pub total_bytes: u64,
    pub free_bytes: u64,
    pub total_files: u64,
    pub free_files: u64,
}

/// Filesystem operations as the protocol front ends need them.
///
/// `cred` is the caller's identity after the front end's squashing rules (AUTH_NONE is
/// `nobody`); implementations pass it to metad on every call that carries one (metad
/// refuses a request without it) and never substitute their own. Requests given as
/// `proto::pb` messages have their `cred` (and `request_id`) filled by the implementation.
pub trait Vfs: Send + Sync + 'static {
    /// Shares exported by this gateway (MOUNT EXPORT).
    fn exports(&self) -> impl Future<Output = Result<Vec<pb::Share>, FsError>> + Send;
    /// The share exported at `path` (MOUNT MNT), as metad has it now (an implementation that
    /// caches export options refreshes them from this answer); its `root` gives the root handle.
    fn mount(&self, export_path: &str) -> impl Future<Output = Result<pb::Share, FsError>> + Send;
    /// The export options of share `share_id`, at most a few seconds old (`exports`
    /// enforces them on every NFSv3 call); a share metad does not list is `Stale`.
    fn export_of(&self, share_id: u64) -> impl Future<Output = Result<Arc<Export>, FsError>> + Send;
    /// The mounts this gateway handed out (MOUNT DUMP; advisory, in memory).
    fn mount_table(&self) -> &MountTable;
    /// Attributes, including the effect of writes buffered in this gateway.
    fn getattr(&self, node: FileHandle) -> impl Future<Output = Result<pb::Attr, FsError>> + Send;
    fn lookup(
        &self,
        cred: &pb::Cred,
        dir: FileHandle,
        name: &[u8],
    ) -> impl Future<Output = Result<pb::LookupReply, FsError>> + Send;
    fn create(
        &self,
        cred: &pb::Cred,
        req: pb::CreateRequest,
    ) -> impl Future<Output = Result<pb::CreateReply, FsError>> + Send;
    fn remove(
        &self,
        cred: &pb::Cred,
        dir: FileHandle,
        name: &[u8],
        directory: bool,
    ) -> impl Future<Output = Result<pb::WccDir, FsError>> + Send;
    /// One page of `dir` after `cookie`; `cookie_verifier` is 0 or the verifier of an
    /// earlier reply (a stale one is `FsError::BadCookie`).
    fn readdir(
        &self,
        cred: &pb::Cred,
        dir: FileHandle,
        cookie: u64,
        cookie_verifier: u64,
        max_entries: u32,
    ) -> impl Future<Output = Result<pb::ReadDirReply, FsError>> + Send;
    /// Applies `req` (with its guard and server-time flags) atomically.
    fn setattr(
        &self,
        cred: &pb::Cred,
        req: pb::SetAttrRequest,
    ) -> impl Future<Output = Result<pb::SetAttrReply, FsError>> + Send;
    fn read(
        &self,
        cred: &pb::Cred,
        node: FileHandle,
        offset: u64,
        count: u32,
    ) -> impl Future<Output = Result<ReadReply, FsError>> + Send;
    /// Permission is checked when the write arrives, also when it is only buffered.
    fn write(
        &self,
        cred: &pb::Cred,
        node: FileHandle,
        offset: u64,
        data: Bytes,
        stable: Stability,
    ) -> impl Future<Output = Result<WriteReply, FsError>> + Send;
    /// Makes every write to `node` acknowledged so far durable (NFSv3 COMMIT).
    fn commit(&self, cred: &pb::Cred, node: FileHandle) -> impl Future<Output = Result<pb::Attr, FsError>> + Send;
    fn fsstat(&self, node: FileHandle) -> impl Future<Output = Result<FsStat, FsError>> + Send;
    fn symlink(
        &self,
        cred: &pb::Cred,
        req: pb::SymlinkRequest,
    ) -> impl Future<Output = Result<pb::CreateReply, FsError>> + Send;
    fn readlink(
        &self,
        cred: &pb::Cred,
        node: FileHandle,
    ) -> impl Future<Output = Result<pb::ReadLinkReply, FsError>> + Send;
    fn mknod(
        &self,
        cred: &pb::Cred,
        req: pb::MknodRequest,
    ) -> impl Future<Output = Result<pb::CreateReply, FsError>> + Send;
    /// A new name `name` in `dir` for the existing non-directory `node`.
    fn link(
        &self,
        cred: &pb::Cred,
        node: FileHandle,
        dir: FileHandle,
        name: &[u8],
    ) -> impl Future<Output = Result<pb::LinkReply, FsError>> + Send;
    /// Atomically renames, replacing an existing target (see metad's `RenameRequest`).
    fn rename(
        &self,
        cred: &pb::Cred,
        from: (FileHandle, &[u8]),
        to: (FileHandle, &[u8]),
    ) -> impl Future<Output = Result<pb::RenameReply, FsError>> + Send;
    /// Which of `mask`'s bits (`ACCESS_READ`, `ACCESS_WRITE`, `ACCESS_EXECUTE`) the
    /// caller holds on `node`, with its attributes.
    fn access(
        &self,
        cred: &pb::Cred,
        node: FileHandle,
        mask: u32,
    ) -> impl Future<Output = Result<pb::AccessReply, FsError>> + Send;
    /// The write verifier: new on every gateway start, and changed whenever buffered
    /// UNSTABLE data acknowledged earlier could not be made durable, so clients resend.
    fn write_verifier(&self) -> [u8; 8];
}
