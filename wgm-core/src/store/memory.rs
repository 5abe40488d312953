//! [`MemoryStore`]: the in-memory [`Store`], an engine of the commit [`rules`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use futures::channel::mpsc;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};

use super::rules::{self, ImportMode, Probe, ProbeField, Restore, Transaction, UserClash};
use super::{
    AppliedSnapshot, AuditStore, ChangeFeed, FeedEvent, HostStateStore, IdentityStore, PeerLookup,
    SealAuditKey, ServerSnapshot, ServerStore, Snapshot, SnapshotStore, Store, ThrottleRecord,
    ThrottleStore, SNAPSHOT_VERSION,
};
use crate::auth::throttle::{ThrottleKey, ThrottleState};
use crate::integrity::{AuditHead, AuditKey, StoredAuditKey};
use crate::ipam::HeldRuns;
use crate::model::{
    ApiTokenRecord, AppliedState, AuditEntry, AuditQuery, AuditRecord, Commit, Committed,
    HostReport, IdentityChange, Lease, LeaseRequest, Page, Peer, PeerId, PeerStats, RevisionNo,
    RevisionRecord, Server, ServerId, ServerState, ServerSummary, TokenId, User, UserId,
};
use crate::names::{HostName, RoleName, ServerName, UserName};
use crate::rbac::Role;
use crate::seal::SealedSecret;
use crate::{Error, Result};

/// Which stored peers of one server hold each unique value (in the text forms of
/// [`Probe::values_of`]): the memory engine's counterpart of the SQL engines' indexes, so
/// that [`Transaction::peers_for_commit`] costs what the commit touches, not the server's
/// size. Kept by the only writers of peers, `insert_peers` and `delete_peers`.
type ValueIndex = HashMap<(ProbeField, String), BTreeSet<PeerId>>;

fn index_peer(idx: &mut ValueIndex, id: PeerId, p: &Peer) {
    for v in Probe::values_of(p) {
        idx.entry(v).or_default().insert(id);
    }
}

fn unindex_peer(idx: &mut ValueIndex, id: PeerId, p: &Peer) {
    for v in Probe::values_of(p) {
        if let Some(holders) = idx.get_mut(&v) {
            holders.remove(&id);
            if holders.is_empty() {
                idx.remove(&v);
            }
        }
    }
}

#[derive(Debug)]
struct Inner {
    servers: BTreeMap<ServerId, ServerState>,
    /// Per server, its peers' unique values ([`ValueIndex`]).
    index: HashMap<ServerId, ValueIndex>,
    revisions: BTreeMap<ServerId, Vec<RevisionRecord>>,
    applied: HashMap<(ServerId, String), RevisionNo>,
    /// The device part of `applied`, when the last record had one.
    applied_state: HashMap<(ServerId, String), AppliedState>,
    leases: HashMap<(ServerId, HostName), Lease>,
    allocators: HashMap<ServerId, (RevisionNo, HeldRuns)>,
    reports: BTreeMap<(ServerId, HostName), HostReport>,
    users: BTreeMap<UserId, User>,
    roles: BTreeMap<String, Role>,
    tokens: BTreeMap<TokenId, ApiTokenRecord>,
    audit: Vec<AuditRecord>,
    /// The stored head of the audit log, kept apart from the records (as the SQL stores
    /// keep theirs), so that records deleted from the end show.
    audit_head: AuditHead,
    audit_key: Option<StoredAuditKey>,
}

impl Default for Inner {
    fn default() -> Self {
        Inner {
            servers: BTreeMap::new(),
            index: HashMap::new(),
            revisions: BTreeMap::new(),
            applied: HashMap::new(),
            applied_state: HashMap::new(),
            leases: HashMap::new(),
            allocators: HashMap::new(),
            reports: BTreeMap::new(),
            users: BTreeMap::new(),
            roles: BTreeMap::new(),
            tokens: BTreeMap::new(),
            audit: Vec::new(),
            audit_head: AuditHead::genesis(),
            audit_key: None,
        }
    }
}

/// The rules' primitives over the store's contents, under its lock. Writes cannot
/// fail, and a server commit makes every check before its first write, so a server
/// commit writes straight into the store; identity changes run on a copy
/// ([`MemoryStore::commit_identity`]).
impl Transaction for Inner {
    type Error = Error;

    async fn lock_server(&mut self, id: ServerId) -> Result<(Option<RevisionNo>, Option<Server>)> {
        let state = self.servers.get(&id);
        let last = self
            .revisions
            .get(&id)
            .and_then(|v| v.last())
            .map(|r| r.revision);
        // A deleted server keeps its history; its head is its last revision.
        let head = match (state.map(|s| s.revision), last) {
            (None, None) => None,
            (a, b) => Some(a.max(b).unwrap_or(RevisionNo::NONE)),
        };
        Ok((head, state.map(|s| s.server.clone())))
    }

    async fn server_name_taken(
        &mut self,
        name_key: &str,
        except: Option<ServerId>,
    ) -> Result<bool> {
        Ok(self
            .servers
            .values()
            .any(|s| Some(s.server.id) != except && s.server.name.key() == name_key))
    }

    async fn peers_for_commit(
        &mut self,
        server: ServerId,
        ids: &[PeerId],
        probe: &Probe,
    ) -> Result<Vec<(PeerId, Peer)>> {
        let Some(st) = self.servers.get(&server) else {
            return Ok(Vec::new());
        };
        let mut found: BTreeSet<PeerId> = ids.iter().copied().collect();
        if let Some(idx) = self.index.get(&server) {
            for (field, value) in probe.values() {
                if let Some(holders) = idx.get(&(field, value.to_owned())) {
                    found.extend(holders);
                }
            }
        }
        Ok(found
            .into_iter()
            .filter_map(|id| st.peers.get(&id).map(|p| (id, p.clone())))
            .collect())
    }

    async fn insert_head(&mut self, _id: ServerId, _rev: RevisionNo) -> Result<()> {
        // The head is derived from the server and its revisions (`lock_server`).
        Ok(())
    }

    async fn write_server(&mut self, s: &Server, exists: bool) -> Result<()> {
        match self.servers.get_mut(&s.id) {
            Some(st) if exists => st.server = s.clone(),
            _ => {
                // The revision is set by `finish`.
                self.index.insert(s.id, ValueIndex::new());
                self.servers.insert(
                    s.id,
                    ServerState {
                        server: s.clone(),
                        peers: BTreeMap::new(),
                        revision: RevisionNo::NONE,
                    },
                );
            }
        }
        Ok(())
    }

    async fn delete_server(&mut self, id: ServerId) -> Result<()> {
        self.servers.remove(&id);
        self.index.remove(&id);
        Ok(())
    }

    async fn delete_peers(&mut self, server: ServerId, ids: &[PeerId]) -> Result<()> {
        if let Some(st) = self.servers.get_mut(&server) {
            let idx = self.index.entry(server).or_default();
            for id in ids {
                if let Some(p) = st.peers.remove(id) {
                    unindex_peer(idx, *id, &p);
                }
            }
        }
        Ok(())
    }

    async fn insert_peers(&mut self, server: ServerId, peers: &[(PeerId, &Peer)]) -> Result<()> {
        let st = self
            .servers
            .get_mut(&server)
            .ok_or_else(|| Error::not_found("server", server))?;
        let idx = self.index.entry(server).or_default();
        for (id, p) in peers {
            if let Some(old) = st.peers.insert(*id, (*p).clone()) {
                unindex_peer(idx, *id, &old);
            }
            index_peer(idx, *id, p);
        }
        Ok(())
    }

    async fn audit_tail(&mut self) -> Result<(u64, String)> {
        // The stored head (a record deleted through a test hook is detected by
        // verification, not repaired here).
        Ok((self.audit_head.seq, self.audit_head.hash.clone()))
    }

    async fn write_audit(&mut self, record: &AuditRecord) -> Result<()> {
        self.audit.push(record.clone());
        self.audit_head = record.head();
        Ok(())
    }

    async fn audit_key(&mut self) -> Result<Option<StoredAuditKey>> {
        Ok(self.audit_key.clone())
    }

    async fn write_audit_key(&mut self, key: &StoredAuditKey, exists: bool) -> Result<()> {
        if exists || self.audit_key.is_none() {
            self.audit_key = Some(key.clone());
        }
        Ok(())
    }

    async fn server_heads(&mut self) -> Result<BTreeMap<ServerId, RevisionNo>> {
        let mut heads = BTreeMap::new();
        let ids: Vec<ServerId> = self
            .revisions
            .keys()
            .chain(self.servers.keys())
            .copied()
            .collect();
        for id in ids {
            if let (Some(h), _) = self.lock_server(id).await? {
                heads.insert(id, h);
            }
        }
        Ok(heads)
    }

    async fn finish(&mut self, record: &RevisionRecord, audit: &AuditRecord) -> Result<()> {
        if let Some(st) = self.servers.get_mut(&record.server_id) {
            st.revision = record.revision;
        }
        self.revisions
            .entry(record.server_id)
            .or_default()
            .push(record.clone());
        self.write_audit(audit).await
    }

    async fn user_version(&mut self, id: UserId) -> Result<Option<u64>> {
        Ok(self.users.get(&id).map(|u| u.version))
    }

    async fn user_clash(&mut self, user: &User) -> Result<Option<UserClash>> {
        let others = || self.users.values().filter(|u| u.id != user.id);
        let key = user.name.key();
        Ok(if others().any(|o| o.name.key() == key) {
            Some(UserClash::Name)
        } else if user.email.is_some() && others().any(|o| o.email == user.email) {
            Some(UserClash::Email)
        } else {
            None
        })
    }

    async fn insert_user(&mut self, user: &User) -> Result<()> {
        self.users.insert(user.id, user.clone());
        Ok(())
    }

    async fn update_user(&mut self, user: &User) -> Result<()> {
        self.users.insert(user.id, user.clone());
        Ok(())
    }

    async fn delete_user(&mut self, id: UserId) -> Result<bool> {
        let found = self.users.remove(&id).is_some();
        if found {
            self.tokens.retain(|_, t| t.user_id != id);
        }
        Ok(found)
    }

    async fn put_role(&mut self, role: &Role) -> Result<()> {
        self.roles.insert(role.name.key(), role.clone());
        Ok(())
    }

    async fn delete_role(&mut self, name: &RoleName) -> Result<bool> {
        Ok(self.roles.remove(&name.key()).is_some())
    }

    async fn token(&mut self, id: TokenId) -> Result<Option<ApiTokenRecord>> {
        Ok(self.tokens.get(&id).cloned())
    }

    async fn insert_token(&mut self, t: &ApiTokenRecord) -> Result<()> {
        self.tokens.insert(t.id, t.clone());
        Ok(())
    }

    async fn update_token(&mut self, t: &ApiTokenRecord) -> Result<()> {
        self.tokens.insert(t.id, t.clone());
        Ok(())
    }
}

/// The import primitives over the store's contents; an import runs on an empty copy that
/// replaces the contents only when it succeeded ([`MemoryStore::import_snapshot`]).
impl Restore for Inner {
    async fn clear(&mut self) -> Result<()> {
        *self = Inner::default();
        Ok(())
    }

    async fn is_empty(&mut self) -> Result<bool> {
        Ok(self.servers.is_empty()
            && self.revisions.is_empty()
            && self.applied.is_empty()
            && self.applied_state.is_empty()
            && self.leases.is_empty()
            && self.allocators.is_empty()
            && self.reports.is_empty()
            && self.users.is_empty()
            && self.roles.is_empty()
            && self.tokens.is_empty()
            && self.audit.is_empty()
            && self.audit_head == AuditHead::genesis()
            && self.audit_key.is_none())
    }

    async fn insert_revisions(&mut self, records: &[RevisionRecord]) -> Result<()> {
        for r in records {
            self.revisions
                .entry(r.server_id)
                .or_default()
                .push(r.clone());
        }
        Ok(())
    }

    async fn insert_audit(&mut self, records: &[AuditRecord]) -> Result<()> {
        self.audit.extend_from_slice(records);
        Ok(())
    }

    async fn write_audit_head(&mut self, head: &AuditHead) -> Result<()> {
        self.audit_head = head.clone();
        Ok(())
    }

    async fn write_host_state(&mut self, s: &ServerSnapshot) -> Result<()> {
        // The head of a stored server is its state's revision (`insert_head` keeps none).
        if let (Some(st), Some(head)) = (self.servers.get_mut(&s.id), s.head) {
            st.revision = head;
        }
        if let Some(a) = &s.allocator {
            self.allocators.insert(s.id, a.clone());
        }
        for a in &s.applied {
            self.applied.insert((s.id, a.host.clone()), a.revision);
            if let Some(st) = a.state {
                self.applied_state.insert((s.id, a.host.clone()), st);
            }
        }
        for l in &s.leases {
            self.leases.insert((s.id, l.host.clone()), l.clone());
        }
        for r in &s.reports {
            self.reports.insert((s.id, r.host.clone()), r.clone());
        }
        Ok(())
    }
}

impl Inner {
    /// Everything, as a [`Snapshot`] (under the store's lock: one instant).
    fn snapshot(&self) -> Snapshot {
        let mut ids: BTreeSet<ServerId> = self.servers.keys().copied().collect();
        ids.extend(self.revisions.keys());
        ids.extend(self.applied.keys().map(|(id, _)| *id));
        ids.extend(self.leases.keys().map(|(id, _)| *id));
        ids.extend(self.reports.keys().map(|(id, _)| *id));
        ids.extend(self.allocators.keys());
        let servers = ids
            .into_iter()
            .map(|id| {
                let mut s = ServerSnapshot::new(id);
                s.state = self.servers.get(&id).cloned();
                s.revisions = self.revisions.get(&id).cloned().unwrap_or_default();
                let last = s.revisions.last().map(|r| r.revision);
                s.head = match (s.state.as_ref().map(|st| st.revision), last) {
                    (None, None) => None,
                    (a, b) => Some(a.max(b).unwrap_or(RevisionNo::NONE)),
                };
                s.allocator = self.allocators.get(&id).cloned();
                let mut applied: Vec<AppliedSnapshot> = self
                    .applied
                    .iter()
                    .filter(|((sid, _), _)| *sid == id)
                    .map(|((_, host), rev)| AppliedSnapshot {
                        host: host.clone(),
                        revision: *rev,
                        state: self.applied_state.get(&(id, host.clone())).copied(),
                    })
                    .collect();
                applied.sort_by(|a, b| a.host.cmp(&b.host));
                s.applied = applied;
                let mut leases: Vec<Lease> = self
                    .leases
                    .iter()
                    .filter(|((sid, _), _)| *sid == id)
                    .map(|(_, l)| l.clone())
                    .collect();
                leases.sort_by(|a, b| a.host.as_str().cmp(b.host.as_str()));
                s.leases = leases;
                s.reports = self
                    .reports
                    .iter()
                    .filter(|((sid, _), _)| *sid == id)
                    .map(|(_, r)| r.clone())
                    .collect();
                s
            })
            .collect();
        let mut tokens: Vec<ApiTokenRecord> = self.tokens.values().cloned().collect();
        tokens.sort_by_key(|t| (t.created_at, t.id));
        Snapshot {
            version: SNAPSHOT_VERSION,
            servers,
            users: self.users.values().cloned().collect(),
            roles: self.roles.values().cloned().collect(),
            tokens,
            audit: self.audit.clone(),
            audit_head: self.audit_head.clone(),
            audit_key: self.audit_key.clone(),
        }
    }
}

/// Run the rules on the memory engine: every primitive is ready at once, so one poll
/// finishes them (no await happens while the store's lock is held).
fn run<T>(f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    f.now_or_never().unwrap_or_else(|| {
        Err(Error::store(
            "memory",
            "a rule waited on the in-memory engine, which never blocks",
        ))
    })
}

/// An in-memory [`Store`] with the same semantics as the durable ones: atomic commits,
/// compare-and-swap on the head revision, uniqueness checks, a keyed audit chain with a
/// stored head, an audit key.
/// Used by tests, doctests and examples; its contents vanish with the process.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
    /// The change feed's watchers ([`ChangeFeed::watch`]); closed ones are dropped on
    /// the next send.
    feeds: Mutex<Vec<mpsc::UnboundedSender<FeedEvent>>>,
    /// The login throttle's records ([`ThrottleStore`]), apart from `inner`: they are not
    /// store contents, so no snapshot, import or forced restore sees or replaces them.
    throttle: Mutex<ThrottleMap>,
    /// Test hooks ([`MemoryStore::set_throttle_unavailable`]): throttle reads fail,
    /// throttle swaps fail.
    throttle_reads_fail: std::sync::atomic::AtomicBool,
    throttle_swaps_fail: std::sync::atomic::AtomicBool,
    /// Test hook ([`MemoryStore::after_next_revisions`]).
    after_revisions: RevisionsHook,
}

/// What runs at the end of the next [`ServerStore::revisions`] call, once.
type RevisionsFn = Box<dyn FnOnce(&MemoryStore) + Send>;

#[derive(Default)]
struct RevisionsHook(Mutex<Option<RevisionsFn>>);

impl std::fmt::Debug for RevisionsHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RevisionsHook")
    }
}

/// The throttle records by [`ThrottleKey::store_key`], pruned of expired ones whenever
/// the map has doubled since the last pruning (so a write costs amortized constant time).
#[derive(Debug, Default)]
struct ThrottleMap {
    records: HashMap<String, ThrottleRecord>,
    prune_above: usize,
}

impl ThrottleMap {
    /// The record of `key` if it is live at unix second `now`.
    fn live(&self, key: &str, now: i64) -> Option<ThrottleState> {
        self.records
            .get(key)
            .filter(|r| r.expires_at.unix_timestamp() > now)
            .map(|r| r.state)
    }

    fn prune(&mut self, now: i64) {
        if self.records.len() > self.prune_above {
            self.records
                .retain(|_, r| r.expires_at.unix_timestamp() > now);
            self.prune_above = (2 * self.records.len()).max(64);
        }
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a half-applied commit (a server
        // commit checks everything before its first write, and the writes are plain map
        // updates; identity changes are built on a copy and swapped in), so a poisoned
        // lock is safe to reuse.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn feeds(&self) -> MutexGuard<'_, Vec<mpsc::UnboundedSender<FeedEvent>>> {
        // Plain pushes and retains: a poisoned lock holds a usable list.
        self.feeds
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Tell every watcher of the change feed.
    fn publish(&self, event: FeedEvent) {
        self.feeds().retain(|tx| tx.unbounded_send(event).is_ok());
    }

    /// Fault injection for feed followers: every current watcher is told
    /// [`FeedEvent::Missed`], as a durable store's watchers are after their connection
    /// was cut (this store itself never loses a wake-up).
    pub fn disrupt_feeds(&self) {
        self.publish(FeedEvent::Missed);
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

    /// Test hook: change an audit record in place with `f` (as an attacker with database
    /// access could); `false` if there is no record `seq`.
    pub fn tamper_audit_record(&self, seq: u64, f: impl FnOnce(&mut AuditRecord)) -> bool {
        let mut g = self.lock();
        g.audit.iter_mut().find(|r| r.seq == seq).map(f).is_some()
    }

    /// Test hook: overwrite the stored head of the audit log (an attacker who deleted
    /// records from the end and covers it up).
    pub fn set_audit_head(&self, head: AuditHead) {
        self.lock().audit_head = head;
    }

    /// Test hook: change a stored revision in place with `f` (as an attacker with
    /// database access could); `false` if there is no such revision.
    pub fn tamper_revision(
        &self,
        server: ServerId,
        revision: RevisionNo,
        f: impl FnOnce(&mut RevisionRecord),
    ) -> bool {
        let mut g = self.lock();
        g.revisions
            .get_mut(&server)
            .and_then(|v| v.iter_mut().find(|r| r.revision == revision))
            .map(f)
            .is_some()
    }

    /// Test hook: make [`ThrottleStore::throttle_records`] (`reads`) and
    /// [`ThrottleStore::swap_throttle_record`] (`swaps`) fail with a store error, as a
    /// store that cannot be reached does, or work again (`false`).
    pub fn set_throttle_unavailable(&self, reads: bool, swaps: bool) {
        use std::sync::atomic::Ordering::SeqCst;
        self.throttle_reads_fail.store(reads, SeqCst);
        self.throttle_swaps_fail.store(swaps, SeqCst);
    }

    /// The throttle records, unless `hook` says this call fails.
    fn throttle(
        &self,
        hook: &std::sync::atomic::AtomicBool,
    ) -> Result<MutexGuard<'_, ThrottleMap>> {
        if hook.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(Error::store(
                "memory",
                "the login throttle's records are unavailable (test hook)",
            ));
        }
        // Each write is one map insert or removal: a poisoned lock holds a usable map.
        Ok(self
            .throttle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// Test hook: run `f` at the end of the next [`ServerStore::revisions`] call, after it
    /// read what it returns (as another process committing just then would). `f` may
    /// commit through the store it is given: every call of this store finishes in one
    /// poll, so `FutureExt::now_or_never` runs one there.
    pub fn after_next_revisions(&self, f: impl FnOnce(&MemoryStore) + Send + 'static) {
        *self
            .after_revisions
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Box::new(f));
    }

    /// Test hook: replace (or with `None`, remove) the stored audit key.
    pub fn set_audit_key(&self, key: Option<StoredAuditKey>) {
        self.lock().audit_key = key;
    }
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

    async fn schema_version(&self) -> Result<super::SchemaVersion> {
        Ok(super::SchemaVersion { found: 0, known: 0 })
    }
}

#[async_trait]
impl ServerStore for MemoryStore {
    async fn load_server(&self, id: ServerId) -> Result<Option<ServerState>> {
        Ok(self.lock().servers.get(&id).cloned())
    }

    async fn load_server_settings(&self, id: ServerId) -> Result<Option<(Server, RevisionNo)>> {
        Ok(self
            .lock()
            .servers
            .get(&id)
            .map(|s| (s.server.clone(), s.revision)))
    }

    async fn load_server_overview(
        &self,
        id: ServerId,
    ) -> Result<Option<(Server, RevisionNo, u64)>> {
        Ok(self
            .lock()
            .servers
            .get(&id)
            .map(|s| (s.server.clone(), s.revision, s.peers.len() as u64)))
    }

    async fn find_peer(&self, id: ServerId, by: PeerLookup<'_>) -> Result<Option<Peer>> {
        let g = self.lock();
        let Some(s) = g.servers.get(&id) else {
            return Ok(None);
        };
        Ok(match by {
            PeerLookup::Id(pid) => s.peers.get(&pid).cloned(),
            _ => s.peers.values().find(|p| by.matches(p)).cloned(),
        })
    }

    async fn allocator_state(&self, id: ServerId) -> Result<Option<(RevisionNo, HeldRuns)>> {
        Ok(self.lock().allocators.get(&id).cloned())
    }

    async fn put_allocator_state(
        &self,
        id: ServerId,
        revision: RevisionNo,
        held: &HeldRuns,
    ) -> Result<()> {
        let mut g = self.lock();
        if g.allocators.get(&id).is_none_or(|(r, _)| *r <= revision) {
            g.allocators.insert(id, (revision, held.clone()));
        }
        Ok(())
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
                host: s.server.host.clone(),
            })
            .collect();
        all.sort_by(|a, b| a.name.key().cmp(&b.name.key()).then(a.id.cmp(&b.id)));
        Ok(page(all.into_iter(), p))
    }

    async fn head(&self, id: ServerId) -> Result<Option<RevisionNo>> {
        Ok(self.lock().servers.get(&id).map(|s| s.revision))
    }

    async fn commit(&self, commit: Commit, key: &AuditKey) -> Result<Committed> {
        let done = {
            let mut g = self.lock();
            run(rules::commit_with_rules(&mut *g, &commit, key))?
        };
        self.publish(FeedEvent::Committed {
            server: commit.server_id,
            revision: done.record.revision,
        });
        Ok(done)
    }

    async fn commit_all(&self, commits: Vec<Commit>, key: &AuditKey) -> Vec<Result<Committed>> {
        if !rules::is_peer_chain(&commits) {
            // One after the other, as the trait's default does.
            return super::commit_in_turn(self, commits, key).await;
        }
        // A chain is checked in full before anything is written: all or nothing,
        // without a rollback.
        let outcome = {
            let mut g = self.lock();
            rules::commit_all_with_rules(&mut *g, &commits, key)
                .now_or_never()
                .unwrap_or_else(|| {
                    Err(rules::BatchFailure::whole(Error::store(
                        "memory",
                        "a rule waited on the in-memory engine, which never blocks",
                    )))
                })
        };
        if let Ok(done) = &outcome {
            for d in done {
                self.publish(FeedEvent::Committed {
                    server: d.record.server_id,
                    revision: d.record.revision,
                });
            }
        }
        rules::batch_results(&commits, outcome)
    }

    async fn revisions(
        &self,
        id: ServerId,
        after: RevisionNo,
        limit: u64,
    ) -> Result<Vec<RevisionRecord>> {
        let take = usize::try_from(limit).unwrap_or(usize::MAX);
        let read = self
            .lock()
            .revisions
            .get(&id)
            .map(|v| {
                v.iter()
                    .filter(|r| r.revision > after)
                    .take(take)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let hook = self
            .after_revisions
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(f) = hook {
            f(self);
        }
        Ok(read)
    }
}

#[async_trait]
impl HostStateStore for MemoryStore {
    async fn set_applied(&self, id: ServerId, host: &str, revision: RevisionNo) -> Result<()> {
        let mut g = self.lock();
        g.applied.insert((id, host.to_owned()), revision);
        g.applied_state.remove(&(id, host.to_owned()));
        Ok(())
    }

    async fn set_applied_state(
        &self,
        id: ServerId,
        host: &str,
        state: &AppliedState,
    ) -> Result<()> {
        let mut g = self.lock();
        g.applied.insert((id, host.to_owned()), state.revision);
        g.applied_state.insert((id, host.to_owned()), *state);
        Ok(())
    }

    async fn applied_state(&self, id: ServerId, host: &str) -> Result<Option<AppliedState>> {
        Ok(self
            .lock()
            .applied_state
            .get(&(id, host.to_owned()))
            .copied())
    }

    async fn applied(&self, id: ServerId, host: &str) -> Result<Option<RevisionNo>> {
        Ok(self.lock().applied.get(&(id, host.to_owned())).copied())
    }

    async fn acquire_lease(&self, req: &LeaseRequest) -> Result<Lease> {
        let mut g = self.lock();
        let key = (req.server_id, req.host.clone());
        let granted = Lease::decide(g.leases.get(&key), req)?;
        g.leases.insert(key, granted.clone());
        Ok(granted)
    }

    async fn release_lease(&self, lease: &Lease, now: time::OffsetDateTime) -> Result<bool> {
        let mut g = self.lock();
        let key = (lease.server_id, lease.host.clone());
        let Some(released) = g
            .leases
            .get(&key)
            .and_then(|cur| Lease::released(cur, &lease.holder, lease.fencing, now))
        else {
            return Ok(false);
        };
        g.leases.insert(key, released);
        Ok(true)
    }

    async fn put_host_report(&self, report: &HostReport) -> Result<()> {
        let mut g = self.lock();
        let key = (report.server_id, report.host.clone());
        if let Some(l) = g.leases.get(&key) {
            l.admit(report)?;
        }
        g.reports.insert(key, report.clone());
        Ok(())
    }

    async fn host_reports(&self, id: ServerId) -> Result<Vec<HostReport>> {
        let g = self.lock();
        // Ordered by (server, host): this server's run, by host name.
        Ok(g.reports
            .iter()
            .filter(|((s, _), _)| *s == id)
            .map(|(_, r)| r.clone())
            .collect())
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
}

#[async_trait]
impl ChangeFeed for MemoryStore {
    async fn watch(&self) -> Result<BoxStream<'static, FeedEvent>> {
        let (tx, rx) = mpsc::unbounded();
        self.feeds().push(tx);
        Ok(rx.boxed())
    }
}

#[async_trait]
impl IdentityStore for MemoryStore {
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

    async fn commit_identity(
        &self,
        changes: Vec<IdentityChange>,
        audit: AuditEntry,
        key: &AuditKey,
    ) -> Result<AuditRecord> {
        let mut g = self.lock();
        // Apply to copies so that a failing change leaves nothing behind (the audit log
        // is moved, not copied: it is appended to only when every change succeeded).
        let mut scratch = Inner {
            users: g.users.clone(),
            roles: g.roles.clone(),
            tokens: g.tokens.clone(),
            audit: std::mem::take(&mut g.audit),
            audit_head: g.audit_head.clone(),
            ..Inner::default()
        };
        let r = run(rules::commit_identity_with_rules(
            &mut scratch,
            &changes,
            &audit,
            key,
        ));
        g.audit = scratch.audit;
        g.audit_head = scratch.audit_head;
        if r.is_ok() {
            g.users = scratch.users;
            g.roles = scratch.roles;
            g.tokens = scratch.tokens;
        }
        r
    }
}

#[async_trait]
impl AuditStore for MemoryStore {
    async fn append_audit(&self, entry: AuditEntry, key: &AuditKey) -> Result<AuditRecord> {
        let mut g = self.lock();
        run(rules::append_audit_with_rules(&mut *g, entry, key))
    }

    async fn audit_head(&self) -> Result<AuditHead> {
        Ok(self.lock().audit_head.clone())
    }

    async fn audit_key(&self) -> Result<Option<StoredAuditKey>> {
        Ok(self.lock().audit_key.clone())
    }

    async fn init_audit_key(&self, seal: &SealAuditKey<'_>) -> Result<(StoredAuditKey, bool)> {
        let mut g = self.lock();
        run(rules::init_audit_key_with_rules(&mut *g, seal))
    }

    async fn reseal_audit_key(
        &self,
        expected: &SealedSecret,
        resealed: &StoredAuditKey,
    ) -> Result<()> {
        let mut g = self.lock();
        run(rules::reseal_audit_key_with_rules(
            &mut *g, expected, resealed,
        ))
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

/// `snapshot` imported into an empty copy (which the caller swaps in whole, so a failure
/// leaves the store as it was), its peers indexed.
fn imported(snapshot: &Snapshot, mode: ImportMode) -> Result<Inner> {
    let mut fresh = Inner::default();
    run(rules::import_snapshot_with_rules(
        &mut fresh, "memory", snapshot, mode,
    ))?;
    for (id, st) in &fresh.servers {
        let idx = fresh.index.entry(*id).or_default();
        for (pid, p) in &st.peers {
            index_peer(idx, *pid, p);
        }
    }
    Ok(fresh)
}

#[async_trait]
impl SnapshotStore for MemoryStore {
    async fn export_snapshot(&self) -> Result<Snapshot> {
        Ok(self.lock().snapshot())
    }

    async fn import_snapshot(&self, snapshot: &Snapshot) -> Result<()> {
        let mut g = self.lock();
        if !run(g.is_empty())? {
            return Err(super::not_empty("memory"));
        }
        *g = imported(snapshot, ImportMode::IntoEmpty)?;
        Ok(())
    }

    async fn replace_with_snapshot(&self, snapshot: &Snapshot) -> Result<()> {
        let fresh = imported(snapshot, ImportMode::Replace)?;
        *self.lock() = fresh;
        // Heads may have gone back: watchers re-read everything, as after a lost
        // connection.
        self.publish(FeedEvent::Missed);
        Ok(())
    }
}

#[async_trait]
impl ThrottleStore for MemoryStore {
    async fn throttle_records(
        &self,
        keys: &[ThrottleKey],
        now: time::OffsetDateTime,
    ) -> Result<Vec<Option<ThrottleState>>> {
        let names = keys
            .iter()
            .map(ThrottleKey::store_key)
            .collect::<Result<Vec<_>>>()?;
        let g = self.throttle(&self.throttle_reads_fail)?;
        Ok(names
            .iter()
            .map(|k| g.live(k, now.unix_timestamp()))
            .collect())
    }

    async fn swap_throttle_record(
        &self,
        key: &ThrottleKey,
        expected: Option<&ThrottleState>,
        new: Option<&ThrottleRecord>,
        now: time::OffsetDateTime,
    ) -> Result<bool> {
        let name = key.store_key()?;
        let now = now.unix_timestamp();
        let mut g = self.throttle(&self.throttle_swaps_fail)?;
        if g.live(&name, now).as_ref() != expected {
            return Ok(false);
        }
        match new.filter(|r| r.expires_at.unix_timestamp() > now) {
            Some(r) => g.records.insert(name, *r),
            None => g.records.remove(&name),
        };
        g.prune(now);
        Ok(true)
    }
}
