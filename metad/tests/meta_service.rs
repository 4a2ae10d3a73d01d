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
        client_tls: cluster::grpc_tls::ClientTls::plaintext(),
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

fn root_cred() -> pb::Cred {
    pb::Cred { uid: 0, gid: 0, gids: vec![] }
}

fn user(uid: u32, gid: u32, gids: &[u32]) -> pb::Cred {
    pb::Cred { uid, gid, gids: gids.to_vec() }
}

/// The service seen as one caller (`cred`).
#[derive(Clone)]
struct Fs {
    svc: MetaService,
    cred: pb::Cred,
}

impl Fs {
    fn new(m: &Metad) -> Self {
        Fs { svc: MetaService::new(m.clone()), cred: root_cred() }
    }

    fn with(&self, cred: pb::Cred) -> Fs {
        Fs { svc: self.svc.clone(), cred }
    }

    fn c(&self) -> Option<pb::Cred> {
        Some(self.cred.clone())
    }

    async fn root(&self) -> NodeRef {
        let share = self
            .svc
            .get_share(Request::new(pb::GetShareRequest { export_path: "/export".into() }))
            .await
            .unwrap()
            .into_inner();
        node(share.root.as_ref().unwrap())
    }

    async fn try_create(
        &self,
        dir: NodeRef,
        name: &[u8],
        kind: FileType,
        how: CreateHow,
        verifier: &[u8],
    ) -> Result<pb::CreateReply, tonic::Status> {
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
                cred: self.c(),
                ..Default::default()
            }))
            .await
            .map(|r| r.into_inner())
    }

    async fn file(&self, dir: NodeRef, name: &str) -> NodeRef {
        node(
            self.try_create(dir, name.as_bytes(), FileType::Regular, CreateHow::Guarded, &[])
                .await
                .unwrap()
                .attr
                .as_ref()
                .unwrap(),
        )
    }

    async fn mkdir(&self, dir: NodeRef, name: &str) -> NodeRef {
        node(
            self.try_create(dir, name.as_bytes(), FileType::Directory, CreateHow::Guarded, &[])
                .await
                .unwrap()
                .attr
                .as_ref()
                .unwrap(),
        )
    }

    async fn try_getattr(&self, n: NodeRef) -> Result<pb::Attr, tonic::Status> {
        self.svc
            .get_attr(Request::new(pb::GetAttrRequest { node: Some(n) }))
            .await
            .map(|r| r.into_inner().attr.unwrap())
    }

    async fn getattr(&self, n: NodeRef) -> pb::Attr {
        self.try_getattr(n).await.unwrap()
    }

    async fn lookup(&self, dir: NodeRef, name: &str) -> Result<pb::LookupReply, tonic::Status> {
        self.svc
            .lookup(Request::new(pb::LookupRequest { dir: Some(dir), name: name.as_bytes().to_vec(), cred: self.c() }))
            .await
            .map(|r| r.into_inner())
    }

    async fn remove(&self, dir: NodeRef, name: &str, directory: bool) -> Result<pb::RemoveReply, tonic::Status> {
        self.svc
            .remove(Request::new(pb::RemoveRequest {
                dir: Some(dir),
                name: name.as_bytes().to_vec(),
                directory,
                cred: self.c(),
                ..Default::default()
            }))
            .await
            .map(|r| r.into_inner())
    }

    async fn commit(
        &self,
        n: NodeRef,
        start: u64,
        end: u64,
        extents: Vec<pb::Extent>,
    ) -> Result<pb::CommitExtentsReply, tonic::Status> {
        self.svc
            .commit_extents(Request::new(pb::CommitExtentsRequest {
                node: Some(n),
                range_start: start,
                range_end: end,
                extents,
                cred: self.c(),
                ..Default::default()
            }))
            .await
            .map(|r| r.into_inner())
    }

    async fn try_extents(&self, n: NodeRef, offset: u64, length: u64) -> Result<Vec<pb::Extent>, tonic::Status> {
        self.svc
            .get_extents(Request::new(pb::GetExtentsRequest { node: Some(n), offset, length, cred: self.c() }))
            .await
            .map(|r| r.into_inner().extents)
    }

    async fn extents(&self, n: NodeRef, offset: u64, length: u64) -> Vec<pb::Extent> {
        self.try_extents(n, offset, length).await.unwrap()
    }

    async fn set_size(&self, n: NodeRef, size: u64) -> pb::SetAttrReply {
        self.setattr(pb::SetAttrRequest { node: Some(n), size: Some(size), ..Default::default() }).await.unwrap()
    }

    /// SetAttr with this caller's credential filled in.
    async fn setattr(&self, req: pb::SetAttrRequest) -> Result<pb::SetAttrReply, tonic::Status> {
        self.svc.set_attr(Request::new(pb::SetAttrRequest { cred: self.c(), ..req })).await.map(|r| r.into_inner())
    }

    async fn try_readdir(
        &self,
        dir: NodeRef,
        cookie: u64,
        verifier: u64,
        max: u32,
    ) -> Result<pb::ReadDirReply, tonic::Status> {
        self.svc
            .read_dir(Request::new(pb::ReadDirRequest {
                dir: Some(dir),
                cookie,
                max_entries: max,
                cookie_verifier: verifier,
                cred: self.c(),
            }))
            .await
            .map(|r| r.into_inner())
    }

    async fn readdir(&self, dir: NodeRef, cookie: u64, max: u32) -> pb::ReadDirReply {
        self.try_readdir(dir, cookie, 0, max).await.unwrap()
    }

    async fn symlink(&self, dir: NodeRef, name: &str, target: &[u8]) -> Result<pb::CreateReply, tonic::Status> {
        let req = pb::SymlinkRequest {
            dir: Some(dir),
            name: name.as_bytes().to_vec(),
            target: target.to_vec(),
            mode: 0o777,
            cred: self.c(),
            request_id: None,
        };
        self.svc.symlink(Request::new(req)).await.map(|r| r.into_inner())
    }

    async fn readlink(&self, n: NodeRef) -> Result<pb::ReadLinkReply, tonic::Status> {
        self.svc
            .read_link(Request::new(pb::ReadLinkRequest { node: Some(n), cred: self.c() }))
            .await
            .map(|r| r.into_inner())
    }

    async fn mknod(
        &self,
        dir: NodeRef,
        name: &str,
        kind: FileType,
        rdev: (u32, u32),
    ) -> Result<pb::CreateReply, tonic::Status> {
        let req = pb::MknodRequest {
            dir: Some(dir),
            name: name.as_bytes().to_vec(),
            kind: kind as i32,
            mode: 0o644,
            rdev_major: rdev.0,
            rdev_minor: rdev.1,
            cred: self.c(),
            request_id: None,
        };
        self.svc.mknod(Request::new(req)).await.map(|r| r.into_inner())
    }

    async fn link(&self, n: NodeRef, dir: NodeRef, name: &str) -> Result<pb::LinkReply, tonic::Status> {
        let req = pb::LinkRequest {
            node: Some(n),
            dir: Some(dir),
            name: name.as_bytes().to_vec(),
            cred: self.c(),
            request_id: None,
        };
        self.svc.link(Request::new(req)).await.map(|r| r.into_inner())
    }

    async fn rename(
        &self,
        from: NodeRef,
        from_name: &str,
        to: NodeRef,
        to_name: &str,
    ) -> Result<pb::RenameReply, tonic::Status> {
        let req = pb::RenameRequest {
            from_dir: Some(from),
            from_name: from_name.as_bytes().to_vec(),
            to_dir: Some(to),
            to_name: to_name.as_bytes().to_vec(),
            cred: self.c(),
            request_id: None,
        };
        self.svc.rename(Request::new(req)).await.map(|r| r.into_inner())
    }

    async fn access(&self, n: NodeRef, mask: u32) -> u32 {
        self.svc
            .access(Request::new(pb::AccessRequest { node: Some(n), cred: self.c(), mask }))
            .await
            .unwrap()
            .into_inner()
            .granted
    }

    /// mkdir/create as root, then chmod/chown to the given owner and mode.
    async fn own(&self, n: NodeRef, mode: u32, uid: u32, gid: u32) {
        let req = pb::SetAttrRequest {
            node: Some(n),
            mode: Some(mode),
            uid: Some(uid),
            gid: Some(gid),
            cred: Some(root_cred()),
            ..Default::default()
        };
        self.svc.set_attr(Request::new(req)).await.unwrap();
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
        let out = (
            root,
            d,
            f,
            fs.getattr(d).await,
            fs.getattr(f).await,
            fs.extents(f, 0, 1000).await,
            fs.lookup(d, "a.txt").await.unwrap(),
        );
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
    assert!(
        matches!(err(fs.commit(g, 0, 10, vec![ext(5, 10, 9, 0, 10)]).await), FsError::Invalid(_)),
        "outside the range"
    );
    assert!(matches!(
        err(fs.commit(g, 0, 20, vec![ext(0, 10, 9, 0, 10), ext(5, 10, 9, 0, 10)]).await),
        FsError::Invalid(_)
    ));
    assert!(
        matches!(err(fs.commit(g, 0, 10, vec![ext(0, 10, 9, 5, 10)]).await), FsError::Invalid(_)),
        "past the chunk"
    );
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
    assert!(matches!(
        err(fs.try_create(root, b"y", FileType::Regular, CreateHow::Exclusive, &[1; 7]).await),
        FsError::Invalid(_)
    ));

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
    assert_eq!(
        err(fs.try_create(first.attr.unwrap().node.unwrap(), b"z", FileType::Regular, CreateHow::Guarded, &[]).await),
        FsError::NotDir
    );
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
    assert_eq!(
        err(fs.try_create(root, &[b'n'; 256], FileType::Regular, CreateHow::Guarded, &[]).await),
        FsError::NameTooLong
    );
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
    assert_eq!(
        err(fs.svc.get_share(Request::new(pb::GetShareRequest { export_path: "/nope".into() })).await),
        FsError::NotFound
    );
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

fn ns(t: Option<pb::Time>) -> i128 {
    let t = t.unwrap();
    i128::from(t.secs) * 1_000_000_000 + i128::from(t.nanos)
}

fn attr_of(r: &pb::CreateReply) -> pb::Attr {
    r.attr.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symlinks_and_special_files() {
    let dir = tempfile::tempdir().unwrap();
    let m = open(dir.path()).await;
    let fs = Fs::new(&m);
    let root = fs.root().await;

    let l = attr_of(&fs.symlink(root, "l", b"some/where").await.unwrap());
    assert_eq!((l.kind, l.size), (FileType::Symlink as i32, 10));
    let r = fs.readlink(node(&l)).await.unwrap();
    assert_eq!(r.target, b"some/where");
    assert_eq!(fs.lookup(root, "l").await.unwrap().attr.unwrap().kind, FileType::Symlink as i32);
    let f = fs.file(root, "f").await;
    assert!(matches!(err(fs.readlink(f).await), FsError::Invalid(_)), "readlink of a file");
    assert!(matches!(err(fs.symlink(root, "e", b"").await), FsError::Invalid(_)));
    assert!(matches!(err(fs.symlink(root, "e", b"a\0b").await), FsError::Invalid(_)));
    assert_eq!(err(fs.symlink(root, "e", &[b'x'; 4097]).await), FsError::NameTooLong);
    fs.symlink(root, "max", &[b'x'; 4096]).await.unwrap();
    assert_eq!(err(fs.symlink(root, "l", b"x").await), FsError::Exists);
    assert!(matches!(
        err(fs.try_create(root, b"s", FileType::Symlink, CreateHow::Guarded, &[]).await),
        FsError::Invalid(_)
    ));
    assert!(matches!(
        err(fs.setattr(pb::SetAttrRequest { node: Some(node(&l)), size: Some(1), ..Default::default() }).await),
        FsError::Invalid(_)
    ));

    let fifo = attr_of(&fs.mknod(root, "p", FileType::Fifo, (0, 0)).await.unwrap());
    assert_eq!((fifo.kind, fifo.rdev_major, fifo.nlink), (FileType::Fifo as i32, 0, 1));
    fs.mknod(root, "sock", FileType::Socket, (0, 0)).await.unwrap();
    assert!(matches!(err(fs.mknod(root, "p2", FileType::Fifo, (1, 2)).await), FsError::Invalid(_)), "rdev on a FIFO");
    assert!(matches!(err(fs.mknod(root, "r", FileType::Regular, (0, 0)).await), FsError::Invalid(_)));
    let dev = attr_of(&fs.mknod(root, "null", FileType::CharDevice, (1, 3)).await.unwrap());
    assert_eq!((dev.kind, dev.rdev_major, dev.rdev_minor), (FileType::CharDevice as i32, 1, 3));
    let blk = attr_of(&fs.mknod(root, "sda", FileType::BlockDevice, (8, 0)).await.unwrap());
    assert_eq!((blk.rdev_major, blk.rdev_minor), (8, 0));

    // Device nodes are root's; FIFOs anyone's (with write+search on the directory).
    let d = fs.mkdir(root, "pub").await;
    fs.own(d, 0o777, 0, 0).await;
    let alice = fs.with(user(1000, 1000, &[]));
    assert_eq!(err(alice.mknod(d, "dev", FileType::CharDevice, (1, 3)).await), FsError::Perm);
    let mine = attr_of(&alice.mknod(d, "fifo", FileType::Fifo, (0, 0)).await.unwrap());
    assert_eq!((mine.uid, mine.gid), (1000, 1000), "a new node belongs to its creator");
    let st = fs.fs_stat(root).await;
    assert_eq!(st.files, 1 + 2 + 1 + 4 + 1 + 1, "root, 2 symlinks, f, 4 nodes, pub, fifo");
    m.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hard_links_count_and_free_at_zero() {
    let dir = tempfile::tempdir().unwrap();
    let m = open(dir.path()).await;
    m.ensure_share("other", "/other").await.unwrap();
    let fs = Fs::new(&m);
    let root = fs.root().await;
    let d = fs.mkdir(root, "d").await;
    let f = fs.file(root, "f").await;
    fs.commit(f, 0, 10, vec![ext(0, 10, 1, 0, 10)]).await.unwrap();
    let before = fs.getattr(f).await;

    let r = fs.link(f, d, "g").await.unwrap();
    let linked = r.attr.unwrap();
    assert_eq!(linked.nlink, 2);
    assert!(linked.change > before.change && ns(linked.ctime) > ns(before.ctime));
    let wcc = r.dir.unwrap();
    assert_eq!(wcc.after.as_ref().unwrap().size, wcc.before.as_ref().unwrap().size + 1);
    assert!(ns(wcc.after.unwrap().mtime) > ns(wcc.before.unwrap().mtime));
    assert_eq!(fs.lookup(d, "g").await.unwrap().attr.unwrap().node, Some(f));
    assert_eq!(err(fs.link(f, d, "g").await), FsError::Exists);
    assert_eq!(err(fs.link(d, root, "dd").await), FsError::IsDir, "no hard links to directories");
    let other = fs
        .svc
        .get_share(Request::new(pb::GetShareRequest { export_path: "/other".into() }))
        .await
        .unwrap()
        .into_inner();
    let other_root = node(other.root.as_ref().unwrap());
    assert_eq!(err(fs.link(f, other_root, "x").await), FsError::CrossDevice);
    assert_eq!(fs.fs_stat(root).await.files, 3, "a link is not a new inode");

    fs.remove(root, "f", false).await.unwrap();
    let a = fs.getattr(f).await;
    assert_eq!(a.nlink, 1);
    assert_eq!(fs.extents(f, 0, 10).await.len(), 1, "content survives while a name remains");
    assert_eq!(fs.fs_stat(root).await.bytes_used, 10);
    fs.remove(d, "g", false).await.unwrap();
    assert_eq!(err(fs.try_getattr(f).await), FsError::Stale);
    let st = fs.fs_stat(root).await;
    assert_eq!((st.files, st.bytes_used), (2, 0));
    m.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rename_rules() {
    let dir = tempfile::tempdir().unwrap();
    let m = open(dir.path()).await;
    m.ensure_share("other", "/other").await.unwrap();
    let fs = Fs::new(&m);
    let root = fs.root().await;
    let a = fs.mkdir(root, "a").await;
    let b = fs.mkdir(root, "b").await;
    let sub = fs.mkdir(a, "sub").await;
    let f = fs.file(a, "f").await;
    let g = fs.file(root, "g").await;
    fs.commit(g, 0, 7, vec![ext(0, 7, 3, 0, 7)]).await.unwrap();

    // File over file: the replaced inode goes with its content.
    let r = fs.rename(a, "f", root, "g").await.unwrap();
    assert!(r.from_dir.unwrap().after.unwrap().change > 0);
    assert_eq!(fs.lookup(root, "g").await.unwrap().attr.unwrap().node, Some(f));
    assert_eq!(err(fs.lookup(a, "f").await), FsError::NotFound);
    assert_eq!(err(fs.try_getattr(g).await), FsError::Stale);
    let st = fs.fs_stat(root).await;
    assert_eq!((st.files, st.bytes_used), (5, 0), "root, a, b, sub, f");

    // Moving a directory: parent pointer and both parents' link counts follow.
    let (na, nb) = (fs.getattr(a).await.nlink, fs.getattr(b).await.nlink);
    fs.rename(a, "sub", b, "moved").await.unwrap();
    assert_eq!(fs.lookup(sub, "..").await.unwrap().attr.unwrap().node, Some(b));
    assert_eq!((fs.getattr(a).await.nlink, fs.getattr(b).await.nlink), (na - 1, nb + 1));

    // Into itself or its own subtree.
    assert!(matches!(err(fs.rename(root, "b", sub, "x").await), FsError::Invalid(_)));
    assert!(matches!(err(fs.rename(root, "b", b, "x").await), FsError::Invalid(_)));
    // Kind mismatches and non-empty targets.
    let e = fs.mkdir(root, "empty").await;
    assert_eq!(err(fs.rename(root, "g", root, "empty").await), FsError::IsDir);
    assert_eq!(err(fs.rename(root, "empty", root, "g").await), FsError::NotDir);
    assert_eq!(err(fs.rename(root, "a", root, "b").await), FsError::NotEmpty);
    // Directory over an empty directory replaces it.
    fs.rename(root, "a", root, "empty").await.unwrap();
    assert_eq!(fs.lookup(root, "empty").await.unwrap().attr.unwrap().node, Some(a));
    assert_eq!(err(fs.try_getattr(e).await), FsError::Stale);
    // Same inode: hard links of one file, or the same name, are a no-op.
    fs.link(f, root, "f2").await.unwrap();
    let same = fs.rename(root, "g", root, "f2").await.unwrap();
    let w = same.from_dir.unwrap();
    assert_eq!(w.before, w.after);
    assert!(fs.lookup(root, "g").await.is_ok() && fs.lookup(root, "f2").await.is_ok());
    fs.rename(root, "g", root, "g").await.unwrap();
    // Names and shares.
    assert!(matches!(err(fs.rename(root, ".", root, "x").await), FsError::Invalid(_)));
    assert!(matches!(err(fs.rename(root, "g", root, "..").await), FsError::Invalid(_)));
    let other = fs
        .svc
        .get_share(Request::new(pb::GetShareRequest { export_path: "/other".into() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(err(fs.rename(root, "g", node(other.root.as_ref().unwrap()), "g").await), FsError::CrossDevice);
    assert_eq!(err(fs.rename(root, "nope", root, "x").await), FsError::NotFound);
    // Root's ".." is itself.
    assert_eq!(fs.lookup(root, "..").await.unwrap().attr.unwrap().node, Some(root));
    m.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissions_follow_the_credential() {
    let dir = tempfile::tempdir().unwrap();
    let m = open(dir.path()).await;
    let fs = Fs::new(&m);
    let root = fs.root().await;
    let alice = fs.with(user(1000, 1000, &[]));
    let bob = fs.with(user(2000, 2000, &[]));
    let carol = fs.with(user(3000, 3000, &[50]));

    // A credential is mandatory.
    let no_cred =
        fs.svc.lookup(Request::new(pb::LookupRequest { dir: Some(root), name: b"x".to_vec(), cred: None })).await;
    assert!(matches!(err(no_cred), FsError::Invalid(_)));
    let no_cred = fs
        .svc
        .create(Request::new(pb::CreateRequest {
            dir: Some(root),
            name: b"x".to_vec(),
            kind: FileType::Regular as i32,
            ..Default::default()
        }))
        .await;
    assert!(matches!(err(no_cred), FsError::Invalid(_)));

    // The root is 0755 root: others may search but not create.
    assert_eq!(err(alice.try_create(root, b"x", FileType::Regular, CreateHow::Guarded, &[]).await), FsError::Access);
    let home = fs.mkdir(root, "home").await;
    fs.own(home, 0o700, 1000, 1000).await;
    let f = alice.file(home, "f").await;
    assert_eq!(fs.getattr(f).await.uid, 1000);
    assert_eq!(err(bob.lookup(home, "f").await), FsError::Access, "search needs x");
    assert_eq!(err(bob.try_readdir(home, 0, 0, 10).await), FsError::Access, "readdir needs r");

    // Supplementary groups count.
    let team = fs.mkdir(root, "team").await;
    fs.own(team, 0o770, 0, 50).await;
    assert_eq!(err(bob.try_create(team, b"x", FileType::Regular, CreateHow::Guarded, &[]).await), FsError::Access);
    carol.file(team, "x").await;
    assert_eq!(carol.access(team, 7).await, 7);
    assert_eq!(bob.access(team, 7).await, 0);
    assert_eq!(fs.access(f, 7).await, 3, "root: read and write, no execute without an x bit");

    // Sticky directories.
    let tmp = fs.mkdir(root, "tmp").await;
    fs.own(tmp, 0o1777, 0, 0).await;
    alice.file(tmp, "a").await;
    alice.file(tmp, "a2").await;
    assert_eq!(err(bob.remove(tmp, "a", false).await), FsError::Perm);
    assert_eq!(err(bob.rename(tmp, "a", tmp, "b").await), FsError::Perm);
    bob.file(tmp, "b").await;
    assert_eq!(err(bob.rename(tmp, "b", tmp, "a").await), FsError::Perm, "cannot replace another user's entry");
    alice.rename(tmp, "a", tmp, "a3").await.unwrap();
    alice.remove(tmp, "a3", false).await.unwrap();
    fs.remove(tmp, "a2", false).await.unwrap();

    // setgid directories hand down their group, and subdirectories the bit.
    let shared = fs.mkdir(root, "shared").await;
    fs.own(shared, 0o2777, 0, 77).await;
    let sf = alice.file(shared, "f").await;
    assert_eq!(fs.getattr(sf).await.gid, 77);
    let sd = alice.mkdir(shared, "d").await;
    let sda = fs.getattr(sd).await;
    assert_eq!((sda.gid, sda.mode & 0o2000), (77, 0o2000));

    // Moving a directory to another parent needs write on the directory itself.
    let ro = fs.mkdir(tmp, "ro").await;
    fs.own(ro, 0o555, 1000, 1000).await;
    let pub_dir = fs.mkdir(root, "pub").await;
    fs.own(pub_dir, 0o777, 0, 0).await;
    assert_eq!(err(alice.rename(tmp, "ro", pub_dir, "ro").await), FsError::Access);
    alice.rename(tmp, "ro", tmp, "ro2").await.unwrap();
    m.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setattr_ownership_rules_and_content_access() {
    let dir = tempfile::tempdir().unwrap();
    let m = open(dir.path()).await;
    let fs = Fs::new(&m);
    let root = fs.root().await;
    let alice = fs.with(user(1000, 1000, &[60]));
    let bob = fs.with(user(2000, 2000, &[]));
    let f = fs.file(root, "f").await;
    fs.own(f, 0o6644, 1000, 1000).await;
    let set = |mode: Option<u32>, uid: Option<u32>, gid: Option<u32>| pb::SetAttrRequest {
        node: Some(f),
        mode,
        uid,
        gid,
        ..Default::default()
    };

    assert_eq!(err(bob.setattr(set(Some(0o777), None, None)).await), FsError::Perm, "chmod by a non-owner");
    assert_eq!(err(alice.setattr(set(None, Some(2000), None)).await), FsError::Perm, "chown by a non-root owner");
    assert_eq!(err(alice.setattr(set(None, None, Some(99))).await), FsError::Perm, "chgrp to a foreign group");
    let r = alice.setattr(set(None, None, Some(60))).await.unwrap().after.unwrap();
    assert_eq!((r.gid, r.mode), (60, 0o644), "chgrp by the owner clears setuid/setgid");
    let r = alice.setattr(set(Some(0o2755), None, None)).await.unwrap().after.unwrap();
    assert_eq!(r.mode, 0o2755, "the owner is in group 60");
    fs.own(f, 0o644, 1000, 99).await;
    let r = alice.setattr(set(Some(0o2755), None, None)).await.unwrap().after.unwrap();
    assert_eq!(r.mode, 0o755, "setgid dropped: the owner is not in the file's group");
    assert!(matches!(err(fs.setattr(set(Some(0o10000), None, None)).await), FsError::Invalid(_)));

    // Times: explicit ones by the owner only; "now" by anyone who may write.
    let t = pb::Time { secs: 5, nanos: 0 };
    let explicit = pb::SetAttrRequest { node: Some(f), mtime: Some(t), ..Default::default() };
    assert_eq!(err(bob.setattr(explicit.clone()).await), FsError::Perm);
    assert_eq!(alice.setattr(explicit).await.unwrap().after.unwrap().mtime, Some(t));
    let now = pb::SetAttrRequest { node: Some(f), atime_now: true, mtime_now: true, ..Default::default() };
    assert_eq!(err(bob.setattr(now.clone()).await), FsError::Access);
    fs.own(f, 0o6666, 1000, 99).await;
    let r = bob.setattr(now).await.unwrap();
    let after = r.after.unwrap();
    assert!(ns(after.mtime) > ns(Some(t)));
    assert_eq!(after.atime, after.mtime, "both stamped with the proposer's time");
    assert_eq!(after.ctime, after.mtime);
    let both = pb::SetAttrRequest { node: Some(f), atime: Some(t), atime_now: true, ..Default::default() };
    assert!(matches!(err(fs.setattr(both).await), FsError::Invalid(_)));

    // A write by a non-root caller clears setuid/setgid; the owner may write a read-only file.
    let r = bob.commit(f, 0, 4, vec![ext(0, 4, 1, 0, 4)]).await.unwrap();
    assert_eq!(r.after.unwrap().mode, 0o666);
    fs.own(f, 0o4400, 1000, 99).await;
    assert_eq!(err(bob.commit(f, 0, 4, vec![ext(0, 4, 1, 0, 4)]).await), FsError::Access);
    assert_eq!(err(bob.try_extents(f, 0, 4).await), FsError::Access);
    assert_eq!(alice.commit(f, 0, 4, vec![ext(0, 4, 2, 0, 4)]).await.unwrap().after.unwrap().mode, 0o400);
    assert_eq!(alice.extents(f, 0, 4).await.len(), 1);
    assert_eq!(
        err(bob.setattr(pb::SetAttrRequest { node: Some(f), size: Some(0), ..Default::default() }).await),
        FsError::Access
    );
    let d = fs.mkdir(root, "d").await;
    assert_eq!(
        err(fs.setattr(pb::SetAttrRequest { node: Some(d), size: Some(0), ..Default::default() }).await),
        FsError::IsDir
    );
    m.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guard_refuses_a_changed_object() {
    let dir = tempfile::tempdir().unwrap();
    let m = open(dir.path()).await;
    let fs = Fs::new(&m);
    let root = fs.root().await;
    let f = fs.file(root, "f").await;
    let a = fs.getattr(f).await;
    let guarded = |ctime: pb::Time, mode: u32| pb::SetAttrRequest {
        node: Some(f),
        mode: Some(mode),
        guard_ctime: Some(ctime),
        ..Default::default()
    };
    let r = fs.setattr(guarded(a.ctime.unwrap(), 0o600)).await.unwrap();
    assert_eq!(r.after.unwrap().mode, 0o600);
    assert_eq!(err(fs.setattr(guarded(a.ctime.unwrap(), 0o666)).await), FsError::NotSync, "ctime moved");
    assert_eq!(fs.getattr(f).await.mode, 0o600, "a refused guard changes nothing");
    m.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchecked_create_with_a_size_truncates() {
    let dir = tempfile::tempdir().unwrap();
    let m = open(dir.path()).await;
    let fs = Fs::new(&m);
    let root = fs.root().await;
    let f = fs.file(root, "f").await;
    fs.commit(f, 0, 100, vec![ext(0, 100, 1, 0, 100)]).await.unwrap();
    let req = pb::CreateRequest {
        dir: Some(root),
        name: b"f".to_vec(),
        kind: FileType::Regular as i32,
        mode: 0o644,
        how: CreateHow::Unchecked as i32,
        size: Some(0),
        cred: Some(root_cred()),
        ..Default::default()
    };
    let r = fs.svc.create(Request::new(req.clone())).await.unwrap().into_inner();
    let a = r.attr.unwrap();
    assert_eq!((a.node, a.size, a.used), (Some(f), 0, 0));
    assert!(fs.extents(f, 0, 100).await.is_empty());
    assert_eq!(fs.fs_stat(root).await.bytes_used, 0);
    let grown = fs.svc.create(Request::new(pb::CreateRequest { size: Some(4096), ..req })).await.unwrap().into_inner();
    assert_eq!(grown.attr.unwrap().size, 4096);
    m.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_request_id_answers_the_first_reply() {
    let dir = tempfile::tempdir().unwrap();
    let m = open(dir.path()).await;
    let fs = Fs::new(&m);
    let root = fs.root().await;
    let rid = |seq| Some(pb::RequestId { client_id: 42, seq });
    let create = pb::CreateRequest {
        dir: Some(root),
        name: b"once".to_vec(),
        kind: FileType::Regular as i32,
        mode: 0o644,
        how: CreateHow::Guarded as i32,
        cred: Some(root_cred()),
        request_id: rid(1),
        ..Default::default()
    };
    let first = fs.svc.create(Request::new(create.clone())).await.unwrap().into_inner();
    let again = fs.svc.create(Request::new(create.clone())).await.unwrap().into_inner();
    assert_eq!(first, again, "a GUARDED retry is not EXIST: it is answered from memory");
    assert_eq!(fs.fs_stat(root).await.files, 2);

    let remove = pb::RemoveRequest {
        dir: Some(root),
        name: b"once".to_vec(),
        directory: false,
        cred: Some(root_cred()),
        request_id: rid(2),
    };
    let first = fs.svc.remove(Request::new(remove.clone())).await.unwrap().into_inner();
    let again = fs.svc.remove(Request::new(remove.clone())).await.unwrap().into_inner();
    assert_eq!(first, again);
    // Refusals are remembered too: seq 3 fails, and still fails after the cause is gone.
    let missing = pb::RemoveRequest { request_id: rid(3), ..remove.clone() };
    assert_eq!(err(fs.svc.remove(Request::new(missing.clone())).await), FsError::NotFound);
    fs.file(root, "once").await;
    assert_eq!(err(fs.svc.remove(Request::new(missing)).await), FsError::NotFound);
    // Another client with the same seq is another request.
    let other = pb::RemoveRequest { request_id: Some(pb::RequestId { client_id: 43, seq: 3 }), ..remove };
    fs.svc.remove(Request::new(other)).await.unwrap();
    assert_eq!(err(fs.lookup(root, "once").await), FsError::NotFound);
    m.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cookie_verifier_names_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let m = open(dir.path()).await;
    let fs = Fs::new(&m);
    let root = fs.root().await;
    let d = fs.mkdir(root, "d").await;
    for n in ["a", "b", "c"] {
        fs.file(d, n).await;
    }
    let page = fs.try_readdir(d, 0, 0, 2).await.unwrap();
    assert_ne!(page.cookie_verifier, 0);
    let cookie = page.entries[1].cookie;
    let rest = fs.try_readdir(d, cookie, page.cookie_verifier, 10).await.unwrap();
    assert_eq!(rest.cookie_verifier, page.cookie_verifier, "stable across calls");
    assert_eq!(rest.entries.len(), 1);
    assert_eq!(err(fs.try_readdir(d, cookie, page.cookie_verifier ^ 1, 10).await), FsError::BadCookie);
    // A directory recreated under the same name has another verifier.
    for n in ["a", "b", "c"] {
        fs.remove(d, n, false).await.unwrap();
    }
    fs.remove(root, "d", true).await.unwrap();
    let d2 = fs.mkdir(root, "d").await;
    assert_eq!(err(fs.try_readdir(d2, cookie, page.cookie_verifier, 10).await), FsError::BadCookie);
    m.shutdown().await.unwrap();
}

/// Per-file write fencing: a commit made under a write lease that another gateway instance
/// has taken since is refused (TES-FENCED) and changes nothing, so a gateway that lost its
/// clients cannot commit what it held over what they wrote through another one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_under_a_lease_another_gateway_took_is_refused() {
    const A: u64 = 0xa;
    const B: u64 = 0xb;
    let dir = tempfile::tempdir().unwrap();
    let m = open(dir.path()).await;
    let fs = Fs::new(&m);
    let root = fs.root().await;
    let made = create_leased(&fs, root, "f", A, None).await;
    assert_eq!(made.lease_epoch, 1, "the creating gateway holds the new file's lease");
    let f = node(made.attr.as_ref().unwrap());
    let again = create_leased(&fs, root, "f", B, None).await;
    assert_eq!(again.lease_epoch, 0, "an existing file's lease is not handed to another creator");

    let commit = |lease: Option<(u64, u64)>, tag: u8| commit_leased(fs.clone(), f, lease, tag);
    let acquire = |instance: u64| acquire_lease(fs.clone(), f, instance);
    commit(Some((A, 1)), 1).await.unwrap();
    assert_eq!(acquire(B).await.unwrap(), 2);
    assert_eq!(acquire(B).await.unwrap(), 2, "taking a lease one holds changes nothing");
    assert_eq!(err(commit(Some((A, 1)), 2).await), FsError::Fenced);
    assert_eq!(spans(&fs.extents(f, 0, 10).await), [(0, 10, 1, 0)], "a fenced commit changes nothing");
    commit(Some((B, 2)), 3).await.unwrap();
    assert_eq!(acquire(A).await.unwrap(), 3);
    assert_eq!(err(commit(Some((B, 2)), 4).await), FsError::Fenced);
    // A commit without a lease ends the current one.
    commit(None, 5).await.unwrap();
    assert_eq!(err(commit(Some((A, 3)), 6).await), FsError::Fenced);
    assert_eq!(acquire(A).await.unwrap(), 5);
    assert_eq!(spans(&fs.extents(f, 0, 10).await), [(0, 10, 5, 0)]);
    // The lease survives a restart (it is in the inode record).
    drop(fs);
    m.shutdown().await.unwrap();
    drop(m);
    let m = open(dir.path()).await;
    let fs = Fs::new(&m);
    commit_leased(fs.clone(), f, Some((A, 5)), 7).await.unwrap();
    // Only regular files have leases, and a lease needs an instance.
    let root = fs.root().await;
    assert!(matches!(err(acquire_lease(fs.clone(), root, A).await), FsError::IsDir | FsError::Invalid(_)));
    assert!(matches!(err(acquire_lease(fs.clone(), f, 0).await), FsError::Invalid(_)));
}

/// CommitExtents of one 10-byte extent (chunk `tag`) over `[0, 10)` of `f`, under `lease`
/// (instance, epoch).
async fn commit_leased(
    fs: Fs,
    f: NodeRef,
    lease: Option<(u64, u64)>,
    tag: u8,
) -> Result<tonic::Response<pb::CommitExtentsReply>, tonic::Status> {
    fs.svc
        .commit_extents(Request::new(pb::CommitExtentsRequest {
            node: Some(f),
            range_start: 0,
            range_end: 10,
            extents: vec![ext(0, 10, tag, 0, 10)],
            cred: fs.c(),
            lease: lease.map(|(instance, epoch)| pb::WriteLease { instance, epoch }),
            ..Default::default()
        }))
        .await
}

#[tokio::test]
async fn a_truncation_through_another_gateway_fences_the_lease_holder() {
    const A: u64 = 0xa;
    const B: u64 = 0xb;
    let dir = tempfile::tempdir().unwrap();
    let m = open(dir.path()).await;
    let fs = Fs::new(&m);
    let root = fs.root().await;
    let made = create_leased(&fs, root, "t", A, None).await;
    let f = node(made.attr.as_ref().unwrap());
    commit_leased(fs.clone(), f, Some((A, 1)), 1).await.unwrap();
    let truncate = |instance: u64, mode: Option<u32>| {
        let fs = fs.clone();
        async move {
            fs.svc
                .set_attr(Request::new(pb::SetAttrRequest {
                    node: Some(f),
                    size: Some(0),
                    mode,
                    cred: fs.c(),
                    lease_instance: instance,
                    ..Default::default()
                }))
                .await
                .map(|r| r.into_inner())
        }
    };
    // B truncates: B holds the lease now, and A's commit of what it buffered before the
    // truncation is refused instead of bringing the bytes back.
    let r = truncate(B, None).await.unwrap();
    assert_eq!(r.lease_epoch, 2, "the truncating gateway holds the lease");
    assert_eq!(r.after.as_ref().unwrap().size, 0);
    assert_eq!(err(commit_leased(fs.clone(), f, Some((A, 1)), 2).await), FsError::Fenced);
    assert!(fs.extents(f, 0, 10).await.is_empty(), "the truncation stands");
    commit_leased(fs.clone(), f, Some((B, 2)), 3).await.unwrap();
    // Truncating again under the lease one holds keeps it (no needless fencing of oneself).
    assert_eq!(truncate(B, None).await.unwrap().lease_epoch, 2);
    commit_leased(fs.clone(), f, Some((B, 2)), 4).await.unwrap();
    // Without an instance, a truncation ends the lease; a change that is not a truncation
    // leaves it alone.
    assert_eq!(truncate(0, None).await.unwrap().lease_epoch, 0);
    assert_eq!(err(commit_leased(fs.clone(), f, Some((B, 2)), 5).await), FsError::Fenced);
    assert_eq!(acquire_lease(fs.clone(), f, A).await.unwrap(), 4);
    fs.svc
        .set_attr(Request::new(pb::SetAttrRequest { node: Some(f), mode: Some(0o600), cred: fs.c(), lease_instance: B, ..Default::default() }))
        .await
        .unwrap();
    commit_leased(fs.clone(), f, Some((A, 4)), 6).await.unwrap();
    // An UNCHECKED create with a size truncates an existing file the same way.
    let again = create_leased(&fs, root, "t", B, Some(0)).await;
    assert_eq!(again.lease_epoch, 5);
    assert_eq!(err(commit_leased(fs.clone(), f, Some((A, 4)), 7).await), FsError::Fenced);
    assert!(fs.extents(f, 0, 10).await.is_empty());
}

/// An UNCHECKED create of the regular file `name` in `dir` by gateway `instance` (with
/// `size`, a truncation if it exists).
async fn create_leased(fs: &Fs, dir: NodeRef, name: &str, instance: u64, size: Option<u64>) -> pb::CreateReply {
    let req = pb::CreateRequest {
        dir: Some(dir),
        name: name.as_bytes().to_vec(),
        kind: FileType::Regular as i32,
        mode: 0o644,
        how: CreateHow::Unchecked as i32,
        size,
        cred: fs.c(),
        lease_instance: instance,
        ..Default::default()
    };
    fs.svc.create(Request::new(req)).await.unwrap().into_inner()
}

/// AcquireWriteLease of `node` for `instance`: the epoch.
async fn acquire_lease(fs: Fs, node: NodeRef, instance: u64) -> Result<u64, tonic::Status> {
    fs.svc
        .acquire_write_lease(Request::new(pb::AcquireWriteLeaseRequest {
            node: Some(node),
            instance,
            cred: fs.c(),
            ..Default::default()
        }))
        .await
        .map(|r| r.into_inner().epoch)
}
