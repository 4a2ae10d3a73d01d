//! The checker: after healing, every client's directory and files are read back through
//! the load balancer and compared with what the client had acknowledged; the run's
//! reads, failures, stalls and the nodes' logs are folded into the [`Summary`].
//!
//! Must never: count a missing or differing acknowledged state as anything but lost.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use nfs3_client::nfs3_types::nfs3::{LOOKUP3args, Nfs3Result, diropargs3, nfs_fh3, nfsstat3};

use crate::Summary;
use crate::linear::{self, Call, Entry, Ret};
use crate::shared;
use crate::client::{self, ClientReport, Conn};
use crate::cluster::ChaosCluster;
use crate::faults::Fault;

/// How long after a fault ends a slow operation still counts as its stall.
const AFTERMATH: Duration = Duration::from_secs(2);
const SHOWN_PROBLEMS: usize = 10;

pub async fn check(cluster: &ChaosCluster, reports: &[ClientReport], faults: &[Fault]) -> Summary {
    let mut s = Summary { faults_injected: faults.len(), ..Summary::default() };
    for f in faults {
        *s.faults_by_kind.entry(f.kind.to_string()).or_default() += 1;
        if let Some(ms) = f.failover_ms {
            s.leader_failover_ms.push(ms);
        }
    }
    let mut problems = Vec::new();
    let mut slowest = BTreeMap::new();
    let mut conn = Conn::new(cluster.lb);
    for r in reports {
        s.operations_acknowledged += r.acknowledged;
        s.failed_operations += r.failed.len();
        s.linearizability_violations += r.violations.len();
        problems.extend(r.failed.iter().cloned());
        problems.extend(r.violations.iter().cloned());
        for (start, end, op, calls) in &r.ops {
            // The fault this operation overlapped most (its window extended by AFTERMATH).
            let overlap = |f: &Fault| {
                let (lo, hi) = ((*start).max(f.start), (*end).min(f.end + AFTERMATH));
                hi.checked_duration_since(lo).unwrap_or_default()
            };
            let Some(f) = faults.iter().filter(|f| !overlap(f).is_zero()).max_by_key(|f| overlap(f)) else { continue };
            let ms = end.duration_since(*start).as_millis() as u64;
            let e = s.longest_stall_ms.entry(f.kind.to_string()).or_default();
            if ms > *e {
                *e = ms;
                slowest.insert(
                    f.kind,
                    format!("{op} took {ms} ms during {} of node {:?} ({calls})", f.kind, f.node.map(|n| n + 1)),
                );
            }
        }
        for (at, what) in &r.refused {
            // NFS3ERR_NOSPC is the right answer while a block daemon's disk is full.
            if faults.iter().any(|f| f.kind == "disk_full" && f.start <= *at && *at <= f.end + AFTERMATH) {
                s.refused_no_space += 1;
            } else {
                s.failed_operations += 1;
                problems.push(format!("{what} with no disk full"));
            }
        }
        for at in &r.reconnects {
            if let Some(f) = faults.iter().find(|f| f.start <= *at && *at <= f.end + AFTERMATH) {
                *s.reconnects_by_kind.entry(f.kind.to_string()).or_default() += 1;
            }
        }
        let (lost, msgs) = check_client(&mut conn, r).await;
        s.acknowledged_but_lost += lost;
        problems.extend(msgs);
    }
    let (answered, bad) = check_shared(&mut conn, reports).await;
    s.shared_operations = answered;
    s.linearizability_violations += bad.len();
    problems.extend(bad);
    s.slowest_operations = slowest.into_values().collect();
    for (at, what) in &cluster.exits {
        if faults.iter().any(|f| f.kind == "disk_full" && f.start <= *at && *at <= f.end + AFTERMATH) {
            s.expected_exits += 1;
        } else {
            s.unexpected_exits += 1;
            problems.push(what.clone());
        }
    }
    let panics = cluster.panics();
    s.panics = panics.len();
    problems.extend(panics);
    problems.truncate(SHOWN_PROBLEMS);
    s.problems = problems;
    s
}

/// The shared directory's histories, with a final read of every key after healing, each
/// checked by the model checker: (answered operations, one problem per key whose history
/// is not linearizable).
async fn check_shared(conn: &mut Conn, reports: &[ClientReport]) -> (usize, Vec<String>) {
    let mut ops: Vec<shared::Op> = reports.iter().flat_map(|r| r.shared_ops.iter().cloned()).collect();
    let answered = ops.iter().filter(|o| o.answer.is_some()).count();
    if ops.is_empty() {
        return (0, Vec::new());
    }
    let mut problems = Vec::new();
    // What healing left: every file read and every name looked up once more.
    let Some(root) = conn.root().await else {
        return (answered, vec!["shared: cannot mount through the load balancer after healing".into()]);
    };
    match shared::setup(conn, &root).await {
        Some(sh) => {
            for (i, key) in shared::FILES.iter().enumerate() {
                let called = std::time::Instant::now();
                match client::read_all(conn, &sh.files[i]).await {
                    Ok(bytes) => match shared::value_of(&bytes) {
                        Some(v) => ops.push(shared::Op { key, call: Call::Read, called, answer: Some((Ret::Value(v), std::time::Instant::now())), client: linear::CHECKER }),
                        None => problems.push(format!("shared/{key}: {} bytes after healing, no whole value", bytes.len())),
                    },
                    Err(e) => problems.push(format!("shared/{key}: READ after healing: {e}")),
                }
            }
            for key in shared::NAMES {
                let called = std::time::Instant::now();
                let args = LOOKUP3args { what: diropargs3 { dir: sh.dir.clone(), name: client::name(key) } };
                let ret = match client::rpc!(conn, c => c.lookup(&args)) {
                    Some(Nfs3Result::Ok(_)) => Ret::Exists,
                    Some(Nfs3Result::Err((nfsstat3::NFS3ERR_NOENT, _))) => Ret::Missing,
                    Some(Nfs3Result::Err((st, _))) => {
                        problems.push(format!("shared/{key}: LOOKUP after healing: {st:?}"));
                        continue;
                    }
                    None => {
                        problems.push(format!("shared/{key}: LOOKUP after healing never answered"));
                        continue;
                    }
                };
                ops.push(shared::Op { key, call: Call::Lookup, called, answer: Some((ret, std::time::Instant::now())), client: linear::CHECKER });
            }
        }
        None => problems.push("shared: the shared directory is gone after healing".into()),
    }
    let Some(base) = ops.iter().map(|o| o.called).min() else { return (answered, problems) };
    let ms_floor = |t: std::time::Instant| t.duration_since(base).as_millis() as u64;
    let ms_ceil = |t: std::time::Instant| t.duration_since(base).as_micros().div_ceil(1000) as u64;
    for key in shared::FILES.iter().chain(shared::NAMES.iter()) {
        let history: Vec<Entry> = ops
            .iter()
            .filter(|o| o.key == *key)
            .map(|o| Entry {
                call: o.call,
                call_ms: ms_floor(o.called),
                answer: o.answer.map(|(r, t)| (r, ms_ceil(t))),
                client: o.client,
            })
            .collect();
        if let Err(e) = linear::check(&history, 0) {
            problems.push(format!("shared/{key}: {e} ({} calls)", history.len()));
        }
    }
    (answered, problems)
}

/// Lost acknowledged states of one client: (count, descriptions).
async fn check_client(conn: &mut Conn, r: &ClientReport) -> (usize, Vec<String>) {
    let mut lost = 0;
    let mut msgs = Vec::new();
    let Some(root) = conn.root().await else {
        return (r.files.len().max(1), vec![format!("{}: cannot mount through the load balancer after healing", r.dir_name)]);
    };
    let dir = {
        let args = LOOKUP3args { what: diropargs3 { dir: root, name: client::name(&r.dir_name) } };
        match client::rpc!(conn, c => c.lookup(&args)) {
            Some(Nfs3Result::Ok(ok)) => ok.object,
            _ => {
                if r.files.is_empty() {
                    return (0, msgs);
                }
                return (r.files.len(), vec![format!("{}: directory not found after healing", r.dir_name)]);
            }
        }
    };
    let names: BTreeSet<String> = match client::list(conn, &dir).await {
        Ok(n) => n.into_iter().collect(),
        Err(e) => return (r.files.len(), vec![format!("{}: READDIR failed after healing: {e}", r.dir_name)]),
    };
    let want: BTreeSet<String> = r.files.keys().cloned().collect();
    for missing in want.difference(&names) {
        lost += 1;
        msgs.push(format!("{}/{missing}: acknowledged but missing", r.dir_name));
    }
    for extra in names.difference(&want) {
        if !r.uncertain.contains_key(extra) {
            lost += 1;
            msgs.push(format!("{}/{extra}: removed or renamed (acknowledged) but present", r.dir_name));
        }
    }
    for (fname, data) in &r.files {
        if !names.contains(fname) {
            continue;
        }
        match read_back(conn, &dir, fname).await {
            Ok(got) if &got == data => {}
            Ok(got) => {
                lost += 1;
                msgs.push(format!("{}/{fname}: {} bytes read back, {} acknowledged", r.dir_name, got.len(), data.len()));
            }
            Err(e) => {
                lost += 1;
                msgs.push(format!("{}/{fname}: {e}", r.dir_name));
            }
        }
    }
    // A failed operation's names: absent, or holding what the operation may have made.
    for (fname, u) in &r.uncertain {
        if !names.contains(fname) || r.files.contains_key(fname) {
            continue;
        }
        let problem = match read_back(conn, &dir, fname).await {
            Ok(got) => client::partial_outcome_problem(&u.old, &u.writes, &got),
            Err(e) => Some(e),
        };
        if let Some(p) = problem {
            lost += 1;
            msgs.push(format!("{}/{fname} (its operation failed): {p}", r.dir_name));
        }
    }
    (lost, msgs)
}

/// The content of `fname` in `dir`, or what went wrong.
async fn read_back(conn: &mut Conn, dir: &nfs_fh3, fname: &str) -> Result<Vec<u8>, String> {
    let args = LOOKUP3args { what: diropargs3 { dir: dir.clone(), name: client::name(fname) } };
    let fh = match client::rpc!(conn, c => c.lookup(&args)) {
        Some(Nfs3Result::Ok(ok)) => ok.object,
        _ => return Err("listed but LOOKUP fails".into()),
    };
    client::read_all(conn, &fh).await.map_err(|e| format!("READ failed after healing: {e}"))
}
