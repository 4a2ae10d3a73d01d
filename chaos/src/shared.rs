//! The shared part of the workload: every client also works on one directory they all
//! share — whole-content FILE_SYNC writes and reads of a few shared files, and creates,
//! removes and lookups of a few shared names — and records each call with when it was
//! made and what it answered, for the model checker (`linear`).
//!
//! Owns one attempt per operation: unlike the client's own files, nothing is retried
//! until it succeeds (with several writers, "EXIST after a retried CREATE" proves nothing),
//! so a call that got no answer, or "try again later", is recorded as unanswered — it may
//! or may not have taken effect, which the checker allows for.
//! Must never: record an answer the server did not give, or drop a mutation it sent.

use std::time::Instant;

use nfs3_client::nfs3_types::nfs3::*;
use nfs3_client::nfs3_types::xdr_codec::Opaque;

use crate::client::{CALL_TIMEOUT, Conn, name};
use crate::linear::{Call, Ret};

/// The shared directory (next to the clients' own).
pub const DIR: &str = "shared";
/// Shared files, each a register: its whole content is one value.
pub const FILES: [&str; 3] = ["s0", "s1", "s2"];
/// Shared names, each created and removed by everyone.
pub const NAMES: [&str; 4] = ["n0", "n1", "n2", "n3"];
/// A value's content: its number, little-endian, repeated. One 4 KiB write (one chunk,
/// one extent commit), so a write is all or nothing.
pub const CONTENT_BYTES: usize = 4096;

/// One recorded call: on `key` (a file or name of the shared directory).
#[derive(Clone, Debug)]
pub struct Op {
    pub key: &'static str,
    pub call: Call,
    pub called: Instant,
    /// The answer and when it came; `None`: none came, or "try again later".
    pub answer: Option<(Ret, Instant)>,
    /// The client that called ([`crate::linear::CHECKER`]: the checker after healing).
    pub client: usize,
}

pub fn content(v: u64) -> Vec<u8> {
    v.to_le_bytes().repeat(CONTENT_BYTES / 8)
}

/// The value a file's content holds (an empty file: 0); `None` if it is no whole value
/// (a torn or foreign write).
pub fn value_of(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() {
        return Some(0);
    }
    if bytes.len() != CONTENT_BYTES {
        return None;
    }
    let first: [u8; 8] = bytes[..8].try_into().ok()?;
    bytes.chunks(8).all(|c| c == first).then(|| u64::from_le_bytes(first))
}

/// Handles of the shared directory and files.
#[derive(Clone)]
pub struct Shared {
    pub dir: nfs_fh3,
    pub files: Vec<nfs_fh3>,
}

/// What one call gave: an answer, none (unknown outcome), or an answer that is itself a
/// failure (described).
pub enum Outcome {
    Answered(Ret),
    Unanswered,
    Failed(String),
}

fn status_is_jukebox(s: &nfsstat3) -> bool {
    matches!(s, nfsstat3::NFS3ERR_JUKEBOX)
}

/// A name operation's answer: `ok` on success, EXIST and NOENT as what they say of the
/// name, JUKEBOX as no answer.
fn name_outcome<T, E>(r: Nfs3Result<T, E>, ok: Ret, what: &str) -> Outcome {
    match r {
        Nfs3Result::Ok(_) => Outcome::Answered(ok),
        Nfs3Result::Err((nfsstat3::NFS3ERR_EXIST, _)) => Outcome::Answered(Ret::Exists),
        Nfs3Result::Err((nfsstat3::NFS3ERR_NOENT, _)) => Outcome::Answered(Ret::Missing),
        Nfs3Result::Err((s, _)) if status_is_jukebox(&s) => Outcome::Unanswered,
        Nfs3Result::Err((s, _)) => Outcome::Failed(format!("{what}: {s:?}")),
    }
}

/// Makes (or finds) the shared directory and files; every client does, at once.
pub async fn setup(conn: &mut Conn, root: &nfs_fh3) -> Option<Shared> {
    let dir = {
        let args = MKDIR3args {
            where_: diropargs3 { dir: root.clone(), name: name(DIR) },
            attributes: sattr3 { mode: set_mode3::Some(0o777), ..Default::default() },
        };
        let made = crate::client::rpc!(conn, c => c.mkdir(&args));
        match made {
            Some(Nfs3Result::Ok(MKDIR3resok { obj: Nfs3Option::Some(fh), .. })) => fh,
            _ => lookup(conn, root, DIR).await?,
        }
    };
    let mut files = Vec::new();
    for f in FILES {
        let args = CREATE3args {
            where_: diropargs3 { dir: dir.clone(), name: name(f) },
            how: createhow3::UNCHECKED(sattr3 { mode: set_mode3::Some(0o666), ..Default::default() }),
        };
        let made = crate::client::rpc!(conn, c => c.create(&args));
        let fh = match made {
            Some(Nfs3Result::Ok(CREATE3resok { obj: Nfs3Option::Some(fh), .. })) => fh,
            _ => lookup(conn, &dir, f).await?,
        };
        files.push(fh);
    }
    Some(Shared { dir, files })
}

async fn lookup(conn: &mut Conn, dir: &nfs_fh3, n: &str) -> Option<nfs_fh3> {
    let args = LOOKUP3args { what: diropargs3 { dir: dir.clone(), name: name(n) } };
    match crate::client::rpc!(conn, c => c.lookup(&args))? {
        Nfs3Result::Ok(ok) => Some(ok.object),
        Nfs3Result::Err(_) => None,
    }
}

/// One attempt of `call` on `key` (file `FILES[i]` or name `NAMES[i]`).
pub async fn attempt(conn: &mut Conn, shared: &Shared, call: Call, i: usize) -> Outcome {
    let Some(c) = conn.client().await else { return Outcome::Unanswered };
    let sent = Instant::now();
    let answered = match call {
        Call::Write(v) => {
            let data = content(v);
            let args = WRITE3args {
                file: shared.files[i].clone(),
                offset: 0,
                count: CONTENT_BYTES as u32,
                stable: stable_how::FILE_SYNC,
                data: Opaque::borrowed(&data),
            };
            tokio::time::timeout(CALL_TIMEOUT, c.write(&args)).await.map(|r| {
                r.map(|r| match r {
                    Nfs3Result::Ok(ok) if ok.count as usize == CONTENT_BYTES => Outcome::Answered(Ret::Done),
                    Nfs3Result::Ok(ok) => Outcome::Failed(format!("short write ({} bytes)", ok.count)),
                    Nfs3Result::Err((s, _)) if status_is_jukebox(&s) => Outcome::Unanswered,
                    Nfs3Result::Err((s, _)) => Outcome::Failed(format!("WRITE: {s:?}")),
                })
            })
        }
        Call::Read => {
            let args = READ3args { file: shared.files[i].clone(), offset: 0, count: CONTENT_BYTES as u32 * 2 };
            tokio::time::timeout(CALL_TIMEOUT, c.read(&args)).await.map(|r| {
                r.map(|r| match r {
                    Nfs3Result::Ok(ok) => match value_of(ok.data.as_ref()) {
                        Some(v) => Outcome::Answered(Ret::Value(v)),
                        None => Outcome::Failed(format!("READ returned {} bytes that are no whole value", ok.data.len())),
                    },
                    Nfs3Result::Err((s, _)) if status_is_jukebox(&s) => Outcome::Unanswered,
                    Nfs3Result::Err((s, _)) => Outcome::Failed(format!("READ: {s:?}")),
                })
            })
        }
        Call::Create => {
            let args = CREATE3args {
                where_: diropargs3 { dir: shared.dir.clone(), name: name(NAMES[i]) },
                how: createhow3::GUARDED(sattr3 { mode: set_mode3::Some(0o644), ..Default::default() }),
            };
            tokio::time::timeout(CALL_TIMEOUT, c.create(&args)).await.map(|r| r.map(|r| name_outcome(r, Ret::Done, "CREATE")))
        }
        Call::Remove => {
            let args = REMOVE3args { object: diropargs3 { dir: shared.dir.clone(), name: name(NAMES[i]) } };
            tokio::time::timeout(CALL_TIMEOUT, c.remove(&args)).await.map(|r| r.map(|r| name_outcome(r, Ret::Done, "REMOVE")))
        }
        Call::Lookup => {
            let args = LOOKUP3args { what: diropargs3 { dir: shared.dir.clone(), name: name(NAMES[i]) } };
            tokio::time::timeout(CALL_TIMEOUT, c.lookup(&args)).await.map(|r| r.map(|r| name_outcome(r, Ret::Exists, "LOOKUP")))
        }
    };
    match answered {
        Ok(Ok(outcome)) => outcome,
        // Timed out, or the connection broke: move to a new one.
        _ => {
            conn.broke(sent);
            Outcome::Unanswered
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_reads_back_as_itself_and_anything_else_is_no_value() {
        for v in [0, 1, u64::MAX, 0x0102_0304_0506_0708] {
            assert_eq!(value_of(&content(v)), Some(v));
        }
        assert_eq!(value_of(&[]), Some(0), "an empty file is value 0");
        let mut torn = content(5);
        torn[100] ^= 1;
        assert_eq!(value_of(&torn), None);
        assert_eq!(value_of(&content(5)[..4000]), None, "cut short");
    }
}
