//! ONC RPC credentials (RFC 5531 §8-9, appendix A): AUTH_NONE and AUTH_SYS.
//!
//! Owns: decoding a call's credential into `Credentials` with the protocol limits
//! (machine name <= 255 bytes, <= 16 supplementary gids, nothing after the gids; an
//! AUTH_NONE body is empty), and the identity a procedure acts as. Every other flavour
//! (AUTH_DH, RPCSEC_GSS, ...) and a malformed credential are refused with AUTH_BADCRED; a
//! verifier other than an empty AUTH_NONE one with AUTH_BADVERF (as Linux's knfsd does).
//!
//! Must never: trust the credential for security. AUTH_SYS is what the client claims;
//! the gateway passes it on (`Credentials::cred`) and metad checks permissions against it.
//!
//! Squashing by a share's export options (root/all, anonymous ids) is not done here but in
//! `crate::exports`, before a call reaches the `Vfs`; here AUTH_NONE decodes as `nobody`
//! (65534:65534, no groups).

use proto::pb;

use crate::rpc::ProtocolError;
use crate::xdr::XdrReader;

pub const AUTH_NONE: u32 = 0;
pub const AUTH_SYS: u32 = 1;
/// Largest credential or verifier body (RFC 5531 `opaque body<400>`).
pub const MAX_AUTH_BYTES: usize = 400;
pub const MAX_MACHINE_NAME: usize = 255;
pub const MAX_GIDS: usize = 16;
/// The identity used for AUTH_NONE callers (`nobody`).
pub const NOBODY: u32 = 65534;

/// `auth_stat` values of an AUTH_ERROR denial.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthStat {
    /// Malformed credential, or a flavour this server does not accept.
    BadCred = 1,
    /// A verifier other than an empty AUTH_NONE one (AUTH_NONE and AUTH_SYS carry none).
    BadVerf = 2,
}

/// A decoded AUTH_SYS credential.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthSys {
    pub stamp: u32,
    pub machine_name: Vec<u8>,
    pub uid: u32,
    pub gid: u32,
    pub gids: Vec<u32>,
}

/// Who the caller says it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credentials {
    None,
    Sys(AuthSys),
}

impl Credentials {
    pub fn uid(&self) -> u32 {
        match self {
            Credentials::None => NOBODY,
            Credentials::Sys(s) => s.uid,
        }
    }

    pub fn gid(&self) -> u32 {
        match self {
            Credentials::None => NOBODY,
            Credentials::Sys(s) => s.gid,
        }
    }

    /// The identity metad checks permissions against (after squashing).
    pub fn cred(&self) -> pb::Cred {
        match self {
            Credentials::None => pb::Cred { uid: NOBODY, gid: NOBODY, gids: Vec::new() },
            Credentials::Sys(s) => pb::Cred { uid: s.uid, gid: s.gid, gids: s.gids.clone() },
        }
    }

    /// Whether `gid` is the caller's primary or a supplementary group.
    pub fn in_group(&self, gid: u32) -> bool {
        match self {
            Credentials::None => gid == NOBODY,
            Credentials::Sys(s) => s.gid == gid || s.gids.contains(&gid),
        }
    }
}

/// Decodes the credential body of flavour `flavor`.
pub fn decode_credentials(flavor: u32, body: &[u8]) -> Result<Credentials, AuthStat> {
    match flavor {
        AUTH_NONE if body.is_empty() => Ok(Credentials::None),
        AUTH_SYS => decode_auth_sys(body).map(Credentials::Sys).map_err(|_| AuthStat::BadCred),
        _ => Err(AuthStat::BadCred),
    }
}

fn decode_auth_sys(body: &[u8]) -> Result<AuthSys, ProtocolError> {
    let mut r = XdrReader::new(body);
    let stamp = r.u32()?;
    let machine_name = r.opaque(MAX_MACHINE_NAME)?.to_vec();
    let uid = r.u32()?;
    let gid = r.u32()?;
    let count = r.u32()? as usize;
    if count > MAX_GIDS {
        return Err(ProtocolError::TooLong { len: count, max: MAX_GIDS });
    }
    let gids = (0..count).map(|_| r.u32()).collect::<Result<Vec<_>, _>>()?;
    if r.remaining() != 0 {
        return Err(ProtocolError::TooLong { len: body.len(), max: r.position() });
    }
    Ok(AuthSys { stamp, machine_name, uid, gid, gids })
}

/// Checks the verifier of an AUTH_NONE or AUTH_SYS call: AUTH_NONE, empty.
pub fn check_verifier(flavor: u32, body: &[u8]) -> Result<(), AuthStat> {
    if flavor == AUTH_NONE && body.is_empty() { Ok(()) } else { Err(AuthStat::BadVerf) }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected input")]
mod tests {
    use super::*;
    use crate::xdr::XdrWriter;

    fn sys_body(name: &[u8], gids: &[u32]) -> Vec<u8> {
        let mut w = XdrWriter::new();
        w.u32(99);
        w.opaque(name);
        w.u32(1000);
        w.u32(100);
        w.u32(gids.len() as u32);
        for g in gids {
            w.u32(*g);
        }
        w.into_inner().to_vec()
    }

    fn check(flavor: u32, body: &[u8], expected: Result<Credentials, AuthStat>) {
        assert_eq!(decode_credentials(flavor, body), expected);
    }

    #[test]
    fn flavours() {
        check(AUTH_NONE, &[], Ok(Credentials::None));
        check(
            AUTH_SYS,
            &sys_body(b"host", &[4, 5]),
            Ok(Credentials::Sys(AuthSys {
                stamp: 99,
                machine_name: b"host".to_vec(),
                uid: 1000,
                gid: 100,
                gids: vec![4, 5],
            })),
        );
        check(6, &[], Err(AuthStat::BadCred)); // RPCSEC_GSS
        check(3, &[], Err(AuthStat::BadCred)); // AUTH_DH
        check(AUTH_NONE, &[0, 0, 0, 0], Err(AuthStat::BadCred));
        assert_eq!(check_verifier(AUTH_NONE, &[]), Ok(()));
        assert_eq!(check_verifier(AUTH_SYS, &[]), Err(AuthStat::BadVerf));
        assert_eq!(check_verifier(AUTH_NONE, &[0, 0, 0, 0]), Err(AuthStat::BadVerf));
    }

    #[test]
    fn limits() {
        check(AUTH_SYS, &sys_body(&[b'a'; 256], &[]), Err(AuthStat::BadCred));
        assert!(decode_credentials(AUTH_SYS, &sys_body(&[b'a'; 255], &[0; 16])).is_ok());
        check(AUTH_SYS, &sys_body(b"h", &[0; 17]), Err(AuthStat::BadCred));
        let mut truncated = sys_body(b"h", &[1, 2]);
        truncated.truncate(truncated.len() - 4);
        check(AUTH_SYS, &truncated, Err(AuthStat::BadCred));
        let mut trailing = sys_body(b"h", &[1, 2]);
        trailing.extend_from_slice(&[0; 4]);
        check(AUTH_SYS, &trailing, Err(AuthStat::BadCred));
    }

    #[test]
    fn identity() {
        let c = decode_credentials(AUTH_SYS, &sys_body(b"h", &[7])).unwrap();
        assert_eq!((c.uid(), c.gid()), (1000, 100));
        assert!(c.in_group(7) && c.in_group(100) && !c.in_group(8));
        assert_eq!((Credentials::None.uid(), Credentials::None.gid()), (NOBODY, NOBODY));
        assert_eq!(c.cred(), pb::Cred { uid: 1000, gid: 100, gids: vec![7] });
        assert_eq!(Credentials::None.cred(), pb::Cred { uid: NOBODY, gid: NOBODY, gids: vec![] });
    }
}
