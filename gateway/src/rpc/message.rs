//! The ONC RPC call and reply envelopes (RFC 5531 §9), sans-IO.
//!
//! Owns: decoding a call header (xid, message type, RPC version, program, version,
//! procedure, credential, verifier) and encoding every reply shape: accepted (SUCCESS,
//! PROG_UNAVAIL, PROG_MISMATCH, PROC_UNAVAIL, GARBAGE_ARGS, SYSTEM_ERR) and denied
//! (RPC_MISMATCH, AUTH_ERROR). Replies always carry an AUTH_NONE verifier.
//!
//! Must never: look at procedure arguments (that is the program's job) or panic on input.

use crate::rpc::ProtocolError;
use crate::rpc::auth::{self, AuthStat, Credentials};
use crate::xdr::{XdrReader, XdrWriter};

pub const RPC_VERSION: u32 = 2;
const CALL: u32 = 0;
const REPLY: u32 = 1;
const MSG_ACCEPTED: u32 = 0;
const MSG_DENIED: u32 = 1;

/// A decoded call header; the procedure arguments start at `args_offset` in the record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallHeader {
    pub xid: u32,
    pub prog: u32,
    pub vers: u32,
    pub proc_num: u32,
    pub cred: Credentials,
    pub args_offset: usize,
}

/// Why a record is not a call this server will run, and what (if anything) to answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallRejection {
    /// Too short to hold an xid and a message type, or not a CALL: no reply is possible
    /// or expected, the record is dropped.
    Drop,
    /// RPC version other than 2: deny with RPC_MISMATCH.
    RpcMismatch { xid: u32 },
    /// Unacceptable credential: deny with AUTH_ERROR.
    Auth { xid: u32, stat: AuthStat },
    /// The header itself is malformed after the xid: answer GARBAGE_ARGS.
    Garbage { xid: u32 },
}

/// Reads the call header at the start of `record`.
pub fn decode_call(record: &[u8]) -> Result<CallHeader, CallRejection> {
    let mut r = XdrReader::new(record);
    let (Ok(xid), Ok(CALL)) = (r.u32(), r.u32()) else { return Err(CallRejection::Drop) };
    let garbage = |_: ProtocolError| CallRejection::Garbage { xid };
    let rpcvers = r.u32().map_err(garbage)?;
    if rpcvers != RPC_VERSION {
        return Err(CallRejection::RpcMismatch { xid });
    }
    let prog = r.u32().map_err(garbage)?;
    let vers = r.u32().map_err(garbage)?;
    let proc_num = r.u32().map_err(garbage)?;
    let cred_flavor = r.u32().map_err(garbage)?;
    let cred_body = r.opaque(auth::MAX_AUTH_BYTES).map_err(garbage)?;
    let verf_flavor = r.u32().map_err(garbage)?;
    let verf_body = r.opaque(auth::MAX_AUTH_BYTES).map_err(garbage)?;
    let cred = auth::decode_credentials(cred_flavor, cred_body).map_err(|stat| CallRejection::Auth { xid, stat })?;
    auth::check_verifier(verf_flavor, verf_body).map_err(|stat| CallRejection::Auth { xid, stat })?;
    Ok(CallHeader { xid, prog, vers, proc_num, cred, args_offset: r.position() })
}

/// The `accept_stat` of an accepted reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcceptStat {
    /// Results follow (written by the program).
    Success,
    ProgUnavail,
    ProgMismatch { low: u32, high: u32 },
    ProcUnavail,
    GarbageArgs,
    SystemErr,
}

/// Writes an accepted reply header through `accept_stat` (and its mismatch info). After
/// `Success` the caller appends the procedure's results.
pub fn write_accepted(w: &mut XdrWriter, xid: u32, stat: AcceptStat) {
    w.u32(xid);
    w.u32(REPLY);
    w.u32(MSG_ACCEPTED);
    write_null_verifier(w);
    write_accept_stat(w, stat);
}

/// Writes `accept_stat` alone (used to replace a SUCCESS after the header was written).
pub fn write_accept_stat(w: &mut XdrWriter, stat: AcceptStat) {
    match stat {
        AcceptStat::Success => w.u32(0),
        AcceptStat::ProgUnavail => w.u32(1),
        AcceptStat::ProgMismatch { low, high } => {
            w.u32(2);
            w.u32(low);
            w.u32(high);
        }
        AcceptStat::ProcUnavail => w.u32(3),
        AcceptStat::GarbageArgs => w.u32(4),
        AcceptStat::SystemErr => w.u32(5),
    }
}

/// Encodes the reply a rejected call gets, if any.
pub fn rejection_reply(rejection: &CallRejection) -> Option<XdrWriter> {
    let mut w = XdrWriter::with_capacity(32);
    match *rejection {
        CallRejection::Drop => return None,
        CallRejection::Garbage { xid } => write_accepted(&mut w, xid, AcceptStat::GarbageArgs),
        CallRejection::RpcMismatch { xid } => {
            write_denied_head(&mut w, xid);
            w.u32(0); // RPC_MISMATCH
            w.u32(RPC_VERSION);
            w.u32(RPC_VERSION);
        }
        CallRejection::Auth { xid, stat } => {
            write_denied_head(&mut w, xid);
            w.u32(1); // AUTH_ERROR
            w.u32(stat as u32);
        }
    }
    Some(w)
}

fn write_denied_head(w: &mut XdrWriter, xid: u32) {
    w.u32(xid);
    w.u32(REPLY);
    w.u32(MSG_DENIED);
}

fn write_null_verifier(w: &mut XdrWriter) {
    w.u32(auth::AUTH_NONE);
    w.u32(0);
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected input")]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Builds a call record: header words, then credential and verifier.
    pub(crate) fn call_bytes(xid: u32, rpcvers: u32, prog: u32, vers: u32, proc_num: u32, cred: (u32, &[u8])) -> Vec<u8> {
        let mut w = XdrWriter::new();
        for v in [xid, CALL, rpcvers, prog, vers, proc_num, cred.0] {
            w.u32(v);
        }
        w.opaque(cred.1);
        w.u32(0);
        w.u32(0);
        w.into_inner().to_vec()
    }

    fn check(input: &[u8], expected: Result<CallHeader, CallRejection>) {
        assert_eq!(decode_call(input), expected);
    }

    fn words(w: &[u32]) -> Vec<u8> {
        w.iter().flat_map(|v| v.to_be_bytes()).collect()
    }

    #[test]
    fn decodes_calls_and_rejections() {
        let mut good = call_bytes(7, 2, 100003, 3, 1, (0, &[]));
        good.extend_from_slice(b"ARGS");
        check(&good, Ok(CallHeader {
            xid: 7,
            prog: 100003,
            vers: 3,
            proc_num: 1,
            cred: Credentials::None,
            args_offset: 40,
        }));
        check(&call_bytes(8, 3, 100003, 3, 1, (0, &[])), Err(CallRejection::RpcMismatch { xid: 8 }));
        check(&call_bytes(9, 2, 100003, 3, 1, (6, &[1, 2, 3, 4])), Err(CallRejection::Auth {
            xid: 9,
            stat: AuthStat::BadCred,
        }));
        check(&call_bytes(9, 2, 100003, 3, 1, (1, &[1, 2, 3, 4])), Err(CallRejection::Auth {
            xid: 9,
            stat: AuthStat::BadCred,
        }));
        check(&good[..20], Err(CallRejection::Garbage { xid: 7 }));
        check(&good[..6], Err(CallRejection::Drop));
        check(&words(&[7, REPLY, 0]), Err(CallRejection::Drop));
        let mut bad_verf = call_bytes(10, 2, 100003, 3, 1, (0, &[]));
        bad_verf[32..36].copy_from_slice(&1u32.to_be_bytes());
        check(&bad_verf, Err(CallRejection::Auth { xid: 10, stat: AuthStat::BadVerf }));
        // A credential body over 400 bytes is garbage, whatever its flavour.
        check(&call_bytes(5, 2, 100003, 3, 1, (1, &[0; 404])), Err(CallRejection::Garbage { xid: 5 }));
    }

    #[test]
    fn encodes_replies() {
        let mut w = XdrWriter::new();
        write_accepted(&mut w, 1, AcceptStat::ProgMismatch { low: 3, high: 3 });
        assert_eq!(w.as_slice(), words(&[1, REPLY, MSG_ACCEPTED, 0, 0, 2, 3, 3]));
        let r = rejection_reply(&CallRejection::RpcMismatch { xid: 2 }).unwrap();
        assert_eq!(r.as_slice(), words(&[2, REPLY, MSG_DENIED, 0, 2, 2]));
        let r = rejection_reply(&CallRejection::Auth { xid: 3, stat: AuthStat::BadCred }).unwrap();
        assert_eq!(r.as_slice(), words(&[3, REPLY, MSG_DENIED, 1, 1]));
        let r = rejection_reply(&CallRejection::Garbage { xid: 4 }).unwrap();
        assert_eq!(r.as_slice(), words(&[4, REPLY, MSG_ACCEPTED, 0, 0, 4]));
        assert!(rejection_reply(&CallRejection::Drop).is_none());
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(h) = decode_call(&bytes) {
                prop_assert!(h.args_offset <= bytes.len());
            }
        }

        #[test]
        fn mutated_calls_never_panic(
            mut bytes in Just(call_bytes(1, 2, 100003, 3, 1, (1, &[0, 0, 0, 1, 0, 0, 0, 1, b'h', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]))),
            idx in 0usize..64,
            val in any::<u8>(),
        ) {
            if let Some(b) = bytes.get_mut(idx) { *b = val; }
            let _ = decode_call(&bytes);
        }
    }
}
