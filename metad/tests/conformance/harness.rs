//! The conformance harness: a real Raft group over gRPC, a per-case context, and the helpers
//! cases are written with.
//!
//! Covers: starting a 1- or 3-voter metad group in-process (each node serving `Meta` and `Raft`
//! with tonic on a loopback port), a second share (for cross-share cases), a [`Ctx`] per case
//! (a fresh root-owned `0777` directory under the default share, a unique request-id client,
//! typed wrappers for every `Meta` call returning `Result<_, FsError>`), the credentials cases
//! use, assertion helpers, and the runner that executes every registered case and reports all
//! failures at once.
//!
//! Clients talk only to the leader, over a real tonic channel. Should leadership move during a
//! run (a loaded machine can miss heartbeats), a call answered `NotLeader` is resent to the new
//! leader; mutations carry request ids, so such a resend is what a gateway would do too.

use std::collections::BTreeMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::{FutureExt, StreamExt};
use metad::{Bootstrap, Metad, MetadOptions};
use proto::FsError;
use proto::pb::meta_client::MetaClient;
use proto::pb::{self, Attr, CreateHow, Cred, FileType, NodeRef, RequestId};
use tonic::transport::Channel;
use tonic::transport::server::TcpIncoming;

/// Export path of the share every case works in.
pub const SHARE: &str = "/export";
/// Export path of a second share, for cross-share (XDEV) cases.
pub const OTHER_SHARE: &str = "/other";
/// How long anything in the harness may wait for the group (leader election, one case).
const DEADLINE: Duration = Duration::from_secs(30);
/// How many cases run at once against one group.
const CONCURRENCY: usize = 16;

// ------------------------------------------------------------------------------ credentials

/// uid/gid of the ordinary user most cases act as.
pub const USER_UID: u32 = 1000;
pub const USER_GID: u32 = 1000;
/// A supplementary group of [`user`] (not its primary group).
pub const SUPP_GID: u32 = 3000;
/// uid/gid of a second, unrelated user.
pub const OTHER_UID: u32 = 2000;
pub const OTHER_GID: u32 = 2000;
/// A group neither user belongs to.
pub const FOREIGN_GID: u32 = 5000;

/// uid 0: bypasses read/write permission checks.
pub fn root() -> Cred {
    Cred { uid: 0, gid: 0, gids: vec![] }
}

/// 1000:1000, with supplementary group [`SUPP_GID`].
pub fn user() -> Cred {
    Cred { uid: USER_UID, gid: USER_GID, gids: vec![USER_GID, SUPP_GID] }
}

/// 2000:2000, no other groups.
pub fn other() -> Cred {
    Cred { uid: OTHER_UID, gid: OTHER_GID, gids: vec![OTHER_GID] }
}

// ------------------------------------------------------------------------------ the group

struct Node {
    id: u64,
    metad: Metad,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

/// A running metad group and a connection to its leader.
pub struct Group {
    nodes: Vec<Node>,
    conn: Arc<Conn>,
    share_root: NodeRef,
    other_root: NodeRef,
    _dirs: Vec<tempfile::TempDir>,
}

fn harness_err(what: &str, e: impl std::fmt::Debug) -> String {
    format!("harness: {what}: {e:?}")
}

impl Group {
    /// Starts `voters` nodes (node 1 bootstraps them all), waits for a leader, and makes sure
    /// both shares exist.
    pub async fn start(voters: u64) -> Result<Group, String> {
        let mut dirs = Vec::new();
        let mut incomings = Vec::new();
        let mut members = BTreeMap::new();
        for id in 1..=voters {
            dirs.push(tempfile::tempdir().map_err(|e| harness_err("tempdir", e))?);
            let addr = "127.0.0.1:0".parse().map_err(|e| harness_err("addr", e))?;
            let incoming = TcpIncoming::bind(addr).map_err(|e| harness_err("bind", e))?;
            let local = incoming.local_addr().map_err(|e| harness_err("local addr", e))?;
            members.insert(id, format!("http://{local}"));
            incomings.push(incoming);
        }
        let default_share = ("default".to_string(), SHARE.to_string());
        let mut nodes = Vec::new();
        for (i, incoming) in incomings.into_iter().enumerate() {
            let id = i as u64 + 1;
            let opts = MetadOptions {
                node_id: id,
                data_dir: dirs[i].path().to_path_buf(),
                advertise_addr: members[&id].clone(),
                default_share: Some(default_share.clone()),
                client_tls: cluster::grpc_tls::ClientTls::plaintext(),
            };
            let bootstrap = match (voters, id) {
                (1, _) => Bootstrap::SingleVoter,
                (_, 1) => Bootstrap::Members(members.clone()),
                _ => Bootstrap::Join,
            };
            let metad = Metad::start(&opts, bootstrap).await.map_err(|e| harness_err("start metad", e))?;
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let router =
                tonic::transport::Server::builder().add_service(metad.meta_service()).add_service(metad.raft_service());
            let server = tokio::spawn(router.serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            }));
            nodes.push(Node { id, metad, stop: Some(stop), server });
        }
        for n in &nodes {
            n.metad.wait_ready(Some(&default_share)).await.map_err(|e| harness_err("wait ready", e))?;
        }

        let mut clients = BTreeMap::new();
        for (id, addr) in &members {
            let ep = Channel::from_shared(addr.clone()).map_err(|e| harness_err("endpoint", e))?;
            clients.insert(*id, MetaClient::new(ep.connect_lazy()));
        }
        let metads = nodes.iter().map(|n| n.metad.clone()).collect();
        let conn = Arc::new(Conn { clients, leader: AtomicU64::new(0), metads });
        conn.refresh_leader(None).await?;
        let leader = conn.leader.load(Ordering::SeqCst);
        let leader_metad = &nodes.iter().find(|n| n.id == leader).ok_or("harness: leader is not a node")?.metad;
        leader_metad.ensure_share("other", OTHER_SHARE).await.map_err(|e| harness_err("second share", e))?;

        let share_root = conn.share_root(SHARE).await?;
        let other_root = conn.share_root(OTHER_SHARE).await?;
        Ok(Group { nodes, conn, share_root, other_root, _dirs: dirs })
    }

    /// Stops every node's server and Raft.
    pub async fn stop(mut self) -> Result<(), String> {
        for n in &mut self.nodes {
            if let Some(stop) = n.stop.take() {
                let _ = stop.send(());
            }
        }
        for n in self.nodes.drain(..) {
            n.server.await.map_err(|e| harness_err("server task", e))?.map_err(|e| harness_err("server", e))?;
            n.metad.shutdown().await.map_err(|e| harness_err("shutdown", e))?;
        }
        Ok(())
    }
}

/// gRPC clients to every node, and which one is the leader.
struct Conn {
    clients: BTreeMap<u64, MetaClient<Channel>>,
    leader: AtomicU64,
    metads: Vec<Metad>,
}

impl Conn {
    /// Waits (event-driven, on Raft metrics) for a known leader other than `not`.
    async fn refresh_leader(&self, not: Option<u64>) -> Result<(), String> {
        let metad = self.metads.first().ok_or("harness: no nodes")?;
        let m = metad
            .raft()
            .wait(Some(DEADLINE))
            .metrics(|m| m.current_leader.is_some() && m.current_leader != not, "a leader")
            .await
            .map_err(|e| harness_err("no leader", e))?;
        self.leader.store(m.current_leader.unwrap_or_default(), Ordering::SeqCst);
        Ok(())
    }

    /// Sends `req` to the leader with `f`; follows `NotLeader` answers a few times.
    async fn call<Req, Resp, F, Fut>(&self, req: Req, f: F) -> Result<Resp, FsError>
    where
        Req: Clone,
        F: Fn(MetaClient<Channel>, Req) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
    {
        let mut last = FsError::Unavailable("no attempt".into());
        for _ in 0..5 {
            let leader = self.leader.load(Ordering::SeqCst);
            let Some(client) = self.clients.get(&leader) else {
                let _ = self.refresh_leader(None).await;
                continue;
            };
            match f(client.clone(), req.clone()).await {
                Ok(r) => return Ok(r.into_inner()),
                Err(status) => match FsError::from_status(&status) {
                    FsError::NotLeader { leader: Some(l) } if self.clients.contains_key(&l) && l != leader => {
                        self.leader.store(l, Ordering::SeqCst);
                        last = FsError::NotLeader { leader: Some(l) };
                    }
                    e @ (FsError::NotLeader { .. } | FsError::Unavailable(_)) => {
                        if self.refresh_leader(Some(leader)).await.is_err() {
                            return Err(e);
                        }
                        last = e;
                    }
                    e => return Err(e),
                },
            }
        }
        Err(last)
    }

    async fn share_root(&self, path: &str) -> Result<NodeRef, String> {
        let req = pb::GetShareRequest { export_path: path.to_string() };
        let share = self
            .call(req, |mut c, r| async move { c.get_share(r).await })
            .await
            .map_err(|e| harness_err("share", e))?;
        share.root.and_then(|r| r.node).ok_or_else(|| format!("harness: share {path} has no root"))
    }
}

// ------------------------------------------------------------------------------ cases

pub type CaseFuture<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// One registered case: `area::name`, whether it must run alone (it measures share-wide
/// counters), and the async fn.
pub struct Case {
    pub area: &'static str,
    pub name: &'static str,
    pub serial: bool,
    pub run: for<'a> fn(&'a Ctx) -> CaseFuture<'a>,
}

/// Registers plain `async fn name(ctx: &Ctx) -> Result<(), String>` cases of one module:
/// `cases![a, b]` (run concurrently with others) or `cases![serial: a, b]` (run alone).
macro_rules! cases {
    (serial: $($f:ident),* $(,)?) => { cases!(@ true; $($f),*) };
    ($($f:ident),* $(,)?) => { cases!(@ false; $($f),*) };
    (@ $serial:expr; $($f:ident),*) => {
        vec![$($crate::conformance::harness::Case {
            area: module_path!().rsplit("::").next().unwrap_or(""),
            name: stringify!($f),
            serial: $serial,
            run: |ctx| Box::pin($f(ctx)),
        }),*]
    };
}

/// Returns `Err(message)` from the case unless `cond` holds.
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

/// Returns `Err` from the case unless the two values are equal; the message shows both.
macro_rules! ensure_eq {
    ($a:expr, $b:expr $(,)?) => { ensure_eq!($a, $b, "{} == {}", stringify!($a), stringify!($b)) };
    ($a:expr, $b:expr, $($fmt:tt)+) => {
        match (&$a, &$b) {
            (a, b) => {
                if a != b {
                    return Err(format!("{}: got {:?}, want {:?}", format!($($fmt)+), a, b));
                }
            }
        }
    };
}

/// Turns an unexpected error into a case failure naming the step.
pub trait Step<T> {
    fn ctx(self, what: &str) -> Result<T, String>;
}

impl<T> Step<T> for Result<T, FsError> {
    fn ctx(self, what: &str) -> Result<T, String> {
        self.map_err(|e| format!("{what}: unexpected error {e:?}"))
    }
}

impl<T> Step<T> for Option<T> {
    fn ctx(self, what: &str) -> Result<T, String> {
        self.ok_or_else(|| format!("{what}: missing in the reply"))
    }
}

/// Same error variant (messages of `Invalid`/`Io`/... are not compared).
pub fn same_error(a: &FsError, b: &FsError) -> bool {
    a.code() == b.code()
}

/// Passes if `r` failed with `want`'s variant.
pub fn expect_err<T: std::fmt::Debug>(r: Result<T, FsError>, want: FsError) -> Result<(), String> {
    expect_any(r, &[want])
}

/// Passes if `r` failed with any of `wants`' variants.
pub fn expect_any<T: std::fmt::Debug>(r: Result<T, FsError>, wants: &[FsError]) -> Result<(), String> {
    let names: Vec<&str> = wants.iter().map(|w| w.code()).collect();
    match r {
        Err(e) if wants.iter().any(|w| same_error(&e, w)) => Ok(()),
        Err(e) => Err(format!("expected {names:?}, got error {e:?}")),
        Ok(v) => Err(format!("expected {names:?}, got success {}", short(&v))),
    }
}

/// The start of a value's debug text, so a failure report stays readable.
fn short(v: &impl std::fmt::Debug) -> String {
    let s = format!("{v:?}");
    match s.char_indices().nth(160) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s,
    }
}

/// `Invalid` with any message.
pub fn invalid() -> FsError {
    FsError::Invalid(String::new())
}

/// The handle inside an attribute set (default when absent, which then fails as stale).
pub fn nref(a: &Attr) -> NodeRef {
    a.node.unwrap_or_default()
}

/// A time as nanoseconds since the epoch (0 when absent).
pub fn ns(t: &Option<pb::Time>) -> i128 {
    t.as_ref().map(|t| i128::from(t.secs) * 1_000_000_000 + i128::from(t.nanos)).unwrap_or(0)
}

/// The current wall-clock time in nanoseconds since the epoch.
pub fn now_ns() -> i128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i128).unwrap_or(0)
}

/// Checks that `t` is a server-stamped "now": within a minute of this process's clock.
pub fn is_recent(t: &Option<pb::Time>) -> bool {
    (ns(t) - now_ns()).abs() < 60_000_000_000
}

/// An extent of `length` bytes at file `offset`, from a chunk whose hash is `[tag; 32]`.
pub fn ext(offset: u64, length: u64, tag: u8) -> pb::Extent {
    pb::Extent { offset, length, hash: vec![tag; 32], chunk_offset: 0, chunk_length: length }
}

/// The (offset, length, tag, chunk_offset) of each extent, for compact comparisons.
pub fn spans(list: &[pb::Extent]) -> Vec<(u64, u64, u8, u64)> {
    list.iter().map(|e| (e.offset, e.length, e.hash.first().copied().unwrap_or(0), e.chunk_offset)).collect()
}

// ------------------------------------------------------------------------------ per-case context

/// What a case gets: its own directory and typed access to the leader.
pub struct Ctx {
    conn: Arc<Conn>,
    /// Root of the default share (mode 0755, owned by root).
    pub root: NodeRef,
    /// Root of a second share.
    pub other_root: NodeRef,
    /// This case's fresh directory under the share root: mode 0777, owned by root:root.
    pub dir: NodeRef,
    client_id: u64,
    seq: AtomicU64,
}

/// Converts a name to wire bytes.
fn b(name: impl AsRef<[u8]>) -> Vec<u8> {
    name.as_ref().to_vec()
}

impl Ctx {
    /// A fresh request id from this case's own client.
    pub fn rid(&self) -> Option<RequestId> {
        Some(RequestId { client_id: self.client_id, seq: self.seq.fetch_add(1, Ordering::SeqCst) + 1 })
    }

    /// This case's request-id client id.
    pub fn client_id(&self) -> u64 {
        self.client_id
    }

    // ---- raw calls: the request exactly as given

    pub async fn getattr(&self, node: NodeRef) -> Result<Attr, FsError> {
        self.getattr_raw(pb::GetAttrRequest { node: Some(node) }).await
    }

    pub async fn getattr_raw(&self, req: pb::GetAttrRequest) -> Result<Attr, FsError> {
        let r = self.conn.call(req, |mut c, r| async move { c.get_attr(r).await }).await?;
        r.attr.ok_or_else(|| FsError::Internal("GetAttr without attr".into()))
    }

    pub async fn lookup_raw(&self, req: pb::LookupRequest) -> Result<pb::LookupReply, FsError> {
        self.conn.call(req, |mut c, r| async move { c.lookup(r).await }).await
    }

    pub async fn create_raw(&self, req: pb::CreateRequest) -> Result<pb::CreateReply, FsError> {
        self.conn.call(req, |mut c, r| async move { c.create(r).await }).await
    }

    pub async fn readdir_raw(&self, req: pb::ReadDirRequest) -> Result<pb::ReadDirReply, FsError> {
        self.conn.call(req, |mut c, r| async move { c.read_dir(r).await }).await
    }

    pub async fn remove_raw(&self, req: pb::RemoveRequest) -> Result<pb::RemoveReply, FsError> {
        self.conn.call(req, |mut c, r| async move { c.remove(r).await }).await
    }

    pub async fn setattr_raw(&self, req: pb::SetAttrRequest) -> Result<pb::SetAttrReply, FsError> {
        self.conn.call(req, |mut c, r| async move { c.set_attr(r).await }).await
    }

    pub async fn commit_raw(&self, req: pb::CommitExtentsRequest) -> Result<pb::CommitExtentsReply, FsError> {
        self.conn.call(req, |mut c, r| async move { c.commit_extents(r).await }).await
    }

    pub async fn get_extents_raw(&self, req: pb::GetExtentsRequest) -> Result<pb::GetExtentsReply, FsError> {
        self.conn.call(req, |mut c, r| async move { c.get_extents(r).await }).await
    }

    pub async fn fsstat(&self, node: NodeRef) -> Result<pb::FsStatReply, FsError> {
        self.conn.call(pb::FsStatRequest { node: Some(node) }, |mut c, r| async move { c.fs_stat(r).await }).await
    }

    pub async fn symlink_raw(&self, req: pb::SymlinkRequest) -> Result<pb::CreateReply, FsError> {
        self.conn.call(req, |mut c, r| async move { c.symlink(r).await }).await
    }

    pub async fn readlink_raw(&self, req: pb::ReadLinkRequest) -> Result<pb::ReadLinkReply, FsError> {
        self.conn.call(req, |mut c, r| async move { c.read_link(r).await }).await
    }

    pub async fn mknod_raw(&self, req: pb::MknodRequest) -> Result<pb::CreateReply, FsError> {
        self.conn.call(req, |mut c, r| async move { c.mknod(r).await }).await
    }

    pub async fn link_raw(&self, req: pb::LinkRequest) -> Result<pb::LinkReply, FsError> {
        self.conn.call(req, |mut c, r| async move { c.link(r).await }).await
    }

    pub async fn rename_raw(&self, req: pb::RenameRequest) -> Result<pb::RenameReply, FsError> {
        self.conn.call(req, |mut c, r| async move { c.rename(r).await }).await
    }

    pub async fn access_raw(&self, req: pb::AccessRequest) -> Result<pb::AccessReply, FsError> {
        self.conn.call(req, |mut c, r| async move { c.access(r).await }).await
    }

    // ---- the data plane's bookkeeping (cluster-wide, not per directory)

    pub async fn heartbeat_raw(&self, req: pb::HeartbeatRequest) -> Result<pb::HeartbeatReply, FsError> {
        self.conn.call(req, |mut c, r| async move { c.heartbeat(r).await }).await
    }

    pub async fn list_block_daemons(&self) -> Result<pb::ListBlockDaemonsReply, FsError> {
        let req = pb::ListBlockDaemonsRequest {};
        self.conn.call(req, |mut c, r| async move { c.list_block_daemons(r).await }).await
    }

    pub async fn record_packs_raw(&self, req: pb::RecordPacksRequest) -> Result<pb::RecordPacksReply, FsError> {
        self.conn.call(req, |mut c, r| async move { c.record_packs(r).await }).await
    }

    pub async fn locate_chunks_raw(&self, req: pb::LocateChunksRequest) -> Result<pb::LocateChunksReply, FsError> {
        self.conn.call(req, |mut c, r| async move { c.locate_chunks(r).await }).await
    }

    pub async fn get_share(&self, export_path: &str) -> Result<pb::Share, FsError> {
        let req = pb::GetShareRequest { export_path: export_path.to_string() };
        self.conn.call(req, |mut c, r| async move { c.get_share(r).await }).await
    }

    pub async fn list_shares(&self) -> Result<pb::ListSharesReply, FsError> {
        let req = pb::ListSharesRequest {};
        self.conn.call(req, |mut c, r| async move { c.list_shares(r).await }).await
    }

    // ---- typed wrappers: every mutation carries a fresh request id

    /// A create request as a well-behaved gateway sends it: uid/gid fields equal to the cred.
    pub fn create_req(
        &self,
        cred: &Cred,
        dir: NodeRef,
        name: impl AsRef<[u8]>,
        kind: FileType,
        mode: u32,
    ) -> pb::CreateRequest {
        pb::CreateRequest {
            lease_instance: 0,
            dir: Some(dir),
            name: b(name),
            kind: kind as i32,
            mode,
            uid: cred.uid,
            gid: cred.gid,
            how: CreateHow::Guarded as i32,
            verifier: vec![],
            cred: Some(cred.clone()),
            request_id: self.rid(),
            size: None,
        }
    }

    pub async fn lookup_full(
        &self,
        cred: &Cred,
        dir: NodeRef,
        name: impl AsRef<[u8]>,
    ) -> Result<pb::LookupReply, FsError> {
        self.lookup_raw(pb::LookupRequest { dir: Some(dir), name: b(name), cred: Some(cred.clone()) }).await
    }

    pub async fn lookup(&self, cred: &Cred, dir: NodeRef, name: impl AsRef<[u8]>) -> Result<Attr, FsError> {
        let r = self.lookup_full(cred, dir, name).await?;
        r.attr.ok_or_else(|| FsError::Internal("Lookup without attr".into()))
    }

    /// GUARDED create of a regular file.
    pub async fn create(&self, cred: &Cred, dir: NodeRef, name: impl AsRef<[u8]>, mode: u32) -> Result<Attr, FsError> {
        let r = self.create_raw(self.create_req(cred, dir, name, FileType::Regular, mode)).await?;
        r.attr.ok_or_else(|| FsError::Internal("Create without attr".into()))
    }

    /// GUARDED create of a directory.
    pub async fn mkdir(&self, cred: &Cred, dir: NodeRef, name: impl AsRef<[u8]>, mode: u32) -> Result<Attr, FsError> {
        let r = self.create_raw(self.create_req(cred, dir, name, FileType::Directory, mode)).await?;
        r.attr.ok_or_else(|| FsError::Internal("Create without attr".into()))
    }

    pub async fn remove(&self, cred: &Cred, dir: NodeRef, name: impl AsRef<[u8]>) -> Result<pb::RemoveReply, FsError> {
        let req = pb::RemoveRequest {
            dir: Some(dir),
            name: b(name),
            directory: false,
            cred: Some(cred.clone()),
            request_id: self.rid(),
        };
        self.remove_raw(req).await
    }

    pub async fn rmdir(&self, cred: &Cred, dir: NodeRef, name: impl AsRef<[u8]>) -> Result<pb::RemoveReply, FsError> {
        let req = pb::RemoveRequest {
            dir: Some(dir),
            name: b(name),
            directory: true,
            cred: Some(cred.clone()),
            request_id: self.rid(),
        };
        self.remove_raw(req).await
    }

    pub async fn readdir(
        &self,
        cred: &Cred,
        dir: NodeRef,
        cookie: u64,
        verifier: u64,
        max: u32,
    ) -> Result<pb::ReadDirReply, FsError> {
        let req = pb::ReadDirRequest {
            dir: Some(dir),
            cookie,
            max_entries: max,
            cookie_verifier: verifier,
            cred: Some(cred.clone()),
        };
        self.readdir_raw(req).await
    }

    /// Every entry of `dir` ("." and ".." left out if a server lists them), paging by `page`.
    pub async fn list(&self, cred: &Cred, dir: NodeRef, page: u32) -> Result<Vec<pb::DirEntry>, FsError> {
        let (mut cookie, mut verifier, mut out) = (0, 0, Vec::new());
        for _ in 0..10_000 {
            let r = self.readdir(cred, dir, cookie, verifier, page).await?;
            verifier = r.cookie_verifier;
            if let Some(last) = r.entries.last() {
                cookie = last.cookie;
            }
            let empty = r.entries.is_empty();
            out.extend(r.entries.into_iter().filter(|e| e.name != b"." && e.name != b".."));
            if r.eof {
                return Ok(out);
            }
            if empty {
                return Err(FsError::Internal("ReadDir returned no entries and no eof".into()));
            }
        }
        Err(FsError::Internal("ReadDir never reached eof".into()))
    }

    /// The sorted names in `dir`.
    pub async fn names(&self, cred: &Cred, dir: NodeRef) -> Result<Vec<Vec<u8>>, FsError> {
        let mut names: Vec<Vec<u8>> = self.list(cred, dir, 1000).await?.into_iter().map(|e| e.name).collect();
        names.sort();
        Ok(names)
    }

    /// A SetAttr request for `node` by `cred` that changes nothing yet.
    pub fn setattr_req(&self, cred: &Cred, node: NodeRef) -> pb::SetAttrRequest {
        pb::SetAttrRequest { node: Some(node), cred: Some(cred.clone()), request_id: self.rid(), ..Default::default() }
    }

    pub async fn chmod(&self, cred: &Cred, node: NodeRef, mode: u32) -> Result<Attr, FsError> {
        let r = self.setattr_raw(pb::SetAttrRequest { mode: Some(mode), ..self.setattr_req(cred, node) }).await?;
        r.after.ok_or_else(|| FsError::Internal("SetAttr without after".into()))
    }

    pub async fn chown(&self, cred: &Cred, node: NodeRef, uid: Option<u32>, gid: Option<u32>) -> Result<Attr, FsError> {
        let r = self.setattr_raw(pb::SetAttrRequest { uid, gid, ..self.setattr_req(cred, node) }).await?;
        r.after.ok_or_else(|| FsError::Internal("SetAttr without after".into()))
    }

    pub async fn truncate(&self, cred: &Cred, node: NodeRef, size: u64) -> Result<Attr, FsError> {
        let r = self.setattr_raw(pb::SetAttrRequest { size: Some(size), ..self.setattr_req(cred, node) }).await?;
        r.after.ok_or_else(|| FsError::Internal("SetAttr without after".into()))
    }

    pub async fn commit(
        &self,
        cred: &Cred,
        node: NodeRef,
        start: u64,
        end: u64,
        extents: Vec<pb::Extent>,
    ) -> Result<pb::CommitExtentsReply, FsError> {
        let req = pb::CommitExtentsRequest {
            lease: None,
            node: Some(node),
            range_start: start,
            range_end: end,
            extents,
            cred: Some(cred.clone()),
            request_id: self.rid(),
        };
        self.commit_raw(req).await
    }

    pub async fn extents(
        &self,
        cred: &Cred,
        node: NodeRef,
        offset: u64,
        length: u64,
    ) -> Result<Vec<pb::Extent>, FsError> {
        let req = pb::GetExtentsRequest { node: Some(node), offset, length, cred: Some(cred.clone()) };
        Ok(self.get_extents_raw(req).await?.extents)
    }

    pub async fn symlink(
        &self,
        cred: &Cred,
        dir: NodeRef,
        name: impl AsRef<[u8]>,
        target: impl AsRef<[u8]>,
    ) -> Result<pb::CreateReply, FsError> {
        let req = pb::SymlinkRequest {
            dir: Some(dir),
            name: b(name),
            target: b(target),
            mode: 0o777,
            cred: Some(cred.clone()),
            request_id: self.rid(),
        };
        self.symlink_raw(req).await
    }

    pub async fn readlink(&self, cred: &Cred, node: NodeRef) -> Result<pb::ReadLinkReply, FsError> {
        self.readlink_raw(pb::ReadLinkRequest { node: Some(node), cred: Some(cred.clone()) }).await
    }

    #[allow(clippy::too_many_arguments)] // mirrors the request's fields
    pub async fn mknod(
        &self,
        cred: &Cred,
        dir: NodeRef,
        name: impl AsRef<[u8]>,
        kind: FileType,
        mode: u32,
        rdev: (u32, u32),
    ) -> Result<pb::CreateReply, FsError> {
        let req = pb::MknodRequest {
            dir: Some(dir),
            name: b(name),
            kind: kind as i32,
            mode,
            rdev_major: rdev.0,
            rdev_minor: rdev.1,
            cred: Some(cred.clone()),
            request_id: self.rid(),
        };
        self.mknod_raw(req).await
    }

    pub async fn link(
        &self,
        cred: &Cred,
        node: NodeRef,
        dir: NodeRef,
        name: impl AsRef<[u8]>,
    ) -> Result<pb::LinkReply, FsError> {
        let req = pb::LinkRequest {
            node: Some(node),
            dir: Some(dir),
            name: b(name),
            cred: Some(cred.clone()),
            request_id: self.rid(),
        };
        self.link_raw(req).await
    }

    pub async fn rename(
        &self,
        cred: &Cred,
        from_dir: NodeRef,
        from: impl AsRef<[u8]>,
        to_dir: NodeRef,
        to: impl AsRef<[u8]>,
    ) -> Result<pb::RenameReply, FsError> {
        let req = pb::RenameRequest {
            from_dir: Some(from_dir),
            from_name: b(from),
            to_dir: Some(to_dir),
            to_name: b(to),
            cred: Some(cred.clone()),
            request_id: self.rid(),
        };
        self.rename_raw(req).await
    }

    /// The granted subset of `mask`.
    pub async fn access(&self, cred: &Cred, node: NodeRef, mask: u32) -> Result<u32, FsError> {
        Ok(self.access_raw(pb::AccessRequest { node: Some(node), cred: Some(cred.clone()), mask }).await?.granted)
    }

    // ---- conveniences built on the wrappers

    /// Creates a regular file as `cred` and returns its handle.
    pub async fn file(&self, cred: &Cred, dir: NodeRef, name: &str, mode: u32) -> Result<NodeRef, String> {
        Ok(nref(&self.create(cred, dir, name, mode).await.ctx(&format!("create {name}"))?))
    }

    /// Creates a directory as `cred` and returns its handle.
    pub async fn subdir(&self, cred: &Cred, dir: NodeRef, name: &str, mode: u32) -> Result<NodeRef, String> {
        Ok(nref(&self.mkdir(cred, dir, name, mode).await.ctx(&format!("mkdir {name}"))?))
    }

    /// getattr that must succeed.
    pub async fn attr(&self, node: NodeRef) -> Result<Attr, String> {
        self.getattr(node).await.ctx("getattr")
    }

    /// A directory owned by `user()` with `mode`, created by root (then chowned) in the case dir.
    pub async fn user_dir(&self, name: &str, mode: u32) -> Result<NodeRef, String> {
        let d = self.subdir(&root(), self.dir, name, 0o755).await?;
        self.chown(&root(), d, Some(USER_UID), Some(USER_GID)).await.ctx("chown user_dir")?;
        self.chmod(&root(), d, mode).await.ctx("chmod user_dir")?;
        Ok(d)
    }
}

// ------------------------------------------------------------------------------ the runner

/// Runs every case in `cases` against a fresh `voters`-voter group; returns the failures as
/// (`area::name`, message), after stopping the group.
pub async fn run_all(voters: u64, cases: Vec<Case>) -> Result<Vec<(String, String)>, String> {
    let group = Group::start(voters).await?;
    let filter = std::env::var("CONFORMANCE_FILTER").unwrap_or_default();
    let selected: Vec<(usize, Case)> =
        cases.into_iter().filter(|c| format!("{}::{}", c.area, c.name).contains(&filter)).enumerate().collect();
    let (serial, parallel): (Vec<_>, Vec<_>) = selected.into_iter().partition(|(_, c)| c.serial);

    let group_ref = &group;
    let mut failures: Vec<(String, String)> = futures::stream::iter(parallel)
        .map(|(i, case)| async move { run_one(group_ref, i, &case).await })
        .buffer_unordered(CONCURRENCY)
        .filter_map(|r| async move { r })
        .collect()
        .await;
    for (i, case) in serial {
        if let Some(f) = run_one(&group, i, &case).await {
            failures.push(f);
        }
    }
    group.stop().await?;
    failures.sort();
    Ok(failures)
}

async fn run_one(group: &Group, index: usize, case: &Case) -> Option<(String, String)> {
    let full = format!("{}::{}", case.area, case.name);
    let outcome = async {
        let ctx = setup(group, index, &full).await?;
        let run = AssertUnwindSafe((case.run)(&ctx)).catch_unwind();
        match tokio::time::timeout(DEADLINE, run).await {
            Err(_) => Err(format!("timed out after {DEADLINE:?}")),
            Ok(Err(panic)) => Err(match (panic.downcast_ref::<&str>(), panic.downcast_ref::<String>()) {
                (Some(s), _) => format!("panicked: {s}"),
                (_, Some(s)) => format!("panicked: {s}"),
                _ => "panicked".to_string(),
            }),
            Ok(Ok(r)) => r,
        }
    }
    .await;
    outcome.err().map(|msg| (full, msg))
}

async fn setup(group: &Group, index: usize, name: &str) -> Result<Ctx, String> {
    let mut ctx = Ctx {
        conn: group.conn.clone(),
        root: group.share_root,
        other_root: group.other_root,
        dir: NodeRef::default(),
        client_id: 0x7e55_0000_0000 + index as u64,
        seq: AtomicU64::new(0),
    };
    let dir_name = format!("{index:04}-{}", name.replace("::", "-"));
    let dir =
        ctx.mkdir(&root(), ctx.root, &dir_name, 0o777).await.map_err(|e| format!("setup: mkdir case dir: {e:?}"))?;
    ctx.dir = nref(&dir);
    // The mode is set explicitly too, in case a server applies a umask on create.
    ctx.chmod(&root(), ctx.dir, 0o777).await.map_err(|e| format!("setup: chmod case dir: {e:?}"))?;
    Ok(ctx)
}
