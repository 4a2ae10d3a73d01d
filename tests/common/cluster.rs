//! A cluster of `tessera serve` processes on loopback, as an operator would run one: a CA
//! from `tessera init-ca`, one certificate per node role from `tessera issue-cert` (metad's
//! internal port and the QUIC chunk links are mutual TLS), one TOML file per node, every
//! node on its own 127.a.b.c address.
//!
//! Every wait has a deadline; every child is killed (by PID) when the `Cluster` is dropped.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{START_DEADLINE, STOP_DEADLINE, free_ports, ready_lines, run_tool, scrape, wait_deadline};

/// One node of the cluster.
#[derive(Debug, Clone)]
pub struct Node {
    pub node_id: u64,
    pub ip: Ipv4Addr,
    pub roles: Vec<&'static str>,
    pub metad_port: u16,
    pub control_port: u16,
    pub metrics_port: u16,
    pub nfs_port: u16,
    pub data_dir: PathBuf,
    /// `TESSERA_*` settings of this node only.
    pub env: Vec<(String, String)>,
    /// Filled from the ready line: the block daemon's QUIC address and id.
    pub blockd_addr: Option<String>,
    pub blockd_id: Option<u64>,
}

struct Proc {
    child: Child,
}

pub struct Cluster {
    pub dir: PathBuf,
    ca_dir: PathBuf,
    pub nodes: Vec<Node>,
    procs: Vec<Option<Proc>>,
    /// `TESSERA_*` settings every node gets (environment: merged over the generated file).
    pub common_env: Vec<(String, String)>,
}

fn tessera(args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_tessera")).args(args).output().expect("run tessera");
    assert!(
        out.status.success(),
        "tessera {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Cluster {
    /// An empty cluster under `dir` with a fresh CA (`tessera init-ca`).
    pub fn new(dir: &Path) -> Cluster {
        let ca_dir = dir.join("ca");
        tessera(&["init-ca", "--dir", ca_dir.to_str().expect("utf-8 path")]);
        Cluster { dir: dir.to_path_buf(), ca_dir, nodes: Vec::new(), procs: Vec::new(), common_env: Vec::new() }
    }

    /// Adds a node running `roles` on its own loopback address (picked at random, so tests
    /// running alongside cannot collide), and issues its certificates. Returns its index.
    pub fn add_node(&mut self, roles: &[&'static str]) -> usize {
        let r: u32 = rand::random();
        let ip = Ipv4Addr::new(127, 1 + (r % 250) as u8, (r >> 8) as u8, 2 + ((r >> 16) % 250) as u8);
        let i = self.nodes.len();
        let data_dir = self.dir.join(format!("node{}", i + 1));
        let [metad_port, control_port, metrics_port, nfs_port] = free_ports(ip);
        let node = Node {
            node_id: i as u64 + 1,
            ip,
            roles: roles.to_vec(),
            metad_port,
            control_port,
            metrics_port,
            nfs_port,
            data_dir: data_dir.clone(),
            env: Vec::new(),
            blockd_addr: None,
            blockd_id: None,
        };
        let tls = data_dir.join("tls");
        for role in roles {
            tessera(&[
                "issue-cert",
                "--ca",
                self.ca_dir.to_str().expect("utf-8 path"),
                "--role",
                role,
                "--name",
                &ip.to_string(),
                "--out",
                tls.to_str().expect("utf-8 path"),
            ]);
        }
        self.nodes.push(node);
        self.procs.push(None);
        i
    }

    /// A TLS directory holding a `tool` certificate (may ask block daemons and read from
    /// metad, never store or change anything).
    pub fn tool_tls(&self) -> PathBuf {
        let dir = self.dir.join("tool");
        if !dir.join("tool").exists() {
            let ca = self.ca_dir.to_str().expect("utf-8 path").to_string();
            let out = dir.to_str().expect("utf-8 path").to_string();
            tessera(&["issue-cert", "--ca", &ca, "--role", "tool", "--name", "localhost", "--out", &out]);
        }
        dir
    }

    /// The internal gRPC URLs of the metad nodes (mutual TLS).
    pub fn metad_urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| n.roles.contains(&"metad"))
            .map(|n| format!("https://{}:{}", n.ip, n.metad_port))
            .collect()
    }

    /// How a tool dials metad's internal port: mutual TLS with the `tool` certificate (reads
    /// only).
    pub fn tool_client(&self) -> cluster::grpc_tls::ClientTls {
        super::grpc::client_tls(&self.tool_tls(), cluster::tls::Role::Tool)
    }

    fn config(&self, i: usize) -> String {
        let n = &self.nodes[i];
        let roles: Vec<String> = n.roles.iter().map(|r| format!("{r:?}")).collect();
        let endpoints: Vec<String> = self.metad_urls().iter().map(|u| format!("{u:?}")).collect();
        let ip = n.ip;
        format!(
            "node_id = {}\ndata_dir = {:?}\nroles = [{}]\nmetad_endpoints = [{}]\n\
             [log]\nfilter = \"info\"\n\
             [nfs]\nbind = \"{ip}\"\nport = {}\n\
             [control]\nbind = \"{ip}\"\nport = {}\n\
             [metrics]\nbind = \"{ip}\"\nport = {}\n\
             [metad]\nbind = \"{ip}\"\nport = {}\n\
             [blockd]\nbind = \"{ip}\"\nport = 0\n",
            n.node_id,
            n.data_dir.display().to_string(),
            roles.join(", "),
            endpoints.join(", "),
            n.nfs_port,
            n.control_port,
            n.metrics_port,
            n.metad_port,
        )
    }

    fn log_path(&self, i: usize) -> PathBuf {
        self.dir.join(format!("node{}.log", i + 1))
    }

    /// Starts node `i` (`tessera serve`) and waits for its ready line.
    pub fn start(&mut self, i: usize) {
        let config = self.dir.join(format!("node{}.toml", i + 1));
        std::fs::write(&config, self.config(i)).expect("write node config");
        let log_file = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path(i)).expect("log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_tessera"))
            .args(["serve", "--config"])
            .arg(&config)
            .envs(self.common_env.iter().chain(&self.nodes[i].env).map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .spawn()
            .expect("spawn tessera serve");
        let rx = ready_lines(child.stdout.take().expect("stdout"));
        self.procs[i] = Some(Proc { child });
        let line = match rx.recv_timeout(START_DEADLINE) {
            Ok(l) => l,
            Err(e) => panic!("node {} did not become ready ({e}); log:\n{}", i + 1, self.log_tail(i)),
        };
        let fields: HashMap<&str, &str> = line.split_whitespace().filter_map(|f| f.split_once('=')).collect();
        self.nodes[i].blockd_addr = fields.get("blockd").map(|s| s.to_string());
        self.nodes[i].blockd_id = fields.get("blockd_id").and_then(|s| s.parse().ok());
    }

    /// Starts every node, then waits until each gateway serves the default share: metad
    /// creates it in the background once a leader is known, which can come after the ready
    /// lines.
    pub fn start_all(&mut self) {
        for i in 0..self.nodes.len() {
            self.start(i);
        }
        for i in 0..self.nodes.len() {
            if self.nodes[i].roles.contains(&"gateway") {
                let url = self.nfs_url(i, "/export", "");
                self.wait_until("the default share is mountable", Duration::from_secs(30), || {
                    run_tool("nfs-ls", &[&url]).0
                });
            }
        }
    }

    pub fn is_running(&self, i: usize) -> bool {
        self.procs[i].is_some()
    }

    /// SIGKILL by PID, no warning.
    pub fn kill9(&mut self, i: usize) {
        if let Some(mut p) = self.procs[i].take() {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }

    /// SIGTERM and a clean exit within the deadline.
    pub fn stop(&mut self, i: usize) {
        let Some(p) = self.procs[i].take() else { return };
        let pid = rustix::process::Pid::from_raw(p.child.id() as i32).expect("pid");
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
        match wait_deadline(p.child, STOP_DEADLINE) {
            Some(s) => assert!(s.success(), "node {} exited with {s}; log:\n{}", i + 1, self.log_tail(i)),
            None => panic!("node {} did not stop within {STOP_DEADLINE:?}; log:\n{}", i + 1, self.log_tail(i)),
        }
    }

    pub fn log_tail(&self, i: usize) -> String {
        let s = std::fs::read_to_string(self.log_path(i)).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    /// The last WARN/ERROR lines of every node's log (for failure messages).
    pub fn warnings(&self) -> String {
        let mut out = String::new();
        for i in 0..self.nodes.len() {
            let s = std::fs::read_to_string(self.log_path(i)).unwrap_or_default();
            let lines: Vec<&str> = s.lines().filter(|l| l.contains(" WARN ") || l.contains(" ERROR ")).collect();
            for l in &lines[lines.len().saturating_sub(8)..] {
                out.push_str(&format!("node{}: {l}\n", i + 1));
            }
        }
        out
    }

    /// Every log line of node `i` that reports a panic.
    pub fn panics(&self, i: usize) -> Vec<String> {
        let s = std::fs::read_to_string(self.log_path(i)).unwrap_or_default();
        s.lines().filter(|l| l.contains("panicked")).map(str::to_string).collect()
    }

    /// Node `i`'s metrics, by sample name (labels included).
    pub fn metrics(&self, i: usize) -> HashMap<String, f64> {
        let n = &self.nodes[i];
        scrape(n.ip, n.metrics_port)
    }

    pub fn metric(&self, i: usize, name: &str) -> f64 {
        self.metrics(i).get(name).copied().unwrap_or(0.0)
    }

    /// The libnfs URL of `path` in `export` on node `i`'s gateway.
    pub fn nfs_url(&self, i: usize, export: &str, path: &str) -> String {
        let n = &self.nodes[i];
        let p = n.nfs_port;
        let sep = if path.is_empty() { "" } else { "/" };
        format!("nfs://{}{export}{sep}{path}?version=3&nfsport={p}&mountport={p}", n.ip)
    }

    /// The block daemon directory of node `i`.
    pub fn blockd_dir(&self, i: usize) -> PathBuf {
        self.nodes[i].data_dir.join("blockd")
    }

    /// Polls `cond` every 100 ms until it holds or `deadline` passes (then panics with `what`).
    pub fn wait_until(&self, what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) -> Duration {
        let start = Instant::now();
        loop {
            if cond() {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < deadline,
                "timed out after {deadline:?} waiting until {what}; warnings in the logs:\n{}",
                self.warnings()
            );
            std::thread::park_timeout(Duration::from_millis(100));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for p in self.procs.iter_mut().filter_map(Option::take) {
            let mut child = p.child;
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
