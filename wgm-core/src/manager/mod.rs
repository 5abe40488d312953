//! The [`Manager`]: the one entry point every caller — Rust, Python, the CLI, the REST
//! server — goes through.
//!
//! Each operation takes a [`Principal`], is **authorized first** (including object-level
//! checks: a `user` touches only peers they own), validates its input, computes the
//! change against the cached state of the server (allocation included), and commits it
//! as **one revision** with its audit record through the [`Store`]'s compare-and-swap.
//! On a concurrent change it reloads what changed and tries again (bounded, with
//! jittered backoff), so N writers racing for a small pool end with exactly as many peers
//! as there were free addresses and clean [`Error::PoolExhausted`] for the rest.
//! Whoever applies follows the store's change feed ([`crate::store::ChangeFeed`]; from
//! here, [`Manager::watch`]).
//!
//! ```
//! # futures::executor::block_on(async {
//! use std::sync::Arc;
//! use wgm_core::manager::{Manager, NewServer, NewPeer};
//! use wgm_core::names::{ServerName, PeerName, InterfaceName};
//! use wgm_core::net::ListenPort;
//! use wgm_core::seal::{MasterKey, Sealer};
//! use wgm_core::store::MemoryStore;
//!
//! let builder = Manager::builder(Arc::new(MemoryStore::new()), Sealer::new(MasterKey::generate()));
//! let admin = builder.local_admin_capability().principal("root");
//! let m = builder.build();
//! let mut spec = NewServer::new(ServerName::new("office").unwrap(), InterfaceName::new("wg0").unwrap(), ListenPort::new(51820).unwrap());
//! spec.ipv4_pool = Some("10.8.0.0/24".parse().unwrap());
//! let server = m.create_server(&admin, spec).await.unwrap();
//! let peer = m.add_peer(&admin, server.id, NewPeer::new(PeerName::new("alice").unwrap())).await.unwrap();
//! assert!(peer.address_v6.is_some());
//! assert_eq!(peer.address_v4, Some("10.8.0.2".parse().unwrap()));
//! # });
//! ```

mod allocator;
mod apply;
mod clock;
mod history;
mod hosts;
mod identity;
mod limits;
mod local_admin;
mod peers;
mod policy;
mod render;
mod rotate;
mod servers;
mod status;
mod views;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

// Fair: a server's waiting operations get the lock in about the order they asked, so
// none starves under sustained load (futures' mutex wakes by slot, not by age).
use async_lock::Mutex as AsyncMutex;
use rand::Rng;
use time::OffsetDateTime;

pub use apply::{
    ApplyError, ApplyOptions, ApplyReport, FirewallOutcome, FirewallPlan, Host, ItemResult,
};
pub use clock::{Clock, ManualClock, SystemClock};
pub use history::{AuditVerification, DiffEntry};
#[cfg(feature = "auth")]
pub use identity::LoginOutcome;
pub use identity::{NewToken, NewUser, TokenView, UserUpdate, UserView};
pub use local_admin::LocalAdmin;
pub use peers::{AddrRequest, NewPeer, PeerUpdate};
pub use render::{client_wgquick, server_wgquick, ClientConfig};
pub use rotate::ResealReport;
pub use servers::{ImportOptions, NewServer, ServerUpdate};
pub use status::{PeerFirewallStatus, PeerStatus, Status};
pub use views::{PeerView, ServerView};

use apply::LiveSnapshot;

use crate::audit::AuditAction;
use crate::auth::password::PasswordParams;
use crate::integrity::{AuditKey, LegacyBound, StoredAuditKey};
use crate::ipam::DualStack;
use crate::model::UserId;
use crate::model::{
    Actor, AuditEntry, AuditOutcome, AuditRecord, Change, Commit, IdentityChange, RevisionNo,
    RevisionRecord, ServerId, ServerState,
};
use crate::rbac::{Action, Principal, PrincipalKind, Resource, Target};
use crate::seal::Sealer;
use crate::store::{LoginThrottle, PeerLookup, Store};
use crate::{Error, Result};

/// Tunables of a [`Manager`].
#[derive(Clone, Debug)]
pub struct ManagerConfig {
    /// How many times a mutation is retried after losing a race (default 64).
    pub max_attempts: u32,
    /// Default quarantine of released addresses, seconds (default 3600).
    pub default_quarantine_secs: u64,
    /// argon2id parameters for new password hashes.
    pub password_params: PasswordParams,
    /// Largest wg-quick file accepted by import, bytes (default 16 MiB).
    pub max_import_bytes: usize,
    /// How long, in seconds, [`Manager::apply`] with [`crate::reconcile::Verify::Auto`]
    /// may trust acknowledged deltas on top of its last full read of a host before it
    /// reads the host in full again (default 60).
    pub reverify_after_secs: u64,
    /// Password logins are throttled per account and per source with these policies
    /// (default: 5 free failures per account, 20 per source, then 1 s doubling to
    /// 15 minutes). The records live in the store, so every process on it shares one
    /// budget (see [`LoginThrottle`]).
    pub login_throttle: LoginThrottle,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        ManagerConfig {
            max_attempts: 64,
            default_quarantine_secs: 3600,
            password_params: PasswordParams::default(),
            max_import_bytes: 16 << 20,
            reverify_after_secs: 60,
            login_throttle: LoginThrottle::default(),
        }
    }
}

/// Builds a [`Manager`] from a store and a sealer, with optional clock and
/// configuration.
#[derive(Debug)]
pub struct ManagerBuilder {
    store: Arc<dyn Store>,
    sealer: Sealer,
    clock: Arc<dyn Clock>,
    config: ManagerConfig,
    #[cfg(feature = "auth")]
    jwt: Option<crate::auth::jwt::JwtIssuer>,
}

impl ManagerBuilder {
    /// Read time from `clock` (default: the system clock).
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Use `config`.
    #[must_use]
    pub fn config(mut self, config: ManagerConfig) -> Self {
        self.config = config;
        self
    }

    /// Issue and accept JWT access tokens with `issuer` (password logins need it).
    #[cfg(feature = "auth")]
    #[must_use]
    pub fn jwt(mut self, issuer: crate::auth::jwt::JwtIssuer) -> Self {
        self.jwt = Some(issuer);
        self
    }

    /// The manager.
    pub fn build(self) -> Manager {
        Manager {
            store: self.store,
            sealer: Arc::new(self.sealer),
            clock: self.clock,
            config: self.config,
            #[cfg(feature = "auth")]
            jwt: self.jwt,
            servers: std::sync::Mutex::new(HashMap::new()),
            live: std::sync::Mutex::new(HashMap::new()),
            light_uses: std::sync::Mutex::new(HashMap::new()),
            audit_key: std::sync::Mutex::new(None),
        }
    }
}

/// How many mutations of one server a manager runs from the durable allocator state
/// before it loads the server in full (a long-lived process amortizes the load).
const LIGHT_USES: u32 = 4;

/// How many revisions the durable allocator state may lag behind the head and still be
/// caught up from the log.
const LIGHT_CATCH_UP: u64 = 64;

/// Cached state of one server: its desired state at a revision and the address manager
/// built from it.
#[derive(Debug)]
pub(crate) struct Cached {
    pub(crate) state: ServerState,
    ipam: DualStack,
    index: PeerIndex,
    /// The server key and PSKs opened for the reconciler, kept across applies.
    pub(crate) opened: crate::reconcile::OpenedSecrets,
    /// The desired state derived from `state` for the reconciler (without any host's
    /// removed peers), kept up to date by the same changes as `state`; `None` until an
    /// apply needs it or after a change it cannot follow.
    pub(crate) desired: Option<crate::reconcile::DesiredHost>,
    /// `Some` for a **partial** cache (`Manager::light_cache`): the server's settings
    /// and an address manager rebuilt from the durable allocator state it holds, with
    /// no peers and an empty index. Only a mutation that opted in
    /// (`Manager::mutate_light`) ever sees one, and it is dropped after its commit.
    pub(crate) partial: Option<crate::ipam::HeldRuns>,
}

impl Cached {
    /// Let the derived desired state follow `changes`, just applied to `state`.
    fn follow(&mut self, changes: &[Change], sealer: &crate::seal::Sealer) {
        let Cached {
            state,
            opened,
            desired,
            ..
        } = self;
        if let Some(d) = desired.as_mut() {
            if !matches!(d.follow(state, changes, sealer, opened), Ok(true)) {
                *desired = None;
            }
        }
    }
}

/// Peers of a cached server by case-folded name and by public key, so that checks on
/// the write path do not scan (and re-normalise) every peer.
#[derive(Debug, Default)]
struct PeerIndex {
    names: HashMap<String, crate::model::PeerId>,
    keys: HashMap<crate::keys::PublicKey, crate::model::PeerId>,
}

impl PeerIndex {
    fn build(state: &ServerState) -> PeerIndex {
        let mut ix = PeerIndex {
            names: HashMap::with_capacity(state.peers.len()),
            keys: HashMap::with_capacity(state.peers.len()),
        };
        for p in state.peers.values() {
            ix.names.insert(p.name.key(), p.id);
            ix.keys.insert(p.public_key, p.id);
        }
        ix
    }

    fn apply(&mut self, change: &Change) {
        match change {
            Change::PeerAdded { peer } => {
                self.names.insert(peer.name.key(), peer.id);
                self.keys.insert(peer.public_key, peer.id);
            }
            Change::PeerRemoved { peer } => {
                self.names.remove(&peer.name.key());
                self.keys.remove(&peer.public_key);
            }
            Change::PeerUpdated { before, after } => {
                if before.name != after.name {
                    self.names.remove(&before.name.key());
                    self.names.insert(after.name.key(), after.id);
                }
                if before.public_key != after.public_key {
                    self.keys.remove(&before.public_key);
                    self.keys.insert(after.public_key, after.id);
                }
            }
            _ => {}
        }
    }
}

/// One server's place in the manager: its cache and the commits queued for it.
#[derive(Debug, Default)]
struct SlotInner {
    /// The cached server. Mutations compute under this lock; a grouped commit leaves
    /// it advanced past the store's head until its batch is written ([`Group`]).
    cache: AsyncMutex<Option<Cached>>,
    group: Group,
}

type Slot = Arc<SlotInner>;

/// Group commit of one server. A mutation of peers computed on the full cache applies
/// its changes to the cache at once (the next caller computes on top of them), queues
/// its commit here and releases the cache; whoever then holds `committer` writes every
/// queued commit in one call of [`ServerStore::commit_all`](crate::store::ServerStore::commit_all),
/// so that concurrent callers share one transaction (its round trips and its durable
/// flush) while each keeps its own revision and audit record. When any commit of a
/// batch does not land, the cache holds changes the store does not: the group is
/// `poisoned`, and the next holder of the cache drops it and loads it again.
#[derive(Debug, Default)]
struct Group {
    /// Held while queued commits are written (and to wait for them).
    committer: AsyncMutex<()>,
    queue: std::sync::Mutex<Queue>,
}

#[derive(Debug, Default)]
struct Queue {
    items: Vec<Queued>,
    /// Commits queued and not answered yet (queued or being written).
    pending: usize,
    /// A batch did not land: the cache holds changes the store does not.
    poisoned: bool,
}

/// Where a queued commit's result is left for its caller.
type Answer = Arc<std::sync::Mutex<Option<Result<crate::model::Committed>>>>;

#[derive(Debug)]
struct Queued {
    commit: Commit,
    answer: Answer,
}

impl Group {
    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether commits are queued or being written.
    fn busy(&self) -> bool {
        self.queue().pending > 0
    }

    /// Whether a batch failed since the last call (and clear it).
    fn take_poison(&self) -> bool {
        std::mem::take(&mut self.queue().poisoned)
    }

    /// Queue `commit`; `None` (nothing queued) when a batch failed meanwhile, so the
    /// cache it was computed on is not the store's.
    fn enqueue(&self, commit: Commit) -> Option<Answer> {
        let mut q = self.queue();
        if q.poisoned {
            return None;
        }
        let answer = Answer::default();
        q.items.push(Queued {
            commit,
            answer: answer.clone(),
        });
        q.pending += 1;
        Some(answer)
    }
}

/// The answers of a batch being written. Dropped before they are taken (the flush was
/// cancelled while the store was writing), it answers each commit that its outcome is
/// unknown and poisons the group: the batch may have landed or not, so the cache is
/// loaded again, and the callers decide as after any interrupted write.
struct Unanswered<'g> {
    group: &'g Group,
    answers: Option<Vec<Answer>>,
}

impl Drop for Unanswered<'_> {
    fn drop(&mut self) {
        let Some(answers) = self.answers.take() else {
            return;
        };
        let n = answers.len();
        for answer in answers {
            *answer
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Err(Error::store(
                "manager",
                "the write of this commit was interrupted: it may or may not have landed",
            )));
        }
        let mut q = self.group.queue();
        q.pending = q.pending.saturating_sub(n);
        q.poisoned = true;
    }
}

/// Take the result left in `answer`, if any.
fn take_answer(answer: &Answer) -> Option<Result<crate::model::Committed>> {
    answer
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take()
}

/// What a mutation closure returns: the changes of one revision and its description.
#[derive(Debug)]
struct Mutation<T> {
    changes: Vec<Change>,
    summary: String,
    action: AuditAction,
    object: String,
    details: serde_json::Value,
    output: T,
}

impl<T> Mutation<T> {
    /// The commit of this mutation on server `id` from revision `expected`, and its
    /// output.
    fn into_commit(
        self,
        id: ServerId,
        expected: RevisionNo,
        actor: crate::model::Actor,
        now: OffsetDateTime,
    ) -> (Commit, T) {
        let commit = Commit {
            server_id: id,
            expected,
            changes: self.changes,
            author: actor.clone(),
            at: now,
            summary: self.summary,
            audit: AuditEntry {
                at: now,
                actor,
                action: self.action,
                object: self.object,
                server_id: Some(id),
                revision: None,
                outcome: AuditOutcome::Success,
                details: self.details,
            },
        };
        (commit, self.output)
    }
}

/// The manager. Cheap to share (`Arc<Manager>`); all methods take `&self`.
#[derive(Debug)]
pub struct Manager {
    store: Arc<dyn Store>,
    sealer: Arc<Sealer>,
    clock: Arc<dyn Clock>,
    config: ManagerConfig,
    #[cfg(feature = "auth")]
    jwt: Option<crate::auth::jwt::JwtIssuer>,
    servers: std::sync::Mutex<HashMap<ServerId, Slot>>,
    live: std::sync::Mutex<HashMap<(ServerId, String), LiveSnapshot>>,
    /// Mutations run from the durable allocator state, per server ([`Manager::cold_uses`]).
    light_uses: std::sync::Mutex<HashMap<ServerId, u32>>,
    /// The store's audit key, opened on first use (module [`crate::integrity`]).
    audit_key: std::sync::Mutex<Option<Arc<OpenedAuditKey>>>,
}

/// The store's audit key, opened with the master key, and how it is stored (its sealed
/// form and the bound of what was written before it).
pub(crate) struct OpenedAuditKey {
    pub(crate) key: AuditKey,
    pub(crate) stored: StoredAuditKey,
}

impl std::fmt::Debug for OpenedAuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `AuditKey`'s Debug shows only its fingerprint.
        f.debug_struct("OpenedAuditKey")
            .field("key", &self.key)
            .field("legacy", &self.stored.legacy)
            .finish_non_exhaustive()
    }
}

impl OpenedAuditKey {
    /// The key with its bound, as the integrity checks take them.
    pub(crate) fn parts(&self) -> (&AuditKey, &LegacyBound) {
        (&self.key, &self.stored.legacy)
    }
}

impl Manager {
    /// Start building a manager over `store`, sealing secrets with `sealer`.
    pub fn builder(store: Arc<dyn Store>, sealer: Sealer) -> ManagerBuilder {
        ManagerBuilder {
            store,
            sealer,
            clock: Arc::new(SystemClock),
            config: ManagerConfig::default(),
            #[cfg(feature = "auth")]
            jwt: None,
        }
    }

    /// The store behind this manager. Crate-private: every caller goes through the
    /// manager's authorized methods (docs/design.md, invariant 3).
    pub(crate) fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The sealer (the reconciler opens server keys to apply them).
    pub(crate) fn sealer(&self) -> &Sealer {
        &self.sealer
    }

    /// Now, by the manager's clock.
    pub fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }

    fn actor(p: &Principal) -> Actor {
        let label = match p.kind() {
            PrincipalKind::Human => format!("user:{}", p.username()),
            PrincipalKind::ApiToken { token_id } => {
                format!("user:{} token:{token_id}", p.username())
            }
            PrincipalKind::Local { unix_user } => format!("local:{unix_user}"),
        };
        Actor {
            user_id: owner_of(p),
            label,
        }
    }

    /// Authorize `p` for `action` on `resource` at `target`. Every refusal is audited,
    /// reads included.
    pub(crate) async fn authorize(
        &self,
        p: &Principal,
        resource: Resource,
        action: Action,
        target: Target,
    ) -> Result<()> {
        let decision = crate::rbac::authorize(p, resource, action, target);
        self.audited(p, resource, action, target, decision).await
    }

    /// Like [`Manager::authorize`], but own-only permissions do not count
    /// ([`crate::rbac::authorize_elevated`]): for acts that need rights over other
    /// users' objects even when done to one's own. Every refusal is audited.
    pub(crate) async fn authorize_elevated(
        &self,
        p: &Principal,
        resource: Resource,
        action: Action,
        target: Target,
    ) -> Result<()> {
        let decision = crate::rbac::authorize_elevated(p, resource, action, target);
        self.audited(p, resource, action, target, decision).await
    }

    /// `decision` on `resource:action` at `target`, with a refusal audited.
    async fn audited(
        &self,
        p: &Principal,
        resource: Resource,
        action: Action,
        target: Target,
        decision: Result<()>,
    ) -> Result<()> {
        match decision {
            Ok(()) => Ok(()),
            Err(e) => Err(self.refusal(p, resource, action, target, e).await),
        }
    }

    /// Audit a refusal of `resource:action` on `target` and return `err`, the error the
    /// caller sees: a `PermissionDenied`, a quota refusal, or the `NotFound` by which
    /// the library hides an object the caller may not see. The record names the
    /// permission and the object; its details carry the reason (the error's text) only
    /// when the caller sees that text too, so the log of a hidden object says no more
    /// than `denied`.
    pub(crate) async fn refusal(
        &self,
        p: &Principal,
        resource: Resource,
        action: Action,
        target: Target,
        err: Error,
    ) -> Error {
        let details = match &err {
            Error::NotFound { .. } => serde_json::json!({ "answered": "not found" }),
            other => serde_json::json!({ "reason": other.to_string() }),
        };
        let entry = AuditEntry {
            at: self.now(),
            actor: Self::actor(p),
            action: AuditAction::refused(resource, action),
            object: describe_target(target),
            server_id: target.server.map(ServerId),
            revision: None,
            outcome: AuditOutcome::Denied,
            details,
        };
        // The refusal stands even if the audit store is down.
        if let Err(ae) = self.store_append_audit(entry).await {
            tracing::warn!(error = %ae, "could not audit a denied request");
        }
        err
    }

    /// Hide an object the caller may not see: audit the refusal of `resource:read` on
    /// `target` and answer [`Error::NotFound`] for `what` `id`, exactly as for an object
    /// that does not exist.
    pub(crate) async fn hidden(
        &self,
        p: &Principal,
        resource: Resource,
        target: Target,
        what: &'static str,
        id: impl std::fmt::Display,
    ) -> Error {
        self.refusal(
            p,
            resource,
            Action::Read,
            target,
            Error::not_found(what, id),
        )
        .await
    }

    fn slot(&self, id: ServerId) -> Slot {
        let mut g = self
            .servers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        g.entry(id).or_default().clone()
    }

    /// The slot of server `id` if this manager has one (never creates it).
    fn cached_slot(&self, id: ServerId) -> Option<Slot> {
        self.servers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&id)
            .cloned()
    }

    /// `f` on the whole cached server `id` at the head, if this manager holds it
    /// (checked against the head, as every read of it is); `None` if it does not, and
    /// then nothing is loaded.
    async fn if_cached<T>(&self, id: ServerId, f: impl FnOnce(&Cached) -> T) -> Result<Option<T>> {
        let Some(slot) = self.cached_slot(id) else {
            return Ok(None);
        };
        let mut g = self.lock_settled(&slot).await;
        if g.is_none() {
            return Ok(None);
        }
        if let Err(e) = self.refresh_cache(id, &mut g).await {
            if matches!(e, Error::NotFound { .. }) {
                drop(g);
                self.forget(id);
            }
            return Err(e);
        }
        Ok(g.as_ref().map(f))
    }

    /// One peer of server `id` at the head, found by `by`: from this manager's cache when
    /// it holds the whole server ([`Manager::if_cached`]), else by one indexed store
    /// read, whatever the server's size. `Ok(None)` when the server has no such peer;
    /// [`Error::NotFound`] naming the server when it does not exist.
    pub(crate) async fn peer_at_head(
        &self,
        id: ServerId,
        by: PeerLookup<'_>,
    ) -> Result<Option<crate::model::Peer>> {
        let cached = self
            .if_cached(id, |c| {
                let pid = match by {
                    PeerLookup::Id(pid) => Some(pid),
                    PeerLookup::Name(n) => c.index.names.get(&n.key()).copied(),
                    PeerLookup::Key(k) => c.index.keys.get(k).copied(),
                };
                pid.and_then(|pid| c.state.peers.get(&pid)).cloned()
            })
            .await?;
        if let Some(found) = cached {
            return Ok(found);
        }
        match self.store.find_peer(id, by).await? {
            Some(p) => Ok(Some(p)),
            None if self.store.head(id).await?.is_some() => Ok(None),
            None => Err(Error::not_found("server", id)),
        }
    }

    /// Server `id`'s settings at the head (in a state that holds **no peers**) and its
    /// peer `peer`: from the cache as [`Manager::peer_at_head`], else by two indexed
    /// reads (the settings, then the peer).
    pub(crate) async fn settings_and_peer(
        &self,
        id: ServerId,
        peer: crate::model::PeerId,
    ) -> Result<(ServerState, crate::model::Peer)> {
        let settings = |server: crate::model::Server, revision| ServerState {
            server,
            peers: std::collections::BTreeMap::new(),
            revision,
        };
        let cached = self
            .if_cached(id, |c| {
                c.state.peers.get(&peer).map(|x| {
                    (
                        settings(c.state.server.clone(), c.state.revision),
                        x.clone(),
                    )
                })
            })
            .await?;
        let found = if let Some(found) = cached {
            found
        } else {
            let (server, revision) = self
                .store
                .load_server_settings(id)
                .await?
                .ok_or_else(|| Error::not_found("server", id))?;
            self.store
                .find_peer(id, PeerLookup::Id(peer))
                .await?
                .map(|x| (settings(server, revision), x))
        };
        found.ok_or_else(|| Error::not_found("peer", peer))
    }

    fn forget(&self, id: ServerId) {
        self.servers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&id);
    }

    /// Build the address manager of a server from its state: pools, the server's own
    /// addresses, reservations, every peer's addresses (enabled or not: a disabled peer
    /// keeps its addresses) and the persisted quarantine.
    fn build_ipam(state: &ServerState, now: OffsetDateTime) -> Result<DualStack> {
        let s = &state.server;
        let mut ipam = DualStack::new(
            s.ipv6_pool,
            s.ipv4_pool,
            s.delegation.map(|d| (d.pool, d.prefix_len)),
        )?;
        ipam.reserve(IpAddr::V6(s.address_v6), now)?;
        if let Some(a) = s.address_v4 {
            ipam.reserve(IpAddr::V4(a), now)?;
        }
        for a in &s.reserved {
            // A reservation outside the pools has nothing to hold back.
            if ipam.covers(*a) {
                ipam.reserve(*a, now)?;
            }
        }
        for p in state.peers.values() {
            for a in p
                .address_v6
                .map(IpAddr::V6)
                .into_iter()
                .chain(p.address_v4.map(IpAddr::V4))
            {
                // Imported peers may carry addresses outside the pools; those need no
                // holding. Inside the pool the store's uniqueness holds, so a failure
                // (an address held twice) is an inconsistent state: an error.
                if ipam.covers(a) {
                    ipam.claim(a, "peer.address", now)?;
                }
            }
            if let Some(pfx) = p.delegated_prefix.filter(|n| ipam.covers_prefix(*n)) {
                ipam.claim_prefix(pfx, "peer.prefix", now)?;
            }
        }
        for q in &s.quarantine {
            if q.until > now
                && ipam.is_free(q.addr, now)
                && ipam.claim(q.addr, "quarantine", now).is_ok()
            {
                ipam.release_with_quarantine(q.addr, q.until);
            }
        }
        Ok(ipam)
    }

    /// Bring the cached address manager in line with committed changes, in place:
    /// added peers' addresses are held (taking them out of quarantine when a rollback
    /// gives them back), removed peers' addresses go into quarantine. Only changes that
    /// move addresses of an existing peer or change the pools rebuild it (O(n log n)).
    fn sync_ipam(c: &mut Cached, changes: &[Change], now: OffsetDateTime) -> Result<()> {
        let addrs = |p: &crate::model::Peer| -> Vec<IpAddr> {
            p.address_v6
                .map(IpAddr::V6)
                .into_iter()
                .chain(p.address_v4.map(IpAddr::V4))
                .collect()
        };
        let secs = i64::try_from(c.state.server.quarantine_secs).unwrap_or(i64::MAX / 2);
        let until = now + time::Duration::seconds(secs);
        let mut rebuild = false;
        for ch in changes {
            match ch {
                Change::PeerAdded { peer } => {
                    for a in addrs(peer) {
                        // Outside the pools there is nothing to hold; an address that
                        // is not free is held already (by the mutation that added it).
                        if !c.ipam.restore_quarantined(a) && c.ipam.is_free(a, now) {
                            c.ipam.claim(a, "peer.address", now)?;
                        }
                    }
                    if let Some(pfx) = peer.delegated_prefix {
                        if !c.ipam.restore_quarantined_prefix(pfx) && c.ipam.covers_prefix(pfx) {
                            match c.ipam.claim_prefix(pfx, "peer.prefix", now) {
                                // The mutation that added the peer claimed it already.
                                Err(Error::Conflict { .. })
                                    if prefix_held_only_by(&c.state, peer.id, pfx) => {}
                                other => other?,
                            }
                        }
                    }
                }
                Change::PeerRemoved { peer } => {
                    for a in addrs(peer) {
                        if secs > 0 {
                            c.ipam.release_with_quarantine(a, until);
                        } else {
                            c.ipam.release(a);
                        }
                    }
                    if let Some(pfx) = peer.delegated_prefix {
                        if secs > 0 {
                            c.ipam.release_prefix_with_quarantine(pfx, until);
                        } else {
                            c.ipam.release_prefix(pfx);
                        }
                    }
                }
                Change::PeerUpdated { before, after } => {
                    rebuild |= addrs(before) != addrs(after)
                        || before.delegated_prefix != after.delegated_prefix;
                }
                Change::ServerUpdated { before, after } => {
                    rebuild |= before.ipv6_pool != after.ipv6_pool
                        || before.ipv4_pool != after.ipv4_pool
                        || before.address_v6 != after.address_v6
                        || before.address_v4 != after.address_v4
                        || before.delegation != after.delegation
                        || before.reserved != after.reserved;
                }
                _ => rebuild = true,
            }
        }
        if rebuild {
            c.ipam = Self::build_ipam(&c.state, now)?;
        }
        Ok(())
    }

    /// How many mutations of server `id` this manager ran from the durable allocator
    /// state (after [`LIGHT_USES`], a long-lived process loads the server once instead).
    fn cold_uses(&self, id: ServerId) -> u32 {
        self.light_uses
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&id)
            .copied()
            .unwrap_or(0)
    }

    fn count_cold_use(&self, id: ServerId) {
        *self
            .light_uses
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(id)
            .or_insert(0) += 1;
    }

    /// A partial cache of server `id` ([`Cached::partial`]): its settings at the head,
    /// an address manager rebuilt from the durable allocator state, caught up from the
    /// log when a few revisions behind, and the peers `peers` names (those that exist),
    /// read after the head (so that a peer changed since makes the commit's
    /// compare-and-swap fail rather than commit a stale `before`). `None` when there is
    /// no such state, it is too far behind or does not fit, or the server delegates
    /// prefixes (whose pool the state does not hold).
    async fn light_cache(
        &self,
        id: ServerId,
        peers: &[crate::model::PeerId],
    ) -> Result<Option<Cached>> {
        let Some((server, head)) = self.store.load_server_settings(id).await? else {
            return Err(Error::not_found("server", id));
        };
        if server.delegation.is_some() {
            return Ok(None);
        }
        let Some((at, mut held)) = self.store.allocator_state(id).await? else {
            return Ok(None);
        };
        if at > head || head.0 - at.0 > LIGHT_CATCH_UP {
            return Ok(None);
        }
        if at < head {
            let revs = self.store.revisions(id, at, head.0 - at.0).await?;
            let mut want = at.next();
            for rec in &revs {
                let next = (rec.revision == want)
                    .then(|| allocator::held_after(&held, &server, &rec.changes))
                    .flatten();
                let Some(next) = next else {
                    return Ok(None);
                };
                held = next;
                want = want.next();
            }
            if want != head.next() {
                return Ok(None);
            }
        }
        let mut state = ServerState {
            server,
            peers: std::collections::BTreeMap::new(),
            revision: head,
        };
        let mut ipam = Self::build_ipam(&state, self.now())?;
        if !ipam.hold_runs(&held) {
            return Ok(None);
        }
        for pid in peers {
            if let Some(p) = self.store.find_peer(id, PeerLookup::Id(*pid)).await? {
                state.peers.insert(p.id, p);
            }
        }
        let index = PeerIndex::build(&state);
        Ok(Some(Cached {
            state,
            ipam,
            index,
            opened: crate::reconcile::OpenedSecrets::default(),
            desired: None,
            partial: Some(held),
        }))
    }

    /// After a commit from a partial cache: the allocator state of the new revision.
    async fn keep_allocator_state(
        &self,
        id: ServerId,
        server: &crate::model::Server,
        held: Option<crate::ipam::HeldRuns>,
        rec: &RevisionRecord,
    ) {
        let Some(held) = held.and_then(|h| allocator::held_after(&h, server, &rec.changes)) else {
            return;
        };
        if let Err(e) = self
            .store
            .put_allocator_state(id, rec.revision, &held)
            .await
        {
            tracing::debug!(server = %id, error = %e, "could not store the allocator state");
        }
    }

    /// Store the allocator state after `rec`, committed against the full `state` (once,
    /// when none was usable).
    async fn seed_allocator_state(&self, state: &ServerState, rec: &RevisionRecord) {
        let held = match allocator::held_of(state) {
            Ok(h) => h,
            Err(e) => {
                tracing::debug!(error = %e, "no allocator state for this server");
                return;
            }
        };
        self.keep_allocator_state(state.server.id, &state.server, Some(held), rec)
            .await;
    }

    /// Make sure the slot holds the server at the store's head; load or catch up.
    async fn refresh_cache(&self, id: ServerId, cached: &mut Option<Cached>) -> Result<()> {
        let head = self.store.head(id).await?;
        let Some(head) = head else {
            *cached = None;
            return Err(Error::not_found("server", id));
        };
        if let Some(c) = cached.as_mut() {
            if c.state.revision == head {
                return Ok(());
            }
            // Catch up by replaying the revisions we missed (a delta load), at the cost
            // of what they change: the address manager and the indexes follow the
            // changes as after a commit of this process (rebuilt only for changes that
            // move addresses or pools).
            let delta = self.store.revisions(id, c.state.revision, u64::MAX).await?;
            let mut ok = !delta.is_empty();
            for rec in &delta {
                for ch in &rec.changes {
                    if c.state.apply_change(ch).is_err() {
                        ok = false;
                    }
                    c.index.apply(ch);
                }
                c.state.revision = rec.revision;
            }
            if ok && c.state.revision == head {
                let changes: Vec<Change> = delta.into_iter().flat_map(|rec| rec.changes).collect();
                if Self::sync_ipam(c, &changes, self.now()).is_err() {
                    c.ipam = Self::build_ipam(&c.state, self.now())?;
                }
                c.follow(&changes, &self.sealer);
                return Ok(());
            }
        }
        let state = self
            .store
            .load_server(id)
            .await?
            .ok_or_else(|| Error::not_found("server", id))?;
        let ipam = Self::build_ipam(&state, self.now())?;
        let index = PeerIndex::build(&state);
        *cached = Some(Cached {
            state,
            ipam,
            index,
            opened: crate::reconcile::OpenedSecrets::default(),
            desired: None,
            partial: None,
        });
        Ok(())
    }

    /// Run `f` on the fresh state of a server (read-only).
    pub(crate) async fn read_server<T>(
        &self,
        id: ServerId,
        f: impl FnOnce(&ServerState) -> Result<T>,
    ) -> Result<T> {
        self.with_cached(id, |c| f(&c.state)).await
    }

    /// Run `f` on the fresh cached server; `f` must not change its state (only what is
    /// derived from it, such as opened secrets).
    pub(crate) async fn with_cached<T>(
        &self,
        id: ServerId,
        f: impl FnOnce(&mut Cached) -> Result<T>,
    ) -> Result<T> {
        let slot = self.slot(id);
        let mut g = self.lock_settled(&slot).await;
        if let Err(e) = self.refresh_cache(id, &mut g).await {
            if matches!(e, Error::NotFound { .. }) {
                drop(g);
                self.forget(id);
            }
            return Err(e);
        }
        match g.as_mut() {
            Some(c) => f(c),
            None => Err(Error::not_found("server", id)),
        }
    }

    /// The core write path: compute a mutation on the cached state, commit it with
    /// compare-and-swap, retry on a lost race. `f` may allocate on the cached address
    /// manager; if the commit does not land, the cache is dropped and rebuilt, so nothing
    /// allocated stays held (F3).
    async fn mutate<T>(
        &self,
        p: &Principal,
        id: ServerId,
        f: impl FnMut(&mut Cached, OffsetDateTime) -> Result<Mutation<T>>,
    ) -> Result<(RevisionRecord, T)> {
        self.mutate_if_any(p, id, f)
            .await?
            .ok_or_else(|| Error::invalid("change", "nothing to change"))
    }

    /// [`Manager::mutate`] for sweeps that may find nothing to do: `Ok(None)` when `f`
    /// produced no change (nothing is committed), so that callers need not tell
    /// "nothing to do" apart from real errors by their kind.
    async fn mutate_if_any<T>(
        &self,
        p: &Principal,
        id: ServerId,
        f: impl FnMut(&mut Cached, OffsetDateTime) -> Result<Mutation<T>>,
    ) -> Result<Option<(RevisionRecord, T)>> {
        self.mutate_with(p, id, None, f).await
    }

    /// The commit loop of [`Manager::mutate`] and [`Manager::mutate_if_any`], and with
    /// `light` of a mutation that needs only the server's settings, its address manager
    /// and the peers `light` names (adding peers without routed networks: none;
    /// changing or removing one peer: that one): in a process that has not loaded the
    /// server, `f` then runs on a partial cache built from the durable allocator state
    /// and those peers' rows ([`Manager::light_cache`]), so its cost does not grow with
    /// the number of peers, and the store's uniqueness checks stand in for the peer
    /// index. After a few such mutations of one server (a long-lived process), or
    /// whenever that state is missing, stale beyond the log's help or does not fit, the
    /// full cache is used.
    async fn mutate_with<T>(
        &self,
        p: &Principal,
        id: ServerId,
        light: Option<&[crate::model::PeerId]>,
        mut f: impl FnMut(&mut Cached, OffsetDateTime) -> Result<Mutation<T>>,
    ) -> Result<Option<(RevisionRecord, T)>> {
        let slot = self.slot(id);
        let mut g = slot.cache.lock().await;
        let mut attempt: u32 = 0;
        // Whether the durable allocator state was looked for and not usable: the full
        // path then stores a fresh one after its commit.
        let mut seed = false;
        let mut light = light;
        loop {
            attempt += 1;
            if slot.group.take_poison() {
                *g = None;
            }
            // On the full cache and without a precondition on the head, a change of
            // peers is grouped with those of concurrent callers (`Group`): it computes
            // on the cache as advanced by the commits queued before it. Everything else
            // first waits for those to be written.
            let grouped =
                p.required_revisions().is_none() && g.as_ref().is_some_and(|c| c.partial.is_none());
            if grouped {
                // Nothing queued: the cache is the store's as of our last commit; check
                // it against the head as always. Queued commits: the compare-and-swap
                // of their batch checks it.
                if !slot.group.busy() {
                    self.refresh_cache(id, &mut g).await?;
                }
            } else {
                self.settle(&slot, &mut g).await;
                if let Some(peers) =
                    light.filter(|_| g.is_none() && self.cold_uses(id) < LIGHT_USES)
                {
                    if let Some(c) = self.light_cache(id, peers).await? {
                        *g = Some(c);
                    } else {
                        seed = true;
                        light = None;
                    }
                }
                if g.as_ref().is_none_or(|c| c.partial.is_none()) {
                    self.refresh_cache(id, &mut g).await?;
                }
            }
            let cached = g.as_mut().ok_or_else(|| Error::not_found("server", id))?;
            let now = self.now();
            let expected = cached.state.revision;
            if let Some(want) = p.required_revisions() {
                if !want.contains(&expected.0) {
                    if cached.partial.is_some() {
                        // A partial cache may trail the head: decide on the full one.
                        *g = None;
                        light = None;
                        continue;
                    }
                    return Err(Error::conflict_of(
                        crate::error::ConflictKind::StaleRevision {
                            server: id.0,
                            expected: want.first().copied().unwrap_or(0),
                            actual: expected.0,
                        },
                    ));
                }
            }
            let m = match f(cached, now) {
                Ok(m) => m,
                Err(e) => {
                    // The closure may have allocated before failing: rebuild.
                    *g = None;
                    return Err(e);
                }
            };
            if m.changes.is_empty() {
                *g = None;
                return Ok(None);
            }
            if grouped && m.changes.iter().all(Change::is_peer_change) {
                // Advance the cache now, so that the next caller computes on top.
                let mut ok = true;
                for ch in &m.changes {
                    ok &= cached.state.apply_change(ch).is_ok();
                    cached.index.apply(ch);
                }
                cached.state.revision = expected.next();
                ok = ok && Self::sync_ipam(cached, &m.changes, now).is_ok();
                cached.follow(&m.changes, &self.sealer);
                if !ok {
                    // Rebuilt by the next caller, once the queue is written.
                    *g = None;
                }
                let (commit, output) = m.into_commit(id, expected, Self::actor(p), now);
                let Some(answer) = slot.group.enqueue(commit) else {
                    // A batch failed while we computed: our cache was not the store's.
                    *g = None;
                    continue;
                };
                drop(g);
                match self.await_answer(&slot.group, &answer).await {
                    Ok(done) => return Ok(Some((done.record, output))),
                    Err(e) if e.is_stale_revision() && attempt < self.config.max_attempts => {
                        tracing::debug!(server = %id, attempt, "a grouped commit did not land; retrying");
                        self.clock.sleep(backoff(attempt)).await;
                        g = slot.cache.lock().await;
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
            if grouped {
                // A change of the server itself: alone, once the queue is written.
                self.settle(&slot, &mut g).await;
                if g.is_none() {
                    continue;
                }
            }
            let (commit, output) = m.into_commit(id, expected, Self::actor(p), now);
            match self.store_commit(commit).await {
                Ok(rec) if g.as_ref().is_some_and(|c| c.partial.is_some()) => {
                    tracing::debug!(server = %id, revision = %rec.revision, summary = %rec.summary, "committed from the durable allocator state");
                    if let Some(c) = g.take() {
                        self.keep_allocator_state(id, &c.state.server, c.partial, &rec)
                            .await;
                    }
                    drop(g);
                    self.count_cold_use(id);
                    return Ok(Some((rec, output)));
                }
                Ok(rec) => {
                    tracing::debug!(server = %id, revision = %rec.revision, summary = %rec.summary, changes = rec.changes.len(), "committed");
                    tracing::trace!(changes = ?rec.changes, "committed changes");
                    if seed {
                        // The runs of the state committed against, followed through the
                        // commit's changes (no copy of the state).
                        if let Some(c) = g.as_ref().filter(|c| c.state.revision == expected) {
                            self.seed_allocator_state(&c.state, &rec).await;
                        }
                    }
                    let deleted = rec
                        .changes
                        .iter()
                        .any(|c| matches!(c, Change::ServerDeleted { .. }));
                    if deleted {
                        *g = None;
                    } else if let Some(c) = g.as_mut() {
                        let mut ok = true;
                        for ch in &rec.changes {
                            ok &= c.state.apply_change(ch).is_ok();
                            c.index.apply(ch);
                        }
                        c.state.revision = rec.revision;
                        ok = ok && Self::sync_ipam(c, &rec.changes, now).is_ok();
                        c.follow(&rec.changes, &self.sealer);
                        if !ok {
                            *g = None;
                        }
                    }
                    drop(g);
                    if deleted {
                        self.forget(id);
                    }
                    return Ok(Some((rec, output)));
                }
                // From a partial cache, a value the store finds taken is either a
                // name or key the request repeats (the peer index would have said so,
                // naming the first of the request's) or an address the durable state
                // missed: do it again on the full cache, which answers as always.
                Err(
                    Error::AlreadyExists { .. }
                    | Error::Conflict {
                        kind: crate::error::ConflictKind::Taken(_),
                        ..
                    },
                ) if g.as_ref().is_some_and(|c| c.partial.is_some()) => {
                    tracing::debug!(server = %id, "a value was taken; using the full state");
                    *g = None;
                    light = None;
                    seed = true;
                }
                // The store contract: only a stale revision is a lost compare-and-swap
                // that fresh state can cure; a taken value or anything else is final.
                Err(e) if e.is_stale_revision() => {
                    *g = None;
                    if attempt >= self.config.max_attempts {
                        return Err(e);
                    }
                    if p.required_revisions().is_some() {
                        // Under a precondition the next attempt only reads the new
                        // head to refuse (or, for a list of revisions, to match it):
                        // no reason to wait.
                        continue;
                    }
                    tracing::debug!(server = %id, attempt, "lost a commit race; retrying");
                    self.clock.sleep(backoff(attempt)).await;
                }
                Err(e) => {
                    *g = None;
                    return Err(e);
                }
            }
        }
    }

    /// Record observed peer statistics in the store and in the cached state (they are
    /// not revisions, so the cache would not notice them otherwise).
    pub(crate) async fn record_stats(
        &self,
        id: ServerId,
        stats: &[(crate::model::PeerId, crate::model::PeerStats)],
    ) -> Result<()> {
        self.store.update_peer_stats(id, stats).await?;
        let slot = self.slot(id);
        let mut g = self.lock_settled(&slot).await;
        if let Some(c) = g.as_mut() {
            for (pid, st) in stats {
                if let Some(p) = c.state.peers.get_mut(pid) {
                    p.stats = *st;
                }
            }
        }
        Ok(())
    }

    /// The store's audit key, opened: from the cache, else from the store, created there
    /// first if the store has none (race-safe: the store keeps the first key written).
    /// Every write path takes it; a key that does not open (wrong master key, or its
    /// sealed value or bound changed) fails the write with [`Error::Sealed`].
    pub(crate) async fn audit_key(&self) -> Result<Arc<OpenedAuditKey>> {
        if let Some(k) = self.cached_audit_key() {
            return Ok(k);
        }
        let fresh = AuditKey::generate();
        let sealer = &self.sealer;
        let seal = |legacy: &LegacyBound| {
            StoredAuditKey::seal(sealer, &fresh, legacy.clone()).map(|s| s.sealed)
        };
        let (stored, created) = self.store.init_audit_key(&seal).await?;
        let opened = self.open_audit_key(stored)?;
        if created {
            let legacy = &opened.stored.legacy;
            if legacy.audit_seq > 0 || !legacy.revisions.is_empty() {
                tracing::warn!(
                    audit_key = %opened.key.id(),
                    legacy_records = legacy.audit_seq,
                    legacy_servers = legacy.revisions.len(),
                    "created the store's audit key over existing unkeyed records: they are accepted as written before the key; on a store created by this version this means the key was removed"
                );
            } else {
                tracing::info!(audit_key = %opened.key.id(), "created the store's audit key");
            }
        }
        Ok(opened)
    }

    /// The store's audit key, opened, if it has one; never creates it (read paths must
    /// not write).
    pub(crate) async fn existing_audit_key(&self) -> Result<Option<Arc<OpenedAuditKey>>> {
        if let Some(k) = self.cached_audit_key() {
            return Ok(Some(k));
        }
        match self.store.audit_key().await? {
            Some(stored) => self.open_audit_key(stored).map(Some),
            None => Ok(None),
        }
    }

    fn cached_audit_key(&self) -> Option<Arc<OpenedAuditKey>> {
        self.audit_key
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Open a stored key and cache it.
    fn open_audit_key(&self, stored: StoredAuditKey) -> Result<Arc<OpenedAuditKey>> {
        let key = stored.open(&self.sealer).map_err(|e| match e {
            Error::Sealed { reason } => Error::sealed(format!(
                "{reason} (the store's audit key: wrong master key, or its sealed value or bound was changed)"
            )),
            other => other,
        })?;
        let opened = Arc::new(OpenedAuditKey { key, stored });
        *self
            .audit_key
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(opened.clone());
        Ok(opened)
    }

    /// Replace the cached key's stored form (after re-sealing it).
    pub(crate) fn recache_audit_key(&self, stored: StoredAuditKey) -> Result<()> {
        self.open_audit_key(stored).map(drop)
    }

    /// Log the audit log's new head, so that a log collector keeps a copy of it outside
    /// the store (what `wgm audit --verify --expect` checks against).
    fn log_audit_head(rec: &AuditRecord) {
        tracing::info!(
            audit_seq = rec.seq,
            audit_hash = %rec.hash,
            audit_head = %rec.head(),
            "audit head"
        );
    }

    /// Lock the cache of a server's slot once the commits queued for it are written: the
    /// cache then holds nothing the store does not (or nothing at all).
    async fn lock_settled<'a>(
        &self,
        slot: &'a SlotInner,
    ) -> async_lock::MutexGuard<'a, Option<Cached>> {
        let mut g = slot.cache.lock().await;
        self.settle(slot, &mut g).await;
        g
    }

    /// With the cache `g` of `slot` locked: write the commits queued for it, and drop
    /// the cache if a batch did not land.
    async fn settle(&self, slot: &SlotInner, g: &mut Option<Cached>) {
        if slot.group.busy() {
            // No one queues while the cache is held: once the committer is ours, what
            // is queued is all there is.
            let _turn = slot.group.committer.lock().await;
            self.flush(&slot.group).await;
        }
        if slot.group.take_poison() {
            *g = None;
        }
    }

    /// Write every commit queued in `group` in one [`Store::commit_all`] and leave each
    /// its result; the caller holds `group.committer`. When one did not land, the
    /// commits queued since (computed on the same advanced cache) are answered as stale
    /// at once and the group is poisoned.
    async fn flush(&self, group: &Group) {
        let items = std::mem::take(&mut group.queue().items);
        if items.is_empty() {
            return;
        }
        let n = items.len();
        let (commits, answers): (Vec<Commit>, Vec<Answer>) =
            items.into_iter().map(|q| (q.commit, q.answer)).unzip();
        // Answers every commit of the batch if this future is dropped before it does.
        let mut unanswered = Unanswered {
            group,
            answers: Some(answers),
        };
        let results = match self.audit_key().await {
            Ok(key) => self.store.commit_all(commits, &key.key).await,
            // The first gets the error; the others are retried and meet it themselves.
            Err(error) => crate::store::rules::batch_results(
                &commits,
                Err(crate::store::rules::BatchFailure { at: Some(0), error }),
            ),
        };
        let mut failed = false;
        let mut results = results.into_iter();
        for answer in unanswered.answers.take().unwrap_or_default() {
            let r = results.next().unwrap_or_else(|| {
                Err(Error::store(
                    "store",
                    "the store answered fewer commits than it was given",
                ))
            });
            match &r {
                Ok(c) => {
                    tracing::debug!(server = %c.record.server_id, revision = %c.record.revision, summary = %c.record.summary, batch = n, "committed");
                    Self::log_audit_head(&c.audit);
                }
                Err(_) => failed = true,
            }
            *answer
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(r);
        }
        let mut q = group.queue();
        q.pending = q.pending.saturating_sub(n);
        if failed {
            q.poisoned = true;
            let later = std::mem::take(&mut q.items);
            q.pending = q.pending.saturating_sub(later.len());
            for item in later {
                let actual = item.commit.expected.0.saturating_sub(1);
                *item
                    .answer
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) =
                    Some(Err(crate::store::rules::not_landed(&item.commit, actual)));
            }
        }
    }

    /// Wait for the result of a queued commit, writing the queue when it is our turn.
    async fn await_answer(
        &self,
        group: &Group,
        answer: &Answer,
    ) -> Result<crate::model::Committed> {
        let _turn = group.committer.lock().await;
        if let Some(r) = take_answer(answer) {
            return r;
        }
        // Not answered while the committer is ours: still queued, so answered by this
        // flush.
        self.flush(group).await;
        take_answer(answer).unwrap_or_else(|| {
            Err(Error::store(
                "manager",
                "a queued commit was neither written nor answered",
            ))
        })
    }

    /// Commit through the store under the audit key, and log the new audit head.
    pub(crate) async fn store_commit(&self, commit: Commit) -> Result<RevisionRecord> {
        let key = self.audit_key().await?;
        let c = self.store.commit(commit, &key.key).await?;
        Self::log_audit_head(&c.audit);
        Ok(c.record)
    }

    /// Append an audit record under the audit key, and log the new audit head.
    pub(crate) async fn store_append_audit(&self, entry: AuditEntry) -> Result<AuditRecord> {
        let key = self.audit_key().await?;
        let rec = self.store.append_audit(entry, &key.key).await?;
        Self::log_audit_head(&rec);
        Ok(rec)
    }

    /// Commit identity changes under the audit key, and log the new audit head.
    pub(crate) async fn store_commit_identity(
        &self,
        changes: Vec<IdentityChange>,
        entry: AuditEntry,
    ) -> Result<()> {
        let key = self.audit_key().await?;
        let rec = self.store.commit_identity(changes, entry, &key.key).await?;
        Self::log_audit_head(&rec);
        Ok(())
    }

    /// Append an audit record for an action that changes no state (a secret export).
    pub(crate) async fn audit_only(
        &self,
        p: &Principal,
        action: AuditAction,
        object: String,
        server_id: Option<ServerId>,
        details: serde_json::Value,
    ) -> Result<()> {
        let entry = AuditEntry {
            at: self.now(),
            actor: Self::actor(p),
            action,
            object,
            server_id,
            revision: None,
            outcome: AuditOutcome::Success,
            details,
        };
        self.store_append_audit(entry).await.map(|_| ())
    }
}

/// How long to wait before retry `attempt`: jittered exponential backoff, 0 ms .. 50 ms
/// (`2^attempt` ms, capped). The manager waits it out on its [`Clock`]
/// ([`Clock::sleep`]), so the core itself never sleeps or spawns anything.
fn backoff(attempt: u32) -> Duration {
    let cap_ms = 1u64 << attempt.min(6);
    Duration::from_millis(rand::thread_rng().gen_range(0..=cap_ms.min(50)))
}

/// Whether `pfx` is delegated to peer `id` and to no other peer of `state`.
fn prefix_held_only_by(state: &ServerState, id: crate::model::PeerId, pfx: ipnet::Ipv6Net) -> bool {
    state
        .peers
        .values()
        .filter(|p| p.delegated_prefix == Some(pfx))
        .all(|p| p.id == id)
}

/// The user a principal acts as, for ownership: `None` for a local administrator.
pub(crate) fn owner_of(p: &Principal) -> Option<UserId> {
    if p.is_local() {
        None
    } else {
        Some(UserId(p.user_id()))
    }
}

fn describe_target(t: Target) -> String {
    match (t.server, t.owner) {
        (Some(s), Some(o)) => format!("server/{s} (owner {o})"),
        (Some(s), None) => format!("server/{s}"),
        (None, Some(o)) => format!("user/{o}"),
        (None, None) => "global".to_owned(),
    }
}

/// The revision number a commit that creates a server lands at.
pub const FIRST_REVISION: RevisionNo = RevisionNo(1);

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::names::{InterfaceName, PeerName, ServerName};
    use crate::net::ListenPort;
    use crate::seal::MasterKey;
    use crate::store::MemoryStore;
    use futures::executor::block_on;

    /// A manager on a `MemoryStore` with a local administrator and one dual-stack
    /// server `s` on `wg0` (IPv6 ULA, IPv4 `10.8.0.0/24`, /64 delegations from `fd77::/48`),
    /// whose quarantine is `quarantine_secs`. Shared by the manager's unit tests.
    pub(crate) fn dual_stack_server(
        quarantine_secs: Option<u64>,
    ) -> (Manager, crate::rbac::Principal, ServerId) {
        let (m, cap) = Manager::builder(
            Arc::new(MemoryStore::new()),
            Sealer::new(MasterKey::generate()),
        )
        .build_with_local_admin();
        let admin = cap.principal("root");
        let mut spec = NewServer::new(
            ServerName::new("s").unwrap(),
            InterfaceName::new("wg0").unwrap(),
            ListenPort::new(51820).unwrap(),
        );
        spec.ipv4_pool = Some("10.8.0.0/24".parse().unwrap());
        spec.delegation = Some(crate::model::Delegation {
            pool: "fd77::/48".parse().unwrap(),
            prefix_len: 64,
        });
        spec.quarantine_secs = quarantine_secs;
        let id = block_on(m.create_server(&admin, spec)).unwrap().id;
        (m, admin, id)
    }

    /// A server with peers `a` and `b` (both with IPv4 and IPv6, and a delegated
    /// prefix each), its cached state.
    fn two_peers() -> ServerState {
        let (m, admin, id) = dual_stack_server(None);
        for n in ["a", "b"] {
            let mut np = NewPeer::new(PeerName::new(n).unwrap());
            np.prefix = AddrRequest::Auto;
            block_on(m.add_peer(&admin, id, np)).unwrap();
        }
        block_on(m.read_server(id, |st| Ok(st.clone()))).unwrap()
    }

    #[test]
    fn building_the_address_manager_skips_only_addresses_outside_the_pools() {
        let now = OffsetDateTime::UNIX_EPOCH;
        let mut state = two_peers();
        assert!(Manager::build_ipam(&state, now).is_ok());
        // An imported peer's address outside the pools: nothing to hold, no error.
        let b = state
            .peers
            .values_mut()
            .find(|p| p.name.as_str() == "b")
            .unwrap();
        b.address_v4 = Some("192.0.2.7".parse().unwrap());
        let ipam = Manager::build_ipam(&state, now).unwrap();
        assert!(!ipam.covers("192.0.2.7".parse().unwrap()));
        // An address held twice (here: b takes a's) is another failure: it propagates.
        let a_v6 = state
            .peers
            .values()
            .find(|p| p.name.as_str() == "a")
            .and_then(|p| p.address_v6)
            .unwrap();
        let b = state
            .peers
            .values_mut()
            .find(|p| p.name.as_str() == "b")
            .unwrap();
        b.address_v6 = Some(a_v6);
        let err = Manager::build_ipam(&state, now).unwrap_err();
        assert!(matches!(err, Error::Conflict { .. }), "{err:?}");
    }

    #[test]
    fn following_an_added_peer_tolerates_only_its_own_prefix_claim() {
        let now = OffsetDateTime::UNIX_EPOCH;
        let state = two_peers();
        let a = state
            .peers
            .values()
            .find(|p| p.name.as_str() == "a")
            .unwrap()
            .clone();
        let cached = |state: &ServerState| Cached {
            partial: None,
            ipam: Manager::build_ipam(state, now).unwrap(),
            index: PeerIndex::build(state),
            state: state.clone(),
            opened: crate::reconcile::OpenedSecrets::default(),
            desired: None,
        };
        // The peer's own prefix, claimed already (as by the mutation that added it).
        let mut c = cached(&state);
        let added = [Change::PeerAdded {
            peer: Box::new(a.clone()),
        }];
        assert!(Manager::sync_ipam(&mut c, &added, now).is_ok());
        // Another peer added with a's prefix: the conflict propagates.
        let mut thief = a.clone();
        thief.id = crate::model::PeerId::new_random();
        let mut both = state.clone();
        both.peers.insert(thief.id, thief.clone());
        let mut c = cached(&state);
        c.state = both;
        let err = Manager::sync_ipam(
            &mut c,
            &[Change::PeerAdded {
                peer: Box::new(thief),
            }],
            now,
        )
        .unwrap_err();
        assert!(matches!(err, Error::Conflict { .. }), "{err:?}");
    }
}
