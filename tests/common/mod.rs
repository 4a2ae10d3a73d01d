//! Runs `tessera dev` as a child process, as a new user would, and talks to it with real
//! clients: libnfs's `nfs-cp` / `nfs-ls` / `nfs-cat`, raw TCP, and a Prometheus scrape.
//!
//! Every wait has a deadline; every child is killed (by PID) when its `Dev` is dropped.

#![allow(dead_code)]

pub mod chunks;
pub mod cluster;
pub mod grpc;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub const START_DEADLINE: Duration = Duration::from_secs(90);
pub const STOP_DEADLINE: Duration = Duration::from_secs(60);

/// A port that was free a moment ago on `ip`.
pub fn free_port(ip: std::net::Ipv4Addr) -> u16 {
    let [p] = free_ports(ip);
    p
}

/// `N` distinct ports that were free a moment ago on `ip`: every listener is held until
/// all are picked (one released before the next bind may be handed out again).
pub fn free_ports<const N: usize>(ip: std::net::Ipv4Addr) -> [u16; N] {
    let held: Vec<TcpListener> = (0..N).map(|_| TcpListener::bind((ip, 0)).expect("bind an ephemeral port")).collect();
    std::array::from_fn(|i| held[i].local_addr().expect("local addr").port())
}

/// Where one `tessera dev` instance listens; kept across restarts. Each instance gets a
/// loopback address of its own (127.a.b.c), so the ports picked here cannot collide with
/// those of tests running alongside.
#[derive(Clone, Copy, Debug)]
pub struct Ports {
    pub ip: std::net::Ipv4Addr,
    pub nfs: u16,
    pub control: u16,
    pub metrics: u16,
}

impl Ports {
    pub fn pick() -> Ports {
        let r: u32 = rand::random();
        let ip = std::net::Ipv4Addr::new(127, 1 + (r % 250) as u8, (r >> 8) as u8, 2 + ((r >> 16) % 250) as u8);
        let [nfs, control, metrics] = free_ports(ip);
        Ports { ip, nfs, control, metrics }
    }
}

pub struct Dev {
    child: Option<Child>,
    pub data_dir: PathBuf,
    pub ports: Ports,
    log: PathBuf,
}

impl Dev {
    /// Starts `tessera dev` on `data_dir` and waits for its ready line.
    pub fn start(data_dir: &Path, ports: Ports) -> Dev {
        Dev::start_with(data_dir, ports, &[])
    }

    /// Like [`Dev::start`], with extra `TESSERA_*` configuration in the environment.
    pub fn start_with(data_dir: &Path, ports: Ports, env: &[(&str, String)]) -> Dev {
        let log = data_dir.with_extension(format!("log-{}", ports.nfs));
        let log_file = std::fs::OpenOptions::new().create(true).append(true).open(&log).expect("open log file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_tessera"))
            .arg("dev")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--nfs-port", &ports.nfs.to_string()])
            .args(["--control-port", &ports.control.to_string()])
            .args(["--metrics-port", &ports.metrics.to_string()])
            .env("TESSERA_LOG__FILTER", "info")
            .env("TESSERA_NFS__BIND", ports.ip.to_string())
            .env("TESSERA_CONTROL__BIND", ports.ip.to_string())
            .env("TESSERA_METRICS__BIND", ports.ip.to_string())
            .env("TESSERA_METAD__BIND", ports.ip.to_string())
            .env("TESSERA_BLOCKD__BIND", ports.ip.to_string())
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .spawn()
            .expect("spawn tessera dev");
        let rx = ready_lines(child.stdout.take().expect("child stdout"));
        let dev = Dev { child: Some(child), data_dir: data_dir.to_path_buf(), ports, log };
        match rx.recv_timeout(START_DEADLINE) {
            Ok(line) => assert!(line.contains(&format!("nfs={}:{}", ports.ip, ports.nfs)), "ready line: {line}"),
            Err(e) => panic!("tessera dev did not become ready ({e}); log:\n{}", dev.log_tail()),
        }
        dev
    }

    pub fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn stop(&mut self) {
        let Some(child) = self.child.take() else { return };
        let pid = pid_of(&child);
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("send SIGTERM");
        match wait_deadline(child, STOP_DEADLINE) {
            Some(status) => {
                assert!(status.success(), "tessera dev exited with {status} after SIGTERM; log:\n{}", self.log_tail())
            }
            None => panic!("tessera dev did not stop within {STOP_DEADLINE:?} of SIGTERM; log:\n{}", self.log_tail()),
        }
    }

    /// The libnfs URL of `path` inside the default export.
    pub fn url(&self, path: &str) -> String {
        let p = self.ports.nfs;
        let sep = if path.is_empty() { "" } else { "/" };
        format!("nfs://{}/export{sep}{path}?version=3&nfsport={p}&mountport={p}", self.ports.ip)
    }

    /// Scrapes `/metrics` and returns the samples by name (labels included).
    pub fn metrics(&self) -> HashMap<String, f64> {
        scrape(self.ports.ip, self.ports.metrics)
    }
}

/// The `TESSERA_READY …` lines a child prints on stdout, as they come (read on a thread of
/// its own, so the child never blocks on a full pipe).
pub fn ready_lines(stdout: std::process::ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.starts_with("TESSERA_READY") {
                let _ = tx.send(line);
            }
        }
    });
    rx
}

/// GET `path` on a metrics port: (status code, body); `None` if it does not answer within
/// 5 s.
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: tessera\r\nConnection: close\r\n\r\n").as_bytes()).ok()?;
    let mut reply = String::new();
    s.read_to_string(&mut reply).ok()?;
    let status = reply.split(' ').nth(1)?.parse().ok()?;
    let body = reply.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Some((status, body))
}

/// Scrapes a Prometheus `/metrics` endpoint; samples by name (labels included).
pub fn scrape(ip: std::net::Ipv4Addr, port: u16) -> HashMap<String, f64> {
    let mut s = TcpStream::connect((ip, port)).expect("connect to metrics");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: tessera\r\nConnection: close\r\n\r\n").expect("send");
    let mut body = String::new();
    s.read_to_string(&mut body).expect("read metrics");
    let mut out = HashMap::new();
    for line in body.lines() {
        if line.starts_with('#') {
            continue;
        }
        let mut parts = line.rsplitn(2, ' ');
        let (Some(v), Some(name)) = (parts.next(), parts.next()) else { continue };
        if let Ok(v) = v.parse::<f64>() {
            out.insert(name.to_string(), v);
        }
    }
    out
}

impl Drop for Dev {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn pid_of(child: &Child) -> rustix::process::Pid {
    rustix::process::Pid::from_raw(child.id() as i32).expect("child pid")
}

/// Waits for `child` to exit; on timeout kills it (SIGKILL by PID) and returns None.
pub fn wait_deadline(mut child: Child, deadline: Duration) -> Option<std::process::ExitStatus> {
    let pid = pid_of(&child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    match rx.recv_timeout(deadline) {
        Ok(status) => status.ok(),
        Err(_) => {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            None
        }
    }
}

fn tool(name: &str) -> Command {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false);
    assert!(found, "{name} not found on PATH: run scripts/test.sh, which installs Debian's libnfs-utils");
    Command::new(name)
}

/// Runs a libnfs tool with a deadline; returns (success, stdout, stderr).
pub fn run_tool(name: &str, args: &[&str]) -> (bool, Vec<u8>, String) {
    let mut child = tool(name)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stdout.read_to_end(&mut v);
        v
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let Some(status) = wait_deadline(child, Duration::from_secs(300)) else {
        panic!("{name} {args:?} did not finish in time");
    };
    (status.success(), out.join().unwrap_or_default(), err.join().unwrap_or_default())
}

pub fn nfs_cp(src: &str, dst: &str) {
    let (ok, out, err) = run_tool("nfs-cp", &[src, dst]);
    assert!(ok, "nfs-cp {src} {dst} failed: {} {err}", String::from_utf8_lossy(&out));
}

pub fn nfs_cat(url: &str) -> Result<Vec<u8>, String> {
    let (ok, out, err) = run_tool("nfs-cat", &[url]);
    if ok { Ok(out) } else { Err(err) }
}

/// The size `nfs-ls` shows for `name` in the export's root.
pub fn nfs_ls_size(dev: &Dev, name: &str) -> Option<u64> {
    let (ok, out, err) = run_tool("nfs-ls", &[&dev.url("")]);
    assert!(ok, "nfs-ls failed: {err}");
    let text = String::from_utf8_lossy(&out);
    text.lines().find_map(|l| {
        let fields: Vec<&str> = l.split_whitespace().collect();
        if fields.last() == Some(&name) && fields.len() >= 2 {
            fields[fields.len() - 2].parse().ok()
        } else {
            None
        }
    })
}

/// `n` bytes from a seeded generator (distinct seeds give data that does not deduplicate).
pub fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    use rand::{RngCore, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut v = vec![0u8; n];
    rng.fill_bytes(&mut v);
    v
}

pub fn blake3_hex(data: &[u8]) -> String {
    blake3::hash(data).to_hex().to_string()
}
