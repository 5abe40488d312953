//! The manager's commit loop against the store error contract (`Store::commit`): a
//! stale revision (a lost compare-and-swap) is retried on fresh state until it lands or
//! `max_attempts` is spent; a taken value, or anything else, is returned at once.
//! A wrapping store counts the commit calls (and the loads of whole servers) and makes
//! commits lose. Also: adding peers from a fresh process works from the durable
//! allocator state, without loading the server, with the same results and errors.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use time::OffsetDateTime;
use wgm_core::error::{ConflictKind, Taken};
use wgm_core::integrity::{AuditHead, AuditKey, StoredAuditKey};
use wgm_core::manager::{
    Clock, LocalAdmin, Manager, ManagerConfig, ManualClock, NewPeer, NewServer,
};
use wgm_core::model::{
    Actor, ApiTokenRecord, AuditEntry, AuditQuery, AuditRecord, Change, Commit, Committed,
    IdentityChange, Page, PeerId, PeerStats, RevisionNo, RevisionRecord, ServerId, ServerState,
    ServerSummary, TokenId, User, UserId,
};
use wgm_core::names::{InterfaceName, PeerName, ServerName, UserName};
use wgm_core::net::ListenPort;
use wgm_core::rbac::Role;
use wgm_core::seal::{MasterKey, SealedSecret, Sealer};
use wgm_core::store::{
    AuditStore, HostStateStore, IdentityStore, MemoryStore, SealAuditKey, ServerStore, Store,
};
use wgm_core::{auth, Error, Result};

fn block<F: std::future::Future>(f: F) -> F::Output {
    futures::executor::block_on(f)
}

/// What the wrapper does to the next commit call.
#[derive(Debug)]
enum Sabotage {
    /// Land a no-op server update first, so the commit's expected revision is stale
    /// and the real store refuses it.
    Race,
    /// Return this error without reaching the store.
    Fail(Error),
}

/// A [`Store`] that forwards to a [`MemoryStore`], counts commit calls and sabotages
/// the next ones as queued.
#[derive(Debug, Default)]
struct Counting {
    inner: MemoryStore,
    commits: AtomicUsize,
    /// Calls of `load_server` (every peer of a server).
    loads: AtomicUsize,
    /// Calls of the one-row reads `find_peer` and `load_server_overview`.
    row_reads: AtomicUsize,
    plan: Mutex<VecDeque<Sabotage>>,
    /// Sabotage every call with a race (after the queue is empty).
    always_race: std::sync::atomic::AtomicBool,
    /// The number of commits of each `commit_all` call.
    batches: Mutex<Vec<usize>>,
    /// Milliseconds each `commit_all` waits first (so that concurrent callers queue).
    batch_delay_ms: std::sync::atomic::AtomicU64,
    /// `(n, k)`: the next `commit_all` of at least `n` commits fails as one transaction
    /// would when its commit `k` fails: nothing lands.
    fail_batch: Mutex<Option<(usize, usize)>>,
    /// While set, `commit_all` waits for a permit of it (after saying it was entered).
    gate: Mutex<Option<Arc<tokio::sync::Semaphore>>>,
    entered: tokio::sync::Notify,
}

/// The error `fail_batch` injects.
fn injected() -> Error {
    Error::store("counting", "injected batch failure")
}

impl Counting {
    fn queue(&self, s: Sabotage) {
        self.plan.lock().unwrap().push_back(s);
    }

    fn commits(&self) -> usize {
        self.commits.load(Ordering::SeqCst)
    }

    /// Commit a no-op update of the server at `expected`, as a concurrent writer would
    /// (another process of the same store, so with the same audit key).
    async fn race(&self, id: ServerId, expected: RevisionNo, key: &AuditKey) {
        let st = self.inner.load_server(id).await.unwrap().unwrap();
        let server = Box::new(st.server.clone());
        let racer = Actor {
            user_id: None,
            label: "system:racer".into(),
        };
        let audit = AuditEntry {
            at: OffsetDateTime::UNIX_EPOCH,
            actor: racer.clone(),
            action: wgm_core::audit::AuditAction::parse("server.update"),
            object: format!("server/{id}"),
            server_id: Some(id),
            revision: None,
            outcome: wgm_core::model::AuditOutcome::Success,
            details: serde_json::Value::Null,
        };
        self.inner
            .commit(
                Commit {
                    server_id: id,
                    expected,
                    changes: vec![Change::ServerUpdated {
                        before: server.clone(),
                        after: server,
                    }],
                    author: racer,
                    at: OffsetDateTime::UNIX_EPOCH,
                    summary: "a concurrent writer".into(),
                    audit,
                },
                key,
            )
            .await
            .unwrap();
    }
}

#[async_trait]
impl Store for Counting {
    fn name(&self) -> &'static str {
        "counting"
    }

    async fn schema_version(&self) -> Result<wgm_core::store::SchemaVersion> {
        self.inner.schema_version().await
    }
}

#[async_trait]
impl ServerStore for Counting {
    async fn allocator_state(
        &self,
        id: ServerId,
    ) -> Result<Option<(RevisionNo, wgm_core::ipam::HeldRuns)>> {
        self.inner.allocator_state(id).await
    }

    async fn put_allocator_state(
        &self,
        id: ServerId,
        revision: RevisionNo,
        held: &wgm_core::ipam::HeldRuns,
    ) -> Result<()> {
        self.inner.put_allocator_state(id, revision, held).await
    }

    async fn load_server_settings(
        &self,
        id: ServerId,
    ) -> Result<Option<(wgm_core::model::Server, RevisionNo)>> {
        self.inner.load_server_settings(id).await
    }

    async fn load_server(&self, id: ServerId) -> Result<Option<ServerState>> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        self.inner.load_server(id).await
    }

    async fn load_server_overview(
        &self,
        id: ServerId,
    ) -> Result<Option<(wgm_core::model::Server, RevisionNo, u64)>> {
        self.row_reads.fetch_add(1, Ordering::SeqCst);
        self.inner.load_server_overview(id).await
    }

    async fn find_peer(
        &self,
        id: ServerId,
        by: wgm_core::store::PeerLookup<'_>,
    ) -> Result<Option<wgm_core::model::Peer>> {
        self.row_reads.fetch_add(1, Ordering::SeqCst);
        self.inner.find_peer(id, by).await
    }

    async fn find_server(&self, name: &ServerName) -> Result<Option<ServerId>> {
        self.inner.find_server(name).await
    }

    async fn list_servers(&self, page: Page) -> Result<Vec<ServerSummary>> {
        self.inner.list_servers(page).await
    }

    async fn head(&self, id: ServerId) -> Result<Option<RevisionNo>> {
        self.inner.head(id).await
    }

    async fn commit(&self, commit: Commit, key: &AuditKey) -> Result<Committed> {
        self.commits.fetch_add(1, Ordering::SeqCst);
        let next = self.plan.lock().unwrap().pop_front();
        let next = next.or_else(|| {
            self.always_race
                .load(Ordering::SeqCst)
                .then_some(Sabotage::Race)
        });
        match next {
            Some(Sabotage::Race) => self.race(commit.server_id, commit.expected, key).await,
            Some(Sabotage::Fail(e)) => return Err(e),
            None => {}
        }
        self.inner.commit(commit, key).await
    }

    async fn commit_all(&self, commits: Vec<Commit>, key: &AuditKey) -> Vec<Result<Committed>> {
        self.batches.lock().unwrap().push(commits.len());
        let gate = self.gate.lock().unwrap().clone();
        if let Some(gate) = gate {
            self.entered.notify_one();
            gate.acquire().await.unwrap().forget();
        }
        let delay = self.batch_delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
        }
        let fail = {
            let mut f = self.fail_batch.lock().unwrap();
            match *f {
                Some((n, k)) if commits.len() >= n => {
                    *f = None;
                    Some(k.min(commits.len() - 1))
                }
                _ => None,
            }
        };
        if let Some(at) = fail {
            return wgm_core::store::rules::batch_results(
                &commits,
                Err(wgm_core::store::rules::BatchFailure {
                    at: Some(at),
                    error: injected(),
                }),
            );
        }
        // As the default does, through this wrapper's `commit` (and its sabotage).
        wgm_core::store::commit_in_turn(self, commits, key).await
    }

    async fn revisions(
        &self,
        id: ServerId,
        after: RevisionNo,
        limit: u64,
    ) -> Result<Vec<RevisionRecord>> {
        self.inner.revisions(id, after, limit).await
    }
}

#[async_trait]
impl HostStateStore for Counting {
    async fn set_applied(&self, id: ServerId, host: &str, revision: RevisionNo) -> Result<()> {
        self.inner.set_applied(id, host, revision).await
    }

    async fn applied(&self, id: ServerId, host: &str) -> Result<Option<RevisionNo>> {
        self.inner.applied(id, host).await
    }

    async fn update_peer_stats(&self, id: ServerId, stats: &[(PeerId, PeerStats)]) -> Result<()> {
        self.inner.update_peer_stats(id, stats).await
    }

    async fn set_applied_state(
        &self,
        id: ServerId,
        host: &str,
        state: &wgm_core::model::AppliedState,
    ) -> Result<()> {
        self.inner.set_applied_state(id, host, state).await
    }

    async fn applied_state(
        &self,
        id: ServerId,
        host: &str,
    ) -> Result<Option<wgm_core::model::AppliedState>> {
        self.inner.applied_state(id, host).await
    }

    async fn acquire_lease(
        &self,
        req: &wgm_core::model::LeaseRequest,
    ) -> Result<wgm_core::model::Lease> {
        self.inner.acquire_lease(req).await
    }

    async fn release_lease(
        &self,
        lease: &wgm_core::model::Lease,
        now: time::OffsetDateTime,
    ) -> Result<bool> {
        self.inner.release_lease(lease, now).await
    }

    async fn put_host_report(&self, report: &wgm_core::model::HostReport) -> Result<()> {
        self.inner.put_host_report(report).await
    }

    async fn host_reports(&self, id: ServerId) -> Result<Vec<wgm_core::model::HostReport>> {
        self.inner.host_reports(id).await
    }
}

#[async_trait]
impl wgm_core::store::ChangeFeed for Counting {
    async fn watch(
        &self,
    ) -> Result<futures::stream::BoxStream<'static, wgm_core::store::FeedEvent>> {
        self.inner.watch().await
    }
}

#[async_trait]
impl IdentityStore for Counting {
    async fn get_user(&self, id: UserId) -> Result<Option<User>> {
        self.inner.get_user(id).await
    }

    async fn find_user(&self, name: &UserName) -> Result<Option<User>> {
        self.inner.find_user(name).await
    }

    async fn list_users(&self, page: Page) -> Result<Vec<User>> {
        self.inner.list_users(page).await
    }

    async fn list_roles(&self) -> Result<Vec<Role>> {
        self.inner.list_roles().await
    }

    async fn get_token(&self, id: TokenId) -> Result<Option<ApiTokenRecord>> {
        self.inner.get_token(id).await
    }

    async fn list_tokens(&self, user: Option<UserId>) -> Result<Vec<ApiTokenRecord>> {
        self.inner.list_tokens(user).await
    }

    async fn commit_identity(
        &self,
        changes: Vec<IdentityChange>,
        audit: AuditEntry,
        key: &AuditKey,
    ) -> Result<AuditRecord> {
        self.inner.commit_identity(changes, audit, key).await
    }
}

#[async_trait]
impl AuditStore for Counting {
    async fn append_audit(&self, entry: AuditEntry, key: &AuditKey) -> Result<AuditRecord> {
        self.inner.append_audit(entry, key).await
    }

    async fn query_audit(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>> {
        self.inner.query_audit(query).await
    }

    async fn audit_head(&self) -> Result<AuditHead> {
        self.inner.audit_head().await
    }

    async fn audit_key(&self) -> Result<Option<StoredAuditKey>> {
        self.inner.audit_key().await
    }

    async fn init_audit_key(&self, seal: &SealAuditKey<'_>) -> Result<(StoredAuditKey, bool)> {
        self.inner.init_audit_key(seal).await
    }

    async fn reseal_audit_key(
        &self,
        expected: &SealedSecret,
        resealed: &StoredAuditKey,
    ) -> Result<()> {
        self.inner.reseal_audit_key(expected, resealed).await
    }
}

/// A manager on a counting store with `max_attempts`, a manual clock, one server.
fn setup(
    max_attempts: u32,
) -> (
    Manager,
    Arc<Counting>,
    Arc<ManualClock>,
    LocalAdmin,
    ServerId,
) {
    let store = Arc::new(Counting::default());
    let clock = Arc::new(ManualClock::new(OffsetDateTime::UNIX_EPOCH));
    let (m, cap) = Manager::builder(store.clone(), Sealer::new(MasterKey::generate()))
        .config(ManagerConfig {
            max_attempts,
            password_params: auth::password::PasswordParams::insecure_for_tests(),
            ..ManagerConfig::default()
        })
        .clock(clock.clone())
        .build_with_local_admin();
    let mut spec = NewServer::new(
        ServerName::new("office").unwrap(),
        InterfaceName::new("wg-office").unwrap(),
        ListenPort::new(51820).unwrap(),
    );
    spec.ipv6_pool = Some("fd12:3456:789a:1::/64".parse().unwrap());
    let admin = cap.principal("root");
    let id = block(m.create_server(&admin, spec)).unwrap().id;
    (m, store, clock, cap, id)
}

fn peer(name: &str) -> NewPeer {
    NewPeer::new(PeerName::new(name).unwrap())
}

#[test]
fn a_stale_revision_is_retried_and_lands() {
    let (m, store, _, cap, id) = setup(8);
    let admin = cap.principal("root");
    let before = store.commits();
    store.queue(Sabotage::Race);
    store.queue(Sabotage::Race);
    let p = block(m.add_peer(&admin, id, peer("alice"))).unwrap();
    // Two lost races, then the third attempt lands.
    assert_eq!(store.commits() - before, 3);
    let st = block(store.inner.load_server(id)).unwrap().unwrap();
    assert!(st.peers.contains_key(&p.id));
    // Creation, two racers' revisions, the peer: one revision per landed commit.
    assert_eq!(st.revision, RevisionNo(4));
}

#[test]
fn retries_stop_after_max_attempts_with_the_stale_revision() {
    let (m, store, _, cap, id) = setup(3);
    let admin = cap.principal("root");
    let before = store.commits();
    store
        .always_race
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let e = block(m.add_peer(&admin, id, peer("alice"))).unwrap_err();
    assert_eq!(store.commits() - before, 3, "exactly max_attempts commits");
    match e.conflict_kind() {
        Some(ConflictKind::StaleRevision {
            server,
            expected,
            actual,
        }) => {
            assert_eq!(*server, id.0);
            assert_eq!(*actual, *expected + 1);
        }
        other => panic!("expected a stale revision, got {other:?} ({e})"),
    }
    assert!(e.to_string().contains("is at revision"), "{e}");
}

#[test]
fn a_taken_value_is_returned_at_once() {
    let (m, store, _, cap, id) = setup(8);
    let admin = cap.principal("root");
    let before = store.commits();
    let taken = Taken::Address("fd12:3456:789a:1::2".parse().unwrap());
    store.queue(Sabotage::Fail(Error::conflict_of(ConflictKind::Taken(
        taken.clone(),
    ))));
    let e = block(m.add_peer(&admin, id, peer("alice"))).unwrap_err();
    assert_eq!(store.commits() - before, 1, "a taken value is not retried");
    assert_eq!(e.conflict_kind(), Some(&ConflictKind::Taken(taken)));
    assert_eq!(
        e.to_string(),
        "conflict: address fd12:3456:789a:1::2 is assigned to two peers"
    );
    // Nothing landed, and the next attempt (no sabotage) does.
    block(m.add_peer(&admin, id, peer("alice"))).unwrap();
}

#[test]
fn other_errors_and_other_conflicts_are_not_retried() {
    let (m, store, _, cap, id) = setup(8);
    let admin = cap.principal("root");
    for e in [
        Error::conflict("the peer's owner changed concurrently"),
        Error::already_exists("peer", "name alice"),
        Error::store("counting", "disk on fire"),
    ] {
        let code = e.code();
        let before = store.commits();
        store.queue(Sabotage::Fail(e));
        let got = block(m.add_peer(&admin, id, peer("alice"))).unwrap_err();
        assert_eq!(store.commits() - before, 1, "{got}");
        assert_eq!(got.code(), code);
    }
}

#[test]
fn backoff_waits_on_the_managers_clock() {
    let (m, store, clock, cap, id) = setup(64);
    let admin = cap.principal("root");
    let t0 = clock.now();
    for _ in 0..16 {
        store.queue(Sabotage::Race);
    }
    block(m.add_peer(&admin, id, peer("alice"))).unwrap();
    // Sixteen jittered waits of up to 50 ms each were slept on the manual clock: time
    // moved (the chance that all sixteen drew 0 ms is below 10^-20), no thread slept.
    let waited = clock.now() - t0;
    assert!(waited > time::Duration::ZERO, "{waited}");
    assert!(waited <= time::Duration::milliseconds(16 * 50), "{waited}");
}

/// A process on `store` with master key `key` (the store's), its administrator.
fn process(store: &Arc<Counting>, key: &MasterKey) -> (Manager, wgm_core::rbac::Principal) {
    let (m, cap) = Manager::builder(
        store.clone(),
        Sealer::new(MasterKey::from_bytes(*key.expose_bytes())),
    )
    .build_with_local_admin();
    (m, cap.principal("root"))
}

/// A store with one server of `n` peers (quarantine `quarantine_secs`), and its key.
fn installation(n: usize, quarantine_secs: u64) -> (Arc<Counting>, MasterKey, ServerId) {
    let store = Arc::new(Counting::default());
    let key = MasterKey::generate();
    let (m, admin) = process(&store, &key);
    let mut spec = NewServer::new(
        ServerName::new("office").unwrap(),
        InterfaceName::new("wg-office").unwrap(),
        ListenPort::new(51820).unwrap(),
    );
    spec.ipv6_pool = Some("fd12:3456:789a:1::/64".parse().unwrap());
    spec.ipv4_pool = Some("10.8.0.0/24".parse().unwrap());
    spec.quarantine_secs = Some(quarantine_secs);
    let id = block(m.create_server(&admin, spec)).unwrap().id;
    let specs = (0..n).map(|i| peer(&format!("p{i}"))).collect();
    block(m.add_peers(&admin, id, specs)).unwrap();
    (store, key, id)
}

fn loads(store: &Counting) -> usize {
    store.loads.load(Ordering::SeqCst)
}

#[test]
fn fresh_processes_add_peers_without_loading_the_server() {
    let (store, key, id) = installation(20, 0);
    // The first fresh process finds no allocator state: it loads once and stores one.
    let (m, admin) = process(&store, &key);
    let a = block(m.add_peer(&admin, id, peer("first"))).unwrap();
    assert_eq!(a.address_v6.unwrap().to_string(), "fd12:3456:789a:1::16");
    let before = loads(&store);
    for i in 0..5 {
        let (m, admin) = process(&store, &key);
        let v = block(m.add_peer(&admin, id, peer(&format!("fresh{i}")))).unwrap();
        assert_eq!(
            (
                v.address_v6.unwrap().to_string(),
                v.address_v4.unwrap().to_string()
            ),
            (
                format!("fd12:3456:789a:1::{:x}", 0x17 + i),
                format!("10.8.0.{}", 23 + i)
            )
        );
    }
    assert_eq!(
        loads(&store),
        before,
        "a fresh process loaded the whole server"
    );
    // A gap left by a removal (no quarantine here) is reused, as the full path does.
    let (m, admin) = process(&store, &key);
    let gone = block(m.resolve_peer(&admin, id, "p3")).unwrap();
    block(m.remove_peer(&admin, id, gone)).unwrap();
    let before = loads(&store);
    let (m, admin) = process(&store, &key);
    let v = block(m.add_peer(&admin, id, peer("gap"))).unwrap();
    assert_eq!(v.address_v6.unwrap().to_string(), "fd12:3456:789a:1::5");
    assert_eq!(loads(&store), before, "caught up from the log, not loaded");
    // Everything agrees with the store's own view of the server.
    let st = block(store.inner.load_server(id)).unwrap().unwrap();
    assert_eq!(st.peers.len(), 20 + 1 + 5);
    wgm_core::store::check_server_uniqueness(&st).unwrap();
}

#[test]
fn a_quarantined_address_is_not_handed_out_from_the_durable_state() {
    let (store, key, id) = installation(5, 3600);
    let (m, admin) = process(&store, &key);
    block(m.add_peer(&admin, id, peer("seed"))).unwrap();
    let gone = block(m.resolve_peer(&admin, id, "p0")).unwrap();
    let held = block(m.get_peer(&admin, id, gone)).unwrap().address_v6;
    block(m.remove_peer(&admin, id, gone)).unwrap();
    let (m, admin) = process(&store, &key);
    let v = block(m.add_peer(&admin, id, peer("after"))).unwrap();
    assert_ne!(v.address_v6, held, "a quarantined address was handed out");
    assert_eq!(v.address_v6.unwrap().to_string(), "fd12:3456:789a:1::8");
}

#[test]
fn a_taken_name_or_key_from_a_fresh_process_is_the_usual_error() {
    let (store, key, id) = installation(3, 0);
    // The first fresh process takes the full path (and stores the allocator state), the
    // next one the light path: the same error for the same request.
    let (m, admin) = process(&store, &key);
    let full = block(m.add_peer(&admin, id, peer("P1"))).unwrap_err();
    let (m, admin) = process(&store, &key);
    block(m.add_peer(&admin, id, peer("seed"))).unwrap();
    let (m, admin) = process(&store, &key);
    let light = block(m.add_peer(&admin, id, peer("P1"))).unwrap_err();
    assert_eq!(light.to_string(), full.to_string());
    assert!(matches!(light, Error::InvalidInput { ref field, .. } if field == "peer.name"));
    let existing = block(m.resolve_peer(&admin, id, "p2")).unwrap();
    let their_key = block(m.get_peer(&admin, id, existing)).unwrap().public_key;
    let (m, admin) = process(&store, &key);
    let mut byo = peer("byo");
    byo.public_key = Some(their_key);
    let e = block(m.add_peer(&admin, id, byo)).unwrap_err();
    assert!(
        matches!(e, Error::InvalidInput { ref field, .. } if field == "peer.public_key"),
        "{e}"
    );
    // In a bulk request the entry is named.
    let (m, admin) = process(&store, &key);
    let e = block(m.add_peers(&admin, id, vec![peer("ok"), peer("P2")])).unwrap_err();
    assert!(
        matches!(e, Error::InvalidInput { ref field, .. } if field == "peers[1].peer.name"),
        "{e}"
    );
    let st = block(store.inner.load_server(id)).unwrap().unwrap();
    assert_eq!(st.peers.len(), 4, "nothing was written but the seed");
}

#[test]
fn a_lost_race_and_a_wrong_allocator_state_still_land_right() {
    let (store, key, id) = installation(4, 0);
    let (m, admin) = process(&store, &key);
    block(m.add_peer(&admin, id, peer("seed"))).unwrap();
    // A concurrent writer wins the first commit: the fresh process retries.
    store.queue(Sabotage::Race);
    let (m, admin) = process(&store, &key);
    let v = block(m.add_peer(&admin, id, peer("raced"))).unwrap();
    assert_eq!(v.address_v6.unwrap().to_string(), "fd12:3456:789a:1::7");
    // A state that forgets every held address: the store refuses the taken address,
    // and the manager does it again from the full state.
    let head = block(store.head(id)).unwrap().unwrap();
    block(store.put_allocator_state(id, head.next(), &wgm_core::ipam::HeldRuns::default()))
        .unwrap();
    // (Stored for a revision ahead of the head: not trusted either.)
    let (m, admin) = process(&store, &key);
    let v = block(m.add_peer(&admin, id, peer("after-ahead"))).unwrap();
    assert_eq!(v.address_v6.unwrap().to_string(), "fd12:3456:789a:1::8");
    let st = block(store.inner.load_server(id)).unwrap().unwrap();
    wgm_core::store::check_server_uniqueness(&st).unwrap();
}

/// One change of a test's story, run in a fresh process.
type Step<'a> = Box<dyn Fn(&Manager, &wgm_core::rbac::Principal) + 'a>;

/// The last revision's changes.
fn last_changes(store: &Counting, id: ServerId) -> Vec<Change> {
    let head = block(store.head(id)).unwrap().unwrap();
    let rec = block(store.inner.revisions(id, RevisionNo(head.0 - 1), 1)).unwrap();
    rec.into_iter().next().unwrap().changes
}

#[test]
fn fresh_processes_show_and_change_one_peer_without_loading_the_server() {
    let (store, key, id) = installation(20, 3600);
    // The first change finds no allocator state: it loads once and stores one.
    let (m, admin) = process(&store, &key);
    block(m.add_peer(&admin, id, peer("seed"))).unwrap();
    let before = loads(&store);
    let fresh = || process(&store, &key);

    // Reads: by name (any case), by key, by id; the server with its peer count.
    let (m, admin) = fresh();
    let p5 = block(m.resolve_peer(&admin, id, "P5")).unwrap();
    let v = block(m.get_peer(&admin, id, p5)).unwrap();
    assert_eq!(v.name.as_str(), "p5");
    let (m, admin) = fresh();
    assert_eq!(
        block(m.resolve_peer(&admin, id, &v.public_key.to_base64())).unwrap(),
        p5
    );
    assert_eq!(
        block(m.resolve_peer(&admin, id, &p5.to_string())).unwrap(),
        p5
    );
    let e = block(m.resolve_peer(&admin, id, "nobody")).unwrap_err();
    assert!(matches!(e, Error::NotFound { kind: "peer", .. }), "{e:?}");
    let e = block(m.resolve_peer(&admin, ServerId::new_random(), "p5")).unwrap_err();
    assert!(matches!(e, Error::NotFound { kind: "server", .. }), "{e:?}");
    let sv = block(m.get_server(&admin, id)).unwrap();
    assert_eq!((sv.peer_count, sv.revision), (21, RevisionNo(3)));
    let cfg = block(m.client_config(&admin, id, p5)).unwrap();
    assert!(cfg.complete && cfg.text.contains("[Interface]"));

    // Changes, each from a fresh process; each is one revision whose `before` is the
    // peer as the store held it.
    let stored = |pid| {
        block(store.inner.load_server(id))
            .unwrap()
            .unwrap()
            .peers
            .get(&pid)
            .cloned()
    };
    let steps: Vec<(&str, Step<'_>)> = vec![
        (
            "describe",
            Box::new(|m, a| {
                let u = wgm_core::manager::PeerUpdate {
                    description: Some(Some(wgm_core::names::Description::new("laptop").unwrap())),
                    ..Default::default()
                };
                block(m.update_peer(a, id, p5, u)).unwrap();
            }),
        ),
        (
            "rename",
            Box::new(|m, a| {
                let u = wgm_core::manager::PeerUpdate {
                    name: Some(PeerName::new("five").unwrap()),
                    ..Default::default()
                };
                block(m.update_peer(a, id, p5, u)).unwrap();
            }),
        ),
        (
            "disable",
            Box::new(|m, a| {
                block(m.set_peer_enabled(a, id, p5, false)).unwrap();
            }),
        ),
        (
            "enable",
            Box::new(|m, a| {
                block(m.set_peer_enabled(a, id, p5, true)).unwrap();
            }),
        ),
        (
            "rotate key",
            Box::new(|m, a| {
                block(m.rotate_peer_key(a, id, p5)).unwrap();
            }),
        ),
        (
            "rotate psk",
            Box::new(|m, a| {
                block(m.rotate_peer_psk(a, id, p5)).unwrap();
            }),
        ),
    ];
    for (what, step) in &steps {
        let was = stored(p5).unwrap();
        let head = block(store.head(id)).unwrap().unwrap();
        let (m, admin) = fresh();
        step(&m, &admin);
        assert_eq!(block(store.head(id)).unwrap(), Some(head.next()), "{what}");
        match &last_changes(&store, id)[..] {
            [Change::PeerUpdated { before, after }] => {
                assert_eq!(**before, was, "{what}: the before is the stored peer");
                assert_eq!(Some(&**after), stored(p5).as_ref(), "{what}");
            }
            other => panic!("{what}: {other:?}"),
        }
    }
    let now = block(store.inner.load_server(id)).unwrap().unwrap();
    let p = &now.peers[&p5];
    assert_eq!(p.name.as_str(), "five");
    assert!(p.enabled && p.description.is_some());
    assert_ne!(p.public_key, v.public_key);

    // Removal quarantines the addresses (a server update in the same revision), and
    // the next fresh add does not hand them out.
    let (m, admin) = fresh();
    block(m.remove_peer(&admin, id, p5)).unwrap();
    match &last_changes(&store, id)[..] {
        [Change::PeerRemoved { peer }, Change::ServerUpdated { after, .. }] => {
            assert_eq!(peer.id, p5);
            assert!(after
                .quarantine
                .iter()
                .any(|q| Some(q.addr) == v.address_v6.map(std::net::IpAddr::V6)));
        }
        other => panic!("remove: {other:?}"),
    }
    let (m, admin) = fresh();
    let next = block(m.add_peer(&admin, id, peer("next"))).unwrap();
    assert_ne!(next.address_v6, v.address_v6);
    let (m, admin) = fresh();
    let e = block(m.get_peer(&admin, id, p5)).unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e}");

    assert_eq!(
        loads(&store),
        before,
        "a fresh process loaded the whole server"
    );
    let st = block(store.inner.load_server(id)).unwrap().unwrap();
    wgm_core::store::check_server_uniqueness(&st).unwrap();
    assert_eq!(st.peers.len(), 20 + 1);
}

#[test]
fn a_taken_name_or_key_on_one_peer_from_a_fresh_process_is_the_usual_error() {
    let (store, key, id) = installation(3, 0);
    let (m, admin) = process(&store, &key);
    block(m.add_peer(&admin, id, peer("seed"))).unwrap();
    let rename = |to: &str| wgm_core::manager::PeerUpdate {
        name: Some(PeerName::new(to).unwrap()),
        ..Default::default()
    };
    // The full path's answer (this process loads the server first).
    let (m, admin) = process(&store, &key);
    block(m.list_peers(&admin, id)).unwrap();
    let p1 = block(m.resolve_peer(&admin, id, "p1")).unwrap();
    let full = block(m.update_peer(&admin, id, p1, rename("P2"))).unwrap_err();
    let loaded = loads(&store);
    // A fresh process: the store refuses the name, the manager does it again on the
    // whole server and answers the same.
    let (m, admin) = process(&store, &key);
    let light = block(m.update_peer(&admin, id, p1, rename("P2"))).unwrap_err();
    assert_eq!(light.to_string(), full.to_string());
    assert_eq!(loads(&store), loaded + 1, "the fallback loads once");
    // Renaming to its own name in another case is no clash.
    let (m, admin) = process(&store, &key);
    let v = block(m.update_peer(&admin, id, p1, rename("P1"))).unwrap();
    assert_eq!(v.name.as_str(), "P1");
    assert_eq!(loads(&store), loaded + 1);
    // Keys of revision 2 restored while another peer holds them now: the usual conflict.
    let (m, admin) = process(&store, &key);
    let p0 = block(m.resolve_peer(&admin, id, "p0")).unwrap();
    let old = block(m.get_peer(&admin, id, p0)).unwrap().public_key;
    block(m.rotate_peer_key(&admin, id, p0)).unwrap();
    let head = block(store.head(id)).unwrap().unwrap();
    let (m, admin) = process(&store, &key);
    let mut byo = peer("thief");
    byo.public_key = Some(old);
    block(m.add_peer(&admin, id, byo)).unwrap();
    let (m, admin) = process(&store, &key);
    let e = block(m.restore_peer_keys(&admin, id, p0, RevisionNo(head.0 - 1))).unwrap_err();
    assert!(
        matches!(e, Error::Conflict { .. }) && e.to_string().contains("held by another"),
        "{e}"
    );
    let st = block(store.inner.load_server(id)).unwrap().unwrap();
    wgm_core::store::check_server_uniqueness(&st).unwrap();
}

#[test]
fn a_peer_change_from_a_fresh_process_that_loses_a_race_is_redone_on_fresh_state() {
    let (store, key, id) = installation(4, 0);
    let (m, admin) = process(&store, &key);
    block(m.add_peer(&admin, id, peer("seed"))).unwrap();
    let p2 = block(m.resolve_peer(&admin, id, "p2")).unwrap();
    let loaded = loads(&store);
    let head = block(store.head(id)).unwrap().unwrap();
    store.queue(Sabotage::Race);
    let (m, admin) = process(&store, &key);
    block(m.set_peer_enabled(&admin, id, p2, false)).unwrap();
    // The racer's revision, then ours.
    assert_eq!(block(store.head(id)).unwrap(), Some(RevisionNo(head.0 + 2)));
    assert!(!block(store.inner.load_server(id)).unwrap().unwrap().peers[&p2].enabled);
    assert_eq!(loads(&store), loaded, "redone from the durable state");
}

#[test]
fn a_process_that_holds_the_server_answers_one_peer_reads_from_it() {
    let (store, key, id) = installation(5, 0);
    let (m, admin) = process(&store, &key);
    block(m.list_peers(&admin, id)).unwrap();
    let reads = store.row_reads.load(Ordering::SeqCst);
    let p3 = block(m.resolve_peer(&admin, id, "P3")).unwrap();
    let v = block(m.get_peer(&admin, id, p3)).unwrap();
    assert_eq!(
        block(m.resolve_peer(&admin, id, &v.public_key.to_base64())).unwrap(),
        p3
    );
    assert_eq!(block(m.get_server(&admin, id)).unwrap().peer_count, 5);
    block(m.client_config(&admin, id, p3)).unwrap();
    assert_eq!(
        store.row_reads.load(Ordering::SeqCst),
        reads,
        "answered from the whole server it holds"
    );
    // A change made elsewhere is seen (the cache follows the head).
    let (other, admin2) = process(&store, &key);
    block(other.set_peer_enabled(&admin2, id, p3, false)).unwrap();
    assert!(!block(m.get_peer(&admin, id, p3)).unwrap().enabled);
}

#[test]
fn the_allocator_state_is_caught_up_from_a_bounded_stretch_of_the_log() {
    let (store, key, id) = installation(2, 0);
    let (m, admin) = process(&store, &key);
    block(m.add_peer(&admin, id, peer("seed"))).unwrap();
    // A long-lived process holds the whole server: its commits leave the durable
    // allocator state behind.
    let (long, admin_l) = process(&store, &key);
    block(long.list_peers(&admin_l, id)).unwrap();
    let mut n = 0;
    let mut behind = |k: usize| {
        for _ in 0..k {
            block(long.add_peer(&admin_l, id, peer(&format!("l{n}")))).unwrap();
            n += 1;
        }
    };
    let fresh_add = |name: &str| {
        let (m, admin) = process(&store, &key);
        let before = loads(&store);
        let v = block(m.add_peer(&admin, id, peer(name))).unwrap();
        (loads(&store) - before, v)
    };
    // A few revisions behind, and exactly the bound: caught up from the log.
    behind(3);
    let (l, v) = fresh_add("f1");
    assert_eq!(
        (l, v.address_v6.unwrap().to_string()),
        (0, "fd12:3456:789a:1::8".to_owned())
    );
    behind(64);
    let (l, _) = fresh_add("f2");
    assert_eq!(l, 0, "64 revisions behind is caught up");
    // One past it: the server is loaded once.
    behind(65);
    let (l, v) = fresh_add("f3");
    assert_eq!(l, 1, "65 revisions behind is not caught up");
    let st = block(store.inner.load_server(id)).unwrap().unwrap();
    assert_eq!(st.peers.len(), 2 + 1 + 3 + 64 + 65 + 3);
    assert!(st.peers.values().any(|p| p.address_v6 == v.address_v6));
    wgm_core::store::check_server_uniqueness(&st).unwrap();
}

#[async_trait]
impl wgm_core::store::SnapshotStore for Counting {
    async fn export_snapshot(&self) -> Result<wgm_core::store::Snapshot> {
        self.inner.export_snapshot().await
    }

    async fn import_snapshot(&self, snapshot: &wgm_core::store::Snapshot) -> Result<()> {
        self.inner.import_snapshot(snapshot).await
    }
    async fn replace_with_snapshot(&self, snapshot: &wgm_core::store::Snapshot) -> Result<()> {
        self.inner.replace_with_snapshot(snapshot).await
    }
}

/// Whether server `id` has a peer named `name` at its head.
fn has_peer(store: &Counting, id: ServerId, name: &str) -> bool {
    let st = block(store.inner.load_server(id)).unwrap().unwrap();
    st.peers.values().any(|p| p.name.as_str() == name)
}

#[test]
fn a_conditional_write_that_loses_a_race_changes_nothing_and_is_not_retried() {
    let (m, store, _, cap, id) = setup(8);
    let admin = cap.principal("root").if_revision([1]);
    let before = store.commits();
    store.queue(Sabotage::Race);
    let e = block(m.add_peer(&admin, id, peer("alice"))).unwrap_err();
    assert!(e.is_stale_revision(), "{e}");
    // One commit, lost; the next attempt reads the new head and refuses.
    assert_eq!(store.commits() - before, 1);
    let st = block(store.inner.load_server(id)).unwrap().unwrap();
    assert_eq!(st.revision, RevisionNo(2), "only the racer's revision");
    assert!(!has_peer(&store, id, "alice"));
    // Without the condition the same race is retried and lands.
    store.queue(Sabotage::Race);
    block(m.add_peer(&cap.principal("root"), id, peer("alice"))).unwrap();
    assert!(has_peer(&store, id, "alice"));
}

#[test]
fn a_conditional_write_lands_only_at_a_revision_it_names() {
    let (m, store, _, cap, id) = setup(8);
    let root = cap.principal("root");
    // At the head: lands, one commit.
    let before = store.commits();
    block(m.add_peer(&root.clone().if_revision([1]), id, peer("a"))).unwrap();
    assert_eq!(store.commits() - before, 1);
    // Behind the head: refused before any commit, naming the head.
    let before = store.commits();
    let e = block(m.add_peer(&root.clone().if_revision([1]), id, peer("b"))).unwrap_err();
    match e.conflict_kind() {
        Some(ConflictKind::StaleRevision {
            expected, actual, ..
        }) => assert_eq!((*expected, *actual), (1, 2)),
        other => panic!("expected a stale revision, got {other:?} ({e})"),
    }
    assert_eq!(store.commits(), before);
    assert!(!has_peer(&store, id, "b"));
    // An empty list matches nothing.
    assert!(
        block(m.add_peer(&root.clone().if_revision([]), id, peer("b")))
            .unwrap_err()
            .is_stale_revision()
    );
    // Several revisions: a lost race to one of them lands on the next attempt.
    store.queue(Sabotage::Race);
    let before = store.commits();
    let both = root.clone().if_revision([2, 3]);
    block(m.add_peer(&both, id, peer("b"))).unwrap();
    assert_eq!(store.commits() - before, 2);
    assert!(has_peer(&store, id, "b"));
    // Every kind of server write honours it: a server update, a peer change, removal.
    let stale = root.if_revision([1]);
    let pid = block(m.resolve_peer(&cap.principal("root"), id, "a")).unwrap();
    for e in [
        block(m.rotate_server_key(&stale, id))
            .map(|_| ())
            .unwrap_err(),
        block(m.rotate_peer_key(&stale, id, pid))
            .map(|_| ())
            .unwrap_err(),
        block(m.remove_peer(&stale, id, pid)).unwrap_err(),
        block(m.rollback(&stale, id, RevisionNo(1)))
            .map(|_| ())
            .unwrap_err(),
        block(m.delete_server(&stale, id)).map(|_| ()).unwrap_err(),
    ] {
        assert!(e.is_stale_revision(), "{e}");
    }
    assert!(has_peer(&store, id, "a"));
}

#[test]
fn a_conditional_write_from_a_fresh_process_is_exact() {
    let (store, key, id) = installation(20, 0);
    let head = block(store.inner.load_server(id))
        .unwrap()
        .unwrap()
        .revision;
    // A fresh process that would add from the durable allocator state.
    let (m, admin) = process(&store, &key);
    let e =
        block(m.add_peer(&admin.clone().if_revision([head.0 - 1]), id, peer("late"))).unwrap_err();
    assert!(e.is_stale_revision(), "{e}");
    assert!(!has_peer(&store, id, "late"));
    let (m, admin) = process(&store, &key);
    block(m.add_peer(&admin.if_revision([head.0]), id, peer("late"))).unwrap();
    assert!(has_peer(&store, id, "late"));
}

#[async_trait]
impl wgm_core::store::ThrottleStore for Counting {
    async fn throttle_records(
        &self,
        keys: &[wgm_core::auth::throttle::ThrottleKey],
        now: OffsetDateTime,
    ) -> Result<Vec<Option<wgm_core::auth::throttle::ThrottleState>>> {
        self.inner.throttle_records(keys, now).await
    }

    async fn swap_throttle_record(
        &self,
        key: &wgm_core::auth::throttle::ThrottleKey,
        expected: Option<&wgm_core::auth::throttle::ThrottleState>,
        new: Option<&wgm_core::store::ThrottleRecord>,
        now: OffsetDateTime,
    ) -> Result<bool> {
        self.inner
            .swap_throttle_record(key, expected, new, now)
            .await
    }
}

// ---- group commit: concurrent callers of one manager share a store call ----

/// A shared manager on a counting store (real clock), one server, warmed past the
/// mutations that run from the durable allocator state (so the full cache is used).
async fn shared(callers_delay_ms: u64) -> (Arc<Manager>, Arc<Counting>, LocalAdmin, ServerId) {
    shared_with(callers_delay_ms, &MasterKey::generate()).await
}

/// [`shared`] under master key `master`.
async fn shared_with(
    callers_delay_ms: u64,
    master: &MasterKey,
) -> (Arc<Manager>, Arc<Counting>, LocalAdmin, ServerId) {
    let store = Arc::new(Counting::default());
    let (m, cap) = Manager::builder(store.clone(), Sealer::new(master.clone()))
        .config(ManagerConfig {
            password_params: auth::password::PasswordParams::insecure_for_tests(),
            ..ManagerConfig::default()
        })
        .build_with_local_admin();
    let mut spec = NewServer::new(
        ServerName::new("office").unwrap(),
        InterfaceName::new("wg-office").unwrap(),
        ListenPort::new(51820).unwrap(),
    );
    spec.ipv6_pool = Some("fd12:3456:789a:1::/64".parse().unwrap());
    spec.ipv4_pool = Some("10.20.0.0/16".parse().unwrap());
    let admin = cap.principal("root");
    let id = m.create_server(&admin, spec).await.unwrap().id;
    for i in 0..6 {
        m.add_peer(&admin, id, peer(&format!("warm{i}")))
            .await
            .unwrap();
    }
    store
        .batch_delay_ms
        .store(callers_delay_ms, Ordering::SeqCst);
    (Arc::new(m), store, cap, id)
}

/// Wait until a `commit_all` call reached the gate (failing, not hanging, if none does).
async fn entered(store: &Counting) {
    tokio::time::timeout(std::time::Duration::from_secs(30), store.entered.notified())
        .await
        .expect("no commit_all reached the gate: the commit was not grouped");
}

/// `n` concurrent adds named `{prefix}{i}`; their results in order.
async fn add_concurrently(
    m: &Arc<Manager>,
    cap: &LocalAdmin,
    id: ServerId,
    prefix: &str,
    n: usize,
) -> Vec<Result<wgm_core::manager::PeerView>> {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let (m, admin, name) = (m.clone(), cap.principal("root"), format!("{prefix}{i}"));
            tokio::spawn(async move { m.add_peer(&admin, id, peer(&name)).await })
        })
        .collect();
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

/// The manager's view of the server's peers equals the store's, every address once.
async fn cache_agrees_with_store(m: &Manager, store: &Counting, cap: &LocalAdmin, id: ServerId) {
    let admin = cap.principal("root");
    let mut listed: Vec<_> = m
        .list_peers(&admin, id)
        .await
        .unwrap()
        .into_iter()
        .map(|v| (v.id, v.name.to_string(), v.address_v6, v.address_v4))
        .collect();
    listed.sort();
    let st = store.inner.load_server(id).await.unwrap().unwrap();
    let mut stored: Vec<_> = st
        .peers
        .values()
        .map(|p| (p.id, p.name.to_string(), p.address_v6, p.address_v4))
        .collect();
    stored.sort();
    assert_eq!(listed, stored);
    let v6: std::collections::HashSet<_> = stored.iter().map(|x| x.2).collect();
    let v4: std::collections::HashSet<_> = stored.iter().map(|x| x.3).collect();
    assert_eq!(v6.len(), stored.len(), "an IPv6 address held twice");
    assert_eq!(v4.len(), stored.len(), "an IPv4 address held twice");
    m.verify_audit_chain(&admin, None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_adds_share_store_calls_and_each_is_one_revision() {
    let (m, store, cap, id) = shared(2).await;
    let head = store.inner.head(id).await.unwrap().unwrap();
    let batches_before = store.batches.lock().unwrap().len();
    let results = add_concurrently(&m, &cap, id, "p", 48).await;
    let added: Vec<_> = results.into_iter().map(Result::unwrap).collect();
    // One revision per add, each holding that add alone, with its audit record.
    let revs = store.inner.revisions(id, head, 100).await.unwrap();
    assert_eq!(revs.len(), 48);
    for (i, r) in revs.iter().enumerate() {
        assert_eq!(r.revision.0, head.0 + 1 + i as u64);
        assert!(matches!(r.changes.as_slice(), [Change::PeerAdded { .. }]));
    }
    let mut names: Vec<_> = added.iter().map(|v| v.name.to_string()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 48);
    // The store was called fewer times than there were commits: they were grouped.
    let batches = store.batches.lock().unwrap()[batches_before..].to_vec();
    assert_eq!(batches.iter().sum::<usize>(), 48);
    assert!(
        batches.iter().any(|n| *n > 1),
        "no commits were grouped: {batches:?}"
    );
    cache_agrees_with_store(&m, &store, &cap, id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_batch_fails_only_its_own_commit_and_the_others_land_on_a_retry() {
    let (m, store, cap, id) = shared(2).await;
    let before = store
        .inner
        .load_server(id)
        .await
        .unwrap()
        .unwrap()
        .peers
        .len();
    *store.fail_batch.lock().unwrap() = Some((2, 1));
    let results = add_concurrently(&m, &cap, id, "q", 32).await;
    assert!(
        store.fail_batch.lock().unwrap().is_none(),
        "no batch of two or more was written"
    );
    let failed: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].to_string(), injected().to_string());
    let st = store.inner.load_server(id).await.unwrap().unwrap();
    assert_eq!(st.peers.len(), before + 31);
    for v in results.iter().filter_map(|r| r.as_ref().ok()) {
        assert_eq!(st.peers[&v.id].name.as_str(), v.name.as_str());
    }
    cache_agrees_with_store(&m, &store, &cap, id).await;
    // The manager goes on.
    m.add_peer(&cap.principal("root"), id, peer("after"))
        .await
        .unwrap();
    cache_agrees_with_store(&m, &store, &cap, id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_wait_for_queued_commits_and_never_see_one_that_did_not_land() {
    let (m, store, cap, id) = shared(0).await;
    for fail in [false, true] {
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        *store.gate.lock().unwrap() = Some(gate.clone());
        if fail {
            *store.fail_batch.lock().unwrap() = Some((1, 0));
        }
        let name = format!("gated-{fail}");
        let add = {
            let (m, admin, name) = (m.clone(), cap.principal("root"), name.clone());
            tokio::spawn(async move { m.add_peer(&admin, id, peer(&name)).await })
        };
        // The add's commit is being written (and held there).
        entered(&store).await;
        *store.gate.lock().unwrap() = None;
        let read = {
            let (m, admin) = (m.clone(), cap.principal("root"));
            tokio::spawn(async move { m.list_peers(&admin, id).await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(
            !read.is_finished(),
            "a read answered before a queued commit was written"
        );
        gate.add_permits(1);
        let added = add.await.unwrap();
        let listed = read.await.unwrap().unwrap();
        let seen = listed.iter().any(|v| v.name.as_str() == name);
        if fail {
            assert_eq!(added.unwrap_err().to_string(), injected().to_string());
            assert!(!seen, "a read saw a commit that did not land");
        } else {
            added.unwrap();
            assert!(
                seen,
                "a read missed a commit that landed before it answered"
            );
        }
        cache_agrees_with_store(&m, &store, &cap, id).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_cancelled_while_writing_a_batch_leaves_no_one_waiting() {
    let (m, store, cap, id) = shared(0).await;
    let spawn_add = |name: &str| {
        let (m, admin, name) = (m.clone(), cap.principal("root"), name.to_owned());
        tokio::spawn(async move { m.add_peer(&admin, id, peer(&name)).await })
    };
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    *store.gate.lock().unwrap() = Some(gate.clone());
    // x's commit is being written and held; b and c queue behind it.
    let x = spawn_add("x");
    entered(&store).await;
    let b = spawn_add("b");
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let c = spawn_add("c");
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    // x lands; b, first in line, writes b and c together and is held.
    gate.add_permits(1);
    x.await.unwrap().unwrap();
    entered(&store).await;
    assert_eq!(store.batches.lock().unwrap().last(), Some(&2));
    // b is cancelled in the middle of that write: c must not wait for ever.
    b.abort();
    let c = tokio::time::timeout(std::time::Duration::from_secs(20), c)
        .await
        .expect("a caller whose commit was in a cancelled write hung")
        .unwrap();
    assert!(
        c.unwrap_err().to_string().contains("interrupted"),
        "the outcome is unknown to c"
    );
    *store.gate.lock().unwrap() = None;
    gate.add_permits(100);
    m.add_peer(&cap.principal("root"), id, peer("d"))
        .await
        .unwrap();
    cache_agrees_with_store(&m, &store, &cap, id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_with_nothing_queued_catches_up_with_another_process_without_a_reload() {
    let master = MasterKey::generate();
    let (m, store, cap, id) = shared_with(0, &master).await;
    // Another process of the same installation adds a peer.
    let (other, other_cap) =
        Manager::builder(store.clone(), Sealer::new(master)).build_with_local_admin();
    other
        .add_peer(&other_cap.principal("root"), id, peer("elsewhere"))
        .await
        .unwrap();
    let (loads_before, commits) = (loads(&store), store.commits());
    // This manager's next write reads the head, catches up from the log and lands at
    // once: no lost race, no reload of every peer.
    m.add_peer(&cap.principal("root"), id, peer("here"))
        .await
        .unwrap();
    assert_eq!(loads(&store), loads_before, "the server was loaded again");
    assert_eq!(store.commits(), commits + 1, "the write lost a race first");
    cache_agrees_with_store(&m, &store, &cap, id).await;
}

// ---- the batch helpers of the commit rules ----

fn bare_commit(server: ServerId, expected: u64, changes: Vec<Change>) -> Commit {
    let actor = Actor {
        user_id: None,
        label: "test".into(),
    };
    Commit {
        server_id: server,
        expected: RevisionNo(expected),
        changes,
        author: actor.clone(),
        at: time::OffsetDateTime::UNIX_EPOCH,
        summary: "test".into(),
        audit: AuditEntry {
            at: time::OffsetDateTime::UNIX_EPOCH,
            actor,
            action: wgm_core::audit::AuditAction::parse("peer.add"),
            object: "x".into(),
            server_id: Some(server),
            revision: None,
            outcome: wgm_core::model::AuditOutcome::Success,
            details: serde_json::Value::Null,
        },
    }
}

#[test]
fn a_peer_chain_is_one_server_consecutive_revisions_and_only_peer_changes() {
    let (a, b) = (ServerId::new_random(), ServerId::new_random());
    let st = wgm_core::conformance::store::fixture_server("chain").unwrap();
    let p = wgm_core::conformance::store::fixture_peer(&st, "p", 2).unwrap();
    let add = || Change::PeerAdded {
        peer: Box::new(p.clone()),
    };
    let rm = || Change::PeerRemoved {
        peer: Box::new(p.clone()),
    };
    assert!(wgm_core::store::rules::is_peer_chain(&[bare_commit(
        a,
        4,
        vec![add()]
    )]));
    assert!(wgm_core::store::rules::is_peer_chain(&[
        bare_commit(a, 4, vec![add()]),
        bare_commit(a, 5, vec![rm()]),
        bare_commit(a, 6, vec![add(), rm()]),
    ]));
    assert!(!wgm_core::store::rules::is_peer_chain(&[]));
    // Another server, a gap, the same revision twice, a server change.
    assert!(!wgm_core::store::rules::is_peer_chain(&[
        bare_commit(a, 4, vec![add()]),
        bare_commit(b, 5, vec![add()])
    ]));
    assert!(!wgm_core::store::rules::is_peer_chain(&[
        bare_commit(a, 4, vec![add()]),
        bare_commit(a, 6, vec![add()])
    ]));
    assert!(!wgm_core::store::rules::is_peer_chain(&[
        bare_commit(a, 4, vec![add()]),
        bare_commit(a, 4, vec![add()])
    ]));
    let srv = Change::ServerUpdated {
        before: Box::new(st.clone()),
        after: Box::new(st.clone()),
    };
    assert!(!wgm_core::store::rules::is_peer_chain(&[
        bare_commit(a, 4, vec![add()]),
        bare_commit(a, 5, vec![add(), srv])
    ]));
}

#[test]
fn batch_results_answer_every_commit() {
    let a = ServerId::new_random();
    let batch = [
        bare_commit(a, 4, vec![]),
        bare_commit(a, 5, vec![]),
        bare_commit(a, 6, vec![]),
    ];
    // A rule of the second failed: its own error, the others stale.
    let r = wgm_core::store::rules::batch_results(
        &batch,
        Err(wgm_core::store::rules::BatchFailure {
            at: Some(1),
            error: Error::not_found("peer", "x"),
        }),
    );
    let codes: Vec<_> = r
        .iter()
        .map(|x| x.as_ref().err().map(|e| (e.code(), e.is_stale_revision())))
        .collect();
    assert_eq!(
        codes,
        vec![
            Some(("conflict", true)),
            Some(("not_found", false)),
            Some(("conflict", true))
        ]
    );
    // The transaction failed: a store failure of the same engine for each.
    let r = wgm_core::store::rules::batch_results(
        &batch,
        Err(wgm_core::store::rules::BatchFailure::whole(Error::store(
            "postgres",
            "connection reset",
        ))),
    );
    for x in &r {
        match x {
            Err(Error::Store { store, source }) => {
                assert_eq!(*store, "postgres");
                assert!(source.to_string().contains("connection reset"));
            }
            other => panic!("{other:?}"),
        }
    }
}
