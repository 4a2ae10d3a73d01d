//! The `Meta` service: filesystem operations and the data plane's bookkeeping (block daemon
//! heartbeats and the daemon list, pack locations), as thin adapters over [`Metad`].
//!
//! Owns: validating each request (credential, handles, names, extents, addresses, hashes,
//! limits) before anything is proposed, stamping the proposer's time into commands, judging a
//! daemon's liveness against this node's clock, and shaping replies.
//! Every request with a `cred` field must carry one (a missing one is `Invalid`, never root).
//! Must never: change state except through [`Metad::write`], read except through
//! [`Metad::read`], or return an error that did not go through `FsError::to_status`.

use proto::FsError;
use proto::pb;
use tonic::{Request, Response, Status};

use super::convert::{self, attr_to_pb, now_ns, wcc_to_pb};
use crate::command::{Command, Op, Reply, RequestId, TimeSet};
use crate::error::MetadError;
use crate::model::{Cred, DaemonRec, HASH_LEN, PackLoc};
use crate::node::Metad;
use crate::validate;

/// Serves filesystem operations.
#[derive(Clone)]
pub struct MetaService {
    metad: Metad,
}

impl MetaService {
    pub fn new(metad: Metad) -> Self {
        MetaService { metad }
    }
}

fn fs(e: FsError) -> Status {
    e.to_status()
}

fn status(e: MetadError) -> Status {
    e.to_status()
}

fn refused(e: crate::command::ApplyError) -> Status {
    FsError::from(e).to_status()
}

fn unexpected(reply: &Reply) -> Status {
    FsError::Internal(format!("unexpected reply {reply:?}")).to_status()
}

pub(crate) fn share_to_pb(s: &crate::fsm::query::ShareOut) -> pb::Share {
    pb::Share {
        share_id: s.share_id,
        name: s.rec.name.clone(),
        export_path: s.rec.export_path.clone(),
        root: Some(attr_to_pb(&s.root)),
        replication_factor: s.rec.replication_factor,
        read_only: s.rec.read_only,
        allowed_clients: s.rec.allowed_clients.clone(),
        squash: convert::squash_to_pb(s.rec.squash),
        anon_uid: Some(s.rec.anon_uid),
        anon_gid: Some(s.rec.anon_gid),
    }
}

fn duration_ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A 32-byte chunk hash from the wire.
fn hash_from_pb(bytes: &[u8]) -> Result<[u8; HASH_LEN], Status> {
    bytes
        .try_into()
        .map_err(|_| fs(FsError::Invalid(format!("chunk hash of {} bytes, expected {HASH_LEN}", bytes.len()))))
}

fn pack_to_pb(loc: PackLoc) -> pb::PackLocation {
    pb::PackLocation { hash: loc.hash.to_vec(), pack: loc.pack, offset: loc.offset, length: loc.length }
}

/// The wire view of a daemon row, `live` judged against `now_ms`.
fn daemon_to_pb(id: u64, d: DaemonRec, now_ms: i64, dead_after_ms: u64) -> pb::BlockDaemon {
    let age = now_ms.saturating_sub(d.last_heartbeat_ms);
    // A heartbeat stamped in this node's future (clock skew) counts as fresh.
    let live = u64::try_from(age).map_or(true, |age| age <= dead_after_ms);
    pb::BlockDaemon {
        id,
        addr: d.addr,
        capacity_bytes: d.capacity_bytes,
        free_bytes: d.free_bytes,
        chunks: d.chunks,
        stored_bytes: d.stored_bytes,
        live,
        last_heartbeat_ms: d.last_heartbeat_ms,
    }
}

fn opt_time(t: Option<&pb::Time>) -> Result<Option<i64>, Status> {
    t.map(convert::time_from_pb).transpose().map_err(fs)
}

fn cred(c: Option<&pb::Cred>) -> Result<Cred, Status> {
    convert::cred_from_pb(c).map_err(fs)
}

/// An explicit time or the server's: asking for both is contradictory.
fn time_set(at: Option<&pb::Time>, now: bool, which: &str) -> Result<TimeSet, Status> {
    match (opt_time(at)?, now) {
        (Some(_), true) => Err(fs(FsError::Invalid(format!("both an explicit {which} and {which}_now")))),
        (Some(t), false) => Ok(TimeSet::At(t)),
        (None, true) => Ok(TimeSet::Now),
        (None, false) => Ok(TimeSet::Keep),
    }
}

/// A create's reply; `lease_for` (non-zero) learns the file's lease epoch if it holds it.
fn created(reply: Reply, lease_for: u64) -> Result<Response<pb::CreateReply>, Status> {
    match reply {
        Reply::Created { attr, dir } => {
            Ok(Response::new(pb::CreateReply {
                lease_epoch: attr.inode.lease_epoch_of(lease_for),
                attr: Some(attr_to_pb(&attr)),
                dir: Some(wcc_to_pb(&dir)),
            }))
        }
        other => Err(unexpected(&other)),
    }
}

impl MetaService {
    /// Proposes `op` for `cred` as one Raft command stamped with this node's time.
    async fn propose(&self, cred: Cred, request: Option<&pb::RequestId>, op: Op) -> Result<Reply, Status> {
        let request: Option<RequestId> = convert::request_id_from_pb(request);
        let cmd = Command::Fs { cred, request, now_ns: now_ns(), op };
        self.metad.write(cmd).await.map_err(status)
    }
}

#[tonic::async_trait]
impl pb::meta_server::Meta for MetaService {
    async fn get_share(&self, request: Request<pb::GetShareRequest>) -> Result<Response<pb::Share>, Status> {
        let path = request.into_inner().export_path;
        if path.len() > validate::MAX_SHARE_PATH_LEN {
            return Err(fs(FsError::NameTooLong));
        }
        let share = self.metad.read(move |t| t.share_by_path(&path)).await.map_err(status)?;
        Ok(Response::new(share_to_pb(&share)))
    }

    async fn list_shares(
        &self,
        _request: Request<pb::ListSharesRequest>,
    ) -> Result<Response<pb::ListSharesReply>, Status> {
        let shares = self.metad.read(|t| t.list_shares()).await.map_err(status)?;
        Ok(Response::new(pb::ListSharesReply { shares: shares.iter().map(share_to_pb).collect() }))
    }

    async fn get_attr(&self, request: Request<pb::GetAttrRequest>) -> Result<Response<pb::AttrReply>, Status> {
        let key = convert::node_key(request.get_ref().node.as_ref()).map_err(fs)?;
        let attr = self.metad.read_small(move |t| t.get_attr(&key)).await.map_err(status)?;
        Ok(Response::new(pb::AttrReply { attr: Some(attr_to_pb(&attr)) }))
    }

    async fn lookup(&self, request: Request<pb::LookupRequest>) -> Result<Response<pb::LookupReply>, Status> {
        let req = request.into_inner();
        let dir = convert::node_key(req.dir.as_ref()).map_err(fs)?;
        let cred = cred(req.cred.as_ref())?;
        validate::check_lookup_name(&req.name).map_err(refused)?;
        let (child, dir) = self.metad.read_small(move |t| t.lookup(&cred, &dir, &req.name)).await.map_err(status)?;
        Ok(Response::new(pb::LookupReply { attr: Some(attr_to_pb(&child)), dir: Some(attr_to_pb(&dir)) }))
    }

    async fn create(&self, request: Request<pb::CreateRequest>) -> Result<Response<pb::CreateReply>, Status> {
        let req = request.into_inner();
        let dir = convert::node_key(req.dir.as_ref()).map_err(fs)?;
        let cred = cred(req.cred.as_ref())?;
        validate::check_name(&req.name).map_err(refused)?;
        validate::check_mode(req.mode).map_err(refused)?;
        let kind = convert::kind_from_pb(req.kind).map_err(fs)?;
        let how = convert::create_mode(req.how, &req.verifier).map_err(fs)?;
        if req.size.is_some_and(|s| s > validate::MAX_FILE_SIZE) {
            return Err(fs(FsError::TooBig));
        }
        let op = Op::Create {
            dir,
            name: req.name,
            kind,
            mode: req.mode,
            uid: req.uid,
            gid: req.gid,
            how,
            size: req.size,
            lease_for: req.lease_instance,
        };
        created(self.propose(cred, req.request_id.as_ref(), op).await?, req.lease_instance)
    }

    async fn read_dir(&self, request: Request<pb::ReadDirRequest>) -> Result<Response<pb::ReadDirReply>, Status> {
        let req = request.into_inner();
        let dir = convert::node_key(req.dir.as_ref()).map_err(fs)?;
        let cred = cred(req.cred.as_ref())?;
        let page = self
            .metad
            .read(move |t| t.read_dir(&cred, &dir, req.cookie, req.cookie_verifier, req.max_entries))
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ReadDirReply {
            entries: page
                .entries
                .iter()
                .map(|e| pb::DirEntry { name: e.name.clone(), cookie: e.cookie, attr: Some(attr_to_pb(&e.attr)) })
                .collect(),
            eof: page.eof,
            dir: Some(attr_to_pb(&page.dir)),
            cookie_verifier: page.verifier,
        }))
    }

    async fn remove(&self, request: Request<pb::RemoveRequest>) -> Result<Response<pb::RemoveReply>, Status> {
        let req = request.into_inner();
        let dir = convert::node_key(req.dir.as_ref()).map_err(fs)?;
        let cred = cred(req.cred.as_ref())?;
        validate::check_name(&req.name).map_err(refused)?;
        let op = Op::Remove { dir, name: req.name, directory: req.directory };
        match self.propose(cred, req.request_id.as_ref(), op).await? {
            Reply::Removed { dir } => Ok(Response::new(pb::RemoveReply { dir: Some(wcc_to_pb(&dir)) })),
            other => Err(unexpected(&other)),
        }
    }

    async fn set_attr(&self, request: Request<pb::SetAttrRequest>) -> Result<Response<pb::SetAttrReply>, Status> {
        let req = request.into_inner();
        let node = convert::node_key(req.node.as_ref()).map_err(fs)?;
        let cred = cred(req.cred.as_ref())?;
        if req.size.is_some_and(|s| s > validate::MAX_FILE_SIZE) {
            return Err(fs(FsError::TooBig));
        }
        if let Some(m) = req.mode {
            validate::check_mode(m).map_err(refused)?;
        }
        let op = Op::SetAttr {
            node,
            size: req.size,
            mode: req.mode,
            uid: req.uid,
            gid: req.gid,
            atime: time_set(req.atime.as_ref(), req.atime_now, "atime")?,
            mtime: time_set(req.mtime.as_ref(), req.mtime_now, "mtime")?,
            guard_ctime_ns: opt_time(req.guard_ctime.as_ref())?,
            lease_for: req.size.map(|_| req.lease_instance),
        };
        match self.propose(cred, req.request_id.as_ref(), op).await? {
            Reply::Changed { before, after } => Ok(Response::new(pb::SetAttrReply {
                lease_epoch: if req.size.is_some() { after.inode.lease_epoch_of(req.lease_instance) } else { 0 },
                before: Some(attr_to_pb(&before)),
                after: Some(attr_to_pb(&after)),
            })),
            other => Err(unexpected(&other)),
        }
    }

    async fn commit_extents(
        &self,
        request: Request<pb::CommitExtentsRequest>,
    ) -> Result<Response<pb::CommitExtentsReply>, Status> {
        let req = request.into_inner();
        let node = convert::node_key(req.node.as_ref()).map_err(fs)?;
        let cred = cred(req.cred.as_ref())?;
        let extents = convert::extents_from_pb(&req.extents).map_err(fs)?;
        validate::check_commit(req.range_start, req.range_end, &extents).map_err(refused)?;
        let lease = req.lease.map(|l| (l.instance, l.epoch));
        let op = Op::CommitExtents { node, range_start: req.range_start, range_end: req.range_end, extents, lease };
        match self.propose(cred, req.request_id.as_ref(), op).await? {
            Reply::Changed { before, after } => Ok(Response::new(pb::CommitExtentsReply {
                before: Some(attr_to_pb(&before)),
                after: Some(attr_to_pb(&after)),
            })),
            other => Err(unexpected(&other)),
        }
    }

    async fn acquire_write_lease(
        &self,
        request: Request<pb::AcquireWriteLeaseRequest>,
    ) -> Result<Response<pb::AcquireWriteLeaseReply>, Status> {
        let req = request.into_inner();
        let node = convert::node_key(req.node.as_ref()).map_err(fs)?;
        let cred = cred(req.cred.as_ref())?;
        if req.instance == 0 {
            return Err(fs(FsError::Invalid("a write lease needs a non-zero instance".into())));
        }
        let op = Op::AcquireWriteLease { node, instance: req.instance };
        match self.propose(cred, req.request_id.as_ref(), op).await? {
            Reply::Lease { epoch } => Ok(Response::new(pb::AcquireWriteLeaseReply { epoch })),
            other => Err(unexpected(&other)),
        }
    }

    async fn get_extents(
        &self,
        request: Request<pb::GetExtentsRequest>,
    ) -> Result<Response<pb::GetExtentsReply>, Status> {
        let req = request.into_inner();
        let node = convert::node_key(req.node.as_ref()).map_err(fs)?;
        let cred = cred(req.cred.as_ref())?;
        let (attr, extents) =
            self.metad.read_small(move |t| t.get_extents(&cred, &node, req.offset, req.length)).await.map_err(status)?;
        Ok(Response::new(pb::GetExtentsReply {
            attr: Some(attr_to_pb(&attr)),
            extents: extents.iter().map(convert::extent_to_pb).collect(),
        }))
    }

    async fn fs_stat(&self, request: Request<pb::FsStatRequest>) -> Result<Response<pb::FsStatReply>, Status> {
        let node = convert::node_key(request.get_ref().node.as_ref()).map_err(fs)?;
        let ((files, bytes_used, share_rf), daemons) =
            self.metad.read(move |t| Ok((t.fs_stat(&node)?, t.block_daemons()?))).await.map_err(status)?;
        // Capacity: the live block daemons' raw bytes, divided by the copies each chunk takes.
        let now = convert::now_ms();
        let dead_after_ms = duration_ms(self.metad.liveness().dead_after);
        let live: Vec<pb::BlockDaemon> =
            daemons.into_iter().map(|(id, d)| daemon_to_pb(id, d, now, dead_after_ms)).filter(|d| d.live).collect();
        let rf = match share_rf {
            0 => cluster::placement::default_rf(live.len()),
            n => n as usize,
        } as u64;
        let capacity_bytes = live.iter().map(|d| d.capacity_bytes).fold(0u64, u64::saturating_add) / rf.max(1);
        let free_bytes = live.iter().map(|d| d.free_bytes).fold(0u64, u64::saturating_add) / rf.max(1);
        Ok(Response::new(pb::FsStatReply { files, bytes_used, capacity_bytes, free_bytes }))
    }

    async fn symlink(&self, request: Request<pb::SymlinkRequest>) -> Result<Response<pb::CreateReply>, Status> {
        let req = request.into_inner();
        let dir = convert::node_key(req.dir.as_ref()).map_err(fs)?;
        let cred = cred(req.cred.as_ref())?;
        validate::check_name(&req.name).map_err(refused)?;
        validate::check_symlink_target(&req.target).map_err(refused)?;
        validate::check_mode(req.mode).map_err(refused)?;
        let op = Op::Symlink { dir, name: req.name, target: req.target, mode: req.mode };
        created(self.propose(cred, req.request_id.as_ref(), op).await?, 0)
    }

    async fn read_link(&self, request: Request<pb::ReadLinkRequest>) -> Result<Response<pb::ReadLinkReply>, Status> {
        let req = request.into_inner();
        let node = convert::node_key(req.node.as_ref()).map_err(fs)?;
        let _cred = cred(req.cred.as_ref())?;
        let (target, attr) = self.metad.read(move |t| t.read_link(&node)).await.map_err(status)?;
        Ok(Response::new(pb::ReadLinkReply { target, attr: Some(attr_to_pb(&attr)) }))
    }

    async fn mknod(&self, request: Request<pb::MknodRequest>) -> Result<Response<pb::CreateReply>, Status> {
        let req = request.into_inner();
        let dir = convert::node_key(req.dir.as_ref()).map_err(fs)?;
        let cred = cred(req.cred.as_ref())?;
        validate::check_name(&req.name).map_err(refused)?;
        validate::check_mode(req.mode).map_err(refused)?;
        let kind = convert::kind_from_pb(req.kind).map_err(fs)?;
        let op = Op::Mknod { dir, name: req.name, kind, mode: req.mode, rdev: (req.rdev_major, req.rdev_minor) };
        created(self.propose(cred, req.request_id.as_ref(), op).await?, 0)
    }

    async fn link(&self, request: Request<pb::LinkRequest>) -> Result<Response<pb::LinkReply>, Status> {
        let req = request.into_inner();
        let node = convert::node_key(req.node.as_ref()).map_err(fs)?;
        let dir = convert::node_key(req.dir.as_ref()).map_err(fs)?;
        let cred = cred(req.cred.as_ref())?;
        validate::check_name(&req.name).map_err(refused)?;
        let op = Op::Link { node, dir, name: req.name };
        match self.propose(cred, req.request_id.as_ref(), op).await? {
            Reply::Linked { attr, dir } => {
                Ok(Response::new(pb::LinkReply { attr: Some(attr_to_pb(&attr)), dir: Some(wcc_to_pb(&dir)) }))
            }
            other => Err(unexpected(&other)),
        }
    }

    async fn rename(&self, request: Request<pb::RenameRequest>) -> Result<Response<pb::RenameReply>, Status> {
        let req = request.into_inner();
        let from_dir = convert::node_key(req.from_dir.as_ref()).map_err(fs)?;
        let to_dir = convert::node_key(req.to_dir.as_ref()).map_err(fs)?;
        let cred = cred(req.cred.as_ref())?;
        validate::check_name(&req.from_name).map_err(refused)?;
        validate::check_name(&req.to_name).map_err(refused)?;
        let op = Op::Rename { from_dir, from_name: req.from_name, to_dir, to_name: req.to_name };
        match self.propose(cred, req.request_id.as_ref(), op).await? {
            Reply::Renamed { from_dir, to_dir } => Ok(Response::new(pb::RenameReply {
                from_dir: Some(wcc_to_pb(&from_dir)),
                to_dir: Some(wcc_to_pb(&to_dir)),
            })),
            other => Err(unexpected(&other)),
        }
    }

    async fn access(&self, request: Request<pb::AccessRequest>) -> Result<Response<pb::AccessReply>, Status> {
        let req = request.into_inner();
        let node = convert::node_key(req.node.as_ref()).map_err(fs)?;
        let cred = cred(req.cred.as_ref())?;
        let (granted, attr) = self.metad.read_small(move |t| t.access(&cred, &node, req.mask)).await.map_err(status)?;
        Ok(Response::new(pb::AccessReply { granted, attr: Some(attr_to_pb(&attr)) }))
    }

    async fn heartbeat(&self, request: Request<pb::HeartbeatRequest>) -> Result<Response<pb::HeartbeatReply>, Status> {
        let req = request.into_inner();
        validate::check_heartbeat(req.id, &req.addr).map_err(refused)?;
        let daemon = DaemonRec {
            addr: req.addr,
            capacity_bytes: req.capacity_bytes,
            free_bytes: req.free_bytes,
            chunks: req.chunks,
            stored_bytes: req.stored_bytes,
            last_heartbeat_ms: convert::now_ms(),
        };
        self.metad.write(Command::Heartbeat { id: req.id, daemon }).await.map_err(status)?;
        let liveness = self.metad.liveness();
        Ok(Response::new(pb::HeartbeatReply {
            dead_after_ms: duration_ms(liveness.dead_after),
            interval_ms: duration_ms(liveness.interval),
        }))
    }

    async fn list_block_daemons(
        &self,
        _request: Request<pb::ListBlockDaemonsRequest>,
    ) -> Result<Response<pb::ListBlockDaemonsReply>, Status> {
        let rows = self.metad.read(|t| t.block_daemons()).await.map_err(status)?;
        // Judged after the read, so a heartbeat applied before it is never older than `now`.
        let now = convert::now_ms();
        let dead_after_ms = duration_ms(self.metad.liveness().dead_after);
        let daemons: Vec<pb::BlockDaemon> =
            rows.into_iter().map(|(id, d)| daemon_to_pb(id, d, now, dead_after_ms)).collect();
        let live = daemons.iter().filter(|d| d.live).count();
        let rf = u32::try_from(cluster::placement::default_rf(live)).unwrap_or(u32::MAX);
        Ok(Response::new(pb::ListBlockDaemonsReply { daemons, default_replication_factor: rf }))
    }

    async fn record_packs(
        &self,
        request: Request<pb::RecordPacksRequest>,
    ) -> Result<Response<pb::RecordPacksReply>, Status> {
        let req = request.into_inner();
        if req.locations.len() > validate::MAX_PACKS_PER_RECORD {
            return Err(fs(FsError::Invalid(format!(
                "{} pack locations, at most {}",
                req.locations.len(),
                validate::MAX_PACKS_PER_RECORD
            ))));
        }
        let mut locations = Vec::with_capacity(req.locations.len());
        for l in req.locations {
            let loc = PackLoc { hash: hash_from_pb(&l.hash)?, pack: l.pack, offset: l.offset, length: l.length };
            validate::check_pack_location(&loc).map_err(refused)?;
            locations.push(loc);
        }
        self.metad.write(Command::RecordPacks { locations }).await.map_err(status)?;
        Ok(Response::new(pb::RecordPacksReply {}))
    }

    async fn locate_chunks(
        &self,
        request: Request<pb::LocateChunksRequest>,
    ) -> Result<Response<pb::LocateChunksReply>, Status> {
        let req = request.into_inner();
        if req.hashes.len() > validate::MAX_LOCATE_HASHES {
            return Err(fs(FsError::Invalid(format!(
                "{} hashes, at most {}",
                req.hashes.len(),
                validate::MAX_LOCATE_HASHES
            ))));
        }
        let hashes = req.hashes.iter().map(|h| hash_from_pb(h)).collect::<Result<Vec<_>, _>>()?;
        let found = self.metad.read(move |t| t.locate_chunks(&hashes)).await.map_err(status)?;
        Ok(Response::new(pb::LocateChunksReply { locations: found.into_iter().map(pack_to_pb).collect() }))
    }
}
