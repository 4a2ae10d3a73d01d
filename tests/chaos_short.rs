//! The short chaos run of the default test command (issue 7): the three-node example of
//! `deploy/three-node` behind HAProxy with an S3 server, three NFS clients working through
//! the load balancer, 20 faults (kill -9 and restart of a node, SIGSTOP/SIGCONT, S3
//! outages) from a fixed seed, then heal and check. Fails on any acknowledged operation
//! lost, any read that did not return the acknowledged state, any operation that never
//! completed (a client must see stalls, never errors) and any panic in a node's log.
//! The long run (≥ 1,000 faults) is `cargo run -p chaos --release -- run --faults 1000`
//! (docs/reliability.md).

#[test]
fn twenty_faults_lose_nothing_acknowledged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = chaos::Options {
        seed: 7,
        faults: 20,
        clients: 3,
        kinds: Vec::new(),
        tessera: std::path::PathBuf::from(env!("CARGO_BIN_EXE_tessera")),
        dir: Some(dir.path().to_path_buf()),
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let summary = rt.block_on(chaos::run(&opts)).expect("the chaos run sets up");
    let json = serde_json::to_string(&summary).expect("summary as JSON");
    println!("CHAOS_SUMMARY {json}");
    assert!(summary.faults_injected == 20, "{json}");
    assert!(summary.operations_acknowledged > 100, "the clients worked through the faults: {json}");
    assert!(summary.passed(), "lost acknowledgments, violations, failed operations or panics: {json}");
}
