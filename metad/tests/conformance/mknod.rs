//! Mknod: FIFOs and sockets by anyone with write access, character and block devices by root
//! only (POSIX EPERM -> `Perm`), device numbers kept, and no regular files or directories.

use proto::FsError;
use proto::pb::FileType;

use super::harness::*;

pub fn cases() -> Vec<Case> {
    cases![
        fifo_by_user,
        socket_by_user,
        char_device_by_root_keeps_rdev,
        block_device_by_root_keeps_rdev,
        char_device_by_user_perm,
        block_device_by_user_perm,
        regular_or_directory_via_mknod_invalid,
        symlink_or_unspecified_via_mknod_invalid,
        mknod_existing_name_exists,
        mknod_updates_parent,
        mknod_needs_write_on_directory,
        special_files_can_be_removed,
    ]
}

async fn fifo_by_user(ctx: &Ctx) -> Result<(), String> {
    let a =
        ctx.mknod(&user(), ctx.dir, "p", FileType::Fifo, 0o640, (0, 0)).await.ctx("mknod fifo")?.attr.ctx("attr")?;
    ensure_eq!(
        (a.kind, a.mode, a.uid, a.gid, a.nlink, a.size),
        (FileType::Fifo as i32, 0o640, USER_UID, USER_GID, 1, 0)
    );
    ensure_eq!(ctx.lookup(&user(), ctx.dir, "p").await.ctx("lookup")?.kind, FileType::Fifo as i32);
    Ok(())
}

async fn socket_by_user(ctx: &Ctx) -> Result<(), String> {
    let a = ctx
        .mknod(&user(), ctx.dir, "s", FileType::Socket, 0o600, (0, 0))
        .await
        .ctx("mknod socket")?
        .attr
        .ctx("attr")?;
    ensure_eq!((a.kind, a.mode), (FileType::Socket as i32, 0o600));
    Ok(())
}

async fn char_device_by_root_keeps_rdev(ctx: &Ctx) -> Result<(), String> {
    let a = ctx
        .mknod(&root(), ctx.dir, "c", FileType::CharDevice, 0o666, (1, 3))
        .await
        .ctx("mknod char")?
        .attr
        .ctx("attr")?;
    ensure_eq!((a.kind, a.rdev_major, a.rdev_minor), (FileType::CharDevice as i32, 1, 3));
    let again = ctx.attr(nref(&a)).await?;
    ensure_eq!((again.rdev_major, again.rdev_minor), (1, 3), "rdev after getattr");
    Ok(())
}

async fn block_device_by_root_keeps_rdev(ctx: &Ctx) -> Result<(), String> {
    let a = ctx
        .mknod(&root(), ctx.dir, "b", FileType::BlockDevice, 0o660, (8, 17))
        .await
        .ctx("mknod block")?
        .attr
        .ctx("attr")?;
    ensure_eq!((a.kind, a.mode, a.rdev_major, a.rdev_minor), (FileType::BlockDevice as i32, 0o660, 8, 17));
    let listed = ctx.list(&root(), ctx.dir, 100).await.ctx("readdir")?;
    let e = listed.iter().find(|e| e.name == b"b").ctx("entry b")?;
    ensure_eq!(e.attr.as_ref().map(|a| (a.rdev_major, a.rdev_minor)), Some((8, 17)), "rdev in readdir");
    Ok(())
}

async fn char_device_by_user_perm(ctx: &Ctx) -> Result<(), String> {
    expect_err(ctx.mknod(&user(), ctx.dir, "c", FileType::CharDevice, 0o666, (1, 3)).await, FsError::Perm)?;
    expect_err(ctx.lookup(&user(), ctx.dir, "c").await, FsError::NotFound)
}

async fn block_device_by_user_perm(ctx: &Ctx) -> Result<(), String> {
    expect_err(ctx.mknod(&user(), ctx.dir, "b", FileType::BlockDevice, 0o660, (8, 0)).await, FsError::Perm)
}

async fn regular_or_directory_via_mknod_invalid(ctx: &Ctx) -> Result<(), String> {
    expect_err(ctx.mknod(&user(), ctx.dir, "r", FileType::Regular, 0o644, (0, 0)).await, invalid())?;
    expect_err(ctx.mknod(&user(), ctx.dir, "d", FileType::Directory, 0o755, (0, 0)).await, invalid())?;
    ensure_eq!(ctx.names(&user(), ctx.dir).await.ctx("readdir")?.len(), 0, "nothing created");
    Ok(())
}

async fn symlink_or_unspecified_via_mknod_invalid(ctx: &Ctx) -> Result<(), String> {
    expect_err(ctx.mknod(&user(), ctx.dir, "l", FileType::Symlink, 0o777, (0, 0)).await, invalid())?;
    expect_err(ctx.mknod(&user(), ctx.dir, "u", FileType::Unspecified, 0o644, (0, 0)).await, invalid())
}

async fn mknod_existing_name_exists(ctx: &Ctx) -> Result<(), String> {
    ctx.file(&user(), ctx.dir, "f", 0o644).await?;
    expect_err(ctx.mknod(&user(), ctx.dir, "f", FileType::Fifo, 0o644, (0, 0)).await, FsError::Exists)
}

async fn mknod_updates_parent(ctx: &Ctx) -> Result<(), String> {
    let before = ctx.attr(ctx.dir).await?;
    let r = ctx.mknod(&user(), ctx.dir, "p", FileType::Fifo, 0o644, (0, 0)).await.ctx("mknod")?;
    let after = r.dir.ctx("wcc")?.after.ctx("wcc after")?;
    ensure!(after.change > before.change, "parent change did not move");
    ensure_eq!(ctx.attr(ctx.dir).await?, after, "getattr == wcc after");
    Ok(())
}

async fn mknod_needs_write_on_directory(ctx: &Ctx) -> Result<(), String> {
    let d = ctx.user_dir("ro", 0o755).await?;
    expect_err(ctx.mknod(&other(), d, "p", FileType::Fifo, 0o644, (0, 0)).await, FsError::Access)
}

async fn special_files_can_be_removed(ctx: &Ctx) -> Result<(), String> {
    ctx.mknod(&user(), ctx.dir, "p", FileType::Fifo, 0o644, (0, 0)).await.ctx("mknod fifo")?;
    ctx.mknod(&root(), ctx.dir, "c", FileType::CharDevice, 0o644, (4, 4)).await.ctx("mknod char")?;
    ctx.remove(&user(), ctx.dir, "p").await.ctx("remove fifo")?;
    ctx.remove(&root(), ctx.dir, "c").await.ctx("remove char device")?;
    ensure_eq!(ctx.names(&user(), ctx.dir).await.ctx("readdir")?.len(), 0);
    Ok(())
}
