//! The background loop shared by repair and scrub: wait an interval, run one pass, repeat.
//!
//! Owns only the timing and the stop: a shutdown ends the wait or the pass under way. Must
//! never: run two passes at once, or start a pass after shutdown.

use std::future::Future;
use std::time::Duration;

use cluster::Shutdown;

/// Runs `pass` every `interval` (after the wait, not before) until `shutdown`.
pub(crate) async fn every<F, Fut>(interval: Duration, shutdown: Shutdown, mut pass: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            () = pass() => {}
        }
    }
}
