//! ReadDir: every entry exactly once across small pages, cookies that stay valid while entries
//! are added and removed between pages, the cookie verifier (echoed; a wrong non-zero one is
//! BadCookie), attributes on every entry, and the limits (huge `max_entries` is capped, not
//! refused). "." and ".." are not required in the listing; the suite ignores them if present.

use std::collections::BTreeSet;

use proto::FsError;

use super::harness::*;

pub fn cases() -> Vec<Case> {
    cases![
        all_entries_once_across_pages,
        entries_carry_attrs,
        cookies_are_unique,
        cookie_survives_insertions,
        cookie_survives_removal_of_its_entry,
        verifier_is_echoed,
        wrong_verifier_bad_cookie,
        empty_directory_is_eof,
        readdir_on_file_notdir,
        huge_max_entries_is_capped,
        cookie_past_the_end_is_empty_eof,
    ]
}

async fn fill(ctx: &Ctx, n: usize) -> Result<Vec<Vec<u8>>, String> {
    let mut names = Vec::new();
    for i in 0..n {
        let name = format!("e{i:02}");
        ctx.file(&user(), ctx.dir, &name, 0o644).await?;
        names.push(name.into_bytes());
    }
    names.sort();
    Ok(names)
}

async fn all_entries_once_across_pages(ctx: &Ctx) -> Result<(), String> {
    let want = fill(ctx, 23).await?;
    for page in [1, 4, 7] {
        let mut got: Vec<Vec<u8>> =
            ctx.list(&user(), ctx.dir, page).await.ctx("list")?.into_iter().map(|e| e.name).collect();
        got.sort();
        ensure_eq!(got, want, "page size {page}");
    }
    Ok(())
}

async fn entries_carry_attrs(ctx: &Ctx) -> Result<(), String> {
    fill(ctx, 3).await?;
    ctx.subdir(&user(), ctx.dir, "d", 0o700).await?;
    for e in ctx.list(&user(), ctx.dir, 2).await.ctx("list")? {
        let a = e.attr.ctx("entry attr")?;
        let by_lookup = ctx.lookup(&user(), ctx.dir, &e.name).await.ctx("lookup")?;
        ensure_eq!(a, by_lookup, "attr of {:?}", String::from_utf8_lossy(&e.name));
    }
    Ok(())
}

async fn cookies_are_unique(ctx: &Ctx) -> Result<(), String> {
    fill(ctx, 10).await?;
    let cookies: BTreeSet<u64> = ctx.list(&user(), ctx.dir, 3).await.ctx("list")?.iter().map(|e| e.cookie).collect();
    ensure_eq!(cookies.len(), 10, "distinct cookies");
    ensure!(!cookies.contains(&0), "cookie 0 means 'from the start' and cannot name an entry");
    Ok(())
}

async fn cookie_survives_insertions(ctx: &Ctx) -> Result<(), String> {
    let before = fill(ctx, 6).await?;
    let first = ctx.readdir(&user(), ctx.dir, 0, 0, 3).await.ctx("page 1")?;
    let last = first.entries.last().ctx("page 1 entries")?.cookie;
    for n in ["new1", "new2", "new3"] {
        ctx.file(&user(), ctx.dir, n, 0o644).await?;
    }
    let rest = ctx.readdir(&user(), ctx.dir, last, first.cookie_verifier, 1000).await.ctx("page 2")?;
    let mut seen: Vec<Vec<u8>> = first.entries.iter().chain(rest.entries.iter()).map(|e| e.name.clone()).collect();
    let total = seen.len();
    seen.sort();
    seen.dedup();
    ensure_eq!(seen.len(), total, "an entry was listed twice");
    for n in &before {
        ensure!(seen.contains(n), "{:?} was skipped", String::from_utf8_lossy(n));
    }
    Ok(())
}

async fn cookie_survives_removal_of_its_entry(ctx: &Ctx) -> Result<(), String> {
    let before = fill(ctx, 6).await?;
    let first = ctx.readdir(&user(), ctx.dir, 0, 0, 3).await.ctx("page 1")?;
    let last = first.entries.last().ctx("page 1 entries")?;
    ctx.remove(&user(), ctx.dir, &last.name).await.ctx("remove the cookie's entry")?;
    let rest = ctx.readdir(&user(), ctx.dir, last.cookie, first.cookie_verifier, 1000).await.ctx("page 2")?;
    ensure!(rest.eof, "page 2 is the rest");
    let mut seen: Vec<Vec<u8>> = first.entries.iter().chain(rest.entries.iter()).map(|e| e.name.clone()).collect();
    seen.sort();
    ensure_eq!(seen, before, "every entry exactly once");
    Ok(())
}

async fn verifier_is_echoed(ctx: &Ctx) -> Result<(), String> {
    fill(ctx, 4).await?;
    let p1 = ctx.readdir(&user(), ctx.dir, 0, 0, 2).await.ctx("page 1")?;
    let c = p1.entries.last().ctx("entries")?.cookie;
    let p2 = ctx.readdir(&user(), ctx.dir, c, p1.cookie_verifier, 2).await.ctx("page 2 with the verifier")?;
    ensure_eq!(p2.cookie_verifier, p1.cookie_verifier, "the verifier of an unchanged directory");
    Ok(())
}

async fn wrong_verifier_bad_cookie(ctx: &Ctx) -> Result<(), String> {
    fill(ctx, 4).await?;
    let p1 = ctx.readdir(&user(), ctx.dir, 0, 0, 2).await.ctx("page 1")?;
    let c = p1.entries.last().ctx("entries")?.cookie;
    let wrong = p1.cookie_verifier ^ 0x5a5a_0000_0000_0001;
    expect_err(ctx.readdir(&user(), ctx.dir, c, wrong, 2).await, FsError::BadCookie)
}

async fn empty_directory_is_eof(ctx: &Ctx) -> Result<(), String> {
    let r = ctx.readdir(&user(), ctx.dir, 0, 0, 10).await.ctx("readdir")?;
    ensure!(r.eof, "no eof on an empty directory");
    ensure!(r.entries.iter().all(|e| e.name == b"." || e.name == b".."), "entries in an empty directory");
    ensure_eq!(r.dir, Some(ctx.attr(ctx.dir).await?), "directory attrs in the reply");
    Ok(())
}

async fn readdir_on_file_notdir(ctx: &Ctx) -> Result<(), String> {
    let f = ctx.file(&user(), ctx.dir, "f", 0o644).await?;
    expect_err(ctx.readdir(&user(), f, 0, 0, 10).await, FsError::NotDir)
}

async fn huge_max_entries_is_capped(ctx: &Ctx) -> Result<(), String> {
    let want = fill(ctx, 5).await?;
    let r = ctx.readdir(&user(), ctx.dir, 0, 0, u32::MAX).await.ctx("readdir u32::MAX")?;
    ensure!(r.eof, "small directory in one page");
    let mut got: Vec<Vec<u8>> = r.entries.into_iter().map(|e| e.name).filter(|n| n != b"." && n != b"..").collect();
    got.sort();
    ensure_eq!(got, want);
    Ok(())
}

async fn cookie_past_the_end_is_empty_eof(ctx: &Ctx) -> Result<(), String> {
    let want = fill(ctx, 3).await?;
    let all = ctx.readdir(&user(), ctx.dir, 0, 0, 1000).await.ctx("readdir")?;
    let last = all.entries.last().ctx("entries")?.cookie;
    let r = ctx.readdir(&user(), ctx.dir, last, all.cookie_verifier, 10).await.ctx("after the last cookie")?;
    ensure!(r.eof && r.entries.is_empty(), "after the last entry: eof, nothing ({} entries)", r.entries.len());
    ensure_eq!(want.len(), 3);
    Ok(())
}
