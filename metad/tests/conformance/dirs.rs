//! Mkdir, Rmdir and Remove: kinds (RMDIR only removes directories, REMOVE never does), empty
//! checks, link counts of the parent, and that a removed name is really gone.

use proto::FsError;
use proto::pb::FileType;

use super::harness::*;

pub fn cases() -> Vec<Case> {
    cases![
        mkdir_attrs,
        mkdir_nested,
        rmdir_empty_directory,
        rmdir_parent_nlink_minus_one,
        rmdir_non_empty_not_empty,
        rmdir_on_file_notdir,
        rmdir_dot_and_dotdot_invalid,
        rmdir_missing_not_found,
        remove_directory_is_dir,
        remove_missing_not_found,
        remove_file_updates_parent,
        remove_then_recreate_is_a_new_file,
        remove_leaves_siblings,
        rmdir_on_symlink_notdir,
        remove_in_a_file_notdir,
        rmdir_after_emptying,
    ]
}

async fn mkdir_attrs(ctx: &Ctx) -> Result<(), String> {
    let d = ctx.mkdir(&user(), ctx.dir, "d", 0o750).await.ctx("mkdir")?;
    ensure_eq!((d.kind, d.mode, d.uid, d.gid, d.nlink), (FileType::Directory as i32, 0o750, USER_UID, USER_GID, 2));
    ensure_eq!(ctx.names(&user(), nref(&d)).await.ctx("readdir new dir")?.len(), 0, "a new directory is empty");
    Ok(())
}

async fn mkdir_nested(ctx: &Ctx) -> Result<(), String> {
    let mut d = ctx.dir;
    for i in 0..5 {
        d = ctx.subdir(&user(), d, &format!("level{i}"), 0o755).await?;
    }
    let up = ctx.lookup(&user(), d, "..").await.ctx("lookup ..")?;
    ensure_eq!(up.kind, FileType::Directory as i32);
    ensure_eq!(up.nlink, 3, "a directory with one subdirectory");
    Ok(())
}

async fn rmdir_empty_directory(ctx: &Ctx) -> Result<(), String> {
    ctx.subdir(&user(), ctx.dir, "d", 0o755).await?;
    ctx.rmdir(&user(), ctx.dir, "d").await.ctx("rmdir")?;
    expect_err(ctx.lookup(&user(), ctx.dir, "d").await, FsError::NotFound)?;
    ensure_eq!(ctx.names(&user(), ctx.dir).await.ctx("readdir")?.len(), 0);
    Ok(())
}

async fn rmdir_parent_nlink_minus_one(ctx: &Ctx) -> Result<(), String> {
    ctx.subdir(&user(), ctx.dir, "d", 0o755).await?;
    let before = ctx.attr(ctx.dir).await?;
    let r = ctx.rmdir(&user(), ctx.dir, "d").await.ctx("rmdir")?;
    let after = ctx.attr(ctx.dir).await?;
    ensure_eq!(after.nlink, before.nlink - 1, "parent nlink");
    ensure_eq!(r.dir.ctx("wcc")?.after, Some(after), "wcc after == getattr");
    Ok(())
}

async fn rmdir_non_empty_not_empty(ctx: &Ctx) -> Result<(), String> {
    let d = ctx.subdir(&user(), ctx.dir, "d", 0o755).await?;
    ctx.file(&user(), d, "f", 0o644).await?;
    expect_err(ctx.rmdir(&user(), ctx.dir, "d").await, FsError::NotEmpty)?;
    ctx.lookup(&user(), d, "f").await.ctx("the content survives")?;
    Ok(())
}

async fn rmdir_on_file_notdir(ctx: &Ctx) -> Result<(), String> {
    ctx.file(&user(), ctx.dir, "f", 0o644).await?;
    expect_err(ctx.rmdir(&user(), ctx.dir, "f").await, FsError::NotDir)
}

async fn rmdir_dot_and_dotdot_invalid(ctx: &Ctx) -> Result<(), String> {
    let d = ctx.subdir(&user(), ctx.dir, "d", 0o755).await?;
    expect_err(ctx.rmdir(&user(), d, ".").await, invalid())?;
    expect_err(ctx.rmdir(&user(), d, "..").await, invalid())?;
    ctx.attr(d).await.map(|_| ())
}

async fn rmdir_missing_not_found(ctx: &Ctx) -> Result<(), String> {
    expect_err(ctx.rmdir(&user(), ctx.dir, "nothing").await, FsError::NotFound)
}

async fn remove_directory_is_dir(ctx: &Ctx) -> Result<(), String> {
    ctx.subdir(&user(), ctx.dir, "d", 0o755).await?;
    expect_err(ctx.remove(&user(), ctx.dir, "d").await, FsError::IsDir)
}

async fn remove_missing_not_found(ctx: &Ctx) -> Result<(), String> {
    expect_err(ctx.remove(&user(), ctx.dir, "nothing").await, FsError::NotFound)
}

async fn remove_file_updates_parent(ctx: &Ctx) -> Result<(), String> {
    ctx.file(&user(), ctx.dir, "f", 0o644).await?;
    let before = ctx.attr(ctx.dir).await?;
    let r = ctx.remove(&user(), ctx.dir, "f").await.ctx("remove")?;
    let wcc = r.dir.ctx("wcc")?;
    ensure_eq!(wcc.before, Some(before), "wcc before");
    let after = wcc.after.ctx("wcc after")?;
    ensure!(after.change > before.change, "parent change did not move");
    ensure!(ns(&after.mtime) >= ns(&before.mtime), "parent mtime went back");
    ensure_eq!(after.nlink, before.nlink, "removing a file keeps the parent's nlink");
    Ok(())
}

async fn remove_then_recreate_is_a_new_file(ctx: &Ctx) -> Result<(), String> {
    let old = ctx.file(&user(), ctx.dir, "f", 0o644).await?;
    ctx.remove(&user(), ctx.dir, "f").await.ctx("remove")?;
    let new = ctx.file(&user(), ctx.dir, "f", 0o644).await?;
    ensure!(new != old, "the recreated file has the removed file's handle");
    expect_err(ctx.getattr(old).await, FsError::Stale)
}

async fn remove_leaves_siblings(ctx: &Ctx) -> Result<(), String> {
    for n in ["a", "b", "c"] {
        ctx.file(&user(), ctx.dir, n, 0o644).await?;
    }
    ctx.remove(&user(), ctx.dir, "b").await.ctx("remove b")?;
    ensure_eq!(ctx.names(&user(), ctx.dir).await.ctx("readdir")?, vec![b"a".to_vec(), b"c".to_vec()]);
    Ok(())
}

async fn rmdir_on_symlink_notdir(ctx: &Ctx) -> Result<(), String> {
    ctx.subdir(&user(), ctx.dir, "d", 0o755).await?;
    ctx.symlink(&user(), ctx.dir, "l", "d").await.ctx("symlink")?;
    expect_err(ctx.rmdir(&user(), ctx.dir, "l").await, FsError::NotDir)?;
    ctx.remove(&user(), ctx.dir, "l").await.ctx("remove a symlink")?;
    ctx.lookup(&user(), ctx.dir, "d").await.ctx("the link's target is untouched")?;
    Ok(())
}

async fn remove_in_a_file_notdir(ctx: &Ctx) -> Result<(), String> {
    let f = ctx.file(&user(), ctx.dir, "f", 0o644).await?;
    expect_err(ctx.remove(&user(), f, "x").await, FsError::NotDir)
}

async fn rmdir_after_emptying(ctx: &Ctx) -> Result<(), String> {
    let d = ctx.subdir(&user(), ctx.dir, "d", 0o755).await?;
    ctx.file(&user(), d, "f", 0o644).await?;
    ctx.subdir(&user(), d, "s", 0o755).await?;
    ctx.remove(&user(), d, "f").await.ctx("remove f")?;
    ctx.rmdir(&user(), d, "s").await.ctx("rmdir s")?;
    ensure_eq!(ctx.attr(d).await?.nlink, 2, "nlink back to 2");
    ctx.rmdir(&user(), ctx.dir, "d").await.ctx("rmdir emptied d")?;
    Ok(())
}
