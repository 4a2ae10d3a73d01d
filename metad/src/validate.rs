//! Checks on hostile input: names, extent lists, sizes and limits.
//!
//! Owns: every limit metad enforces on what clients send, as named constants, and the checks
//! that enforce them. They are pure and deterministic, so the gRPC layer runs them before
//! proposing (keeping junk out of the log) and apply runs them again (a log entry is input too).
//! Must never: allocate based on a client-supplied count before checking it against a limit.

use crate::command::ApplyError;
use crate::model::Extent;

/// Longest name component, in bytes.
pub const MAX_NAME_LEN: usize = 255;
/// Most extents one CommitExtents may carry.
pub const MAX_EXTENTS_PER_COMMIT: usize = 65_536;
/// Most entries one ReadDir returns.
pub const MAX_READDIR_ENTRIES: u32 = 4096;
/// Largest file size / offset metad accepts (fits an NFS/SMB signed 64-bit offset).
pub const MAX_FILE_SIZE: u64 = i64::MAX as u64;
/// Longest share name / export path.
pub const MAX_SHARE_PATH_LEN: usize = 1024;
/// Most supplementary groups a credential may carry (AUTH_SYS allows 16).
pub const MAX_GROUPS: usize = 16;
/// Longest symlink target, in bytes.
pub const MAX_SYMLINK_LEN: usize = 4096;
/// Most hard links one inode may have (Link beyond it is `TooManyLinks`).
pub const MAX_LINKS: u32 = 65_000;
/// Longest block daemon address a heartbeat may carry.
pub const MAX_DAEMON_ADDR_LEN: usize = 255;
/// Most pack locations one RecordPacks call (one Raft command) may record.
pub const MAX_PACKS_PER_RECORD: usize = 65_536;
/// Longest pack object key.
pub const MAX_PACK_KEY_LEN: usize = 1024;
/// Most hashes one LocateChunks call may ask for.
pub const MAX_LOCATE_HASHES: usize = 4096;
/// Highest replication factor a share may ask for.
pub const MAX_REPLICATION_FACTOR: u32 = 16;
/// The permission bits a mode may carry (setuid, setgid, sticky, rwx x 3).
pub const MODE_MASK: u32 = 0o7777;

/// A mode is permission bits only: anything above 07777 is refused.
pub fn check_mode(mode: u32) -> Result<(), ApplyError> {
    if mode & !MODE_MASK != 0 {
        return Err(ApplyError::Invalid(format!("mode {mode:#o} has bits outside 07777")));
    }
    Ok(())
}

/// A heartbeat: a non-zero daemon id and an address of at most 255 bytes that parses as a
/// socket address.
pub fn check_heartbeat(id: u64, addr: &str) -> Result<(), ApplyError> {
    if id == 0 {
        return Err(ApplyError::Invalid("block daemon id 0".into()));
    }
    if addr.len() > MAX_DAEMON_ADDR_LEN {
        return Err(ApplyError::Invalid(format!(
            "daemon address of {} bytes, at most {MAX_DAEMON_ADDR_LEN}",
            addr.len()
        )));
    }
    if addr.parse::<std::net::SocketAddr>().is_err() {
        return Err(ApplyError::Invalid(format!("daemon address {addr:?} is not a socket address")));
    }
    Ok(())
}

/// One pack location: a key of 1..=1024 bytes and a non-empty byte range that does not
/// overflow. (The hash length is checked where the bytes become a `[u8; 32]`.)
pub fn check_pack_location(loc: &crate::model::PackLoc) -> Result<(), ApplyError> {
    if loc.pack.is_empty() || loc.pack.len() > MAX_PACK_KEY_LEN {
        return Err(ApplyError::Invalid(format!(
            "pack key of {} bytes, expected 1..={MAX_PACK_KEY_LEN}",
            loc.pack.len()
        )));
    }
    if loc.length == 0 {
        return Err(ApplyError::Invalid("pack location of length 0".into()));
    }
    if loc.offset.checked_add(u64::from(loc.length)).is_none() {
        return Err(ApplyError::Invalid("pack location range overflows".into()));
    }
    Ok(())
}

/// A RecordPacks batch: at most [`MAX_PACKS_PER_RECORD`] valid locations.
pub fn check_pack_locations(locs: &[crate::model::PackLoc]) -> Result<(), ApplyError> {
    if locs.len() > MAX_PACKS_PER_RECORD {
        return Err(ApplyError::Invalid(format!("{} pack locations, at most {MAX_PACKS_PER_RECORD}", locs.len())));
    }
    locs.iter().try_for_each(check_pack_location)
}

/// A share's replication factor: 0 (the cluster default) up to [`MAX_REPLICATION_FACTOR`].
pub fn check_replication_factor(rf: u32) -> Result<(), ApplyError> {
    if rf > MAX_REPLICATION_FACTOR {
        return Err(ApplyError::Invalid(format!("replication factor {rf}, at most {MAX_REPLICATION_FACTOR}")));
    }
    Ok(())
}

/// Share option changes: a replication factor within the maximum and allowed-client
/// entries in `proto::export` syntax (at most `proto::export::MAX_CLIENT_ENTRIES`).
pub fn check_share_changes(c: &crate::command::ShareChanges) -> Result<(), ApplyError> {
    if let Some(rf) = c.replication_factor {
        check_replication_factor(rf)?;
    }
    if let Some(list) = &c.allowed_clients {
        proto::export::check_client_list(list).map_err(ApplyError::Invalid)?;
    }
    Ok(())
}

/// A symlink target: 1..=4096 bytes, no NUL.
pub fn check_symlink_target(target: &[u8]) -> Result<(), ApplyError> {
    if target.is_empty() {
        return Err(ApplyError::Invalid("empty symlink target".into()));
    }
    if target.len() > MAX_SYMLINK_LEN {
        return Err(ApplyError::NameTooLong);
    }
    if target.contains(&0) {
        return Err(ApplyError::Invalid("symlink target contains NUL".into()));
    }
    Ok(())
}

/// A name that may be created or removed: non-empty, at most 255 bytes, no '/' or NUL, and not
/// "." or "..".
pub fn check_name(name: &[u8]) -> Result<(), ApplyError> {
    if name.is_empty() {
        return Err(ApplyError::Invalid("empty name".into()));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(ApplyError::NameTooLong);
    }
    if name.contains(&b'/') || name.contains(&0) {
        return Err(ApplyError::Invalid("name contains '/' or NUL".into()));
    }
    if name == b"." || name == b".." {
        return Err(ApplyError::Invalid("name is '.' or '..'".into()));
    }
    Ok(())
}

/// A name that may be looked up: like [`check_name`] but "." and ".." are allowed.
pub fn check_lookup_name(name: &[u8]) -> Result<(), ApplyError> {
    if name == b"." || name == b".." {
        return Ok(());
    }
    check_name(name)
}

/// Checks a commit: `start <= end <= MAX_FILE_SIZE`, at most [`MAX_EXTENTS_PER_COMMIT`]
/// extents, each non-empty, inside the range, inside its chunk, and (sorted by offset, which
/// the caller must have done) not overlapping.
pub fn check_commit(start: u64, end: u64, extents: &[Extent]) -> Result<(), ApplyError> {
    if start > end {
        return Err(ApplyError::Invalid(format!("range start {start} is after its end {end}")));
    }
    if end > MAX_FILE_SIZE {
        return Err(ApplyError::TooBig);
    }
    if extents.len() > MAX_EXTENTS_PER_COMMIT {
        return Err(ApplyError::Invalid(format!("{} extents, at most {MAX_EXTENTS_PER_COMMIT}", extents.len())));
    }
    let mut prev_end = start;
    for e in extents {
        if e.length == 0 {
            return Err(ApplyError::Invalid(format!("empty extent at {}", e.offset)));
        }
        let Some(e_end) = e.offset.checked_add(e.length) else {
            return Err(ApplyError::Invalid(format!("extent at {} overflows", e.offset)));
        };
        if e.offset < start || e_end > end {
            return Err(ApplyError::Invalid(format!("extent [{}, {e_end}) outside [{start}, {end})", e.offset)));
        }
        // `prev_end` starts at `start`, so this only fires against a previous extent.
        if e.offset < prev_end {
            return Err(ApplyError::Invalid(format!("extent at {} overlaps the previous one", e.offset)));
        }
        match e.chunk_offset.checked_add(e.length) {
            Some(c_end) if c_end <= e.chunk_length => {}
            _ => {
                return Err(ApplyError::Invalid(format!(
                    "extent at {} reads past its chunk ({} + {} > {})",
                    e.offset, e.chunk_offset, e.length, e.chunk_length
                )));
            }
        }
        prev_end = e_end;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(check_name(b"a"), Ok(()));
        assert_eq!(check_name(&[b'x'; 255]), Ok(()));
        assert_eq!(check_name(&[b'x'; 256]), Err(ApplyError::NameTooLong));
        for bad in [&b""[..], b".", b"..", b"a/b", b"a\0b"] {
            assert!(matches!(check_name(bad), Err(ApplyError::Invalid(_))), "{bad:?}");
        }
        assert_eq!(check_lookup_name(b".."), Ok(()));
        assert!(check_lookup_name(b"a/b").is_err());
    }

    #[test]
    fn modes_and_targets() {
        assert_eq!(check_mode(0o7777), Ok(()));
        assert!(matches!(check_mode(0o10000), Err(ApplyError::Invalid(_))));
        assert_eq!(check_symlink_target(&[b'a'; MAX_SYMLINK_LEN]), Ok(()));
        assert_eq!(check_symlink_target(&[b'a'; MAX_SYMLINK_LEN + 1]), Err(ApplyError::NameTooLong));
        assert!(matches!(check_symlink_target(b""), Err(ApplyError::Invalid(_))));
        assert!(matches!(check_symlink_target(b"a\0b"), Err(ApplyError::Invalid(_))));
    }

    fn ext(offset: u64, length: u64) -> Extent {
        Extent { offset, length, hash: [1; 32], chunk_offset: 0, chunk_length: length }
    }

    #[test]
    fn commits() {
        assert_eq!(check_commit(0, 20, &[ext(0, 10), ext(10, 10)]), Ok(()));
        assert_eq!(check_commit(5, 5, &[]), Ok(()));
        assert!(check_commit(0, 20, &[ext(0, 10), ext(5, 10)]).is_err(), "overlap");
        assert!(check_commit(0, 20, &[ext(0, 10), ext(0, 10)]).is_err(), "duplicate");
        assert!(check_commit(10, 20, &[ext(0, 10)]).is_err(), "before the range");
        assert!(check_commit(0, 10, &[ext(5, 10)]).is_err(), "after the range");
        assert!(check_commit(0, 10, &[ext(0, 0)]).is_err(), "empty");
        assert!(check_commit(20, 10, &[]).is_err(), "inverted");
        assert_eq!(check_commit(0, u64::MAX, &[]), Err(ApplyError::TooBig));
        let past_chunk = Extent { chunk_offset: 5, ..ext(0, 10) };
        assert!(check_commit(0, 10, &[past_chunk]).is_err(), "past the chunk");
        let huge = Extent { chunk_offset: u64::MAX, ..ext(0, 10) };
        assert!(check_commit(0, 10, &[huge]).is_err(), "chunk overflow");
    }
}
