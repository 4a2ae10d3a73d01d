//! Dispatcher tests: whole RPC records through `rpc::handle_record` against `MemVfs`.

#![allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected input")]

use bytes::Bytes;
use proptest::prelude::*;
use proto::{FileHandle, pb};

use crate::rpc::handle_record;
use crate::testing::{self, MemVfs};
use crate::vfs::Stability;
use crate::xdr::{XdrReader, XdrWriter};

pub(super) const NFS: u32 = 100_003;
pub(super) const MOUNT: u32 = 100_005;

#[derive(Clone, Copy)]
pub(super) enum Cred {
    None,
    Sys(u32, u32),
}

pub(super) fn record(xid: u32, prog: u32, vers: u32, proc_num: u32, cred: Cred, args: impl FnOnce(&mut XdrWriter)) -> Bytes {
    let mut w = XdrWriter::new();
    for v in [xid, 0, 2, prog, vers, proc_num] {
        w.u32(v);
    }
    match cred {
        Cred::None => {
            w.u32(0);
            w.u32(0);
        }
        Cred::Sys(uid, gid) => {
            let mut body = XdrWriter::new();
            body.u32(1);
            body.opaque(b"client");
            body.u32(uid);
            body.u32(gid);
            body.u32(1);
            body.u32(gid + 1);
            w.u32(1);
            w.opaque(body.as_slice());
        }
    }
    w.u32(0);
    w.u32(0);
    args(&mut w);
    w.into_inner().freeze()
}

/// A decoded reply: `accept_stat` and a reader over what follows it.
pub(super) struct Reply {
    pub(super) bytes: Vec<u8>,
    pub(super) stat: u32,
    pub(super) body_at: usize,
}

impl Reply {
    pub(super) fn body(&self) -> XdrReader<'_> {
        XdrReader::new(&self.bytes[self.body_at..])
    }
    pub(super) fn body_len(&self) -> usize {
        self.bytes.len() - self.body_at
    }
}

pub(super) async fn send(vfs: &MemVfs, rec: Bytes) -> Reply {
    send_from(vfs, rec, None).await
}

/// [`send`] from a client at `client`.
pub(super) async fn send_from(vfs: &MemVfs, rec: Bytes, client: Option<std::net::SocketAddr>) -> Reply {
    let bytes = crate::rpc::handle_call(vfs, rec, client).await.expect("a reply").to_vec();
    let mut r = XdrReader::new(&bytes);
    assert_eq!(r.u32().unwrap(), 42, "xid");
    assert_eq!(r.u32().unwrap(), 1, "REPLY");
    assert_eq!(r.u32().unwrap(), 0, "MSG_ACCEPTED");
    assert_eq!((r.u32().unwrap(), r.u32().unwrap()), (0, 0), "AUTH_NONE verifier");
    let stat = r.u32().unwrap();
    let body_at = r.position();
    Reply { bytes, stat, body_at }
}

pub(super) async fn nfs(vfs: &MemVfs, proc_num: u32, cred: Cred, args: impl FnOnce(&mut XdrWriter)) -> Reply {
    send(vfs, record(42, NFS, 3, proc_num, cred, args)).await
}

pub(super) fn root() -> FileHandle {
    MemVfs::root()
}

pub(super) fn fh(w: &mut XdrWriter, h: FileHandle) {
    w.opaque(&h.encode());
}

pub(super) fn read_fattr(r: &mut XdrReader<'_>) -> [u64; 11] {
    let mut out = [0u64; 11];
    // type, mode, nlink, uid, gid, size, used, rdev(2 words), fsid, fileid
    out[0] = r.u32().unwrap().into();
    out[1] = r.u32().unwrap().into();
    out[2] = r.u32().unwrap().into();
    out[3] = r.u32().unwrap().into();
    out[4] = r.u32().unwrap().into();
    out[5] = r.u64().unwrap();
    out[6] = r.u64().unwrap();
    out[7] = r.u64().unwrap();
    out[8] = r.u64().unwrap();
    out[9] = r.u64().unwrap();
    out[10] = r.u32().unwrap().into(); // atime secs
    for _ in 0..5 {
        r.u32().unwrap();
    }
    out
}

pub(super) fn skip_post_op_attr(r: &mut XdrReader<'_>) -> Option<[u64; 11]> {
    r.bool().unwrap().then(|| read_fattr(r))
}

pub(super) fn skip_pre_op_attr(r: &mut XdrReader<'_>) -> bool {
    let present = r.bool().unwrap();
    if present {
        r.u64().unwrap();
        for _ in 0..4 {
            r.u32().unwrap();
        }
    }
    present
}

pub(super) fn skip_wcc(r: &mut XdrReader<'_>) -> (bool, Option<[u64; 11]>) {
    (skip_pre_op_attr(r), skip_post_op_attr(r))
}

/// CREATE `name` in the root (UNCHECKED, mode 0640) and return its handle.
pub(super) async fn create(vfs: &MemVfs, name: &[u8], cred: Cred) -> FileHandle {
    let rep = nfs(vfs, 8, cred, |w| {
        fh(w, root());
        w.opaque(name);
        w.u32(0);
        for v in [1, 0o640, 0, 0, 0, 0, 0] {
            w.u32(v);
        }
    })
    .await;
    let mut r = rep.body();
    assert_eq!(r.u32().unwrap(), 0, "CREATE status");
    assert!(r.bool().unwrap());
    FileHandle::decode(r.opaque(64).unwrap()).unwrap()
}

#[tokio::test]
async fn rpc_level_answers() {
    let vfs = MemVfs::new();
    assert_eq!(nfs(&vfs, 0, Cred::None, |_| {}).await.stat, 0);
    let rep = send(&vfs, record(42, 100_227, 3, 0, Cred::None, |_| {})).await;
    assert_eq!(rep.stat, 1, "PROG_UNAVAIL");
    let rep = send(&vfs, record(42, NFS, 2, 0, Cred::None, |_| {})).await;
    assert_eq!((rep.stat, rep.body().u32().unwrap(), rep.body().rest().len()), (2, 3, 8), "PROG_MISMATCH 3..3");
    let rep = send(&vfs, record(42, MOUNT, 1, 0, Cred::None, |_| {})).await;
    assert_eq!(rep.stat, 2);
    assert_eq!(nfs(&vfs, 22, Cred::None, |_| {}).await.stat, 3, "PROC_UNAVAIL");
    assert_eq!(send(&vfs, record(42, MOUNT, 3, 6, Cred::None, |_| {})).await.stat, 3);
    // GETATTR with a truncated handle: GARBAGE_ARGS.
    assert_eq!(nfs(&vfs, 1, Cred::None, |w| w.u32(25)).await.stat, 4);
    // rpcvers 3: denied RPC_MISMATCH.
    let mut rec = record(42, NFS, 3, 0, Cred::None, |_| {}).to_vec();
    rec[8..12].copy_from_slice(&3u32.to_be_bytes());
    let reply = handle_record(&vfs, Bytes::from(rec)).await.unwrap();
    assert_eq!(reply.to_vec(), &[0, 0, 0, 42, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 2]);
    // A REPLY message gets no answer.
    let mut rec = record(42, NFS, 3, 0, Cred::None, |_| {}).to_vec();
    rec[4..8].copy_from_slice(&1u32.to_be_bytes());
    assert!(handle_record(&vfs, Bytes::from(rec)).await.is_none());
}

#[tokio::test]
async fn mount_protocol() {
    let vfs = MemVfs::new();
    let rep = send(&vfs, record(42, MOUNT, 3, 1, Cred::None, |w| w.opaque(b"/export"))).await;
    let mut r = rep.body();
    assert_eq!(r.u32().unwrap(), 0);
    assert_eq!(r.opaque(64).unwrap(), &root().encode());
    assert_eq!((r.u32().unwrap(), r.u32().unwrap(), r.u32().unwrap()), (2, 1, 0), "AUTH_SYS, AUTH_NONE");

    let rep = send(&vfs, record(42, MOUNT, 3, 1, Cred::None, |w| w.opaque(b"/nope"))).await;
    assert_eq!((rep.stat, rep.body().u32().unwrap(), rep.body_len()), (0, 2, 4), "MNT3ERR_NOENT");

    let rep = send(&vfs, record(42, MOUNT, 3, 5, Cred::None, |_| {})).await;
    let mut r = rep.body();
    assert!(r.bool().unwrap());
    assert_eq!(r.opaque(1024).unwrap(), b"/export");
    assert!(r.bool().unwrap());
    assert_eq!(r.opaque(255).unwrap(), b"*", "open to every client");
    assert!(!r.bool().unwrap(), "one group");
    assert!(!r.bool().unwrap(), "one export");

    let rep = send(&vfs, record(42, MOUNT, 3, 2, Cred::None, |_| {})).await;
    assert_eq!(rep.body().rest(), &[0, 0, 0, 0], "DUMP: empty list");
    assert_eq!(send(&vfs, record(42, MOUNT, 3, 3, Cred::None, |w| w.opaque(b"/export"))).await.body_len(), 0);
    assert_eq!(send(&vfs, record(42, MOUNT, 3, 3, Cred::None, |w| w.u32(9999))).await.stat, 4);
    assert_eq!(send(&vfs, record(42, MOUNT, 3, 4, Cred::None, |_| {})).await.stat, 0);
}

#[tokio::test]
async fn getattr_and_handle_errors() {
    let vfs = MemVfs::new();
    let rep = nfs(&vfs, 1, Cred::None, |w| fh(w, root())).await;
    let mut r = rep.body();
    assert_eq!(r.u32().unwrap(), 0);
    let a = read_fattr(&mut r);
    assert_eq!((a[0], a[1], a[3], a[8], a[9]), (2, 0o777, 0, testing::SHARE_ID, testing::ROOT_INO));
    assert_eq!(r.remaining(), 0);

    let rep = nfs(&vfs, 1, Cred::None, |w| w.opaque(&[1, 2, 3])).await;
    assert_eq!((rep.body().u32().unwrap(), rep.body_len()), (10001, 4), "BADHANDLE, void body");
    let stale = FileHandle { share_id: 1, ino: 99, generation: 1 };
    let rep = nfs(&vfs, 1, Cred::None, |w| fh(w, stale)).await;
    assert_eq!(rep.body().u32().unwrap(), 70, "STALE");
}

#[tokio::test]
async fn create_lookup_write_read_commit() {
    let vfs = MemVfs::new();
    let h = create(&vfs, b"a.txt", Cred::Sys(1000, 100)).await;
    // GUARDED on an existing name: EXIST with an (empty) wcc_data.
    let rep = nfs(&vfs, 8, Cred::None, |w| {
        fh(w, root());
        w.opaque(b"a.txt");
        w.u32(1);
        for _ in 0..6 {
            w.u32(0);
        }
    })
    .await;
    assert_eq!(rep.body().rest(), &[0, 0, 0, 17, 0, 0, 0, 0, 0, 0, 0, 0], "EXIST + empty wcc_data");

    let rep = nfs(&vfs, 3, Cred::None, |w| {
        fh(w, root());
        w.opaque(b"a.txt");
    })
    .await;
    let mut r = rep.body();
    assert_eq!(r.u32().unwrap(), 0);
    assert_eq!(FileHandle::decode(r.opaque(64).unwrap()).unwrap(), h);
    let a = skip_post_op_attr(&mut r).unwrap();
    assert_eq!((a[0], a[1], a[3], a[4]), (1, 0o640, 1000, 100), "regular file owned by the AUTH_SYS caller");
    assert!(skip_post_op_attr(&mut r).is_some(), "dir attributes");

    let rep = nfs(&vfs, 3, Cred::None, |w| {
        fh(w, root());
        w.opaque(b"missing");
    })
    .await;
    assert_eq!(rep.body().rest(), &[0, 0, 0, 2, 0, 0, 0, 0], "NOENT + absent dir attributes");
    let rep = nfs(&vfs, 3, Cred::None, |w| {
        fh(w, root());
        w.opaque(&[b'x'; 256]);
    })
    .await;
    assert_eq!(rep.body().u32().unwrap(), 63, "NAMETOOLONG");

    // WRITE UNSTABLE: count, committed and the verifier come back.
    let rep = nfs(&vfs, 7, Cred::None, |w| {
        fh(w, h);
        w.u64(2);
        w.u32(5);
        w.u32(0);
        w.opaque(b"hello");
    })
    .await;
    let mut r = rep.body();
    assert_eq!(r.u32().unwrap(), 0);
    let (pre, post) = skip_wcc(&mut r);
    assert!(pre);
    assert_eq!(post.unwrap()[5], 7, "size after the write");
    assert_eq!((r.u32().unwrap(), r.u32().unwrap()), (5, 0));
    assert_eq!(r.fixed::<8>().unwrap(), testing::VERIFIER);
    assert_eq!(vfs.file(b"a.txt").unwrap(), b"\0\0hello");

    // Data length differing from count: GARBAGE_ARGS, nothing written.
    let rep = nfs(&vfs, 7, Cred::None, |w| {
        fh(w, h);
        w.u64(0);
        w.u32(6);
        w.u32(2);
        w.opaque(b"hello");
    })
    .await;
    assert_eq!(rep.stat, 4);

    let rep = nfs(&vfs, 6, Cred::None, |w| {
        fh(w, h);
        w.u64(3);
        w.u32(100);
    })
    .await;
    let mut r = rep.body();
    assert_eq!(r.u32().unwrap(), 0);
    skip_post_op_attr(&mut r).unwrap();
    assert_eq!((r.u32().unwrap(), r.bool().unwrap(), r.opaque(100).unwrap()), (4, true, &b"ello"[..]));

    let rep = nfs(&vfs, 21, Cred::None, |w| {
        fh(w, h);
        w.u64(0);
        w.u32(0);
    })
    .await;
    let mut r = rep.body();
    assert_eq!(r.u32().unwrap(), 0);
    assert!(!skip_wcc(&mut r).0, "COMMIT has no pre-op attributes");
    assert_eq!(r.fixed::<8>().unwrap(), testing::VERIFIER);
    assert_eq!(
        vfs.events(),
        vec![
            testing::Event::Write { ino: h.ino, offset: 2, len: 5, stable: Stability::Unstable },
            testing::Event::Commit { ino: h.ino },
        ]
    );

    // AUTH_NONE creates as nobody.
    let n = create(&vfs, b"anon", Cred::None).await;
    let rep = nfs(&vfs, 1, Cred::None, |w| fh(w, n)).await;
    let mut r = rep.body();
    r.u32().unwrap();
    let a = read_fattr(&mut r);
    assert_eq!((a[3], a[4]), (65534, 65534));
}

#[tokio::test]
async fn setattr_guard_and_times() {
    let vfs = MemVfs::new();
    let h = create(&vfs, b"f", Cred::None).await;
    let sattr_size_servertime = |w: &mut XdrWriter| {
        for v in [0, 0, 0, 1] {
            w.u32(v);
        }
        w.u64(3);
        w.u32(0); // atime: don't change
        w.u32(1); // mtime: server time
    };
    // A guard that does not match the ctime: NOT_SYNC, nothing changed.
    let rep = nfs(&vfs, 2, Cred::None, |w| {
        fh(w, h);
        sattr_size_servertime(w);
        w.bool(true);
        w.u32(1);
        w.u32(2);
    })
    .await;
    let mut r = rep.body();
    assert_eq!(r.u32().unwrap(), 10002);
    let (pre, post) = skip_wcc(&mut r);
    assert!(pre && post.unwrap()[5] == 0);

    let rep = nfs(&vfs, 2, Cred::None, |w| {
        fh(w, h);
        sattr_size_servertime(w);
        w.bool(false);
    })
    .await;
    let mut r = rep.body();
    assert_eq!(r.u32().unwrap(), 0);
    let (_, post) = skip_wcc(&mut r);
    assert_eq!(post.unwrap()[5], 3);
    assert_eq!(vfs.file(b"f").unwrap(), vec![0; 3]);

    // Client time for atime is stored as sent.
    let rep = nfs(&vfs, 2, Cred::None, |w| {
        fh(w, h);
        for _ in 0..4 {
            w.u32(0);
        }
        w.u32(2);
        w.u32(1_000_000);
        w.u32(5);
        w.u32(0);
        w.bool(false);
    })
    .await;
    let mut r = rep.body();
    assert_eq!(r.u32().unwrap(), 0);
    assert_eq!(skip_wcc(&mut r).1.unwrap()[10], 1_000_000);
}

#[tokio::test]
async fn mkdir_remove_rmdir() {
    let vfs = MemVfs::new();
    let rep = nfs(&vfs, 9, Cred::Sys(5, 6), |w| {
        fh(w, root());
        w.opaque(b"d");
        for _ in 0..6 {
            w.u32(0);
        }
    })
    .await;
    let mut r = rep.body();
    assert_eq!(r.u32().unwrap(), 0);
    assert!(r.bool().unwrap());
    let d = FileHandle::decode(r.opaque(64).unwrap()).unwrap();
    let a = skip_post_op_attr(&mut r).unwrap();
    assert_eq!((a[0], a[1], a[3]), (2, 0o755, 5));
    let (pre, post) = skip_wcc(&mut r);
    assert!(pre && post.is_some());

    let dirop = |dir: FileHandle, name: &'static [u8]| {
        move |w: &mut XdrWriter| {
            fh(w, dir);
            w.opaque(name);
        }
    };
    create(&vfs, b"f", Cred::None).await;
    assert_eq!(nfs(&vfs, 13, Cred::None, dirop(root(), b"f")).await.body().u32().unwrap(), 20, "RMDIR file: NOTDIR");
    assert_eq!(nfs(&vfs, 12, Cred::None, dirop(root(), b"d")).await.body().u32().unwrap(), 21, "REMOVE dir: ISDIR");
    assert_eq!(nfs(&vfs, 12, Cred::None, dirop(root(), b"f")).await.body().u32().unwrap(), 0);
    assert_eq!(nfs(&vfs, 13, Cred::None, dirop(root(), b"d")).await.body().u32().unwrap(), 0);
    let rep = nfs(&vfs, 1, Cred::None, |w| fh(w, d)).await;
    assert_eq!(rep.body().u32().unwrap(), 70, "removed directory is stale");
}

/// Reads the whole root with READDIR(PLUS) pages of at most `count` bytes.
/// Every name (without "." and "..") and the number of calls it took.
async fn list(vfs: &MemVfs, plus: bool, count: u32) -> (Vec<Vec<u8>>, usize) {
    let (names, calls) = list_all(vfs, plus, count).await;
    (names.into_iter().filter(|n| n != b"." && n != b"..").collect(), calls)
}

async fn list_all(vfs: &MemVfs, plus: bool, count: u32) -> (Vec<Vec<u8>>, usize) {
    let (mut names, mut cookie, mut calls) = (Vec::new(), 0u64, 0);
    loop {
        calls += 1;
        let rep = nfs(vfs, if plus { 17 } else { 16 }, Cred::None, |w| {
            fh(w, root());
            w.u64(cookie);
            w.fixed(&[0; 8]);
            if plus {
                w.u32(count);
            }
            w.u32(count);
        })
        .await;
        assert!(rep.body_len() <= count as usize, "reply of {} bytes for count {count}", rep.body_len());
        let mut r = rep.body();
        assert_eq!(r.u32().unwrap(), 0);
        skip_post_op_attr(&mut r).unwrap();
        assert_eq!(r.fixed::<8>().unwrap(), testing::COOKIE_VERIFIER.to_be_bytes());
        while r.bool().unwrap() {
            let fileid = r.u64().unwrap();
            names.push(r.opaque(255).unwrap().to_vec());
            cookie = r.u64().unwrap();
            if plus {
                let a = skip_post_op_attr(&mut r).unwrap();
                assert_eq!(a[9], fileid);
                assert!(r.bool().unwrap());
                assert_eq!(FileHandle::decode(r.opaque(64).unwrap()).unwrap().ino, fileid);
            }
        }
        if r.bool().unwrap() {
            return (names, calls);
        }
        assert!(calls < 100, "no progress");
    }
}

#[tokio::test]
async fn readdir_pages_within_count() {
    let vfs = MemVfs::new();
    let mut expected = Vec::new();
    for i in 0..20 {
        let name = format!("file-{i:02}").into_bytes();
        create(&vfs, &name, Cred::None).await;
        expected.push(name);
    }
    let (names, calls) = list(&vfs, false, 4096).await;
    assert_eq!((names.clone(), calls), (expected.clone(), 1));
    let (all, _) = list_all(&vfs, false, 4096).await;
    assert_eq!(&all[..2], &[b".".to_vec(), b"..".to_vec()], "\".\" and \"..\" come first");
    let (all, _) = list_all(&vfs, true, 300).await;
    assert_eq!(&all[..2], &[b".".to_vec(), b"..".to_vec()], "also in READDIRPLUS pages, resumed after each");
    let (names, calls) = list(&vfs, false, 200).await;
    assert_eq!(names, expected);
    assert!(calls > 4, "small count pages ({calls} calls)");
    let (names, calls) = list(&vfs, true, 700).await;
    assert_eq!(names, expected);
    assert!(calls > 4);

    // Too small for a single entry: TOOSMALL with the directory's attributes.
    let rep = nfs(&vfs, 16, Cred::None, |w| {
        fh(w, root());
        w.u64(0);
        w.fixed(&[0; 8]);
        w.u32(110);
    })
    .await;
    let mut r = rep.body();
    assert_eq!(r.u32().unwrap(), 10005);
    assert!(skip_post_op_attr(&mut r).is_some());
    assert_eq!(r.remaining(), 0);
}

pub(super) fn dirop(w: &mut XdrWriter, dir: FileHandle, name: &[u8]) {
    fh(w, dir);
    w.opaque(name);
}

pub(super) fn no_sattr(w: &mut XdrWriter) {
    for _ in 0..6 {
        w.u32(0);
    }
}

/// LOOKUP of `name` in the root: (status, fileid if found).
async fn lookup_id(vfs: &MemVfs, name: &[u8]) -> (u32, Option<u64>) {
    let rep = nfs(vfs, 3, Cred::None, |w| dirop(w, root(), name)).await;
    let mut r = rep.body();
    let status = r.u32().unwrap();
    if status != 0 {
        return (status, None);
    }
    let h = FileHandle::decode(r.opaque(64).unwrap()).unwrap();
    (status, Some(h.ino))
}

/// The status word and the rest of a reply body.
pub(super) fn status_and_rest(rep: &Reply) -> (u32, Vec<u8>) {
    let mut r = rep.body();
    (r.u32().unwrap(), r.rest().to_vec())
}

#[tokio::test]
async fn symlink_and_readlink() {
    let vfs = MemVfs::new();
    let rep = nfs(&vfs, 10, Cred::Sys(5, 6), |w| {
        dirop(w, root(), b"l");
        no_sattr(w);
        w.opaque(b"../target");
    })
    .await;
    let mut r = rep.body();
    assert_eq!(r.u32().unwrap(), 0);
    assert!(r.bool().unwrap());
    let l = FileHandle::decode(r.opaque(64).unwrap()).unwrap();
    let a = skip_post_op_attr(&mut r).unwrap();
    assert_eq!((a[0], a[3], a[4], a[5]), (5, 5, 6, 9), "NF3LNK owned by the caller, size = target length");
    let (pre, post) = skip_wcc(&mut r);
    assert!(pre && post.is_some());
    assert_eq!(r.remaining(), 0);

    let rep = nfs(&vfs, 5, Cred::None, |w| fh(w, l)).await;
    let mut r = rep.body();
    assert_eq!(r.u32().unwrap(), 0);
    assert_eq!(skip_post_op_attr(&mut r).unwrap()[0], 5);
    assert_eq!(r.opaque(4096).unwrap(), b"../target");

    // Failures: READLINK of a directory (post_op_attr absent), an empty target and an
    // existing name (wcc_data absent).
    let rep = nfs(&vfs, 5, Cred::None, |w| fh(w, root())).await;
    assert_eq!(status_and_rest(&rep), (22, vec![0; 4]));
    for (name, target, status) in [(&b"m"[..], &b""[..], 22), (b"l", b"x", 17)] {
        let rep = nfs(&vfs, 10, Cred::None, |w| {
            dirop(w, root(), name);
            no_sattr(w);
            w.opaque(target);
        })
        .await;
        assert_eq!(status_and_rest(&rep), (status, vec![0; 8]));
    }
}

#[tokio::test]
async fn mknod_devices_pipes_and_bad_types() {
    let vfs = MemVfs::new();
    let rep = nfs(&vfs, 11, Cred::Sys(5, 6), |w| {
        dirop(w, root(), b"tty");
        w.u32(4); // NF3CHR
        no_sattr(w);
        w.u32(4);
        w.u32(64);
    })
    .await;
    let mut r = rep.body();
    assert_eq!(r.u32().unwrap(), 0);
    assert!(r.bool().unwrap());
    r.opaque(64).unwrap();
    let a = skip_post_op_attr(&mut r).unwrap();
    assert_eq!((a[0], a[3], a[7]), (4, 5, (4 << 32) | 64), "NF3CHR with rdev 4,64");
    skip_wcc(&mut r);
    assert_eq!(r.remaining(), 0);

    let rep = nfs(&vfs, 11, Cred::None, |w| {
        dirop(w, root(), b"fifo");
        w.u32(7); // NF3FIFO
        no_sattr(w);
    })
    .await;
    let mut r = rep.body();
    assert_eq!(r.u32().unwrap(), 0);
    r.bool().unwrap();
    r.opaque(64).unwrap();
    assert_eq!(skip_post_op_attr(&mut r).unwrap()[0], 7);

    // A regular file through MKNOD: BADTYPE with an empty wcc_data.
    let rep = nfs(&vfs, 11, Cred::None, |w| {
        dirop(w, root(), b"reg");
        w.u32(1);
    })
    .await;
    assert_eq!(status_and_rest(&rep), (10007, vec![0; 8]));
    assert_eq!(lookup_id(&vfs, b"reg").await.0, 2);
}

#[tokio::test]
async fn link_adds_a_name() {
    let vfs = MemVfs::new();
    let f = create(&vfs, b"f", Cred::None).await;
    let rep = nfs(&vfs, 15, Cred::None, |w| {
        fh(w, f);
        dirop(w, root(), b"g");
    })
    .await;
    let mut r = rep.body();
    assert_eq!(r.u32().unwrap(), 0);
    assert_eq!(skip_post_op_attr(&mut r).unwrap()[2], 2, "nlink");
    let (pre, post) = skip_wcc(&mut r);
    assert!(pre && post.is_some());
    assert_eq!(r.remaining(), 0);
    assert_eq!(lookup_id(&vfs, b"g").await, (0, Some(f.ino)));
    // Removing one name keeps the file.
    assert_eq!(nfs(&vfs, 12, Cred::None, |w| dirop(w, root(), b"f")).await.body().u32().unwrap(), 0);
    assert_eq!(lookup_id(&vfs, b"g").await, (0, Some(f.ino)));

    // A directory cannot be linked: ISDIR with post_op_attr and wcc_data absent.
    let rep = nfs(&vfs, 15, Cred::None, |w| {
        fh(w, root());
        dirop(w, root(), b"h");
    })
    .await;
    assert_eq!(status_and_rest(&rep), (21, vec![0; 12]));
}

#[tokio::test]
async fn rename_replaces_the_target() {
    let vfs = MemVfs::new();
    let a = create(&vfs, b"a", Cred::None).await;
    create(&vfs, b"b", Cred::None).await;
    let rep = nfs(&vfs, 14, Cred::None, |w| {
        dirop(w, root(), b"a");
        dirop(w, root(), b"b");
    })
    .await;
    let mut r = rep.body();
    assert_eq!(r.u32().unwrap(), 0);
    for _ in 0..2 {
        let (pre, post) = skip_wcc(&mut r);
        assert!(pre && post.is_some());
    }
    assert_eq!(r.remaining(), 0);
    assert_eq!(lookup_id(&vfs, b"a").await, (2, None));
    assert_eq!(lookup_id(&vfs, b"b").await, (0, Some(a.ino)));

    // A missing source: NOENT with two empty wcc_data.
    let rep = nfs(&vfs, 14, Cred::None, |w| {
        dirop(w, root(), b"a");
        dirop(w, root(), b"c");
    })
    .await;
    assert_eq!(status_and_rest(&rep), (2, vec![0; 16]));
}

#[tokio::test]
async fn the_callers_identity_reaches_the_vfs() {
    let vfs = MemVfs::new();
    nfs(&vfs, 3, Cred::Sys(1000, 100), |w| dirop(w, root(), b"x")).await;
    assert_eq!(vfs.last_cred(), Some(pb::Cred { uid: 1000, gid: 100, gids: vec![101] }));
    nfs(&vfs, 16, Cred::None, |w| {
        fh(w, root());
        w.u64(0);
        w.fixed(&[0; 8]);
        w.u32(4096);
    })
    .await;
    assert_eq!(vfs.last_cred(), Some(pb::Cred { uid: 65534, gid: 65534, gids: vec![] }));
}

#[tokio::test]
async fn a_matching_guard_applies() {
    let vfs = MemVfs::new();
    let h = create(&vfs, b"f", Cred::None).await;
    let rep = nfs(&vfs, 1, Cred::None, |w| fh(w, h)).await;
    let mut r = rep.body();
    r.u32().unwrap();
    let fattr = r.rest();
    let word = |at: usize| u32::from_be_bytes(fattr[at..at + 4].try_into().unwrap());
    let ctime = (word(76), word(80)); // the last two words of the 84-byte fattr3
    let rep = nfs(&vfs, 2, Cred::None, |w| {
        fh(w, h);
        for v in [1, 0o600, 0, 0, 0, 0, 0] {
            w.u32(v);
        }
        w.bool(true);
        w.u32(ctime.0);
        w.u32(ctime.1);
    })
    .await;
    let mut r = rep.body();
    assert_eq!(r.u32().unwrap(), 0);
    assert_eq!(skip_wcc(&mut r).1.unwrap()[1], 0o600);
}

#[tokio::test]
async fn a_stale_cookie_verifier_is_bad_cookie() {
    let vfs = MemVfs::new();
    create(&vfs, b"f", Cred::None).await;
    let page = |verifier: u64| {
        move |w: &mut XdrWriter| {
            fh(w, root());
            w.u64(1);
            w.fixed(&verifier.to_be_bytes());
            w.u32(4096);
        }
    };
    let rep = nfs(&vfs, 16, Cred::None, page(testing::COOKIE_VERIFIER)).await;
    assert_eq!(rep.body().u32().unwrap(), 0);
    let rep = nfs(&vfs, 16, Cred::None, page(testing::COOKIE_VERIFIER + 1)).await;
    assert_eq!(status_and_rest(&rep), (10003, vec![0; 4]));
}

#[tokio::test]
async fn unchecked_create_with_a_size_truncates_in_one_call() {
    let vfs = MemVfs::new();
    let h = create(&vfs, b"f", Cred::None).await;
    nfs(&vfs, 7, Cred::None, |w| {
        fh(w, h);
        w.u64(0);
        w.u32(5);
        w.u32(2);
        w.opaque(b"hello");
    })
    .await;
    let rep = nfs(&vfs, 8, Cred::None, |w| {
        dirop(w, root(), b"f");
        w.u32(0); // UNCHECKED
        for v in [0, 0, 0, 1] {
            w.u32(v);
        }
        w.u64(2);
        w.u32(0);
        w.u32(0);
    })
    .await;
    let mut r = rep.body();
    assert_eq!(r.u32().unwrap(), 0);
    r.bool().unwrap();
    assert_eq!(FileHandle::decode(r.opaque(64).unwrap()).unwrap(), h, "the existing file");
    assert_eq!(skip_post_op_attr(&mut r).unwrap()[5], 2);
    assert_eq!(vfs.file(b"f").unwrap(), b"he");
}

#[tokio::test]
async fn fsinfo_pathconf_fsstat_access() {
    let vfs = MemVfs::new();
    let rep = nfs(&vfs, 19, Cred::None, |w| fh(w, root())).await;
    let mut r = rep.body();
    assert_eq!(r.u32().unwrap(), 0);
    skip_post_op_attr(&mut r).unwrap();
    let words: Vec<u32> = (0..7).map(|_| r.u32().unwrap()).collect();
    assert_eq!(words, [1 << 20, 1 << 20, 4096, 1 << 20, 1 << 20, 4096, 65536]);
    assert_eq!(r.u64().unwrap(), (1 << 63) - 1);
    assert_eq!((r.u32().unwrap(), r.u32().unwrap(), r.u32().unwrap()), (0, 1, 0x18));

    let rep = nfs(&vfs, 20, Cred::None, |w| fh(w, root())).await;
    let mut r = rep.body();
    assert_eq!(r.u32().unwrap(), 0);
    skip_post_op_attr(&mut r).unwrap();
    r.u32().unwrap();
    let rest: Vec<u32> = (0..5).map(|_| r.u32().unwrap()).collect();
    assert_eq!(rest, [255, 1, 1, 0, 1]);

    let rep = nfs(&vfs, 18, Cred::None, |w| fh(w, root())).await;
    let mut r = rep.body();
    assert_eq!(r.u32().unwrap(), 0);
    assert!(skip_post_op_attr(&mut r).is_none());
    assert_eq!(r.u64().unwrap(), 1 << 40);

    let h = create(&vfs, b"f", Cred::Sys(7, 7)).await; // mode 0640
    for (cred, expected) in
        [(Cred::Sys(7, 7), 0x0d), (Cred::Sys(8, 7), 0x01), (Cred::Sys(8, 8), 0), (Cred::Sys(0, 0), 0x2d)]
    {
        let rep = nfs(&vfs, 4, cred, |w| {
            fh(w, h);
            w.u32(0x3f);
        })
        .await;
        let mut r = rep.body();
        assert_eq!(r.u32().unwrap(), 0);
        skip_post_op_attr(&mut r).unwrap();
        assert_eq!(r.u32().unwrap(), expected);
    }
}

#[tokio::test]
async fn transfer_sizes_are_capped() {
    let vfs = MemVfs::new();
    let h = create(&vfs, b"big", Cred::None).await;
    let payload = vec![7u8; (1 << 20) + 4];
    let rep = nfs(&vfs, 7, Cred::None, |w| {
        fh(w, h);
        w.u64(0);
        w.u32(payload.len() as u32);
        w.u32(2);
        w.opaque(&payload);
    })
    .await;
    let mut r = rep.body();
    assert_eq!(r.u32().unwrap(), 0);
    skip_wcc(&mut r);
    assert_eq!((r.u32().unwrap(), r.u32().unwrap()), (1 << 20, 2), "shortened to wtmax, FILE_SYNC");
    assert_eq!(vfs.file(b"big").unwrap().len(), 1 << 20);

    let rep = nfs(&vfs, 6, Cred::None, |w| {
        fh(w, h);
        w.u64(0);
        w.u32(4 << 20);
    })
    .await;
    let mut r = rep.body();
    assert_eq!(r.u32().unwrap(), 0);
    skip_post_op_attr(&mut r).unwrap();
    assert_eq!((r.u32().unwrap(), r.bool().unwrap()), (1 << 20, true));
    assert_eq!(r.opaque(1 << 20).unwrap().len(), 1 << 20);
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().build().unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Any argument bytes for any procedure of either program: a reply, never a panic.
    #[test]
    fn random_arguments_never_panic(
        prog in prop_oneof![Just(NFS), Just(MOUNT)],
        proc_num in 0u32..24,
        good_handle in any::<bool>(),
        tail in proptest::collection::vec(any::<u8>(), 0..160),
    ) {
        let vfs = MemVfs::new();
        let rec = record(42, prog, 3, proc_num, Cred::Sys(1, 1), |w| {
            if good_handle { fh(w, root()); }
            w.fixed(&tail[..tail.len() / 4 * 4]);
        });
        let reply = runtime().block_on(handle_record(&vfs, rec));
        prop_assert!(reply.is_some());
    }

    #[test]
    fn random_records_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let vfs = MemVfs::new();
        let _ = runtime().block_on(handle_record(&vfs, Bytes::from(bytes)));
    }
}
