//! `KernelWireGuard` against the real kernel module, each test in its own throw-away
//! network namespace (named `wgmw-<pid>-<n>-<test>`, deleted by a Drop guard on every
//! exit path).
//!
//! - the backend conformance suite, the same one wireguard-go passes: lifecycle,
//!   instances, settings, incremental peers, allowed-IP moves, the device's own key,
//!   full resync, invalid deltas, 10 000 peers, one peer with 10 000 allowed IPs; and one
//!   peer with 100 000 allowed IPs (the kernel splits that peer over many dump parts);
//! - the network conformance suite on a kernel WireGuard link (`KernelNetwork`);
//! - what `wg(8)`, an implementation nobody here wrote, shows agrees with what the
//!   backend reads, both ways;
//! - small set messages split a peer over many messages and the kernel puts it together;
//! - a link of another kind under the device's name is never touched; a listen port in
//!   use is a conflict.
//!
//! Opt-in: `WGM_TEST_KERNEL=1`, as root, on a kernel with WireGuard, with `ip` and `wg`.
//! The machines this project's CI runs on have no WireGuard module, so `.ci/vm` runs
//! this binary inside a QEMU guest that has one (docs/testing.md). With the switch off
//! the binary prints one `SKIPPED` line and its tests pass without running.

// The harness helpers unwrap what `ip` and `wg` print: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;

use common::Netns;

use ipnet::IpNet;
use wgm_backend_kernel::{KernelNetwork, KernelWireGuard};
use wgm_core::backend::{DeviceDelta, PeerDelta, WireGuardBackend};
use wgm_core::conformance::backend::{self as suite, Params};
use wgm_core::keys::{PresharedKey, PrivateKey, PublicKey};
use wgm_core::names::InterfaceName;
use wgm_core::Error;
use wgm_test_support::{require, Suite};

/// The programs these tests run.
const TOOLS: &[&str] = &["ip", "wg"];

/// The backend under test, in the namespace.
trait InNetns {
    fn backend(&self) -> KernelWireGuard;
}

impl InNetns for Netns {
    fn backend(&self) -> KernelWireGuard {
        KernelWireGuard::in_netns(self.path())
    }
}

fn name(s: &str) -> InterfaceName {
    InterfaceName::new(s).unwrap()
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn key() -> PublicKey {
    PrivateKey::generate().public_key()
}

// ---------------------------------------------------------------------------------------
// Without the module
// ---------------------------------------------------------------------------------------

#[test]
fn outside_a_runtime_every_operation_is_an_error_not_a_panic() {
    let wg = KernelWireGuard::new();
    let rt = futures::executor::block_on(wg.probe());
    let e = rt.unwrap_err();
    assert!(e.to_string().contains("Tokio runtime"), "{e}");
    let e = futures::executor::block_on(wg.read_device(&name("wg0"))).unwrap_err();
    assert!(matches!(e, Error::Backend { .. }), "{e}");
}

#[test]
fn capabilities_say_kernel_fwmark_and_no_single_ip_removal() {
    let caps = KernelWireGuard::new().capabilities();
    assert!(caps.kernel && caps.fwmark && !caps.remove_allowed_ip);
    assert_eq!(
        caps.max_set_bytes,
        Some(wgm_backend_kernel::wire::DEFAULT_MESSAGE_BYTES)
    );
    let small = KernelWireGuard::new().with_max_message_bytes(2048).unwrap();
    assert_eq!(small.capabilities().max_set_bytes, Some(2048));
}

// ---------------------------------------------------------------------------------------
// On the real module
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite_on_kernel_wireguard() {
    let Some(_kernel) = require(Suite::Kernel, TOOLS) else {
        return;
    };
    let ns = Netns::new("conformance");
    let wg = ns.backend();
    wg.probe().await.expect("the kernel has WireGuard");
    suite::run_wireguard(&wg, &name("wgk0"), &Params::default())
        .await
        .expect("conformance");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_peer_with_100_000_allowed_ips() {
    let Some(_kernel) = require(Suite::Kernel, TOOLS) else {
        return;
    };
    let ns = Netns::new("many-ips");
    let wg = ns.backend();
    suite::many_allowed_ips(&wg, &name("wgk1"), 100_000)
        .await
        .expect("100 000 allowed IPs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_conformance_on_a_kernel_wireguard_link() {
    let Some(_kernel) = require(Suite::Kernel, TOOLS) else {
        return;
    };
    let ns = Netns::new("network");
    let wg = ns.backend();
    let dev = name("wgk2");
    wg.create_device(&dev).await.expect("create");
    let net = KernelNetwork::in_netns(ns.path()).expect("rtnetlink");
    suite::run_network(&net, &dev)
        .await
        .expect("network conformance");
    wg.delete_device(&dev).await.expect("delete");
}

/// What `wg show dump` prints for one peer: (allowed IPs, endpoint, keepalive, psk set).
fn wg_dump_peers(ns: &Netns, dev: &str) -> Vec<(String, BTreeSet<IpNet>, String, String, bool)> {
    ns.exec("wg", &["show", dev, "dump"])
        .lines()
        .skip(1)
        .map(|line| {
            let f: Vec<&str> = line.split('\t').collect();
            let ips = if f[3] == "(none)" {
                BTreeSet::new()
            } else {
                f[3].split(',').map(net).collect()
            };
            (
                f[0].to_owned(),
                ips,
                f[2].to_owned(),
                f[7].to_owned(),
                f[1] != "(none)",
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wg_show_agrees_with_what_the_backend_sets_and_reads() {
    let Some(_kernel) = require(Suite::Kernel, TOOLS) else {
        return;
    };
    let ns = Netns::new("interop");
    let wg = ns.backend();
    let dev = name("wgk3");
    wg.create_device(&dev).await.expect("create");

    // wgm sets, wg reads.
    let private = PrivateKey::generate();
    let a = key();
    let psk = PresharedKey::generate();
    let delta = DeviceDelta {
        private_key: Some(private.clone()),
        listen_port: Some(51_900),
        fwmark: Some(0x42),
        peers: vec![PeerDelta {
            preshared_key: Some(Some(psk.clone())),
            endpoint: Some("[fd00::9]:4242".parse().unwrap()),
            persistent_keepalive: Some(25),
            allowed_ips: vec![net("fd00:1::/64"), net("10.1.0.0/16")],
            ..PeerDelta::new(a)
        }],
        ..DeviceDelta::default()
    };
    wg.apply_device(&dev, &delta).await.expect("apply");
    let header = ns.exec("wg", &["show", dev.as_str(), "dump"]);
    let first: Vec<&str> = header.lines().next().unwrap().split('\t').collect();
    assert_eq!(first[0], private.expose_base64().as_str());
    assert_eq!(first[2], "51900");
    assert_eq!(first[3], "0x42");
    let peers = wg_dump_peers(&ns, dev.as_str());
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0].0, a.to_base64());
    assert_eq!(peers[0].1, [net("fd00:1::/64"), net("10.1.0.0/16")].into());
    assert_eq!(peers[0].2, "[fd00::9]:4242");
    assert_eq!(peers[0].3, "25");
    assert!(peers[0].4, "psk set");

    // wg sets, wgm reads.
    let b = key();
    ns.exec(
        "wg",
        &[
            "set",
            dev.as_str(),
            "peer",
            &b.to_base64(),
            "allowed-ips",
            "fd00:2::1/128,192.0.2.7/32",
            "endpoint",
            "192.0.2.1:7",
            "persistent-keepalive",
            "9",
        ],
    );
    ns.exec(
        "wg",
        &[
            "set",
            dev.as_str(),
            "peer",
            &a.to_base64(),
            "preshared-key",
            "/dev/null",
        ],
    );
    let s = wg.read_device(&dev).await.expect("read").expect("exists");
    assert_eq!(s.public_key, Some(private.public_key()));
    assert_eq!(
        s.private_key.as_ref().map(PrivateKey::public_key),
        Some(private.public_key())
    );
    assert_eq!((s.listen_port, s.fwmark), (51_900, 0x42));
    let pb = &s.peers[&b];
    assert_eq!(
        pb.allowed_ips,
        vec![net("192.0.2.7/32"), net("fd00:2::1/128")]
    );
    assert_eq!(
        pb.endpoint,
        Some("192.0.2.1:7".parse::<SocketAddr>().unwrap())
    );
    assert_eq!(pb.persistent_keepalive, 9);
    assert_eq!(s.peers[&a].preshared_key, None, "cleared by wg");
    assert_eq!(pb.last_handshake, None);
    assert_eq!(pb.protocol_version, 1);
    wg.delete_device(&dev).await.expect("delete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_messages_split_a_peer_and_the_kernel_puts_it_together() {
    let Some(_kernel) = require(Suite::Kernel, TOOLS) else {
        return;
    };
    let ns = Netns::new("split");
    let wg = ns.backend().with_max_message_bytes(1024).unwrap();
    let dev = name("wgk4");
    wg.create_device(&dev).await.expect("create");
    let big = key();
    let psk = PresharedKey::generate();
    let ips: Vec<IpNet> = (0..3000u32)
        .map(|i| net(&format!("fd00:77::{:x}:{:x}/128", i >> 16, i & 0xffff)))
        .collect();
    let delta = DeviceDelta {
        peers: vec![
            PeerDelta {
                preshared_key: Some(Some(psk.clone())),
                endpoint: Some("[fd00::1]:1".parse().unwrap()),
                persistent_keepalive: Some(15),
                allowed_ips: ips.clone(),
                ..PeerDelta::new(big)
            },
            PeerDelta {
                allowed_ips: vec![net("10.9.0.1/32")],
                ..PeerDelta::new(key())
            },
        ],
        ..DeviceDelta::default()
    };
    wg.apply_device(&dev, &delta)
        .await
        .expect("apply in 1 KiB messages");
    let s = wg.read_device(&dev).await.expect("read").expect("exists");
    let p = &s.peers[&big];
    let mut want = ips.clone();
    want.sort();
    assert!(
        p.allowed_ips == want,
        "{} allowed IPs read back",
        p.allowed_ips.len()
    );
    assert_eq!(p.preshared_key, Some(psk));
    assert_eq!(p.persistent_keepalive, 15);
    assert_eq!(s.peers.len(), 2);
    // wg agrees.
    let peers = wg_dump_peers(&ns, dev.as_str());
    let theirs = peers.iter().find(|p| p.0 == big.to_base64()).unwrap();
    assert_eq!(theirs.1.len(), 3000);

    // Replacing the list sends REPLACE_ALLOWEDIPS once, in the first fragment: the
    // whole new list survives the continuations.
    let replacement: Vec<IpNet> = ips[1000..].to_vec();
    let delta = DeviceDelta {
        peers: vec![PeerDelta {
            replace_allowed_ips: true,
            allowed_ips: replacement.clone(),
            ..PeerDelta::new(big)
        }],
        ..DeviceDelta::default()
    };
    wg.apply_device(&dev, &delta).await.expect("replace");
    let s = wg.read_device(&dev).await.expect("read").expect("exists");
    assert_eq!(s.peers[&big].allowed_ips.len(), 2000);
    // update_only over several messages never creates the peer.
    let ghost = key();
    let delta = DeviceDelta {
        peers: vec![PeerDelta {
            update_only: true,
            allowed_ips: ips[..500].to_vec(),
            ..PeerDelta::new(ghost)
        }],
        ..DeviceDelta::default()
    };
    wg.apply_device(&dev, &delta).await.expect("update only");
    let s = wg.read_device(&dev).await.expect("read").expect("exists");
    assert!(!s.peers.contains_key(&ghost), "update-only created a peer");
    wg.delete_device(&dev).await.expect("delete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_of_another_kind_is_never_touched() {
    let Some(_kernel) = require(Suite::Kernel, TOOLS) else {
        return;
    };
    let ns = Netns::new("other-kind");
    ns.ip_ok(&[
        "link", "add", "wgk5", "type", "veth", "peer", "name", "wgk5p",
    ]);
    let wg = ns.backend();
    let dev = name("wgk5");
    for (what, e) in [
        ("create", wg.create_device(&dev).await.unwrap_err()),
        ("delete", wg.delete_device(&dev).await.unwrap_err()),
        ("read", wg.read_device(&dev).await.unwrap_err()),
        (
            "apply",
            wg.apply_device(&dev, &DeviceDelta::default())
                .await
                .unwrap_err(),
        ),
    ] {
        assert!(matches!(e, Error::Conflict { .. }), "{what}: {e}");
        assert!(
            e.to_string().contains("not a WireGuard device"),
            "{what}: {e}"
        );
    }
    assert!(wg.device_instance(&dev).await.is_err());
    ns.ip_ok(&["link", "show", "wgk5"]); // still there
    assert!(wg.list_devices().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listen_port_in_use_is_a_conflict_and_absent_devices_are_not_found() {
    let Some(_kernel) = require(Suite::Kernel, TOOLS) else {
        return;
    };
    let ns = Netns::new("port");
    let wg = ns.backend();
    let (one, two) = (name("wgk6"), name("wgk7"));
    for d in [&one, &two] {
        wg.create_device(d).await.expect("create");
    }
    ns.ip_ok(&["link", "set", "wgk6", "up"]);
    ns.ip_ok(&["link", "set", "wgk7", "up"]);
    let port = DeviceDelta {
        listen_port: Some(51_999),
        ..DeviceDelta::default()
    };
    wg.apply_device(&one, &port).await.expect("first");
    let e = wg.apply_device(&two, &port).await.unwrap_err();
    assert!(matches!(e, Error::Conflict { .. }), "{e}");
    assert!(e.to_string().contains("wgk7"), "{e}");
    assert_eq!(
        wg.list_devices().await.unwrap(),
        vec![one.clone(), two.clone()]
    );

    let gone = name("wgk8");
    let e = wg.apply_device(&gone, &port).await.unwrap_err();
    assert!(matches!(e, Error::NotFound { kind: "device", .. }), "{e}");
    assert_eq!(wg.read_device(&gone).await.unwrap(), None);
    assert_eq!(wg.device_instance(&gone).await.unwrap(), None);
}
