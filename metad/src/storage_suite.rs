//! Runs openraft's storage conformance suite against the redb log store and state machine.

use openraft::StorageError;
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::type_config::TypeConfigExt;

use crate::command::TypeConfig;
use crate::log_store::LogStore;
use crate::state_machine::StateMachineStore;

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for Builder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachineStore), StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().map_err(|e| StorageError::read(TypeConfig::err_from_error(&e)))?;
        let db = crate::store::open(dir.path()).map_err(|e| StorageError::read(TypeConfig::err_from_error(&e)))?;
        let snapshots = crate::snapshot_file::SnapshotDir::open(dir.path())
            .map_err(|e| StorageError::read(TypeConfig::err_from_error(&e)))?;
        Ok((dir, LogStore::new(db.clone()), StateMachineStore::new(db, snapshots)))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite() {
    Suite::test_all(Builder).await.unwrap();
}
