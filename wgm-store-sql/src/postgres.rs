//! The PostgreSQL backend: tables in schema `wgm`, typed `inet` columns, unique
//! constraints as a second line of defence, row locks on the server's head, retries on
//! 40001/40P01/23505, and `NOTIFY wgm_events` on every commit.
//!
//! Transactions run at READ COMMITTED. A commit first locks its server's head row
//! (`SELECT ... FOR UPDATE`): concurrent writers of one server (allocators included)
//! queue there, and each statement after the lock sees everything the previous holder
//! committed. Audit appends lock the single audit-head row, always as the last lock a
//! transaction takes, so lock order is fixed and the chain stays linear.
//!
//! Leases and host reports of one server on one host serialize on a transaction-scoped
//! advisory lock of that key ([`lock_host`]), so a grant and a report cannot interleave;
//! so do the swaps of one login-throttle record ([`lock_throttle`]).
//!
//! The change feed ([`PgStore::watch`]) listens on [`CHANNEL`] on a connection of its own
//! (see [`PgFeed`]).

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{BoxStream, StreamExt};
use sqlx::pool::CloseEvent;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;
use wgm_core::integrity::{AuditKey, StoredAuditKey};
use wgm_core::model::{
    ApiTokenRecord, AppliedState, AuditEntry, AuditQuery, AuditRecord, Commit, Committed,
    HostReport, IdentityChange, Lease, LeaseRequest, Page, Peer, PeerId, PeerStats, RevisionNo,
    RevisionRecord, Server, ServerId, ServerState, ServerSummary, TokenId, User, UserId,
};
use wgm_core::names::{RoleName, ServerName, UserName};
use wgm_core::rbac::Role;
use wgm_core::seal::SealedSecret;
use wgm_core::store::rules::{self, BatchFailure, Probe, Restore, Transaction, UserClash};
use wgm_core::store::{FeedEvent, SealAuditKey};
use wgm_core::Error;

use crate::codec::{int, ns, peer_body, peer_from, retrying, to_json};
use crate::common;
use crate::error::SqlError;
use crate::{migrate, SqlOptions};

const S: &str = "postgres";

/// The LISTEN/NOTIFY channel; payload `<server id>:<revision>`.
pub(crate) const CHANNEL: &str = "wgm_events";

/// Key of the advisory lock held while migrating (`wgm` in ASCII, as an `i64`).
const MIGRATION_LOCK: i64 = 0x0077_676d;

/// Rows per `INSERT ... SELECT FROM UNNEST(...)`.
const INSERT_CHUNK: usize = 2000;

fn db(e: sqlx::Error) -> SqlError {
    SqlError::Db {
        store: S,
        source: e,
    }
}

/// How an id column comes back: as a `uuid`.
type Id = Uuid;

/// An id (its UUID) as a parameter: a `uuid`.
fn bind_id(id: &Uuid) -> Uuid {
    *id
}

#[expect(
    clippy::unnecessary_wraps,
    reason = "the signature the shared reads expect (SQLite parses its ids)"
)]
fn server_id(id: &Uuid) -> Result<ServerId, SqlError> {
    Ok(ServerId(*id))
}

#[expect(
    clippy::unnecessary_wraps,
    reason = "the signature the shared reads expect (SQLite parses its ids)"
)]
fn peer_id(id: &Uuid) -> Result<PeerId, SqlError> {
    Ok(PeerId(*id))
}

/// The error of a server that gave no connection within `waited`, with the reason one
/// direct attempt gives (a refused connection fails at once there; the pool hid it
/// behind its retries). The reason is the driver's message, which never holds the URL.
async fn unreachable(connect: &PgConnectOptions, waited: std::time::Duration) -> SqlError {
    use sqlx::ConnectOptions as _;
    let probe = std::time::Duration::from_secs(2);
    let cause = match tokio::time::timeout(probe, connect.connect()).await {
        Ok(Err(e)) => e.to_string(),
        Ok(Ok(conn)) => {
            let _ = sqlx::Connection::close(conn).await;
            "the server answered only after the wait".to_owned()
        }
        Err(_) => "no answer".to_owned(),
    };
    SqlError::Unreachable {
        store: S,
        waited,
        cause,
    }
}

/// A PostgreSQL-backed store. See the crate documentation.
#[derive(Debug)]
pub(crate) struct PgStore {
    pool: PgPool,
    /// How long the change feed waits for a connection ([`SqlOptions::connect_timeout`]).
    connect_timeout: Duration,
}

impl PgStore {
    /// Connect and migrate.
    pub(crate) async fn open(url: &str, opts: &SqlOptions) -> Result<PgStore, SqlError> {
        let connect = PgConnectOptions::from_str(url)
            .map_err(|_| SqlError::Url {
                reason: "not a valid postgres:// URL".into(),
            })?
            // Every statement is planned for its parameters. sqlx keeps prepared
            // statements per connection, and after five runs PostgreSQL may switch one to
            // a generic plan made from the statistics of that moment: in a database that
            // starts empty and grows by single adds (before autovacuum has analyzed the
            // tables), that plan scanned every peer, and a long-lived process's adds went
            // from 3.5 ms to seconds at about 1 000 peers (`benches/benches/add_peer_stores.rs`).
            .options([("plan_cache_mode", "force_custom_plan")]);
        let pool = PgPoolOptions::new()
            .max_connections(opts.max_connections.max(1))
            .acquire_timeout(opts.acquire_timeout)
            .connect_lazy_with(connect.clone());
        // The first connection within the connect timeout, not the acquire timeout: sqlx
        // retries a refused connection until its deadline (a server starting up), which
        // would keep a CLI waiting 30 s for a server that is simply not there.
        match tokio::time::timeout(opts.connect_timeout, pool.acquire()).await {
            // Back to the pool, for the migration.
            Ok(Ok(conn)) => drop(conn),
            Ok(Err(sqlx::Error::PoolTimedOut)) | Err(_) => {
                pool.close().await;
                return Err(unreachable(&connect, opts.connect_timeout).await);
            }
            Ok(Err(e)) => return Err(db(e)),
        }
        let store = PgStore {
            pool,
            connect_timeout: opts.connect_timeout,
        };
        store.migrate().await?;
        Ok(store)
    }

    /// The schema recorded in the database and the one this build knows.
    pub(crate) async fn schema_version(&self) -> Result<wgm_core::store::SchemaVersion, SqlError> {
        let found: Option<i64> =
            sqlx::query_scalar("SELECT max(version) FROM wgm.schema_migrations")
                .fetch_one(&self.pool)
                .await
                .map_err(db)?;
        Ok(wgm_core::store::SchemaVersion {
            found: u64::try_from(found.unwrap_or(0)).unwrap_or(0),
            known: u64::try_from(migrate::latest(migrate::POSTGRES)).unwrap_or(0),
        })
    }

    async fn migrate(&self) -> Result<(), SqlError> {
        // The usual case first, without a lock or DDL (every command opens the store):
        // a database at exactly the known schema needs nothing. Anything else (no
        // schema yet, pending migrations, a newer schema) takes the locked path.
        // (Without the table yet, the query fails: that is the locked path too.)
        let current: Option<Vec<i64>> =
            sqlx::query_scalar("SELECT version FROM wgm.schema_migrations")
                .fetch_all(&self.pool)
                .await
                .ok();
        if let Some(applied) = current {
            if migrate::pending(S, migrate::POSTGRES, &applied)?.is_empty() {
                return Ok(());
            }
        }
        let mut tx = self.pool.begin().await.map_err(db)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        sqlx::raw_sql(
            "CREATE SCHEMA IF NOT EXISTS wgm;
             CREATE TABLE IF NOT EXISTS wgm.schema_migrations (
                 version bigint PRIMARY KEY, name text NOT NULL, applied_ns bigint NOT NULL
             );",
        )
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM wgm.schema_migrations")
            .fetch_all(&mut *tx)
            .await
            .map_err(db)?;
        for m in migrate::pending(S, migrate::POSTGRES, &applied)? {
            tracing::debug!(
                version = m.version,
                name = m.name,
                "applying postgres migration"
            );
            sqlx::raw_sql(m.sql).execute(&mut *tx).await.map_err(db)?;
            sqlx::query(
                "INSERT INTO wgm.schema_migrations (version, name, applied_ns) VALUES ($1, $2, $3)",
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

    /// Close the pool.
    pub(crate) async fn close(&self) {
        self.pool.close().await;
    }

    /// The change feed: `LISTEN` on [`CHANNEL`] on a connection of its own, connected now
    /// (an error if that fails), then followed by a [`PgFeed`].
    pub(crate) async fn watch(&self) -> Result<BoxStream<'static, FeedEvent>, SqlError> {
        // The listener has a pool of its own, which a closed store would not stop.
        if self.pool.is_closed() {
            return Err(db(sqlx::Error::PoolClosed));
        }
        // sqlx runs on tokio, so there is one (`listen` below needs it too).
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| Error::store(S, "the change feed needs a tokio runtime"))?;
        let connect = self.pool.connect_options();
        let listening = listen(&connect, self.connect_timeout).await.map_err(db)?;
        let feed = PgFeed {
            connect,
            closed: self.pool.close_event(),
            connect_timeout: self.connect_timeout,
            runtime,
            listening: Some(listening),
        };
        Ok(futures::stream::unfold(feed, |mut feed| async move {
            let event = feed.next().await?;
            Some((event, feed))
        })
        .boxed())
    }

    /// A read snapshot for `load_server`: both of its queries see one snapshot.
    async fn snapshot(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, SqlError> {
        self.pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(db)
    }

    common::store_reads!(crate::dialect::POSTGRES);

    common::export_reads!(crate::dialect::POSTGRES);

    common::throttle_methods!(crate::dialect::POSTGRES);

    /// A transaction for a swap of the login-throttle record `key`, holding the key's
    /// advisory lock ([`lock_throttle`]); the unit stands for SQLite's writer guard.
    async fn throttle_write(
        &self,
        key: &str,
    ) -> Result<((), sqlx::Transaction<'static, sqlx::Postgres>), SqlError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        lock_throttle(&mut tx, key).await?;
        Ok(((), tx))
    }

    /// Import a snapshot into this empty database, or in place of what it holds
    /// (`mode`): one transaction, which first locks the audit head (as every audited
    /// writer does), so a concurrent import or commit waits and then finds the database
    /// not empty, or its work replaced.
    pub(crate) async fn import_snapshot(
        &self,
        snapshot: &wgm_core::store::Snapshot,
        mode: rules::ImportMode,
    ) -> Result<(), SqlError> {
        retrying!(
            "import_snapshot",
            async {
                let mut tx = self.pool.begin().await.map_err(db)?;
                rules::import_snapshot_with_rules(&mut PgTx(&mut tx), S, snapshot, mode).await?;
                tx.commit().await.map_err(db)
            }
            .await
        )
    }

    pub(crate) async fn commit(&self, c: &Commit, key: &AuditKey) -> Result<Committed, SqlError> {
        retrying!(
            "commit",
            async {
                let mut tx = self.pool.begin().await.map_err(db)?;
                let r = rules::commit_with_rules(&mut PgTx(&mut tx), c, key).await?;
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
                let mut tx = self
                    .pool
                    .begin()
                    .await
                    .map_err(|e| BatchFailure::whole(db(e)))?;
                let done = rules::commit_all_with_rules(&mut PgTx(&mut tx), commits, key).await?;
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
                sqlx::query(
                    "INSERT INTO wgm.allocators (server_id, revision, body) VALUES ($1, $2, $3::jsonb)
                     ON CONFLICT (server_id) DO UPDATE SET revision = excluded.revision,
                         body = excluded.body
                     WHERE excluded.revision >= wgm.allocators.revision",
                )
                .bind(id.0)
                .bind(int(revision.0))
                .bind(&body)
                .execute(&self.pool)
                .await
                .map_err(db)
                .map(|_| ())
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
                sqlx::query(
                    "INSERT INTO wgm.applied (server_id, host, revision, instance, verified_ns)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (server_id, host) DO UPDATE SET revision = excluded.revision,
                         instance = excluded.instance, verified_ns = excluded.verified_ns",
                )
                .bind(id.0)
                .bind(host)
                .bind(int(revision.0))
                .bind(instance)
                .bind(verified_ns)
                .execute(&self.pool)
                .await
                .map_err(db)
                .map(|_| ())
            }
            .await
        )
    }

    /// Decide `req` against the stored lease ([`Lease::decide`]) and store the outcome, in
    /// one transaction under the lease's advisory lock ([`lock_host`]).
    pub(crate) async fn acquire_lease(&self, req: &LeaseRequest) -> Result<Lease, SqlError> {
        retrying!(
            "acquire_lease",
            async {
                let mut tx = self.pool.begin().await.map_err(db)?;
                lock_host(&mut tx, req.server_id, req.host.as_str()).await?;
                let current = stored_lease(&mut tx, req.server_id, req.host.as_str()).await?;
                let granted = Lease::decide(current.as_ref(), req)?;
                put_lease(&mut tx, &granted).await?;
                tx.commit().await.map_err(db)?;
                Ok(granted)
            }
            .await
        )
    }

    /// Release `lease` if it is still stored as given ([`Lease::released`]), under the
    /// lease's advisory lock.
    pub(crate) async fn release_lease(
        &self,
        lease: &Lease,
        now: OffsetDateTime,
    ) -> Result<bool, SqlError> {
        retrying!(
            "release_lease",
            async {
                let mut tx = self.pool.begin().await.map_err(db)?;
                lock_host(&mut tx, lease.server_id, lease.host.as_str()).await?;
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
    /// ([`Lease::admit`]; any report when there is none), under the same advisory lock as
    /// the lease, so that no grant slips between the check and the write.
    pub(crate) async fn put_host_report(&self, report: &HostReport) -> Result<(), SqlError> {
        let body = to_json(S, "host report", report)?;
        retrying!(
            "put_host_report",
            async {
                let mut tx = self.pool.begin().await.map_err(db)?;
                lock_host(&mut tx, report.server_id, report.host.as_str()).await?;
                if let Some(lease) =
                    stored_lease(&mut tx, report.server_id, report.host.as_str()).await?
                {
                    lease.admit(report)?;
                }
                sqlx::query(
                    "INSERT INTO wgm.host_reports (server_id, host, body) VALUES ($1, $2, $3::jsonb)
                     ON CONFLICT (server_id, host) DO UPDATE SET body = excluded.body",
                )
                .bind(report.server_id.0)
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

    pub(crate) async fn update_peer_stats(
        &self,
        id: ServerId,
        stats: &[(PeerId, PeerStats)],
    ) -> Result<(), SqlError> {
        // Later entries for one peer win, as if applied in order; rows are updated in id
        // order so that concurrent batches lock them in one order.
        let last: HashMap<PeerId, &PeerStats> = stats.iter().map(|(p, s)| (*p, s)).collect();
        let mut sorted: Vec<(PeerId, &PeerStats)> = last.into_iter().collect();
        sorted.sort_by_key(|(p, _)| *p);
        let ids: Vec<Uuid> = sorted.iter().map(|(p, _)| p.0).collect();
        let bodies: Vec<String> = sorted
            .iter()
            .map(|(_, s)| to_json(S, "peer stats", s))
            .collect::<Result<_, _>>()?;
        retrying!(
            "update_peer_stats",
            async {
                let mut tx = self.pool.begin().await.map_err(db)?;
                let exists: Option<i32> =
                    sqlx::query_scalar("SELECT 1 FROM wgm.servers WHERE id = $1")
                        .bind(id.0)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(db)?;
                if exists.is_none() {
                    return Err(Error::not_found("server", id).into());
                }
                sqlx::query(
                    "UPDATE wgm.peers p SET stats = s.stats::jsonb
                     FROM UNNEST($2::uuid[], $3::text[]) AS s(id, stats)
                     WHERE p.server_id = $1 AND p.id = s.id",
                )
                .bind(id.0)
                .bind(&ids)
                .bind(&bodies)
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
                let mut tx = self.pool.begin().await.map_err(db)?;
                let r = rules::commit_identity_with_rules(&mut PgTx(&mut tx), changes, audit, key)
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
                let mut tx = self.pool.begin().await.map_err(db)?;
                let r =
                    rules::append_audit_with_rules(&mut PgTx(&mut tx), entry.clone(), key).await?;
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
                let mut tx = self.pool.begin().await.map_err(db)?;
                let r = rules::init_audit_key_with_rules(&mut PgTx(&mut tx), seal).await?;
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
                let mut tx = self.pool.begin().await.map_err(db)?;
                rules::reseal_audit_key_with_rules(&mut PgTx(&mut tx), expected, resealed).await?;
                tx.commit().await.map_err(db)
            }
            .await
        )
    }
}

/// Serialize the lease and report writes of `server` on `host`: a transaction-scoped
/// advisory lock of the key `wgm.lease:<server>:<host>` (hashed to 64 bits; two keys
/// that collide only queue behind each other). Unlike a row lock it also covers the
/// first write of a key, when there is no row to lock yet.
async fn lock_host(conn: &mut PgConnection, server: ServerId, host: &str) -> Result<(), SqlError> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(format!("wgm.lease:{server}:{host}"))
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    Ok(())
}

/// Serialize the swaps of one login-throttle record: the transaction-scoped advisory
/// lock of `wgm.throttle:<key>` (hashed to 64 bits, like [`lock_host`]'s), which also
/// covers a key's first record, when there is no row to lock yet.
async fn lock_throttle(conn: &mut PgConnection, key: &str) -> Result<(), SqlError> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(format!("wgm.throttle:{key}"))
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    Ok(())
}

/// The stored lease of `server` on `host`, under [`lock_host`].
async fn stored_lease(
    conn: &mut PgConnection,
    server: ServerId,
    host: &str,
) -> Result<Option<Lease>, SqlError> {
    let body: Option<String> = sqlx::query_scalar(&crate::dialect::POSTGRES.reads().lease)
        .bind(server.0)
        .bind(host)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db)?;
    body.map(|b| common::lease(S, server, host, &b)).transpose()
}

/// Insert or replace the stored lease of `lease`'s server and host, under [`lock_host`].
async fn put_lease(conn: &mut PgConnection, lease: &Lease) -> Result<(), SqlError> {
    sqlx::query(
        "INSERT INTO wgm.leases (server_id, host, body) VALUES ($1, $2, $3::jsonb)
         ON CONFLICT (server_id, host) DO UPDATE SET body = excluded.body",
    )
    .bind(lease.server_id.0)
    .bind(lease.host.as_str())
    .bind(to_json(S, "lease", lease)?)
    .execute(&mut *conn)
    .await
    .map_err(db)?;
    Ok(())
}

/// The first pause between reconnection attempts of the change feed.
const FEED_BACKOFF_MIN: Duration = Duration::from_millis(100);
/// The longest pause between reconnection attempts of the change feed.
const FEED_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// A listening connection of the change feed, and the pool of its own it came from.
struct Listening {
    listener: PgListener,
    pool: PgPool,
}

impl Listening {
    /// Let go of the connection, closing it cleanly in the background (needs a tokio
    /// runtime: sqlx spawns its clean-up). Dropping the listener spawns `UNLISTEN` and the
    /// return of its connection (if it still has one) to its pool; closing the pool then
    /// waits for that and closes the connection with a proper goodbye.
    fn retire(self) {
        let Listening { listener, pool } = self;
        drop(listener);
        tokio::spawn(async move { pool.close().await });
    }
}

/// A new listening connection: `LISTEN` on [`CHANNEL`], on a pool of its own (one
/// connection, opened with the store's options `connect`, waiting at most `timeout` for
/// it), so that watchers never take connections from the store's pool.
async fn listen(connect: &PgConnectOptions, timeout: Duration) -> Result<Listening, sqlx::Error> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .min_connections(0)
        .acquire_timeout(timeout)
        .idle_timeout(None)
        .max_lifetime(None)
        .connect_lazy_with(connect.clone());
    let mut listener = PgListener::connect_with(&pool).await?;
    // The feed's own pool is never closed; the store's closing is watched instead
    // (`PgFeed::closed`).
    listener.ignore_pool_close_event(true);
    // A lost connection makes `try_recv` return `Ok(None)` at once; the feed reconnects
    // by itself (`PgFeed::reconnect`), with its own backoff and logs.
    listener.eager_reconnect(false);
    if let Err(e) = listener.listen(CHANNEL).await {
        Listening { listener, pool }.retire();
        return Err(e);
    }
    Ok(Listening { listener, pool })
}

/// The state of one PostgreSQL change feed.
///
/// Notifications become [`FeedEvent::Committed`]. A lost connection (`try_recv` gives
/// `Ok(None)`, or fails) drops the listener, with whatever state its connection was in,
/// and [`PgFeed::reconnect`] builds a new one — a fresh `LISTEN` — retrying with backoff
/// while the database is down; once it listens again the feed reports
/// [`FeedEvent::Missed`], since notifications sent meanwhile are lost. (sqlx's own
/// reconnection, `try_recv` or a query on the listener re-`LISTEN`ing in place, is not
/// used: after a failed attempt there it reconnects without the buffer of notifications
/// that arrive during its own queries.) The feed ends when the store's pool is closed.
struct PgFeed {
    /// The store's connect options, for reconnecting (not its pool: a feed does not keep
    /// the store's connections open).
    connect: Arc<PgConnectOptions>,
    /// Completes when the store's pool is closed.
    closed: CloseEvent,
    connect_timeout: Duration,
    /// The runtime `watch` ran on, entered to let go of the connection when the feed is
    /// dropped outside of it (a binding's garbage collector, a stream kept past its
    /// runtime), where sqlx's clean-up would panic for want of a runtime to spawn on.
    runtime: tokio::runtime::Handle,
    /// `None` while the feed is down.
    listening: Option<Listening>,
}

impl Drop for PgFeed {
    fn drop(&mut self) {
        if let Some(listening) = self.listening.take() {
            let _entered = self.runtime.enter();
            listening.retire();
        }
    }
}

impl PgFeed {
    /// The next event; `None` once the store is closed.
    async fn next(&mut self) -> Option<FeedEvent> {
        loop {
            let Some(listening) = self.listening.as_mut() else {
                self.reconnect().await?;
                return Some(FeedEvent::Missed);
            };
            match self.closed.do_until(listening.listener.try_recv()).await {
                // The store was closed.
                Err(_) => return None,
                Ok(Ok(Some(n))) => {
                    if let Some((server, revision)) = parse_payload(n.payload()) {
                        return Some(FeedEvent::Committed { server, revision });
                    }
                    tracing::debug!(
                        channel = CHANNEL,
                        "ignoring a notification that is not <server>:<revision>"
                    );
                }
                Ok(Ok(None)) => {
                    tracing::warn!(
                        store = S,
                        "the change feed lost its connection; reconnecting"
                    );
                    self.lose();
                }
                Ok(Err(e)) => {
                    tracing::warn!(store = S, error = %e, "the change feed failed; reconnecting");
                    self.lose();
                }
            }
        }
    }

    /// Let go of the current connection (lost, or in an unknown state after an error).
    fn lose(&mut self) {
        if let Some(listening) = self.listening.take() {
            listening.retire();
        }
    }

    /// Listen again: at once, then after pauses from [`FEED_BACKOFF_MIN`] doubling to
    /// [`FEED_BACKOFF_MAX`] while the database is down (each failure logged at debug
    /// level). `None` when the store is closed meanwhile.
    async fn reconnect(&mut self) -> Option<()> {
        let mut pause = FEED_BACKOFF_MIN;
        loop {
            match self
                .closed
                .do_until(listen(&self.connect, self.connect_timeout))
                .await
            {
                Err(_) => return None,
                Ok(Ok(listening)) => {
                    tracing::info!(store = S, "the change feed is listening again");
                    self.listening = Some(listening);
                    return Some(());
                }
                Ok(Err(e)) => {
                    tracing::debug!(store = S, error = %e, retry_in = ?pause, "the change feed cannot reconnect yet");
                }
            }
            self.closed.do_until(tokio::time::sleep(pause)).await.ok()?;
            pause = (pause * 2).min(FEED_BACKOFF_MAX);
        }
    }
}

/// Parse a `<server id>:<revision>` payload.
fn parse_payload(p: &str) -> Option<(ServerId, RevisionNo)> {
    let (id, rev) = p.split_once(':')?;
    Some((id.parse().ok()?, RevisionNo(rev.parse().ok()?)))
}

/// The primitives inside one READ COMMITTED transaction.
struct PgTx<'c>(&'c mut PgConnection);

impl Transaction for PgTx<'_> {
    type Error = SqlError;

    // `lock_server` locks the head row (`FOR UPDATE OF h`); `audit_tail` locks the audit
    // head: the last lock a transaction takes.
    common::tx_reads!(crate::dialect::POSTGRES);

    async fn peers_for_commit(
        &mut self,
        server: ServerId,
        ids: &[PeerId],
        probe: &Probe,
    ) -> Result<Vec<(PeerId, Peer)>, SqlError> {
        let ids: Vec<Uuid> = ids.iter().map(|p| p.0).collect();
        let rows: Vec<(Uuid, String, String)> = sqlx::query_as(
            "SELECT id, body::text, stats::text FROM wgm.peers WHERE server_id = $1 AND id IN (
                SELECT id FROM wgm.peers WHERE server_id = $1 AND id = ANY($2)
                UNION ALL
                SELECT id FROM wgm.peers WHERE server_id = $1 AND name_key = ANY($3)
                UNION ALL
                SELECT id FROM wgm.peers WHERE server_id = $1 AND public_key = ANY($4)
                UNION ALL
                SELECT id FROM wgm.peers WHERE server_id = $1 AND address_v6 = ANY($5::text[]::inet[])
                UNION ALL
                SELECT id FROM wgm.peers WHERE server_id = $1 AND address_v4 = ANY($6::text[]::inet[])
                UNION ALL
                SELECT id FROM wgm.peers WHERE server_id = $1
                    AND delegated_prefix = ANY($7::text[]::inet[]))",
        )
        .bind(server.0)
        .bind(&ids)
        .bind(&probe.names)
        .bind(&probe.keys)
        .bind(&probe.v6)
        .bind(&probe.v4)
        .bind(&probe.prefixes)
        .fetch_all(&mut *self.0)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|(id, body, stats)| Ok((PeerId(*id), peer_from(S, body, stats)?)))
            .collect()
    }

    async fn insert_head(&mut self, id: ServerId, rev: RevisionNo) -> Result<(), SqlError> {
        // Two creators of one id race here; the loser's 23505 is retried, after which it
        // sees the winner's head and fails with Conflict.
        sqlx::query("INSERT INTO wgm.heads (server_id, revision) VALUES ($1, $2)")
            .bind(id.0)
            .bind(int(rev.0))
            .execute(&mut *self.0)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn write_server(&mut self, s: &Server, exists: bool) -> Result<(), SqlError> {
        let sql = if exists {
            "UPDATE wgm.servers SET name_key = $2, interface = $3, public_key = $4, body = $5::jsonb WHERE id = $1"
        } else {
            "INSERT INTO wgm.servers (id, name_key, interface, public_key, body) VALUES ($1, $2, $3, $4, $5::jsonb)"
        };
        sqlx::query(sql)
            .bind(s.id.0)
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
        sqlx::query("DELETE FROM wgm.peers WHERE server_id = $1")
            .bind(id.0)
            .execute(&mut *self.0)
            .await
            .map_err(db)?;
        sqlx::query("DELETE FROM wgm.servers WHERE id = $1")
            .bind(id.0)
            .execute(&mut *self.0)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn delete_peers(&mut self, server: ServerId, ids: &[PeerId]) -> Result<(), SqlError> {
        let list: Vec<Uuid> = ids.iter().map(|p| p.0).collect();
        sqlx::query("DELETE FROM wgm.peers WHERE server_id = $1 AND id = ANY($2)")
            .bind(server.0)
            .bind(&list)
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
        for chunk in peers.chunks(INSERT_CHUNK) {
            let n = chunk.len();
            let (mut ids, mut names, mut keys) = (
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
            );
            let (mut v6, mut v4, mut pfx) = (
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
            );
            let (mut bodies, mut stats) = (Vec::with_capacity(n), Vec::with_capacity(n));
            for (id, p) in chunk {
                ids.push(id.0);
                names.push(p.name.key());
                keys.push(p.public_key.to_base64());
                v6.push(p.address_v6.map(|a| a.to_string()));
                v4.push(p.address_v4.map(|a| a.to_string()));
                pfx.push(p.delegated_prefix.map(|a| a.to_string()));
                bodies.push(peer_body(S, p)?);
                stats.push(to_json(S, "peer stats", &p.stats)?);
            }
            sqlx::query(
                "INSERT INTO wgm.peers
                     (server_id, id, name_key, public_key, address_v6, address_v4, delegated_prefix, body, stats)
                 SELECT $1, u.id, u.name_key, u.public_key, u.v6::inet, u.v4::inet, u.pfx::inet,
                        u.body::jsonb, u.stats::jsonb
                 FROM UNNEST($2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                             $8::text[], $9::text[])
                      AS u(id, name_key, public_key, v6, v4, pfx, body, stats)",
            )
            .bind(server.0)
            .bind(&ids)
            .bind(&names)
            .bind(&keys)
            .bind(&v6)
            .bind(&v4)
            .bind(&pfx)
            .bind(&bodies)
            .bind(&stats)
            .execute(&mut *self.0)
            .await
            .map_err(db)?;
        }
        Ok(())
    }

    async fn finish(&mut self, r: &RevisionRecord, rec: &AuditRecord) -> Result<(), SqlError> {
        // One statement for the rest: the head, the revision, the audit record, the audit
        // head and the notification (queued; sent by PostgreSQL only if the commit lands).
        sqlx::query(
            "WITH head AS (UPDATE wgm.heads SET revision = $2 WHERE server_id = $1),
                  rev AS (
                      INSERT INTO wgm.revisions (server_id, revision, at_ns, author, summary, body)
                      VALUES ($1, $2, $3, $4, $5, $6::jsonb)),
                  audit AS (
                      INSERT INTO wgm.audit (seq, at_ns, actor, server_id, object, body, prev_hash, hash)
                      VALUES ($7, $8, $9, $10, $11, $12::json, $13, $14)),
                  audit_head AS (UPDATE wgm.audit_head SET seq = $7, hash = $14 WHERE id = 1)
             SELECT pg_notify($15, $16)",
        )
        .bind(r.server_id.0)
        .bind(int(r.revision.0))
        .bind(ns(r.at))
        .bind(&r.author.label)
        .bind(&r.summary)
        .bind(to_json(S, "revision", r)?)
        .bind(int(rec.seq))
        .bind(ns(rec.entry.at))
        .bind(&rec.entry.actor.label)
        .bind(rec.entry.server_id.map(|s| s.0))
        .bind(&rec.entry.object)
        .bind(to_json(S, "audit entry", &rec.entry)?)
        .bind(&rec.prev_hash)
        .bind(&rec.hash)
        .bind(CHANNEL)
        .bind(format!("{}:{}", r.server_id, r.revision))
        .execute(&mut *self.0)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn finish_all(&mut self, done: &[Committed]) -> Result<(), SqlError> {
        let (Some(first), Some(last)) = (done.first(), done.last()) else {
            return Ok(());
        };
        if done.len() == 1 {
            return self.finish(&first.record, &first.audit).await;
        }
        // One statement for every commit of the chain: the head moves to the last
        // revision, the revisions and audit records go in by UNNEST in order, the audit
        // head moves to the last record, one notification per revision (in order).
        let n = done.len();
        let (mut revs, mut rev_at, mut authors, mut summaries, mut bodies) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let (mut seqs, mut audit_at, mut actors, mut servers) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let (mut objects, mut entries, mut prevs, mut hashes, mut payloads) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for c in done {
            let (r, a) = (&c.record, &c.audit);
            revs.push(int(r.revision.0));
            rev_at.push(ns(r.at));
            authors.push(r.author.label.clone());
            summaries.push(r.summary.clone());
            bodies.push(to_json(S, "revision", r)?);
            seqs.push(int(a.seq));
            audit_at.push(ns(a.entry.at));
            actors.push(a.entry.actor.label.clone());
            servers.push(a.entry.server_id.map(|s| s.0));
            objects.push(a.entry.object.clone());
            entries.push(to_json(S, "audit entry", &a.entry)?);
            prevs.push(a.prev_hash.clone());
            hashes.push(a.hash.clone());
            payloads.push(format!("{}:{}", r.server_id, r.revision));
        }
        sqlx::query(
            "WITH head AS (UPDATE wgm.heads SET revision = $2 WHERE server_id = $1),
                  rev AS (
                      INSERT INTO wgm.revisions (server_id, revision, at_ns, author, summary, body)
                      SELECT $1, u.revision, u.at_ns, u.author, u.summary, u.body::jsonb
                      FROM UNNEST($3::bigint[], $4::bigint[], $5::text[], $6::text[], $7::text[])
                           AS u(revision, at_ns, author, summary, body)),
                  audit AS (
                      INSERT INTO wgm.audit (seq, at_ns, actor, server_id, object, body, prev_hash, hash)
                      SELECT u.seq, u.at_ns, u.actor, u.server_id, u.object, u.body::json,
                             u.prev_hash, u.hash
                      FROM UNNEST($8::bigint[], $9::bigint[], $10::text[], $11::uuid[], $12::text[],
                                  $13::text[], $14::text[], $15::text[])
                           AS u(seq, at_ns, actor, server_id, object, body, prev_hash, hash)),
                  audit_head AS (UPDATE wgm.audit_head SET seq = $16, hash = $17 WHERE id = 1)
             SELECT pg_notify($18, u.payload)
             FROM UNNEST($19::text[]) WITH ORDINALITY AS u(payload, n) ORDER BY u.n",
        )
        .bind(last.record.server_id.0)
        .bind(int(last.record.revision.0))
        .bind(&revs)
        .bind(&rev_at)
        .bind(&authors)
        .bind(&summaries)
        .bind(&bodies)
        .bind(&seqs)
        .bind(&audit_at)
        .bind(&actors)
        .bind(&servers)
        .bind(&objects)
        .bind(&entries)
        .bind(&prevs)
        .bind(&hashes)
        .bind(int(last.audit.seq))
        .bind(&last.audit.hash)
        .bind(CHANNEL)
        .bind(&payloads)
        .execute(&mut *self.0)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn write_audit(&mut self, rec: &AuditRecord) -> Result<(), SqlError> {
        sqlx::query(
            "WITH audit AS (
                 INSERT INTO wgm.audit (seq, at_ns, actor, server_id, object, body, prev_hash, hash)
                 VALUES ($1, $2, $3, $4, $5, $6::json, $7, $8))
             UPDATE wgm.audit_head SET seq = $1, hash = $8 WHERE id = 1",
        )
        .bind(int(rec.seq))
        .bind(ns(rec.entry.at))
        .bind(&rec.entry.actor.label)
        .bind(rec.entry.server_id.map(|s| s.0))
        .bind(&rec.entry.object)
        .bind(to_json(S, "audit entry", &rec.entry)?)
        .bind(&rec.prev_hash)
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
            "UPDATE wgm.audit_key SET sealed = $1, legacy = $2::jsonb WHERE id = 1"
        } else {
            "INSERT INTO wgm.audit_key (id, sealed, legacy) VALUES (1, $1, $2::jsonb) ON CONFLICT (id) DO NOTHING"
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
        sqlx::query("INSERT INTO wgm.users (id, name_key, email, version, body) VALUES ($1, $2, $3, $4, $5::jsonb)")
            .bind(user.id.0)
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
        sqlx::query("UPDATE wgm.users SET name_key = $2, email = $3, version = $4, body = $5::jsonb WHERE id = $1")
            .bind(user.id.0)
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
        sqlx::query("DELETE FROM wgm.tokens WHERE user_id = $1")
            .bind(id.0)
            .execute(&mut *self.0)
            .await
            .map_err(db)?;
        let r = sqlx::query("DELETE FROM wgm.users WHERE id = $1")
            .bind(id.0)
            .execute(&mut *self.0)
            .await
            .map_err(db)?;
        Ok(r.rows_affected() > 0)
    }

    async fn put_role(&mut self, role: &Role) -> Result<(), SqlError> {
        sqlx::query(
            "INSERT INTO wgm.roles (name, body) VALUES ($1, $2::jsonb)
             ON CONFLICT (name) DO UPDATE SET body = excluded.body",
        )
        .bind(role.name.key())
        .bind(to_json(S, "role", role)?)
        .execute(&mut *self.0)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn delete_role(&mut self, name: &RoleName) -> Result<bool, SqlError> {
        let r = sqlx::query("DELETE FROM wgm.roles WHERE name = $1")
            .bind(name.key())
            .execute(&mut *self.0)
            .await
            .map_err(db)?;
        Ok(r.rows_affected() > 0)
    }

    async fn insert_token(&mut self, t: &ApiTokenRecord) -> Result<(), SqlError> {
        sqlx::query(
            "INSERT INTO wgm.tokens (id, user_id, created_ns, body) VALUES ($1, $2, $3, $4::jsonb)",
        )
        .bind(t.id.as_uuid())
        .bind(t.user_id.0)
        .bind(ns(t.created_at))
        .bind(to_json(S, "token", t)?)
        .execute(&mut *self.0)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn update_token(&mut self, t: &ApiTokenRecord) -> Result<(), SqlError> {
        sqlx::query("UPDATE wgm.tokens SET body = $2::jsonb WHERE id = $1")
            .bind(t.id.as_uuid())
            .bind(to_json(S, "token", t)?)
            .execute(&mut *self.0)
            .await
            .map_err(db)?;
        Ok(())
    }
}

/// The import primitives inside the same transaction.
impl Restore for PgTx<'_> {
    async fn is_empty(&mut self) -> Result<bool, SqlError> {
        let any: bool = sqlx::query_scalar(&crate::dialect::POSTGRES.reads().any_row)
            .fetch_one(&mut *self.0)
            .await
            .map_err(db)?;
        Ok(!any)
    }

    common::restore_writes!(crate::dialect::POSTGRES);

    async fn write_audit_head(
        &mut self,
        head: &wgm_core::integrity::AuditHead,
    ) -> Result<(), SqlError> {
        sqlx::query("UPDATE wgm.audit_head SET seq = $1, hash = $2 WHERE id = 1")
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
        if let Some((revision, held)) = &s.allocator {
            sqlx::query(
                "INSERT INTO wgm.allocators (server_id, revision, body) VALUES ($1, $2, $3::jsonb)",
            )
            .bind(s.id.0)
            .bind(int(revision.0))
            .bind(to_json(S, "allocator state", held)?)
            .execute(&mut *self.0)
            .await
            .map_err(db)?;
        }
        for a in &s.applied {
            sqlx::query(
                "INSERT INTO wgm.applied (server_id, host, revision, instance, verified_ns)
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(s.id.0)
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
            sqlx::query(
                "INSERT INTO wgm.host_reports (server_id, host, body) VALUES ($1, $2, $3::jsonb)",
            )
            .bind(s.id.0)
            .bind(r.host.as_str())
            .bind(to_json(S, "host report", r)?)
            .execute(&mut *self.0)
            .await
            .map_err(db)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_parse() {
        let id = ServerId::new_random();
        assert_eq!(parse_payload(&format!("{id}:7")), Some((id, RevisionNo(7))));
        assert_eq!(parse_payload("nonsense"), None);
        assert_eq!(parse_payload(&format!("{id}:-1")), None);
    }
}
