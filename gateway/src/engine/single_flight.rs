//! Single-flight: concurrent requests for one key share one fetch.
//!
//! Owns the table of fetches in flight. The first caller for a key runs its fetch (the
//! leader); callers that arrive while it runs wait for its answer instead of fetching the
//! same thing again (a chunk straddling two concurrent READs, a READ overtaking the
//! read-ahead that is already fetching its chunks; sixteen WRITEs in flight that all find
//! their file's write lease due for a check). Must never leave waiters hanging: a
//! leader that is cancelled mid-fetch removes its entry and closes its channel, and each
//! waiter then fetches for itself. Must never hold its mutex across an `.await`.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::Mutex;

use tokio::sync::watch;

use super::lock;

type Slot<V, E> = watch::Receiver<Option<Result<V, E>>>;

/// Fetches in flight, by key.
#[derive(Debug)]
pub struct SingleFlight<K, V, E> {
    in_flight: Mutex<HashMap<K, Slot<V, E>>>,
}

impl<K, V, E> Default for SingleFlight<K, V, E> {
    fn default() -> Self {
        SingleFlight { in_flight: Mutex::new(HashMap::new()) }
    }
}

/// The leader's hold on its entry: removes it when the fetch ends or is cancelled.
struct Leader<'a, K: Hash + Eq, V, E> {
    flights: &'a SingleFlight<K, V, E>,
    key: K,
    tx: watch::Sender<Option<Result<V, E>>>,
}

impl<K: Hash + Eq, V, E> Drop for Leader<'_, K, V, E> {
    fn drop(&mut self) {
        // The entry is this leader's: a key gets a new one only once it is absent.
        lock(&self.flights.in_flight).remove(&self.key);
    }
}

impl<K: Hash + Eq + Clone, V: Clone, E: Clone> SingleFlight<K, V, E> {
    /// `fetch`'s answer for `key`, or the answer of the fetch of `key` already running.
    pub async fn run<F, Fut>(&self, key: K, fetch: F) -> Result<V, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        let leader = loop {
            let joined = {
                let mut map = lock(&self.in_flight);
                match map.get(&key) {
                    Some(rx) => Err(rx.clone()),
                    None => {
                        let (tx, rx) = watch::channel(None);
                        map.insert(key.clone(), rx);
                        Ok(Leader { flights: self, key: key.clone(), tx })
                    }
                }
            };
            match joined {
                Ok(leader) => break leader,
                Err(mut rx) => {
                    if let Ok(v) = rx.wait_for(Option::is_some).await
                        && let Some(answer) = v.as_ref()
                    {
                        return answer.clone();
                    }
                    // The leader was cancelled: try again (lead, or wait for a new leader).
                }
            }
        };
        let answer = fetch().await;
        leader.tx.send_replace(Some(answer.clone()));
        drop(leader);
        answer
    }

    /// Fetches in flight now (tests).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        lock(&self.in_flight).len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use tokio::sync::Notify;

    use super::*;

    #[tokio::test]
    async fn concurrent_callers_share_one_fetch_and_its_error() {
        let sf: Arc<SingleFlight<u32, u64, String>> = Arc::default();
        let calls = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(Notify::new());
        let mut tasks = Vec::new();
        for _ in 0..5 {
            let (sf, calls, gate) = (sf.clone(), calls.clone(), gate.clone());
            tasks.push(tokio::spawn(async move {
                sf.run(7, || async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    gate.notified().await;
                    Ok(42)
                })
                .await
            }));
        }
        // Every caller has joined the one fetch once the leader is parked on the gate.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while calls.load(Ordering::SeqCst) == 0 {
            assert!(tokio::time::Instant::now() < deadline, "no fetch started");
            tokio::task::yield_now().await;
        }
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        gate.notify_one();
        for t in tasks {
            assert_eq!(t.await.expect("task"), Ok(42));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1, "one fetch for five callers");
        assert_eq!(sf.len(), 0, "the finished fetch left the table");

        // Errors are shared too, and not remembered: the next call fetches again.
        let r = sf.run(7, || async { Err::<u64, _>("down".to_string()) }).await;
        assert_eq!(r, Err("down".into()));
        assert_eq!(sf.run(7, || async { Ok(1) }).await, Ok(1));
    }

    #[tokio::test]
    async fn a_cancelled_leader_does_not_strand_its_waiters() {
        let sf: Arc<SingleFlight<u32, u64, String>> = Arc::default();
        let started = Arc::new(Notify::new());
        let leader = {
            let (sf, started) = (sf.clone(), started.clone());
            tokio::spawn(async move {
                sf.run(1, || async move {
                    started.notify_one();
                    std::future::pending::<Result<u64, String>>().await
                })
                .await
            })
        };
        started.notified().await;
        let waiter = {
            let sf = sf.clone();
            tokio::spawn(async move { sf.run(1, || async { Ok(9) }).await })
        };
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        leader.abort();
        let answer = tokio::time::timeout(Duration::from_secs(10), waiter).await.expect("waiter finished");
        assert_eq!(answer.expect("task"), Ok(9), "the waiter fetched for itself");
        assert_eq!(sf.len(), 0);
    }
}
