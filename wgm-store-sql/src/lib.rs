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
//! - `postgres` (default): the PostgreSQL backend and [`SqlStore::subscribe`].
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
//!   newer schema is refused.
//!
//! ## Tests
//! The store conformance suite (`wgm_core::conformance::store`, every semantics check
//! included) runs on SQLite (file and memory) and PostgreSQL in `tests/conformance.rs`,
//! and on `MemoryStore` (the reference) in `tests/semantics.rs`; PostgreSQL runs only when
//! `WGM_TEST_POSTGRES_URL` names an administrative connection (each test creates and
//! drops a database of its own) and is skipped with one printed line otherwise.

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
use wgm_core::integrity::{AuditHead, AuditKey, StoredAuditKey};
use wgm_core::model::{
    ApiTokenRecord, AuditEntry, AuditQuery, AuditRecord, Commit, Committed, IdentityChange, Page,
    PeerId, PeerStats, RevisionNo, RevisionRecord, ServerId, ServerState, ServerSummary, TokenId,
    User, UserId,
};
use wgm_core::names::{ServerName, UserName};
use wgm_core::rbac::Role;
use wgm_core::seal::SealedSecret;
use wgm_core::store::{
    AuditStore, HostStateStore, IdentityStore, SealAuditKey, ServerStore, Store,
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
    /// up).
    pub connect_timeout: Duration,
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
}

impl Default for SqlOptions {
    fn default() -> Self {
        SqlOptions {
            max_connections: 8,
            busy_timeout: Duration::from_secs(5),
            acquire_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
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

    /// Follow committed revisions of every server, as `(server, revision)`, from now on
    /// (PostgreSQL `LISTEN wgm_events`; each commit sends `NOTIFY` with `<server>:<revision>`
    /// in its transaction, so a notification means the revision is durable).
    ///
    /// Notifications sent while the listening connection is down are lost; the stream
    /// reconnects by itself, and a follower should reload the heads it cares about after
    /// an error item. `Unsupported` on SQLite (poll [`ServerStore::head`] there).
    #[cfg_attr(
        not(feature = "postgres"),
        allow(
            clippy::unused_async,
            reason = "async for the postgres backend; one signature for all builds"
        )
    )]
    pub async fn subscribe(&self) -> Result<BoxStream<'static, Result<(ServerId, RevisionNo)>>> {
        match &self.backend {
            #[cfg(feature = "sqlite")]
            Backend::Sqlite(_) => Err(Error::unsupported(
                "change notifications on sqlite (poll the head revision)",
            )),
            #[cfg(feature = "postgres")]
            Backend::Postgres(b) => b.subscribe().await.map_err(Error::from),
        }
    }

    /// Close the connection pool, waiting for connections in use to be returned. Further
    /// operations fail with `Store`.
    pub async fn close(&self) {
        match &self.backend {
            #[cfg(feature = "sqlite")]
            Backend::Sqlite(b) => b.close().await,
            #[cfg(feature = "postgres")]
            Backend::Postgres(b) => b.close().await,
        }
    }
}

impl Store for SqlStore {
    fn name(&self) -> &'static str {
        match &self.backend {
            #[cfg(feature = "sqlite")]
            Backend::Sqlite(_) => "sqlite",
            #[cfg(feature = "postgres")]
            Backend::Postgres(_) => "postgres",
        }
    }
}

#[async_trait]
impl ServerStore for SqlStore {
    async fn load_server(&self, id: ServerId) -> Result<Option<ServerState>> {
        dispatch!(self, b => b.load_server(id))
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

    async fn applied(&self, id: ServerId, host: &str) -> Result<Option<RevisionNo>> {
        dispatch!(self, b => b.applied(id, host))
    }

    async fn update_peer_stats(&self, id: ServerId, stats: &[(PeerId, PeerStats)]) -> Result<()> {
        dispatch!(self, b => b.update_peer_stats(id, stats))
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
