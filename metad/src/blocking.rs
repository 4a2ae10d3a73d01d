//! Runs synchronous redb work off the async runtime.
//!
//! Owns: the one helper every storage adapter uses to run a closure over the database on
//! tokio's blocking pool (redb commits fsync, which must not stall runtime workers). Only
//! point reads skip it (`Metad::read_small`).
//! Must never: hold async locks or call back into openraft.

use std::sync::Arc;

use redb::Database;

use crate::error::Result;

/// Runs `f` against `db` on the blocking pool and returns its result.
pub async fn run<T, F>(db: &Arc<Database>, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce(&Database) -> Result<T> + Send + 'static,
{
    let db = Arc::clone(db);
    tokio::task::spawn_blocking(move || f(&db)).await?
}
