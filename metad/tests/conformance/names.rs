//! Names: what may be created (non-empty, at most 255 bytes, no '/' or NUL, not "." or "..";
//! any other bytes, UTF-8 or not), what may be looked up ("." and ".." too), and how each
//! refusal is reported.

use proto::FsError;

use super::harness::*;

pub fn cases() -> Vec<Case> {
    cases![
        empty_name_invalid,
        slash_in_name_invalid,
        nul_in_name_invalid,
        name_of_255_bytes_ok,
        name_of_256_bytes_too_long,
        create_dot_invalid,
        create_dotdot_invalid,
        mkdir_dot_and_dotdot_invalid,
        lookup_dot_is_the_directory,
        lookup_dotdot_is_the_parent,
        lookup_dotdot_of_share_root_is_root,
        unicode_names_round_trip,
        binary_names_round_trip,
        names_are_case_sensitive,
        lookup_missing_not_found,
        lookup_in_a_file_is_notdir,
        lookup_empty_or_long_name_refused,
        remove_dot_and_dotdot_invalid,
    ]
}

async fn empty_name_invalid(ctx: &Ctx) -> Result<(), String> {
    expect_err(ctx.create(&user(), ctx.dir, "", 0o644).await, invalid())
}

async fn slash_in_name_invalid(ctx: &Ctx) -> Result<(), String> {
    expect_err(ctx.create(&user(), ctx.dir, "a/b", 0o644).await, invalid())?;
    expect_err(ctx.create(&user(), ctx.dir, "/", 0o644).await, invalid())
}

async fn nul_in_name_invalid(ctx: &Ctx) -> Result<(), String> {
    expect_err(ctx.create(&user(), ctx.dir, b"a\0b", 0o644).await, invalid())
}

async fn name_of_255_bytes_ok(ctx: &Ctx) -> Result<(), String> {
    let name = "n".repeat(255);
    ctx.create(&user(), ctx.dir, &name, 0o644).await.ctx("create 255")?;
    ctx.lookup(&user(), ctx.dir, &name).await.ctx("lookup 255")?;
    Ok(())
}

async fn name_of_256_bytes_too_long(ctx: &Ctx) -> Result<(), String> {
    expect_err(ctx.create(&user(), ctx.dir, "n".repeat(256), 0o644).await, FsError::NameTooLong)?;
    expect_err(ctx.mkdir(&user(), ctx.dir, "n".repeat(256), 0o755).await, FsError::NameTooLong)
}

async fn create_dot_invalid(ctx: &Ctx) -> Result<(), String> {
    expect_err(ctx.create(&user(), ctx.dir, ".", 0o644).await, invalid())
}

async fn create_dotdot_invalid(ctx: &Ctx) -> Result<(), String> {
    expect_err(ctx.create(&user(), ctx.dir, "..", 0o644).await, invalid())
}

async fn mkdir_dot_and_dotdot_invalid(ctx: &Ctx) -> Result<(), String> {
    expect_err(ctx.mkdir(&user(), ctx.dir, ".", 0o755).await, invalid())?;
    expect_err(ctx.mkdir(&user(), ctx.dir, "..", 0o755).await, invalid())
}

async fn lookup_dot_is_the_directory(ctx: &Ctx) -> Result<(), String> {
    let d = ctx.subdir(&user(), ctx.dir, "d", 0o755).await?;
    ensure_eq!(ctx.lookup(&user(), d, ".").await.ctx("lookup .")?.node, Some(d));
    Ok(())
}

async fn lookup_dotdot_is_the_parent(ctx: &Ctx) -> Result<(), String> {
    let d = ctx.subdir(&user(), ctx.dir, "d", 0o755).await?;
    let e = ctx.subdir(&user(), d, "e", 0o755).await?;
    ensure_eq!(ctx.lookup(&user(), e, "..").await.ctx("lookup e/..")?.node, Some(d));
    ensure_eq!(ctx.lookup(&user(), d, "..").await.ctx("lookup d/..")?.node, Some(ctx.dir));
    Ok(())
}

async fn lookup_dotdot_of_share_root_is_root(ctx: &Ctx) -> Result<(), String> {
    ensure_eq!(ctx.lookup(&user(), ctx.root, "..").await.ctx("lookup /..")?.node, Some(ctx.root));
    Ok(())
}

async fn unicode_names_round_trip(ctx: &Ctx) -> Result<(), String> {
    let names = ["héllo wörld", "日本語のファイル", "emoji 🦀", " leading and trailing ", "-rf", "*?[]"];
    for n in names {
        ctx.create(&user(), ctx.dir, n, 0o644).await.ctx(n)?;
        ctx.lookup(&user(), ctx.dir, n).await.ctx(n)?;
    }
    let mut want: Vec<Vec<u8>> = names.iter().map(|n| n.as_bytes().to_vec()).collect();
    want.sort();
    ensure_eq!(ctx.names(&user(), ctx.dir).await.ctx("readdir")?, want);
    Ok(())
}

async fn binary_names_round_trip(ctx: &Ctx) -> Result<(), String> {
    let name: &[u8] = b"\xff\xfe\x01bin\x7f";
    ctx.create(&user(), ctx.dir, name, 0o644).await.ctx("create non-UTF-8")?;
    ctx.lookup(&user(), ctx.dir, name).await.ctx("lookup non-UTF-8")?;
    ensure_eq!(ctx.names(&user(), ctx.dir).await.ctx("readdir")?, vec![name.to_vec()]);
    Ok(())
}

async fn names_are_case_sensitive(ctx: &Ctx) -> Result<(), String> {
    let a = ctx.file(&user(), ctx.dir, "Name", 0o644).await?;
    let b = ctx.file(&user(), ctx.dir, "name", 0o644).await.map_err(|e| format!("\"name\" next to \"Name\": {e}"))?;
    ensure!(a.ino != b.ino, "same inode for Name and name");
    Ok(())
}

async fn lookup_missing_not_found(ctx: &Ctx) -> Result<(), String> {
    expect_err(ctx.lookup(&user(), ctx.dir, "nothing").await, FsError::NotFound)
}

async fn lookup_in_a_file_is_notdir(ctx: &Ctx) -> Result<(), String> {
    let f = ctx.file(&user(), ctx.dir, "f", 0o644).await?;
    expect_err(ctx.lookup(&user(), f, "x").await, FsError::NotDir)
}

async fn lookup_empty_or_long_name_refused(ctx: &Ctx) -> Result<(), String> {
    expect_err(ctx.lookup(&user(), ctx.dir, "").await, invalid())?;
    expect_err(ctx.lookup(&user(), ctx.dir, "n".repeat(256)).await, FsError::NameTooLong)
}

async fn remove_dot_and_dotdot_invalid(ctx: &Ctx) -> Result<(), String> {
    expect_err(ctx.remove(&user(), ctx.dir, ".").await, invalid())?;
    expect_err(ctx.remove(&user(), ctx.dir, "..").await, invalid())
}
