//! Apply-level tests on an in-memory store: the rules that are slow or awkward to reach
//! through Raft (link limit, dedup retention, determinism of a whole script).

use redb::backends::InMemoryBackend;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata};

use super::apply::WriteTables;
use super::dedup::{MAX_CLIENTS, SEQS_PER_CLIENT};
use crate::command::{ApplyError, Command, CommandResult, CreateMode, NodeKey, Op, Reply, RequestId};
use crate::model::{AttrOut, Cred, FileKind};
use crate::store::{self, access};

struct Harness {
    db: Database,
    now: i64,
    root: NodeKey,
}

fn root_cred() -> Cred {
    Cred::default()
}

fn key(a: &AttrOut) -> NodeKey {
    NodeKey { share_id: a.inode.share_id, ino: a.ino, generation: a.inode.generation }
}

impl Harness {
    fn new() -> Harness {
        let db = Database::builder().create_with_backend(InMemoryBackend::new()).unwrap();
        let mut h = Harness { db, now: 1_000, root: NodeKey { share_id: 0, ino: 0, generation: 0 } };
        let cmd = Command::CreateShare { name: "s".into(), export_path: "/s".into(), now_ns: h.now, changes: Default::default() };
        match h.apply(&cmd) {
            Ok(Reply::Share { root, .. }) => h.root = key(&root),
            other => panic!("share: {other:?}"),
        }
        h
    }

    fn apply(&mut self, cmd: &Command) -> CommandResult {
        let wtx = self.db.begin_write().unwrap();
        let r = WriteTables::open(&wtx).unwrap().apply(cmd).unwrap();
        wtx.commit().unwrap();
        r
    }

    fn op(&mut self, request: Option<RequestId>, op: Op) -> CommandResult {
        self.now += 1;
        self.apply(&Command::Fs { cred: root_cred(), request, now_ns: self.now, op })
    }

    fn file(&mut self, name: &str) -> NodeKey {
        let op = Op::Create {
            lease_for: 0,
            dir: self.root,
            name: name.as_bytes().to_vec(),
            kind: FileKind::Regular,
            mode: 0o644,
            uid: 1,
            gid: 1,
            how: CreateMode::Guarded,
            size: None,
        };
        match self.op(None, op) {
            Ok(Reply::Created { attr, .. }) => key(&attr),
            other => panic!("create {name}: {other:?}"),
        }
    }

    /// Every state-machine row, for comparing stores.
    fn dump(&self) -> String {
        let rtx = self.db.begin_read().unwrap();
        let mut out = String::new();
        for row in rtx.open_table(store::INODES).unwrap().iter().unwrap() {
            let (k, v) = row.unwrap();
            out += &format!("inode {} {}\n", k.value(), String::from_utf8_lossy(v.value()));
        }
        for row in rtx.open_table(store::DIR_SLOTS).unwrap().iter().unwrap() {
            let (k, v) = row.unwrap();
            out += &format!("slot {:?} {:?}\n", k.value(), v.value());
        }
        for row in rtx.open_table(store::REQUESTS).unwrap().iter().unwrap() {
            let (k, v) = row.unwrap();
            out += &format!("req {:?} {}\n", k.value(), String::from_utf8_lossy(v.value()));
        }
        for row in rtx.open_table(store::SYMLINKS).unwrap().iter().unwrap() {
            let (k, v) = row.unwrap();
            out += &format!("symlink {} {:?}\n", k.value(), v.value());
        }
        out
    }

    fn request_rows(&self, client: u64) -> Vec<u64> {
        let rtx = self.db.begin_read().unwrap();
        let t = rtx.open_table(store::REQUESTS).unwrap();
        t.range((client, 0)..=(client, u64::MAX)).unwrap().map(|r| r.unwrap().0.value().1).collect()
    }
}

#[test]
fn the_link_limit_is_enforced() {
    let mut h = Harness::new();
    let f = h.file("f");
    {
        let wtx = h.db.begin_write().unwrap();
        {
            let mut t = wtx.open_table(store::INODES).unwrap();
            let mut inode = access::get_inode(&t, f.ino).unwrap().unwrap();
            inode.nlink = crate::validate::MAX_LINKS;
            access::put_inode(&mut t, f.ino, &inode).unwrap();
        }
        wtx.commit().unwrap();
    }
    let link = Op::Link { node: f, dir: h.root, name: b"g".to_vec() };
    assert_eq!(h.op(None, link), Err(ApplyError::TooManyLinks));
}

#[test]
fn dedup_keeps_a_window_of_seqs_per_client() {
    let mut h = Harness::new();
    let f = h.file("f");
    let n = SEQS_PER_CLIENT + 10;
    for seq in 1..=n {
        let op = Op::SetAttr {
            node: f,
            size: None,
            mode: Some(0o600),
            uid: None,
            gid: None,
            atime: Default::default(),
            mtime: Default::default(),
            guard_ctime_ns: None,
            lease_for: None,
        };
        h.op(Some(RequestId { client_id: 7, seq }), op).unwrap();
    }
    let rows = h.request_rows(7);
    assert_eq!(rows.len() as u64, SEQS_PER_CLIENT);
    assert_eq!(rows.first().copied(), Some(n - SEQS_PER_CLIENT + 1));
    assert_eq!(rows.last().copied(), Some(n));
}

#[test]
fn dedup_forgets_the_least_recently_used_client() {
    let mut h = Harness::new();
    let f = h.file("f");
    let touch = |f| Op::SetAttr {
        node: f,
        size: None,
        mode: Some(0o600),
        uid: None,
        gid: None,
        atime: Default::default(),
        mtime: Default::default(),
        guard_ctime_ns: None,
        lease_for: None,
    };
    for client in 1..=MAX_CLIENTS {
        h.op(Some(RequestId { client_id: client, seq: 1 }), touch(f)).unwrap();
    }
    // Client 1 is used again, so client 2 is now the least recently used.
    h.op(Some(RequestId { client_id: 1, seq: 2 }), touch(f)).unwrap();
    h.op(Some(RequestId { client_id: MAX_CLIENTS + 1, seq: 1 }), touch(f)).unwrap();
    assert_eq!(h.request_rows(1), vec![1, 2]);
    assert!(h.request_rows(2).is_empty(), "client 2 was forgotten");
    assert_eq!(h.request_rows(3), vec![1]);
    let rtx = h.db.begin_read().unwrap();
    assert_eq!(rtx.open_table(store::REQUEST_CLIENTS).unwrap().len().unwrap(), MAX_CLIENTS);
    assert_eq!(rtx.open_table(store::REQUEST_LRU).unwrap().len().unwrap(), MAX_CLIENTS);
}

#[test]
fn a_script_applies_identically_on_two_replicas() {
    let script = |h: &mut Harness| {
        let f = h.file("a");
        let d = match h.op(
            Some(RequestId { client_id: 1, seq: 1 }),
            Op::Create {
                lease_for: 0,
                dir: h.root,
                name: b"d".to_vec(),
                kind: FileKind::Directory,
                mode: 0o2775,
                uid: 5,
                gid: 6,
                how: CreateMode::Guarded,
                size: None,
            },
        ) {
            Ok(Reply::Created { attr, .. }) => key(&attr),
            other => panic!("{other:?}"),
        };
        h.op(None, Op::Symlink { dir: d, name: b"l".to_vec(), target: b"../a".to_vec(), mode: 0o777 }).unwrap();
        h.op(None, Op::Link { node: f, dir: d, name: b"b".to_vec() }).unwrap();
        h.op(None, Op::Rename { from_dir: h.root, from_name: b"a".to_vec(), to_dir: d, to_name: b"c".to_vec() })
            .unwrap();
        let refused = h.op(
            Some(RequestId { client_id: 1, seq: 2 }),
            Op::Remove { dir: h.root, name: b"d".to_vec(), directory: true },
        );
        assert_eq!(refused, Err(ApplyError::NotEmpty));
    };
    let mut a = Harness::new();
    let mut b = Harness::new();
    script(&mut a);
    script(&mut b);
    assert_eq!(a.dump(), b.dump());
    assert!(a.dump().contains("symlink"), "{}", a.dump());
}
