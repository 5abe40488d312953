//! The change feed (`ChangeFeed::watch`) of the SQL stores: the feed conformance suite
//! (`wgm_core::conformance::feed`) on SQLite (file and memory) and PostgreSQL — on
//! PostgreSQL with its listening sessions terminated mid-way — and what only these engines
//! have: a commit of another store on the same database (another process) wakes the
//! feed, PostgreSQL's feed comes back after its session is killed, and every feed ends
//! when its store is closed. Outages and their logs: `tests/feed_logs.rs`.
//!
//! The suite has no timer of its own; each test bounds it (60 s, far above what it takes).
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{add, create, open, peer, server, until_at, Kind};
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use sqlx::Connection;
use wgm_core::conformance::feed;
use wgm_core::model::RevisionNo;
use wgm_core::store::{ChangeFeed, ServerStore};

/// The bound of a whole feed suite.
const SUITE_LIMIT: Duration = Duration::from_secs(60);
/// The bound of one wait for the end of a feed.
const END_LIMIT: Duration = Duration::from_secs(30);

/// Terminate the sessions that listen on the database at `url` (the feed's connections:
/// the last statement of such a session is its `LISTEN`), from a connection of the test's
/// own. Retried until it terminated at least one (a listener may still be connecting);
/// returns how many it terminated.
async fn terminate_listeners(url: &str) -> usize {
    let mut c = sqlx::PgConnection::connect(url).await.unwrap();
    for _ in 0..100 {
        let done: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()
               AND query LIKE 'LISTEN%'",
        )
        .fetch_all(&mut c)
        .await
        .unwrap();
        let n = done.iter().filter(|t| **t).count();
        if n > 0 {
            c.close().await.unwrap();
            return n;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no listening session to terminate");
}

/// Run the feed suite on a store of `kind`; on PostgreSQL, its cut terminates the
/// listening sessions.
async fn suite(kind: Kind) {
    let Some(t) = open(kind).await else { return };
    let cut = t.url.clone().filter(|_| kind == Kind::Postgres).map(|url| {
        move || -> BoxFuture<'static, ()> {
            let url = url.clone();
            async move {
                terminate_listeners(&url).await;
            }
            .boxed()
        }
    });
    let disrupt = cut.as_ref().map(|c| c as &feed::Disrupt);
    tokio::time::timeout(SUITE_LIMIT, feed::run_all(t.store.clone(), disrupt))
        .await
        .expect("the feed suite did not finish within 60 s")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_sqlite_file() {
    suite(Kind::SqliteFile).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_sqlite_memory() {
    suite(Kind::SqliteMemory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_postgres() {
    suite(Kind::Postgres).await;
}

/// A commit made through a second `SqlStore` on the same SQLite file (another process's
/// view: its own pool and writer queue) is reported by the first store's feed, each
/// revision in turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_feed_sees_commits_of_another_store() {
    let t = open(Kind::SqliteFile).await.unwrap();
    let mut events = t.store.watch().await.unwrap();
    let other = t.reopen().await;
    let srv = server("elsewhere", None);
    create(&other, &srv).await;
    assert_eq!(until_at(&mut events, srv.id, RevisionNo(1)).await, Ok(()));
    other
        .commit(add(srv.id, 1, &peer(&srv, "a", 2)), common::key())
        .await
        .unwrap();
    assert_eq!(until_at(&mut events, srv.id, RevisionNo(2)).await, Ok(()));
}

/// Every feed ends when its store is closed (and a closed store starts none).
async fn ends_on_close(kind: Kind) {
    let Some(t) = open(kind).await else { return };
    let sql = t.sql.clone().unwrap();
    let mut events = sql.watch().await.unwrap();
    sql.close().await;
    let end = tokio::time::timeout(END_LIMIT, events.next()).await;
    assert_eq!(end, Ok(None), "the feed did not end with its store");
    assert_eq!(sql.watch().await.err().map(|e| e.code()), Some("store"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feed_ends_on_close_sqlite_file() {
    ends_on_close(Kind::SqliteFile).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feed_ends_on_close_sqlite_memory() {
    ends_on_close(Kind::SqliteMemory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feed_ends_on_close_postgres() {
    ends_on_close(Kind::Postgres).await;
}

/// After its listening session is terminated (as a restart of the server or a cut
/// network would), the PostgreSQL feed comes back by itself: a commit made meanwhile from
/// another store (another process) is reported as a gap or as a wake-up at or past it,
/// and later commits are reported again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_feed_comes_back_after_its_session_is_terminated() {
    let Some(t) = open(Kind::Postgres).await else {
        return;
    };
    let url = t.url.clone().unwrap();
    let mut events = t.store.watch().await.unwrap();
    assert_eq!(terminate_listeners(&url).await, 1);
    let writer = t.reopen().await;
    let srv = server("comeback", None);
    create(&writer, &srv).await;
    // `Missed` or the wake-up itself: both tell a follower to read the log.
    let _ = until_at(&mut events, srv.id, RevisionNo(1)).await;
    // Listening again: the next commit is a wake-up of its own (a `Missed` that was
    // still queued may come first).
    writer
        .commit(add(srv.id, 1, &peer(&srv, "after", 2)), common::key())
        .await
        .unwrap();
    if until_at(&mut events, srv.id, RevisionNo(2)).await.is_err() {
        assert_eq!(until_at(&mut events, srv.id, RevisionNo(2)).await, Ok(()));
    }
}
