//! Node configuration: one serde struct, layered defaults < `--config` file < `TESSERA_*`
//! environment (nested keys joined by `__`, e.g. `TESSERA_NFS__PORT`) < command-line flags.
//!
//! Every key is documented in `docs/configuration.md`; a test keeps the two in step.
//! Unknown keys are refused, so a typo is an error rather than a silently ignored setting.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// Largest NFS record (RPC message) a gateway accepts by default: 1 MiB of WRITE payload
/// plus headroom for the RPC and NFS headers.
pub const DEFAULT_MAX_RECORD_BYTES: u32 = 1024 * 1024 + 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("configuration: {key}: {reason}")]
    Invalid { key: &'static str, reason: String },
}

/// The whole configuration of one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Directory holding every role's data (`metad/`, `blockd/`, `tls/`).
    #[serde(deserialize_with = "path_or_number")]
    pub data_dir: PathBuf,
    /// This node's id in the metad Raft group; must not be 0.
    pub node_id: u64,
    /// Roles `tessera serve` runs on this node.
    pub roles: Vec<Role>,
    /// metad gRPC URLs (`http://host:port`, any members) that this node's blockd and gateway
    /// roles use; empty = this node's own metad (it must then run the metad role).
    pub metad_endpoints: Vec<String>,
    /// TLS identities of the node (`tessera serve`).
    pub tls: TlsConfig,
    /// NFSv3 + MOUNT listener of the gateway.
    pub nfs: NfsConfig,
    /// Control API (gRPC) listener.
    pub control: ListenConfig,
    /// Prometheus `/metrics` listener.
    pub metrics: ListenConfig,
    /// metad: its internal gRPC listener (filesystem operations, Raft, forwarded control
    /// calls), how the group is formed, and snapshot thresholds.
    pub metad: MetadConfig,
    /// The block daemon.
    pub blockd: BlockdConfig,
    /// The gateway's file I/O engine.
    pub gateway: GatewayConfig,
    /// Logging.
    pub log: LogConfig,
}

/// Where a node's certificates are: the layout `tessera issue-cert` writes
/// (`ca/ca.der`, `<role>/cert.der`, `<role>/key.der`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// The directory; empty = `<data_dir>/tls`.
    #[serde(deserialize_with = "path_or_number")]
    pub dir: PathBuf,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig { dir: PathBuf::new() }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenConfig {
    /// Address to bind.
    pub bind: IpAddr,
    /// Port to bind; 0 picks a free port.
    pub port: u16,
}

impl ListenConfig {
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.bind, self.port)
    }
}

/// The roles a node can run (`tessera serve`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Metad,
    Blockd,
    Gateway,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetadConfig {
    /// Address of the internal gRPC listener.
    pub bind: IpAddr,
    /// Its port; 0 picks a free one (only sensible for a single node).
    pub port: u16,
    /// URL other members reach this node at (`http://host:port`); empty = `http://bind:port`.
    pub advertise: String,
    /// Voters of a new group, node id (as a string key) -> advertised URL. The node with the
    /// lowest id bootstraps the group on an empty data directory, unless `join` is set.
    pub initial_members: BTreeMap<String, String>,
    /// Bootstrap the group from `initial_members` (or as a single voter if empty) on an empty
    /// data directory, whatever this node's id.
    pub bootstrap: bool,
    /// Control API URLs of existing members; a node with an empty data directory asks them to
    /// add it (as a voter) instead of bootstrapping.
    pub join: Vec<String>,
    /// Build a snapshot after this many applied log entries since the last one.
    pub snapshot_logs: u64,
    /// Log entries kept behind the latest snapshot when the log is purged.
    pub keep_logs: u64,
    /// A block daemon without a heartbeat for this long is declared dead (its chunks are
    /// re-replicated and it gets no new ones).
    pub blockd_dead_after_ms: u64,
    /// How often block daemons are told to heartbeat.
    pub blockd_heartbeat_ms: u64,
}

impl MetadConfig {
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.bind, self.port)
    }

    /// `initial_members` with parsed ids; errors name the key.
    pub fn initial_member_ids(&self) -> Result<BTreeMap<u64, String>, ConfigError> {
        let mut out = BTreeMap::new();
        for (id, addr) in &self.initial_members {
            let parsed = id.parse::<u64>().ok().filter(|n| *n != 0).ok_or_else(|| ConfigError::Invalid {
                key: "metad.initial_members",
                reason: format!("{id:?} is not a node id (a positive integer)"),
            })?;
            if !(addr.starts_with("http://") || addr.starts_with("https://")) {
                return Err(ConfigError::Invalid {
                    key: "metad.initial_members",
                    reason: format!("address of node {id} must be an http(s):// URL, got {addr:?}"),
                });
            }
            out.insert(parsed, addr.clone());
        }
        Ok(out)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NfsConfig {
    /// Address to bind.
    pub bind: IpAddr,
    /// Port of NFS and MOUNT (both programs answer on it).
    pub port: u16,
    /// Largest RPC record accepted, in bytes; a larger record marker closes the connection.
    pub max_record_bytes: u32,
    /// Most entries of the duplicate request cache (replies of non-idempotent calls kept
    /// for retransmissions), oldest evicted first.
    pub drc_entries: u32,
    /// Most bytes of the duplicate request cache (replies plus a fixed cost per entry).
    pub drc_bytes: u64,
    /// TCP port of the embedded portmapper (program 100000 v2) on `bind`; 0 = off.
    pub portmap_port: u16,
    /// Load balancers (addresses or CIDR blocks) whose connections start with a PROXY
    /// protocol header (v1 or v2) naming the real client; required from them, never
    /// read from anyone else. Empty = none.
    pub proxy_protocol_from: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BlockdConfig {
    /// Address of the QUIC chunk listener.
    pub bind: IpAddr,
    /// UDP port of the QUIC chunk listener; 0 picks a free one.
    pub port: u16,
    /// Size a new segment file is preallocated to, in bytes.
    pub segment_bytes: u64,
    /// Puts are refused (NFS3ERR_NOSPC) when the data disk has less free space than this.
    pub min_free_bytes: u64,
    /// QUIC address (`ip:port`) announced to metad for gateways and peers; empty = the
    /// bound address (which must then not be a wildcard).
    pub advertise: String,
    /// Pause between anti-entropy re-replication passes, in ms; 0 turns the loop off.
    pub repair_interval_ms: u64,
    /// Most chunk copies a repair pass sends per second (0 = unlimited).
    pub repair_max_copies_per_sec: u32,
    /// Pause between scrub passes (re-verify every local chunk, rewrite bad copies), in ms;
    /// 0 turns the loop off.
    pub scrub_interval_ms: u64,
    /// Bytes per second a scrub pass reads and rewrites at most (0 = unlimited).
    pub scrub_max_bytes_per_sec: u64,
    /// The S3 tier; off while `bucket` is empty.
    pub s3: S3Config,
}

/// Where a block daemon's sealed segments go (one pack object each) and how much of them it
/// keeps locally. Prefer `TESSERA_BLOCKD__S3__SECRET_KEY` over writing the secret in a file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Config {
    /// Endpoint URL of an S3-compatible server (path-style); empty = AWS.
    pub endpoint: String,
    /// Bucket for packs; empty turns the tier off.
    pub bucket: String,
    /// Region (signing).
    pub region: String,
    /// Access key id.
    pub access_key: String,
    /// Secret access key.
    pub secret_key: String,
    /// Key prefix of this daemon's packs; empty = the daemon's id.
    pub prefix: String,
    /// Bytes of local segment files kept; uploaded segments beyond this are evicted.
    pub local_bound_bytes: u64,
    /// Pack uploads in flight at once.
    pub upload_concurrency: u32,
    /// A read of a chunk that exists only in S3 fails (NFS3ERR_IO) after this long.
    pub read_timeout_ms: u64,
    /// How often a sealed segment whose chunks are not all located in S3 is checked again.
    pub locate_interval_ms: u64,
    /// A chunk still not in S3 this long after its segment was packed is uploaded by its
    /// current primary (its first primary died or lacked it).
    pub leftover_grace_ms: u64,
    /// A chunk still not in S3 after this long is uploaded by any daemon holding it.
    pub orphan_grace_ms: u64,
}

impl Default for S3Config {
    fn default() -> Self {
        S3Config {
            endpoint: String::new(),
            bucket: String::new(),
            region: "us-east-1".into(),
            access_key: String::new(),
            secret_key: String::new(),
            prefix: String::new(),
            local_bound_bytes: 2 << 30,
            upload_concurrency: 4,
            read_timeout_ms: 5000,
            locate_interval_ms: 5_000,
            leftover_grace_ms: 120_000,
            orphan_grace_ms: 1_800_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// Bytes of UNSTABLE write data buffered per gateway before writes wait for a flush.
    pub write_buffer_bytes: u64,
    /// Bytes of the hash-keyed chunk cache shared by all files.
    pub cache_bytes: u64,
    /// FastCDC minimum chunk size (64 B ..= 1 MiB).
    pub chunk_min_bytes: u32,
    /// FastCDC average chunk size (256 B ..= 4 MiB).
    pub chunk_avg_bytes: u32,
    /// FastCDC maximum chunk size (1 KiB ..= 16 MiB).
    pub chunk_max_bytes: u32,
    /// A file's buffered UNSTABLE writes are flushed after this many milliseconds without a write.
    pub flush_idle_ms: u64,
    /// Reach the metad and the block daemon running in the same process (a node with
    /// several roles, `tessera dev`) by calls instead of gRPC and QUIC; false uses the
    /// network links as for any other node.
    pub in_process: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `tracing` filter directives, e.g. `info` or `info,gateway=debug`.
    pub filter: String,
    /// Log JSON lines instead of human-readable text.
    pub json: bool,
}

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./tessera-data"),
            node_id: 1,
            roles: vec![Role::Metad],
            metad_endpoints: Vec::new(),
            tls: TlsConfig::default(),
            nfs: NfsConfig::default(),
            control: ListenConfig { bind: LOCALHOST, port: 7000 },
            metrics: ListenConfig { bind: LOCALHOST, port: 9090 },
            metad: MetadConfig::default(),
            blockd: BlockdConfig::default(),
            gateway: GatewayConfig::default(),
            log: LogConfig::default(),
        }
    }
}

impl Default for MetadConfig {
    fn default() -> Self {
        MetadConfig {
            bind: LOCALHOST,
            port: 0,
            advertise: String::new(),
            initial_members: BTreeMap::new(),
            bootstrap: false,
            join: Vec::new(),
            snapshot_logs: 10_000,
            keep_logs: 1_000,
            blockd_dead_after_ms: 10_000,
            blockd_heartbeat_ms: 2_000,
        }
    }
}

impl NfsConfig {
    /// `proxy_protocol_from`, parsed (the error names the bad entry).
    pub fn proxy_sources(&self) -> Result<Vec<proto::export::ClientMatch>, String> {
        if self.proxy_protocol_from.len() > proto::export::MAX_CLIENT_ENTRIES {
            return Err(format!("at most {} entries", proto::export::MAX_CLIENT_ENTRIES));
        }
        self.proxy_protocol_from.iter().map(|e| proto::export::ClientMatch::parse(e)).collect()
    }
}

impl Default for NfsConfig {
    fn default() -> Self {
        NfsConfig {
            bind: LOCALHOST,
            port: 12049,
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            drc_entries: 4096,
            drc_bytes: 16 << 20,
            portmap_port: 0,
            proxy_protocol_from: Vec::new(),
        }
    }
}

impl Default for BlockdConfig {
    fn default() -> Self {
        BlockdConfig {
            bind: LOCALHOST,
            port: 0,
            segment_bytes: 64 << 20,
            min_free_bytes: 512 << 20,
            advertise: String::new(),
            repair_interval_ms: 60_000,
            repair_max_copies_per_sec: 200,
            scrub_interval_ms: 24 * 3600 * 1000,
            scrub_max_bytes_per_sec: 64 << 20,
            s3: S3Config::default(),
        }
    }
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            write_buffer_bytes: 256 << 20,
            cache_bytes: 256 << 20,
            // Chosen by `cargo run -p bench --release -- chunking` (docs/benchmarks.md): the
            // largest sizes whose 4 KiB random read fetches at most 64x.
            chunk_min_bytes: 32 << 10,
            chunk_avg_bytes: 128 << 10,
            chunk_max_bytes: 512 << 10,
            flush_idle_ms: 2000,
            in_process: true,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { filter: "info".into(), json: false }
    }
}

/// Command-line overrides, as (dotted key, value) pairs: `("nfs.port", 12049.into())`.
pub type Overrides = Vec<(&'static str, figment::value::Value)>;

impl Config {
    /// Builds the configuration from its layers. `file` must exist if given.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            fig = fig.merge(Toml::file_exact(path));
        }
        fig = fig.merge(Env::prefixed("TESSERA_").split("__"));
        for (key, value) in overrides {
            fig = fig.merge(Serialized::global(key, value.clone()));
        }
        let config: Config = fig.extract().map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot: ranges and relations between keys.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: &str| Err(ConfigError::Invalid { key, reason: reason.to_string() });
        if self.node_id == 0 {
            return invalid("node_id", "must not be 0");
        }
        let m = &self.metad;
        let members = m.initial_member_ids()?;
        if !members.is_empty() && !members.contains_key(&self.node_id) && m.join.is_empty() {
            return invalid("metad.initial_members", "must include this node's node_id (or set metad.join)");
        }
        if m.join.iter().any(|u| !(u.starts_with("http://") || u.starts_with("https://"))) {
            return invalid("metad.join", "entries must be http(s):// URLs of members' control APIs");
        }
        if m.snapshot_logs == 0 {
            return invalid("metad.snapshot_logs", "must be at least 1");
        }
        if !(m.advertise.is_empty() || m.advertise.starts_with("http://") || m.advertise.starts_with("https://")) {
            return invalid("metad.advertise", "must be an http(s):// URL");
        }
        if m.blockd_heartbeat_ms == 0 || m.blockd_heartbeat_ms >= m.blockd_dead_after_ms {
            return invalid("metad.blockd_heartbeat_ms", "must be at least 1 and below metad.blockd_dead_after_ms");
        }
        if self.metad_endpoints.iter().any(|u| !(u.starts_with("http://") || u.starts_with("https://"))) {
            return invalid("metad_endpoints", "entries must be http(s):// URLs of metad members");
        }
        let needs_metad = self.roles.iter().any(|r| matches!(r, Role::Blockd | Role::Gateway));
        if needs_metad && self.metad_endpoints.is_empty() && !self.roles.contains(&Role::Metad) {
            return invalid("metad_endpoints", "a node without the metad role must name metad members to use");
        }
        if !self.blockd.advertise.is_empty() && self.blockd.advertise.parse::<SocketAddr>().is_err() {
            return invalid("blockd.advertise", "must be an ip:port address");
        }
        let g = &self.gateway;
        if !(64..=(1 << 20)).contains(&g.chunk_min_bytes) {
            return invalid("gateway.chunk_min_bytes", "must be within 64 B ..= 1 MiB");
        }
        if !(256..=(4 << 20)).contains(&g.chunk_avg_bytes) {
            return invalid("gateway.chunk_avg_bytes", "must be within 256 B ..= 4 MiB");
        }
        if !(1024..=(16 << 20)).contains(&g.chunk_max_bytes) {
            return invalid("gateway.chunk_max_bytes", "must be within 1 KiB ..= 16 MiB");
        }
        if !(g.chunk_min_bytes <= g.chunk_avg_bytes && g.chunk_avg_bytes <= g.chunk_max_bytes) {
            return invalid("gateway.chunk_avg_bytes", "chunk sizes must satisfy min <= avg <= max");
        }
        if g.write_buffer_bytes < u64::from(g.chunk_max_bytes) {
            return invalid("gateway.write_buffer_bytes", "must hold at least one maximum-size chunk");
        }
        if self.nfs.max_record_bytes < 64 * 1024 {
            return invalid("nfs.max_record_bytes", "must be at least 64 KiB");
        }
        if !(1..=(1 << 20)).contains(&self.nfs.drc_entries) {
            return invalid("nfs.drc_entries", "must be within 1 ..= 1048576");
        }
        if !((64 << 10)..=(4 << 30)).contains(&self.nfs.drc_bytes) {
            return invalid("nfs.drc_bytes", "must be within 64 KiB ..= 4 GiB");
        }
        if self.nfs.portmap_port != 0 && self.nfs.portmap_port == self.nfs.port {
            return invalid("nfs.portmap_port", "must differ from nfs.port");
        }
        if let Err(e) = self.nfs.proxy_sources() {
            return invalid("nfs.proxy_protocol_from", &e);
        }
        let s3 = &self.blockd.s3;
        if s3.locate_interval_ms == 0 || s3.leftover_grace_ms > s3.orphan_grace_ms {
            return invalid("blockd.s3.leftover_grace_ms", "locate_interval_ms must be positive and leftover_grace_ms <= orphan_grace_ms");
        }
        if self.blockd.segment_bytes < u64::from(g.chunk_max_bytes) * 2 {
            return invalid("blockd.segment_bytes", "must hold at least two maximum-size chunks");
        }
        Ok(())
    }

    pub fn metad_dir(&self) -> PathBuf {
        self.data_dir.join("metad")
    }

    pub fn blockd_dir(&self) -> PathBuf {
        self.data_dir.join("blockd")
    }

    /// `tls.dir`, or `<data_dir>/tls` when it is empty.
    pub fn tls_dir(&self) -> PathBuf {
        if self.tls.dir.as_os_str().is_empty() { self.data_dir.join("tls") } else { self.tls.dir.clone() }
    }
}

/// Environment values are parsed as TOML-ish values, so `TESSERA_DATA_DIR=12345` arrives as
/// a number: accept it as a path too.
fn path_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum P {
        S(String),
        I(i64),
        U(u64),
        F(f64),
    }
    Ok(match P::deserialize(d)? {
        P::S(s) => PathBuf::from(s),
        P::I(i) => PathBuf::from(i.to_string()),
        P::U(u) => PathBuf::from(u.to_string()),
        P::F(f) => PathBuf::from(f.to_string()),
    })
}

#[cfg(test)]
#[allow(clippy::result_large_err, reason = "figment::Jail's closures return figment's own error type")]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert!(Config::default().validate().is_ok());
    }

    #[test]
    fn nfs_cache_and_portmapper_keys_are_checked() {
        let check = |edit: fn(&mut NfsConfig), key: &str| {
            let mut c = Config::default();
            edit(&mut c.nfs);
            match c.validate() {
                Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key),
                other => panic!("expected {key} to be refused, got {other:?}"),
            }
        };
        check(|n| n.drc_entries = 0, "nfs.drc_entries");
        check(|n| n.drc_bytes = 1024, "nfs.drc_bytes");
        check(|n| n.portmap_port = n.port, "nfs.portmap_port");
        check(|n| n.proxy_protocol_from = vec!["10.0.0.10".into(), "lb.example".into()], "nfs.proxy_protocol_from");
        let mut c = Config::default();
        c.nfs.portmap_port = 111;
        c.nfs.proxy_protocol_from = vec!["10.0.0.10".into(), "192.0.2.0/24".into()];
        assert!(c.validate().is_ok());
    }

    #[test]
    fn layers_apply_in_order() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "node.toml",
                "data_dir = \"/from-file\"\n[nfs]\nport = 1111\n[control]\nbind = \"127.0.0.1\"\nport = 2222\n",
            )?;
            jail.set_env("TESSERA_NFS__PORT", "3333");
            jail.set_env("TESSERA_DATA_DIR", "12345");
            let overrides: Overrides = vec![("control.port", 4444.into())];
            let c = Config::load(Some(Path::new("node.toml")), &overrides).map_err(|e| e.to_string())?;
            assert_eq!(c.nfs.port, 3333, "env beats file");
            assert_eq!(c.control.port, 4444, "flag beats file");
            assert_eq!(c.data_dir, PathBuf::from("12345"), "numeric env value accepted as a path");
            assert_eq!(c.metrics.port, 9090, "default kept");
            Ok(())
        });
    }

    #[test]
    fn bad_input_is_a_clear_error() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("typo.toml", "[nfs]\nprot = 1\n")?;
            let err = Config::load(Some(Path::new("typo.toml")), &vec![]).expect_err("unknown key");
            assert!(err.to_string().contains("prot"), "{err}");
            let err = Config::load(Some(Path::new("missing.toml")), &vec![]).expect_err("missing file");
            assert!(err.to_string().contains("missing.toml"), "{err}");
            jail.set_env("TESSERA_NODE_ID", "0");
            let err = Config::load(None, &vec![]).expect_err("node id 0");
            assert!(err.to_string().contains("node_id"), "{err}");
            Ok(())
        });
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err, reason = "figment::Jail's closures return figment's own error type")]
mod metad_tests {
    use super::*;

    #[test]
    fn cluster_keys_parse_and_are_checked() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "n2.toml",
                "node_id = 2\nroles = [\"metad\"]\n[metad]\nport = 7102\nsnapshot_logs = 50\n\
                 [metad.initial_members]\n1 = \"http://127.0.0.1:7101\"\n2 = \"http://127.0.0.1:7102\"\n",
            )?;
            let c = Config::load(Some(Path::new("n2.toml")), &vec![]).map_err(|e| e.to_string())?;
            assert_eq!(c.roles, vec![Role::Metad]);
            assert_eq!(c.metad.snapshot_logs, 50);
            let ids = c.metad.initial_member_ids().map_err(|e| e.to_string())?;
            assert_eq!(ids.keys().copied().collect::<Vec<_>>(), vec![1, 2]);
            jail.create_file("bad.toml", "node_id = 3\n[metad.initial_members]\nx = \"http://a:1\"\n")?;
            let err = Config::load(Some(Path::new("bad.toml")), &vec![]).expect_err("bad id");
            assert!(err.to_string().contains("metad.initial_members"), "{err}");
            jail.create_file("notme.toml", "node_id = 3\n[metad.initial_members]\n1 = \"http://a:1\"\n")?;
            let err = Config::load(Some(Path::new("notme.toml")), &vec![]).expect_err("not a member");
            assert!(err.to_string().contains("node_id"), "{err}");
            jail.create_file("role.toml", "roles = [\"nope\"]\n")?;
            assert!(Config::load(Some(Path::new("role.toml")), &vec![]).is_err());
            Ok(())
        });
    }
}

#[cfg(test)]
mod doc_tests {
    use super::*;
    use figment::value::Value;

    fn keys(prefix: &str, v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Dict(_, d) => {
                for (k, v) in d {
                    let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                    keys(&key, v, out);
                }
            }
            _ => out.push(prefix.to_string()),
        }
    }

    #[test]
    fn every_key_is_documented() {
        let doc = include_str!("../../docs/configuration.md");
        let value = Value::serialize(Config::default()).expect("serialize defaults");
        let mut all = Vec::new();
        keys("", &value, &mut all);
        assert!(all.len() > 10, "walked the config: {all:?}");
        // Tables whose keys are user-chosen (empty by default) are documented by their name.
        all.push("metad.initial_members".to_string());
        let missing: Vec<_> = all.iter().filter(|k| !doc.contains(&format!("| `{k}` |"))).collect();
        assert!(missing.is_empty(), "keys missing from docs/configuration.md: {missing:?}");
    }
}
