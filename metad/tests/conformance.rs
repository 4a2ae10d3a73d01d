//! The metadata service conformance suite: every `Meta` operation, asserted against POSIX and
//! the contract comments in `proto/proto/meta.proto`, run against the real Raft-backed service
//! over gRPC — once on a one-voter group and once on a three-voter group.
//!
//! Layout: `conformance/harness.rs` starts the group and gives each case a [`harness::Ctx`]
//! (its own fresh directory, typed wrappers returning `Result<_, FsError>`, credentials);
//! every other module holds the cases of one area and lists them in its `cases()`. A case is a
//! plain `async fn(&Ctx) -> Result<(), String>`. Cases run concurrently (each in its own
//! directory), except the few marked serial, which measure share-wide counters. A test fails
//! listing every failing case with its message, not just the first.
//!
//! Run: `cargo test -p metad --test conformance`; one area or case only:
//! `CONFORMANCE_FILTER=rename:: cargo test -p metad --test conformance`.

#![allow(clippy::unwrap_used)] // tests may unwrap (workspace lint note)

mod conformance {
    #[macro_use]
    pub mod harness;
    pub mod access;
    pub mod badinput;
    pub mod create;
    pub mod dataplane;
    pub mod dirs;
    pub mod extents;
    pub mod fsstat;
    pub mod handles;
    pub mod link;
    pub mod mknod;
    pub mod names;
    pub mod perms;
    pub mod readdir;
    pub mod rename;
    pub mod request_ids;
    pub mod setattr;
    pub mod symlink;
}

use conformance::harness::{self, Case};

/// Every registered case, area by area.
fn all_cases() -> Vec<Case> {
    use conformance::*;
    [
        handles::cases(),
        create::cases(),
        names::cases(),
        dirs::cases(),
        symlink::cases(),
        mknod::cases(),
        link::cases(),
        rename::cases(),
        setattr::cases(),
        perms::cases(),
        access::cases(),
        readdir::cases(),
        extents::cases(),
        request_ids::cases(),
        fsstat::cases(),
        badinput::cases(),
        dataplane::cases(),
    ]
    .into_iter()
    .flatten()
    .collect()
}

async fn conformance(voters: u64) {
    let cases = all_cases();
    let total = cases.len();
    let failures = harness::run_all(voters, cases).await.unwrap_or_else(|e| panic!("{e}"));
    if !failures.is_empty() {
        let list: Vec<String> = failures.iter().map(|(name, msg)| format!("  {name}: {msg}")).collect();
        panic!(
            "{} of {total} conformance cases failed on a {voters}-voter group:\n{}",
            failures.len(),
            list.join("\n")
        );
    }
}

#[test]
fn at_least_150_cases_with_unique_names() {
    let cases = all_cases();
    assert!(cases.len() >= 150, "only {} cases", cases.len());
    let mut names: Vec<String> = cases.iter().map(|c| format!("{}::{}", c.area, c.name)).collect();
    names.sort();
    let before = names.len();
    names.dedup();
    assert_eq!(names.len(), before, "duplicate case names");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_voter() {
    conformance(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_voters() {
    conformance(3).await;
}
