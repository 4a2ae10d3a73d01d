//! One RPC record in, one reply out: the sans-IO heart of the NFS front end.
//!
//! Owns: routing a decoded call to its program (NFSv3 100003 v3, MOUNT 100005 v3),
//! answering PROG_UNAVAIL / PROG_MISMATCH / PROC_UNAVAIL / GARBAGE_ARGS / SYSTEM_ERR,
//! consulting the duplicate request cache (`drc`) for the non-idempotent NFSv3 procedures,
//! and the per-procedure metrics (`tessera_nfs_*`, label `proc`).
//!
//! Must never: block, touch a socket, or panic on a record's contents. A record that
//! cannot be answered (no xid, not a CALL) yields no reply.

use std::time::Instant;

use bytes::Bytes;
use cluster::metrics::{NFS_DRC_HITS, NFS_ERRORS, NFS_LATENCY, NFS_REQUESTS};

use crate::rpc::auth::Credentials;
use crate::rpc::drc::{self, DrcKey, DuplicateRequestCache, Lookup};
use crate::rpc::message::{self, AcceptStat};
use crate::vfs::Vfs;
use crate::xdr::{Encoded, XdrWriter};
use crate::{mount, nfs3};

/// What a procedure needs to know about its caller.
#[derive(Clone, Debug)]
pub struct CallContext {
    pub xid: u32,
    pub cred: Credentials,
    /// The client's address (the TCP peer); `None` when not known (in-process tests).
    pub client: Option<std::net::SocketAddr>,
}

/// How a program handled a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcOutcome {
    /// Results written, with an OK status.
    Ok,
    /// Results written, with an error status (counted in `tessera_nfs_errors_total`).
    Failed,
    ProcUnavail,
    GarbageArgs,
    SystemErr,
}

/// [`handle_call`] for a caller whose address is not known.
pub async fn handle_record<V: Vfs>(vfs: &V, record: Bytes) -> Option<Encoded> {
    handle_call(vfs, record, None).await
}

/// [`handle_call_with_drc`] without a duplicate request cache.
pub async fn handle_call<V: Vfs>(vfs: &V, record: Bytes, client: Option<std::net::SocketAddr>) -> Option<Encoded> {
    handle_call_with_drc(vfs, None, record, client).await
}

/// Decodes `record` as an RPC call from `client`, runs it against `vfs` and returns the
/// encoded reply (without record marking), or `None` if the record gets no reply.
///
/// With a `drc` and a known `client`, a non-idempotent NFSv3 call that was seen before
/// (same xid, client address and call bytes) is answered with the original's reply, or
/// waits for it while the original runs (see `rpc::drc`).
pub async fn handle_call_with_drc<V: Vfs>(
    vfs: &V,
    drc: Option<&DuplicateRequestCache>,
    record: Bytes,
    client: Option<std::net::SocketAddr>,
) -> Option<Encoded> {
    let header = match message::decode_call(&record) {
        Ok(h) => h,
        Err(rejection) => {
            tracing::debug!(?rejection, "RPC call rejected");
            return message::rejection_reply(&rejection).map(XdrWriter::finish);
        }
    };
    let mut w = XdrWriter::with_capacity(512);
    let Some(args) = (header.args_offset <= record.len()).then(|| record.slice(header.args_offset..)) else {
        message::write_accepted(&mut w, header.xid, AcceptStat::GarbageArgs);
        return Some(w.finish());
    };
    let ctx = CallContext { xid: header.xid, cred: header.cred, client };
    let (name, supported) = match header.prog {
        nfs3::PROGRAM => (nfs3::proc_name(header.proc_num), header.vers == nfs3::VERSION),
        mount::PROGRAM => (mount::proc_name(header.proc_num), header.vers == mount::VERSION),
        _ => {
            tracing::debug!(prog = header.prog, "RPC call for an unknown program");
            message::write_accepted(&mut w, header.xid, AcceptStat::ProgUnavail);
            return Some(w.finish());
        }
    };
    if !supported {
        let v = if header.prog == nfs3::PROGRAM { nfs3::VERSION } else { mount::VERSION };
        message::write_accepted(&mut w, header.xid, AcceptStat::ProgMismatch { low: v, high: v });
        return Some(w.finish());
    }

    let cache = match (drc, client) {
        (Some(drc), Some(client)) if header.prog == nfs3::PROGRAM && drc::caches_nfs3(header.proc_num) => {
            let key =
                DrcKey::new(header.xid, client.ip(), [header.prog, header.vers, header.proc_num], &ctx.cred, &args);
            match drc.lookup(key) {
                Lookup::New(pending) => Some(pending),
                Lookup::Replay(reply) => {
                    metrics::counter!(NFS_DRC_HITS).increment(1);
                    tracing::debug!(xid = ctx.xid, %client, proc = name, "retransmission answered from the DRC");
                    return Some(Encoded::from(reply));
                }
                Lookup::InProgress(rx) => {
                    tracing::debug!(xid = ctx.xid, %client, proc = name, "retransmission of a call in progress");
                    let reply = drc::wait_for_reply(rx, drc::IN_PROGRESS_WAIT).await?;
                    metrics::counter!(NFS_DRC_HITS).increment(1);
                    return Some(Encoded::from(reply));
                }
            }
        }
        _ => None,
    };

    let start = Instant::now();
    message::write_accepted(&mut w, header.xid, AcceptStat::Success);
    let results_at = w.len();
    let outcome = if header.prog == nfs3::PROGRAM {
        nfs3::call(vfs, &ctx, header.proc_num, &args, &mut w).await
    } else {
        mount::call(vfs, &ctx, header.proc_num, &args, &mut w).await
    };
    let replaced = match outcome {
        ProcOutcome::Ok | ProcOutcome::Failed => None,
        ProcOutcome::ProcUnavail => Some(AcceptStat::ProcUnavail),
        ProcOutcome::GarbageArgs => Some(AcceptStat::GarbageArgs),
        ProcOutcome::SystemErr => Some(AcceptStat::SystemErr),
    };
    if let Some(stat) = replaced {
        // Rewrite the accept_stat word (the last one of the SUCCESS header).
        w.truncate(results_at.saturating_sub(4));
        message::write_accept_stat(&mut w, stat);
    }

    let label = name.unwrap_or("UNKNOWN");
    metrics::counter!(NFS_REQUESTS, "proc" => label).increment(1);
    if outcome != ProcOutcome::Ok {
        metrics::counter!(NFS_ERRORS, "proc" => label).increment(1);
    }
    metrics::histogram!(NFS_LATENCY, "proc" => label).record(start.elapsed().as_secs_f64());
    tracing::trace!(xid = ctx.xid, proc = label, ?outcome, "RPC call answered");
    let Some(pending) = cache else { return Some(w.finish()) };
    let reply = w.finish().into_bytes();
    pending.complete(&reply, matches!(outcome, ProcOutcome::Ok | ProcOutcome::Failed));
    Some(Encoded::from(reply))
}
