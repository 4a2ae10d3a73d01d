//! An in-memory `Vfs` for protocol tests (compiled for tests and the `testing` feature).
//!
//! Owns: one share (`/export`, share id 1, root inode 1) held in a mutex: files with
//! their bytes, directories with sorted entries (cookie = 1-based position in name
//! order), and a log of every WRITE and COMMIT so tests can see what a client sent.
//!
//! Must never: be used outside tests: it has no durability, no permissions and no limits.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use proto::{FileHandle, FsError, pb};

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
}

/// The in-memory filesystem.
#[derive(Debug)]
pub struct MemVfs {
    state: Mutex<State>,
}

fn now() -> pb::Time {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    pb::Time { secs: d.as_secs() as i64, nanos: d.subsec_nanos() }
}

fn new_attr(ino: u64, kind: pb::FileType, mode: u32, uid: u32, gid: u32) -> pb::Attr {
    let t = now();
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
        ctime: Some(t),
        btime: Some(t),
        change: 1,
        rdev_major: 0,
        rdev_minor: 0,
    }
}

fn touch(attr: &mut pb::Attr) {
    let t = now();
    attr.mtime = Some(t);
    attr.ctime = Some(t);
    attr.change += 1;
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
        MemVfs { state: Mutex::new(State { nodes: HashMap::from([(ROOT_INO, root)]), next_ino: 2, events: Vec::new() }) }
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
        })
    }

    async fn getattr(&self, node: FileHandle) -> Result<pb::Attr, FsError> {
        Ok(self.lock().node(node)?.attr)
    }

    async fn lookup(&self, dir: FileHandle, name: &[u8]) -> Result<pb::LookupReply, FsError> {
        let s = self.lock();
        let d = s.dir(dir)?;
        let ino = d.children.get(name).ok_or(FsError::NotFound)?;
        let attr = s.nodes.get(ino).ok_or(FsError::NotFound)?.attr;
        Ok(pb::LookupReply { attr: Some(attr), dir: Some(d.attr) })
    }

    async fn create(&self, req: pb::CreateRequest) -> Result<pb::CreateReply, FsError> {
        let mut s = self.lock();
        let dir_h: FileHandle = req.dir.ok_or(FsError::BadHandle)?.into();
        let before = s.dir(dir_h)?.attr;
        if let Some(existing) = s.dir(dir_h)?.children.get(&req.name) {
            let n = s.nodes.get(existing).ok_or(FsError::Stale)?;
            return match pb::CreateHow::try_from(req.how) {
                Ok(pb::CreateHow::Unchecked) if n.attr.kind == req.kind => {
                    Ok(pb::CreateReply { attr: Some(n.attr), dir: Some(pb::WccDir { before: Some(before), after: Some(before) }) })
                }
                _ => Err(FsError::Exists),
            };
        }
        let ino = s.next_ino;
        s.next_ino += 1;
        let kind = pb::FileType::try_from(req.kind).map_err(|_| FsError::Invalid("kind".into()))?;
        let attr = new_attr(ino, kind, req.mode, req.uid, req.gid);
        s.nodes.insert(ino, Node { attr, data: Vec::new(), children: BTreeMap::new() });
        let d = s.node_mut(dir_h)?;
        d.children.insert(req.name, ino);
        touch(&mut d.attr);
        let after = d.attr;
        Ok(pb::CreateReply { attr: Some(attr), dir: Some(pb::WccDir { before: Some(before), after: Some(after) }) })
    }

    async fn remove(&self, dir: FileHandle, name: &[u8], directory: bool) -> Result<pb::WccDir, FsError> {
        let mut s = self.lock();
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
        s.nodes.remove(&ino);
        let d = s.node_mut(dir)?;
        d.children.remove(name);
        touch(&mut d.attr);
        Ok(pb::WccDir { before: Some(before), after: Some(d.attr) })
    }

    async fn readdir(&self, dir: FileHandle, cookie: u64, max_entries: u32) -> Result<pb::ReadDirReply, FsError> {
        let s = self.lock();
        let d = s.dir(dir)?;
        let skip = usize::try_from(cookie).map_err(|_| FsError::Invalid("cookie".into()))?;
        let mut entries = Vec::new();
        for (i, (name, ino)) in d.children.iter().enumerate().skip(skip).take(max_entries as usize) {
            let attr = s.nodes.get(ino).map(|n| n.attr);
            entries.push(pb::DirEntry { name: name.clone(), cookie: i as u64 + 1, attr });
        }
        let eof = skip + entries.len() >= d.children.len();
        Ok(pb::ReadDirReply { entries, eof, dir: Some(d.attr), cookie_verifier: COOKIE_VERIFIER })
    }

    async fn setattr(&self, req: pb::SetAttrRequest) -> Result<pb::SetAttrReply, FsError> {
        let mut s = self.lock();
        let n = s.node_mut(req.node.ok_or(FsError::BadHandle)?.into())?;
        let before = n.attr;
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
        Ok(pb::SetAttrReply { before: Some(before), after: Some(n.attr) })
    }

    async fn read(&self, node: FileHandle, offset: u64, count: u32) -> Result<ReadReply, FsError> {
        let s = self.lock();
        let n = s.node(node)?;
        if n.attr.kind == pb::FileType::Directory as i32 {
            return Err(FsError::IsDir);
        }
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(n.data.len());
        let end = start.saturating_add(count as usize).min(n.data.len());
        Ok(ReadReply { data: Bytes::copy_from_slice(&n.data[start..end]), eof: end == n.data.len(), attr: n.attr })
    }

    async fn write(&self, node: FileHandle, offset: u64, data: Bytes, stable: Stability) -> Result<WriteReply, FsError> {
        let mut s = self.lock();
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
        Ok(WriteReply { before, after: n.attr, committed: stable })
    }

    async fn commit(&self, node: FileHandle) -> Result<pb::Attr, FsError> {
        let mut s = self.lock();
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

    fn write_verifier(&self) -> [u8; 8] {
        VERIFIER
    }
}
