//! Chunk placement: which block daemons hold a chunk (rendezvous hashing).
//!
//! Owns one pure function, `replicas`: every daemon id gets the score
//! `BLAKE3(chunk hash || daemon id, little-endian)` (its first 8 bytes as a little-endian
//! u64) and the chunk lives on the `rf` highest-scoring daemons, highest first (the first is
//! the primary). Adding a daemon moves only the chunks it now wins; removing one moves only
//! the chunks it held. Must never depend on the order of `daemons`, on time or on process
//! state: every gateway and block daemon must compute the same set.
//!
//! This is the gateway's stand-in for `cluster::placement` (same signature): swapping it is
//! replacing this file's body with a re-export.

use proto::ChunkHash;

/// The replica set of `chunk` among `daemons` (ids; duplicates ignored): at most `rf`
/// distinct ids, best first. Asking for `rf >= daemons.len()` orders every daemon.
pub fn replicas(chunk: &ChunkHash, daemons: &[u64], rf: usize) -> Vec<u64> {
    let mut scored: Vec<(u64, u64)> = daemons.iter().map(|&id| (score(chunk, id), id)).collect();
    // Ties (astronomically unlikely) are broken by id so the order stays total.
    scored.sort_unstable_by(|a, b| b.cmp(a));
    scored.dedup_by_key(|s| s.1);
    scored.into_iter().take(rf).map(|(_, id)| id).collect()
}

/// The cluster default replication factor for `live` daemons: 3, or fewer if there are
/// fewer daemons (used when metad's answer does not name one).
pub fn default_rf(live: usize) -> usize {
    live.min(3)
}

fn score(chunk: &ChunkHash, daemon: u64) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(chunk.as_bytes());
    h.update(&daemon.to_le_bytes());
    let out = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&out.as_bytes()[..8]);
    u64::from_le_bytes(first)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hash(seed: u64) -> ChunkHash {
        ChunkHash(*blake3::hash(&seed.to_le_bytes()).as_bytes())
    }

    proptest! {
        #[test]
        fn deterministic_distinct_and_order_independent(
            seed in any::<u64>(),
            ids in proptest::collection::hash_set(any::<u64>(), 1..12),
            rf in 1usize..5,
        ) {
            let ids: Vec<u64> = ids.into_iter().collect();
            let set = replicas(&hash(seed), &ids, rf);
            prop_assert_eq!(set.len(), rf.min(ids.len()));
            let mut sorted = set.clone();
            sorted.sort_unstable();
            sorted.dedup();
            prop_assert_eq!(sorted.len(), set.len(), "replicas are distinct");
            prop_assert!(set.iter().all(|id| ids.contains(id)));
            let mut reversed = ids.clone();
            reversed.reverse();
            prop_assert_eq!(replicas(&hash(seed), &reversed, rf), set.clone());
            // A smaller rf is a prefix of a larger one (the primary stays the primary).
            prop_assert_eq!(&replicas(&hash(seed), &ids, rf + 3)[..set.len()], &set[..]);
        }

        #[test]
        fn adding_a_daemon_moves_only_what_it_wins(
            ids in proptest::collection::hash_set(0u64..1_000, 3..10),
            new in 1_000u64..2_000,
            rf in 1usize..4,
        ) {
            let before: Vec<u64> = ids.into_iter().collect();
            let mut after = before.clone();
            after.push(new);
            for seed in 0..64u64 {
                let (old, now) = (replicas(&hash(seed), &before, rf), replicas(&hash(seed), &after, rf));
                if now.contains(&new) {
                    // The newcomer displaced exactly one daemon: the old set's last.
                    let kept: Vec<u64> = now.iter().copied().filter(|&id| id != new).collect();
                    prop_assert_eq!(&kept[..], &old[..old.len() - 1]);
                } else {
                    prop_assert_eq!(now, old, "a chunk the newcomer does not win does not move");
                }
            }
        }
    }

    #[test]
    fn spreads_primaries_over_daemons() {
        let ids = [1, 2, 3, 4];
        let mut primaries = [0u32; 4];
        for seed in 0..4_000 {
            let first = replicas(&hash(seed), &ids, 1)[0];
            primaries[(first - 1) as usize] += 1;
        }
        // Each daemon expects 1000; a broken score (e.g. constant) would give one all of them.
        assert!(primaries.iter().all(|&n| (800..1_200).contains(&n)), "{primaries:?}");
        assert_eq!(default_rf(2), 2);
        assert_eq!(default_rf(7), 3);
    }
}
