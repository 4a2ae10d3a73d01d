//! `chaos`: runs the fault-injection harness once and prints its summary as one JSON line.
//! Exit status 0 when nothing acknowledged was lost, no read saw a wrong state, no
//! operation failed and no process panicked; 1 otherwise; 2 when the run could not be set
//! up. See docs/reliability.md.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "chaos", about = "Faults under load against a real Tessera cluster")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start the three-node example with HAProxy and S3, inject faults while clients work,
    /// heal, check.
    Run {
        /// Seed of the fault schedule and of the clients' operations.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Number of faults to inject.
        #[arg(long, default_value_t = 20)]
        faults: usize,
        /// Concurrent NFS clients.
        #[arg(long, default_value_t = 3)]
        clients: usize,
        /// Only these fault kinds (kill9, pause, s3_outage, gateway_kill, disk_full, partition, link_cut, isolate; repeat or comma-separate; all by default).
        #[arg(long, value_delimiter = ',')]
        kinds: Vec<String>,
        /// The `tessera` binary (default: next to this one).
        #[arg(long)]
        tessera: Option<PathBuf>,
        /// Keep the cluster's files (configs, logs, data) in this folder.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let Cmd::Run { seed, faults, clients, kinds, tessera, dir } = Cli::parse().command;
    let tessera = match tessera.or_else(|| std::env::current_exe().ok().and_then(|p| Some(p.parent()?.join("tessera")))) {
        Some(t) if t.exists() => t,
        _ => {
            eprintln!("chaos: no tessera binary next to this one; build it (cargo build --release) or pass --tessera");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("chaos: {e}");
            return ExitCode::from(2);
        }
    };
    let opts = chaos::Options { seed, faults, clients, kinds, tessera, dir };
    // Interrupted (Ctrl-C, or SIGTERM from a CI limit): the run is dropped, and with it the
    // cluster, which kills its processes and removes its namespaces and mounts.
    let outcome = runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = chaos::run(&opts) => r,
            _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted; the cluster was stopped"),
            _ = term.recv() => anyhow::bail!("terminated; the cluster was stopped"),
        }
    });
    match outcome {
        Ok(summary) => {
            println!("{}", serde_json::to_string(&summary).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}")));
            if summary.passed() { ExitCode::SUCCESS } else { ExitCode::from(1) }
        }
        Err(e) => {
            eprintln!("chaos: {e:#}");
            ExitCode::from(2)
        }
    }
}
