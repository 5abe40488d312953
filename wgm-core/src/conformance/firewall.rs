//! The conformance suite of [`FirewallBackend`]: every implementation (memory, nftables)
//! runs these checks in its tests, so all of them keep the semantics documented in
//! [`crate::backend::firewall`].
//!
//! Each check takes the backend as a trait object and the interface name of a server
//! whose firewall it may create and remove (it starts by removing leftovers). A failed
//! expectation panics (these are test helpers); a backend error is returned.
//!
//! Quotas are created with used bytes already counted (a delta may say so), which lets
//! the suite check that used bytes survive other changes without generating traffic.
//!
//! ```
//! use wgm_core::backend::MemoryFirewall;
//! use wgm_core::conformance::firewall::{run_all, Params};
//! use wgm_core::names::InterfaceName;
//! # futures::executor::block_on(async {
//! let fw = MemoryFirewall::new();
//! let (a, b) = (InterfaceName::new("wgc0")?, InterfaceName::new("wgc1")?);
//! run_all(&fw, &a, &b, &Params { large_peers: 200 }).await?;
//! # Ok::<(), wgm_core::Error>(())
//! # }).unwrap();
//! ```

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use crate::backend::firewall::{
    plan_firewall, Element, FirewallBackend, FirewallDelta, FirewallState, LiveChain, LiveFirewall,
    LivePeer, PeerChange, PeerCounters, PeerFirewall, PeerObject, PeerSet,
};
use crate::keys::{PrivateKey, PublicKey};
use crate::names::InterfaceName;
use crate::policy::{FilterRule, PeerPolicy, QuotaAction, Rate, ServerPolicy, Verdict};
use crate::{Error, Result};

/// Sizes for the scale check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    /// Peers of [`large_server`].
    pub large_peers: usize,
}

impl Default for Params {
    /// 1 000 peers.
    fn default() -> Self {
        Params { large_peers: 1_000 }
    }
}

/// Run every check, one after the other, on servers `a` and `b` (two interface names no
/// other firewall of the host uses).
pub async fn run_all(
    fw: &dyn FirewallBackend,
    a: &InterfaceName,
    b: &InterfaceName,
    params: &Params,
) -> Result<()> {
    lifecycle(fw, a).await?;
    round_trip(fw, a).await?;
    incremental_changes_keep_other_peers(fw, a).await?;
    failed_delta_applies_nothing(fw, a).await?;
    address_moves_between_peers(fw, a).await?;
    routed_networks(fw, a).await?;
    servers_are_isolated(fw, a, b).await?;
    large_server(fw, a, params.large_peers).await?;
    Ok(())
}

fn key() -> PublicKey {
    PrivateKey::generate().public_key()
}

fn rule(s: &str) -> FilterRule {
    // The literals below are all valid rules.
    s.parse()
        .unwrap_or_else(|e| panic!("bad test rule {s}: {e}"))
}

fn v4(i: u32) -> IpNet {
    IpNet::from(std::net::IpAddr::V4(Ipv4Addr::from(0x0a40_0000 + i)))
}

fn v6(i: u32) -> IpNet {
    IpNet::from(std::net::IpAddr::V6(Ipv6Addr::from(
        0xfd00_0000_0000_0000_0000_0000_0000_0000_u128 + u128::from(i),
    )))
}

async fn read(fw: &dyn FirewallBackend, interface: &InterfaceName) -> Result<LiveFirewall> {
    fw.read_firewall(interface)
        .await?
        .ok_or_else(|| Error::not_found("firewall", interface))
}

/// Plan against what is there, apply, and check that the result has nothing left to plan.
async fn converge(fw: &dyn FirewallBackend, desired: &FirewallState) -> Result<LiveFirewall> {
    desired.validate()?;
    let before = fw.read_firewall(&desired.interface).await?;
    let delta = plan_firewall(desired, before.as_ref());
    fw.apply_firewall(&desired.interface, &delta).await?;
    let after = read(fw, &desired.interface).await?;
    let again = plan_firewall(desired, Some(&after));
    assert!(
        again.is_empty(),
        "{}: not converged after one apply; still to do: {again:?}",
        fw.name()
    );
    Ok(after)
}

/// A peer with one address per family and the default policy.
fn plain(i: u32) -> PeerFirewall {
    PeerFirewall::new(vec![v4(i), v6(i)], PeerPolicy::default(), 0)
}

/// Everything of a peer except its counters.
fn shape(p: &LivePeer) -> LivePeer {
    LivePeer {
        counters: PeerCounters::default(),
        ..p.clone()
    }
}

/// Removing is idempotent; an absent firewall reads as `None`; the static part alone
/// reads back as its policy with no peers.
pub async fn lifecycle(fw: &dyn FirewallBackend, interface: &InterfaceName) -> Result<()> {
    fw.remove_firewall(interface).await?;
    assert!(
        fw.read_firewall(interface).await?.is_none(),
        "{}: an absent firewall must read as None",
        fw.name()
    );
    let desired = FirewallState::new(interface.clone(), ServerPolicy::default());
    let live = converge(fw, &desired).await?;
    assert_eq!(live.policy, Some(ServerPolicy::default()));
    assert!(live.peers.is_empty() && live.stray.is_empty(), "{live:?}");
    fw.remove_firewall(interface).await?;
    fw.remove_firewall(interface).await?;
    assert!(fw.read_firewall(interface).await?.is_none());
    Ok(())
}

/// Every kind of policy reads back as written: elements, quota, limits, allow chains, and
/// a server policy with masquerading, peer-to-peer traffic and a deny default.
pub async fn round_trip(fw: &dyn FirewallBackend, interface: &InterfaceName) -> Result<()> {
    fw.remove_firewall(interface).await?;
    let mut desired = FirewallState::new(
        interface.clone(),
        ServerPolicy {
            forwarding: true,
            masquerade4: Some(InterfaceName::new("eth0")?),
            masquerade6: Some(InterfaceName::new("eth1")?),
            peer_to_peer: true,
            default_verdict: Verdict::Deny,
        },
    );
    let allow = vec![
        rule("192.0.2.0/24:tcp:80-443"),
        rule("192.0.2.53:udp:53"),
        rule("198.51.100.0/24:icmp"),
        rule("203.0.113.0/24"),
        rule("[2001:db8::/32]:tcp:443"),
        rule("[2001:db8:1::/48]:icmp"),
        rule("2001:db8:2::/48"),
        rule("0.0.0.0/0:udp:123"),
    ];
    let peers = [
        PeerPolicy::default(),
        PeerPolicy {
            allow: Some(allow.clone()),
            ..PeerPolicy::default()
        },
        PeerPolicy {
            allow: Some(vec![]),
            rate_up: Some("8mbit".parse()?),
            rate_down: Some("80mbit".parse()?),
            ..PeerPolicy::default()
        },
        PeerPolicy {
            quota: Some("10GiB/30d".parse()?),
            quota_start: 1_700_000_000,
            ..PeerPolicy::default()
        },
        PeerPolicy {
            quota: Some("500MB/1d".parse()?),
            quota_action: QuotaAction::Report,
            rate_up: Some("1mbit".parse()?),
            ..PeerPolicy::default()
        },
    ];
    let mut keys = Vec::new();
    for (i, policy) in peers.into_iter().enumerate() {
        let k = key();
        keys.push(k);
        let i = u32::try_from(i).unwrap_or(0) + 1;
        desired.peers.insert(
            k,
            PeerFirewall::new(vec![v4(i), v6(i)], policy, 1_800_000_000),
        );
    }
    let live = converge(fw, &desired).await?;
    assert_eq!(live.policy.as_ref(), Some(&desired.policy));
    assert_eq!(live.peers.len(), desired.peers.len());
    for (k, want) in &desired.peers {
        let have = &live.peers[k];
        assert_eq!(
            have.elements,
            want.elements(),
            "{}: elements of {k}",
            fw.name()
        );
        assert_eq!(have.addresses().len(), 2);
        assert_eq!(
            have.quota.map(|q| (q.bytes, q.used, q.window)),
            want.policy
                .quota
                .map(|q| (q.bytes(), 0, want.quota_window.unwrap_or_default())),
        );
        assert_eq!(
            have.limit_up,
            want.policy.rate_up.map(Rate::bytes_per_second)
        );
        assert_eq!(
            have.limit_down,
            want.policy.rate_down.map(Rate::bytes_per_second)
        );
        assert_eq!(
            have.chain,
            want.policy.allow.clone().map(LiveChain::Rules),
            "{}: chain of {k}",
            fw.name()
        );
        assert_eq!(have.counters.up_bytes, 0);
        assert_eq!(have.counters.quota_used, want.policy.quota.map(|_| 0));
    }
    // The quota's window is the period containing the time the desired state was made for.
    let with_quota = &live.peers[&keys[3]];
    assert_eq!(
        with_quota.quota.map(|q| q.window),
        Some(1_700_000_000 + (100_000_000 / (30 * 86_400)) * 30 * 86_400)
    );
    fw.remove_firewall(interface).await?;
    Ok(())
}

/// Changing, adding and removing peers, and replacing the static part, never touch
/// another peer: its shape stays and its quota keeps its used bytes. A bigger quota keeps
/// the peer's own used bytes; a new period starts from zero.
pub async fn incremental_changes_keep_other_peers(
    fw: &dyn FirewallBackend,
    interface: &InterfaceName,
) -> Result<()> {
    fw.remove_firewall(interface).await?;
    let mut desired = FirewallState::new(interface.clone(), ServerPolicy::default());
    let (a, b, c) = (key(), key(), key());
    let quota = PeerPolicy {
        quota: Some("1GiB/1d".parse()?),
        rate_down: Some("10mbit".parse()?),
        ..PeerPolicy::default()
    };
    desired
        .peers
        .insert(a, PeerFirewall::new(vec![v4(1), v6(1)], quota.clone(), 0));
    let report = PeerPolicy {
        quota: Some("1GiB/1d".parse()?),
        quota_action: QuotaAction::Report,
        allow: Some(vec![rule("192.0.2.0/24")]),
        ..PeerPolicy::default()
    };
    desired
        .peers
        .insert(b, PeerFirewall::new(vec![v4(2), v6(2)], report, 0));
    // First apply with used bytes already counted (as if traffic had passed).
    let mut delta = plan_firewall(&desired, None);
    for change in &mut delta.peers {
        for object in &mut change.put_objects {
            if let PeerObject::Quota { used, .. } = object {
                *used = if change.key == a { 12_345 } else { 777 };
            }
        }
    }
    fw.apply_firewall(interface, &delta).await?;
    let start = read(fw, interface).await?;
    assert_eq!(
        start.peers[&a].counters.quota_used,
        Some(12_345),
        "{}",
        fw.name()
    );
    assert_eq!(start.peers[&b].counters.quota_used, Some(777));
    assert!(plan_firewall(&desired, Some(&start)).is_empty());

    let untouched = |live: &LiveFirewall, k: &PublicKey, what: &str| {
        assert_eq!(
            shape(&live.peers[k]),
            shape(&start.peers[k]),
            "{}: {what} changed another peer",
            fw.name()
        );
        assert_eq!(
            live.peers[k].counters.quota_used,
            start.peers[k].counters.quota_used,
            "{}: {what} reset another peer's quota",
            fw.name()
        );
    };

    // Add c: one change, for c alone.
    desired.peers.insert(c, plain(3));
    let delta = plan_firewall(&desired, Some(&start));
    assert!(delta.server.is_none());
    assert_eq!(delta.peers.len(), 1);
    assert_eq!(delta.peers[0].key, c);
    assert!(delta.peers[0].remove_elements.is_empty());
    fw.apply_firewall(interface, &delta).await?;
    let live = read(fw, interface).await?;
    untouched(&live, &a, "adding a peer");
    untouched(&live, &b, "adding a peer");

    // Change b's allow list and rate: a stays.
    let mut changed = desired.peers[&b].clone();
    changed.policy.allow = Some(vec![rule("192.0.2.0/24"), rule("[2001:db8::/32]:tcp:22")]);
    changed.policy.rate_up = Some("2mbit".parse()?);
    desired.peers.insert(b, changed);
    let live = converge(fw, &desired).await?;
    untouched(&live, &a, "changing a peer");
    assert_eq!(
        live.peers[&b].counters.quota_used,
        Some(777),
        "{}",
        fw.name()
    );

    // Replace the static part: nobody's quota moves. (Forwarding off: only
    // peer-to-peer traffic goes on.)
    desired.policy = ServerPolicy {
        forwarding: false,
        peer_to_peer: true,
        default_verdict: Verdict::Deny,
        masquerade4: Some(InterfaceName::new("eth0")?),
        ..ServerPolicy::default()
    };
    let delta = plan_firewall(&desired, Some(&live));
    assert!(delta.server.is_some() && delta.peers.is_empty());
    let live = converge(fw, &desired).await?;
    untouched(&live, &a, "replacing the static part");
    assert_eq!(live.peers[&b].counters.quota_used, Some(777));

    // A bigger quota keeps a's used bytes.
    let mut bigger = desired.peers[&a].clone();
    bigger.policy.quota = Some("2GiB/1d".parse()?);
    desired.peers.insert(a, bigger);
    let live = converge(fw, &desired).await?;
    assert_eq!(
        live.peers[&a].quota.map(|q| (q.bytes, q.used)),
        Some((2 << 30, 12_345))
    );
    assert_eq!(live.peers[&b].counters.quota_used, Some(777));

    // Remove c: a and b stay.
    desired.peers.remove(&c);
    let live = converge(fw, &desired).await?;
    assert!(!live.peers.contains_key(&c));
    assert_eq!(live.peers[&a].counters.quota_used, Some(12_345));
    assert_eq!(live.peers[&b].counters.quota_used, Some(777));

    // A new period for a starts from zero; b keeps its bytes.
    let mut next = desired.peers[&a].clone();
    next.quota_window = Some(86_400);
    desired.peers.insert(a, next);
    let live = converge(fw, &desired).await?;
    assert_eq!(
        live.peers[&a].quota.map(|q| (q.used, q.window)),
        Some((0, 86_400))
    );
    assert_eq!(live.peers[&b].counters.quota_used, Some(777));
    fw.remove_firewall(interface).await?;
    Ok(())
}

/// A delta that fails part-way (removing an element that is not there) or that is
/// invalid applies nothing.
pub async fn failed_delta_applies_nothing(
    fw: &dyn FirewallBackend,
    interface: &InterfaceName,
) -> Result<()> {
    fw.remove_firewall(interface).await?;
    let mut desired = FirewallState::new(interface.clone(), ServerPolicy::default());
    desired.peers.insert(key(), plain(1));
    let before = converge(fw, &desired).await?;

    let newcomer = key();
    let mut delta = plan_firewall(
        &{
            let mut more = desired.clone();
            more.peers.insert(newcomer, plain(2));
            more
        },
        Some(&before),
    );
    delta.remove_stray.push(Element {
        set: PeerSet::Up,
        address: v4(99),
    });
    let e = fw.apply_firewall(interface, &delta).await;
    assert!(
        e.is_err(),
        "{}: removing a missing element must fail",
        fw.name()
    );
    assert_eq!(
        read(fw, interface).await?,
        before,
        "{}: nothing applied",
        fw.name()
    );

    let mut twice = PeerChange::new(newcomer);
    twice.put_objects = vec![PeerObject::LimitUp(10), PeerObject::LimitUp(20)];
    let invalid = FirewallDelta {
        peers: vec![twice],
        ..FirewallDelta::default()
    };
    let e = fw.apply_firewall(interface, &invalid).await;
    assert!(
        matches!(e, Err(Error::InvalidInput { .. })),
        "{}: {e:?}",
        fw.name()
    );
    assert_eq!(read(fw, interface).await?, before);
    fw.remove_firewall(interface).await?;
    Ok(())
}

/// An address moves from one peer to another in one delta; the old owner's parts go.
pub async fn address_moves_between_peers(
    fw: &dyn FirewallBackend,
    interface: &InterfaceName,
) -> Result<()> {
    fw.remove_firewall(interface).await?;
    let mut desired = FirewallState::new(interface.clone(), ServerPolicy::default());
    let (a, b) = (key(), key());
    let limited = PeerPolicy {
        rate_up: Some("1mbit".parse()?),
        allow: Some(vec![rule("192.0.2.0/24")]),
        ..PeerPolicy::default()
    };
    desired
        .peers
        .insert(a, PeerFirewall::new(vec![v4(1), v6(1)], limited.clone(), 0));
    converge(fw, &desired).await?;
    desired.peers.remove(&a);
    desired
        .peers
        .insert(b, PeerFirewall::new(vec![v4(1), v6(1)], limited, 0));
    let live = converge(fw, &desired).await?;
    assert_eq!(live.peers.keys().copied().collect::<Vec<_>>(), vec![b]);
    // And back, with a keeping one of the two addresses.
    desired
        .peers
        .insert(b, PeerFirewall::new(vec![v6(1)], PeerPolicy::default(), 0));
    desired
        .peers
        .insert(a, PeerFirewall::new(vec![v4(1)], PeerPolicy::default(), 0));
    let live = converge(fw, &desired).await?;
    assert_eq!(live.peers[&a].addresses(), vec![v4(1)]);
    assert_eq!(live.peers[&b].addresses(), vec![v6(1)]);
    fw.remove_firewall(interface).await?;
    Ok(())
}

fn net(s: &str) -> IpNet {
    // The literals below are all valid networks.
    s.parse()
        .unwrap_or_else(|e| panic!("bad test network {s}: {e}"))
}

/// A peer's routed networks (a delegated prefix, networks behind it) are elements like its
/// tunnel addresses, as prefixes: they read back exactly as written (converged), change
/// without touching the peer's objects or other peers, move from one peer to another in
/// one delta, and an element that overlaps another of its set is refused with nothing
/// applied.
pub async fn routed_networks(fw: &dyn FirewallBackend, interface: &InterfaceName) -> Result<()> {
    fw.remove_firewall(interface).await?;
    let mut desired = FirewallState::new(interface.clone(), ServerPolicy::default());
    let (a, b) = (key(), key());
    let full = PeerPolicy {
        quota: Some("1GiB/1d".parse()?),
        rate_up: Some("10mbit".parse()?),
        rate_down: Some("20mbit".parse()?),
        allow: Some(vec![rule("192.0.2.0/24:tcp:443")]),
        ..PeerPolicy::default()
    };
    desired.peers.insert(
        a,
        PeerFirewall::new(
            vec![v4(1), v6(1), net("10.65.0.0/24"), net("fd01:1::/56")],
            full,
            0,
        ),
    );
    desired.peers.insert(
        b,
        PeerFirewall::new(
            vec![v4(2), v6(2), net("10.66.0.0/16"), net("fd01:2::/48")],
            PeerPolicy {
                quota: Some("1GiB/1d".parse()?),
                quota_action: QuotaAction::Report,
                ..PeerPolicy::default()
            },
            0,
        ),
    );
    desired.validate()?;
    let mut delta = plan_firewall(&desired, None);
    for change in &mut delta.peers {
        for object in &mut change.put_objects {
            if let PeerObject::Quota { used, .. } = object {
                *used = 4_242;
            }
        }
    }
    fw.apply_firewall(interface, &delta).await?;
    let live = read(fw, interface).await?;
    for (k, want) in &desired.peers {
        assert_eq!(
            live.peers[k].elements,
            want.elements(),
            "{}: elements of {k} with prefixes",
            fw.name()
        );
    }
    assert!(
        plan_firewall(&desired, Some(&live)).is_empty(),
        "{}: prefixes must read back as written",
        fw.name()
    );
    let b_before = shape(&live.peers[&b]);

    // a's networks change: one narrower, one new, one gone. Only a's elements move.
    let mut pa = desired.peers[&a].clone();
    pa.addresses = vec![v4(1), v6(1), net("10.65.0.0/25"), net("172.16.0.0/12")];
    desired.peers.insert(a, pa);
    let delta = plan_firewall(&desired, Some(&live));
    assert!(delta.server.is_none());
    assert_eq!(delta.peers.len(), 1);
    assert_eq!(delta.peers[0].key, a);
    assert!(delta.peers[0].put_objects.is_empty() && delta.peers[0].remove_objects.is_empty());
    let live = converge(fw, &desired).await?;
    assert_eq!(
        live.peers[&a].addresses(),
        vec![v4(1), net("10.65.0.0/25"), net("172.16.0.0/12"), v6(1)]
    );
    assert_eq!(live.peers[&a].counters.quota_used, Some(4_242));
    assert_eq!(shape(&live.peers[&b]), b_before, "{}", fw.name());

    // b's IPv6 network moves to a, narrowed, in one delta; b keeps the rest.
    let mut pa = desired.peers[&a].clone();
    pa.addresses.push(net("fd01:2::/56"));
    desired.peers.insert(a, pa);
    let mut pb = desired.peers[&b].clone();
    pb.addresses.retain(|n| *n != net("fd01:2::/48"));
    desired.peers.insert(b, pb);
    let before = read(fw, interface).await?;
    let mut delta = plan_firewall(&desired, Some(&before));
    delta.peers.reverse();
    fw.apply_firewall(interface, &delta).await?;
    let live = read(fw, interface).await?;
    assert!(plan_firewall(&desired, Some(&live)).is_empty());
    assert!(live.peers[&a].addresses().contains(&net("fd01:2::/56")));
    assert_eq!(live.peers[&b].addresses().len(), 3);
    assert_eq!(live.peers[&b].counters.quota_used, Some(4_242));

    // A network inside another of its set (b's 10.66.0.0/16), or holding one, is
    // refused, and nothing of the delta applies. (A network holding a host address of
    // the set need not be refused: see the module docs.)
    for (address, also) in [
        (net("10.66.7.0/24"), None),
        (net("10.66.0.0/15"), Some(v4(77))),
    ] {
        let mut change = PeerChange::new(a);
        change.add_elements.push(Element {
            set: PeerSet::Up,
            address,
        });
        if let Some(also) = also {
            change.add_elements.push(Element {
                set: PeerSet::Down,
                address: also,
            });
        }
        let delta = FirewallDelta {
            peers: vec![change],
            ..FirewallDelta::default()
        };
        let e = fw.apply_firewall(interface, &delta).await;
        assert!(
            e.is_err(),
            "{}: {address} overlaps an element of its set and must be refused",
            fw.name()
        );
        assert_eq!(
            read(fw, interface).await?,
            live,
            "{}: nothing applied",
            fw.name()
        );
    }
    fw.remove_firewall(interface).await?;
    Ok(())
}

/// Two servers share the backend (one nftables table): changing or removing one leaves
/// the other exactly as it was.
pub async fn servers_are_isolated(
    fw: &dyn FirewallBackend,
    a: &InterfaceName,
    b: &InterfaceName,
) -> Result<()> {
    fw.remove_firewall(a).await?;
    fw.remove_firewall(b).await?;
    let quota = PeerPolicy {
        quota: Some("1GiB/1d".parse()?),
        allow: Some(vec![rule("192.0.2.0/24")]),
        ..PeerPolicy::default()
    };
    // The same peer key on both servers, with the same addresses.
    let shared = key();
    let mut first = FirewallState::new(a.clone(), ServerPolicy::default());
    first.peers.insert(
        shared,
        PeerFirewall::new(vec![v4(1), v6(1)], quota.clone(), 0),
    );
    let mut second = FirewallState::new(b.clone(), ServerPolicy::default());
    second
        .peers
        .insert(shared, PeerFirewall::new(vec![v4(1), v6(1)], quota, 0));
    converge(fw, &first).await?;
    let b_before = converge(fw, &second).await?;
    first.policy.default_verdict = Verdict::Deny;
    first.peers.insert(key(), plain(2));
    converge(fw, &first).await?;
    assert_eq!(
        read(fw, b).await?,
        b_before,
        "{}: changing one server touched another",
        fw.name()
    );
    fw.remove_firewall(a).await?;
    assert!(fw.read_firewall(a).await?.is_none());
    assert_eq!(
        read(fw, b).await?,
        b_before,
        "{}: removing one server touched another",
        fw.name()
    );
    fw.remove_firewall(b).await?;
    Ok(())
}

/// `peers` peers in one apply read back converged; adding one more is a delta for it
/// alone.
pub async fn large_server(
    fw: &dyn FirewallBackend,
    interface: &InterfaceName,
    peers: usize,
) -> Result<()> {
    fw.remove_firewall(interface).await?;
    let mut desired = FirewallState::new(interface.clone(), ServerPolicy::default());
    let mut keys = BTreeMap::new();
    for i in 0..peers {
        let i = u32::try_from(i).unwrap_or(u32::MAX) + 1;
        let policy = if i % 10 == 0 {
            PeerPolicy {
                quota: Some("1GiB/30d".parse()?),
                rate_up: Some("10mbit".parse()?),
                allow: Some(vec![rule("192.0.2.0/24:tcp:443")]),
                ..PeerPolicy::default()
            }
        } else {
            PeerPolicy::default()
        };
        let k = key();
        keys.insert(k, i);
        desired
            .peers
            .insert(k, PeerFirewall::new(vec![v4(i), v6(i)], policy, 0));
    }
    let live = converge(fw, &desired).await?;
    assert_eq!(live.peers.len(), peers);
    let one = key();
    let n = u32::try_from(peers).unwrap_or(u32::MAX) + 1;
    desired.peers.insert(one, plain(n));
    let delta = plan_firewall(&desired, Some(&live));
    assert_eq!(delta.peers.len(), 1);
    assert!(delta.server.is_none());
    fw.apply_firewall(interface, &delta).await?;
    let after = read(fw, interface).await?;
    assert_eq!(after.peers.len(), peers + 1);
    assert!(plan_firewall(&desired, Some(&after)).is_empty());
    fw.remove_firewall(interface).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::firewall::{MemoryFirewall, Tamper};

    #[test]
    fn memory_firewall_passes_the_suite() {
        futures::executor::block_on(async {
            let fw = MemoryFirewall::new();
            let a = InterfaceName::new("wgc0").unwrap();
            let b = InterfaceName::new("wgc1").unwrap();
            run_all(&fw, &a, &b, &Params::default()).await.unwrap();
        });
    }

    #[test]
    fn drift_is_repaired_on_memory() {
        futures::executor::block_on(async {
            let fw = MemoryFirewall::new();
            let wg0 = InterfaceName::new("wg0").unwrap();
            let mut desired = FirewallState::new(wg0.clone(), ServerPolicy::default());
            let (a, b) = (key(), key());
            let policy = PeerPolicy {
                quota: Some("1GiB/1d".parse().unwrap()),
                allow: Some(vec![rule("192.0.2.0/24")]),
                ..PeerPolicy::default()
            };
            desired
                .peers
                .insert(a, PeerFirewall::new(vec![v4(1)], policy.clone(), 0));
            desired
                .peers
                .insert(b, PeerFirewall::new(vec![v4(2)], policy, 0));
            converge(&fw, &desired).await.unwrap();
            for _ in 0..3 {
                fw.simulate_up(&wg0, v4(1), 1000).unwrap();
            }
            fw.simulate_down(&wg0, v4(2), 10).unwrap();

            // An element removed by hand: only it comes back, the quota keeps counting.
            let quota_el = Element {
                set: PeerSet::QuotaDrop,
                address: v4(1),
            };
            fw.tamper(&wg0, Tamper::RemoveElement(quota_el));
            fw.tamper(
                &wg0,
                Tamper::StrayElement(Element {
                    set: PeerSet::Down,
                    address: v4(77),
                }),
            );
            fw.tamper(&wg0, Tamper::AlterChain(b));
            let live = read(&fw, &wg0).await.unwrap();
            let delta = plan_firewall(&desired, Some(&live));
            assert_eq!(delta.remove_stray.len(), 1);
            let ca = delta.peers.iter().find(|c| c.key == a).unwrap();
            assert_eq!(ca.add_elements, vec![quota_el]);
            assert!(ca.put_objects.is_empty());
            let cb = delta.peers.iter().find(|c| c.key == b).unwrap();
            assert!(matches!(cb.put_objects[..], [PeerObject::Chain(_)]));
            let live = converge(&fw, &desired).await.unwrap();
            assert_eq!(live.peers[&a].counters.quota_used, Some(3000));
            assert_eq!(live.peers[&a].counters.up_bytes, 3000);
            assert_eq!(live.peers[&b].counters.down_bytes, 10);

            // The quota drops at its size; the drop is counted.
            let mut small = desired.peers[&a].clone();
            small.policy.quota = Some("4KB/1d".parse().unwrap());
            desired.peers.insert(a, small);
            converge(&fw, &desired).await.unwrap();
            assert!(!fw.simulate_up(&wg0, v4(1), 1000).unwrap());
            let live = read(&fw, &wg0).await.unwrap();
            assert_eq!(live.peers[&a].counters.dropped_bytes, 1000);
            assert_eq!(live.peers[&a].counters.quota_used, Some(4000));

            // The table deleted: everything comes back, the quota from zero.
            fw.tamper(&wg0, Tamper::DeleteTable);
            assert!(fw.read_firewall(&wg0).await.unwrap().is_none());
            let live = converge(&fw, &desired).await.unwrap();
            assert_eq!(live.peers[&a].counters.quota_used, Some(0));
        });
    }
}
