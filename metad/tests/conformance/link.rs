//! Link (hard links): link counts, one inode under two names, removal of one name, and the
//! refusals — directories, other shares (XDEV), existing names, bad names, no write access.
//!
//! A hard link to a directory is refused with `IsDir` or `Perm`: the model may pick either
//! (Linux answers EPERM, NFS servers NFS3ERR_ISDIR), so the case accepts both.

use proto::FsError;
use proto::pb::FileType;

use super::harness::*;

pub fn cases() -> Vec<Case> {
    cases![
        link_counts_two,
        both_names_are_one_inode,
        removing_one_name_keeps_the_other,
        removing_both_names_frees_the_file,
        link_to_directory_refused,
        link_into_other_share_cross_device,
        link_onto_existing_name_exists,
        link_into_a_file_notdir,
        link_bad_names_refused,
        link_needs_write_on_target_dir,
        link_moves_ctime_and_parent,
        link_to_symlink_and_fifo,
        link_of_stale_file_stale,
    ]
}

async fn link_counts_two(ctx: &Ctx) -> Result<(), String> {
    let f = ctx.file(&user(), ctx.dir, "f", 0o644).await?;
    let r = ctx.link(&user(), f, ctx.dir, "g").await.ctx("link")?;
    ensure_eq!(r.attr.ctx("attr")?.nlink, 2, "reply nlink");
    ensure_eq!(ctx.attr(f).await?.nlink, 2, "getattr nlink");
    Ok(())
}

async fn both_names_are_one_inode(ctx: &Ctx) -> Result<(), String> {
    let f = ctx.file(&user(), ctx.dir, "f", 0o644).await?;
    let d = ctx.subdir(&user(), ctx.dir, "d", 0o755).await?;
    ctx.link(&user(), f, d, "g").await.ctx("link")?;
    ensure_eq!(ctx.lookup(&user(), d, "g").await.ctx("lookup g")?.node, Some(f));
    ctx.chmod(&user(), f, 0o600).await.ctx("chmod via f")?;
    ensure_eq!(ctx.lookup(&user(), d, "g").await.ctx("lookup g")?.mode, 0o600, "a change is seen through both names");
    Ok(())
}

async fn removing_one_name_keeps_the_other(ctx: &Ctx) -> Result<(), String> {
    let f = ctx.file(&user(), ctx.dir, "f", 0o644).await?;
    ctx.commit(&user(), f, 0, 10, vec![ext(0, 10, 3)]).await.ctx("commit")?;
    ctx.link(&user(), f, ctx.dir, "g").await.ctx("link")?;
    ctx.remove(&user(), ctx.dir, "f").await.ctx("remove f")?;
    let a = ctx.attr(f).await?;
    ensure_eq!((a.nlink, a.size), (1, 10));
    ensure_eq!(spans(&ctx.extents(&user(), f, 0, 100).await.ctx("extents")?), vec![(0, 10, 3, 0)], "content kept");
    ensure_eq!(ctx.lookup(&user(), ctx.dir, "g").await.ctx("lookup g")?.node, Some(f));
    Ok(())
}

async fn removing_both_names_frees_the_file(ctx: &Ctx) -> Result<(), String> {
    let f = ctx.file(&user(), ctx.dir, "f", 0o644).await?;
    ctx.link(&user(), f, ctx.dir, "g").await.ctx("link")?;
    ctx.remove(&user(), ctx.dir, "f").await.ctx("remove f")?;
    ctx.remove(&user(), ctx.dir, "g").await.ctx("remove g")?;
    expect_err(ctx.getattr(f).await, FsError::Stale)
}

async fn link_to_directory_refused(ctx: &Ctx) -> Result<(), String> {
    let d = ctx.subdir(&user(), ctx.dir, "d", 0o755).await?;
    expect_any(ctx.link(&user(), d, ctx.dir, "d2").await, &[FsError::IsDir, FsError::Perm])?;
    expect_any(ctx.link(&root(), d, ctx.dir, "d3").await, &[FsError::IsDir, FsError::Perm])?;
    ensure_eq!(ctx.attr(d).await?.nlink, 2, "directory nlink unchanged");
    Ok(())
}

async fn link_into_other_share_cross_device(ctx: &Ctx) -> Result<(), String> {
    let f = ctx.file(&user(), ctx.dir, "f", 0o644).await?;
    expect_err(ctx.link(&root(), f, ctx.other_root, "f").await, FsError::CrossDevice)?;
    ensure_eq!(ctx.attr(f).await?.nlink, 1);
    Ok(())
}

async fn link_onto_existing_name_exists(ctx: &Ctx) -> Result<(), String> {
    let f = ctx.file(&user(), ctx.dir, "f", 0o644).await?;
    let g = ctx.file(&user(), ctx.dir, "g", 0o644).await?;
    expect_err(ctx.link(&user(), f, ctx.dir, "g").await, FsError::Exists)?;
    ensure_eq!(ctx.lookup(&user(), ctx.dir, "g").await.ctx("lookup g")?.node, Some(g), "g untouched");
    ensure_eq!(ctx.attr(f).await?.nlink, 1);
    Ok(())
}

async fn link_into_a_file_notdir(ctx: &Ctx) -> Result<(), String> {
    let f = ctx.file(&user(), ctx.dir, "f", 0o644).await?;
    expect_err(ctx.link(&user(), f, f, "g").await, FsError::NotDir)
}

async fn link_bad_names_refused(ctx: &Ctx) -> Result<(), String> {
    let f = ctx.file(&user(), ctx.dir, "f", 0o644).await?;
    expect_err(ctx.link(&user(), f, ctx.dir, "..").await, invalid())?;
    expect_err(ctx.link(&user(), f, ctx.dir, "").await, invalid())?;
    expect_err(ctx.link(&user(), f, ctx.dir, "n".repeat(256)).await, FsError::NameTooLong)
}

async fn link_needs_write_on_target_dir(ctx: &Ctx) -> Result<(), String> {
    let f = ctx.file(&other(), ctx.dir, "f", 0o644).await?;
    let d = ctx.user_dir("ro", 0o755).await?;
    expect_err(ctx.link(&other(), f, d, "g").await, FsError::Access)
}

async fn link_moves_ctime_and_parent(ctx: &Ctx) -> Result<(), String> {
    let f = ctx.file(&user(), ctx.dir, "f", 0o644).await?;
    let (fb, db) = (ctx.attr(f).await?, ctx.attr(ctx.dir).await?);
    let r = ctx.link(&user(), f, ctx.dir, "g").await.ctx("link")?;
    let fa = r.attr.ctx("attr")?;
    ensure!(fa.change > fb.change && ns(&fa.ctime) >= ns(&fb.ctime), "the file's ctime/change did not move");
    let wcc = r.dir.ctx("wcc")?;
    ensure_eq!(wcc.before, Some(db), "wcc before");
    ensure!(wcc.after.ctx("wcc after")?.change > db.change, "the directory's change did not move");
    Ok(())
}

async fn link_to_symlink_and_fifo(ctx: &Ctx) -> Result<(), String> {
    let l = ctx.symlink(&user(), ctx.dir, "l", "t").await.ctx("symlink")?.attr.ctx("attr")?;
    ensure_eq!(ctx.link(&user(), nref(&l), ctx.dir, "l2").await.ctx("link symlink")?.attr.ctx("attr")?.nlink, 2);
    let p = ctx.mknod(&user(), ctx.dir, "p", FileType::Fifo, 0o644, (0, 0)).await.ctx("mknod")?.attr.ctx("attr")?;
    ensure_eq!(ctx.link(&user(), nref(&p), ctx.dir, "p2").await.ctx("link fifo")?.attr.ctx("attr")?.nlink, 2);
    Ok(())
}

async fn link_of_stale_file_stale(ctx: &Ctx) -> Result<(), String> {
    let f = ctx.file(&user(), ctx.dir, "f", 0o644).await?;
    ctx.remove(&user(), ctx.dir, "f").await.ctx("remove")?;
    expect_err(ctx.link(&user(), f, ctx.dir, "g").await, FsError::Stale)?;
    expect_err(ctx.lookup(&user(), ctx.dir, "g").await, FsError::NotFound)
}
