//! Manager behaviour on the in-memory store: servers, peers, allocation under contention,
//! history/diff/rollback, audit, authorization, import/export.

use std::net::IpAddr;
use std::sync::Arc;

use futures::future::join_all;
use wgm_core::manager::{
    AddrRequest, ImportOptions, LocalAdmin, Manager, ManagerConfig, ManualClock, NewPeer,
    NewServer, NewToken, NewUser, PeerUpdate,
};
use wgm_core::model::{AuditQuery, Page, RevisionNo};
use wgm_core::names::{InterfaceName, PeerName, RoleName, ServerName, UserName};
use wgm_core::net::ListenPort;
use wgm_core::rbac::{Action, Permission, Resource};
use wgm_core::seal::{MasterKey, Sealer};
use wgm_core::store::{AuditStore, IdentityStore, MemoryStore, ServerStore, Store};
use wgm_core::wgquick::{self, ParseOptions};
use wgm_core::{auth, Error};

fn block<F: std::future::Future>(f: F) -> F::Output {
    futures::executor::block_on(f)
}

fn test_config() -> ManagerConfig {
    ManagerConfig {
        password_params: auth::password::PasswordParams::insecure_for_tests(),
        ..ManagerConfig::default()
    }
}

/// A manager on `store` and its local-administrator capability.
fn manager_on(store: Arc<dyn Store>, key: &MasterKey) -> (Manager, LocalAdmin) {
    let key = MasterKey::from_bytes(*key.expose_bytes());
    Manager::builder(store, Sealer::new(key))
        .config(test_config())
        .build_with_local_admin()
}

fn new_manager() -> (Manager, Arc<MemoryStore>, LocalAdmin) {
    let store = Arc::new(MemoryStore::new());
    let (m, cap) = manager_on(store.clone(), &MasterKey::generate());
    (m, store, cap)
}

/// A server called `name`. Servers of one installation may not share a listen port or
/// overlapping pools, so each name gets its own port and IPv6 /64 (`office`: 51820 and
/// `fd12:3456:789a:1::/64`).
fn spec(name: &str, v4: Option<&str>) -> NewServer {
    let n: u16 = if name == "office" {
        1
    } else {
        name.bytes()
            .fold(0x811c_u16, |h, b| (h ^ u16::from(b)).wrapping_mul(0x0193))
            | 0x100
    };
    let mut s = NewServer::new(
        ServerName::new(name).unwrap(),
        InterfaceName::new(format!("wg-{}", &name[..name.len().min(12)])).unwrap(),
        ListenPort::new(if n == 1 { 51820 } else { 10_000 + n % 50_000 }).unwrap(),
    );
    s.ipv6_pool = Some(format!("fd12:3456:789a:{n:x}::/64").parse().unwrap());
    s.ipv4_pool = v4.map(|c| c.parse().unwrap());
    s
}

fn peer(name: &str) -> NewPeer {
    NewPeer::new(PeerName::new(name).unwrap())
}

#[test]
fn create_server_and_add_dual_stack_peers() {
    let (m, _, cap) = new_manager();
    let admin = cap.principal("root");
    block(async {
        let s = m
            .create_server(&admin, spec("office", Some("10.8.0.0/24")))
            .await
            .unwrap();
        assert_eq!(s.address_v6.to_string(), "fd12:3456:789a:1::1");
        assert_eq!(s.address_v4.unwrap().to_string(), "10.8.0.1");
        assert_eq!(s.revision, RevisionNo(1));
        let a = m.add_peer(&admin, s.id, peer("alice")).await.unwrap();
        let b = m.add_peer(&admin, s.id, peer("bob")).await.unwrap();
        // Paired host index in both families.
        assert_eq!(a.address_v6.unwrap().to_string(), "fd12:3456:789a:1::2");
        assert_eq!(a.address_v4.unwrap().to_string(), "10.8.0.2");
        assert_eq!(b.address_v6.unwrap().to_string(), "fd12:3456:789a:1::3");
        assert!(a.has_private_key && a.has_preshared_key);
        // Names are unique case-insensitively.
        let e = m.add_peer(&admin, s.id, peer("ALICE")).await.unwrap_err();
        assert!(matches!(e, Error::InvalidInput { .. }), "{e}");
        assert!(e.to_string().contains("peer.name"), "{e}");
        let list = m.list_peers(&admin, s.id).await.unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(
            m.get_server(&admin, s.id).await.unwrap().revision,
            RevisionNo(3)
        );
        // IPv6-only server: no IPv4 address, and asking for one fails by name.
        let v6 = m.create_server(&admin, spec("v6only", None)).await.unwrap();
        let p = m.add_peer(&admin, v6.id, peer("carol")).await.unwrap();
        assert!(p.address_v4.is_none() && p.address_v6.is_some());
        let mut fixed = peer("dave");
        fixed.ipv4 = AddrRequest::Fixed("10.9.0.5".parse().unwrap());
        let e = m.add_peer(&admin, v6.id, fixed).await.unwrap_err();
        assert!(e.to_string().contains("peer.ipv4"), "{e}");
    });
}

#[test]
fn random_ula_pool_when_none_given() {
    let (m, _, cap) = new_manager();
    let admin = cap.principal("root");
    block(async {
        let mut s = spec("ula", None);
        s.ipv6_pool = None;
        let v = m.create_server(&admin, s).await.unwrap();
        assert_eq!(v.ipv6_pool.prefix_len(), 64);
        assert_eq!(v.ipv6_pool.network().segments()[0] & 0xff00, 0xfd00);
    });
}

#[test]
fn bring_your_own_key_and_rejections() {
    let (m, _, cap) = new_manager();
    let admin = cap.principal("root");
    block(async {
        let s = m
            .create_server(&admin, spec("byo", Some("10.8.0.0/24")))
            .await
            .unwrap();
        let key = wgm_core::keys::PrivateKey::generate();
        let mut p = peer("laptop");
        p.public_key = Some(key.public_key());
        let v = m.add_peer(&admin, s.id, p).await.unwrap();
        assert!(!v.has_private_key);
        let cfg = m.client_config(&admin, s.id, v.id).await.unwrap();
        assert!(!cfg.complete);
        assert!(!cfg.text.contains("PrivateKey"));
        // Same key again, the server's own key: refused.
        let mut dup = peer("laptop2");
        dup.public_key = Some(key.public_key());
        let e = m.add_peer(&admin, s.id, dup).await.unwrap_err();
        assert!(matches!(e, Error::InvalidInput { .. }), "{e}");
        assert!(e.to_string().contains("peer.public_key"), "{e}");
        let mut own = peer("own");
        own.public_key = Some(s.public_key);
        let e = m.add_peer(&admin, s.id, own).await.unwrap_err();
        assert!(e.to_string().contains("public_key"), "{e}");
        // Server-side default route, overlap with the pool, IPv6 none.
        let mut bad = peer("bad");
        bad.extra_allowed_ips = vec!["0.0.0.0/0".parse().unwrap()];
        assert!(matches!(
            m.add_peer(&admin, s.id, bad).await,
            Err(Error::InvalidInput { .. })
        ));
        let mut bad = peer("bad");
        bad.extra_allowed_ips = vec!["10.8.0.0/25".parse().unwrap()];
        assert!(matches!(
            m.add_peer(&admin, s.id, bad).await,
            Err(Error::InvalidInput { .. })
        ));
        let mut bad = peer("bad");
        bad.ipv6 = AddrRequest::None;
        assert!(matches!(
            m.add_peer(&admin, s.id, bad).await,
            Err(Error::InvalidInput { .. })
        ));
        // Fixed addresses: the server's own, the network address, outside the pool.
        for a in ["10.8.0.1", "10.8.0.0", "10.8.0.255", "10.9.0.1"] {
            let mut bad = peer("fixed");
            bad.ipv4 = AddrRequest::Fixed(a.parse().unwrap());
            let e = m.add_peer(&admin, s.id, bad).await.unwrap_err();
            assert!(
                matches!(e, Error::InvalidInput { .. } | Error::Conflict { .. }),
                "{a}: {e}"
            );
        }
        // Nothing of the failures was written.
        assert_eq!(
            m.get_server(&admin, s.id).await.unwrap().revision,
            RevisionNo(2)
        );
    });
}

#[test]
fn f1_many_managers_race_on_a_small_pool() {
    // 64 adds from 8 "processes" (managers sharing one store) on a /28 with 13 free
    // IPv4 addresses: exactly 13 peers, all addresses unique, the rest PoolExhausted.
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let key = MasterKey::generate();
    let (managers, caps): (Vec<Manager>, Vec<LocalAdmin>) =
        (0..8).map(|_| manager_on(store.clone(), &key)).unzip();
    let admin = caps[0].principal("root");
    block(async {
        let mut sp = spec("race", Some("10.8.0.0/28"));
        sp.ipv6_pool = Some("fd00:1::/64".parse().unwrap());
        let s = managers[0].create_server(&admin, sp).await.unwrap();
        let futs = (0..64).map(|i| {
            let m = &managers[i % 8];
            let admin = admin.clone();
            async move { m.add_peer(&admin, s.id, peer(&format!("p{i}"))).await }
        });
        let results = join_all(futs).await;
        let ok: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(
            ok.len(),
            13,
            "errors: {:?}",
            results
                .iter()
                .filter_map(|r| r.as_ref().err())
                .take(3)
                .collect::<Vec<_>>()
        );
        for r in results.iter().filter_map(|r| r.as_ref().err()) {
            assert!(matches!(r, Error::PoolExhausted { .. }), "{r}");
        }
        let mut v4: Vec<_> = ok.iter().map(|p| p.address_v4.unwrap()).collect();
        v4.sort();
        v4.dedup();
        assert_eq!(v4.len(), 13);
        let st = store.load_server(s.id).await.unwrap().unwrap();
        assert_eq!(st.peers.len(), 13);
    });
}

#[test]
fn f3_failed_create_returns_addresses() {
    let (m, _, cap) = new_manager();
    let admin = cap.principal("root");
    block(async {
        let s = m
            .create_server(&admin, spec("f3", Some("10.8.0.0/29")))
            .await
            .unwrap();
        m.add_peer(&admin, s.id, peer("a")).await.unwrap();
        // A bulk add whose third peer is invalid allocates for the first two, then fails:
        // nothing stays held.
        let mut bad = peer("c");
        bad.extra_allowed_ips = vec!["::/0".parse().unwrap()];
        let e = m
            .add_peers(&admin, s.id, vec![peer("b1"), peer("b2"), bad])
            .await
            .unwrap_err();
        assert!(e.to_string().contains("peers[2]"), "{e}");
        // /29: 6 usable, server + a = 2 → 4 left, all still allocatable.
        let v = m
            .add_peers(
                &admin,
                s.id,
                (0..4).map(|i| peer(&format!("n{i}"))).collect(),
            )
            .await
            .unwrap();
        assert_eq!(v.len(), 4);
        assert!(matches!(
            m.add_peer(&admin, s.id, peer("z")).await,
            Err(Error::PoolExhausted { .. })
        ));
    });
}

#[test]
fn remove_quarantines_history_diff_and_rollback() {
    let store = Arc::new(MemoryStore::new());
    let clock = Arc::new(ManualClock::new(time::OffsetDateTime::now_utc()));
    let (m, cap) = Manager::builder(store.clone(), Sealer::new(MasterKey::generate()))
        .clock(clock.clone())
        .config(test_config())
        .build_with_local_admin();
    let admin = cap.principal("root");
    block(async {
        let mut sp = spec("hist", Some("10.8.0.0/24"));
        sp.quarantine_secs = Some(600);
        let s = m.create_server(&admin, sp).await.unwrap();
        let a = m.add_peer(&admin, s.id, peer("a")).await.unwrap(); // rev 2
        let b = m.add_peer(&admin, s.id, peer("b")).await.unwrap(); // rev 3
        m.remove_peer(&admin, s.id, a.id).await.unwrap(); // rev 4
                                                          // a's address is quarantined: the next peer does not get it.
        let c = m.add_peer(&admin, s.id, peer("c")).await.unwrap(); // rev 5
        assert_ne!(c.address_v4, a.address_v4);
        let hist = m
            .history(&admin, s.id, RevisionNo::NONE, 100)
            .await
            .unwrap();
        assert_eq!(hist.len(), 5);
        assert_eq!(hist[3].summary, "remove peer a");
        let d = m
            .diff(&admin, s.id, RevisionNo(3), RevisionNo(5))
            .await
            .unwrap();
        let kinds: Vec<_> = d.iter().map(|e| e.kind.as_str()).collect();
        assert!(
            kinds.contains(&"peer_removed") && kinds.contains(&"peer_added"),
            "{kinds:?}"
        );
        // Roll back to revision 3: a comes back with its addresses and keys, c goes.
        let rec = m.rollback(&admin, s.id, RevisionNo(3)).await.unwrap();
        assert_eq!(rec.revision, RevisionNo(6));
        let peers = m.list_peers(&admin, s.id).await.unwrap();
        let names: Vec<_> = peers.iter().map(|p| p.name.to_string()).collect();
        assert_eq!(names, vec!["a", "b"]);
        assert_eq!(peers[0].id, a.id);
        assert_eq!(peers[0].address_v4, a.address_v4);
        assert_eq!(peers[0].public_key, a.public_key);
        let _ = b;
        // The restored peer's client config still opens (same sealed keys, same AD).
        let cfg = m.client_config(&admin, s.id, a.id).await.unwrap();
        assert!(cfg.text.contains("PrivateKey"));
        // After the quarantine ran out, a's addresses (held again by a) are not handed
        // out to anyone else.
        clock.advance(time::Duration::hours(2));
        for i in 0..3 {
            let n = m
                .add_peer(&admin, s.id, peer(&format!("late{i}")))
                .await
                .unwrap();
            assert_ne!(n.address_v4, a.address_v4);
            assert_ne!(n.address_v6, a.address_v6);
        }
        // Rolling back to where we are is refused as a no-op.
        assert!(m.rollback(&admin, s.id, RevisionNo(9)).await.is_err());
    });
}

#[test]
fn f17_rollback_refuses_reassigned_address() {
    let store = Arc::new(MemoryStore::new());
    let (m, cap) = Manager::builder(store, Sealer::new(MasterKey::generate()))
        .config(test_config())
        .build_with_local_admin();
    let admin = cap.principal("root");
    block(async {
        let mut sp = spec("f17", Some("10.8.0.0/24"));
        sp.quarantine_secs = Some(0);
        let s = m.create_server(&admin, sp).await.unwrap();
        let a = m.add_peer(&admin, s.id, peer("a")).await.unwrap(); // rev 2
        m.remove_peer(&admin, s.id, a.id).await.unwrap(); // rev 3
        let c = m.add_peer(&admin, s.id, peer("c")).await.unwrap(); // rev 4: reuses a's address
        assert_eq!(c.address_v4, a.address_v4);
        let e = m.rollback(&admin, s.id, RevisionNo(2)).await.unwrap_err();
        assert!(matches!(e, Error::Conflict { .. }), "{e}");
        let want = a.address_v6.unwrap().to_string();
        let want4 = a.address_v4.unwrap().to_string();
        assert!(
            e.to_string().contains(&want) || e.to_string().contains(&want4),
            "{e}"
        );
    });
}

#[test]
fn client_and_server_configs_render_and_parse() {
    let (m, store, cap) = new_manager();
    let admin = cap.principal("root");
    block(async {
        let mut sp = spec("render", Some("10.8.0.0/24"));
        sp.endpoint =
            Some(wgm_core::net::Endpoint::parse("[2001:db8::1]:51820", "endpoint").unwrap());
        sp.dns = vec!["fd12:3456:789a:1::1".parse().unwrap()];
        let s = m.create_server(&admin, sp).await.unwrap();
        let a = m.add_peer(&admin, s.id, peer("alice")).await.unwrap();
        let cfg = m.client_config(&admin, s.id, a.id).await.unwrap();
        assert!(cfg.complete);
        let parsed = wgquick::parse(&cfg.text, &ParseOptions::default()).unwrap();
        assert_eq!(parsed.peers.len(), 1);
        assert_eq!(parsed.peers[0].public_key, s.public_key);
        assert_eq!(
            parsed.interface.private_key.as_ref().unwrap().public_key(),
            a.public_key
        );
        assert!(cfg.text.contains("Endpoint = [2001:db8::1]:51820"));
        assert!(cfg.text.contains("AllowedIPs = 0.0.0.0/0, ::/0"));
        let server_text = m.server_config(&admin, s.id).await.unwrap();
        let sc = wgquick::parse(&server_text, &ParseOptions::default()).unwrap();
        assert_eq!(sc.peers.len(), 1);
        assert_eq!(sc.peers[0].public_key, a.public_key);
        // Both exports are audited as secret exports.
        let exports = store
            .query_audit(&AuditQuery::default())
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.entry.action == "secret.export")
            .count();
        assert_eq!(exports, 2);
    });
}

#[test]
fn import_server_config_in_one_revision() {
    use std::fmt::Write as _;
    let (m, _, cap) = new_manager();
    let admin = cap.principal("root");
    let mut text = String::from("[Interface]\nPrivateKey = ");
    let skey = wgm_core::keys::PrivateKey::generate();
    text.push_str(&skey.expose_base64());
    text.push_str("\nAddress = 10.20.0.1/24, fd20::1/64\nListenPort = 51820\n");
    let mut keys = Vec::new();
    for i in 0..50u32 {
        let k = wgm_core::keys::PrivateKey::generate().public_key();
        keys.push(k);
        write!(
            text,
            "\n[Peer]\n# Name = client{i}\nPublicKey = {k}\nAllowedIPs = 10.20.0.{}/32, fd20::{:x}/128\n",
            i + 2,
            i + 2
        )
        .unwrap();
    }
    block(async {
        let s = m
            .import_server(
                &admin,
                ServerName::new("imported").unwrap(),
                &text,
                ImportOptions::default(),
            )
            .await
            .unwrap();
        assert_eq!(s.revision, RevisionNo(1));
        assert_eq!(s.peer_count, 50);
        assert_eq!(s.public_key, skey.public_key());
        assert_eq!(s.ipv4_pool.unwrap().to_string(), "10.20.0.0/24");
        let peers = m.list_peers(&admin, s.id).await.unwrap();
        assert!(peers.iter().all(|p| p.address_v4.is_some()
            && p.address_v6.is_some()
            && p.extra_allowed_ips.is_empty()));
        // The next allocation continues after the imported addresses.
        let n = m.add_peer(&admin, s.id, peer("new")).await.unwrap();
        assert_eq!(n.address_v4.unwrap().to_string(), "10.20.0.52");
        // Hooks are refused unless allowed.
        let hooked = text.replace(
            "ListenPort = 51820\n",
            "ListenPort = 51821\nPostUp = iptables -A FORWARD\n",
        );
        let e = m
            .import_server(
                &admin,
                ServerName::new("hooked").unwrap(),
                &hooked,
                ImportOptions::default(),
            )
            .await
            .unwrap_err();
        assert!(e.to_string().to_lowercase().contains("postup"), "{e}");
    });
}

#[test]
fn rbac_object_level_checks_and_audit() {
    let (m, store, cap) = new_manager();
    let admin = cap.principal("root");
    block(async {
        let s = m
            .create_server(&admin, spec("rbac", Some("10.8.0.0/24")))
            .await
            .unwrap();
        let alice = m
            .create_user(
                &admin,
                NewUser::new(
                    UserName::new("alice").unwrap(),
                    RoleName::new("user").unwrap(),
                ),
            )
            .await
            .unwrap();
        let bob = m
            .create_user(
                &admin,
                NewUser::new(
                    UserName::new("bob").unwrap(),
                    RoleName::new("user").unwrap(),
                ),
            )
            .await
            .unwrap();
        let aud = m
            .create_user(
                &admin,
                NewUser::new(
                    UserName::new("audrey").unwrap(),
                    RoleName::new("auditor").unwrap(),
                ),
            )
            .await
            .unwrap();
        let pa = m
            .principal_for(&cap, &store.get_user(alice.id).await.unwrap().unwrap())
            .await
            .unwrap();
        let pb = m
            .principal_for(&cap, &store.get_user(bob.id).await.unwrap().unwrap())
            .await
            .unwrap();
        let pau = m
            .principal_for(&cap, &store.get_user(aud.id).await.unwrap().unwrap())
            .await
            .unwrap();
        let ap = m.add_peer(&pa, s.id, peer("alice-phone")).await.unwrap();
        assert_eq!(ap.owner, Some(alice.id));
        // Bob cannot see, change, export or remove Alice's peer: it does not exist for him.
        assert!(matches!(
            m.get_peer(&pb, s.id, ap.id).await,
            Err(Error::NotFound { .. })
        ));
        assert!(matches!(
            m.client_config(&pb, s.id, ap.id).await,
            Err(Error::NotFound { .. })
        ));
        assert!(matches!(
            m.remove_peer(&pb, s.id, ap.id).await,
            Err(Error::NotFound { .. })
        ));
        assert!(m.list_peers(&pb, s.id).await.unwrap().is_empty());
        // Alice cannot hand her peer to Bob (mass assignment) nor create one for him.
        let e = m
            .update_peer(
                &pa,
                s.id,
                ap.id,
                PeerUpdate {
                    owner: Some(Some(bob.id)),
                    ..PeerUpdate::default()
                },
            )
            .await
            .unwrap_err();
        assert!(matches!(e, Error::PermissionDenied { .. }), "{e}");
        let mut for_bob = peer("for-bob");
        for_bob.owner = Some(bob.id);
        assert!(matches!(
            m.add_peer(&pa, s.id, for_bob).await,
            Err(Error::PermissionDenied { .. })
        ));
        // Users cannot create servers or users.
        assert!(matches!(
            m.create_server(&pa, spec("nope", None)).await,
            Err(Error::PermissionDenied { .. })
        ));
        // The auditor reads everything but never secrets.
        assert_eq!(m.list_peers(&pau, s.id).await.unwrap().len(), 1);
        assert!(matches!(
            m.client_config(&pau, s.id, ap.id).await,
            Err(Error::PermissionDenied { .. })
        ));
        assert!(matches!(
            m.server_config(&pau, s.id).await,
            Err(Error::PermissionDenied { .. })
        ));
        assert!(m.audit_log(&pau, &AuditQuery::default()).await.is_ok());
        assert!(matches!(
            m.audit_log(&pa, &AuditQuery::default()).await,
            Err(Error::PermissionDenied { .. })
        ));
        // Quota: the built-in user role allows 10 peers.
        let many: Vec<_> = (0..10).map(|i| peer(&format!("a{i}"))).collect();
        assert!(matches!(
            m.add_peers(&pa, s.id, many).await,
            Err(Error::PermissionDenied { .. })
        ));
        // Denials of mutations are audited.
        let denied = store
            .query_audit(&AuditQuery::default())
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.entry.outcome == wgm_core::model::AuditOutcome::Denied)
            .count();
        assert!(denied >= 3, "{denied} denials audited");
        // The chain verifies, and detects tampering and deletion.
        let v = m.verify_audit_chain(&admin, None).await.unwrap();
        assert!(v.records > 5);
        assert!(store.tamper_audit_action(3, "user.nothing"));
        assert!(matches!(
            m.verify_audit_chain(&admin, None).await,
            Err(Error::Conflict { .. })
        ));
    });
}

#[test]
fn audit_chain_detects_deleted_record() {
    let (m, store, cap) = new_manager();
    let admin = cap.principal("root");
    block(async {
        m.create_server(&admin, spec("chain", None)).await.unwrap();
        m.create_server(&admin, spec("chain2", None)).await.unwrap();
        m.create_server(&admin, spec("chain3", None)).await.unwrap();
        assert_eq!(m.verify_audit_chain(&admin, None).await.unwrap().records, 3);
        assert!(store.delete_audit_record(2));
        let e = m.verify_audit_chain(&admin, None).await.unwrap_err();
        assert!(e.to_string().contains("record"), "{e}");
    });
}

#[test]
fn last_admin_cannot_be_removed_or_demoted() {
    let (m, store, cap) = new_manager();
    let local = cap.principal("root");
    block(async {
        let root = m
            .create_user(
                &local,
                NewUser::new(
                    UserName::new("root").unwrap(),
                    RoleName::new("admin").unwrap(),
                ),
            )
            .await
            .unwrap();
        let e = m.delete_user(&local, root.id).await.unwrap_err();
        assert!(matches!(e, Error::Conflict { .. }), "{e}");
        let demote = wgm_core::manager::UserUpdate {
            roles: Some(vec![wgm_core::model::RoleAssignment {
                role: RoleName::new("user").unwrap(),
                scope: wgm_core::rbac::Scope::Global,
            }]),
            ..Default::default()
        };
        assert!(matches!(
            m.update_user(&local, root.id, demote.clone()).await,
            Err(Error::Conflict { .. })
        ));
        // With a second admin it works.
        m.create_user(
            &local,
            NewUser::new(
                UserName::new("root2").unwrap(),
                RoleName::new("admin").unwrap(),
            ),
        )
        .await
        .unwrap();
        m.update_user(&local, root.id, demote).await.unwrap();
        // An operator cannot grant admin (more than it holds).
        let op = m
            .create_user(
                &local,
                NewUser::new(
                    UserName::new("op").unwrap(),
                    RoleName::new("operator").unwrap(),
                ),
            )
            .await
            .unwrap();
        let pop = m
            .principal_for(&cap, &store.get_user(op.id).await.unwrap().unwrap())
            .await
            .unwrap();
        let e = m
            .create_user(
                &pop,
                NewUser::new(
                    UserName::new("evil").unwrap(),
                    RoleName::new("admin").unwrap(),
                ),
            )
            .await
            .unwrap_err();
        assert!(matches!(e, Error::PermissionDenied { .. }), "{e}");
    });
}

#[test]
fn api_tokens_narrow_and_expire() {
    let (m, store, cap) = new_manager();
    let local = cap.principal("root");
    block(async {
        let s = m
            .create_server(&local, spec("tok", Some("10.8.0.0/24")))
            .await
            .unwrap();
        let op = m
            .create_user(
                &local,
                NewUser::new(
                    UserName::new("op").unwrap(),
                    RoleName::new("operator").unwrap(),
                ),
            )
            .await
            .unwrap();
        let pop = m
            .principal_for(&cap, &store.get_user(op.id).await.unwrap().unwrap())
            .await
            .unwrap();
        let read_only = NewToken {
            user: op.id,
            name: "ro".into(),
            scopes: Some(vec![
                Permission::new(Resource::Peer, Action::Read),
                Permission::new(Resource::Server, Action::Read),
            ]),
            expires_at: None,
        };
        let (view, plain) = m.create_token(&pop, read_only).await.unwrap();
        let tp = m.authenticate_token(&plain).await.unwrap();
        assert!(m.list_peers(&tp, s.id).await.is_ok());
        assert!(matches!(
            m.add_peer(&tp, s.id, peer("x")).await,
            Err(Error::PermissionDenied { .. })
        ));
        // A token cannot hold more than its owner: an operator cannot mint audit:read.
        let wide = NewToken {
            user: op.id,
            name: "wide".into(),
            scopes: Some(vec![Permission::new(Resource::Audit, Action::Read)]),
            expires_at: None,
        };
        assert!(matches!(
            m.create_token(&pop, wide).await,
            Err(Error::PermissionDenied { .. })
        ));
        // Revoked and malformed tokens do not authenticate; the plaintext is not stored.
        m.revoke_token(&pop, view.id).await.unwrap();
        assert!(matches!(
            m.authenticate_token(&plain).await,
            Err(Error::Unauthenticated { .. })
        ));
        assert!(matches!(
            m.authenticate_token("wgm_nonsense").await,
            Err(Error::Unauthenticated { .. })
        ));
        let rec = store.get_token(view.id).await.unwrap().unwrap();
        assert!(!plain.contains(&rec.secret_hash));
        // Disabling the user stops its tokens.
        let (_, plain2) = m
            .create_token(
                &pop,
                NewToken {
                    user: op.id,
                    name: "all".into(),
                    scopes: None,
                    expires_at: None,
                },
            )
            .await
            .unwrap();
        assert!(m.authenticate_token(&plain2).await.is_ok());
        m.update_user(
            &local,
            op.id,
            wgm_core::manager::UserUpdate {
                active: Some(false),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert!(m.authenticate_token(&plain2).await.is_err());
    });
}

#[test]
fn password_login_jwt_and_throttling() {
    let store = Arc::new(MemoryStore::new());
    let issuer =
        auth::jwt::JwtIssuer::new(auth::jwt::JwtKey::generate(), "wgm", "wgm-api").unwrap();
    let (m, cap) = Manager::builder(store.clone(), Sealer::new(MasterKey::generate()))
        .config(test_config())
        .jwt(issuer)
        .build_with_local_admin();
    let local = cap.principal("root");
    let src: IpAddr = "192.0.2.7".parse().unwrap();
    block(async {
        let mut nu = NewUser::new(
            UserName::new("alice").unwrap(),
            RoleName::new("user").unwrap(),
        );
        nu.password = Some(zeroize::Zeroizing::new("correct horse battery".to_owned()));
        let alice = m.create_user(&local, nu).await.unwrap();
        let ok = m
            .login("alice", "correct horse battery", None, src)
            .await
            .unwrap();
        let p = m.authenticate_jwt(&ok.access_token).await.unwrap();
        assert_eq!(p.user_id(), alice.id.0);
        // A refresh token is not an access token.
        assert!(m.authenticate_jwt(&ok.refresh_token).await.is_err());
        let again = m.refresh(&ok.refresh_token).await.unwrap();
        assert!(m.authenticate_jwt(&again).await.is_ok());
        // Password change invalidates old tokens.
        m.set_password(
            &p,
            alice.id,
            Some("correct horse battery"),
            "another long passphrase",
        )
        .await
        .unwrap();
        assert!(m.authenticate_jwt(&ok.access_token).await.is_err());
        // Wrong passwords are throttled.
        let mut throttled = false;
        for _ in 0..20 {
            match m.login("alice", "wrong password!!", None, src).await {
                Err(Error::Throttled { .. }) => {
                    throttled = true;
                    break;
                }
                Err(Error::Unauthenticated { .. }) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(throttled);
    });
}

/// Two managers on one store share one login budget per account and per source (the
/// conformance check every engine runs; here on the in-memory store).
#[test]
fn login_throttle_is_shared_by_managers_on_one_store() {
    block(async {
        wgm_core::conformance::store::login_throttle_shared_by_managers(Arc::new(
            MemoryStore::new(),
        ))
        .await
        .unwrap();
    });
}

/// Fail closed: when the store cannot read the throttle's records, a login is refused
/// with the store's error before its password is looked at (nothing is audited, the right
/// password does not get in); when it cannot count a failure, the attempt fails with the
/// store's error too, not as a plain wrong password.
#[test]
fn login_fails_closed_when_the_throttle_store_fails() {
    let store = Arc::new(MemoryStore::new());
    let issuer =
        auth::jwt::JwtIssuer::new(auth::jwt::JwtKey::generate(), "wgm", "wgm-api").unwrap();
    let (m, cap) = Manager::builder(store.clone(), Sealer::new(MasterKey::generate()))
        .config(test_config())
        .jwt(issuer)
        .build_with_local_admin();
    let local = cap.principal("root");
    let src: IpAddr = "2001:db8::7".parse().unwrap();
    block(async {
        let mut nu = NewUser::new(
            UserName::new("alice").unwrap(),
            RoleName::new("user").unwrap(),
        );
        nu.password = Some(zeroize::Zeroizing::new("correct horse battery".to_owned()));
        m.create_user(&local, nu).await.unwrap();
        let audited = || async {
            store
                .query_audit(&AuditQuery::default())
                .await
                .unwrap()
                .len()
        };
        let before = audited().await;

        store.set_throttle_unavailable(true, true);
        for password in ["correct horse battery", "wrong password!!"] {
            let r = m.login("alice", password, None, src).await;
            assert!(matches!(r, Err(Error::Store { .. })), "{r:?}");
        }
        assert_eq!(audited().await, before, "a refused attempt was looked at");

        store.set_throttle_unavailable(false, true);
        let r = m.login("alice", "wrong password!!", None, src).await;
        assert!(matches!(r, Err(Error::Store { .. })), "{r:?}");

        store.set_throttle_unavailable(false, false);
        m.login("alice", "wrong password!!", None, src)
            .await
            .unwrap_err();
        m.login("alice", "correct horse battery", None, src)
            .await
            .unwrap();
    });
}

#[test]
fn expiry_sweep_disables_peers() {
    let store = Arc::new(MemoryStore::new());
    let clock = Arc::new(ManualClock::new(time::OffsetDateTime::now_utc()));
    let (m, cap) = Manager::builder(store, Sealer::new(MasterKey::generate()))
        .clock(clock.clone())
        .config(test_config())
        .build_with_local_admin();
    let admin = cap.principal("root");
    block(async {
        let s = m.create_server(&admin, spec("exp", None)).await.unwrap();
        let mut p = peer("temp");
        p.expires_at = Some(wgm_core::manager::Clock::now(&*clock) + time::Duration::hours(1));
        let t = m.add_peer(&admin, s.id, p).await.unwrap();
        m.add_peer(&admin, s.id, peer("forever")).await.unwrap();
        assert_eq!(m.sweep_expired(&admin).await.unwrap(), 0);
        clock.advance(time::Duration::hours(2));
        assert_eq!(m.sweep_expired(&admin).await.unwrap(), 1);
        assert!(!m.get_peer(&admin, s.id, t.id).await.unwrap().enabled);
        assert_eq!(m.sweep_expired(&admin).await.unwrap(), 0);
    });
}

#[test]
fn list_and_delete_servers() {
    let (m, _, cap) = new_manager();
    let admin = cap.principal("root");
    block(async {
        let a = m.create_server(&admin, spec("alpha", None)).await.unwrap();
        let mut b = spec("beta", None);
        b.interface = InterfaceName::new("wg9").unwrap();
        m.create_server(&admin, b).await.unwrap();
        let list = m.list_servers(&admin, Page::ALL).await.unwrap();
        assert_eq!(
            list.iter().map(|s| s.name.to_string()).collect::<Vec<_>>(),
            vec!["alpha", "beta"]
        );
        assert_eq!(m.resolve_server(&admin, "ALPHA").await.unwrap(), a.id);
        m.delete_server(&admin, a.id).await.unwrap();
        assert!(matches!(
            m.get_server(&admin, a.id).await,
            Err(Error::NotFound { .. })
        ));
        assert_eq!(
            m.history(&admin, a.id, RevisionNo::NONE, 10)
                .await
                .unwrap()
                .len(),
            2
        );
    });
}

#[test]
fn memory_store_passes_conformance() {
    block(async {
        wgm_core::conformance::store::run_all(Arc::new(MemoryStore::new()))
            .await
            .unwrap();
    });
}

#[test]
fn master_key_rotation_reseals_everything_once() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let old = MasterKey::generate();
    let (m, cap) = manager_on(store.clone(), &old);
    let admin = cap.principal("root");
    let (sid, pid) = block(async {
        let s = m
            .create_server(&admin, spec("rot", Some("10.8.0.0/24")))
            .await
            .unwrap();
        let p = m.add_peer(&admin, s.id, peer("a")).await.unwrap();
        m.add_peer(&admin, s.id, peer("b")).await.unwrap();
        (s.id, p.id)
    });
    let before = block(m.client_config(&admin, sid, pid)).unwrap().text;
    let new = MasterKey::generate();
    let rotated = Manager::builder(
        store.clone(),
        Sealer::new(MasterKey::from_bytes(*new.expose_bytes()))
            .with_previous(MasterKey::from_bytes(*old.expose_bytes())),
    )
    .config(test_config())
    .build();
    let r = block(rotated.reseal_all(&admin)).unwrap();
    // Server key + 2 × (peer key + PSK) + the store's audit key.
    assert_eq!((r.servers, r.secrets), (1, 6));
    assert_eq!(block(rotated.reseal_all(&admin)).unwrap().secrets, 0);
    // Only the new key is needed now; the configs are unchanged, and the audit chain
    // and the revisions written before the rotation still verify.
    let (only_new, _) = manager_on(store.clone(), &new);
    let v = block(only_new.verify_audit_chain(&admin, None)).unwrap();
    assert_eq!((v.records, v.legacy_records), (6, 0));
    assert_eq!(
        block(only_new.history(&admin, sid, RevisionNo::NONE, 100))
            .unwrap()
            .len(),
        4
    );
    assert_eq!(
        block(only_new.client_config(&admin, sid, pid))
            .unwrap()
            .text,
        before
    );
    // The old key alone no longer opens anything (F21: explicit error, never garbage).
    let (only_old, _) = manager_on(store, &old);
    let e = block(only_old.client_config(&admin, sid, pid)).unwrap_err();
    assert!(matches!(e, Error::Sealed { .. }), "{e}");
}

/// Every built-in role (and an operator scoped to one server) against every Manager
/// operation: allowed or denied, as written out in the table.
#[test]
fn role_operation_matrix() {
    use wgm_core::manager::{ApplyOptions, Host};
    use wgm_core::model::RoleAssignment;
    use wgm_core::rbac::Scope;

    const OPS: &[&str] = &[
        "get_server",
        "get_other_server",
        "create_server",
        "update_server",
        "update_other_server",
        "delete_server",
        "add_own_peer",
        "add_peer_for_other",
        "get_others_peer",
        "update_others_peer",
        "remove_others_peer",
        "export_others_config",
        "server_config",
        "history",
        "rollback",
        "audit_log",
        "create_user",
        "list_other_users",
        "plan",
        "apply",
        "own_token",
    ];
    // Columns: admin, operator, auditor, user, operator scoped to server 1.
    #[rustfmt::skip]
    let expected: &[(&str, [bool; 5])] = &[
        ("get_server",           [true,  true,  true,  true,  true ]),
        ("get_other_server",     [true,  true,  true,  true,  false]),
        ("create_server",        [true,  true,  false, false, false]),
        ("update_server",        [true,  true,  false, false, true ]),
        ("update_other_server",  [true,  true,  false, false, false]),
        ("delete_server",        [true,  true,  false, false, true ]),
        ("add_own_peer",         [true,  true,  false, true,  true ]),
        ("add_peer_for_other",   [true,  true,  false, false, true ]),
        ("get_others_peer",      [true,  true,  true,  false, true ]),
        ("update_others_peer",   [true,  true,  false, false, true ]),
        ("remove_others_peer",   [true,  true,  false, false, true ]),
        ("export_others_config", [true,  true,  false, false, true ]),
        ("server_config",        [true,  true,  false, false, true ]),
        ("history",              [true,  true,  true,  false, true ]),
        ("rollback",             [true,  true,  false, false, true ]),
        ("audit_log",            [true,  false, true,  false, false]),
        ("create_user",          [true,  false, false, false, false]),
        ("list_other_users",     [true,  true,  true,  false, false]),
        ("plan",                 [true,  true,  true,  false, true ]),
        ("apply",                [true,  true,  false, false, true ]),
        ("own_token",            [true,  true,  true,  true,  true ]),
    ];
    assert_eq!(expected.len(), OPS.len());
    let roles = ["admin", "operator", "auditor", "user", "operator@s1"];
    let mut checked = 0;
    for (col, role) in roles.iter().enumerate() {
        for (op, row) in expected {
            // A fresh world per cell, so mutations of one cell cannot affect another.
            let (m, store, cap) = new_manager();
            let local = cap.principal("root");
            let outcome: Result<(), Error> = block(async {
                let s1 = m
                    .create_server(&local, spec("s1", Some("10.8.0.0/24")))
                    .await
                    .unwrap();
                let mut sp2 = spec("s2", Some("10.9.0.0/24"));
                sp2.ipv6_pool = Some("fd00:2::/64".parse().unwrap());
                let s2 = m.create_server(&local, sp2).await.unwrap();
                let other = m
                    .create_user(
                        &local,
                        NewUser::new(
                            UserName::new("other").unwrap(),
                            RoleName::new("user").unwrap(),
                        ),
                    )
                    .await
                    .unwrap();
                let (rname, scope) = match *role {
                    "operator@s1" => ("operator", Scope::Server(s1.id.0)),
                    r => (r, Scope::Global),
                };
                let mut nu = NewUser::new(
                    UserName::new("subject").unwrap(),
                    RoleName::new(rname).unwrap(),
                );
                nu.roles = vec![RoleAssignment {
                    role: RoleName::new(rname).unwrap(),
                    scope,
                }];
                let me = m.create_user(&local, nu).await.unwrap();
                let p = m
                    .principal_for(&cap, &store.get_user(me.id).await.unwrap().unwrap())
                    .await
                    .unwrap();
                let mut theirs = peer("theirs");
                theirs.owner = Some(other.id);
                let tp = m.add_peer(&local, s1.id, theirs).await.unwrap();
                let wg = Arc::new(wgm_core::backend::MemoryWireGuard::new());
                let host = Host::new("h", wg.clone(), Some(Arc::new(wg.network())));
                let upd = || wgm_core::manager::ServerUpdate {
                    mtu: Some(wgm_core::net::Mtu::new(1380).unwrap()),
                    ..Default::default()
                };
                match *op {
                    "get_server" => m.get_server(&p, s1.id).await.map(drop),
                    "get_other_server" => m.get_server(&p, s2.id).await.map(drop),
                    "create_server" => {
                        let mut s = spec("s3", None);
                        s.ipv6_pool = Some("fd00:3::/64".parse().unwrap());
                        m.create_server(&p, s).await.map(drop)
                    }
                    "update_server" => m.update_server(&p, s1.id, upd()).await.map(drop),
                    "update_other_server" => m.update_server(&p, s2.id, upd()).await.map(drop),
                    "delete_server" => m.delete_server(&p, s1.id).await.map(drop),
                    "add_own_peer" => m.add_peer(&p, s1.id, peer("mine")).await.map(drop),
                    "add_peer_for_other" => {
                        let mut x = peer("gift");
                        x.owner = Some(other.id);
                        m.add_peer(&p, s1.id, x).await.map(drop)
                    }
                    "get_others_peer" => m.get_peer(&p, s1.id, tp.id).await.map(drop),
                    "update_others_peer" => m
                        .update_peer(
                            &p,
                            s1.id,
                            tp.id,
                            PeerUpdate {
                                keepalive: Some(wgm_core::net::Keepalive::new(10).unwrap()),
                                ..Default::default()
                            },
                        )
                        .await
                        .map(drop),
                    "remove_others_peer" => m.remove_peer(&p, s1.id, tp.id).await,
                    "export_others_config" => m.client_config(&p, s1.id, tp.id).await.map(drop),
                    "server_config" => m.server_config(&p, s1.id).await.map(drop),
                    "history" => m.history(&p, s1.id, RevisionNo::NONE, 10).await.map(drop),
                    "rollback" => m.rollback(&p, s1.id, RevisionNo(1)).await.map(drop),
                    "audit_log" => m.audit_log(&p, &AuditQuery::default()).await.map(drop),
                    "create_user" => m
                        .create_user(
                            &p,
                            NewUser {
                                roles: vec![],
                                ..NewUser::new(
                                    UserName::new("new").unwrap(),
                                    RoleName::new("user").unwrap(),
                                )
                            },
                        )
                        .await
                        .map(drop),
                    "list_other_users" => {
                        let v = m.list_users(&p, Page::ALL).await?;
                        if v.iter().any(|u| u.id == other.id) {
                            Ok(())
                        } else {
                            Err(Error::denied("not listed"))
                        }
                    }
                    "plan" => m.plan(&p, s1.id, &host).await.map(drop),
                    "apply" => m
                        .apply(&p, s1.id, &host, ApplyOptions::default())
                        .await
                        .map(drop),
                    "own_token" => m
                        .create_token(
                            &p,
                            NewToken {
                                user: me.id,
                                name: "t".into(),
                                scopes: None,
                                expires_at: None,
                            },
                        )
                        .await
                        .map(drop),
                    other => panic!("no operation {other}"),
                }
            });
            let want = row[col];
            let as_expected = match &outcome {
                Ok(()) => want,
                Err(Error::PermissionDenied { .. } | Error::NotFound { .. }) => !want,
                Err(_) => false,
            };
            assert!(
                as_expected,
                "{role} / {op}: expected {}, got {outcome:?}",
                if want { "allowed" } else { "denied" }
            );
            checked += 1;
        }
    }
    assert_eq!(checked, roles.len() * OPS.len());
}
