//! Firewall policy through the model and the manager: stored records without a policy,
//! who may change one, history/diff/rollback, and apply/status on a host with a
//! firewall backend ([`MemoryFirewall`]).

use std::sync::Arc;

use ipnet::IpNet;
use wgm_core::backend::firewall::{FirewallBackend, MemoryFirewall, Tamper};
use wgm_core::backend::MemoryWireGuard;
use wgm_core::manager::{
    ApplyOptions, Host, LocalAdmin, Manager, ManagerConfig, ManualClock, NewPeer, NewServer,
    NewUser,
};
use wgm_core::model::{Peer, PeerId, Server, ServerId, UserId};
use wgm_core::names::{InterfaceName, PeerName, RoleName, ServerName, UserName};
use wgm_core::net::ListenPort;
use wgm_core::policy::{PeerPolicy, QuotaAction, ServerPolicy, Verdict};
use wgm_core::rbac::Principal;
use wgm_core::seal::{MasterKey, Sealer};
use wgm_core::store::MemoryStore;
use wgm_core::{auth, Error};

fn block<F: std::future::Future>(f: F) -> F::Output {
    futures::executor::block_on(f)
}

struct World {
    m: Manager,
    store: Arc<MemoryStore>,
    /// The master key's bytes, to open the store's audit key where a test writes a
    /// revision behind the manager's back ([`forge`]).
    master: [u8; 32],
    local: LocalAdmin,
    root: Principal,
    s: ServerId,
    a: PeerId,
    b: PeerId,
}

fn world() -> World {
    world_with(None)
}

fn world_with(delegation: Option<wgm_core::model::Delegation>) -> World {
    let store = Arc::new(MemoryStore::new());
    let clock = Arc::new(ManualClock::new(
        time::OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap(),
    ));
    let master_key = MasterKey::generate();
    let master = *master_key.expose_bytes();
    let (m, local) = Manager::builder(store.clone(), Sealer::new(master_key))
        .config(ManagerConfig {
            password_params: auth::password::PasswordParams::insecure_for_tests(),
            ..ManagerConfig::default()
        })
        .clock(clock)
        .build_with_local_admin();
    let root = local.principal("root");
    let (s, a, b) = block(async {
        let mut spec = NewServer::new(
            ServerName::new("office").unwrap(),
            InterfaceName::new("wg0").unwrap(),
            ListenPort::new(51820).unwrap(),
        );
        spec.ipv6_pool = Some("fd00:200::/64".parse().unwrap());
        spec.ipv4_pool = Some("10.200.0.0/24".parse().unwrap());
        spec.delegation = delegation;
        let s = m.create_server(&root, spec).await.unwrap().id;
        let a = m
            .add_peer(&root, s, NewPeer::new(PeerName::new("a").unwrap()))
            .await
            .unwrap()
            .id;
        let b = m
            .add_peer(&root, s, NewPeer::new(PeerName::new("b").unwrap()))
            .await
            .unwrap()
            .id;
        (s, a, b)
    });
    World {
        m,
        store,
        master,
        local,
        root,
        s,
        a,
        b,
    }
}

/// Change peer `id` with `f` in a revision written straight into the store by someone
/// holding the keys (so it verifies), past every check of the manager: a state the
/// manager refuses to make, as an older version or a hand edit could have left it.
async fn forge(w: &World, id: PeerId, f: impl FnOnce(&mut Peer)) {
    use wgm_core::model::{Actor, AuditEntry, AuditOutcome, Change, Commit};
    use wgm_core::store::{AuditStore, ServerStore};
    let key = w
        .store
        .audit_key()
        .await
        .unwrap()
        .unwrap()
        .open(&Sealer::new(MasterKey::from_bytes(w.master)))
        .unwrap();
    let st = load(w).await;
    let before = st.peers[&id].clone();
    let mut after = before.clone();
    f(&mut after);
    let actor = Actor {
        user_id: None,
        label: "local:forger".into(),
    };
    let at = time::OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
    w.store
        .commit(
            Commit {
                server_id: w.s,
                expected: st.revision,
                changes: vec![Change::PeerUpdated {
                    before: Box::new(before),
                    after: Box::new(after),
                }],
                author: actor.clone(),
                at,
                summary: "written behind the manager's back".into(),
                audit: AuditEntry {
                    at,
                    actor,
                    action: wgm_core::audit::AuditAction::PeerUpdate,
                    object: "forged".into(),
                    server_id: Some(w.s),
                    revision: None,
                    outcome: AuditOutcome::Success,
                    details: serde_json::Value::Null,
                },
            },
            &key,
        )
        .await
        .unwrap();
}

async fn load(w: &World) -> wgm_core::model::ServerState {
    use wgm_core::store::ServerStore;
    w.store.load_server(w.s).await.unwrap().unwrap()
}

async fn user(w: &World, name: &str, role: &str) -> (Principal, UserId) {
    use wgm_core::store::IdentityStore;
    let id =
        w.m.create_user(
            &w.root,
            NewUser::new(UserName::new(name).unwrap(), RoleName::new(role).unwrap()),
        )
        .await
        .unwrap()
        .id;
    let u = w.store.get_user(id).await.unwrap().unwrap();
    (w.m.principal_for(&w.local, &u).await.unwrap(), id)
}

fn limited() -> PeerPolicy {
    PeerPolicy {
        allow: Some(vec![
            "fd00:300::/48".parse().unwrap(),
            "10.9.0.0/16:tcp:443".parse().unwrap(),
        ]),
        rate_up: Some("10mbit".parse().unwrap()),
        quota: Some("1000B/1d".parse().unwrap()),
        quota_action: QuotaAction::Drop,
        ..PeerPolicy::default()
    }
}

#[test]
fn records_without_a_policy_read_back_as_defaults_and_defaults_are_not_written() {
    let w = world();
    block(async {
        let state = load(&w).await;
        let server = serde_json::to_value(&state.server).unwrap();
        assert!(
            server.get("policy").is_none(),
            "a default policy is not written"
        );
        let back: Server = serde_json::from_value(server).unwrap();
        assert_eq!(back.policy, ServerPolicy::default());
        let peer = serde_json::to_value(&state.peers[&w.a]).unwrap();
        assert!(peer.get("policy").is_none());
        let back: Peer = serde_json::from_value(peer).unwrap();
        assert_eq!(back.policy, PeerPolicy::default());

        w.m.set_peer_policy(&w.root, w.s, w.a, limited())
            .await
            .unwrap();
        let state = load(&w).await;
        let peer = serde_json::to_value(&state.peers[&w.a]).unwrap();
        let back: Peer = serde_json::from_value(peer).unwrap();
        assert_eq!(back.policy, limited());
    });
}

#[test]
fn users_may_not_change_policy_even_of_their_own_peers_operators_may() {
    let w = world();
    block(async {
        let (alice, alice_id) = user(&w, "alice", "user").await;
        let mine =
            w.m.add_peer(
                &alice,
                w.s,
                NewPeer {
                    owner: Some(alice_id),
                    ..NewPeer::new(PeerName::new("phone").unwrap())
                },
            )
            .await
            .unwrap()
            .id;
        let e =
            w.m.set_peer_policy(&alice, w.s, mine, limited())
                .await
                .unwrap_err();
        assert!(matches!(e, Error::PermissionDenied { .. }), "{e}");
        assert!(e.to_string().contains("peer:policy"), "{e}");
        let e =
            w.m.set_server_policy(
                &alice,
                w.s,
                ServerPolicy {
                    peer_to_peer: true,
                    ..ServerPolicy::default()
                },
            )
            .await
            .unwrap_err();
        assert!(matches!(e, Error::PermissionDenied { .. }), "{e}");
        let (auditor, _) = user(&w, "audrey", "auditor").await;
        assert!(w
            .m
            .set_peer_policy(&auditor, w.s, mine, limited())
            .await
            .is_err());
        let (op, _) = user(&w, "olga", "operator").await;
        let v =
            w.m.set_peer_policy(&op, w.s, mine, limited())
                .await
                .unwrap();
        assert_eq!(v.policy, limited());
        let v =
            w.m.set_server_policy(
                &op,
                w.s,
                ServerPolicy {
                    peer_to_peer: true,
                    ..ServerPolicy::default()
                },
            )
            .await
            .unwrap();
        assert!(v.policy.peer_to_peer);
        // The owner sees the policy but cannot lift it.
        let seen = w.m.get_peer(&alice, w.s, mine).await.unwrap();
        assert_eq!(seen.policy, limited());
    });
}

#[test]
fn invalid_policies_are_refused_naming_the_field_and_change_nothing() {
    let w = world();
    block(async {
        let before = load(&w).await.revision;
        let bad = PeerPolicy {
            allow: Some(vec![
                "10.0.0.0/8".parse().unwrap(),
                "10.0.0.0/8".parse().unwrap(),
            ]),
            ..PeerPolicy::default()
        };
        let e =
            w.m.set_peer_policy(&w.root, w.s, w.a, bad)
                .await
                .unwrap_err();
        assert!(matches!(e, Error::InvalidInput { .. }), "{e}");
        assert!(e.to_string().contains("peer.policy.allow[1]"), "{e}");
        let e =
            w.m.set_server_policy(&w.root, w.s, ServerPolicy::default())
                .await
                .unwrap_err();
        assert!(e.to_string().contains("server.policy"), "{e}");
        assert_eq!(load(&w).await.revision, before);
    });
}

#[test]
fn diff_shows_policy_fields_and_rollback_restores_them() {
    let w = world();
    block(async {
        let r0 = load(&w).await.revision;
        let deny = ServerPolicy {
            default_verdict: Verdict::Deny,
            masquerade4: Some(InterfaceName::new("eth0").unwrap()),
            ..ServerPolicy::default()
        };
        w.m.set_server_policy(&w.root, w.s, deny.clone())
            .await
            .unwrap();
        w.m.set_peer_policy(&w.root, w.s, w.a, limited())
            .await
            .unwrap();
        let r2 = load(&w).await.revision;
        let d = w.m.diff(&w.root, w.s, r0, r2).await.unwrap();
        let server = d.iter().find(|e| e.kind == "server").unwrap();
        assert_eq!(
            server.fields["policy.default_verdict"],
            (serde_json::json!("allow"), serde_json::json!("deny"))
        );
        assert!(server.fields.contains_key("policy.masquerade4"));
        assert!(
            !server.fields.contains_key("policy.forwarding"),
            "unchanged fields are not shown"
        );
        let peer = d.iter().find(|e| e.kind == "peer_changed").unwrap();
        assert!(peer.fields.contains_key("policy.allow"));
        assert!(peer.fields.contains_key("policy.quota"));
        assert!(!peer.fields.contains_key("policy.rate_down"));

        w.m.rollback(&w.root, w.s, r0).await.unwrap();
        let st = load(&w).await;
        assert_eq!(st.server.policy, ServerPolicy::default());
        assert_eq!(st.peers[&w.a].policy, PeerPolicy::default());
        // And forward again.
        w.m.rollback(&w.root, w.s, r2).await.unwrap();
        let st = load(&w).await;
        assert_eq!(st.server.policy, deny);
        assert_eq!(st.peers[&w.a].policy, limited());
    });
}

fn host(fw: &Arc<MemoryFirewall>) -> Host {
    let wg = Arc::new(MemoryWireGuard::new());
    Host::new("h1", wg.clone(), Some(Arc::new(wg.network()))).with_firewall(fw.clone())
}

#[test]
fn apply_converges_the_firewall_incrementally_repairs_drift_and_status_shows_quota() {
    let w = world();
    let fw = Arc::new(MemoryFirewall::new());
    let host = host(&fw);
    let wg0 = InterfaceName::new("wg0").unwrap();
    block(async {
        w.m.set_peer_policy(&w.root, w.s, w.a, limited())
            .await
            .unwrap();
        let r =
            w.m.apply(&w.root, w.s, &host, ApplyOptions::default())
                .await
                .unwrap();
        assert!(r.converged, "{r:?}");
        let out = r.firewall.as_ref().unwrap();
        assert!(out.executed && out.converged && out.error.is_none());
        assert!(out.plan.delta.server.is_some());
        assert_eq!(out.plan.delta.peers.len(), 2);
        let live = fw.read_firewall(&wg0).await.unwrap().unwrap();
        let st = load(&w).await;
        let (ka, kb) = (st.peers[&w.a].public_key, st.peers[&w.b].public_key);
        assert_eq!(live.peers[&ka].quota.unwrap().bytes, 1000);
        assert_eq!(live.peers[&ka].limit_up, Some(1_250_000));
        assert!(live.peers[&kb].quota.is_none());
        assert!(w
            .m
            .firewall_plan(&w.root, w.s, &host)
            .await
            .unwrap()
            .unwrap()
            .is_empty());

        // Counters: peer a uses 600 of 1000 bytes, then 600 more are dropped.
        let a6: IpNet = IpNet::V6(st.peers[&w.a].address_v6.unwrap().into());
        assert!(fw.simulate_up(&wg0, a6, 600).unwrap());
        let status = w.m.status(&w.root, w.s, &host).await.unwrap();
        let sa = status.peers.iter().find(|p| p.public_key == ka).unwrap();
        let f = sa.firewall.unwrap();
        assert_eq!(f.quota_used, Some(600));
        assert_eq!(f.quota_remaining, Some(400));
        assert_eq!(f.dropped_bytes, 0);
        assert!(!fw.simulate_up(&wg0, a6, 600).unwrap());
        let status = w.m.status(&w.root, w.s, &host).await.unwrap();
        let sa = status.peers.iter().find(|p| p.public_key == ka).unwrap();
        let f = sa.firewall.unwrap();
        assert_eq!(f.quota_remaining, Some(0));
        assert_eq!(f.dropped_bytes, 600);
        let sb = status.peers.iter().find(|p| p.public_key == kb).unwrap();
        assert_eq!(sb.firewall.unwrap().quota_used, None);

        // Changing b touches b only; a keeps its quota use.
        let b_policy = PeerPolicy {
            rate_down: Some("1mbit".parse().unwrap()),
            ..PeerPolicy::default()
        };
        w.m.set_peer_policy(&w.root, w.s, w.b, b_policy)
            .await
            .unwrap();
        let r =
            w.m.apply(&w.root, w.s, &host, ApplyOptions::default())
                .await
                .unwrap();
        assert!(r.converged);
        let out = r.firewall.unwrap();
        assert!(out.plan.delta.server.is_none());
        assert_eq!(out.plan.delta.peers.len(), 1);
        assert_eq!(out.plan.delta.peers[0].key, kb);
        let live = fw.read_firewall(&wg0).await.unwrap().unwrap();
        assert_eq!(live.peers[&ka].quota.unwrap().used, f.quota_used.unwrap());
        assert_eq!(live.peers[&kb].limit_down, Some(125_000));

        // Drift is repaired by the next apply, even with nothing new in the store.
        fw.tamper(&wg0, Tamper::AlterChain(ka));
        fw.tamper(&wg0, Tamper::AlterStatic);
        let plan =
            w.m.firewall_plan(&w.root, w.s, &host)
                .await
                .unwrap()
                .unwrap();
        assert!(!plan.is_empty());
        let r =
            w.m.apply(&w.root, w.s, &host, ApplyOptions::default())
                .await
                .unwrap();
        assert!(r.converged);
        assert!(r.firewall.unwrap().executed);
        assert!(w
            .m
            .firewall_plan(&w.root, w.s, &host)
            .await
            .unwrap()
            .unwrap()
            .is_empty());

        // A disabled peer leaves the firewall.
        w.m.set_peer_enabled(&w.root, w.s, w.b, false)
            .await
            .unwrap();
        w.m.apply(&w.root, w.s, &host, ApplyOptions::default())
            .await
            .unwrap();
        let live = fw.read_firewall(&wg0).await.unwrap().unwrap();
        assert!(!live.peers.contains_key(&kb));
        assert!(live.peers.contains_key(&ka));
    });
}

#[test]
fn a_failed_firewall_apply_is_reported_and_not_converged() {
    let w = world();
    let fw = Arc::new(MemoryFirewall::new());
    let host = host(&fw);
    block(async {
        fw.inject(wgm_core::backend::firewall::FirewallFault::FailNextApply);
        let r =
            w.m.apply(&w.root, w.s, &host, ApplyOptions::default())
                .await
                .unwrap();
        assert!(!r.converged);
        let out = r.firewall.unwrap();
        assert!(out.error.is_some() && !out.converged && !out.remaining.is_empty());
        // A dry run plans and changes nothing.
        let r =
            w.m.apply(
                &w.root,
                w.s,
                &host,
                ApplyOptions {
                    dry_run: true,
                    ..ApplyOptions::default()
                },
            )
            .await
            .unwrap();
        assert!(!r.firewall.unwrap().executed);
        let r =
            w.m.apply(&w.root, w.s, &host, ApplyOptions::default())
                .await
                .unwrap();
        assert!(r.converged);
    });
}

#[test]
fn a_host_without_a_firewall_leaves_reports_as_they_were() {
    let w = world();
    let wg = Arc::new(MemoryWireGuard::new());
    let host = Host::new("h1", wg.clone(), Some(Arc::new(wg.network())));
    block(async {
        let r =
            w.m.apply(&w.root, w.s, &host, ApplyOptions::default())
                .await
                .unwrap();
        assert!(r.converged && r.firewall.is_none());
        assert!(serde_json::to_value(&r).unwrap().get("firewall").is_none());
        assert!(w
            .m
            .firewall_plan(&w.root, w.s, &host)
            .await
            .unwrap()
            .is_none());
        let s = w.m.status(&w.root, w.s, &host).await.unwrap();
        assert!(s.peers.iter().all(|p| p.firewall.is_none()));
    });
}

/// A world whose server delegates /64s out of `fd00:900::/48`.
fn delegating_world() -> World {
    world_with(Some(wgm_core::model::Delegation {
        pool: "fd00:900::/48".parse().unwrap(),
        prefix_len: 64,
    }))
}

/// A peer's delegated prefix and extra allowed IPs are its networks in the firewall:
/// traffic from or to any address inside them is the peer's, counted in its elements and
/// its quota (which drops it once used up); the plan after the apply is empty.
#[test]
fn routed_networks_of_a_peer_count_as_the_peer() {
    let w = delegating_world();
    let fw = Arc::new(MemoryFirewall::new());
    let host = host(&fw);
    let wg0 = InterfaceName::new("wg0").unwrap();
    block(async {
        let mut spec = NewPeer::new(PeerName::new("site").unwrap());
        spec.prefix = wgm_core::manager::AddrRequest::Auto;
        spec.extra_allowed_ips = vec![
            "192.168.50.0/24".parse().unwrap(),
            "2001:db8:50::/48".parse().unwrap(),
        ];
        let site = w.m.add_peer(&w.root, w.s, spec).await.unwrap().id;
        w.m.set_peer_policy(&w.root, w.s, site, limited())
            .await
            .unwrap();
        let r =
            w.m.apply(&w.root, w.s, &host, ApplyOptions::default())
                .await
                .unwrap();
        assert!(r.converged, "{r:?}");
        let st = load(&w).await;
        let p = &st.peers[&site];
        let prefix = IpNet::V6(p.delegated_prefix.unwrap());
        let live = fw.read_firewall(&wg0).await.unwrap().unwrap();
        let mut want: Vec<IpNet> = p.allowed_ips();
        want.sort();
        assert_eq!(live.peers[&p.public_key].addresses(), want);
        assert!(live.peers[&p.public_key].addresses().contains(&prefix));
        assert!(w
            .m
            .firewall_plan(&w.root, w.s, &host)
            .await
            .unwrap()
            .unwrap()
            .is_empty());

        // A host in the delegated prefix and one behind the peer use the peer's quota of
        // 1000 bytes, up and down; the third packet is dropped.
        let in_prefix: IpNet = IpNet::from(prefix.hosts().nth(0x1234).unwrap());
        let behind: IpNet = "192.168.50.9/32".parse().unwrap();
        assert!(fw.simulate_up(&wg0, in_prefix, 400).unwrap());
        assert!(fw.simulate_down(&wg0, behind, 400).unwrap());
        assert!(!fw.simulate_up(&wg0, behind, 400).unwrap());
        let status = w.m.status(&w.root, w.s, &host).await.unwrap();
        let f = status
            .peers
            .iter()
            .find(|x| x.public_key == p.public_key)
            .unwrap()
            .firewall
            .unwrap();
        assert_eq!(f.quota_used, Some(1000));
        assert_eq!(f.dropped_bytes, 400);
        assert_eq!(f.up_bytes, 800);
        assert_eq!(f.down_bytes, 400);

        // Routed networks changed: only this peer's elements move.
        w.m.update_peer(
            &w.root,
            w.s,
            site,
            wgm_core::manager::PeerUpdate {
                extra_allowed_ips: Some(vec!["192.168.51.0/24".parse().unwrap()]),
                ..wgm_core::manager::PeerUpdate::default()
            },
        )
        .await
        .unwrap();
        let r =
            w.m.apply(&w.root, w.s, &host, ApplyOptions::default())
                .await
                .unwrap();
        assert!(r.converged, "{r:?}");
        let delta = &r.firewall.as_ref().unwrap().plan.delta;
        assert!(delta.server.is_none());
        assert_eq!(delta.peers.len(), 1);
        assert!(delta.peers[0].put_objects.is_empty() && delta.peers[0].remove_objects.is_empty());
        let live = fw.read_firewall(&wg0).await.unwrap().unwrap();
        let nets = live.peers[&p.public_key].addresses();
        assert!(nets.contains(&"192.168.51.0/24".parse().unwrap()));
        assert!(!nets.contains(&"192.168.50.0/24".parse().unwrap()));
        // The quota object stayed: its use is kept.
        assert_eq!(live.peers[&p.public_key].counters.quota_used, Some(1000));
    });
}

/// A network routed to a peer may not lie in (or hold) the server's delegation pool,
/// where a prefix delegated later could meet it. Should networks of two peers overlap all
/// the same (a store written by an older version, or by hand: forged here), the apply is
/// refused with the field named, before the device or the firewall is touched.
#[test]
fn overlapping_networks_of_two_peers_refuse_the_apply_before_anything_changes() {
    let w = delegating_world();
    let fw = Arc::new(MemoryFirewall::new());
    let wg = Arc::new(MemoryWireGuard::new());
    let host = Host::new("h1", wg.clone(), Some(Arc::new(wg.network()))).with_firewall(fw.clone());
    let wg0 = InterfaceName::new("wg0").unwrap();
    block(async {
        for (inside, why) in [
            ("fd00:900::/64", "inside"),
            ("fd00:900:0:ff::/80", "inside"),
            ("fd00:900::/32", "holding"),
        ] {
            let mut spec = NewPeer::new(PeerName::new("routed").unwrap());
            spec.extra_allowed_ips =
                vec!["2001:db8:9::/64".parse().unwrap(), inside.parse().unwrap()];
            let e = w.m.add_peer(&w.root, w.s, spec).await.unwrap_err();
            assert_eq!(
                e.to_string(),
                format!(
                    "invalid peer.allowed_ips[1]: overlaps the server's delegation pool fd00:900::/48"
                ),
                "{why}"
            );
        }
        let mut spec = NewPeer::new(PeerName::new("routed").unwrap());
        spec.extra_allowed_ips = vec!["2001:db8:9::/64".parse().unwrap()];
        let routed = w.m.add_peer(&w.root, w.s, spec).await.unwrap().id;
        let update = wgm_core::manager::PeerUpdate {
            extra_allowed_ips: Some(vec!["fd00:900::/64".parse().unwrap()]),
            ..Default::default()
        };
        let e =
            w.m.update_peer(&w.root, w.s, routed, update)
                .await
                .unwrap_err();
        assert!(e.to_string().contains("delegation pool"), "{e}");
        let mut spec = NewPeer::new(PeerName::new("delegated").unwrap());
        spec.prefix = wgm_core::manager::AddrRequest::Fixed("fd00:900::/64".parse().unwrap());
        w.m.add_peer(&w.root, w.s, spec).await.unwrap();
        forge(&w, routed, |p| {
            p.extra_allowed_ips = vec!["fd00:900::/64".parse().unwrap()];
        })
        .await;
        let e =
            w.m.apply(&w.root, w.s, &host, ApplyOptions::default())
                .await
                .unwrap_err();
        assert_eq!(e.code(), "invalid_input", "{e}");
        let msg = e.to_string();
        assert!(
            msg.starts_with("invalid firewall.peers[")
                && msg.contains("].addresses[")
                && msg.contains("fd00:900::/64 is also an address of peer"),
            "{msg}"
        );
        assert!(fw.read_firewall(&wg0).await.unwrap().is_none());
        assert!(
            wgm_core::backend::WireGuardBackend::read_device(wg.as_ref(), &wg0)
                .await
                .unwrap()
                .is_none()
        );
        // The plan says the same.
        assert_eq!(
            w.m.firewall_plan(&w.root, w.s, &host)
                .await
                .unwrap_err()
                .code(),
            "invalid_input"
        );
    });
}

/// A network of a peer inside another of its own (a network routed to it inside its
/// delegated prefix: refused by the manager, forged here) is held by the wider one: the
/// firewall has the wider one alone and the apply converges.
#[test]
fn a_peer_network_inside_another_of_its_own_is_held_by_the_wider_one() {
    let w = delegating_world();
    let fw = Arc::new(MemoryFirewall::new());
    let host = host(&fw);
    let wg0 = InterfaceName::new("wg0").unwrap();
    block(async {
        let mut spec = NewPeer::new(PeerName::new("site").unwrap());
        spec.prefix = wgm_core::manager::AddrRequest::Fixed("fd00:900:0:5::/64".parse().unwrap());
        let site = w.m.add_peer(&w.root, w.s, spec).await.unwrap().id;
        forge(&w, site, |p| {
            p.extra_allowed_ips = vec!["fd00:900:0:5:1::/80".parse().unwrap()];
        })
        .await;
        let st = load(&w).await;
        let fwstate = wgm_core::reconcile::desired_firewall(&st, 0);
        let p = &st.peers[&site];
        let nets = &fwstate.peers[&p.public_key].addresses;
        assert!(
            nets.contains(&"fd00:900:0:5::/64".parse().unwrap()),
            "{nets:?}"
        );
        assert!(
            !nets.contains(&"fd00:900:0:5:1::/80".parse().unwrap()),
            "{nets:?}"
        );
        assert_eq!(nets.len(), 3, "{nets:?}");
        let r =
            w.m.apply(&w.root, w.s, &host, ApplyOptions::default())
                .await
                .unwrap();
        assert!(r.converged, "{r:?}");
        let live = fw.read_firewall(&wg0).await.unwrap().unwrap();
        assert_eq!(&live.peers[&p.public_key].addresses(), nets);
    });
}
