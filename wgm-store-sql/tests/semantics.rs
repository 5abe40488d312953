//! The store semantics checks live in `wgm_core::conformance::store`, which
//! `tests/conformance.rs` runs on SQLite (file and memory) and PostgreSQL. Here the same
//! suite runs on `MemoryStore`, the reference the SQL stores must equal, so that one
//! `cargo test -p wgm-store-sql` shows all engines side by side.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use wgm_core::conformance::store as suite;
use wgm_core::store::MemoryStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_runs_the_whole_suite_twice() {
    let store = Arc::new(MemoryStore::new());
    suite::run_all(store.clone()).await.unwrap();
    suite::run_all(store).await.unwrap();
}
