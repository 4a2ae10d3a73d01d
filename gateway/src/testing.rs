//! An in-memory `Vfs` for protocol tests (compiled for tests and the `testing` feature).
//!
//! Owns: one share (`/export`, share id 1, root inode 1, export options settable with
//! `set_export_options`) held in a mutex: files with
//! their bytes (a symlink's bytes are its target), directories with sorted entries
//! (cookie = 1-based position in name order, verifier `COOKIE_VERIFIER`), hard links
//! (nlink counted, the inode dropped at 0), and a log of every WRITE and COMMIT plus the
//! last credential seen, so tests can see what a client sent.
//!
//! Semantics follow metad's contract where cheap: SETATTR's ctime guard (`NotSync`) and
//! server-time flags, CREATE's `size`, a stale cookie verifier (`BadCookie`), RENAME
//! replacing a target (no directory-cycle check beyond "not into itself"). `access`
//! answers from the mode bits; nothing else checks permissions.
//!
//! Must never: be used outside tests: it has no durability and no limits.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use proto::{FileHandle, FsError, pb};

use crate::exports::{Export, MountTable};
use crate::vfs::{FsStat, ReadReply, Stability, Vfs, WriteReply};

pub const SHARE_ID: u64 = 1;
pub const EXPORT_PATH: &str = "/export";
pub const ROOT_INO: u64 = 1;
pub const VERIFIER: [u8; 8] = *b"MEMVFS01";
pub const COOKIE_VERIFIER: u64 = 0x1234;
/// Largest file the in-memory filesystem holds (fuzzed sizes must not exhaust memory).
pub const MAX_FILE: usize = 64 << 20;

/// What a client did that tests may want to see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Write { ino: u64, offset: u64, len: usize, stable: Stability },
    Commit { ino: u64 },
}

/// The ctime after this many changes of a node (MemVfs's clock for ctime is a counter, so
/// guards are deterministic).
fn ctime_of(change: u64) -> pb::Time {
    pb::Time { secs: 1_000_000 + change as i64, nanos: 0 }
}

#[derive(Debug)]
struct Node {
    attr: pb::Attr,
    data: Vec<u8>,
    children: BTreeMap<Vec<u8>, u64>,
}

#[derive(Debug)]
struct State {
    nodes: HashMap<u64, Node>,
    next_ino: u64,
    events: Vec<Event>,
    last_cred: Option<pb::Cred>,
    /// The share's export options (read-only, allowed clients, squash, anonymous ids).
    options: pb::Share,
}

/// The in-memory filesystem.
#[derive(Debug)]
pub struct MemVfs {
    state: Mutex<State>,
    mounts: MountTable,
}

fn now() -> pb::Time {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    pb::Time { secs: d.as_secs() as i64, nanos: d.subsec_nanos() }
}

fn new_attr(ino: u64, kind: pb::FileType, mode: u32, uid: u32, gid: u32) -> pb::Attr {
    let t = now();
    let ctime = ctime_of(1);
    pb::Attr {
        node: Some(pb::NodeRef { share_id: SHARE_ID, ino, generation: 1 }),
        kind: kind as i32,
        mode,
        uid,
        gid,
        nlink: if kind == pb::FileType::Directory { 2 } else { 1 },
        size: 0,
        used: 0,
        atime: Some(t),
        mtime: Some(t),
        ctime: Some(ctime),
        btime: Some(t),
        change: 1,
        rdev_major: 0,
        rdev_minor: 0,
    }
}

fn touch(attr: &mut pb::Attr) {
    attr.mtime = Some(now());
    attr.change += 1;
    attr.ctime = Some(ctime_of(attr.change));
}

/// The ACCESS bits (read 4 / write 2 / execute 1 of the mode) `cred` holds on `attr`.
fn granted(attr: &pb::Attr, cred: &pb::Cred) -> u32 {
    if cred.uid == 0 {
        return 7;
    }
    let m = attr.mode;
    let bits = if cred.uid == attr.uid {
        m >> 6
    } else if cred.gid == attr.gid || cred.gids.contains(&attr.gid) {
        m >> 3
    } else {
        m
    } & 7;
    // rwx (4, 2, 1) -> ACCESS_READ 1, ACCESS_WRITE 2, ACCESS_EXECUTE 4.
    ((bits >> 2) & 1) | (bits & 2) | ((bits & 1) << 2)
}

impl Default for MemVfs {
    fn default() -> Self {
        Self::new()
    }
}

impl MemVfs {
    pub fn new() -> Self {
        let root = Node {
            attr: new_attr(ROOT_INO, pb::FileType::Directory, 0o777, 0, 0),
            data: Vec::new(),
            children: BTreeMap::new(),
        };
        MemVfs {
            state: Mutex::new(State {
                nodes: HashMap::from([(ROOT_INO, root)]),
                next_ino: 2,
                events: Vec::new(),
                last_cred: None,
                options: pb::Share { anon_uid: Some(65534), anon_gid: Some(65534), ..Default::default() },
            }),
            mounts: MountTable::default(),
        }
    }

    /// Changes the share's export options (`read_only`, `allowed_clients`, `squash`,
    /// `anon_uid`, `anon_gid` of `f`'s argument); they apply to the next call.
    pub fn set_export_options(&self, f: impl FnOnce(&mut pb::Share)) {
        f(&mut self.lock().options);
    }

    /// The root directory's handle.
    pub fn root() -> FileHandle {
        FileHandle { share_id: SHARE_ID, ino: ROOT_INO, generation: 1 }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every WRITE and COMMIT so far, in order.
    pub fn events(&self) -> Vec<Event> {
        self.lock().events.clone()
    }

    /// The credential of the latest call that carried one.
    pub fn last_cred(&self) -> Option<pb::Cred> {
        self.lock().last_cred.clone()
    }

    /// The content of the file at `name` in the root directory.
    pub fn file(&self, name: &[u8]) -> Option<Vec<u8>> {
        let s = self.lock();
        let ino = s.nodes.get(&ROOT_INO)?.children.get(name)?;
        s.nodes.get(ino).map(|n| n.data.clone())
    }
}

impl State {
    fn node(&self, h: FileHandle) -> Result<&Node, FsError> {
        if h.share_id != SHARE_ID {
            return Err(FsError::Stale);
        }
        let n = self.nodes.get(&h.ino).ok_or(FsError::Stale)?;
        match n.attr.node {
            Some(r) if r.generation == h.generation => Ok(n),
            _ => Err(FsError::Stale),
        }
    }

    fn node_mut(&mut self, h: FileHandle) -> Result<&mut Node, FsError> {
        self.node(h)?;
        self.nodes.get_mut(&h.ino).ok_or(FsError::Stale)
    }

    fn seen(&mut self, cred: &pb::Cred) {
        self.last_cred = Some(cred.clone());
    }

    /// Adds a new node named `name` in `dir` (refusing an existing name).
    fn add(
        &mut self,
        dir: FileHandle,
        name: &[u8],
        mut attr: pb::Attr,
        data: Vec<u8>,
    ) -> Result<pb::CreateReply, FsError> {
        let before = self.dir(dir)?.attr;
        if self.dir(dir)?.children.contains_key(name) {
            return Err(FsError::Exists);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        attr.node = Some(pb::NodeRef { share_id: SHARE_ID, ino, generation: 1 });
        attr.size = data.len() as u64;
        self.nodes.insert(ino, Node { attr, data, children: BTreeMap::new() });
        let d = self.node_mut(dir)?;
        d.children.insert(name.to_vec(), ino);
        touch(&mut d.attr);
        Ok(pb::CreateReply { attr: Some(attr), dir: Some(pb::WccDir { before: Some(before), after: Some(d.attr) }), lease_epoch: 0 })
    }

    /// Drops one link to `ino` (the inode goes with its last link).
    fn unlink(&mut self, ino: u64) {
        let gone = match self.nodes.get_mut(&ino) {
            Some(n) if n.attr.kind != pb::FileType::Directory as i32 && n.attr.nlink > 1 => {
                n.attr.nlink -= 1;
                touch(&mut n.attr);
                false
            }
            _ => true,
        };
        if gone {
            self.nodes.remove(&ino);
        }
    }

    fn dir(&self, h: FileHandle) -> Result<&Node, FsError> {
        let n = self.node(h)?;
        if n.attr.kind != pb::FileType::Directory as i32 {
            return Err(FsError::NotDir);
        }
        Ok(n)
    }
}

impl Vfs for MemVfs {
    async fn exports(&self) -> Result<Vec<pb::Share>, FsError> {
        Ok(vec![self.mount(EXPORT_PATH).await?])
    }

    async fn mount(&self, export_path: &str) -> Result<pb::Share, FsError> {
        if export_path != EXPORT_PATH {
            return Err(FsError::NotFound);
        }
        let s = self.lock();
        Ok(pb::Share {
            share_id: SHARE_ID,
            name: "export".into(),
            export_path: EXPORT_PATH.into(),
            root: Some(s.node(Self::root())?.attr),
            replication_factor: 0,
            ..s.options.clone()
        })
    }

    async fn export_of(&self, share_id: u64) -> Result<Arc<Export>, FsError> {
        if share_id != SHARE_ID {
            return Err(FsError::Stale);
        }
        Ok(Arc::new(Export::from_share(&self.mount(EXPORT_PATH).await?)))
    }

    fn mount_table(&self) -> &MountTable {
        &self.mounts
    }

    async fn getattr(&self, node: FileHandle) -> Result<pb::Attr, FsError> {
        Ok(self.lock().node(node)?.attr)
    }

    async fn lookup(&self, cred: &pb::Cred, dir: FileHandle, name: &[u8]) -> Result<pb::LookupReply, FsError> {
        let mut s = self.lock();
        s.seen(cred);
        let d = s.dir(dir)?;
        let ino = match name {
            b"." => dir.ino,
            // The directory holding this one (the root is its own parent).
            b".." => s.nodes.iter().find(|(_, n)| n.children.values().any(|c| *c == dir.ino)).map_or(dir.ino, |(i, _)| *i),
            _ => *d.children.get(name).ok_or(FsError::NotFound)?,
        };
        let attr = s.nodes.get(&ino).ok_or(FsError::NotFound)?.attr;
        Ok(pb::LookupReply { attr: Some(attr), dir: Some(d.attr) })
    }

    async fn create(&self, cred: &pb::Cred, req: pb::CreateRequest) -> Result<pb::CreateReply, FsError> {
        let mut s = self.lock();
        s.seen(cred);
        let dir_h: FileHandle = req.dir.ok_or(FsError::BadHandle)?.into();
        let before = s.dir(dir_h)?.attr;
        if let Some(existing) = s.dir(dir_h)?.children.get(&req.name).copied() {
            let n = s.nodes.get_mut(&existing).ok_or(FsError::Stale)?;
            return match pb::CreateHow::try_from(req.how) {
                Ok(pb::CreateHow::Unchecked) if n.attr.kind == req.kind => {
                    if let Some(size) = req.size {
                        let size = usize::try_from(size).ok().filter(|s| *s <= MAX_FILE).ok_or(FsError::TooBig)?;
                        n.data.resize(size, 0);
                        n.attr.size = size as u64;
                        n.attr.used = size as u64;
                        touch(&mut n.attr);
                    }
                    Ok(pb::CreateReply {
                        attr: Some(n.attr),
                        dir: Some(pb::WccDir { before: Some(before), after: Some(before) }),
                        lease_epoch: 0,
                    })
                }
                _ => Err(FsError::Exists),
            };
        }
        let kind = pb::FileType::try_from(req.kind).map_err(|_| FsError::Invalid("kind".into()))?;
        let size = usize::try_from(req.size.unwrap_or(0)).ok().filter(|s| *s <= MAX_FILE).ok_or(FsError::TooBig)?;
        let attr = new_attr(0, kind, req.mode, req.uid, req.gid);
        s.add(dir_h, &req.name, attr, vec![0; size])
    }

    async fn remove(
        &self,
        cred: &pb::Cred,
        dir: FileHandle,
        name: &[u8],
        directory: bool,
    ) -> Result<pb::WccDir, FsError> {
        let mut s = self.lock();
        s.seen(cred);
        let d = s.dir(dir)?;
        let before = d.attr;
        let ino = *d.children.get(name).ok_or(FsError::NotFound)?;
        let n = s.nodes.get(&ino).ok_or(FsError::NotFound)?;
        let is_dir = n.attr.kind == pb::FileType::Directory as i32;
        match (directory, is_dir) {
            (true, false) => return Err(FsError::NotDir),
            (false, true) => return Err(FsError::IsDir),
            (true, true) if !n.children.is_empty() => return Err(FsError::NotEmpty),
            _ => {}
        }
        s.unlink(ino);
        let d = s.node_mut(dir)?;
        d.children.remove(name);
        touch(&mut d.attr);
        Ok(pb::WccDir { before: Some(before), after: Some(d.attr) })
    }

    async fn readdir(
        &self,
        cred: &pb::Cred,
        dir: FileHandle,
        cookie: u64,
        cookie_verifier: u64,
        max_entries: u32,
    ) -> Result<pb::ReadDirReply, FsError> {
        let mut s = self.lock();
        s.seen(cred);
        if cookie_verifier != 0 && cookie_verifier != COOKIE_VERIFIER {
            return Err(FsError::BadCookie);
        }
        let d = s.dir(dir)?;
        // Cookies as metad gives them: entry i has cookie FIRST_ENTRY_COOKIE + i (1 and 2 are
        // "." and "..", which the NFS layer lists).
        let first = crate::nfs3::readdir::FIRST_ENTRY_COOKIE;
        let skip = usize::try_from(cookie.saturating_add(1).saturating_sub(first)).map_err(|_| FsError::Invalid("cookie".into()))?;
        let mut entries = Vec::new();
        for (i, (name, ino)) in d.children.iter().enumerate().skip(skip).take(max_entries as usize) {
            let attr = s.nodes.get(ino).map(|n| n.attr);
            entries.push(pb::DirEntry { name: name.clone(), cookie: i as u64 + first, attr });
        }
        let eof = skip + entries.len() >= d.children.len();
        Ok(pb::ReadDirReply { entries, eof, dir: Some(d.attr), cookie_verifier: COOKIE_VERIFIER })
    }

    async fn setattr(&self, cred: &pb::Cred, req: pb::SetAttrRequest) -> Result<pb::SetAttrReply, FsError> {
        let mut s = self.lock();
        s.seen(cred);
        let n = s.node_mut(req.node.ok_or(FsError::BadHandle)?.into())?;
        let before = n.attr;
        if req.guard_ctime.is_some() && req.guard_ctime != n.attr.ctime {
            return Err(FsError::NotSync);
        }
        if let Some(size) = req.size {
            let size = usize::try_from(size).ok().filter(|s| *s <= MAX_FILE).ok_or(FsError::TooBig)?;
            n.data.resize(size, 0);
            n.attr.size = size as u64;
            n.attr.used = size as u64;
        }
        if let Some(m) = req.mode {
            n.attr.mode = m;
        }
        if let Some(u) = req.uid {
            n.attr.uid = u;
        }
        if let Some(g) = req.gid {
            n.attr.gid = g;
        }
        touch(&mut n.attr);
        if let Some(t) = req.atime {
            n.attr.atime = Some(t);
        }
        if let Some(t) = req.mtime {
            n.attr.mtime = Some(t);
        }
        if req.atime_now {
            n.attr.atime = Some(now());
        }
        if req.mtime_now {
            n.attr.mtime = Some(now());
        }
        Ok(pb::SetAttrReply { before: Some(before), after: Some(n.attr), lease_epoch: 0 })
    }

    async fn read(&self, cred: &pb::Cred, node: FileHandle, offset: u64, count: u32) -> Result<ReadReply, FsError> {
        let mut s = self.lock();
        s.seen(cred);
        let n = s.node(node)?;
        if n.attr.kind == pb::FileType::Directory as i32 {
            return Err(FsError::IsDir);
        }
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(n.data.len());
        let end = start.saturating_add(count as usize).min(n.data.len());
        Ok(ReadReply { data: Bytes::copy_from_slice(&n.data[start..end]), eof: end == n.data.len(), attr: n.attr })
    }

    async fn write(
        &self,
        cred: &pb::Cred,
        node: FileHandle,
        offset: u64,
        data: Bytes,
        stable: Stability,
    ) -> Result<WriteReply, FsError> {
        let mut s = self.lock();
        s.seen(cred);
        s.events.push(Event::Write { ino: node.ino, offset, len: data.len(), stable });
        let n = s.node_mut(node)?;
        if n.attr.kind == pb::FileType::Directory as i32 {
            return Err(FsError::IsDir);
        }
        let before = n.attr;
        let start = usize::try_from(offset).map_err(|_| FsError::TooBig)?;
        let end = start.checked_add(data.len()).ok_or(FsError::TooBig)?;
        if end > MAX_FILE {
            return Err(FsError::TooBig);
        }
        if n.data.len() < end {
            n.data.resize(end, 0);
        }
        n.data[start..end].copy_from_slice(&data);
        n.attr.size = n.data.len() as u64;
        n.attr.used = n.attr.size;
        touch(&mut n.attr);
        Ok(WriteReply { before, after: n.attr, committed: stable, verifier: self.write_verifier() })
    }

    async fn commit(&self, cred: &pb::Cred, node: FileHandle) -> Result<pb::Attr, FsError> {
        let mut s = self.lock();
        s.seen(cred);
        s.events.push(Event::Commit { ino: node.ino });
        Ok(s.node(node)?.attr)
    }

    async fn fsstat(&self, node: FileHandle) -> Result<FsStat, FsError> {
        let s = self.lock();
        s.node(node)?;
        let used: u64 = s.nodes.values().map(|n| n.attr.size).sum();
        Ok(FsStat {
            total_bytes: 1 << 40,
            free_bytes: (1u64 << 40).saturating_sub(used),
            total_files: 1 << 20,
            free_files: (1u64 << 20).saturating_sub(s.nodes.len() as u64),
        })
    }

    async fn symlink(&self, cred: &pb::Cred, req: pb::SymlinkRequest) -> Result<pb::CreateReply, FsError> {
        let mut s = self.lock();
        s.seen(cred);
        let dir: FileHandle = req.dir.ok_or(FsError::BadHandle)?.into();
        let attr = new_attr(0, pb::FileType::Symlink, req.mode, cred.uid, cred.gid);
        s.add(dir, &req.name, attr, req.target)
    }

    async fn readlink(&self, cred: &pb::Cred, node: FileHandle) -> Result<pb::ReadLinkReply, FsError> {
        let mut s = self.lock();
        s.seen(cred);
        let n = s.node(node)?;
        if n.attr.kind != pb::FileType::Symlink as i32 {
            return Err(FsError::Invalid("not a symlink".into()));
        }
        Ok(pb::ReadLinkReply { target: n.data.clone(), attr: Some(n.attr) })
    }

    async fn mknod(&self, cred: &pb::Cred, req: pb::MknodRequest) -> Result<pb::CreateReply, FsError> {
        let mut s = self.lock();
        s.seen(cred);
        let dir: FileHandle = req.dir.ok_or(FsError::BadHandle)?.into();
        let kind = match pb::FileType::try_from(req.kind) {
            Ok(
                k @ (pb::FileType::Fifo | pb::FileType::Socket | pb::FileType::CharDevice | pb::FileType::BlockDevice),
            ) => k,
            _ => return Err(FsError::Invalid("mknod kind".into())),
        };
        let mut attr = new_attr(0, kind, req.mode, cred.uid, cred.gid);
        (attr.rdev_major, attr.rdev_minor) = (req.rdev_major, req.rdev_minor);
        s.add(dir, &req.name, attr, Vec::new())
    }

    async fn link(
        &self,
        cred: &pb::Cred,
        node: FileHandle,
        dir: FileHandle,
        name: &[u8],
    ) -> Result<pb::LinkReply, FsError> {
        let mut s = self.lock();
        s.seen(cred);
        if node.share_id != dir.share_id {
            return Err(FsError::CrossDevice);
        }
        if s.node(node)?.attr.kind == pb::FileType::Directory as i32 {
            return Err(FsError::IsDir);
        }
        let before = s.dir(dir)?.attr;
        if s.dir(dir)?.children.contains_key(name) {
            return Err(FsError::Exists);
        }
        let n = s.node_mut(node)?;
        n.attr.nlink += 1;
        touch(&mut n.attr);
        let attr = n.attr;
        let d = s.node_mut(dir)?;
        d.children.insert(name.to_vec(), node.ino);
        touch(&mut d.attr);
        Ok(pb::LinkReply { attr: Some(attr), dir: Some(pb::WccDir { before: Some(before), after: Some(d.attr) }) })
    }

    async fn rename(
        &self,
        cred: &pb::Cred,
        from: (FileHandle, &[u8]),
        to: (FileHandle, &[u8]),
    ) -> Result<pb::RenameReply, FsError> {
        let mut s = self.lock();
        s.seen(cred);
        if from.0.share_id != to.0.share_id {
            return Err(FsError::CrossDevice);
        }
        let from_before = s.dir(from.0)?.attr;
        let to_before = s.dir(to.0)?.attr;
        let ino = *s.dir(from.0)?.children.get(from.1).ok_or(FsError::NotFound)?;
        if ino == to.0.ino {
            return Err(FsError::Invalid("moving a directory into itself".into()));
        }
        let moving_dir = s.nodes.get(&ino).is_some_and(|n| n.attr.kind == pb::FileType::Directory as i32);
        if let Some(&target) = s.dir(to.0)?.children.get(to.1) {
            if target == ino {
                let wcc = |a| Some(pb::WccDir { before: Some(a), after: Some(a) });
                return Ok(pb::RenameReply { from_dir: wcc(from_before), to_dir: wcc(to_before) });
            }
            let t = s.nodes.get(&target).ok_or(FsError::Stale)?;
            match (moving_dir, t.attr.kind == pb::FileType::Directory as i32) {
                (true, false) => return Err(FsError::NotDir),
                (false, true) => return Err(FsError::IsDir),
                (true, true) if !t.children.is_empty() => return Err(FsError::NotEmpty),
                _ => {}
            }
            s.unlink(target);
        }
        let f = s.node_mut(from.0)?;
        f.children.remove(from.1);
        touch(&mut f.attr);
        let t = s.node_mut(to.0)?;
        t.children.insert(to.1.to_vec(), ino);
        touch(&mut t.attr);
        let from_after = s.node(from.0)?.attr;
        let to_after = s.node(to.0)?.attr;
        Ok(pb::RenameReply {
            from_dir: Some(pb::WccDir { before: Some(from_before), after: Some(from_after) }),
            to_dir: Some(pb::WccDir { before: Some(to_before), after: Some(to_after) }),
        })
    }

    async fn access(&self, cred: &pb::Cred, node: FileHandle, mask: u32) -> Result<pb::AccessReply, FsError> {
        let mut s = self.lock();
        s.seen(cred);
        let attr = s.node(node)?.attr;
        Ok(pb::AccessReply { granted: granted(&attr, cred) & mask, attr: Some(attr) })
    }

    fn write_verifier(&self) -> [u8; 8] {
        VERIFIER
    }
}
