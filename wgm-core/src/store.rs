//! The [`Store`] trait — durable desired state, revisions, identities and the audit log —
//! and [`MemoryStore`], its in-memory implementation.
//!
//! A store is deliberately dumb: it does not allocate, authorize or validate business
//! rules (the `Manager` does). What it guarantees is **atomicity and uniqueness**: a
//! [`Commit`] either lands whole — state changes, the new revision and its audit record —
//! or not at all, and it lands only when the server's head is still the revision the
//! changes were computed against. Uniqueness of server names, and per server of peer
//! names, public keys and addresses, is enforced again here as a second line of defence.
//!
//! Implementations: [`MemoryStore`] (here), `wgm_store_sql::SqlStore` (SQLite and
//! PostgreSQL), `wgm_store_redis` (later). All of them run the conformance suite in
//! `wgm_core::conformance::store` (feature `conformance`).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;

use crate::model::{
    ApiTokenRecord, AuditEntry, AuditQuery, AuditRecord, Change, Commit, IdentityChange, Page,
    PeerId, PeerStats, RevisionNo, RevisionRecord, ServerId, ServerState, ServerSummary, TokenId,
    User, UserId, AUDIT_GENESIS,
};
use crate::names::{ServerName, UserName};
use crate::rbac::Role;
use crate::{Error, Result};

/// Durable storage of desired state.
///
/// Every method is a single atomic operation. "Not found" is `Ok(None)` for lookups
/// and `Err(Error::NotFound)` for operations that need the object.
///
/// ```
/// use std::sync::Arc;
/// use wgm_core::store::{MemoryStore, Store};
/// let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
/// assert_eq!(store.name(), "memory");
/// ```
#[async_trait]
pub trait Store: Debug + Send + Sync + 'static {
    /// A short name for logs and errors (`memory`, `sqlite`, `postgres`, `redis`).
    fn name(&self) -> &'static str;

    /// The server at its head revision with all peers, or `None` if it does not exist.
    async fn load_server(&self, id: ServerId) -> Result<Option<ServerState>>;

    /// The id of the server with this name (case-insensitive).
    async fn find_server(&self, name: &ServerName) -> Result<Option<ServerId>>;

    /// Servers ordered by name.
    async fn list_servers(&self, page: Page) -> Result<Vec<ServerSummary>>;

    /// The head revision of a server (`None` if it does not exist). Cheap: used to
    /// validate cached state.
    async fn head(&self, id: ServerId) -> Result<Option<RevisionNo>>;

    /// Atomically: check that the server's head equals `commit.expected`
    /// (`Err(Conflict)` otherwise), apply the changes, append revision `expected + 1`
    /// and the audit record (its `revision` set to the new number). Fails with
    /// `AlreadyExists`/`Conflict` when a unique name, key or address would clash;
    /// nothing is written then.
    async fn commit(&self, commit: Commit) -> Result<RevisionRecord>;

    /// Revisions of a server after `after`, oldest first, at most `limit`. Revisions
    /// outlive a deleted server.
    async fn revisions(
        &self,
        id: ServerId,
        after: RevisionNo,
        limit: u64,
    ) -> Result<Vec<RevisionRecord>>;

    /// Record that `host` has applied (and verified) `revision` of a server.
    async fn set_applied(&self, id: ServerId, host: &str, revision: RevisionNo) -> Result<()>;

    /// The last revision `host` recorded as applied for a server.
    async fn applied(&self, id: ServerId, host: &str) -> Result<Option<RevisionNo>>;

    /// Update observed statistics of peers (not a revision; unknown peers are ignored).
    async fn update_peer_stats(&self, id: ServerId, stats: &[(PeerId, PeerStats)]) -> Result<()>;

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

    /// Atomically apply identity changes and append their audit record. A
    /// `UserUpdated` whose `version` is not the stored version + 1 fails with
    /// `Conflict`; a taken user name or e-mail with `AlreadyExists`.
    async fn commit_identity(&self, changes: Vec<IdentityChange>, audit: AuditEntry) -> Result<()>;

    /// Append an audit record that accompanies no state change (a secret export, a
    /// login, a denied attempt).
    async fn append_audit(&self, entry: AuditEntry) -> Result<AuditRecord>;

    /// Audit records matching `query`, oldest first.
    async fn query_audit(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>>;
}

#[async_trait]
impl<T: Store + ?Sized> Store for Arc<T> {
    fn name(&self) -> &'static str {
        (**self).name()
    }
    async fn load_server(&self, id: ServerId) -> Result<Option<ServerState>> {
        (**self).load_server(id).await
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
    async fn commit(&self, commit: Commit) -> Result<RevisionRecord> {
        (**self).commit(commit).await
    }
    async fn revisions(
        &self,
        id: ServerId,
        after: RevisionNo,
        limit: u64,
    ) -> Result<Vec<RevisionRecord>> {
        (**self).revisions(id, after, limit).await
    }
    async fn set_applied(&self, id: ServerId, host: &str, revision: RevisionNo) -> Result<()> {
        (**self).set_applied(id, host, revision).await
    }
    async fn applied(&self, id: ServerId, host: &str) -> Result<Option<RevisionNo>> {
        (**self).applied(id, host).await
    }
    async fn update_peer_stats(&self, id: ServerId, stats: &[(PeerId, PeerStats)]) -> Result<()> {
        (**self).update_peer_stats(id, stats).await
    }
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
    async fn commit_identity(&self, changes: Vec<IdentityChange>, audit: AuditEntry) -> Result<()> {
        (**self).commit_identity(changes, audit).await
    }
    async fn append_audit(&self, entry: AuditEntry) -> Result<AuditRecord> {
        (**self).append_audit(entry).await
    }
    async fn query_audit(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>> {
        (**self).query_audit(query).await
    }
}

/// Check the uniqueness rules of one server's state after changes were applied:
/// peer names (case-insensitive), public keys (also against the server's own key) and
/// addresses/prefixes are unique within the server. Stores call this (or enforce the
/// same with constraints) before making a commit durable.
///
/// ```
/// # use wgm_core::store::check_server_uniqueness;
/// # fn demo(state: &wgm_core::model::ServerState) { let _ = check_server_uniqueness(state); }
/// ```
pub fn check_server_uniqueness(state: &ServerState) -> Result<()> {
    let mut names = HashMap::with_capacity(state.peers.len());
    let mut keys = HashMap::with_capacity(state.peers.len());
    let mut addrs: HashMap<IpAddr, PeerId> = HashMap::with_capacity(state.peers.len() * 2);
    let mut prefixes = HashMap::new();
    for p in state.peers.values() {
        if names.insert(p.name.key(), p.id).is_some() {
            return Err(Error::already_exists("peer", format!("name {}", p.name)));
        }
        if p.public_key == state.server.public_key {
            return Err(Error::conflict(
                "peer.public_key: equals the server's own public key",
            ));
        }
        if keys.insert(p.public_key, p.id).is_some() {
            return Err(Error::already_exists(
                "peer",
                format!("public key {}", p.public_key),
            ));
        }
        for a in p
            .address_v6
            .map(IpAddr::V6)
            .into_iter()
            .chain(p.address_v4.map(IpAddr::V4))
        {
            if addrs.insert(a, p.id).is_some() {
                return Err(Error::conflict(format!(
                    "address {a} is assigned to two peers"
                )));
            }
        }
        if let Some(pfx) = p.delegated_prefix {
            if prefixes.insert(pfx, p.id).is_some() {
                return Err(Error::conflict(format!(
                    "prefix {pfx} is delegated to two peers"
                )));
            }
        }
    }
    Ok(())
}

#[derive(Debug, Default)]
struct Inner {
    servers: BTreeMap<ServerId, ServerState>,
    revisions: BTreeMap<ServerId, Vec<RevisionRecord>>,
    applied: HashMap<(ServerId, String), RevisionNo>,
    users: BTreeMap<UserId, User>,
    roles: BTreeMap<String, Role>,
    tokens: BTreeMap<TokenId, ApiTokenRecord>,
    audit: Vec<AuditRecord>,
}

impl Inner {
    fn push_audit(&mut self, entry: AuditEntry) -> AuditRecord {
        let prev = self
            .audit
            .last()
            .map_or(AUDIT_GENESIS.to_owned(), |r| r.hash.clone());
        let rec = AuditRecord::chain(self.audit.len() as u64 + 1, &prev, entry);
        self.audit.push(rec.clone());
        rec
    }
}

/// An in-memory [`Store`] with the same semantics as the durable ones: atomic commits,
/// compare-and-swap on the head revision, uniqueness checks, a hash-chained audit log.
/// Used by tests, doctests and examples; its contents vanish with the process.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a half-applied commit (commits are
        // built on a copy and swapped in), so a poisoned lock is safe to reuse.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Test hook: overwrite an audit record's action text in place (as an attacker with
    /// database access could), to show that `verify_audit_chain` detects it.
    pub fn tamper_audit_action(&self, seq: u64, action: &str) -> bool {
        let mut g = self.lock();
        match g.audit.iter_mut().find(|r| r.seq == seq) {
            Some(r) => {
                r.entry.action = crate::audit::AuditAction::parse(action);
                true
            }
            None => false,
        }
    }

    /// Test hook: delete an audit record (as an attacker with database access could).
    pub fn delete_audit_record(&self, seq: u64) -> bool {
        let mut g = self.lock();
        let before = g.audit.len();
        g.audit.retain(|r| r.seq != seq);
        g.audit.len() != before
    }
}

fn apply_identity(inner: &mut Inner, change: IdentityChange) -> Result<()> {
    match change {
        IdentityChange::UserCreated { user } => {
            if inner.users.contains_key(&user.id) {
                return Err(Error::already_exists("user", user.id));
            }
            check_user_unique(inner, &user)?;
            inner.users.insert(user.id, *user);
        }
        IdentityChange::UserUpdated { user } => {
            let cur = inner
                .users
                .get(&user.id)
                .ok_or_else(|| Error::not_found("user", user.id))?;
            if user.version != cur.version + 1 {
                return Err(Error::conflict(format!(
                    "user {} was changed concurrently",
                    user.name
                )));
            }
            check_user_unique(inner, &user)?;
            inner.users.insert(user.id, *user);
        }
        IdentityChange::UserDeleted { id } => {
            inner
                .users
                .remove(&id)
                .ok_or_else(|| Error::not_found("user", id))?;
            inner.tokens.retain(|_, t| t.user_id != id);
        }
        IdentityChange::RolePut { role } => {
            inner.roles.insert(role.name.key(), role);
        }
        IdentityChange::RoleDeleted { name } => {
            inner
                .roles
                .remove(&name.key())
                .ok_or_else(|| Error::not_found("role", &name))?;
        }
        IdentityChange::TokenCreated { token } => {
            if !inner.users.contains_key(&token.user_id) {
                return Err(Error::not_found("user", token.user_id));
            }
            if inner.tokens.contains_key(&token.id) {
                return Err(Error::already_exists("token", token.id));
            }
            inner.tokens.insert(token.id, token);
        }
        IdentityChange::TokenRevoked { id } => {
            let t = inner
                .tokens
                .get_mut(&id)
                .ok_or_else(|| Error::not_found("token", id))?;
            t.revoked = true;
        }
    }
    Ok(())
}

fn check_user_unique(inner: &Inner, user: &User) -> Result<()> {
    for other in inner.users.values().filter(|u| u.id != user.id) {
        if other.name.key() == user.name.key() {
            return Err(Error::already_exists("user", user.name.as_str()));
        }
        if user.email.is_some() && other.email == user.email {
            return Err(Error::already_exists("user", "with this e-mail address"));
        }
    }
    Ok(())
}

fn page<T: Clone>(items: impl Iterator<Item = T>, page: Page) -> Vec<T> {
    let skip = usize::try_from(page.offset).unwrap_or(usize::MAX);
    let take = usize::try_from(page.limit).unwrap_or(usize::MAX);
    items.skip(skip).take(take).collect()
}

#[async_trait]
impl Store for MemoryStore {
    fn name(&self) -> &'static str {
        "memory"
    }

    async fn load_server(&self, id: ServerId) -> Result<Option<ServerState>> {
        Ok(self.lock().servers.get(&id).cloned())
    }

    async fn find_server(&self, name: &ServerName) -> Result<Option<ServerId>> {
        let key = name.key();
        Ok(self
            .lock()
            .servers
            .values()
            .find(|s| s.server.name.key() == key)
            .map(|s| s.server.id))
    }

    async fn list_servers(&self, p: Page) -> Result<Vec<ServerSummary>> {
        let g = self.lock();
        let mut all: Vec<ServerSummary> = g
            .servers
            .values()
            .map(|s| ServerSummary {
                id: s.server.id,
                name: s.server.name.clone(),
                interface: s.server.interface.clone(),
                peer_count: s.peers.len() as u64,
                revision: s.revision,
            })
            .collect();
        all.sort_by(|a, b| a.name.key().cmp(&b.name.key()).then(a.id.cmp(&b.id)));
        Ok(page(all.into_iter(), p))
    }

    async fn head(&self, id: ServerId) -> Result<Option<RevisionNo>> {
        Ok(self.lock().servers.get(&id).map(|s| s.revision))
    }

    async fn commit(&self, commit: Commit) -> Result<RevisionRecord> {
        let mut g = self.lock();
        let head = g
            .servers
            .get(&commit.server_id)
            .map_or(RevisionNo::NONE, |s| s.revision);
        let last_rev = g
            .revisions
            .get(&commit.server_id)
            .and_then(|v| v.last())
            .map_or(RevisionNo::NONE, |r| r.revision);
        // A deleted server keeps its history; its head for CAS purposes is the last revision.
        let head = head.max(last_rev);
        if head != commit.expected {
            return Err(Error::conflict(format!(
                "server {} is at revision {head}, not {}",
                commit.server_id, commit.expected
            )));
        }
        let new_rev = head.next();
        // Build the new state on a copy; swap it in only when everything succeeded.
        let mut state: Option<ServerState> = g.servers.get(&commit.server_id).cloned();
        for change in &commit.changes {
            match (change, state.as_mut()) {
                (Change::ServerCreated { server }, None) => {
                    if server.id != commit.server_id {
                        return Err(Error::conflict("server id does not match the commit"));
                    }
                    let key = server.name.key();
                    if g.servers.values().any(|s| s.server.name.key() == key) {
                        return Err(Error::already_exists("server", server.name.as_str()));
                    }
                    state = Some(ServerState {
                        server: (**server).clone(),
                        peers: BTreeMap::new(),
                        revision: new_rev,
                    });
                }
                (Change::ServerCreated { server }, Some(_)) => {
                    return Err(Error::already_exists("server", server.id));
                }
                (Change::ServerDeleted { .. }, Some(_)) => state = None,
                (Change::ServerUpdated { after, .. }, Some(_)) => {
                    let key = after.name.key();
                    if g.servers
                        .values()
                        .any(|s| s.server.id != after.id && s.server.name.key() == key)
                    {
                        return Err(Error::already_exists("server", after.name.as_str()));
                    }
                    if let Some(st) = state.as_mut() {
                        st.apply_change(change)?;
                    }
                }
                (_, Some(st)) => st.apply_change(change)?,
                (_, None) => return Err(Error::not_found("server", commit.server_id)),
            }
        }
        if let Some(st) = state.as_mut() {
            check_server_uniqueness(st)?;
            st.revision = new_rev;
        }
        let record = RevisionRecord {
            server_id: commit.server_id,
            revision: new_rev,
            author: commit.author,
            at: commit.at,
            summary: commit.summary,
            changes: commit.changes,
        };
        match state {
            Some(st) => {
                g.servers.insert(commit.server_id, st);
            }
            None => {
                g.servers.remove(&commit.server_id);
            }
        }
        g.revisions
            .entry(commit.server_id)
            .or_default()
            .push(record.clone());
        let mut audit = commit.audit;
        audit.revision = Some(new_rev);
        audit.server_id = Some(commit.server_id);
        g.push_audit(audit);
        Ok(record)
    }

    async fn revisions(
        &self,
        id: ServerId,
        after: RevisionNo,
        limit: u64,
    ) -> Result<Vec<RevisionRecord>> {
        let g = self.lock();
        let take = usize::try_from(limit).unwrap_or(usize::MAX);
        Ok(g.revisions
            .get(&id)
            .map(|v| {
                v.iter()
                    .filter(|r| r.revision > after)
                    .take(take)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn set_applied(&self, id: ServerId, host: &str, revision: RevisionNo) -> Result<()> {
        self.lock().applied.insert((id, host.to_owned()), revision);
        Ok(())
    }

    async fn applied(&self, id: ServerId, host: &str) -> Result<Option<RevisionNo>> {
        Ok(self.lock().applied.get(&(id, host.to_owned())).copied())
    }

    async fn update_peer_stats(&self, id: ServerId, stats: &[(PeerId, PeerStats)]) -> Result<()> {
        let mut g = self.lock();
        let st = g
            .servers
            .get_mut(&id)
            .ok_or_else(|| Error::not_found("server", id))?;
        for (pid, s) in stats {
            if let Some(p) = st.peers.get_mut(pid) {
                p.stats = *s;
            }
        }
        Ok(())
    }

    async fn get_user(&self, id: UserId) -> Result<Option<User>> {
        Ok(self.lock().users.get(&id).cloned())
    }

    async fn find_user(&self, name: &UserName) -> Result<Option<User>> {
        let key = name.key();
        Ok(self
            .lock()
            .users
            .values()
            .find(|u| u.name.key() == key)
            .cloned())
    }

    async fn list_users(&self, p: Page) -> Result<Vec<User>> {
        let g = self.lock();
        let mut all: Vec<User> = g.users.values().cloned().collect();
        all.sort_by_cached_key(|u| u.name.key());
        Ok(page(all.into_iter(), p))
    }

    async fn list_roles(&self) -> Result<Vec<Role>> {
        Ok(self.lock().roles.values().cloned().collect())
    }

    async fn get_token(&self, id: TokenId) -> Result<Option<ApiTokenRecord>> {
        Ok(self.lock().tokens.get(&id).cloned())
    }

    async fn list_tokens(&self, user: Option<UserId>) -> Result<Vec<ApiTokenRecord>> {
        let g = self.lock();
        let mut v: Vec<ApiTokenRecord> = g
            .tokens
            .values()
            .filter(|t| user.is_none_or(|u| t.user_id == u))
            .cloned()
            .collect();
        v.sort_by_key(|t| (t.created_at, t.id));
        Ok(v)
    }

    async fn commit_identity(&self, changes: Vec<IdentityChange>, audit: AuditEntry) -> Result<()> {
        let mut g = self.lock();
        // Apply to copies so that a failing change leaves nothing behind.
        let mut scratch = Inner {
            users: g.users.clone(),
            roles: g.roles.clone(),
            tokens: g.tokens.clone(),
            ..Inner::default()
        };
        for c in changes {
            apply_identity(&mut scratch, c)?;
        }
        g.users = scratch.users;
        g.roles = scratch.roles;
        g.tokens = scratch.tokens;
        g.push_audit(audit);
        Ok(())
    }

    async fn append_audit(&self, entry: AuditEntry) -> Result<AuditRecord> {
        Ok(self.lock().push_audit(entry))
    }

    async fn query_audit(&self, q: &AuditQuery) -> Result<Vec<AuditRecord>> {
        let g = self.lock();
        let take = q
            .limit
            .map_or(usize::MAX, |l| usize::try_from(l).unwrap_or(usize::MAX));
        Ok(g.audit
            .iter()
            .filter(|r| q.matches(r))
            .take(take)
            .cloned()
            .collect())
    }
}
