//! `tessera`: one executable that runs any set of Tessera's roles.
//!
//! `tessera dev` runs a complete single-machine cluster (one metad voter, one block
//! daemon, one gateway) on embedded defaults. `tessera serve --config node.toml` (roles
//! chosen per node, seeds to join) arrives with the cluster-deployment issue.
//!
//! This file only parses the command line and turns flags into configuration overrides;
//! `node` starts and stops the roles.

mod node;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use cluster::config::{Config, Overrides};

#[derive(Parser)]
#[command(name = "tessera", about = "Tessera distributed network filesystem", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every role in one process: a complete single-machine cluster.
    Dev(DevArgs),
    /// Print the version.
    Version,
}

/// Flags of `tessera dev`. Each overrides the same key from the `--config` file and the
/// `TESSERA_*` environment (see docs/configuration.md).
#[derive(Args)]
struct DevArgs {
    /// Configuration file (TOML).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Directory for all data (key `data_dir`; default ./tessera-data).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// NFS and MOUNT port (key `nfs.port`; default 12049).
    #[arg(long, value_name = "N")]
    nfs_port: Option<u16>,
    /// Control API port (key `control.port`; default 7000).
    #[arg(long, value_name = "N")]
    control_port: Option<u16>,
    /// Prometheus metrics port (key `metrics.port`; default 9090).
    #[arg(long, value_name = "N")]
    metrics_port: Option<u16>,
}

impl DevArgs {
    fn overrides(&self) -> Overrides {
        let mut o: Overrides = Vec::new();
        if let Some(d) = &self.data_dir {
            o.push(("data_dir", d.display().to_string().into()));
        }
        if let Some(p) = self.nfs_port {
            o.push(("nfs.port", p.into()));
        }
        if let Some(p) = self.control_port {
            o.push(("control.port", p.into()));
        }
        if let Some(p) = self.metrics_port {
            o.push(("metrics.port", p.into()));
        }
        o
    }
}

fn main() -> std::process::ExitCode {
    cluster::tls::install_crypto_provider();
    let cli = Cli::parse();
    match cli.command {
        Command::Version => {
            println!("tessera {}", env!("CARGO_PKG_VERSION"));
            std::process::ExitCode::SUCCESS
        }
        Command::Dev(args) => {
            let config = match Config::load(args.config.as_deref(), &args.overrides()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("tessera: {e}");
                    return std::process::ExitCode::from(2);
                }
            };
            cluster::telemetry::init(&config.log);
            let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("tessera: starting the async runtime: {e}");
                    return std::process::ExitCode::FAILURE;
                }
            };
            match runtime.block_on(node::run_dev(config)) {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("tessera: {e:#}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
    }
}
