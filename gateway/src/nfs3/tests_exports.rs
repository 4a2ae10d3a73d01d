//! Export options at the dispatcher: client lists, read-only, squashing, and MOUNT's six
//! procedures, as whole RPC records from a given client address against `MemVfs`.

#![allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected input")]

use std::net::SocketAddr;

use proto::{FileHandle, pb};

use super::tests::{
    Cred, MOUNT, NFS, Reply, create, dirop, fh, no_sattr, record, root, send_from, skip_post_op_attr, skip_wcc,
};
use crate::testing::MemVfs;
use crate::xdr::XdrWriter;

const ACCES: u32 = 13;
const ROFS: u32 = 30;

fn addr(s: &str) -> Option<SocketAddr> {
    Some(format!("{s}:700").parse().unwrap())
}

async fn nfs_from(vfs: &MemVfs, client: Option<SocketAddr>, proc_num: u32, cred: Cred, h: FileHandle) -> Reply {
    send_from(vfs, record(42, NFS, 3, proc_num, cred, |w| args(w, proc_num, h)), client).await
}

async fn mount_call(vfs: &MemVfs, client: Option<SocketAddr>, proc_num: u32, path: Option<&[u8]>) -> Reply {
    send_from(vfs, record(42, MOUNT, 3, proc_num, Cred::None, |w| path.into_iter().for_each(|p| w.opaque(p))), client)
        .await
}

/// Well-formed arguments of NFSv3 procedure `proc_num` on handle `h` (a directory for the
/// directory procedures).
fn args(w: &mut XdrWriter, proc_num: u32, h: FileHandle) {
    match proc_num {
        1 | 5 | 18 | 19 | 20 => fh(w, h),
        2 => {
            fh(w, h);
            no_sattr(w);
            w.bool(false);
        }
        3 | 12 | 13 => dirop(w, h, b"name"),
        4 => {
            fh(w, h);
            w.u32(0x3f);
        }
        6 | 21 => {
            fh(w, h);
            w.u64(0);
            w.u32(16);
        }
        7 => {
            fh(w, h);
            w.u64(0);
            w.u32(3);
            w.u32(2);
            w.opaque(b"abc");
        }
        8 => {
            dirop(w, h, b"new");
            w.u32(0);
            no_sattr(w);
        }
        9 => {
            dirop(w, h, b"newdir");
            no_sattr(w);
        }
        10 => {
            dirop(w, h, b"link");
            no_sattr(w);
            w.opaque(b"target");
        }
        11 => {
            dirop(w, h, b"fifo");
            w.u32(7); // NF3FIFO
            no_sattr(w);
        }
        14 => {
            dirop(w, h, b"a");
            dirop(w, h, b"b");
        }
        15 => {
            fh(w, h);
            dirop(w, h, b"c");
        }
        16 => {
            fh(w, h);
            w.u64(0);
            w.fixed(&[0; 8]);
            w.u32(4096);
        }
        17 => {
            fh(w, h);
            w.u64(0);
            w.fixed(&[0; 8]);
            w.u32(4096);
            w.u32(8192);
        }
        _ => unreachable!("procedure {proc_num}"),
    }
}

fn status(rep: &Reply) -> u32 {
    assert_eq!(rep.stat, 0, "accepted");
    rep.body().u32().unwrap()
}

#[tokio::test]
async fn a_client_not_on_the_list_is_refused_mnt_and_every_call() {
    let vfs = MemVfs::new();
    vfs.set_export_options(|s| s.allowed_clients = vec!["10.0.0.0/8".into(), "192.168.7.7".into()]);
    for (client, allowed) in [
        (addr("10.1.2.3"), true),
        (addr("192.168.7.7"), true),
        (addr("[::ffff:10.0.0.9]"), true),
        (addr("127.0.0.1"), false),
        (addr("192.168.7.8"), false),
        (None, false),
    ] {
        let mnt = mount_call(&vfs, client, 1, Some(b"/export")).await;
        assert_eq!(status(&mnt), if allowed { 0 } else { ACCES }, "MNT from {client:?}");
        for proc_num in 1..=21 {
            let s = status(&nfs_from(&vfs, client, proc_num, Cred::Sys(0, 0), root()).await);
            if allowed {
                assert_ne!(s, ACCES, "proc {proc_num} from {client:?}");
            } else {
                assert_eq!(s, ACCES, "proc {proc_num} from {client:?}");
            }
        }
        // NULL is never refused.
        let null = send_from(&vfs, record(42, NFS, 3, 0, Cred::None, |_| {}), client).await;
        assert_eq!((null.stat, null.body_len()), (0, 0));
    }
    assert!(vfs.file(b"new").is_some(), "the allowed client's CREATE went through");

    // The list applies from the next call on, and `*` lets everyone in.
    vfs.set_export_options(|s| s.allowed_clients = vec!["*".into()]);
    assert_eq!(status(&nfs_from(&vfs, addr("127.0.0.1"), 1, Cred::None, root()).await), 0);
    assert_eq!(status(&nfs_from(&vfs, None, 1, Cred::None, root()).await), 0);
}

#[tokio::test]
async fn refusals_carry_each_procedures_failure_body() {
    // A handle of a missing inode: each procedure fails through its own failure path.
    let stale = FileHandle { share_id: crate::testing::SHARE_ID, ino: 999, generation: 1 };
    let vfs = MemVfs::new();
    for proc_num in 1..=21 {
        let own = nfs_from(&vfs, None, proc_num, Cred::Sys(0, 0), stale).await;
        assert_ne!(status(&own), 0, "proc {proc_num} failed by itself");
        vfs.set_export_options(|s| s.allowed_clients = vec!["10.0.0.1".into()]);
        let refused = nfs_from(&vfs, addr("10.0.0.2"), proc_num, Cred::Sys(0, 0), stale).await;
        vfs.set_export_options(|s| s.allowed_clients.clear());
        assert_eq!(status(&refused), ACCES, "proc {proc_num}");
        assert_eq!(refused.body_len(), own.body_len(), "proc {proc_num}: the same failure body");
    }
    // A handle of a share that does not exist is stale before anything else.
    let other = FileHandle { share_id: 77, ino: 1, generation: 1 };
    assert_eq!(status(&nfs_from(&vfs, None, 1, Cred::None, other).await), 70, "NFS3ERR_STALE");
}

#[tokio::test]
async fn a_read_only_export_refuses_every_change_and_serves_reads() {
    let vfs = MemVfs::new();
    let file = create(&vfs, b"f", Cred::Sys(0, 0)).await;
    vfs.set_export_options(|s| s.read_only = true);
    for proc_num in [2, 7, 8, 9, 10, 11, 12, 13, 14, 15, 21] {
        let h = if matches!(proc_num, 2 | 7 | 21) { file } else { root() };
        assert_eq!(status(&nfs_from(&vfs, None, proc_num, Cred::Sys(0, 0), h).await), ROFS, "proc {proc_num}");
    }
    assert!(vfs.events().is_empty(), "no WRITE or COMMIT reached the Vfs");
    assert_eq!(vfs.file(b"new"), None);
    for (proc_num, h) in [(1, file), (6, file), (16, root()), (17, root()), (18, root()), (19, root()), (20, file)] {
        assert_eq!(status(&nfs_from(&vfs, None, proc_num, Cred::Sys(0, 0), h).await), 0, "proc {proc_num}");
    }
    let lookup = send_from(&vfs, record(42, NFS, 3, 3, Cred::Sys(0, 0), |w| dirop(w, root(), b"f")), None).await;
    assert_eq!(status(&lookup), 0, "LOOKUP");
    // ACCESS: root asks for everything; read, lookup and execute only.
    for (h, expected) in [(root(), 0x01 | 0x02), (file, 0x01 | 0x20)] {
        let rep = nfs_from(&vfs, None, 4, Cred::Sys(0, 0), h).await;
        let mut r = rep.body();
        assert_eq!(r.u32().unwrap(), 0);
        skip_post_op_attr(&mut r).unwrap();
        assert_eq!(r.u32().unwrap(), expected);
    }
    // Back to read-write: the same ACCESS grants modify/extend/delete again.
    vfs.set_export_options(|s| s.read_only = false);
    let rep = nfs_from(&vfs, None, 4, Cred::Sys(0, 0), root()).await;
    let mut r = rep.body();
    assert_eq!(r.u32().unwrap(), 0);
    skip_post_op_attr(&mut r).unwrap();
    assert_eq!(r.u32().unwrap(), 0x1f);
}

/// CREATE `name` in the root as `cred`: (uid, gid) of the new file.
async fn created_owner(vfs: &MemVfs, name: &[u8], cred: Cred) -> (u64, u64) {
    let rep = send_from(
        vfs,
        record(42, NFS, 3, 8, cred, |w| {
            dirop(w, root(), name);
            w.u32(0);
            no_sattr(w);
        }),
        None,
    )
    .await;
    let mut r = rep.body();
    assert_eq!(r.u32().unwrap(), 0, "CREATE status");
    assert!(r.bool().unwrap());
    r.opaque(64).unwrap();
    let attr = skip_post_op_attr(&mut r).unwrap();
    skip_wcc(&mut r);
    (attr[3], attr[4])
}

#[tokio::test]
async fn squash_maps_the_identity_before_the_vfs() {
    let vfs = MemVfs::new();
    // none: as claimed; AUTH_NONE is the anonymous identity.
    vfs.set_export_options(|s| {
        s.anon_uid = Some(1234);
        s.anon_gid = Some(5678);
    });
    assert_eq!(created_owner(&vfs, b"a", Cred::Sys(0, 0)).await, (0, 0));
    assert_eq!(created_owner(&vfs, b"b", Cred::None).await, (1234, 5678));
    assert_eq!(vfs.last_cred(), Some(pb::Cred { uid: 1234, gid: 5678, gids: vec![] }));

    // root: uid 0 and gid 0 only.
    vfs.set_export_options(|s| s.squash = pb::Squash::Root as i32);
    assert_eq!(created_owner(&vfs, b"c", Cred::Sys(0, 0)).await, (1234, 5678));
    assert_eq!(vfs.last_cred(), Some(pb::Cred { uid: 1234, gid: 5678, gids: vec![1] }));
    assert_eq!(created_owner(&vfs, b"d", Cred::Sys(1000, 100)).await, (1000, 100));
    assert_eq!(vfs.last_cred(), Some(pb::Cred { uid: 1000, gid: 100, gids: vec![101] }));

    // all: everyone, without supplementary groups.
    vfs.set_export_options(|s| s.squash = pb::Squash::All as i32);
    assert_eq!(created_owner(&vfs, b"e", Cred::Sys(1000, 100)).await, (1234, 5678));
    assert_eq!(vfs.last_cred(), Some(pb::Cred { uid: 1234, gid: 5678, gids: vec![] }));
    assert_eq!(created_owner(&vfs, b"f", Cred::Sys(0, 0)).await, (1234, 5678));
}

/// DUMP's (host, path) entries.
async fn dump(vfs: &MemVfs) -> Vec<(String, String)> {
    let rep = mount_call(vfs, None, 2, None).await;
    assert_eq!(rep.stat, 0);
    let mut r = rep.body();
    let mut out = Vec::new();
    while r.bool().unwrap() {
        let host = String::from_utf8(r.opaque(255).unwrap().to_vec()).unwrap();
        let path = String::from_utf8(r.opaque(1024).unwrap().to_vec()).unwrap();
        out.push((host, path));
    }
    assert!(r.rest().is_empty());
    out
}

/// EXPORT's (path, groups) entries.
async fn exports(vfs: &MemVfs) -> Vec<(String, Vec<String>)> {
    let rep = mount_call(vfs, None, 5, None).await;
    assert_eq!(rep.stat, 0);
    let mut r = rep.body();
    let mut out = Vec::new();
    while r.bool().unwrap() {
        let path = String::from_utf8(r.opaque(1024).unwrap().to_vec()).unwrap();
        let mut groups = Vec::new();
        while r.bool().unwrap() {
            groups.push(String::from_utf8(r.opaque(255).unwrap().to_vec()).unwrap());
        }
        out.push((path, groups));
    }
    assert!(r.rest().is_empty());
    out
}

#[tokio::test]
async fn mount_procedures_track_mounts_and_list_exports() {
    let vfs = MemVfs::new();
    let s = |a: &str, b: &str| (a.to_string(), b.to_string());
    // NULL.
    assert_eq!(mount_call(&vfs, None, 0, None).await.body_len(), 0);
    // MNT records the caller (a trailing slash names the same export); unknown callers are not listed.
    assert_eq!(status(&mount_call(&vfs, addr("10.0.0.1"), 1, Some(b"/export/")).await), 0);
    assert_eq!(status(&mount_call(&vfs, addr("10.0.0.1"), 1, Some(b"/export")).await), 0);
    assert_eq!(status(&mount_call(&vfs, addr("10.0.0.2"), 1, Some(b"/export")).await), 0);
    assert_eq!(status(&mount_call(&vfs, None, 1, Some(b"/export")).await), 0);
    assert_eq!(status(&mount_call(&vfs, addr("10.0.0.3"), 1, Some(b"/nope")).await), 2, "MNT3ERR_NOENT");
    assert_eq!(dump(&vfs).await, vec![s("10.0.0.1", "/export"), s("10.0.0.2", "/export")]);
    // A refused MNT is not recorded.
    vfs.set_export_options(|o| o.allowed_clients = vec!["10.0.0.0/30".into()]);
    assert_eq!(status(&mount_call(&vfs, addr("10.0.0.9"), 1, Some(b"/export")).await), ACCES);
    assert_eq!(dump(&vfs).await.len(), 2);
    // UMNT drops one entry, UMNTALL every entry of the caller; both answer void.
    assert_eq!(mount_call(&vfs, addr("10.0.0.1"), 3, Some(b"/export")).await.body_len(), 0);
    assert_eq!(dump(&vfs).await, vec![s("10.0.0.2", "/export")]);
    let all = mount_call(&vfs, addr("10.0.0.2"), 4, None).await;
    assert_eq!((all.stat, all.body_len()), (0, 0));
    assert!(dump(&vfs).await.is_empty());
    assert_eq!(mount_call(&vfs, None, 3, None).await.stat, 4, "UMNT without a path: GARBAGE_ARGS");
    // EXPORT: the groups are the allowed clients, `*` when everyone may mount.
    assert_eq!(exports(&vfs).await, vec![("/export".to_string(), vec!["10.0.0.0/30".to_string()])]);
    vfs.set_export_options(|o| o.allowed_clients.clear());
    assert_eq!(exports(&vfs).await, vec![("/export".to_string(), vec!["*".to_string()])]);
}
