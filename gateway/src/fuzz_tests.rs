//! Property-based fuzzing of the whole sans-IO front end: random and mutated RPC records,
//! record-marked (one or more fragments, sometimes with broken markers), through
//! `rpc::record::RecordDecoder`, then `rpc::handle_call_with_drc` over `MemVfs` with a
//! small duplicate request cache, or the embedded portmapper.
//!
//! Every case starts from a valid call of one of the 22 NFSv3 procedures, the 6 MOUNT
//! procedures or the portmapper (AUTH_NONE or AUTH_SYS), or from random bytes, and applies
//! up to eight mutations (bytes, whole words with boundary values, truncation, insertion,
//! deletion, appended garbage). Properties:
//! - nothing panics;
//! - a record gets a reply exactly when it starts with an xid and CALL, and the reply is a
//!   well-formed RPC reply to that xid (accepted: verifier, a known accept_stat with exactly
//!   its body, an NFS status from RFC 1813 first; denied: RPC_MISMATCH or AUTH_ERROR with
//!   exactly their bodies), a multiple of four bytes, and no larger than the record limit;
//! - a retransmission of a cached procedure with an NFS result gets the same bytes;
//! - record marking: every record handed out fits the limit, and the decoder's buffer never
//!   grows past what a checked marker allows (a lying marker is refused from its 4 bytes).
//!
//! No allocation is larger than the record limit because every decoder reads through
//! `XdrReader`, which lends slices of the input and checks each length against the bytes
//! present before use, and `RecordDecoder` reserves only what a marker within the limit
//! claims; the reply and buffer size checks here keep both true.
//!
//! Count: `TESSERA_FUZZ_CALLS` (default 100 000). Long run (README, "Tests"):
//! `TESSERA_FUZZ_CALLS=10000000 cargo nextest run -p gateway --release fuzz_tests`.

#![allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected input")]

use std::sync::Mutex;
use std::time::Instant;

use bytes::Bytes;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use proto::FileHandle;

use crate::portmap::Portmap;
use crate::rpc::record::{RecordDecoder, marker};
use crate::rpc::{DrcOptions, DuplicateRequestCache, drc, handle_call_with_drc};
use crate::server::DEFAULT_MAX_RECORD_BYTES;
use crate::testing::{MemVfs, SHARE_ID};
use crate::xdr::{XdrReader, XdrWriter};

const NFS: u32 = 100_003;
const MOUNT: u32 = 100_005;
const PORTMAP: u32 = 100_000;
/// Calls per fresh filesystem (keeps directories small, so per-call cost stays flat).
const CALLS_PER_VFS: u32 = 2_000;
const NFSSTAT3: [u32; 30] = [
    0, 1, 2, 5, 6, 13, 17, 18, 19, 20, 21, 22, 27, 28, 30, 31, 63, 66, 69, 70, 71, 10001, 10002, 10003, 10004,
    10005, 10006, 10007, 10008, 10008,
];
/// Word values that tend to break length and range checks.
const INTERESTING: [u32; 12] =
    [0, 1, 2, 3, 4, 255, 256, 400, 1024, 0x7fff_ffff, 0x8000_0000, 0xffff_ffff];

fn handle(ino: u64) -> FileHandle {
    FileHandle { share_id: SHARE_ID, ino, generation: 1 }
}

// Inodes of the fixture every fresh MemVfs gets: file "f", directory "d", symlink "l".
const ROOT: u64 = 1;
const FILE: u64 = 2;
const DIR: u64 = 3;
const LINK: u64 = 4;

fn fh(w: &mut XdrWriter, ino: u64) {
    w.opaque(&handle(ino).encode());
}

fn dirop(w: &mut XdrWriter, dir: u64, name: &[u8]) {
    fh(w, dir);
    w.opaque(name);
}

/// sattr3 setting mode, uid, size and both times (server time / client time).
fn sattr(w: &mut XdrWriter, size: Option<u64>) {
    w.bool(true);
    w.u32(0o644);
    w.bool(true);
    w.u32(1000);
    w.bool(false);
    match size {
        Some(s) => {
            w.bool(true);
            w.u64(s);
        }
        None => w.bool(false),
    }
    w.u32(1); // atime: SET_TO_SERVER_TIME
    w.u32(2); // mtime: SET_TO_CLIENT_TIME
    w.u32(1_700_000_000);
    w.u32(5);
}

fn call(xid: u32, prog: u32, vers: u32, proc_num: u32, sys: bool, args: impl FnOnce(&mut XdrWriter)) -> Vec<u8> {
    let mut w = XdrWriter::new();
    for v in [xid, 0, 2, prog, vers, proc_num] {
        w.u32(v);
    }
    if sys {
        let mut c = XdrWriter::new();
        c.u32(7);
        c.opaque(b"fuzz-host");
        c.u32(1000);
        c.u32(1000);
        c.u32(2);
        c.u32(10);
        c.u32(20);
        w.u32(1);
        w.opaque(c.as_slice());
    } else {
        w.u32(0);
        w.u32(0);
    }
    w.u32(0);
    w.u32(0);
    args(&mut w);
    w.into_inner().to_vec()
}

/// Arguments of a valid call of NFSv3 procedure `p`.
fn nfs_args(p: u32, w: &mut XdrWriter) {
    match p {
        0 => {}
        1 | 5 | 18 | 19 | 20 => fh(w, if p == 5 { LINK } else { FILE }),
        2 => {
            fh(w, FILE);
            sattr(w, Some(3));
            w.bool(false);
        }
        3 | 12 => dirop(w, ROOT, b"f"),
        4 => {
            fh(w, FILE);
            w.u32(0x3f);
        }
        6 | 21 => {
            fh(w, FILE);
            w.u64(0);
            w.u32(64);
        }
        7 => {
            fh(w, FILE);
            w.u64(2);
            w.u32(16);
            w.u32(1);
            w.opaque(b"0123456789abcdef");
        }
        8 => {
            dirop(w, DIR, b"new");
            w.u32(0);
            sattr(w, Some(0));
        }
        9 => {
            dirop(w, DIR, b"sub");
            sattr(w, None);
        }
        10 => {
            dirop(w, DIR, b"sym");
            sattr(w, None);
            w.opaque(b"../f");
        }
        11 => {
            dirop(w, DIR, b"dev");
            w.u32(4); // NF3CHR
            sattr(w, None);
            w.u32(1);
            w.u32(3);
        }
        13 => dirop(w, ROOT, b"d"),
        14 => {
            dirop(w, ROOT, b"f");
            dirop(w, DIR, b"g");
        }
        15 => {
            fh(w, FILE);
            dirop(w, DIR, b"hard");
        }
        16 | 17 => {
            fh(w, ROOT);
            w.u64(0);
            w.u64(0);
            if p == 17 {
                w.u32(512);
            }
            w.u32(4096);
        }
        _ => {}
    }
}

/// Valid calls to start from: every NFSv3, MOUNT and portmapper procedure.
fn bases() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for sys in [false, true] {
        for p in 0..22 {
            out.push(call(0x1000 + p, NFS, 3, p, sys, |w| nfs_args(p, w)));
        }
        for p in 0..6 {
            out.push(call(0x2000 + p, MOUNT, 3, p, sys, |w| {
                if p == 1 || p == 3 {
                    w.opaque(b"/export");
                }
            }));
        }
    }
    // The CREATE EXCLUSIVE shape too.
    out.push(call(0x1100, NFS, 3, 8, true, |w| {
        dirop(w, ROOT, b"x");
        w.u32(2);
        w.fixed(b"verifier");
    }));
    for p in 0..6 {
        out.push(call(0x3000 + p, PORTMAP, 2, p, false, |w| {
            for v in [NFS, 3, 6, 0] {
                w.u32(v);
            }
        }));
    }
    out
}

#[derive(Clone, Debug)]
enum Mutation {
    Byte { at: usize, value: u8 },
    Word { at: usize, value: u32 },
    Interesting { at: usize, which: usize },
    Truncate { to: usize },
    Insert { at: usize, bytes: Vec<u8> },
    Delete { at: usize, len: usize },
    Append { bytes: Vec<u8> },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let at = 0usize..1024;
    prop_oneof![
        3 => (at.clone(), any::<u8>()).prop_map(|(at, value)| Mutation::Byte { at, value }),
        2 => (at.clone(), any::<u32>()).prop_map(|(at, value)| Mutation::Word { at, value }),
        3 => (at.clone(), 0..INTERESTING.len()).prop_map(|(at, which)| Mutation::Interesting { at, which }),
        1 => (0usize..1024).prop_map(|to| Mutation::Truncate { to }),
        1 => (at.clone(), proptest::collection::vec(any::<u8>(), 1..9)).prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        1 => (at, 1usize..9).prop_map(|(at, len)| Mutation::Delete { at, len }),
        1 => proptest::collection::vec(any::<u8>(), 1..33).prop_map(|bytes| Mutation::Append { bytes }),
    ]
}

fn apply(record: &mut Vec<u8>, m: &Mutation) {
    let len = record.len().max(1);
    match m {
        Mutation::Byte { at, value } => {
            if let Some(b) = record.get_mut(at % len) {
                *b = *value;
            }
        }
        Mutation::Word { at, value } => set_word(record, *at % len, *value),
        Mutation::Interesting { at, which } => set_word(record, *at % len, INTERESTING[*which]),
        Mutation::Truncate { to } => record.truncate(*to % len),
        Mutation::Insert { at, bytes } => {
            let at = at % len.min(record.len() + 1).max(1);
            let at = at.min(record.len());
            record.splice(at..at, bytes.iter().copied());
        }
        Mutation::Delete { at, len: n } => {
            let at = (at % len).min(record.len());
            let end = (at + n).min(record.len());
            record.drain(at..end);
        }
        Mutation::Append { bytes } => record.extend_from_slice(bytes),
    }
}

fn set_word(record: &mut [u8], at: usize, value: u32) {
    let at = at & !3;
    if let Some(w) = record.get_mut(at..at + 4) {
        w.copy_from_slice(&value.to_be_bytes());
    }
}

#[derive(Clone, Debug)]
struct Case {
    /// Index into `bases()`, or `None` for random bytes.
    base: Option<usize>,
    random: Vec<u8>,
    mutations: Vec<Mutation>,
    /// Fragment split points and read chunking of the record marking.
    framing: u64,
    /// Corrupt one fragment marker.
    bad_marker: Option<u32>,
    /// Send the record twice (a retransmission).
    repeat: bool,
}

fn case(n_bases: usize) -> impl Strategy<Value = Case> {
    (
        prop_oneof![9 => (0..n_bases).prop_map(Some), 1 => Just(None)],
        proptest::collection::vec(any::<u8>(), 0..96),
        prop_oneof![3 => proptest::collection::vec(mutation(), 0..3), 1 => proptest::collection::vec(mutation(), 3..9)],
        any::<u64>(),
        prop_oneof![15 => Just(None), 1 => any::<u32>().prop_map(Some)],
        prop_oneof![7 => Just(false), 1 => Just(true)],
    )
        .prop_map(|(base, random, mutations, framing, bad_marker, repeat)| Case {
            base,
            random,
            mutations,
            framing,
            bad_marker,
            repeat,
        })
}

/// A fresh filesystem with the fixture: file "f" (with data), directory "d", symlink "l".
fn fresh_vfs() -> MemVfs {
    let vfs = MemVfs::new();
    for (p, args) in [
        (8u32, Box::new(|w: &mut XdrWriter| {
            dirop(w, ROOT, b"f");
            w.u32(0);
            sattr(w, None);
        }) as Box<dyn FnOnce(&mut XdrWriter)>),
        (9, Box::new(|w: &mut XdrWriter| {
            dirop(w, ROOT, b"d");
            sattr(w, None);
        })),
        (10, Box::new(|w: &mut XdrWriter| {
            dirop(w, ROOT, b"l");
            sattr(w, None);
            w.opaque(b"f");
        })),
        (7, Box::new(|w: &mut XdrWriter| {
            fh(w, FILE);
            w.u64(0);
            w.u32(8);
            w.u32(2);
            w.opaque(b"contents");
        })),
    ] {
        let rec = Bytes::from(call(1, NFS, 3, p, false, args));
        let reply = futures::executor::block_on(crate::rpc::handle_record(&vfs, rec)).unwrap().to_vec();
        assert_eq!(&reply[24..28], &[0, 0, 0, 0], "fixture call {p} succeeds");
    }
    assert!(vfs.file(b"f").is_some());
    vfs
}

/// Frames `record` into one to three fragments (a corrupt marker if asked), feeds it to a
/// decoder in chunks, and returns the record it yields (`None` if refused or incomplete).
fn through_record_marking(record: &[u8], framing: u64, bad_marker: Option<u32>, limit: u32) -> Result<Option<Bytes>, TestCaseError> {
    let pieces = 1 + (framing % 3) as usize;
    let mut cuts: Vec<usize> = (1..pieces).map(|i| ((framing >> (8 * i)) as usize) % (record.len() + 1)).collect();
    cuts.sort_unstable();
    let mut stream = Vec::with_capacity(record.len() + 12);
    let mut start = 0;
    for (i, end) in cuts.iter().copied().chain([record.len()]).enumerate() {
        let last = i + 1 == pieces;
        let mut word = u32::from_be_bytes(marker(end - start));
        if !last {
            word &= 0x7fff_ffff;
        }
        if i == 0
            && let Some(bad) = bad_marker
        {
            word = bad;
        }
        stream.extend_from_slice(&word.to_be_bytes());
        stream.extend_from_slice(&record[start..end]);
        start = end;
    }
    let chunk = 1 + ((framing >> 32) as usize % 64);
    let chunk = if framing & (1 << 40) == 0 { stream.len().max(1) } else { chunk };
    let mut d = RecordDecoder::new(limit);
    let mut got = None;
    let cap_bound = 2 * (limit as usize + 4).max(64 * 1024);
    for piece in stream.chunks(chunk) {
        d.push(piece);
        loop {
            match d.next_record() {
                Ok(Some(r)) => {
                    prop_assert!(r.len() <= limit as usize, "record of {} over the limit", r.len());
                    got.get_or_insert(r);
                }
                Ok(None) => break,
                Err(_) => return Ok(None),
            }
        }
        prop_assert!(d.read_buffer().capacity() <= cap_bound, "decoder buffer grew to {}", d.read_buffer().capacity());
    }
    if bad_marker.is_none() {
        prop_assert_eq!(got.as_deref(), Some(record), "a well-framed record comes out whole");
    }
    Ok(got)
}

/// Checks that `reply` is a well-formed reply to `record` (see the module doc).
fn check_reply(record: &[u8], reply: Option<&[u8]>, limit: usize) -> Result<(), TestCaseError> {
    let word = |b: &[u8], i: usize| b.get(i * 4..i * 4 + 4).map(|w| u32::from_be_bytes(w.try_into().unwrap()));
    let is_call = record.len() >= 8 && word(record, 1) == Some(0);
    let Some(reply) = reply else {
        prop_assert!(!is_call, "a call got no reply");
        return Ok(());
    };
    prop_assert!(is_call, "a non-call got a reply");
    prop_assert!(reply.len() % 4 == 0 && reply.len() <= limit, "reply of {} bytes", reply.len());
    let mut r = XdrReader::new(reply);
    prop_assert_eq!(r.u32().ok(), word(record, 0), "xid");
    prop_assert_eq!(r.u32().ok(), Some(1), "REPLY");
    match r.u32().ok() {
        Some(0) => {
            let flavor = r.u32().ok();
            prop_assert!(flavor == Some(0) && r.opaque(400).is_ok(), "AUTH_NONE verifier");
            match r.u32().ok() {
                Some(0) => {
                    // SUCCESS: the program's results. NFS (not NULL) starts with an nfsstat3.
                    let (prog, proc_num) = (word(record, 3), word(record, 5));
                    if prog == Some(NFS) && proc_num != Some(0) {
                        let status = r.u32().ok();
                        prop_assert!(status.is_some_and(|s| NFSSTAT3.contains(&s)), "nfsstat3 {status:?}");
                    }
                }
                Some(2) => {
                    let (low, high) = (r.u32().ok(), r.u32().ok());
                    prop_assert!(low.is_some() && low <= high && r.remaining() == 0, "PROG_MISMATCH body");
                }
                Some(1 | 3 | 4 | 5) => prop_assert_eq!(r.remaining(), 0, "no body after {}", word(reply, 5).unwrap()),
                other => prop_assert!(false, "accept_stat {other:?}"),
            }
        }
        Some(1) => match r.u32().ok() {
            Some(0) => prop_assert!(r.u32().is_ok() && r.u32().is_ok() && r.remaining() == 0, "RPC_MISMATCH body"),
            Some(1) => {
                let stat = r.u32().ok();
                prop_assert!(stat.is_some_and(|s| (1..=7).contains(&s)) && r.remaining() == 0, "AUTH_ERROR {stat:?}");
            }
            other => prop_assert!(false, "reject_stat {other:?}"),
        },
        other => prop_assert!(false, "reply_stat {other:?}"),
    }
    Ok(())
}

/// What the cases exercised (printed, and checked to be spread out).
#[derive(Debug, Default)]
struct Tally {
    refused_by_record_marking: u32,
    dropped: u32,
    denied: u32,
    /// Accepted replies by accept_stat (0..=5).
    accepted: [u32; 6],
    /// SUCCESS replies of NFS procedures (not NULL) whose status is NFS3_OK.
    nfs_ok: u32,
    drc_replays_checked: u32,
}

struct World {
    vfs: MemVfs,
    calls: u32,
    tally: Tally,
    drc: DuplicateRequestCache,
    portmap: Portmap,
}

fn run_case(world: &Mutex<World>, bases: &[Vec<u8>], c: &Case) -> Result<(), TestCaseError> {
    let limit = DEFAULT_MAX_RECORD_BYTES;
    let mut record = match c.base {
        Some(i) => bases[i].clone(),
        None => c.random.clone(),
    };
    for m in &c.mutations {
        apply(&mut record, m);
    }
    let framed = through_record_marking(&record, c.framing, c.bad_marker, limit)?;
    let mut world = world.lock().unwrap();
    let Some(rec) = framed else {
        world.tally.refused_by_record_marking += 1;
        return Ok(());
    };

    world.calls += 1;
    if world.calls.is_multiple_of(CALLS_PER_VFS) {
        world.vfs = fresh_vfs();
    }
    let is_portmap = record.len() >= 16 && record[12..16] == PORTMAP.to_be_bytes();
    let client = Some(std::net::SocketAddr::from(([10, 0, 0, 1], 700)));
    let send = |rec: Bytes| -> Option<Vec<u8>> {
        if is_portmap {
            world.portmap.handle_record(&rec).map(|e| e.to_vec())
        } else {
            futures::executor::block_on(handle_call_with_drc(&world.vfs, Some(&world.drc), rec, client))
                .map(|e| e.to_vec())
        }
    };
    let first = send(rec.clone());
    check_reply(&record, first.as_deref(), limit as usize)?;
    let word = |b: &[u8], i: usize| b.get(i * 4..i * 4 + 4).map(|w| u32::from_be_bytes(w.try_into().unwrap()));
    let tally = match first.as_deref() {
        None => Tally { dropped: 1, ..Tally::default() },
        Some(f) if word(f, 2) == Some(1) => Tally { denied: 1, ..Tally::default() },
        Some(f) => {
            let mut t = Tally::default();
            let stat = word(f, 5).unwrap_or(0) as usize;
            t.accepted[stat.min(5)] = 1;
            let nfs_call = word(&record, 3) == Some(NFS) && word(&record, 5) != Some(0);
            t.nfs_ok = u32::from(stat == 0 && nfs_call && word(f, 6) == Some(0));
            t
        }
    };
    if c.repeat {
        let again = send(rec);
        check_reply(&record, again.as_deref(), limit as usize)?;
        let cached = !is_portmap
            && record.len() >= 24
            && record[12..20] == [0, 1, 0x86, 0xa3, 0, 0, 0, 3]
            && drc::caches_nfs3(u32::from_be_bytes(record[20..24].try_into().unwrap()));
        let had_result = first.as_ref().is_some_and(|f| f.len() >= 28 && f[8..12] == [0; 4] && f[20..24] == [0; 4]);
        if cached && had_result {
            prop_assert_eq!(&first, &again, "a retransmission gets the original reply");
            world.tally.drc_replays_checked += 1;
        }
    }
    let t = &mut world.tally;
    t.dropped += tally.dropped;
    t.denied += tally.denied;
    t.nfs_ok += tally.nfs_ok;
    for (sum, one) in t.accepted.iter_mut().zip(tally.accepted) {
        *sum += one;
    }
    Ok(())
}

#[test]
fn random_and_mutated_calls_get_well_formed_replies() {
    let calls: u32 = std::env::var("TESSERA_FUZZ_CALLS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let bases = bases();
    let world = Mutex::new(World {
        vfs: fresh_vfs(),
        calls: 0,
        tally: Tally::default(),
        drc: DuplicateRequestCache::new(DrcOptions { max_entries: 64, max_bytes: 64 * 1024 }),
        portmap: Portmap::new(2049, 111),
    });
    let config = Config { cases: calls, failure_persistence: None, ..Config::default() };
    let mut runner = TestRunner::new(config);
    let start = Instant::now();
    let result = runner.run(&case(bases.len()), |c| run_case(&world, &bases, &c));
    let secs = start.elapsed().as_secs_f64();
    println!("{calls} fuzzed calls in {secs:.1} s ({:.0} calls/s)", f64::from(calls) / secs);
    if let Err(e) = result {
        panic!("fuzzing found a failing call: {e}");
    }
    let world = world.lock().unwrap();
    println!("{:?}", world.tally);
    assert!(world.drc.len() <= 64 && world.drc.bytes() <= 64 * 1024);
    if calls >= 10_000 {
        // The mix reaches the procedures, not only the envelope checks.
        let t = &world.tally;
        assert!(t.nfs_ok > calls / 20 && t.accepted[4] > calls / 50 && t.denied > 0 && t.drc_replays_checked > 0, "{t:?}");
    }
}
