//! Fail-stop for a node: the first fatal failure of its stores ends the process.
//!
//! Owns: watching the block store's writer (`blockd::Store::failed`: a failed fsync, or an
//! index commit out of space) and metad's Raft core (`metad::Metad::failed`: a log or
//! state-machine write failed) from the moment each is started, and cutting short whatever
//! the node is doing — still starting its other roles, or serving — with the cause. The
//! caller then stops the roles and returns an error, so the process exits non-zero and its
//! service manager (systemd `Restart=on-failure`, compose `restart: on-failure`) restarts
//! it; recovery re-reads its data. Nothing acknowledged is at risk: a failed write was
//! never acknowledged.
//! Must never: keep a store alive after the node stops (watchers are aborted when this is
//! dropped), or treat a normal shutdown as a failure.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::AbortHandle;

/// The first fatal failure of a node's stores, once there is one.
pub struct Failure {
    cause: watch::Sender<Option<String>>,
    watchers: std::sync::Mutex<Vec<AbortHandle>>,
}

impl Failure {
    pub fn new() -> Failure {
        Failure { cause: watch::Sender::new(None), watchers: std::sync::Mutex::new(Vec::new()) }
    }

    fn watch(&self, failed: impl Future<Output = String> + Send + 'static) {
        let tx = self.cause.clone();
        let task = tokio::spawn(async move {
            let cause = failed.await;
            tx.send_if_modified(|c| c.is_none() && c.replace(cause).is_none());
        });
        self.watchers.lock().unwrap_or_else(|e| e.into_inner()).push(task.abort_handle());
    }

    /// From now on, a fatal error of `metad`'s Raft core is a failure of the node.
    pub fn watch_metad(&self, metad: metad::Metad) {
        self.watch(async move { format!("metad's Raft core stopped ({})", metad.failed().await) });
    }

    /// From now on, a failure of `store`'s writer is a failure of the node.
    pub fn watch_blockd(&self, store: Arc<blockd::Store>) {
        self.watch(async move { format!("the block store failed ({})", store.failed().await) });
    }

    /// Resolves with the first failure's cause.
    pub async fn wait(&self) -> String {
        let mut rx = self.cause.subscribe();
        // The guard is dropped before any further await (the future stays Send).
        let cause = rx.wait_for(Option::is_some).await.map(|c| c.clone().unwrap_or_default());
        match cause {
            Ok(cause) => cause,
            // The sender is gone (the store is being dropped): never resolves.
            Err(_) => std::future::pending().await,
        }
    }

    /// `step`'s result, unless a failure comes first (then an error with its cause).
    pub async fn before<T>(&self, step: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
        tokio::select! {
            r = step => r,
            cause = self.wait() => {
                tracing::error!(%cause, "failed while starting: exiting so that the node is restarted");
                anyhow::bail!("{cause}; exiting so that the node is restarted")
            }
        }
    }
}

impl Drop for Failure {
    fn drop(&mut self) {
        for w in self.watchers.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            w.abort();
        }
    }
}
