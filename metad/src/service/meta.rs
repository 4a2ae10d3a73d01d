//! The `Meta` service: filesystem operations, as thin adapters over [`Metad`].
//!
//! Owns: validating each request (handles, names, extents, limits) before anything is proposed,
//! stamping the proposer's time into commands, and shaping replies.
//! Must never: change state except through [`Metad::write`], read except through
//! [`Metad::read`], or return an error that did not go through `FsError::to_status`.

use proto::FsError;
use proto::pb;
use tonic::{Request, Response, Status};

use super::convert::{self, attr_to_pb, now_ns, wcc_to_pb};
use crate::command::{Command, Reply};
use crate::error::MetadError;
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

fn share_to_pb(s: &crate::fsm::query::ShareOut) -> pb::Share {
    pb::Share {
        share_id: s.share_id,
        name: s.rec.name.clone(),
        export_path: s.rec.export_path.clone(),
        root: Some(attr_to_pb(&s.root)),
    }
}

fn opt_time(t: Option<&pb::Time>) -> Result<Option<i64>, Status> {
    t.map(convert::time_from_pb).transpose().map_err(fs)
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

    async fn list_shares(&self, _request: Request<pb::ListSharesRequest>) -> Result<Response<pb::ListSharesReply>, Status> {
        let shares = self.metad.read(|t| t.list_shares()).await.map_err(status)?;
        Ok(Response::new(pb::ListSharesReply { shares: shares.iter().map(share_to_pb).collect() }))
    }

    async fn get_attr(&self, request: Request<pb::GetAttrRequest>) -> Result<Response<pb::AttrReply>, Status> {
        let key = convert::node_key(request.get_ref().node.as_ref()).map_err(fs)?;
        let attr = self.metad.read(move |t| t.get_attr(&key)).await.map_err(status)?;
        Ok(Response::new(pb::AttrReply { attr: Some(attr_to_pb(&attr)) }))
    }

    async fn lookup(&self, request: Request<pb::LookupRequest>) -> Result<Response<pb::LookupReply>, Status> {
        let req = request.into_inner();
        let dir = convert::node_key(req.dir.as_ref()).map_err(fs)?;
        validate::check_lookup_name(&req.name).map_err(refused)?;
        let (child, dir) = self.metad.read(move |t| t.lookup(&dir, &req.name)).await.map_err(status)?;
        Ok(Response::new(pb::LookupReply { attr: Some(attr_to_pb(&child)), dir: Some(attr_to_pb(&dir)) }))
    }

    async fn create(&self, request: Request<pb::CreateRequest>) -> Result<Response<pb::CreateReply>, Status> {
        let req = request.into_inner();
        let dir = convert::node_key(req.dir.as_ref()).map_err(fs)?;
        validate::check_name(&req.name).map_err(refused)?;
        let kind = convert::kind_from_pb(req.kind).map_err(fs)?;
        let how = convert::create_mode(req.how, &req.verifier).map_err(fs)?;
        let cmd = Command::Create {
            dir,
            name: req.name,
            kind,
            mode: req.mode & 0o7777,
            uid: req.uid,
            gid: req.gid,
            how,
            now_ns: now_ns(),
        };
        match self.metad.write(cmd).await.map_err(status)? {
            Reply::Created { attr, dir } => Ok(Response::new(pb::CreateReply { attr: Some(attr_to_pb(&attr)), dir: Some(wcc_to_pb(&dir)) })),
            other => Err(unexpected(&other)),
        }
    }

    async fn read_dir(&self, request: Request<pb::ReadDirRequest>) -> Result<Response<pb::ReadDirReply>, Status> {
        let req = request.into_inner();
        let dir = convert::node_key(req.dir.as_ref()).map_err(fs)?;
        let (entries, eof, dir) = self.metad.read(move |t| t.read_dir(&dir, req.cookie, req.max_entries)).await.map_err(status)?;
        Ok(Response::new(pb::ReadDirReply {
            entries: entries
                .iter()
                .map(|e| pb::DirEntry { name: e.name.clone(), cookie: e.cookie, attr: Some(attr_to_pb(&e.attr)) })
                .collect(),
            eof,
            dir: Some(attr_to_pb(&dir)),
            cookie_verifier: 0,
        }))
    }

    async fn remove(&self, request: Request<pb::RemoveRequest>) -> Result<Response<pb::RemoveReply>, Status> {
        let req = request.into_inner();
        let dir = convert::node_key(req.dir.as_ref()).map_err(fs)?;
        validate::check_name(&req.name).map_err(refused)?;
        let cmd = Command::Remove { dir, name: req.name, directory: req.directory, now_ns: now_ns() };
        match self.metad.write(cmd).await.map_err(status)? {
            Reply::Removed { dir } => Ok(Response::new(pb::RemoveReply { dir: Some(wcc_to_pb(&dir)) })),
            other => Err(unexpected(&other)),
        }
    }

    async fn set_attr(&self, request: Request<pb::SetAttrRequest>) -> Result<Response<pb::SetAttrReply>, Status> {
        let req = request.into_inner();
        let node = convert::node_key(req.node.as_ref()).map_err(fs)?;
        if req.size.is_some_and(|s| s > validate::MAX_FILE_SIZE) {
            return Err(fs(FsError::TooBig));
        }
        let cmd = Command::SetAttr {
            node,
            size: req.size,
            mode: req.mode.map(|m| m & 0o7777),
            uid: req.uid,
            gid: req.gid,
            atime_ns: opt_time(req.atime.as_ref())?,
            mtime_ns: opt_time(req.mtime.as_ref())?,
            now_ns: now_ns(),
        };
        match self.metad.write(cmd).await.map_err(status)? {
            Reply::Changed { before, after } => {
                Ok(Response::new(pb::SetAttrReply { before: Some(attr_to_pb(&before)), after: Some(attr_to_pb(&after)) }))
            }
            other => Err(unexpected(&other)),
        }
    }

    async fn commit_extents(&self, request: Request<pb::CommitExtentsRequest>) -> Result<Response<pb::CommitExtentsReply>, Status> {
        let req = request.into_inner();
        let node = convert::node_key(req.node.as_ref()).map_err(fs)?;
        let extents = convert::extents_from_pb(&req.extents).map_err(fs)?;
        validate::check_commit(req.range_start, req.range_end, &extents).map_err(refused)?;
        let cmd = Command::CommitExtents { node, range_start: req.range_start, range_end: req.range_end, extents, now_ns: now_ns() };
        match self.metad.write(cmd).await.map_err(status)? {
            Reply::Changed { before, after } => {
                Ok(Response::new(pb::CommitExtentsReply { before: Some(attr_to_pb(&before)), after: Some(attr_to_pb(&after)) }))
            }
            other => Err(unexpected(&other)),
        }
    }

    async fn get_extents(&self, request: Request<pb::GetExtentsRequest>) -> Result<Response<pb::GetExtentsReply>, Status> {
        let req = request.into_inner();
        let node = convert::node_key(req.node.as_ref()).map_err(fs)?;
        let (attr, extents) = self.metad.read(move |t| t.get_extents(&node, req.offset, req.length)).await.map_err(status)?;
        Ok(Response::new(pb::GetExtentsReply { attr: Some(attr_to_pb(&attr)), extents: extents.iter().map(convert::extent_to_pb).collect() }))
    }

    async fn fs_stat(&self, request: Request<pb::FsStatRequest>) -> Result<Response<pb::FsStatReply>, Status> {
        let node = convert::node_key(request.get_ref().node.as_ref()).map_err(fs)?;
        let (files, bytes_used) = self.metad.read(move |t| t.fs_stat(&node)).await.map_err(status)?;
        Ok(Response::new(pb::FsStatReply { files, bytes_used }))
    }

    async fn symlink(&self, _request: Request<pb::SymlinkRequest>) -> Result<Response<pb::CreateReply>, Status> {
        Err(fs(FsError::NotSupported))
    }

    async fn read_link(&self, _request: Request<pb::ReadLinkRequest>) -> Result<Response<pb::ReadLinkReply>, Status> {
        Err(fs(FsError::NotSupported))
    }

    async fn mknod(&self, _request: Request<pb::MknodRequest>) -> Result<Response<pb::CreateReply>, Status> {
        Err(fs(FsError::NotSupported))
    }

    async fn link(&self, _request: Request<pb::LinkRequest>) -> Result<Response<pb::LinkReply>, Status> {
        Err(fs(FsError::NotSupported))
    }

    async fn rename(&self, _request: Request<pb::RenameRequest>) -> Result<Response<pb::RenameReply>, Status> {
        Err(fs(FsError::NotSupported))
    }

    async fn access(&self, _request: Request<pb::AccessRequest>) -> Result<Response<pb::AccessReply>, Status> {
        Err(fs(FsError::NotSupported))
    }
}
