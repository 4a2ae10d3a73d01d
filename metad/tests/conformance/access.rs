//! Access (NFS ACCESS): which of the asked bits (1 read, 2 write, 4 execute/search) the caller
//! holds, by class (owner, then group incl. supplementary, then other), with root holding read
//! and write always and execute on a file only if some execute bit is set (directories: always).

use proto::FsError;
use proto::pb;

use super::harness::*;

pub fn cases() -> Vec<Case> {
    cases![
        owner_bits,
        owner_read_only,
        group_bits_via_primary_gid,
        group_bits_via_supplementary_gid,
        other_bits,
        root_gets_read_write_and_exec_only_if_any_x,
        root_searches_any_directory,
        granted_is_a_subset_of_asked,
        access_reply_carries_attr,
        access_of_stale_handle_stale,
    ]
}

async fn owner_bits(ctx: &Ctx) -> Result<(), String> {
    let f = ctx.file(&user(), ctx.dir, "f", 0o700).await?;
    ensure_eq!(ctx.access(&user(), f, 7).await.ctx("access")?, 7);
    Ok(())
}

async fn owner_read_only(ctx: &Ctx) -> Result<(), String> {
    let f = ctx.file(&user(), ctx.dir, "f", 0o477).await?;
    ensure_eq!(ctx.access(&user(), f, 7).await.ctx("access")?, 1, "the owner class decides");
    Ok(())
}

async fn group_bits_via_primary_gid(ctx: &Ctx) -> Result<(), String> {
    let f = ctx.file(&other(), ctx.dir, "f", 0o060).await?;
    ctx.chown(&root(), f, None, Some(USER_GID)).await.ctx("chgrp")?;
    ensure_eq!(ctx.access(&user(), f, 7).await.ctx("access")?, 3);
    Ok(())
}

async fn group_bits_via_supplementary_gid(ctx: &Ctx) -> Result<(), String> {
    let f = ctx.file(&other(), ctx.dir, "f", 0o050).await?;
    ctx.chown(&root(), f, None, Some(SUPP_GID)).await.ctx("chgrp")?;
    ensure_eq!(ctx.access(&user(), f, 7).await.ctx("access")?, 5);
    Ok(())
}

async fn other_bits(ctx: &Ctx) -> Result<(), String> {
    let f = ctx.file(&user(), ctx.dir, "f", 0o752).await?;
    ensure_eq!(ctx.access(&other(), f, 7).await.ctx("access")?, 2);
    Ok(())
}

async fn root_gets_read_write_and_exec_only_if_any_x(ctx: &Ctx) -> Result<(), String> {
    let f = ctx.file(&user(), ctx.dir, "f", 0o000).await?;
    ensure_eq!(ctx.access(&root(), f, 7).await.ctx("access 000")?, 3, "no x bit: root may not execute");
    ctx.chmod(&user(), f, 0o001).await.ctx("chmod")?;
    ensure_eq!(ctx.access(&root(), f, 7).await.ctx("access 001")?, 7);
    Ok(())
}

async fn root_searches_any_directory(ctx: &Ctx) -> Result<(), String> {
    let d = ctx.user_dir("d", 0o000).await?;
    ensure_eq!(ctx.access(&root(), d, 7).await.ctx("access")?, 7);
    Ok(())
}

async fn granted_is_a_subset_of_asked(ctx: &Ctx) -> Result<(), String> {
    let f = ctx.file(&user(), ctx.dir, "f", 0o777).await?;
    ensure_eq!(ctx.access(&user(), f, 1).await.ctx("access r")?, 1);
    ensure_eq!(ctx.access(&user(), f, 4).await.ctx("access x")?, 4);
    ensure_eq!(ctx.access(&user(), f, 0).await.ctx("access nothing")?, 0);
    Ok(())
}

async fn access_reply_carries_attr(ctx: &Ctx) -> Result<(), String> {
    let f = ctx.file(&user(), ctx.dir, "f", 0o640).await?;
    let r = ctx.access_raw(pb::AccessRequest { node: Some(f), cred: Some(other()), mask: 7 }).await.ctx("access")?;
    ensure_eq!(r.granted, 0);
    ensure_eq!(r.attr, Some(ctx.attr(f).await?));
    Ok(())
}

async fn access_of_stale_handle_stale(ctx: &Ctx) -> Result<(), String> {
    let f = ctx.file(&user(), ctx.dir, "f", 0o644).await?;
    ctx.remove(&user(), ctx.dir, "f").await.ctx("remove")?;
    expect_err(ctx.access(&user(), f, 7).await, FsError::Stale)
}
