//! `tessera`: one executable that runs any set of Tessera's roles.
//!
//! `tessera dev` runs a complete single-machine cluster (one metad voter, one block
//! daemon, one gateway) on embedded defaults. `tessera serve --config node.toml` runs the
//! roles a node's configuration names (see docs/cluster.md). `tessera init-ca` and
//! `tessera issue-cert` create the cluster CA and the nodes' certificates (`pki`).
//!
//! This file only parses the command line and turns flags into configuration overrides;
//! `node` starts and stops the roles.

mod node;
mod pki;

/// mimalloc instead of glibc malloc: the data path allocates and frees 128 KiB–1 MiB
/// buffers at a high rate, which glibc serves with fresh mmap'd (zeroed, faulted-in)
/// pages; mimalloc reuses them (docs/benchmarks.md, "NFS side by side").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Run the roles named in a node's configuration (`roles = ["metad", "blockd", "gateway"]`).
    Serve(ServeArgs),
    /// Create the cluster CA (certificate and private key) in a directory.
    InitCa(pki::InitCaArgs),
    /// Issue a node certificate for one role from the cluster CA, into a node's TLS directory.
    IssueCert(pki::IssueCertArgs),
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

/// Flags of `tessera serve`.
#[derive(Args)]
struct ServeArgs {
    /// Configuration file (TOML; see docs/configuration.md and docs/cluster.md).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Directory for all data (key `data_dir`).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
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
        Command::InitCa(args) => pki::init_ca(&args),
        Command::IssueCert(args) => pki::issue_cert(&args),
        Command::Dev(args) => run(args.config.as_deref(), &args.overrides(), node::run_dev),
        Command::Serve(args) => {
            let mut o: Overrides = Vec::new();
            if let Some(d) = &args.data_dir {
                o.push(("data_dir", d.display().to_string().into()));
            }
            run(Some(&args.config), &o, node::run_serve)
        }
    }
}

/// Loads the configuration, starts logging and the runtime, and runs `role` to completion.
fn run<F, Fut>(file: Option<&std::path::Path>, overrides: &Overrides, role: F) -> std::process::ExitCode
where
    F: FnOnce(Config) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let config = match Config::load(file, overrides) {
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
    let result = runtime.block_on(role(config));
    // The roles have stopped (or failed to start): tasks and blocking calls still running
    // get a bounded time, so a node exits — and is restarted — even when a store is wedged.
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN);
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tessera: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// How long tasks left over after the roles stopped may take before the process exits.
const RUNTIME_SHUTDOWN: std::time::Duration = std::time::Duration::from_secs(5);
