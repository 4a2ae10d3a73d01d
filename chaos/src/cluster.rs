//! The cluster under test: the three nodes of `deploy/three-node` (docs/deploy.md) and its
//! gateway-only fourth machine (`gateway4.toml`) as `tessera serve` processes, HAProxy in
//! front of the four gateways (`haproxy.cfg` from the same folder), and an S3 server
//! (s3s-fs, in this process) for their tier.
//!
//! Owns turning the example files into runnable ones — the example's addresses `10.0.0.x`
//! become `127.A.B.x` (A, B random per run, so runs side by side cannot collide) and its
//! paths under `/var/lib/tessera` a per-node folder; nothing else is changed, so the
//! documented configuration is the one exercised — plus the cluster CA and certificates
//! (made with `tessera init-ca` / `issue-cert`), starting, killing (SIGKILL), pausing
//! (SIGSTOP/SIGCONT) and restarting processes by PID, stopping the S3 server, and a small
//! disk for node 3's block daemon (a tmpfs of `SMALL_DISK_BYTES` mounted at its folder,
//! when asked for) that `fill_disk` fills with a ballast file and `free_disk` empties.
//! Must never: signal a process it did not start, or leave one running (or a tmpfs mounted)
//! when dropped.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use blockd::s3::test_server::{AK, BUCKET, S3Server, SK};

use crate::netns::Netns;

/// How long a node may take to print its ready line.
const START_DEADLINE: Duration = Duration::from_secs(60);
/// The example's NFS port (every node's gateway and the load balancer).
pub const NFS_PORT: u16 = 2049;
/// The example's metrics port (every node).
pub const METRICS_PORT: u16 = 9090;
/// Size of the small disk of node 3's block daemon.
pub const SMALL_DISK_BYTES: u64 = 2 << 30;
/// The S3 tier's local bound for node 3's block daemon on the small disk (512 MiB).
const SMALL_DISK_TIER_BYTES: &str = "536870912";
/// Space `fill_disk` leaves free: less than a segment, so the next segment cannot be made.
const LEFT_FREE: u64 = 1 << 20;

/// A node that exits within this long of its start is failing at once, again.
const QUICK_EXIT: Duration = Duration::from_secs(60);

/// The restart delay after the `quick_exits`-th quick exit in a row: 2 s doubling up to
/// 60 s, as the systemd unit's `RestartSec=2`, `RestartSteps=5`, `RestartMaxDelaySec=60`.
pub fn restart_delay(quick_exits: u32) -> Duration {
    let steps = quick_exits.saturating_sub(1).min(5);
    (Duration::from_secs(2) * (1u32 << steps)).min(Duration::from_secs(60))
}

/// Last octets of the example's S3 server (10.0.0.9) and load balancer (10.0.0.10).
const S3_HOST: u8 = 9;
const LB_HOST: u8 = 10;

/// The example's files: (config file, node id, the roles it runs and needs certificates for).
const EXAMPLE_NODES: [(&str, u64, &[&str]); 4] = [
    ("node1.toml", 1, &["metad", "blockd", "gateway"]),
    ("node2.toml", 2, &["metad", "blockd", "gateway"]),
    ("node3.toml", 3, &["metad", "blockd", "gateway"]),
    ("gateway4.toml", 4, &["gateway"]),
];

/// One `tessera serve` node.
pub struct Node {
    pub id: u64,
    /// Runs only a gateway (no metad, no block daemon).
    pub gateway_only: bool,
    pub ip: Ipv4Addr,
    pub config: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
    paused: bool,
    /// When the running process was started.
    started: Instant,
    /// Exits in a row, each soon after its start (see `restart_delay`).
    quick_exits: u32,
    /// A restart the supervisor has scheduled for this (exited) node.
    restart_at: Option<Instant>,
}

impl Node {
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn is_paused(&self) -> bool {
        self.paused
    }
}

impl ChaosCluster {
    /// The nodes that run metad and a block daemon (with a gateway): 1-3.
    pub fn core_nodes(&self) -> Vec<usize> {
        (0..self.nodes.len()).filter(|&i| !self.nodes[i].gateway_only).collect()
    }

    /// The gateway-only nodes: 4.
    pub fn gateway_nodes(&self) -> Vec<usize> {
        (0..self.nodes.len()).filter(|&i| self.nodes[i].gateway_only).collect()
    }
}

/// The current sessions (`scur`) of `server` in `backend` from HAProxy's `show stat` CSV.
fn scur_of(csv: &str, backend: &str, server: &str) -> Option<u64> {
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next()?.trim_start_matches("# ").split(',').collect();
    let col = header.iter().position(|h| *h == "scur")?;
    lines
        .map(|l| l.split(',').collect::<Vec<_>>())
        .find(|f| f.first() == Some(&backend) && f.get(1) == Some(&server))
        .and_then(|f| f.get(col)?.parse().ok())
}

pub struct ChaosCluster {
    pub dir: PathBuf,
    tessera: PathBuf,
    pub nodes: Vec<Node>,
    /// HAProxy's frontend: where clients connect.
    pub lb: SocketAddr,
    haproxy: Option<Child>,
    s3: Option<S3Server>,
    s3_addr: SocketAddr,
    s3_root: PathBuf,
    env: Vec<(String, String)>,
    /// Node 3's block daemon folder when it is a small disk of its own (mounted tmpfs;
    /// unmounted when dropped, after the processes are gone).
    small_disk: Option<SmallDisk>,
    /// Nodes that exited on their own (not killed by the harness): when, and how.
    pub exits: Vec<(Instant, String)>,
    /// The nodes' private network when they run in namespaces of their own (for the
    /// partition faults); `None`: all on loopback.
    netns: Option<Netns>,
    /// Links cut (node ids, lower first) and nodes isolated, until mended.
    cuts: BTreeSet<(u64, u64)>,
    isolated: BTreeSet<u64>,
}

/// The example folder: `deploy/three-node` of the workspace.
pub fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/three-node")
}

fn run_tessera(tessera: &Path, args: &[&str]) -> Result<()> {
    let out = Command::new(tessera).args(args).output().with_context(|| format!("running {}", tessera.display()))?;
    if !out.status.success() {
        bail!("tessera {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// The example's text with its addresses and paths replaced.
fn localise(text: &str, net: &str, data_dir: &Path) -> String {
    text.replace("10.0.0.", net).replace("/var/lib/tessera", &data_dir.display().to_string())
}

impl ChaosCluster {
    /// Writes the configurations, creates the CA and certificates, starts the S3 server,
    /// the four nodes and HAProxy, and waits until each node is ready. With `small_disk`,
    /// node 3's block daemon gets a disk of its own (a tmpfs; mounting needs root). With
    /// `namespaces`, each node runs in a network namespace of its own on a private bridge
    /// (`netns`; needs root), so links between nodes can be cut; otherwise all run on
    /// loopback.
    pub async fn start(dir: &Path, tessera: &Path, small_disk: bool, namespaces: bool) -> Result<ChaosCluster> {
        let netns = if namespaces {
            let ids: Vec<u64> = EXAMPLE_NODES.iter().map(|n| n.1).collect();
            Some(Netns::create(&ids, &[S3_HOST, LB_HOST])?)
        } else {
            None
        };
        let net = match &netns {
            Some(n) => n.prefix.clone(),
            None => {
                let r: u32 = rand::random();
                format!("127.{}.{}.", 1 + (r % 250) as u8, (r >> 8) as u8)
            }
        };
        let example = example_dir();
        let ca = dir.join("ca");
        run_tessera(tessera, &["init-ca", "--dir", &ca.display().to_string()])?;
        let mut nodes = Vec::new();
        let mut disk = None;
        for (file, id, roles) in EXAMPLE_NODES {
            let ip: Ipv4Addr = format!("{net}{id}").parse()?;
            let data_dir = dir.join(format!("node{id}"));
            std::fs::create_dir_all(&data_dir)?;
            let text = std::fs::read_to_string(example.join(file))
                .with_context(|| format!("reading the example's {file}"))?;
            let config = dir.join(file);
            std::fs::write(&config, localise(&text, &net, &data_dir))?;
            let tls = data_dir.join("tls");
            if small_disk && id == 3 {
                disk = Some(SmallDisk::mount(&data_dir)?);
            }
            for role in roles {
                run_tessera(
                    tessera,
                    &[
                        "issue-cert",
                        "--ca",
                        &ca.display().to_string(),
                        "--role",
                        role,
                        "--name",
                        &ip.to_string(),
                        "--out",
                        &tls.display().to_string(),
                    ],
                )?;
            }
            let log = dir.join(format!("node{id}.log"));
            let gateway_only = roles == ["gateway"];
            nodes.push(Node {
                id,
                gateway_only,
                ip,
                config,
                log,
                child: None,
                paused: false,
                started: Instant::now(),
                quick_exits: 0,
                restart_at: None,
            });
        }
        let s3_root = dir.join("s3");
        let s3_addr: SocketAddr = format!("{net}{S3_HOST}:9000").parse()?;
        let s3 = S3Server::start(&s3_root, s3_addr).await;
        // The example names its own bucket and key; the test server serves fixed ones.
        let env = vec![
            ("TESSERA_BLOCKD__S3__BUCKET".to_string(), BUCKET.to_string()),
            ("TESSERA_BLOCKD__S3__ACCESS_KEY".to_string(), AK.to_string()),
            ("TESSERA_BLOCKD__S3__SECRET_KEY".to_string(), SK.to_string()),
            // The machine's free space is not the test's subject.
            ("TESSERA_BLOCKD__MIN_FREE_BYTES".to_string(), "0".to_string()),
        ];
        let haproxy_cfg = dir.join("haproxy.cfg");
        let text = std::fs::read_to_string(example.join("haproxy.cfg")).context("reading the example's haproxy.cfg")?;
        // The harness adds a stats socket (read-only) to see which gateway holds clients.
        let stats = dir.join("haproxy.sock");
        let text = localise(&text, &net, dir)
            .replacen("global\n", &format!("global\n    stats socket {} mode 600 level user\n", stats.display()), 1);
        std::fs::write(&haproxy_cfg, text)?;
        let lb: SocketAddr = format!("{net}{LB_HOST}:{NFS_PORT}").parse()?;
        let mut c = ChaosCluster {
            dir: dir.to_path_buf(),
            tessera: tessera.to_path_buf(),
            nodes,
            lb,
            haproxy: None,
            s3: Some(s3),
            s3_addr,
            s3_root,
            env,
            small_disk: disk,
            exits: Vec::new(),
            netns,
            cuts: BTreeSet::new(),
            isolated: BTreeSet::new(),
        };
        for i in 0..c.nodes.len() {
            c.spawn(i)?;
        }
        for i in 0..c.nodes.len() {
            c.wait_ready(i).await?;
        }
        let log = std::fs::File::create(dir.join("haproxy.log"))?;
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&haproxy_cfg)
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .context("starting haproxy (scripts/install-test-deps.sh installs it)")?;
        c.haproxy = Some(child);
        Ok(c)
    }

    fn spawn(&mut self, i: usize) -> Result<()> {
        let node = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&node.log)?;
        let ready = node.log.with_extension("ready");
        let mut cmd = match &self.netns {
            // `ip netns exec` execs the binary: the PID is the node's.
            Some(n) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &n.namespace(node.id)]).arg(&self.tessera);
                c
            }
            None => Command::new(&self.tessera),
        };
        let child = cmd
            .args(["serve", "--config"])
            .arg(&node.config)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            // On the small disk the S3 tier must keep local segments within it (the
            // example's bound is for a real disk), or a long run fills it with real data.
            .envs((node.id == 3 && self.small_disk.is_some()).then_some(("TESSERA_BLOCKD__S3__LOCAL_BOUND_BYTES", SMALL_DISK_TIER_BYTES)))
            .stdout(Stdio::from(std::fs::File::create(&ready)?))
            .stderr(Stdio::from(log))
            .spawn()
            .context("spawning tessera serve")?;
        node.child = Some(child);
        node.paused = false;
        node.started = Instant::now();
        node.restart_at = None;
        Ok(())
    }

    /// Waits (bounded) for node `i`'s ready line; fails if it exits first.
    async fn wait_ready(&mut self, i: usize) -> Result<()> {
        let started = Instant::now();
        let ready = self.nodes[i].log.with_extension("ready");
        loop {
            if std::fs::read_to_string(&ready).unwrap_or_default().contains("TESSERA_READY") {
                return Ok(());
            }
            if let Some(child) = self.nodes[i].child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!("node {} exited with {status} before it was ready; see {}", i + 1, self.nodes[i].log.display());
            }
            if started.elapsed() > START_DEADLINE {
                bail!("node {} not ready within {START_DEADLINE:?}; see {}", i + 1, self.nodes[i].log.display());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL node `i` (no warning, as a power loss of the process).
    pub fn kill9(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.nodes[i].paused = false;
    }

    /// Starts node `i` again with the same configuration and data.
    pub async fn restart(&mut self, i: usize) -> Result<()> {
        std::fs::write(self.nodes[i].log.with_extension("ready"), b"")?;
        self.spawn(i)?;
        self.wait_ready(i).await
    }

    fn signal(&self, i: usize, sig: rustix::process::Signal) -> Result<()> {
        let Some(child) = self.nodes[i].child.as_ref() else { bail!("node {} is not running", i + 1) };
        let pid = rustix::process::Pid::from_raw(child.id() as i32).context("pid")?;
        rustix::process::kill_process(pid, sig).context("signal")?;
        Ok(())
    }

    /// SIGSTOP: the node's process freezes, its sockets stay open.
    pub fn pause(&mut self, i: usize) -> Result<()> {
        self.signal(i, rustix::process::Signal::STOP)?;
        self.nodes[i].paused = true;
        Ok(())
    }

    pub fn resume(&mut self, i: usize) -> Result<()> {
        self.signal(i, rustix::process::Signal::CONT)?;
        self.nodes[i].paused = false;
        Ok(())
    }

    pub fn s3_is_up(&self) -> bool {
        self.s3.is_some()
    }

    /// Stops the S3 server (listener and connections closed).
    pub async fn s3_down(&mut self) {
        if let Some(s3) = self.s3.take() {
            s3.stop().await;
        }
    }

    /// Starts it again on the same address over the same folder.
    pub async fn s3_up(&mut self) {
        if self.s3.is_none() {
            self.s3 = Some(S3Server::start(&self.s3_root, self.s3_addr).await);
        }
    }

    /// Notes nodes whose process exited on their own (as `tessera serve` does when its block
    /// store fails) and starts them again after `restart_delay`, as systemd's
    /// `Restart=on-failure` with `RestartSec=2`, `RestartSteps` and `RestartMaxDelaySec`
    /// does (deploy/systemd/tessera.service): a node that keeps failing at once is not
    /// thrown back at its clients every two seconds.
    fn supervise_once(&mut self) -> Result<()> {
        let now = Instant::now();
        for i in 0..self.nodes.len() {
            let node = &mut self.nodes[i];
            if let Some(child) = node.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                node.child = None;
                node.paused = false;
                node.quick_exits = if now.duration_since(node.started) < QUICK_EXIT { node.quick_exits + 1 } else { 1 };
                let delay = restart_delay(node.quick_exits);
                node.restart_at = Some(now + delay);
                self.exits.push((now, format!("node {} exited on its own ({status}); restart in {delay:?}", node.id)));
            }
            if self.nodes[i].restart_at.is_some_and(|at| at <= now) {
                std::fs::write(self.nodes[i].log.with_extension("ready"), b"")?;
                self.spawn(i)?;
            }
        }
        Ok(())
    }

    /// Waits `d`, restarting nodes that exit meanwhile (see `supervise_once`).
    pub async fn supervise(&mut self, d: Duration) -> Result<()> {
        let until = Instant::now() + d;
        loop {
            self.supervise_once()?;
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            tokio::time::sleep(left.min(Duration::from_millis(250))).await;
        }
    }

    /// Every node running, resumed and ready, S3 up, the small disk emptied.
    pub async fn heal(&mut self) -> Result<()> {
        self.free_disk()?;
        self.mend_all()?;
        self.supervise_once()?;
        for i in 0..self.nodes.len() {
            if self.nodes[i].paused {
                self.resume(i)?;
            }
            if !self.nodes[i].is_running() {
                self.restart(i).await?;
            } else {
                self.wait_ready(i).await?;
            }
        }
        self.s3_up().await;
        Ok(())
    }

    fn netns(&self) -> Result<&Netns> {
        self.netns.as_ref().context("partition faults need the nodes in network namespaces (cluster started without)")
    }

    /// Packets between nodes `i` and `j` vanish, both ways (see `netns`).
    pub fn cut(&mut self, i: usize, j: usize) -> Result<()> {
        let (a, b) = (self.nodes[i].id.min(self.nodes[j].id), self.nodes[i].id.max(self.nodes[j].id));
        self.netns()?.cut(a, b)?;
        self.cuts.insert((a, b));
        Ok(())
    }

    /// Node `i` reaches no one and no one reaches it: not its peers, the load balancer,
    /// the clients or S3.
    pub fn isolate(&mut self, i: usize) -> Result<()> {
        let id = self.nodes[i].id;
        self.netns()?.set_isolated(id, true)?;
        self.isolated.insert(id);
        Ok(())
    }

    /// Every cut link and isolated node joined again.
    pub fn mend_all(&mut self) -> Result<()> {
        let Some(n) = &self.netns else { return Ok(()) };
        for (a, b) in std::mem::take(&mut self.cuts) {
            n.mend(a, b)?;
        }
        for id in std::mem::take(&mut self.isolated) {
            n.set_isolated(id, false)?;
        }
        Ok(())
    }

    /// Fills node 3's small disk, leaving less than a segment free: its block daemon can
    /// append to the segment it has open, then runs out of space.
    pub fn fill_disk(&self) -> Result<()> {
        let Some(SmallDisk(disk)) = &self.small_disk else {
            bail!("disk_full: the cluster was started without a small disk")
        };
        let free = rustix::fs::statvfs(disk).context("statvfs of the small disk")?;
        let available = free.f_bavail.saturating_mul(free.f_frsize);
        let ballast = std::fs::File::create(disk.join(BALLAST)).context("creating the ballast file")?;
        // tmpfs counts a little of its own: step down until the ballast fits.
        let mut len = available.saturating_sub(LEFT_FREE);
        while len > 0 {
            match rustix::fs::fallocate(&ballast, rustix::fs::FallocateFlags::empty(), 0, len) {
                Ok(()) => return Ok(()),
                Err(rustix::io::Errno::NOSPC) => len = len.saturating_sub(LEFT_FREE),
                Err(e) => return Err(e).context("filling the small disk"),
            }
        }
        Ok(())
    }

    /// Empties node 3's small disk of the ballast.
    pub fn free_disk(&self) -> Result<()> {
        if let Some(SmallDisk(disk)) = &self.small_disk {
            match std::fs::remove_file(disk.join(BALLAST)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e).context("removing the ballast"),
                _ => {}
            }
        }
        Ok(())
    }

    /// The value of the metric `name` (no labels) on node `i`, if it answers within 2 s.
    pub async fn metric(&self, i: usize, name: &str) -> Option<f64> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = SocketAddr::from((self.nodes[i].ip, METRICS_PORT));
        let scrape = async {
            let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: tessera\r\nConnection: close\r\n\r\n").await.ok()?;
            let mut body = String::new();
            s.read_to_string(&mut body).await.ok()?;
            body.lines()
                .filter_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse::<f64>().ok())
                .next()
        };
        tokio::time::timeout(Duration::from_secs(2), scrape).await.ok().flatten()
    }

    /// Client sessions HAProxy holds open to node `i`'s gateway (its stats socket's `scur`;
    /// health checks are not sessions), if HAProxy answers within a second.
    pub async fn lb_sessions(&self, i: usize) -> Option<u64> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let server = format!("node{}", self.nodes[i].id);
        let ask = async {
            let mut s = tokio::net::UnixStream::connect(self.dir.join("haproxy.sock")).await.ok()?;
            s.write_all(b"show stat\n").await.ok()?;
            let mut csv = String::new();
            s.read_to_string(&mut csv).await.ok()?;
            scur_of(&csv, "gateways", &server)
        };
        tokio::time::timeout(Duration::from_secs(1), ask).await.ok().flatten()
    }

    /// Log lines reporting a panic, per node.
    pub fn panics(&self) -> Vec<String> {
        let mut out = Vec::new();
        for n in &self.nodes {
            let text = std::fs::read_to_string(&n.log).unwrap_or_default();
            out.extend(text.lines().filter(|l| l.contains("panicked")).map(|l| format!("node{}: {l}", n.id)));
        }
        out
    }
}

impl Drop for ChaosCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            if self.nodes[i].paused {
                let _ = self.resume(i);
            }
            self.kill9(i);
        }
        if let Some(mut h) = self.haproxy.take() {
            let _ = h.kill();
            let _ = h.wait();
        }
    }
}

/// The ballast file's name on the small disk (not a name the block daemon uses).
const BALLAST: &str = "chaos-ballast";

/// A tmpfs of `SMALL_DISK_BYTES` mounted at a folder, unmounted when dropped.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(dir: &Path) -> Result<SmallDisk> {
        mount_small_disk(dir)?;
        Ok(SmallDisk(dir.to_path_buf()))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Mounts a tmpfs of `SMALL_DISK_BYTES` at `dir`.
fn mount_small_disk(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let size = format!("size={SMALL_DISK_BYTES},mode=0700");
    let out = Command::new("mount").args(["-t", "tmpfs", "-o", &size, "tessera-chaos"]).arg(dir).output()
        .context("running mount")?;
    if !out.status.success() {
        bail!(
            "the disk_full fault needs a small disk for node 3 (mount -t tmpfs, as root): {}; leave disk_full out with --kinds",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_failing_at_once_again_and_again_waits_longer_each_time_up_to_a_minute() {
        let delays: Vec<u64> = (1..=8).map(|n| restart_delay(n).as_secs()).collect();
        assert_eq!(delays, [2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(restart_delay(u32::MAX), Duration::from_secs(60));
    }

    /// HAProxy's `show stat` (a header naming the columns, then one row per frontend,
    /// server and backend): the server's own row is read, not the frontend's or backend's.
    #[test]
    fn sessions_are_read_from_the_servers_row() {
        let csv = "# pxname,svname,qcur,qmax,scur,smax\n\
                   nfs,FRONTEND,,,9,12\n\
                   gateways,node1,0,0,5,6\n\
                   gateways,node4,0,0,2,3\n\
                   gateways,BACKEND,0,0,7,9\n";
        assert_eq!(scur_of(csv, "gateways", "node4"), Some(2));
        assert_eq!(scur_of(csv, "gateways", "node1"), Some(5));
        assert_eq!(scur_of(csv, "gateways", "node9"), None);
        assert_eq!(scur_of("", "gateways", "node4"), None);
    }
}
