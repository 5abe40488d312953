//! The pure device and link semantics (`DeviceState::apply`, `LinkState::apply`) that
//! the reconciler trusts after an acknowledged delta:
//!
//! 1. applied to a snapshot (finding an allowed IP's owner by scanning the peers, or by
//!    an index built for a large delta) they agree with the in-memory device (which keeps
//!    its index across deltas) on arbitrary delta sequences: own-key peers, a new private
//!    key, IPs moving between peers, `update_only`, `replace_*`. That the in-memory device
//!    behaves like the kernel and wireguard-go is the backend conformance suite's job,
//!    which runs against both;
//! 2. planning is closed under them: applying a plan's deltas to the state it was made
//!    from leaves nothing more to plan, for any live state and any desired state, with
//!    and without single-IP removal. That is the property that makes "acknowledged"
//!    mean "converged".

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use ipnet::IpNet;
use proptest::prelude::*;
use wgm_core::backend::{
    Capabilities, DeviceDelta, DeviceState, LinkState, MemoryWireGuard, PeerDelta, WireGuardBackend,
};
use wgm_core::keys::{PresharedKey, PrivateKey, PublicKey};
use wgm_core::model::{PeerId, RevisionNo, ServerId};
use wgm_core::names::{InterfaceName, PeerName};
use wgm_core::reconcile::{plan, DesiredHost, DesiredPeer, DriftPolicy, PlanOptions};

const KEYS: usize = 6;

/// A small pool of keys, so that deltas collide: the same peer twice, the device's own
/// key as a peer.
fn private_keys() -> &'static [PrivateKey] {
    static KEYS_: OnceLock<Vec<PrivateKey>> = OnceLock::new();
    KEYS_.get_or_init(|| {
        (0..KEYS)
            .map(|i| {
                let mut b = [7u8; 32];
                b[1] = u8::try_from(i).unwrap(); // not byte 0: clamping clears its low bits
                PrivateKey::from_bytes(b)
            })
            .collect()
    })
}

fn public(i: usize) -> PublicKey {
    private_keys()[i].public_key()
}

/// A small pool of networks, so that allowed IPs move between peers.
fn nets() -> Vec<IpNet> {
    [
        "fd00::2/128",
        "fd00::3/128",
        "fd00:5::/64",
        "10.8.0.2/32",
        "10.8.0.3/32",
        "10.9.0.0/24",
        "2001:db8::/48",
        "0.0.0.0/0",
    ]
    .iter()
    .map(|s| s.parse().unwrap())
    .collect()
}

fn psk(i: u8) -> PresharedKey {
    PresharedKey::from_bytes([i; 32])
}

fn subset() -> impl Strategy<Value = Vec<IpNet>> {
    proptest::collection::vec(0..8usize, 0..4).prop_map(|ix| {
        let n = nets();
        ix.into_iter().map(|i| n[i]).collect()
    })
}

fn peer_delta() -> impl Strategy<Value = PeerDelta> {
    (
        0..KEYS,
        0..10u8,
        any::<bool>(),
        prop_oneof![
            Just(None),
            Just(Some(None)),
            (1..3u8).prop_map(|i| Some(Some(i)))
        ],
        prop::option::of(1000..1003u16),
        prop::option::of(0..3u16),
        any::<bool>(),
        subset(),
        subset(),
    )
        .prop_map(
            |(k, kind, update_only, psk_choice, port, keepalive, replace, remove, add)| {
                let key = public(k);
                if kind == 0 {
                    return PeerDelta::remove(key);
                }
                let mut d = PeerDelta::new(key);
                d.update_only = update_only && kind < 3;
                d.preshared_key = psk_choice.map(|c| c.map(psk));
                d.endpoint = port.map(|p| SocketAddr::from(([192, 0, 2, 1], p)));
                d.persistent_keepalive = keepalive;
                d.replace_allowed_ips = replace;
                d.remove_allowed_ips = remove.into_iter().filter(|r| !add.contains(r)).collect();
                d.allowed_ips = add;
                d.allowed_ips.dedup();
                d
            },
        )
}

fn device_delta() -> impl Strategy<Value = DeviceDelta> {
    (
        prop::option::of(0..KEYS),
        prop::option::of(1..4u16),
        prop::option::of(0..3u32),
        0..12u8,
        proptest::collection::vec(peer_delta(), 0..6),
    )
        .prop_map(|(key, port, mark, replace, peers)| DeviceDelta {
            private_key: key.map(|i| private_keys()[i].clone()),
            listen_port: port.map(|p| 51820 + p),
            fwmark: mark,
            replace_peers: replace == 0,
            peers,
        })
}

fn caps(remove_allowed_ip: bool) -> Capabilities {
    Capabilities {
        kernel: false,
        fwmark: true,
        remove_allowed_ip,
        max_set_bytes: None,
    }
}

fn block<F: std::future::Future>(f: F) -> F::Output {
    futures::executor::block_on(f)
}

/// Apply the valid deltas of `deltas` to an empty model device.
fn live_from(deltas: &[DeviceDelta]) -> DeviceState {
    let mut dev = DeviceState::default();
    for d in deltas {
        if d.validate(&caps(true)).is_ok() {
            dev.apply(d);
        }
    }
    dev
}

fn link() -> impl Strategy<Value = LinkState> {
    (
        any::<bool>(),
        prop_oneof![Just(1280u32), Just(1420), Just(1000), Just(9000)],
        subset(),
        subset(),
    )
        .prop_map(|(up, mtu, addresses, routes)| {
            let mut addresses: Vec<IpNet> = addresses
                .into_iter()
                .filter(|a| (a.addr().is_ipv4() || mtu >= 1280) && !a.addr().is_unspecified())
                .collect();
            addresses.sort_unstable();
            addresses.dedup();
            let mut routes: Vec<IpNet> = if up {
                routes
                    .into_iter()
                    .filter(|r| r.addr().is_ipv4() || mtu >= 1280)
                    .collect()
            } else {
                Vec::new()
            };
            routes.sort_unstable();
            routes.dedup();
            LinkState {
                up,
                mtu,
                addresses,
                routes,
            }
        })
}

/// A desired state: the server is key 0; peers from keys 1.., each network at most
/// once (the address manager never hands one out twice).
fn desired() -> impl Strategy<Value = DesiredHost> {
    (
        proptest::collection::vec(
            (
                any::<bool>(),
                0..3u8,
                prop::option::of(1000..1002u16),
                0..2u16,
            ),
            KEYS - 1,
        ),
        proptest::collection::vec(0..KEYS, 8),
        prop_oneof![Just(1280u32), Just(1420)],
        subset(),
        subset(),
        0..2u32,
        proptest::collection::vec(1..KEYS, 0..3),
    )
        .prop_map(|(peers, owner_of, mtu, addresses, routes, fwmark, known)| {
            let n = nets();
            let mut out = BTreeMap::new();
            for (i, (present, psk_choice, port, keepalive)) in peers.into_iter().enumerate() {
                if !present {
                    continue;
                }
                let key = public(i + 1);
                let mut allowed: Vec<IpNet> = (0..n.len())
                    .filter(|j| owner_of[*j] == i + 1)
                    .map(|j| n[j])
                    .collect();
                allowed.sort_unstable();
                out.insert(
                    key,
                    DesiredPeer {
                        id: PeerId::new_random(),
                        name: PeerName::new(format!("p{i}")).unwrap(),
                        public_key: key,
                        preshared_key: (psk_choice > 0).then(|| psk(psk_choice)),
                        endpoint: port.map(|p| SocketAddr::from(([192, 0, 2, 1], p))),
                        allowed_ips: allowed,
                        keepalive,
                    },
                );
            }
            let mut known_keys: HashSet<PublicKey> = out.keys().copied().collect();
            known_keys.extend(known.into_iter().map(public));
            let mut addresses: Vec<IpNet> = addresses
                .into_iter()
                .filter(|a| !a.addr().is_unspecified())
                .collect();
            addresses.sort_unstable();
            addresses.dedup();
            let mut routes: Vec<IpNet> = routes;
            routes.sort_unstable();
            routes.dedup();
            DesiredHost {
                server_id: ServerId::new_random(),
                revision: RevisionNo(7),
                interface: InterfaceName::new("wg0").unwrap(),
                active: true,
                private_key: private_keys()[0].clone(),
                public_key: public(0),
                listen_port: 51820,
                fwmark,
                peers: Arc::new(out),
                known_keys: Arc::new(known_keys),
                known_names: Arc::new(BTreeMap::new()),
                removed: BTreeMap::new(),
                mtu,
                addresses,
                routes,
                unresolved_endpoints: Vec::new(),
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_model_agrees_with_the_in_memory_device(deltas in proptest::collection::vec(device_delta(), 1..6)) {
        let wg = MemoryWireGuard::new();
        let name = InterfaceName::new("wg0").unwrap();
        block(wg.create_device(&name)).unwrap();
        let mut model = DeviceState::default();
        for d in &deltas {
            if d.validate(&wg.capabilities()).is_err() {
                continue;
            }
            block(wg.apply_device(&name, d)).unwrap();
            model.apply(d);
            let live = block(wg.read_device(&name)).unwrap().unwrap();
            prop_assert_eq!(&live.peers, &model.peers);
            prop_assert_eq!(live.public_key, model.public_key);
            prop_assert_eq!(live.listen_port, model.listen_port);
            prop_assert_eq!(live.fwmark, model.fwmark);
        }
    }

    #[test]
    fn applying_a_plan_leaves_nothing_to_plan(
        live in proptest::collection::vec(device_delta(), 0..5),
        link in link(),
        desired in desired(),
        remove_allowed_ip in any::<bool>(),
        remove_unmanaged in any::<bool>(),
    ) {
        let drift = if remove_unmanaged { DriftPolicy::Remove } else { DriftPolicy::Report };
        let opts = PlanOptions { drift, remove_allowed_ip, full_resync: false };
        let mut dev = live_from(&live);
        let mut link = link;
        let first = plan(&desired, Some(&dev), Some(&link), opts);
        prop_assert!(first.device.validate(&caps(remove_allowed_ip)).is_ok(), "{:?}", first.device);
        prop_assert!(first.link.validate().is_ok(), "{:?}", first.link);
        dev.apply(&first.device);
        prop_assert!(link.apply(&first.link).is_ok(), "{:?} on {:?}", first.link, link);
        let again = plan(&desired, Some(&dev), Some(&link), opts);
        prop_assert!(again.device.is_empty(), "device left: {:?}\nfirst: {}", again.device, first);
        prop_assert!(again.link.is_empty(), "link left: {:?}\nfirst: {}", again.link, first);
        prop_assert!(again.items.iter().all(wgm_core::reconcile::PlanItem::is_report_only), "{}", again);
        let unmanaged: BTreeSet<PublicKey> = dev.peers.keys().copied().filter(|k| !desired.peers.contains_key(k)).collect();
        if remove_unmanaged {
            prop_assert!(unmanaged.is_empty(), "unmanaged left under Remove: {unmanaged:?}");
        }
    }
}
