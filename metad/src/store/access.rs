//! Typed reads and writes of single records, shared by apply, queries and snapshots.
//!
//! Owns: turning table rows into model values and back (through `model`'s codecs).
//! Must never: decide what a row means for the filesystem, or begin/commit transactions.

use redb::{ReadableTable, Table};

use crate::error::Result;
use crate::model::{self, Extent, Inode, ShareRec};

pub fn get_inode(t: &impl ReadableTable<u64, &'static [u8]>, ino: u64) -> Result<Option<Inode>> {
    match t.get(ino)? {
        Some(v) => Ok(Some(model::decode_json("inode", v.value())?)),
        None => Ok(None),
    }
}

pub fn put_inode(t: &mut Table<'_, u64, &'static [u8]>, ino: u64, inode: &Inode) -> Result<()> {
    let bytes = model::encode_json("inode", inode)?;
    t.insert(ino, bytes.as_slice())?;
    Ok(())
}

pub fn get_share(t: &impl ReadableTable<u64, &'static [u8]>, share_id: u64) -> Result<Option<ShareRec>> {
    match t.get(share_id)? {
        Some(v) => Ok(Some(model::decode_json("share", v.value())?)),
        None => Ok(None),
    }
}

pub fn put_share(t: &mut Table<'_, u64, &'static [u8]>, share_id: u64, share: &ShareRec) -> Result<()> {
    let bytes = model::encode_json("share", share)?;
    t.insert(share_id, bytes.as_slice())?;
    Ok(())
}

/// Reads a JSON value from a `&str -> bytes` table.
pub fn get_json<T: for<'de> serde::Deserialize<'de>>(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
    what: &'static str,
) -> Result<Option<T>> {
    match t.get(key)? {
        Some(v) => Ok(Some(model::decode_json(what, v.value())?)),
        None => Ok(None),
    }
}

/// Writes a JSON value into a `&str -> bytes` table.
pub fn put_json<T: serde::Serialize>(
    t: &mut Table<'_, &'static str, &'static [u8]>,
    key: &str,
    what: &'static str,
    value: &T,
) -> Result<()> {
    let bytes = model::encode_json(what, value)?;
    t.insert(key, bytes.as_slice())?;
    Ok(())
}

/// The extents of `ino` that overlap `[start, end)`, ascending, unclipped.
pub fn overlapping_extents(
    t: &impl ReadableTable<(u64, u64), &'static [u8]>,
    ino: u64,
    start: u64,
    end: u64,
) -> Result<Vec<Extent>> {
    let mut out = Vec::new();
    if start >= end {
        return Ok(out);
    }
    if start > 0 {
        // Stored extents never overlap, so only the last one starting before `start` can
        // reach into the range.
        if let Some(row) = t.range((ino, 0)..(ino, start))?.next_back() {
            let (k, v) = row?;
            let e = model::decode_extent_value(k.value().1, v.value())?;
            if e.end() > start {
                out.push(e);
            }
        }
    }
    for row in t.range((ino, start)..(ino, end))? {
        let (k, v) = row?;
        out.push(model::decode_extent_value(k.value().1, v.value())?);
    }
    Ok(out)
}
