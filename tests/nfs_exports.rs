//! Export options end to end: `tessera dev` as a child process, shares created and changed
//! through the control API (gRPC), and real clients (libnfs's `nfs-cp` / `nfs-ls` /
//! `nfs-cat`, the `nfs3_client` crate) from 127.0.0.0/8.
//!
//! Shows: a read-only share refuses a write and serves reads; a client outside
//! `allowed_clients` cannot mount (and loses access on a handle it holds once the list
//! changes); under `squash: all` a file created by uid 0 is owned by the anonymous uid; an
//! `UpdateShare` applies on the running gateway without a restart, within the gateway's
//! cache period for a client that stays mounted.

mod common;

use std::time::{Duration, Instant};

use common::*;
use nfs3_client::nfs3_types::mount::mountstat3;
use nfs3_client::nfs3_types::nfs3::*;
use nfs3_client::nfs3_types::rpc::{auth_unix, opaque_auth};
use nfs3_client::nfs3_types::xdr_codec::Opaque;
use proto::pb;
use proto::pb::control_client::ControlClient;

/// The gateway's export cache period (`gateway::engine::shares::TTL`), plus slack for a
/// loaded machine.
const APPLY_DEADLINE: Duration = Duration::from_secs(2 + 6);

type Conn = nfs3_client::Nfs3Connection<nfs3_client::tokio::TokioIo<tokio::net::TcpStream>>;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

fn url(dev: &Dev, export: &str, name: &str) -> String {
    let p = dev.ports.nfs;
    format!("nfs://{}{export}/{name}?version=3&nfsport={p}&mountport={p}", dev.ports.ip)
}

async fn control(dev: &Dev) -> ControlClient<tonic::transport::Channel> {
    ControlClient::connect(format!("http://{}:{}", dev.ports.ip, dev.ports.control)).await.expect("control API")
}

async fn create_share(dev: &Dev, req: pb::CreateShareRequest) -> pb::Share {
    control(dev).await.create_share(req).await.expect("CreateShare").into_inner()
}

async fn update_share(dev: &Dev, req: pb::UpdateShareRequest) -> pb::Share {
    control(dev).await.update_share(req).await.expect("UpdateShare").into_inner()
}

fn auth(uid: u32, gid: u32) -> opaque_auth<'static> {
    opaque_auth::auth_unix(&auth_unix { stamp: 1, machinename: Opaque::owned(b"e2e".to_vec()), uid, gid, gids: vec![] })
}

async fn mount(dev: &Dev, export: &str, uid: u32) -> Result<Conn, nfs3_client::ConnectError> {
    nfs3_client::Nfs3ConnectionBuilder::new(nfs3_client::tokio::TokioConnector, dev.ports.ip.to_string(), export)
        .mount_port(dev.ports.nfs)
        .nfs3_port(dev.ports.nfs)
        .connect_from_privileged_port(false)
        .credential(auth(uid, uid))
        .mount()
        .await
}

fn name(s: &str) -> filename3<'static> {
    filename3(Opaque::owned(s.as_bytes().to_vec()))
}

/// CREATE (UNCHECKED) `file` in the root of `conn`'s export: the status, and the new file's
/// (uid, gid) on success.
async fn create_file(conn: &mut Conn, file: &str) -> Result<(u32, u32), nfsstat3> {
    let root = conn.root_nfs_fh3();
    let args = CREATE3args {
        where_: diropargs3 { dir: root, name: name(file) },
        how: createhow3::UNCHECKED(sattr3::default()),
    };
    match conn.create(&args).await.expect("CREATE call") {
        Nfs3Result::Ok(ok) => match ok.obj_attributes {
            post_op_attr::Some(a) => Ok((a.uid, a.gid)),
            post_op_attr::None => panic!("CREATE without attributes"),
        },
        Nfs3Result::Err((status, _)) => Err(status),
    }
}

/// `nfs-ls` of an export's root: (uid, gid) of `file`, if listed.
fn ls_owner(dev: &Dev, export: &str, file: &str) -> Option<(u32, u32)> {
    let (ok, out, err) = run_tool("nfs-ls", &[&url(dev, export, "")]);
    assert!(ok, "nfs-ls {export} failed: {err}");
    // "-rw-r--r--  1 4321 4322  5 name": mode, nlink, uid, gid, size, name.
    String::from_utf8_lossy(&out).lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() >= 6 && f.last() == Some(&file))
            .then(|| (f[2].parse().ok(), f[3].parse().ok()))
            .and_then(|(u, g)| Some((u?, g?)))
    })
}

fn write_local(dir: &std::path::Path, file: &str, data: &[u8]) -> String {
    let p = dir.join(file);
    std::fs::write(&p, data).expect("write local file");
    p.to_string_lossy().into_owned()
}

/// Polls `f` until it is true; returns how long that took (panics after `deadline`).
fn wait_until(what: &str, deadline: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if f() {
            return start.elapsed();
        }
        assert!(start.elapsed() < deadline, "{what}: not within {deadline:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn read_only_shares_refuse_writes_and_serve_reads_and_an_update_applies_without_restart() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dev = Dev::start(&tmp.path().join("data"), Ports::pick());
    let rt = runtime();
    let ro = |read_only| pb::UpdateShareRequest {
        export_path: "/ro".into(),
        read_only: Some(read_only),
        ..Default::default()
    };

    // Created read-write, given a file, then made read-only.
    let s = rt.block_on(create_share(
        &dev,
        pb::CreateShareRequest { name: "ro".into(), export_path: "/ro".into(), ..Default::default() },
    ));
    assert!(!s.read_only);
    let content = random_bytes(300_000, 7);
    let local = write_local(tmp.path(), "content.bin", &content);
    nfs_cp(&local, &url(&dev, "/ro", "kept.bin"));
    let mut held = rt.block_on(mount(&dev, "/ro", 0)).expect("mount /ro");
    assert!(rt.block_on(update_share(&dev, ro(true))).read_only);

    // The client mounted before the change sees it within the gateway's cache period.
    let took = wait_until("read-only reaches a mounted client", APPLY_DEADLINE, || {
        rt.block_on(create_file(&mut held, "probe-ro")) == Err(nfsstat3::NFS3ERR_ROFS)
    });
    eprintln!("read-only applied to a mounted client after {took:?}");
    // nfs-cp (which mounts afresh) is refused; reads work.
    let (ok, _, err) = run_tool("nfs-cp", &[&local, &url(&dev, "/ro", "new.bin")]);
    assert!(!ok, "nfs-cp into a read-only share succeeded");
    assert!(nfs_cat(&url(&dev, "/ro", "kept.bin")).expect("nfs-cat from a read-only share") == content, "{err}");
    assert!(nfs_cat(&url(&dev, "/ro", "new.bin")).is_err(), "nothing was created");
    let (ok, out, err) = run_tool("nfs-ls", &[&url(&dev, "/ro", "")]);
    assert!(ok && String::from_utf8_lossy(&out).contains("kept.bin"), "nfs-ls of a read-only share: {err}");

    // Back to read-write: writes work again on the running gateway, for both clients.
    assert!(!rt.block_on(update_share(&dev, ro(false))).read_only);
    let took = wait_until("read-write reaches a mounted client", APPLY_DEADLINE, || {
        rt.block_on(create_file(&mut held, "probe-rw")).is_ok()
    });
    eprintln!("read-write applied to a mounted client after {took:?}");
    nfs_cp(&local, &url(&dev, "/ro", "new.bin"));
    assert!(nfs_cat(&url(&dev, "/ro", "new.bin")).expect("nfs-cat") == content);
}

#[test]
fn client_lists_decide_who_mounts_and_squash_all_owns_files_as_anon() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dev = Dev::start(&tmp.path().join("data"), Ports::pick());
    let rt = runtime();
    let local = write_local(tmp.path(), "small.txt", b"hello exports\n");

    // A share for 10.0.0.0/8 only: the test's clients (127.0.0.0/8) cannot mount it.
    let private = rt.block_on(create_share(
        &dev,
        pb::CreateShareRequest {
            name: "private".into(),
            export_path: "/private".into(),
            allowed_clients: vec!["10.0.0.0/8".into()],
            ..Default::default()
        },
    ));
    assert_eq!(private.allowed_clients, vec!["10.0.0.0/8"]);
    let (ok, _, _) = run_tool("nfs-ls", &[&url(&dev, "/private", "")]);
    assert!(!ok, "nfs-ls of a share whose list excludes 127.0.0.0/8 succeeded");
    let (ok, _, _) = run_tool("nfs-cp", &[&local, &url(&dev, "/private", "x.txt")]);
    assert!(!ok, "nfs-cp into a share whose list excludes 127.0.0.0/8 succeeded");
    match rt.block_on(mount(&dev, "/private", 0)) {
        Err(nfs3_client::ConnectError::Mount(nfs3_client::MountError::Denied(s))) => {
            assert!(matches!(s, mountstat3::MNT3ERR_ACCES), "{s}")
        }
        Err(e) => panic!("expected MNT3ERR_ACCES, got {e}"),
        Ok(_) => panic!("an excluded client mounted /private"),
    }

    // Including 127.0.0.0/8 lets the same clients in, without a restart.
    let lan = |entries: &[&str]| pb::UpdateShareRequest {
        export_path: "/private".into(),
        allowed_clients: Some(pb::ClientList { entries: entries.iter().map(|e| e.to_string()).collect() }),
        ..Default::default()
    };
    rt.block_on(update_share(&dev, lan(&["10.0.0.0/8", "127.0.0.0/8"])));
    nfs_cp(&local, &url(&dev, "/private", "x.txt"));
    assert_eq!(nfs_cat(&url(&dev, "/private", "x.txt")).expect("nfs-cat"), b"hello exports\n");
    // A client holding a handle loses access once the list no longer covers it.
    let mut held = rt.block_on(mount(&dev, "/private", 0)).expect("mount /private");
    assert!(rt.block_on(create_file(&mut held, "held")).is_ok());
    rt.block_on(update_share(&dev, lan(&["10.0.0.0/8"])));
    let took = wait_until("the narrowed list reaches a mounted client", APPLY_DEADLINE, || {
        rt.block_on(create_file(&mut held, "held")) == Err(nfsstat3::NFS3ERR_ACCES)
    });
    eprintln!("client list applied to a mounted client after {took:?}");
    assert!(nfs_cat(&url(&dev, "/private", "x.txt")).is_err(), "read refused too");

    // squash all: prepare the share's root as root (squash none), then squash everyone.
    rt.block_on(create_share(
        &dev,
        pb::CreateShareRequest { name: "sq".into(), export_path: "/sq".into(), ..Default::default() },
    ));
    rt.block_on(async {
        let mut c = mount(&dev, "/sq", 0).await.expect("mount /sq");
        let root = c.root_nfs_fh3();
        let attrs = sattr3 { mode: set_mode3::Some(0o1777), ..Default::default() };
        let r = c
            .setattr(&SETATTR3args { object: root, new_attributes: attrs, guard: sattrguard3::None })
            .await
            .expect("SETATTR call");
        assert!(matches!(r, Nfs3Result::Ok(_)), "chmod 1777 of the share root");
    });
    let sq = rt.block_on(create_share(
        &dev,
        pb::CreateShareRequest {
            name: "sq".into(),
            export_path: "/sq".into(),
            squash: Some(pb::Squash::All as i32),
            anon_uid: Some(4321),
            anon_gid: Some(4322),
            ..Default::default()
        },
    ));
    assert_eq!((sq.squash, sq.anon_uid, sq.anon_gid), (pb::Squash::All as i32, Some(4321), Some(4322)));
    // nfs-cp runs as this test's user (root in the test image), AUTH_SYS uid 0.
    nfs_cp(&local, &url(&dev, "/sq", "by-root.txt"));
    assert_eq!(ls_owner(&dev, "/sq", "by-root.txt"), Some((4321, 4322)), "owned by the anonymous identity");
    let mut c = rt.block_on(mount(&dev, "/sq", 0)).expect("mount /sq");
    assert_eq!(rt.block_on(create_file(&mut c, "by-uid-0")), Ok((4321, 4322)));
    let mut c = rt.block_on(mount(&dev, "/sq", 1000)).expect("mount /sq");
    assert_eq!(rt.block_on(create_file(&mut c, "by-uid-1000")), Ok((4321, 4322)));
}
