//! SetAttr: chmod (owner or root; setgid dropped for a non-member), chown (root only; an owner
//! may change the group to one of its own groups; setuid/setgid cleared when a non-root caller
//! changes the owner or group), size (truncate/extend, extents dropped and clipped), times
//! (explicit: owner or root; `*_now`: anyone with write access), the ctime guard (NotSync), and
//! the limits (mode > 07777 Invalid, size > i64::MAX TooBig).

use proto::FsError;
use proto::pb::{self, FileType};

use super::harness::*;

pub fn cases() -> Vec<Case> {
    cases![
        chmod_by_owner,
        chmod_by_non_owner_perm,
        chmod_by_root,
        chmod_setgid_dropped_for_non_member,
        chown_by_root,
        chown_by_user_perm,
        chown_to_own_uid_by_user_ok,
        chgrp_to_own_group_ok,
        chgrp_to_foreign_group_perm,
        chgrp_by_non_owner_perm,
        chown_by_user_clears_setuid_setgid,
        truncate_shrinks_and_clips,
        truncate_extends_sparsely,
        truncate_to_zero_drops_extents,
        truncate_needs_write,
        truncate_directory_is_dir,
        explicit_times_are_set,
        times_now_use_server_time,
        explicit_times_by_non_owner_perm,
        times_now_by_writer_ok,
        every_change_moves_ctime,
        guard_matching_ctime_applies,
        guard_mismatch_not_sync,
        mode_above_07777_invalid,
        size_above_max_too_big,
        chmod_on_directory_keeps_setgid_for_member,
    ]
}

async fn chmod_by_owner(ctx: &Ctx) -> Result<(), String> {
    let f = ctx.file(&user(), ctx.dir, "f", 0o644).await?;
    ensure_eq!(ctx.chmod(&user(), f, 0o600).await.ctx("chmod")?.mode, 0o600);
    ensure_eq!(ctx.attr(f).await?.mode, 0o600);
    Ok(())
}

async fn chmod_by_non_owner_perm(ctx: &Ctx) -> Result<(), String> {
    let f = ctx.file(&user(), ctx.dir, "f", 0o666).await?;
    expect_err(ctx.chmod(&other(), f, 0o777).await, FsError::Perm)?;
    ensure_eq!(ctx.attr(f).await?.mode, 0o666, "mode unchanged");
    Ok(())
}

async fn chmod_by_root(ctx: &Ctx) -> Result<(), String> {
    let f = ctx.file(&user(), ctx.dir, "f", 0o644).await?;
    ensure_eq!(ctx.chmod(&root(), f, 0o4711).await.ctx("chmod by root")?.mode, 0o4711);
    Ok(())
}

async fn chmod_setgid_dropped_for_non_member(ctx: &Ctx) -> Result<(), String> {
    // POSIX chmod: a non-root caller outside the file's group cannot set S_ISGID on it.
    let f = ctx.file(&user(), ctx.dir, "f", 0o644).await?;
    ctx.chown(&root(), f, None, Some(FOREIGN_GID)).await.ctx("chgrp by root")?;
    ensure_eq!(ctx.chmod(&user(), f, 0o2755).await.ctx("chmod g+s")?.mode, 0o0755);
    Ok(())
}

async fn chown_by_root(ctx: &Ctx) -> Result<(), String> {
    let f = ctx.file(&user(), ctx.dir, "f", 0o644).await?;
    let a = ctx.chown(&root(), f, Some(OTHER_UID), Some(OTHER_GID)).await.ctx("chown")?;
    ensure_eq!((a.uid, a.gid), (OTHER_UID, OTHER_GID));
    Ok(())
}

async fn chown_by_user_perm(ctx: &Ctx) -> Result<(), String> {
    let f = ctx.file(&user(), ctx.dir, "f", 0o644).await?;
    expect_err(ctx.chown(&user(), f, Some(OTHER_UID), None).await, FsError::Perm)?;
    ensure_eq!(ctx.attr(f).await?.uid, USER_UID);
    Ok(())
}

async fn chown_to_own_uid_by_user_ok(ctx: &Ctx) -> Result<(), String> {
    let f = ctx.file(&user(), ctx.dir, "f", 0o644).await?;
    ensure_eq!(ctx.chown(&user(), f, Some(USER_UID), None).await.ctx("chown to self")?.uid, USER_UID);
    Ok(())
}

async fn chgrp_to_own_group_ok(ctx: &Ctx) -> Result<(), String> {
    let f = ctx.file(&user(), ctx.dir, "f", 0o644).await?;
    ensure_eq!(ctx.chown(&user(), f, None, Some(SUPP_GID)).await.ctx("chgrp to a supplementary group")?.gid, SUPP_GID);
    Ok(())
}

async fn chgrp_to_foreign_group_perm(ctx: &Ctx) -> Result<(), String> {
    let f = ctx.file(&user(), ctx.dir, "f", 0o644).await?;
    expect_err(ctx.chown(&user(), f, None, Some(FOREIGN_GID)).await, FsError::Perm)?;
    ensure_eq!(ctx.attr(f).await?.gid, USER_GID);
    Ok(())
}

async fn chgrp_by_non_owner_perm(ctx: &Ctx) -> Result<(), String> {
    let f = ctx.file(&other(), ctx.dir, "f", 0o666).await?;
    expect_err(ctx.chown(&user(), f, None, Some(USER_GID)).await, FsError::Perm)
}

async fn chown_by_user_clears_setuid_setgid(ctx: &Ctx) -> Result<(), String> {
    let f = ctx.file(&user(), ctx.dir, "f", 0o6755).await?;
    ensure_eq!(ctx.attr(f).await?.mode, 0o6755, "created setuid+setgid");
    let a = ctx.chown(&user(), f, None, Some(SUPP_GID)).await.ctx("chgrp")?;
    ensure_eq!(a.mode, 0o0755, "setuid/setgid cleared by a non-root chown");
    Ok(())
}

async fn truncate_shrinks_and_clips(ctx: &Ctx) -> Result<(), String> {
    let f = ctx.file(&user(), ctx.dir, "f", 0o644).await?;
    ctx.commit(&user(), f, 0, 100, vec![ext(0, 40, 1), ext(40, 60, 2)]).await.ctx("commit")?;
    let r =
        ctx.setattr_raw(pb::SetAttrRequest { size: Some(50), ..ctx.setattr_req(&user(), f) }).await.ctx("truncate")?;
    ensure_eq!(r.before.ctx("before")?.size, 100);
    let a = r.after.ctx("after")?;
    ensure_eq!((a.size, a.used), (50, 50));
    ensure_eq!(spans(&ctx.extents(&user(), f, 0, 1000).await.ctx("extents")?), vec![(0, 40, 1, 0), (40, 10, 2, 0)]);
    Ok(())
}

async fn truncate_extends_sparsely(ctx: &Ctx) -> Result<(), String> {
    let f = ctx.file(&user(), ctx.dir, "f", 0o644).await?;
    ctx.commit(&user(), f, 0, 10, vec![ext(0, 10, 1)]).await.ctx("commit")?;
    let a = ctx.truncate(&user(), f, 1 << 30).await.ctx("extend")?;
    ensure_eq!((a.size, a.used), (1 << 30, 10));
    ensure_eq!(spans(&ctx.extents(&user(), f, 0, 1 << 31).await.ctx("extents")?), vec![(0, 10, 1, 0)]);
    Ok(())
}

async fn truncate_to_zero_drops_extents(ctx: &Ctx) -> Result<(), String> {
    let f = ctx.file(&user(), ctx.dir, "f", 0o644).await?;
    ctx.commit(&user(), f, 0, 30, vec![ext(0, 10, 1), ext(20, 10, 2)]).await.ctx("commit")?;
    let a = ctx.truncate(&user(), f, 0).await.ctx("truncate")?;
    ensure_eq!((a.size, a.used), (0, 0));
    ensure_eq!(ctx.extents(&user(), f, 0, 1000).await.ctx("extents")?.len(), 0);
    Ok(())
}

async fn truncate_needs_write(ctx: &Ctx) -> Result<(), String> {
    let f = ctx.file(&user(), ctx.dir, "f", 0o644).await?;
    ctx.commit(&user(), f, 0, 10, vec![ext(0, 10, 1)]).await.ctx("commit")?;
    expect_err(ctx.truncate(&other(), f, 0).await, FsError::Access)?;
    ensure_eq!(ctx.attr(f).await?.size, 10);
    Ok(())
}

async fn truncate_directory_is_dir(ctx: &Ctx) -> Result<(), String> {
    let d = ctx.subdir(&user(), ctx.dir, "d", 0o755).await?;
    expect_err(ctx.truncate(&user(), d, 0).await, FsError::IsDir)
}

fn t(secs: i64, nanos: u32) -> pb::Time {
    pb::Time { secs, nanos }
}

async fn explicit_times_are_set(ctx: &Ctx) -> Result<(), String> {
    let f = ctx.file(&user(), ctx.dir, "f", 0o644).await?;
    let req = pb::SetAttrRequest {
        atime: Some(t(1_000_000, 5)),
        mtime: Some(t(2_000_000, 7)),
        ..ctx.setattr_req(&user(), f)
    };
    let a = ctx.setattr_raw(req).await.ctx("set times")?.after.ctx("after")?;
    ensure_eq!((a.atime, a.mtime), (Some(t(1_000_000, 5)), Some(t(2_000_000, 7))));
    ensure!(is_recent(&a.ctime), "ctime is the server's now, not the given times");
    Ok(())
}

async fn times_now_use_server_time(ctx: &Ctx) -> Result<(), String> {
    let f = ctx.file(&user(), ctx.dir, "f", 0o644).await?;
    ctx.setattr_raw(pb::SetAttrRequest { atime: Some(t(5, 0)), mtime: Some(t(5, 0)), ..ctx.setattr_req(&user(), f) })
        .await
        .ctx("set old times")?;
    let req = pb::SetAttrRequest { atime_now: true, mtime_now: true, ..ctx.setattr_req(&user(), f) };
    let a = ctx.setattr_raw(req).await.ctx("set times to now")?.after.ctx("after")?;
    ensure!(is_recent(&a.atime) && is_recent(&a.mtime), "times not the server's now: {:?} {:?}", a.atime, a.mtime);
    Ok(())
}

async fn explicit_times_by_non_owner_perm(ctx: &Ctx) -> Result<(), String> {
    let f = ctx.file(&user(), ctx.dir, "f", 0o666).await?;
    let req = pb::SetAttrRequest { mtime: Some(t(5, 0)), ..ctx.setattr_req(&other(), f) };
    expect_err(ctx.setattr_raw(req).await, FsError::Perm)
}

async fn times_now_by_writer_ok(ctx: &Ctx) -> Result<(), String> {
    // utimes(path, NULL): anyone who may write the file may set its times to now.
    let f = ctx.file(&user(), ctx.dir, "f", 0o666).await?;
    let req = pb::SetAttrRequest { atime_now: true, mtime_now: true, ..ctx.setattr_req(&other(), f) };
    ctx.setattr_raw(req).await.ctx("touch by a writer")?;
    let g = ctx.file(&user(), ctx.dir, "g", 0o644).await?;
    let req = pb::SetAttrRequest { mtime_now: true, ..ctx.setattr_req(&other(), g) };
    expect_err(ctx.setattr_raw(req).await, FsError::Access).map_err(|e| format!("touch by a non-writer: {e}"))
}

async fn every_change_moves_ctime(ctx: &Ctx) -> Result<(), String> {
    let f = ctx.file(&user(), ctx.dir, "f", 0o644).await?;
    let before = ctx.attr(f).await?;
    let a = ctx.chmod(&user(), f, 0o600).await.ctx("chmod")?;
    ensure!(a.change > before.change, "change did not move");
    ensure!(ns(&a.ctime) >= ns(&before.ctime), "ctime went back");
    ensure_eq!(ns(&a.mtime), ns(&before.mtime), "chmod does not touch mtime");
    Ok(())
}

async fn guard_matching_ctime_applies(ctx: &Ctx) -> Result<(), String> {
    let f = ctx.file(&user(), ctx.dir, "f", 0o644).await?;
    let ctime = ctx.attr(f).await?.ctime;
    let req = pb::SetAttrRequest { mode: Some(0o600), guard_ctime: ctime, ..ctx.setattr_req(&user(), f) };
    ensure_eq!(ctx.setattr_raw(req).await.ctx("guarded chmod")?.after.ctx("after")?.mode, 0o600);
    Ok(())
}

async fn guard_mismatch_not_sync(ctx: &Ctx) -> Result<(), String> {
    let f = ctx.file(&user(), ctx.dir, "f", 0o644).await?;
    let req = pb::SetAttrRequest { mode: Some(0o600), guard_ctime: Some(t(1, 1)), ..ctx.setattr_req(&user(), f) };
    expect_err(ctx.setattr_raw(req).await, FsError::NotSync)?;
    ensure_eq!(ctx.attr(f).await?.mode, 0o644, "nothing applied");
    Ok(())
}

async fn mode_above_07777_invalid(ctx: &Ctx) -> Result<(), String> {
    let f = ctx.file(&user(), ctx.dir, "f", 0o644).await?;
    expect_err(ctx.chmod(&user(), f, 0o10_000).await, invalid())?;
    ensure_eq!(ctx.attr(f).await?.mode, 0o644);
    Ok(())
}

async fn size_above_max_too_big(ctx: &Ctx) -> Result<(), String> {
    let f = ctx.file(&user(), ctx.dir, "f", 0o644).await?;
    expect_err(ctx.truncate(&user(), f, u64::MAX).await, FsError::TooBig)?;
    expect_err(ctx.truncate(&user(), f, i64::MAX as u64 + 1).await, FsError::TooBig)
}

async fn chmod_on_directory_keeps_setgid_for_member(ctx: &Ctx) -> Result<(), String> {
    let d = ctx.subdir(&user(), ctx.dir, "d", 0o755).await?;
    let a = ctx.chmod(&user(), d, 0o2770).await.ctx("chmod dir")?;
    ensure_eq!((a.mode, a.kind), (0o2770, FileType::Directory as i32));
    Ok(())
}
