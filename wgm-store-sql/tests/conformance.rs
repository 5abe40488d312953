//! `wgm_core::conformance::store` against SQLite (file and memory) and PostgreSQL: each
//! check on a fresh database, then the whole suite twice on one database (the checks must
//! hold on a store that already has data). The suite holds every store semantics check
//! (compare-and-swap, uniqueness, atomicity, history, identities, audit, host leases and
//! reports, F3, F16, F17); the change feed's suite runs in `tests/feed.rs`;
//! `MemoryStore`, the reference, runs the same suite (`tests/semantics.rs` here, and
//! `wgm-core/tests/manager.rs`).
#![allow(clippy::unwrap_used)]

mod common;

use common::{open, Kind};
use wgm_core::conformance::store as suite;

macro_rules! conformance {
    ($($check:ident),* $(,)?) => {
        mod sqlite_file {
            use super::*;
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $check() {
                   let t = open(Kind::SqliteFile).await.unwrap();
                   suite::$check(t.store.clone()).await.unwrap();
               } )*
        }
        mod sqlite_memory {
            use super::*;
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $check() {
                   let t = open(Kind::SqliteMemory).await.unwrap();
                   suite::$check(t.store.clone()).await.unwrap();
               } )*
        }
        mod postgres {
            use super::*;
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $check() {
                   let Some(t) = open(Kind::Postgres).await else { return };
                   suite::$check(t.store.clone()).await.unwrap();
               } )*
        }
    };
}

// One test per check of the suite, from its own list.
wgm_core::store_checks!(conformance);

async fn run_all_twice(kind: Kind) {
    let Some(t) = open(kind).await else { return };
    suite::run_all(t.store.clone()).await.unwrap();
    suite::run_all(t.store.clone()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_all_twice_on_one_sqlite_file() {
    run_all_twice(Kind::SqliteFile).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_all_twice_on_one_postgres_database() {
    run_all_twice(Kind::Postgres).await;
}

/// Export and import (`suite::snapshot_round_trip`): within each engine, and across them
/// (SQLite into PostgreSQL and back, memory into SQLite).
mod snapshot {
    use super::*;

    async fn round_trip(from: Kind, to: Kind) {
        let Some(a) = open(from).await else { return };
        let Some(b) = open(to).await else { return };
        suite::snapshot_round_trip(a.store.clone(), b.store.clone())
            .await
            .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_file_to_sqlite_memory() {
        round_trip(Kind::SqliteFile, Kind::SqliteMemory).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_to_postgres() {
        round_trip(Kind::Postgres, Kind::Postgres).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_to_postgres() {
        round_trip(Kind::SqliteFile, Kind::Postgres).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_to_sqlite() {
        round_trip(Kind::Postgres, Kind::SqliteMemory).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_export_under_writes() {
        let Some(a) = open(Kind::SqliteFile).await else {
            return;
        };
        suite::snapshot_is_consistent_under_writes(a.store.clone())
            .await
            .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_export_under_writes() {
        let Some(a) = open(Kind::Postgres).await else {
            return;
        };
        suite::snapshot_is_consistent_under_writes(a.store.clone())
            .await
            .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn memory_to_sqlite() {
        let Some(b) = open(Kind::SqliteFile).await else {
            return;
        };
        suite::snapshot_round_trip(
            std::sync::Arc::new(wgm_core::store::MemoryStore::new()),
            b.store.clone(),
        )
        .await
        .unwrap();
    }
}

/// The login throttle shared by two managers on one database
/// (`suite::login_throttle_shared_by_managers`): concurrent failures on both all count,
/// a block holds on both, a success on one clears the account for both.
mod login_throttle {
    use super::*;

    async fn shared(kind: Kind) {
        let Some(t) = open(kind).await else { return };
        suite::login_throttle_shared_by_managers(t.store.clone())
            .await
            .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shared_by_managers_on_sqlite_file() {
        shared(Kind::SqliteFile).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shared_by_managers_on_sqlite_memory() {
        shared(Kind::SqliteMemory).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shared_by_managers_on_postgres() {
        shared(Kind::Postgres).await;
    }
}
