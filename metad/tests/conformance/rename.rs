//! Rename: moves and replacements (a file over a non-directory, a directory over an empty
//! directory), the refusals POSIX names (NotEmpty, NotDir, IsDir, Invalid for "."/".." and for
//! moving a directory under itself, CrossDevice across shares), the no-op cases (same inode,
//! two hard links of one file), link counts and ".." after a cross-directory move, and
//! atomicity: the target name always resolves while it is being replaced.

use proto::FsError;

use super::harness::*;

pub fn cases() -> Vec<Case> {
    cases![
        file_to_new_name,
        handle_survives_rename,
        file_over_file_frees_target,
        file_over_file_with_other_link_keeps_it,
        dir_over_empty_dir,
        dir_over_non_empty_dir_not_empty,
        dir_over_file_notdir,
        file_over_dir_is_dir,
        dir_into_own_subtree_invalid,
        dir_into_itself_invalid,
        same_name_is_a_noop,
        hard_links_of_one_file_noop,
        dot_and_dotdot_invalid,
        missing_source_not_found,
        cross_directory_dir_move_updates_dotdot_and_nlink,
        cross_directory_file_move_keeps_nlink,
        across_shares_cross_device,
        into_a_file_notdir,
        target_name_too_long,
        wcc_of_both_directories,
        readdir_lists_new_name_once,
        replacing_target_is_atomic,
        rename_needs_write_on_both_dirs,
    ]
}

async fn file_to_new_name(ctx: &Ctx) -> Result<(), String> {
    let f = ctx.file(&user(), ctx.dir, "a", 0o644).await?;
    ctx.rename(&user(), ctx.dir, "a", ctx.dir, "b").await.ctx("rename")?;
    expect_err(ctx.lookup(&user(), ctx.dir, "a").await, FsError::NotFound)?;
    ensure_eq!(ctx.lookup(&user(), ctx.dir, "b").await.ctx("lookup b")?.node, Some(f));
    Ok(())
}

async fn handle_survives_rename(ctx: &Ctx) -> Result<(), String> {
    let d = ctx.subdir(&user(), ctx.dir, "d", 0o755).await?;
    let f = ctx.file(&user(), ctx.dir, "a", 0o644).await?;
    ctx.rename(&user(), ctx.dir, "a", d, "b").await.ctx("rename")?;
    let a = ctx.attr(f).await?;
    ensure_eq!((a.nlink, a.node), (1, Some(f)), "the handle keeps working after a move");
    Ok(())
}

async fn file_over_file_frees_target(ctx: &Ctx) -> Result<(), String> {
    let a = ctx.file(&user(), ctx.dir, "a", 0o644).await?;
    let b = ctx.file(&user(), ctx.dir, "b", 0o644).await?;
    ctx.commit(&user(), b, 0, 10, vec![ext(0, 10, 2)]).await.ctx("commit b")?;
    ctx.rename(&user(), ctx.dir, "a", ctx.dir, "b").await.ctx("rename a over b")?;
    ensure_eq!(ctx.lookup(&user(), ctx.dir, "b").await.ctx("lookup b")?.node, Some(a));
    expect_err(ctx.lookup(&user(), ctx.dir, "a").await, FsError::NotFound)?;
    expect_err(ctx.getattr(b).await, FsError::Stale).map_err(|e| format!("the replaced file: {e}"))
}

async fn file_over_file_with_other_link_keeps_it(ctx: &Ctx) -> Result<(), String> {
    ctx.file(&user(), ctx.dir, "a", 0o644).await?;
    let b = ctx.file(&user(), ctx.dir, "b", 0o644).await?;
    ctx.link(&user(), b, ctx.dir, "b2").await.ctx("link")?;
    ctx.rename(&user(), ctx.dir, "a", ctx.dir, "b").await.ctx("rename a over b")?;
    ensure_eq!(ctx.attr(b).await?.nlink, 1, "the replaced file lives on under b2");
    ensure_eq!(ctx.lookup(&user(), ctx.dir, "b2").await.ctx("lookup b2")?.node, Some(b));
    Ok(())
}

async fn dir_over_empty_dir(ctx: &Ctx) -> Result<(), String> {
    let a = ctx.subdir(&user(), ctx.dir, "a", 0o755).await?;
    ctx.file(&user(), a, "inside", 0o644).await?;
    let b = ctx.subdir(&user(), ctx.dir, "b", 0o755).await?;
    let before = ctx.attr(ctx.dir).await?.nlink;
    ctx.rename(&user(), ctx.dir, "a", ctx.dir, "b").await.ctx("rename dir over empty dir")?;
    ensure_eq!(ctx.lookup(&user(), ctx.dir, "b").await.ctx("lookup b")?.node, Some(a));
    ctx.lookup(&user(), a, "inside").await.ctx("content moved along")?;
    expect_err(ctx.getattr(b).await, FsError::Stale).map_err(|e| format!("the replaced dir: {e}"))?;
    ensure_eq!(ctx.attr(ctx.dir).await?.nlink, before - 1, "parent lost one subdirectory");
    Ok(())
}

async fn dir_over_non_empty_dir_not_empty(ctx: &Ctx) -> Result<(), String> {
    ctx.subdir(&user(), ctx.dir, "a", 0o755).await?;
    let b = ctx.subdir(&user(), ctx.dir, "b", 0o755).await?;
    ctx.file(&user(), b, "x", 0o644).await?;
    expect_err(ctx.rename(&user(), ctx.dir, "a", ctx.dir, "b").await, FsError::NotEmpty)?;
    ctx.lookup(&user(), ctx.dir, "a").await.ctx("source stays")?;
    ctx.lookup(&user(), b, "x").await.ctx("target content stays")?;
    Ok(())
}

async fn dir_over_file_notdir(ctx: &Ctx) -> Result<(), String> {
    ctx.subdir(&user(), ctx.dir, "a", 0o755).await?;
    ctx.file(&user(), ctx.dir, "f", 0o644).await?;
    expect_err(ctx.rename(&user(), ctx.dir, "a", ctx.dir, "f").await, FsError::NotDir)
}

async fn file_over_dir_is_dir(ctx: &Ctx) -> Result<(), String> {
    ctx.file(&user(), ctx.dir, "f", 0o644).await?;
    ctx.subdir(&user(), ctx.dir, "d", 0o755).await?;
    expect_err(ctx.rename(&user(), ctx.dir, "f", ctx.dir, "d").await, FsError::IsDir)
}

async fn dir_into_own_subtree_invalid(ctx: &Ctx) -> Result<(), String> {
    let a = ctx.subdir(&user(), ctx.dir, "a", 0o755).await?;
    let b = ctx.subdir(&user(), a, "b", 0o755).await?;
    let c = ctx.subdir(&user(), b, "c", 0o755).await?;
    expect_err(ctx.rename(&user(), ctx.dir, "a", c, "a").await, invalid())?;
    ensure_eq!(ctx.lookup(&user(), ctx.dir, "a").await.ctx("a stays")?.node, Some(a));
    Ok(())
}

async fn dir_into_itself_invalid(ctx: &Ctx) -> Result<(), String> {
    let a = ctx.subdir(&user(), ctx.dir, "a", 0o755).await?;
    expect_err(ctx.rename(&user(), ctx.dir, "a", a, "x").await, invalid())
}

async fn same_name_is_a_noop(ctx: &Ctx) -> Result<(), String> {
    let f = ctx.file(&user(), ctx.dir, "f", 0o644).await?;
    ctx.rename(&user(), ctx.dir, "f", ctx.dir, "f").await.ctx("rename onto itself")?;
    ensure_eq!(ctx.lookup(&user(), ctx.dir, "f").await.ctx("lookup")?.node, Some(f));
    ensure_eq!(ctx.attr(f).await?.nlink, 1);
    let d = ctx.subdir(&user(), ctx.dir, "d", 0o755).await?;
    ctx.rename(&user(), ctx.dir, "d", ctx.dir, "d").await.ctx("rename dir onto itself")?;
    ensure_eq!(ctx.attr(d).await?.nlink, 2);
    Ok(())
}

async fn hard_links_of_one_file_noop(ctx: &Ctx) -> Result<(), String> {
    // POSIX: if old and new are links to the same file, rename succeeds and does nothing.
    let f = ctx.file(&user(), ctx.dir, "a", 0o644).await?;
    ctx.link(&user(), f, ctx.dir, "b").await.ctx("link")?;
    ctx.rename(&user(), ctx.dir, "a", ctx.dir, "b").await.ctx("rename between links")?;
    ensure_eq!(
        ctx.names(&user(), ctx.dir).await.ctx("readdir")?,
        vec![b"a".to_vec(), b"b".to_vec()],
        "both names stay"
    );
    ensure_eq!(ctx.attr(f).await?.nlink, 2);
    Ok(())
}

async fn dot_and_dotdot_invalid(ctx: &Ctx) -> Result<(), String> {
    let d = ctx.subdir(&user(), ctx.dir, "d", 0o755).await?;
    ctx.file(&user(), ctx.dir, "f", 0o644).await?;
    expect_err(ctx.rename(&user(), d, ".", ctx.dir, "x").await, invalid())?;
    expect_err(ctx.rename(&user(), d, "..", ctx.dir, "x").await, invalid())?;
    expect_err(ctx.rename(&user(), ctx.dir, "f", d, ".").await, invalid())?;
    expect_err(ctx.rename(&user(), ctx.dir, "f", d, "..").await, invalid())
}

async fn missing_source_not_found(ctx: &Ctx) -> Result<(), String> {
    expect_err(ctx.rename(&user(), ctx.dir, "nothing", ctx.dir, "x").await, FsError::NotFound)?;
    expect_err(ctx.lookup(&user(), ctx.dir, "x").await, FsError::NotFound)
}

async fn cross_directory_dir_move_updates_dotdot_and_nlink(ctx: &Ctx) -> Result<(), String> {
    let d1 = ctx.subdir(&user(), ctx.dir, "d1", 0o755).await?;
    let d2 = ctx.subdir(&user(), ctx.dir, "d2", 0o755).await?;
    let sub = ctx.subdir(&user(), d1, "sub", 0o755).await?;
    ctx.rename(&user(), d1, "sub", d2, "moved").await.ctx("rename")?;
    ensure_eq!(ctx.lookup(&user(), sub, "..").await.ctx("lookup ..")?.node, Some(d2), "'..' follows the move");
    ensure_eq!(ctx.attr(d1).await?.nlink, 2, "old parent nlink");
    ensure_eq!(ctx.attr(d2).await?.nlink, 3, "new parent nlink");
    ensure_eq!(ctx.attr(sub).await?.nlink, 2, "moved dir nlink");
    Ok(())
}

async fn cross_directory_file_move_keeps_nlink(ctx: &Ctx) -> Result<(), String> {
    let d1 = ctx.subdir(&user(), ctx.dir, "d1", 0o755).await?;
    let d2 = ctx.subdir(&user(), ctx.dir, "d2", 0o755).await?;
    let f = ctx.file(&user(), d1, "f", 0o644).await?;
    ctx.rename(&user(), d1, "f", d2, "f").await.ctx("rename")?;
    ensure_eq!((ctx.attr(d1).await?.nlink, ctx.attr(d2).await?.nlink, ctx.attr(f).await?.nlink), (2, 2, 1));
    ensure_eq!(ctx.names(&user(), d1).await.ctx("readdir d1")?.len(), 0);
    Ok(())
}

async fn across_shares_cross_device(ctx: &Ctx) -> Result<(), String> {
    ctx.file(&user(), ctx.dir, "f", 0o644).await?;
    expect_err(ctx.rename(&root(), ctx.dir, "f", ctx.other_root, "f").await, FsError::CrossDevice)?;
    ctx.lookup(&user(), ctx.dir, "f").await.ctx("source stays")?;
    Ok(())
}

async fn into_a_file_notdir(ctx: &Ctx) -> Result<(), String> {
    let f = ctx.file(&user(), ctx.dir, "f", 0o644).await?;
    ctx.file(&user(), ctx.dir, "g", 0o644).await?;
    expect_err(ctx.rename(&user(), ctx.dir, "g", f, "g").await, FsError::NotDir)
}

async fn target_name_too_long(ctx: &Ctx) -> Result<(), String> {
    ctx.file(&user(), ctx.dir, "f", 0o644).await?;
    expect_err(ctx.rename(&user(), ctx.dir, "f", ctx.dir, "n".repeat(256)).await, FsError::NameTooLong)
}

async fn wcc_of_both_directories(ctx: &Ctx) -> Result<(), String> {
    let d1 = ctx.subdir(&user(), ctx.dir, "d1", 0o755).await?;
    let d2 = ctx.subdir(&user(), ctx.dir, "d2", 0o755).await?;
    ctx.file(&user(), d1, "f", 0o644).await?;
    let (b1, b2) = (ctx.attr(d1).await?, ctx.attr(d2).await?);
    let r = ctx.rename(&user(), d1, "f", d2, "f").await.ctx("rename")?;
    let (w1, w2) = (r.from_dir.ctx("from wcc")?, r.to_dir.ctx("to wcc")?);
    ensure_eq!((w1.before, w2.before), (Some(b1), Some(b2)), "wcc before");
    let (a1, a2) = (w1.after.ctx("from after")?, w2.after.ctx("to after")?);
    ensure!(a1.change > b1.change && a2.change > b2.change, "a directory's change did not move");
    ensure_eq!((ctx.attr(d1).await?, ctx.attr(d2).await?), (a1, a2), "wcc after == getattr");
    Ok(())
}

async fn readdir_lists_new_name_once(ctx: &Ctx) -> Result<(), String> {
    for n in ["a", "b", "c"] {
        ctx.file(&user(), ctx.dir, n, 0o644).await?;
    }
    ctx.rename(&user(), ctx.dir, "a", ctx.dir, "z").await.ctx("rename")?;
    ensure_eq!(ctx.names(&user(), ctx.dir).await.ctx("readdir")?, vec![b"b".to_vec(), b"c".to_vec(), b"z".to_vec()]);
    Ok(())
}

async fn replacing_target_is_atomic(ctx: &Ctx) -> Result<(), String> {
    // While files are renamed over "t" one after another, every lookup of "t" finds a file.
    ctx.file(&user(), ctx.dir, "t", 0o644).await?;
    let done = std::sync::atomic::AtomicBool::new(false);
    let writer = async {
        let r: Result<(), String> = async {
            for i in 0..15 {
                let n = format!("s{i}");
                ctx.file(&user(), ctx.dir, &n, 0o644).await?;
                ctx.rename(&user(), ctx.dir, &n, ctx.dir, "t").await.ctx("rename over t")?;
            }
            Ok(())
        }
        .await;
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        r
    };
    let reader = async {
        let mut seen = 0;
        while !done.load(std::sync::atomic::Ordering::SeqCst) {
            ctx.lookup(&user(), ctx.dir, "t").await.ctx("lookup t during renames")?;
            seen += 1;
        }
        Ok::<_, String>(seen)
    };
    let (w, r) = futures::join!(writer, reader);
    w?;
    r?;
    ensure_eq!(ctx.names(&user(), ctx.dir).await.ctx("readdir")?, vec![b"t".to_vec()], "only t is left");
    Ok(())
}

async fn rename_needs_write_on_both_dirs(ctx: &Ctx) -> Result<(), String> {
    let ro = ctx.user_dir("ro", 0o755).await?;
    let rw = ctx.subdir(&other(), ctx.dir, "rw", 0o777).await?;
    ctx.file(&other(), rw, "f", 0o644).await?;
    ctx.file(&user(), ro, "g", 0o644).await?;
    expect_err(ctx.rename(&other(), rw, "f", ro, "f").await, FsError::Access).map_err(|e| format!("into ro: {e}"))?;
    expect_err(ctx.rename(&other(), ro, "g", rw, "g").await, FsError::Access).map_err(|e| format!("out of ro: {e}"))
}
