//! Two gateways over one metad and block daemon, as real processes (`tessera serve`), driven
//! with the `nfs3_client` crate.
//!
//! What clients rely on (invariant 1, a gateway holds nothing they cannot recover): a handle
//! from one gateway works on any other, a READDIR continues on another gateway with the
//! same cookies, and a gateway that dies before COMMIT answers the COMMIT after its restart
//! with a new write verifier, so the client resends what it had not committed.

mod common;

use std::collections::BTreeSet;

use common::cluster::Cluster;
use common::*;
use nfs3_client::nfs3_types::nfs3::*;
use nfs3_client::nfs3_types::xdr_codec::{List, Opaque};

type Client = nfs3_client::Nfs3Client<nfs3_client::tokio::TokioIo<tokio::net::TcpStream>>;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

fn root_auth() -> nfs3_client::nfs3_types::rpc::opaque_auth<'static> {
    use nfs3_client::nfs3_types::rpc::{auth_unix, opaque_auth};
    opaque_auth::auth_unix(&auth_unix { stamp: 1, machinename: Opaque::owned(b"gw".to_vec()), uid: 0, gid: 0, gids: vec![] })
}

/// Mounts /export on node `i`'s gateway: (root handle, client).
async fn mount(cluster: &Cluster, i: usize) -> (nfs_fh3, Client) {
    let n = &cluster.nodes[i];
    let conn = nfs3_client::Nfs3ConnectionBuilder::new(nfs3_client::tokio::TokioConnector, n.ip.to_string(), "/export")
        .mount_port(n.nfs_port)
        .nfs3_port(n.nfs_port)
        .connect_from_privileged_port(false)
        .credential(root_auth())
        .mount()
        .await
        .expect("mount /export");
    (conn.root_nfs_fh3(), conn.into_nfs3_client())
}

fn name(s: &str) -> filename3<'static> {
    filename3(Opaque::owned(s.as_bytes().to_vec()))
}

fn sattr(mode: u32) -> sattr3 {
    sattr3 { mode: set_mode3::Some(mode), ..Default::default() }
}

async fn create(c: &mut Client, dir: &nfs_fh3, n: &str) -> nfs_fh3 {
    let args = CREATE3args { where_: diropargs3 { dir: dir.clone(), name: name(n) }, how: createhow3::GUARDED(sattr(0o644)) };
    match c.create(&args).await.expect("CREATE call").unwrap().obj {
        Nfs3Option::Some(fh) => fh,
        Nfs3Option::None => panic!("CREATE returned no handle"),
    }
}

async fn write(c: &mut Client, file: &nfs_fh3, offset: u64, data: &[u8], stable: stable_how) -> WRITE3resok {
    let args = WRITE3args { file: file.clone(), offset, count: data.len() as u32, stable, data: Opaque::owned(data.to_vec()) };
    c.write(&args).await.expect("WRITE call").unwrap()
}

async fn read_all(c: &mut Client, file: &nfs_fh3) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let r = c.read(&READ3args { file: file.clone(), offset: out.len() as u64, count: 1 << 20 }).await.expect("READ call");
        let ok = r.unwrap();
        out.extend_from_slice(ok.data.as_ref());
        if ok.eof || ok.count == 0 {
            return out;
        }
    }
}

/// One READDIR page: (names, last cookie, verifier, eof).
async fn readdir_page(c: &mut Client, dir: &nfs_fh3, cookie: u64, verf: cookieverf3) -> (Vec<String>, u64, cookieverf3, bool) {
    let args = READDIR3args { dir: dir.clone(), cookie, cookieverf: verf, count: 2048 };
    let ok = c.readdir(&args).await.expect("READDIR call").unwrap();
    let List(entries) = ok.reply.entries;
    let last = entries.last().map_or(cookie, |e| e.cookie);
    let names = entries.iter().map(|e| String::from_utf8_lossy(e.name.0.as_ref()).to_string()).collect();
    (names, last, ok.cookieverf, ok.reply.eof)
}

fn two_gateways(tmp: &std::path::Path) -> (Cluster, usize, usize) {
    let mut cluster = Cluster::new(tmp);
    cluster.common_env =
        vec![("TESSERA_BLOCKD__MIN_FREE_BYTES".into(), "0".into()), ("TESSERA_GATEWAY__FLUSH_IDLE_MS".into(), "600000".into())];
    let a = cluster.add_node(&["metad", "blockd", "gateway"]);
    let b = cluster.add_node(&["gateway"]);
    cluster.start_all();
    (cluster, a, b)
}

#[test]
fn handles_and_readdir_cookies_from_one_gateway_work_on_the_other() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (cluster, a, b) = two_gateways(tmp.path());
    let rt = runtime();
    rt.block_on(async {
        let (root_a, mut ca) = mount(&cluster, a).await;
        let (_, mut cb) = mount(&cluster, b).await;
        // On A: a directory of 300 files and one file with content.
        let mk = MKDIR3args { where_: diropargs3 { dir: root_a.clone(), name: name("d") }, attributes: sattr(0o755) };
        let dir = match ca.mkdir(&mk).await.expect("MKDIR call").unwrap().obj {
            Nfs3Option::Some(fh) => fh,
            Nfs3Option::None => panic!("MKDIR returned no handle"),
        };
        let mut want = BTreeSet::new();
        for i in 0..300 {
            let n = format!("file-{i:04}-with-a-longish-name");
            create(&mut ca, &dir, &n).await;
            want.insert(n);
        }
        let f = create(&mut ca, &root_a, "f").await;
        let first = random_bytes(3 << 20, 3);
        for (i, piece) in first.chunks(1 << 20).enumerate() {
            write(&mut ca, &f, (i << 20) as u64, piece, stable_how::FILE_SYNC).await;
        }

        // On B, with A's handles: READ, WRITE, READDIR.
        assert!(read_all(&mut cb, &f).await == first, "B reads what A wrote, through A's handle");
        let more = random_bytes(1 << 20, 4);
        write(&mut cb, &f, first.len() as u64, &more, stable_how::FILE_SYNC).await;
        let mut whole = first.clone();
        whole.extend_from_slice(&more);
        assert!(read_all(&mut ca, &f).await == whole, "A reads what B appended");

        // A READDIR started on A continues on B with A's cookie and verifier, and back.
        let mut seen = Vec::new();
        let (mut cookie, mut verf, mut on_a, mut pages) = (0u64, cookieverf3::default(), true, 0);
        loop {
            let c = if on_a { &mut ca } else { &mut cb };
            let (names, last, v, eof) = readdir_page(c, &dir, cookie, verf).await;
            assert!(!names.is_empty() || eof, "a READDIR page that is not the last lists something (cookie {cookie})");
            seen.extend(names);
            (cookie, verf, on_a, pages) = (last, v, !on_a, pages + 1);
            assert!(pages < 1000, "READDIR did not reach eof ({} names so far)", seen.len());
            if eof {
                break;
            }
        }
        assert!(pages >= 4, "the listing took several pages ({pages})");
        assert_eq!(&seen[..2], &[".".to_string(), "..".to_string()], "\".\" and \"..\" come first");
        let listed: BTreeSet<String> = seen.iter().filter(|n| *n != "." && *n != "..").cloned().collect();
        assert_eq!(listed.len(), seen.iter().filter(|n| *n != "." && *n != "..").count(), "no entry listed twice");
        assert_eq!(listed, want, "pages alternating between gateways list every entry once");
    });
}

#[test]
fn a_gateway_killed_before_commit_answers_with_a_new_verifier_and_resent_data_is_kept() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (mut cluster, a, b) = two_gateways(tmp.path());
    let rt = runtime();
    let data = random_bytes(8 << 20, 8);
    let (file, verf1) = rt.block_on(async {
        let (root, mut cb) = mount(&cluster, b).await;
        let f = create(&mut cb, &root, "unstable").await;
        let mut verf = None;
        for (i, piece) in data.chunks(1 << 20).enumerate() {
            let ok = write(&mut cb, &f, (i << 20) as u64, piece, stable_how::UNSTABLE).await;
            assert_eq!(ok.committed, stable_how::UNSTABLE);
            assert!(verf.is_none_or(|v| v == ok.verf), "one verifier while the gateway lives");
            verf = Some(ok.verf);
        }
        (f, verf.expect("a verifier"))
    });
    cluster.kill9(b);
    cluster.start(b);
    rt.block_on(async {
        let (_, mut cb) = mount(&cluster, b).await;
        let commit = cb.commit(&COMMIT3args { file: file.clone(), offset: 0, count: 0 }).await.expect("COMMIT call").unwrap();
        assert_ne!(commit.verf, verf1, "the restarted gateway answers COMMIT with a new verifier");
        // The client resends everything not committed, then commits again.
        for (i, piece) in data.chunks(1 << 20).enumerate() {
            let ok = write(&mut cb, &file, (i << 20) as u64, piece, stable_how::UNSTABLE).await;
            assert_eq!(ok.verf, commit.verf, "the new gateway's verifier is stable");
        }
        let again = cb.commit(&COMMIT3args { file: file.clone(), offset: 0, count: 0 }).await.expect("COMMIT call").unwrap();
        assert_eq!(again.verf, commit.verf, "same verifier: the resent data is committed");
        assert!(read_all(&mut cb, &file).await == data, "the file is exactly what was written");
        // And on the other gateway too.
        let (_, mut ca) = mount(&cluster, a).await;
        assert!(read_all(&mut ca, &file).await == data, "gateway A reads the committed file");
    });
}
