//! `tessctl`, the operator CLI.
//!
//! Owns: the commands operators run against a cluster's control API (status, nodes,
//! shares, users, permissions, GC, snapshots), human tables by default and
//! `--output json|yaml`. For now only `--help` and `version` exist; the control API's
//! commands arrive with the control plane issue.
//!
//! Must never: reach into a daemon's storage; it talks only to the control API.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "tessctl", about = "Operate a Tessera cluster", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print tessctl's version.
    Version,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Version => println!("tessctl {}", env!("CARGO_PKG_VERSION")),
    }
    Ok(())
}
