//! What every Tessera node needs to be a member of a cluster.
//!
//! Owns: configuration (`config`: defaults < `--config` file < `TESSERA_*` env < flags),
//! TLS identities and the one rustls crypto provider (`tls`), mutual TLS and role checks on
//! the gRPC links (`grpc_tls`), the Prometheus recorder and
//! the names of every `tessera_` metric (`metrics`), the metrics port's HTTP endpoint with
//! `/health` and `/health/ready` (`health`), logging (`telemetry`), graceful
//! shutdown (`shutdown`) and rendezvous placement of chunks on block daemons (`placement`).
//!
//! Must never: know a filesystem operation, a protocol, or a storage format.

pub mod config;
pub mod grpc_tls;
pub mod health;
pub mod metrics;
pub mod placement;
pub mod shutdown;
pub mod telemetry;
pub mod tls;

pub use config::Config;
pub use shutdown::Shutdown;
