//! The background flusher and `flush_all`.
//!
//! Owns when buffered data is flushed without a client asking: files idle for
//! `flush_idle`, every dirty file when the write budget runs low or a writer waits for it,
//! and failed flushes after their backoff. Also forgets clean file state, and drops every
//! buffer after the process was stalled (`STALL`: a SIGSTOP, a VM pause, a swap storm):
//! its clients will have timed out and may have written the same ranges through another
//! gateway since, which a late flush of the old copy would overwrite; the verifier changes
//! so that they resend what they had not committed (found by the chaos harness,
//! docs/reliability.md). Must never keep
//! the engine alive (it holds a `Weak`), and stops when the shutdown token is cancelled;
//! `flush_all` is how a graceful shutdown makes the remaining writes durable.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use futures::StreamExt;
use proto::FsError;

use super::{ChunkApi, Engine, MetaApi, lock};

const MIN_TICK: Duration = Duration::from_millis(5);
const MAX_TICK: Duration = Duration::from_secs(1);
/// Files flushed at once by the background flusher.
const FLUSH_CONCURRENCY: usize = 4;
/// A wake-up this much later than asked means the whole process was stalled.
const STALL: Duration = Duration::from_secs(2);

/// Starts the flusher task of `engine` on the current runtime.
pub(super) fn spawn<M: MetaApi, C: ChunkApi>(
    runtime: &tokio::runtime::Handle,
    engine: &Arc<Engine<M, C>>,
    shutdown: cluster::Shutdown,
) {
    let weak: Weak<Engine<M, C>> = Arc::downgrade(engine);
    let pressure = engine.pressure.clone();
    let tick = (engine.flush_idle / 4).clamp(MIN_TICK, MAX_TICK);
    runtime.spawn(async move {
        loop {
            // tokio's clock: the same one the sleep uses (and tests can advance).
            let asleep = tokio::time::Instant::now();
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = pressure.notified() => {}
                _ = tokio::time::sleep(tick) => {}
            }
            let Some(engine) = weak.upgrade() else { break };
            let late = asleep.elapsed().saturating_sub(tick);
            if late > STALL {
                engine.drop_after_stall(late);
            }
            tokio::select! {
                // Abandoning a flush midway is safe: data leaves a buffer only after commit.
                _ = shutdown.cancelled() => break,
                _ = engine.background_pass() => {}
            }
        }
        tracing::debug!("engine background flusher stopped");
    });
}

impl<M: MetaApi, C: ChunkApi> Engine<M, C> {
    /// Drops every buffered write (see the module comment), changing the verifier first if
    /// any was acknowledged UNSTABLE.
    pub(super) fn drop_after_stall(&self, late: Duration) {
        let files = self.files.all();
        let unstable = files.iter().any(|(_, f)| lock(&f.inner).unstable_acked);
        if unstable {
            self.verifier.rotate();
        }
        let mut dropped = 0;
        for (_, f) in files {
            let excess = {
                let mut inner = lock(&f.inner);
                if inner.buf.is_empty() {
                    continue;
                }
                dropped += 1;
                inner.buf.clear();
                inner.unstable_acked = false;
                inner.excess_permits()
            };
            self.budget.release(excess);
        }
        tracing::warn!(late_ms = late.as_millis() as u64, files = dropped, verifier_changed = unstable, "the process was stalled: buffered writes dropped (clients resend)");
    }

    /// Whether writers wait, or soon will, for write-buffer budget.
    fn under_pressure(&self) -> bool {
        self.writers_waiting.load(Ordering::SeqCst) > 0 || self.budget.available() < self.budget.capacity() / 4
    }

    async fn background_pass(&self) {
        let now = Instant::now();
        let pressure = self.under_pressure();
        let due: Vec<_> = self
            .files
            .all()
            .into_iter()
            .filter(|(_, f)| {
                let inner = lock(&f.inner);
                !inner.buf.is_empty()
                    && inner.retry_at.is_none_or(|t| t <= now)
                    && (pressure || now.duration_since(inner.last_write) >= self.flush_idle)
            })
            .collect();
        futures::stream::iter(due)
            .for_each_concurrent(FLUSH_CONCURRENCY, |(node, f)| async move {
                // Failures are logged and scheduled for retry by flush_locked.
                let _ = self.flush_file(node, &f).await;
            })
            .await;
        self.files.forget_clean(now);
    }

    /// Whether metad answers a linearizable read through this engine's link now (the
    /// gateway's readiness: a gateway that cannot reach a metad quorum can serve nothing).
    pub async fn probe_metad(&self) -> Result<(), FsError> {
        self.meta.list_shares().await.map(|_| ())
    }

    /// Makes every buffered write durable (graceful shutdown, or an SMB-wide flush).
    /// Returns the first failure after trying every file; files that no longer exist are
    /// not failures (their data has nowhere to go).
    pub async fn flush_all(&self) -> Result<(), FsError> {
        let mut first_err = None;
        for (node, f) in self.files.all() {
            if lock(&f.inner).buf.is_empty() {
                continue;
            }
            match self.flush_file(node, &f).await {
                Ok(()) | Err(FsError::Stale | FsError::NotFound) => {}
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}
