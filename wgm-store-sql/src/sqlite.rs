//! The SQLite backend: one file (or an in-memory database), WAL, a busy timeout, and
//! `BEGIN IMMEDIATE` for every write transaction.
//!
//! Why `BEGIN IMMEDIATE`: a deferred transaction that reads and then writes must upgrade
//! its lock, and in WAL mode an upgrade that loses a race fails with `SQLITE_BUSY` at once,
//! without waiting for the busy timeout. Taking the write lock at `BEGIN` makes every
//! writer wait its turn there instead. Writers of one process additionally queue on an
//! async mutex (fair, and no connection is held while waiting), so the busy timeout only
//! arbitrates between processes.
//!
//! The change feed ([`SqliteStore::watch`]) polls the head revisions: SQLite has no way to
//! tell another process's connection about a commit, and the `heads` table is small (one
//! row per server) and always current.

use std::collections::{HashMap, VecDeque};
use std::str::FromStr;
use std::time::Duration;

use futures::stream::{BoxStream, StreamExt};

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, QueryBuilder, Sqlite, SqliteConnection, SqlitePool, Transaction};
use time::OffsetDateTime;
use wgm_core::integrity::{AuditKey, StoredAuditKey};
use wgm_core::model::{
    ApiTokenRecord, AppliedState, AuditEntry, AuditQuery, AuditRecord, Commit, Committed,
    HostReport, IdentityChange, Lease, LeaseRequest, Page, Peer, PeerId, PeerStats, RevisionNo,
    RevisionRecord, Server, ServerId, ServerState, ServerSummary, TokenId, User, UserId,
};
use wgm_core::names::{RoleName, ServerName, UserName};
use wgm_core::rbac::Role;
use wgm_core::seal::SealedSecret;
use wgm_core::store::rules::{
    self, BatchFailure, Probe, Restore, Transaction as RulesTransaction, UserClash,
};
use wgm_core::store::{FeedEvent, SealAuditKey};
use wgm_core::Error;

use crate::codec::{int, ns, peer_body, peer_from, retrying, to_json};
use crate::common;
use crate::error::SqlError;
use crate::{migrate, SqlOptions};

const S: &str = "sqlite";

fn db(e: sqlx::Error) -> SqlError {
    SqlError::Db {
        store: S,
        source: e,
    }
}

fn parse_id<T: FromStr>(what: &'static str, s: &str) -> Result<T, SqlError> {
    s.parse().map_err(|_| SqlError::BadValue { store: S, what })
}

/// How an id column comes back: as text.
type Id = String;

/// An id (its UUID) as a parameter: its text.
fn bind_id(id: &impl std::fmt::Display) -> String {
    id.to_string()
}

fn server_id(id: &str) -> Result<ServerId, SqlError> {
    parse_id("server id", id)
}

fn peer_id(id: &str) -> Result<PeerId, SqlError> {
    parse_id("peer id", id)
}

fn json_list<T: serde::Serialize>(v: &[T]) -> Result<String, SqlError> {
    to_json(S, "list", v)
}

/// Rows per multi-row `INSERT` (9 parameters each, far below SQLite's 32 766).
const INSERT_CHUNK: usize = 500;

/// A SQLite-backed store. See the crate documentation.
#[derive(Debug)]
pub(crate) struct SqliteStore {
    pool: SqlitePool,
    /// In-process writers queue here before `BEGIN IMMEDIATE`.
    writer: tokio::sync::Mutex<()>,
    /// How often the change feed polls the head revisions ([`SqlOptions::feed_interval`]).
    feed_interval: Duration,
}

impl SqliteStore {
    /// Open (creating with `mode=rwc`) and migrate. Two processes opening a new file at
    /// once can meet `SQLITE_BUSY` outside the busy handler's reach (the switch to WAL
    /// and the first schema write take locks SQLite does not wait for), so a busy open
    /// is tried again, a bounded number of times, with a short growing pause.
    pub(crate) async fn open(url: &str, opts: &SqlOptions) -> Result<SqliteStore, SqlError> {
        let mut attempt: u64 = 0;
        loop {
            match Self::open_once(url, opts).await {
                Err(SqlError::Db {
                    source: sqlx::Error::Database(e),
                    ..
                }) if attempt < 20 && e.code().as_deref() == Some("5") => {
                    attempt += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(10 * attempt)).await;
                }
                other => return other,
            }
        }
    }

    async fn open_once(url: &str, opts: &SqlOptions) -> Result<SqliteStore, SqlError> {
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let mut connect = SqliteConnectOptions::from_str(url)
            .map_err(|_| SqlError::Url {
                reason: "not a valid sqlite: URL".into(),
            })?
            .busy_timeout(opts.busy_timeout)
            .foreign_keys(true)
            .synchronous(SqliteSynchronous::Normal);
        if !in_memory {
            connect = connect.journal_mode(SqliteJournalMode::Wal);
        }
        let pool_opts = if in_memory {
            // Every connection to `sqlite::memory:` would be a database of its own, and
            // the database vanishes with its last connection: keep exactly one, forever.
            SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
        } else {
            SqlitePoolOptions::new().max_connections(opts.max_connections.max(1))
        };
        let pool = pool_opts
            .acquire_timeout(opts.acquire_timeout)
            .connect_with(connect)
            .await
            .map_err(db)?;
        let store = SqliteStore {
            pool,
            writer: tokio::sync::Mutex::new(()),
            feed_interval: opts.feed_interval,
        };
        store.migrate().await?;
        Ok(store)
    }

    /// The schema recorded in the database and the one this build knows.
    pub(crate) async fn schema_version(&self) -> Result<wgm_core::store::SchemaVersion, SqlError> {
        let found: Option<i64> = sqlx::query_scalar("SELECT max(version) FROM schema_migrations")
            .fetch_one(&self.pool)
            .await
            .map_err(db)?;
        Ok(wgm_core::store::SchemaVersion {
            found: u64::try_from(found.unwrap_or(0)).unwrap_or(0),
            known: u64::try_from(migrate::latest(migrate::SQLITE)).unwrap_or(0),
        })
    }

    async fn migrate(&self) -> Result<(), SqlError> {
        // The usual case first, without the write lock: a database at exactly the known
        // schema needs nothing. Anything else (a new file, pending migrations, a newer
        // schema) takes the locked path. (Without the table yet, the query fails.)
        let current: Option<Vec<i64>> = sqlx::query_scalar("SELECT version FROM schema_migrations")
            .fetch_all(&self.pool)
            .await
            .ok();
        if let Some(applied) = current {
            if migrate::pending(S, migrate::SQLITE, &applied)?.is_empty() {
                return Ok(());
            }
        }
        let _w = self.writer.lock().await;
        let mut conn = self.pool.acquire().await.map_err(db)?;
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
        sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                version INTEGER PRIMARY KEY NOT NULL, name TEXT NOT NULL, applied_ns INTEGER NOT NULL
            ) STRICT",
        )
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM schema_migrations")
            .fetch_all(&mut *tx)
            .await
            .map_err(db)?;
        for m in migrate::pending(S, migrate::SQLITE, &applied)? {
            tracing::debug!(
                version = m.version,
                name = m.name,
                "applying sqlite migration"
            );
            sqlx::raw_sql(m.sql).execute(&mut *tx).await.map_err(db)?;
            sqlx::query(
                "INSERT INTO schema_migrations (version, name, applied_ns) VALUES (?1, ?2, ?3)",
            )
            .bind(m.version)
            .bind(m.name)
            .bind(ns(OffsetDateTime::now_utc()))
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        tx.commit().await.map_err(db)
    }

    /// Close the pool (waits for connections in use to come back).
    pub(crate) async fn close(&self) {
        self.pool.close().await;
    }

    /// A write transaction: queue in-process, then `BEGIN IMMEDIATE` (which waits up to the
    /// busy timeout for writers of other processes).
    async fn write(
        &self,
    ) -> Result<
        (
            tokio::sync::MutexGuard<'_, ()>,
            Transaction<'static, Sqlite>,
        ),
        SqlError,
    > {
        let guard = self.writer.lock().await;
        let tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
        Ok((guard, tx))
    }

    /// A read snapshot for `load_server`: one deferred (read-only) transaction.
    async fn snapshot(&self) -> Result<Transaction<'static, Sqlite>, SqlError> {
        self.pool.begin().await.map_err(db)
    }

    common::store_reads!(crate::dialect::SQLITE);

    common::export_reads!(crate::dialect::SQLITE);

    common::throttle_methods!(crate::dialect::SQLITE);

    /// A transaction for a swap of a login-throttle record: a write transaction, which
    /// holds SQLite's write lock, so no other writer reads the record in between.
    async fn throttle_write(
        &self,
        _key: &str,
    ) -> Result<
        (
            tokio::sync::MutexGuard<'_, ()>,
            Transaction<'static, Sqlite>,
        ),
        SqlError,
    > {
        self.write().await
    }

    /// Import a snapshot into this empty database, or in place of what it holds
    /// (`mode`): one write transaction (`BEGIN IMMEDIATE`), so nothing shows until all
    /// of it commits.
    pub(crate) async fn import_snapshot(
        &self,
        snapshot: &wgm_core::store::Snapshot,
        mode: rules::ImportMode,
    ) -> Result<(), SqlError> {
        retrying!(
            "import_snapshot",
            async {
                let (_w, mut tx) = self.write().await?;
                rules::import_snapshot_with_rules(&mut SqliteTx(&mut tx), S, snapshot, mode)
                    .await?;
                tx.commit().await.map_err(db)
            }
            .await
        )
    }

    pub(crate) async fn commit(&self, c: &Commit, key: &AuditKey) -> Result<Committed, SqlError> {
        retrying!(
            "commit",
            async {
                let (_w, mut tx) = self.write().await?;
                let r = rules::commit_with_rules(&mut SqliteTx(&mut tx), c, key).await?;
                tx.commit().await.map_err(db)?;
                Ok(r)
            }
            .await
        )
    }

    /// `commits` in one transaction (all or nothing; `ServerStore::commit_all`).
    pub(crate) async fn commit_all(
        &self,
        commits: &[Commit],
        key: &AuditKey,
    ) -> Result<Vec<Committed>, BatchFailure<SqlError>> {
        retrying!(
            "commit_all",
            error BatchFailure<SqlError>,
            |f| f.error,
            async {
                let (_w, mut tx) = self.write().await.map_err(BatchFailure::whole)?;
                let done =
                    rules::commit_all_with_rules(&mut SqliteTx(&mut tx), commits, key).await?;
                tx.commit().await.map_err(|e| BatchFailure::whole(db(e)))?;
                Ok(done)
            }
            .await
        )
    }

    pub(crate) async fn set_applied(
        &self,
        id: ServerId,
        host: &str,
        revision: RevisionNo,
    ) -> Result<(), SqlError> {
        self.put_applied(id, host, revision, None, None).await
    }

    pub(crate) async fn put_allocator_state(
        &self,
        id: ServerId,
        revision: RevisionNo,
        held: &wgm_core::ipam::HeldRuns,
    ) -> Result<(), SqlError> {
        let body = to_json(S, "allocator state", held)?;
        retrying!(
            "put_allocator_state",
            async {
                let (_w, mut tx) = self.write().await?;
                sqlx::query(
                    "INSERT INTO allocators (server_id, revision, body) VALUES (?1, ?2, ?3)
                     ON CONFLICT (server_id) DO UPDATE SET revision = excluded.revision,
                         body = excluded.body
                     WHERE excluded.revision >= allocators.revision",
                )
                .bind(id.to_string())
                .bind(int(revision.0))
                .bind(&body)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
                tx.commit().await.map_err(db)
            }
            .await
        )
    }

    pub(crate) async fn set_applied_state(
        &self,
        id: ServerId,
        host: &str,
        state: &AppliedState,
    ) -> Result<(), SqlError> {
        self.put_applied(
            id,
            host,
            state.revision,
            state.instance.map(crate::codec::instance_column),
            Some(ns(state.verified_at)),
        )
        .await
    }

    /// The `applied` row of a server on a host: the revision, and the device part (both
    /// `NULL` for a plain `set_applied`).
    async fn put_applied(
        &self,
        id: ServerId,
        host: &str,
        revision: RevisionNo,
        instance: Option<i64>,
        verified_ns: Option<i64>,
    ) -> Result<(), SqlError> {
        retrying!(
            "set_applied",
            async {
                let (_w, mut tx) = self.write().await?;
                sqlx::query(
                    "INSERT INTO applied (server_id, host, revision, instance, verified_ns)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (server_id, host) DO UPDATE SET revision = excluded.revision,
                         instance = excluded.instance, verified_ns = excluded.verified_ns",
                )
                .bind(id.to_string())
                .bind(host)
                .bind(int(revision.0))
                .bind(instance)
                .bind(verified_ns)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
                tx.commit().await.map_err(db)
            }
            .await
        )
    }

    /// Decide `req` against the stored lease ([`Lease::decide`]) and store the outcome, in
    /// one write transaction (which holds SQLite's write lock, so no other writer reads the
    /// lease in between).
    pub(crate) async fn acquire_lease(&self, req: &LeaseRequest) -> Result<Lease, SqlError> {
        retrying!(
            "acquire_lease",
            async {
                let (_w, mut tx) = self.write().await?;
                let current = stored_lease(&mut tx, req.server_id, req.host.as_str()).await?;
                let granted = Lease::decide(current.as_ref(), req)?;
                put_lease(&mut tx, &granted).await?;
                tx.commit().await.map_err(db)?;
                Ok(granted)
            }
            .await
        )
    }

    /// Release `lease` if it is still stored as given ([`Lease::released`]).
    pub(crate) async fn release_lease(
        &self,
        lease: &Lease,
        now: OffsetDateTime,
    ) -> Result<bool, SqlError> {
        retrying!(
            "release_lease",
            async {
                let (_w, mut tx) = self.write().await?;
                let released = stored_lease(&mut tx, lease.server_id, lease.host.as_str())
                    .await?
                    .and_then(|cur| Lease::released(&cur, &lease.holder, lease.fencing, now));
                let Some(released) = released else {
                    tx.rollback().await.map_err(db)?;
                    return Ok(false);
                };
                put_lease(&mut tx, &released).await?;
                tx.commit().await.map_err(db)?;
                Ok(true)
            }
            .await
        )
    }

    /// Store `report` if the stored lease of its server and host admits it
    /// ([`Lease::admit`]; any report when there is none), in one write transaction.
    pub(crate) async fn put_host_report(&self, report: &HostReport) -> Result<(), SqlError> {
        let body = to_json(S, "host report", report)?;
        retrying!(
            "put_host_report",
            async {
                let (_w, mut tx) = self.write().await?;
                if let Some(lease) =
                    stored_lease(&mut tx, report.server_id, report.host.as_str()).await?
                {
                    lease.admit(report)?;
                }
                sqlx::query(
                    "INSERT INTO host_reports (server_id, host, body) VALUES (?1, ?2, ?3)
                     ON CONFLICT (server_id, host) DO UPDATE SET body = excluded.body",
                )
                .bind(report.server_id.to_string())
                .bind(report.host.as_str())
                .bind(&body)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
                tx.commit().await.map_err(db)
            }
            .await
        )
    }

    /// The change feed: the head revisions read now, then polled every
    /// [`SqlOptions::feed_interval`] (see [`PollFeed`]).
    pub(crate) async fn watch(&self) -> Result<BoxStream<'static, FeedEvent>, SqlError> {
        let heads = read_heads(&self.pool).await?;
        let mut ticks = tokio::time::interval(self.feed_interval.max(MIN_FEED_INTERVAL));
        // A poll that took longer than the interval delays the next one instead of
        // bursting to catch up.
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let feed = PollFeed {
            pool: self.pool.clone(),
            heads,
            ticks,
            pending: VecDeque::new(),
            failing: false,
        };
        Ok(futures::stream::unfold(feed, |mut feed| async move {
            let event = feed.next().await?;
            Some((event, feed))
        })
        .boxed())
    }

    pub(crate) async fn update_peer_stats(
        &self,
        id: ServerId,
        stats: &[(PeerId, PeerStats)],
    ) -> Result<(), SqlError> {
        // Later entries for one peer win, as if applied in order.
        let last: HashMap<PeerId, &PeerStats> = stats.iter().map(|(p, s)| (*p, s)).collect();
        // The whole batch as one JSON array of [peer id, stats JSON] pairs, applied by one
        // statement: a round trip per row to SQLite's worker thread costs ~100 µs, which
        // made 10 000 peers take a second.
        let rows: Vec<(String, String)> = last
            .iter()
            .map(|(p, s)| Ok((p.to_string(), to_json(S, "peer stats", s)?)))
            .collect::<Result<_, SqlError>>()?;
        let batch = to_json(S, "peer stats", &rows)?;
        retrying!(
            "update_peer_stats",
            async {
                let (_w, mut tx) = self.write().await?;
                let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM servers WHERE id = ?1")
                    .bind(id.to_string())
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db)?;
                if exists.is_none() {
                    return Err(Error::not_found("server", id).into());
                }
                // MATERIALIZED: otherwise SQLite scans the server's peers and re-parses
                // the whole batch for each of them (quadratic: 70 s for 10 000); this way
                // it parses once and looks each peer up by its primary key (20 ms).
                sqlx::query(
                    "WITH s(id, stats) AS MATERIALIZED (
                         SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]')
                         FROM json_each(?2))
                     UPDATE peers SET stats = s.stats FROM s
                     WHERE peers.server_id = ?1 AND peers.id = s.id",
                )
                .bind(id.to_string())
                .bind(&batch)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
                tx.commit().await.map_err(db)
            }
            .await
        )
    }

    pub(crate) async fn commit_identity(
        &self,
        changes: &[IdentityChange],
        audit: &AuditEntry,
        key: &AuditKey,
    ) -> Result<AuditRecord, SqlError> {
        retrying!(
            "commit_identity",
            async {
                let (_w, mut tx) = self.write().await?;
                let r =
                    rules::commit_identity_with_rules(&mut SqliteTx(&mut tx), changes, audit, key)
                        .await?;
                tx.commit().await.map_err(db)?;
                Ok(r)
            }
            .await
        )
    }

    pub(crate) async fn append_audit(
        &self,
        entry: &AuditEntry,
        key: &AuditKey,
    ) -> Result<AuditRecord, SqlError> {
        retrying!(
            "append_audit",
            async {
                let (_w, mut tx) = self.write().await?;
                let r = rules::append_audit_with_rules(&mut SqliteTx(&mut tx), entry.clone(), key)
                    .await?;
                tx.commit().await.map_err(db)?;
                Ok(r)
            }
            .await
        )
    }

    pub(crate) async fn init_audit_key(
        &self,
        seal: &SealAuditKey<'_>,
    ) -> Result<(StoredAuditKey, bool), SqlError> {
        retrying!(
            "init_audit_key",
            async {
                let (_w, mut tx) = self.write().await?;
                let r = rules::init_audit_key_with_rules(&mut SqliteTx(&mut tx), seal).await?;
                tx.commit().await.map_err(db)?;
                Ok(r)
            }
            .await
        )
    }

    pub(crate) async fn reseal_audit_key(
        &self,
        expected: &SealedSecret,
        resealed: &StoredAuditKey,
    ) -> Result<(), SqlError> {
        retrying!(
            "reseal_audit_key",
            async {
                let (_w, mut tx) = self.write().await?;
                rules::reseal_audit_key_with_rules(&mut SqliteTx(&mut tx), expected, resealed)
                    .await?;
                tx.commit().await.map_err(db)
            }
            .await
        )
    }
}

/// The shortest poll interval of the change feed (a zero [`SqlOptions::feed_interval`]
/// would make `tokio::time::interval` panic, and polling without pause would only burn a
/// core).
const MIN_FEED_INTERVAL: Duration = Duration::from_millis(1);

/// The stored lease of `server` on `host`, inside a write transaction.
async fn stored_lease(
    conn: &mut SqliteConnection,
    server: ServerId,
    host: &str,
) -> Result<Option<Lease>, SqlError> {
    let body: Option<String> = sqlx::query_scalar(&crate::dialect::SQLITE.reads().lease)
        .bind(server.to_string())
        .bind(host)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db)?;
    body.map(|b| common::lease(S, server, host, &b)).transpose()
}

/// Insert or replace the stored lease of `lease`'s server and host.
async fn put_lease(conn: &mut SqliteConnection, lease: &Lease) -> Result<(), SqlError> {
    sqlx::query(
        "INSERT INTO leases (server_id, host, body) VALUES (?1, ?2, ?3)
         ON CONFLICT (server_id, host) DO UPDATE SET body = excluded.body",
    )
    .bind(lease.server_id.to_string())
    .bind(lease.host.as_str())
    .bind(to_json(S, "lease", lease)?)
    .execute(&mut *conn)
    .await
    .map_err(db)?;
    Ok(())
}

/// Every server's head revision (deleted servers keep theirs), read on a connection
/// acquired for this one query: the feed never holds one between polls, which
/// `sqlite::memory:` (a pool of exactly one connection) needs.
async fn read_heads(pool: &SqlitePool) -> Result<HashMap<ServerId, RevisionNo>, SqlError> {
    let rows: Vec<(String, i64)> = sqlx::query_as(&crate::dialect::SQLITE.reads().server_heads)
        .fetch_all(pool)
        .await
        .map_err(db)?;
    rows.iter()
        .map(|(id, r)| Ok((server_id(id)?, crate::codec::rev(S, *r)?)))
        .collect()
}

/// The state of one SQLite change feed: the heads it last saw, and the events found by
/// the last poll and not yet taken.
struct PollFeed {
    pool: SqlitePool,
    heads: HashMap<ServerId, RevisionNo>,
    ticks: tokio::time::Interval,
    pending: VecDeque<FeedEvent>,
    /// Whether the last poll failed (logged once, at the first failure).
    failing: bool,
}

impl PollFeed {
    /// The next event, polling until there is one; `None` once the store is closed.
    async fn next(&mut self) -> Option<FeedEvent> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            self.ticks.tick().await;
            if self.pool.is_closed() {
                return None;
            }
            match read_heads(&self.pool).await {
                Ok(heads) => self.compare(heads),
                Err(SqlError::Db {
                    source: sqlx::Error::PoolClosed,
                    ..
                }) => return None,
                Err(e) if self.failing => {
                    tracing::debug!(store = S, error = %e, "the change feed still cannot read the heads");
                }
                Err(e) => {
                    tracing::warn!(store = S, error = %e, "the change feed cannot read the heads; retrying");
                    self.failing = true;
                }
            }
        }
    }

    /// Queue the events that `heads`, just read, mean against the last heads seen.
    fn compare(&mut self, heads: HashMap<ServerId, RevisionNo>) {
        if std::mem::take(&mut self.failing) {
            tracing::info!(store = S, "the change feed reads the heads again");
            // Polls were lost; what changed meanwhile is reported below too, but a
            // follower must not rely on having seen every step.
            self.pending.push_back(FeedEvent::Missed);
        }
        let mut went_down = false;
        for (server, revision) in &heads {
            match self.heads.get(server) {
                Some(seen) if seen == revision => {}
                // A head never goes down in a store; only a database replaced behind the
                // store's back (a restored backup) does that. Report a gap, not the lower
                // revision, and go on from the heads as they are now.
                Some(seen) if seen > revision => went_down = true,
                _ => self.pending.push_back(FeedEvent::Committed {
                    server: *server,
                    revision: *revision,
                }),
            }
        }
        if went_down && !self.pending.contains(&FeedEvent::Missed) {
            self.pending.push_back(FeedEvent::Missed);
        }
        self.heads = heads;
    }
}

/// The primitives inside one `BEGIN IMMEDIATE` transaction.
struct SqliteTx<'c>(&'c mut SqliteConnection);

impl RulesTransaction for SqliteTx<'_> {
    type Error = SqlError;

    // `lock_server`: `BEGIN IMMEDIATE` already holds the write lock, so a plain read is a
    // locked read.
    common::tx_reads!(crate::dialect::SQLITE);

    async fn peers_for_commit(
        &mut self,
        server: ServerId,
        ids: &[PeerId],
        probe: &Probe,
    ) -> Result<Vec<(PeerId, Peer)>, SqlError> {
        // One index probe per arm (a UNION, not an OR, so each arm uses its index).
        let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
        let rows: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT id, body, stats FROM peers WHERE server_id = ?1 AND id IN (
                SELECT id FROM peers WHERE server_id = ?1 AND id IN (SELECT value FROM json_each(?2))
                UNION ALL
                SELECT id FROM peers WHERE server_id = ?1 AND name_key IN (SELECT value FROM json_each(?3))
                UNION ALL
                SELECT id FROM peers WHERE server_id = ?1 AND public_key IN (SELECT value FROM json_each(?4))
                UNION ALL
                SELECT id FROM peers WHERE server_id = ?1 AND address_v6 IN (SELECT value FROM json_each(?5))
                UNION ALL
                SELECT id FROM peers WHERE server_id = ?1 AND address_v4 IN (SELECT value FROM json_each(?6))
                UNION ALL
                SELECT id FROM peers WHERE server_id = ?1
                    AND delegated_prefix IN (SELECT value FROM json_each(?7)))",
        )
        .bind(server.to_string())
        .bind(json_list(&ids)?)
        .bind(json_list(&probe.names)?)
        .bind(json_list(&probe.keys)?)
        .bind(json_list(&probe.v6)?)
        .bind(json_list(&probe.v4)?)
        .bind(json_list(&probe.prefixes)?)
        .fetch_all(&mut *self.0)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|(id, body, stats)| Ok((parse_id("peer id", id)?, peer_from(S, body, stats)?)))
            .collect()
    }

    async fn insert_head(&mut self, id: ServerId, rev: RevisionNo) -> Result<(), SqlError> {
        sqlx::query("INSERT INTO heads (server_id, revision) VALUES (?1, ?2)")
            .bind(id.to_string())
            .bind(int(rev.0))
            .execute(&mut *self.0)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn write_server(&mut self, s: &Server, exists: bool) -> Result<(), SqlError> {
        let sql = if exists {
            "UPDATE servers SET name_key = ?2, interface = ?3, public_key = ?4, body = ?5 WHERE id = ?1"
        } else {
            "INSERT INTO servers (id, name_key, interface, public_key, body) VALUES (?1, ?2, ?3, ?4, ?5)"
        };
        sqlx::query(sql)
            .bind(s.id.to_string())
            .bind(s.name.key())
            .bind(s.interface.as_str())
            .bind(s.public_key.to_base64())
            .bind(to_json(S, "server", s)?)
            .execute(&mut *self.0)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn delete_server(&mut self, id: ServerId) -> Result<(), SqlError> {
        sqlx::query("DELETE FROM peers WHERE server_id = ?1")
            .bind(id.to_string())
            .execute(&mut *self.0)
            .await
            .map_err(db)?;
        sqlx::query("DELETE FROM servers WHERE id = ?1")
            .bind(id.to_string())
            .execute(&mut *self.0)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn delete_peers(&mut self, server: ServerId, ids: &[PeerId]) -> Result<(), SqlError> {
        let list: Vec<String> = ids.iter().map(ToString::to_string).collect();
        sqlx::query(
            "DELETE FROM peers WHERE server_id = ?1 AND id IN (SELECT value FROM json_each(?2))",
        )
        .bind(server.to_string())
        .bind(json_list(&list)?)
        .execute(&mut *self.0)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn insert_peers(
        &mut self,
        server: ServerId,
        peers: &[(PeerId, &Peer)],
    ) -> Result<(), SqlError> {
        let sid = server.to_string();
        for chunk in peers.chunks(INSERT_CHUNK) {
            let mut rows = Vec::with_capacity(chunk.len());
            for (id, p) in chunk {
                rows.push((
                    id.to_string(),
                    p.name.key(),
                    p.public_key.to_base64(),
                    p.address_v6.map(|a| a.to_string()),
                    p.address_v4.map(|a| a.to_string()),
                    p.delegated_prefix.map(|n| n.to_string()),
                    peer_body(S, p)?,
                    to_json(S, "peer stats", &p.stats)?,
                ));
            }
            let mut qb = QueryBuilder::<Sqlite>::new(
                "INSERT INTO peers (server_id, id, name_key, public_key, address_v6, address_v4, delegated_prefix, body, stats) ",
            );
            qb.push_values(rows, |mut b, r| {
                b.push_bind(sid.clone())
                    .push_bind(r.0)
                    .push_bind(r.1)
                    .push_bind(r.2)
                    .push_bind(r.3)
                    .push_bind(r.4)
                    .push_bind(r.5)
                    .push_bind(r.6)
                    .push_bind(r.7);
            });
            qb.build().execute(&mut *self.0).await.map_err(db)?;
        }
        Ok(())
    }

    async fn finish(&mut self, r: &RevisionRecord, audit: &AuditRecord) -> Result<(), SqlError> {
        sqlx::query("UPDATE heads SET revision = ?2 WHERE server_id = ?1")
            .bind(r.server_id.to_string())
            .bind(int(r.revision.0))
            .execute(&mut *self.0)
            .await
            .map_err(db)?;
        sqlx::query(
            "INSERT INTO revisions (server_id, revision, at_ns, author, summary, body)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .bind(r.server_id.to_string())
        .bind(int(r.revision.0))
        .bind(ns(r.at))
        .bind(&r.author.label)
        .bind(&r.summary)
        .bind(to_json(S, "revision", r)?)
        .execute(&mut *self.0)
        .await
        .map_err(db)?;
        self.write_audit(audit).await
    }

    async fn finish_all(&mut self, done: &[Committed]) -> Result<(), SqlError> {
        let (Some(first), Some(last)) = (done.first(), done.last()) else {
            return Ok(());
        };
        if done.len() == 1 {
            return self.finish(&first.record, &first.audit).await;
        }
        // Multi-row inserts: a statement per table and chunk instead of four per commit
        // (each statement is a round trip to the connection's worker thread).
        sqlx::query("UPDATE heads SET revision = ?2 WHERE server_id = ?1")
            .bind(last.record.server_id.to_string())
            .bind(int(last.record.revision.0))
            .execute(&mut *self.0)
            .await
            .map_err(db)?;
        for chunk in done.chunks(INSERT_CHUNK) {
            let mut revs = Vec::with_capacity(chunk.len());
            let mut audits = Vec::with_capacity(chunk.len());
            for c in chunk {
                let (r, a) = (&c.record, &c.audit);
                revs.push((
                    r.server_id.to_string(),
                    int(r.revision.0),
                    ns(r.at),
                    r.author.label.clone(),
                    r.summary.clone(),
                    to_json(S, "revision", r)?,
                ));
                audits.push((
                    int(a.seq),
                    ns(a.entry.at),
                    a.entry.actor.label.clone(),
                    a.entry.server_id.map(|s| s.to_string()),
                    a.entry.object.clone(),
                    to_json(S, "audit entry", &a.entry)?,
                    a.prev_hash.clone(),
                    a.hash.clone(),
                ));
            }
            let mut qb = QueryBuilder::<Sqlite>::new(
                "INSERT INTO revisions (server_id, revision, at_ns, author, summary, body) ",
            );
            qb.push_values(revs, |mut b, r| {
                b.push_bind(r.0)
                    .push_bind(r.1)
                    .push_bind(r.2)
                    .push_bind(r.3)
                    .push_bind(r.4)
                    .push_bind(r.5);
            });
            qb.build().execute(&mut *self.0).await.map_err(db)?;
            let mut qb = QueryBuilder::<Sqlite>::new(
                "INSERT INTO audit (seq, at_ns, actor, server_id, object, body, prev_hash, hash) ",
            );
            qb.push_values(audits, |mut b, a| {
                b.push_bind(a.0)
                    .push_bind(a.1)
                    .push_bind(a.2)
                    .push_bind(a.3)
                    .push_bind(a.4)
                    .push_bind(a.5)
                    .push_bind(a.6)
                    .push_bind(a.7);
            });
            qb.build().execute(&mut *self.0).await.map_err(db)?;
        }
        sqlx::query("UPDATE audit_head SET seq = ?1, hash = ?2 WHERE id = 1")
            .bind(int(last.audit.seq))
            .bind(&last.audit.hash)
            .execute(&mut *self.0)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn write_audit(&mut self, rec: &AuditRecord) -> Result<(), SqlError> {
        sqlx::query(
            "INSERT INTO audit (seq, at_ns, actor, server_id, object, body, prev_hash, hash)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )
        .bind(int(rec.seq))
        .bind(ns(rec.entry.at))
        .bind(&rec.entry.actor.label)
        .bind(rec.entry.server_id.map(|s| s.to_string()))
        .bind(&rec.entry.object)
        .bind(to_json(S, "audit entry", &rec.entry)?)
        .bind(&rec.prev_hash)
        .bind(&rec.hash)
        .execute(&mut *self.0)
        .await
        .map_err(db)?;
        sqlx::query("UPDATE audit_head SET seq = ?1, hash = ?2 WHERE id = 1")
            .bind(int(rec.seq))
            .bind(&rec.hash)
            .execute(&mut *self.0)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn write_audit_key(
        &mut self,
        key: &StoredAuditKey,
        exists: bool,
    ) -> Result<(), SqlError> {
        let sql = if exists {
            "UPDATE audit_key SET sealed = ?1, legacy = ?2 WHERE id = 1"
        } else {
            "INSERT INTO audit_key (id, sealed, legacy) VALUES (1, ?1, ?2) ON CONFLICT (id) DO NOTHING"
        };
        sqlx::query(sql)
            .bind(key.sealed.as_str())
            .bind(to_json(S, "audit key bound", &key.legacy)?)
            .execute(&mut *self.0)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn insert_user(&mut self, user: &User) -> Result<(), SqlError> {
        sqlx::query(
            "INSERT INTO users (id, name_key, email, version, body) VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .bind(user.id.to_string())
        .bind(user.name.key())
        .bind(user.email.as_deref())
        .bind(int(user.version))
        .bind(to_json(S, "user", user)?)
        .execute(&mut *self.0)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn update_user(&mut self, user: &User) -> Result<(), SqlError> {
        sqlx::query(
            "UPDATE users SET name_key = ?2, email = ?3, version = ?4, body = ?5 WHERE id = ?1",
        )
        .bind(user.id.to_string())
        .bind(user.name.key())
        .bind(user.email.as_deref())
        .bind(int(user.version))
        .bind(to_json(S, "user", user)?)
        .execute(&mut *self.0)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn delete_user(&mut self, id: UserId) -> Result<bool, SqlError> {
        sqlx::query("DELETE FROM tokens WHERE user_id = ?1")
            .bind(id.to_string())
            .execute(&mut *self.0)
            .await
            .map_err(db)?;
        let r = sqlx::query("DELETE FROM users WHERE id = ?1")
            .bind(id.to_string())
            .execute(&mut *self.0)
            .await
            .map_err(db)?;
        Ok(r.rows_affected() > 0)
    }

    async fn put_role(&mut self, role: &Role) -> Result<(), SqlError> {
        sqlx::query("INSERT INTO roles (name, body) VALUES (?1, ?2) ON CONFLICT (name) DO UPDATE SET body = excluded.body")
            .bind(role.name.key())
            .bind(to_json(S, "role", role)?)
            .execute(&mut *self.0)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn delete_role(&mut self, name: &RoleName) -> Result<bool, SqlError> {
        let r = sqlx::query("DELETE FROM roles WHERE name = ?1")
            .bind(name.key())
            .execute(&mut *self.0)
            .await
            .map_err(db)?;
        Ok(r.rows_affected() > 0)
    }

    async fn insert_token(&mut self, t: &ApiTokenRecord) -> Result<(), SqlError> {
        sqlx::query("INSERT INTO tokens (id, user_id, created_ns, body) VALUES (?1, ?2, ?3, ?4)")
            .bind(t.id.to_string())
            .bind(t.user_id.to_string())
            .bind(ns(t.created_at))
            .bind(to_json(S, "token", t)?)
            .execute(&mut *self.0)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn update_token(&mut self, t: &ApiTokenRecord) -> Result<(), SqlError> {
        sqlx::query("UPDATE tokens SET body = ?2 WHERE id = ?1")
            .bind(t.id.to_string())
            .bind(to_json(S, "token", t)?)
            .execute(&mut *self.0)
            .await
            .map_err(db)?;
        Ok(())
    }
}

/// The import primitives inside the same `BEGIN IMMEDIATE` transaction.
impl Restore for SqliteTx<'_> {
    async fn is_empty(&mut self) -> Result<bool, SqlError> {
        let any: bool = sqlx::query_scalar(&crate::dialect::SQLITE.reads().any_row)
            .fetch_one(&mut *self.0)
            .await
            .map_err(db)?;
        Ok(!any)
    }

    common::restore_writes!(crate::dialect::SQLITE);

    async fn write_audit_head(
        &mut self,
        head: &wgm_core::integrity::AuditHead,
    ) -> Result<(), SqlError> {
        sqlx::query("UPDATE audit_head SET seq = ?1, hash = ?2 WHERE id = 1")
            .bind(int(head.seq))
            .bind(&head.hash)
            .execute(&mut *self.0)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn write_host_state(
        &mut self,
        s: &wgm_core::store::ServerSnapshot,
    ) -> Result<(), SqlError> {
        let sid = s.id.to_string();
        if let Some((revision, held)) = &s.allocator {
            sqlx::query("INSERT INTO allocators (server_id, revision, body) VALUES (?1, ?2, ?3)")
                .bind(&sid)
                .bind(int(revision.0))
                .bind(to_json(S, "allocator state", held)?)
                .execute(&mut *self.0)
                .await
                .map_err(db)?;
        }
        for a in &s.applied {
            sqlx::query(
                "INSERT INTO applied (server_id, host, revision, instance, verified_ns)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .bind(&sid)
            .bind(&a.host)
            .bind(int(a.revision.0))
            .bind(
                a.state
                    .and_then(|st| st.instance)
                    .map(crate::codec::instance_column),
            )
            .bind(a.state.map(|st| ns(st.verified_at)))
            .execute(&mut *self.0)
            .await
            .map_err(db)?;
        }
        for l in &s.leases {
            put_lease(&mut *self.0, l).await?;
        }
        for r in &s.reports {
            sqlx::query("INSERT INTO host_reports (server_id, host, body) VALUES (?1, ?2, ?3)")
                .bind(&sid)
                .bind(r.host.as_str())
                .bind(to_json(S, "host report", r)?)
                .execute(&mut *self.0)
                .await
                .map_err(db)?;
        }
        Ok(())
    }
}
