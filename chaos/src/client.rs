//! One NFS client of the harness: a userspace NFSv3 client (nfs3_client) connected through
//! the load balancer, doing FILE_SYNC writes, UNSTABLE writes + COMMIT, creates, renames,
//! removes and reads in its own directory, and keeping the model of what was acknowledged.
//!
//! Owns the client's side of every fault: a call that gets no answer within
//! `CALL_TIMEOUT` or whose connection breaks is retried on a new connection (through
//! HAProxy, so usually another gateway) with the same handles, as a kernel client
//! retransmits; NFS3ERR_JUKEBOX is retried after a pause. Because a retried call may have
//! taken effect the first time — and so may one answered NFS3ERR_JUKEBOX, which RFC 1813
//! says to retry with a new xid — EXIST after a retried CREATE and NOENT after a retried
//! REMOVE or RENAME count as success (a kernel client does the same). UNSTABLE data is
//! acknowledged only by a COMMIT whose verifier equals every WRITE's; otherwise it is sent
//! again. Every read is compared at once with the model: the client is the only writer of
//! its files, so its history is sequential and the one linearizable answer is the model's.
//! Must never: count an operation as acknowledged before the server said so, or give up
//! on one before `OP_DEADLINE` (that is reported as a failed operation).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use nfs3_client::nfs3_types::nfs3::*;
use nfs3_client::nfs3_types::rpc::{auth_unix, opaque_auth};
use nfs3_client::nfs3_types::xdr_codec::{List, Opaque};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::linear::Call;
use crate::shared;

type Client = nfs3_client::Nfs3Client<crate::tcp::Tcp>;

/// A call unanswered this long is abandoned and retried on a new connection. Longer than
/// the gateway's own deadline for storing a chunk (20 s), as Linux's 60 s (`timeo=600`):
/// a client that gives up sooner races the gateway still working on its request, whose
/// late completion can overwrite what the client wrote since through another gateway
/// (what per-file write leases in metad would fence; docs/reliability.md).
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// An operation still failing after this long is reported as failed.
pub(crate) const OP_DEADLINE: Duration = Duration::from_secs(120);
/// Pause after NFS3ERR_JUKEBOX or a failed (re)connection.
pub(crate) const RETRY_PAUSE: Duration = Duration::from_millis(200);
/// Share of a client's operations that go to the shared directory (`shared`).
const SHARED_PERCENT: u32 = 20;
/// Each client reconnects through the load balancer after this many operations.
const REMOUNT_EVERY: u64 = 40;
const MAX_WRITE: usize = 64 * 1024;
const MAX_FILE: usize = 384 * 1024;

/// What one client saw.
#[derive(Debug, Default)]
pub struct ClientReport {
    pub acknowledged: u64,
    /// Operations that did not complete within `OP_DEADLINE`, or got an error no fault
    /// explains.
    pub failed: Vec<String>,
    /// Reads that did not return the acknowledged state.
    pub violations: Vec<String>,
    /// Writes refused with NFS3ERR_NOSPC, and when (expected only while a disk is full).
    pub refused: Vec<(Instant, String)>,
    /// (start, end, kind, its calls) of every operation, retries included.
    pub ops: Vec<(Instant, Instant, &'static str, CallStats)>,
    /// When calls were sent that failed without an answer (connection broken or timed
    /// out), after which the client moved to a new connection through the load balancer.
    pub reconnects: Vec<Instant>,
    /// The final model: file name -> acknowledged content.
    pub files: BTreeMap<String, Vec<u8>>,
    /// Names of failed operations, which may or may not exist (see `Worker::give_up`).
    pub uncertain: BTreeMap<String, Uncertain>,
    /// Every call on the shared directory, for the model checker.
    pub shared_ops: Vec<shared::Op>,
    pub dir_name: String,
}

/// What a name whose operation failed may hold, if it exists.
#[derive(Debug, Clone)]
pub struct Uncertain {
    pub old: Vec<u8>,
    pub writes: Vec<(usize, Vec<u8>)>,
}

struct FileModel {
    fh: nfs_fh3,
    data: Vec<u8>,
}

/// The calls one operation made: how a slow one spent its time (one long wait on a
/// gateway, calls that broke, or many answered "try again").
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CallStats {
    /// Calls sent, answered or not.
    pub calls: u32,
    /// Calls that got no answer (connection broken, or `CALL_TIMEOUT`).
    pub unanswered: u32,
    /// The longest single call, answered or not.
    pub longest: Duration,
}

impl CallStats {
    pub fn note(&mut self, took: Duration, answered: bool) {
        self.calls += 1;
        self.unanswered += u32::from(!answered);
        self.longest = self.longest.max(took);
    }
}

impl std::fmt::Display for CallStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} calls, {} unanswered, longest {} ms", self.calls, self.unanswered, self.longest.as_millis())
    }
}

/// A connection through the load balancer, made again when lost.
pub struct Conn {
    lb: SocketAddr,
    client: Option<Client>,
    pub root: Option<nfs_fh3>,
    /// When calls that failed without an answer were sent (each failure is followed by a
    /// new connection).
    pub broken: Vec<Instant>,
    /// The calls of the operation in progress (the worker resets it per operation).
    pub stats: CallStats,
}

fn auth() -> opaque_auth<'static> {
    opaque_auth::auth_unix(&auth_unix { stamp: 1, machinename: Opaque::owned(b"chaos".to_vec()), uid: 0, gid: 0, gids: vec![] })
}

pub fn name(s: &str) -> filename3<'static> {
    filename3(Opaque::owned(s.as_bytes().to_vec()))
}

impl Conn {
    pub fn new(lb: SocketAddr) -> Conn {
        Conn { lb, client: None, root: None, broken: Vec::new(), stats: CallStats::default() }
    }

    /// The client, connecting (MOUNT + NFS, through the load balancer) if needed.
    pub async fn client(&mut self) -> Option<&mut Client> {
        if self.client.is_none() {
            let b = nfs3_client::Nfs3ConnectionBuilder::new(crate::tcp::TcpConnector, self.lb.ip().to_string(), "/export")
                .mount_port(self.lb.port())
                .nfs3_port(self.lb.port())
                .connect_from_privileged_port(false)
                .credential(auth());
            match tokio::time::timeout(CALL_TIMEOUT, b.mount()).await {
                Ok(Ok(conn)) => {
                    let root = conn.root_nfs_fh3();
                    if let Some(old) = &self.root {
                        // Handles come from metad: every gateway hands out the same root.
                        if old.data.as_ref() != root.data.as_ref() {
                            return None;
                        }
                    }
                    self.root = Some(root);
                    self.client = Some(conn.into_nfs3_client());
                }
                _ => return None,
            }
        }
        self.client.as_mut()
    }

    pub fn reset(&mut self) {
        self.client = None;
    }

    /// The export's root handle, mounting first if needed (`None` if that fails).
    pub async fn root(&mut self) -> Option<nfs_fh3> {
        let _ = self.client().await;
        self.root.clone()
    }

    /// A call sent at `sent` failed without an answer: noted, and the next call connects
    /// again.
    pub fn broke(&mut self, sent: Instant) {
        self.broken.push(sent);
        self.reset();
    }
}

/// Runs `$call` (an expression using the client `$c`) until the server answers, on new
/// connections as needed; gives up after `OP_DEADLINE` with `None`. Sets `$retried` when
/// an attempt's outcome was unknown.
macro_rules! rpc {
    ($conn:expr, $c:ident => $call:expr) => {{
        let mut _retried = false;
        $crate::client::rpc!($conn, _retried, $c => $call)
    }};
    ($conn:expr, $retried:ident, $c:ident => $call:expr) => {{
        let started = ::std::time::Instant::now();
        loop {
            if started.elapsed() > $crate::client::OP_DEADLINE {
                break None;
            }
            let Some($c) = $conn.client().await else {
                ::tokio::time::sleep($crate::client::RETRY_PAUSE).await;
                continue;
            };
            let sent = ::std::time::Instant::now();
            let answer = ::tokio::time::timeout($crate::client::CALL_TIMEOUT, $call).await;
            $conn.stats.note(sent.elapsed(), matches!(answer, Ok(Ok(_))));
            match answer {
                Ok(Ok(r)) => break Some(r),
                _ => {
                    $retried = true;
                    $conn.broke(sent);
                    ::tokio::time::sleep($crate::client::RETRY_PAUSE).await;
                }
            }
        }
    }};
}
pub(crate) use rpc;

/// Whether a failed answer is "try again later".
fn jukebox(s: &nfsstat3) -> bool {
    matches!(s, nfsstat3::NFS3ERR_JUKEBOX)
}

pub struct Worker {
    id: usize,
    conn: Conn,
    rng: StdRng,
    dir: Option<nfs_fh3>,
    dir_name: String,
    files: BTreeMap<String, FileModel>,
    uncertain: BTreeMap<String, Uncertain>,
    next_name: u64,
    /// The shared directory's handles, once set up.
    shared: Option<shared::Shared>,
    /// Draws the shared operations (apart from `rng`, so a seed's own-file operations are
    /// the same as before the shared ones were added).
    shared_rng: StdRng,
    /// Values this client has written to shared files.
    shared_seq: u64,
    pub report: ClientReport,
}

impl Worker {
    pub fn new(id: usize, lb: SocketAddr, seed: u64) -> Worker {
        let dir_name = format!("client{id}");
        Worker {
            id,
            conn: Conn::new(lb),
            rng: StdRng::seed_from_u64(seed ^ (id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            dir: None,
            dir_name: dir_name.clone(),
            files: BTreeMap::new(),
            uncertain: BTreeMap::new(),
            next_name: 0,
            shared: None,
            shared_rng: StdRng::seed_from_u64(seed ^ 0x5348_4152_4544 ^ id as u64),
            shared_seq: 0,
            report: ClientReport { dir_name, ..ClientReport::default() },
        }
    }

    fn fail(&mut self, what: String) {
        self.report.failed.push(format!("client {}: {what}", self.id));
    }

    /// An operation on `names` failed (no answer, or an error no fault explains): it may
    /// have taken effect in whole, in part or not at all. The names leave the model (no
    /// later operation uses them) for the checker to judge with what may have happened:
    /// absent, or present holding the content they had (the first name's) changed by any
    /// part of `writes`.
    fn give_up(&mut self, names: &[&str], writes: &[(usize, Vec<u8>)], what: String) {
        self.fail(what);
        let old = names.iter().find_map(|n| self.files.remove(*n)).map(|f| f.data).unwrap_or_default();
        for n in names {
            self.uncertain.insert(n.to_string(), Uncertain { old: old.clone(), writes: writes.to_vec() });
        }
    }

    /// Makes the client's directory (retried until it exists).
    pub async fn setup(&mut self) -> bool {
                let started = Instant::now();
        loop {
            let Some(root) = self.conn.root().await else {
                if started.elapsed() > OP_DEADLINE {
                    self.fail("could not mount through the load balancer".into());
                    return false;
                }
                tokio::time::sleep(RETRY_PAUSE).await;
                continue;
            };
            let args = MKDIR3args {
                where_: diropargs3 { dir: root.clone(), name: name(&self.dir_name) },
                attributes: sattr3 { mode: set_mode3::Some(0o755), ..Default::default() },
            };
            let Some(r) = rpc!(self.conn, c => c.mkdir(&args)) else {
                self.fail("MKDIR of the client directory never answered".into());
                return false;
            };
            match r {
                Nfs3Result::Ok(ok) => {
                    if let Nfs3Option::Some(fh) = ok.obj {
                        self.dir = Some(fh);
                        return self.setup_shared(&root).await;
                    }
                }
                Nfs3Result::Err((s, _)) if jukebox(&s) => {}
                Nfs3Result::Err((nfsstat3::NFS3ERR_EXIST, _)) => {}
                Nfs3Result::Err((s, _)) => {
                    self.fail(format!("MKDIR: {s:?}"));
                    return false;
                }
            }
            // Exists (a retried MKDIR) or no handle returned: look it up.
            let args = LOOKUP3args { what: diropargs3 { dir: root.clone(), name: name(&self.dir_name) } };
            if let Some(Nfs3Result::Ok(ok)) = rpc!(self.conn, c => c.lookup(&args)) {
                self.dir = Some(ok.object);
                return self.setup_shared(&root).await;
            }
        }
    }

    async fn setup_shared(&mut self, root: &nfs_fh3) -> bool {
        self.shared = shared::setup(&mut self.conn, root).await;
        if self.shared.is_none() {
            self.fail("could not set up the shared directory".into());
        }
        self.shared.is_some()
    }

    /// One operation on the shared directory (see `shared`), recorded.
    async fn shared_op(&mut self) -> &'static str {
        let Some(sh) = self.shared.clone() else { return "shared" };
        let p: u32 = self.shared_rng.random_range(0..100);
        let (f, n) = (self.shared_rng.random_range(0..shared::FILES.len()), self.shared_rng.random_range(0..shared::NAMES.len()));
        let (call, key, i, kind) = if p < 35 {
            self.shared_seq += 1;
            (Call::Write(((self.id as u64 + 1) << 40) | self.shared_seq), shared::FILES[f], f, "shared_write")
        } else if p < 60 {
            (Call::Read, shared::FILES[f], f, "shared_read")
        } else if p < 75 {
            (Call::Create, shared::NAMES[n], n, "shared_create")
        } else if p < 90 {
            (Call::Remove, shared::NAMES[n], n, "shared_remove")
        } else {
            (Call::Lookup, shared::NAMES[n], n, "shared_lookup")
        };
        let called = Instant::now();
        let answer = match shared::attempt(&mut self.conn, &sh, call, i).await {
            shared::Outcome::Answered(ret) => Some((ret, Instant::now())),
            shared::Outcome::Unanswered => None,
            shared::Outcome::Failed(why) if call == Call::Read => {
                self.report.violations.push(format!("client {}: shared/{key}: {why}", self.id));
                return kind;
            }
            shared::Outcome::Failed(why) => {
                self.fail(format!("shared/{key}: {why}"));
                None
            }
        };
        // A read that got no answer did nothing; every mutation sent is recorded.
        if answer.is_some() || call != Call::Read {
            self.report.shared_ops.push(shared::Op { key, call, called, answer, client: self.id });
        }
        if answer.is_some() {
            self.report.acknowledged += 1;
        }
        kind
    }

    /// Runs operations until `stop` says so.
    pub async fn run(&mut self, stop: tokio::sync::watch::Receiver<bool>) {
        let mut done: u64 = 0;
        while !*stop.borrow() {
            done += 1;
            if done.is_multiple_of(REMOUNT_EVERY) {
                // Clients come and go: a new connection through the load balancer (with the
                // handles this client holds), so gateways that returned get clients again.
                self.conn.reset();
            }
            let started = Instant::now();
            self.conn.stats = CallStats::default();
            if self.shared_rng.random_range(0..100) < SHARED_PERCENT {
                let kind = self.shared_op().await;
                self.report.ops.push((started, Instant::now(), kind, self.conn.stats));
                continue;
            }
            let p: u32 = self.rng.random_range(0..100);
            let n = self.files.len();
            let kind = if n < 3 || p < 12 {
                self.create().await;
                "create"
            } else if p < 40 {
                self.write_sync().await;
                "write_file_sync"
            } else if p < 62 {
                self.write_unstable().await;
                "write_unstable_commit"
            } else if p < 72 {
                self.rename().await;
                "rename"
            } else if p < 78 && n > 3 {
                self.remove().await;
                "remove"
            } else {
                self.read_check().await;
                "read"
            };
            self.report.ops.push((started, Instant::now(), kind, self.conn.stats));
        }
        self.report.files = self.files.iter().map(|(k, v)| (k.clone(), v.data.clone())).collect();
        self.report.uncertain = std::mem::take(&mut self.uncertain);
        self.report.reconnects = std::mem::take(&mut self.conn.broken);
    }

    fn dir(&self) -> nfs_fh3 {
        self.dir.clone().unwrap_or_default()
    }

    fn pick(&mut self) -> Option<String> {
        if self.files.is_empty() {
            return None;
        }
        let i = self.rng.random_range(0..self.files.len());
        self.files.keys().nth(i).cloned()
    }

    fn new_name(&mut self) -> String {
        self.next_name += 1;
        format!("f{}", self.next_name)
    }

    async fn create(&mut self) {
        let fname = self.new_name();
        let dir = self.dir();
        let mut retried = false;
        loop {
            let args = CREATE3args {
                where_: diropargs3 { dir: dir.clone(), name: name(&fname) },
                how: createhow3::GUARDED(sattr3 { mode: set_mode3::Some(0o644), ..Default::default() }),
            };
            let Some(r) = rpc!(self.conn, retried, c => c.create(&args)) else {
                return self.give_up(&[&fname], &[], format!("CREATE {fname} never answered"));
            };
            let fh = match r {
                Nfs3Result::Ok(ok) => match ok.obj {
                    Nfs3Option::Some(fh) => Some(fh),
                    Nfs3Option::None => None,
                },
                Nfs3Result::Err((s, _)) if jukebox(&s) => {
                    // "Try again later" says nothing of whether this attempt took effect.
                    retried = true;
                    tokio::time::sleep(RETRY_PAUSE).await;
                    continue;
                }
                // The first attempt took effect.
                Nfs3Result::Err((nfsstat3::NFS3ERR_EXIST, _)) if retried => None,
                Nfs3Result::Err((s, _)) => return self.give_up(&[&fname], &[], format!("CREATE {fname}: {s:?} (retried: {retried})")),
            };
            let fh = match fh {
                Some(fh) => fh,
                None => match self.lookup(&fname).await {
                    Some(fh) => fh,
                    None => return self.give_up(&[&fname], &[], format!("CREATE {fname} acknowledged but LOOKUP finds nothing")),
                },
            };
            self.files.insert(fname, FileModel { fh, data: Vec::new() });
            self.report.acknowledged += 1;
            return;
        }
    }

    async fn lookup(&mut self, fname: &str) -> Option<nfs_fh3> {
                let args = LOOKUP3args { what: diropargs3 { dir: self.dir(), name: name(fname) } };
        loop {
            match rpc!(self.conn, c => c.lookup(&args))? {
                Nfs3Result::Ok(ok) => return Some(ok.object),
                Nfs3Result::Err((s, _)) if jukebox(&s) => tokio::time::sleep(RETRY_PAUSE).await,
                Nfs3Result::Err(_) => return None,
            }
        }
    }

    /// A random span to write in a file of `len` bytes: inside it or appending.
    fn span(&mut self, len: usize) -> (usize, Vec<u8>) {
        let count = self.rng.random_range(1..=MAX_WRITE);
        let off = if len + count > MAX_FILE { self.rng.random_range(0..=MAX_FILE - count) } else { self.rng.random_range(0..=len) };
        let mut data = vec![0u8; count];
        self.rng.fill(&mut data[..]);
        (off, data)
    }

    async fn write_sync(&mut self) {
        let Some(fname) = self.pick() else { return };
        let Some(f) = self.files.get(&fname) else { return };
        let (fh, len) = (f.fh.clone(), f.data.len());
        let (off, data) = self.span(len);
                loop {
            let args = WRITE3args {
                file: fh.clone(),
                offset: off as u64,
                count: data.len() as u32,
                stable: stable_how::FILE_SYNC,
                data: Opaque::borrowed(&data),
            };
            let Some(r) = rpc!(self.conn, c => c.write(&args)) else {
                return self.give_up(&[&fname], &[(off, data.clone())], format!("FILE_SYNC WRITE to {fname} never answered"));
            };
            match r {
                Nfs3Result::Ok(ok) if ok.count as usize == data.len() && ok.committed == stable_how::FILE_SYNC => {
                    if let Some(f) = self.files.get_mut(&fname) {
                        apply(&mut f.data, off, &data);
                    }
                    self.report.acknowledged += 1;
                    return;
                }
                Nfs3Result::Ok(ok) => {
                    return self.give_up(&[&fname], &[(off, data.clone())], format!("FILE_SYNC WRITE to {fname}: {} of {} bytes, {:?}", ok.count, data.len(), ok.committed));
                }
                Nfs3Result::Err((s, _)) if jukebox(&s) => tokio::time::sleep(RETRY_PAUSE).await,
                Nfs3Result::Err((nfsstat3::NFS3ERR_NOSPC, _)) => {
                    return self.refused_write(&fname, &[(off, data)], "FILE_SYNC WRITE").await;
                }
                Nfs3Result::Err((s, _)) => return self.give_up(&[&fname], &[(off, data.clone())], format!("FILE_SYNC WRITE to {fname}: {s:?}")),
            }
        }
    }

    /// 1-4 UNSTABLE WRITEs then a COMMIT; all sent again until one COMMIT's verifier equals
    /// every WRITE's (the server lost nothing it had not promised).
    async fn write_unstable(&mut self) {
        let Some(fname) = self.pick() else { return };
        let Some(f) = self.files.get(&fname) else { return };
        let (fh, mut shadow) = (f.fh.clone(), f.data.clone());
        let k = self.rng.random_range(1..=4);
        let mut writes = Vec::new();
        for _ in 0..k {
            let (off, data) = self.span(shadow.len());
            apply(&mut shadow, off, &data);
            writes.push((off, data));
        }
        let started = Instant::now();
        'again: while started.elapsed() < OP_DEADLINE {
            let mut verfs = Vec::new();
            for (off, data) in &writes {
                                loop {
                    let args = WRITE3args {
                        file: fh.clone(),
                        offset: *off as u64,
                        count: data.len() as u32,
                        stable: stable_how::UNSTABLE,
                        data: Opaque::borrowed(data),
                    };
                    let Some(r) = rpc!(self.conn, c => c.write(&args)) else {
                        return self.give_up(&[&fname], &writes, format!("UNSTABLE WRITE to {fname} never answered"));
                    };
                    match r {
                        Nfs3Result::Ok(ok) if ok.count as usize == data.len() => {
                            verfs.push(ok.verf);
                            break;
                        }
                        Nfs3Result::Ok(ok) => return self.give_up(&[&fname], &writes, format!("UNSTABLE WRITE to {fname}: short ({})", ok.count)),
                        Nfs3Result::Err((s, _)) if jukebox(&s) => tokio::time::sleep(RETRY_PAUSE).await,
                        Nfs3Result::Err((nfsstat3::NFS3ERR_NOSPC, _)) => {
                            return self.refused_write(&fname, &writes, "UNSTABLE WRITE").await;
                        }
                        Nfs3Result::Err((s, _)) => return self.give_up(&[&fname], &writes, format!("UNSTABLE WRITE to {fname}: {s:?}")),
                    }
                }
            }
                        let args = COMMIT3args { file: fh.clone(), offset: 0, count: 0 };
            let verf = loop {
                let Some(r) = rpc!(self.conn, c => c.commit(&args)) else {
                    return self.give_up(&[&fname], &writes, format!("COMMIT of {fname} never answered"));
                };
                match r {
                    Nfs3Result::Ok(ok) => break ok.verf,
                    Nfs3Result::Err((s, _)) if jukebox(&s) => tokio::time::sleep(RETRY_PAUSE).await,
                    Nfs3Result::Err((nfsstat3::NFS3ERR_NOSPC, _)) => {
                        return self.refused_write(&fname, &writes, "COMMIT").await;
                    }
                    Nfs3Result::Err((s, _)) => return self.give_up(&[&fname], &writes, format!("COMMIT of {fname}: {s:?}")),
                }
            };
            if verfs.iter().any(|v| v.0 != verf.0) {
                // A gateway restarted in between: what it had buffered may be gone. Resend.
                continue 'again;
            }
            if let Some(f) = self.files.get_mut(&fname) {
                f.data = shadow;
            }
            self.report.acknowledged += 1;
            return;
        }
        self.give_up(&[&fname], &writes, format!("UNSTABLE writes to {fname} never committed with a stable verifier"));
    }

    /// `writes` (in order) to `fname` were refused for lack of space: the file may hold
    /// any of them in part (the gateway had flushed some chunks before the refusal). It is
    /// read back: every byte must be the acknowledged one or one of the refused writes',
    /// and its length between the acknowledged one and the longest the writes make it;
    /// what is read becomes the model (it is what the cluster made durable).
    async fn refused_write(&mut self, fname: &str, writes: &[(usize, Vec<u8>)], what: &str) {
        self.report.refused.push((Instant::now(), format!("client {}: {what} to {fname}: NFS3ERR_NOSPC", self.id)));
        let Some(f) = self.files.get(fname) else { return };
        let (fh, old) = (f.fh.clone(), f.data.clone());
        let content = match read_all(&mut self.conn, &fh).await {
            Ok(c) => c,
            Err(e) => return self.give_up(&[fname], writes, format!("reading {fname} back after a refused write: {e}")),
        };
        if let Some(problem) = partial_outcome_problem(&old, writes, &content) {
            self.report.violations.push(format!("client {}: {fname} after a refused {what}: {problem}", self.id));
        }
        if let Some(f) = self.files.get_mut(fname) {
            f.data = content;
        }
    }

    async fn rename(&mut self) {
        let Some(from) = self.pick() else { return };
        let to = self.new_name();
        let dir = self.dir();
        let mut retried = false;
        loop {
            let args = RENAME3args {
                from: diropargs3 { dir: dir.clone(), name: name(&from) },
                to: diropargs3 { dir: dir.clone(), name: name(&to) },
            };
            let Some(r) = rpc!(self.conn, retried, c => c.rename(&args)) else {
                return self.give_up(&[&from, &to], &[], format!("RENAME {from} -> {to} never answered"));
            };
            match r {
                Nfs3Result::Ok(_) => break,
                Nfs3Result::Err((s, _)) if jukebox(&s) => {
                    retried = true;
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Nfs3Result::Err((nfsstat3::NFS3ERR_NOENT, _)) if retried && self.lookup(&to).await.is_some() => break,
                Nfs3Result::Err((s, _)) => return self.give_up(&[&from, &to], &[], format!("RENAME {from} -> {to}: {s:?} (retried: {retried})")),
            }
        }
        if let Some(f) = self.files.remove(&from) {
            self.files.insert(to, f);
        }
        self.report.acknowledged += 1;
    }

    async fn remove(&mut self) {
        let Some(fname) = self.pick() else { return };
        let dir = self.dir();
        let mut retried = false;
        loop {
            let args = REMOVE3args { object: diropargs3 { dir: dir.clone(), name: name(&fname) } };
            let Some(r) = rpc!(self.conn, retried, c => c.remove(&args)) else {
                return self.give_up(&[&fname], &[], format!("REMOVE {fname} never answered"));
            };
            match r {
                Nfs3Result::Ok(_) => break,
                Nfs3Result::Err((s, _)) if jukebox(&s) => {
                    retried = true;
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Nfs3Result::Err((nfsstat3::NFS3ERR_NOENT, _)) if retried => break,
                Nfs3Result::Err((s, _)) => return self.give_up(&[&fname], &[], format!("REMOVE {fname}: {s:?}")),
            }
        }
        self.files.remove(&fname);
        self.report.acknowledged += 1;
    }

    async fn read_check(&mut self) {
        let Some(fname) = self.pick() else { return };
        let Some(f) = self.files.get(&fname) else { return };
        let (fh, want) = (f.fh.clone(), f.data.clone());
        match read_all(&mut self.conn, &fh).await {
            Ok(got) if got == want => {}
            Ok(got) => {
                let at = got.iter().zip(&want).position(|(a, b)| a != b).unwrap_or(got.len().min(want.len()));
                self.report.violations.push(format!(
                    "client {}: READ of {fname} returned {} bytes, acknowledged {} (first difference at {at})",
                    self.id,
                    got.len(),
                    want.len()
                ));
            }
            Err(e) => self.fail(format!("READ of {fname}: {e}")),
        }
    }
}

/// Why `content` cannot be `old` with some parts of `writes` applied (see
/// `Worker::refused_write`), if it cannot.
pub fn partial_outcome_problem(old: &[u8], writes: &[(usize, Vec<u8>)], content: &[u8]) -> Option<String> {
    let longest = writes.iter().map(|(off, d)| off + d.len()).fold(old.len(), usize::max);
    if content.len() < old.len() || content.len() > longest {
        return Some(format!("{} bytes, expected {} to {longest}", content.len(), old.len()));
    }
    for (p, &b) in content.iter().enumerate() {
        let before = old.get(p).copied().unwrap_or(0);
        let written = writes.iter().any(|(off, d)| p >= *off && p < off + d.len() && d[p - off] == b);
        if b != before && !written {
            return Some(format!("byte {p} is {b:#04x}: neither acknowledged ({before:#04x}) nor written"));
        }
    }
    None
}

/// `data` written at `off` into `buf` (extending it, zero-filling a gap).
pub fn apply(buf: &mut Vec<u8>, off: usize, data: &[u8]) {
    if buf.len() < off + data.len() {
        buf.resize(off + data.len(), 0);
    }
    buf[off..off + data.len()].copy_from_slice(data);
}

/// The whole content of `fh`, retried through faults.
pub async fn read_all(conn: &mut Conn, fh: &nfs_fh3) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let args = READ3args { file: fh.clone(), offset: out.len() as u64, count: 128 * 1024 };
        let Some(r) = rpc!(conn, c => c.read(&args)) else { return Err("never answered".into()) };
        match r {
            Nfs3Result::Ok(ok) => {
                out.extend_from_slice(ok.data.as_ref());
                if ok.eof || ok.count == 0 {
                    return Ok(out);
                }
            }
            Nfs3Result::Err((s, _)) if jukebox(&s) => tokio::time::sleep(RETRY_PAUSE).await,
            Nfs3Result::Err((s, _)) => return Err(format!("{s:?}")),
        }
    }
}

/// The names in directory `dir`, retried through faults.
pub async fn list(conn: &mut Conn, dir: &nfs_fh3) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    let (mut cookie, mut verf) = (0u64, cookieverf3::default());
    loop {
        let args = READDIR3args { dir: dir.clone(), cookie, cookieverf: verf, count: 8192 };
        let Some(r) = rpc!(conn, c => c.readdir(&args)) else { return Err("never answered".into()) };
        match r {
            Nfs3Result::Ok(ok) => {
                let List(entries) = ok.reply.entries;
                for e in &entries {
                    let n = String::from_utf8_lossy(e.name.0.as_ref()).into_owned();
                    if n != "." && n != ".." {
                        names.push(n);
                    }
                }
                cookie = entries.last().map_or(cookie, |e| e.cookie);
                verf = ok.cookieverf;
                if ok.reply.eof {
                    return Ok(names);
                }
            }
            Nfs3Result::Err((s, _)) if jukebox(&s) => tokio::time::sleep(RETRY_PAUSE).await,
            Nfs3Result::Err((s, _)) => return Err(format!("{s:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::partial_outcome_problem;

    #[test]
    fn a_refused_write_may_leave_any_part_of_itself_and_nothing_else() {
        let old = vec![1u8; 8];
        let writes = vec![(4, vec![2u8; 8]), (0, vec![3u8; 2])];
        // Nothing applied, all applied, part of each.
        assert_eq!(partial_outcome_problem(&old, &writes, &old), None);
        let all = [3, 3, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2];
        assert_eq!(partial_outcome_problem(&old, &writes, &all), None);
        assert_eq!(partial_outcome_problem(&old, &writes, &[1, 3, 1, 1, 2, 2, 1, 1, 2, 2]), None);
        // A byte nobody wrote, a truncation, a length past every write.
        assert!(partial_outcome_problem(&old, &writes, &[1, 1, 9, 1, 1, 1, 1, 1]).is_some());
        assert!(partial_outcome_problem(&old, &writes, &old[..7]).is_some());
        assert!(partial_outcome_problem(&old, &writes, &[1; 13]).is_some());
    }
}
