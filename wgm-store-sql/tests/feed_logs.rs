//! The change feed through outages, and what it logs: PostgreSQL's feed retries while
//! the database refuses connections and comes back, SQLite's feed survives failing polls;
//! each outage is one warning when it starts and one info line when it ends, the failed
//! attempts in between are debug lines, and no URL is logged.
//!
//! A binary of its own: its logs are captured by a process-wide subscriber, installed
//! before anything in the process logs (a per-thread subscriber loses events when other
//! threads register the same call sites at the same time), and each test reads the lines
//! of its own thread, on which its current-thread runtime polls the feed.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use common::{create, open, server, until_at, Kind};
use futures::StreamExt;
use sqlx::Connection;
use wgm_core::model::RevisionNo;
use wgm_core::store::{ChangeFeed, FeedEvent};
use wgm_store_sql::{SqlOptions, SqlStore};

/// The bound of one wait for a wake-up.
const WAKE_LIMIT: Duration = Duration::from_secs(30);

/// Everything logged in this process at DEBUG and above, each line with its thread's id.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// The lines logged on the calling test's thread.
struct Logs {
    capture: Capture,
    thread: String,
}

impl Logs {
    /// Capture (installed once per process), read for the calling thread. Call first
    /// thing in a test.
    fn start() -> Logs {
        static CAPTURE: OnceLock<Capture> = OnceLock::new();
        let capture = CAPTURE
            .get_or_init(|| {
                let capture = Capture::default();
                let subscriber = tracing_subscriber::fmt()
                    .with_max_level(tracing::Level::DEBUG)
                    .with_thread_ids(true)
                    .with_writer(capture.clone())
                    .with_ansi(false)
                    .finish();
                tracing::subscriber::set_global_default(subscriber).unwrap();
                capture
            })
            .clone();
        Logs {
            capture,
            // As the formatter writes it (`ThreadId(07)`).
            thread: format!("{:0>2?}", std::thread::current().id()),
        }
    }

    /// This thread's lines.
    fn text(&self) -> String {
        String::from_utf8(self.capture.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .filter(|l| l.contains(&self.thread))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// This thread's lines of `level` that contain `text`.
    fn count(&self, level: &str, text: &str) -> usize {
        self.text()
            .lines()
            .filter(|l| l.contains(level) && l.contains(text))
            .count()
    }
}

/// While the database refuses connections, the PostgreSQL feed keeps retrying (each
/// failure at debug level) and reports nothing; once the database is back it listens
/// again, reports the gap, and then commits as before. The outage shows as one warning
/// and one info line, never a URL. (A current-thread runtime: the feed is polled, and
/// logs, on the test's thread.)
#[tokio::test]
async fn postgres_feed_retries_while_the_database_refuses_connections() {
    let capture = Logs::start();
    let Some(t) = open(Kind::Postgres).await else {
        return;
    };
    let url = t.url.clone().unwrap();
    let admin = common::postgres_admin_url().unwrap();
    let name = url
        .rsplit('/')
        .next()
        .unwrap()
        .split('?')
        .next()
        .unwrap()
        .to_owned();
    let mut events = t.store.watch().await.unwrap();
    let mut a = sqlx::PgConnection::connect(&admin).await.unwrap();
    sqlx::query(&format!(
        "ALTER DATABASE {name} WITH ALLOW_CONNECTIONS false"
    ))
    .execute(&mut a)
    .await
    .unwrap();
    let mut killed = 0;
    for _ in 0..100 {
        let done: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = $1 AND query LIKE 'LISTEN%'",
        )
        .bind(&name)
        .fetch_all(&mut a)
        .await
        .unwrap();
        killed = done.iter().filter(|t| **t).count();
        if killed > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(killed, 1, "the feed's session");
    // Down for a while: several attempts (at once, then after 100, 200, 400, 800 ms),
    // and nothing reported.
    let quiet = tokio::time::timeout(Duration::from_secs(2), events.next()).await;
    assert!(quiet.is_err(), "reported while down: {quiet:?}");
    sqlx::query(&format!(
        "ALTER DATABASE {name} WITH ALLOW_CONNECTIONS true"
    ))
    .execute(&mut a)
    .await
    .unwrap();
    a.close().await.unwrap();
    let back = tokio::time::timeout(WAKE_LIMIT, events.next())
        .await
        .unwrap();
    assert_eq!(back, Some(FeedEvent::Missed));
    let writer = t.reopen().await;
    let srv = server("outage", None);
    create(&writer, &srv).await;
    assert_eq!(until_at(&mut events, srv.id, RevisionNo(1)).await, Ok(()));

    let logs = capture.text();
    // Down: the connection lost (or failing: how a killed session shows depends on the
    // socket), then back.
    assert_eq!(
        capture.count("WARN", "the change feed lost its connection")
            + capture.count("WARN", "the change feed failed"),
        1,
        "{logs}"
    );
    assert_eq!(capture.count("INFO", "listening again"), 1, "{logs}");
    assert!(
        capture.count("DEBUG", "cannot reconnect yet") >= 3,
        "failed attempts are debug lines: {logs}"
    );
    assert_eq!(
        capture.count("WARN", "change feed") + capture.count("INFO", "change feed"),
        2,
        "one line down, one line back: {logs}"
    );
    assert!(!logs.contains(&url), "a URL in the logs");
}

/// While its polls fail (here: the `heads` table renamed away behind the store's back),
/// the SQLite feed keeps polling, logs one warning, reports nothing; when they succeed
/// again it logs one info line, reports the gap, and then commits as before.
#[tokio::test]
async fn sqlite_feed_survives_failing_polls() {
    let capture = Logs::start();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("wgm.db").display());
    let store = SqlStore::open_with(
        &url,
        SqlOptions::default().feed_interval(Duration::from_millis(10)),
    )
    .await
    .unwrap();
    let mut events = store.watch().await.unwrap();
    let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("ALTER TABLE heads RENAME TO heads_away")
        .execute(&mut c)
        .await
        .unwrap();
    let quiet = tokio::time::timeout(Duration::from_millis(300), events.next()).await;
    assert!(quiet.is_err(), "reported while failing: {quiet:?}");
    sqlx::query("ALTER TABLE heads_away RENAME TO heads")
        .execute(&mut c)
        .await
        .unwrap();
    c.close().await.unwrap();
    let back = tokio::time::timeout(WAKE_LIMIT, events.next())
        .await
        .unwrap();
    assert_eq!(back, Some(FeedEvent::Missed));
    let srv = server("polled", None);
    create(&store, &srv).await;
    assert_eq!(until_at(&mut events, srv.id, RevisionNo(1)).await, Ok(()));

    let logs = capture.text();
    assert_eq!(capture.count("WARN", "cannot read the heads"), 1, "{logs}");
    assert_eq!(capture.count("INFO", "reads the heads again"), 1, "{logs}");
    assert!(
        capture.count("DEBUG", "still cannot read the heads") >= 2,
        "{logs}"
    );
}
