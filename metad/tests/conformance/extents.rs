//! CommitExtents and GetExtents: extents are replaced by range (splitting what straddles the
//! range's edges), size becomes max(size, range_end), reads are clipped to the asked window, and
//! malformed lists (overlaps, bad hashes, extents outside the range or past their chunk, empty
//! extents, inverted or oversized ranges) are refused without changing anything. Writing needs
//! write permission (or ownership); reading needs read permission (or ownership).

use proto::FsError;
use proto::pb;

use super::harness::*;

pub fn cases() -> Vec<Case> {
    cases![
        commit_then_get_exact,
        replace_middle_splits,
        disjoint_ranges_both_survive,
        get_is_clipped_to_window,
        truncate_clips_extents,
        size_is_max_of_size_and_range_end,
        empty_commit_punches_a_hole,
        unsorted_disjoint_extents_accepted,
        overlapping_extents_invalid,
        hash_not_32_bytes_invalid,
        extent_outside_range_invalid,
        extent_past_its_chunk_invalid,
        empty_extent_invalid,
        inverted_range_invalid,
        range_beyond_max_size_too_big,
        commit_without_write_access,
        commit_with_group_write_ok,
        commit_on_directory_is_dir,
        commit_moves_mtime_and_change,
        used_counts_referenced_bytes,
    ]
}

async fn commit_then_get_exact(ctx: &Ctx) -> Result<(), String> {
    let f = ctx.file(&user(), ctx.dir, "f", 0o644).await?;
    let list = vec![
        pb::Extent { offset: 0, length: 100, hash: vec![1; 32], chunk_offset: 20, chunk_length: 200 },
        pb::Extent { offset: 100, length: 50, hash: vec![2; 32], chunk_offset: 0, chunk_length: 50 },
    ];
    let r = ctx.commit(&user(), f, 0, 150, list.clone()).await.ctx("commit")?;
    ensure_eq!(r.after.ctx("after")?.size, 150);
    ensure_eq!(ctx.extents(&user(), f, 0, 1000).await.ctx("get")?, list, "exactly what was committed");
    Ok(())
}

async fn replace_middle_splits(ctx: &Ctx) -> Result<(), String> {
    let f = ctx.file(&user(), ctx.dir, "f", 0o644).await?;
    ctx.commit(&user(), f, 0, 100, vec![ext(0, 100, 1)]).await.ctx("commit")?;
    ctx.commit(&user(), f, 40, 60, vec![ext(40, 20, 2)]).await.ctx("overwrite middle")?;
    ensure_eq!(
        spans(&ctx.extents(&user(), f, 0, 100).await.ctx("get")?),
        vec![(0, 40, 1, 0), (40, 20, 2, 0), (60, 40, 1, 60)]
    );
    Ok(())
}

async fn disjoint_ranges_both_survive(ctx: &Ctx) -> Result<(), String> {
    let f = ctx.file(&user(), ctx.dir, "f", 0o644).await?;
    ctx.commit(&user(), f, 10, 20, vec![ext(10, 10, 4)]).await.ctx("commit 2")?;
    ctx.commit(&user(), f, 0, 10, vec![ext(0, 10, 3)]).await.ctx("commit 1")?;
    ensure_eq!(spans(&ctx.extents(&user(), f, 0, 20).await.ctx("get")?), vec![(0, 10, 3, 0), (10, 10, 4, 0)]);
    ensure_eq!(ctx.attr(f).await?.size, 20);
    Ok(())
}

async fn get_is_clipped_to_window(ctx: &Ctx) -> Result<(), String> {
    let f = ctx.file(&user(), ctx.dir, "f", 0o644).await?;
    ctx.commit(&user(), f, 0, 100, vec![ext(0, 50, 1), ext(50, 50, 2)]).await.ctx("commit")?;
    ensure_eq!(spans(&ctx.extents(&user(), f, 30, 40).await.ctx("get")?), vec![(30, 20, 1, 30), (50, 20, 2, 0)]);
    ensure_eq!(ctx.extents(&user(), f, 100, 50).await.ctx("get past eof")?.len(), 0);
    Ok(())
}

async fn truncate_clips_extents(ctx: &Ctx) -> Result<(), String> {
    let f = ctx.file(&user(), ctx.dir, "f", 0o644).await?;
    ctx.commit(&user(), f, 0, 100, vec![ext(0, 100, 1)]).await.ctx("commit")?;
    ctx.truncate(&user(), f, 30).await.ctx("truncate")?;
    ctx.truncate(&user(), f, 100).await.ctx("extend")?;
    ensure_eq!(
        spans(&ctx.extents(&user(), f, 0, 100).await.ctx("get")?),
        vec![(0, 30, 1, 0)],
        "no old data comes back"
    );
    Ok(())
}

async fn size_is_max_of_size_and_range_end(ctx: &Ctx) -> Result<(), String> {
    let f = ctx.file(&user(), ctx.dir, "f", 0o644).await?;
    ctx.truncate(&user(), f, 1000).await.ctx("extend")?;
    let a = ctx.commit(&user(), f, 0, 10, vec![ext(0, 10, 1)]).await.ctx("commit inside")?.after.ctx("after")?;
    ensure_eq!(a.size, 1000, "a commit inside the file does not shrink it");
    let a =
        ctx.commit(&user(), f, 2000, 2010, vec![ext(2000, 10, 2)]).await.ctx("commit past eof")?.after.ctx("after")?;
    ensure_eq!(a.size, 2010);
    Ok(())
}

async fn empty_commit_punches_a_hole(ctx: &Ctx) -> Result<(), String> {
    let f = ctx.file(&user(), ctx.dir, "f", 0o644).await?;
    ctx.commit(&user(), f, 0, 30, vec![ext(0, 30, 1)]).await.ctx("commit")?;
    ctx.commit(&user(), f, 10, 20, vec![]).await.ctx("commit a hole")?;
    ensure_eq!(spans(&ctx.extents(&user(), f, 0, 30).await.ctx("get")?), vec![(0, 10, 1, 0), (20, 10, 1, 20)]);
    let a = ctx.attr(f).await?;
    ensure_eq!((a.size, a.used), (30, 20));
    Ok(())
}

async fn unsorted_disjoint_extents_accepted(ctx: &Ctx) -> Result<(), String> {
    let f = ctx.file(&user(), ctx.dir, "f", 0o644).await?;
    ctx.commit(&user(), f, 0, 20, vec![ext(10, 10, 2), ext(0, 10, 1)]).await.ctx("commit out of order")?;
    ensure_eq!(
        spans(&ctx.extents(&user(), f, 0, 20).await.ctx("get")?),
        vec![(0, 10, 1, 0), (10, 10, 2, 0)],
        "ascending"
    );
    Ok(())
}

/// Commits `bad` over a file holding one known extent and checks it is refused with `want`
/// and nothing changed.
async fn refused(ctx: &Ctx, start: u64, end: u64, bad: Vec<pb::Extent>, want: FsError) -> Result<(), String> {
    let f = ctx.file(&user(), ctx.dir, "f", 0o644).await?;
    ctx.commit(&user(), f, 0, 10, vec![ext(0, 10, 7)]).await.ctx("commit")?;
    let before = ctx.attr(f).await?;
    expect_err(ctx.commit(&user(), f, start, end, bad).await, want)?;
    ensure_eq!(ctx.attr(f).await?, before, "attributes changed by a refused commit");
    ensure_eq!(spans(&ctx.extents(&user(), f, 0, 100).await.ctx("get")?), vec![(0, 10, 7, 0)]);
    Ok(())
}

async fn overlapping_extents_invalid(ctx: &Ctx) -> Result<(), String> {
    refused(ctx, 0, 20, vec![ext(0, 10, 1), ext(5, 10, 2)], invalid()).await
}

async fn hash_not_32_bytes_invalid(ctx: &Ctx) -> Result<(), String> {
    refused(ctx, 0, 10, vec![pb::Extent { hash: vec![1; 31], ..ext(0, 10, 1) }], invalid()).await?;
    let f = ctx.lookup(&user(), ctx.dir, "f").await.ctx("lookup")?;
    expect_err(
        ctx.commit(&user(), nref(&f), 0, 10, vec![pb::Extent { hash: vec![1; 33], ..ext(0, 10, 1) }]).await,
        invalid(),
    )
}

async fn extent_outside_range_invalid(ctx: &Ctx) -> Result<(), String> {
    refused(ctx, 0, 10, vec![ext(5, 10, 1)], invalid()).await
}

async fn extent_past_its_chunk_invalid(ctx: &Ctx) -> Result<(), String> {
    let bad = pb::Extent { offset: 0, length: 10, hash: vec![1; 32], chunk_offset: 5, chunk_length: 10 };
    refused(ctx, 0, 10, vec![bad], invalid()).await
}

async fn empty_extent_invalid(ctx: &Ctx) -> Result<(), String> {
    refused(ctx, 0, 10, vec![ext(0, 0, 1)], invalid()).await
}

async fn inverted_range_invalid(ctx: &Ctx) -> Result<(), String> {
    refused(ctx, 20, 10, vec![], invalid()).await
}

async fn range_beyond_max_size_too_big(ctx: &Ctx) -> Result<(), String> {
    refused(ctx, 0, u64::MAX, vec![], FsError::TooBig).await
}

async fn commit_without_write_access(ctx: &Ctx) -> Result<(), String> {
    let f = ctx.file(&user(), ctx.dir, "f", 0o644).await?;
    expect_err(ctx.commit(&other(), f, 0, 10, vec![ext(0, 10, 1)]).await, FsError::Access)?;
    ensure_eq!(ctx.attr(f).await?.size, 0);
    Ok(())
}

async fn commit_with_group_write_ok(ctx: &Ctx) -> Result<(), String> {
    let f = ctx.file(&other(), ctx.dir, "f", 0o660).await?;
    ctx.chown(&root(), f, None, Some(SUPP_GID)).await.ctx("chgrp")?;
    ctx.commit(&user(), f, 0, 10, vec![ext(0, 10, 1)]).await.ctx("commit by a group member")?;
    Ok(())
}

async fn commit_on_directory_is_dir(ctx: &Ctx) -> Result<(), String> {
    let d = ctx.subdir(&user(), ctx.dir, "d", 0o755).await?;
    expect_err(ctx.commit(&user(), d, 0, 10, vec![ext(0, 10, 1)]).await, FsError::IsDir)
}

async fn commit_moves_mtime_and_change(ctx: &Ctx) -> Result<(), String> {
    let f = ctx.file(&user(), ctx.dir, "f", 0o644).await?;
    let r = ctx.commit(&user(), f, 0, 10, vec![ext(0, 10, 1)]).await.ctx("commit")?;
    let (b, a) = (r.before.ctx("before")?, r.after.ctx("after")?);
    ensure!(a.change > b.change, "change did not move");
    ensure!(ns(&a.mtime) >= ns(&b.mtime) && ns(&a.ctime) >= ns(&b.ctime), "times went back");
    ensure_eq!(ctx.attr(f).await?, a, "getattr == after");
    Ok(())
}

async fn used_counts_referenced_bytes(ctx: &Ctx) -> Result<(), String> {
    let f = ctx.file(&user(), ctx.dir, "f", 0o644).await?;
    ctx.commit(&user(), f, 0, 100, vec![ext(0, 10, 1), ext(50, 20, 2)]).await.ctx("commit")?;
    let a = ctx.attr(f).await?;
    ensure_eq!((a.size, a.used), (100, 30));
    Ok(())
}
