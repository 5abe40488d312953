//! Apply from the durable applied state: a fresh `Manager` (a new process) whose host
//! is still the device it verified plans from the revisions since, without reading the
//! device, and anything that casts doubt on that state takes the full path. Also: a
//! long-lived manager applies a rotated PSK (its cache of opened PSKs is keyed by the
//! sealed text).

use std::sync::Arc;

use wgm_core::backend::{Fault, MemoryWireGuard, Operation, WireGuardBackend};
use wgm_core::manager::{
    ApplyOptions, Host, Manager, ManagerConfig, ManualClock, NewPeer, NewServer, PeerUpdate,
    ServerUpdate,
};
use wgm_core::model::{RevisionNo, ServerId};
use wgm_core::names::{InterfaceName, PeerName, ServerName};
use wgm_core::net::{ListenPort, Mtu};
use wgm_core::rbac::Principal;
use wgm_core::reconcile::Verify;
use wgm_core::seal::{MasterKey, Sealer};
use wgm_core::store::{HostStateStore, MemoryStore, Store};

fn block<F: std::future::Future>(f: F) -> F::Output {
    futures::executor::block_on(f)
}

struct World {
    store: Arc<dyn Store>,
    key: MasterKey,
    clock: Arc<ManualClock>,
    wg: Arc<MemoryWireGuard>,
    server: ServerId,
    iface: InterfaceName,
}

/// A new manager on the world's store, key and clock: a fresh process.
fn fresh(w: &World) -> (Manager, Host, Principal) {
    let (m, local) = Manager::builder(
        w.store.clone(),
        Sealer::new(MasterKey::from_bytes(*w.key.expose_bytes())),
    )
    .clock(w.clock.clone())
    .config(ManagerConfig::default())
    .build_with_local_admin();
    let host = Host::new("host-a", w.wg.clone(), Some(Arc::new(w.wg.network())));
    (m, host, local.principal("root"))
}

/// A server with `n` peers, applied in full by a manager that is then gone.
fn world(n: usize) -> World {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let clock = Arc::new(ManualClock::new(
        time::OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap(),
    ));
    let mut w = World {
        store,
        key: MasterKey::generate(),
        clock,
        wg: Arc::new(MemoryWireGuard::new()),
        server: ServerId::new_random(),
        iface: InterfaceName::new("wg0").unwrap(),
    };
    let (m, host, admin) = fresh(&w);
    w.server = block(async {
        let mut s = NewServer::new(
            ServerName::new("s").unwrap(),
            w.iface.clone(),
            ListenPort::new(51820).unwrap(),
        );
        s.ipv4_pool = Some("10.8.0.0/16".parse().unwrap());
        let id = m.create_server(&admin, s).await.unwrap().id;
        let specs = (0..n)
            .map(|i| NewPeer::new(PeerName::new(format!("p{i}")).unwrap()))
            .collect();
        m.add_peers(&admin, id, specs).await.unwrap();
        let r = m
            .apply(&admin, id, &host, ApplyOptions::default())
            .await
            .unwrap();
        assert!(r.converged && r.read_back);
        id
    });
    w
}

fn no_reads(w: &World) {
    // Any read of the device now fails: an apply that reads cannot succeed.
    w.wg.inject(Fault::FailNext(Operation::ReadDevice));
}

/// An apply by `m` reads the device first (it fails while reads fail), then converges.
async fn reads_first(w: &World, m: &Manager, host: &Host, admin: &Principal, why: &str) {
    no_reads(w);
    let r = m
        .apply(admin, w.server, host, ApplyOptions::default())
        .await;
    assert!(r.is_err(), "{why}: the device was not read: {r:?}");
    w.wg.clear_faults();
    let r = m
        .apply(admin, w.server, host, ApplyOptions::default())
        .await
        .unwrap();
    assert!(r.converged, "{why}: {r:?}");
}

/// Add peer `name` from another process (a fresh manager that is then gone).
async fn add_elsewhere(w: &World, name: &str) {
    let (other, _, a) = fresh(w);
    other
        .add_peer(&a, w.server, NewPeer::new(PeerName::new(name).unwrap()))
        .await
        .unwrap();
}

async fn peers_on(w: &World) -> usize {
    w.wg.read_device(&w.iface)
        .await
        .unwrap()
        .unwrap()
        .peers
        .len()
}

#[test]
fn a_fresh_process_applies_the_revisions_since_without_reading_the_device() {
    let w = world(50);
    let (m, host, admin) = fresh(&w);
    block(async {
        let before = w
            .store
            .applied_state(w.server, "host-a")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(before.revision, RevisionNo(2));
        assert!(before.instance.is_some());
        // Added, changed (PSK rotated), disabled and removed since, by other processes.
        let (other, _, other_admin) = fresh(&w);
        let added = other
            .add_peer(
                &other_admin,
                w.server,
                NewPeer::new(PeerName::new("new").unwrap()),
            )
            .await
            .unwrap();
        let rotated = other
            .resolve_peer(&other_admin, w.server, "p1")
            .await
            .unwrap();
        other
            .rotate_peer_psk(&other_admin, w.server, rotated)
            .await
            .unwrap();
        let disabled = other
            .resolve_peer(&other_admin, w.server, "p2")
            .await
            .unwrap();
        other
            .update_peer(
                &other_admin,
                w.server,
                disabled,
                PeerUpdate {
                    enabled: Some(false),
                    ..PeerUpdate::default()
                },
            )
            .await
            .unwrap();
        let gone = other
            .resolve_peer(&other_admin, w.server, "p3")
            .await
            .unwrap();
        other
            .remove_peer(&other_admin, w.server, gone)
            .await
            .unwrap();
        no_reads(&w);
        let r = m
            .apply(&admin, w.server, &host, ApplyOptions::default())
            .await
            .unwrap();
        assert!(r.converged, "{r:?}");
        assert!(!r.read_back);
        assert_eq!(r.plan.revision, RevisionNo(6));
        // One add, one PSK update, two removals: nothing about the 47 others.
        assert_eq!(r.plan.items.len(), 4, "{}", r.plan);
        w.wg.clear_faults();
        assert_eq!(peers_on(&w).await, 50 - 2 + 1);
        let dev = w.wg.read_device(&w.iface).await.unwrap().unwrap();
        assert!(dev.peers.contains_key(&added.public_key));
        let after = w
            .store
            .applied_state(w.server, "host-a")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(after.revision, RevisionNo(6));
        assert_eq!(
            (after.instance, after.verified_at),
            (before.instance, before.verified_at)
        );
        // The device is exactly what a full read plans nothing for, the rotated PSK too.
        let (check, check_host, check_admin) = fresh(&w);
        let pl = check
            .plan(&check_admin, w.server, &check_host)
            .await
            .unwrap();
        assert!(pl.is_empty(), "{pl}");
    });
}

#[test]
fn doubt_takes_the_full_path() {
    // The device was recreated: another instance.
    let w = world(5);
    block(async {
        add_elsewhere(&w, "x").await;
        w.wg.delete_device(&w.iface).await.unwrap();
        w.wg.create_device(&w.iface).await.unwrap();
        let (m, host, admin) = fresh(&w);
        reads_first(&w, &m, &host, &admin, "a new device instance is read").await;
        assert_eq!(peers_on(&w).await, 6);
    });
    // The server's settings changed.
    let w = world(5);
    block(async {
        let (other, _, a) = fresh(&w);
        other
            .update_server(
                &a,
                w.server,
                ServerUpdate {
                    mtu: Some(Mtu::new(1380).unwrap()),
                    ..ServerUpdate::default()
                },
            )
            .await
            .unwrap();
        let (m, host, admin) = fresh(&w);
        reads_first(
            &w,
            &m,
            &host,
            &admin,
            "a settings change is applied from a read",
        )
        .await;
    });
    // The last full read is too old to stand for the device.
    let w = world(5);
    block(async {
        add_elsewhere(&w, "x").await;
        w.clock.advance(time::Duration::seconds(61));
        let (m, host, admin) = fresh(&w);
        reads_first(
            &w,
            &m,
            &host,
            &admin,
            "a verification over 60 s old is not trusted",
        )
        .await;
    });
    // Nothing to do: read (that is how drift is found), and --verify always reads.
    let w = world(5);
    block(async {
        let (m, host, admin) = fresh(&w);
        reads_first(&w, &m, &host, &admin, "nothing to do").await;
        add_elsewhere(&w, "x").await;
        let (m, host, admin) = fresh(&w);
        let opts = ApplyOptions {
            verify: Verify::Always,
            ..ApplyOptions::default()
        };
        no_reads(&w);
        assert!(
            m.apply(&admin, w.server, &host, opts).await.is_err(),
            "--verify reads"
        );
        no_reads(&w);
        assert!(
            m.apply(&admin, w.server, &host, opts).await.is_err(),
            "--verify reads"
        );
        w.wg.clear_faults();
        let r = m.apply(&admin, w.server, &host, opts).await.unwrap();
        assert!(r.converged && r.read_back);
    });
    // A delta that fails part-way falls back to reading the device, and converges.
    let w = world(5);
    block(async {
        for n in ["x", "y"] {
            add_elsewhere(&w, n).await;
        }
        w.wg.inject(Fault::FailAtPeer { index: 1 });
        let (m, host, admin) = fresh(&w);
        reads_first(&w, &m, &host, &admin, "{r:?}").await;
        assert_eq!(peers_on(&w).await, 7);
    });
}

/// A long-lived manager keeps opened PSKs between applies; a rotated PSK (new sealed
/// text) must be opened and applied, not the old one reused.
#[test]
fn a_rotated_psk_reaches_the_device_from_a_long_lived_manager() {
    let w = world(3);
    let (m, host, admin) = fresh(&w);
    block(async {
        m.apply(&admin, w.server, &host, ApplyOptions::default())
            .await
            .unwrap();
        let id = m.resolve_peer(&admin, w.server, "p1").await.unwrap();
        let key = m.get_peer(&admin, w.server, id).await.unwrap().public_key;
        let old = w.wg.read_device(&w.iface).await.unwrap().unwrap().peers[&key]
            .preshared_key
            .clone();
        m.rotate_peer_psk(&admin, w.server, id).await.unwrap();
        let r = m
            .apply(&admin, w.server, &host, ApplyOptions::default())
            .await
            .unwrap();
        assert!(r.converged);
        let new = w.wg.read_device(&w.iface).await.unwrap().unwrap().peers[&key]
            .preshared_key
            .clone();
        assert!(
            new.is_some() && new != old,
            "the device still has the old PSK"
        );
        // And it is the one the store holds: a fresh manager plans nothing.
        let (check, check_host, check_admin) = fresh(&w);
        let pl = check
            .plan(&check_admin, w.server, &check_host)
            .await
            .unwrap();
        assert!(pl.is_empty(), "{pl}");
    });
}
