//! Concurrent clients against a three-voter group end with a namespace that a sequential
//! model explains.
//!
//! Eight clients (two gateways' worth) create, rename and remove names drawn from a small
//! pool in four shared directories, so they collide constantly. Every successful mutation
//! reports the change counter of each directory it touched (wcc_data "after"); per
//! directory those counters order the operations, and the union of the per-directory orders
//! must be acyclic (a cycle means two operations were seen in opposite orders: not
//! linearizable). Replaying the operations in that order in a plain in-memory model must
//! accept each of them (a create found its name free, a remove or rename found its source)
//! and end exactly where metad ended: the same names, mapping to the same inodes.
#![allow(clippy::unwrap_used)] // tests may unwrap (workspace lint note)

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use metad::testing::{LocalGroup, SHARE};
use proto::FsError;
use proto::pb::meta_client::MetaClient;
use proto::pb::{self, CreateHow, FileType, NodeRef};
use rand::{Rng, SeedableRng};
use tonic::transport::Channel;

const CLIENTS: usize = 8;
const OPS_PER_CLIENT: usize = 120;
const DIRS: usize = 4;
const NAMES: usize = 12;

fn cred() -> Option<pb::Cred> {
    Some(pb::Cred { uid: 0, gid: 0, gids: vec![] })
}

#[derive(Debug, Clone)]
enum Op {
    Create { dir: usize, name: usize, ino: u64 },
    Remove { dir: usize, name: usize },
    Rename { from: (usize, usize), to: (usize, usize) },
}

/// A successful operation and the change counter it left on each directory it touched.
#[derive(Debug)]
struct Event {
    op: Op,
    stamps: Vec<(usize, u64)>,
}

fn change_of(w: Option<pb::WccDir>) -> u64 {
    w.and_then(|w| w.after).map(|a| a.change).expect("wcc_data with post-op attributes")
}

async fn client(channel: Channel, dirs: Vec<NodeRef>, seed: u64) -> (Vec<Event>, usize) {
    let mut c = MetaClient::new(channel);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut events = Vec::new();
    let mut refused = 0;
    let name = |i: usize| format!("n{i}").into_bytes();
    for _ in 0..OPS_PER_CLIENT {
        let (d, n) = (rng.random_range(0..DIRS), rng.random_range(0..NAMES));
        match rng.random_range(0..3) {
            0 => {
                let r = c
                    .create(pb::CreateRequest {
                        dir: Some(dirs[d]),
                        name: name(n),
                        kind: FileType::Regular as i32,
                        mode: 0o644,
                        how: CreateHow::Guarded as i32,
                        cred: cred(),
                        ..Default::default()
                    })
                    .await;
                match r {
                    Ok(r) => {
                        let r = r.into_inner();
                        let ino = r.attr.and_then(|a| a.node).unwrap().ino;
                        events.push(Event { op: Op::Create { dir: d, name: n, ino }, stamps: vec![(d, change_of(r.dir))] });
                    }
                    Err(s) => {
                        assert_eq!(FsError::from_status(&s), FsError::Exists, "create may only fail with Exists");
                        refused += 1;
                    }
                }
            }
            1 => {
                let r = c
                    .remove(pb::RemoveRequest {
                        dir: Some(dirs[d]),
                        name: name(n),
                        directory: false,
                        cred: cred(),
                        ..Default::default()
                    })
                    .await;
                match r {
                    Ok(r) => events.push(Event { op: Op::Remove { dir: d, name: n }, stamps: vec![(d, change_of(r.into_inner().dir))] }),
                    Err(s) => {
                        assert_eq!(FsError::from_status(&s), FsError::NotFound, "remove may only fail with NotFound");
                        refused += 1;
                    }
                }
            }
            _ => {
                let (d2, n2) = (rng.random_range(0..DIRS), rng.random_range(0..NAMES));
                if (d2, n2) == (d, n) {
                    // Renaming a name onto itself changes nothing (and stamps nothing).
                    continue;
                }
                let r = c
                    .rename(pb::RenameRequest {
                        from_dir: Some(dirs[d]),
                        from_name: name(n),
                        to_dir: Some(dirs[d2]),
                        to_name: name(n2),
                        cred: cred(),
                        ..Default::default()
                    })
                    .await;
                match r {
                    Ok(r) => {
                        let r = r.into_inner();
                        let mut stamps = vec![(d, change_of(r.from_dir))];
                        if d2 != d {
                            stamps.push((d2, change_of(r.to_dir)));
                        }
                        events.push(Event { op: Op::Rename { from: (d, n), to: (d2, n2) }, stamps });
                    }
                    Err(s) => {
                        assert_eq!(FsError::from_status(&s), FsError::NotFound, "rename may only fail with NotFound");
                        refused += 1;
                    }
                }
            }
        }
    }
    (events, refused)
}

/// Orders events consistently with every directory's change counters (Kahn's algorithm).
fn linearize(events: &[Event]) -> Result<Vec<usize>, String> {
    let mut per_dir: HashMap<usize, Vec<(u64, usize)>> = HashMap::new();
    for (i, e) in events.iter().enumerate() {
        for &(d, change) in &e.stamps {
            per_dir.entry(d).or_default().push((change, i));
        }
    }
    let mut succ: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); events.len()];
    let mut indeg = vec![0usize; events.len()];
    for (d, mut seq) in per_dir {
        seq.sort();
        for w in seq.windows(2) {
            if w[0].0 == w[1].0 {
                return Err(format!("two operations left directory {d} at the same change counter {}", w[0].0));
            }
            if succ[w[0].1].insert(w[1].1) {
                indeg[w[1].1] += 1;
            }
        }
    }
    let mut ready: VecDeque<usize> = (0..events.len()).filter(|&i| indeg[i] == 0).collect();
    let mut order = Vec::with_capacity(events.len());
    while let Some(i) = ready.pop_front() {
        order.push(i);
        for &j in &succ[i] {
            indeg[j] -= 1;
            if indeg[j] == 0 {
                ready.push_back(j);
            }
        }
    }
    if order.len() != events.len() {
        return Err("the directories' change orders form a cycle: not linearizable".into());
    }
    Ok(order)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_clients_match_a_sequential_model() {
    let group = LocalGroup::start(3).await.unwrap();
    let channel = Channel::from_shared(group.leader_addr().await.unwrap()).unwrap().connect().await.unwrap();
    let mut c = MetaClient::new(channel.clone());
    let share = c.get_share(pb::GetShareRequest { export_path: SHARE.1.into() }).await.unwrap().into_inner();
    let root = share.root.and_then(|r| r.node).unwrap();
    let mut dirs = Vec::new();
    for d in 0..DIRS {
        let r = c
            .create(pb::CreateRequest {
                dir: Some(root),
                name: format!("d{d}").into_bytes(),
                kind: FileType::Directory as i32,
                mode: 0o777,
                how: CreateHow::Guarded as i32,
                cred: cred(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        dirs.push(r.attr.and_then(|a| a.node).unwrap());
    }

    let tasks: Vec<_> =
        (0..CLIENTS).map(|i| tokio::spawn(client(channel.clone(), dirs.clone(), 0x5eed + i as u64))).collect();
    let mut events = Vec::new();
    let mut refused = 0;
    for t in tasks {
        let (e, r) = tokio::time::timeout(Duration::from_secs(120), t).await.expect("clients finish").unwrap();
        events.extend(e);
        refused += r;
    }
    assert!(events.len() > CLIENTS * OPS_PER_CLIENT / 4, "enough operations succeeded ({})", events.len());
    assert!(refused > 0, "the clients collided (otherwise the test proves little)");

    let order = linearize(&events).unwrap();
    let mut model: BTreeMap<(usize, usize), u64> = BTreeMap::new();
    for i in order {
        match events[i].op.clone() {
            Op::Create { dir, name, ino } => {
                assert!(model.insert((dir, name), ino).is_none(), "create of an existing name succeeded: {:?}", events[i]);
            }
            Op::Remove { dir, name } => {
                assert!(model.remove(&(dir, name)).is_some(), "remove of a missing name succeeded: {:?}", events[i]);
            }
            Op::Rename { from, to } => {
                let ino = model.remove(&from).unwrap_or_else(|| panic!("rename of a missing name succeeded: {:?}", events[i]));
                model.insert(to, ino);
            }
        }
    }

    for (d, dir) in dirs.iter().enumerate() {
        let mut actual = BTreeMap::new();
        let mut cookie = 0;
        loop {
            let r = c
                .read_dir(pb::ReadDirRequest { dir: Some(*dir), cookie, max_entries: 5, cred: cred(), ..Default::default() })
                .await
                .unwrap()
                .into_inner();
            for e in &r.entries {
                let n: usize = std::str::from_utf8(&e.name).unwrap().trim_start_matches('n').parse().unwrap();
                actual.insert((d, n), e.attr.as_ref().and_then(|a| a.node).unwrap().ino);
                cookie = e.cookie;
            }
            if r.eof {
                break;
            }
        }
        let expected: BTreeMap<_, _> = model.iter().filter(|((md, _), _)| *md == d).map(|(k, v)| (*k, *v)).collect();
        assert_eq!(actual, expected, "directory d{d} matches the sequential model");
    }
    group.stop().await;
}
