//! The one table from Tessera's `FsError` to NFSv3 `nfsstat3` and MOUNTv3 `mountstat3`.
//!
//! Owns: the status codes of RFC 1813 and the mapping of every filesystem error onto
//! them. Both mappings are exhaustive matches without a wildcard arm, so adding an
//! `FsError` variant does not compile until it is mapped here.
//!
//! Must never: be bypassed: procedures turn an `FsError` into a status only through
//! `nfsstat3_from` / `mountstat3_from`.

use proto::FsError;

/// `nfsstat3` (RFC 1813 §2.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NfsStat3 {
    Ok = 0,
    Perm = 1,
    NoEnt = 2,
    Io = 5,
    NxIo = 6,
    Acces = 13,
    Exist = 17,
    XDev = 18,
    NoDev = 19,
    NotDir = 20,
    IsDir = 21,
    Inval = 22,
    FBig = 27,
    NoSpc = 28,
    RoFs = 30,
    MLink = 31,
    NameTooLong = 63,
    NotEmpty = 66,
    DQuot = 69,
    Stale = 70,
    Remote = 71,
    BadHandle = 10001,
    NotSync = 10002,
    BadCookie = 10003,
    NotSupp = 10004,
    TooSmall = 10005,
    ServerFault = 10006,
    BadType = 10007,
    Jukebox = 10008,
}

/// `mountstat3` (RFC 1813 §5.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MountStat3 {
    Ok = 0,
    Perm = 1,
    NoEnt = 2,
    Io = 5,
    Acces = 13,
    NotDir = 20,
    Inval = 22,
    NameTooLong = 63,
    NotSupp = 10004,
    ServerFault = 10006,
}

/// The NFSv3 status for a filesystem error.
pub fn nfsstat3_from(e: &FsError) -> NfsStat3 {
    match e {
        FsError::NotFound => NfsStat3::NoEnt,
        FsError::Exists => NfsStat3::Exist,
        FsError::NotDir => NfsStat3::NotDir,
        FsError::IsDir => NfsStat3::IsDir,
        FsError::NotEmpty => NfsStat3::NotEmpty,
        FsError::Stale => NfsStat3::Stale,
        FsError::BadHandle => NfsStat3::BadHandle,
        FsError::NameTooLong => NfsStat3::NameTooLong,
        FsError::Invalid(_) => NfsStat3::Inval,
        FsError::Access => NfsStat3::Acces,
        FsError::Perm => NfsStat3::Perm,
        FsError::ReadOnly => NfsStat3::RoFs,
        FsError::TooBig => NfsStat3::FBig,
        FsError::NoSpace => NfsStat3::NoSpc,
        FsError::NotSupported => NfsStat3::NotSupp,
        FsError::Io(_) => NfsStat3::Io,
        FsError::CrossDevice => NfsStat3::XDev,
        FsError::TooManyLinks => NfsStat3::MLink,
        FsError::NotSync => NfsStat3::NotSync,
        FsError::BadCookie => NfsStat3::BadCookie,
        // Transient: the client retries later instead of failing the application. Fenced:
        // this gateway dropped what it held for the file; the retry writes it anew.
        FsError::NotLeader { .. } | FsError::Unavailable(_) | FsError::Fenced => NfsStat3::Jukebox,
        FsError::Internal(_) => NfsStat3::ServerFault,
    }
}

/// The MOUNTv3 status for a filesystem error.
pub fn mountstat3_from(e: &FsError) -> MountStat3 {
    match e {
        FsError::NotFound | FsError::Stale => MountStat3::NoEnt,
        FsError::NotDir => MountStat3::NotDir,
        FsError::NameTooLong => MountStat3::NameTooLong,
        FsError::Access => MountStat3::Acces,
        FsError::Perm => MountStat3::Perm,
        FsError::Invalid(_)
        | FsError::BadHandle
        | FsError::Exists
        | FsError::IsDir
        | FsError::NotEmpty
        | FsError::CrossDevice
        | FsError::TooManyLinks
        | FsError::NotSync
        | FsError::BadCookie => MountStat3::Inval,
        FsError::NotSupported => MountStat3::NotSupp,
        FsError::Io(_) | FsError::ReadOnly | FsError::TooBig | FsError::NoSpace => MountStat3::Io,
        FsError::NotLeader { .. } | FsError::Unavailable(_) | FsError::Fenced | FsError::Internal(_) => {
            MountStat3::ServerFault
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(e: FsError, nfs: NfsStat3, mount: MountStat3) {
        assert_eq!((nfsstat3_from(&e), mountstat3_from(&e)), (nfs, mount), "{e:?}");
    }

    #[test]
    fn table() {
        check(FsError::NotFound, NfsStat3::NoEnt, MountStat3::NoEnt);
        check(FsError::NotLeader { leader: Some(2) }, NfsStat3::Jukebox, MountStat3::ServerFault);
        check(FsError::Unavailable("x".into()), NfsStat3::Jukebox, MountStat3::ServerFault);
        check(FsError::Fenced, NfsStat3::Jukebox, MountStat3::ServerFault);
        check(FsError::Internal("x".into()), NfsStat3::ServerFault, MountStat3::ServerFault);
        check(FsError::Io("x".into()), NfsStat3::Io, MountStat3::Io);
        check(FsError::Stale, NfsStat3::Stale, MountStat3::NoEnt);
        check(FsError::BadHandle, NfsStat3::BadHandle, MountStat3::Inval);
        check(FsError::NotSupported, NfsStat3::NotSupp, MountStat3::NotSupp);
        check(FsError::NotEmpty, NfsStat3::NotEmpty, MountStat3::Inval);
        check(FsError::ReadOnly, NfsStat3::RoFs, MountStat3::Io);
        assert_eq!(NfsStat3::Jukebox as u32, 10008);
        assert_eq!(NfsStat3::NotSync as u32, 10002);
    }
}
