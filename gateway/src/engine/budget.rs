//! The global write-buffer budget: bytes of dirty data all files may hold together.
//!
//! Owns the counting only (a semaphore of byte permits). A writer takes permits before its
//! data enters a buffer and waits while the budget is exhausted (back-pressure); a flush
//! gives them back. Must never drop data or fail a write for lack of budget, and never
//! deadlock on a single write larger than the whole budget (such a write takes the whole
//! budget and is allowed to overshoot).
//!
//! Publishes the bytes held as the `tessera_gateway_dirty_bytes` gauge: 0 means every
//! acknowledged write is durable.

use proto::FsError;
use tokio::sync::Semaphore;

#[derive(Debug)]
pub struct Budget {
    sem: Semaphore,
    capacity: u64,
}

impl Budget {
    /// `capacity` is clamped to what a semaphore can count.
    pub fn new(capacity: u64) -> Budget {
        let capacity = capacity.clamp(1, Semaphore::MAX_PERMITS as u64);
        Budget { sem: Semaphore::new(capacity as usize), capacity }
    }

    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    pub fn available(&self) -> u64 {
        self.sem.available_permits() as u64
    }

    fn publish(&self) {
        let held = self.capacity.saturating_sub(self.available());
        metrics::gauge!(cluster::metrics::GATEWAY_DIRTY_BYTES).set(held as f64);
    }

    fn clamp(&self, want: u64) -> u32 {
        want.min(self.capacity).min(u64::from(u32::MAX)) as u32
    }

    /// Takes up to `want` permits without waiting; `None` if they are not all free now.
    pub fn try_acquire(&self, want: u64) -> Option<u64> {
        let n = self.clamp(want);
        let permit = self.sem.try_acquire_many(n).ok()?;
        permit.forget();
        self.publish();
        Some(u64::from(n))
    }

    /// Waits for up to `want` permits (see the module doc for oversized writes) and returns
    /// how many were taken; the caller owns them until [`Budget::release`].
    pub async fn acquire(&self, want: u64) -> Result<u64, FsError> {
        let n = self.clamp(want);
        let permit = self
            .sem
            .acquire_many(n)
            .await
            .map_err(|_| FsError::Internal("write buffer budget closed".into()))?;
        permit.forget();
        self.publish();
        Ok(u64::from(n))
    }

    pub fn release(&self, n: u64) {
        if n > 0 {
            self.sem.add_permits(n.min(self.capacity) as usize);
            self.publish();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn oversized_requests_take_the_whole_budget() {
        let b = Budget::new(100);
        assert_eq!(b.try_acquire(40), Some(40));
        assert_eq!(b.try_acquire(70), None);
        b.release(40);
        assert_eq!(b.acquire(1_000).await.ok(), Some(100));
        assert_eq!(b.available(), 0);
        b.release(100);
        assert_eq!(b.available(), 100);
    }
}
