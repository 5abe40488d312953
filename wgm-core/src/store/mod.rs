//! The [`Store`] trait — durable desired state, revisions, identities and the audit log —
//! [`MemoryStore`], its in-memory implementation, and [`rules`], the commit rules every
//! implementation runs.
//!
//! A store is deliberately dumb: it does not allocate, authorize or validate business
//! rules (the `Manager` does). What it guarantees is **atomicity and uniqueness**: a
//! [`Commit`] either lands whole — state changes, the new revision and its audit record —
//! or not at all, and it lands only when the server's head is still the revision the
//! changes were computed against. Uniqueness of server names, and per server of peer
//! names, public keys and addresses, is enforced again here as a second line of defence.
//! Those rules are written once, in [`rules::commit_with_rules`] and its siblings, over
//! the storage primitives of [`rules::Transaction`] that each engine implements.
//!
//! Beside desired state, a store keeps the login throttle's records ([`ThrottleStore`]),
//! so that every process on it shares one password-guessing budget; those are
//! ephemeral and belong to no [`Snapshot`].
//!
//! Implementations: [`MemoryStore`] (here), `wgm_store_sql::SqlStore` (SQLite and
//! PostgreSQL), `wgm_store_redis::RedisStore`. All of them run the conformance suite in
//! `wgm_core::conformance::store` (feature `conformance`).

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;

use crate::integrity::{AuditHead, AuditKey, LegacyBound, StoredAuditKey};
use crate::ipam::HeldRuns;
use crate::keys::PublicKey;
use crate::model::{
    ApiTokenRecord, AppliedState, AuditEntry, AuditQuery, AuditRecord, Commit, Committed,
    HostReport, IdentityChange, Lease, LeaseRequest, Page, Peer, PeerId, PeerStats, RevisionNo,
    RevisionRecord, Server, ServerId, ServerState, ServerSummary, TokenId, User, UserId,
};
use crate::names::{PeerName, ServerName, UserName};
use crate::rbac::Role;
use crate::seal::SealedSecret;
use crate::Result;

pub mod backup;
mod feed;
mod memory;
pub mod rules;
mod snapshot;
mod throttle;

pub use feed::{ChangeFeed, FeedEvent, Follower};
pub use memory::MemoryStore;
pub use rules::check_server_uniqueness;
pub use snapshot::{
    copy, not_empty, AppliedSnapshot, ServerSnapshot, Snapshot, SnapshotStore, SNAPSHOT_VERSION,
};
pub use throttle::{LoginThrottle, ThrottleRecord, ThrottleStore};

/// How [`ServerStore::find_peer`] finds one peer of a server.
///
/// ```
/// use wgm_core::names::PeerName;
/// use wgm_core::store::PeerLookup;
/// let name = PeerName::new("Laptop").unwrap();
/// // Names are matched case-insensitively, as everywhere.
/// assert!(matches!(PeerLookup::Name(&name), PeerLookup::Name(n) if n.key() == "laptop"));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerLookup<'a> {
    /// By its id.
    Id(PeerId),
    /// By its name, case-insensitively ([`PeerName::key`]).
    Name(&'a PeerName),
    /// By its public key.
    Key(&'a PublicKey),
}

impl PeerLookup<'_> {
    /// Whether `p` is the peer this lookup finds.
    pub fn matches(&self, p: &Peer) -> bool {
        match self {
            PeerLookup::Id(id) => p.id == *id,
            PeerLookup::Name(n) => p.name.key() == n.key(),
            PeerLookup::Key(k) => p.public_key == **k,
        }
    }
}

/// Durable storage of desired state: the umbrella of the store's concerns, each a
/// sub-trait — [`ServerStore`] (servers and their revisions), [`HostStateStore`] (what
/// hosts applied, observed statistics), [`IdentityStore`] (users, roles, tokens) and
/// [`AuditStore`] (the audit log), [`ChangeFeed`] (wake-ups after commits),
/// [`SnapshotStore`] (export and import of everything), [`ThrottleStore`] (the login
/// throttle's records, shared by every process on the store and in no snapshot) — plus
/// the store's [`name`](Store::name). An engine implements the eight; callers hold an `Arc<dyn Store>` and call every method on it
/// (a trait object's supertrait methods need no import). Code that calls a method on a
/// concrete engine (a `MemoryStore`) imports the sub-trait that declares it.
///
/// Every method is a single atomic operation. "Not found" is `Ok(None)` for lookups
/// and `Err(Error::NotFound)` for operations that need the object.
///
/// ```
/// use std::sync::Arc;
/// use wgm_core::store::{MemoryStore, Store};
/// let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
/// assert_eq!(store.name(), "memory");
/// # futures::executor::block_on(async {
/// assert!(store.head(wgm_core::model::ServerId::new_random()).await.unwrap().is_none());
/// # });
/// ```
#[async_trait]
pub trait Store:
    ServerStore
    + HostStateStore
    + IdentityStore
    + AuditStore
    + ChangeFeed
    + SnapshotStore
    + ThrottleStore
    + Debug
    + Send
    + Sync
    + 'static
{
    /// A short name for logs and errors (`memory`, `sqlite`, `postgres`, `redis`).
    fn name(&self) -> &'static str;

    /// The schema version the store holds now, next to the one this build knows: one
    /// read, for readiness probes. A store is opened only at a schema this build knows
    /// (it migrates an older one and refuses a newer one), but a long-running process
    /// can find its store migrated since by a newer build ([`SchemaVersion::is_current`]
    /// false). Errors: `Store` when the store does not answer.
    async fn schema_version(&self) -> Result<SchemaVersion>;
}

/// The schema version a store holds and the one this build reads and writes
/// ([`Store::schema_version`]). A store without a persistent schema (memory) reports
/// 0 for both.
///
/// ```
/// use wgm_core::store::SchemaVersion;
/// assert!(SchemaVersion { found: 3, known: 3 }.is_current());
/// assert!(!SchemaVersion { found: 4, known: 3 }.is_current());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SchemaVersion {
    /// The version recorded in the store.
    pub found: u64,
    /// The version this build migrates to and works with.
    pub known: u64,
}

impl SchemaVersion {
    /// Whether the store is at exactly this build's schema.
    pub fn is_current(&self) -> bool {
        self.found == self.known
    }
}

/// Servers at their head revision, the compare-and-swap commit and the revision
/// history (a part of [`Store`]).
#[async_trait]
pub trait ServerStore: Send + Sync {
    /// The server at its head revision with all peers, or `None` if it does not exist.
    async fn load_server(&self, id: ServerId) -> Result<Option<ServerState>>;

    /// The server's settings at its head revision, without its peers (one row: what a
    /// change that touches a few peers needs, whatever the server's size), or `None` if
    /// it does not exist.
    async fn load_server_settings(&self, id: ServerId) -> Result<Option<(Server, RevisionNo)>>;

    /// The server's settings at its head revision and its number of peers, read together
    /// (one consistent read: what showing a server needs, whatever its size), or `None`
    /// if it does not exist.
    async fn load_server_overview(&self, id: ServerId)
        -> Result<Option<(Server, RevisionNo, u64)>>;

    /// One peer of a server as it is at the head, found by id, by name
    /// (case-insensitive) or by public key ([`PeerLookup`]): one indexed read, whatever
    /// the server's size. `None` when the server or the peer does not exist. A caller
    /// that commits a change computed from it reads the head first (with
    /// [`ServerStore::load_server_settings`]) and the peer after: the peer is then at
    /// that head or newer, and a newer one makes the commit's compare-and-swap fail.
    async fn find_peer(&self, id: ServerId, by: PeerLookup<'_>) -> Result<Option<Peer>>;

    /// The durable allocator state of a server ([`HeldRuns`]) and the revision it is of,
    /// if one was stored.
    async fn allocator_state(&self, id: ServerId) -> Result<Option<(RevisionNo, HeldRuns)>>;

    /// Store the allocator state of `revision`, unless a state of a later revision is
    /// stored already (writers race; the newest wins; one of the same revision is
    /// replaced, which repairs a wrong one). Not a revision: a
    /// cache of what the revisions say, checked against them by its reader.
    async fn put_allocator_state(
        &self,
        id: ServerId,
        revision: RevisionNo,
        held: &HeldRuns,
    ) -> Result<()>;

    /// The id of the server with this name (case-insensitive).
    async fn find_server(&self, name: &ServerName) -> Result<Option<ServerId>>;

    /// Servers ordered by name.
    async fn list_servers(&self, page: Page) -> Result<Vec<ServerSummary>>;

    /// The head revision of a server (`None` if it does not exist). Cheap: used to
    /// validate cached state.
    async fn head(&self, id: ServerId) -> Result<Option<RevisionNo>>;

    /// Atomically: check that the server's head equals `commit.expected`, apply the
    /// changes, append revision `expected + 1` with its MAC and the audit record (its
    /// `revision` set to the new number) chained under `key`, the store's audit key
    /// (module [`crate::integrity`]). On any error nothing is written. Implementations
    /// run [`rules::commit_with_rules`] inside their transaction.
    ///
    /// # Errors
    ///
    /// The contract callers rely on (the manager retries the first and nothing else):
    /// - **a lost compare-and-swap**: the head is not `commit.expected` —
    ///   [`Error::Conflict`](crate::Error::Conflict) with
    ///   [`ConflictKind::StaleRevision`](crate::error::ConflictKind::StaleRevision)
    ///   ([`Error::is_stale_revision`](crate::Error::is_stale_revision)), and only then.
    ///   It is checked before anything else, so a commit against a stale head never
    ///   reports a taken value instead. Retrying on fresh state can succeed.
    /// - **a taken value**: a server name, peer name or public key another holds —
    ///   [`Error::AlreadyExists`](crate::Error::AlreadyExists); the server's own key on a
    ///   peer, an address or prefix held twice, or a database's unique constraint
    ///   violated — [`Error::Conflict`](crate::Error::Conflict) with
    ///   [`ConflictKind::Taken`](crate::error::ConflictKind::Taken). Final: the same
    ///   changes fail again.
    /// - **anything else**: a change to a server or peer that does not exist
    ///   ([`Error::NotFound`](crate::Error::NotFound)), a change naming another server
    ///   ([`ConflictKind::Other`](crate::error::ConflictKind::Other)), or the store
    ///   failing ([`Error::Store`](crate::Error::Store)).
    async fn commit(&self, commit: Commit, key: &AuditKey) -> Result<Committed>;

    /// Several commits of one caller, in order, each checked and written as
    /// [`ServerStore::commit`] would (its own revision, its own audit record); one result
    /// per commit, in the same order. Commits usually chain (each one's `expected` is the
    /// revision the one before it makes), which is how the manager groups the commits of
    /// concurrent callers ("group commit"): an engine that overrides this runs them in
    /// one transaction, so that they share its round trips and its durable flush.
    ///
    /// What landed is always a **prefix**, in order, and every result says whether its
    /// commit landed:
    /// - the default runs [`ServerStore::commit`] for each in turn and stops at the first
    ///   failure: every later commit is told it is stale (it was not tried);
    /// - an engine that writes the batch in one transaction writes all or nothing: when
    ///   one commit fails, its result is its own error and every other commit's is a
    ///   stale revision ([`Error::is_stale_revision`](crate::Error::is_stale_revision)),
    ///   which the caller may retry on fresh state, as after a lost compare-and-swap.
    ///
    /// ```
    /// # async fn demo(store: &dyn wgm_core::store::Store, c1: wgm_core::model::Commit,
    /// #     c2: wgm_core::model::Commit, key: &wgm_core::integrity::AuditKey) {
    /// for r in store.commit_all(vec![c1, c2], key).await {
    ///     match r {
    ///         Ok(done) => println!("revision {}", done.record.revision),
    ///         Err(e) => println!("not committed: {e}"),
    ///     }
    /// }
    /// # }
    /// ```
    async fn commit_all(&self, commits: Vec<Commit>, key: &AuditKey) -> Vec<Result<Committed>> {
        commit_in_turn(self, commits, key).await
    }

    /// Revisions of a server after `after`, oldest first, at most `limit`. Revisions
    /// outlive a deleted server. An engine that keeps a revision's fields in columns
    /// beside its body checks that they agree, and fails with
    /// [`ConflictKind::RevisionAltered`](crate::error::ConflictKind::RevisionAltered)
    /// when they do not; the MAC is checked by the caller
    /// ([`crate::integrity::check_revision`]).
    async fn revisions(
        &self,
        id: ServerId,
        after: RevisionNo,
        limit: u64,
    ) -> Result<Vec<RevisionRecord>>;
}

/// [`ServerStore::commit`] for each of `commits` in turn, stopping at the first failure
/// (every later commit is told it is stale, untried): the default of
/// [`ServerStore::commit_all`], for an engine to fall back on.
///
/// ```
/// # async fn demo(store: &dyn wgm_core::store::Store, c: wgm_core::model::Commit,
/// #     key: &wgm_core::integrity::AuditKey) {
/// let results = wgm_core::store::commit_in_turn(store, vec![c], key).await;
/// assert_eq!(results.len(), 1);
/// # }
/// ```
pub async fn commit_in_turn<S: ServerStore + ?Sized>(
    store: &S,
    commits: Vec<Commit>,
    key: &AuditKey,
) -> Vec<Result<Committed>> {
    let mut out = Vec::with_capacity(commits.len());
    let mut failed = false;
    for c in commits {
        if failed {
            let actual = c.expected.0.saturating_sub(1);
            out.push(Err(rules::not_landed(&c, actual)));
            continue;
        }
        let r = store.commit(c, key).await;
        failed = r.is_err();
        out.push(r);
    }
    out
}

/// What each host applied, and observed statistics of peers: state that is not a
/// revision (a part of [`Store`]).
#[async_trait]
pub trait HostStateStore: Send + Sync {
    /// Record that `host` has applied (and verified) `revision` of a server.
    async fn set_applied(&self, id: ServerId, host: &str, revision: RevisionNo) -> Result<()>;

    /// The last revision `host` recorded as applied for a server.
    async fn applied(&self, id: ServerId, host: &str) -> Result<Option<RevisionNo>>;

    /// Record that `host` converged to `state.revision` and what stands for the device
    /// it verified ([`AppliedState`]); [`HostStateStore::applied`] then answers that
    /// revision. A later [`HostStateStore::set_applied`] forgets the device part.
    async fn set_applied_state(&self, id: ServerId, host: &str, state: &AppliedState)
        -> Result<()>;

    /// The applied revision of `host` with what stands for its device, when the last
    /// record of it had one ([`HostStateStore::set_applied_state`]).
    async fn applied_state(&self, id: ServerId, host: &str) -> Result<Option<AppliedState>>;

    /// Update observed statistics of peers (not a revision; unknown peers are ignored).
    async fn update_peer_stats(&self, id: ServerId, stats: &[(PeerId, PeerStats)]) -> Result<()>;

    /// Atomically decide `req` against the stored lease of its server and host with
    /// [`Lease::decide`] and store the outcome: the lease granted or renewed.
    ///
    /// # Errors
    ///
    /// [`Error::Conflict`](crate::Error::Conflict) while another holder's lease runs
    /// (nothing is written).
    async fn acquire_lease(&self, req: &LeaseRequest) -> Result<Lease>;

    /// Release `lease` if it is still held as given ([`Lease::released`]); a lease that
    /// lapsed and went to another holder is left alone. Returns whether it was released.
    async fn release_lease(&self, lease: &Lease, now: time::OffsetDateTime) -> Result<bool>;

    /// Store `report` as the latest of its server and host, if its fencing number is the
    /// stored lease's ([`Lease::admit`]; with no lease stored, any report is kept).
    ///
    /// # Errors
    ///
    /// [`Error::Conflict`](crate::Error::Conflict) when a newer lease fences the report
    /// out (its writer lost the lease; nothing is written).
    async fn put_host_report(&self, report: &HostReport) -> Result<()>;

    /// The latest report of every host of a server, ordered by host name.
    async fn host_reports(&self, id: ServerId) -> Result<Vec<HostReport>>;
}

/// Users, custom roles and API tokens (a part of [`Store`]).
#[async_trait]
pub trait IdentityStore: Send + Sync {
    /// A user by id.
    async fn get_user(&self, id: UserId) -> Result<Option<User>>;

    /// A user by name (case-insensitive).
    async fn find_user(&self, name: &UserName) -> Result<Option<User>>;

    /// Users ordered by name.
    async fn list_users(&self, page: Page) -> Result<Vec<User>>;

    /// Custom roles ordered by name.
    async fn list_roles(&self) -> Result<Vec<Role>>;

    /// A token by id.
    async fn get_token(&self, id: TokenId) -> Result<Option<ApiTokenRecord>>;

    /// Tokens, of one user or of all, ordered by creation time.
    async fn list_tokens(&self, user: Option<UserId>) -> Result<Vec<ApiTokenRecord>>;

    /// Atomically apply identity changes and append their audit record, chained under
    /// `key` ([`rules::commit_identity_with_rules`]); returns the record. A
    /// `UserUpdated` whose `version` is not the stored version + 1 fails with `Conflict`
    /// ([`ConflictKind::StaleUser`](crate::error::ConflictKind::StaleUser)); a taken user
    /// name or e-mail with `AlreadyExists`.
    async fn commit_identity(
        &self,
        changes: Vec<IdentityChange>,
        audit: AuditEntry,
        key: &AuditKey,
    ) -> Result<AuditRecord>;
}

/// How a store's new audit key is sealed ([`AuditStore::init_audit_key`]): given what
/// the store holds before the key ([`LegacyBound`]), the key sealed with that bound.
pub type SealAuditKey<'a> = dyn Fn(&LegacyBound) -> Result<SealedSecret> + Send + Sync + 'a;

/// The keyed, chained audit log and the store's audit key (a part of [`Store`]; see
/// module [`crate::integrity`]).
#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Append an audit record that accompanies no state change (a secret export, a
    /// login, a denied attempt), chained under `key`
    /// ([`rules::append_audit_with_rules`]).
    async fn append_audit(&self, entry: AuditEntry, key: &AuditKey) -> Result<AuditRecord>;

    /// Audit records matching `query`, oldest first. An engine that keeps an entry's
    /// fields in columns beside its body (to filter on them) checks that they agree with
    /// the body of every record it returns, and fails with
    /// [`ConflictKind::AuditChainBroken`](crate::error::ConflictKind::AuditChainBroken)
    /// ([`AuditBreak::Column`](crate::error::AuditBreak::Column)) naming the record when
    /// they do not.
    async fn query_audit(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>>;

    /// The stored head of the log: the sequence number and link of the last record
    /// appended, kept apart from the records ([`AuditHead::genesis`] for an empty log).
    async fn audit_head(&self) -> Result<AuditHead>;

    /// The store's sealed audit key, if it has one.
    async fn audit_key(&self) -> Result<Option<StoredAuditKey>>;

    /// The store's sealed audit key, created now if there is none
    /// ([`rules::init_audit_key_with_rules`]): in one transaction, a missing key is
    /// sealed by `seal` with the store's [`LegacyBound`] (read in that transaction) and
    /// inserted unless another writer inserted one first; the stored key is read back.
    /// Two processes doing this at once end with one key. Also returns whether this call
    /// created it.
    async fn init_audit_key(&self, seal: &SealAuditKey<'_>) -> Result<(StoredAuditKey, bool)>;

    /// Replace the sealed audit key by `resealed` (the same key and bound under another
    /// master key), if the stored one is still `expected`
    /// ([`rules::reseal_audit_key_with_rules`]). `NotFound` without a key, `Conflict`
    /// when it changed meanwhile.
    async fn reseal_audit_key(
        &self,
        expected: &SealedSecret,
        resealed: &StoredAuditKey,
    ) -> Result<()>;
}

#[async_trait]
impl<T: Store + ?Sized> Store for Arc<T> {
    fn name(&self) -> &'static str {
        (**self).name()
    }

    async fn schema_version(&self) -> Result<SchemaVersion> {
        (**self).schema_version().await
    }
}

#[async_trait]
impl<T: ServerStore + ?Sized> ServerStore for Arc<T> {
    async fn load_server(&self, id: ServerId) -> Result<Option<ServerState>> {
        (**self).load_server(id).await
    }
    async fn load_server_settings(&self, id: ServerId) -> Result<Option<(Server, RevisionNo)>> {
        (**self).load_server_settings(id).await
    }
    async fn load_server_overview(
        &self,
        id: ServerId,
    ) -> Result<Option<(Server, RevisionNo, u64)>> {
        (**self).load_server_overview(id).await
    }
    async fn find_peer(&self, id: ServerId, by: PeerLookup<'_>) -> Result<Option<Peer>> {
        (**self).find_peer(id, by).await
    }
    async fn allocator_state(&self, id: ServerId) -> Result<Option<(RevisionNo, HeldRuns)>> {
        (**self).allocator_state(id).await
    }
    async fn put_allocator_state(
        &self,
        id: ServerId,
        revision: RevisionNo,
        held: &HeldRuns,
    ) -> Result<()> {
        (**self).put_allocator_state(id, revision, held).await
    }
    async fn find_server(&self, name: &ServerName) -> Result<Option<ServerId>> {
        (**self).find_server(name).await
    }
    async fn list_servers(&self, page: Page) -> Result<Vec<ServerSummary>> {
        (**self).list_servers(page).await
    }
    async fn head(&self, id: ServerId) -> Result<Option<RevisionNo>> {
        (**self).head(id).await
    }
    async fn commit(&self, commit: Commit, key: &AuditKey) -> Result<Committed> {
        (**self).commit(commit, key).await
    }
    async fn commit_all(&self, commits: Vec<Commit>, key: &AuditKey) -> Vec<Result<Committed>> {
        (**self).commit_all(commits, key).await
    }
    async fn revisions(
        &self,
        id: ServerId,
        after: RevisionNo,
        limit: u64,
    ) -> Result<Vec<RevisionRecord>> {
        (**self).revisions(id, after, limit).await
    }
}

#[async_trait]
impl<T: HostStateStore + ?Sized> HostStateStore for Arc<T> {
    async fn set_applied(&self, id: ServerId, host: &str, revision: RevisionNo) -> Result<()> {
        (**self).set_applied(id, host, revision).await
    }
    async fn applied(&self, id: ServerId, host: &str) -> Result<Option<RevisionNo>> {
        (**self).applied(id, host).await
    }
    async fn set_applied_state(
        &self,
        id: ServerId,
        host: &str,
        state: &AppliedState,
    ) -> Result<()> {
        (**self).set_applied_state(id, host, state).await
    }
    async fn applied_state(&self, id: ServerId, host: &str) -> Result<Option<AppliedState>> {
        (**self).applied_state(id, host).await
    }
    async fn update_peer_stats(&self, id: ServerId, stats: &[(PeerId, PeerStats)]) -> Result<()> {
        (**self).update_peer_stats(id, stats).await
    }
    async fn acquire_lease(&self, req: &LeaseRequest) -> Result<Lease> {
        (**self).acquire_lease(req).await
    }
    async fn release_lease(&self, lease: &Lease, now: time::OffsetDateTime) -> Result<bool> {
        (**self).release_lease(lease, now).await
    }
    async fn put_host_report(&self, report: &HostReport) -> Result<()> {
        (**self).put_host_report(report).await
    }
    async fn host_reports(&self, id: ServerId) -> Result<Vec<HostReport>> {
        (**self).host_reports(id).await
    }
}

#[async_trait]
impl<T: IdentityStore + ?Sized> IdentityStore for Arc<T> {
    async fn get_user(&self, id: UserId) -> Result<Option<User>> {
        (**self).get_user(id).await
    }
    async fn find_user(&self, name: &UserName) -> Result<Option<User>> {
        (**self).find_user(name).await
    }
    async fn list_users(&self, page: Page) -> Result<Vec<User>> {
        (**self).list_users(page).await
    }
    async fn list_roles(&self) -> Result<Vec<Role>> {
        (**self).list_roles().await
    }
    async fn get_token(&self, id: TokenId) -> Result<Option<ApiTokenRecord>> {
        (**self).get_token(id).await
    }
    async fn list_tokens(&self, user: Option<UserId>) -> Result<Vec<ApiTokenRecord>> {
        (**self).list_tokens(user).await
    }
    async fn commit_identity(
        &self,
        changes: Vec<IdentityChange>,
        audit: AuditEntry,
        key: &AuditKey,
    ) -> Result<AuditRecord> {
        (**self).commit_identity(changes, audit, key).await
    }
}

#[async_trait]
impl<T: AuditStore + ?Sized> AuditStore for Arc<T> {
    async fn append_audit(&self, entry: AuditEntry, key: &AuditKey) -> Result<AuditRecord> {
        (**self).append_audit(entry, key).await
    }
    async fn query_audit(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>> {
        (**self).query_audit(query).await
    }
    async fn audit_head(&self) -> Result<AuditHead> {
        (**self).audit_head().await
    }
    async fn audit_key(&self) -> Result<Option<StoredAuditKey>> {
        (**self).audit_key().await
    }
    async fn init_audit_key(&self, seal: &SealAuditKey<'_>) -> Result<(StoredAuditKey, bool)> {
        (**self).init_audit_key(seal).await
    }
    async fn reseal_audit_key(
        &self,
        expected: &SealedSecret,
        resealed: &StoredAuditKey,
    ) -> Result<()> {
        (**self).reseal_audit_key(expected, resealed).await
    }
}

#[async_trait]
impl<T: SnapshotStore + ?Sized> SnapshotStore for Arc<T> {
    async fn export_snapshot(&self) -> Result<Snapshot> {
        (**self).export_snapshot().await
    }
    async fn import_snapshot(&self, snapshot: &Snapshot) -> Result<()> {
        (**self).import_snapshot(snapshot).await
    }
    async fn replace_with_snapshot(&self, snapshot: &Snapshot) -> Result<()> {
        (**self).replace_with_snapshot(snapshot).await
    }
}

#[async_trait]
impl<T: ThrottleStore + ?Sized> ThrottleStore for Arc<T> {
    async fn throttle_records(
        &self,
        keys: &[crate::auth::throttle::ThrottleKey],
        now: time::OffsetDateTime,
    ) -> Result<Vec<Option<crate::auth::throttle::ThrottleState>>> {
        (**self).throttle_records(keys, now).await
    }
    async fn swap_throttle_record(
        &self,
        key: &crate::auth::throttle::ThrottleKey,
        expected: Option<&crate::auth::throttle::ThrottleState>,
        new: Option<&ThrottleRecord>,
        now: time::OffsetDateTime,
    ) -> Result<bool> {
        (**self).swap_throttle_record(key, expected, new, now).await
    }
}
