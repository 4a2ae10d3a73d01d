//! Permission checks (POSIX): search (x) to look up, read (r) to list, write+search (w+x) to
//! create/remove/rename in a directory; the owner class, then the group class (primary or
//! supplementary groups), then other — the first class that matches decides, even when it
//! grants less; root bypasses read/write checks; sticky directories (only the entry's or the
//! directory's owner may remove or rename an entry: EPERM -> `Perm`); setgid directories (new
//! entries take the directory's group, new subdirectories keep the setgid bit).

use proto::FsError;

use super::harness::*;

pub fn cases() -> Vec<Case> {
    cases![
        lookup_needs_search,
        lookup_dot_dot_needs_search_too,
        readdir_needs_read,
        create_needs_write,
        create_needs_search,
        remove_needs_write,
        rmdir_needs_write,
        mkdir_needs_write,
        supplementary_group_grants_group_bits,
        primary_group_grants_group_bits,
        owner_class_decides_even_if_it_grants_less,
        group_class_decides_before_other,
        other_bits_apply_to_strangers,
        root_bypasses_read_write,
        sticky_dir_stranger_cannot_remove,
        sticky_dir_stranger_cannot_rename_away,
        sticky_dir_stranger_cannot_replace,
        sticky_dir_entry_owner_can_remove,
        sticky_dir_dir_owner_can_remove,
        setgid_dir_new_file_gets_dir_group,
        setgid_dir_new_subdir_inherits_setgid,
        plain_dir_new_file_gets_caller_group,
        get_extents_needs_read,
        deep_path_needs_search_on_each,
    ]
}

async fn lookup_needs_search(ctx: &Ctx) -> Result<(), String> {
    let d = ctx.user_dir("d", 0o700).await?;
    ctx.file(&user(), d, "f", 0o644).await?;
    ctx.chmod(&user(), d, 0o600).await.ctx("chmod a-x")?;
    expect_err(ctx.lookup(&user(), d, "f").await, FsError::Access)?;
    ctx.lookup(&root(), d, "f").await.ctx("root looks up")?;
    Ok(())
}

async fn lookup_dot_dot_needs_search_too(ctx: &Ctx) -> Result<(), String> {
    let d = ctx.user_dir("d", 0o700).await?;
    expect_err(ctx.lookup(&other(), d, "..").await, FsError::Access)
}

async fn readdir_needs_read(ctx: &Ctx) -> Result<(), String> {
    let d = ctx.user_dir("d", 0o311).await?;
    expect_err(ctx.readdir(&user(), d, 0, 0, 10).await, FsError::Access)?;
    expect_err(ctx.readdir(&other(), d, 0, 0, 10).await, FsError::Access)?;
    ctx.readdir(&root(), d, 0, 0, 10).await.ctx("root lists")?;
    ctx.chmod(&user(), d, 0o755).await.ctx("chmod")?;
    ctx.readdir(&other(), d, 0, 0, 10).await.ctx("other lists with o+r")?;
    Ok(())
}

async fn create_needs_write(ctx: &Ctx) -> Result<(), String> {
    let d = ctx.user_dir("d", 0o555).await?;
    expect_err(ctx.create(&user(), d, "f", 0o644).await, FsError::Access)?;
    expect_err(ctx.lookup(&user(), d, "f").await, FsError::NotFound)
}

async fn create_needs_search(ctx: &Ctx) -> Result<(), String> {
    let d = ctx.user_dir("d", 0o666).await?;
    expect_err(ctx.create(&user(), d, "f", 0o644).await, FsError::Access)
}

async fn remove_needs_write(ctx: &Ctx) -> Result<(), String> {
    let d = ctx.user_dir("d", 0o755).await?;
    ctx.file(&user(), d, "f", 0o666).await?;
    expect_err(ctx.remove(&other(), d, "f").await, FsError::Access)?;
    ctx.lookup(&user(), d, "f").await.ctx("file stays")?;
    Ok(())
}

async fn rmdir_needs_write(ctx: &Ctx) -> Result<(), String> {
    let d = ctx.user_dir("d", 0o755).await?;
    ctx.subdir(&user(), d, "s", 0o777).await?;
    expect_err(ctx.rmdir(&other(), d, "s").await, FsError::Access)
}

async fn mkdir_needs_write(ctx: &Ctx) -> Result<(), String> {
    let d = ctx.user_dir("d", 0o755).await?;
    expect_err(ctx.mkdir(&other(), d, "s", 0o755).await, FsError::Access)?;
    ctx.mkdir(&user(), d, "s", 0o755).await.ctx("owner mkdir")?;
    Ok(())
}

async fn supplementary_group_grants_group_bits(ctx: &Ctx) -> Result<(), String> {
    let d = ctx.subdir(&root(), ctx.dir, "d", 0o770).await?;
    ctx.chown(&root(), d, Some(0), Some(SUPP_GID)).await.ctx("chgrp")?;
    ctx.create(&user(), d, "f", 0o644).await.ctx("create via supplementary group")?;
    expect_err(ctx.create(&other(), d, "g", 0o644).await, FsError::Access)
}

async fn primary_group_grants_group_bits(ctx: &Ctx) -> Result<(), String> {
    let d = ctx.subdir(&root(), ctx.dir, "d", 0o070).await?;
    ctx.chown(&root(), d, Some(0), Some(USER_GID)).await.ctx("chgrp")?;
    ctx.chmod(&root(), d, 0o070).await.ctx("chmod")?;
    ctx.create(&user(), d, "f", 0o644).await.ctx("create via primary group")?;
    Ok(())
}

async fn owner_class_decides_even_if_it_grants_less(ctx: &Ctx) -> Result<(), String> {
    let d = ctx.user_dir("d", 0o077).await?;
    expect_err(ctx.create(&user(), d, "f", 0o644).await, FsError::Access)?;
    ctx.create(&other(), d, "g", 0o644).await.ctx("others may")?;
    Ok(())
}

async fn group_class_decides_before_other(ctx: &Ctx) -> Result<(), String> {
    let d = ctx.subdir(&root(), ctx.dir, "d", 0o707).await?;
    ctx.chown(&root(), d, Some(OTHER_UID), Some(SUPP_GID)).await.ctx("chown")?;
    ctx.chmod(&root(), d, 0o707).await.ctx("chmod")?;
    expect_err(ctx.create(&user(), d, "f", 0o644).await, FsError::Access)
}

async fn other_bits_apply_to_strangers(ctx: &Ctx) -> Result<(), String> {
    let d = ctx.user_dir("d", 0o703).await?;
    ctx.create(&other(), d, "f", 0o644).await.ctx("other with o+wx")?;
    expect_err(ctx.readdir(&other(), d, 0, 0, 10).await, FsError::Access)
}

async fn root_bypasses_read_write(ctx: &Ctx) -> Result<(), String> {
    let d = ctx.user_dir("d", 0o000).await?;
    ctx.create(&root(), d, "f", 0o000).await.ctx("root creates in a 000 dir")?;
    ctx.lookup(&root(), d, "f").await.ctx("root looks up")?;
    ctx.readdir(&root(), d, 0, 0, 10).await.ctx("root lists")?;
    ctx.remove(&root(), d, "f").await.ctx("root removes")?;
    Ok(())
}

/// A root-owned sticky, world-writable directory with a file "f" owned by `user()`.
async fn sticky(ctx: &Ctx) -> Result<proto::pb::NodeRef, String> {
    let d = ctx.subdir(&root(), ctx.dir, "tmp", 0o1777).await?;
    ctx.chmod(&root(), d, 0o1777).await.ctx("chmod +t")?;
    ctx.file(&user(), d, "f", 0o666).await?;
    Ok(d)
}

async fn sticky_dir_stranger_cannot_remove(ctx: &Ctx) -> Result<(), String> {
    let d = sticky(ctx).await?;
    expect_err(ctx.remove(&other(), d, "f").await, FsError::Perm)?;
    ctx.lookup(&user(), d, "f").await.ctx("file stays")?;
    Ok(())
}

async fn sticky_dir_stranger_cannot_rename_away(ctx: &Ctx) -> Result<(), String> {
    let d = sticky(ctx).await?;
    expect_err(ctx.rename(&other(), d, "f", d, "g").await, FsError::Perm)
}

async fn sticky_dir_stranger_cannot_replace(ctx: &Ctx) -> Result<(), String> {
    let d = sticky(ctx).await?;
    ctx.file(&other(), d, "mine", 0o644).await?;
    expect_err(ctx.rename(&other(), d, "mine", d, "f").await, FsError::Perm)
}

async fn sticky_dir_entry_owner_can_remove(ctx: &Ctx) -> Result<(), String> {
    let d = sticky(ctx).await?;
    ctx.remove(&user(), d, "f").await.ctx("entry owner removes").map(|_| ())
}

async fn sticky_dir_dir_owner_can_remove(ctx: &Ctx) -> Result<(), String> {
    let d = ctx.user_dir("tmp", 0o1777).await?;
    ctx.file(&other(), d, "f", 0o644).await?;
    ctx.remove(&user(), d, "f").await.ctx("directory owner removes").map(|_| ())
}

async fn setgid_dir_new_file_gets_dir_group(ctx: &Ctx) -> Result<(), String> {
    let d = ctx.subdir(&root(), ctx.dir, "d", 0o2777).await?;
    ctx.chown(&root(), d, None, Some(FOREIGN_GID)).await.ctx("chgrp")?;
    ctx.chmod(&root(), d, 0o2777).await.ctx("chmod g+s")?;
    let f = ctx.create(&user(), d, "f", 0o644).await.ctx("create")?;
    ensure_eq!((f.uid, f.gid), (USER_UID, FOREIGN_GID));
    Ok(())
}

async fn setgid_dir_new_subdir_inherits_setgid(ctx: &Ctx) -> Result<(), String> {
    let d = ctx.subdir(&root(), ctx.dir, "d", 0o2777).await?;
    ctx.chown(&root(), d, None, Some(FOREIGN_GID)).await.ctx("chgrp")?;
    ctx.chmod(&root(), d, 0o2777).await.ctx("chmod g+s")?;
    let s = ctx.mkdir(&user(), d, "s", 0o755).await.ctx("mkdir")?;
    ensure_eq!((s.gid, s.mode & 0o2000), (FOREIGN_GID, 0o2000), "(gid, setgid bit)");
    Ok(())
}

async fn plain_dir_new_file_gets_caller_group(ctx: &Ctx) -> Result<(), String> {
    let d = ctx.subdir(&root(), ctx.dir, "d", 0o777).await?;
    ctx.chown(&root(), d, None, Some(FOREIGN_GID)).await.ctx("chgrp")?;
    let f = ctx.create(&user(), d, "f", 0o644).await.ctx("create")?;
    ensure_eq!(f.gid, USER_GID, "no setgid: the caller's primary group");
    Ok(())
}

async fn get_extents_needs_read(ctx: &Ctx) -> Result<(), String> {
    let f = ctx.file(&user(), ctx.dir, "f", 0o600).await?;
    ctx.commit(&user(), f, 0, 10, vec![ext(0, 10, 1)]).await.ctx("commit")?;
    expect_err(ctx.extents(&other(), f, 0, 10).await, FsError::Access)?;
    ctx.extents(&root(), f, 0, 10).await.ctx("root reads")?;
    Ok(())
}

async fn deep_path_needs_search_on_each(ctx: &Ctx) -> Result<(), String> {
    let a = ctx.user_dir("a", 0o755).await?;
    let b = ctx.subdir(&user(), a, "b", 0o700).await?;
    ctx.file(&user(), b, "f", 0o644).await?;
    ctx.lookup(&other(), a, "b").await.ctx("o+x on a")?;
    expect_err(ctx.lookup(&other(), b, "f").await, FsError::Access)
}
