//! The duplicate request cache through the dispatcher (`rpc::handle_call_with_drc`) over
//! `MemVfs`: retransmissions get the original reply, new calls run.

#![allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected input")]

use std::net::SocketAddr;

use crate::rpc::drc::{DrcKey, Lookup};
use crate::rpc::{DrcOptions, DuplicateRequestCache, handle_call_with_drc};
use crate::testing::MemVfs;
use crate::xdr::{XdrReader, XdrWriter};
use bytes::Bytes;

const NFS: u32 = 100_003;
const CREATE: u32 = 8;
const REMOVE: u32 = 12;
const COMMIT: u32 = 21;
const NFS3ERR_NOENT: u32 = 2;
const NFS3ERR_EXIST: u32 = 17;

fn call(xid: u32, proc_num: u32, stamp: u32, args: impl FnOnce(&mut XdrWriter)) -> Bytes {
    let mut w = XdrWriter::new();
    for v in [xid, 0, 2, NFS, 3, proc_num] {
        w.u32(v);
    }
    let mut cred = XdrWriter::new();
    for v in [stamp, 0] {
        cred.u32(v); // stamp, empty machine name
    }
    for v in [1000, 1000, 0] {
        cred.u32(v); // uid, gid, no groups
    }
    w.u32(1);
    w.opaque(cred.as_slice());
    w.u32(0);
    w.u32(0);
    args(&mut w);
    w.into_inner().freeze()
}

fn root(w: &mut XdrWriter) {
    w.opaque(&MemVfs::root().encode());
}

/// CREATE EXCLUSIVE `name` in the root with verifier `verf`.
fn create_exclusive(xid: u32, name: &[u8], verf: [u8; 8]) -> Bytes {
    call(xid, CREATE, 1, |w| {
        root(w);
        w.opaque(name);
        w.u32(2);
        w.fixed(&verf);
    })
}

fn remove(xid: u32, name: &[u8], stamp: u32) -> Bytes {
    call(xid, REMOVE, stamp, |w| {
        root(w);
        w.opaque(name);
    })
}

/// The reply's xid and, for an accepted SUCCESS, the NFS status (else `None`).
fn status(reply: &[u8]) -> (u32, Option<u32>) {
    let mut r = XdrReader::new(reply);
    let xid = r.u32().unwrap();
    let words: Vec<u32> = (0..4).map(|_| r.u32().unwrap()).collect();
    assert_eq!(words[..3], [1, 0, 0], "accepted reply with an AUTH_NONE verifier");
    let stat = (r.u32().unwrap() == 0).then(|| r.u32().unwrap());
    (xid, stat)
}

async fn send(vfs: &MemVfs, drc: &DuplicateRequestCache, rec: Bytes, client: &str) -> Vec<u8> {
    let client: SocketAddr = client.parse().unwrap();
    handle_call_with_drc(vfs, Some(drc), rec, Some(client)).await.expect("a reply").to_vec()
}

#[tokio::test]
async fn retransmitted_create_exclusive_and_remove_get_the_original_success() {
    let vfs = MemVfs::new();
    let drc = DuplicateRequestCache::default();
    let first = send(&vfs, &drc, create_exclusive(7, b"f", *b"verifier"), "10.0.0.1:801").await;
    assert_eq!(status(&first), (7, Some(0)));
    // Same xid from the same machine, from another port (a reconnect): the original reply.
    let again = send(&vfs, &drc, create_exclusive(7, b"f", *b"verifier"), "10.0.0.1:802").await;
    assert_eq!(again, first, "byte for byte");
    // A new xid runs again (and MemVfs refuses an existing name).
    let new = send(&vfs, &drc, create_exclusive(8, b"f", *b"verifier"), "10.0.0.1:801").await;
    assert_eq!(status(&new), (8, Some(NFS3ERR_EXIST)));

    let first = send(&vfs, &drc, remove(9, b"f", 1), "10.0.0.1:801").await;
    assert_eq!(status(&first), (9, Some(0)));
    assert!(vfs.file(b"f").is_none());
    // The AUTH_SYS stamp may differ on a retransmission: still the same call.
    let again = send(&vfs, &drc, remove(9, b"f", 2), "10.0.0.1:803").await;
    assert_eq!(again, first);
    // The cache, not idempotence, answered: a new xid gets NOENT ...
    assert_eq!(status(&send(&vfs, &drc, remove(10, b"f", 1), "10.0.0.1:801").await), (10, Some(NFS3ERR_NOENT)));
    // ... and so does the same xid from another machine.
    assert_eq!(status(&send(&vfs, &drc, remove(9, b"f", 1), "10.0.0.2:801").await), (9, Some(NFS3ERR_NOENT)));
    // Same xid, other arguments: a different call.
    assert_eq!(status(&send(&vfs, &drc, remove(9, b"g", 1), "10.0.0.1:801").await), (9, Some(NFS3ERR_NOENT)));
}

#[tokio::test]
async fn only_non_idempotent_results_are_cached() {
    let vfs = MemVfs::new();
    let drc = DuplicateRequestCache::new(DrcOptions { max_entries: 16, max_bytes: 1 << 20 });
    // GARBAGE_ARGS (a truncated REMOVE) is answered but not kept.
    let garbage = call(1, REMOVE, 1, |w| w.u32(64));
    assert_eq!(status(&send(&vfs, &drc, garbage, "10.0.0.1:1").await), (1, None));
    assert!(drc.is_empty());
    // COMMIT and reads are idempotent: not cached.
    let commit = call(2, COMMIT, 1, |w| {
        root(w);
        w.u64(0);
        w.u32(0);
    });
    let _ = send(&vfs, &drc, commit, "10.0.0.1:1").await;
    let getattr = call(3, 1, 1, root);
    let _ = send(&vfs, &drc, getattr, "10.0.0.1:1").await;
    assert!(drc.is_empty());
    // Without a known client address nothing is cached either.
    let rec = remove(4, b"nope", 1);
    assert!(handle_call_with_drc(&vfs, Some(&drc), rec, None).await.is_some());
    assert!(drc.is_empty());
    // An error result is a result: kept, like a success.
    assert_eq!(status(&send(&vfs, &drc, remove(5, b"nope", 1), "10.0.0.1:1").await), (5, Some(NFS3ERR_NOENT)));
    assert_eq!(drc.len(), 1);
}

#[tokio::test]
async fn the_cache_is_bounded() {
    let vfs = MemVfs::new();
    let drc = DuplicateRequestCache::new(DrcOptions { max_entries: 8, max_bytes: 4096 });
    for xid in 0..100u32 {
        let name = format!("n{xid}");
        let _ = send(&vfs, &drc, create_exclusive(xid, name.as_bytes(), [0; 8]), "10.0.0.1:1").await;
        assert!(drc.len() <= 8 && drc.bytes() <= 4096);
    }
}

#[tokio::test]
async fn a_retransmission_of_a_call_in_progress_waits_and_does_not_run_it() {
    let vfs = MemVfs::new();
    let drc = DuplicateRequestCache::default();
    let _ = send(&vfs, &drc, create_exclusive(1, b"f", [0; 8]), "10.0.0.1:1").await;
    // The original REMOVE is "still running": its entry is in the cache, in progress.
    let rec = remove(2, b"f", 1);
    let header = crate::rpc::message::decode_call(&rec).unwrap();
    let key = DrcKey::new(2, "10.0.0.1".parse().unwrap(), [NFS, 3, REMOVE], &header.cred, &rec[header.args_offset..]);
    let Lookup::New(original) = drc.lookup(key) else { panic!("a new entry") };

    let retransmission = send(&vfs, &drc, rec, "10.0.0.1:2");
    tokio::pin!(retransmission);
    let waited = tokio::time::timeout(std::time::Duration::from_millis(200), &mut retransmission).await;
    assert!(waited.is_err(), "the retransmission waits for the original");
    assert!(vfs.file(b"f").is_some(), "and does not run the REMOVE itself");
    original.complete(&Bytes::from_static(b"\0\0\0\x02the original reply.."), true);
    assert_eq!(retransmission.await, b"\0\0\0\x02the original reply..");
}
