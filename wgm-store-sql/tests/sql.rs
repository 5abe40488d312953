//! What only a SQL store has: durability across reopen, migrations, URLs, tampering with
//! rows behind the store's back, bulk commits over the batch sizes, and PostgreSQL's
//! notifications behind its change feed (the feed itself: `tests/feed.rs`).
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{add, commit, create, entry, open, peer, server, Kind, PgDatabase};
use futures::StreamExt;
use sqlx::Connection;
use wgm_core::integrity::{ChainVerifier, LegacyBound};
use wgm_core::model::{AuditQuery, Change, PeerStats, RevisionNo};
use wgm_core::store::{AuditStore, ChangeFeed, FeedEvent, ServerStore};
use wgm_store_sql::{SqlOptions, SqlStore};

/// The error's text if the stored log does not verify.
async fn chain_error(s: &dyn wgm_core::store::Store) -> Option<String> {
    common::verify_chain(s).await.err().map(|e| e.to_string())
}

/// Data survives closing and reopening; reopening applies no migration twice.
#[tokio::test]
async fn sqlite_file_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("wgm.db").display());
    let srv = server("durable", Some("10.1.0.0/24"));
    {
        let s = SqlStore::open(&url).await.unwrap();
        create(&s, &srv).await;
        s.commit(add(srv.id, 1, &peer(&srv, "a", 2)), common::key())
            .await
            .unwrap();
        s.close().await;
        assert_eq!(s.head(srv.id).await.unwrap_err().code(), "store");
    }
    let s = SqlStore::open(&url).await.unwrap();
    let st = s.load_server(srv.id).await.unwrap().unwrap();
    assert_eq!((st.revision, st.peers.len()), (RevisionNo(2), 1));
    assert_eq!(
        s.query_audit(&AuditQuery::default()).await.unwrap().len(),
        2
    );
}

/// A database written by a newer schema is refused, not used; a store already open
/// reports the newer schema (what a readiness probe looks at).
#[tokio::test]
async fn newer_schema_is_refused() {
    use wgm_core::store::Store;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wgm.db");
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let open = SqlStore::open(&url).await.unwrap();
    let v = open.schema_version().await.unwrap();
    assert!(v.is_current() && v.known >= 3, "{v:?}");
    let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query(
        "INSERT INTO schema_migrations (version, name, applied_ns) VALUES (999, 'future', 0)",
    )
    .execute(&mut c)
    .await
    .unwrap();
    c.close().await.unwrap();
    let now = open.schema_version().await.unwrap();
    assert_eq!((now.found, now.known), (999, v.known));
    assert!(!now.is_current());
    open.close().await;
    let e = SqlStore::open(&url).await.unwrap_err();
    assert_eq!(e.code(), "store");
    assert!(e.to_string().contains("999"), "{e}");
}

/// URLs of no supported backend are invalid input; a missing file without `mode=rwc` is
/// a store error; `Debug` never shows the URL (it may carry a password).
#[tokio::test]
async fn urls_and_debug() {
    assert_eq!(
        SqlStore::open("mysql://root:hunter2@localhost/db")
            .await
            .unwrap_err()
            .code(),
        "invalid_input"
    );
    assert_eq!(
        SqlStore::open("").await.unwrap_err().code(),
        "invalid_input"
    );
    let e = SqlStore::open("mysql://root:hunter2@localhost/db")
        .await
        .unwrap_err();
    assert!(!e.to_string().contains("hunter2"));
    let dir = tempfile::tempdir().unwrap();
    let missing = format!("sqlite://{}", dir.path().join("absent.db").display());
    assert_eq!(SqlStore::open(&missing).await.unwrap_err().code(), "store");
    let s = SqlStore::open_with("sqlite::memory:", SqlOptions::default().max_connections(3))
        .await
        .unwrap();
    assert_eq!(format!("{s:?}"), r#"SqlStore { backend: "sqlite" }"#);
    // SQLite has a change feed too (it polls; `tests/feed.rs`).
    assert!(s.watch().await.is_ok());
}

async fn tamper(kind: Kind) {
    let Some(t) = open(kind).await else { return };
    let s = &*t.store;
    let srv = server("tamper", None);
    create(s, &srv).await;
    for i in 0..3u16 {
        s.commit(
            add(
                srv.id,
                u64::from(i) + 1,
                &peer(&srv, &format!("p{i}"), i + 2),
            ),
            common::key(),
        )
        .await
        .unwrap();
    }
    s.append_audit(entry("secret.export", "server/x/peer/y"), common::key())
        .await
        .unwrap();
    assert_eq!(chain_error(s).await, None);

    // An attacker with database access edits a record, then deletes one.
    let (edit, delete) = match kind {
        Kind::Postgres => (
            "UPDATE wgm.audit SET body = replace(body::text, 'server.change', 'server.chang3')::json WHERE seq = 2",
            "DELETE FROM wgm.audit WHERE seq = 4",
        ),
        _ => (
            "UPDATE audit SET body = replace(body, 'server.change', 'server.chang3') WHERE seq = 2",
            "DELETE FROM audit WHERE seq = 4",
        ),
    };
    raw(&t, edit).await;
    let e = chain_error(s).await.unwrap();
    assert!(e.contains("record 2") && e.contains("altered"), "{e}");
    raw(&t, delete).await;
    // Records 2 (edited, but its stored hash still links) and 3, then the gap before 5.
    let mut chain = s
        .query_audit(&AuditQuery {
            after_seq: Some(1),
            limit: Some(1),
            ..Default::default()
        })
        .await
        .unwrap();
    chain.extend(
        s.query_audit(&AuditQuery {
            after_seq: Some(2),
            ..Default::default()
        })
        .await
        .unwrap(),
    );
    let legacy = LegacyBound::empty();
    let mut v = ChainVerifier::new(Some((common::key(), &legacy)), None);
    // Start the verifier on record 1 so that the window's own links are checked.
    let first = s
        .query_audit(&AuditQuery {
            limit: Some(1),
            ..Default::default()
        })
        .await
        .unwrap();
    v.push(&first[0]).unwrap();
    let e = chain.iter().skip(1).find_map(|r| v.push(r).err()).unwrap();
    assert!(e.to_string().contains("deleted"), "{e}");
}

async fn raw(t: &common::TestStore, sql: &str) {
    let url = t.url.as_deref().unwrap();
    if url.starts_with("sqlite:") {
        let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
        assert_eq!(
            sqlx::query(sql)
                .execute(&mut c)
                .await
                .unwrap()
                .rows_affected(),
            1
        );
        c.close().await.unwrap();
    } else {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        assert_eq!(
            sqlx::query(sql)
                .execute(&mut c)
                .await
                .unwrap()
                .rows_affected(),
            1
        );
        c.close().await.unwrap();
    }
}

/// Editing or deleting an audit row in the database is detected by the hash chain.
#[tokio::test]
async fn audit_tampering_is_detected_sqlite() {
    tamper(Kind::SqliteFile).await;
}

/// Editing or deleting an audit row in the database is detected by the hash chain.
#[tokio::test]
async fn audit_tampering_is_detected_postgres() {
    tamper(Kind::Postgres).await;
}

/// The store's own check is backed by constraints: a peer row that would duplicate an
/// address cannot be written behind the store's back either.
async fn constraints(kind: Kind) {
    let Some(t) = open(kind).await else { return };
    let srv = server("constrained", Some("10.2.0.0/24"));
    create(&*t.store, &srv).await;
    t.store
        .commit(add(srv.id, 1, &peer(&srv, "a", 2)), common::key())
        .await
        .unwrap();
    let copy = match kind {
        Kind::Postgres => {
            "INSERT INTO wgm.peers (server_id, id, name_key, public_key, address_v6, address_v4, body, stats)
             SELECT server_id, gen_random_uuid(), 'other', 'k', address_v6, NULL, body, stats FROM wgm.peers"
        }
        _ => {
            "INSERT INTO peers (server_id, id, name_key, public_key, address_v6, address_v4, body, stats)
             SELECT server_id, 'x', 'other', 'k', address_v6, NULL, body, stats FROM peers"
        }
    };
    let url = t.url.as_deref().unwrap();
    let err = if url.starts_with("sqlite:") {
        let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::query(copy).execute(&mut c).await.unwrap_err()
    } else {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::query(copy).execute(&mut c).await.unwrap_err()
    };
    assert!(
        err.as_database_error().unwrap().is_unique_violation(),
        "{err}"
    );
}

#[tokio::test]
async fn unique_constraints_back_the_checks_sqlite() {
    constraints(Kind::SqliteFile).await;
}

#[tokio::test]
async fn unique_constraints_back_the_checks_postgres() {
    constraints(Kind::Postgres).await;
}

/// One commit of 2 600 peers (over every insert batch size), loaded back whole; then
/// statistics of all of them in one call, and one more peer on top.
async fn bulk(kind: Kind) {
    const N: u16 = 2600;
    let Some(t) = open(kind).await else { return };
    let s = &*t.store;
    let srv = server("bulk", Some("10.3.0.0/20"));
    create(s, &srv).await;
    let peers: Vec<_> = (0..N)
        .map(|i| peer(&srv, &format!("peer-{i}"), i + 2))
        .collect();
    let changes = peers
        .iter()
        .map(|p| Change::PeerAdded {
            peer: Box::new(p.clone()),
        })
        .collect();
    s.commit(commit(srv.id, 1, changes), common::key())
        .await
        .unwrap();
    let st = s.load_server(srv.id).await.unwrap().unwrap();
    assert_eq!(st.peers.len(), usize::from(N));
    for p in &peers {
        assert_eq!(&st.peers[&p.id], p);
    }
    let stats: Vec<_> = peers
        .iter()
        .enumerate()
        .map(|(i, p)| {
            (
                p.id,
                PeerStats {
                    last_seen: None,
                    rx_bytes: i as u64,
                    tx_bytes: 1,
                },
            )
        })
        .collect();
    s.update_peer_stats(srv.id, &stats).await.unwrap();
    let st = s.load_server(srv.id).await.unwrap().unwrap();
    assert!(stats.iter().all(|(id, x)| st.peers[id].stats == *x));
    s.commit(
        add(srv.id, 2, &peer(&srv, "one-more", N + 2)),
        common::key(),
    )
    .await
    .unwrap();
    let list = s.list_servers(wgm_core::model::Page::ALL).await.unwrap();
    assert_eq!(list[0].peer_count, u64::from(N) + 1);
    let rev = s.revisions(srv.id, RevisionNo(1), 1).await.unwrap();
    assert_eq!(rev[0].changes.len(), usize::from(N));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_commit_and_load_sqlite() {
    bulk(Kind::SqliteFile).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_commit_and_load_postgres() {
    bulk(Kind::Postgres).await;
}

/// PostgreSQL `LISTEN/NOTIFY` behind `ChangeFeed::watch`: every commit arrives as its own
/// wake-up `(server, revision)`, in order, also from another store instance; failed
/// commits send nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_change_feed() {
    let Some(t) = open(Kind::Postgres).await else {
        return;
    };
    let sql = t.sql.clone().unwrap();
    let mut feed = sql.watch().await.unwrap();
    let writer = t.reopen().await;
    let srv = server("feed", None);
    create(&writer, &srv).await;
    assert!(writer
        .commit(add(srv.id, 5, &peer(&srv, "stale", 2)), common::key())
        .await
        .is_err());
    writer
        .commit(add(srv.id, 1, &peer(&srv, "a", 2)), common::key())
        .await
        .unwrap();
    for want in [1, 2] {
        let got = tokio::time::timeout(Duration::from_secs(30), feed.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            got,
            FeedEvent::Committed {
                server: srv.id,
                revision: RevisionNo(want)
            }
        );
    }
    // Nothing else is pending (the failed commit sent nothing).
    assert!(
        tokio::time::timeout(Duration::from_millis(300), feed.next())
            .await
            .is_err()
    );
}

/// Two stores opening one fresh PostgreSQL database at once: the advisory lock lets one
/// migrate, and both work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_concurrent_first_open() {
    let Some(admin) = common::postgres_admin_url() else {
        return;
    };
    let db = PgDatabase::create(&admin).await;
    let url = db.url();
    let (a, b) = tokio::join!(SqlStore::open(&url), SqlStore::open(&url));
    let (a, b) = (a.unwrap(), b.unwrap());
    create(&a, &server("x", None)).await;
    assert_eq!(
        b.list_servers(wgm_core::model::Page::ALL)
            .await
            .unwrap()
            .len(),
        1
    );
}

/// Two stores opening one new SQLite file at once: one migrates, both work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_concurrent_first_open() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("wgm.db").display());
    let (a, b) = tokio::join!(SqlStore::open(&url), SqlStore::open(&url));
    let (a, b) = (a.unwrap(), b.unwrap());
    create(&a, &server("x", None)).await;
    assert_eq!(
        b.list_servers(wgm_core::model::Page::ALL)
            .await
            .unwrap()
            .len(),
        1
    );
}

/// Run statements on the test's database behind the store's back (SQLite's text or
/// PostgreSQL's, which names the `wgm` schema), and read one count.
async fn statements(t: &common::TestStore, sqlite: &[&str], postgres: &[&str]) {
    let url = t.url.as_deref().unwrap();
    if url.starts_with("sqlite:") {
        let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
        for sql in sqlite {
            sqlx::query(sql).execute(&mut c).await.unwrap();
        }
        c.close().await.unwrap();
    } else {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        for sql in postgres {
            sqlx::query(sql).execute(&mut c).await.unwrap();
        }
        c.close().await.unwrap();
    }
}

async fn count(t: &common::TestStore, sqlite: &str, postgres: &str) -> i64 {
    let url = t.url.as_deref().unwrap();
    if url.starts_with("sqlite:") {
        let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
        let n = sqlx::query_scalar(sqlite).fetch_one(&mut c).await.unwrap();
        c.close().await.unwrap();
        n
    } else {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        let n = sqlx::query_scalar(postgres)
            .fetch_one(&mut c)
            .await
            .unwrap();
        c.close().await.unwrap();
        n
    }
}

fn throttle_record(failures: u32, expires_at: i64) -> wgm_core::store::ThrottleRecord {
    wgm_core::store::ThrottleRecord {
        state: wgm_core::auth::throttle::ThrottleState {
            failures,
            last_failure: 1_800_000_000,
            blocked_until: 0,
        },
        expires_at: time::OffsetDateTime::from_unix_timestamp(expires_at).unwrap(),
    }
}

/// A database written before the login throttle (schema version 3) opens with this
/// build: migration 4 adds table `login_throttle`, the data is kept, and the throttle
/// works on it.
async fn schema_3_migrates(kind: Kind) {
    use wgm_core::auth::throttle::ThrottleKey;
    use wgm_core::store::ThrottleStore;
    let Some(t) = open(kind).await else { return };
    let srv = server("before-throttle", None);
    create(&*t.store, &srv).await;
    statements(
        &t,
        &[
            "DROP TABLE login_throttle",
            "DELETE FROM schema_migrations WHERE version = 4",
        ],
        &[
            "DROP TABLE wgm.login_throttle",
            "DELETE FROM wgm.schema_migrations WHERE version = 4",
        ],
    )
    .await;
    let versions = "SELECT count(*) FROM schema_migrations";
    let pg_versions = "SELECT count(*) FROM wgm.schema_migrations";
    assert_eq!(count(&t, versions, pg_versions).await, 3);
    // What a version-3 database is to this build: the throttle's table is missing.
    let now = time::OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
    let key = ThrottleKey::account("alice");
    assert_eq!(
        t.store
            .throttle_records(std::slice::from_ref(&key), now)
            .await
            .unwrap_err()
            .code(),
        "store"
    );

    let s = t.reopen().await;
    assert_eq!(count(&t, versions, pg_versions).await, 4);
    let st = s.load_server(srv.id).await.unwrap().unwrap();
    assert_eq!(st.revision, RevisionNo(1));
    let r = throttle_record(1, 1_800_000_100);
    assert!(s
        .swap_throttle_record(&key, None, Some(&r), now)
        .await
        .unwrap());
    assert_eq!(
        t.store
            .throttle_records(std::slice::from_ref(&key), now)
            .await
            .unwrap(),
        [Some(r.state)]
    );
}

#[tokio::test]
async fn schema_3_migrates_to_the_login_throttle_sqlite() {
    schema_3_migrates(Kind::SqliteFile).await;
}

#[tokio::test]
async fn schema_3_migrates_to_the_login_throttle_postgres() {
    schema_3_migrates(Kind::Postgres).await;
}

/// Expired login-throttle rows do not pile up: a later swap deletes them (at most 64 at
/// a time), and they read as absent until then.
async fn throttle_pruning(kind: Kind) {
    use wgm_core::auth::throttle::ThrottleKey;
    let Some(t) = open(kind).await else { return };
    let s = &*t.store;
    let t0 = 1_800_000_000;
    let at = |secs: i64| time::OffsetDateTime::from_unix_timestamp(t0 + secs).unwrap();
    let key = |i: usize| ThrottleKey::account(&format!("user-{i}"));
    for i in 0..70 {
        assert!(s
            .swap_throttle_record(&key(i), None, Some(&throttle_record(1, t0 + 10)), at(0))
            .await
            .unwrap());
    }
    let rows = "SELECT count(*) FROM login_throttle";
    let pg_rows = "SELECT count(*) FROM wgm.login_throttle";
    assert_eq!(count(&t, rows, pg_rows).await, 70);
    assert_eq!(
        s.throttle_records(&[key(0), key(69)], at(10))
            .await
            .unwrap(),
        [None, None]
    );
    // Each later swap prunes up to 64 expired rows; its own stays.
    let fresh = throttle_record(1, t0 + 100);
    assert!(s
        .swap_throttle_record(&key(100), None, Some(&fresh), at(20))
        .await
        .unwrap());
    assert_eq!(count(&t, rows, pg_rows).await, 70 - 64 + 1);
    assert!(s
        .swap_throttle_record(&key(101), None, Some(&fresh), at(20))
        .await
        .unwrap());
    assert_eq!(count(&t, rows, pg_rows).await, 2);
    assert_eq!(
        s.throttle_records(&[key(100), key(101)], at(20))
            .await
            .unwrap(),
        [Some(fresh.state), Some(fresh.state)]
    );
}

#[tokio::test]
async fn expired_throttle_rows_are_pruned_sqlite() {
    throttle_pruning(Kind::SqliteFile).await;
}

#[tokio::test]
async fn expired_throttle_rows_are_pruned_postgres() {
    throttle_pruning(Kind::Postgres).await;
}
