//! The metad benchmark: a group of in-process metad voters serving gRPC on 127.0.0.1, and
//! clients on their own tonic channels calling the leader.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use metad::testing::LocalGroup;
use proto::pb::meta_client::MetaClient;
use proto::pb::{self, CreateHow, FileType};
use tonic::transport::Channel;

#[derive(clap::Args)]
pub struct Args {
    /// Operations per phase (creates, then lookups of the created names).
    #[arg(long, default_value_t = 5000)]
    ops: usize,
    /// Group sizes to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,3")]
    voters: Vec<u64>,
    /// Concurrent client counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,16")]
    clients: Vec<usize>,
}

const SHARE: (&str, &str) = metad::testing::SHARE;

fn root_cred() -> Option<pb::Cred> {
    Some(pb::Cred { uid: 0, gid: 0, gids: vec![] })
}

/// Bytes this process has caused to be written to storage so far (Linux /proc/self/io).
fn disk_bytes_written() -> Option<u64> {
    let io = std::fs::read_to_string("/proc/self/io").ok()?;
    io.lines().find_map(|l| l.strip_prefix("write_bytes: ")).and_then(|v| v.trim().parse().ok())
}

struct Phase {
    ops_per_sec: f64,
    p50: Duration,
    p99: Duration,
}

fn summarize(mut lat: Vec<Duration>, wall: Duration) -> Phase {
    lat.sort();
    let pick = |q: f64| lat.get(((lat.len() as f64 * q) as usize).min(lat.len().saturating_sub(1))).copied().unwrap_or_default();
    Phase { ops_per_sec: lat.len() as f64 / wall.as_secs_f64(), p50: pick(0.50), p99: pick(0.99) }
}

/// Runs `ops` calls of `op(client, i)` spread over `clients` concurrent tasks.
async fn phase<F, Fut>(channel: &Channel, clients: usize, ops: usize, op: F) -> anyhow::Result<Phase>
where
    F: Fn(MetaClient<Channel>, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), tonic::Status>> + Send,
{
    let op = Arc::new(op);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let client = MetaClient::new(channel.clone());
        let op = Arc::clone(&op);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            for i in (c..ops).step_by(clients) {
                let t = Instant::now();
                op(client.clone(), i).await?;
                lat.push(t.elapsed());
            }
            Ok::<_, tonic::Status>(lat)
        }));
    }
    let mut all = Vec::with_capacity(ops);
    for t in tasks {
        all.extend(t.await.context("client task")??);
    }
    Ok(summarize(all, start.elapsed()))
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    println!("metad benchmark: {} creates then {} lookups per row; gRPC on loopback; fsync on every Raft append", args.ops, args.ops);
    println!(
        "| voters | clients | creates/s | create p50 ms | create p99 ms | lookups/s | lookup p50 ms | lookup p99 ms | disk bytes written by lookups |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for &voters in &args.voters {
        for &clients in &args.clients {
            let group = LocalGroup::start(voters).await?;
            let channel = Channel::from_shared(group.leader_addr().await?)?.connect().await?;
            let mut c = MetaClient::new(channel.clone());
            let share = c.get_share(pb::GetShareRequest { export_path: SHARE.1.into() }).await?.into_inner();
            let root = share.root.and_then(|r| r.node).ok_or_else(|| anyhow!("share without root"))?;
            let dir = c
                .create(pb::CreateRequest {
                    dir: Some(root),
                    name: format!("bench-{voters}-{clients}").into_bytes(),
                    kind: FileType::Directory as i32,
                    mode: 0o755,
                    how: CreateHow::Guarded as i32,
                    cred: root_cred(),
                    ..Default::default()
                })
                .await?
                .into_inner()
                .attr
                .and_then(|a| a.node)
                .ok_or_else(|| anyhow!("mkdir answered without a node"))?;

            let creates = phase(&channel, clients, args.ops, move |mut c, i| async move {
                c.create(pb::CreateRequest {
                    dir: Some(dir),
                    name: format!("f{i}").into_bytes(),
                    kind: FileType::Regular as i32,
                    mode: 0o644,
                    how: CreateHow::Guarded as i32,
                    cred: root_cred(),
                    ..Default::default()
                })
                .await
                .map(|_| ())
            })
            .await?;
            let written_before = disk_bytes_written();
            let lookups = phase(&channel, clients, args.ops, move |mut c, i| async move {
                c.lookup(pb::LookupRequest { dir: Some(dir), name: format!("f{i}").into_bytes(), cred: root_cred() })
                    .await
                    .map(|_| ())
            })
            .await?;
            let written = match (written_before, disk_bytes_written()) {
                (Some(a), Some(b)) => (b - a).to_string(),
                _ => "n/a".to_string(),
            };
            println!(
                "| {voters} | {clients} | {:.0} | {} | {} | {:.0} | {} | {} | {written} |",
                creates.ops_per_sec,
                ms(creates.p50),
                ms(creates.p99),
                lookups.ops_per_sec,
                ms(lookups.p50),
                ms(lookups.p99)
            );
            group.stop().await;
        }
    }
    Ok(())
}
