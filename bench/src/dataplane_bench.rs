//! The data-plane benchmark: what the gateway engine writes and reads per second, next to
//! the limits of the machine it runs on, and what the S3 tier uploads per second.
//!
//! One run prints one markdown table:
//! - machine limits: sequential write of `size` MiB in 1 MiB writes with one fsync at the
//!   end; 4 KiB append + fsync latency; BLAKE3 on one thread over 1 MiB buffers; the
//!   engine's chunker (FastCDC + BLAKE3, one thread); loopback TCP (tokio, one connection,
//!   1 MiB writes) and loopback QUIC (quinn + TLS, blockd's transport config: one stream of
//!   1 MiB writes, and one stream per 128 KiB answer with 8 in flight, the shape of chunk
//!   GETs);
//! - the engine, for RF=1 (one block daemon) and RF=3 (three): a real metad
//!   (`metad::testing::LocalGroup`, one voter), block daemons under mutual TLS from a
//!   cluster CA, and `gateway::engine::Engine` with `BlockdSource::FromMetad`, driven
//!   through its `Vfs` interface as the NFS front end drives it: 1 MiB UNSTABLE writes then
//!   COMMIT; a cold (fresh engine), a warm (same engine again) and a cold read with 4 READs
//!   in flight of that file (1 MiB READs); 1 MiB FILE_SYNC writes, one at a time, to a
//!   second file. Data is random from fixed seeds, different per file, so nothing
//!   deduplicates; reads are checked against what was written. The share's replication
//!   factor is set to the row's RF and checked, after metad lists every daemon live;
//! - the S3 tier (in-process S3 server `blockd::s3::test_server` on 127.0.0.1, 16 MiB
//!   segments, 128 KiB chunks put straight into a daemon's store, 16 at a time): puts with
//!   the tier on, timed until every sealed segment is uploaded; and a backlog of sealed
//!   segments written without the tier, uploaded after a restart with it (uploads alone).
//!
//! Every row also shows the bytes the process wrote to disk per data byte (`/proc/self/io`)
//! and the CPU cores it kept busy (`/proc/self/stat`); engine rows add per-call latencies,
//! copies stored and the daemons' segment fsyncs. A last line says how many cores other
//! processes kept busy meanwhile: on a shared machine, other work moves these numbers.
//! `--only` runs some sections (e.g. under `perf record`).
//! Uses only public APIs of metad, blockd and the gateway; owns nothing but measurement.
//! Temporary data lives in a directory under `--dir` that is removed at the end.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use blockd::s3::test_server::{AK, BUCKET, S3Server, SK};
use blockd::{Blockd, BlockdOptions, ClientAuth, RepairOptions, S3Options};
use bytes::Bytes;
use cluster::Shutdown;
use cluster::tls::{CHUNK_ALPN, Ca, DEV_SERVER_NAME, Identity, Role};
use futures::StreamExt;
use gateway::engine::chunker::{ChunkerParams, chunk_and_hash};
use gateway::engine::{BlockdSource, Engine, EngineOptions};
use gateway::vfs::{Stability, Vfs};
use metad::testing::LocalGroup;
use proto::pb::meta_client::MetaClient;
use proto::{FileHandle, pb};
use rand::{RngCore, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(clap::Args)]
pub struct Args {
    /// MiB written and read per row (engine rows, disk, TCP/QUIC, S3).
    #[arg(long, default_value_t = 1024)]
    size_mib: u64,
    /// Directory on the disk to measure; the benchmark's data goes into a temporary
    /// directory inside it (default: the current directory).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Sections to run (all by default; engine rows show no ratio without `limits`).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "limits,rf1,rf3,s3")]
    only: Vec<Section>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Section {
    /// Disk, fsync, BLAKE3, chunker, loopback TCP and QUIC.
    Limits,
    /// The engine over one block daemon.
    Rf1,
    /// The engine over three block daemons.
    Rf3,
    /// The S3 tier's uploads.
    S3,
}

const MIB: u64 = 1 << 20;
/// Appends measured for the 4 KiB write + fsync latency.
const FSYNC_SAMPLES: usize = 2000;
/// Bytes hashed for the BLAKE3 and chunker limits (a 64 MiB working set, repeated).
const HASH_BYTES: u64 = 1 << 30;
const HASH_WORKING_SET: usize = 64 << 20;
/// Answer size and requests in flight of the chunk-like QUIC limit (the engine's average
/// chunk and its per-read fetch concurrency).
const QUIC_ANSWER: usize = 128 << 10;
const QUIC_REQUESTS_IN_FLIGHT: usize = 8;
/// Chunk size of the S3 rows: the engine's average chunk.
const S3_CHUNK: usize = 128 << 10;
const S3_SEGMENT: u64 = 16 * MIB;
/// Concurrent puts in the blockd store row (what several gateways' flushes add up to).
const STORE_PUT_CONCURRENCY: usize = 64;
/// Concurrent puts into the S3 daemon's store (the engine's per-span PUT concurrency).
const S3_PUT_CONCURRENCY: usize = 16;
/// The tier has uploaded everything once nothing changed for longer than its scan interval.
const S3_SETTLED: Duration = Duration::from_millis(1500);
const S3_DEADLINE: Duration = Duration::from_secs(600);
/// READs in flight in the parallel cold read (an NFS client's read-ahead sends several).
const PARALLEL_READS: usize = 4;
/// How long block daemons get to appear live in metad.
const HEARTBEAT_DEADLINE: Duration = Duration::from_secs(30);
const EXPORT: &str = metad::testing::SHARE.1;

fn root_cred() -> pb::Cred {
    pb::Cred { uid: 0, gid: 0, gids: vec![] }
}

/// Random bytes from a fixed seed.
fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rand::rngs::SmallRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

/// Bytes this process has caused to be written to storage so far (Linux /proc/self/io).
fn disk_bytes_written() -> Option<u64> {
    let io = std::fs::read_to_string("/proc/self/io").ok()?;
    io.lines().find_map(|l| l.strip_prefix("write_bytes: ")).and_then(|v| v.trim().parse().ok())
}

/// CPU seconds (user + system) this process has used so far (Linux /proc/self/stat; clock
/// ticks are USER_HZ = 100 on Linux).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// Wall time, disk bytes and CPU time of one measured phase.
struct Meter {
    start: Instant,
    disk: Option<u64>,
    cpu: Option<f64>,
}

struct Sample {
    secs: f64,
    bytes: u64,
    disk_bytes: Option<u64>,
    cores: Option<f64>,
}

impl Meter {
    fn start() -> Meter {
        Meter { disk: disk_bytes_written(), cpu: cpu_seconds(), start: Instant::now() }
    }

    /// Ends the phase, which moved `bytes` of data.
    fn stop(self, bytes: u64) -> Sample {
        self.stop_at(Instant::now(), bytes)
    }

    /// Ends the phase at `end` (earlier than now when the end was observed by polling).
    fn stop_at(self, end: Instant, bytes: u64) -> Sample {
        let secs = end.duration_since(self.start).as_secs_f64().max(1e-9);
        let disk_bytes = match (self.disk, disk_bytes_written()) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a)),
            _ => None,
        };
        let cores = match (self.cpu, cpu_seconds()) {
            (Some(a), Some(b)) => Some((b - a) / Instant::now().duration_since(self.start).as_secs_f64().max(1e-9)),
            _ => None,
        };
        Sample { secs, bytes, disk_bytes, cores }
    }
}

impl Sample {
    fn mb_per_sec(&self) -> f64 {
        self.bytes as f64 / self.secs / 1e6
    }
}

/// One line of the table.
struct Row {
    name: String,
    mbps: Option<f64>,
    vs: String,
    disk_per_byte: Option<f64>,
    cores: Option<f64>,
    notes: String,
}

impl Row {
    fn from_sample(name: impl Into<String>, s: &Sample, vs: String, notes: String) -> Row {
        Row {
            name: name.into(),
            mbps: Some(s.mb_per_sec()),
            vs,
            disk_per_byte: s.disk_bytes.map(|d| d as f64 / s.bytes.max(1) as f64),
            cores: s.cores,
            notes,
        }
    }

    fn print(&self) {
        let opt = |v: Option<f64>, digits: usize| v.map_or("—".to_string(), |v| format!("{v:.digits$}"));
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            self.name,
            opt(self.mbps, 0),
            self.vs,
            opt(self.disk_per_byte, 2),
            opt(self.cores, 2),
            self.notes
        );
    }
}

/// "0.42× disk"
fn ratio(value: f64, limit: f64, what: &str) -> String {
    if limit > 0.0 { format!("{:.2}× {what}", value / limit) } else { "—".to_string() }
}

/// The limits engine rows are compared with (MB/s).
struct Limits {
    disk: f64,
    tcp: f64,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    if args.size_mib == 0 {
        bail!("--size-mib must be at least 1");
    }
    cluster::tls::install_crypto_provider();
    let base = args.dir.clone().unwrap_or_else(|| PathBuf::from("."));
    let tmp = tempfile::Builder::new()
        .prefix("tessera-dataplane-")
        .tempdir_in(&base)
        .with_context(|| format!("creating a temporary directory in {}", base.display()))?;
    let size = args.size_mib * MIB;
    let (started, run_cpu, machine_busy) = (Instant::now(), cpu_seconds(), machine_busy_seconds());

    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "dataplane benchmark: {} MiB per row; data in {}; 1 MB = 10^6 bytes; load average at start: {}",
        args.size_mib,
        tmp.path().display(),
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    println!("| row | MB/s | vs limit | disk bytes written per data byte | CPU cores busy | notes |");
    println!("|---|---|---|---|---|---|");

    let limits = if args.only.contains(&Section::Limits) {
        machine_limits(tmp.path(), size).await?
    } else {
        Limits { disk: 0.0, tcp: 0.0 }
    };

    // The engine.
    for (rf, section) in [(1usize, Section::Rf1), (3, Section::Rf3)] {
        if !args.only.contains(&section) {
            continue;
        }
        engine_rows(tmp.path(), rf, size, &limits).await?;
    }

    if args.only.contains(&Section::S3) {
        s3_rows(tmp.path(), size, &limits).await?;
    }

    tmp.close().context("removing the benchmark's temporary directory")?;
    // How busy the machine was with other work meanwhile (the limits and the engine share
    // its cores with whatever else runs).
    let wall = started.elapsed().as_secs_f64().max(1e-9);
    let others = match (machine_busy_seconds(), machine_busy, cpu_seconds(), run_cpu) {
        (Some(m1), Some(m0), Some(c1), Some(c0)) => format!("{:.2}", ((m1 - m0) - (c1 - c0)).max(0.0) / wall),
        _ => "n/a".to_string(),
    };
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "during the run ({wall:.0} s): other processes kept {others} cores busy on average; load average at end: {}",
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    Ok(())
}

/// CPU seconds all processes of the machine have spent busy so far (`/proc/stat`: user,
/// nice, system, irq, softirq and steal, in USER_HZ = 100 ticks).
fn machine_busy_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu = stat.lines().next()?.strip_prefix("cpu ")?;
    let f: Vec<f64> = cpu.split_whitespace().map(|v| v.parse().unwrap_or(0.0)).collect();
    let busy = [0, 1, 2, 5, 6, 7].iter().map(|&i| f.get(i).copied().unwrap_or(0.0)).sum::<f64>();
    Some(busy / 100.0)
}

/// Prints the machine-limit rows; returns what engine rows are compared with.
async fn machine_limits(dir: &Path, size: u64) -> anyhow::Result<Limits> {
    let disk = disk_sequential_write(dir, size).await?;
    let disk_row = Row::from_sample(
        "disk: sequential write, 1 MiB writes, one fsync at the end",
        &disk,
        "limit".into(),
        format!("{} MiB", size / MIB),
    );
    disk_row.print();
    let (p50, p99) = fsync_latency(dir).await?;
    Row {
        name: "disk: 4 KiB append + fsync".into(),
        mbps: None,
        vs: "limit".into(),
        disk_per_byte: None,
        cores: None,
        notes: format!("p50 {:.3} ms, p99 {:.3} ms ({FSYNC_SAMPLES} appends)", ms(p50), ms(p99)),
    }
    .print();
    let hash = tokio::task::spawn_blocking(blake3_single_thread).await.context("BLAKE3 task")?;
    Row::from_sample("BLAKE3, one thread, 1 MiB buffers", &hash, "limit".into(), "64 MiB working set".into()).print();
    let chunker = tokio::task::spawn_blocking(chunker_single_thread).await.context("chunker task")??;
    Row::from_sample(
        "engine chunker (FastCDC 32/128/512 KiB + BLAKE3), one thread",
        &chunker,
        ratio(chunker.mb_per_sec(), hash.mb_per_sec(), "BLAKE3"),
        "what one flush's chunking costs".into(),
    )
    .print();
    let tcp = tcp_loopback(size).await?;
    Row::from_sample("loopback TCP, one connection, 1 MiB writes", &tcp, "limit".into(), "tokio, TCP_NODELAY".into())
        .print();
    let quic = quic_loopback(size).await?;
    Row::from_sample(
        "loopback QUIC, one stream, 1 MiB writes",
        &quic,
        ratio(quic.mb_per_sec(), tcp.mb_per_sec(), "TCP"),
        "quinn + TLS 1.3 (aws-lc-rs), blockd's transport config".into(),
    )
    .print();
    let requests = quic_requests(size).await?;
    Row::from_sample(
        format!("loopback QUIC, one stream per {} KiB answer, {QUIC_REQUESTS_IN_FLIGHT} in flight", QUIC_ANSWER >> 10),
        &requests,
        ratio(requests.mb_per_sec(), tcp.mb_per_sec(), "TCP"),
        "the shape of the engine's chunk GETs, without the store".into(),
    )
    .print();
    Ok(Limits { disk: disk.mb_per_sec(), tcp: tcp.mb_per_sec() })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Writes `size` bytes in 1 MiB writes to a new file, then fsyncs it.
async fn disk_sequential_write(dir: &Path, size: u64) -> anyhow::Result<Sample> {
    let path = dir.join("sequential.bin");
    tokio::task::spawn_blocking(move || -> anyhow::Result<Sample> {
        use std::io::Write;
        let buf = random(MIB as usize, 1);
        let meter = Meter::start();
        let mut f = std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        for _ in 0..size / MIB {
            f.write_all(&buf).with_context(|| format!("writing {}", path.display()))?;
        }
        f.sync_all().with_context(|| format!("fsync of {}", path.display()))?;
        let sample = meter.stop(size);
        drop(f);
        std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        Ok(sample)
    })
    .await
    .context("disk write task")?
}

/// p50 and p99 of a 4 KiB append followed by fsync.
async fn fsync_latency(dir: &Path) -> anyhow::Result<(Duration, Duration)> {
    let path = dir.join("fsync.bin");
    tokio::task::spawn_blocking(move || -> anyhow::Result<(Duration, Duration)> {
        use std::io::Write;
        let buf = random(4096, 2);
        let mut f = std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        let mut lat = Vec::with_capacity(FSYNC_SAMPLES);
        for _ in 0..FSYNC_SAMPLES {
            let t = Instant::now();
            f.write_all(&buf).with_context(|| format!("writing {}", path.display()))?;
            f.sync_all().with_context(|| format!("fsync of {}", path.display()))?;
            lat.push(t.elapsed());
        }
        drop(f);
        std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        lat.sort();
        Ok((percentile(&lat, 0.50), percentile(&lat, 0.99)))
    })
    .await
    .context("fsync task")?
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    sorted.get(((sorted.len() as f64 * q) as usize).min(sorted.len().saturating_sub(1))).copied().unwrap_or_default()
}

/// BLAKE3 of 1 MiB buffers on this thread.
fn blake3_single_thread() -> Sample {
    let data = random(HASH_WORKING_SET, 3);
    let meter = Meter::start();
    let mut done = 0u64;
    let mut sink = 0u8;
    while done < HASH_BYTES {
        for buf in data.chunks(MIB as usize) {
            sink ^= blake3::hash(buf).as_bytes()[0];
            done += buf.len() as u64;
        }
    }
    std::hint::black_box(sink);
    meter.stop(done)
}

/// The engine's `chunk_and_hash` (what a flush runs on its blocking thread) on this thread.
fn chunker_single_thread() -> anyhow::Result<Sample> {
    let d = cluster::config::GatewayConfig::default();
    let params = ChunkerParams::new(d.chunk_min_bytes, d.chunk_avg_bytes, d.chunk_max_bytes)?;
    let data = random(HASH_WORKING_SET, 4);
    let meter = Meter::start();
    let mut done = 0u64;
    let mut chunks = 0usize;
    while done < HASH_BYTES {
        chunks += chunk_and_hash(&data, params).len();
        done += data.len() as u64;
    }
    std::hint::black_box(chunks);
    Ok(meter.stop(done))
}

/// `size` bytes over one loopback TCP connection in 1 MiB writes, until the reader has them.
async fn tcp_loopback(size: u64) -> anyhow::Result<Sample> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.context("binding a loopback listener")?;
    let addr = listener.local_addr()?;
    let reader = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await?;
        s.set_nodelay(true)?;
        let mut buf = vec![0u8; MIB as usize];
        let mut got = 0u64;
        loop {
            match s.read(&mut buf).await? {
                0 => return Ok::<u64, std::io::Error>(got),
                n => got += n as u64,
            }
        }
    });
    let buf = random(MIB as usize, 5);
    let meter = Meter::start();
    let mut s = tokio::net::TcpStream::connect(addr).await.context("connecting over loopback")?;
    s.set_nodelay(true)?;
    for _ in 0..size / MIB {
        s.write_all(&buf).await.context("writing to the loopback connection")?;
    }
    s.shutdown().await?;
    let got = reader.await.context("reader task")?.context("reading the loopback connection")?;
    let sample = meter.stop(got);
    if got != size {
        bail!("loopback TCP: the reader got {got} of {size} bytes");
    }
    Ok(sample)
}

/// A QUIC server endpoint and a client connected to it on loopback (TLS from a fresh CA,
/// blockd's transport config on both sides); the server's side of the connection comes
/// back from the returned task.
async fn quic_pair()
-> anyhow::Result<(quinn::Endpoint, quinn::Connection, tokio::task::JoinHandle<anyhow::Result<quinn::Connection>>)> {
    use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
    let ca = Ca::generate()?;
    let id = issue(&ca, Role::Blockd)?;
    let server_tls = QuicServerConfig::try_from(cluster::tls::server_config(&id, CHUNK_ALPN)?)
        .map_err(|e| anyhow!("QUIC server TLS: {e}"))?;
    let mut server_cfg = quinn::ServerConfig::with_crypto(Arc::new(server_tls));
    server_cfg.transport_config(Arc::new(blockd::transport_config()));
    let server = quinn::Endpoint::server(server_cfg, loopback()).context("binding a QUIC endpoint")?;
    let addr = server.local_addr()?;
    let accepted = tokio::spawn(async move {
        let incoming = server.accept().await.ok_or_else(|| anyhow!("QUIC endpoint closed"))?;
        Ok(incoming.await?)
    });
    let client_tls = QuicClientConfig::try_from(cluster::tls::client_config(&[ca.anchor()], CHUNK_ALPN)?)
        .map_err(|e| anyhow!("QUIC client TLS: {e}"))?;
    let mut client_cfg = quinn::ClientConfig::new(Arc::new(client_tls));
    client_cfg.transport_config(Arc::new(blockd::transport_config()));
    let mut client = quinn::Endpoint::client(loopback()).context("binding a QUIC client endpoint")?;
    client.set_default_client_config(client_cfg);
    let conn = client.connect(addr, DEV_SERVER_NAME)?.await.context("QUIC handshake")?;
    Ok((client, conn, accepted))
}

/// `size` bytes over one QUIC stream on loopback in 1 MiB writes, until the server has
/// read them all and said so.
async fn quic_loopback(size: u64) -> anyhow::Result<Sample> {
    let (client, conn, accepted) = quic_pair().await?;
    let serve = tokio::spawn(async move {
        let conn = accepted.await.context("QUIC accept task")??;
        let (mut send, mut recv) = conn.accept_bi().await?;
        let mut got = 0u64;
        while let Some(chunk) = recv.read_chunk(usize::MAX, true).await? {
            got += chunk.bytes.len() as u64;
        }
        send.write_all(&got.to_be_bytes()).await?;
        send.finish()?;
        // Keep the connection until the client has read the answer and closed it.
        conn.closed().await;
        Ok::<u64, anyhow::Error>(got)
    });
    let buf = Bytes::from(random(MIB as usize, 6));
    let meter = Meter::start();
    let (mut send, mut recv) = conn.open_bi().await?;
    for _ in 0..size / MIB {
        send.write_chunk(buf.clone()).await.context("writing to the QUIC stream")?;
    }
    send.finish()?;
    let answer = recv.read_to_end(8).await.context("reading the QUIC answer")?;
    let sample = meter.stop(size);
    conn.close(0u32.into(), b"done");
    let got = serve.await.context("QUIC server task")??;
    client.wait_idle().await;
    if got != size || answer != size.to_be_bytes() {
        bail!("loopback QUIC: the server got {got} of {size} bytes");
    }
    Ok(sample)
}

/// `size` bytes fetched over one QUIC connection as the engine fetches chunks: one
/// bidirectional stream per request (a 32-byte request, a `QUIC_ANSWER`-byte answer),
/// `QUIC_REQUESTS_IN_FLIGHT` at once.
async fn quic_requests(size: u64) -> anyhow::Result<Sample> {
    let (client, conn, accepted) = quic_pair().await?;
    let answer = Bytes::from(random(QUIC_ANSWER, 7));
    let serve = tokio::spawn(async move {
        let conn = accepted.await.context("QUIC accept task")??;
        let mut streams = tokio::task::JoinSet::new();
        while let Ok((mut send, mut recv)) = conn.accept_bi().await {
            let answer = answer.clone();
            streams.spawn(async move {
                recv.read_to_end(64).await?;
                send.write_chunk(answer).await?;
                send.finish()?;
                Ok::<(), anyhow::Error>(())
            });
        }
        while let Some(r) = streams.join_next().await {
            r.context("QUIC stream task")??;
        }
        Ok::<(), anyhow::Error>(())
    });
    let requests = (size as usize).div_ceil(QUIC_ANSWER);
    let meter = Meter::start();
    let got: Vec<anyhow::Result<u64>> = futures::stream::iter(0..requests)
        .map(|_| {
            let conn = conn.clone();
            async move {
                let (mut send, mut recv) = conn.open_bi().await?;
                send.write_all(&[0u8; 32]).await?;
                send.finish()?;
                Ok(recv.read_to_end(2 * QUIC_ANSWER).await?.len() as u64)
            }
        })
        .buffer_unordered(QUIC_REQUESTS_IN_FLIGHT)
        .collect()
        .await;
    let mut bytes = 0;
    for g in got {
        bytes += g.context("a QUIC request")?;
    }
    let sample = meter.stop(bytes);
    conn.close(0u32.into(), b"done");
    serve.await.context("QUIC server task")??;
    client.wait_idle().await;
    Ok(sample)
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn issue(ca: &Ca, role: Role) -> anyhow::Result<Identity> {
    let names = [DEV_SERVER_NAME.to_string(), "localhost".to_string(), "127.0.0.1".to_string()];
    ca.issue(&names, &role).with_context(|| format!("issuing a {role} certificate"))
}

fn blockd_options(ca: &Ca, dir: PathBuf, metad: Vec<String>, segment_bytes: u64) -> anyhow::Result<BlockdOptions> {
    Ok(BlockdOptions {
        data_dir: dir,
        listen: loopback(),
        identity: issue(ca, Role::Blockd)?,
        client_auth: ClientAuth::Required(vec![ca.anchor()]),
        segment_bytes,
        min_free_bytes: 0,
        metad_endpoints: metad,
        metad_tls: cluster::grpc_tls::ClientTls::plaintext(),
        advertise_addr: None,
        // Repair passes would compete with the measured I/O; every write here reaches its
        // full replica set anyway.
        repair: RepairOptions { interval: None, max_copies_per_sec: 0 },
        scrub: blockd::ScrubOptions { interval: None, max_bytes_per_sec: 0 },
    })
}

/// metad (one voter) and `n` block daemons whose share stores `n` copies of each chunk.
struct Cluster {
    group: LocalGroup,
    daemons: Vec<(Blockd, Shutdown)>,
    ca: Ca,
    gateway: Identity,
    metad: String,
}

impl Cluster {
    async fn start(dir: &Path, n: usize) -> anyhow::Result<Cluster> {
        let group = LocalGroup::start(1).await.context("starting metad")?;
        let metad = group.leader_addr().await?;
        let ca = Ca::generate()?;
        let gateway = issue(&ca, Role::Gateway)?;
        let mut daemons = Vec::new();
        for i in 0..n {
            let stop = Shutdown::new();
            let opts = blockd_options(
                &ca,
                dir.join(format!("blockd-{i}")),
                vec![metad.clone()],
                blockd::DEFAULT_SEGMENT_BYTES,
            )?;
            let d = Blockd::start(opts, stop.clone()).await.with_context(|| format!("starting block daemon {i}"))?;
            daemons.push((d, stop));
        }
        let c = Cluster { group, daemons, ca, gateway, metad };
        c.wait_live(n).await?;
        let leader = c.group.nodes.first().ok_or_else(|| anyhow!("metad group without nodes"))?;
        leader.set_share_replication(EXPORT, n as u32).await.context("setting the share's replication factor")?;
        let mut client = MetaClient::connect(c.metad.clone()).await?;
        let shares = client.list_shares(pb::ListSharesRequest {}).await?.into_inner().shares;
        let rf = shares.iter().find(|s| s.export_path == EXPORT).map(|s| s.replication_factor);
        if rf != Some(n as u32) {
            bail!("the share's replication factor is {rf:?}, not {n}");
        }
        Ok(c)
    }

    /// Waits until metad lists `n` live block daemons.
    async fn wait_live(&self, n: usize) -> anyhow::Result<()> {
        let mut client = MetaClient::connect(self.metad.clone()).await?;
        let deadline = Instant::now() + HEARTBEAT_DEADLINE;
        loop {
            let reply = client.list_block_daemons(pb::ListBlockDaemonsRequest {}).await?.into_inner();
            let live = reply.daemons.iter().filter(|d| d.live).count();
            if live == n {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("metad lists {live} live block daemons, not {n}, after {HEARTBEAT_DEADLINE:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A fresh engine (empty chunk cache) with a cache that holds `cache_bytes`.
    async fn engine(&self, cache_bytes: u64) -> anyhow::Result<(Arc<Engine>, Shutdown)> {
        let cfg = cluster::config::GatewayConfig::default();
        let mut opts = EngineOptions::from_config(self.metad.clone(), loopback(), vec![self.ca.anchor()], &cfg);
        opts.blockd = BlockdSource::FromMetad;
        opts.client_identity = Some(self.gateway.clone());
        opts.cache_bytes = opts.cache_bytes.max(cache_bytes);
        let stop = Shutdown::new();
        let engine = Engine::connect(opts, stop.clone()).await.context("starting the gateway engine")?;
        Ok((engine, stop))
    }

    /// Content bytes and chunks stored, and segment fsyncs made, over all daemons.
    fn store_totals(&self) -> (u64, u64, u64) {
        self.daemons
            .iter()
            .map(|(d, _)| d.store().stats())
            .fold((0, 0, 0), |(b, c, f), s| (b + s.bytes, c + s.chunks, f + s.fsyncs))
    }

    async fn stop(self) -> anyhow::Result<()> {
        for (d, stop) in self.daemons {
            stop.cancel();
            d.wait().await.context("stopping a block daemon")?;
        }
        self.group.stop().await;
        Ok(())
    }
}

fn fs(e: proto::FsError) -> anyhow::Error {
    anyhow!("{e}")
}

async fn create_file(engine: &Engine, name: &str) -> anyhow::Result<FileHandle> {
    let share = engine.mount(EXPORT).await.map_err(fs).context("mounting the share")?;
    let root = share.root.and_then(|a| a.node).ok_or_else(|| anyhow!("share without a root"))?;
    let req = pb::CreateRequest {
        dir: Some(root),
        name: name.as_bytes().to_vec(),
        kind: pb::FileType::Regular as i32,
        mode: 0o644,
        how: pb::CreateHow::Guarded as i32,
        ..Default::default()
    };
    let reply = engine.create(&root_cred(), req).await.map_err(fs).with_context(|| format!("creating {name}"))?;
    Ok(reply.attr.and_then(|a| a.node).ok_or_else(|| anyhow!("create answered without a node"))?.into())
}

/// Latencies of one phase's calls.
struct Ops {
    calls: Vec<Duration>,
    commit: Option<Duration>,
}

impl Ops {
    fn describe(mut self, call: &str) -> String {
        self.calls.sort();
        let mut s = format!(
            "{call} p50 {:.2} ms, p99 {:.2} ms, max {:.0} ms",
            ms(percentile(&self.calls, 0.50)),
            ms(percentile(&self.calls, 0.99)),
            ms(self.calls.last().copied().unwrap_or_default())
        );
        if let Some(c) = self.commit {
            s.push_str(&format!(", COMMIT {:.0} ms", ms(c)));
        }
        s
    }
}

/// Writes `data` in 1 MiB writes of `stable`, then COMMITs.
async fn write_file(engine: &Engine, node: FileHandle, data: &Bytes, stable: Stability) -> anyhow::Result<Ops> {
    let cred = root_cred();
    let mut calls = Vec::with_capacity(data.len() / MIB as usize + 1);
    let mut off = 0usize;
    while off < data.len() {
        let end = (off + MIB as usize).min(data.len());
        let t = Instant::now();
        engine
            .write(&cred, node, off as u64, data.slice(off..end), stable)
            .await
            .map_err(fs)
            .with_context(|| format!("WRITE at {off}"))?;
        calls.push(t.elapsed());
        off = end;
    }
    let t = Instant::now();
    engine.commit(&cred, node).await.map_err(fs).context("COMMIT")?;
    Ok(Ops { calls, commit: Some(t.elapsed()) })
}

/// Reads the file sequentially in 1 MiB READs and checks it equals `data`.
async fn read_file(engine: &Engine, node: FileHandle, data: &[u8]) -> anyhow::Result<Ops> {
    let cred = root_cred();
    let mut calls = Vec::with_capacity(data.len() / MIB as usize + 1);
    let mut off = 0usize;
    loop {
        let t = Instant::now();
        let r = engine
            .read(&cred, node, off as u64, MIB as u32)
            .await
            .map_err(fs)
            .with_context(|| format!("READ at {off}"))?;
        calls.push(t.elapsed());
        let n = r.data.len();
        if data.get(off..off + n) != Some(&r.data[..]) {
            bail!("READ at {off} returned {n} bytes that differ from what was written");
        }
        off += n;
        if r.eof || n == 0 {
            break;
        }
    }
    if off != data.len() {
        bail!("read back {off} bytes of {}", data.len());
    }
    Ok(Ops { calls, commit: None })
}

/// Reads the file in 1 MiB READs, `depth` of them in flight (as an NFS client's read-ahead
/// sends them), and checks every answer against `data`.
async fn read_file_parallel(engine: &Engine, node: FileHandle, data: &[u8], depth: usize) -> anyhow::Result<Ops> {
    let cred = root_cred();
    let offsets: Vec<usize> = (0..data.len()).step_by(MIB as usize).collect();
    let answers: Vec<anyhow::Result<Duration>> = futures::stream::iter(offsets)
        .map(|off| {
            let cred = cred.clone();
            async move {
                let t = Instant::now();
                let r = engine
                    .read(&cred, node, off as u64, MIB as u32)
                    .await
                    .map_err(fs)
                    .with_context(|| format!("READ at {off}"))?;
                let want = data.get(off..(off + MIB as usize).min(data.len()));
                if want != Some(&r.data[..]) {
                    bail!("READ at {off} returned {} bytes that differ from what was written", r.data.len());
                }
                Ok(t.elapsed())
            }
        })
        .buffer_unordered(depth)
        .collect()
        .await;
    let mut calls = Vec::with_capacity(answers.len());
    for a in answers {
        calls.push(a?);
    }
    Ok(Ops { calls, commit: None })
}

/// Prints the engine rows of one replication factor, each as soon as it is measured.
async fn engine_rows(dir: &Path, rf: usize, size: u64, limits: &Limits) -> anyhow::Result<()> {
    let cluster = Cluster::start(&dir.join(format!("rf{rf}")), rf).await?;
    let tag = format!("engine RF={rf}");
    // Copies stored per data byte and the daemons' segment fsyncs during a write phase.
    let stored = |before: (u64, u64, u64), after: (u64, u64, u64)| {
        let fsyncs = after.2 - before.2;
        format!(
            "{:.2} copies stored ({} chunks); {fsyncs} segment fsyncs ({:.0} KiB each)",
            (after.0 - before.0) as f64 / size as f64,
            after.1 - before.1,
            (after.0 - before.0) as f64 / fsyncs.max(1) as f64 / 1024.0
        )
    };
    let cache = size + 64 * MIB;

    // UNSTABLE writes + COMMIT, then a cold and a warm read of the same file.
    let data = Bytes::from(random(size as usize, 100 + rf as u64));
    let (engine, stop) = cluster.engine(cache).await?;
    let node = create_file(&engine, "unstable.bin").await?;
    let before = cluster.store_totals();
    let meter = Meter::start();
    let ops = write_file(&engine, node, &data, Stability::Unstable).await?;
    let s = meter.stop(size);
    Row::from_sample(
        format!("{tag}: write, 1 MiB UNSTABLE + COMMIT"),
        &s,
        ratio(s.mb_per_sec(), limits.disk, "disk"),
        format!("{}; {}", stored(before, cluster.store_totals()), ops.describe("WRITE")),
    )
    .print();
    stop.cancel();
    drop(engine);

    let (engine, stop) = cluster.engine(cache).await?;
    for (what, note) in
        [("cold", "fresh engine: chunk cache empty"), ("warm", "same engine again: from its chunk cache")]
    {
        let meter = Meter::start();
        let ops = read_file(&engine, node, &data).await?;
        let s = meter.stop(size);
        Row::from_sample(
            format!("{tag}: read {what}, 1 MiB READs"),
            &s,
            ratio(s.mb_per_sec(), limits.tcp, "TCP"),
            format!("{note}; {}", ops.describe("READ")),
        )
        .print();
    }
    stop.cancel();
    drop(engine);
    let (engine, stop) = cluster.engine(cache).await?;
    let meter = Meter::start();
    let ops = read_file_parallel(&engine, node, &data, PARALLEL_READS).await?;
    let s = meter.stop(size);
    Row::from_sample(
        format!("{tag}: read cold, 1 MiB READs, {PARALLEL_READS} in flight"),
        &s,
        ratio(s.mb_per_sec(), limits.tcp, "TCP"),
        format!("fresh engine; {}", ops.describe("READ")),
    )
    .print();
    stop.cancel();
    drop(engine);
    drop(data);

    // FILE_SYNC writes to a second file.
    let data = Bytes::from(random(size as usize, 200 + rf as u64));
    let (engine, stop) = cluster.engine(cache).await?;
    let node = create_file(&engine, "filesync.bin").await?;
    let before = cluster.store_totals();
    let meter = Meter::start();
    let ops = write_file(&engine, node, &data, Stability::FileSync).await?;
    let s = meter.stop(size);
    Row::from_sample(
        format!("{tag}: write, 1 MiB FILE_SYNC"),
        &s,
        ratio(s.mb_per_sec(), limits.disk, "disk"),
        format!("{}; {}", stored(before, cluster.store_totals()), ops.describe("WRITE")),
    )
    .print();
    stop.cancel();
    drop(engine);
    cluster.stop().await?;
    Ok(())
}

/// Prints the S3 rows. Ingest: one block daemon with the tier on, `size` bytes of 128 KiB
/// chunks put into its store (16 at a time), timed until every sealed segment is uploaded.
/// Backlog: the same put into a daemon without the tier, which is then restarted with it;
/// timed from the restart until its backlog of sealed segments is uploaded (uploads alone).
async fn s3_rows(dir: &Path, size: u64, limits: &Limits) -> anyhow::Result<()> {
    if size < 2 * S3_SEGMENT {
        // Nothing would be sealed, so nothing would upload.
        println!("| S3 tier: skipped, it needs --size-mib {} or more | — | — | — | — | |", 2 * S3_SEGMENT / MIB);
        return Ok(());
    }
    let server = S3Server::start(&dir.join("s3"), loopback()).await;
    let ca = Ca::generate()?;
    let tier = |prefix: &str| {
        let mut t = S3Options::new(Some(format!("http://{}", server.addr)), BUCKET, "us-east-1", AK, SK, prefix);
        // Keep everything local: the rows measure uploads, not eviction or back-pressure.
        t.local_bound_bytes = t.local_bound_bytes.max(2 * size);
        t
    };
    let name = format!("S3 tier, 16 MiB segments, {} KiB chunks", S3_CHUNK >> 10);

    // Ingest with the tier on.
    let data_dir = dir.join("blockd-s3-ingest");
    let (blockd, stop) = start_s3_daemon(&ca, &data_dir, Some(tier("ingest"))).await?;
    let store = blockd.store();
    let chunks = s3_chunks(size, 300)?;
    let put_bytes = (chunks.len() * S3_CHUNK) as u64;
    let meter = Meter::start();
    put_all(&store, chunks).await?;
    let puts_done = meter.start.elapsed();
    let (stats, end) = wait_uploaded(&store).await?;
    let lag = end.saturating_duration_since(meter.start + puts_done);
    let s = meter.stop_at(end, stats.uploaded_bytes);
    Row::from_sample(
        format!("{name}: puts with the tier on, until uploaded"),
        &s,
        ratio(s.mb_per_sec(), limits.tcp, "TCP"),
        format!(
            "{}; puts alone {:.0} MB/s; last upload {:.0} ms after the last put",
            upload_counts(&stats, put_bytes),
            put_bytes as f64 / puts_done.as_secs_f64().max(1e-9) / 1e6,
            ms(lag)
        ),
    )
    .print();
    stop.cancel();
    blockd.wait().await.context("stopping the S3 block daemon")?;

    // A backlog uploaded after a restart with the tier on.
    let data_dir = dir.join("blockd-s3-backlog");
    let (blockd, stop) = start_s3_daemon(&ca, &data_dir, None).await?;
    let chunks = s3_chunks(size, 301)?;
    let store = blockd.store();
    let fsyncs0 = store.stats().fsyncs;
    let meter = Meter::start();
    put_all_with(&store, chunks, STORE_PUT_CONCURRENCY).await?;
    let s = meter.stop(put_bytes);
    Row::from_sample(
        format!("blockd store (no tier): puts of {} KiB chunks, {STORE_PUT_CONCURRENCY} in flight", S3_CHUNK >> 10),
        &s,
        ratio(s.mb_per_sec(), limits.disk, "disk"),
        format!("group commit: {} segment fsyncs for {} chunks", store.stats().fsyncs - fsyncs0, put_bytes / S3_CHUNK as u64),
    )
    .print();
    drop(store);
    stop.cancel();
    blockd.wait().await.context("stopping the block daemon")?;
    let meter = Meter::start();
    let (blockd, stop) = start_s3_daemon(&ca, &data_dir, Some(tier("backlog"))).await?;
    let (stats, end) = wait_uploaded(&blockd.store()).await?;
    let s = meter.stop_at(end, stats.uploaded_bytes);
    Row::from_sample(
        format!("{name}: backlog uploaded after a restart"),
        &s,
        ratio(s.mb_per_sec(), limits.tcp, "TCP"),
        format!("{}; uploads alone", upload_counts(&stats, put_bytes)),
    )
    .print();
    stop.cancel();
    blockd.wait().await.context("stopping the S3 block daemon")?;
    server.stop().await;
    Ok(())
}

async fn start_s3_daemon(ca: &Ca, dir: &Path, tier: Option<S3Options>) -> anyhow::Result<(Blockd, Shutdown)> {
    let stop = Shutdown::new();
    let opts = blockd_options(ca, dir.to_path_buf(), Vec::new(), S3_SEGMENT)?;
    let blockd =
        Blockd::start_with_tier(opts, tier, stop.clone()).await.context("starting a block daemon for the S3 rows")?;
    Ok((blockd, stop))
}

/// `size` bytes of random 128 KiB chunks, named (hashed) before any clock starts.
fn s3_chunks(size: u64, seed: u64) -> anyhow::Result<Vec<blockd::Chunk>> {
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let mut chunks = Vec::new();
    for _ in 0..size as usize / S3_CHUNK {
        let mut c = vec![0u8; S3_CHUNK];
        rng.fill_bytes(&mut c);
        chunks.push(blockd::Chunk::new(Bytes::from(c))?);
    }
    Ok(chunks)
}

/// Puts every chunk, `S3_PUT_CONCURRENCY` at a time.
async fn put_all(store: &Arc<blockd::Store>, chunks: Vec<blockd::Chunk>) -> anyhow::Result<()> {
    put_all_with(store, chunks, S3_PUT_CONCURRENCY).await
}

/// Puts every chunk, `in_flight` at a time.
async fn put_all_with(store: &Arc<blockd::Store>, chunks: Vec<blockd::Chunk>, in_flight: usize) -> anyhow::Result<()> {
    let results: Vec<_> = futures::stream::iter(chunks)
        .map(|c| {
            let store = store.clone();
            async move { store.put(c).await }
        })
        .buffer_unordered(in_flight)
        .collect()
        .await;
    for r in results {
        r.context("put into the store")?;
    }
    Ok(())
}

/// Waits until nothing is pending and no upload finished for longer than the tier's scan
/// interval; returns the tier's counters and when the last upload finished.
async fn wait_uploaded(store: &blockd::Store) -> anyhow::Result<(blockd::TierStats, Instant)> {
    let deadline = Instant::now() + S3_DEADLINE;
    let mut last = store.tier_stats().ok_or_else(|| anyhow!("the daemon has no S3 tier"))?;
    let mut last_change = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = store.tier_stats().ok_or_else(|| anyhow!("the daemon has no S3 tier"))?;
        if now.uploaded_bytes != last.uploaded_bytes {
            last_change = Instant::now();
        }
        last = now;
        if now.backlog_segments == 0
            && now.pending_bytes == 0
            && now.uploaded_packs > 0
            && last_change.elapsed() > S3_SETTLED
        {
            return Ok((now, last_change));
        }
        if Instant::now() > deadline {
            bail!("the S3 tier did not finish uploading within {S3_DEADLINE:?}: {now:?}");
        }
    }
}

/// "64 PUTs per GiB (64 packs, 0 failed attempts); 1016 of 1024 MiB uploaded"
fn upload_counts(stats: &blockd::TierStats, put_bytes: u64) -> String {
    let gib = stats.uploaded_bytes as f64 / (1u64 << 30) as f64;
    let puts = stats.uploaded_packs + stats.upload_failures;
    format!(
        "{:.0} PUTs per GiB ({} packs, {} failed attempts); {} of {} MiB uploaded (the active segment stays local)",
        puts as f64 / gib.max(1e-9),
        stats.uploaded_packs,
        stats.upload_failures,
        stats.uploaded_bytes / MIB,
        put_bytes / MIB
    )
}
