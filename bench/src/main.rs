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
//! Owns only measurement; it starts metad nodes through metad's public API, like
//! `tessera serve` does, in this one process.

mod chunking_bench;
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
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match cli.command {
        Command::Metad(args) => rt.block_on(metad_bench::run(args)),
        Command::Chunking(args) => chunking_bench::run(args),
    }
}
