//! Filesystem behaviour of metad, driven through the `Meta` service implementation on a real
//! single-voter Raft group with its redb store in a temporary directory.

#![allow(clippy::unwrap_used)] // tests may unwrap (workspace lint note)

use std::path::Path;

use metad::service::control::ControlService;
use metad::service::meta::MetaService;
use metad::{Metad, MetadOptions};
use proto::FsError;
use proto::pb::control_server::Control;
use proto::pb::meta_server::Meta;
use proto::pb::{self, CreateHow, FileType, NodeRef};
use tonic::Request;

async fn open(dir: &Path) -> Metad {
    Metad::open(MetadOptions {
        node_id: 1,
        data_dir: dir.to_path_buf(),
        advertise_addr: "http://127.0.0.1:1".into(),
        default_share: Some(("default".into(), "/export".into())),
    })
    .await
    .expect("metad opens")
}

fn err<T: std::fmt::Debug>(r: Result<T, tonic::Status>) -> FsError {
    FsError::from_status(&r.expect_err("expected an error"))
}

fn node(a: &pb::Attr) -> NodeRef {
    a.node.expect("attr has a node")
}

struct Fs {
    svc: MetaService,
}

impl Fs {
    fn new(m: &Metad) -> Self {
        Fs { svc: MetaService::new(m.clone()) }
    }

    async fn root(&self) -> NodeRef {
        let share = self.svc.get_share(Request::new(pb::GetShareRequest { export_path: "/export".into() })).await.unwrap().into_inner();
        node(share.root.as_ref().unwrap())
    }

    async fn try_create(&self, dir: NodeRef, name: &[u8], kind: FileType, how: CreateHow, verifier: &[u8]) -> Result<pb::CreateReply, tonic::Status> {
        self.svc
            .create(Request::new(pb::CreateRequest {
                dir: Some(dir),
                name: name.to_vec(),
                kind: kind as i32,
                mode: 0o644,
                uid: 1000,
                gid: 1000,
                how: how as i32,
                verifier: verifier.to_vec(),
                ..Default::default()
            }))
            .await
            .map(|r| r.into_inner())
    }

    async fn file(&self, dir: NodeRef, name: &str) -> NodeRef {
        node(self.try_create(dir, name.as_bytes(), FileType::Regular, CreateHow::Guarded, &[]).await.unwrap().attr.as_ref().unwrap())
    }

    async fn mkdir(&self, dir: NodeRef, name: &str) -> NodeRef {
        node(self.try_create(dir, name.as_bytes(), FileType::Directory, CreateHow::Guarded, &[]).await.unwrap().attr.as_ref().unwrap())
    }

    async fn try_getattr(&self, n: NodeRef) -> Result<pb::Attr, tonic::Status> {
        self.svc.get_attr(Request::new(pb::GetAttrRequest { node: Some(n) })).await.map(|r| r.into_inner().attr.unwrap())
    }

    async fn getattr(&self, n: NodeRef) -> pb::Attr {
        self.try_getattr(n).await.unwrap()
    }

    async fn lookup(&self, dir: NodeRef, name: &str) -> Result<pb::LookupReply, tonic::Status> {
        self.svc.lookup(Request::new(pb::LookupRequest { dir: Some(dir), name: name.as_bytes().to_vec(), ..Default::default() })).await.map(|r| r.into_inner())
    }

    async fn remove(&self, dir: NodeRef, name: &str, directory: bool) -> Result<pb::RemoveReply, tonic::Status> {
        self.svc
            .remove(Request::new(pb::RemoveRequest { dir: Some(dir), name: name.as_bytes().to_vec(), directory, ..Default::default() }))
            .await
            .map(|r| r.into_inner())
    }

    async fn commit(&self, n: NodeRef, start: u64, end: u64, extents: Vec<pb::Extent>) -> Result<pb::CommitExtentsReply, tonic::Status> {
        self.svc
            .commit_extents(Request::new(pb::CommitExtentsRequest { node: Some(n), range_start: start, range_end: end, extents, ..Default::default() }))
            .await
            .map(|r| r.into_inner())
    }

    async fn extents(&self, n: NodeRef, offset: u64, length: u64) -> Vec<pb::Extent> {
        self.svc
            .get_extents(Request::new(pb::GetExtentsRequest { node: Some(n), offset, length, ..Default::default() }))
            .await
            .unwrap()
            .into_inner()
            .extents
    }

    async fn set_size(&self, n: NodeRef, size: u64) -> pb::SetAttrReply {
        self.svc
            .set_attr(Request::new(pb::SetAttrRequest { node: Some(n), size: Some(size), ..Default::default() }))
            .await
            .unwrap()
            .into_inner()
    }

    async fn readdir(&self, dir: NodeRef, cookie: u64, max: u32) -> pb::ReadDirReply {
        self.svc
            .read_dir(Request::new(pb::ReadDirRequest { dir: Some(dir), cookie, max_entries: max, ..Default::default() }))
            .await
            .unwrap()
            .into_inner()
    }

    async fn fs_stat(&self, n: NodeRef) -> pb::FsStatReply {
        self.svc.fs_stat(Request::new(pb::FsStatRequest { node: Some(n) })).await.unwrap().into_inner()
    }
}

/// An extent covering `[offset, offset + length)` of a chunk tagged `tag`, starting at its
/// `chunk_offset`.
fn ext(offset: u64, length: u64, tag: u8, chunk_offset: u64, chunk_length: u64) -> pb::Extent {
    pb::Extent { offset, length, hash: vec![tag; 32], chunk_offset, chunk_length }
}

fn spans(list: &[pb::Extent]) -> Vec<(u64, u64, u8, u64)> {
    list.iter().map(|e| (e.offset, e.length, e.hash[0], e.chunk_offset)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_survives_a_restart_and_inode_numbers_are_not_reused() {
    let dir = tempfile::tempdir().unwrap();
    let (root, d, f, attr_d, attr_f, extents_before, lookup_before) = {
        let m = open(dir.path()).await;
        let fs = Fs::new(&m);
        let root = fs.root().await;
        let d = fs.mkdir(root, "docs").await;
        let f = fs.file(d, "a.txt").await;
        fs.commit(f, 0, 300, vec![ext(0, 100, 1, 0, 100), ext(100, 200, 2, 0, 200)]).await.unwrap();
        let out = (root, d, f, fs.getattr(d).await, fs.getattr(f).await, fs.extents(f, 0, 1000).await, fs.lookup(d, "a.txt").await.unwrap());
        m.shutdown().await.unwrap();
        out
    };
    let m = open(dir.path()).await;
    let fs = Fs::new(&m);
    assert_eq!(fs.root().await, root, "the share keeps its root handle");
    assert_eq!(fs.getattr(d).await, attr_d);
    assert_eq!(fs.getattr(f).await, attr_f);
    assert_eq!(attr_f.size, 300);
    assert_eq!(fs.extents(f, 0, 1000).await, extents_before);
    assert_eq!(fs.lookup(d, "a.txt").await.unwrap(), lookup_before);
    let g = fs.file(root, "new").await;
    assert!(g.ino > f.ino && g.ino > d.ino && g.ino > root.ino, "new inode {} reuses a number", g.ino);
    m.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extents_are_replaced_by_range() {
    let dir = tempfile::tempdir().unwrap();
    let m = open(dir.path()).await;
    let fs = Fs::new(&m);
    let root = fs.root().await;

    // Overwriting the middle of one extent splits it.
    let f = fs.file(root, "split").await;
    fs.commit(f, 0, 100, vec![ext(0, 100, 1, 0, 100)]).await.unwrap();
    fs.commit(f, 40, 60, vec![ext(40, 20, 2, 0, 20)]).await.unwrap();
    assert_eq!(spans(&fs.extents(f, 0, 100).await), vec![(0, 40, 1, 0), (40, 20, 2, 0), (60, 40, 1, 60)]);
    // Reads are clipped to the asked range, with the chunk offset adjusted.
    assert_eq!(spans(&fs.extents(f, 30, 40).await), vec![(30, 10, 1, 30), (40, 20, 2, 0), (60, 10, 1, 60)]);
    assert_eq!(fs.getattr(f).await.used, 100);

    // Two commits on different ranges both survive.
    let g = fs.file(root, "two").await;
    fs.commit(g, 10, 20, vec![ext(10, 10, 4, 0, 10)]).await.unwrap();
    fs.commit(g, 0, 10, vec![ext(0, 10, 3, 0, 10)]).await.unwrap();
    assert_eq!(spans(&fs.extents(g, 0, 20).await), vec![(0, 10, 3, 0), (10, 10, 4, 0)]);
    assert_eq!(fs.getattr(g).await.size, 20);

    // Truncation clips the straddling extent and drops the ones beyond; growing is sparse.
    let r = fs.set_size(f, 50).await;
    assert_eq!(r.before.unwrap().size, 100);
    assert_eq!(r.after.unwrap().size, 50);
    assert_eq!(spans(&fs.extents(f, 0, 1000).await), vec![(0, 40, 1, 0), (40, 10, 2, 0)]);
    fs.set_size(f, 1000).await;
    let a = fs.getattr(f).await;
    assert_eq!((a.size, a.used), (1000, 50));
    assert_eq!(spans(&fs.extents(f, 0, 1000).await), vec![(0, 40, 1, 0), (40, 10, 2, 0)]);

    // The share's counters follow: root + 2 files, 50 + 20 bytes.
    let st = fs.fs_stat(root).await;
    assert_eq!((st.files, st.bytes_used), (3, 70));

    // Hostile extent lists are refused and change nothing.
    assert!(matches!(err(fs.commit(g, 0, 10, vec![ext(5, 10, 9, 0, 10)]).await), FsError::Invalid(_)), "outside the range");
    assert!(matches!(err(fs.commit(g, 0, 20, vec![ext(0, 10, 9, 0, 10), ext(5, 10, 9, 0, 10)]).await), FsError::Invalid(_)));
    assert!(matches!(err(fs.commit(g, 0, 10, vec![ext(0, 10, 9, 5, 10)]).await), FsError::Invalid(_)), "past the chunk");
    let short_hash = pb::Extent { hash: vec![1; 31], ..ext(0, 10, 9, 0, 10) };
    assert!(matches!(err(fs.commit(g, 0, 10, vec![short_hash]).await), FsError::Invalid(_)));
    assert_eq!(spans(&fs.extents(g, 0, 20).await), vec![(0, 10, 3, 0), (10, 10, 4, 0)]);
    m.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handles_of_removed_inodes_and_wrong_generations_are_stale() {
    let dir = tempfile::tempdir().unwrap();
    let m = open(dir.path()).await;
    let fs = Fs::new(&m);
    let root = fs.root().await;
    let f = fs.file(root, "gone").await;
    fs.commit(f, 0, 10, vec![ext(0, 10, 1, 0, 10)]).await.unwrap();

    let wrong_gen = NodeRef { generation: f.generation + 1, ..f };
    assert_eq!(err(fs.try_getattr(wrong_gen).await), FsError::Stale);
    let wrong_share = NodeRef { share_id: f.share_id + 1, ..f };
    assert_eq!(err(fs.try_getattr(wrong_share).await), FsError::Stale);

    let r = fs.remove(root, "gone", false).await.unwrap();
    let wcc = r.dir.unwrap();
    assert!(wcc.after.unwrap().change > wcc.before.unwrap().change);
    assert_eq!(err(fs.try_getattr(f).await), FsError::Stale);
    assert_eq!(err(fs.commit(f, 0, 10, vec![]).await), FsError::Stale);
    assert_eq!(err(fs.lookup(root, "gone").await), FsError::NotFound);
    assert_eq!(fs.fs_stat(root).await.bytes_used, 0);
    m.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_modes() {
    let dir = tempfile::tempdir().unwrap();
    let m = open(dir.path()).await;
    let fs = Fs::new(&m);
    let root = fs.root().await;

    let first = fs.try_create(root, b"x", FileType::Regular, CreateHow::Exclusive, &[1; 8]).await.unwrap();
    let again = fs.try_create(root, b"x", FileType::Regular, CreateHow::Exclusive, &[1; 8]).await.unwrap();
    assert_eq!(again.attr, first.attr, "a retransmitted exclusive create returns the same inode");
    assert_eq!(err(fs.try_create(root, b"x", FileType::Regular, CreateHow::Exclusive, &[2; 8]).await), FsError::Exists);
    assert_eq!(err(fs.try_create(root, b"x", FileType::Regular, CreateHow::Guarded, &[]).await), FsError::Exists);
    let unchecked = fs.try_create(root, b"x", FileType::Regular, CreateHow::Unchecked, &[]).await.unwrap();
    assert_eq!(unchecked.attr, first.attr);
    assert_eq!(err(fs.try_create(root, b"x", FileType::Directory, CreateHow::Unchecked, &[]).await), FsError::Exists);
    assert!(matches!(err(fs.try_create(root, b"y", FileType::Regular, CreateHow::Exclusive, &[1; 7]).await), FsError::Invalid(_)));

    // Directories: nlink is 2 + subdirectories; RMDIR and REMOVE keep to their kinds.
    let d = fs.mkdir(root, "d").await;
    let before = fs.getattr(root).await.nlink;
    let sub = fs.mkdir(d, "sub").await;
    assert_eq!(fs.getattr(d).await.nlink, 3);
    assert_eq!(fs.getattr(root).await.nlink, before);
    assert_eq!(fs.lookup(sub, "..").await.unwrap().attr.unwrap().node, Some(d));
    assert_eq!(fs.lookup(d, ".").await.unwrap().attr.unwrap().node, Some(d));
    assert_eq!(err(fs.remove(root, "d", true).await), FsError::NotEmpty);
    assert_eq!(err(fs.remove(root, "d", false).await), FsError::IsDir);
    assert_eq!(err(fs.remove(root, "x", true).await), FsError::NotDir);
    assert_eq!(err(fs.try_create(first.attr.unwrap().node.unwrap(), b"z", FileType::Regular, CreateHow::Guarded, &[]).await), FsError::NotDir);
    fs.remove(d, "sub", true).await.unwrap();
    assert_eq!(fs.getattr(d).await.nlink, 2);
    fs.remove(root, "d", true).await.unwrap();
    m.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_are_validated() {
    let dir = tempfile::tempdir().unwrap();
    let m = open(dir.path()).await;
    let fs = Fs::new(&m);
    let root = fs.root().await;
    for bad in [&b""[..], b".", b"..", b"a/b", b"nul\0"] {
        let e = err(fs.try_create(root, bad, FileType::Regular, CreateHow::Guarded, &[]).await);
        assert!(matches!(e, FsError::Invalid(_)), "{bad:?} gave {e:?}");
    }
    assert_eq!(err(fs.try_create(root, &[b'n'; 256], FileType::Regular, CreateHow::Guarded, &[]).await), FsError::NameTooLong);
    fs.try_create(root, &[b'n'; 255], FileType::Regular, CreateHow::Guarded, &[]).await.unwrap();
    assert!(matches!(err(fs.remove(root, "..", true).await), FsError::Invalid(_)));
    let no_handle = fs.svc.get_attr(Request::new(pb::GetAttrRequest { node: None })).await;
    assert_eq!(err(no_handle), FsError::BadHandle);
    m.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readdir_cookies_survive_insertions_and_removals() {
    let dir = tempfile::tempdir().unwrap();
    let m = open(dir.path()).await;
    let fs = Fs::new(&m);
    let root = fs.root().await;
    for n in ["a", "b", "c"] {
        fs.file(root, n).await;
    }
    let page = fs.readdir(root, 0, 2).await;
    let names: Vec<_> = page.entries.iter().map(|e| e.name.clone()).collect();
    assert_eq!(names, vec![b"a".to_vec(), b"b".to_vec()]);
    assert!(!page.eof);
    assert!(page.entries[0].cookie >= 3, "cookies 1 and 2 are reserved");
    let cookie = page.entries[1].cookie;

    fs.file(root, "d").await;
    fs.remove(root, "a", false).await.unwrap();
    fs.remove(root, "b", false).await.unwrap();

    let rest = fs.readdir(root, cookie, 100).await;
    let names: Vec<_> = rest.entries.iter().map(|e| e.name.clone()).collect();
    assert_eq!(names, vec![b"c".to_vec(), b"d".to_vec()], "continuing after a removed entry's cookie");
    assert!(rest.eof);
    assert_eq!(rest.entries[0].attr.as_ref().unwrap().kind, FileType::Regular as i32);
    assert!(fs.readdir(root, u64::MAX, 10).await.entries.is_empty());
    m.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_shares() {
    let dir = tempfile::tempdir().unwrap();
    let m = open(dir.path()).await;
    let st = ControlService::new(m.clone()).status(Request::new(pb::StatusRequest {})).await.unwrap().into_inner();
    assert_eq!((st.node_id, st.leader_id, st.voters), (1, Some(1), 1));
    assert!(st.term >= 1 && st.last_applied >= 1 && st.last_log_index >= st.last_applied);
    let fs = Fs::new(&m);
    let shares = fs.svc.list_shares(Request::new(pb::ListSharesRequest {})).await.unwrap().into_inner().shares;
    assert_eq!(shares.len(), 1);
    assert_eq!((shares[0].name.as_str(), shares[0].export_path.as_str()), ("default", "/export"));
    assert_eq!(err(fs.svc.get_share(Request::new(pb::GetShareRequest { export_path: "/nope".into() })).await), FsError::NotFound);
    m.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunk_references_follow_the_extents() {
    use redb::{ReadableDatabase, ReadableTable};
    let dir = tempfile::tempdir().unwrap();
    {
        let m = open(dir.path()).await;
        let fs = Fs::new(&m);
        let root = fs.root().await;
        let split = fs.file(root, "split").await;
        fs.commit(split, 0, 100, vec![ext(0, 100, 0xA, 0, 100)]).await.unwrap();
        fs.commit(split, 40, 60, vec![ext(40, 20, 0xB, 0, 20)]).await.unwrap();
        let trunc = fs.file(root, "trunc").await;
        fs.commit(trunc, 0, 100, vec![ext(0, 100, 0xC, 0, 100)]).await.unwrap();
        fs.set_size(trunc, 50).await;
        let gone = fs.file(root, "gone").await;
        fs.commit(gone, 0, 10, vec![ext(0, 10, 0xD, 0, 10)]).await.unwrap();
        fs.remove(root, "gone", false).await.unwrap();
        let over = fs.file(root, "over").await;
        fs.commit(over, 0, 10, vec![ext(0, 10, 0xE, 0, 10)]).await.unwrap();
        fs.commit(over, 0, 10, vec![ext(0, 10, 0xF, 0, 10)]).await.unwrap();
        m.shutdown().await.unwrap();
    }
    let db = metad::store::open(dir.path()).unwrap();
    let rtx = db.begin_read().unwrap();
    let refs: Vec<(u8, u64)> = rtx
        .open_table(metad::store::CHUNK_REFS)
        .unwrap()
        .iter()
        .unwrap()
        .map(|r| {
            let (k, v) = r.unwrap();
            (k.value()[0], v.value())
        })
        .collect();
    assert_eq!(refs, vec![(0xA, 2), (0xB, 1), (0xC, 1), (0xF, 1)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_service_refuses_malformed_payloads() {
    use metad::service::raft::RaftService;
    use proto::pb::raft_server::Raft;
    let dir = tempfile::tempdir().unwrap();
    let m = open(dir.path()).await;
    let svc = RaftService::new(m.raft().clone(), m.snapshot_dir().clone());
    let junk = || Request::new(pb::RaftPayload { data: b"\xff{not json".to_vec() });
    assert_eq!(svc.append_entries(junk()).await.unwrap_err().code(), tonic::Code::InvalidArgument);
    assert_eq!(svc.vote(junk()).await.unwrap_err().code(), tonic::Code::InvalidArgument);
    assert_eq!(svc.client_write(junk()).await.unwrap_err().code(), tonic::Code::InvalidArgument);
    // Whole-message snapshots were replaced by StreamSnapshot.
    assert_eq!(svc.full_snapshot(junk()).await.unwrap_err().code(), tonic::Code::Unimplemented);
    // The node is still serving.
    assert_eq!(Fs::new(&m).root().await.ino, 1);
    m.shutdown().await.unwrap();
}
