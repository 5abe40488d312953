//! Many users on one installation: what a `user` may not do to other people's traffic,
//! peers and an administrator's decisions, and that every refusal is audited.
//!
//! Each test reproduces an attack found by trying the CLI with a `user` token, and
//! checks the refusal, that nothing was written, and the audit record.

use std::sync::Arc;

use wgm_core::backend::MemoryWireGuard;
use wgm_core::manager::{
    AddrRequest, Clock, Host, ImportOptions, LocalAdmin, Manager, ManagerConfig, ManualClock,
    NewPeer, NewServer, NewToken, NewUser, PeerUpdate, ServerUpdate,
};
use wgm_core::model::{
    Actor, AuditEntry, AuditOutcome, AuditQuery, Change, Commit, DisabledBy, PeerId, RevisionNo,
    ServerId, UserId,
};
use wgm_core::names::{Description, InterfaceName, PeerName, RoleName, ServerName, UserName};
use wgm_core::net::ListenPort;
use wgm_core::rbac::{Action, Permission, Principal, Resource, Role};
use wgm_core::seal::{MasterKey, Sealer};
use wgm_core::store::{AuditStore, MemoryStore, ServerStore};
use wgm_core::{auth, Error};

/// A named change made to a peer behind the manager's back.
type Forgery<'a> = (&'static str, Box<dyn Fn(&mut wgm_core::model::Peer) + 'a>);

fn block<F: std::future::Future>(f: F) -> F::Output {
    futures::executor::block_on(f)
}

struct World {
    m: Manager,
    store: Arc<MemoryStore>,
    clock: Arc<ManualClock>,
    local: LocalAdmin,
    root: Principal,
    s: ServerId,
    alice: Principal,
    alice_id: UserId,
    bob: Principal,
    bob_id: UserId,
    op: Principal,
    /// The master key's bytes, to open the store's audit key where a test writes to
    /// the store as someone holding it would.
    master: [u8; 32],
}

fn spec(name: &str, port: u16, v6: &str, v4: &str) -> NewServer {
    let mut s = NewServer::new(
        ServerName::new(name).unwrap(),
        InterfaceName::new(format!("wg-{name}")).unwrap(),
        ListenPort::new(port).unwrap(),
    );
    s.ipv6_pool = Some(v6.parse().unwrap());
    s.ipv4_pool = Some(v4.parse().unwrap());
    s.delegation = None;
    s
}

fn peer(name: &str) -> NewPeer {
    NewPeer::new(PeerName::new(name).unwrap())
}

async fn principal(m: &Manager, local: &LocalAdmin, store: &MemoryStore, id: UserId) -> Principal {
    use wgm_core::store::IdentityStore;
    let u = store.get_user(id).await.unwrap().unwrap();
    m.principal_for(local, &u).await.unwrap()
}

async fn add_user(m: &Manager, root: &Principal, name: &str, role: &str) -> UserId {
    m.create_user(
        root,
        NewUser::new(UserName::new(name).unwrap(), RoleName::new(role).unwrap()),
    )
    .await
    .unwrap()
    .id
}

/// Server `office` (10.200.0.0/24), users alice and bob (role `user`) with a phone each,
/// and an operator.
fn world() -> World {
    let store = Arc::new(MemoryStore::new());
    let clock = Arc::new(ManualClock::new(time::OffsetDateTime::now_utc()));
    let master_key = MasterKey::generate();
    let master = *master_key.expose_bytes();
    let (m, local) = Manager::builder(store.clone(), Sealer::new(master_key))
        .config(ManagerConfig {
            password_params: auth::password::PasswordParams::insecure_for_tests(),
            ..ManagerConfig::default()
        })
        .clock(clock.clone())
        .build_with_local_admin();
    let root = local.principal("root");
    block(async {
        let s = m
            .create_server(
                &root,
                spec("office", 51820, "fd00:200::/64", "10.200.0.0/24"),
            )
            .await
            .unwrap()
            .id;
        let alice_id = add_user(&m, &root, "alice", "user").await;
        let bob_id = add_user(&m, &root, "bob", "user").await;
        let op_id = add_user(&m, &root, "olga", "operator").await;
        let alice = principal(&m, &local, &store, alice_id).await;
        let bob = principal(&m, &local, &store, bob_id).await;
        let op = principal(&m, &local, &store, op_id).await;
        m.add_peer(&alice, s, peer("alice-phone")).await.unwrap();
        m.add_peer(&bob, s, peer("bob-phone")).await.unwrap();
        World {
            m,
            store,
            clock,
            local,
            root,
            s,
            alice,
            alice_id,
            bob,
            bob_id,
            op,
            master,
        }
    })
}

impl World {
    fn peer_id(&self, name: &str) -> PeerId {
        block(self.m.resolve_peer(&self.root, self.s, name)).unwrap()
    }

    fn head(&self) -> Option<RevisionNo> {
        block(self.store.head(self.s)).unwrap()
    }

    fn audit_len(&self) -> usize {
        block(self.store.query_audit(&AuditQuery::default()))
            .unwrap()
            .len()
    }

    /// The audit records appended since `since` records.
    fn audit_since(&self, since: usize) -> Vec<wgm_core::model::AuditRecord> {
        block(self.store.query_audit(&AuditQuery::default())).unwrap()[since..].to_vec()
    }

    /// Run `f`, require a refusal matching `is`, no new revision, and exactly one new
    /// audit record: a denial of `resource:action` by `who`.
    fn refused<T: std::fmt::Debug>(
        &self,
        who: &Principal,
        action: &str,
        f: impl std::future::Future<Output = Result<T, Error>>,
        is: impl Fn(&Error) -> bool,
    ) -> Error {
        let head = self.head();
        let n = self.audit_len();
        let r = block(f);
        let e = match r {
            Err(e) => e,
            Ok(v) => panic!("{action}: expected a refusal, got {v:?}"),
        };
        assert!(is(&e), "{action}: unexpected error {e:?}");
        assert_eq!(self.head(), head, "{action}: a refusal wrote a revision");
        let added = self.audit_since(n);
        assert_eq!(added.len(), 1, "{action}: {added:?}");
        let r = &added[0].entry;
        assert_eq!(r.outcome, AuditOutcome::Denied, "{action}");
        assert_eq!(r.action.as_str(), action);
        assert_eq!(r.actor.user_id, Some(UserId(who.user_id())), "{action}");
        e
    }
}

fn denied(e: &Error) -> bool {
    matches!(e, Error::PermissionDenied { .. })
}

fn net(s: &str) -> ipnet::IpNet {
    s.parse().unwrap()
}

/// `peer set --allowed-ips NETS`.
fn extra(nets: &[&str]) -> PeerUpdate {
    PeerUpdate {
        extra_allowed_ips: Some(nets.iter().map(|n| net(n)).collect()),
        ..PeerUpdate::default()
    }
}

/// A user holding only a custom role `role` with `permissions`.
fn custom_user(w: &World, user: &str, role: &str, permissions: Vec<Permission>) -> Principal {
    let r = Role::custom(
        RoleName::new(role).unwrap(),
        Description::new(role).unwrap(),
        permissions,
    )
    .unwrap();
    block(w.m.put_role(&w.root, r)).unwrap();
    let id = block(add_user(&w.m, &w.root, user, role));
    block(principal(&w.m, &w.local, &w.store, id))
}

#[test]
fn a_user_cannot_route_networks_to_their_peer_on_any_path() {
    let w = world();
    let (m, s) = (&w.m, w.s);
    let mine = w.peer_id("alice-phone");
    // `peer set --allowed-ips 8.8.8.8/32,1.1.1.0/24` on one's own peer.
    let set = extra(&["8.8.8.8/32", "1.1.1.0/24"]);
    w.refused(
        &w.alice,
        "peer.route",
        m.update_peer(&w.alice, s, mine, set.clone()),
        denied,
    );
    // Adding a peer with extra networks, or with a delegated prefix.
    let mut routed = peer("router");
    routed.extra_allowed_ips = vec![net("192.168.50.0/24")];
    w.refused(
        &w.alice,
        "peer.route",
        m.add_peer(&w.alice, s, routed),
        denied,
    );
    let mut delegated = peer("delegated");
    delegated.prefix = AddrRequest::Auto;
    w.refused(
        &w.alice,
        "peer.route",
        m.add_peer(&w.alice, s, delegated),
        denied,
    );
    // Nothing of it reached the plan: the server routes only the peers' own addresses.
    let wg = Arc::new(MemoryWireGuard::new());
    let host = Host::new("h", wg.clone(), Some(Arc::new(wg.network())));
    let plan = block(m.plan(&w.root, s, &host)).unwrap().to_string();
    assert!(!plan.contains("8.8.8.8"), "{plan}");

    // An operator grants a network; the user keeps it, may drop it, may not widen it.
    block(m.update_peer(&w.op, s, mine, extra(&["192.168.7.0/24"]))).unwrap();
    block(m.update_peer(
        &w.alice,
        s,
        mine,
        PeerUpdate {
            description: Some(Some(Description::new("my phone").unwrap())),
            extra_allowed_ips: Some(vec![net("192.168.7.0/24")]),
            ..PeerUpdate::default()
        },
    ))
    .unwrap();
    w.refused(
        &w.alice,
        "peer.route",
        m.update_peer(&w.alice, s, mine, extra(&["192.168.0.0/16"])),
        denied,
    );
    let dropped = block(m.update_peer(&w.alice, s, mine, extra(&[]))).unwrap();
    assert!(dropped.extra_allowed_ips.is_empty());

    // A delegated prefix an operator gave stays; the owner's other changes pass.
    let mut dspec = spec("lab", 51821, "fd00:201::/64", "10.202.0.0/24");
    dspec.delegation = Some(wgm_core::model::Delegation {
        pool: "fd00:9900::/48".parse().unwrap(),
        prefix_len: 64,
    });
    let lab = block(m.create_server(&w.root, dspec)).unwrap().id;
    let mut given = peer("alice-router");
    given.owner = Some(w.alice_id);
    given.prefix = AddrRequest::Auto;
    let router = block(m.add_peer(&w.op, lab, given)).unwrap();
    assert!(router.delegated_prefix.is_some());
    block(m.update_peer(
        &w.alice,
        lab,
        router.id,
        PeerUpdate {
            keepalive: Some(wgm_core::net::Keepalive::new(15).unwrap()),
            ..PeerUpdate::default()
        },
    ))
    .unwrap();

    // Rollback to the revision with the grant: by someone who may roll back but not
    // route (a custom role), refused; by the operator, allowed.
    let granted_at = block(m.history(&w.root, s, RevisionNo::NONE, 100))
        .unwrap()
        .into_iter()
        .find(|r| r.summary.starts_with("update peer") && r.author.label.contains("olga"))
        .unwrap()
        .revision;
    let rolf = custom_user(
        &w,
        "rolf",
        "roller",
        vec![
            Permission::new(Resource::Server, Action::Read),
            Permission::new(Resource::Config, Action::Read),
            Permission::new(Resource::Config, Action::Rollback),
            Permission::new(Resource::Peer, Action::Read),
        ],
    );
    w.refused(
        &rolf,
        "peer.route",
        m.rollback(&rolf, s, granted_at),
        denied,
    );
    block(m.rollback(&w.op, s, granted_at)).unwrap();

    // Import: routing networks to imported peers needs peer:route too.
    let ivan = custom_user(
        &w,
        "ivan",
        "importer",
        vec![
            Permission::new(Resource::Server, Action::Create),
            Permission::new(Resource::Server, Action::Read),
        ],
    );
    let key = wgm_core::keys::PrivateKey::generate();
    let peer_key = wgm_core::keys::PrivateKey::generate().public_key();
    let text = format!(
        "[Interface]\nPrivateKey = {}\nAddress = fd00:300::1/64, 10.30.0.1/24\nListenPort = 51830\n\n\
         [Peer]\nPublicKey = {}\nAllowedIPs = fd00:300::2/128, 10.30.0.2/32, 8.8.8.0/24\n",
        key.expose_base64().as_str(),
        peer_key.to_base64()
    );
    let servers = block(w.store.list_servers(wgm_core::model::Page::ALL))
        .unwrap()
        .len();
    let n = w.audit_len();
    let e = block(m.import_server(
        &ivan,
        ServerName::new("imported").unwrap(),
        &text,
        ImportOptions::default(),
    ))
    .unwrap_err();
    assert!(denied(&e), "{e:?}");
    assert_eq!(
        block(w.store.list_servers(wgm_core::model::Page::ALL))
            .unwrap()
            .len(),
        servers
    );
    assert_eq!(w.audit_since(n)[0].entry.action.as_str(), "peer.route");
}

#[test]
fn a_user_cannot_undo_an_administrators_disable_or_expiry() {
    let w = world();
    let (m, s) = (&w.m, w.s);
    let mine = w.peer_id("alice-phone");
    // The admin disables: the user may not enable it again, by either path.
    let v = block(m.set_peer_enabled(&w.op, s, mine, false)).unwrap();
    assert_eq!(v.disabled_by, Some(DisabledBy::Administrator));
    w.refused(
        &w.alice,
        "peer.update",
        m.set_peer_enabled(&w.alice, s, mine, true),
        denied,
    );
    w.refused(
        &w.alice,
        "peer.update",
        m.update_peer(
            &w.alice,
            s,
            mine,
            PeerUpdate {
                enabled: Some(true),
                ..PeerUpdate::default()
            },
        ),
        denied,
    );
    // The operator lifts it; the user's own disable the user may lift.
    block(m.set_peer_enabled(&w.op, s, mine, true)).unwrap();
    let v = block(m.set_peer_enabled(&w.alice, s, mine, false)).unwrap();
    assert_eq!(v.disabled_by, Some(DisabledBy::Owner));
    let v = block(m.set_peer_enabled(&w.alice, s, mine, true)).unwrap();
    assert!(v.enabled && v.disabled_by.is_none());
    // An operator's disable on top of the owner's takes the hold over.
    block(m.set_peer_enabled(&w.alice, s, mine, false)).unwrap();
    let v = block(m.set_peer_enabled(&w.op, s, mine, false)).unwrap();
    assert_eq!(v.disabled_by, Some(DisabledBy::Administrator));
    w.refused(
        &w.alice,
        "peer.update",
        m.set_peer_enabled(&w.alice, s, mine, true),
        denied,
    );
    block(m.set_peer_enabled(&w.op, s, mine, true)).unwrap();

    // Expiry: the admin sets one; the user may bring it forward, never extend or lift.
    let now = w.clock.now();
    let day = time::Duration::days(1);
    block(m.set_peer_expiry(&w.op, s, mine, Some(now + day * 7))).unwrap();
    w.refused(
        &w.alice,
        "peer.update",
        m.set_peer_expiry(&w.alice, s, mine, None),
        denied,
    );
    w.refused(
        &w.alice,
        "peer.update",
        m.set_peer_expiry(&w.alice, s, mine, Some(now + day * 30)),
        denied,
    );
    let v = block(m.set_peer_expiry(&w.alice, s, mine, Some(now + day))).unwrap();
    assert_eq!(v.expires_at, Some(now + day));
    // Expired and swept: the disable is the expiry's; only an operator lifts it.
    w.clock.advance(day * 2);
    assert_eq!(block(m.sweep_expired(&w.root)).unwrap(), 1);
    let v = block(m.get_peer(&w.alice, s, mine)).unwrap();
    assert_eq!(v.disabled_by, Some(DisabledBy::Expiry));
    w.refused(
        &w.alice,
        "peer.update",
        m.set_peer_enabled(&w.alice, s, mine, true),
        denied,
    );
    block(m.set_peer_expiry(&w.op, s, mine, None)).unwrap();
    let v = block(m.set_peer_enabled(&w.op, s, mine, true)).unwrap();
    assert!(v.enabled);
}

#[test]
fn plan_and_status_show_a_user_only_their_own_and_write_nothing_for_them() {
    let w = world();
    let (m, s) = (&w.m, w.s);
    let wg = Arc::new(MemoryWireGuard::new());
    let host = Host::new("h", wg.clone(), Some(Arc::new(wg.network())));
    block(m.apply(
        &w.root,
        s,
        &host,
        wgm_core::manager::ApplyOptions::default(),
    ))
    .unwrap();
    let iface = InterfaceName::new("wg-office").unwrap();
    let bob_key = block(m.get_peer(&w.root, s, w.peer_id("bob-phone")))
        .unwrap()
        .public_key;
    let alice_key = block(m.get_peer(&w.root, s, w.peer_id("alice-phone")))
        .unwrap()
        .public_key;
    let bob_endpoint: std::net::SocketAddr = "[2001:db8::b0b]:40000".parse().unwrap();
    wg.simulate_roaming(&iface, &bob_key, bob_endpoint).unwrap();
    wg.simulate_traffic(&iface, &bob_key, 1234, 5678).unwrap();
    wg.simulate_traffic(&iface, &alice_key, 11, 22).unwrap();

    // The plan shows the whole device: not for a user.
    w.refused(&w.alice, "peer.read", m.plan(&w.alice, s, &host), denied);
    // Status: alice sees her peer only; nothing of bob's (name, key, endpoint, bytes).
    let n = w.audit_len();
    let st = block(m.status(&w.alice, s, &host)).unwrap();
    let text = serde_json::to_string(&st).unwrap();
    assert_eq!(st.peers.len(), 1, "{text}");
    assert_eq!(st.peers[0].name.as_deref(), Some("alice-phone"));
    for leak in [
        "bob-phone".to_owned(),
        bob_key.to_base64(),
        "2001:db8::b0b".to_owned(),
        "1234".to_owned(),
    ] {
        assert!(!text.contains(&leak), "{leak} in {text}");
    }
    // A caller who may only read writes nothing: no statistics stored, no record.
    let stored = block(m.get_peer(&w.root, s, w.peer_id("alice-phone")))
        .unwrap()
        .stats;
    assert_eq!(stored.rx_bytes, 0);
    assert_eq!(w.audit_len(), n);
    // The operator, who runs the device, sees everyone and records statistics.
    let st = block(m.status(&w.op, s, &host)).unwrap();
    assert_eq!(st.peers.len(), 2);
    let stored = block(m.get_peer(&w.root, s, w.peer_id("bob-phone")))
        .unwrap()
        .stats;
    assert_eq!((stored.rx_bytes, stored.tx_bytes), (1234, 5678));
    // History and diffs show every peer: not for a user either.
    w.refused(
        &w.alice,
        "config.read",
        m.history(&w.alice, s, RevisionNo::NONE, 10),
        denied,
    );
}

#[test]
fn errors_do_not_name_other_users_peers_or_networks() {
    let w = world();
    let (m, s) = (&w.m, w.s);
    // A custom role that may route networks to its own peers.
    let router = Role::custom(
        RoleName::new("self-router").unwrap(),
        Description::new("routes to own peers").unwrap(),
        vec![
            Permission::new(Resource::Server, Action::Read),
            Permission::new(Resource::Peer, Action::Read).own(),
            Permission::new(Resource::Peer, Action::Create).own(),
            Permission::new(Resource::Peer, Action::Update).own(),
            Permission::new(Resource::Peer, Action::Route).own(),
        ],
    )
    .unwrap();
    block(m.put_role(&w.root, router)).unwrap();
    block(m.update_peer(&w.op, s, w.peer_id("bob-phone"), extra(&["10.201.0.0/24"]))).unwrap();
    let cid = block(add_user(m, &w.root, "carol", "self-router"));
    let carol = block(principal(m, &w.local, &w.store, cid));
    let mut mine = peer("carol-gw");
    mine.extra_allowed_ips = vec![net("10.201.0.0/16")];
    let e = block(m.add_peer(&carol, s, mine)).unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, Error::InvalidInput { .. }), "{e:?}");
    assert!(!text.contains("bob"), "{text}");
    assert!(!text.contains("10.201.0.0/24"), "{text}");
    // The operator, who may see bob's peer, is told which.
    let mut theirs = peer("op-gw");
    theirs.extra_allowed_ips = vec![net("10.201.0.0/16")];
    let e = block(m.add_peer(&w.op, s, theirs)).unwrap_err().to_string();
    assert!(
        e.contains("bob-phone") && e.contains("10.201.0.0/24"),
        "{e}"
    );
}

#[test]
fn extra_allowed_ips_in_special_ranges_are_refused() {
    let w = world();
    let (m, s) = (&w.m, w.s);
    let mine = w.peer_id("alice-phone");
    for bad in [
        "127.0.0.0/8",
        "127.0.0.1/32",
        "0.0.0.0/8",
        "169.254.0.0/16",
        "224.0.0.0/4",
        "239.1.1.1/32",
        "255.255.255.255/32",
        "::1/128",
        "::/128",
        "fe80::/10",
        "fe80::1/128",
        "ff02::1/128",
        "0.0.0.0/0",
        "::/0",
        "10.0.0.1/8",
    ] {
        let e = block(m.update_peer(&w.op, s, mine, extra(&[bad]))).unwrap_err();
        match e {
            Error::InvalidInput { field, .. } => {
                assert_eq!(field, "peer.allowed_ips[0]", "{bad}");
            }
            other => panic!("{bad}: {other:?}"),
        }
    }
    // Overlaps with the server's pools (inside or around them) and within one list.
    for (bad, field) in [
        (vec!["10.200.0.128/25"], "peer.allowed_ips[0]"),
        (vec!["10.0.0.0/8"], "peer.allowed_ips[0]"),
        (vec!["fd00:200::/120"], "peer.allowed_ips[0]"),
        (vec!["fd00::/16"], "peer.allowed_ips[0]"),
        (
            vec!["192.168.7.0/24", "192.168.0.0/16"],
            "peer.allowed_ips[0]",
        ),
        (
            vec!["192.168.0.0/16", "192.168.7.0/24"],
            "peer.allowed_ips[0]",
        ),
    ] {
        let e = block(m.update_peer(&w.op, s, mine, extra(&bad))).unwrap_err();
        match e {
            Error::InvalidInput { field: f, .. } => assert_eq!(f, field, "{bad:?}"),
            other => panic!("{bad:?}: {other:?}"),
        }
    }
    for good in ["192.168.7.0/24", "2001:db8:7::/48", "100.64.0.0/10"] {
        block(m.update_peer(&w.op, s, mine, extra(&[good])))
            .unwrap_or_else(|e| panic!("{good}: {e}"));
    }
}

#[test]
fn the_peer_quota_is_per_user_across_servers() {
    let w = world();
    let m = &w.m;
    let s2 = block(m.create_server(
        &w.root,
        spec("lab", 51821, "fd00:201::/64", "10.202.0.0/24"),
    ))
    .unwrap()
    .id;
    // alice owns one peer on office; the quota of the `user` role is 10.
    let specs: Vec<NewPeer> = (1..=9).map(|i| peer(&format!("a{i}"))).collect();
    block(m.add_peers(&w.alice, s2, specs)).unwrap();
    let head = block(w.store.head(s2)).unwrap();
    let n = w.audit_len();
    let e = block(m.add_peer(&w.alice, s2, peer("eleventh"))).unwrap_err();
    assert!(denied(&e) && e.to_string().contains("quota"), "{e:?}");
    let e2 = block(m.add_peer(&w.alice, w.s, peer("eleventh"))).unwrap_err();
    assert!(denied(&e2), "{e2:?}");
    assert_eq!(block(w.store.head(s2)).unwrap(), head);
    let added = w.audit_since(n);
    assert_eq!(added.len(), 2, "{added:?}");
    assert!(added.iter().all(
        |r| r.entry.outcome == AuditOutcome::Denied && r.entry.action.as_str() == "peer.create"
    ));
    // Bob's quota is his own.
    block(m.add_peer(&w.bob, s2, peer("bob-2"))).unwrap();
}

#[test]
fn every_refusal_is_audited_and_token_actions_are_found_by_user() {
    let w = world();
    let (m, s) = (&w.m, w.s);
    let bobs = w.peer_id("bob-phone");
    // An object-level denial answered as "not found" is audited (and says no more).
    let n = w.audit_len();
    let e = block(m.get_peer(&w.alice, s, bobs)).unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }));
    let e2 = block(m.resolve_peer(&w.alice, s, "bob-phone")).unwrap_err();
    assert!(matches!(e2, Error::NotFound { .. }));
    let added = w.audit_since(n);
    assert_eq!(added.len(), 2, "{added:?}");
    for r in &added {
        assert_eq!(r.entry.outcome, AuditOutcome::Denied);
        assert_eq!(r.entry.action.as_str(), "peer.read");
        assert!(!r.entry.details.to_string().contains("bob"), "{r:?}");
    }
    // A refused read of a whole resource.
    w.refused(
        &w.alice,
        "audit.read",
        m.audit_log(&w.alice, &AuditQuery::default()),
        denied,
    );
    // Own-account checks: a wrong current password, another user's TOTP.
    block(m.set_password(&w.root, w.alice_id, None, "a long first passphrase")).unwrap();
    let alice = block(principal(m, &w.local, &w.store, w.alice_id));
    w.refused(
        &alice,
        "user.update",
        m.set_password(&alice, w.alice_id, Some("wrong"), "a long new passphrase"),
        |e| matches!(e, Error::Unauthenticated { .. }),
    );
    w.refused(
        &alice,
        "user.update",
        m.enroll_totp(&alice, w.bob_id, "wgm"),
        denied,
    );
    // A token scope beyond what the user holds.
    w.refused(
        &alice,
        "token.create",
        m.create_token(
            &alice,
            NewToken {
                user: w.alice_id,
                name: "too-wide".into(),
                scopes: Some(vec![Permission::new(Resource::Server, Action::Delete)]),
                expires_at: None,
            },
        ),
        denied,
    );
    // A refused token scope: the token may only read.
    let (_, secret) = block(m.create_token(
        &alice,
        NewToken {
            user: w.alice_id,
            name: "reader".into(),
            scopes: Some(vec![
                Permission::new(Resource::Server, Action::Read),
                Permission::new(Resource::Peer, Action::Read).own(),
            ]),
            expires_at: None,
        },
    ))
    .unwrap();
    let tok = block(m.authenticate_token(&secret)).unwrap();
    w.refused(
        &tok,
        "peer.create",
        m.add_peer(&tok, s, peer("via-token")),
        denied,
    );
    // `audit --actor user:alice` finds what alice did through her tokens too.
    let q = AuditQuery {
        actor: Some("user:alice".into()),
        ..AuditQuery::default()
    };
    let mine = block(m.audit_log(&w.root, &q)).unwrap();
    assert!(
        mine.iter().any(|r| r.entry.actor.label.contains(" token:")),
        "{mine:?}"
    );
    assert!(mine
        .iter()
        .all(|r| r.entry.actor.label.starts_with("user:alice")));
    // A prefix of another name does not match.
    let q = AuditQuery {
        actor: Some("user:alic".into()),
        ..AuditQuery::default()
    };
    assert!(block(m.audit_log(&w.root, &q)).unwrap().is_empty());
}

#[test]
fn servers_on_one_host_share_no_port_key_or_pool() {
    let w = world();
    let m = &w.m;
    let clash = |sp: NewServer, field: &str| {
        let e = block(m.create_server(&w.root, sp)).unwrap_err();
        match e {
            Error::InvalidInput { field: f, .. } => assert_eq!(f, field),
            other => panic!("{field}: {other:?}"),
        }
    };
    clash(
        spec("a", 51820, "fd00:400::/64", "10.40.0.0/24"),
        "server.listen_port",
    );
    clash(
        spec("b", 51821, "fd00:200::/56", "10.40.0.0/24"),
        "server.ipv6_pool",
    );
    clash(
        spec("c", 51821, "fd00:400::/64", "10.200.0.128/25"),
        "server.ipv4_pool",
    );
    let office_key = {
        // The office server's key, as an export would give it.
        let cfg = block(m.server_config(&w.root, w.s)).unwrap();
        cfg.lines()
            .find_map(|l| l.strip_prefix("PrivateKey = "))
            .unwrap()
            .to_owned()
    };
    let mut same_key = spec("d", 51821, "fd00:400::/64", "10.40.0.0/24");
    same_key.private_key = Some(wgm_core::keys::PrivateKey::from_base64(&office_key).unwrap());
    clash(same_key, "server.private_key");
    // Import: the same rules, and a peer's allowed IPs may not cover the pool or the
    // server's address.
    let import = |text: String| {
        block(m.import_server(
            &w.root,
            ServerName::new("imp").unwrap(),
            &text,
            ImportOptions {
                interface: Some(InterfaceName::new("wg-imp").unwrap()),
                ..ImportOptions::default()
            },
        ))
    };
    let k = wgm_core::keys::PrivateKey::generate();
    let pk = wgm_core::keys::PrivateKey::generate().public_key();
    let iface = |port: u16, key: &str| {
        format!("[Interface]\nPrivateKey = {key}\nAddress = fd00:500::1/64, 10.50.0.1/24\nListenPort = {port}\n")
    };
    let e = import(iface(51820, k.expose_base64().as_str())).unwrap_err();
    assert!(
        matches!(&e, Error::InvalidInput { field, .. } if field == "import.listen_port"),
        "{e:?}"
    );
    let e = import(iface(51822, &office_key)).unwrap_err();
    assert!(
        matches!(&e, Error::InvalidInput { field, .. } if field == "import.private_key"),
        "{e:?}"
    );
    for covering in [
        "10.50.0.0/24",
        "10.50.0.0/16",
        "10.50.0.1/32",
        "fd00:500::/64",
    ] {
        let text = format!(
            "{}\n[Peer]\nPublicKey = {}\nAllowedIPs = fd00:500::2/128, 10.50.0.2/32, {covering}\n",
            iface(51822, k.expose_base64().as_str()),
            pk.to_base64()
        );
        let e = import(text).unwrap_err();
        assert!(
            matches!(&e, Error::InvalidInput { field, .. } if field.starts_with("import.peers[0].AllowedIPs")),
            "{covering}: {e:?}"
        );
    }
    let text = format!(
        "{}\n[Peer]\nPublicKey = {}\nAllowedIPs = fd00:500::2/128, 10.50.0.2/32, 127.0.0.0/8\n",
        iface(51822, k.expose_base64().as_str()),
        pk.to_base64()
    );
    assert!(import(text).is_err());
    // Moving a server onto another's port is refused too.
    let lab = block(m.create_server(&w.root, spec("lab", 51823, "fd00:600::/64", "10.60.0.0/24")))
        .unwrap();
    let e = block(m.update_server(
        &w.root,
        lab.id,
        ServerUpdate {
            listen_port: Some(ListenPort::new(51820).unwrap()),
            ..ServerUpdate::default()
        },
    ))
    .unwrap_err();
    assert!(
        matches!(&e, Error::InvalidInput { field, .. } if field == "server.listen_port"),
        "{e:?}"
    );
}

#[test]
fn rollback_keeps_current_keys_and_revalidates_what_it_restores() {
    let w = world();
    let (m, s) = (&w.m, w.s);
    let alice_peer = w.peer_id("alice-phone");
    let start = w.head().unwrap();
    let before = block(m.client_config(&w.root, s, alice_peer)).unwrap().text;
    block(m.rotate_peer_key(&w.root, s, alice_peer)).unwrap();
    block(m.rotate_peer_psk(&w.root, s, alice_peer)).unwrap();
    block(m.rotate_server_key(&w.root, s)).unwrap();
    // Keys alone: nothing to roll back, and the refusal says why.
    let e = block(m.rollback(&w.root, s, start))
        .unwrap_err()
        .to_string();
    assert!(e.contains("keeps the current keys"), "{e}");
    block(m.update_peer(
        &w.root,
        s,
        alice_peer,
        PeerUpdate {
            keepalive: Some(wgm_core::net::Keepalive::new(5).unwrap()),
            ..PeerUpdate::default()
        },
    ))
    .unwrap();
    let rotated = block(m.client_config(&w.root, s, alice_peer)).unwrap().text;
    let rec = block(m.rollback(&w.root, s, start)).unwrap();
    assert!(
        rec.summary.contains("current keys kept")
            && rec.summary.contains("server key")
            && rec.summary.contains("key of peer alice-phone")
            && rec.summary.contains("preshared key of peer alice-phone"),
        "{}",
        rec.summary
    );
    let after = block(m.client_config(&w.root, s, alice_peer)).unwrap().text;
    let keys = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| l.contains("Key ="))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(
        keys(&after),
        keys(&rotated),
        "rollback brought old keys back"
    );
    assert_ne!(keys(&after), keys(&before));
    assert!(
        after.contains("PersistentKeepalive = 25"),
        "{}",
        after.as_str()
    );

    // Bringing old keys back is its own act: refused to a user, audited for the
    // operator.
    let n = w.audit_len();
    let back = block(m.restore_peer_keys(&w.op, s, alice_peer, start)).unwrap();
    let old_key = block(m.history(&w.root, s, RevisionNo::NONE, 1000))
        .unwrap()
        .into_iter()
        .filter(|r| r.revision <= start)
        .flat_map(|r| r.changes)
        .find_map(|c| match c {
            Change::PeerAdded { peer } if peer.id == alice_peer => Some(peer.public_key),
            _ => None,
        })
        .unwrap();
    assert_eq!(back.public_key, old_key);
    assert_eq!(
        w.audit_since(n)[0].entry.action.as_str(),
        "peer.restore_keys"
    );
    w.refused(
        &w.alice,
        "config.rollback",
        m.restore_peer_keys(&w.alice, s, alice_peer, start),
        denied,
    );
    let server_start = block(m.history(&w.root, s, RevisionNo::NONE, 1)).unwrap()[0].revision;
    block(m.restore_server_key(&w.op, s, server_start)).unwrap();

    // A peer removed and restored comes back with the keys it had when removed.
    let bobs = w.peer_id("bob-phone");
    let with_bob = w.head().unwrap();
    block(m.rotate_peer_key(&w.root, s, bobs)).unwrap();
    let bob_key = block(m.get_peer(&w.root, s, bobs)).unwrap().public_key;
    block(m.remove_peer(&w.root, s, bobs)).unwrap();
    let rec = block(m.rollback(&w.root, s, with_bob)).unwrap();
    // Only the keys that differ from the past state are named: bob's (rotated since),
    // not the server's or alice's (unchanged since `with_bob`).
    assert!(
        rec.summary.contains("key of peer bob-phone")
            && !rec.summary.contains("server key")
            && !rec.summary.contains("alice-phone"),
        "{}",
        rec.summary
    );
    assert_eq!(
        block(m.get_peer(&w.root, s, bobs)).unwrap().public_key,
        bob_key
    );

    // Revisions written behind the manager's back by someone holding the keys (so their
    // MACs verify; without them the MAC check refuses them first, `tests/tamper.rs`):
    // a peer on the server's own IPv4 or IPv6 address, or with a default route. Rolling
    // back to one is refused by the re-validation, naming the field, before anything
    // is written.
    let key = block(w.store.audit_key())
        .unwrap()
        .unwrap()
        .open(&Sealer::new(MasterKey::from_bytes(w.master)))
        .unwrap();
    let actor = Actor {
        user_id: None,
        label: "local:mallory".into(),
    };
    let write = |before: &wgm_core::model::Peer, after: &wgm_core::model::Peer| {
        let st = block(w.store.load_server(s)).unwrap().unwrap();
        let at = w.clock.now();
        block(w.store.commit(
            Commit {
                server_id: s,
                expected: st.revision,
                changes: vec![Change::PeerUpdated {
                    before: Box::new(before.clone()),
                    after: Box::new(after.clone()),
                }],
                author: actor.clone(),
                at,
                summary: "written behind the manager's back".into(),
                audit: AuditEntry {
                    at,
                    actor: actor.clone(),
                    action: wgm_core::audit::AuditAction::PeerUpdate,
                    object: "x".into(),
                    server_id: Some(s),
                    revision: None,
                    outcome: AuditOutcome::Success,
                    details: serde_json::Value::Null,
                },
            },
            &key,
        ))
        .unwrap();
        w.head().unwrap()
    };
    let st = block(w.store.load_server(s)).unwrap().unwrap();
    let forgeries: Vec<Forgery<'_>> = vec![
        (
            "address_v4",
            Box::new(|p: &mut wgm_core::model::Peer| p.address_v4 = st.server.address_v4),
        ),
        (
            "address_v6",
            Box::new(|p: &mut wgm_core::model::Peer| p.address_v6 = Some(st.server.address_v6)),
        ),
        (
            "allowed_ips[0]",
            Box::new(|p: &mut wgm_core::model::Peer| {
                p.extra_allowed_ips = vec![net("0.0.0.0/0")];
            }),
        ),
    ];
    for (what, forge) in forgeries {
        let honest = block(w.store.load_server(s)).unwrap().unwrap().peers[&alice_peer].clone();
        let mut forged = honest.clone();
        forge(&mut forged);
        let forged_at = write(&honest, &forged);
        write(&forged, &honest);
        let head = w.head();
        let r = block(m.rollback(&w.root, s, forged_at));
        match &r {
            Err(Error::InvalidInput { field, reason }) => {
                assert!(
                    field.contains("alice-phone") && field.ends_with(what),
                    "{what}: {field}: {reason}"
                );
            }
            other => panic!("{what}: a forged revision was restored: {other:?}"),
        }
        assert_eq!(w.head(), head, "{what}");
    }
}
