//! Server tests over real sockets: record marking on the wire, pipelining, connection

#![allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected input")]
//! isolation, shutdown, and interoperability with Debian's libnfs tools.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::*;
use crate::testing::{Event, MemVfs};
use crate::vfs::Stability;
use crate::xdr::XdrWriter;

const DEADLINE: Duration = Duration::from_secs(30);

async fn start() -> (SocketAddr, Arc<MemVfs>, Shutdown, JoinHandle<io::Result<()>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let vfs = Arc::new(MemVfs::new());
    let shutdown = Shutdown::new();
    let task = tokio::spawn(serve(listener, vfs.clone(), NfsServerOptions::default(), shutdown.clone()));
    (addr, vfs, shutdown, task)
}

fn null_call(xid: u32) -> Vec<u8> {
    let mut w = XdrWriter::new();
    for v in [xid, 0, 2, 100_003, 3, 0, 0, 0, 0, 0] {
        w.u32(v);
    }
    w.into_inner().to_vec()
}

fn framed(call: &[u8]) -> Vec<u8> {
    let mut out = record::marker(call.len()).to_vec();
    out.extend_from_slice(call);
    out
}

/// Reads one record-marked reply and returns its xid and accept_stat.
async fn read_reply(s: &mut TcpStream) -> (u32, u32) {
    let mut marker = [0u8; 4];
    tokio::time::timeout(DEADLINE, s.read_exact(&mut marker)).await.unwrap().unwrap();
    let word = u32::from_be_bytes(marker);
    assert!(word & 0x8000_0000 != 0, "single-fragment reply");
    let mut body = vec![0u8; (word & 0x7fff_ffff) as usize];
    s.read_exact(&mut body).await.unwrap();
    let w = |i: usize| u32::from_be_bytes(body[i * 4..i * 4 + 4].try_into().unwrap());
    (w(0), w(5))
}

#[tokio::test]
async fn pipelined_and_fragmented_calls() {
    let (addr, _vfs, shutdown, task) = start().await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut burst = Vec::new();
    for xid in 1..=20 {
        burst.extend(framed(&null_call(xid)));
    }
    // One call split into two fragments.
    let call = null_call(21);
    burst.extend_from_slice(&(10u32).to_be_bytes());
    burst.extend_from_slice(&call[..10]);
    burst.extend_from_slice(&(0x8000_0000u32 | (call.len() as u32 - 10)).to_be_bytes());
    burst.extend_from_slice(&call[10..]);
    s.write_all(&burst).await.unwrap();
    let mut xids = Vec::new();
    for _ in 0..21 {
        let (xid, stat) = read_reply(&mut s).await;
        assert_eq!(stat, 0);
        xids.push(xid);
    }
    xids.sort_unstable();
    assert_eq!(xids, (1..=21).collect::<Vec<_>>());
    shutdown.cancel();
    tokio::time::timeout(DEADLINE, task).await.unwrap().unwrap().unwrap();
}

#[tokio::test]
async fn oversized_record_closes_only_that_connection() {
    let (addr, _vfs, shutdown, task) = start().await;
    let mut bad = TcpStream::connect(addr).await.unwrap();
    let mut good = TcpStream::connect(addr).await.unwrap();
    // Claims a 2 GiB fragment: the server must hang up without waiting for it.
    bad.write_all(&0xffff_ffffu32.to_be_bytes()).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(DEADLINE, bad.read(&mut buf)).await.unwrap().unwrap_or(0);
    assert_eq!(n, 0, "connection closed");
    good.write_all(&framed(&null_call(5))).await.unwrap();
    assert_eq!(read_reply(&mut good).await, (5, 0));
    shutdown.cancel();
    tokio::time::timeout(DEADLINE, task).await.unwrap().unwrap().unwrap();
    // After shutdown no new connection is served.
    assert!(TcpStream::connect(addr).await.is_err());
}

async fn run(program: &str, args: &[&str]) -> Option<std::process::Output> {
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let child = match child {
        Ok(c) => c,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
        Err(e) => panic!("starting {program}: {e}"),
    };
    let out = tokio::time::timeout(DEADLINE, child.wait_with_output()).await.expect("libnfs tool timed out").unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Some(out)
}

/// Describes a run of WRITE/COMMIT events compactly for the report.
fn summarize(events: &[Event]) -> String {
    let mut sizes = std::collections::BTreeMap::<(usize, Stability), usize>::new();
    let mut commits = 0;
    for e in events {
        match e {
            Event::Write { len, stable, .. } => *sizes.entry((*len, *stable)).or_default() += 1,
            Event::Commit { .. } => commits += 1,
        }
    }
    format!("writes (size, stability) -> count: {sizes:?}; commits: {commits}; last event: {:?}", events.last())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libnfs_tools_copy_list_and_cat() {
    let (addr, vfs, shutdown, task) = start().await;
    let port = addr.port();
    let url = |path: &str| format!("nfs://127.0.0.1{path}?version=3&nfsport={port}&mountport={port}");

    let data: Vec<u8> = (0..3 * 1024 * 1024 + 123).map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("big.bin");
    std::fs::write(&local, &data).unwrap();

    let Some(_) = run("nfs-cp", &[local.to_str().unwrap(), &url("/export/big.bin")]).await else {
        println!("SKIPPED: libnfs tools (nfs-cp, nfs-ls, nfs-cat) are not installed; apt-get install -y libnfs-utils");
        return;
    };
    assert_eq!(vfs.file(b"big.bin").as_deref(), Some(&data[..]), "bytes stored through nfs-cp");
    println!("nfs-cp: {}", summarize(&vfs.events()));

    let ls = run("nfs-ls", &[&url("/export")]).await.unwrap();
    let listing = String::from_utf8_lossy(&ls.stdout);
    let line = listing.lines().find(|l| l.contains("big.bin")).unwrap_or_else(|| panic!("nfs-ls output: {listing}"));
    assert!(line.split_whitespace().any(|w| w == data.len().to_string()), "size in `{line}`");

    let cat = run("nfs-cat", &[&url("/export/big.bin")]).await.unwrap();
    assert!(cat.stdout == data, "nfs-cat returned {} bytes, expected {}", cat.stdout.len(), data.len());

    shutdown.cancel();
    tokio::time::timeout(DEADLINE, task).await.unwrap().unwrap().unwrap();
}

/// GETATTR of the share's root (AUTH_NONE), framed.
fn getattr_root(xid: u32) -> Vec<u8> {
    let mut w = XdrWriter::new();
    for v in [xid, 0, 2, 100_003, 3, 1, 0, 0, 0, 0] {
        w.u32(v);
    }
    w.opaque(&MemVfs::root().encode());
    framed(&w.into_inner())
}

/// The NFS status of one record-marked reply to an accepted call.
async fn read_status(s: &mut TcpStream) -> u32 {
    let mut marker = [0u8; 4];
    tokio::time::timeout(DEADLINE, s.read_exact(&mut marker)).await.unwrap().unwrap();
    let mut body = vec![0u8; (u32::from_be_bytes(marker) & 0x7fff_ffff) as usize];
    s.read_exact(&mut body).await.unwrap();
    assert_eq!(u32::from_be_bytes(body[20..24].try_into().unwrap()), 0, "accepted");
    u32::from_be_bytes(body[24..28].try_into().unwrap())
}

/// Behind a load balancer that sends PROXY headers, export rules see the client it names;
/// a listed load balancer must send one, and no one else's header is believed.
#[tokio::test]
async fn a_proxy_header_from_a_listed_load_balancer_names_the_client() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let vfs = Arc::new(MemVfs::new());
    vfs.set_export_options(|s| s.allowed_clients = vec!["198.51.100.4".into()]);
    let shutdown = Shutdown::new();
    let opts = NfsServerOptions {
        proxy_protocol_from: Arc::new(vec![ClientMatch::parse("127.0.0.0/8").unwrap()]),
        ..Default::default()
    };
    let task = tokio::spawn(serve(listener, vfs.clone(), opts, shutdown.clone()));
    const ACCES: u32 = 13;

    // v2 naming the allowed client, and the call in the same segment: served.
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut bytes = crate::proxy_header::tests::v2_ipv4(([198, 51, 100, 4], 700), &[]);
    bytes.extend_from_slice(&getattr_root(1));
    s.write_all(&bytes).await.unwrap();
    assert_eq!(read_status(&mut s).await, 0);
    // v1 naming another client, sent in two pieces: refused as that client.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"PROXY TCP4 198.51.").await.unwrap();
    s.flush().await.unwrap();
    s.write_all(b"100.5 10.0.0.1 700 2049\r\n").await.unwrap();
    s.write_all(&getattr_root(2)).await.unwrap();
    assert_eq!(read_status(&mut s).await, ACCES);
    // LOCAL (the load balancer's own check): the load balancer's address, not allowed.
    let mut local = crate::proxy_header::tests::v2_ipv4(([198, 51, 100, 4], 700), &[]);
    local[12] = 0x20;
    local.extend_from_slice(&getattr_root(3));
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&local).await.unwrap();
    assert_eq!(read_status(&mut s).await, ACCES);
    // No header from a listed address: the connection is closed, nothing answered.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&getattr_root(4)).await.unwrap();
    let mut buf = [0u8; 4];
    let n = tokio::time::timeout(DEADLINE, s.read(&mut buf)).await.unwrap();
    assert!(matches!(n, Ok(0) | Err(_)), "closed without a reply: {n:?}");

    // Without the option, a header is just bytes: the client cannot claim an address.
    shutdown.cancel();
    tokio::time::timeout(DEADLINE, task).await.unwrap().unwrap().unwrap();
    let (addr, vfs, shutdown, task) = start().await;
    vfs.set_export_options(|s| s.allowed_clients = vec!["198.51.100.4".into()]);
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut bytes = crate::proxy_header::tests::v2_ipv4(([198, 51, 100, 4], 700), &[]);
    bytes.extend_from_slice(&getattr_root(5));
    s.write_all(&bytes).await.unwrap();
    let n = tokio::time::timeout(DEADLINE, s.read(&mut buf)).await.unwrap();
    assert!(matches!(n, Ok(0) | Err(_)), "the header is not a record: closed: {n:?}");
    shutdown.cancel();
    tokio::time::timeout(DEADLINE, task).await.unwrap().unwrap().unwrap();
}
