//! Request ids: a repeated (client_id, seq) gets the original reply and has no second effect
//! (even when applying it again would now fail); a new seq or another client is applied as
//! usual; requests without an id are not deduplicated.

use proto::FsError;
use proto::pb::{self, FileType, RequestId};

use super::harness::*;

pub fn cases() -> Vec<Case> {
    cases![
        create_retry_gets_same_reply,
        remove_retry_succeeds_twice,
        mkdir_retry_gets_same_reply,
        rename_retry_succeeds_twice,
        link_retry_links_once,
        setattr_retry_gets_same_reply,
        commit_retry_gets_same_reply,
        new_seq_is_applied,
        other_client_same_seq_is_applied,
        no_request_id_is_not_deduplicated,
    ]
}

async fn create_retry_gets_same_reply(ctx: &Ctx) -> Result<(), String> {
    let req = ctx.create_req(&user(), ctx.dir, "f", FileType::Regular, 0o644);
    let first = ctx.create_raw(req.clone()).await.ctx("create")?;
    let again = ctx.create_raw(req).await.ctx("retried GUARDED create")?;
    ensure_eq!(again, first, "the original reply");
    ensure_eq!(ctx.names(&user(), ctx.dir).await.ctx("readdir")?, vec![b"f".to_vec()]);
    Ok(())
}

async fn remove_retry_succeeds_twice(ctx: &Ctx) -> Result<(), String> {
    ctx.file(&user(), ctx.dir, "f", 0o644).await?;
    let req = pb::RemoveRequest {
        dir: Some(ctx.dir),
        name: b"f".to_vec(),
        directory: false,
        cred: Some(user()),
        request_id: ctx.rid(),
    };
    let first = ctx.remove_raw(req.clone()).await.ctx("remove")?;
    let again = ctx.remove_raw(req).await.ctx("retried remove (not NotFound)")?;
    ensure_eq!(again, first);
    Ok(())
}

async fn mkdir_retry_gets_same_reply(ctx: &Ctx) -> Result<(), String> {
    let req = ctx.create_req(&user(), ctx.dir, "d", FileType::Directory, 0o755);
    let first = ctx.create_raw(req.clone()).await.ctx("mkdir")?;
    let again = ctx.create_raw(req).await.ctx("retried mkdir")?;
    ensure_eq!(again, first);
    ensure_eq!(ctx.attr(ctx.dir).await?.nlink, 3, "one subdirectory");
    Ok(())
}

async fn rename_retry_succeeds_twice(ctx: &Ctx) -> Result<(), String> {
    let f = ctx.file(&user(), ctx.dir, "a", 0o644).await?;
    let req = pb::RenameRequest {
        from_dir: Some(ctx.dir),
        from_name: b"a".to_vec(),
        to_dir: Some(ctx.dir),
        to_name: b"b".to_vec(),
        cred: Some(user()),
        request_id: ctx.rid(),
    };
    let first = ctx.rename_raw(req.clone()).await.ctx("rename")?;
    let again = ctx.rename_raw(req).await.ctx("retried rename")?;
    ensure_eq!(again, first);
    ensure_eq!(ctx.lookup(&user(), ctx.dir, "b").await.ctx("lookup")?.node, Some(f));
    Ok(())
}

async fn link_retry_links_once(ctx: &Ctx) -> Result<(), String> {
    let f = ctx.file(&user(), ctx.dir, "f", 0o644).await?;
    let req = pb::LinkRequest {
        node: Some(f),
        dir: Some(ctx.dir),
        name: b"g".to_vec(),
        cred: Some(user()),
        request_id: ctx.rid(),
    };
    let first = ctx.link_raw(req.clone()).await.ctx("link")?;
    let again = ctx.link_raw(req).await.ctx("retried link")?;
    ensure_eq!(again, first);
    ensure_eq!(ctx.attr(f).await?.nlink, 2);
    Ok(())
}

async fn setattr_retry_gets_same_reply(ctx: &Ctx) -> Result<(), String> {
    let f = ctx.file(&user(), ctx.dir, "f", 0o644).await?;
    let req = pb::SetAttrRequest { mode: Some(0o600), ..ctx.setattr_req(&user(), f) };
    let first = ctx.setattr_raw(req.clone()).await.ctx("chmod")?;
    let again = ctx.setattr_raw(req).await.ctx("retried chmod")?;
    ensure_eq!(again, first, "the original before/after");
    ensure_eq!(ctx.attr(f).await?.change, first.after.ctx("after")?.change, "applied once");
    Ok(())
}

async fn commit_retry_gets_same_reply(ctx: &Ctx) -> Result<(), String> {
    let f = ctx.file(&user(), ctx.dir, "f", 0o644).await?;
    let req = pb::CommitExtentsRequest {
        lease: None,
        node: Some(f),
        range_start: 0,
        range_end: 10,
        extents: vec![ext(0, 10, 1)],
        cred: Some(user()),
        request_id: ctx.rid(),
    };
    let first = ctx.commit_raw(req.clone()).await.ctx("commit")?;
    let again = ctx.commit_raw(req).await.ctx("retried commit")?;
    ensure_eq!(again, first);
    ensure_eq!(ctx.attr(f).await?.change, first.after.ctx("after")?.change, "applied once");
    Ok(())
}

async fn new_seq_is_applied(ctx: &Ctx) -> Result<(), String> {
    ctx.create_raw(ctx.create_req(&user(), ctx.dir, "f", FileType::Regular, 0o644)).await.ctx("create")?;
    // create_req draws a fresh seq from the same client.
    expect_err(ctx.create_raw(ctx.create_req(&user(), ctx.dir, "f", FileType::Regular, 0o644)).await, FsError::Exists)
}

async fn other_client_same_seq_is_applied(ctx: &Ctx) -> Result<(), String> {
    let mut req = ctx.create_req(&user(), ctx.dir, "f", FileType::Regular, 0o644);
    ctx.create_raw(req.clone()).await.ctx("create")?;
    let seq = req.request_id.map(|r| r.seq).unwrap_or(1);
    req.request_id = Some(RequestId { client_id: ctx.client_id() ^ 0xffff_0000_0000_0000, seq });
    expect_err(ctx.create_raw(req).await, FsError::Exists)
}

async fn no_request_id_is_not_deduplicated(ctx: &Ctx) -> Result<(), String> {
    let mut req = ctx.create_req(&user(), ctx.dir, "f", FileType::Regular, 0o644);
    req.request_id = None;
    ctx.create_raw(req.clone()).await.ctx("create")?;
    expect_err(ctx.create_raw(req).await, FsError::Exists)
}
