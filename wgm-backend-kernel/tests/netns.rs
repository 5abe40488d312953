//! `KernelNetwork` against the running kernel, each test in its own throw-away network
//! namespace (named `wgmk-<pid>-<n>-<test>`, deleted by a Drop guard on every exit
//! path). Opt-in: set `WGM_TEST_NETNS=1` and run as root with `ip` installed (with the
//! switch on, either missing fails the test); otherwise the binary prints one `SKIPPED`
//! line and its tests pass without running.
//!
//! The host kernel has no `WireGuard` module (and no dummy module), so the managed link
//! is a veth end or a TUN device (what wireguard-go creates). What the backend reports
//! is checked against `ip -j`, an implementation nobody here wrote.

// The harness helpers unwrap what `ip` prints: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use ipnet::IpNet;
use serde_json::Value;
use wgm_backend_kernel::{KernelNetwork, DEFAULT_ROUTE_PROTOCOL};
use wgm_core::backend::{LinkDelta, LinkState, NetworkBackend};
use wgm_core::names::InterfaceName;
use wgm_core::Error;
use wgm_test_support::{require, Suite};

// ---------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------

/// The programs these tests run.
const TOOLS: &[&str] = &["ip"];

/// Runs `ip` with `args`, panicking with its stderr when it fails; returns stdout.
fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace that exists for the life of the value.
struct Netns {
    name: String,
}

impl Netns {
    fn new(tag: &str) -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("wgmk-{}-{n}-{tag}", std::process::id());
        ip(&["netns", "add", &name]);
        Netns { name }
    }

    fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// `ip -n NS ARGS...`
    fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// `ip -n NS -j ARGS...`, parsed.
    fn ip_json(&self, args: &[&str]) -> Value {
        let mut all = vec!["-j"];
        all.extend_from_slice(args);
        let text = self.ip(&all);
        if text.trim().is_empty() {
            return Value::Array(vec![]);
        }
        serde_json::from_str(&text).expect("ip -j prints JSON")
    }

    /// A veth pair `a`–`b`, both ends inside the namespace, both down.
    fn veth(&self, a: &str, b: &str) {
        self.ip(&["link", "add", a, "type", "veth", "peer", "name", b]);
    }

    fn backend(&self) -> KernelNetwork {
        KernelNetwork::in_netns(self.path()).expect("open netlink in the namespace")
    }

    /// The addresses `ip` reports on `dev` (scope global), as `addr/len`.
    fn ip_addresses(&self, dev: &str) -> BTreeSet<IpNet> {
        let v = self.ip_json(&["address", "show", "dev", dev, "scope", "global"]);
        let mut out = BTreeSet::new();
        for link in v.as_array().unwrap() {
            // `ip -j` prints `{}` for the entries its scope filter left out.
            for a in link["addr_info"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|a| a.get("local").is_some())
            {
                let s = format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]);
                out.insert(s.parse().unwrap());
            }
        }
        out
    }

    /// The address entries `ip` reports on `dev` for `local`.
    fn ip_address_info(&self, dev: &str, local: &str) -> Value {
        let v = self.ip_json(&["address", "show", "dev", dev]);
        for link in v.as_array().unwrap() {
            for a in link["addr_info"].as_array().into_iter().flatten() {
                if a["local"] == local {
                    return a.clone();
                }
            }
        }
        panic!("{local} not on {dev}")
    }

    /// `(dst, dev, protocol)` of every main-table route `ip` reports, both families.
    fn ip_routes(&self) -> BTreeSet<(String, String, String)> {
        let mut out = BTreeSet::new();
        for fam in ["-4", "-6"] {
            for r in self
                .ip_json(&[fam, "route", "show", "table", "main"])
                .as_array()
                .unwrap()
            {
                let mut dst = r["dst"].as_str().unwrap().to_owned();
                // The link-local route appears whenever the kernel gets round to it.
                if dst.starts_with("fe80:") {
                    continue;
                }
                if !dst.contains('/') && dst != "default" {
                    dst.push_str(if fam == "-4" { "/32" } else { "/128" });
                }
                out.insert((
                    dst,
                    r["dev"].as_str().unwrap_or("").to_owned(),
                    r["protocol"].as_str().unwrap_or("").to_owned(),
                ));
            }
        }
        out
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Ignore the outcome: the guard must not panic while a failing test unwinds.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn name(s: &str) -> InterfaceName {
    InterfaceName::new(s).unwrap()
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn nets(v: &[&str]) -> Vec<IpNet> {
    v.iter().map(|s| net(s)).collect()
}

fn route(dst: &str, dev: &str, proto: &str) -> (String, String, String) {
    (dst.to_owned(), dev.to_owned(), proto.to_owned())
}

// ---------------------------------------------------------------------------------------
// Tests that need neither root nor a namespace
// ---------------------------------------------------------------------------------------

#[test]
fn constructor_outside_a_runtime_is_an_error_not_a_panic() {
    let e = KernelNetwork::new().unwrap_err();
    assert!(
        matches!(
            e,
            Error::Backend {
                backend: "netlink",
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("Tokio runtime"), "{e}");
}

#[tokio::test]
async fn missing_namespace_is_not_found() {
    let e = KernelNetwork::in_netns("/run/netns/wgmk-this-namespace-does-not-exist").unwrap_err();
    assert!(
        matches!(
            e,
            Error::NotFound {
                kind: "network namespace",
                ..
            }
        ),
        "{e}"
    );
}

#[tokio::test]
async fn reserved_route_protocols_are_refused() {
    let net = KernelNetwork::new().unwrap();
    assert_eq!(net.route_protocol(), DEFAULT_ROUTE_PROTOCOL);
    assert_eq!(net.name(), "netlink");
    for p in 0..=4 {
        let e = KernelNetwork::new()
            .unwrap()
            .with_route_protocol(p)
            .unwrap_err();
        assert_eq!(e.code(), "invalid_input", "{p}: {e}");
    }
    assert_eq!(net.with_route_protocol(200).unwrap().route_protocol(), 200);
}

#[tokio::test]
async fn usable_as_a_dyn_network_backend() {
    let backend: std::sync::Arc<dyn NetworkBackend> =
        std::sync::Arc::new(KernelNetwork::new().unwrap());
    // The host's loopback always exists and is readable without privileges.
    let lo = backend
        .read_link(&name("lo"))
        .await
        .unwrap()
        .expect("lo exists");
    assert!(lo.mtu > 0);
}

// ---------------------------------------------------------------------------------------
// Namespace tests
// ---------------------------------------------------------------------------------------

#[tokio::test]
#[allow(clippy::too_many_lines)] // One scenario, read top to bottom.
async fn netns_read_apply_round_trip_and_idempotency() {
    let Some(_netns) = require(Suite::Netns, TOOLS) else {
        return;
    };
    let ns = Netns::new("roundtrip");
    ns.veth("veth0", "veth1");
    let backend = ns.backend();
    let veth0 = name("veth0");

    let fresh = backend
        .read_link(&veth0)
        .await
        .unwrap()
        .expect("veth0 exists");
    assert_eq!(
        fresh,
        LinkState {
            up: false,
            mtu: 1500,
            addresses: vec![],
            routes: vec![]
        }
    );

    let delta = LinkDelta {
        up: Some(true),
        mtu: Some(1420),
        add_addresses: nets(&["fd42::1/64", "10.42.0.1/24"]),
        add_routes: nets(&["fd42:7::/48", "10.77.0.0/24", "10.78.0.0/16"]),
        ..LinkDelta::default()
    };
    backend.apply_link(&veth0, &delta).await.unwrap();
    let expected = LinkState {
        up: true,
        mtu: 1420,
        addresses: nets(&["10.42.0.1/24", "fd42::1/64"]),
        routes: nets(&["10.77.0.0/24", "10.78.0.0/16", "fd42:7::/48"]),
    };
    assert_eq!(backend.read_link(&veth0).await.unwrap().unwrap(), expected);

    // The same, seen by iproute2.
    let link = &ns.ip_json(&["link", "show", "dev", "veth0"])[0];
    assert_eq!(link["mtu"], 1420);
    assert!(link["flags"].as_array().unwrap().iter().any(|f| f == "UP"));
    assert_eq!(
        ns.ip_addresses("veth0"),
        expected.addresses.iter().copied().collect()
    );
    let v6 = ns.ip_address_info("veth0", "fd42::1");
    assert_eq!(
        v6["nodad"], true,
        "IPv6 address added with IFA_F_NODAD: {v6}"
    );
    assert!(
        v6.get("tentative").is_none(),
        "usable at once, not tentative: {v6}"
    );
    let routes = ns.ip_routes();
    let proto = DEFAULT_ROUTE_PROTOCOL.to_string();
    for dst in ["10.77.0.0/24", "10.78.0.0/16", "fd42:7::/48"] {
        assert!(
            routes.contains(&route(dst, "veth0", &proto)),
            "{dst} proto {proto} in {routes:?}"
        );
    }
    let listed = ns.ip(&["route", "show", "proto", &proto, "table", "main"]);
    assert!(listed.contains("10.77.0.0/24"), "{listed}");

    // Applying the same delta again changes nothing and succeeds.
    backend.apply_link(&veth0, &delta).await.unwrap();
    assert_eq!(backend.read_link(&veth0).await.unwrap().unwrap(), expected);
    assert_eq!(ns.ip_routes(), routes);

    // Removing what is absent succeeds and changes nothing.
    let absent = LinkDelta {
        remove_addresses: nets(&["10.43.0.1/24", "fd43::1/64", "10.42.0.1/25"]),
        remove_routes: nets(&["10.79.0.0/24", "fd42:8::/48"]),
        ..LinkDelta::default()
    };
    backend.apply_link(&veth0, &absent).await.unwrap();
    assert_eq!(backend.read_link(&veth0).await.unwrap().unwrap(), expected);

    // Removing what is there.
    let remove = LinkDelta {
        remove_addresses: nets(&["fd42::1/64"]),
        remove_routes: nets(&["fd42:7::/48", "10.78.0.0/16"]),
        ..LinkDelta::default()
    };
    backend.apply_link(&veth0, &remove).await.unwrap();
    assert_eq!(
        backend.read_link(&veth0).await.unwrap().unwrap(),
        LinkState {
            up: true,
            mtu: 1420,
            addresses: nets(&["10.42.0.1/24"]),
            routes: nets(&["10.77.0.0/24"]),
        }
    );
    assert_eq!(
        ns.ip_addresses("veth0"),
        [net("10.42.0.1/24")].into_iter().collect()
    );

    // Down: the link goes down and, as Linux does, its routes go with it.
    backend
        .apply_link(
            &veth0,
            &LinkDelta {
                up: Some(false),
                ..LinkDelta::default()
            },
        )
        .await
        .unwrap();
    let down = backend.read_link(&veth0).await.unwrap().unwrap();
    assert!(!down.up);
    assert!(down.routes.is_empty(), "{down:?}");
    let link = &ns.ip_json(&["link", "show", "dev", "veth0"])[0];
    assert!(!link["flags"].as_array().unwrap().iter().any(|f| f == "UP"));
}

#[tokio::test]
async fn netns_foreign_addresses_and_routes_are_untouched() {
    let Some(_netns) = require(Suite::Netns, TOOLS) else {
        return;
    };
    let ns = Netns::new("foreign");
    ns.veth("veth0", "veth1");
    ns.ip(&["link", "set", "veth0", "up"]);
    ns.ip(&["link", "set", "veth1", "up"]);
    // Someone else's state: an address and a route on the other link, and routes of
    // other protocols on the managed link.
    ns.ip(&["address", "add", "10.99.0.1/24", "dev", "veth1"]);
    ns.ip(&["address", "add", "fd99::1/64", "dev", "veth1", "nodad"]);
    ns.ip(&[
        "route",
        "add",
        "10.98.0.0/24",
        "dev",
        "veth1",
        "proto",
        "static",
    ]);
    // An address of someone else's on the managed link too: Linux flushes every IPv4
    // route through a link when its last IPv4 address goes, so without it our own
    // add-then-remove below would take the foreign routes with it (kernel behaviour,
    // not ours).
    ns.ip(&["address", "add", "10.96.0.1/24", "dev", "veth0"]);
    ns.ip(&[
        "route",
        "add",
        "10.97.0.0/24",
        "dev",
        "veth0",
        "proto",
        "static",
    ]);
    ns.ip(&["route", "add", "fd97::/64", "dev", "veth0", "proto", "boot"]);
    let before = ns.ip_routes();
    let backend = ns.backend();
    let veth0 = name("veth0");

    // Routes of other protocols are not ours: not reported ...
    let state = backend.read_link(&veth0).await.unwrap().unwrap();
    assert!(state.routes.is_empty(), "{state:?}");
    // ... not removed (the kernel matches proto on delete) ...
    let remove = LinkDelta {
        remove_routes: nets(&["10.97.0.0/24", "fd97::/64", "10.98.0.0/24"]),
        remove_addresses: nets(&["10.99.0.1/24", "fd99::1/64"]),
        ..LinkDelta::default()
    };
    backend.apply_link(&veth0, &remove).await.unwrap();
    assert_eq!(ns.ip_routes(), before);
    assert_eq!(
        ns.ip_addresses("veth1"),
        nets(&["10.99.0.1/24", "fd99::1/64"]).into_iter().collect()
    );
    // ... and not taken over: adding a route to the same destination is a conflict.
    let take = LinkDelta {
        add_routes: nets(&["10.97.0.0/24"]),
        ..LinkDelta::default()
    };
    let e = backend.apply_link(&veth0, &take).await.unwrap_err();
    assert_eq!(e.code(), "conflict", "{e}");
    assert!(e.to_string().contains("10.97.0.0/24"), "{e}");
    assert_eq!(ns.ip_routes(), before);

    // Our own changes on veth0 leave veth1 and the foreign routes alone.
    let ours = LinkDelta {
        add_addresses: nets(&["10.42.0.1/24", "fd42::1/64"]),
        add_routes: nets(&["10.77.0.0/24", "fd42:7::/48"]),
        ..LinkDelta::default()
    };
    backend.apply_link(&veth0, &ours).await.unwrap();
    let undo = LinkDelta {
        remove_addresses: ours.add_addresses.clone(),
        remove_routes: ours.add_routes.clone(),
        ..LinkDelta::default()
    };
    backend.apply_link(&veth0, &undo).await.unwrap();
    assert_eq!(ns.ip_routes(), before);
    assert_eq!(
        ns.ip_addresses("veth1"),
        nets(&["10.99.0.1/24", "fd99::1/64"]).into_iter().collect()
    );

    // The foreign address on the managed link is reported and was never touched.
    let state = backend.read_link(&veth0).await.unwrap().unwrap();
    assert_eq!(state.addresses, nets(&["10.96.0.1/24"]));
    assert!(state.routes.is_empty(), "{state:?}");

    // The other link reads with its addresses and without the routes (not ours).
    let veth1 = backend.read_link(&name("veth1")).await.unwrap().unwrap();
    assert_eq!(veth1.addresses, nets(&["10.99.0.1/24", "fd99::1/64"]));
    assert!(veth1.routes.is_empty());
}

#[tokio::test]
async fn netns_missing_and_removed_links() {
    let Some(_netns) = require(Suite::Netns, TOOLS) else {
        return;
    };
    let ns = Netns::new("missing");
    let backend = ns.backend();
    let veth0 = name("veth0");

    assert_eq!(backend.read_link(&veth0).await.unwrap(), None);
    let delta = LinkDelta {
        up: Some(true),
        ..LinkDelta::default()
    };
    let e = backend.apply_link(&veth0, &delta).await.unwrap_err();
    assert!(
        matches!(&e, Error::NotFound { kind: "link", id } if id == "veth0"),
        "{e}"
    );

    ns.veth("veth0", "veth1");
    let delta = LinkDelta {
        up: Some(true),
        add_addresses: nets(&["fd42::1/64"]),
        add_routes: nets(&["fd42:7::/48"]),
        ..LinkDelta::default()
    };
    backend.apply_link(&veth0, &delta).await.unwrap();
    assert!(backend.read_link(&veth0).await.unwrap().is_some());

    ns.ip(&["link", "del", "veth0"]);
    assert_eq!(backend.read_link(&veth0).await.unwrap(), None);
    assert_eq!(
        backend.read_link(&name("veth1")).await.unwrap(),
        None,
        "a veth pair goes together"
    );

    // Recreated out of band (new index): found again by name, empty.
    ns.veth("veth0", "veth1");
    let again = backend.read_link(&veth0).await.unwrap().unwrap();
    assert_eq!(
        again,
        LinkState {
            up: false,
            mtu: 1500,
            addresses: vec![],
            routes: vec![]
        }
    );
    backend.apply_link(&veth0, &delta).await.unwrap();
    assert_eq!(
        backend.read_link(&veth0).await.unwrap().unwrap().routes,
        nets(&["fd42:7::/48"])
    );
}

/// Also on a multi-threaded runtime: the socket is bound to its namespace, not to a
/// thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn netns_namespaces_are_isolated() {
    let Some(_netns) = require(Suite::Netns, TOOLS) else {
        return;
    };
    let a = Netns::new("iso-a");
    let b = Netns::new("iso-b");
    a.veth("veth0", "veth1");
    let in_a = a.backend();
    let in_b = b.backend();
    assert!(in_a.read_link(&name("veth0")).await.unwrap().is_some());
    assert_eq!(in_b.read_link(&name("veth0")).await.unwrap(), None);
    // The test process itself never changed namespace.
    let host = KernelNetwork::new().unwrap();
    assert_eq!(host.read_link(&name("veth0")).await.unwrap(), None);
}

#[tokio::test]
async fn netns_tun_link_like_wireguard_go() {
    let Some(_netns) = require(Suite::Netns, TOOLS) else {
        return;
    };
    let ns = Netns::new("tun");
    // A TUN device is what wireguard-go creates: point-to-point, NOARP, no MAC.
    ns.ip(&["tuntap", "add", "dev", "wgtun0", "mode", "tun"]);
    let backend = ns.backend();
    let dev = name("wgtun0");
    let delta = LinkDelta {
        up: Some(true),
        mtu: Some(1420),
        add_addresses: nets(&["fd42:0:0:1::1/64", "10.8.0.1/24"]),
        add_routes: nets(&["fd42:0:0:2::/64", "10.9.0.0/24"]),
        ..LinkDelta::default()
    };
    backend.apply_link(&dev, &delta).await.unwrap();
    assert_eq!(
        backend.read_link(&dev).await.unwrap().unwrap(),
        LinkState {
            up: true,
            mtu: 1420,
            addresses: nets(&["10.8.0.1/24", "fd42:0:0:1::1/64"]),
            routes: nets(&["10.9.0.0/24", "fd42:0:0:2::/64"]),
        }
    );
}

#[tokio::test]
async fn netns_ipv6_address_with_another_prefix() {
    let Some(_netns) = require(Suite::Netns, TOOLS) else {
        return;
    };
    let ns = Netns::new("prefix");
    ns.veth("veth0", "veth1");
    ns.ip(&["address", "add", "fd42::1/128", "dev", "veth0", "nodad"]);
    let backend = ns.backend();
    let veth0 = name("veth0");

    // Linux keys IPv6 addresses by address alone: adding the /64 next to the /128 is
    // refused, and reported as a conflict rather than as success.
    let add = LinkDelta {
        add_addresses: nets(&["fd42::1/64"]),
        ..LinkDelta::default()
    };
    let e = backend.apply_link(&veth0, &add).await.unwrap_err();
    assert_eq!(e.code(), "conflict", "{e}");

    // Removing the /128 in the same delta works (removals come first).
    let swap = LinkDelta {
        add_addresses: nets(&["fd42::1/64"]),
        remove_addresses: nets(&["fd42::1/128"]),
        ..LinkDelta::default()
    };
    backend.apply_link(&veth0, &swap).await.unwrap();
    assert_eq!(
        backend.read_link(&veth0).await.unwrap().unwrap().addresses,
        nets(&["fd42::1/64"])
    );
}

#[tokio::test]
async fn netns_small_mtu_drops_ipv6_and_refuses_new_ipv6() {
    let Some(_netns) = require(Suite::Netns, TOOLS) else {
        return;
    };
    let ns = Netns::new("mtu");
    ns.veth("veth0", "veth1");
    let backend = ns.backend();
    let veth0 = name("veth0");
    let delta = LinkDelta {
        up: Some(true),
        add_addresses: nets(&["fd42::1/64", "10.42.0.1/24"]),
        ..LinkDelta::default()
    };
    backend.apply_link(&veth0, &delta).await.unwrap();

    backend
        .apply_link(
            &veth0,
            &LinkDelta {
                mtu: Some(1200),
                ..LinkDelta::default()
            },
        )
        .await
        .unwrap();
    let state = backend.read_link(&veth0).await.unwrap().unwrap();
    assert_eq!(
        (state.mtu, state.addresses),
        (1200, nets(&["10.42.0.1/24"]))
    );

    let e = backend
        .apply_link(
            &veth0,
            &LinkDelta {
                add_addresses: nets(&["fd42::2/64"]),
                ..LinkDelta::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), "invalid_input", "{e}");

    // Above the device maximum: refused before anything is sent.
    ns.ip(&["tuntap", "add", "dev", "tun9", "mode", "tun"]);
    let max = ns.ip_json(&["-d", "link", "show", "dev", "tun9"])[0]["max_mtu"]
        .as_u64()
        .unwrap();
    if max < 65535 {
        let e = backend
            .apply_link(
                &name("tun9"),
                &LinkDelta {
                    mtu: Some(max as u32 + 1),
                    ..LinkDelta::default()
                },
            )
            .await
            .unwrap_err();
        assert_eq!(e.code(), "invalid_input", "{e}");
    }
}

#[tokio::test]
async fn netns_route_protocol_separates_owners() {
    let Some(_netns) = require(Suite::Netns, TOOLS) else {
        return;
    };
    let ns = Netns::new("proto");
    ns.veth("veth0", "veth1");
    ns.ip(&["link", "set", "veth0", "up"]);
    let default = ns.backend();
    let other = ns.backend().with_route_protocol(200).unwrap();
    let veth0 = name("veth0");

    let add = LinkDelta {
        add_routes: nets(&["10.77.0.0/24"]),
        ..LinkDelta::default()
    };
    other.apply_link(&veth0, &add).await.unwrap();
    assert!(ns
        .ip_routes()
        .contains(&route("10.77.0.0/24", "veth0", "200")));
    assert_eq!(
        other.read_link(&veth0).await.unwrap().unwrap().routes,
        nets(&["10.77.0.0/24"])
    );
    assert!(default
        .read_link(&veth0)
        .await
        .unwrap()
        .unwrap()
        .routes
        .is_empty());
    // The default backend cannot remove the other's route.
    let rm = LinkDelta {
        remove_routes: nets(&["10.77.0.0/24"]),
        ..LinkDelta::default()
    };
    default.apply_link(&veth0, &rm).await.unwrap();
    assert!(ns
        .ip_routes()
        .contains(&route("10.77.0.0/24", "veth0", "200")));
    other.apply_link(&veth0, &rm).await.unwrap();
    assert!(!ns.ip_routes().iter().any(|r| r.0 == "10.77.0.0/24"));
}

/// Enough addresses and routes that every dump spans many netlink messages and several
/// `recv` buffers: the backend must merge all parts.
#[tokio::test]
async fn netns_large_dumps_are_read_completely() {
    let Some(_netns) = require(Suite::Netns, TOOLS) else {
        return;
    };
    let ns = Netns::new("large");
    ns.veth("veth0", "veth1");
    let backend = ns.backend();
    let veth0 = name("veth0");

    let addresses: Vec<IpNet> = (1..=500u32)
        .map(|i| format!("fd42::{i:x}/64").parse().unwrap())
        .chain((1..=250u32).map(|i| {
            format!("10.42.{}.{}/16", i / 200, i % 200 + 1)
                .parse()
                .unwrap()
        }))
        .collect();
    let routes: Vec<IpNet> = (0..2000u32)
        .map(|i| format!("fd43:{i:x}::/64").parse().unwrap())
        .chain((0..1000u32).map(|i| {
            format!("10.{}.{}.0/24", 100 + i / 256, i % 256)
                .parse()
                .unwrap()
        }))
        .collect();
    let delta = LinkDelta {
        up: Some(true),
        add_addresses: addresses.clone(),
        add_routes: routes.clone(),
        ..LinkDelta::default()
    };
    let t = Instant::now();
    backend.apply_link(&veth0, &delta).await.unwrap();
    let applied = t.elapsed();
    let t = Instant::now();
    let state = backend.read_link(&veth0).await.unwrap().unwrap();
    let read = t.elapsed();
    eprintln!(
        "applied {} addresses + {} routes in {applied:?}; read back in {read:?}",
        addresses.len(),
        routes.len()
    );
    let mut want_a = addresses.clone();
    want_a.sort();
    let mut want_r = routes.clone();
    want_r.sort();
    assert_eq!(state.addresses.len(), want_a.len());
    assert_eq!(state.addresses, want_a);
    assert_eq!(state.routes.len(), want_r.len());
    assert_eq!(state.routes, want_r);

    // A second apply of the same delta sends nothing (one read, no changes).
    let t = Instant::now();
    backend.apply_link(&veth0, &delta).await.unwrap();
    eprintln!("idempotent re-apply of the same delta in {:?}", t.elapsed());
    assert_eq!(backend.read_link(&veth0).await.unwrap().unwrap(), state);
}

/// wgm-core's conformance suite for every `NetworkBackend`, on a veth end.
#[tokio::test]
async fn netns_conformance_suite_on_veth() {
    let Some(_netns) = require(Suite::Netns, TOOLS) else {
        return;
    };
    let ns = Netns::new("conf-veth");
    ns.veth("veth0", "veth1");
    let backend = ns.backend();
    wgm_core::conformance::backend::run_network(&backend, &name("veth0"))
        .await
        .unwrap();
}

/// The same suite on a TUN device, the kind of link wireguard-go creates.
#[tokio::test]
async fn netns_conformance_suite_on_tun() {
    let Some(_netns) = require(Suite::Netns, TOOLS) else {
        return;
    };
    let ns = Netns::new("conf-tun");
    ns.ip(&["tuntap", "add", "dev", "wgtun0", "mode", "tun"]);
    let backend = ns.backend();
    wgm_core::conformance::backend::run_network(&backend, &name("wgtun0"))
        .await
        .unwrap();
}

/// The link-local address the kernel generates when a link with a MAC address comes up
/// is not part of the link's state; one this backend adds is.
#[tokio::test]
async fn netns_generated_link_local_is_hidden_added_one_is_shown() {
    let Some(_netns) = require(Suite::Netns, TOOLS) else {
        return;
    };
    let ns = Netns::new("ll");
    ns.veth("veth0", "veth1");
    ns.ip(&["link", "set", "veth1", "up"]);
    let backend = ns.backend();
    let veth0 = name("veth0");
    backend
        .apply_link(
            &veth0,
            &LinkDelta {
                up: Some(true),
                ..LinkDelta::default()
            },
        )
        .await
        .unwrap();
    // Wait (bounded) until the kernel has generated the EUI-64 link-local address.
    let mut generated = false;
    for _ in 0..100 {
        let v = ns.ip_json(&["-6", "address", "show", "dev", "veth0", "scope", "link"]);
        if v[0]["addr_info"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|a| a.get("local").is_some())
        {
            generated = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(generated, "the kernel generated no link-local address");
    assert!(backend
        .read_link(&veth0)
        .await
        .unwrap()
        .unwrap()
        .addresses
        .is_empty());

    let ll = LinkDelta {
        add_addresses: nets(&["fe80::77/64"]),
        ..LinkDelta::default()
    };
    backend.apply_link(&veth0, &ll).await.unwrap();
    backend.apply_link(&veth0, &ll).await.unwrap();
    assert_eq!(
        backend.read_link(&veth0).await.unwrap().unwrap().addresses,
        nets(&["fe80::77/64"])
    );
}
