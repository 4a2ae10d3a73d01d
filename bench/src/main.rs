//! Tessera's benchmarks: numbers printed side by side, never asserted by timed tests.
//!
//! `cargo run -p bench --release -- metad` measures the metadata service over its real
//! network path (gRPC on loopback, Raft between voters over gRPC): creates/s and lookups/s
//! with their p50/p99 latencies, for 1 and 3 voters and 1 and 16 concurrent clients, and the
//! bytes the process wrote to disk while serving lookups (a linearizable read must not write).
//!
//! `cargo run -p bench --release -- chunking` compares FastCDC sizes with the engine's own
//! chunker (docs/benchmarks.md says which was chosen and why).
//!
//! `cargo run -p bench --release -- dataplane [--size-mib N] [--dir D]` measures the gateway
//! engine's write and read MB/s for RF=1 and RF=3 (real metad, block daemons and engine in
//! this process, driven through `Vfs`) next to the machine's limits (sequential disk write
//! with fsync, 4 KiB fsync latency, BLAKE3 on one thread, loopback TCP and QUIC), and the
//! S3 tier's upload MB/s and PUTs per GiB.
//!
//! Owns only measurement; it starts metad nodes, block daemons and gateway engines through
//! their public APIs, like `tessera serve` and `tessera dev` do, in this one process.

mod chunking_bench;
mod dataplane_bench;
mod metad_bench;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "bench", about = "Tessera benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Metadata service: creates and lookups through gRPC, 1 and 3 voters, 1 and 16 clients.
    Metad(metad_bench::Args),
    /// FastCDC sizes: random-read amplification, extents per GiB, dedup of an edited file.
    Chunking(chunking_bench::Args),
    /// Data plane: engine write/read MB/s for RF=1 and RF=3 next to disk, BLAKE3 and
    /// loopback limits; S3 tier upload MB/s.
    Dataplane(dataplane_bench::Args),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match cli.command {
        Command::Metad(args) => rt.block_on(metad_bench::run(args)),
        Command::Chunking(args) => chunking_bench::run(args),
        Command::Dataplane(args) => rt.block_on(dataplane_bench::run(args)),
    }
}
