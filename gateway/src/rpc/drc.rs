//! The duplicate request cache (DRC): a retransmitted non-idempotent NFSv3 call gets the
//! reply of the original instead of running again.
//!
//! Owns: one cache per gateway process, shared by every connection (a client that lost its
//! connection retransmits on a new one, usually from a new source port). An entry is keyed
//! by [`DrcKey`]: the xid, the client's IP address (not its port) and a 128-bit BLAKE3
//! checksum of the call's program, version, procedure, caller identity and argument
//! bytes. The AUTH_SYS stamp and machine name are left out of the checksum (a client may
//! re-marshal them on retransmission; the IP address stands for the machine), so are the
//! verifier and everything before the xid. Two different calls from one IP address collide
//! only if they have the same xid *and* the same arguments and identity.
//!
//! Cached procedures ([`caches_nfs3`], a table keyed by procedure number): SETATTR, WRITE,
//! CREATE, MKDIR, SYMLINK, MKNOD, REMOVE, RMDIR, RENAME, LINK — the ones whose second run
//! answers differently from the first (EXIST, NOENT, a second ctime change, a moved
//! mtime). COMMIT is not cached: running it again makes the same data stable and returns
//! the same verifier. Reads and lookups are idempotent and never cached. MOUNT is not
//! cached (MNT and UMNT keep no state).
//!
//! In-progress policy: a retransmission that arrives while the original still runs does
//! not run it again; it *waits* (at most [`IN_PROGRESS_WAIT`]) for the original's reply
//! and answers with it. Waiting matters after a reconnect: the original's reply went to a
//! closed connection, and a dropped retransmission would cost the client another full
//! timeout (60 s for Linux over TCP). When the wait runs out, or the original ends without
//! a cacheable reply, the retransmission is dropped (no reply); the client retransmits.
//!
//! Only replies with an NFS result (status OK or an error status) are kept; GARBAGE_ARGS,
//! PROC_UNAVAIL and SYSTEM_ERR replies are handed to waiters but not kept, so a later
//! retransmission runs again (a call that could not be decoded changed nothing).
//!
//! Bounds: at most `max_entries` entries and `max_bytes` bytes (each entry counts its reply
//! plus [`ENTRY_OVERHEAD`]); the oldest entry is evicted first (FIFO: an entry's age runs
//! from the original call, and retransmissions come within seconds to minutes of it). A
//! reply larger than `max_bytes` on its own is not kept.
//!
//! Must never: run a cached procedure twice for one key while the first run is in
//! progress, hold its lock across an await, hand a reply to a different client address,
//! or grow past its bounds.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;

use crate::rpc::auth::Credentials;

/// Default `nfs.drc_entries`.
pub const DEFAULT_ENTRIES: usize = 4096;
/// Default `nfs.drc_bytes` (16 MiB).
pub const DEFAULT_BYTES: usize = 16 << 20;
/// Longest a retransmission waits for the original call's reply before it is dropped.
pub const IN_PROGRESS_WAIT: Duration = Duration::from_secs(30);
/// Bytes an entry is charged besides its reply (key, bookkeeping, map slots).
pub const ENTRY_OVERHEAD: usize = 128;

/// NFSv3 procedures whose replies are cached, indexed by procedure number (RFC 1813).
const NFS3_CACHED: [bool; 22] = [
    false, // 0 NULL
    false, // 1 GETATTR
    true,  // 2 SETATTR
    false, // 3 LOOKUP
    false, // 4 ACCESS
    false, // 5 READLINK
    false, // 6 READ
    true,  // 7 WRITE
    true,  // 8 CREATE
    true,  // 9 MKDIR
    true,  // 10 SYMLINK
    true,  // 11 MKNOD
    true,  // 12 REMOVE
    true,  // 13 RMDIR
    true,  // 14 RENAME
    true,  // 15 LINK
    false, // 16 READDIR
    false, // 17 READDIRPLUS
    false, // 18 FSSTAT
    false, // 19 FSINFO
    false, // 20 PATHCONF
    false, // 21 COMMIT: idempotent (same data made stable, same verifier)
];

/// Whether NFSv3 procedure `proc_num` goes through the cache.
pub fn caches_nfs3(proc_num: u32) -> bool {
    NFS3_CACHED.get(proc_num as usize).copied().unwrap_or(false)
}

/// Cache limits (`nfs.drc_entries`, `nfs.drc_bytes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DrcOptions {
    pub max_entries: usize,
    pub max_bytes: usize,
}

impl Default for DrcOptions {
    fn default() -> Self {
        DrcOptions { max_entries: DEFAULT_ENTRIES, max_bytes: DEFAULT_BYTES }
    }
}

/// What identifies one call: xid, client IP address, checksum of the rest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DrcKey {
    xid: u32,
    client: IpAddr,
    sum: [u8; 16],
}

impl DrcKey {
    /// The key of a call `xid` of `prog`/`vers`/`proc_num` from `client` as `cred`, with
    /// argument bytes `args`.
    pub fn new(xid: u32, client: IpAddr, call: [u32; 3], cred: &Credentials, args: &[u8]) -> DrcKey {
        let mut h = blake3::Hasher::new();
        for word in call {
            h.update(&word.to_be_bytes());
        }
        match cred {
            Credentials::None => {
                h.update(&[0]);
            }
            Credentials::Sys(s) => {
                h.update(&[1]);
                h.update(&s.uid.to_be_bytes());
                h.update(&s.gid.to_be_bytes());
                h.update(&(s.gids.len() as u32).to_be_bytes());
                for g in &s.gids {
                    h.update(&g.to_be_bytes());
                }
            }
        }
        h.update(args);
        let mut sum = [0u8; 16];
        sum.copy_from_slice(&h.finalize().as_bytes()[..16]);
        DrcKey { xid, client: client.to_canonical(), sum }
    }
}

/// The outcome of looking a call up.
#[derive(Debug)]
pub enum Lookup<'a> {
    /// Not seen: run it, then [`Pending::complete`] with its reply.
    New(Pending<'a>),
    /// A retransmission of a finished call: send this reply (the original's, byte for byte).
    Replay(Bytes),
    /// A retransmission of a call still running: [`wait_for_reply`] on this.
    InProgress(watch::Receiver<Option<Bytes>>),
}

#[derive(Debug)]
enum State {
    InProgress(watch::Receiver<Option<Bytes>>),
    Done(Bytes),
}

#[derive(Debug)]
struct Slot {
    seq: u64,
    cost: usize,
    state: State,
}

#[derive(Debug, Default)]
struct Inner {
    slots: HashMap<DrcKey, Slot>,
    /// Insertion order (sequence number -> key), oldest first.
    order: BTreeMap<u64, DrcKey>,
    next_seq: u64,
    bytes: usize,
}

impl Inner {
    fn remove(&mut self, key: &DrcKey) {
        if let Some(slot) = self.slots.remove(key) {
            self.order.remove(&slot.seq);
            self.bytes = self.bytes.saturating_sub(slot.cost);
        }
    }

    fn evict_oldest(&mut self) -> bool {
        let Some((_, key)) = self.order.pop_first() else { return false };
        if let Some(slot) = self.slots.remove(&key) {
            self.bytes = self.bytes.saturating_sub(slot.cost);
        }
        true
    }
}

/// The duplicate request cache of one gateway process.
#[derive(Debug)]
pub struct DuplicateRequestCache {
    opts: DrcOptions,
    inner: Mutex<Inner>,
}

impl Default for DuplicateRequestCache {
    fn default() -> Self {
        Self::new(DrcOptions::default())
    }
}

impl DuplicateRequestCache {
    pub fn new(opts: DrcOptions) -> Self {
        DuplicateRequestCache { opts, inner: Mutex::new(Inner::default()) }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The critical sections cannot leave the maps inconsistent, so a panic elsewhere
        // while holding the lock does not make the cache unusable.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Looks `key` up; an unknown key is entered as in progress.
    pub fn lookup(&self, key: DrcKey) -> Lookup<'_> {
        let mut inner = self.lock();
        if let Some(slot) = inner.slots.get(&key) {
            return match &slot.state {
                State::Done(reply) => Lookup::Replay(reply.clone()),
                State::InProgress(rx) => Lookup::InProgress(rx.clone()),
            };
        }
        while inner.slots.len() >= self.opts.max_entries.max(1)
            || inner.bytes.saturating_add(ENTRY_OVERHEAD) > self.opts.max_bytes
        {
            if !inner.evict_oldest() {
                break;
            }
        }
        let (tx, rx) = watch::channel(None);
        let seq = inner.next_seq;
        inner.next_seq += 1;
        inner.order.insert(seq, key);
        inner.slots.insert(key, Slot { seq, cost: ENTRY_OVERHEAD, state: State::InProgress(rx) });
        inner.bytes = inner.bytes.saturating_add(ENTRY_OVERHEAD);
        Lookup::New(Pending { cache: self, key, seq, tx: Some(tx) })
    }

    /// Entries held (in progress or done).
    pub fn len(&self) -> usize {
        self.lock().slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes charged for the entries held.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    fn finish(&self, key: DrcKey, seq: u64, reply: Option<&Bytes>) {
        let mut inner = self.lock();
        // The entry may have been evicted (and even re-entered by a later call) meanwhile.
        if inner.slots.get(&key).is_none_or(|s| s.seq != seq) {
            return;
        }
        let Some(reply) = reply else {
            inner.remove(&key);
            return;
        };
        let cost = ENTRY_OVERHEAD.saturating_add(reply.len());
        if cost > self.opts.max_bytes {
            inner.remove(&key);
            return;
        }
        if let Some(slot) = inner.slots.get_mut(&key) {
            let old = std::mem::replace(&mut slot.cost, cost);
            slot.state = State::Done(reply.clone());
            inner.bytes = inner.bytes.saturating_sub(old).saturating_add(cost);
        }
        // Evict the oldest others until the bytes fit again; this entry is the newest
        // unless calls entered after it, so it goes last.
        while inner.bytes > self.opts.max_bytes {
            if !inner.evict_oldest() {
                break;
            }
        }
    }
}

/// A call entered in the cache as in progress. Dropping it without [`Pending::complete`]
/// (the call produced no reply) removes the entry and releases waiters empty-handed.
#[derive(Debug)]
pub struct Pending<'a> {
    cache: &'a DuplicateRequestCache,
    key: DrcKey,
    seq: u64,
    tx: Option<watch::Sender<Option<Bytes>>>,
}

impl Pending<'_> {
    /// Hands `reply` to retransmissions waiting for it and, if `keep`, caches it for later
    /// ones; otherwise the entry is removed.
    pub fn complete(mut self, reply: &Bytes, keep: bool) {
        if let Some(tx) = self.tx.take() {
            tx.send_replace(Some(reply.clone()));
        }
        self.cache.finish(self.key, self.seq, keep.then_some(reply));
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if self.tx.is_some() {
            self.cache.finish(self.key, self.seq, None);
        }
    }
}

/// Waits (at most `limit`) for the reply of the call `rx` watches; `None` if it ended
/// without one or took too long.
pub async fn wait_for_reply(mut rx: watch::Receiver<Option<Bytes>>, limit: Duration) -> Option<Bytes> {
    match tokio::time::timeout(limit, rx.wait_for(Option::is_some)).await {
        Ok(Ok(reply)) => reply.clone(),
        Ok(Err(_)) | Err(_) => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected input")]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));

    fn key(xid: u32, client: IpAddr, args: &[u8]) -> DrcKey {
        DrcKey::new(xid, client, [100_003, 3, 12], &Credentials::None, args)
    }

    fn run(cache: &DuplicateRequestCache, k: DrcKey, reply: &[u8]) {
        match cache.lookup(k) {
            Lookup::New(p) => p.complete(&Bytes::copy_from_slice(reply), true),
            other => panic!("expected a new entry, got {other:?}"),
        }
    }

    fn replay(cache: &DuplicateRequestCache, k: DrcKey) -> Option<Bytes> {
        match cache.lookup(k) {
            Lookup::Replay(b) => Some(b),
            _ => None,
        }
    }

    #[test]
    fn table_covers_the_non_idempotent_procedures() {
        let cached: Vec<u32> = (0..24).filter(|p| caches_nfs3(*p)).collect();
        assert_eq!(cached, vec![2, 7, 8, 9, 10, 11, 12, 13, 14, 15]);
    }

    #[test]
    fn key_separates_xid_client_and_arguments() {
        assert_eq!(key(1, A, b"x"), key(1, A, b"x"));
        assert_ne!(key(1, A, b"x"), key(2, A, b"x"));
        assert_ne!(key(1, A, b"x"), key(1, B, b"x"));
        assert_ne!(key(1, A, b"x"), key(1, A, b"y"));
        let sys = |uid| {
            Credentials::Sys(crate::rpc::auth::AuthSys {
                stamp: uid,
                machine_name: b"m".to_vec(),
                uid,
                gid: 0,
                gids: vec![],
            })
        };
        assert_ne!(DrcKey::new(1, A, [1, 2, 3], &sys(5), b""), DrcKey::new(1, A, [1, 2, 3], &sys(6), b""));
        // An IPv4-mapped IPv6 address is the same client as the IPv4 address.
        let mapped = IpAddr::V6(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped());
        assert_eq!(key(1, A, b"x"), key(1, mapped, b"x"));
    }

    #[test]
    fn replays_the_original_reply() {
        let cache = DuplicateRequestCache::default();
        run(&cache, key(1, A, b"x"), b"first");
        assert_eq!(replay(&cache, key(1, A, b"x")).unwrap(), &b"first"[..]);
        assert!(matches!(cache.lookup(key(1, B, b"x")), Lookup::New(_)), "another client");
    }

    #[test]
    fn unkept_and_abandoned_calls_leave_nothing() {
        let cache = DuplicateRequestCache::default();
        match cache.lookup(key(1, A, b"x")) {
            Lookup::New(p) => p.complete(&Bytes::from_static(b"garbage"), false),
            other => panic!("{other:?}"),
        }
        assert!(cache.is_empty());
        drop(cache.lookup(key(2, A, b"x")));
        assert!(cache.is_empty());
        assert_eq!(cache.bytes(), 0);
    }

    #[test]
    fn bounded_by_entries_oldest_first() {
        let cache = DuplicateRequestCache::new(DrcOptions { max_entries: 3, max_bytes: 1 << 20 });
        for xid in 0..5 {
            run(&cache, key(xid, A, b""), &[xid as u8]);
        }
        assert_eq!(cache.len(), 3);
        for xid in 2..5 {
            assert_eq!(replay(&cache, key(xid, A, b"")).unwrap(), &[xid as u8][..]);
        }
        // A lookup of an evicted call enters it anew (evicting the oldest), and dropping
        // that pending entry removes it again.
        assert!(replay(&cache, key(1, A, b"")).is_none(), "evicted");
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn bounded_by_bytes() {
        let max_bytes = 4 * (ENTRY_OVERHEAD + 100);
        let cache = DuplicateRequestCache::new(DrcOptions { max_entries: 100, max_bytes });
        for xid in 0..10 {
            run(&cache, key(xid, A, b""), &[0; 100]);
            assert!(cache.bytes() <= max_bytes);
        }
        assert_eq!(cache.len(), 4);
        assert!(replay(&cache, key(9, A, b"")).is_some(), "the newest stays");
        // A reply bigger than the whole cache is not kept.
        run(&cache, key(99, A, b""), &vec![0; max_bytes]);
        assert!(replay(&cache, key(99, A, b"")).is_none());
        assert!(cache.bytes() <= max_bytes);
    }

    #[tokio::test]
    async fn a_retransmission_in_progress_waits_for_the_original() {
        let cache = DuplicateRequestCache::default();
        let Lookup::New(pending) = cache.lookup(key(1, A, b"x")) else { panic!("new") };
        let Lookup::InProgress(rx) = cache.lookup(key(1, A, b"x")) else { panic!("in progress") };
        let waiter = wait_for_reply(rx, Duration::from_secs(5));
        pending.complete(&Bytes::from_static(b"done"), true);
        assert_eq!(waiter.await.unwrap(), &b"done"[..]);

        // Abandoned original: the waiter is released without a reply.
        let Lookup::New(pending) = cache.lookup(key(2, A, b"x")) else { panic!("new") };
        let Lookup::InProgress(rx) = cache.lookup(key(2, A, b"x")) else { panic!("in progress") };
        drop(pending);
        assert!(wait_for_reply(rx, Duration::from_secs(5)).await.is_none());

        // A wait that runs out answers nothing.
        let Lookup::New(_pending) = cache.lookup(key(3, A, b"x")) else { panic!("new") };
        let Lookup::InProgress(rx) = cache.lookup(key(3, A, b"x")) else { panic!("in progress") };
        assert!(wait_for_reply(rx, Duration::from_millis(10)).await.is_none());
    }

    #[test]
    fn an_evicted_call_in_progress_completes_harmlessly() {
        let cache = DuplicateRequestCache::new(DrcOptions { max_entries: 1, max_bytes: 1 << 20 });
        let Lookup::New(first) = cache.lookup(key(1, A, b"")) else { panic!("new") };
        run(&cache, key(2, A, b""), b"two");
        first.complete(&Bytes::from_static(b"one"), true);
        assert_eq!(cache.len(), 1);
        assert_eq!(replay(&cache, key(2, A, b"")).unwrap(), &b"two"[..]);
    }
}
