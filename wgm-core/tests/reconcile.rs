//! Plan/apply/reconcile against the in-memory device, which behaves like the kernel
//! (non-atomic sets, own-key peers ignored, allowed IPs moving between peers).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use wgm_core::backend::{
    DeviceDelta, Fault, MemoryWireGuard, NetworkBackend, PeerDelta, WireGuardBackend,
};
use wgm_core::manager::{
    ApplyError, ApplyOptions, ApplyReport, Host, Manager, ManagerConfig, ManualClock, NewPeer,
    NewServer, PeerUpdate, ServerUpdate,
};
use wgm_core::model::{RevisionNo, ServerId};
use wgm_core::names::{InterfaceName, PeerName, ServerName};
use wgm_core::net::ListenPort;
use wgm_core::rbac::Principal;
use wgm_core::reconcile::{DriftPolicy, PeerChange, PlanItem, Verify};
use wgm_core::seal::{MasterKey, Sealer};
use wgm_core::store::{MemoryStore, Store};

fn block<F: std::future::Future>(f: F) -> F::Output {
    futures::executor::block_on(f)
}

struct Env {
    store: Arc<dyn Store>,
    m: Manager,
    admin: Principal,
    wg: Arc<MemoryWireGuard>,
    host: Host,
    server: ServerId,
    iface: InterfaceName,
}

/// A manager, a host on `wg`, and the manager's local administrator.
fn env_with(
    store: Arc<dyn Store>,
    key: &MasterKey,
    wg: &Arc<MemoryWireGuard>,
) -> (Manager, Host, Principal) {
    let (m, local) = Manager::builder(
        store,
        Sealer::new(MasterKey::from_bytes(*key.expose_bytes())),
    )
    .config(ManagerConfig::default())
    .build_with_local_admin();
    let host = Host::new("host-a", wg.clone(), Some(Arc::new(wg.network())));
    (m, host, local.principal("root"))
}

fn setup(peers: &[&str]) -> Env {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let key = MasterKey::generate();
    let wg = Arc::new(MemoryWireGuard::new());
    let (m, host, admin) = env_with(store.clone(), &key, &wg);
    let iface = InterfaceName::new("wg0").unwrap();
    let server = block(async {
        let mut s = NewServer::new(
            ServerName::new("s").unwrap(),
            iface.clone(),
            ListenPort::new(51820).unwrap(),
        );
        s.ipv4_pool = Some("10.8.0.0/24".parse().unwrap());
        let s = m.create_server(&admin, s).await.unwrap();
        for p in peers {
            m.add_peer(&admin, s.id, NewPeer::new(PeerName::new(*p).unwrap()))
                .await
                .unwrap();
        }
        s.id
    });
    Env {
        store,
        m,
        admin,
        wg,
        host,
        server,
        iface,
    }
}

impl Env {
    fn apply(&self) -> ApplyReport {
        block(self.m.apply(
            &self.admin,
            self.server,
            &self.host,
            ApplyOptions::default(),
        ))
        .unwrap()
    }
    fn key_of(&self, name: &str) -> wgm_core::keys::PublicKey {
        let id = block(self.m.resolve_peer(&self.admin, self.server, name)).unwrap();
        block(self.m.get_peer(&self.admin, self.server, id))
            .unwrap()
            .public_key
    }
    fn device(&self) -> wgm_core::backend::DeviceState {
        block(self.wg.read_device(&self.iface)).unwrap().unwrap()
    }
}

#[test]
fn initial_apply_converges_and_records_the_revision() {
    let e = setup(&["a", "b", "c"]);
    let r = e.apply();
    assert!(r.converged, "{:?}", r.remaining);
    assert!(r.results.iter().all(|i| i.ok));
    let dev = e.device();
    assert_eq!(dev.peers.len(), 3);
    assert_eq!(dev.listen_port, 51820);
    let link = block(e.wg.network().read_link(&e.iface)).unwrap().unwrap();
    assert!(link.up);
    assert_eq!(link.mtu, 1420);
    assert_eq!(link.addresses.len(), 2);
    assert!(block(e.m.plan(&e.admin, e.server, &e.host))
        .unwrap()
        .is_empty());
    let text = block(e.m.plan(&e.admin, e.server, &e.host))
        .unwrap()
        .to_string();
    assert!(text.contains("up to date at revision 4"), "{text}");
}

#[test]
fn incremental_apply_leaves_untouched_peers_alone() {
    let e = setup(&["a", "c", "d"]);
    e.apply();
    let a = e.key_of("a");
    let hs = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    e.wg.simulate_handshake(&e.iface, &a, hs).unwrap();
    e.wg.simulate_traffic(&e.iface, &a, 1000, 2000).unwrap();
    let before_a = e.device().peers[&a].clone();
    block(async {
        e.m.add_peer(
            &e.admin,
            e.server,
            NewPeer::new(PeerName::new("b").unwrap()),
        )
        .await
        .unwrap();
        let c = e.m.resolve_peer(&e.admin, e.server, "c").await.unwrap();
        let up = PeerUpdate {
            extra_allowed_ips: Some(vec!["192.168.50.0/24".parse().unwrap()]),
            ..PeerUpdate::default()
        };
        e.m.update_peer(&e.admin, e.server, c, up).await.unwrap();
        let d = e.m.resolve_peer(&e.admin, e.server, "d").await.unwrap();
        e.m.remove_peer(&e.admin, e.server, d).await.unwrap();
    });
    let plan = block(e.m.plan(&e.admin, e.server, &e.host)).unwrap();
    // Exactly: add b, change c (allowed IP + its route), remove d. Nothing about a.
    assert!(!plan.device.replace_peers);
    assert_eq!(plan.device.peers.len(), 3, "{plan}");
    assert!(plan.device.peers.iter().all(|p| p.public_key != a));
    assert!(
        plan.items
            .iter()
            .any(|i| matches!(i, PlanItem::RemovePeer { name: Some(n), .. } if n == "d")),
        "{plan}"
    );
    let r = e.apply();
    assert!(r.converged, "{:?}", r.remaining);
    let after_a = e.device().peers[&a].clone();
    assert_eq!(before_a, after_a, "peer a was touched");
    assert_eq!(after_a.rx_bytes, 1000);
    assert_eq!(after_a.last_handshake, Some(hs));
    let dev = e.device();
    assert_eq!(dev.peers.len(), 3);
    let link = block(e.wg.network().read_link(&e.iface)).unwrap().unwrap();
    assert!(link.routes.contains(&"192.168.50.0/24".parse().unwrap()));
}

#[test]
fn f4_crash_between_commit_and_apply_is_caught_up_by_a_new_reconciler() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let key = MasterKey::generate();
    let wg = Arc::new(MemoryWireGuard::new());
    let (m1, host, admin) = env_with(store.clone(), &key, &wg);
    let sid = block(async {
        let s = m1
            .create_server(
                &admin,
                NewServer::new(
                    ServerName::new("s").unwrap(),
                    InterfaceName::new("wg0").unwrap(),
                    ListenPort::new(51820).unwrap(),
                ),
            )
            .await
            .unwrap();
        m1.add_peer(&admin, s.id, NewPeer::new(PeerName::new("a").unwrap()))
            .await
            .unwrap();
        m1.apply(&admin, s.id, &host, ApplyOptions::default())
            .await
            .unwrap();
        // Committed, then "crash" before apply.
        m1.add_peer(&admin, s.id, NewPeer::new(PeerName::new("b").unwrap()))
            .await
            .unwrap();
        s.id
    });
    drop(m1);
    let (m2, host2, _) = env_with(store.clone(), &key, &wg);
    block(async {
        assert_eq!(
            store.applied(sid, "host-a").await.unwrap(),
            Some(RevisionNo(2))
        );
        let r = m2
            .apply(&admin, sid, &host2, ApplyOptions::default())
            .await
            .unwrap();
        assert!(r.converged);
        assert_eq!(r.plan.device.peers.len(), 1);
        assert_eq!(
            store.applied(sid, "host-a").await.unwrap(),
            Some(RevisionNo(3))
        );
    });
    assert_eq!(
        block(wg.read_device(&InterfaceName::new("wg0").unwrap()))
            .unwrap()
            .unwrap()
            .peers
            .len(),
        2
    );
}

#[test]
fn f5_unmanaged_peers_are_reported_or_removed_never_adopted() {
    let e = setup(&["a"]);
    e.apply();
    let stranger = wgm_core::keys::PrivateKey::generate().public_key();
    let mut d = PeerDelta::new(stranger);
    d.allowed_ips = vec!["10.99.0.1/32".parse().unwrap()];
    block(e.wg.apply_device(
        &e.iface,
        &DeviceDelta {
            peers: vec![d],
            ..DeviceDelta::default()
        },
    ))
    .unwrap();
    let r = e.apply();
    assert!(
        r.converged,
        "report-only drift still converges: {:?}",
        r.remaining
    );
    assert!(r.plan.items.contains(&PlanItem::Unmanaged {
        public_key: stranger,
        remove: false
    }));
    assert!(
        e.device().peers.contains_key(&stranger),
        "reported peers are left alone"
    );
    // Never adopted: the store does not know it.
    assert!(block(e.m.resolve_peer(&e.admin, e.server, &stranger.to_base64())).is_err());
    let remover = e.host.clone().with_drift(DriftPolicy::Remove);
    let r = block(e.m.apply(&e.admin, e.server, &remover, ApplyOptions::default())).unwrap();
    assert!(r.converged);
    assert!(!e.device().peers.contains_key(&stranger));
}

#[test]
fn f7_deleted_device_is_recreated_with_all_peers() {
    let e = setup(&["a", "b"]);
    e.apply();
    block(e.wg.delete_device(&e.iface)).unwrap();
    let r = e.apply();
    assert!(r.converged);
    assert!(r.plan.items.contains(&PlanItem::CreateDevice));
    assert_eq!(e.device().peers.len(), 2);
}

#[test]
fn f8_out_of_band_changes_are_reverted_but_roaming_is_not_drift() {
    let e = setup(&["a", "b"]);
    e.apply();
    let a = e.key_of("a");
    let b = e.key_of("b");
    // wg set wg0 peer a allowed-ips 10.77.0.0/24 persistent-keepalive 5
    let mut d = PeerDelta::new(a);
    d.replace_allowed_ips = true;
    d.allowed_ips = vec!["10.77.0.0/24".parse().unwrap()];
    d.persistent_keepalive = Some(5);
    block(e.wg.apply_device(
        &e.iface,
        &DeviceDelta {
            peers: vec![d],
            listen_port: Some(4000),
            ..DeviceDelta::default()
        },
    ))
    .unwrap();
    e.wg.simulate_roaming(&e.iface, &b, "[2001:db8::9]:4444".parse().unwrap())
        .unwrap();
    let plan = block(e.m.plan(&e.admin, e.server, &e.host)).unwrap();
    assert!(plan
        .items
        .iter()
        .any(|i| matches!(i, PlanItem::UpdatePeer { public_key, .. } if *public_key == a)));
    assert!(
        !plan
            .items
            .iter()
            .any(|i| matches!(i, PlanItem::UpdatePeer { public_key, .. } if *public_key == b)),
        "{plan}"
    );
    let r = e.apply();
    assert!(r.converged);
    let dev = e.device();
    assert_eq!(dev.listen_port, 51820);
    assert_eq!(dev.peers[&a].persistent_keepalive, 0);
    assert!(!dev.peers[&a]
        .allowed_ips
        .contains(&"10.77.0.0/24".parse().unwrap()));
    assert_eq!(
        dev.peers[&b].endpoint,
        Some("[2001:db8::9]:4444".parse().unwrap())
    );
}

#[test]
fn f9_backend_failure_part_way_is_reported_and_converges_next_pass() {
    let e = setup(&["a", "b", "c", "d"]);
    e.wg.inject(Fault::FailAtPeer { index: 2 });
    let r = e.apply();
    assert!(!r.converged);
    // The failed call is typed (the device delta, on this interface) and shown, in the
    // report's JSON too, as the backend's message.
    assert!(
        matches!(&r.errors[..], [ApplyError::ApplyDevice { interface, .. }] if *interface == e.iface),
        "{:?}",
        r.errors
    );
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["errors"][0], r.errors[0].error().to_string());
    let done = r
        .results
        .iter()
        .filter(|i| matches!(i.item, PlanItem::AddPeer { .. }) && i.ok)
        .count();
    assert_eq!(done, 2, "peers before the failing one stay applied");
    assert_eq!(e.device().peers.len(), 2);
    assert!(
        block(e.m.plan(&e.admin, e.server, &e.host))
            .unwrap()
            .items
            .len()
            >= 2
    );
    let r = e.apply();
    assert!(r.converged, "{:?}", r.remaining);
    assert_eq!(e.device().peers.len(), 4);
}

#[test]
fn disabled_peers_leave_the_device_and_come_back() {
    let e = setup(&["a", "b"]);
    e.apply();
    let a = e.key_of("a");
    let id = block(e.m.resolve_peer(&e.admin, e.server, "a")).unwrap();
    block(e.m.set_peer_enabled(&e.admin, e.server, id, false)).unwrap();
    e.apply();
    assert!(!e.device().peers.contains_key(&a));
    block(e.m.set_peer_enabled(&e.admin, e.server, id, true)).unwrap();
    e.apply();
    assert!(e.device().peers.contains_key(&a));
}

#[test]
fn rollback_then_apply_brings_a_removed_peer_back() {
    let e = setup(&["a", "b"]);
    e.apply();
    let b = e.key_of("b");
    let id = block(e.m.resolve_peer(&e.admin, e.server, "b")).unwrap();
    block(e.m.remove_peer(&e.admin, e.server, id)).unwrap();
    e.apply();
    assert!(!e.device().peers.contains_key(&b));
    block(e.m.rollback(&e.admin, e.server, RevisionNo(3))).unwrap();
    let r = e.apply();
    assert!(r.converged);
    assert!(e.device().peers.contains_key(&b));
}

#[test]
fn dry_run_changes_nothing_and_key_rotation_is_applied() {
    let e = setup(&["a"]);
    let r = block(e.m.apply(
        &e.admin,
        e.server,
        &e.host,
        ApplyOptions {
            dry_run: true,
            ..ApplyOptions::default()
        },
    ))
    .unwrap();
    assert!(!r.executed);
    assert!(r.plan.items.contains(&PlanItem::CreateDevice));
    assert!(block(e.wg.read_device(&e.iface)).unwrap().is_none());
    e.apply();
    let new = block(e.m.rotate_server_key(&e.admin, e.server)).unwrap();
    let r = e.apply();
    assert!(r.converged);
    assert_eq!(e.device().public_key, Some(new.public_key));
}

#[test]
fn status_reports_handshakes_and_stores_stats() {
    let e = setup(&["a", "b"]);
    e.apply();
    let a = e.key_of("a");
    e.wg.simulate_handshake(
        &e.iface,
        &a,
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
    )
    .unwrap();
    e.wg.simulate_traffic(&e.iface, &a, 10, 20).unwrap();
    let st = block(e.m.status(&e.admin, e.server, &e.host)).unwrap();
    assert!(st.exists);
    let pa = st.peers.iter().find(|p| p.public_key == a).unwrap();
    assert_eq!(pa.last_handshake, Some(1_800_000_000));
    assert_eq!(pa.name.as_deref(), Some("a"));
    let id = block(e.m.resolve_peer(&e.admin, e.server, "a")).unwrap();
    let v = block(e.m.get_peer(&e.admin, e.server, id)).unwrap();
    assert_eq!(v.stats.rx_bytes, 10);
}

#[test]
fn auditors_can_plan_but_not_apply() {
    let e = setup(&["a"]);
    let aud = block(e.m.create_user(
        &e.admin,
        wgm_core::manager::NewUser::new(
            wgm_core::names::UserName::new("aud").unwrap(),
            wgm_core::names::RoleName::new("auditor").unwrap(),
        ),
    ))
    .unwrap();
    let spec = wgm_core::manager::NewToken {
        user: aud.id,
        name: "t".into(),
        scopes: None,
        expires_at: None,
    };
    let (_, token) = block(e.m.create_token(&e.admin, spec)).unwrap();
    let p = block(e.m.authenticate_token(&token)).unwrap();
    assert!(block(e.m.plan(&p, e.server, &e.host)).is_ok());
    let err = block(e.m.apply(&p, e.server, &e.host, ApplyOptions::default())).unwrap_err();
    assert!(
        matches!(err, wgm_core::Error::PermissionDenied { .. }),
        "{err}"
    );
    assert!(block(e.wg.read_device(&e.iface)).unwrap().is_none());
}

/// A backend that counts full device reads; it tells device instances only when
/// `instances` is set (a backend that cannot is always read back).
#[derive(Debug)]
struct Counting {
    inner: Arc<MemoryWireGuard>,
    reads: std::sync::atomic::AtomicUsize,
    instances: bool,
}

impl Counting {
    fn over(inner: &Arc<MemoryWireGuard>, instances: bool) -> Arc<Counting> {
        Arc::new(Counting {
            inner: inner.clone(),
            reads: 0.into(),
            instances,
        })
    }
    fn reads(&self) -> usize {
        self.reads.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[async_trait::async_trait]
impl WireGuardBackend for Counting {
    fn name(&self) -> &'static str {
        "counting"
    }
    fn capabilities(&self) -> wgm_core::backend::Capabilities {
        self.inner.capabilities()
    }
    async fn list_devices(&self) -> wgm_core::Result<Vec<InterfaceName>> {
        self.inner.list_devices().await
    }
    async fn create_device(&self, name: &InterfaceName) -> wgm_core::Result<()> {
        self.inner.create_device(name).await
    }
    async fn delete_device(&self, name: &InterfaceName) -> wgm_core::Result<()> {
        self.inner.delete_device(name).await
    }
    async fn read_device(
        &self,
        name: &InterfaceName,
    ) -> wgm_core::Result<Option<wgm_core::backend::DeviceState>> {
        self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.read_device(name).await
    }
    async fn apply_device(
        &self,
        name: &InterfaceName,
        delta: &DeviceDelta,
    ) -> wgm_core::Result<()> {
        self.inner.apply_device(name, delta).await
    }
    async fn device_instance(&self, name: &InterfaceName) -> wgm_core::Result<Option<u64>> {
        if self.instances {
            self.inner.device_instance(name).await
        } else {
            Ok(None)
        }
    }
}

#[test]
fn without_device_instances_every_apply_reads_back() {
    let e = setup(&["a"]);
    let counting = Counting::over(&e.wg, false);
    let host = Host::new("host-c", counting.clone(), Some(Arc::new(e.wg.network())));
    let reads = || counting.reads();
    assert!(
        block(e.m.apply(&e.admin, e.server, &host, ApplyOptions::default()))
            .unwrap()
            .converged
    );
    assert_eq!(reads(), 2, "first apply: read, then verify");
    block(e.m.add_peer(
        &e.admin,
        e.server,
        NewPeer::new(PeerName::new("b").unwrap()),
    ))
    .unwrap();
    let r = block(e.m.apply(&e.admin, e.server, &host, ApplyOptions::default())).unwrap();
    assert!(r.converged);
    assert_eq!(
        reads(),
        3,
        "the next apply plans from the verified read and only verifies"
    );
    assert_eq!(r.plan.device.peers.len(), 1);
    // Out-of-band removal since the last verified read: caught by the verifying read
    // and converged in a second pass within the same apply.
    let b = e.key_of("b");
    block(e.wg.apply_device(
        &e.iface,
        &DeviceDelta {
            peers: vec![PeerDelta::remove(b)],
            ..DeviceDelta::default()
        },
    ))
    .unwrap();
    block(e.m.add_peer(
        &e.admin,
        e.server,
        NewPeer::new(PeerName::new("c").unwrap()),
    ))
    .unwrap();
    let r = block(e.m.apply(&e.admin, e.server, &host, ApplyOptions::default())).unwrap();
    assert!(r.converged, "{:?}", r.remaining);
    assert_eq!(e.device().peers.len(), 3);
}

impl Env {
    fn counting_host(&self) -> (Arc<Counting>, Host) {
        let counting = Counting::over(&self.wg, true);
        let host = Host::new(
            "host-c",
            counting.clone(),
            Some(Arc::new(self.wg.network())),
        );
        (counting, host)
    }
    fn apply_on(&self, host: &Host, verify: Verify) -> ApplyReport {
        let opts = ApplyOptions {
            verify,
            ..ApplyOptions::default()
        };
        block(self.m.apply(&self.admin, self.server, host, opts)).unwrap()
    }
    fn add(&self, name: &str) {
        block(self.m.add_peer(
            &self.admin,
            self.server,
            NewPeer::new(PeerName::new(name).unwrap()),
        ))
        .unwrap();
    }
    fn plan_on(&self, host: &Host) -> wgm_core::reconcile::Plan {
        block(self.m.plan(&self.admin, self.server, host)).unwrap()
    }
    fn remove_out_of_band(&self, name: &str) {
        let k = self.key_of(name);
        block(self.wg.apply_device(
            &self.iface,
            &DeviceDelta {
                peers: vec![PeerDelta::remove(k)],
                ..DeviceDelta::default()
            },
        ))
        .unwrap();
    }
}

#[test]
fn an_acknowledged_incremental_apply_does_not_read_the_device() {
    let e = setup(&["a"]);
    let (counting, host) = e.counting_host();
    let r = e.apply_on(&host, Verify::Auto);
    assert!(
        r.converged && r.read_back,
        "the device was created: read back"
    );
    assert_eq!(counting.reads(), 2);
    e.add("b");
    e.add("c");
    let r = e.apply_on(&host, Verify::Auto);
    assert!(r.converged, "{:?}", r.remaining);
    assert!(!r.read_back);
    assert_eq!(
        counting.reads(),
        2,
        "planned from the snapshot, trusted the ack"
    );
    assert_eq!(r.plan.device.peers.len(), 2);
    assert!(r.results.iter().all(|i| i.ok));
    // The device really holds it: a plan from a full read has nothing to do.
    assert!(e.plan_on(&host).is_empty());
    assert_eq!(e.device().peers.len(), 3);
}

#[test]
fn a_change_and_out_of_band_drift_converge_by_the_next_apply_with_nothing_to_do() {
    let e = setup(&["a", "b"]);
    let (counting, host) = e.counting_host();
    e.apply_on(&host, Verify::Auto);
    e.remove_out_of_band("b");
    e.add("c");
    let r = e.apply_on(&host, Verify::Auto);
    assert!(r.converged && !r.read_back);
    // The removal happened behind the manager's back; this apply did not look.
    assert_eq!(e.device().peers.len(), 2);
    let before = counting.reads();
    // Nothing left to change in the store: the next apply (what a periodic reconcile
    // does) reads the device in full, finds b missing and restores it.
    let r = e.apply_on(&host, Verify::Auto);
    assert!(r.converged && r.read_back, "{:?}", r.remaining);
    assert!(counting.reads() > before);
    assert_eq!(e.device().peers.len(), 3);
    assert!(r
        .results
        .iter()
        .any(|i| matches!(&i.item, PlanItem::AddPeer { name, .. } if name == "b") && i.ok));
}

#[test]
fn verify_always_reads_back_and_catches_drift_in_the_same_apply() {
    let e = setup(&["a", "b"]);
    let (counting, host) = e.counting_host();
    e.apply_on(&host, Verify::Always);
    let before = counting.reads();
    e.remove_out_of_band("b");
    e.add("c");
    let r = e.apply_on(&host, Verify::Always);
    assert!(r.converged && r.read_back, "{:?}", r.remaining);
    assert!(counting.reads() > before);
    assert_eq!(e.device().peers.len(), 3);
}

#[test]
fn a_device_recreated_out_of_band_is_noticed_before_planning() {
    let e = setup(&["a", "b"]);
    let (_, host) = e.counting_host();
    e.apply_on(&host, Verify::Auto);
    // ip link del; ip link add: an empty device under the same name.
    block(e.wg.delete_device(&e.iface)).unwrap();
    block(e.wg.create_device(&e.iface)).unwrap();
    e.add("c");
    let r = e.apply_on(&host, Verify::Auto);
    assert!(r.converged, "{:?}", r.remaining);
    let dev = e.device();
    assert_eq!(
        dev.peers.len(),
        3,
        "every peer restored, not only the new one"
    );
    assert_eq!(dev.listen_port, 51820);
    assert!(e.plan_on(&host).is_empty());
}

#[test]
fn acknowledgements_are_trusted_only_for_the_reverify_interval() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let clock = Arc::new(ManualClock::new(time::OffsetDateTime::now_utc()));
    let (m, cap) = Manager::builder(store, Sealer::new(MasterKey::generate()))
        .clock(clock.clone())
        .config(ManagerConfig {
            reverify_after_secs: 30,
            ..ManagerConfig::default()
        })
        .build_with_local_admin();
    let admin = cap.principal("root");
    let wg = Arc::new(MemoryWireGuard::new());
    let counting = Counting::over(&wg, true);
    let host = Host::new("h", counting.clone(), None);
    let s = block(m.create_server(
        &admin,
        NewServer::new(
            ServerName::new("s").unwrap(),
            InterfaceName::new("wg0").unwrap(),
            ListenPort::new(51820).unwrap(),
        ),
    ))
    .unwrap();
    let add_and_apply = |name: &str| {
        block(m.add_peer(&admin, s.id, NewPeer::new(PeerName::new(name).unwrap()))).unwrap();
        block(m.apply(&admin, s.id, &host, ApplyOptions::default())).unwrap()
    };
    assert!(add_and_apply("a").read_back);
    clock.advance(time::Duration::seconds(20));
    assert!(!add_and_apply("b").read_back);
    clock.advance(time::Duration::seconds(20));
    // 40 s since the last full read: this one reads back, and restarts the interval.
    assert!(add_and_apply("c").read_back);
    clock.advance(time::Duration::seconds(20));
    assert!(!add_and_apply("d").read_back);
}

#[test]
fn a_failed_delta_is_read_back_and_not_recorded() {
    let e = setup(&["a"]);
    let (counting, host) = e.counting_host();
    e.apply_on(&host, Verify::Auto);
    let applied = block(e.store.applied(e.server, "host-c")).unwrap();
    e.add("b");
    e.add("c");
    e.wg.inject(Fault::FailAtPeer { index: 1 });
    let r = e.apply_on(&host, Verify::Auto);
    assert!(r.read_back && !r.converged && !r.errors.is_empty());
    assert_eq!(e.device().peers.len(), 2, "b landed, c did not");
    assert_eq!(
        block(e.store.applied(e.server, "host-c")).unwrap(),
        applied,
        "the new revision is not recorded as applied"
    );
    // No snapshot survives a failure: the next apply reads the device in full first,
    // plans the missing peer from that, and its acknowledgement is proof.
    let before = counting.reads();
    let r = e.apply_on(&host, Verify::Auto);
    assert!(r.converged && !r.read_back, "{:?}", r.remaining);
    assert_eq!(counting.reads(), before + 1);
    assert_eq!(e.device().peers.len(), 3);
}

/// A PSK rotated between two applies of one long-lived manager reaches the device. The
/// manager keeps opened PSKs between applies, keyed by their sealed text; the rotated
/// one must miss that cache. Twice: once while the manager follows peer changes in its
/// kept desired state, and once after a server change made it derive the desired state
/// afresh from the kept cache (a cache that answered for the peer whatever its sealed
/// PSK would keep applying the old key there).
#[test]
fn a_psk_rotated_between_two_applies_reaches_the_device() {
    let e = setup(&["a", "b"]);
    assert!(e.apply().converged);
    let key = e.key_of("a");
    let id = block(e.m.resolve_peer(&e.admin, e.server, "a")).unwrap();
    let other = e.key_of("b");
    let other_psk = e.device().peers[&other].preshared_key.clone();
    for server_change_first in [false, true] {
        let old = e.device().peers[&key].preshared_key.clone().expect("a PSK");
        if server_change_first {
            // A change the kept desired state cannot follow: it is derived afresh at the
            // next apply, from the cache of opened secrets.
            let up = ServerUpdate {
                quarantine_secs: Some(7),
                ..ServerUpdate::default()
            };
            block(e.m.update_server(&e.admin, e.server, up)).unwrap();
        }
        block(e.m.rotate_peer_psk(&e.admin, e.server, id)).unwrap();
        let r = e.apply();
        assert!(r.converged, "{:?}", r.remaining);
        assert_eq!(
            r.plan.items,
            vec![PlanItem::UpdatePeer {
                name: "a".into(),
                public_key: key,
                changes: vec![PeerChange::PresharedKey],
            }],
            "{}",
            r.plan
        );
        let dev = e.device();
        let new = dev.peers[&key].preshared_key.clone().expect("a PSK");
        assert!(
            new != old,
            "the device kept the old PSK ({server_change_first})"
        );
        // The device holds the PSK the client's config carries.
        let cfg = block(e.m.client_config(&e.admin, e.server, id)).unwrap();
        assert!(
            cfg.text.contains(new.expose_base64().as_str()),
            "the device's PSK is not the client's"
        );
        // The other peer kept its PSK.
        assert!(dev.peers[&other].preshared_key == other_psk);
    }
}

/// Another process removes a peer while this one applies, just after this one read the
/// revisions since the host's applied one: the apply converges on one revision (the
/// device keeps the peer for now, nothing is recorded past what was planned), and the
/// next apply removes it. (Reading the removals before the desired state once left such
/// a peer on the device for good: the desired state was already without it, the
/// removals were not, so it counted as unmanaged, and the apply was recorded past its
/// removal.)
#[test]
fn a_removal_committed_during_an_apply_is_applied_by_the_next_one() {
    use futures::FutureExt;
    use wgm_core::model::{Actor, AuditEntry, AuditOutcome, Change, Commit};
    use wgm_core::store::{AuditStore, HostStateStore, ServerStore};

    let store = Arc::new(MemoryStore::new());
    let key = MasterKey::generate();
    let master = *key.expose_bytes();
    let wg = Arc::new(MemoryWireGuard::new());
    let (m, host, admin) = env_with(store.clone(), &key, &wg);
    let iface = InterfaceName::new("wg0").unwrap();
    let server = block(async {
        let s = NewServer::new(
            ServerName::new("s").unwrap(),
            iface.clone(),
            ListenPort::new(51820).unwrap(),
        );
        let s = m.create_server(&admin, s).await.unwrap().id;
        for p in ["alice", "bob"] {
            m.add_peer(&admin, s, NewPeer::new(PeerName::new(p).unwrap()))
                .await
                .unwrap();
        }
        s
    });
    let apply = || block(m.apply(&admin, server, &host, ApplyOptions::default())).unwrap();
    assert!(apply().converged);
    let alice = block(m.resolve_peer(&admin, server, "alice")).unwrap();
    let alice_key = block(m.get_peer(&admin, server, alice)).unwrap().public_key;
    // A change of this process not applied yet, so the next apply reads the revisions
    // since the applied one.
    block(m.add_peer(
        &admin,
        server,
        NewPeer::new(PeerName::new("carol").unwrap()),
    ))
    .unwrap();
    let carol = block(m.resolve_peer(&admin, server, "carol")).unwrap();
    let carol_key = block(m.get_peer(&admin, server, carol)).unwrap().public_key;

    // The other process: alice removed as soon as this one has read the revisions.
    store.after_next_revisions(move |store| {
        let audit_key = store
            .audit_key()
            .now_or_never()
            .unwrap()
            .unwrap()
            .unwrap()
            .open(&Sealer::new(MasterKey::from_bytes(master)))
            .unwrap();
        let st = store
            .load_server(server)
            .now_or_never()
            .unwrap()
            .unwrap()
            .unwrap();
        let actor = Actor {
            user_id: None,
            label: "local:other-process".into(),
        };
        let at = st.server.updated_at;
        store
            .commit(
                Commit {
                    server_id: server,
                    expected: st.revision,
                    changes: vec![Change::PeerRemoved {
                        peer: Box::new(st.peers[&alice].clone()),
                    }],
                    author: actor.clone(),
                    at,
                    summary: "remove alice".into(),
                    audit: AuditEntry {
                        at,
                        actor,
                        action: wgm_core::audit::AuditAction::PeerRemove,
                        object: "alice".into(),
                        server_id: Some(server),
                        revision: None,
                        outcome: AuditOutcome::Success,
                        details: serde_json::Value::Null,
                    },
                },
                &audit_key,
            )
            .now_or_never()
            .unwrap()
            .unwrap();
    });
    let head_before = block(store.head(server)).unwrap().unwrap();
    let r = apply();
    assert!(r.converged, "{:?}", r.remaining);
    let head = block(store.head(server)).unwrap().unwrap();
    assert_eq!(head.0, head_before.0 + 1, "the other process committed");
    let applied = block(store.applied(server, "host-a")).unwrap().unwrap();
    let device = block(wg.read_device(&iface)).unwrap().unwrap();
    assert!(device.peers.contains_key(&carol_key));
    if device.peers.contains_key(&alice_key) {
        assert!(
            applied < head,
            "alice is on the device, her removal not applied"
        );
    }
    // The next apply removes her.
    let r = apply();
    assert!(r.converged, "{:?}", r.remaining);
    let device = block(wg.read_device(&iface)).unwrap().unwrap();
    assert!(
        !device.peers.contains_key(&alice_key),
        "alice was left on the device: {}",
        r.plan
    );
    assert_eq!(block(store.applied(server, "host-a")).unwrap(), Some(head));
}

/// A peer given a new key: the next apply removes the old key from the device (it is in
/// the removals since the applied revision: no longer a peer of the server, it would
/// otherwise count as unmanaged and stay) and adds the new one; the other peer stays.
#[test]
fn a_rekeyed_peers_old_key_is_removed_from_the_device() {
    let e = setup(&["a", "b"]);
    e.apply();
    let (old, other) = (e.key_of("a"), e.key_of("b"));
    let id = block(e.m.resolve_peer(&e.admin, e.server, "a")).unwrap();
    block(e.m.rotate_peer_key(&e.admin, e.server, id)).unwrap();
    let new = e.key_of("a");
    assert_ne!(old, new);
    let r = e.apply();
    assert!(r.converged, "{:?}", r.remaining);
    let dev = e.device();
    assert!(
        !dev.peers.contains_key(&old),
        "the old key stayed: {}",
        r.plan
    );
    assert!(dev.peers.contains_key(&new) && dev.peers.contains_key(&other));
}
