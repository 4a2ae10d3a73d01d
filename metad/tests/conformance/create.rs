//! Create (regular files and directories): the three NFS create modes, mode bits, ownership,
//! timestamps, link counts and the parent's wcc attributes.
//!
//! Ownership (the contract leaves `CreateRequest.uid/gid` uncommented): per POSIX the new
//! inode is owned by the caller's uid, and its group is the caller's gid unless the directory
//! is setgid (then the directory's gid; see `perms`). A non-root caller can never create a
//! file owned by someone else, whatever the request's uid/gid fields say.

use proto::FsError;
use proto::pb::{CreateHow, FileType};

use super::harness::*;

pub fn cases() -> Vec<Case> {
    cases![
        unchecked_creates_new_file,
        unchecked_on_existing_returns_it,
        unchecked_with_size_truncates_existing,
        unchecked_with_size_extends_existing,
        unchecked_without_size_keeps_content,
        unchecked_file_over_directory_exists,
        guarded_on_existing_file_exists,
        guarded_on_existing_dir_exists,
        exclusive_retransmit_returns_same_inode,
        exclusive_other_verifier_exists,
        exclusive_on_guarded_file_exists,
        exclusive_short_verifier_invalid,
        create_in_a_file_is_notdir,
        mode_beyond_permission_bits_is_invalid,
        special_mode_bits_are_kept,
        owner_comes_from_cred_not_request,
        times_are_stamped,
        parent_wcc_and_times_move,
        file_has_nlink_one_size_zero,
        mkdir_nlink_two_parent_nlink_plus_one,
        mkdir_existing_name_exists,
        create_other_kinds_invalid,
        inodes_are_distinct,
        reply_matches_getattr,
    ]
}

fn unchecked(ctx: &Ctx, name: &str, size: Option<u64>) -> proto::pb::CreateRequest {
    let mut r = ctx.create_req(&user(), ctx.dir, name, FileType::Regular, 0o644);
    r.how = CreateHow::Unchecked as i32;
    r.size = size;
    r
}

fn exclusive(ctx: &Ctx, name: &str, verifier: &[u8]) -> proto::pb::CreateRequest {
    let mut r = ctx.create_req(&user(), ctx.dir, name, FileType::Regular, 0o644);
    r.how = CreateHow::Exclusive as i32;
    r.verifier = verifier.to_vec();
    r
}

async fn unchecked_creates_new_file(ctx: &Ctx) -> Result<(), String> {
    let r = ctx.create_raw(unchecked(ctx, "f", None)).await.ctx("unchecked create")?;
    let a = r.attr.ctx("attr")?;
    ensure_eq!(a.kind, FileType::Regular as i32);
    ensure_eq!(ctx.lookup(&user(), ctx.dir, "f").await.ctx("lookup")?.node, a.node);
    Ok(())
}

async fn unchecked_on_existing_returns_it(ctx: &Ctx) -> Result<(), String> {
    let f = ctx.file(&user(), ctx.dir, "f", 0o644).await?;
    let r = ctx.create_raw(unchecked(ctx, "f", None)).await.ctx("unchecked create on existing")?;
    ensure_eq!(r.attr.ctx("attr")?.node, Some(f), "UNCHECKED on an existing file returns that file");
    Ok(())
}

async fn unchecked_with_size_truncates_existing(ctx: &Ctx) -> Result<(), String> {
    let f = ctx.file(&user(), ctx.dir, "f", 0o644).await?;
    ctx.commit(&user(), f, 0, 100, vec![ext(0, 100, 1)]).await.ctx("commit")?;
    let r = ctx.create_raw(unchecked(ctx, "f", Some(0))).await.ctx("unchecked create size 0")?;
    let a = r.attr.ctx("attr")?;
    ensure_eq!(a.node, Some(f));
    ensure_eq!((a.size, a.used), (0, 0), "(size, used) after truncating create");
    ensure_eq!(ctx.extents(&user(), f, 0, 1000).await.ctx("extents")?.len(), 0, "extents left");
    Ok(())
}

async fn unchecked_with_size_extends_existing(ctx: &Ctx) -> Result<(), String> {
    let f = ctx.file(&user(), ctx.dir, "f", 0o644).await?;
    ctx.commit(&user(), f, 0, 10, vec![ext(0, 10, 1)]).await.ctx("commit")?;
    let r = ctx.create_raw(unchecked(ctx, "f", Some(500))).await.ctx("unchecked create size 500")?;
    let a = r.attr.ctx("attr")?;
    ensure_eq!((a.size, a.used), (500, 10));
    Ok(())
}

async fn unchecked_without_size_keeps_content(ctx: &Ctx) -> Result<(), String> {
    let f = ctx.file(&user(), ctx.dir, "f", 0o644).await?;
    ctx.commit(&user(), f, 0, 10, vec![ext(0, 10, 1)]).await.ctx("commit")?;
    ctx.create_raw(unchecked(ctx, "f", None)).await.ctx("unchecked create")?;
    ensure_eq!(ctx.attr(f).await?.size, 10, "size after an UNCHECKED create without size");
    Ok(())
}

async fn unchecked_file_over_directory_exists(ctx: &Ctx) -> Result<(), String> {
    ctx.subdir(&user(), ctx.dir, "d", 0o755).await?;
    expect_err(ctx.create_raw(unchecked(ctx, "d", None)).await, FsError::Exists)
}

async fn guarded_on_existing_file_exists(ctx: &Ctx) -> Result<(), String> {
    ctx.file(&user(), ctx.dir, "f", 0o644).await?;
    expect_err(ctx.create(&user(), ctx.dir, "f", 0o644).await, FsError::Exists)
}

async fn guarded_on_existing_dir_exists(ctx: &Ctx) -> Result<(), String> {
    ctx.subdir(&user(), ctx.dir, "d", 0o755).await?;
    expect_err(ctx.create(&user(), ctx.dir, "d", 0o644).await, FsError::Exists)
}

async fn exclusive_retransmit_returns_same_inode(ctx: &Ctx) -> Result<(), String> {
    let first = ctx.create_raw(exclusive(ctx, "x", &[1; 8])).await.ctx("exclusive create")?;
    let again = ctx.create_raw(exclusive(ctx, "x", &[1; 8])).await.ctx("retransmitted exclusive create")?;
    ensure_eq!(again.attr.ctx("attr")?.node, first.attr.ctx("attr")?.node);
    Ok(())
}

async fn exclusive_other_verifier_exists(ctx: &Ctx) -> Result<(), String> {
    ctx.create_raw(exclusive(ctx, "x", &[1; 8])).await.ctx("exclusive create")?;
    expect_err(ctx.create_raw(exclusive(ctx, "x", &[2; 8])).await, FsError::Exists)
}

async fn exclusive_on_guarded_file_exists(ctx: &Ctx) -> Result<(), String> {
    ctx.file(&user(), ctx.dir, "x", 0o644).await?;
    expect_err(ctx.create_raw(exclusive(ctx, "x", &[0; 8])).await, FsError::Exists)
}

async fn exclusive_short_verifier_invalid(ctx: &Ctx) -> Result<(), String> {
    expect_err(ctx.create_raw(exclusive(ctx, "x", &[1; 7])).await, invalid())?;
    expect_err(ctx.lookup(&user(), ctx.dir, "x").await, FsError::NotFound)
}

async fn create_in_a_file_is_notdir(ctx: &Ctx) -> Result<(), String> {
    let f = ctx.file(&user(), ctx.dir, "f", 0o644).await?;
    expect_err(ctx.create(&user(), f, "g", 0o644).await, FsError::NotDir)?;
    expect_err(ctx.mkdir(&user(), f, "g", 0o755).await, FsError::NotDir)
}

/// The mode field carries permission bits only (meta.proto); file-type bits are an
/// out-of-range attribute (EINVAL), as they are for SETATTR. Gateways mask what clients send.
async fn mode_beyond_permission_bits_is_invalid(ctx: &Ctx) -> Result<(), String> {
    let r = ctx.create(&user(), ctx.dir, "f", 0o100_640).await;
    expect_err(r, FsError::Invalid(String::new()))?;
    let _ = ctx.create(&user(), ctx.dir, "f", 0o640).await.ctx("the same name with a valid mode")?;
    Ok(())
}

async fn special_mode_bits_are_kept(ctx: &Ctx) -> Result<(), String> {
    let a = ctx.create(&user(), ctx.dir, "f", 0o4755).await.ctx("create setuid")?;
    ensure_eq!(a.mode, 0o4755);
    let d = ctx.mkdir(&user(), ctx.dir, "d", 0o1777).await.ctx("mkdir sticky")?;
    ensure_eq!(d.mode, 0o1777);
    Ok(())
}

async fn owner_comes_from_cred_not_request(ctx: &Ctx) -> Result<(), String> {
    let mut req = ctx.create_req(&user(), ctx.dir, "f", FileType::Regular, 0o644);
    (req.uid, req.gid) = (0, 0);
    let a = ctx.create_raw(req).await.ctx("create")?.attr.ctx("attr")?;
    ensure_eq!((a.uid, a.gid), (USER_UID, USER_GID), "a user's file is owned by the user");
    Ok(())
}

async fn times_are_stamped(ctx: &Ctx) -> Result<(), String> {
    let a = ctx.create(&user(), ctx.dir, "f", 0o644).await.ctx("create")?;
    ensure!(is_recent(&a.mtime), "mtime {:?} is not the server's now", a.mtime);
    ensure_eq!(ns(&a.atime), ns(&a.mtime), "atime == mtime");
    ensure_eq!(ns(&a.ctime), ns(&a.mtime), "ctime == mtime");
    ensure_eq!(ns(&a.btime), ns(&a.mtime), "btime == mtime");
    Ok(())
}

async fn parent_wcc_and_times_move(ctx: &Ctx) -> Result<(), String> {
    let before = ctx.attr(ctx.dir).await?;
    let r = ctx.create_raw(ctx.create_req(&user(), ctx.dir, "f", FileType::Regular, 0o644)).await.ctx("create")?;
    let wcc = r.dir.ctx("wcc")?;
    let (b, a) = (wcc.before.ctx("wcc before")?, wcc.after.ctx("wcc after")?);
    ensure_eq!(b, before, "wcc before == the directory before");
    ensure!(a.change > b.change, "change did not move: {} -> {}", b.change, a.change);
    ensure!(ns(&a.mtime) >= ns(&b.mtime) && ns(&a.ctime) >= ns(&b.ctime), "parent times went back");
    let child = r.attr.ctx("attr")?;
    ensure_eq!(ns(&a.mtime), ns(&child.ctime), "parent mtime is the create's time");
    ensure_eq!(ctx.attr(ctx.dir).await?, a, "getattr(dir) == wcc after");
    Ok(())
}

async fn file_has_nlink_one_size_zero(ctx: &Ctx) -> Result<(), String> {
    let a = ctx.create(&user(), ctx.dir, "f", 0o644).await.ctx("create")?;
    ensure_eq!((a.nlink, a.size, a.used), (1, 0, 0));
    Ok(())
}

async fn mkdir_nlink_two_parent_nlink_plus_one(ctx: &Ctx) -> Result<(), String> {
    let before = ctx.attr(ctx.dir).await?.nlink;
    let d = ctx.mkdir(&user(), ctx.dir, "d", 0o755).await.ctx("mkdir")?;
    ensure_eq!(d.kind, FileType::Directory as i32);
    ensure_eq!(d.nlink, 2, "new directory nlink");
    ensure_eq!(ctx.attr(ctx.dir).await?.nlink, before + 1, "parent nlink");
    ctx.file(&user(), ctx.dir, "f", 0o644).await?;
    ensure_eq!(ctx.attr(ctx.dir).await?.nlink, before + 1, "a file does not change the parent's nlink");
    Ok(())
}

async fn mkdir_existing_name_exists(ctx: &Ctx) -> Result<(), String> {
    ctx.subdir(&user(), ctx.dir, "d", 0o755).await?;
    expect_err(ctx.mkdir(&user(), ctx.dir, "d", 0o755).await, FsError::Exists)?;
    ctx.file(&user(), ctx.dir, "f", 0o644).await?;
    expect_err(ctx.mkdir(&user(), ctx.dir, "f", 0o755).await, FsError::Exists)?;
    let mut req = ctx.create_req(&user(), ctx.dir, "d", FileType::Directory, 0o755);
    req.how = CreateHow::Unchecked as i32;
    expect_err(ctx.create_raw(req).await, FsError::Exists)
}

async fn create_other_kinds_invalid(ctx: &Ctx) -> Result<(), String> {
    // Create makes REGULAR or DIRECTORY only; the rest have their own calls.
    for kind in [FileType::Unspecified, FileType::Symlink, FileType::Fifo, FileType::CharDevice] {
        let r = ctx.create_raw(ctx.create_req(&user(), ctx.dir, "k", kind, 0o644)).await;
        expect_err(r, invalid()).map_err(|e| format!("{kind:?}: {e}"))?;
    }
    expect_err(ctx.lookup(&user(), ctx.dir, "k").await, FsError::NotFound)
}

async fn inodes_are_distinct(ctx: &Ctx) -> Result<(), String> {
    let a = ctx.file(&user(), ctx.dir, "a", 0o644).await?;
    let b = ctx.file(&user(), ctx.dir, "b", 0o644).await?;
    let d = ctx.subdir(&user(), ctx.dir, "d", 0o755).await?;
    ensure!(a.ino != b.ino && a.ino != d.ino && b.ino != d.ino, "inode numbers repeat: {a:?} {b:?} {d:?}");
    Ok(())
}

async fn reply_matches_getattr(ctx: &Ctx) -> Result<(), String> {
    let a = ctx.create(&user(), ctx.dir, "f", 0o600).await.ctx("create")?;
    ensure_eq!(ctx.attr(nref(&a)).await?, a);
    Ok(())
}
