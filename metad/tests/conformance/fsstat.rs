//! FsStat: the share's file count and logical bytes move with create, remove, commit and
//! truncate (and a hard link adds no file). These cases run alone (serial): the counters are
//! share-wide, so concurrent cases would move them too.

use super::harness::*;

pub fn cases() -> Vec<Case> {
    cases![
        serial: create_and_mkdir_count_files,
        remove_uncounts_files,
        commit_adds_bytes,
        truncate_and_remove_drop_bytes,
        link_adds_no_file,
    ]
}

async fn stat(ctx: &Ctx) -> Result<(u64, u64), String> {
    let s = ctx.fsstat(ctx.dir).await.ctx("fsstat")?;
    Ok((s.files, s.bytes_used))
}

async fn create_and_mkdir_count_files(ctx: &Ctx) -> Result<(), String> {
    let (files, bytes) = stat(ctx).await?;
    ctx.file(&user(), ctx.dir, "f", 0o644).await?;
    ctx.subdir(&user(), ctx.dir, "d", 0o755).await?;
    ensure_eq!(stat(ctx).await?, (files + 2, bytes));
    ensure_eq!(ctx.fsstat(ctx.root).await.ctx("fsstat root")?.files, files + 2, "any handle of the share");
    Ok(())
}

async fn remove_uncounts_files(ctx: &Ctx) -> Result<(), String> {
    ctx.file(&user(), ctx.dir, "f", 0o644).await?;
    ctx.subdir(&user(), ctx.dir, "d", 0o755).await?;
    let (files, bytes) = stat(ctx).await?;
    ctx.remove(&user(), ctx.dir, "f").await.ctx("remove")?;
    ctx.rmdir(&user(), ctx.dir, "d").await.ctx("rmdir")?;
    ensure_eq!(stat(ctx).await?, (files - 2, bytes));
    Ok(())
}

async fn commit_adds_bytes(ctx: &Ctx) -> Result<(), String> {
    let f = ctx.file(&user(), ctx.dir, "f", 0o644).await?;
    let (files, bytes) = stat(ctx).await?;
    ctx.commit(&user(), f, 0, 300, vec![ext(0, 100, 1), ext(200, 100, 2)]).await.ctx("commit")?;
    ensure_eq!(stat(ctx).await?, (files, bytes + 200));
    ctx.commit(&user(), f, 0, 100, vec![ext(0, 100, 3)]).await.ctx("overwrite")?;
    ensure_eq!(stat(ctx).await?, (files, bytes + 200), "an overwrite replaces, not adds");
    Ok(())
}

async fn truncate_and_remove_drop_bytes(ctx: &Ctx) -> Result<(), String> {
    let f = ctx.file(&user(), ctx.dir, "f", 0o644).await?;
    ctx.commit(&user(), f, 0, 100, vec![ext(0, 100, 1)]).await.ctx("commit")?;
    let (files, bytes) = stat(ctx).await?;
    ctx.truncate(&user(), f, 40).await.ctx("truncate")?;
    ensure_eq!(stat(ctx).await?, (files, bytes - 60));
    ctx.remove(&user(), ctx.dir, "f").await.ctx("remove")?;
    ensure_eq!(stat(ctx).await?, (files - 1, bytes - 100));
    Ok(())
}

async fn link_adds_no_file(ctx: &Ctx) -> Result<(), String> {
    let f = ctx.file(&user(), ctx.dir, "f", 0o644).await?;
    ctx.commit(&user(), f, 0, 10, vec![ext(0, 10, 1)]).await.ctx("commit")?;
    let before = stat(ctx).await?;
    ctx.link(&user(), f, ctx.dir, "g").await.ctx("link")?;
    ensure_eq!(stat(ctx).await?, before, "a second name is not a second file");
    ctx.remove(&user(), ctx.dir, "f").await.ctx("remove one name")?;
    ensure_eq!(stat(ctx).await?, before, "the file lives on under g");
    Ok(())
}
