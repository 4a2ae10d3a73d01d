//! The NFS write verifier: 8 random bytes, new on every engine start, replaced whenever
//! acknowledged UNSTABLE data could not be made durable (so clients resend it).
//!
//! Owns only the value. Must never be derived from a clock alone (two gateways started in
//! the same instant would collide) and never repeat a previous value of this process.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug)]
pub struct WriteVerifier(AtomicU64);

impl WriteVerifier {
    pub fn new() -> WriteVerifier {
        WriteVerifier(AtomicU64::new(rand::random()))
    }

    pub fn current(&self) -> [u8; 8] {
        self.0.load(Ordering::SeqCst).to_be_bytes()
    }

    /// Replaces the verifier with a fresh random value different from the current one.
    pub fn rotate(&self) {
        let old = self.0.load(Ordering::SeqCst);
        let mut new: u64 = rand::random();
        if new == old {
            new = old.wrapping_add(1);
        }
        self.0.store(new, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_changes_the_value_and_starts_differ() {
        let v = WriteVerifier::new();
        let a = v.current();
        v.rotate();
        assert_ne!(a, v.current());
        assert_ne!(WriteVerifier::new().current(), WriteVerifier::new().current());
    }
}
