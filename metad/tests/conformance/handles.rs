//! GetAttr and file handles: the share root, and which handles are stale (unknown inode,
//! wrong generation, wrong share, removed inode) or malformed (missing node, inode 0).

use proto::FsError;
use proto::pb::{self, FileType, NodeRef};

use super::harness::*;

pub fn cases() -> Vec<Case> {
    cases![
        root_attrs,
        root_matches_share,
        getattr_matches_lookup,
        unknown_inode_is_stale,
        wrong_generation_is_stale,
        wrong_share_is_stale,
        removed_file_is_stale,
        removed_dir_is_stale,
        missing_node_is_refused,
        inode_zero_is_refused,
        stale_dir_refuses_lookup,
        stale_dir_refuses_create,
        stale_file_refuses_setattr,
        handle_is_stable_across_calls,
    ]
}

async fn root_attrs(ctx: &Ctx) -> Result<(), String> {
    let a = ctx.attr(ctx.root).await?;
    ensure_eq!(a.kind, FileType::Directory as i32, "root kind");
    ensure_eq!(a.mode, 0o755, "root mode");
    ensure_eq!((a.uid, a.gid), (0, 0), "root owner");
    ensure!(a.nlink >= 2, "root nlink {} < 2", a.nlink);
    ensure_eq!(a.node, Some(ctx.root), "root handle");
    Ok(())
}

async fn root_matches_share(ctx: &Ctx) -> Result<(), String> {
    // ".." of the root is the root itself.
    let up = ctx.lookup(&root(), ctx.root, "..").await.ctx("lookup root/..")?;
    ensure_eq!(up.node, Some(ctx.root));
    let me = ctx.lookup(&root(), ctx.root, ".").await.ctx("lookup root/.")?;
    ensure_eq!(me.node, Some(ctx.root));
    Ok(())
}

async fn getattr_matches_lookup(ctx: &Ctx) -> Result<(), String> {
    let f = ctx.file(&user(), ctx.dir, "f", 0o644).await?;
    let by_lookup = ctx.lookup(&user(), ctx.dir, "f").await.ctx("lookup")?;
    ensure_eq!(ctx.attr(f).await?, by_lookup);
    Ok(())
}

async fn unknown_inode_is_stale(ctx: &Ctx) -> Result<(), String> {
    let bogus = NodeRef { ino: 1 << 60, ..ctx.dir };
    expect_err(ctx.getattr(bogus).await, FsError::Stale)
}

async fn wrong_generation_is_stale(ctx: &Ctx) -> Result<(), String> {
    let f = ctx.file(&user(), ctx.dir, "f", 0o644).await?;
    expect_err(ctx.getattr(NodeRef { generation: f.generation.wrapping_add(1), ..f }).await, FsError::Stale)
}

async fn wrong_share_is_stale(ctx: &Ctx) -> Result<(), String> {
    let f = ctx.file(&user(), ctx.dir, "f", 0o644).await?;
    expect_err(ctx.getattr(NodeRef { share_id: f.share_id + 1000, ..f }).await, FsError::Stale)
}

async fn removed_file_is_stale(ctx: &Ctx) -> Result<(), String> {
    let f = ctx.file(&user(), ctx.dir, "f", 0o644).await?;
    ctx.remove(&user(), ctx.dir, "f").await.ctx("remove")?;
    expect_err(ctx.getattr(f).await, FsError::Stale)
}

async fn removed_dir_is_stale(ctx: &Ctx) -> Result<(), String> {
    let d = ctx.subdir(&user(), ctx.dir, "d", 0o755).await?;
    ctx.rmdir(&user(), ctx.dir, "d").await.ctx("rmdir")?;
    expect_err(ctx.getattr(d).await, FsError::Stale)
}

async fn missing_node_is_refused(ctx: &Ctx) -> Result<(), String> {
    expect_any(ctx.getattr_raw(pb::GetAttrRequest { node: None }).await, &[FsError::BadHandle, invalid()])
}

async fn inode_zero_is_refused(ctx: &Ctx) -> Result<(), String> {
    // No inode 0 exists: a handle naming it is malformed (or at best stale).
    expect_any(ctx.getattr(NodeRef { ino: 0, ..ctx.dir }).await, &[FsError::BadHandle, FsError::Stale])
}

async fn stale_dir_refuses_lookup(ctx: &Ctx) -> Result<(), String> {
    let d = ctx.subdir(&user(), ctx.dir, "d", 0o755).await?;
    ctx.rmdir(&user(), ctx.dir, "d").await.ctx("rmdir")?;
    expect_err(ctx.lookup(&user(), d, "x").await, FsError::Stale)
}

async fn stale_dir_refuses_create(ctx: &Ctx) -> Result<(), String> {
    let d = ctx.subdir(&user(), ctx.dir, "d", 0o755).await?;
    ctx.rmdir(&user(), ctx.dir, "d").await.ctx("rmdir")?;
    expect_err(ctx.create(&user(), d, "x", 0o644).await, FsError::Stale)
}

async fn stale_file_refuses_setattr(ctx: &Ctx) -> Result<(), String> {
    let f = ctx.file(&user(), ctx.dir, "f", 0o644).await?;
    ctx.remove(&user(), ctx.dir, "f").await.ctx("remove")?;
    expect_err(ctx.chmod(&user(), f, 0o600).await, FsError::Stale)
}

async fn handle_is_stable_across_calls(ctx: &Ctx) -> Result<(), String> {
    let f = ctx.file(&user(), ctx.dir, "f", 0o644).await?;
    ctx.chmod(&user(), f, 0o600).await.ctx("chmod")?;
    let again = ctx.lookup(&user(), ctx.dir, "f").await.ctx("lookup")?;
    ensure_eq!(again.node, Some(f), "the handle after a change");
    ensure!(f.generation != 0 || f.ino != 0, "handle is all zero");
    Ok(())
}
