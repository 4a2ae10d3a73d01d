//! Engine behaviour around identities and namespace changes: credentials reach metad,
//! write permission is checked when a WRITE arrives, flushes act as the last writer, and
//! buffered data survives a RENAME or a truncating CREATE that replaces its file.

use bytes::Bytes;
use proto::{FsError, pb};

use super::fakes::root;
use super::flush::FLUSH_READ_CRED;
use super::tests::{create, cred, data, fixture, read_all};
use crate::vfs::{Stability, Vfs};

fn other() -> pb::Cred {
    pb::Cred { uid: 2000, gid: 2000, gids: vec![] }
}

/// The creds the fake metad saw for `rpc`.
fn seen(f: &super::tests::Fixture, rpc: &str) -> Vec<Option<pb::Cred>> {
    f.meta.creds().into_iter().filter(|(r, _)| *r == rpc).map(|(_, c)| c).collect()
}

#[tokio::test]
async fn every_call_carries_the_callers_credential() {
    let f = fixture();
    let node = create(&f.engine, "a").await;
    f.engine.lookup(&cred(), root(), b"a").await.expect("lookup");
    f.engine.readdir(&cred(), root(), 0, 0, 10).await.expect("readdir");
    f.engine
        .setattr(&cred(), pb::SetAttrRequest { node: Some(node.into()), mode: Some(0o600), ..Default::default() })
        .await
        .expect("setattr");
    f.engine.write(&cred(), node, 0, Bytes::from(data(1_000, 1)), Stability::FileSync).await.expect("write");
    f.engine.read(&cred(), node, 0, 100).await.expect("read");
    f.engine.access(&cred(), node, 7).await.expect("access");
    f.engine.readlink(&cred(), node).await.expect("readlink");
    f.engine.link(&cred(), node, root(), b"b").await.expect("link");
    f.engine.rename(&cred(), (root(), b"b"), (root(), b"c")).await.expect("rename");
    f.engine.remove(&cred(), root(), b"c", false).await.expect("remove");
    let creds = f.meta.creds();
    for rpc in
        ["Create", "Lookup", "ReadDir", "SetAttr", "Access", "CommitExtents", "ReadLink", "Link", "Rename", "Remove"]
    {
        let c = seen(&f, rpc);
        assert!(!c.is_empty() && c.iter().all(|c| *c == Some(cred())), "{rpc}: {c:?} in {creds:?}");
    }
    // The read's GetExtents is the caller's; a flush's widening reads are the gateway's own.
    let reads = seen(&f, "GetExtents");
    assert!(reads.contains(&Some(cred())) && reads.iter().all(|c| *c == Some(cred()) || *c == Some(FLUSH_READ_CRED)));
    assert!(creds.iter().all(|(_, c)| c.is_some()), "no call without a credential: {creds:?}");
}

#[tokio::test]
async fn write_permission_is_checked_when_the_write_arrives() {
    let f = fixture();
    let node = create(&f.engine, "a").await;
    f.meta.0.deny_write.store(true, std::sync::atomic::Ordering::SeqCst);
    let err = f.engine.write(&cred(), node, 0, Bytes::from(data(1_000, 1)), Stability::Unstable).await;
    assert_eq!(err.err(), Some(FsError::Access));
    assert_eq!(f.engine.files.buffered_end(&node), None, "nothing buffered");
    assert_eq!(f.engine.budget.available(), f.engine.budget.capacity());
    // A refusal is not remembered: once allowed, the next write asks again and succeeds.
    f.meta.0.deny_write.store(false, std::sync::atomic::Ordering::SeqCst);
    let calls = f.meta.access_calls();
    f.engine.write(&cred(), node, 0, Bytes::from(data(1_000, 1)), Stability::Unstable).await.expect("allowed now");
    assert_eq!(f.meta.access_calls(), calls + 1);
    // A grant is remembered briefly: more writes by the same caller do not ask again...
    f.engine.write(&cred(), node, 1_000, Bytes::from(data(1_000, 2)), Stability::Unstable).await.expect("write");
    assert_eq!(f.meta.access_calls(), calls + 1);
    // ...but another caller is asked for.
    f.engine.write(&other(), node, 2_000, Bytes::from(data(1_000, 3)), Stability::Unstable).await.expect("write");
    assert_eq!(f.meta.access_calls(), calls + 2);
}

#[tokio::test]
async fn a_flush_acts_as_the_last_writer() {
    let f = fixture();
    let node = create(&f.engine, "a").await;
    f.engine.write(&cred(), node, 0, Bytes::from(data(1_000, 1)), Stability::Unstable).await.expect("write");
    f.engine.write(&other(), node, 1_000, Bytes::from(data(1_000, 2)), Stability::Unstable).await.expect("write");
    let committer = pb::Cred { uid: 3000, gid: 3000, gids: vec![] };
    f.engine.commit(&committer, node).await.expect("commit");
    assert_eq!(seen(&f, "CommitExtents"), vec![Some(other())]);
}

#[tokio::test]
async fn a_rename_over_a_buffered_file_flushes_it_first() {
    let f = fixture();
    create(&f.engine, "a").await;
    let b = create(&f.engine, "b").await;
    let bytes = data(3_000, 9);
    f.engine.write(&cred(), b, 0, Bytes::from(bytes.clone()), Stability::Unstable).await.expect("write");
    // Another hard link keeps b's inode alive after the rename replaces the name.
    f.engine.link(&cred(), b, root(), b"keep").await.expect("link");
    f.engine.rename(&cred(), (root(), b"a"), (root(), b"b")).await.expect("rename");
    let order: Vec<&str> =
        f.meta.creds().into_iter().map(|(r, _)| r).filter(|r| *r == "CommitExtents" || *r == "Rename").collect();
    assert_eq!(order, ["CommitExtents", "Rename"], "the replaced file's data is committed before the rename");
    assert_eq!(f.engine.files.buffered_end(&b), None);
    assert_eq!(read_all(&f.engine, b, 3_000).await, bytes);
}

#[tokio::test]
async fn a_rename_over_a_buffered_file_that_dies_drops_its_data() {
    let f = fixture();
    create(&f.engine, "a").await;
    let b = create(&f.engine, "b").await;
    f.engine.write(&cred(), b, 0, Bytes::from(data(3_000, 9)), Stability::Unstable).await.expect("write");
    f.meta.0.fail_commits.store(true, std::sync::atomic::Ordering::SeqCst);
    let v0 = f.engine.write_verifier();
    f.engine.rename(&cred(), (root(), b"a"), (root(), b"b")).await.expect("the rename does not wait for the flush");
    assert_ne!(f.engine.write_verifier(), v0, "acknowledged data could not be flushed: clients must resend");
    f.meta.0.fail_commits.store(false, std::sync::atomic::Ordering::SeqCst);
    // The failed flush dropped b's data (clients resend after the verifier change), and b's
    // inode is gone with its last name: nothing is committed elsewhere later.
    let r = f.engine.commit(&cred(), b).await.err();
    assert!(matches!(r, None | Some(FsError::Stale)), "{r:?}");
    assert_eq!(f.engine.files.buffered_end(&b), None);
    assert_eq!(f.engine.budget.available(), f.engine.budget.capacity());
}

#[tokio::test]
async fn an_unchecked_create_with_a_size_truncates_after_the_buffered_writes() {
    let f = fixture();
    let node = create(&f.engine, "a").await;
    f.engine.write(&cred(), node, 0, Bytes::from(data(3_000, 4)), Stability::Unstable).await.expect("write");
    let req = pb::CreateRequest {
        dir: Some(root().into()),
        name: b"a".to_vec(),
        kind: pb::FileType::Regular as i32,
        how: pb::CreateHow::Unchecked as i32,
        size: Some(100),
        ..Default::default()
    };
    let reply = f.engine.create(&cred(), req).await.expect("create");
    assert_eq!(reply.attr.map(|a| a.size), Some(100), "no buffered data extends it afterwards");
    assert_eq!(read_all(&f.engine, node, 100).await, data(3_000, 4)[..100].to_vec());
}

#[tokio::test]
async fn the_creator_writes_without_an_access_call() {
    let f = fixture();
    let req = pb::CreateRequest {
        dir: Some(root().into()),
        name: b"mine".to_vec(),
        kind: pb::FileType::Regular as i32,
        uid: cred().uid,
        ..Default::default()
    };
    let node = f.engine.create(&cred(), req).await.expect("create").attr.and_then(|a| a.node).expect("node").into();
    f.engine.write(&cred(), node, 0, Bytes::from(data(100, 1)), Stability::Unstable).await.expect("write");
    assert_eq!(f.meta.access_calls(), 0, "the owner's grant was remembered from the create");
    f.engine.write(&other(), node, 0, Bytes::from(data(100, 1)), Stability::Unstable).await.expect("write");
    assert_eq!(f.meta.access_calls(), 1, "not for anyone else");
}
