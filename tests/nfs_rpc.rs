//! The ONC RPC layer of `tessera dev` from outside, with raw RPC records over TCP: the
//! duplicate request cache answers a retransmission (also on a new connection) with the
//! original reply, and the embedded portmapper tells clients where NFS and MOUNT are.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

const NFS: u32 = 100_003;
const MOUNT: u32 = 100_005;
const PORTMAP: u32 = 100_000;
const NFS3ERR_NOENT: u32 = 2;

/// Big-endian XDR words and opaques, enough for the calls below.
#[derive(Default)]
struct Xdr(Vec<u8>);

impl Xdr {
    fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn opaque(&mut self, data: &[u8]) -> &mut Self {
        self.u32(data.len() as u32);
        self.0.extend_from_slice(data);
        self.0.resize(self.0.len().next_multiple_of(4), 0);
        self
    }
}

/// A call record as root (AUTH_SYS uid 0, gid 0) with `args` appended.
fn call(xid: u32, prog: u32, vers: u32, proc_num: u32, args: &[u8]) -> Vec<u8> {
    let mut cred = Xdr::default();
    cred.u32(0).opaque(b"nfs-rpc-test").u32(0).u32(0).u32(0);
    let mut x = Xdr::default();
    x.u32(xid).u32(0).u32(2).u32(prog).u32(vers).u32(proc_num);
    x.u32(1).opaque(&cred.0).u32(0).u32(0);
    x.0.extend_from_slice(args);
    x.0
}

fn connect(ip: std::net::Ipv4Addr, port: u16) -> TcpStream {
    let s = TcpStream::connect((ip, port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60))).expect("read timeout");
    s
}

/// Sends one record-marked call and reads one reply record.
fn exchange(s: &mut TcpStream, record: &[u8]) -> Vec<u8> {
    let mut framed = (0x8000_0000u32 | record.len() as u32).to_be_bytes().to_vec();
    framed.extend_from_slice(record);
    s.write_all(&framed).expect("send call");
    let mut marker = [0u8; 4];
    s.read_exact(&mut marker).expect("reply marker");
    let word = u32::from_be_bytes(marker);
    assert!(word & 0x8000_0000 != 0, "single-fragment reply");
    let mut body = vec![0u8; (word & 0x7fff_ffff) as usize];
    s.read_exact(&mut body).expect("reply body");
    body
}

fn word(b: &[u8], i: usize) -> u32 {
    u32::from_be_bytes(b[i * 4..i * 4 + 4].try_into().expect("4 bytes"))
}

/// Checks an accepted SUCCESS reply to `xid` and returns what follows its header.
fn results(reply: &[u8], xid: u32) -> &[u8] {
    assert!(reply.len() >= 24, "reply too short: {reply:02x?}");
    assert_eq!([word(reply, 0), word(reply, 1), word(reply, 2), word(reply, 5)], [xid, 1, 0, 0], "SUCCESS to {xid}");
    &reply[24..]
}

/// MNT /export: the root file handle.
fn mount_root(ip: std::net::Ipv4Addr, port: u16) -> Vec<u8> {
    let mut s = connect(ip, port);
    let mut args = Xdr::default();
    args.opaque(b"/export");
    let reply = exchange(&mut s, &call(1, MOUNT, 3, 1, &args.0));
    let r = results(&reply, 1);
    assert_eq!(word(r, 0), 0, "MNT3_OK");
    let len = word(r, 1) as usize;
    r[8..8 + len].to_vec()
}

#[test]
fn retransmitted_create_exclusive_and_remove_get_the_original_reply_on_a_new_connection() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ports = Ports::pick();
    let dev = Dev::start(&tmp.path().join("data"), ports);
    let root = mount_root(ports.ip, ports.nfs);
    let xid_base: u32 = rand::random::<u32>() & 0x7fff_0000;

    let mut create = Xdr::default();
    create.opaque(&root).opaque(b"drc-file").u32(2); // EXCLUSIVE
    create.0.extend_from_slice(b"verifier");
    let create = call(xid_base + 1, NFS, 3, 8, &create.0);
    let mut remove = Xdr::default();
    remove.opaque(&root).opaque(b"drc-file");
    let remove_args = remove.0;

    let mut s = connect(ports.ip, ports.nfs);
    let first = exchange(&mut s, &create);
    assert_eq!(word(results(&first, xid_base + 1), 0), 0, "CREATE EXCLUSIVE succeeds");
    drop(s);
    // The client lost its connection and retransmits on a new one, with the same xid.
    let mut s = connect(ports.ip, ports.nfs);
    let again = exchange(&mut s, &create);
    assert_eq!(again, first, "the retransmitted CREATE gets the original reply, byte for byte");

    let remove = call(xid_base + 2, NFS, 3, 12, &remove_args);
    let first = exchange(&mut s, &remove);
    assert_eq!(word(results(&first, xid_base + 2), 0), 0, "REMOVE succeeds");
    drop(s);
    let mut s = connect(ports.ip, ports.nfs);
    let again = exchange(&mut s, &remove);
    assert_eq!(again, first, "the retransmitted REMOVE gets the original success");

    // The cache answered, not idempotence: the same REMOVE with a new xid runs and fails.
    let reply = exchange(&mut s, &call(xid_base + 3, NFS, 3, 12, &remove_args));
    assert_eq!(word(results(&reply, xid_base + 3), 0), NFS3ERR_NOENT, "a new REMOVE finds nothing");

    let hits = dev.metrics().get("tessera_nfs_drc_hits_total").copied().unwrap_or(0.0);
    assert_eq!(hits, 2.0, "two retransmissions answered from the cache");
}

/// GETPORT of `prog`/`vers` over `prot` from the portmapper at `port`.
fn getport(s: &mut TcpStream, xid: u32, prog: u32, vers: u32, prot: u32) -> u32 {
    let mut args = Xdr::default();
    args.u32(prog).u32(vers).u32(prot).u32(0);
    let reply = exchange(s, &call(xid, PORTMAP, 2, 3, &args.0));
    word(results(&reply, xid), 0)
}

/// Runs `rpcinfo` with `args`; `None` if it is not installed.
fn rpcinfo(args: &[&str]) -> Option<(bool, String)> {
    let out = match std::process::Command::new("rpcinfo").args(args).output() {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => panic!("running rpcinfo: {e}"),
    };
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    Some((out.status.success(), text))
}

#[test]
fn embedded_portmapper_answers_getport_and_dump() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ports = Ports::pick();
    // Port 111 on this test's own loopback address when we may bind it (root), so the
    // stock `rpcinfo -p` can ask it; any free port otherwise.
    let pm_port = match std::net::TcpListener::bind((ports.ip, 111)) {
        Ok(l) => {
            drop(l);
            111
        }
        Err(_) => free_port(ports.ip),
    };
    let _dev = Dev::start_with(&tmp.path().join("data"), ports, &[("TESSERA_NFS__PORTMAP_PORT", pm_port.to_string())]);

    let mut s = connect(ports.ip, pm_port);
    let nfs = u32::from(ports.nfs);
    assert_eq!(getport(&mut s, 1, NFS, 3, 6), nfs, "NFS v3 over TCP");
    assert_eq!(getport(&mut s, 2, MOUNT, 3, 6), nfs, "MOUNT v3 over TCP, on the NFS port");
    assert_eq!(getport(&mut s, 3, NFS, 3, 17), 0, "nothing over UDP");
    assert_eq!(getport(&mut s, 4, 100_227, 3, 6), 0, "no NFS_ACL");
    assert_eq!(getport(&mut s, 5, PORTMAP, 2, 6), u32::from(pm_port));
    // Over UDP too (libtirpc and mount.nfs may ask there first).
    let udp = std::net::UdpSocket::bind((ports.ip, 0)).expect("bind UDP");
    udp.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let mut args = Xdr::default();
    args.u32(MOUNT).u32(3).u32(6).u32(0);
    udp.send_to(&call(8, PORTMAP, 2, 3, &args.0), (ports.ip, pm_port)).expect("send datagram");
    let mut buf = [0u8; 512];
    let n = udp.recv(&mut buf).expect("UDP reply");
    assert_eq!(word(results(&buf[..n], 8), 0), nfs, "GETPORT over UDP");

    let reply = exchange(&mut s, &call(6, PORTMAP, 2, 4, &[]));
    let r = results(&reply, 6);
    let mut dump = Vec::new();
    let mut i = 0;
    while word(r, i) == 1 {
        dump.push([word(r, i + 1), word(r, i + 2), word(r, i + 3), word(r, i + 4)]);
        i += 5;
    }
    let pm = u32::from(pm_port);
    assert_eq!(dump, vec![[PORTMAP, 2, 6, pm], [PORTMAP, 2, 17, pm], [NFS, 3, 6, nfs], [MOUNT, 3, 6, nfs]]);
    // rpcbind versions 3 and 4: PROG_MISMATCH 2..2, so clients fall back to version 2.
    let reply = exchange(&mut s, &call(7, PORTMAP, 4, 3, &[]));
    assert_eq!([word(&reply, 5), word(&reply, 6), word(&reply, 7)], [2, 2, 2]);

    let ip = ports.ip.to_string();
    let pm = pm_port.to_string();
    let Some((ok, text)) = rpcinfo(&["-n", &pm, "-t", &ip, "100000"]) else {
        println!("SKIPPED the rpcinfo checks: rpcinfo is not installed (Debian package rpcbind)");
        return;
    };
    assert!(ok && text.contains("program 100000 version 2 ready and waiting"), "rpcinfo -n {pm} -t: {text}");
    let (ok, text) = rpcinfo(&["-n", &ports.nfs.to_string(), "-t", &ip, "100003", "3"]).expect("rpcinfo");
    assert!(ok && text.contains("program 100003 version 3 ready and waiting"), "rpcinfo NFS NULL: {text}");
    if pm_port != 111 {
        println!("SKIPPED rpcinfo -p: port 111 could not be bound (not root?); checked with raw RPC instead");
        return;
    }
    let (ok, text) = rpcinfo(&["-p", &ip]).expect("rpcinfo");
    assert!(ok, "rpcinfo -p: {text}");
    for (prog, name) in [("100003", "nfs"), ("100005", "mountd")] {
        let line = text.lines().find(|l| l.split_whitespace().next() == Some(prog));
        let line = line.unwrap_or_else(|| panic!("{name} missing from rpcinfo -p:\n{text}"));
        let f: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(&f[1..4], &["3", "tcp", &ports.nfs.to_string()], "rpcinfo -p: {line}");
    }
    // Program lookup through the portmapper (rpcbind v4/v3 refused, v2 GETPORT used).
    let (ok, text) = rpcinfo(&["-t", &ip, "100003", "3"]).expect("rpcinfo");
    assert!(ok && text.contains("program 100003 version 3 ready and waiting"), "rpcinfo -t nfs 3: {text}");
    let (ok, text) = rpcinfo(&["-t", &ip, "100005", "3"]).expect("rpcinfo");
    assert!(ok && text.contains("program 100005 version 3 ready and waiting"), "rpcinfo -t mountd 3: {text}");
}
