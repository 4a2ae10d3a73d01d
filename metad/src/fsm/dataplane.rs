//! The data plane's bookkeeping in the state machine: the block daemon registry, the S3 pack
//! location of each chunk, and each share's replication factor.
//!
//! Owns: applying `Heartbeat` (upsert of the daemon's row with the proposer's time),
//! `RecordPacks` (hash -> pack range, a later location replacing an earlier one) and
//! `SetShareReplication`, and the queries over those tables (the daemon list, locating chunks).
//! Must never: read a clock (liveness is computed by the caller, against its own clock, from
//! the stamped heartbeat time), forget a silent daemon's row, or know gRPC.

use redb::ReadableTable;

use super::apply::{R, WriteTables};
use super::query::ReadTables;
use crate::command::{ApplyError, Reply};
use crate::error::{MetadError, Result};
use crate::model::{self, DaemonRec, HASH_LEN, PackLoc};
use crate::store::access;
use crate::validate;

impl WriteTables<'_> {
    /// Registers or refreshes a block daemon.
    pub(super) fn heartbeat(&mut self, id: u64, daemon: &DaemonRec) -> R<Reply> {
        validate::check_heartbeat(id, &daemon.addr)?;
        let bytes = model::encode_json("block daemon", daemon)?;
        self.block_daemons.insert(id, bytes.as_slice())?;
        Ok(Reply::Nothing)
    }

    /// Records pack locations; the whole batch is checked before anything is written.
    pub(super) fn record_packs(&mut self, locations: &[PackLoc]) -> R<Reply> {
        validate::check_pack_locations(locations)?;
        for loc in locations {
            self.packs.insert(loc.hash.as_slice(), (loc.pack.as_str(), loc.offset, loc.length))?;
        }
        Ok(Reply::Nothing)
    }

    /// Sets a share's replication factor.
    pub(super) fn set_share_replication(&mut self, export_path: &str, rf: u32) -> R<Reply> {
        validate::check_replication_factor(rf)?;
        let Some(id) = self.share_paths.get(export_path)?.map(|v| v.value()) else {
            return Err(ApplyError::NotFound.into());
        };
        let mut share = self.share(id)?;
        share.replication_factor = rf;
        access::put_share(&mut self.shares, id, &share)?;
        Ok(Reply::Nothing)
    }
}

impl ReadTables {
    /// Every known block daemon, by id.
    pub fn block_daemons(&self) -> Result<Vec<(u64, DaemonRec)>> {
        let mut out = Vec::new();
        for row in self.block_daemons.iter()? {
            let (k, v) = row?;
            out.push((k.value(), model::decode_json("block daemon", v.value())?));
        }
        Ok(out)
    }

    /// The known pack locations of `hashes`, in the order asked (unknown ones are left out).
    pub fn locate_chunks(&self, hashes: &[[u8; HASH_LEN]]) -> Result<Vec<PackLoc>> {
        let mut out = Vec::new();
        for hash in hashes {
            if let Some(v) = self.packs.get(hash.as_slice())? {
                let (pack, offset, length) = v.value();
                if pack.is_empty() || length == 0 {
                    return Err(MetadError::Corrupt { what: "pack location", reason: "empty pack or range".into() });
                }
                out.push(PackLoc { hash: *hash, pack: pack.to_string(), offset, length });
            }
        }
        Ok(out)
    }
}
