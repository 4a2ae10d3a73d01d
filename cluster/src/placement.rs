//! Rendezvous (highest-random-weight) placement of chunks on block daemons.
//!
//! Owns: the score of a (chunk, daemon) pair, the choice of a chunk's replica set from a list
//! of daemon ids ([`replicas`]), and the cluster's default replication factor
//! ([`default_rf`]).
//! Must never: change the score function once data exists (every chunk would move), read a
//! clock or randomness, or depend on the order of the daemon list it is given.
//!
//! The score of daemon `d` for chunk `c` is the first 8 bytes, read little-endian, of
//! `BLAKE3-derive-key("tessera placement v1 chunk-daemon score", c ‖ d as 8 little-endian
//! bytes)`. A chunk's replicas are the `rf` daemons with the highest scores, highest first
//! (ties, astronomically unlikely, are broken by the larger id). The first replica is the
//! chunk's *primary*: it uploads the chunk to S3 and leads its repair. Because each daemon's
//! score is independent of the others, adding a daemon only moves chunks for which the new
//! daemon scores into the top `rf`, and removing one only moves chunks it held.

use proto::ChunkHash;

/// A block daemon's stable id (never 0).
pub type DaemonId = u64;

/// The BLAKE3 key-derivation context of the placement score. Never change it.
const SCORE_CONTEXT: &str = "tessera placement v1 chunk-daemon score";

/// The replication factor a cluster uses when a share does not set one.
pub const MAX_DEFAULT_RF: usize = 3;

/// The rendezvous score of `daemon` for `chunk` (higher wins).
pub fn score(chunk: &ChunkHash, daemon: DaemonId) -> u64 {
    let mut h = blake3::Hasher::new_derive_key(SCORE_CONTEXT);
    h.update(chunk.as_bytes());
    h.update(&daemon.to_le_bytes());
    let out = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&out.as_bytes()[..8]);
    u64::from_le_bytes(first)
}

/// The replica set of `chunk`: the (at most) `rf` distinct daemons of `daemons` with the
/// highest scores, highest first. Duplicate ids in `daemons` count once; the result does not
/// depend on their order. Fewer than `rf` daemons yield all of them.
pub fn replicas(chunk: &ChunkHash, daemons: &[DaemonId], rf: usize) -> Vec<DaemonId> {
    let mut scored: Vec<(u64, DaemonId)> = daemons.iter().map(|&d| (score(chunk, d), d)).collect();
    scored.sort_unstable_by(|a, b| b.cmp(a));
    scored.dedup_by_key(|(_, d)| *d);
    scored.into_iter().take(rf).map(|(_, d)| d).collect()
}

/// The replication factor used when a share does not choose one: three copies, or as many as
/// there are live daemons when fewer (but at least one).
pub fn default_rf(live: usize) -> usize {
    live.clamp(1, MAX_DEFAULT_RF)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use proptest::prelude::*;

    use super::*;

    fn chunk(n: u64) -> ChunkHash {
        ChunkHash(*blake3::hash(&n.to_le_bytes()).as_bytes())
    }

    fn daemon_set() -> impl Strategy<Value = Vec<DaemonId>> {
        proptest::collection::btree_set(1u64..10_000, 1..12).prop_map(|s| s.into_iter().collect())
    }

    #[test]
    fn default_rf_is_three_or_the_live_count() {
        assert_eq!(default_rf(0), 1);
        assert_eq!(default_rf(1), 1);
        assert_eq!(default_rf(2), 2);
        assert_eq!(default_rf(3), 3);
        assert_eq!(default_rf(40), 3);
    }

    #[test]
    fn the_score_is_pinned() {
        // The placement of existing data depends on these exact values: never change them.
        let c = ChunkHash([7; 32]);
        let expected = {
            let mut h = blake3::Hasher::new_derive_key("tessera placement v1 chunk-daemon score");
            h.update(&[7; 32]);
            h.update(&42u64.to_le_bytes());
            u64::from_le_bytes(h.finalize().as_bytes()[..8].try_into().unwrap())
        };
        assert_eq!(score(&c, 42), expected);
        assert_ne!(score(&c, 42), score(&c, 43));
    }

    #[test]
    fn fewer_daemons_than_rf_yields_all_of_them_and_duplicates_count_once() {
        let c = chunk(1);
        let mut r = replicas(&c, &[5, 9, 5], 3);
        r.sort_unstable();
        assert_eq!(r, vec![5, 9]);
        assert!(replicas(&c, &[], 3).is_empty());
        assert!(replicas(&c, &[1, 2], 0).is_empty());
    }

    #[test]
    fn spread_is_roughly_even() {
        let daemons: Vec<DaemonId> = (1..=8).collect();
        let n = 20_000u64;
        let mut primaries: BTreeMap<DaemonId, u64> = BTreeMap::new();
        let mut held: BTreeMap<DaemonId, u64> = BTreeMap::new();
        for i in 0..n {
            let r = replicas(&chunk(i), &daemons, 3);
            *primaries.entry(r[0]).or_default() += 1;
            for d in r {
                *held.entry(d).or_default() += 1;
            }
        }
        let (p_expect, h_expect) = (n / 8, n * 3 / 8);
        for d in &daemons {
            let p = primaries.get(d).copied().unwrap_or(0);
            let h = held.get(d).copied().unwrap_or(0);
            // Within 10% of the mean (the binomial deviation here is about 2.5%).
            assert!(p.abs_diff(p_expect) < p_expect / 10, "daemon {d} is primary of {p} chunks, expected ~{p_expect}");
            assert!(h.abs_diff(h_expect) < h_expect / 10, "daemon {d} holds {h} chunks, expected ~{h_expect}");
        }
    }

    proptest! {
        #[test]
        fn deterministic_distinct_and_order_independent(
            daemons in daemon_set(),
            seed in any::<u64>(),
            rf in 1usize..5,
        ) {
            let c = chunk(seed);
            let a = replicas(&c, &daemons, rf);
            let mut reversed = daemons.clone();
            reversed.reverse();
            prop_assert_eq!(&a, &replicas(&c, &reversed, rf));
            prop_assert_eq!(a.len(), rf.min(daemons.len()));
            let distinct: BTreeSet<_> = a.iter().collect();
            prop_assert_eq!(distinct.len(), a.len());
            prop_assert!(a.iter().all(|d| daemons.contains(d)));
            // Ordered by score, the primary first.
            prop_assert!(a.windows(2).all(|w| score(&c, w[0]) >= score(&c, w[1])));
        }

        #[test]
        fn adding_a_daemon_moves_only_chunks_it_wins(
            daemons in daemon_set(),
            new in 10_000u64..20_000,
            rf in 1usize..5,
        ) {
            let mut grown = daemons.clone();
            grown.push(new);
            for i in 0..64 {
                let c = chunk(i);
                let before: BTreeSet<_> = replicas(&c, &daemons, rf).into_iter().collect();
                let after: BTreeSet<_> = replicas(&c, &grown, rf).into_iter().collect();
                if after.contains(&new) {
                    // The new daemon took a place: at most one old member left (none when the
                    // set was not full).
                    let lost: Vec<_> = before.difference(&after).collect();
                    prop_assert!(lost.len() <= 1);
                    prop_assert_eq!(after.len() - 1 + lost.len(), before.len());
                    if before.len() == rf {
                        prop_assert_eq!(lost.len(), 1);
                    }
                } else {
                    prop_assert_eq!(before, after);
                }
            }
        }

        #[test]
        fn removing_a_daemon_moves_only_chunks_it_held(
            daemons in daemon_set(),
            pick in any::<prop::sample::Index>(),
            rf in 1usize..5,
        ) {
            let gone = daemons[pick.index(daemons.len())];
            let shrunk: Vec<_> = daemons.iter().copied().filter(|d| *d != gone).collect();
            for i in 0..64 {
                let c = chunk(i);
                let before: BTreeSet<_> = replicas(&c, &daemons, rf).into_iter().collect();
                let after: BTreeSet<_> = replicas(&c, &shrunk, rf).into_iter().collect();
                if before.contains(&gone) {
                    // The survivors keep their places; at most one newcomer fills the gap.
                    let kept: BTreeSet<_> = before.iter().copied().filter(|d| *d != gone).collect();
                    prop_assert!(kept.is_subset(&after));
                    prop_assert!(after.len() <= kept.len() + 1);
                } else {
                    prop_assert_eq!(before, after);
                }
            }
        }
    }
}
