//! End to end, as a new user would: `tessera dev` as a child process, real NFS clients.
//!
//! What users rely on: bytes written come back identical, also after a restart; storing
//! the same content twice costs nothing (dedup, measured by the `tessera_` metrics and a
//! verify pass over the store); a corrupted chunk is never served as data; hostile bytes
//! on the NFS port hurt nobody; file handles outlive the process.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

const MIB: usize = 1024 * 1024;

fn metric(dev: &Dev, name: &str) -> f64 {
    dev.metrics().get(name).copied().unwrap_or(0.0)
}

/// Waits (with a deadline) until the gateway holds no unflushed write data, so the block
/// daemon's metrics describe everything written so far.
fn wait_flushed(dev: &Dev) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if metric(dev, "tessera_gateway_dirty_bytes") == 0.0 {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "gateway did not flush within 60 s");
        std::thread::park_timeout(Duration::from_millis(100));
    }
}

#[test]
fn big_file_round_trips_survives_restart_and_deduplicates() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data_dir = tmp.path().join("data");
    let ports = Ports::pick();
    let mut dev = Dev::start(&data_dir, ports);

    let content = random_bytes(64 * MIB, 1);
    let local = tmp.path().join("big.bin");
    std::fs::write(&local, &content).expect("write local file");
    let local = local.to_str().expect("utf-8 path");

    let chunks0 = metric(&dev, "tessera_chunks_stored");
    let bytes0 = metric(&dev, "tessera_chunk_bytes_stored");

    nfs_cp(local, &dev.url("big1"));
    assert_eq!(nfs_ls_size(&dev, "big1"), Some(64 * MIB as u64), "nfs-ls shows the size written");
    let back = nfs_cat(&dev.url("big1")).expect("nfs-cat big1");
    assert!(back == content, "nfs-cat returns the bytes written (got {} bytes)", back.len());

    wait_flushed(&dev);
    assert!(metric(&dev, r#"tessera_nfs_requests_total{proc="WRITE"}"#) >= 64.0, "WRITEs are counted by procedure");
    assert!(metric(&dev, "tessera_raft_commits_total") > 0.0, "metad counts Raft commits");
    assert!(metric(&dev, IN_PROCESS_PUTS) > 0.0, "the gateway stores chunks in its own process's block daemon");
    assert_eq!(metric(&dev, QUIC_PUTS), 0.0, "no chunk goes over QUIC inside one process");
    let chunks1 = metric(&dev, "tessera_chunks_stored");
    let bytes1 = metric(&dev, "tessera_chunk_bytes_stored");
    let grew = bytes1 - bytes0;
    assert!(chunks1 > chunks0, "chunks stored grew ({chunks0} -> {chunks1})");
    assert!(
        grew >= (64 * MIB) as f64 && grew <= (80 * MIB) as f64,
        "the first copy stores about 64 MiB of chunks (grew by {grew} bytes)"
    );

    // The same content under another name stores nothing new.
    nfs_cp(local, &dev.url("big2"));
    wait_flushed(&dev);
    assert_eq!(metric(&dev, "tessera_chunks_stored"), chunks1, "second copy adds no chunk");
    assert_eq!(metric(&dev, "tessera_chunk_bytes_stored"), bytes1, "second copy adds no bytes");
    let back2 = nfs_cat(&dev.url("big2")).expect("nfs-cat big2");
    assert!(back2 == content, "the deduplicated copy reads back identical");

    // Every stored record's BLAKE3 hash matches its bytes.
    let report = blockd::verify_store(&data_dir.join("blockd")).expect("verify pass");
    assert!(report.corrupt.is_empty(), "verify pass found corrupt records: {:?}", report.corrupt);
    assert_eq!(report.records as f64, chunks1, "every chunk counted is a record on disk");
    assert_eq!(report.bytes as f64, bytes1, "every byte counted is on disk");

    // A clean stop and a start on the same data dir keep everything.
    dev.stop();
    let dev = Dev::start(&data_dir, ports);
    assert_eq!(nfs_ls_size(&dev, "big1"), Some(64 * MIB as u64));
    let after = nfs_cat(&dev.url("big1")).expect("nfs-cat big1 after restart");
    assert!(after == content, "big1 is identical after a restart");
    let after2 = nfs_cat(&dev.url("big2")).expect("nfs-cat big2 after restart");
    assert!(after2 == content, "big2 is identical after a restart");
    assert_eq!(metric(&dev, "tessera_chunks_stored"), chunks1, "the store reopens with the same chunks");
    assert!(metric(&dev, IN_PROCESS_GETS) > 0.0, "a fresh gateway reads chunks from its own process's store");
}

const IN_PROCESS_PUTS: &str = r#"tessera_gateway_chunk_requests_total{op="put",path="in_process"}"#;
const IN_PROCESS_GETS: &str = r#"tessera_gateway_chunk_requests_total{op="get",path="in_process"}"#;
const QUIC_PUTS: &str = r#"tessera_gateway_chunk_requests_total{op="put",path="quic"}"#;
const QUIC_GETS: &str = r#"tessera_gateway_chunk_requests_total{op="get",path="quic"}"#;

/// `gateway.in_process = false`: the same process's daemon is reached over QUIC,
/// and the bytes still round-trip (the network path stays usable and tested in dev).
#[test]
fn in_process_path_off_sends_chunks_over_quic() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data_dir = tmp.path().join("data");
    let ports = Ports::pick();
    let env = [("TESSERA_GATEWAY__IN_PROCESS", "false".to_string())];
    let mut dev = Dev::start_with(&data_dir, ports, &env);
    let content = random_bytes(4 * MIB, 9);
    let local = tmp.path().join("f.bin");
    std::fs::write(&local, &content).expect("write local file");
    nfs_cp(local.to_str().expect("utf-8 path"), &dev.url("f"));
    wait_flushed(&dev);
    assert!(metric(&dev, QUIC_PUTS) > 0.0, "chunks go over QUIC when the in-process path is off");
    assert_eq!(metric(&dev, IN_PROCESS_PUTS), 0.0, "and never in-process");
    // A restarted gateway has an empty chunk cache: the read fetches over QUIC.
    dev.stop();
    let dev = Dev::start_with(&data_dir, ports, &env);
    assert!(nfs_cat(&dev.url("f")).expect("nfs-cat f") == content, "the bytes round-trip over QUIC");
    assert!(metric(&dev, QUIC_GETS) > 0.0, "the read fetched chunks over QUIC");
}

#[test]
fn corrupted_chunk_answers_io_error_and_others_still_serve() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data_dir = tmp.path().join("data");
    let dev = Dev::start(&data_dir, Ports::pick());

    let good = random_bytes(3 * MIB, 2);
    let victim = random_bytes(3 * MIB, 3);
    let good_path = tmp.path().join("good.bin");
    let victim_path = tmp.path().join("victim.bin");
    std::fs::write(&good_path, &good).expect("write");
    std::fs::write(&victim_path, &victim).expect("write");

    nfs_cp(good_path.to_str().expect("path"), &dev.url("good"));
    wait_flushed(&dev);
    let blockd_dir = data_dir.join("blockd");
    let before: std::collections::HashSet<_> =
        blockd::scan_records(&blockd_dir).expect("scan").into_iter().map(|r| r.hash).collect();
    nfs_cp(victim_path.to_str().expect("path"), &dev.url("victim"));
    wait_flushed(&dev);
    let new_records: Vec<_> =
        blockd::scan_records(&blockd_dir).expect("scan").into_iter().filter(|r| !before.contains(&r.hash)).collect();
    assert!(!new_records.is_empty(), "the victim file stored new chunks");

    // Flip one byte in the middle of every chunk that only the victim file uses.
    for rec in &new_records {
        let mut f = std::fs::OpenOptions::new().read(true).write(true).open(&rec.segment).expect("open segment");
        use std::os::unix::fs::FileExt;
        let at = rec.data_offset + u64::from(rec.len) / 2;
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, at).expect("read byte");
        b[0] ^= 0x5a;
        f.write_all_at(&b, at).expect("flip byte");
        f.flush().expect("flush");
    }
    let report = blockd::verify_store(&blockd_dir).expect("verify pass");
    assert_eq!(report.corrupt.len(), new_records.len(), "the verify pass finds exactly the flipped records");

    nfs_cat(&dev.url("victim")).expect_err("reading a corrupted file must fail, not return wrong bytes");
    assert_eq!(read_status(&dev, "victim"), Some(nfsstat3::NFS3ERR_IO), "READ of a corrupted chunk answers NFS3ERR_IO");
    assert_eq!(read_status(&dev, "good"), None, "READ of an intact file succeeds");
    let ok = nfs_cat(&dev.url("good")).expect("the daemon keeps serving other files");
    assert!(ok == good, "the other file is intact");
}

use nfs3_client::nfs3_types::nfs3::*;
use nfs3_client::nfs3_types::xdr_codec::Opaque;

async fn mount(ports: Ports) -> nfs3_client::Nfs3Connection<nfs3_client::tokio::TokioIo<tokio::net::TcpStream>> {
    nfs3_client::Nfs3ConnectionBuilder::new(nfs3_client::tokio::TokioConnector, ports.ip.to_string(), "/export")
        .mount_port(ports.nfs)
        .nfs3_port(ports.nfs)
        .connect_from_privileged_port(false)
        .credential(root_auth())
        .mount()
        .await
        .expect("mount /export")
}

/// AUTH_SYS as root, the identity `nfs-cp` (run as root) created the files with.
fn root_auth() -> nfs3_client::nfs3_types::rpc::opaque_auth<'static> {
    use nfs3_client::nfs3_types::rpc::{auth_unix, opaque_auth};
    opaque_auth::auth_unix(&auth_unix {
        stamp: 1,
        machinename: Opaque::owned(b"e2e".to_vec()),
        uid: 0,
        gid: 0,
        gids: vec![],
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

/// READs the whole of `name` (1 MiB at a time) and returns the first error status, if any.
fn read_status(dev: &Dev, name: &str) -> Option<nfsstat3> {
    runtime().block_on(async {
        let conn = mount(dev.ports).await;
        let root = conn.root_nfs_fh3();
        let mut c = conn.into_nfs3_client();
        let what = diropargs3 { dir: root, name: filename3(Opaque::owned(name.as_bytes().to_vec())) };
        let file = c.lookup(&LOOKUP3args { what }).await.expect("LOOKUP call").unwrap().object;
        let mut offset = 0u64;
        loop {
            match c.read(&READ3args { file: file.clone(), offset, count: 1 << 20 }).await.expect("READ call") {
                Nfs3Result::Ok(ok) if ok.eof || ok.count == 0 => return None,
                Nfs3Result::Ok(ok) => offset += u64::from(ok.count),
                Nfs3Result::Err((stat, _)) => return Some(stat),
            }
        }
    })
}

/// Builds a record-marked RPC call with AUTH_NONE and no arguments.
fn rpc_call(xid: u32, prog: u32, vers: u32, proc_: u32) -> Vec<u8> {
    let mut body = Vec::new();
    for w in [xid, 0, 2, prog, vers, proc_, 0, 0, 0, 0] {
        body.extend_from_slice(&w.to_be_bytes());
    }
    let mut out = (0x8000_0000u32 | body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

/// Reads one record-marked reply, or None if the server closed the connection.
fn read_reply(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut marker = [0u8; 4];
    s.read_exact(&mut marker).ok()?;
    let len = (u32::from_be_bytes(marker) & 0x7fff_ffff) as usize;
    assert!(len < 1 << 20, "reply record of {len} bytes");
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).ok()?;
    Some(body)
}

fn word(b: &[u8], i: usize) -> u32 {
    u32::from_be_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]])
}

fn connect(dev: &Dev) -> TcpStream {
    let s = TcpStream::connect((dev.ports.ip, dev.ports.nfs)).expect("connect to NFS port");
    s.set_read_timeout(Some(Duration::from_secs(20))).expect("read timeout");
    s
}

/// After sending `bytes` (and half-closing if asked), the server answers with an RPC reply
/// or closes the connection — within the read timeout, without hanging or crashing.
fn expect_reply_or_close(dev: &Dev, bytes: &[u8], half_close: bool) {
    let mut s = connect(dev);
    let _ = s.write_all(bytes);
    if half_close {
        let _ = s.shutdown(std::net::Shutdown::Write);
    }
    let mut sink = Vec::new();
    match s.read_to_end(&mut sink) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("server neither answered nor closed: {e}"),
    }
}

#[test]
fn hostile_bytes_get_errors_or_closed_connections_and_service_continues() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dev = Dev::start(&tmp.path().join("data"), Ports::pick());
    let content = random_bytes(MIB, 4);
    let local = tmp.path().join("f.bin");
    std::fs::write(&local, &content).expect("write");
    nfs_cp(local.to_str().expect("path"), &dev.url("f"));

    // Random bytes.
    expect_reply_or_close(&dev, &random_bytes(4096, 5), true);
    // A record marker claiming a ~2 GiB last fragment, then one claiming more fragments.
    expect_reply_or_close(&dev, &[0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4], false);
    expect_reply_or_close(&dev, &[0x7f, 0xff, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff], false);
    // A truncated call: the record is complete but the call inside stops after the program.
    let full = rpc_call(7, 100003, 3, 0);
    let mut truncated = (0x8000_0000u32 | 16).to_be_bytes().to_vec();
    truncated.extend_from_slice(&full[4..20]);
    expect_reply_or_close(&dev, &truncated, true);
    // A record that ends before its marker's length.
    expect_reply_or_close(&dev, &full[..20], true);

    // An unknown program gets PROG_UNAVAIL (accepted reply, accept_stat 1).
    let mut s = connect(&dev);
    s.write_all(&rpc_call(42, 400_000, 1, 0)).expect("send");
    let reply = read_reply(&mut s).expect("a reply to an unknown program");
    assert_eq!(word(&reply, 0), 42, "xid echoed");
    assert_eq!(word(&reply, 1), 1, "REPLY");
    assert_eq!(word(&reply, 2), 0, "MSG_ACCEPTED");
    assert_eq!(word(&reply, 5), 1, "PROG_UNAVAIL");

    // Still serving: NULL answers SUCCESS on the same connection, and the file reads back.
    s.write_all(&rpc_call(43, 100003, 3, 0)).expect("send NULL");
    let reply = read_reply(&mut s).expect("a reply to NULL");
    assert_eq!((word(&reply, 0), word(&reply, 2), word(&reply, 5)), (43, 0, 0), "NULL succeeds");
    let back = nfs_cat(&dev.url("f")).expect("read after hostile input");
    assert!(back == content, "file intact after hostile input");
}

#[test]
fn handles_outlive_the_process_and_removed_files_are_stale() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data_dir = tmp.path().join("data");
    let ports = Ports::pick();
    let mut dev = Dev::start(&data_dir, ports);
    let content = random_bytes(100_000, 6);
    let local = tmp.path().join("h.bin");
    std::fs::write(&local, &content).expect("write");
    nfs_cp(local.to_str().expect("path"), &dev.url("h"));

    let rt = runtime();
    let (root, handle, fileid) = rt.block_on(async {
        let conn = mount(ports).await;
        let root = conn.root_nfs_fh3();
        let mut c = conn.into_nfs3_client();
        let name = filename3(Opaque::owned(b"h".to_vec()));
        let res = c.lookup(&LOOKUP3args { what: diropargs3 { dir: root.clone(), name } }).await.expect("LOOKUP call");
        let ok = res.unwrap();
        let attr = c.getattr(&GETATTR3args { object: ok.object.clone() }).await.expect("GETATTR call").unwrap();
        assert_eq!(attr.obj_attributes.size, content.len() as u64);
        (root, ok.object, attr.obj_attributes.fileid)
    });

    dev.stop();
    let _dev = Dev::start(&data_dir, ports);
    rt.block_on(async {
        let mut c = mount(ports).await.into_nfs3_client();
        let attr = c.getattr(&GETATTR3args { object: handle.clone() }).await.expect("GETATTR call");
        let attr = match attr {
            Nfs3Result::Ok(ok) => ok.obj_attributes,
            Nfs3Result::Err((stat, _)) => panic!("handle from before the restart failed: {stat:?}"),
        };
        assert_eq!(attr.fileid, fileid, "same file");
        assert_eq!(attr.size, content.len() as u64, "same size");

        let name = filename3(Opaque::owned(b"h".to_vec()));
        let res = c.remove(&REMOVE3args { object: diropargs3 { dir: root.clone(), name } }).await.expect("REMOVE call");
        assert!(matches!(res, Nfs3Result::Ok(_)), "remove succeeds");
        match c.getattr(&GETATTR3args { object: handle.clone() }).await.expect("GETATTR call") {
            Nfs3Result::Err((stat, _)) => assert_eq!(stat, nfsstat3::NFS3ERR_STALE, "removed file's handle is stale"),
            Nfs3Result::Ok(_) => panic!("a removed file's handle still answered"),
        }
        // A malformed handle is refused as such.
        let bad = nfs_fh3 { data: Opaque::owned(vec![9; 7]) };
        match c.getattr(&GETATTR3args { object: bad }).await.expect("GETATTR call") {
            Nfs3Result::Err((stat, _)) => assert_eq!(stat, nfsstat3::NFS3ERR_BADHANDLE),
            Nfs3Result::Ok(_) => panic!("a malformed handle answered"),
        }
    });
}
