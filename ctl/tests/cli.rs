//! `tessctl` as scripts use it: help and version succeed, bad input fails with usage.

use std::process::Command;

fn tessctl(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tessctl")).args(args).output().expect("run tessctl")
}

#[test]
fn version_and_help() {
    let out = tessctl(&["version"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("tessctl {}", env!("CARGO_PKG_VERSION")));
    let out = tessctl(&["--help"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("version"));
}

#[test]
fn unknown_command_is_a_usage_error() {
    let out = tessctl(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2), "usage errors exit 2");
    assert!(String::from_utf8_lossy(&out.stderr).contains("frobnicate"));
}
