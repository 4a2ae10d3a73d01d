//! In-memory `MetaApi` and `ChunkApi` for the engine's tests.
//!
//! `FakeMeta` implements metad's extent semantics faithfully (CommitExtents replaces
//! everything in its range, trimming extents that straddle its ends; size becomes
//! `max(size, range_end)`; GetExtents clips to the asked range; truncation trims) so the
//! engine's flush logic is tested against the real contract. `FakeChunks` stores verified
//! chunks and can be told to fail or to corrupt. `FakeMeta` also records the credential of
//! every call (`creds`) and can refuse write permission (`deny_write`). Test-only; must never be used by
//! production code.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use proto::{ChunkHash, FileHandle, FsError, pb};

use super::api::{ChunkApi, MetaApi};
use super::lock;

pub const SHARE_ID: u64 = 1;
pub const ROOT_INO: u64 = 1;

pub fn root() -> FileHandle {
    FileHandle { share_id: SHARE_ID, ino: ROOT_INO, generation: 1 }
}

#[derive(Debug)]
struct Inode {
    attr: pb::Attr,
    extents: BTreeMap<u64, pb::Extent>,
    entries: BTreeMap<Vec<u8>, u64>,
    /// The write lease: (holder instance, epoch), as metad keeps it.
    lease: (u64, u64),
}

#[derive(Debug, Default)]
struct MetaState {
    inodes: HashMap<u64, Inode>,
    next_ino: u64,
}

#[derive(Debug, Default)]
pub struct MetaInner {
    state: Mutex<MetaState>,
    /// CommitExtents answers `Unavailable` while set.
    pub fail_commits: AtomicBool,
    /// CommitExtents waits here (a test holds it exclusively to keep a commit in flight)…
    pub commit_gate: tokio::sync::RwLock<()>,
    /// …after announcing its arrival here.
    pub commit_arrived: tokio::sync::Notify,
    /// AcquireWriteLease calls answered.
    pub lease_calls: AtomicUsize,
    /// AcquireWriteLease yields to the runtime a few times before answering (a Raft write
    /// takes a while), so concurrent writers overlap.
    pub slow_leases: AtomicBool,
    pub commits: AtomicUsize,
    /// Access grants everything but write while set (and CommitExtents refuses).
    pub deny_write: AtomicBool,
    pub access_calls: AtomicUsize,
    /// The share's `replication_factor` (0 = the cluster default).
    pub share_rf: AtomicU32,
    /// The share's `read_only` export option.
    pub share_read_only: AtomicBool,
    /// ListShares calls answered.
    pub list_shares_calls: AtomicUsize,
    /// (RPC name, its cred) of every call that carries one, in order.
    pub creds: Mutex<Vec<(&'static str, Option<pb::Cred>)>>,
}

/// A cloneable handle to one in-memory metad.
#[derive(Clone, Debug)]
pub struct FakeMeta(pub Arc<MetaInner>);

fn new_attr(ino: u64, kind: pb::FileType) -> pb::Attr {
    pb::Attr {
        node: Some(pb::NodeRef { share_id: SHARE_ID, ino, generation: 1 }),
        kind: kind as i32,
        mode: 0o644,
        nlink: 1,
        ..Default::default()
    }
}

fn ext_end(e: &pb::Extent) -> u64 {
    e.offset + e.length
}

/// The part of `e` inside `[lo, hi)` (which must overlap it).
fn clip(e: &pb::Extent, lo: u64, hi: u64) -> pb::Extent {
    let (a, b) = (e.offset.max(lo), ext_end(e).min(hi));
    pb::Extent { offset: a, length: b - a, chunk_offset: e.chunk_offset + (a - e.offset), ..e.clone() }
}

/// Removes everything in `[lo, hi)`, keeping the outside parts of straddling extents.
fn punch(map: &mut BTreeMap<u64, pb::Extent>, lo: u64, hi: u64) {
    let hit: Vec<u64> = map.values().filter(|e| e.offset < hi && ext_end(e) > lo).map(|e| e.offset).collect();
    for k in hit {
        let Some(e) = map.remove(&k) else { continue };
        if e.offset < lo {
            let left = clip(&e, e.offset, lo);
            map.insert(left.offset, left);
        }
        if ext_end(&e) > hi {
            let right = clip(&e, hi, ext_end(&e));
            map.insert(right.offset, right);
        }
    }
}

impl FakeMeta {
    pub fn new() -> FakeMeta {
        let mut st = MetaState { inodes: HashMap::new(), next_ino: ROOT_INO + 1 };
        st.inodes.insert(
            ROOT_INO,
            Inode {
                attr: new_attr(ROOT_INO, pb::FileType::Directory),
                extents: BTreeMap::new(),
                entries: BTreeMap::new(),
                lease: (0, 0),
            },
        );
        FakeMeta(Arc::new(MetaInner { state: Mutex::new(st), ..Default::default() }))
    }

    fn with_node<T>(
        &self,
        node: Option<pb::NodeRef>,
        f: impl FnOnce(&mut Inode) -> Result<T, FsError>,
    ) -> Result<T, FsError> {
        let node = node.ok_or(FsError::BadHandle)?;
        let mut st = lock(&self.0.state);
        let inode = st.inodes.get_mut(&node.ino).ok_or(FsError::Stale)?;
        if inode.attr.node.map(|n| n.generation) != Some(node.generation) {
            return Err(FsError::Stale);
        }
        f(inode)
    }

    /// Gives `ino`'s write lease to another gateway instance, as its first WRITE would.
    pub fn take_lease(&self, ino: u64, instance: u64) {
        if let Some(i) = lock(&self.0.state).inodes.get_mut(&ino) {
            i.lease = (instance, i.lease.1 + 1);
        }
    }

    /// The committed extents of `ino`: (offset, length, hash, chunk_offset, chunk_length).
    pub fn extents(&self, ino: u64) -> Vec<pb::Extent> {
        lock(&self.0.state).inodes.get(&ino).map(|i| i.extents.values().cloned().collect()).unwrap_or_default()
    }

    fn saw(&self, rpc: &'static str, cred: &Option<pb::Cred>) {
        lock(&self.0.creds).push((rpc, cred.clone()));
    }

    /// Every recorded (RPC, cred) so far.
    pub fn creds(&self) -> Vec<(&'static str, Option<pb::Cred>)> {
        lock(&self.0.creds).clone()
    }

    pub fn access_calls(&self) -> usize {
        self.0.access_calls.load(Ordering::SeqCst)
    }

    /// Adds `attr`'s node as `name` in `dir`.
    fn add(&self, dir: Option<pb::NodeRef>, name: &[u8], kind: pb::FileType) -> Result<pb::CreateReply, FsError> {
        let dir = dir.ok_or(FsError::BadHandle)?;
        let mut st = lock(&self.0.state);
        let ino = st.next_ino;
        let d = st.inodes.get_mut(&dir.ino).ok_or(FsError::Stale)?;
        if d.entries.contains_key(name) {
            return Err(FsError::Exists);
        }
        d.entries.insert(name.to_vec(), ino);
        let attr = new_attr(ino, kind);
        st.inodes.insert(ino, Inode { attr, extents: BTreeMap::new(), entries: BTreeMap::new(), lease: (0, 0) });
        st.next_ino += 1;
        Ok(pb::CreateReply { attr: Some(attr), dir: None, lease_epoch: 0 })
    }

    pub fn size(&self, ino: u64) -> Option<u64> {
        lock(&self.0.state).inodes.get(&ino).map(|i| i.attr.size)
    }
}

impl MetaApi for FakeMeta {
    async fn list_shares(&self) -> Result<Vec<pb::Share>, FsError> {
        self.0.list_shares_calls.fetch_add(1, Ordering::SeqCst);
        Ok(vec![self.get_share("/export").await?])
    }

    async fn get_share(&self, export_path: &str) -> Result<pb::Share, FsError> {
        if export_path != "/export" {
            return Err(FsError::NotFound);
        }
        let root = self.get_attr(root().into()).await?;
        Ok(pb::Share {
            share_id: SHARE_ID,
            name: "export".into(),
            export_path: "/export".into(),
            root: Some(root),
            replication_factor: self.0.share_rf.load(Ordering::SeqCst),
            read_only: self.0.share_read_only.load(Ordering::SeqCst),
            anon_uid: Some(65534),
            anon_gid: Some(65534),
            ..Default::default()
        })
    }

    async fn get_attr(&self, node: pb::NodeRef) -> Result<pb::Attr, FsError> {
        self.with_node(Some(node), |i| Ok(i.attr))
    }

    async fn lookup(&self, req: pb::LookupRequest) -> Result<pb::LookupReply, FsError> {
        self.saw("Lookup", &req.cred);
        let ino = self.with_node(req.dir, |d| d.entries.get(&req.name).copied().ok_or(FsError::NotFound))?;
        let st = lock(&self.0.state);
        let attr = st.inodes.get(&ino).map(|i| i.attr).ok_or(FsError::NotFound)?;
        Ok(pb::LookupReply { attr: Some(attr), dir: None })
    }

    async fn create(&self, req: pb::CreateRequest) -> Result<pb::CreateReply, FsError> {
        self.saw("Create", &req.cred);
        let kind = pb::FileType::try_from(req.kind).unwrap_or(pb::FileType::Regular);
        let added = self.add(req.dir, &req.name, kind).and_then(|mut reply| {
            let node = reply.attr.and_then(|a| a.node);
            reply.attr = Some(self.with_node(node, |i| {
                i.attr.uid = req.uid;
                if req.lease_instance != 0 && kind == pb::FileType::Regular {
                    i.lease = (req.lease_instance, 1);
                    reply.lease_epoch = 1;
                }
                Ok(i.attr)
            })?);
            Ok(reply)
        });
        match added {
            Err(FsError::Exists) if req.how == pb::CreateHow::Unchecked as i32 => {
                let ino = self.with_node(req.dir, |d| d.entries.get(&req.name).copied().ok_or(FsError::NotFound))?;
                let node = pb::NodeRef { share_id: SHARE_ID, ino, generation: 1 };
                let attr = match req.size {
                    Some(size) => self.with_node(Some(node), |i| {
                        punch(&mut i.extents, size, u64::MAX);
                        i.attr.size = size;
                        Ok(i.attr)
                    })?,
                    None => self.get_attr(node).await?,
                };
                Ok(pb::CreateReply { attr: Some(attr), dir: None, lease_epoch: 0 })
            }
            other => other,
        }
    }

    async fn read_dir(&self, req: pb::ReadDirRequest) -> Result<pb::ReadDirReply, FsError> {
        self.saw("ReadDir", &req.cred);
        let names: Vec<(Vec<u8>, u64)> =
            self.with_node(req.dir, |d| Ok(d.entries.iter().map(|(k, v)| (k.clone(), *v)).collect()))?;
        let st = lock(&self.0.state);
        let entries = names
            .into_iter()
            .enumerate()
            .map(|(i, (name, ino))| pb::DirEntry {
                name,
                cookie: i as u64 + 1,
                attr: st.inodes.get(&ino).map(|n| n.attr),
            })
            .collect();
        Ok(pb::ReadDirReply { entries, eof: true, dir: None, cookie_verifier: 0 })
    }

    async fn remove(&self, req: pb::RemoveRequest) -> Result<pb::RemoveReply, FsError> {
        self.saw("Remove", &req.cred);
        let ino = self.with_node(req.dir, |d| d.entries.remove(&req.name).ok_or(FsError::NotFound))?;
        lock(&self.0.state).inodes.remove(&ino);
        Ok(pb::RemoveReply { dir: Some(pb::WccDir::default()) })
    }

    async fn set_attr(&self, req: pb::SetAttrRequest) -> Result<pb::SetAttrReply, FsError> {
        self.saw("SetAttr", &req.cred);
        self.with_node(req.node, |i| {
            let before = i.attr;
            let mut lease_epoch = 0;
            if let Some(size) = req.size {
                punch(&mut i.extents, size, u64::MAX);
                i.attr.size = size;
                // As metad: a truncation takes the lease (0: ends it).
                if req.lease_instance == 0 || i.lease.0 != req.lease_instance {
                    i.lease = (req.lease_instance, i.lease.1 + 1);
                }
                if req.lease_instance != 0 {
                    lease_epoch = i.lease.1;
                }
            }
            if let Some(mode) = req.mode {
                i.attr.mode = mode;
            }
            Ok(pb::SetAttrReply { before: Some(before), after: Some(i.attr), lease_epoch })
        })
    }

    async fn commit_extents(&self, req: pb::CommitExtentsRequest) -> Result<pb::CommitExtentsReply, FsError> {
        self.saw("CommitExtents", &req.cred);
        self.0.commit_arrived.notify_one();
        drop(self.0.commit_gate.read().await);
        if self.0.fail_commits.load(Ordering::SeqCst) {
            return Err(FsError::Unavailable("injected".into()));
        }
        if self.0.deny_write.load(Ordering::SeqCst) {
            return Err(FsError::Access);
        }
        let lease = req.lease.map(|l| (l.instance, l.epoch));
        self.with_node(req.node, |i| match lease {
            Some(l) if l != i.lease => Err(FsError::Fenced),
            Some(_) => Ok(()),
            None => {
                i.lease = (0, i.lease.1 + 1);
                Ok(())
            }
        })?;
        self.0.commits.fetch_add(1, Ordering::SeqCst);
        let (lo, hi) = (req.range_start, req.range_end);
        if lo > hi {
            return Err(FsError::Invalid("range".into()));
        }
        let mut next = lo;
        for e in &req.extents {
            if e.offset < next || ext_end(e) > hi || e.length == 0 || e.hash.len() != 32 {
                return Err(FsError::Invalid(format!("extent {e:?} outside range or overlapping")));
            }
            next = ext_end(e);
        }
        self.with_node(req.node, |i| {
            let before = i.attr;
            punch(&mut i.extents, lo, hi);
            for e in req.extents {
                i.extents.insert(e.offset, e);
            }
            i.attr.size = i.attr.size.max(hi);
            i.attr.used = i.extents.values().map(|e| e.length).sum();
            Ok(pb::CommitExtentsReply { before: Some(before), after: Some(i.attr) })
        })
    }

    async fn acquire_write_lease(
        &self,
        req: pb::AcquireWriteLeaseRequest,
    ) -> Result<pb::AcquireWriteLeaseReply, FsError> {
        self.saw("AcquireWriteLease", &req.cred);
        self.0.lease_calls.fetch_add(1, Ordering::SeqCst);
        if self.0.slow_leases.load(Ordering::SeqCst) {
            for _ in 0..20 {
                tokio::task::yield_now().await;
            }
        }
        let epoch = self.with_node(req.node, |i| {
            if i.lease.0 != req.instance {
                i.lease = (req.instance, i.lease.1 + 1);
            }
            Ok(i.lease.1)
        })?;
        Ok(pb::AcquireWriteLeaseReply { epoch })
    }

    async fn get_extents(&self, req: pb::GetExtentsRequest) -> Result<pb::GetExtentsReply, FsError> {
        self.saw("GetExtents", &req.cred);
        let (lo, hi) = (req.offset, req.offset.saturating_add(req.length));
        self.with_node(req.node, |i| {
            let extents =
                i.extents.values().filter(|e| e.offset < hi && ext_end(e) > lo).map(|e| clip(e, lo, hi)).collect();
            Ok(pb::GetExtentsReply { attr: Some(i.attr), extents })
        })
    }

    async fn fs_stat(&self, _node: pb::NodeRef) -> Result<pb::FsStatReply, FsError> {
        let st = lock(&self.0.state);
        Ok(pb::FsStatReply { files: st.inodes.len() as u64, bytes_used: st.inodes.values().map(|i| i.attr.used).sum(), ..Default::default() })
    }

    async fn symlink(&self, req: pb::SymlinkRequest) -> Result<pb::CreateReply, FsError> {
        self.saw("Symlink", &req.cred);
        self.add(req.dir, &req.name, pb::FileType::Symlink)
    }

    async fn read_link(&self, req: pb::ReadLinkRequest) -> Result<pb::ReadLinkReply, FsError> {
        self.saw("ReadLink", &req.cred);
        let attr = self.with_node(req.node, |i| Ok(i.attr))?;
        Ok(pb::ReadLinkReply { target: b"target".to_vec(), attr: Some(attr) })
    }

    async fn mknod(&self, req: pb::MknodRequest) -> Result<pb::CreateReply, FsError> {
        self.saw("Mknod", &req.cred);
        self.add(req.dir, &req.name, pb::FileType::try_from(req.kind).unwrap_or(pb::FileType::Fifo))
    }

    async fn link(&self, req: pb::LinkRequest) -> Result<pb::LinkReply, FsError> {
        self.saw("Link", &req.cred);
        let node = req.node.ok_or(FsError::BadHandle)?;
        self.with_node(req.dir, |d| match d.entries.insert(req.name.clone(), node.ino) {
            Some(_) => Err(FsError::Exists),
            None => Ok(()),
        })?;
        let attr = self.with_node(Some(node), |i| {
            i.attr.nlink += 1;
            Ok(i.attr)
        })?;
        Ok(pb::LinkReply { attr: Some(attr), dir: None })
    }

    /// Moves the entry; a replaced inode goes with its last link.
    async fn rename(&self, req: pb::RenameRequest) -> Result<pb::RenameReply, FsError> {
        self.saw("Rename", &req.cred);
        let ino = self.with_node(req.from_dir, |d| d.entries.remove(&req.from_name).ok_or(FsError::NotFound))?;
        let replaced = self.with_node(req.to_dir, |d| Ok(d.entries.insert(req.to_name.clone(), ino)))?;
        if let Some(old) = replaced.filter(|o| *o != ino) {
            let mut st = lock(&self.0.state);
            let gone = st.inodes.get_mut(&old).is_some_and(|i| {
                i.attr.nlink = i.attr.nlink.saturating_sub(1);
                i.attr.nlink == 0
            });
            if gone {
                st.inodes.remove(&old);
            }
        }
        Ok(pb::RenameReply { from_dir: Some(pb::WccDir::default()), to_dir: Some(pb::WccDir::default()) })
    }

    async fn access(&self, req: pb::AccessRequest) -> Result<pb::AccessReply, FsError> {
        self.saw("Access", &req.cred);
        self.0.access_calls.fetch_add(1, Ordering::SeqCst);
        let attr = self.with_node(req.node, |i| Ok(i.attr))?;
        let deny = if self.0.deny_write.load(Ordering::SeqCst) { crate::vfs::ACCESS_WRITE } else { 0 };
        Ok(pb::AccessReply { granted: req.mask & !deny, attr: Some(attr) })
    }
}

#[derive(Debug, Default)]
pub struct ChunksInner {
    store: Mutex<HashMap<ChunkHash, Bytes>>,
    corrupt: Mutex<HashSet<ChunkHash>>,
    pub fail_puts: AtomicBool,
    /// Every call fails as if the daemon were unreachable.
    pub down: AtomicBool,
    /// Puts are refused as if the disk were full.
    pub no_space: AtomicBool,
    pub puts: AtomicUsize,
    pub gets: AtomicUsize,
    /// Gets yield to the runtime a few times before answering, as a daemon over the
    /// network would, so concurrent readers overlap.
    pub slow_gets: AtomicBool,
}

/// A cloneable handle to one in-memory block daemon.
#[derive(Clone, Debug, Default)]
pub struct FakeChunks(pub Arc<ChunksInner>);

impl FakeChunks {
    pub fn puts(&self) -> usize {
        self.0.puts.load(Ordering::SeqCst)
    }

    pub fn gets(&self) -> usize {
        self.0.gets.load(Ordering::SeqCst)
    }

    /// From now on `get(hash)` answers bytes that do not match `hash`.
    pub fn corrupt(&self, hash: ChunkHash) {
        lock(&self.0.corrupt).insert(hash);
    }

    pub fn contains(&self, hash: &ChunkHash) -> bool {
        lock(&self.0.store).contains_key(hash)
    }

    fn check_up(&self) -> Result<(), FsError> {
        if self.0.down.load(Ordering::SeqCst) {
            return Err(FsError::Unavailable("injected: daemon down".into()));
        }
        Ok(())
    }
}

impl ChunkApi for FakeChunks {
    async fn has(&self, hashes: &[ChunkHash]) -> Result<Vec<bool>, FsError> {
        self.check_up()?;
        let store = lock(&self.0.store);
        Ok(hashes.iter().map(|h| store.contains_key(h)).collect())
    }

    async fn put(&self, hash: ChunkHash, data: Bytes) -> Result<(), FsError> {
        self.check_up()?;
        if self.0.no_space.load(Ordering::SeqCst) {
            return Err(FsError::NoSpace);
        }
        if self.0.fail_puts.load(Ordering::SeqCst) {
            return Err(FsError::Unavailable("injected".into()));
        }
        if blake3::hash(&data).as_bytes() != hash.as_bytes() {
            return Err(FsError::Invalid("put with a wrong hash".into()));
        }
        self.0.puts.fetch_add(1, Ordering::SeqCst);
        lock(&self.0.store).insert(hash, data);
        Ok(())
    }

    async fn get(&self, hash: ChunkHash) -> Result<Bytes, FsError> {
        self.check_up()?;
        self.0.gets.fetch_add(1, Ordering::SeqCst);
        if self.0.slow_gets.load(Ordering::SeqCst) {
            for _ in 0..20 {
                tokio::task::yield_now().await;
            }
        }
        let data = lock(&self.0.store).get(&hash).cloned().ok_or_else(|| FsError::Io("no such chunk".into()))?;
        if lock(&self.0.corrupt).contains(&hash) {
            let mut bad = data.to_vec();
            if let Some(b) = bad.first_mut() {
                *b ^= 0xff;
            }
            return Ok(Bytes::from(bad));
        }
        Ok(data)
    }
}
