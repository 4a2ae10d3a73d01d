//! `tessera init-ca` and `tessera issue-cert`: the operator's side of the cluster CA.
//!
//! Owns: the two commands' arguments and messages. The CA directory holds `ca.der` and
//! `ca.key.der` (mode 0600) and should stay with the operator; `issue-cert` writes a node's
//! TLS directory in the layout `tessera serve` reads (`cluster::tls::NodeTls`). Must
//! never: overwrite an existing CA, or print a private key.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use cluster::tls::{Ca, NodeTls, Role};

#[derive(Args)]
pub struct InitCaArgs {
    /// Directory for the CA certificate and key (created; must not already hold a CA).
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
}

#[derive(Args)]
pub struct IssueCertArgs {
    /// Directory of the CA (`tessera init-ca --dir`).
    #[arg(long, value_name = "DIR")]
    ca: PathBuf,
    /// Role the certificate is for.
    #[arg(long, value_parser = ["metad", "blockd", "gateway", "tool"])]
    role: String,
    /// A DNS name or IP address the node is reached at (repeat for several). Block daemons
    /// and metad nodes are verified against the address clients dial.
    #[arg(long = "name", value_name = "NAME", required = true)]
    names: Vec<String>,
    /// The node's TLS directory (its `tls.dir`; by default `<data_dir>/tls`).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

pub fn init_ca(args: &InitCaArgs) -> ExitCode {
    if args.dir.join("ca.der").exists() || args.dir.join("ca.key.der").exists() {
        eprintln!("tessera: {} already holds a CA; refusing to replace it", args.dir.display());
        return ExitCode::from(2);
    }
    match Ca::load_or_create(&args.dir) {
        Ok(_) => {
            println!("Created the cluster CA in {} (ca.der, ca.key.der).", args.dir.display());
            println!("Keep ca.key.der private; issue node certificates with `tessera issue-cert --ca {}`.", args.dir.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tessera: creating the CA in {}: {e}", args.dir.display());
            ExitCode::FAILURE
        }
    }
}

pub fn issue_cert(args: &IssueCertArgs) -> ExitCode {
    if !(args.ca.join("ca.der").exists() && args.ca.join("ca.key.der").exists()) {
        eprintln!("tessera: {} holds no CA (create one with `tessera init-ca --dir {}`)", args.ca.display(), args.ca.display());
        return ExitCode::from(2);
    }
    if let Some(bad) = args.names.iter().find(|n| n.is_empty() || n.len() > 253 || n.contains(char::is_whitespace)) {
        eprintln!("tessera: --name {bad:?} is not a DNS name or IP address");
        return ExitCode::from(2);
    }
    let role = match args.role.as_str() {
        "metad" => Role::Metad,
        "blockd" => Role::Blockd,
        "gateway" => Role::Gateway,
        _ => Role::Tool,
    };
    let issued = Ca::load_or_create(&args.ca).and_then(|ca| NodeTls::new(&args.out).issue(&ca, &role, &args.names));
    match issued {
        Ok(_) => {
            println!(
                "Issued a {role} certificate for {} into {}/{role}/ (CA certificate in {}/ca/).",
                args.names.join(", "),
                args.out.display(),
                args.out.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tessera: issuing the certificate: {e}");
            ExitCode::FAILURE
        }
    }
}
