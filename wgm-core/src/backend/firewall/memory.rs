//! [`MemoryFirewall`]: an in-memory [`FirewallBackend`] with the semantics of nftables
//! (see the [parent module](super)): atomic deltas applied in phases, counters kept in
//! elements, elements matched by prefix and refused where they overlap another (interval
//! sets), quotas updated in place, limits immutable, refusals where `nft` refuses.
//! Tests drive what the network would do (traffic through a peer's elements) and what an
//! administrator could do by hand (drift), and inject faults.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use ipnet::IpNet;

use super::{
    Element, FirewallBackend, FirewallDelta, LiveChain, LiveFirewall, LivePeer, LiveQuota,
    ObjectKind, PeerObject, PeerSet,
};
use crate::keys::PublicKey;
use crate::names::InterfaceName;
use crate::policy::ServerPolicy;
use crate::{Error, Result};

const NAME: &str = "memory";

/// A fault to inject into a [`MemoryFirewall`]; each fires once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FirewallFault {
    /// The next `read_firewall` fails with [`Error::Backend`].
    FailNextRead,
    /// The next `apply_firewall` fails with [`Error::Backend`] after validation, applying
    /// nothing (as a refused `nft` batch).
    FailNextApply,
    /// The next `remove_firewall` fails with [`Error::Backend`], removing nothing.
    FailNextRemove,
}

/// A change made behind wgm's back ([`MemoryFirewall::tamper`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Tamper {
    /// A rule of the server's static chains was changed (`nft replace rule`).
    AlterStatic,
    /// One element was deleted (`nft delete element`).
    RemoveElement(Element),
    /// An element whose owner cannot be told was added.
    StrayElement(Element),
    /// The rules of a peer's allow chain were changed.
    AlterChain(PublicKey),
    /// The whole table was deleted (`nft delete table inet wgm`): every server's
    /// firewall, objects and counters.
    DeleteTable,
}

/// The error of a refused delta or an injected fault (inside [`Error::Backend`]).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Refused(String);

fn refused(reason: impl Into<String>) -> Error {
    Error::backend(NAME, Refused(reason.into()))
}

#[derive(Clone, Debug)]
struct Elem {
    /// `None` for a stray element.
    owner: Option<PublicKey>,
    packets: u64,
    bytes: u64,
}

#[derive(Clone, Debug)]
enum Obj {
    Quota(LiveQuota),
    Limit(u64),
    Chain(LiveChain),
}

#[derive(Clone, Debug)]
struct Server {
    policy: ServerPolicy,
    static_intact: bool,
    elements: BTreeMap<Element, Elem>,
    objects: BTreeMap<(PublicKey, ObjectKind), Obj>,
}

#[derive(Debug, Default)]
struct Host {
    servers: BTreeMap<InterfaceName, Server>,
    faults: Vec<FirewallFault>,
}

impl Host {
    fn fault(&mut self, f: FirewallFault) -> Result<()> {
        if let Some(i) = self.faults.iter().position(|x| *x == f) {
            self.faults.remove(i);
            return Err(refused(format!("injected fault: {f:?}")));
        }
        Ok(())
    }
}

fn lock(host: &Mutex<Host>) -> MutexGuard<'_, Host> {
    // A panic while the lock was held leaves whole maps behind (every apply works on a
    // copy and swaps it in); keep going with what is there.
    host.lock().unwrap_or_else(PoisonError::into_inner)
}

/// An in-memory [`FirewallBackend`] with the semantics of nftables (see the
/// [module docs](super)).
///
/// ```
/// use wgm_core::backend::firewall::{
///     plan_firewall, FirewallBackend, FirewallState, MemoryFirewall, PeerFirewall, Tamper,
/// };
/// use wgm_core::keys::PrivateKey;
/// use wgm_core::names::InterfaceName;
/// use wgm_core::policy::{PeerPolicy, ServerPolicy};
///
/// # futures::executor::block_on(async {
/// let fw = MemoryFirewall::new();
/// let wg0 = InterfaceName::new("wg0")?;
/// let mut desired = FirewallState::new(wg0.clone(), ServerPolicy::default());
/// let peer = PrivateKey::generate().public_key();
/// let addr = "10.8.0.2/32".parse()?;
/// let policy = PeerPolicy { quota: Some("1GiB/30d".parse()?), ..PeerPolicy::default() };
/// desired.peers.insert(peer, PeerFirewall::new(vec![addr], policy, 0));
/// fw.apply_firewall(&wg0, &plan_firewall(&desired, None)).await?;
///
/// // Traffic counts in the peer's elements and its quota.
/// assert!(fw.simulate_up(&wg0, addr, 1500)?);
/// let live = fw.read_firewall(&wg0).await?.unwrap();
/// assert_eq!(live.peers[&peer].counters.up_bytes, 1500);
/// assert_eq!(live.peers[&peer].counters.quota_used, Some(1500));
///
/// // Drift: the planner repairs exactly what is missing.
/// fw.tamper(&wg0, Tamper::AlterStatic);
/// let live = fw.read_firewall(&wg0).await?.unwrap();
/// let delta = plan_firewall(&desired, Some(&live));
/// assert!(delta.server.is_some() && delta.peers.is_empty());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
#[derive(Clone, Default)]
pub struct MemoryFirewall {
    host: Arc<Mutex<Host>>,
}

impl fmt::Debug for MemoryFirewall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = lock(&self.host);
        f.debug_struct("MemoryFirewall")
            .field("servers", &host.servers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl MemoryFirewall {
    /// An empty firewall (no table).
    pub fn new() -> Self {
        Self::default()
    }

    /// Arm a fault; faults fire in the order they were armed.
    pub fn inject(&self, fault: FirewallFault) {
        lock(&self.host).faults.push(fault);
    }

    /// Change the firewall behind wgm's back.
    pub fn tamper(&self, interface: &InterfaceName, tamper: Tamper) {
        let mut host = lock(&self.host);
        if tamper == Tamper::DeleteTable {
            host.servers.clear();
            return;
        }
        let Some(server) = host.servers.get_mut(interface) else {
            return;
        };
        match tamper {
            Tamper::AlterStatic => server.static_intact = false,
            Tamper::RemoveElement(e) => {
                // The kernel would refuse to delete an object still referenced; elements
                // can always go.
                server.elements.remove(&e);
            }
            Tamper::StrayElement(e) => {
                server.elements.entry(e).or_insert(Elem {
                    owner: None,
                    packets: 0,
                    bytes: 0,
                });
            }
            Tamper::AlterChain(key) => {
                if let Some(Obj::Chain(c)) = server.objects.get_mut(&(key, ObjectKind::Chain)) {
                    *c = LiveChain::Altered;
                }
            }
            Tamper::DeleteTable => {}
        }
    }

    /// A packet of `bytes` from the address `address` (its first address when it is a
    /// prefix) through the server: counted in the `Up` element whose network holds the
    /// address and in the quota that address maps to; `Ok(false)` when that exhausted
    /// quota (action drop) drops it, counted in the `Dropped` element. An address in a
    /// peer's routed network counts as the peer's, as its tunnel address does. Rates and
    /// allow lists are not simulated.
    pub fn simulate_up(
        &self,
        interface: &InterfaceName,
        address: IpNet,
        bytes: u64,
    ) -> Result<bool> {
        self.simulate(interface, address, PeerSet::Up, bytes)
    }

    /// As [`MemoryFirewall::simulate_up`], for a packet to the peer (its `Down` element).
    pub fn simulate_down(
        &self,
        interface: &InterfaceName,
        address: IpNet,
        bytes: u64,
    ) -> Result<bool> {
        self.simulate(interface, address, PeerSet::Down, bytes)
    }

    fn simulate(
        &self,
        interface: &InterfaceName,
        address: IpNet,
        direction: PeerSet,
        bytes: u64,
    ) -> Result<bool> {
        let mut host = lock(&self.host);
        let server = host
            .servers
            .get_mut(interface)
            .ok_or_else(|| Error::not_found("firewall", interface))?;
        let count = |server: &mut Server, set| {
            if let Some(e) =
                matching(&server.elements, set, address).and_then(|e| server.elements.get_mut(&e))
            {
                e.packets += 1;
                e.bytes = e.bytes.saturating_add(bytes);
            }
        };
        count(server, direction);
        let mut forwarded = true;
        for (set, drops) in [(PeerSet::QuotaDrop, true), (PeerSet::QuotaReport, false)] {
            let owner = matching(&server.elements, set, address)
                .and_then(|e| server.elements.get(&e))
                .and_then(|e| e.owner);
            if let Some(owner) = owner {
                if let Some(Obj::Quota(q)) = server.objects.get_mut(&(owner, ObjectKind::Quota)) {
                    // As the kernel does: the bytes are added (dropped packets too), then
                    // compared; `over` matches from the size itself.
                    q.used = q.used.saturating_add(bytes);
                    if drops && q.used >= q.bytes {
                        forwarded = false;
                    }
                }
            }
        }
        if !forwarded {
            count(server, PeerSet::Dropped);
        }
        Ok(forwarded)
    }
}

/// The network of length `len` that holds `net`'s first address.
fn prefix_of(net: IpNet, len: u8) -> Option<IpNet> {
    IpNet::new(net.network(), len).ok().map(|n| n.trunc())
}

/// The element of `set` whose network holds `address` (its first address), as an
/// interval set's lookup finds it: elements never overlap, so at most one does, and it is
/// one of the address's supernets.
fn matching(elements: &BTreeMap<Element, Elem>, set: PeerSet, address: IpNet) -> Option<Element> {
    (0..=address.max_prefix_len())
        .rev()
        .filter_map(|len| prefix_of(address, len))
        .map(|address| Element { set, address })
        .find(|e| elements.contains_key(e))
}

/// An element of the set of `e` that overlaps `e` without being equal to it: a network
/// holding it, or one inside it.
fn overlapping(elements: &BTreeMap<Element, Elem>, e: &Element) -> Option<Element> {
    let net = e.address;
    let wider = (0..net.prefix_len())
        .filter_map(|len| prefix_of(net, len))
        .map(|address| Element {
            set: e.set,
            address,
        })
        .find(|x| elements.contains_key(x));
    if wider.is_some() {
        return wider;
    }
    // Elements inside `net` sort right after it (same set, network addresses within it).
    elements
        .range(*e..)
        .map(|(x, _)| *x)
        .take_while(|x| x.set == e.set && net.contains(&x.address))
        .find(|x| x != e)
}

/// What a server holds, as a [`LiveFirewall`].
fn live(interface: &InterfaceName, server: &Server) -> LiveFirewall {
    let mut out = LiveFirewall::empty(interface.clone());
    out.policy = server.static_intact.then(|| server.policy.clone());
    for (e, elem) in &server.elements {
        let Some(owner) = elem.owner else {
            out.stray.push(*e);
            continue;
        };
        let peer = out.peers.entry(owner).or_default();
        peer.elements.insert(*e);
        let c = &mut peer.counters;
        match e.set {
            PeerSet::Up => {
                c.up_packets += elem.packets;
                c.up_bytes += elem.bytes;
            }
            PeerSet::Down => {
                c.down_packets += elem.packets;
                c.down_bytes += elem.bytes;
            }
            PeerSet::Dropped => {
                c.dropped_packets += elem.packets;
                c.dropped_bytes += elem.bytes;
            }
            _ => {}
        }
    }
    for ((key, kind), obj) in &server.objects {
        let peer: &mut LivePeer = out.peers.entry(*key).or_default();
        match (kind, obj) {
            (ObjectKind::Quota, Obj::Quota(q)) => {
                // The kernel lists the used bytes capped at the size (it keeps counting
                // beyond, which shows once the size is raised).
                let shown = LiveQuota {
                    used: q.used.min(q.bytes),
                    ..*q
                };
                peer.quota = Some(shown);
                peer.counters.quota_used = Some(shown.used);
            }
            (ObjectKind::LimitUp, Obj::Limit(r)) => peer.limit_up = Some(*r),
            (ObjectKind::LimitDown, Obj::Limit(r)) => peer.limit_down = Some(*r),
            (ObjectKind::Chain, Obj::Chain(c)) => peer.chain = Some(c.clone()),
            _ => {}
        }
    }
    out
}

/// Apply `delta` to `server` in phases; `Err` leaves the caller to drop the copy.
fn apply(
    servers: &mut BTreeMap<InterfaceName, Server>,
    interface: &InterfaceName,
    delta: &FirewallDelta,
) -> Result<()> {
    if let Some(policy) = &delta.server {
        let server = servers.entry(interface.clone()).or_insert_with(|| Server {
            policy: policy.clone(),
            static_intact: true,
            elements: BTreeMap::new(),
            objects: BTreeMap::new(),
        });
        server.policy = policy.clone();
        server.static_intact = true;
    }
    let server = servers
        .get_mut(interface)
        .ok_or_else(|| Error::not_found("firewall", interface))?;
    // Phase 1: removed elements.
    let removed = delta
        .remove_stray
        .iter()
        .chain(delta.peers.iter().flat_map(|c| c.remove_elements.iter()));
    for e in removed {
        if server.elements.remove(e).is_none() {
            return Err(refused(format!(
                "delete element {:?} {}: no such element",
                e.set, e.address
            )));
        }
    }
    // Phase 2: removed objects.
    for change in &delta.peers {
        for kind in &change.remove_objects {
            let referenced = server
                .elements
                .iter()
                .any(|(e, el)| el.owner == Some(change.key) && e.set.object() == Some(*kind));
            if referenced {
                return Err(refused(format!(
                    "delete {kind:?} of peer {}: still referenced by an element",
                    change.key
                )));
            }
            if server.objects.remove(&(change.key, *kind)).is_none() {
                return Err(refused(format!(
                    "delete {kind:?} of peer {}: no such object",
                    change.key
                )));
            }
        }
    }
    // Phase 3: put objects.
    for change in &delta.peers {
        for object in &change.put_objects {
            let slot = server.objects.get_mut(&(change.key, object.kind()));
            match (object, slot) {
                (PeerObject::Quota { bytes, .. }, Some(Obj::Quota(q))) => q.bytes = *bytes,
                (
                    PeerObject::Quota {
                        bytes,
                        used,
                        window,
                    },
                    None,
                ) => {
                    server.objects.insert(
                        (change.key, ObjectKind::Quota),
                        Obj::Quota(LiveQuota {
                            bytes: *bytes,
                            used: *used,
                            window: *window,
                        }),
                    );
                }
                (PeerObject::LimitUp(_) | PeerObject::LimitDown(_), Some(_)) => {}
                (PeerObject::LimitUp(r) | PeerObject::LimitDown(r), None) => {
                    server
                        .objects
                        .insert((change.key, object.kind()), Obj::Limit(*r));
                }
                (PeerObject::Chain(rules), _) => {
                    server.objects.insert(
                        (change.key, ObjectKind::Chain),
                        Obj::Chain(LiveChain::Rules(rules.clone())),
                    );
                }
                (_, Some(_)) => {
                    return Err(refused("an object of another kind holds the name"));
                }
            }
        }
    }
    // Phase 4: added elements.
    for change in &delta.peers {
        for e in &change.add_elements {
            if let Some(existing) = server.elements.get(e) {
                if existing.owner != Some(change.key) && e.set.is_map() {
                    return Err(refused(format!(
                        "add element {:?} {}: the element exists with another value",
                        e.set, e.address
                    )));
                }
                continue;
            }
            if let Some(other) = overlapping(&server.elements, e) {
                return Err(refused(format!(
                    "add element {:?} {}: interval overlaps with an existing one ({})",
                    e.set, e.address, other.address
                )));
            }
            if let Some(kind) = e.set.object() {
                if !server.objects.contains_key(&(change.key, kind)) {
                    return Err(refused(format!(
                        "add element {:?} {}: the {kind:?} of peer {} does not exist",
                        e.set, e.address, change.key
                    )));
                }
            }
            server.elements.insert(
                *e,
                Elem {
                    owner: Some(change.key),
                    packets: 0,
                    bytes: 0,
                },
            );
        }
    }
    Ok(())
}

#[async_trait]
impl FirewallBackend for MemoryFirewall {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn read_firewall(&self, interface: &InterfaceName) -> Result<Option<LiveFirewall>> {
        let mut host = lock(&self.host);
        host.fault(FirewallFault::FailNextRead)?;
        Ok(host.servers.get(interface).map(|s| live(interface, s)))
    }

    async fn apply_firewall(&self, interface: &InterfaceName, delta: &FirewallDelta) -> Result<()> {
        delta.validate()?;
        let mut host = lock(&self.host);
        host.fault(FirewallFault::FailNextApply)?;
        // Atomic: work on a copy of the servers, keep it only when all of it applied.
        let mut servers = host.servers.clone();
        apply(&mut servers, interface, delta)?;
        host.servers = servers;
        Ok(())
    }

    async fn remove_firewall(&self, interface: &InterfaceName) -> Result<()> {
        let mut host = lock(&self.host);
        host.fault(FirewallFault::FailNextRemove)?;
        host.servers.remove(interface);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::{plan_firewall, FirewallState, PeerChange, PeerFirewall};
    use super::*;
    use crate::keys::PrivateKey;
    use crate::policy::PeerPolicy;
    use futures::executor::block_on;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn atomic_and_phased() {
        block_on(async {
            let fw = MemoryFirewall::new();
            let wg0 = InterfaceName::new("wg0").unwrap();
            let (a, b) = (
                PrivateKey::generate().public_key(),
                PrivateKey::generate().public_key(),
            );
            let addr = net("10.0.0.2/32");
            let mut s = FirewallState::new(wg0.clone(), ServerPolicy::default());
            s.peers
                .insert(a, PeerFirewall::new(vec![addr], PeerPolicy::default(), 0));
            // No server yet and no static part in the delta.
            let mut d = plan_firewall(&s, None);
            d.server = None;
            assert_eq!(
                fw.apply_firewall(&wg0, &d).await.unwrap_err().code(),
                "not_found"
            );
            fw.apply_firewall(&wg0, &plan_firewall(&s, None))
                .await
                .unwrap();
            fw.simulate_up(&wg0, addr, 100).unwrap();

            // The address moves to b in one delta, whatever the order of the changes.
            s.peers.remove(&a);
            s.peers
                .insert(b, PeerFirewall::new(vec![addr], PeerPolicy::default(), 0));
            let live = fw.read_firewall(&wg0).await.unwrap();
            let mut d = plan_firewall(&s, live.as_ref());
            d.peers.reverse();
            fw.apply_firewall(&wg0, &d).await.unwrap();
            let live = fw.read_firewall(&wg0).await.unwrap().unwrap();
            assert_eq!(live.peers.keys().copied().collect::<Vec<_>>(), vec![b]);
            assert_eq!(live.peers[&b].counters.up_bytes, 0);

            // A delta removing a missing element fails whole.
            let mut bad = PeerChange::new(b);
            bad.put_objects.push(PeerObject::LimitUp(5));
            bad.remove_elements.push(Element {
                set: PeerSet::Allow,
                address: addr,
            });
            let d = FirewallDelta {
                peers: vec![bad],
                ..FirewallDelta::default()
            };
            assert_eq!(
                fw.apply_firewall(&wg0, &d).await.unwrap_err().code(),
                "backend"
            );
            assert_eq!(fw.read_firewall(&wg0).await.unwrap().unwrap(), live);

            fw.inject(FirewallFault::FailNextApply);
            assert!(fw
                .apply_firewall(&wg0, &FirewallDelta::default())
                .await
                .is_err());
            fw.inject(FirewallFault::FailNextRead);
            assert!(fw.read_firewall(&wg0).await.is_err());
            fw.inject(FirewallFault::FailNextRemove);
            assert!(fw.remove_firewall(&wg0).await.is_err());
            fw.remove_firewall(&wg0).await.unwrap();
            assert!(fw.read_firewall(&wg0).await.unwrap().is_none());
        });
    }

    #[test]
    fn prefixes_match_what_they_hold_and_refuse_overlaps() {
        block_on(async {
            let fw = MemoryFirewall::new();
            let wg0 = InterfaceName::new("wg0").unwrap();
            let (a, b) = (
                PrivateKey::generate().public_key(),
                PrivateKey::generate().public_key(),
            );
            let mut s = FirewallState::new(wg0.clone(), ServerPolicy::default());
            let quota = PeerPolicy {
                quota: Some("1000B/1d".parse().unwrap()),
                ..PeerPolicy::default()
            };
            s.peers.insert(
                a,
                PeerFirewall::new(
                    vec![
                        net("10.0.0.2/32"),
                        net("10.1.0.0/24"),
                        net("2001:db8:1::/56"),
                    ],
                    quota,
                    0,
                ),
            );
            s.peers.insert(
                b,
                PeerFirewall::new(vec![net("10.0.0.3/32")], PeerPolicy::default(), 0),
            );
            fw.apply_firewall(&wg0, &plan_firewall(&s, None))
                .await
                .unwrap();
            // Traffic from anywhere in a's routed networks is a's, and counts in its quota.
            assert!(fw.simulate_up(&wg0, net("10.1.0.77/32"), 400).unwrap());
            assert!(fw
                .simulate_down(&wg0, net("2001:db8:1:ff::9/128"), 400)
                .unwrap());
            assert!(!fw.simulate_up(&wg0, net("10.0.0.2/32"), 400).unwrap());
            // Outside every network: nobody's.
            assert!(fw.simulate_up(&wg0, net("10.1.1.1/32"), 5).unwrap());
            let live = fw.read_firewall(&wg0).await.unwrap().unwrap();
            let c = live.peers[&a].counters;
            assert_eq!((c.up_bytes, c.down_bytes, c.dropped_bytes), (800, 400, 400));
            assert_eq!(c.quota_used, Some(1000));
            assert_eq!(live.peers[&b].counters.up_bytes, 0);
            assert!(plan_firewall(&s, Some(&live)).is_empty());

            // An element inside another one of the set, or holding one, is refused whole.
            for address in [net("10.1.0.128/25"), net("10.0.0.0/16"), net("10.1.0.9/32")] {
                let mut c = PeerChange::new(b);
                c.add_elements.push(Element {
                    set: PeerSet::Up,
                    address,
                });
                let d = FirewallDelta {
                    peers: vec![c],
                    ..FirewallDelta::default()
                };
                let e = fw.apply_firewall(&wg0, &d).await.unwrap_err();
                assert!(e.to_string().contains("overlaps"), "{address}: {e}");
            }
            assert_eq!(fw.read_firewall(&wg0).await.unwrap().unwrap(), live);
            // Adjacent networks do not overlap.
            let mut c = PeerChange::new(b);
            c.add_elements.push(Element {
                set: PeerSet::Up,
                address: net("10.1.1.0/24"),
            });
            let d = FirewallDelta {
                peers: vec![c],
                ..FirewallDelta::default()
            };
            fw.apply_firewall(&wg0, &d).await.unwrap();
        });
    }
}
