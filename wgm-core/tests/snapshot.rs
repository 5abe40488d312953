//! Export and import of a whole store on the in-memory engine, the reference
//! (`wgm_core::conformance::store::snapshot_round_trip`; the SQL and Redis engines run
//! the same check in their own tests).

use std::sync::Arc;

use wgm_core::conformance::store as suite;
use wgm_core::store::MemoryStore;

#[tokio::test]
async fn memory_snapshot_round_trip() {
    suite::snapshot_round_trip(Arc::new(MemoryStore::new()), Arc::new(MemoryStore::new()))
        .await
        .unwrap();
}

#[tokio::test]
async fn memory_snapshot_under_writes() {
    suite::snapshot_is_consistent_under_writes(Arc::new(MemoryStore::new()))
        .await
        .unwrap();
}
