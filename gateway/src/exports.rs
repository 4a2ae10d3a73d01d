//! Export options as the gateway enforces them, and the list of mounts it handed out.
//!
//! Owns: [`Export`] (a share's options from metad's `Share`, parsed once), the rules below,
//! [`admit`] (the check every NFSv3 call passes before its procedure runs) and
//! [`MountTable`] (what MOUNT DUMP reports).
//! Must never: let a call reach the `Vfs` for a share the caller may not use, or pass an
//! identity on before squashing it.
//!
//! The rules (docs/exports.md):
//! - **Allowed clients.** `allowed_clients` empty = every client; otherwise the caller's
//!   address (the TCP peer; an IPv4-mapped IPv6 peer counts as its IPv4 address) must match
//!   an entry (`*`, an address or a CIDR block). A caller whose address is unknown matches only
//!   `*`. A refused client gets MNT3ERR_ACCES on MNT and NFS3ERR_ACCES on every NFSv3 call on
//!   a handle of the share. An entry this gateway cannot parse (metad refuses them, so only a
//!   newer metad could send one) matches nobody.
//! - **Read-only.** Every procedure that changes something (SETATTR, WRITE, CREATE, MKDIR,
//!   SYMLINK, MKNOD, REMOVE, RMDIR, RENAME, LINK, COMMIT) answers NFS3ERR_ROFS without reaching
//!   the `Vfs`; ACCESS grants no MODIFY/EXTEND/DELETE bit. Reads, lookups and listings work.
//! - **Squash.** The identity is mapped before any `Vfs` call (so metad checks permissions,
//!   and stamps ownership, against the mapped one): `none` passes AUTH_SYS identities as
//!   claimed; `root` maps uid 0 to `anon_uid` and gid 0 (primary or supplementary) to
//!   `anon_gid`, as knfsd's root_squash does; `all` maps every caller to
//!   `anon_uid:anon_gid` with no supplementary groups. AUTH_NONE is always
//!   `anon_uid:anon_gid`. An unknown squash mode (a newer metad) is treated as `all`;
//!   absent anonymous ids (an older metad) as 65534, never 0.
//! - The share is the one of the call's first file handle (every NFSv3 procedure but NULL
//!   starts with one). RENAME's and LINK's second handle must be in the same share, which
//!   metad enforces (NFS3ERR_XDEV), so one check covers both. An undecodable first handle
//!   is left to the procedure (GARBAGE_ARGS or NFS3ERR_BADHANDLE); a handle of a share metad
//!   no longer lists is NFS3ERR_STALE.
//! - Order: client list (ACCES), then read-only (ROFS), then squash.
//!
//! Freshness: the `Vfs` answers options at most a few seconds old (the engine's cache,
//! refreshed on MNT too), so a change made with `UpdateShare` applies on every gateway
//! within that period, without a restart.
//!
//! The mount list is advisory (as knfsd's rmtab is): it records (client address, path) on a
//! successful MNT, drops them on UMNT/UMNTALL, holds at most [`MAX_MOUNTS`] entries (the oldest
//! go first), and is lost on restart. No client depends on it (invariant 1 of DESIGN.md).

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};

use proto::export::ClientMatch;
use proto::{FsError, pb};

use crate::nfs3::args;
use crate::rpc::CallContext;
use crate::rpc::auth::{AuthSys, Credentials, NOBODY};
use crate::vfs::Vfs;

/// Most entries the mount list keeps.
pub const MAX_MOUNTS: usize = 1024;

/// How callers are mapped to the anonymous identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Squash {
    None,
    Root,
    All,
}

/// One share's export options, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Export {
    pub share_id: u64,
    pub export_path: String,
    pub read_only: bool,
    /// `None` = every client.
    pub allowed: Option<Vec<ClientMatch>>,
    /// The entries as metad lists them (MOUNT EXPORT's groups).
    pub allowed_text: Vec<String>,
    pub squash: Squash,
    pub anon_uid: u32,
    pub anon_gid: u32,
}

impl Export {
    /// The options `share` carries.
    pub fn from_share(share: &pb::Share) -> Export {
        let allowed = (!share.allowed_clients.is_empty()).then(|| {
            share
                .allowed_clients
                .iter()
                .filter_map(|entry| match ClientMatch::parse(entry) {
                    Ok(m) => Some(m),
                    Err(e) => {
                        tracing::warn!(share = share.export_path, error = %e, "ignoring an allowed-client entry");
                        None
                    }
                })
                .collect()
        });
        let squash = match pb::Squash::try_from(share.squash) {
            Ok(pb::Squash::None) => Squash::None,
            Ok(pb::Squash::Root) => Squash::Root,
            Ok(pb::Squash::All) | Err(_) => Squash::All,
        };
        Export {
            share_id: share.share_id,
            export_path: share.export_path.clone(),
            read_only: share.read_only,
            allowed,
            allowed_text: share.allowed_clients.clone(),
            squash,
            anon_uid: share.anon_uid.unwrap_or(NOBODY),
            anon_gid: share.anon_gid.unwrap_or(NOBODY),
        }
    }

    /// Whether a caller at `client` may use the share.
    pub fn allows(&self, client: Option<IpAddr>) -> bool {
        let Some(list) = &self.allowed else { return true };
        list.iter().any(|m| match client {
            Some(ip) => m.matches(ip),
            None => *m == ClientMatch::Any,
        })
    }

    /// The identity `cred` acts as on this share.
    pub fn squash(&self, cred: &Credentials) -> Credentials {
        let anon = |stamp, machine_name| {
            Credentials::Sys(AuthSys { stamp, machine_name, uid: self.anon_uid, gid: self.anon_gid, gids: Vec::new() })
        };
        match (cred, self.squash) {
            (Credentials::None, _) => anon(0, Vec::new()),
            (Credentials::Sys(s), Squash::All) => anon(s.stamp, s.machine_name.clone()),
            (Credentials::Sys(s), Squash::Root) => {
                let gid = |g: u32| if g == 0 { self.anon_gid } else { g };
                Credentials::Sys(AuthSys {
                    stamp: s.stamp,
                    machine_name: s.machine_name.clone(),
                    uid: if s.uid == 0 { self.anon_uid } else { s.uid },
                    gid: gid(s.gid),
                    gids: s.gids.iter().map(|g| gid(*g)).collect(),
                })
            }
            (Credentials::Sys(_), Squash::None) => cred.clone(),
        }
    }
}

/// NFSv3 procedures that change something (refused on a read-only export).
pub fn is_mutating(proc_num: u32) -> bool {
    matches!(proc_num, 2 | 7..=15 | 21)
}

/// What [`admit`] decided for one NFSv3 call.
#[derive(Debug)]
pub enum Admission {
    /// Run the procedure as `ctx` (identity squashed); `read_only` for ACCESS's bits.
    Run { ctx: CallContext, read_only: bool },
    /// Answer this error without running the procedure.
    Refuse(FsError),
}

/// Checks NFSv3 call `proc_num` (not NULL) against the export of its first handle.
pub async fn admit<V: Vfs>(vfs: &V, ctx: &CallContext, proc_num: u32, args: &[u8]) -> Admission {
    let Ok(Ok(handle)) = args::fh_args(args).map(|a| a.fh) else {
        // Undecodable: the procedure answers GARBAGE_ARGS or BADHANDLE without a Vfs call.
        return Admission::Run { ctx: ctx.clone(), read_only: false };
    };
    let export = match vfs.export_of(handle.share_id).await {
        Ok(e) => e,
        Err(e) => return Admission::Refuse(e),
    };
    if !export.allows(ctx.client.map(|a| a.ip())) {
        tracing::debug!(xid = ctx.xid, client = ?ctx.client, share = export.export_path, "client not allowed");
        return Admission::Refuse(FsError::Access);
    }
    if export.read_only && is_mutating(proc_num) {
        return Admission::Refuse(FsError::ReadOnly);
    }
    let ctx = CallContext { xid: ctx.xid, cred: export.squash(&ctx.cred), client: ctx.client };
    Admission::Run { ctx, read_only: export.read_only }
}

/// One mount handed out: who (the client's address) mounted what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountEntry {
    pub host: String,
    pub path: String,
}

/// The mounts this gateway handed out (MOUNT DUMP), bounded, in memory only.
#[derive(Debug, Default)]
pub struct MountTable {
    entries: Mutex<VecDeque<MountEntry>>,
}

impl MountTable {
    fn lock(&self) -> MutexGuard<'_, VecDeque<MountEntry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a mount (once per host and path), forgetting the oldest beyond [`MAX_MOUNTS`].
    pub fn record(&self, host: &str, path: &str) {
        let mut e = self.lock();
        if e.iter().any(|m| m.host == host && m.path == path) {
            return;
        }
        if e.len() >= MAX_MOUNTS {
            e.pop_front();
        }
        e.push_back(MountEntry { host: host.to_string(), path: path.to_string() });
    }

    /// Forgets `host`'s mount of `path` (UMNT).
    pub fn remove(&self, host: &str, path: &str) {
        self.lock().retain(|m| !(m.host == host && m.path == path));
    }

    /// Forgets every mount of `host` (UMNTALL).
    pub fn remove_host(&self, host: &str) {
        self.lock().retain(|m| m.host != host);
    }

    /// The mounts, oldest first.
    pub fn list(&self) -> Vec<MountEntry> {
        self.lock().iter().cloned().collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;

    fn share(clients: &[&str], squash: pb::Squash) -> Export {
        Export::from_share(&pb::Share {
            share_id: 3,
            export_path: "/s".into(),
            allowed_clients: clients.iter().map(|c| c.to_string()).collect(),
            squash: squash as i32,
            anon_uid: Some(65534),
            anon_gid: Some(65533),
            ..Default::default()
        })
    }

    fn sys(uid: u32, gid: u32, gids: &[u32]) -> Credentials {
        Credentials::Sys(AuthSys { stamp: 1, machine_name: b"m".to_vec(), uid, gid, gids: gids.to_vec() })
    }

    fn ids(c: &Credentials) -> (u32, u32, Vec<u32>) {
        let p = c.cred();
        (p.uid, p.gid, p.gids)
    }

    #[test]
    fn client_lists() {
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        let everyone = share(&[], pb::Squash::None);
        assert!(everyone.allows(ip("8.8.8.8")) && everyone.allows(None));
        let lan = share(&["10.0.0.0/8", "192.168.1.5"], pb::Squash::None);
        assert!(lan.allows(ip("10.3.2.1")) && lan.allows(ip("192.168.1.5")) && lan.allows(ip("::ffff:10.0.0.1")));
        assert!(!lan.allows(ip("127.0.0.1")) && !lan.allows(ip("192.168.1.6")) && !lan.allows(None));
        let star = share(&["10.0.0.1", "*"], pb::Squash::None);
        assert!(star.allows(None) && star.allows(ip("1.2.3.4")));
        // Unparsable entries match nobody; the list still restricts.
        let bad = share(&["not-an-address"], pb::Squash::None);
        assert!(!bad.allows(ip("1.2.3.4")) && !bad.allows(None));
    }

    #[test]
    fn squash_modes() {
        let none = share(&[], pb::Squash::None);
        assert_eq!(ids(&none.squash(&sys(0, 0, &[0, 5]))), (0, 0, vec![0, 5]));
        assert_eq!(ids(&none.squash(&Credentials::None)), (65534, 65533, vec![]));
        let root = share(&[], pb::Squash::Root);
        assert_eq!(ids(&root.squash(&sys(0, 0, &[0, 5]))), (65534, 65533, vec![65533, 5]));
        assert_eq!(ids(&root.squash(&sys(1000, 100, &[5]))), (1000, 100, vec![5]));
        assert_eq!(ids(&root.squash(&sys(1000, 0, &[]))), (1000, 65533, vec![]), "gid 0 is squashed too");
        let all = share(&[], pb::Squash::All);
        assert_eq!(ids(&all.squash(&sys(1000, 100, &[5]))), (65534, 65533, vec![]));
        assert_eq!(ids(&all.squash(&sys(0, 0, &[]))), (65534, 65533, vec![]));
        assert_eq!(ids(&all.squash(&Credentials::None)), (65534, 65533, vec![]));
        // An unknown mode (a newer metad) squashes everyone.
        let mut unknown = pb::Share { squash: 9, anon_uid: Some(7), anon_gid: Some(8), ..Default::default() };
        assert_eq!(ids(&Export::from_share(&unknown).squash(&sys(0, 0, &[]))), (7, 8, vec![]));
        unknown.squash = pb::Squash::Root as i32;
        assert_eq!(ids(&Export::from_share(&unknown).squash(&sys(0, 1, &[]))), (7, 1, vec![]));
        // Anonymous ids an older metad does not send are nobody, never root.
        let old = pb::Share { squash: pb::Squash::All as i32, ..Default::default() };
        assert_eq!(ids(&Export::from_share(&old).squash(&sys(0, 0, &[]))), (65534, 65534, vec![]));
    }

    #[test]
    fn mutating_procedures() {
        let names: Vec<_> = (0..22).filter(|p| is_mutating(*p)).filter_map(crate::nfs3::proc_name).collect();
        assert_eq!(
            names,
            ["SETATTR", "WRITE", "CREATE", "MKDIR", "SYMLINK", "MKNOD", "REMOVE", "RMDIR", "RENAME", "LINK", "COMMIT"]
        );
    }

    #[test]
    fn the_mount_table_is_bounded_and_deduplicated() {
        let t = MountTable::default();
        t.record("10.0.0.1", "/a");
        t.record("10.0.0.1", "/a");
        t.record("10.0.0.1", "/b");
        t.record("10.0.0.2", "/a");
        assert_eq!(t.list().len(), 3);
        t.remove("10.0.0.1", "/a");
        assert_eq!(
            t.list(),
            vec![
                MountEntry { host: "10.0.0.1".into(), path: "/b".into() },
                MountEntry { host: "10.0.0.2".into(), path: "/a".into() },
            ]
        );
        t.remove_host("10.0.0.1");
        assert_eq!(t.list().len(), 1);
        for i in 0..MAX_MOUNTS + 10 {
            t.record("10.0.0.3", &format!("/p{i}"));
        }
        let l = t.list();
        assert_eq!(l.len(), MAX_MOUNTS);
        assert_eq!(l[0].path, "/p10", "the oldest went first");
    }
}
