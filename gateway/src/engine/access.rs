//! Short-lived memory of positive permission answers, so a stream of WRITEs (or buffered
//! READs) by one caller costs one metad Access call per `ACCESS_TTL`, not one per call.
//!
//! Owns: a bounded map from (file, credential, permission bit) to the instant metad
//! granted it. Must never remember a refusal (a chmod that grants access takes effect at
//! once) nor answer for longer than `ACCESS_TTL` (a chmod that revokes access takes effect
//! within it — the same window NFS clients' own access caches allow). The owner of a file
//! counts as granted write (metad's CommitExtents lets the owner write, as POSIX lets an
//! owner write through a descriptor opened before a chmod).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use proto::{FileHandle, pb};

use super::lock;

/// How long a granted permission is trusted without asking metad again.
pub const ACCESS_TTL: Duration = Duration::from_secs(1);
/// Entries kept at most (expired ones are swept first; beyond it nothing new is cached).
pub const MAX_ENTRIES: usize = 16 * 1024;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    node: FileHandle,
    uid: u32,
    gid: u32,
    gids: Vec<u32>,
    bit: u32,
}

impl Key {
    fn new(node: FileHandle, cred: &pb::Cred, bit: u32) -> Key {
        Key { node, uid: cred.uid, gid: cred.gid, gids: cred.gids.clone(), bit }
    }
}

#[derive(Debug, Default)]
pub struct AccessCache {
    granted: Mutex<HashMap<Key, Instant>>,
}

impl AccessCache {
    /// Whether `cred` was granted `bit` on `node` less than `ACCESS_TTL` before `now`.
    pub fn allows(&self, node: FileHandle, cred: &pb::Cred, bit: u32, now: Instant) -> bool {
        lock(&self.granted).get(&Key::new(node, cred, bit)).is_some_and(|at| now.duration_since(*at) < ACCESS_TTL)
    }

    /// Remembers that metad granted `bit` at `now`.
    pub fn grant(&self, node: FileHandle, cred: &pb::Cred, bit: u32, now: Instant) {
        let mut map = lock(&self.granted);
        if map.len() >= MAX_ENTRIES {
            map.retain(|_, at| now.duration_since(*at) < ACCESS_TTL);
            if map.len() >= MAX_ENTRIES {
                return;
            }
        }
        map.insert(Key::new(node, cred, bit), now);
    }

    /// Forgets everything about `node` (its permissions may have changed).
    pub fn forget(&self, node: FileHandle) {
        lock(&self.granted).retain(|k, _| k.node != node);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const N: FileHandle = FileHandle { share_id: 1, ino: 2, generation: 1 };

    fn cred(uid: u32, gids: &[u32]) -> pb::Cred {
        pb::Cred { uid, gid: uid, gids: gids.to_vec() }
    }

    #[test]
    fn grants_expire_and_are_per_identity_and_bit() {
        let c = AccessCache::default();
        let t0 = Instant::now();
        assert!(!c.allows(N, &cred(5, &[]), 2, t0));
        c.grant(N, &cred(5, &[]), 2, t0);
        assert!(c.allows(N, &cred(5, &[]), 2, t0 + ACCESS_TTL / 2));
        assert!(!c.allows(N, &cred(5, &[]), 2, t0 + ACCESS_TTL));
        assert!(!c.allows(N, &cred(6, &[]), 2, t0));
        assert!(!c.allows(N, &cred(5, &[9]), 2, t0));
        assert!(!c.allows(N, &cred(5, &[]), 1, t0));
        c.forget(N);
        assert!(!c.allows(N, &cred(5, &[]), 2, t0));
    }

    #[test]
    fn bounded() {
        let c = AccessCache::default();
        let t0 = Instant::now();
        for uid in 0..MAX_ENTRIES as u32 {
            c.grant(N, &cred(uid, &[]), 2, t0);
        }
        c.grant(N, &cred(u32::MAX, &[]), 2, t0);
        assert!(!c.allows(N, &cred(u32::MAX, &[]), 2, t0), "full of live entries: not cached");
        // Once the old entries expired they make room.
        c.grant(N, &cred(u32::MAX, &[]), 2, t0 + ACCESS_TTL);
        assert!(c.allows(N, &cred(u32::MAX, &[]), 2, t0 + ACCESS_TTL));
        assert_eq!(lock(&c.granted).len(), 1);
    }
}
