//! The deployment examples stay in step with the three-node example that the chaos harness
//! runs (`deploy/three-node`, exercised by `tests/chaos_short.rs`): the compose file mounts
//! each of its node files unchanged into a container at the address that file binds, puts
//! HAProxy and the S3 server at the addresses the example names, and issues a certificate
//! for every node address. Read as text: the checks are about which file goes where.

use std::path::{Path, PathBuf};

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

/// The address in the first `bind = "…"` of a node file (every listener of a node binds it).
fn bind_ip(toml: &str) -> String {
    toml.lines()
        .find_map(|l| l.trim().strip_prefix("bind = \"").and_then(|r| r.split('"').next()))
        .map(str::to_string)
        .expect("a bind address")
}

/// The compose service block (its lines, from `  name:` to the next such line) holding
/// `needle`.
fn service_with(compose: &str, needle: &str) -> String {
    let mut blocks: Vec<String> = Vec::new();
    for line in compose.lines() {
        let starts_service = line.starts_with("  ") && !line.starts_with("   ") && line.trim_end().ends_with(':');
        if starts_service || blocks.is_empty() || !line.starts_with(' ') && !line.is_empty() {
            blocks.push(String::new());
        }
        if let Some(b) = blocks.last_mut() {
            b.push_str(line);
            b.push('\n');
        }
    }
    blocks.into_iter().find(|b| b.contains(needle)).unwrap_or_else(|| panic!("compose.yaml does not mention {needle}"))
}

#[test]
fn the_compose_file_runs_the_three_node_example_unchanged() {
    let dir = deploy();
    let compose = read(&dir.join("compose/compose.yaml"));
    let mut nodes: Vec<PathBuf> = std::fs::read_dir(dir.join("three-node"))
        .expect("deploy/three-node")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    nodes.sort();
    assert_eq!(nodes.len(), 4, "node1-3.toml and gateway4.toml: {nodes:?}");
    for node in &nodes {
        let name = node.file_name().and_then(|n| n.to_str()).expect("name");
        let toml = read(node);
        let ip = bind_ip(&toml);
        let mount = format!("../three-node/{name}:/etc/tessera/node.toml:ro");
        let service = service_with(&compose, &mount);
        assert!(service.contains(&format!("ipv4_address: {ip} ")), "{name} binds {ip}; its service:\n{service}");
        let last = ip.rsplit('.').next().expect("ip");
        let certified = if ["1", "2", "3"].contains(&last) {
            compose.contains("for n in 1 2 3; do") && compose.contains("--name 10.0.0.$$n ")
        } else {
            compose.contains(&format!("--name 10.0.0.{last} "))
        };
        assert!(certified, "the certs service issues a certificate for {ip}");
        // Every other address the node file names is a service of the compose file.
        for other in toml.split(|c: char| !(c.is_ascii_digit() || c == '.')).filter(|t| t.starts_with("10.0.0.") && t.parse::<std::net::Ipv4Addr>().is_ok()) {
            assert!(compose.contains(&format!("ipv4_address: {other} ")), "{name} names {other}, which no service has");
        }
    }
    let haproxy = read(&dir.join("three-node/haproxy.cfg"));
    let lb = haproxy
        .lines()
        .find_map(|l| l.trim().strip_prefix("bind "))
        .and_then(|a| a.split(':').next())
        .expect("haproxy's bind");
    let service = service_with(&compose, "../three-node/haproxy.cfg:");
    assert!(service.contains(&format!("ipv4_address: {lb} ")), "HAProxy at {lb}:\n{service}");
    for server in haproxy.lines().filter_map(|l| l.trim().strip_prefix("server ")) {
        let ip = server.split_whitespace().nth(1).and_then(|a| a.split(':').next()).expect("server address");
        assert!(compose.contains(&format!("ipv4_address: {ip} ")), "HAProxy's server {ip} is a service");
    }
}

/// The node file `name` of the Kubernetes ConfigMap (a `  name: |` block scalar).
fn configmap_file(manifest: &str, name: &str) -> String {
    let head = format!("  {name}: |\n");
    let at = manifest.find(&head).unwrap_or_else(|| panic!("the ConfigMap has no {name}")) + head.len();
    manifest[at..]
        .lines()
        .take_while(|l| l.starts_with("    ") || l.is_empty())
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `text` loaded by Tessera's own loader (unknown keys and bad values are refused).
fn load(dir: &Path, name: &str, text: &str) -> cluster::config::Config {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    cluster::config::Config::load(Some(&path), &Vec::new()).unwrap_or_else(|e| panic!("{name}: {e}\n{text}"))
}

#[test]
fn the_kubernetes_node_files_load_and_keep_the_example_settings() {
    let dir = deploy();
    let manifest = read(&dir.join("kubernetes/tessera.yaml"));
    let tmp = tempfile::tempdir().expect("tempdir");
    // What the pods' environment adds (TESSERA_METAD__ADVERTISE, TESSERA_BLOCKD__ADVERTISE).
    let metad_text = configmap_file(&manifest, "metad.toml")
        .replace("[metad]\n", "[metad]\nadvertise = \"https://metad-0.metad.tessera.svc.cluster.local:7100\"\n");
    let blockd_text =
        configmap_file(&manifest, "blockd.toml").replace("[blockd]\n", "[blockd]\nadvertise = \"10.1.2.3:7200\"\n");
    let metad = load(tmp.path(), "metad.toml", &metad_text);
    let blockd = load(tmp.path(), "blockd.toml", &blockd_text);
    let gateway = load(tmp.path(), "gateway.toml", &configmap_file(&manifest, "gateway.toml"));
    let example = load(tmp.path(), "node1.toml", &read(&dir.join("three-node/node1.toml")));

    // The members are the StatefulSet's three stable names, which blockd and gateways dial.
    let members: Vec<String> = metad.metad.initial_members.values().cloned().collect();
    let expected: Vec<String> =
        (0..3).map(|i| format!("https://metad-{i}.metad.tessera.svc.cluster.local:7100")).collect();
    assert_eq!(members, expected);
    assert!(manifest.contains("serviceName: metad\n  replicas: 3\n"), "a StatefulSet of three metad pods");
    assert_eq!(blockd.metad_endpoints, expected);
    assert_eq!(gateway.metad_endpoints, expected);
    assert!(manifest.contains("name: TESSERA_METAD__ADVERTISE, value: \"https://$(POD_NAME).metad.tessera.svc.cluster.local:7100\""));

    // The example's settings, split by role.
    assert_eq!((metad.metad.port, metad.metad.blockd_dead_after_ms, metad.metad.blockd_heartbeat_ms),
        (example.metad.port, example.metad.blockd_dead_after_ms, example.metad.blockd_heartbeat_ms));
    let (b, e) = (&blockd.blockd, &example.blockd);
    assert_eq!(
        (b.port, b.segment_bytes, b.min_free_bytes, b.repair_interval_ms, b.scrub_interval_ms),
        (e.port, e.segment_bytes, e.min_free_bytes, e.repair_interval_ms, e.scrub_interval_ms)
    );
    assert_eq!((&b.s3.bucket, &b.s3.access_key, b.s3.local_bound_bytes), (&e.s3.bucket, &e.s3.access_key, e.s3.local_bound_bytes));
    assert_eq!(gateway.nfs.port, example.nfs.port);
    assert!(manifest.contains("- { name: nfs, port: 2049, protocol: TCP }"), "the Service exposes the gateways' port");
}
