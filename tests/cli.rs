//! The `tessera` command line and configuration as an operator meets them: bad flags,
//! bad environment values and bad files are refused with a message naming the problem and
//! exit code 2, before anything starts.

use std::process::Command;

fn tessera(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tessera"));
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run tessera")
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn version_and_help() {
    let out = tessera(&["version"], &[]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("tessera "));
    let out = tessera(&["dev", "--help"], &[]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout).into_owned();
    for flag in ["--data-dir", "--nfs-port", "--control-port", "--metrics-port", "--config"] {
        assert!(help.contains(flag), "dev --help lists {flag}");
    }
}

#[test]
fn bad_configuration_is_refused_clearly() {
    let out = tessera(&["dev", "--nfs-port", "seventy"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--nfs-port"), "{}", stderr(&out));

    let out = tessera(&["dev"], &[("TESSERA_NFS__PORT", "99999")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).to_lowercase().contains("nfs.port"), "{}", stderr(&out));

    let out = tessera(&["dev"], &[("TESSERA_NFS__PROT", "1")]);
    assert_eq!(out.status.code(), Some(2), "unknown keys are errors");
    assert!(stderr(&out).to_lowercase().contains("prot"), "{}", stderr(&out));

    let out = tessera(&["dev", "--config", "/nonexistent/tessera.toml"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("/nonexistent/tessera.toml"), "{}", stderr(&out));

    let out = tessera(&["dev"], &[("TESSERA_GATEWAY__CHUNK_MIN_BYTES", "8")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("gateway.chunk_min_bytes"), "{}", stderr(&out));
}
