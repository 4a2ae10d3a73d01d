//! An embedded portmapper (RFC 1833 §3: program 100000, version 2), sans-IO.
//!
//! Owns: answering NULL, GETPORT and DUMP from a fixed table — NFS 100003 v3 and MOUNT
//! 100005 v3 on TCP at the NFS port, and the portmapper itself on TCP and UDP at its own
//! port — so `mount -t nfs host:/export /mnt` finds both programs without
//! `port=`/`mountport=`. The portmapper answers over UDP too because libtirpc (`rpcinfo`)
//! and `mount.nfs` may ask it over UDP first; an ICMP "port unreachable" would end their
//! search, a port-0 answer makes them try TCP. NFS and MOUNT are not served over UDP:
//! GETPORT for UDP (or any unknown mapping) answers port 0, "not registered". SET and UNSET answer `false`
//! (nobody may register here), CALLIT (an amplification vector) is PROC_UNAVAIL. Other
//! versions (rpcbind 3 and 4) get PROG_MISMATCH 2..2, upon which clients fall back to
//! version 2.
//!
//! Must never: keep state between calls, or touch a socket (that is `server::portmap`).
//! A record is a TCP record (record marking removed) or a whole UDP datagram.

use crate::rpc::message::{self, AcceptStat};
use crate::xdr::{Encoded, XdrReader, XdrWriter};
use crate::{mount, nfs3};

pub const PROGRAM: u32 = 100_000;
pub const VERSION: u32 = 2;
pub const IPPROTO_TCP: u32 = 6;
pub const IPPROTO_UDP: u32 = 17;
/// Largest record the portmapper listener accepts (its calls are a few dozen bytes).
pub const MAX_RECORD_BYTES: u32 = 8 * 1024;

const PMAPPROC_NULL: u32 = 0;
const PMAPPROC_SET: u32 = 1;
const PMAPPROC_UNSET: u32 = 2;
const PMAPPROC_GETPORT: u32 = 3;
const PMAPPROC_DUMP: u32 = 4;

/// One row of the table: `struct mapping` of RFC 1833.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub prog: u32,
    pub vers: u32,
    pub prot: u32,
    pub port: u32,
}

/// The programs this gateway serves and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Portmap {
    mappings: Vec<Mapping>,
}

impl Portmap {
    /// NFS and MOUNT v3 on TCP `nfs_port`, and the portmapper itself on TCP and UDP
    /// `own_port`.
    pub fn new(nfs_port: u16, own_port: u16) -> Portmap {
        let map = |prog, vers, prot, port: u16| Mapping { prog, vers, prot, port: u32::from(port) };
        Portmap {
            mappings: vec![
                map(PROGRAM, VERSION, IPPROTO_TCP, own_port),
                map(PROGRAM, VERSION, IPPROTO_UDP, own_port),
                map(nfs3::PROGRAM, nfs3::VERSION, IPPROTO_TCP, nfs_port),
                map(mount::PROGRAM, mount::VERSION, IPPROTO_TCP, nfs_port),
            ],
        }
    }

    pub fn mappings(&self) -> &[Mapping] {
        &self.mappings
    }

    /// The port of `prog` over `prot`, 0 if not served. Like rpcbind's portmapper, the
    /// version only chooses among several mappings of the program (exact match first):
    /// `rpcinfo` asks with version 0 and then learns the versions from PROG_MISMATCH.
    pub fn getport(&self, prog: u32, vers: u32, prot: u32) -> u32 {
        let mut of_prog = self.mappings.iter().filter(|m| (m.prog, m.prot) == (prog, prot));
        let first = of_prog.clone().next();
        of_prog.find(|m| m.vers == vers).or(first).map_or(0, |m| m.port)
    }

    /// Answers one RPC record (without record marking); `None` if it gets no reply.
    pub fn handle_record(&self, record: &[u8]) -> Option<Encoded> {
        let header = match message::decode_call(record) {
            Ok(h) => h,
            Err(rejection) => return message::rejection_reply(&rejection).map(XdrWriter::finish),
        };
        let mut w = XdrWriter::with_capacity(128);
        if header.prog != PROGRAM {
            message::write_accepted(&mut w, header.xid, AcceptStat::ProgUnavail);
            return Some(w.finish());
        }
        if header.vers != VERSION {
            message::write_accepted(&mut w, header.xid, AcceptStat::ProgMismatch { low: VERSION, high: VERSION });
            return Some(w.finish());
        }
        let args = record.get(header.args_offset..).unwrap_or(&[]);
        let stat = match header.proc_num {
            PMAPPROC_NULL => AcceptStat::Success,
            PMAPPROC_SET | PMAPPROC_UNSET | PMAPPROC_GETPORT => match decode_mapping(args) {
                Some(_) if header.proc_num != PMAPPROC_GETPORT => {
                    message::write_accepted(&mut w, header.xid, AcceptStat::Success);
                    w.bool(false);
                    return Some(w.finish());
                }
                Some(m) => {
                    message::write_accepted(&mut w, header.xid, AcceptStat::Success);
                    w.u32(self.getport(m.prog, m.vers, m.prot));
                    return Some(w.finish());
                }
                None => AcceptStat::GarbageArgs,
            },
            PMAPPROC_DUMP => {
                message::write_accepted(&mut w, header.xid, AcceptStat::Success);
                for m in &self.mappings {
                    w.bool(true);
                    for v in [m.prog, m.vers, m.prot, m.port] {
                        w.u32(v);
                    }
                }
                w.bool(false);
                return Some(w.finish());
            }
            _ => AcceptStat::ProcUnavail,
        };
        message::write_accepted(&mut w, header.xid, stat);
        Some(w.finish())
    }
}

/// Decodes a `struct mapping` argument; `None` if it is not exactly one.
pub fn decode_mapping(args: &[u8]) -> Option<Mapping> {
    let mut r = XdrReader::new(args);
    let m = Mapping { prog: r.u32().ok()?, vers: r.u32().ok()?, prot: r.u32().ok()?, port: r.u32().ok()? };
    (r.remaining() == 0).then_some(m)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected input")]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn call(xid: u32, vers: u32, proc_num: u32, args: &[u32]) -> Vec<u8> {
        let mut w = XdrWriter::new();
        for v in [xid, 0, 2, PROGRAM, vers, proc_num, 0, 0, 0, 0] {
            w.u32(v);
        }
        for v in args {
            w.u32(*v);
        }
        w.into_inner().to_vec()
    }

    fn words(bytes: &[u8]) -> Vec<u32> {
        bytes.chunks(4).map(|c| u32::from_be_bytes(c.try_into().unwrap())).collect()
    }

    /// Sends `record` to a portmapper for NFS port 2049 at port 111 and compares the
    /// reply's words after the accepted header (xid, REPLY, ACCEPTED, verifier) with `expected`.
    fn check(record: &[u8], expected: &[u32]) {
        let reply = Portmap::new(2049, 111).handle_record(record).unwrap().to_vec();
        let w = words(&reply);
        assert_eq!(w[..5], [words(record)[0], 1, 0, 0, 0], "accepted reply header");
        assert_eq!(&w[5..], expected);
    }

    #[test]
    fn procedures() {
        check(&call(1, 2, 0, &[]), &[0]);
        check(&call(2, 2, 3, &[100_003, 3, IPPROTO_TCP, 0]), &[0, 2049]);
        check(&call(3, 2, 3, &[100_005, 3, IPPROTO_TCP, 0]), &[0, 2049]);
        check(&call(4, 2, 3, &[100_005, 3, IPPROTO_UDP, 0]), &[0, 0]);
        check(&call(5, 2, 3, &[100_005, 1, IPPROTO_TCP, 0]), &[0, 2049]); // any version
        check(&call(5, 2, 3, &[100_227, 3, IPPROTO_TCP, 0]), &[0, 0]);
        check(&call(6, 2, 3, &[100_000, 2, IPPROTO_TCP, 0]), &[0, 111]);
        check(&call(7, 2, 4, &[]), &[
            0, 1, 100_000, 2, 6, 111, 1, 100_000, 2, 17, 111, 1, 100_003, 3, 6, 2049, 1, 100_005, 3, 6, 2049, 0,
        ]);
        check(&call(8, 2, 1, &[100_003, 3, IPPROTO_TCP, 9]), &[0, 0]);
        check(&call(9, 2, 2, &[100_003, 3, IPPROTO_TCP, 9]), &[0, 0]);
        check(&call(10, 2, 5, &[100_003, 3, 0, 0]), &[3]);
        check(&call(11, 2, 6, &[]), &[3]);
        check(&call(12, 4, 3, &[]), &[2, 2, 2]);
        check(&call(13, 3, 0, &[]), &[2, 2, 2]);
        check(&call(14, 2, 3, &[100_003, 3, IPPROTO_TCP]), &[4]);
        check(&call(15, 2, 3, &[100_003, 3, IPPROTO_TCP, 0, 0]), &[4]);
        let mut other = call(16, 3, 0, &[]);
        other[12..16].copy_from_slice(&100_003u32.to_be_bytes());
        check(&other, &[1]);
    }

    #[test]
    fn denials_and_drops() {
        let pm = Portmap::new(2049, 111);
        let mut gss = call(1, 2, 0, &[]);
        gss[24..28].copy_from_slice(&6u32.to_be_bytes());
        assert_eq!(words(&pm.handle_record(&gss).unwrap().to_vec()), [1, 1, 1, 1, 1], "AUTH_ERROR BADCRED");
        assert!(pm.handle_record(&[0, 0, 0, 1]).is_none());
    }

    proptest! {
        #[test]
        fn random_and_mutated_records_get_well_formed_replies(
            base in 0usize..4,
            idx in 0usize..64,
            val in any::<u8>(),
            cut in 0usize..80,
            noise in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut record = [
                call(7, 2, 3, &[100_003, 3, 6, 0]),
                call(7, 2, 4, &[]),
                call(7, 2, 0, &[]),
                noise,
            ][base].clone();
            if let Some(b) = record.get_mut(idx) { *b = val; }
            record.truncate(cut);
            if let Some(reply) = Portmap::new(2049, 111).handle_record(&record) {
                let w = words(&reply.to_vec());
                prop_assert_eq!(&w[..2], &[u32::from_be_bytes(record[..4].try_into().unwrap()), 1]);
            }
        }
    }
}
