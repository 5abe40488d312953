//! # wgm-store-sql
//!
//! [`SqlStore`], the durable [`Store`] of wgm on SQL databases through sqlx: **SQLite**
//! (the embedded default, one file) and **PostgreSQL** (shared by many API servers and
//! agents, with a change feed over `LISTEN/NOTIFY`).
//!
//! ```
//! use wgm_core::store::{ServerStore, Store};
//! use wgm_store_sql::SqlStore;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> wgm_core::Result<()> {
//! let store = SqlStore::open("sqlite::memory:").await?;
//! assert_eq!(store.name(), "sqlite");
//! assert!(store.list_servers(wgm_core::model::Page::ALL).await?.is_empty());
//! # Ok(()) }
//! ```
//!
//! ## URLs
//! - `sqlite://path/to/wgm.db?mode=rwc` — a file, created if missing (`mode=rwc`).
//! - `sqlite::memory:` — a private in-memory database (one connection; tests and demos).
//! - `postgres://user:password@host:5432/database` — tables in schema `wgm`.
//!
//! ## Feature flags
//! - `sqlite` (default): the SQLite backend.
//! - `postgres` (default): the PostgreSQL backend (ids as `uuid`, `LISTEN/NOTIFY`).
//!
//! ## Semantics
//! Exactly those of `wgm_core::store::MemoryStore`, because both run the same rules
//! (`wgm_core::store::rules`), and checked by the same conformance suite. Each engine
//! here implements the rules' `Transaction` — the storage primitives inside one of its
//! transactions — and a [`ServerStore::commit`] is one transaction in which
//! `rules::commit_with_rules` compares the server's head with the expected revision
//! (`Conflict` with `ConflictKind::StaleRevision` otherwise), applies the changes, checks
//! the uniqueness of peer names, keys, addresses and prefixes (`AlreadyExists`, or
//! `Conflict` with `ConflictKind::Taken`), appends the revision with its MAC and the
//! audit record chained under the audit key it is given, and on PostgreSQL queues the
//! notification — all or nothing. The audit key itself is kept sealed in table
//! `audit_key` (migration 2); every read of an audit or revision row checks the columns
//! kept beside its JSON body against the body (`wgm_core::integrity`).
//!
//! ## Hosts: leases and reports
//! [`HostStateStore`]'s leases and host reports live in tables `leases` and
//! `host_reports` (migration 3), one row per server and host with the model's JSON. The
//! decisions are the model's, written once (`Lease::decide`, `Lease::released`,
//! `Lease::admit`); the store makes each read-decide-write one step: on SQLite inside a
//! write transaction (`BEGIN IMMEDIATE`), on PostgreSQL inside a transaction that first
//! takes the advisory lock of the key (`pg_advisory_xact_lock` of
//! `wgm.lease:<server>:<host>`), which a lease grant, a release and a report of that
//! host all take, so a report is never checked against a lease that is being replaced.
//! Reports are listed by host name in byte order.
//!
//! ## Login throttle
//! [`ThrottleStore`]'s records — the login throttle's failures per account and per
//! source, shared by every process on the database — live in table `login_throttle`
//! (migration 4): one row per key with the record's JSON and the Unix second from which
//! it is stale (`expires_at`). A read returns only rows that have not expired. A swap is
//! one transaction that reads the key's live record, compares it by value with the one
//! expected and, on a match, writes the next one (or deletes the row); on SQLite inside a
//! write transaction (`BEGIN IMMEDIATE`), on PostgreSQL under the advisory lock of
//! `wgm.throttle:<key>`, which also covers a key's first row. Each swap also deletes up to
//! 64 expired rows (PostgreSQL skips rows other transactions hold), so expired records do
//! not pile up. The table is not part of a snapshot: export skips it, an import counts a
//! database holding only throttle rows as empty, and a forced restore keeps them.
//!
//! ## Change feed
//! [`SqlStore`] implements [`ChangeFeed`]: [`ChangeFeed::watch`] returns wake-ups after
//! commits made from then on by any process that writes the database, as
//! [`FeedEvent::Committed`] (a server is at least at a revision; several commits may come
//! as one event) and [`FeedEvent::Missed`] (commits may have gone unreported; re-read the
//! heads). The revision log stays the truth: `wgm_core::store::Follower` reads it
//! whenever the feed wakes it, so a lost wake-up costs latency, never a revision.
//!
//! - **PostgreSQL** listens on channel `wgm_events`, to which every commit sends
//!   `<server>:<revision>` with `NOTIFY` inside its transaction (so a notification means
//!   the revision is durable). Each watcher listens on a connection of its own, outside
//!   the store's pool; `watch` fails when that first connection cannot be made (within
//!   [`SqlOptions::connect_timeout`]). When the connection is lost, the feed reconnects by
//!   itself — at once, then after pauses from 100 ms doubling to 5 s while the database
//!   is down, each attempt waiting at most the connect timeout — and once it listens
//!   again reports [`FeedEvent::Missed`] (notifications sent meanwhile are lost). It logs one warning when it goes down and one info line
//!   when it is back; the failed attempts in between are debug-level.
//! - **SQLite** has no notifications between processes, so the feed polls the head
//!   revisions of all servers (one small table) every [`SqlOptions::feed_interval`]
//!   (20 ms by default) and reports each server whose head changed since the last poll.
//!   The heads it starts from are read by `watch` itself. A poll takes a pooled
//!   connection only for its one query (so `sqlite::memory:`, a pool of one connection,
//!   works). A poll that fails is logged once and retried at the next interval; the
//!   first poll that succeeds again reports [`FeedEvent::Missed`].
//!
//! Both streams end when the store is [closed](SqlStore::close). A SQLite feed shares
//! the store's pool (so it keeps the database open while it lives); a PostgreSQL feed
//! only the store's connect options.
//!
//! ```
//! use futures::StreamExt;
//! use wgm_core::store::{ChangeFeed, FeedEvent};
//! use wgm_store_sql::SqlStore;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> wgm_core::Result<()> {
//! let store = SqlStore::open("sqlite::memory:").await?;
//! let mut events = store.watch().await?;
//! store.close().await;
//! assert_eq!(events.next().await, None::<FeedEvent>); // closed: the feed ends
//! # Ok(()) }
//! ```
//!
//! ## Why it is built this way
//! - **Serialization where it is cheap and certain.** SQLite writers take the write lock
//!   at `BEGIN IMMEDIATE` (a deferred transaction that upgrades can fail with
//!   `SQLITE_BUSY` at once, busy timeout or not); writers in one process queue on an async
//!   mutex before that, so the busy timeout only arbitrates between processes. WAL lets
//!   readers run beside the writer. PostgreSQL writers of one server lock its head row
//!   (`SELECT … FOR UPDATE`), so concurrent allocators queue instead of failing; the
//!   whole transaction is retried on SQLSTATE 40001, 40P01 and 23505 with jittered backoff.
//! - **Constraints as a second line of defence.** Peers keep their unique fields in their
//!   own columns (typed `inet` on PostgreSQL) under `UNIQUE (server, …)` constraints; the
//!   rest of every record is its serde JSON body, so the model can grow without a
//!   migration per field. Sealed secrets are stored as their ciphertext strings and never
//!   opened here.
//! - **Work per commit independent of the server's size.** A commit reads only the
//!   stored peers its changes name and those sharing a unique value with them (index
//!   probes), never the whole server; loading a server is two queries, one of them for
//!   all its peers.
//! - **Reads written once.** Both engines run the same read queries (every `Store` read,
//!   and the reads inside a commit but the peer probe, which takes its lists as
//!   `json_each` on SQLite and as arrays on PostgreSQL): each is one SQL template (`common.rs`) that the
//!   engine's dialect renders (`dialect.rs`: `?n` or `$n` placeholders, and the text only
//!   PostgreSQL gets: the `wgm.` schema, casts, `COLLATE "C"`, `FOR UPDATE`), run by code
//!   written once as a macro each engine expands. The engines differ only where the
//!   engines differ: id binding (text or `uuid`), how a read snapshot begins, and their
//!   writes (multi-row inserts, batch updates, `NOTIFY`).
//! - **Versioned migrations applied on open**, embedded in the binary, applied under
//!   `BEGIN IMMEDIATE` (SQLite) or an advisory lock (PostgreSQL); a database written by a
//!   newer schema is refused, and one written by an older schema is brought up to date
//!   (1: the tables, 2: `audit_key`, 3: `leases`, `host_reports`, `allocators`,
//!   4: `login_throttle`).
//!
//! ## Tests
//! The store conformance suite (`wgm_core::conformance::store`, every semantics check
//! included) runs on SQLite (file and memory) and PostgreSQL in `tests/conformance.rs`,
//! and on `MemoryStore` (the reference) in `tests/semantics.rs`. The change feed's suite
//! (`wgm_core::conformance::feed`) runs on the three in `tests/feed.rs` — on PostgreSQL
//! with the feed's sessions terminated mid-way — beside commits of a second store on one
//! database; `tests/feed_logs.rs` takes the feeds through outages and checks their logs.
//! PostgreSQL runs only when `WGM_TEST_POSTGRES_URL` names an administrative connection
//! (each test creates and drops a database of its own) and is skipped with one printed
//! line otherwise.

#![warn(clippy::unwrap_used)]

#[cfg(not(any(feature = "sqlite", feature = "postgres")))]
compile_error!("wgm-store-sql needs at least one of the features `sqlite` and `postgres`");

mod codec;
mod common;
mod dialect;
mod error;
mod migrate;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use wgm_core::auth::throttle::{ThrottleKey, ThrottleState};
use wgm_core::integrity::{AuditHead, AuditKey, StoredAuditKey};
use wgm_core::model::{
    ApiTokenRecord, AppliedState, AuditEntry, AuditQuery, AuditRecord, Commit, Committed,
    HostReport, IdentityChange, Lease, LeaseRequest, Page, PeerId, PeerStats, RevisionNo,
    RevisionRecord, Server, ServerId, ServerState, ServerSummary, TokenId, User, UserId,
};
use wgm_core::names::{ServerName, UserName};
use wgm_core::rbac::Role;
use wgm_core::seal::SealedSecret;
use wgm_core::store::{
    AuditStore, ChangeFeed, FeedEvent, HostStateStore, IdentityStore, SealAuditKey, ServerStore,
    Snapshot, SnapshotStore, Store, ThrottleRecord, ThrottleStore,
};
use wgm_core::{Error, Result};

use crate::error::SqlError;

/// Tuning of a [`SqlStore`]. The defaults suit both a CLI and a small server.
///
/// ```
/// use std::time::Duration;
/// let opts = wgm_store_sql::SqlOptions::default().max_connections(4).busy_timeout(Duration::from_secs(10));
/// assert_eq!((opts.max_connections, opts.busy_timeout), (4, Duration::from_secs(10)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SqlOptions {
    /// Most connections in the pool (an in-memory SQLite database always uses one).
    pub max_connections: u32,
    /// SQLite: how long a writer waits for another process's write lock before failing.
    pub busy_timeout: Duration,
    /// How long an operation waits for a free pooled connection.
    pub acquire_timeout: Duration,
    /// PostgreSQL: how long opening the store waits for its first connection (default
    /// 5 s). A server that refuses connections, is unreachable or does not answer fails
    /// the open after this long with a `store` error ([`Error::Store`], the CLI's exit
    /// code 6) that says why, instead of after the whole [`SqlOptions::acquire_timeout`]
    /// (sqlx retries a refused connection until then, taking it for a server starting
    /// up). The change feed waits as long for each connection it opens (`watch`, and each
    /// reconnection attempt).
    pub connect_timeout: Duration,
    /// SQLite: how often the change feed polls the head revisions (default 20 ms; see the
    /// crate docs, "Change feed"). The longest a commit of another process waits to be
    /// reported, and the cost of each watcher: one small query per interval.
    pub feed_interval: Duration,
}

impl SqlOptions {
    /// Set [`SqlOptions::max_connections`].
    #[must_use]
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n;
        self
    }

    /// Set [`SqlOptions::busy_timeout`].
    #[must_use]
    pub fn busy_timeout(mut self, d: Duration) -> Self {
        self.busy_timeout = d;
        self
    }

    /// Set [`SqlOptions::acquire_timeout`].
    #[must_use]
    pub fn acquire_timeout(mut self, d: Duration) -> Self {
        self.acquire_timeout = d;
        self
    }

    /// Set [`SqlOptions::connect_timeout`].
    ///
    /// ```
    /// use std::time::Duration;
    /// let opts = wgm_store_sql::SqlOptions::default();
    /// assert_eq!(opts.connect_timeout, Duration::from_secs(5));
    /// let opts = opts.connect_timeout(Duration::from_secs(2));
    /// assert_eq!(opts.connect_timeout, Duration::from_secs(2));
    /// ```
    #[must_use]
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// Set [`SqlOptions::feed_interval`] (a zero interval polls every millisecond).
    ///
    /// ```
    /// use std::time::Duration;
    /// let opts = wgm_store_sql::SqlOptions::default();
    /// assert_eq!(opts.feed_interval, Duration::from_millis(20));
    /// let opts = opts.feed_interval(Duration::from_millis(250));
    /// assert_eq!(opts.feed_interval, Duration::from_millis(250));
    /// ```
    #[must_use]
    pub fn feed_interval(mut self, d: Duration) -> Self {
        self.feed_interval = d;
        self
    }
}

impl Default for SqlOptions {
    fn default() -> Self {
        SqlOptions {
            max_connections: 8,
            busy_timeout: Duration::from_secs(5),
            acquire_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            feed_interval: Duration::from_millis(20),
        }
    }
}

enum Backend {
    #[cfg(feature = "sqlite")]
    Sqlite(sqlite::SqliteStore),
    #[cfg(feature = "postgres")]
    Postgres(postgres::PgStore),
}

/// A [`Store`] on SQLite or PostgreSQL. Cheap to share behind an `Arc`; all methods take
/// `&self` and are safe to call concurrently from many tasks (and, for the same database,
/// from many processes).
pub struct SqlStore {
    backend: Backend,
}

impl fmt::Debug for SqlStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the URL: it may hold a password.
        f.debug_struct("SqlStore")
            .field("backend", &self.name())
            .finish()
    }
}

/// Call the same method on whichever backend this store is.
macro_rules! dispatch {
    ($self:ident, $b:ident => $call:expr) => {
        match &$self.backend {
            #[cfg(feature = "sqlite")]
            Backend::Sqlite($b) => $call.await.map_err(Error::from),
            #[cfg(feature = "postgres")]
            Backend::Postgres($b) => $call.await.map_err(Error::from),
        }
    };
}

impl SqlStore {
    /// Open the database at `url` with default [`SqlOptions`], applying pending migrations.
    ///
    /// Errors: `InvalidInput` (field `store.url`) for a URL of no supported backend,
    /// `Store` when the database cannot be reached or its schema is newer than this build.
    pub async fn open(url: &str) -> Result<SqlStore> {
        Self::open_with(url, SqlOptions::default()).await
    }

    /// Open the database at `url` with the given options, applying pending migrations.
    pub async fn open_with(url: &str, options: SqlOptions) -> Result<SqlStore> {
        let backend = if url.starts_with("sqlite:") {
            #[cfg(feature = "sqlite")]
            {
                Backend::Sqlite(sqlite::SqliteStore::open(url, &options).await?)
            }
            #[cfg(not(feature = "sqlite"))]
            {
                return Err(Error::unsupported(
                    "sqlite: URLs (built without the `sqlite` feature)",
                ));
            }
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            #[cfg(feature = "postgres")]
            {
                Backend::Postgres(postgres::PgStore::open(url, &options).await?)
            }
            #[cfg(not(feature = "postgres"))]
            {
                return Err(Error::unsupported(
                    "postgres:// URLs (built without the `postgres` feature)",
                ));
            }
        } else {
            return Err(SqlError::Url {
                reason: "must start with sqlite: or postgres://".into(),
            }
            .into());
        };
        Ok(SqlStore { backend })
    }

    /// Close the connection pool, waiting for connections in use to be returned. Further
    /// operations fail with `Store`, and the streams of the change feed end.
    pub async fn close(&self) {
        match &self.backend {
            #[cfg(feature = "sqlite")]
            Backend::Sqlite(b) => b.close().await,
            #[cfg(feature = "postgres")]
            Backend::Postgres(b) => b.close().await,
        }
    }
}

#[async_trait]
impl Store for SqlStore {
    fn name(&self) -> &'static str {
        match &self.backend {
            #[cfg(feature = "sqlite")]
            Backend::Sqlite(_) => "sqlite",
            #[cfg(feature = "postgres")]
            Backend::Postgres(_) => "postgres",
        }
    }

    async fn schema_version(&self) -> Result<wgm_core::store::SchemaVersion> {
        dispatch!(self, b => b.schema_version())
    }
}

#[async_trait]
impl ServerStore for SqlStore {
    async fn load_server(&self, id: ServerId) -> Result<Option<ServerState>> {
        dispatch!(self, b => b.load_server(id))
    }

    async fn load_server_settings(&self, id: ServerId) -> Result<Option<(Server, RevisionNo)>> {
        dispatch!(self, b => b.load_server_settings(id))
    }

    async fn load_server_overview(
        &self,
        id: ServerId,
    ) -> Result<Option<(Server, RevisionNo, u64)>> {
        dispatch!(self, b => b.load_server_overview(id))
    }

    async fn find_peer(
        &self,
        id: ServerId,
        by: wgm_core::store::PeerLookup<'_>,
    ) -> Result<Option<wgm_core::model::Peer>> {
        dispatch!(self, b => b.find_peer(id, by))
    }

    async fn allocator_state(
        &self,
        id: ServerId,
    ) -> Result<Option<(RevisionNo, wgm_core::ipam::HeldRuns)>> {
        dispatch!(self, b => b.allocator_state(id))
    }

    async fn put_allocator_state(
        &self,
        id: ServerId,
        revision: RevisionNo,
        held: &wgm_core::ipam::HeldRuns,
    ) -> Result<()> {
        dispatch!(self, b => b.put_allocator_state(id, revision, held))
    }

    async fn find_server(&self, name: &ServerName) -> Result<Option<ServerId>> {
        dispatch!(self, b => b.find_server(name))
    }

    async fn list_servers(&self, page: Page) -> Result<Vec<ServerSummary>> {
        dispatch!(self, b => b.list_servers(page))
    }

    async fn head(&self, id: ServerId) -> Result<Option<RevisionNo>> {
        dispatch!(self, b => b.head(id))
    }

    async fn commit(&self, commit: Commit, key: &AuditKey) -> Result<Committed> {
        dispatch!(self, b => b.commit(&commit, key))
    }

    async fn commit_all(&self, commits: Vec<Commit>, key: &AuditKey) -> Vec<Result<Committed>> {
        let outcome = match &self.backend {
            #[cfg(feature = "sqlite")]
            Backend::Sqlite(b) => b.commit_all(&commits, key).await,
            #[cfg(feature = "postgres")]
            Backend::Postgres(b) => b.commit_all(&commits, key).await,
        };
        let outcome = outcome.map_err(|f| wgm_core::store::rules::BatchFailure {
            at: f.at,
            error: Error::from(f.error),
        });
        wgm_core::store::rules::batch_results(&commits, outcome)
    }

    async fn revisions(
        &self,
        id: ServerId,
        after: RevisionNo,
        limit: u64,
    ) -> Result<Vec<RevisionRecord>> {
        dispatch!(self, b => b.revisions(id, after, limit))
    }
}

#[async_trait]
impl HostStateStore for SqlStore {
    async fn set_applied(&self, id: ServerId, host: &str, revision: RevisionNo) -> Result<()> {
        dispatch!(self, b => b.set_applied(id, host, revision))
    }

    async fn set_applied_state(
        &self,
        id: ServerId,
        host: &str,
        state: &AppliedState,
    ) -> Result<()> {
        dispatch!(self, b => b.set_applied_state(id, host, state))
    }

    async fn applied_state(&self, id: ServerId, host: &str) -> Result<Option<AppliedState>> {
        dispatch!(self, b => b.applied_state(id, host))
    }

    async fn applied(&self, id: ServerId, host: &str) -> Result<Option<RevisionNo>> {
        dispatch!(self, b => b.applied(id, host))
    }

    async fn update_peer_stats(&self, id: ServerId, stats: &[(PeerId, PeerStats)]) -> Result<()> {
        dispatch!(self, b => b.update_peer_stats(id, stats))
    }

    async fn acquire_lease(&self, req: &LeaseRequest) -> Result<Lease> {
        dispatch!(self, b => b.acquire_lease(req))
    }

    async fn release_lease(&self, lease: &Lease, now: time::OffsetDateTime) -> Result<bool> {
        dispatch!(self, b => b.release_lease(lease, now))
    }

    async fn put_host_report(&self, report: &HostReport) -> Result<()> {
        dispatch!(self, b => b.put_host_report(report))
    }

    async fn host_reports(&self, id: ServerId) -> Result<Vec<HostReport>> {
        dispatch!(self, b => b.host_reports(id))
    }
}

/// See the crate docs, "Change feed": `NOTIFY` on PostgreSQL, polling on SQLite.
#[async_trait]
impl ChangeFeed for SqlStore {
    async fn watch(&self) -> Result<BoxStream<'static, FeedEvent>> {
        dispatch!(self, b => b.watch())
    }
}

#[async_trait]
impl IdentityStore for SqlStore {
    async fn get_user(&self, id: UserId) -> Result<Option<User>> {
        dispatch!(self, b => b.get_user(id))
    }

    async fn find_user(&self, name: &UserName) -> Result<Option<User>> {
        dispatch!(self, b => b.find_user(name))
    }

    async fn list_users(&self, page: Page) -> Result<Vec<User>> {
        dispatch!(self, b => b.list_users(page))
    }

    async fn list_roles(&self) -> Result<Vec<Role>> {
        dispatch!(self, b => b.list_roles())
    }

    async fn get_token(&self, id: TokenId) -> Result<Option<ApiTokenRecord>> {
        dispatch!(self, b => b.get_token(id))
    }

    async fn list_tokens(&self, user: Option<UserId>) -> Result<Vec<ApiTokenRecord>> {
        dispatch!(self, b => b.list_tokens(user))
    }

    async fn commit_identity(
        &self,
        changes: Vec<IdentityChange>,
        audit: AuditEntry,
        key: &AuditKey,
    ) -> Result<AuditRecord> {
        dispatch!(self, b => b.commit_identity(&changes, &audit, key))
    }
}

#[async_trait]
impl AuditStore for SqlStore {
    async fn append_audit(&self, entry: AuditEntry, key: &AuditKey) -> Result<AuditRecord> {
        dispatch!(self, b => b.append_audit(&entry, key))
    }

    async fn query_audit(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>> {
        dispatch!(self, b => b.query_audit(query))
    }

    async fn audit_head(&self) -> Result<AuditHead> {
        dispatch!(self, b => b.audit_head())
    }

    async fn audit_key(&self) -> Result<Option<StoredAuditKey>> {
        dispatch!(self, b => b.audit_key())
    }

    async fn init_audit_key(&self, seal: &SealAuditKey<'_>) -> Result<(StoredAuditKey, bool)> {
        dispatch!(self, b => b.init_audit_key(seal))
    }

    async fn reseal_audit_key(
        &self,
        expected: &SealedSecret,
        resealed: &StoredAuditKey,
    ) -> Result<()> {
        dispatch!(self, b => b.reseal_audit_key(expected, resealed))
    }
}

/// The login throttle's records in table `login_throttle` (migration 4): read on the
/// pool; each swap one write transaction serialized on its key (see the crate docs,
/// "Login throttle").
#[async_trait]
impl ThrottleStore for SqlStore {
    async fn throttle_records(
        &self,
        keys: &[ThrottleKey],
        now: time::OffsetDateTime,
    ) -> Result<Vec<Option<ThrottleState>>> {
        dispatch!(self, b => b.throttle_records(keys, now))
    }

    async fn swap_throttle_record(
        &self,
        key: &ThrottleKey,
        expected: Option<&ThrottleState>,
        new: Option<&ThrottleRecord>,
        now: time::OffsetDateTime,
    ) -> Result<bool> {
        dispatch!(self, b => b.swap_throttle_record(key, expected, new, now))
    }
}

/// Export in one read transaction (a deferred transaction on SQLite, whose first read
/// fixes its snapshot; `REPEATABLE READ READ ONLY` on PostgreSQL); import in one write
/// transaction that first checks every table is empty.
#[async_trait]
impl SnapshotStore for SqlStore {
    async fn export_snapshot(&self) -> Result<Snapshot> {
        dispatch!(self, b => b.export_snapshot())
    }

    async fn import_snapshot(&self, snapshot: &Snapshot) -> Result<()> {
        dispatch!(self, b => b.import_snapshot(snapshot, wgm_core::store::rules::ImportMode::IntoEmpty))
    }

    async fn replace_with_snapshot(&self, snapshot: &Snapshot) -> Result<()> {
        dispatch!(self, b => b.import_snapshot(snapshot, wgm_core::store::rules::ImportMode::Replace))
    }
}
