//! Three `tessera serve` processes forming a metad group on a loopback address of its own (127.a.b.c), driven over gRPC as a
//! gateway would: fail-over under a stream of mutations (kill -9 of the leader), and a follower
//! catching up from a snapshot after missing 10,000 operations (with its data directory kept,
//! and replaced by an empty one). Every link to the internal port is mutual TLS (a CA from
//! `tessera init-ca`, a `metad` certificate per node, a `gateway` certificate for the test's
//! client); the members' URLs are written `http://` and dialed as `https://`. The internal
//! port refuses clients without a certificate from the cluster CA, and certificate roles the
//! method is not for (a `tool` or `gateway` certificate never speaks Raft).
//!
//! Every wait has a deadline; every child is killed (by PID) when its `Proc` is dropped.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap (workspace lint note)

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

mod common;

use cluster::grpc_tls::ClientTls;
use cluster::tls::Role;
use proto::FsError;
use proto::pb::control_client::ControlClient;
use proto::pb::meta_client::MetaClient;
use proto::pb::{self, CreateHow, FileType};
use tonic::transport::Channel;

const START_DEADLINE: Duration = Duration::from_secs(60);
const DEADLINE: Duration = Duration::from_secs(60);
/// Interval between two looks at a condition being waited for (always under a deadline).
const POLL: Duration = Duration::from_millis(20);

/// A loopback address of this test's own (127.a.b.c), so ports picked here cannot collide
/// with the ports of tests running alongside on 127.0.0.1.
fn own_loopback() -> String {
    let r: u32 = rand::random();
    format!("127.{}.{}.{}", 1 + (r % 250), (r >> 8) % 256, 2 + ((r >> 16) % 250))
}


fn root_cred() -> Option<pb::Cred> {
    Some(pb::Cred { uid: 0, gid: 0, gids: vec![] })
}

/// One node's fixed identity: id, ports, data directory.
#[derive(Clone)]
struct Spec {
    ip: String,
    id: u64,
    metad: u16,
    control: u16,
    metrics: u16,
    data_dir: PathBuf,
    /// `tls.dir`: outside `data_dir`, so a node restarted on an empty data directory keeps
    /// its certificate.
    tls_dir: PathBuf,
}

impl Spec {
    fn metad_url(&self) -> String {
        format!("http://{}:{}", self.ip, self.metad)
    }
    fn control_url(&self) -> String {
        format!("http://{}:{}", self.ip, self.control)
    }
}

/// A running `tessera serve`.
struct Proc {
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// SIGKILL by PID, then reap.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = rustix::process::Pid::from_raw(child.id() as i32).expect("pid");
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            let _ = child.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

struct Cluster {
    _tmp: tempfile::TempDir,
    /// `gateway`, `tool` and `blockd` certificates for the test's own clients.
    clients_dir: PathBuf,
    /// How the test dials the internal port: as a gateway would.
    gateway: ClientTls,
    specs: Vec<Spec>,
    procs: Vec<Option<Proc>>,
    snapshot_logs: u64,
    keep_logs: u64,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for (s, p) in self.specs.iter().zip(&self.procs) {
                if let Some(p) = p {
                    eprintln!("---- node {} log ----\n{}", s.id, p.log_tail());
                }
            }
        }
    }
}

impl Cluster {
    fn new(snapshot_logs: u64, keep_logs: u64) -> Cluster {
        let tmp = tempfile::tempdir().unwrap();
        let ip = own_loopback();
        // All nine ports at once: distinct (see `common::free_ports`).
        let ports: [u16; 9] = common::free_ports(ip.parse().unwrap());
        let specs: Vec<Spec> = (1..=3)
            .map(|id| Spec {
                ip: ip.clone(),
                id,
                metad: ports[(id as usize - 1) * 3],
                control: ports[(id as usize - 1) * 3 + 1],
                metrics: ports[(id as usize - 1) * 3 + 2],
                data_dir: tmp.path().join(format!("node{id}")),
                tls_dir: tmp.path().join(format!("node{id}-tls")),
            })
            .collect();
        let ca_dir = tmp.path().join("ca");
        tessera(&["init-ca", "--dir", ca_dir.to_str().unwrap()]);
        for s in &specs {
            issue_cert(&ca_dir, "metad", &s.ip, &s.tls_dir);
        }
        let clients_dir = tmp.path().join("clients");
        for role in ["gateway", "tool", "blockd"] {
            issue_cert(&ca_dir, role, "localhost", &clients_dir);
        }
        let gateway = common::grpc::client_tls(&clients_dir, Role::Gateway);
        let mut c =
            Cluster { _tmp: tmp, clients_dir, gateway, specs, procs: vec![None, None, None], snapshot_logs, keep_logs };
        for i in 0..3 {
            c.start(i, false);
        }
        c
    }

    /// Writes node `i`'s config (with `join` = the other members' control APIs when `join`)
    /// and starts it, waiting for its ready line.
    fn start(&mut self, i: usize, join: bool) {
        let s = self.specs[i].clone();
        let mut toml = format!(
            "node_id = {}\ndata_dir = {:?}\nroles = [\"metad\"]\n[tls]\ndir = {:?}\n\
             [control]\nbind = {:?}\nport = {}\n[metrics]\nbind = {:?}\nport = {}\n[log]\nfilter = \"info\"\n\
             [metad]\nbind = {:?}\nport = {}\nsnapshot_logs = {}\nkeep_logs = {}\n",
            s.id,
            s.data_dir,
            s.tls_dir,
            s.ip,
            s.control,
            s.ip,
            s.metrics,
            s.ip,
            s.metad,
            self.snapshot_logs,
            self.keep_logs
        );
        if join {
            let urls: Vec<String> =
                self.specs.iter().filter(|o| o.id != s.id).map(|o| format!("{:?}", o.control_url())).collect();
            toml.push_str(&format!("join = [{}]\n", urls.join(", ")));
        }
        toml.push_str("[metad.initial_members]\n");
        for o in &self.specs {
            toml.push_str(&format!("{} = {:?}\n", o.id, o.metad_url()));
        }
        std::fs::create_dir_all(&s.data_dir).unwrap();
        let config = s.data_dir.with_extension("toml");
        std::fs::write(&config, toml).unwrap();
        let log = s.data_dir.with_extension(format!("log-{}", Instant::now().elapsed().as_nanos()));
        let log = PathBuf::from(format!("{}-{}", log.display(), rand::random::<u32>()));
        let log_file = std::fs::File::create(&log).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_tessera"))
            .args(["serve", "--config"])
            .arg(&config)
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .spawn()
            .expect("spawn tessera serve");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.starts_with("TESSERA_READY") {
                    let _ = tx.send(line);
                }
            }
        });
        let p = Proc { child: Some(child), log };
        if rx.recv_timeout(START_DEADLINE).is_err() {
            panic!("node {} did not become ready; log:\n{}", s.id, p.log_tail());
        }
        self.procs[i] = Some(p);
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut p) = self.procs[i].take() {
            p.kill();
        }
    }

    fn alive(&self) -> Vec<usize> {
        (0..3).filter(|i| self.procs[*i].is_some()).collect()
    }

    fn index_of(&self, id: u64) -> usize {
        self.specs.iter().position(|s| s.id == id).unwrap()
    }

    /// A `Meta` client of node `i`, with the `gateway` certificate.
    async fn meta(&self, i: usize) -> MetaClient<Channel> {
        common::grpc::meta(&self.gateway, &self.specs[i].metad_url())
    }

    async fn status(&self, i: usize) -> Option<pb::StatusReply> {
        let ch = tonic::transport::Endpoint::from_shared(self.specs[i].control_url()).unwrap().connect_lazy();
        let mut c = ControlClient::new(ch);
        c.status(pb::StatusRequest {}).await.ok().map(|r| r.into_inner())
    }

    /// Waits until every live node agrees on a leader that is alive; returns its index.
    async fn leader(&self) -> usize {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let mut leaders = BTreeSet::new();
            for i in self.alive() {
                leaders.insert(self.status(i).await.and_then(|s| s.leader_id));
            }
            if leaders.len() == 1
                && let Some(Some(id)) = leaders.first()
                && self.procs[self.index_of(*id)].is_some()
            {
                return self.index_of(*id);
            }
            assert!(Instant::now() < deadline, "no agreed leader within {DEADLINE:?}: {leaders:?}");
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until node `i` has applied at least `index`.
    async fn wait_applied(&self, i: usize, index: u64) -> pb::StatusReply {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(s) = self.status(i).await
                && s.last_applied >= index
            {
                return s;
            }
            assert!(Instant::now() < deadline, "node {} did not apply {index} within {DEADLINE:?}", self.specs[i].id);
            tokio::time::sleep(POLL).await;
        }
    }

    /// The default share's root, once it exists (read through any live node).
    async fn root(&self) -> pb::NodeRef {
        let deadline = Instant::now() + DEADLINE;
        loop {
            for i in self.alive() {
                let r = self.meta(i).await.get_share(pb::GetShareRequest { export_path: "/export".into() }).await;
                if let Ok(share) = r {
                    return share.into_inner().root.unwrap().node.unwrap();
                }
            }
            assert!(Instant::now() < deadline, "the default share did not appear");
            tokio::time::sleep(POLL).await;
        }
    }
}

fn tessera(args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_tessera")).args(args).output().unwrap();
    assert!(out.status.success(), "tessera {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// `tessera issue-cert` of `role` for `name` into the TLS directory `out`.
fn issue_cert(ca_dir: &Path, role: &str, name: &str, out: &Path) {
    let (ca, out) = (ca_dir.to_str().unwrap(), out.to_str().unwrap());
    tessera(&["issue-cert", "--ca", ca, "--role", role, "--name", name, "--out", out]);
}

/// Every entry of `dir`, read through node `i` page by page.
async fn read_dir_all(meta: &mut MetaClient<Channel>, dir: pb::NodeRef) -> Vec<(Vec<u8>, u64)> {
    let mut out = Vec::new();
    let (mut cookie, mut verifier) = (0, 0);
    loop {
        let r = meta
            .read_dir(pb::ReadDirRequest {
                dir: Some(dir),
                cookie,
                max_entries: 1000,
                cookie_verifier: verifier,
                cred: root_cred(),
            })
            .await
            .expect("readdir")
            .into_inner();
        for e in &r.entries {
            out.push((e.name.clone(), e.attr.as_ref().and_then(|a| a.node).map(|n| n.ino).unwrap_or(0)));
            cookie = e.cookie;
        }
        verifier = r.cookie_verifier;
        if r.eof || r.entries.is_empty() {
            return out;
        }
    }
}

fn create_req(dir: pb::NodeRef, name: &str, request_id: Option<pb::RequestId>) -> pb::CreateRequest {
    pb::CreateRequest {
        dir: Some(dir),
        name: name.as_bytes().to_vec(),
        kind: FileType::Regular as i32,
        mode: 0o644,
        how: CreateHow::Guarded as i32,
        cred: root_cred(),
        request_id,
        ..Default::default()
    }
}

/// A client that sends each mutation to one node after another until one succeeds (the same
/// request id on every retry), as a gateway behind a load balancer would.
struct RetryingClient {
    clients: Vec<(usize, MetaClient<Channel>)>,
    next: usize,
    client_id: u64,
    seq: u64,
}

enum Op {
    Create(String),
    Rename(String, String),
}

impl RetryingClient {
    /// Applies `op`; returns (the error codes of failed attempts, whether it succeeded).
    async fn apply(&mut self, root: pb::NodeRef, op: &Op) -> Result<(), FsError> {
        self.seq += 1;
        let rid = Some(pb::RequestId { client_id: self.client_id, seq: self.seq });
        let deadline = Instant::now() + DEADLINE;
        let mut attempts = 0;
        loop {
            let k = self.next % self.clients.len();
            let (_, c) = &mut self.clients[k];
            let r = match op {
                Op::Create(name) => c.create(create_req(root, name, rid)).await.map(|_| ()),
                Op::Rename(from, to) => c
                    .rename(pb::RenameRequest {
                        from_dir: Some(root),
                        from_name: from.as_bytes().to_vec(),
                        to_dir: Some(root),
                        to_name: to.as_bytes().to_vec(),
                        cred: root_cred(),
                        request_id: rid,
                    })
                    .await
                    .map(|_| ()),
            };
            attempts += 1;
            match r.map_err(|s| FsError::from_status(&s)) {
                Ok(()) => return Ok(()),
                Err(FsError::NotLeader { .. } | FsError::Unavailable(_)) => {}
                // A refusal after a retry means the first attempt was applied and the retry was
                // not deduplicated: an operation applied twice.
                Err(e) if attempts > 1 => panic!("retry of {} came back {e:?}: applied twice", self.seq),
                Err(e) => return Err(e),
            }
            assert!(Instant::now() < deadline, "operation {} not applied within {DEADLINE:?}", self.seq);
            self.next += 1;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_keeps_every_acknowledged_operation() {
    let mut cluster = Cluster::new(10_000, 1_000);
    let leader = cluster.leader().await;
    let root = cluster.root().await;
    let mut clients = Vec::new();
    for i in 0..3 {
        clients.push((i, cluster.meta(i).await));
    }
    // Rename arrives with the POSIX-model work; use it when this build has it.
    let renames = {
        let (_, c) = &mut clients[leader];
        let r = c
            .rename(pb::RenameRequest {
                from_dir: Some(root),
                from_name: b"nope".to_vec(),
                to_dir: Some(root),
                to_name: b"nope2".to_vec(),
                cred: root_cred(),
                request_id: None,
            })
            .await;
        !matches!(r.map_err(|s| FsError::from_status(&s)), Err(FsError::NotSupported))
    };
    let mut client = RetryingClient { clients, next: (leader + 1) % 3, client_id: rand::random(), seq: 0 };

    let mut expected = BTreeSet::new();
    let total = 240;
    let kill_at = 80;
    let mut killed_at = None;
    let mut failover_ms = None;
    for n in 0..total {
        if n == kill_at {
            cluster.kill(leader);
            killed_at = Some(Instant::now());
            client.clients.retain(|(i, _)| *i != leader);
        }
        let name = format!("f{n:04}");
        client.apply(root, &Op::Create(name.clone())).await.expect("create");
        expected.insert(name.clone());
        if renames && n % 4 == 3 {
            let to = format!("r{n:04}");
            client.apply(root, &Op::Rename(name.clone(), to.clone())).await.expect("rename");
            expected.remove(&name);
            expected.insert(to);
        }
        if let (Some(t), None) = (killed_at, failover_ms) {
            failover_ms = Some(t.elapsed().as_millis());
        }
    }
    let failover_ms = failover_ms.unwrap();
    eprintln!("FAILOVER_MS={failover_ms}");

    // Every acknowledged operation is there, on both survivors, and nothing else.
    let new_leader = cluster.leader().await;
    assert_ne!(new_leader, leader);
    let applied = cluster.status(new_leader).await.unwrap().last_log_index;
    for i in cluster.alive() {
        cluster.wait_applied(i, applied).await;
        let mut meta = cluster.meta(i).await;
        let names: BTreeSet<String> =
            read_dir_all(&mut meta, root).await.into_iter().map(|(n, _)| String::from_utf8(n).unwrap()).collect();
        assert_eq!(names, expected, "directory as node {} serves it", cluster.specs[i].id);
        for name in expected.iter().step_by(37) {
            let r = meta
                .lookup(pb::LookupRequest { dir: Some(root), name: name.as_bytes().to_vec(), cred: root_cred() })
                .await;
            assert!(r.is_ok(), "lookup {name} through node {}", cluster.specs[i].id);
        }
    }
    // The old leader comes back as a follower with everything.
    cluster.start(leader, false);
    cluster.wait_applied(leader, applied).await;
    let mut meta = cluster.meta(leader).await;
    assert_eq!(read_dir_all(&mut meta, root).await.len(), expected.len());
}

/// `/health/ready` of node `i`'s metrics port, polled until `want(status, body)` (bounded).
async fn wait_readiness(cluster: &Cluster, i: usize, what: &str, want: impl Fn(u16, &str) -> bool) -> (u16, String) {
    let s = &cluster.specs[i];
    let addr: std::net::SocketAddr = format!("{}:{}", s.ip, s.metrics).parse().unwrap();
    let deadline = Instant::now() + DEADLINE;
    loop {
        let got = tokio::task::spawn_blocking(move || common::http_get(addr, "/health/ready")).await.unwrap();
        if let Some((status, body)) = &got
            && want(*status, body)
        {
            return (*status, body.clone());
        }
        assert!(Instant::now() < deadline, "node {}: {what} within {DEADLINE:?}; last answer {got:?}", s.id);
        tokio::time::sleep(POLL).await;
    }
}

/// What a load balancer or Kubernetes asks: `/health` answers while the process serves;
/// `/health/ready` is 200 while metad serves linearizable reads, and 503 — naming the role and why —
/// once a member has been cut off from the quorum for longer than the grace; ready again
/// when the quorum returns. Meanwhile the member alone does not inflate its term.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_quorum() {
    let mut cluster = Cluster::new(10_000, 1_000);
    cluster.leader().await;
    let last = 2;
    wait_readiness(&cluster, last, "ready with a leader", |st, _| st == 200).await;
    let s = &cluster.specs[last];
    let addr: std::net::SocketAddr = format!("{}:{}", s.ip, s.metrics).parse().unwrap();
    let alive = tokio::task::spawn_blocking(move || common::http_get(addr, "/health")).await.unwrap();
    assert_eq!(alive.map(|(st, _)| st), Some(200));
    let metrics = tokio::task::spawn_blocking(move || common::http_get(addr, "/metrics")).await.unwrap();
    assert!(metrics.is_some_and(|(st, b)| st == 200 && b.contains("tessera_raft_term")), "metrics still served");

    let term = cluster.status(last).await.expect("status").term;
    cluster.kill(0);
    cluster.kill(1);
    let (_, why) = wait_readiness(&cluster, last, "not ready without a quorum", |st, _| st == 503).await;
    assert!(why.contains("metad: "), "the reason names the role: {why}");
    // Over those 3 s and more alone, Pre-Vote kept it from raising its term (without it,
    // each 0.3-0.6 s election timeout would add one, and its return would depose a leader).
    let alone = cluster.status(last).await.expect("status").term;
    assert!(alone <= term + 1, "a member without a quorum raised its term from {term} to {alone}");

    cluster.start(0, false);
    wait_readiness(&cluster, last, "ready again with a quorum", |st, _| st == 200).await;
}

/// Creates `n` files named `{prefix}{i}` through node `i`, `concurrency` at a time.
async fn bulk_create(cluster: &Cluster, i: usize, root: pb::NodeRef, prefix: &str, n: usize, concurrency: usize) {
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..concurrency {
        let mut meta = cluster.meta(i).await;
        let prefix = prefix.to_string();
        tasks.spawn(async move {
            let client_id = rand::random();
            for (seq, k) in (w..n).step_by(concurrency).enumerate() {
                let rid = Some(pb::RequestId { client_id, seq: seq as u64 + 1 });
                meta.create(create_req(root, &format!("{prefix}{k}"), rid)).await.expect("create");
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_follower_catches_up_from_a_snapshot() {
    let mut cluster = Cluster::new(1_000, 100);
    let leader = cluster.leader().await;
    let root = cluster.root().await;
    let follower = (leader + 1) % 3;
    let before = cluster.status(follower).await.unwrap().last_log_index;
    cluster.kill(follower);

    let started = Instant::now();
    bulk_create(&cluster, leader, root, "a", 10_000, 64).await;
    eprintln!("10000 creates with a follower down took {:?}", started.elapsed());

    // The leader snapshots and purges its log past what the stopped follower holds.
    let deadline = Instant::now() + DEADLINE;
    let leader_status = loop {
        let s = cluster.status(leader).await.unwrap();
        if s.purged_index.is_some_and(|p| p > before + 1_000) {
            break s;
        }
        assert!(Instant::now() < deadline, "the leader did not purge its log: {s:?}");
        tokio::time::sleep(POLL).await;
    };
    let mut meta = cluster.meta(leader).await;
    let expected = read_dir_all(&mut meta, root).await;
    assert_eq!(expected.len(), 10_000);

    // Restarted on its old data directory: catches up from the snapshot.
    cluster.start(follower, false);
    let s = cluster.wait_applied(follower, leader_status.last_log_index).await;
    assert!(s.snapshot_index.is_some_and(|i| i > before), "caught up through a snapshot: {s:?}");
    let mut meta = cluster.meta(follower).await;
    assert_eq!(read_dir_all(&mut meta, root).await, expected);

    // Restarted with an EMPTY data directory (same id, same address): joins again, catches up.
    cluster.kill(follower);
    std::fs::remove_dir_all(&cluster.specs[follower].data_dir).unwrap();
    bulk_create(&cluster, leader, root, "b", 200, 16).await;
    let target = cluster.status(leader).await.unwrap().last_log_index;
    cluster.start(follower, true);
    let s = cluster.wait_applied(follower, target).await;
    assert!(s.snapshot_index.is_some(), "an empty node catches up from a snapshot: {s:?}");
    let mut meta = cluster.meta(leader).await;
    let expected = read_dir_all(&mut meta, root).await;
    assert_eq!(expected.len(), 10_200);
    let mut meta = cluster.meta(follower).await;
    assert_eq!(read_dir_all(&mut meta, root).await, expected);
    assert!(Path::new(&cluster.specs[follower].data_dir).join("metad/snapshots").is_dir());
}

/// A tonic client of `https_url` built by hand: trusting `ca`, presenting `identity` (or
/// nothing), verifying the server against `domain` (or the URL's host).
fn hand_made_client(
    https_url: &str,
    ca: &cluster::tls::CertificateDer<'static>,
    identity: Option<&cluster::tls::Identity>,
    domain: Option<&str>,
) -> Channel {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let pem = |tag: &str, der: &[u8]| pem::encode(&pem::Pem::new(tag, der.to_vec()));
    let ca = Certificate::from_pem(pem("CERTIFICATE", ca));
    let mut tls = ClientTlsConfig::new().ca_certificate(ca).timeout(Duration::from_secs(5));
    if let Some(id) = identity {
        let chain: String = id.chain.iter().map(|c| pem("CERTIFICATE", c)).collect();
        tls = tls.identity(Identity::from_pem(chain, pem("PRIVATE KEY", id.key.secret_pkcs8_der())));
    }
    if let Some(d) = domain {
        tls = tls.domain_name(d);
    }
    tonic::transport::Endpoint::from_shared(https_url.to_string())
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect_lazy()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_port_refuses_strangers_and_roles_a_method_is_not_for() {
    use cluster::tls::NodeTls;
    use proto::pb::raft_client::RaftClient;
    use tonic::Code;

    cluster::tls::install_crypto_provider();
    let cluster = Cluster::new(10_000, 1_000);
    let leader = cluster.leader().await;
    cluster.root().await;
    let url = cluster.specs[leader].metad_url();
    assert!(url.starts_with("http://"), "written http://, dialed https:// by the nodes and by ClientTls");
    let https = url.replacen("http://", "https://", 1);
    let share = || pb::GetShareRequest { export_path: "/export".into() };
    let ca = NodeTls::new(&cluster.clients_dir).ca_anchor().unwrap();
    let gateway_id = NodeTls::new(&cluster.clients_dir).identity(&Role::Gateway).unwrap();

    // For contrast: a gateway certificate from the cluster CA reads.
    cluster.meta(leader).await.get_share(share()).await.expect("a gateway certificate may read");
    let by_hand = hand_made_client(&https, &ca, Some(&gateway_id), None);
    MetaClient::new(by_hand).get_share(share()).await.expect("the same certificate, tonic configured by hand");

    // Refused during the TLS handshake: no TLS at all, TLS without a client certificate, a
    // certificate from another CA, and a server certificate checked against a name it was not
    // issued for (the client refuses the server).
    let plain = tonic::transport::Endpoint::from_shared(url.clone()).unwrap().timeout(Duration::from_secs(10)).connect_lazy();
    let r = MetaClient::new(plain).get_share(share()).await;
    assert!(r.is_err(), "plaintext: {r:?}");
    let r = MetaClient::new(hand_made_client(&https, &ca, None, None)).get_share(share()).await;
    assert!(r.is_err(), "no client certificate: {r:?}");
    let other_ca = cluster._tmp.path().join("other-ca");
    let other_clients = cluster._tmp.path().join("other-clients");
    tessera(&["init-ca", "--dir", other_ca.to_str().unwrap()]);
    issue_cert(&other_ca, "gateway", "localhost", &other_clients);
    let stranger = NodeTls::new(&other_clients).identity(&Role::Gateway).unwrap();
    let r = MetaClient::new(hand_made_client(&https, &ca, Some(&stranger), None)).get_share(share()).await;
    assert!(r.is_err(), "a certificate from another CA: {r:?}");
    let foreign = ClientTls::mutual(&ca, &stranger).unwrap();
    let r = common::grpc::meta(&foreign, &url).get_share(share()).await;
    assert!(r.is_err(), "a certificate from another CA, through ClientTls: {r:?}");
    let r = MetaClient::new(hand_made_client(&https, &ca, Some(&gateway_id), Some("127.254.254.254")))
        .get_share(share())
        .await;
    assert!(r.is_err(), "the server's certificate does not name 127.254.254.254: {r:?}");

    // Refused by role, before any service code: Raft only from metad certificates.
    let payload = || pb::RaftPayload { data: b"{}".to_vec() };
    for role in [Role::Tool, Role::Gateway, Role::Blockd] {
        let tls = common::grpc::client_tls(&cluster.clients_dir, role.clone());
        let mut raft = RaftClient::new(common::grpc::channel(&tls, &url));
        let codes = [
            ("AppendEntries", raft.append_entries(payload()).await.map(|_| ())),
            ("Vote", raft.vote(payload()).await.map(|_| ())),
            ("ClientWrite", raft.client_write(payload()).await.map(|_| ())),
            ("ReadIndex", raft.read_index(payload()).await.map(|_| ())),
        ];
        for (rpc, r) in codes {
            assert_eq!(r.as_ref().map_err(|s| s.code()), Err(Code::PermissionDenied), "{role} calling Raft/{rpc}: {r:?}");
        }
    }

    // A tool reads and changes nothing; a block daemon does its bookkeeping only; a gateway
    // cannot reach the forwarded control calls (e.g. add a member) on the internal port.
    let tool = common::grpc::client_tls(&cluster.clients_dir, Role::Tool);
    let mut tool_meta = common::grpc::meta(&tool, &url);
    let root = tool_meta.get_share(share()).await.expect("a tool may read").into_inner().root.unwrap().node.unwrap();
    let r = tool_meta.create(create_req(root, "by-a-tool", None)).await;
    assert_eq!(r.map_err(|s| s.code()).map(|_| ()), Err(Code::PermissionDenied), "a tool may not create");
    let mut tool_control = ControlClient::new(common::grpc::channel(&tool, &url));
    tool_control.status(pb::StatusRequest {}).await.expect("a tool may ask the status on the internal port");
    let r = tool_control.remove_node(pb::RemoveNodeRequest { node_id: 3 }).await;
    assert_eq!(r.map_err(|s| s.code()).map(|_| ()), Err(Code::PermissionDenied), "a tool may not remove a member");
    let blockd = common::grpc::client_tls(&cluster.clients_dir, Role::Blockd);
    let mut blockd_meta = common::grpc::meta(&blockd, &url);
    blockd_meta.list_block_daemons(pb::ListBlockDaemonsRequest {}).await.expect("a block daemon lists its peers");
    let r = blockd_meta.get_share(share()).await;
    assert_eq!(r.map_err(|s| s.code()).map(|_| ()), Err(Code::PermissionDenied), "a block daemon reads no namespace");
    let mut gateway_control = ControlClient::new(common::grpc::channel(&cluster.gateway, &url));
    let r = gateway_control.add_node(pb::AddNodeRequest { node_id: 9, addr: "https://127.0.0.1:1".into(), voter: true }).await;
    assert_eq!(r.map_err(|s| s.code()).map(|_| ()), Err(Code::PermissionDenied), "a gateway may not add a member");

    // None of it reached the group: still three voters, and no file was created.
    let status = cluster.status(leader).await.unwrap();
    assert_eq!(status.voters, 3, "{status:?}");
    let names = read_dir_all(&mut cluster.meta(leader).await, root).await;
    assert!(names.is_empty(), "{names:?}");
}

#[test]
fn serve_explains_what_a_role_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let serve = |toml: String| {
        let config = dir.path().join("node.toml");
        std::fs::write(&config, toml).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_tessera")).args(["serve", "--config"]).arg(&config).output().unwrap();
        assert!(!out.status.success(), "serve must refuse");
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let data = dir.path().join("data");
    // A gateway without metad on the node must be told where metad is.
    let err = serve(format!("data_dir = {data:?}\nroles = [\"gateway\"]\n"));
    assert!(err.contains("metad_endpoints"), "{err}");
    // A block daemon without its certificate names the file and the command that makes it.
    let err = serve(format!(
        "data_dir = {data:?}\nroles = [\"blockd\"]\nmetad_endpoints = [\"http://127.0.0.1:1\"]\n"
    ));
    assert!(err.contains("tls.dir") && err.contains("issue-cert"), "{err}");
    // So does a metad node (its internal port is mutual TLS): after the CA, its certificate.
    let err = serve(format!("data_dir = {data:?}\nroles = [\"metad\"]\n"));
    assert!(err.contains("tls.dir") && err.contains("issue-cert"), "{err}");
    // tessera init-ca refuses to replace a CA; issue-cert refuses a directory without one.
    let ca = dir.path().join("ca");
    let tessera = |args: &[&str]| Command::new(env!("CARGO_BIN_EXE_tessera")).args(args).output().unwrap();
    assert!(tessera(&["init-ca", "--dir", ca.to_str().unwrap()]).status.success());
    let again = tessera(&["init-ca", "--dir", ca.to_str().unwrap()]);
    assert!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("already holds a CA"));
    let out = dir.path().join("tls");
    let no_ca = tessera(&["issue-cert", "--ca", "/nonexistent", "--role", "blockd", "--name", "127.0.0.1", "--out", out.to_str().unwrap()]);
    assert!(!no_ca.status.success() && String::from_utf8_lossy(&no_ca.stderr).contains("init-ca"));
    let bad_role = tessera(&["issue-cert", "--ca", ca.to_str().unwrap(), "--role", "king", "--name", "x", "--out", out.to_str().unwrap()]);
    assert!(!bad_role.status.success());
}
