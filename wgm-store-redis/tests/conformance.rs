//! `wgm_core::conformance::store` on Redis: each check in a fresh namespace, then the whole
//! suite twice in one namespace (the checks must hold on a store that already has data).
//! Needs `WGM_TEST_REDIS_URL`; skipped with one printed line otherwise.
#![allow(clippy::unwrap_used)]

mod common;

use wgm_core::conformance::store as suite;

macro_rules! conformance {
    ($($check:ident),* $(,)?) => {
        $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
           async fn $check() {
               let Some(t) = common::open().await else { return };
               suite::$check(t.dyn_store()).await.unwrap();
           } )*
    };
}

// One test per check of the suite, from its own list.
wgm_core::store_checks!(conformance);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_all_twice_in_one_namespace() {
    let Some(t) = common::open().await else {
        return;
    };
    suite::run_all(t.dyn_store()).await.unwrap();
    suite::run_all(t.dyn_store()).await.unwrap();
}

/// Export and import (`suite::snapshot_round_trip`): Redis into Redis (two namespaces),
/// and across engines with the in-memory reference.
mod snapshot {
    use std::sync::Arc;

    use super::*;
    use wgm_core::store::MemoryStore;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_to_redis() {
        let Some(a) = common::open().await else {
            return;
        };
        let Some(b) = common::open().await else {
            return;
        };
        suite::snapshot_round_trip(a.dyn_store(), b.dyn_store())
            .await
            .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_export_under_writes() {
        let Some(a) = common::open().await else {
            return;
        };
        suite::snapshot_is_consistent_under_writes(a.dyn_store())
            .await
            .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn memory_to_redis() {
        let Some(b) = common::open().await else {
            return;
        };
        suite::snapshot_round_trip(Arc::new(MemoryStore::new()), b.dyn_store())
            .await
            .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_to_memory() {
        let Some(a) = common::open().await else {
            return;
        };
        suite::snapshot_round_trip(a.dyn_store(), Arc::new(MemoryStore::new()))
            .await
            .unwrap();
    }
}

/// The login throttle shared by two managers on one namespace
/// (`suite::login_throttle_shared_by_managers`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_throttle_shared_by_managers() {
    let Some(t) = common::open().await else {
        return;
    };
    suite::login_throttle_shared_by_managers(t.dyn_store())
        .await
        .unwrap();
}
