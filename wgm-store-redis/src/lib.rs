//! # wgm-store-redis
//!
//! [`RedisStore`], a [`Store`] of wgm on Redis: servers and their revisions, identities,
//! the keyed audit log, host leases and reports, and a change feed on a Redis Stream. It
//! passes the same conformance suites as the SQL stores (`wgm_core::conformance::store` and
//! `wgm_core::conformance::feed`).
//!
//! ```no_run
//! use wgm_core::store::{ServerStore, Store};
//! use wgm_store_redis::{RedisOptions, RedisStore};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> wgm_core::Result<()> {
//! let store = RedisStore::open("redis://127.0.0.1:6379", RedisOptions::default()).await?;
//! assert_eq!(store.name(), "redis");
//! let servers = store.list_servers(wgm_core::model::Page::ALL).await?;
//! # let _ = servers;
//! # Ok(()) }
//! ```
//!
//! ## URLs
//! - `redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]` — TCP; the password never appears in an
//!   error, a log line or a `Debug` output of this crate.
//! - `redis+unix:///path/to/redis.sock[?db=N]` — a Unix socket.
//!
//! TLS (`rediss://`) is not built in.
//!
//! ## Atomicity: optimistic transactions that run the core's rules
//! A commit ([`ServerStore::commit`]), an identity change, an audit append and the
//! creation or re-sealing of the audit key run the core's rules
//! (`wgm_core::store::rules`) — the same code the SQL and memory engines run — over this
//! crate's implementation of `rules::Transaction`, which is *optimistic*:
//!
//! 1. every read the rules make goes to Redis and is remembered with what it saw (a string
//!    key, a hash field, or a whole hash: the *read set*); reads of keys the transaction
//!    wrote itself are answered from its own buffer;
//! 2. every write is buffered;
//! 3. when the rules are done, **one Lua script** (sent by `EVALSHA`, loaded again when
//!    Redis lost it) checks that every key of the read set still holds exactly what was
//!    read, checks the type of every key it will write, and only then applies all the
//!    writes — state, head, revision, audit record and audit head, and for a server commit
//!    the change feed's entry. A script runs atomically, and it writes nothing before every
//!    check passed, so a commit lands whole or not at all (Redis never rolls a script
//!    back: that is why every check comes first);
//! 4. when a check fails, another writer got in between: the whole transaction runs again
//!    on fresh reads, after a short jittered pause (2 ms doubling, at most 250 ms), at
//!    least 16 times and until [`RedisOptions::contention_timeout`] (30 s) is spent; then
//!    it fails with a `store` error that says "contention".
//!
//! Every write of the audit log (a commit, an identity change, an append, the audit key)
//! reads and moves the one audit head, so two of them never both pass verification if
//! they overlap. Within one process they therefore queue on an async mutex first (as the
//! SQLite store's writers do), and only writers of different processes race; a test runs
//! 48 writers on 16 stores at once and every commit lands.
//!
//! The re-run yields the right outcome by itself: `Conflict` with
//! `ConflictKind::StaleRevision` when the server's head moved, `AlreadyExists` or
//! `ConflictKind::Taken` when a name, key or address was taken meanwhile, or success when
//! only the audit log moved. When the rules end in such an error, the read set is
//! verified too (by the same script, with no writes): an error is returned only when
//! everything it was decided on still holds, so a commit against a stale head reports
//! the stale head, never a value taken by the commit that moved the head — the contract
//! of [`ServerStore::commit`], exactly as on SQL. `WATCH`/`MULTI` is never used: it is not
//! safe on the multiplexed connection this store shares between tasks.
//!
//! Leases are decided the same way: `Lease::decide`, `Lease::released` and `Lease::admit`
//! (the model's, written once) run on the lease as read, and the script stores the
//! outcome only if the lease is still that one. Reads that must be consistent (a server
//! with its peers, a listing page with each server's head and peer count, a peer found
//! through an index) are single read-only scripts. The allocator state is one script:
//! stored unless a later revision's is there ("newest wins").
//!
//! A request that times out may still run on the server afterwards (the client stops
//! waiting, Redis does not know): a commit that returned a `store` error may have landed
//! (as with a cut connection during an SQL `COMMIT`). Reading the head tells.
//!
//! ## Key layout
//! Every key starts with `{NAMESPACE}:` ([`RedisOptions::namespace`], `wgm` by default),
//! one hash tag. Bodies are the model's serde JSON, as in the SQL stores.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `server:ID` | string | a server's body, while it exists |
//! | `heads` | hash | server id → head revision (deleted servers keep theirs) |
//! | `server-names` | hash | server name key → id |
//! | `servers` | sorted set | `NAMEKEY \x01 ID`, the listing order |
//! | `peers:ID` | hash | peer id → peer body (statistics apart) |
//! | `stats:ID` | hash | peer id → statistics |
//! | `index:ID` | hash | `n:NAMEKEY`, `k:PUBKEY`, `6:ADDR`, `4:ADDR`, `p:PREFIX` → peer id |
//! | `revisions:ID` | sorted set | revision bodies scored by number |
//! | `audit` | sorted set | audit records scored by sequence number |
//! | `audit-head` | string | `SEQ HASH` of the last record |
//! | `audit-key` | string | the sealed audit key |
//! | `feed`, `feed-seq` | stream, string | the change feed and its entry counter |
//! | `allocator:ID` | hash | `revision`, `body`: the durable allocator state |
//! | `applied:ID`, `leases:ID`, `reports:ID` | hash | host → applied revision, lease, report |
//! | `user:ID`, `user-names`, `user-emails`, `users` | string, hashes, sorted set | users and their unique indexes |
//! | `roles` | hash | role name key → role |
//! | `token:ID`, `tokens`, `user-tokens:ID` | string, hashes | API tokens |
//! | `schema` | string | the layout's version (a newer one is refused) |
//! | `ratelimit:KEY` | string | [`RedisLimiter`]: a key's GCRA arrival time (µs), expiring when idle |
//! | `throttle:KEY` | string | a login-throttle record ([`ThrottleStore`](wgm_core::store::ThrottleStore); `KEY` is `account:NAME` or `source:ADDRESS`), JSON, expiring when stale |
//!
//! Revision and sequence numbers are sorted-set scores (doubles): exact up to 2^53.
//! Every read checks a body against the key it was found under (a peer under another
//! peer's id, a revision whose number is not its score: `store` or `RevisionAltered` /
//! `AuditChainBroken` errors, never a panic).
//!
//! ## Deployments
//! The audit log is one chain for the whole store and every commit appends to it, so every
//! commit touches the audit head: all keys must be on one Redis primary. Supported:
//! - **a single Redis server** (or Valkey), optionally with replicas for reading backups;
//! - **Sentinel** (a primary with automatic failover), by pointing the URL at the current
//!   primary — this crate does not query Sentinel itself;
//! - **Redis Cluster only in the sense that every key lives in one slot**: the single hash
//!   tag `{NAMESPACE}` puts all keys of a store in one slot, hence on one shard; the store
//!   gains nothing from the cluster and this crate does not follow `MOVED` redirections
//!   (connect to the shard that owns the slot). Scripts that list build their keys from the
//!   prefix, which is legal only because of that one slot.
//!
//! Several stores can share one Redis under different namespaces.
//!
//! ## Durability
//! A Redis acknowledges a write once it is in memory. What survives a crash depends on
//! the server's persistence settings, not on this crate:
//! - `appendonly yes` with `appendfsync always`: every script's writes are in the
//!   append-only file and fsynced before the reply is sent, so **every commit that
//!   returned `Ok` survives** a crash or a `kill -9` of the server (this crate's tests do
//!   exactly that);
//! - `appendfsync everysec` (Redis's default with AOF): up to about one second of
//!   acknowledged commits can be lost when the machine (not just the process) crashes;
//! - no AOF (snapshots only, or nothing): everything since the last snapshot is lost;
//! - an `allkeys-*` eviction policy lets Redis delete keys of this store under memory
//!   pressure: never use one for a primary store.
//!
//! [`RedisStore::open`] reads `appendonly`, `appendfsync` and `maxmemory-policy`
//! (`CONFIG GET`) and logs a warning when there is no append-only file, when it is never
//! fsynced (`appendfsync no`) or when the eviction policy is `allkeys-*`, or refuses to
//! open then with [`RedisOptions::require_durable`] (`everysec` is accepted: it loses at
//! most about a second, and only when the machine crashes). A Redis that lost writes can
//! move backwards (faults F13): the change feed notices when its stream's counter goes
//! back and reports [`FeedEvent::Missed`] (followers re-read the heads); a commit computed
//! against the lost state fails its compare-and-swap or lands as the next revision of
//! what survived.
//!
//! ## Change feed
//! [`ChangeFeed::watch`] reads the stream `feed`, which the commit script appends to in
//! the same atomic step as the commit (so an entry means the commit landed, and every
//! commit has its entry). It is trimmed to about [`RedisOptions::feed_max_len`] entries
//! (`XADD MAXLEN ~`). Each watcher reads with `XREAD BLOCK` (1 s) on a connection of its
//! own, named [`RedisStore::feed_client_name`], from the last entry it read. Every entry
//! carries a number from a counter incremented by the same script, so a watcher that
//! lagged behind the trimming, or whose Redis restarted without the tail of the stream,
//! sees the numbers jump or go back and reports [`FeedEvent::Missed`]. When its
//! connection fails the feed reconnects by itself — at once, then after pauses from
//! 100 ms doubling to 5 s — and reports [`FeedEvent::Missed`] once it is back; it logs one
//! warning when it goes down and one info line when it is back. Feeds end when the store
//! is [closed](RedisStore::close).
//!
//! ## Unavailable Redis
//! Every request is bounded: a connection attempt by [`RedisOptions::connect_timeout`], a
//! reply by [`RedisOptions::response_timeout`], one request with its reconnection by
//! their sum. A Redis that is down, unreachable or hung makes every call fail with
//! [`wgm_core::Error::Store`] (`store: "redis"`) within that bound, and nothing is
//! half-written (a commit is one script).
//!
//! ## Design notes
//! What this crate does beyond, or differently from, the plan in `docs/design.md`, and why:
//! - **Reads inside a transaction are a snapshot of what it saw**: a key or field read
//!   twice is answered the second time from the first reading (and the transaction's own
//!   writes come first), so the rules never see two values of one key; the script checks
//!   the first reading.
//! - **A semantic error is verified before it is returned** (the read set, by the same
//!   script with no writes): the reads of one attempt are spread over several round trips,
//!   so without this a commit could report a value taken by the very commit that made its
//!   head stale, where the contract says the stale head comes first.
//! - **Index entries are deleted only where they point at the record removed**, decided on
//!   a read of the entries that joins the read set (not blindly), so a corrupt index is
//!   never made worse.
//! - **The feed numbers its entries** (an `INCR` in the commit script) instead of comparing
//!   the last id read with the stream's first id: a number that jumps tells a trimmed gap
//!   exactly, and one that goes back tells a Redis that lost writes (F13), which ids alone
//!   do not (a restarted Redis makes new ids above the old ones).
//! - **In-process writers queue** (see "Atomicity"), and retries are bounded by a time
//!   budget as well as a count: without the queue, 48 concurrent writers of one process
//!   exhausted 16 attempts.
//! - **A feed outlives a store that is dropped without [`RedisStore::close`]** (as a
//!   PostgreSQL feed does); closing the store ends it.
//!
//! ## Rate limits
//! [`RedisLimiter`] keeps the core's GCRA limits ([`wgm_core::ratelimit`]) in Redis for
//! processes that share a budget (copies of a REST server): one script reads a key's
//! arrival time, takes the time from the Redis server, decides and records in one atomic
//! step; a refusal writes nothing, and a key expires once its budget is whole again. It
//! opens a connection of its own ([`RedisLimiter::connect`]) or shares a store's
//! ([`RedisStore::limiter`]).
//!
//! ## Login throttle
//! The login throttle's records ([`wgm_core::store::ThrottleStore`]: failures per
//! account and per source, shared by every process on the store) are string keys
//! `throttle:KEY` holding the record and its expiry as JSON, with a Redis expiry (`PX`)
//! at the moment the record goes stale. A read is one script (a `GET` per key); a record past its expiry
//! (by the caller's clock) reads as absent even before Redis drops it. A swap reads the
//! key, compares the live record by value with the one expected, and one script writes
//! the next record only if the key still holds exactly what was read (otherwise the swap
//! returns `false` and the caller reads again). These keys are not store contents: a
//! snapshot does not read them, an import treats a namespace holding only them (and the
//! rate limiters' keys) as empty, and a forced restore keeps them, as it keeps the rate
//! limiters' — restoring old desired state is no reason to hand a guesser a fresh
//! budget. The layout's version is unchanged: an older build ignores these keys.
//!
//! ## Tests
//! `tests/limiter.rs` runs 64 tasks on two limiters against one key (exactly the burst
//! passes) and checks the script against the core's arithmetic; `tests/conformance.rs` runs every check of the store suite, and the whole suite twice
//! on one namespace; `tests/feed.rs` the feed suite with the watchers' connections killed
//! (`CLIENT KILL`), a trimmed stream and a stream that went back; `tests/faults.rs` the F1
//! race (64 tasks on a /28, two stores) and 48 writers on 16 stores; `tests/durability.rs`
//! starts its own `redis-server` with `appendfsync always`, kills it with `SIGKILL` and
//! finds every acknowledged commit after a restart; `tests/unavailable.rs` a closed port
//! and a server killed mid-use; `tests/corrupt.rs` bad values and a key of the wrong type
//! written behind the store's back; `tests/throttle.rs` two stores on one namespace
//! counting every login failure, the keys' Redis expiry and foreign values under
//! throttle keys. All but the closed port need `WGM_TEST_REDIS_URL`
//! (skipped with one printed line otherwise); each test uses a namespace of its own and
//! deletes its keys at the end.

#![warn(clippy::unwrap_used)]

mod conn;
mod error;
mod feed;
mod keys;
mod limiter;
mod scripts;
mod throttle;
mod tx;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Client;
use time::OffsetDateTime;
use wgm_core::error::{AuditBreak, ConflictKind};
use wgm_core::integrity::{AuditHead, AuditKey, StoredAuditKey};
use wgm_core::ipam::HeldRuns;
use wgm_core::model::{
    ApiTokenRecord, AppliedState, AuditEntry, AuditQuery, AuditRecord, Commit, Committed,
    HostReport, IdentityChange, Lease, LeaseRequest, Page, Peer, PeerId, PeerStats, RevisionNo,
    RevisionRecord, Server, ServerId, ServerState, ServerSummary, TokenId, User, UserId,
};
use wgm_core::names::{ServerName, UserName};
use wgm_core::rbac::Role;
use wgm_core::seal::SealedSecret;
use wgm_core::store::rules::{self, ProbeField};
use wgm_core::store::{
    AppliedSnapshot, AuditStore, ChangeFeed, FeedEvent, HostStateStore, IdentityStore, PeerLookup,
    SealAuditKey, ServerSnapshot, ServerStore, Snapshot, SnapshotStore, Store, SNAPSHOT_VERSION,
};
use wgm_core::{Error, Result};

use crate::conn::{Conn, Redactor};
use crate::error::{from_json, number, parse_id, to_json, RedisError, S};
use crate::keys::{index_field, Keys};
use crate::scripts::Scripts;
use crate::tx::{optimistic, RedisTx};

pub use crate::limiter::RedisLimiter;

/// The version of the key layout this build writes (key `schema`).
const SCHEMA_VERSION: u32 = 1;

/// Tuning of a [`RedisStore`]. The defaults suit both a CLI and a small server.
///
/// ```
/// use std::time::Duration;
/// use wgm_store_redis::RedisOptions;
/// let opts = RedisOptions::default().namespace("site-a").connect_timeout(Duration::from_secs(2));
/// assert_eq!(opts.namespace, "site-a");
/// assert_eq!(opts.connect_timeout, Duration::from_secs(2));
/// assert_eq!(opts.response_timeout, Duration::from_secs(5));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisOptions {
    /// The namespace of the store's keys: every key starts with `{NAMESPACE}:` (one hash
    /// tag). 1 to 64 characters out of `A-Z a-z 0-9 . _ : -`. Default `wgm`.
    pub namespace: String,
    /// How long one connection attempt may take (default 5 s).
    pub connect_timeout: Duration,
    /// How long Redis may take to answer one request (default 5 s).
    pub response_timeout: Duration,
    /// About how many entries the change feed's stream keeps (`XADD MAXLEN ~`; default
    /// 10 000). A watcher that falls further behind reports `FeedEvent::Missed`.
    pub feed_max_len: u64,
    /// How long a write may go on running again after losing its verification to
    /// concurrent writers of other processes (default 30 s; at least 16 attempts are
    /// made). Then it fails with a `store` error that says "contention".
    pub contention_timeout: Duration,
    /// Refuse to open on a Redis whose settings can lose acknowledged writes (no
    /// append-only file, or an `allkeys-*` eviction policy) instead of logging a warning
    /// (default `false`).
    pub require_durable: bool,
}

impl RedisOptions {
    /// Set [`RedisOptions::namespace`].
    ///
    /// ```
    /// let o = wgm_store_redis::RedisOptions::default().namespace("tenant-7");
    /// assert_eq!(o.namespace, "tenant-7");
    /// ```
    #[must_use]
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// Set [`RedisOptions::connect_timeout`].
    ///
    /// ```
    /// use std::time::Duration;
    /// let o = wgm_store_redis::RedisOptions::default().connect_timeout(Duration::from_secs(1));
    /// assert_eq!(o.connect_timeout, Duration::from_secs(1));
    /// ```
    #[must_use]
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// Set [`RedisOptions::response_timeout`].
    ///
    /// ```
    /// use std::time::Duration;
    /// let o = wgm_store_redis::RedisOptions::default().response_timeout(Duration::from_secs(2));
    /// assert_eq!(o.response_timeout, Duration::from_secs(2));
    /// ```
    #[must_use]
    pub fn response_timeout(mut self, d: Duration) -> Self {
        self.response_timeout = d;
        self
    }

    /// Set [`RedisOptions::feed_max_len`] (at least 1).
    ///
    /// ```
    /// let o = wgm_store_redis::RedisOptions::default().feed_max_len(500);
    /// assert_eq!(o.feed_max_len, 500);
    /// ```
    #[must_use]
    pub fn feed_max_len(mut self, n: u64) -> Self {
        self.feed_max_len = n.max(1);
        self
    }

    /// Set [`RedisOptions::contention_timeout`].
    ///
    /// ```
    /// use std::time::Duration;
    /// let o = wgm_store_redis::RedisOptions::default().contention_timeout(Duration::from_secs(5));
    /// assert_eq!(o.contention_timeout, Duration::from_secs(5));
    /// ```
    #[must_use]
    pub fn contention_timeout(mut self, d: Duration) -> Self {
        self.contention_timeout = d;
        self
    }

    /// Set [`RedisOptions::require_durable`].
    ///
    /// ```
    /// let o = wgm_store_redis::RedisOptions::default().require_durable(true);
    /// assert!(o.require_durable);
    /// ```
    #[must_use]
    pub fn require_durable(mut self, yes: bool) -> Self {
        self.require_durable = yes;
        self
    }

    fn check(&self) -> Result<()> {
        let ok = !self.namespace.is_empty()
            && self.namespace.len() <= 64
            && self
                .namespace
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-'));
        if !ok {
            return Err(Error::invalid(
                "store.namespace",
                "must be 1 to 64 characters out of A-Z a-z 0-9 . _ : -",
            ));
        }
        if self.connect_timeout.is_zero() || self.response_timeout.is_zero() {
            return Err(Error::invalid(
                "store.timeout",
                "connect and response timeouts must be positive",
            ));
        }
        Ok(())
    }
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            namespace: "wgm".into(),
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(5),
            feed_max_len: 10_000,
            contention_timeout: Duration::from_secs(30),
            require_durable: false,
        }
    }
}

/// What the store's methods share.
struct Inner {
    conn: Conn,
    keys: Keys,
    scripts: Arc<Scripts>,
    options: RedisOptions,
    client: Client,
    closed: Arc<AtomicBool>,
    closing: tokio::sync::watch::Sender<bool>,
    feed_client_name: String,
    /// Writers of the audit log in this process queue here (see the crate docs,
    /// "Atomicity"): every one of them reads and moves the audit head, so running them
    /// side by side in one process would only make them fail each other's verification.
    writer: tokio::sync::Mutex<()>,
}

/// A [`Store`] on Redis. Cheap to share behind an `Arc`; all methods take `&self` and are
/// safe to call concurrently from many tasks and many processes (see the crate docs for
/// how commits stay atomic).
///
/// ```no_run
/// use wgm_core::store::ServerStore;
/// use wgm_store_redis::{RedisOptions, RedisStore};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> wgm_core::Result<()> {
/// let store = RedisStore::open("redis://:secret@127.0.0.1:6379/0", RedisOptions::default()).await?;
/// assert!(!format!("{store:?}").contains("secret"));
/// assert!(store.head(wgm_core::model::ServerId::new_random()).await?.is_none());
/// store.close();
/// # Ok(()) }
/// ```
pub struct RedisStore {
    inner: Inner,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the URL: it may hold a password.
        f.debug_struct("RedisStore")
            .field("namespace", &self.inner.options.namespace)
            .field("closed", &self.inner.closed.load(Ordering::Acquire))
            .finish_non_exhaustive()
    }
}

/// The password in a Redis URL, if any (to redact it from messages).
fn url_password(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?']).next()?;
    let userinfo = authority.rsplit_once('@')?.0;
    let password = userinfo.split_once(':').map_or(userinfo, |(_, p)| p);
    (!password.is_empty()).then(|| password.to_owned())
}

/// Opens the connection manager of a store or a limiter: every request bounded by the
/// options' connect plus response timeouts, every message redacted.
async fn connect(url: &str, options: &RedisOptions) -> Result<(Conn, Client, Arc<AtomicBool>)> {
    let redactor = Redactor::new(url_password(url));
    let client = Client::open(url).map_err(|e| {
        Error::invalid(
            "store.url",
            format!("not a usable Redis URL: {}", redactor.clean(&e.to_string())),
        )
    })?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(options.connect_timeout))
        .set_response_timeout(Some(options.response_timeout))
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_secs(1));
    let waited = options.connect_timeout + options.response_timeout;
    let manager = match tokio::time::timeout(
        waited,
        ConnectionManager::new_with_config(client.clone(), config),
    )
    .await
    {
        Ok(Ok(m)) => m,
        Ok(Err(e)) => {
            return Err(RedisError::Unreachable {
                waited,
                cause: redactor.clean(&e.to_string()),
            }
            .into())
        }
        Err(_) => {
            return Err(RedisError::Unreachable {
                waited,
                cause: "no answer".into(),
            }
            .into())
        }
    };
    let closed = Arc::new(AtomicBool::new(false));
    let conn = Conn::new(manager, waited, redactor, closed.clone());
    Ok((conn, client, closed))
}

impl RedisStore {
    /// Connect to the Redis at `url` (see the crate docs, "URLs"), check the key layout's
    /// version and the server's durability settings.
    ///
    /// Errors: `InvalidInput` (field `store.url` or `store.namespace`) for a URL or an
    /// option that cannot be used; `Store` when Redis cannot be reached within
    /// [`RedisOptions::connect_timeout`] plus [`RedisOptions::response_timeout`], when its
    /// keys were written by a newer wgm, or when it is not durable and
    /// [`RedisOptions::require_durable`] is set. No error carries the URL's password.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use wgm_store_redis::{RedisOptions, RedisStore};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let r = RedisStore::open(
    ///     "redis://:hunter2@127.0.0.1:1",
    ///     RedisOptions::default().connect_timeout(Duration::from_secs(1)),
    /// )
    /// .await;
    /// let e = r.unwrap_err();
    /// assert_eq!(e.code(), "store");
    /// assert!(!e.to_string().contains("hunter2"));
    /// # }
    /// ```
    pub async fn open(url: &str, options: RedisOptions) -> Result<RedisStore> {
        options.check()?;
        let (conn, client, closed) = connect(url, &options).await?;
        let keys = Keys::new(&options.namespace);
        let (closing, _) = tokio::sync::watch::channel(false);
        let feed_client_name = format!("wgm-feed:{}", options.namespace);
        let store = RedisStore {
            inner: Inner {
                conn,
                keys,
                scripts: Arc::new(Scripts::new()),
                options,
                client,
                closed,
                closing,
                feed_client_name,
                writer: tokio::sync::Mutex::new(()),
            },
        };
        store.check_schema().await?;
        store.check_durability().await?;
        Ok(store)
    }

    /// The name ([`CLIENT SETNAME`](https://redis.io/commands/client-setname/)) of the
    /// connections of this store's change feeds, `wgm-feed:NAMESPACE`: an operator finds
    /// them in `CLIENT LIST`.
    ///
    /// ```no_run
    /// # use wgm_store_redis::{RedisOptions, RedisStore};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> wgm_core::Result<()> {
    /// let store = RedisStore::open("redis://127.0.0.1", RedisOptions::default().namespace("n1")).await?;
    /// assert_eq!(store.feed_client_name(), "wgm-feed:n1");
    /// # Ok(()) }
    /// ```
    pub fn feed_client_name(&self) -> &str {
        &self.inner.feed_client_name
    }

    /// The namespace of this store's keys ([`RedisOptions::namespace`]).
    ///
    /// ```no_run
    /// # use wgm_store_redis::{RedisOptions, RedisStore};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> wgm_core::Result<()> {
    /// let store = RedisStore::open("redis://127.0.0.1", RedisOptions::default()).await?;
    /// assert_eq!(store.namespace(), "wgm");
    /// # Ok(()) }
    /// ```
    pub fn namespace(&self) -> &str {
        &self.inner.options.namespace
    }

    /// Close the store: further operations fail with a `store` error and the streams of
    /// the change feed end. Idempotent.
    ///
    /// ```no_run
    /// # use wgm_store_redis::{RedisOptions, RedisStore};
    /// # use wgm_core::store::ServerStore;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> wgm_core::Result<()> {
    /// let store = RedisStore::open("redis://127.0.0.1", RedisOptions::default()).await?;
    /// store.close();
    /// assert_eq!(store.head(wgm_core::model::ServerId::new_random()).await.unwrap_err().code(), "store");
    /// # Ok(()) }
    /// ```
    pub fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
        self.inner.closing.send_replace(true);
    }

    async fn check_schema(&self) -> Result<()> {
        let mut inv = self.inner.scripts.schema.prepare_invoke();
        inv.key(self.inner.keys.schema()).arg(SCHEMA_VERSION);
        let found: String = self.inner.conn.script(&inv).await?;
        if found != SCHEMA_VERSION.to_string() {
            return Err(RedisError::SchemaTooNew {
                found,
                known: SCHEMA_VERSION,
            }
            .into());
        }
        Ok(())
    }

    /// Warn about (or with `require_durable`, refuse) settings that lose acknowledged
    /// writes. A server that refuses `CONFIG GET` (a managed Redis) is taken as it is,
    /// with a debug line.
    async fn check_durability(&self) -> Result<()> {
        let mut problems = Vec::new();
        let config: std::result::Result<BTreeMap<String, String>, RedisError> = self
            .inner
            .conn
            .query(
                redis::cmd("CONFIG")
                    .arg("GET")
                    .arg("appendonly")
                    .arg("appendfsync")
                    .arg("maxmemory-policy"),
            )
            .await;
        let config = match config {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(store = S, error = %e, "cannot read the durability settings (CONFIG GET)");
                return Ok(());
            }
        };
        if config.get("appendonly").map(String::as_str) != Some("yes") {
            problems.push(
                "appendonly is not yes: writes since the last snapshot are lost in a crash"
                    .to_owned(),
            );
        } else if config.get("appendfsync").map(String::as_str) == Some("no") {
            problems
                .push("appendfsync is no: the OS decides when writes reach the disk".to_owned());
        }
        if let Some(policy) = config.get("maxmemory-policy") {
            if policy.starts_with("allkeys-") {
                problems.push(format!(
                    "maxmemory-policy is {policy}: Redis may evict the store's keys"
                ));
            }
        }
        if problems.is_empty() {
            return Ok(());
        }
        let reason = problems.join("; ");
        if self.inner.options.require_durable {
            return Err(RedisError::NotDurable { reason }.into());
        }
        tracing::warn!(store = S, %reason, "Redis can lose acknowledged writes of this store");
        Ok(())
    }
}

impl Inner {
    /// Take this process's turn to write the audit log, waiting at most as long as one
    /// request may take (so a call stays bounded while Redis hangs under earlier writers).
    async fn writer_turn(
        &self,
    ) -> std::result::Result<tokio::sync::MutexGuard<'_, ()>, RedisError> {
        let limit = self.options.connect_timeout + self.options.response_timeout;
        tokio::time::timeout(limit, self.writer.lock())
            .await
            .map_err(|_| RedisError::Timeout { waited: limit })
    }

    fn tx(&self) -> RedisTx<'_> {
        RedisTx::new(
            &self.conn,
            &self.keys,
            &self.scripts,
            self.options.feed_max_len,
        )
    }

    async fn read_server(
        &self,
        id: ServerId,
        mode: &str,
    ) -> std::result::Result<Vec<redis::Value>, RedisError> {
        let mut inv = self.scripts.read_server.prepare_invoke();
        inv.key(self.keys.server(id))
            .key(self.keys.heads())
            .key(self.keys.peers(id))
            .key(self.keys.stats(id))
            .arg(id.to_string())
            .arg(mode);
        self.conn.script(&inv).await
    }
}

/// A reply value as text (`None` for nil).
fn opt_text(v: &redis::Value) -> std::result::Result<Option<String>, RedisError> {
    match v {
        redis::Value::Nil => Ok(None),
        redis::Value::BulkString(b) => String::from_utf8(b.clone())
            .map(Some)
            .map_err(|_| RedisError::BadValue { what: "text value" }),
        redis::Value::SimpleString(s) => Ok(Some(s.clone())),
        redis::Value::Int(i) => Ok(Some(i.to_string())),
        _ => Err(RedisError::BadValue {
            what: "reply of a read script",
        }),
    }
}

fn text(v: &redis::Value, what: &'static str) -> std::result::Result<String, RedisError> {
    opt_text(v)?.ok_or(RedisError::BadValue { what })
}

/// A flat `field value field value …` reply (HGETALL inside a script) as pairs.
fn pairs(v: &redis::Value) -> std::result::Result<Vec<(String, String)>, RedisError> {
    let redis::Value::Array(items) = v else {
        return Err(RedisError::BadValue {
            what: "reply of a read script",
        });
    };
    items
        .chunks(2)
        .map(|kv| match kv {
            [k, v] => Ok((text(k, "hash field")?, text(v, "hash value")?)),
            _ => Err(RedisError::BadValue {
                what: "reply of a read script",
            }),
        })
        .collect()
}

fn server_body(id: ServerId, body: &str) -> std::result::Result<Server, RedisError> {
    let s: Server = from_json("server", body)?;
    if s.id != id {
        return Err(RedisError::BadValue {
            what: "server (its key disagrees with its body)",
        });
    }
    Ok(s)
}

fn head_value(v: &redis::Value) -> std::result::Result<RevisionNo, RedisError> {
    let h = text(v, "head revision of an existing server")?;
    Ok(RevisionNo(number("head revision", &h)?))
}

fn peer_with_stats(
    server: ServerId,
    id: &str,
    body: &str,
    stats: Option<&str>,
) -> std::result::Result<Peer, RedisError> {
    let mut p: Peer = from_json("peer", body)?;
    if p.id.to_string() != id || p.server_id != server {
        return Err(RedisError::BadValue {
            what: "peer (its key disagrees with its body)",
        });
    }
    p.stats = match stats {
        Some(s) => from_json("peer stats", s)?,
        None => PeerStats::default(),
    };
    Ok(p)
}

/// A page as a `ZRANGE` index range (`stop` -1: to the end).
fn range(page: Page) -> (i64, i64) {
    let start = i64::try_from(page.offset).unwrap_or(i64::MAX);
    let stop = page
        .offset
        .checked_add(page.limit)
        .and_then(|end| end.checked_sub(1))
        .and_then(|s| i64::try_from(s).ok())
        .unwrap_or(-1);
    (start, stop)
}

/// The applied record of a host: the revision and, when the last record had one, the
/// device part.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct AppliedRow {
    pub(crate) revision: RevisionNo,
    #[serde(default)]
    pub(crate) state: Option<AppliedState>,
}

/// The durable allocator state: `(revision, held)` from its hash fields.
fn allocator_row(
    revision: Option<String>,
    body: Option<String>,
) -> std::result::Result<Option<(RevisionNo, HeldRuns)>, RedisError> {
    match (revision, body) {
        (Some(r), Some(b)) => Ok(Some((
            RevisionNo(number("allocator revision", &r)?),
            from_json("allocator state", &b)?,
        ))),
        (None, None) => Ok(None),
        _ => Err(RedisError::BadValue {
            what: "allocator state (revision without body or body without revision)",
        }),
    }
}

/// Parse a sorted-set reply `member score member score …`.
fn scored(v: Vec<(String, String)>) -> std::result::Result<Vec<(String, u64)>, RedisError> {
    v.into_iter()
        .map(|(m, s)| {
            let score: f64 = s
                .parse()
                .map_err(|_| RedisError::BadValue { what: "score" })?;
            if !(score >= 0.0 && score.fract() == 0.0 && score < 9.007_199_254_740_992e15) {
                return Err(RedisError::BadValue { what: "score" });
            }
            // Checked above: a non-negative whole number below 2^53.
            #[allow(clippy::cast_sign_loss)]
            Ok((m, score as u64))
        })
        .collect()
}

#[async_trait]
impl Store for RedisStore {
    fn name(&self) -> &'static str {
        S
    }

    async fn schema_version(&self) -> Result<wgm_core::store::SchemaVersion> {
        let found: Option<String> = self
            .inner
            .conn
            .query(redis::cmd("GET").arg(self.inner.keys.schema()))
            .await?;
        Ok(wgm_core::store::SchemaVersion {
            // A value that is not a number is no schema this build knows.
            found: found.map_or(0, |v| v.parse().unwrap_or(u64::MAX)),
            known: SCHEMA_VERSION.into(),
        })
    }
}

#[async_trait]
impl ServerStore for RedisStore {
    async fn load_server(&self, id: ServerId) -> Result<Option<ServerState>> {
        let r = self.inner.read_server(id, "full").await?;
        let [body, head, peers, stats] = r.as_slice() else {
            if r.is_empty() {
                return Ok(None);
            }
            return Err(RedisError::BadValue {
                what: "reply of the server read",
            }
            .into());
        };
        let server = server_body(id, &text(body, "server body")?)?;
        let revision = head_value(head)?;
        let stats: BTreeMap<String, String> = pairs(stats)?.into_iter().collect();
        let mut all = BTreeMap::new();
        for (pid, body) in pairs(peers)? {
            let p = peer_with_stats(id, &pid, &body, stats.get(&pid).map(String::as_str))?;
            all.insert(p.id, p);
        }
        Ok(Some(ServerState {
            server,
            peers: all,
            revision,
        }))
    }

    async fn load_server_settings(&self, id: ServerId) -> Result<Option<(Server, RevisionNo)>> {
        let r = self.inner.read_server(id, "settings").await?;
        match r.as_slice() {
            [] => Ok(None),
            [body, head] => Ok(Some((
                server_body(id, &text(body, "server body")?)?,
                head_value(head)?,
            ))),
            _ => Err(RedisError::BadValue {
                what: "reply of the server read",
            }
            .into()),
        }
    }

    async fn load_server_overview(
        &self,
        id: ServerId,
    ) -> Result<Option<(Server, RevisionNo, u64)>> {
        let r = self.inner.read_server(id, "overview").await?;
        match r.as_slice() {
            [] => Ok(None),
            [body, head, count] => Ok(Some((
                server_body(id, &text(body, "server body")?)?,
                head_value(head)?,
                number("peer count", &text(count, "peer count")?)?,
            ))),
            _ => Err(RedisError::BadValue {
                what: "reply of the server read",
            }
            .into()),
        }
    }

    async fn find_peer(&self, id: ServerId, by: PeerLookup<'_>) -> Result<Option<Peer>> {
        let k = &self.inner.keys;
        let (field, pid) = match by {
            PeerLookup::Id(pid) => (String::new(), pid.to_string()),
            PeerLookup::Name(n) => (index_field(ProbeField::Name, &n.key()), String::new()),
            PeerLookup::Key(key) => (
                index_field(ProbeField::Key, &key.to_base64()),
                String::new(),
            ),
        };
        let mut inv = self.inner.scripts.find_peer.prepare_invoke();
        inv.key(k.index(id))
            .key(k.peers(id))
            .key(k.stats(id))
            .arg(field)
            .arg(pid);
        let r: Vec<Option<String>> = self.inner.conn.script(&inv).await?;
        let (body, stats) = match r.as_slice() {
            [] => return Ok(None),
            [Some(body), stats] => (body, stats.as_deref()),
            _ => {
                return Err(RedisError::BadValue {
                    what: "reply of the peer read",
                }
                .into())
            }
        };
        let p: Peer = from_json("peer", body)?;
        let p = peer_with_stats(id, &p.id.to_string(), body, stats)?;
        // The index answers the lookup (a body that says otherwise is not this peer).
        if !by.matches(&p) {
            return Err(RedisError::BadValue {
                what: "peer index (it points at a peer that does not match)",
            }
            .into());
        }
        Ok(Some(p))
    }

    async fn allocator_state(&self, id: ServerId) -> Result<Option<(RevisionNo, HeldRuns)>> {
        let (revision, body): (Option<String>, Option<String>) = self
            .inner
            .conn
            .query(
                redis::cmd("HMGET")
                    .arg(self.inner.keys.allocator(id))
                    .arg("revision")
                    .arg("body"),
            )
            .await?;
        Ok(allocator_row(revision, body)?)
    }

    async fn put_allocator_state(
        &self,
        id: ServerId,
        revision: RevisionNo,
        held: &HeldRuns,
    ) -> Result<()> {
        let mut inv = self.inner.scripts.put_allocator.prepare_invoke();
        inv.key(self.inner.keys.allocator(id))
            .arg(revision.0.to_string())
            .arg(to_json("allocator state", held)?);
        let _: i64 = self.inner.conn.script(&inv).await?;
        Ok(())
    }

    async fn find_server(&self, name: &ServerName) -> Result<Option<ServerId>> {
        let id: Option<String> = self
            .inner
            .conn
            .query(
                redis::cmd("HGET")
                    .arg(self.inner.keys.server_names())
                    .arg(name.key()),
            )
            .await?;
        Ok(id
            .map(|i| parse_id("server id in the name index", &i))
            .transpose()?)
    }

    async fn list_servers(&self, page: Page) -> Result<Vec<ServerSummary>> {
        if page.limit == 0 {
            return Ok(Vec::new());
        }
        let k = &self.inner.keys;
        let (start, stop) = range(page);
        let mut inv = self.inner.scripts.list.prepare_invoke();
        inv.key(k.server_list())
            .arg(k.prefix())
            .arg(start)
            .arg(stop)
            .arg("servers")
            .arg(k.heads());
        let rows: Vec<redis::Value> = self.inner.conn.script(&inv).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let redis::Value::Array(cols) = row else {
                return Err(RedisError::BadValue {
                    what: "reply of the server listing",
                }
                .into());
            };
            let [id, body, head, count] = cols.as_slice() else {
                return Err(RedisError::BadValue {
                    what: "reply of the server listing",
                }
                .into());
            };
            let id: ServerId = parse_id("server id in the listing", &text(id, "server id")?)?;
            let s = server_body(id, &text(body, "server body of a listed server")?)?;
            out.push(ServerSummary {
                id,
                name: s.name,
                interface: s.interface,
                peer_count: number("peer count", &text(count, "peer count")?)?,
                revision: head_value(head)?,
                host: s.host,
            });
        }
        Ok(out)
    }

    async fn head(&self, id: ServerId) -> Result<Option<RevisionNo>> {
        let mut inv = self.inner.scripts.head.prepare_invoke();
        inv.key(self.inner.keys.server(id))
            .key(self.inner.keys.heads())
            .arg(id.to_string());
        let h: Option<String> = self.inner.conn.script(&inv).await?;
        Ok(h.map(|h| number("head revision", &h).map(RevisionNo))
            .transpose()?)
    }

    async fn commit(&self, commit: Commit, key: &AuditKey) -> Result<Committed> {
        let _turn = self.inner.writer_turn().await?;
        let r = optimistic!(&self.inner, "commit", |tx| {
            rules::commit_with_rules(&mut tx, &commit, key).await
        });
        Ok(r?)
    }

    async fn commit_all(&self, commits: Vec<Commit>, key: &AuditKey) -> Vec<Result<Committed>> {
        // One optimistic transaction for the whole batch: the commits' reads and buffered
        // writes accumulate (each sees the ones before it), and one script checks the
        // read set and writes everything, or nothing.
        let outcome = match self.inner.writer_turn().await {
            Err(e) => Err(rules::BatchFailure::whole(Error::from(e))),
            Ok(_turn) => {
                let mut failed_at: Option<usize>;
                let r = optimistic!(&self.inner, "commit", |tx| {
                    failed_at = None;
                    match rules::commit_all_with_rules(&mut tx, &commits, key).await {
                        Ok(done) => Ok(done),
                        Err(f) => {
                            failed_at = f.at;
                            Err(f.error)
                        }
                    }
                });
                r.map_err(|e| rules::BatchFailure {
                    at: failed_at,
                    error: Error::from(e),
                })
            }
        };
        rules::batch_results(&commits, outcome)
    }

    async fn revisions(
        &self,
        id: ServerId,
        after: RevisionNo,
        limit: u64,
    ) -> Result<Vec<RevisionRecord>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let rows: Vec<(String, String)> = self
            .inner
            .conn
            .query(
                redis::cmd("ZRANGEBYSCORE")
                    .arg(self.inner.keys.revisions(id))
                    .arg(format!("({}", after.0))
                    .arg("+inf")
                    .arg("WITHSCORES")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(i64::try_from(limit).unwrap_or(i64::MAX)),
            )
            .await?;
        scored(rows)?
            .into_iter()
            .map(|(body, number)| {
                let altered = |reason: &'static str| {
                    Error::conflict_of(ConflictKind::RevisionAltered {
                        server: id.0,
                        revision: number,
                        reason,
                    })
                };
                let r: RevisionRecord =
                    serde_json::from_str(&body).map_err(|_| altered("its body does not decode"))?;
                if r.server_id != id || r.revision.0 != number {
                    return Err(altered("its key or score disagrees with its body"));
                }
                Ok(r)
            })
            .collect()
    }
}

#[async_trait]
impl HostStateStore for RedisStore {
    async fn set_applied(&self, id: ServerId, host: &str, revision: RevisionNo) -> Result<()> {
        self.write_applied(
            id,
            host,
            &AppliedRow {
                revision,
                state: None,
            },
        )
        .await
    }

    async fn applied(&self, id: ServerId, host: &str) -> Result<Option<RevisionNo>> {
        Ok(self.read_applied(id, host).await?.map(|r| r.revision))
    }

    async fn set_applied_state(
        &self,
        id: ServerId,
        host: &str,
        state: &AppliedState,
    ) -> Result<()> {
        self.write_applied(
            id,
            host,
            &AppliedRow {
                revision: state.revision,
                state: Some(*state),
            },
        )
        .await
    }

    async fn applied_state(&self, id: ServerId, host: &str) -> Result<Option<AppliedState>> {
        Ok(self.read_applied(id, host).await?.and_then(|r| r.state))
    }

    async fn update_peer_stats(&self, id: ServerId, stats: &[(PeerId, PeerStats)]) -> Result<()> {
        let k = &self.inner.keys;
        let mut inv = self.inner.scripts.update_stats.prepare_invoke();
        inv.key(k.server(id)).key(k.peers(id)).key(k.stats(id));
        for (pid, s) in stats {
            inv.arg(pid.to_string()).arg(to_json("peer stats", s)?);
        }
        let found: i64 = self.inner.conn.script(&inv).await?;
        if found == 0 {
            return Err(Error::not_found("server", id));
        }
        Ok(())
    }

    async fn acquire_lease(&self, req: &LeaseRequest) -> Result<Lease> {
        let k = &self.inner.keys;
        let r = optimistic!(&self.inner, "acquire_lease", |tx| {
            async {
                let current = stored_lease(&mut tx, k, req.server_id, req.host.as_str()).await?;
                let granted = Lease::decide(current.as_ref(), req)?;
                tx.hset(
                    k.leases(req.server_id),
                    req.host.as_str().to_owned(),
                    to_json("lease", &granted)?,
                );
                Ok(granted)
            }
            .await
        });
        Ok(r?)
    }

    async fn release_lease(&self, lease: &Lease, now: OffsetDateTime) -> Result<bool> {
        let k = &self.inner.keys;
        let r = optimistic!(&self.inner, "release_lease", |tx| {
            async {
                let released = stored_lease(&mut tx, k, lease.server_id, lease.host.as_str())
                    .await?
                    .and_then(|cur| Lease::released(&cur, &lease.holder, lease.fencing, now));
                let Some(released) = released else {
                    return Ok(false);
                };
                tx.hset(
                    k.leases(lease.server_id),
                    lease.host.as_str().to_owned(),
                    to_json("lease", &released)?,
                );
                Ok(true)
            }
            .await
        });
        Ok(r?)
    }

    async fn put_host_report(&self, report: &HostReport) -> Result<()> {
        let k = &self.inner.keys;
        let body = to_json("host report", report)?;
        let r = optimistic!(&self.inner, "put_host_report", |tx| {
            async {
                if let Some(lease) =
                    stored_lease(&mut tx, k, report.server_id, report.host.as_str()).await?
                {
                    lease.admit(report)?;
                }
                tx.hset(
                    k.reports(report.server_id),
                    report.host.as_str().to_owned(),
                    body.clone(),
                );
                Ok(())
            }
            .await
        });
        Ok(r?)
    }

    async fn host_reports(&self, id: ServerId) -> Result<Vec<HostReport>> {
        let all: BTreeMap<String, String> = self
            .inner
            .conn
            .query(redis::cmd("HGETALL").arg(self.inner.keys.reports(id)))
            .await?;
        // A BTreeMap of String: ordered by host name in byte order.
        all.iter()
            .map(|(host, body)| {
                let r: HostReport = from_json("host report", body)?;
                if r.server_id != id || r.host.as_str() != host {
                    return Err(RedisError::BadValue {
                        what: "host report (its key disagrees with its body)",
                    }
                    .into());
                }
                Ok(r)
            })
            .collect()
    }
}

/// The stored lease of a server on a host, read through the transaction.
async fn stored_lease(
    tx: &mut RedisTx<'_>,
    k: &Keys,
    server: ServerId,
    host: &str,
) -> std::result::Result<Option<Lease>, RedisError> {
    let Some(body) = tx.hget(&k.leases(server), host.to_owned()).await? else {
        return Ok(None);
    };
    let l: Lease = from_json("lease", &body)?;
    if l.server_id != server || l.host.as_str() != host {
        return Err(RedisError::BadValue {
            what: "lease (its key disagrees with its body)",
        });
    }
    Ok(Some(l))
}

/// See the crate docs, "Change feed".
#[async_trait]
impl ChangeFeed for RedisStore {
    async fn watch(&self) -> Result<BoxStream<'static, FeedEvent>> {
        let setup = feed::FeedSetup {
            client: self.inner.client.clone(),
            keys: self.inner.keys.clone(),
            scripts: self.inner.scripts.clone(),
            connect_timeout: self.inner.options.connect_timeout,
            response_timeout: self.inner.options.response_timeout,
            client_name: self.inner.feed_client_name.clone(),
            redactor: self.inner.conn.redactor.clone(),
            closed: self.inner.closed.clone(),
            closing: self.inner.closing.subscribe(),
        };
        let feed = setup.start().await?;
        Ok(futures::stream::unfold(feed, |mut feed| async move {
            let event = feed.next().await?;
            Some((event, feed))
        })
        .boxed())
    }
}

#[async_trait]
impl IdentityStore for RedisStore {
    async fn get_user(&self, id: UserId) -> Result<Option<User>> {
        let body: Option<String> = self
            .inner
            .conn
            .query(redis::cmd("GET").arg(self.inner.keys.user(id)))
            .await?;
        Ok(body.map(|b| from_json("user", &b)).transpose()?)
    }

    async fn find_user(&self, name: &UserName) -> Result<Option<User>> {
        let mut inv = self.inner.scripts.by_index.prepare_invoke();
        inv.key(self.inner.keys.user_names())
            .arg(name.key())
            .arg(self.inner.keys.user_prefix());
        let body: Option<String> = self.inner.conn.script(&inv).await?;
        let user: Option<User> = body.map(|b| from_json("user", &b)).transpose()?;
        if user.as_ref().is_some_and(|u| u.name.key() != name.key()) {
            return Err(RedisError::BadValue {
                what: "user name index (it points at another user)",
            }
            .into());
        }
        Ok(user)
    }

    async fn list_users(&self, page: Page) -> Result<Vec<User>> {
        if page.limit == 0 {
            return Ok(Vec::new());
        }
        let k = &self.inner.keys;
        let (start, stop) = range(page);
        let mut inv = self.inner.scripts.list.prepare_invoke();
        inv.key(k.user_list())
            .arg(k.prefix())
            .arg(start)
            .arg(stop)
            .arg("users");
        let rows: Vec<(String, Option<String>)> = self.inner.conn.script(&inv).await?;
        rows.into_iter()
            .map(|(id, body)| {
                let body = body.ok_or(RedisError::BadValue {
                    what: "user listing (a listed user has no body)",
                })?;
                let u: User = from_json("user", &body)?;
                if u.id.to_string() != id {
                    return Err(RedisError::BadValue {
                        what: "user (its key disagrees with its body)",
                    }
                    .into());
                }
                Ok(u)
            })
            .collect()
    }

    async fn list_roles(&self) -> Result<Vec<Role>> {
        let all: BTreeMap<String, String> = self
            .inner
            .conn
            .query(redis::cmd("HGETALL").arg(self.inner.keys.roles()))
            .await?;
        Ok(all
            .values()
            .map(|b| from_json("role", b))
            .collect::<std::result::Result<Vec<Role>, _>>()?)
    }

    async fn get_token(&self, id: TokenId) -> Result<Option<ApiTokenRecord>> {
        let body: Option<String> = self
            .inner
            .conn
            .query(redis::cmd("GET").arg(self.inner.keys.token(id)))
            .await?;
        Ok(body.map(|b| from_json("token", &b)).transpose()?)
    }

    async fn list_tokens(&self, user: Option<UserId>) -> Result<Vec<ApiTokenRecord>> {
        let k = &self.inner.keys;
        let mut inv = self.inner.scripts.bodies_of_fields.prepare_invoke();
        inv.key(user.map_or_else(|| k.tokens(), |u| k.user_tokens(u)))
            .arg(k.token_prefix());
        let bodies: Vec<String> = self.inner.conn.script(&inv).await?;
        let mut v = bodies
            .iter()
            .map(|b| from_json::<ApiTokenRecord>("token", b))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        if let Some(u) = user {
            if v.iter().any(|t| t.user_id != u) {
                return Err(RedisError::BadValue {
                    what: "user token index (it lists another user's token)",
                }
                .into());
            }
        }
        v.sort_by_key(|t| (t.created_at, t.id));
        Ok(v)
    }

    async fn commit_identity(
        &self,
        changes: Vec<IdentityChange>,
        audit: AuditEntry,
        key: &AuditKey,
    ) -> Result<AuditRecord> {
        let _turn = self.inner.writer_turn().await?;
        let r = optimistic!(&self.inner, "commit_identity", |tx| {
            rules::commit_identity_with_rules(&mut tx, &changes, &audit, key).await
        });
        Ok(r?)
    }
}

/// Audit records read per round trip by [`AuditStore::query_audit`].
const AUDIT_BATCH: i64 = 512;

#[async_trait]
impl AuditStore for RedisStore {
    async fn append_audit(&self, entry: AuditEntry, key: &AuditKey) -> Result<AuditRecord> {
        let _turn = self.inner.writer_turn().await?;
        let r = optimistic!(&self.inner, "append_audit", |tx| {
            rules::append_audit_with_rules(&mut tx, entry.clone(), key).await
        });
        Ok(r?)
    }

    async fn query_audit(&self, q: &AuditQuery) -> Result<Vec<AuditRecord>> {
        let want = q
            .limit
            .map_or(usize::MAX, |l| usize::try_from(l).unwrap_or(usize::MAX));
        let mut out = Vec::new();
        if want == 0 {
            return Ok(out);
        }
        // Records are read in order of sequence number from the cursor, in batches, and
        // filtered here with the model's own `AuditQuery::matches`.
        let mut cursor = q.after_seq.unwrap_or(0);
        loop {
            let rows: Vec<(String, String)> = self
                .inner
                .conn
                .query(
                    redis::cmd("ZRANGEBYSCORE")
                        .arg(self.inner.keys.audit())
                        .arg(format!("({cursor}"))
                        .arg("+inf")
                        .arg("WITHSCORES")
                        .arg("LIMIT")
                        .arg(0)
                        .arg(AUDIT_BATCH),
                )
                .await?;
            let n = rows.len();
            for (body, seq) in scored(rows)? {
                let r: AuditRecord = serde_json::from_str(&body).map_err(|_| {
                    Error::conflict_of(ConflictKind::AuditChainBroken(AuditBreak::Altered { seq }))
                })?;
                if r.seq != seq {
                    return Err(Error::conflict_of(ConflictKind::AuditChainBroken(
                        AuditBreak::Column {
                            seq,
                            column: "score",
                        },
                    )));
                }
                cursor = seq;
                if q.matches(&r) {
                    out.push(r);
                    if out.len() >= want {
                        return Ok(out);
                    }
                }
            }
            if i64::try_from(n).unwrap_or(i64::MAX) < AUDIT_BATCH {
                return Ok(out);
            }
        }
    }

    async fn audit_head(&self) -> Result<AuditHead> {
        let text: Option<String> = self
            .inner
            .conn
            .query(redis::cmd("GET").arg(self.inner.keys.audit_head()))
            .await?;
        Ok(match text {
            None => AuditHead::genesis(),
            Some(t) => {
                let (seq, hash) = tx::parse_audit_head(&t)?;
                AuditHead { seq, hash }
            }
        })
    }

    async fn audit_key(&self) -> Result<Option<StoredAuditKey>> {
        let body: Option<String> = self
            .inner
            .conn
            .query(redis::cmd("GET").arg(self.inner.keys.audit_key()))
            .await?;
        Ok(body.map(|b| from_json("audit key", &b)).transpose()?)
    }

    async fn init_audit_key(&self, seal: &SealAuditKey<'_>) -> Result<(StoredAuditKey, bool)> {
        let _turn = self.inner.writer_turn().await?;
        let r = optimistic!(&self.inner, "init_audit_key", |tx| {
            rules::init_audit_key_with_rules(&mut tx, seal).await
        });
        Ok(r?)
    }

    async fn reseal_audit_key(
        &self,
        expected: &SealedSecret,
        resealed: &StoredAuditKey,
    ) -> Result<()> {
        let _turn = self.inner.writer_turn().await?;
        let r = optimistic!(&self.inner, "reseal_audit_key", |tx| {
            rules::reseal_audit_key_with_rules(&mut tx, expected, resealed).await
        });
        Ok(r?)
    }
}

impl RedisStore {
    /// Store what `host` applied of server `id` (one hash field per host).
    async fn write_applied(&self, id: ServerId, host: &str, row: &AppliedRow) -> Result<()> {
        let row = to_json("applied revision", row)?;
        let _: i64 = self
            .inner
            .conn
            .query(
                redis::cmd("HSET")
                    .arg(self.inner.keys.applied(id))
                    .arg(host)
                    .arg(row),
            )
            .await?;
        Ok(())
    }

    /// What `host` applied of server `id`, if it recorded anything.
    async fn read_applied(&self, id: ServerId, host: &str) -> Result<Option<AppliedRow>> {
        let row: Option<String> = self
            .inner
            .conn
            .query(
                redis::cmd("HGET")
                    .arg(self.inner.keys.applied(id))
                    .arg(host),
            )
            .await?;
        Ok(row
            .map(|r| from_json::<AppliedRow>("applied revision", &r))
            .transpose()?)
    }

    /// Every key of this store's namespace matching `pattern` (after the prefix), by
    /// `SCAN` (never `KEYS`, which blocks the server).
    async fn scan(&self, pattern: &str) -> std::result::Result<Vec<String>, RedisError> {
        let mut cursor: u64 = 0;
        let mut out = Vec::new();
        loop {
            let (next, batch): (u64, Vec<String>) = self
                .inner
                .conn
                .query(
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(format!("{}{pattern}", self.inner.keys.prefix()))
                        .arg("COUNT")
                        .arg(1000),
                )
                .await?;
            out.extend(batch);
            if next == 0 {
                return Ok(out);
            }
            cursor = next;
        }
    }

    /// Whether a key of this namespace is one that snapshots neither carry nor replace:
    /// the layout's version, the rate limiters' keys and the login throttle's records
    /// (ephemeral state of the processes on the store, not its contents). An import
    /// into a namespace holding only such keys counts it as empty; a forced restore
    /// keeps them.
    fn kept_keys(&self) -> impl Fn(&str) -> bool {
        let schema = self.inner.keys.schema();
        let limits = format!("{}:ratelimit:", self.inner.keys.prefix());
        let throttle = self.inner.keys.throttle_prefix();
        move |k: &str| k == schema || k.starts_with(&limits) || k.starts_with(&throttle)
    }

    /// The ids of the servers named by keys `KIND:ID` of this namespace.
    async fn ids_of(&self, kind: &str) -> Result<Vec<ServerId>> {
        let prefix = format!("{}{kind}:", self.inner.keys.prefix());
        self.scan(&format!("{kind}:*"))
            .await?
            .iter()
            .filter_map(|k| k.strip_prefix(&prefix))
            .map(|id| Ok(parse_id("server id of a key", id)?))
            .collect()
    }

    /// The heads hash, as read.
    async fn heads_raw(&self) -> std::result::Result<BTreeMap<String, String>, RedisError> {
        self.inner
            .conn
            .query(redis::cmd("HGETALL").arg(self.inner.keys.heads()))
            .await
    }

    /// One pass of [`SnapshotStore::export_snapshot`]: everything, read by the store's own
    /// reads (each checks what it reads as usual).
    async fn read_everything(&self) -> Result<Snapshot> {
        let heads = self.heads_raw().await?;
        let mut ids = std::collections::BTreeSet::new();
        for id in heads.keys() {
            ids.insert(parse_id::<ServerId>("server id of a head", id)?);
        }
        for kind in ["applied", "leases", "reports", "allocator", "revisions"] {
            ids.extend(self.ids_of(kind).await?);
        }
        let mut servers = Vec::new();
        for id in ids {
            let mut s = ServerSnapshot::new(id);
            s.head = heads
                .get(&id.to_string())
                .map(|h| number("head revision", h).map(RevisionNo))
                .transpose()?;
            s.state = self.load_server(id).await?;
            s.revisions = self.revisions(id, RevisionNo::NONE, u64::MAX).await?;
            s.allocator = self.allocator_state(id).await?;
            let applied: BTreeMap<String, String> = self
                .inner
                .conn
                .query(redis::cmd("HGETALL").arg(self.inner.keys.applied(id)))
                .await?;
            for (host, row) in applied {
                let row: AppliedRow = from_json("applied revision", &row)?;
                s.applied.push(AppliedSnapshot {
                    host,
                    revision: row.revision,
                    state: row.state,
                });
            }
            let leases: BTreeMap<String, String> = self
                .inner
                .conn
                .query(redis::cmd("HGETALL").arg(self.inner.keys.leases(id)))
                .await?;
            for (host, body) in leases {
                let l: Lease = from_json("lease", &body)?;
                if l.server_id != id || l.host.as_str() != host {
                    return Err(RedisError::BadValue {
                        what: "lease (its key disagrees with its body)",
                    }
                    .into());
                }
                s.leases.push(l);
            }
            s.reports = self.host_reports(id).await?;
            servers.push(s);
        }
        let mut users = self.list_users(Page::ALL).await?;
        users.sort_by_key(|u| u.id);
        let mut roles = self.list_roles().await?;
        roles.sort_by_cached_key(|r| r.name.key());
        Ok(Snapshot {
            version: SNAPSHOT_VERSION,
            servers,
            users,
            roles,
            tokens: self.list_tokens(None).await?,
            audit: self.query_audit(&AuditQuery::default()).await?,
            audit_head: self.audit_head().await?,
            audit_key: self.audit_key().await?,
        })
    }
}

/// Export: read everything, then check that the audit head and the heads hash did not
/// move meanwhile (every commit and every audited write moves the audit head), else read
/// again, within the store's contention budget. Host state that is not audited (applied
/// revisions, leases, reports, statistics, allocator states) is read as it is during
/// the pass. Import: one optimistic transaction whose one script writes everything after
/// checking that the global keys it read (heads, audit head and key, name indexes,
/// roles, tokens) are still empty; a `SCAN` before it refuses a namespace holding any
/// key but `schema`, the rate limiters' and the login throttle's (which a forced
/// restore keeps too).
#[async_trait]
impl SnapshotStore for RedisStore {
    async fn export_snapshot(&self) -> Result<Snapshot> {
        let started = std::time::Instant::now();
        let mut attempt = 1u32;
        loop {
            let head = self.audit_head().await?;
            let heads = self.heads_raw().await?;
            let snapshot = self.read_everything().await?;
            if self.audit_head().await? == head
                && self.heads_raw().await? == heads
                && snapshot.audit_head == head
            {
                return Ok(snapshot);
            }
            if attempt >= tx::MIN_ATTEMPTS
                && started.elapsed() >= self.inner.options.contention_timeout
            {
                return Err(RedisError::Contention {
                    what: "export_snapshot",
                    attempts: attempt,
                }
                .into());
            }
            tx::backoff(attempt).await;
            attempt += 1;
        }
    }

    async fn import_snapshot(&self, snapshot: &Snapshot) -> Result<()> {
        snapshot.check()?;
        let kept = self.kept_keys();
        if self.scan("*").await?.iter().any(|k| !kept(k)) {
            return Err(wgm_core::store::not_empty(S));
        }
        let _turn = self.inner.writer_turn().await?;
        let r = optimistic!(&self.inner, "import_snapshot", |tx| {
            rules::import_snapshot_with_rules(&mut tx, S, snapshot, rules::ImportMode::IntoEmpty)
                .await
        });
        Ok(r?)
    }

    async fn replace_with_snapshot(&self, snapshot: &Snapshot) -> Result<()> {
        snapshot.check()?;
        let kept = self.kept_keys();
        let _turn = self.inner.writer_turn().await?;
        let r = optimistic!(&self.inner, "replace_with_snapshot", |tx| {
            // Everything but the layout's version, the rate limiters' and the login
            // throttle's keys (not store contents); the feed's stream and counter go
            // too, so watchers see the counter go back and re-read (FeedEvent::Missed).
            let stale: Vec<String> = self
                .scan("*")
                .await?
                .into_iter()
                .filter(|k| !kept(k))
                .collect();
            tx.will_clear(stale);
            rules::import_snapshot_with_rules(&mut tx, S, snapshot, rules::ImportMode::Replace)
                .await
        });
        Ok(r?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_found_in_urls() {
        assert_eq!(
            url_password("redis://:hunter2@h:1/0").as_deref(),
            Some("hunter2")
        );
        assert_eq!(
            url_password("redis://u:p%40ss@h").as_deref(),
            Some("p%40ss")
        );
        assert_eq!(url_password("redis://h:6379"), None);
        assert_eq!(url_password("redis+unix:///tmp/r.sock"), None);
    }

    #[test]
    fn pages_become_index_ranges() {
        assert_eq!(range(Page::ALL), (0, -1));
        assert_eq!(
            range(Page {
                offset: 2,
                limit: 3
            }),
            (2, 4)
        );
    }

    #[test]
    fn namespaces_are_checked() {
        assert!(RedisOptions::default().check().is_ok());
        assert!(RedisOptions::default().namespace("a b").check().is_err());
        assert!(RedisOptions::default().namespace("{x}").check().is_err());
        assert!(RedisOptions::default().namespace("").check().is_err());
    }
}
