//! The firewall half of the backend layer: the [`FirewallBackend`] trait, the desired
//! ([`FirewallState`]) and live ([`LiveFirewall`]) state of one server's firewall, the
//! [`FirewallDelta`] between them, the pure planner [`plan_firewall`], and an in-memory
//! implementation ([`MemoryFirewall`]) with the semantics of nftables.
//!
//! ## The model (that of nftables, which every implementation keeps)
//!
//! A server's firewall has a **static part**, a function of its interface and its
//! [`ServerPolicy`] alone (nftables: chains, sets and maps named after the interface, and
//! the rules of its base chains), and, per peer, **parts** of its own:
//!
//! - [`Element`]s: one per network of the peer in each of the server's sets
//!   ([`PeerSet`]): the peer's networks for source NAT, its traffic counters (up, down,
//!   dropped: counters live **in the elements**), and the maps from its networks to its
//!   quota, its rate limits and its allow chain. A peer's networks are every address it
//!   may send from and be reached at: its tunnel addresses (`/128`, `/32`) and the
//!   prefixes routed to it (a delegated prefix, networks behind it). Sets match by
//!   prefix (nftables: interval sets), so a packet from or to any address inside one of
//!   them counts as the peer's;
//! - objects ([`ObjectKind`]): its quota (bytes, used bytes, the period it counts), its
//!   rate limits up and down, and its allow chain (its [`FilterRule`]s).
//!
//! Changing a peer adds and removes only that peer's elements and objects, so no other
//! peer's counters or quota are touched; an element or object that stays keeps its
//! counters. Replacing the static part (a new [`ServerPolicy`], or a repair) rewrites the
//! rules of the static chains and leaves every element and object alone.
//!
//! ## Semantics of [`FirewallBackend::apply_firewall`] (those of one `nft -f` batch)
//!
//! - **Atomic**: all of a delta lands or none of it.
//! - In phases, whatever the order of [`FirewallDelta::peers`]: the static part
//!   ([`FirewallDelta::server`]), then every removed element (stray ones included), every
//!   removed object, every put object, every added element. So an address can move from
//!   one peer to another in one delta.
//! - Removing an element or object that does not exist fails the delta (nftables 1.0.6 has
//!   no `destroy`), and so does removing an object an element still refers to: deltas are
//!   planned from what was read.
//! - Putting a quota that exists changes its size only: its used bytes and its period stay
//!   (the kernel updates quota objects in place). Putting a rate limit that exists changes
//!   nothing (limit objects cannot be updated); the planner removes and adds it instead.
//!   Putting a chain creates it if needed and replaces its rules.
//! - Adding an element that exists for the same peer changes nothing (its counters stay).
//!   Adding one that exists for **another** peer fails for a map (quota, limit, allow) and
//!   changes nothing for a plain set (peers, counters), as nftables does; the planner
//!   removes first.
//! - Adding a network that **overlaps** another network of its set without being equal
//!   to it (`10.1.0.0/24` while `10.1.0.0/16` is there, or the other way round) fails,
//!   whatever the owner: interval sets refuse overlapping intervals. A host address
//!   inside a network of the same set (`10.1.0.7` and `10.1.0.0/24`) is refused by the
//!   in-memory backend but not by every backend (nftables keeps host addresses in hash
//!   sets apart from the networks, so that adding a host costs the same at any size);
//!   what such an address would be held to is not defined. [`FirewallState::validate`]
//!   refuses every overlap, so a delta planned from a valid state never adds one.
//!
//! ```
//! use std::collections::BTreeMap;
//! use wgm_core::backend::firewall::{
//!     plan_firewall, FirewallBackend, FirewallState, MemoryFirewall, PeerFirewall,
//! };
//! use wgm_core::keys::PrivateKey;
//! use wgm_core::names::InterfaceName;
//! use wgm_core::policy::{PeerPolicy, ServerPolicy};
//!
//! # futures::executor::block_on(async {
//! let fw = MemoryFirewall::new();
//! let wg0 = InterfaceName::new("wg0")?;
//! let mut desired = FirewallState::new(wg0.clone(), ServerPolicy::default());
//! let peer = PrivateKey::generate().public_key();
//! let policy = PeerPolicy { rate_up: Some("10mbit".parse()?), ..PeerPolicy::default() };
//! desired.peers.insert(peer, PeerFirewall::new(vec!["fd00::2/128".parse()?], policy, 0));
//! desired.validate()?;
//!
//! let delta = plan_firewall(&desired, fw.read_firewall(&wg0).await?.as_ref());
//! fw.apply_firewall(&wg0, &delta).await?;
//! let live = fw.read_firewall(&wg0).await?.expect("the firewall exists");
//! assert_eq!(live.peers[&peer].limit_up, Some(1_250_000));
//! assert!(plan_firewall(&desired, Some(&live)).is_empty()); // converged
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

mod memory;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use ipnet::IpNet;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::keys::PublicKey;
use crate::names::InterfaceName;
use crate::policy::{FilterRule, PeerPolicy, QuotaAction, ServerPolicy};
use crate::{Error, Result};

pub use memory::{FirewallFault, MemoryFirewall, Tamper};

/// At most this many networks per peer in the firewall (its tunnel addresses, its
/// delegated prefix and the networks routed to it, both families).
pub const MAX_FIREWALL_ADDRESSES: usize = 1024;

/// A short, stable tag naming one peer's objects on one server: 16 lowercase hex digits,
/// the first 64 bits of SHA-256 over `wgm-firewall`, the interface name, a zero byte and
/// the key's 32 bytes. nftables names the peer's objects with it (`q_<tag>`, `p_<tag>`),
/// well within the 32 characters old kernels allow. Two peers of one server with the same
/// tag are refused by [`FirewallState::validate`].
///
/// ```
/// use wgm_core::backend::firewall::peer_tag;
/// use wgm_core::keys::PublicKey;
/// use wgm_core::names::InterfaceName;
/// let key = PublicKey::from_base64("xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=")?;
/// let tag = peer_tag(&InterfaceName::new("wg0")?, &key);
/// assert_eq!(tag.len(), 16);
/// assert_ne!(tag, peer_tag(&InterfaceName::new("wg1")?, &key));
/// # Ok::<(), wgm_core::Error>(())
/// ```
pub fn peer_tag(interface: &InterfaceName, key: &PublicKey) -> String {
    let mut h = Sha256::new();
    h.update(b"wgm-firewall");
    h.update(interface.as_str().as_bytes());
    h.update([0u8]);
    h.update(key.as_bytes());
    hex::encode(&h.finalize()[..8])
}

// ---------------------------------------------------------------------------------------
// Desired state
// ---------------------------------------------------------------------------------------

/// The desired firewall of one server: its interface, its policy and its peers (by public
/// key, as the rest of the backend layer keys peers).
///
/// ```
/// use wgm_core::backend::firewall::{FirewallState, PeerFirewall};
/// use wgm_core::keys::PrivateKey;
/// use wgm_core::names::InterfaceName;
/// use wgm_core::policy::{PeerPolicy, ServerPolicy};
/// let mut s = FirewallState::new(InterfaceName::new("wg0")?, ServerPolicy::default());
/// let a = PrivateKey::generate().public_key();
/// let b = PrivateKey::generate().public_key();
/// s.peers.insert(a, PeerFirewall::new(vec!["10.8.0.2/32".parse()?], PeerPolicy::default(), 0));
/// s.peers.insert(b, PeerFirewall::new(vec!["10.8.0.2/32".parse()?], PeerPolicy::default(), 0));
/// assert!(s.validate().unwrap_err().to_string().contains("also an address of"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FirewallState {
    /// The server's WireGuard interface.
    pub interface: InterfaceName,
    /// The server's policy (the static part).
    pub policy: ServerPolicy,
    /// The peers.
    pub peers: BTreeMap<PublicKey, PeerFirewall>,
}

impl FirewallState {
    /// A server with no peers.
    pub fn new(interface: InterfaceName, policy: ServerPolicy) -> Self {
        FirewallState {
            interface,
            policy,
            peers: BTreeMap::new(),
        }
    }

    /// Check what a backend cannot apply or read back unambiguously. Refused with
    /// [`Error::InvalidInput`] naming `firewall.peers[KEY]...`: a peer without addresses
    /// or with more than [`MAX_FIREWALL_ADDRESSES`], a network with host bits set
    /// (`10.1.0.1/24`), networks that overlap — one given twice, one inside another, of
    /// the same peer or of two (`addresses[i]`, naming the other; a packet from an
    /// address in both could not be told to belong to one peer, and nftables' interval
    /// sets refuse overlapping elements) —, an invalid allow list
    /// ([`PeerPolicy::validate`]), a quota without its window or a window without a quota.
    /// Two peers whose [`peer_tag`]s collide are a [`Error::Conflict`]. Linear in the
    /// number of networks after one sort.
    ///
    /// ```
    /// use wgm_core::backend::firewall::{FirewallState, PeerFirewall};
    /// use wgm_core::keys::PrivateKey;
    /// use wgm_core::names::InterfaceName;
    /// use wgm_core::policy::{PeerPolicy, ServerPolicy};
    /// let mut s = FirewallState::new(InterfaceName::new("wg0")?, ServerPolicy::default());
    /// let (a, b) = (PrivateKey::generate().public_key(), PrivateKey::generate().public_key());
    /// let p = |nets: &[&str]| PeerFirewall::new(nets.iter().map(|n| n.parse().unwrap()).collect(), PeerPolicy::default(), 0);
    /// s.peers.insert(a, p(&["fd00::2/128", "2001:db8:1::/56"]));
    /// s.peers.insert(b, p(&["fd00::3/128", "2001:db8:1:7::/64"]));
    /// let e = s.validate().unwrap_err();
    /// assert_eq!(e.code(), "invalid_input");
    /// assert!(e.to_string().contains("overlaps 2001:db8:1::/56 of peer"), "{e}");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn validate(&self) -> Result<()> {
        let mut nets: Vec<(IpNet, &PublicKey, usize)> = Vec::new();
        let mut tags: HashMap<String, &PublicKey> = HashMap::new();
        for (key, peer) in &self.peers {
            let field = format!("firewall.peers[{key}]");
            if peer.addresses.is_empty() {
                return Err(Error::invalid(
                    format!("{field}.addresses"),
                    "a peer needs at least one address",
                ));
            }
            if peer.addresses.len() > MAX_FIREWALL_ADDRESSES {
                return Err(Error::invalid(
                    format!("{field}.addresses"),
                    format!("at most {MAX_FIREWALL_ADDRESSES} addresses per peer"),
                ));
            }
            for (i, a) in peer.addresses.iter().enumerate() {
                if a.trunc() != *a {
                    return Err(Error::invalid(
                        format!("{field}.addresses[{i}]"),
                        format!("{a} has host bits set (the network is {})", a.trunc()),
                    ));
                }
                nets.push((*a, key, i));
            }
            peer.policy.validate(&format!("{field}.policy"))?;
            if peer.policy.quota.is_some() != peer.quota_window.is_some() {
                return Err(Error::invalid(
                    format!("{field}.quota_window"),
                    "must be set exactly when the policy has a quota (use PeerFirewall::new)",
                ));
            }
            if let Some(other) = tags.insert(peer_tag(&self.interface, key), key) {
                return Err(Error::conflict(format!(
                    "peers {other} and {key} have the same firewall tag; change one key"
                )));
            }
        }
        check_overlaps(nets)
    }
}

/// Refuse overlapping networks (see [`FirewallState::validate`]). Sorted by family,
/// network address and then length, networks that do not overlap are disjoint intervals
/// in order, so the first overlap is always with the one before that reaches furthest:
/// the last one kept open.
fn check_overlaps(mut nets: Vec<(IpNet, &PublicKey, usize)>) -> Result<()> {
    nets.sort_unstable_by_key(|(n, _, _)| *n);
    let mut open: Option<(IpNet, &PublicKey)> = None;
    for (net, key, i) in nets {
        if let Some((wide, owner)) = open {
            if wide.contains(&net) {
                let reason = match (wide == net, owner == key) {
                    (true, true) => format!("{net} is given twice"),
                    (true, false) => format!("{net} is also an address of peer {owner}"),
                    (false, true) => format!("{net} overlaps {wide}, another of its networks"),
                    (false, false) => format!("{net} overlaps {wide} of peer {owner}"),
                };
                return Err(Error::invalid(
                    format!("firewall.peers[{key}].addresses[{i}]"),
                    reason,
                ));
            }
        }
        open = Some((net, key));
    }
    Ok(())
}

/// One peer's desired firewall: its networks and policy, and the start of its current
/// quota period.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PeerFirewall {
    /// Every network the peer may send from and be reached at, both families: its tunnel
    /// addresses as host addresses (`/128`, `/32`), its delegated prefix and the networks
    /// routed to it, without host bits and without overlaps
    /// ([`crate::reconcile::desired_firewall`] makes them so). Traffic from or to an
    /// address inside any of them is the peer's.
    pub addresses: Vec<IpNet>,
    /// The peer's policy.
    pub policy: PeerPolicy,
    /// The start (Unix seconds) of the quota period in force, [`PeerPolicy::quota_window`];
    /// `None` without a quota. When it changes the quota starts again from 0.
    pub quota_window: Option<u64>,
}

impl PeerFirewall {
    /// A peer with these addresses and this policy, its quota period taken at `now` (Unix
    /// seconds).
    ///
    /// ```
    /// use wgm_core::backend::firewall::PeerFirewall;
    /// use wgm_core::policy::PeerPolicy;
    /// let policy = PeerPolicy { quota: Some("1GiB/1d".parse()?), ..PeerPolicy::default() };
    /// let p = PeerFirewall::new(vec!["fd00::2/128".parse()?], policy, 86_400 + 5);
    /// assert_eq!(p.quota_window, Some(86_400));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(addresses: Vec<IpNet>, policy: PeerPolicy, now: u64) -> Self {
        let quota_window = policy.quota_window(now);
        PeerFirewall {
            addresses,
            policy,
            quota_window,
        }
    }

    /// The elements this peer holds when it is fully applied.
    pub fn elements(&self) -> BTreeSet<Element> {
        let mut sets = vec![PeerSet::Peers, PeerSet::Up, PeerSet::Down, PeerSet::Dropped];
        match (self.policy.quota, self.policy.quota_action) {
            (Some(_), QuotaAction::Drop) => sets.push(PeerSet::QuotaDrop),
            (Some(_), QuotaAction::Report) => sets.push(PeerSet::QuotaReport),
            (None, _) => {}
        }
        if self.policy.rate_up.is_some() {
            sets.push(PeerSet::LimitUp);
        }
        if self.policy.rate_down.is_some() {
            sets.push(PeerSet::LimitDown);
        }
        if self.policy.allow.is_some() {
            sets.push(PeerSet::Allow);
        }
        let mut out = BTreeSet::new();
        for address in &self.addresses {
            for set in &sets {
                out.insert(Element {
                    set: *set,
                    address: *address,
                });
            }
        }
        out
    }
}

// ---------------------------------------------------------------------------------------
// Parts
// ---------------------------------------------------------------------------------------

/// A set (or map) of a server's firewall that holds one element per network of each peer
/// (see [`PeerFirewall::addresses`]), matched by prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum PeerSet {
    /// The peers' addresses: the sources masqueraded.
    Peers,
    /// Counts what the peer sends (packets and bytes in the element).
    Up,
    /// Counts what the peer receives.
    Down,
    /// Counts what is dropped from or to the peer.
    Dropped,
    /// Address → the peer's quota, whose exhaustion drops.
    QuotaDrop,
    /// Address → the peer's quota, only counted.
    QuotaReport,
    /// Address → the peer's upload rate limit.
    LimitUp,
    /// Address → the peer's download rate limit.
    LimitDown,
    /// Address → the peer's allow chain (a verdict map).
    Allow,
}

impl PeerSet {
    /// Every set, in order.
    pub const ALL: [PeerSet; 9] = [
        PeerSet::Peers,
        PeerSet::Up,
        PeerSet::Down,
        PeerSet::Dropped,
        PeerSet::QuotaDrop,
        PeerSet::QuotaReport,
        PeerSet::LimitUp,
        PeerSet::LimitDown,
        PeerSet::Allow,
    ];

    /// Whether the set maps to an object of the peer ([`PeerSet::object`]); adding an
    /// element that another peer holds then fails instead of being a no-op.
    pub fn is_map(self) -> bool {
        self.object().is_some()
    }

    /// The object the set's elements refer to, if any.
    pub fn object(self) -> Option<ObjectKind> {
        match self {
            PeerSet::QuotaDrop | PeerSet::QuotaReport => Some(ObjectKind::Quota),
            PeerSet::LimitUp => Some(ObjectKind::LimitUp),
            PeerSet::LimitDown => Some(ObjectKind::LimitDown),
            PeerSet::Allow => Some(ObjectKind::Chain),
            PeerSet::Peers | PeerSet::Up | PeerSet::Down | PeerSet::Dropped => None,
        }
    }
}

/// One element: a network of a peer in one of the server's sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Element {
    /// The set.
    pub set: PeerSet,
    /// The network: a host address (`/32`, `/128`) or a prefix, without host bits.
    pub address: IpNet,
}

/// A kind of per-peer object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum ObjectKind {
    /// The quota.
    Quota,
    /// The upload rate limit.
    LimitUp,
    /// The download rate limit.
    LimitDown,
    /// The allow chain.
    Chain,
}

/// A per-peer object as a delta puts it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum PeerObject {
    /// The quota: `bytes` per period, `used` so far (taken only when the quota is created),
    /// counting the period that started at `window` (Unix seconds).
    Quota {
        /// Bytes allowed in the period.
        bytes: u64,
        /// Bytes already used (when created).
        used: u64,
        /// The start of the period (Unix seconds).
        window: u64,
    },
    /// The upload limit, in bytes per second.
    LimitUp(u64),
    /// The download limit, in bytes per second.
    LimitDown(u64),
    /// The allow chain: these destinations, then drop.
    Chain(Vec<FilterRule>),
}

impl PeerObject {
    /// Its kind.
    pub fn kind(&self) -> ObjectKind {
        match self {
            PeerObject::Quota { .. } => ObjectKind::Quota,
            PeerObject::LimitUp(_) => ObjectKind::LimitUp,
            PeerObject::LimitDown(_) => ObjectKind::LimitDown,
            PeerObject::Chain(_) => ObjectKind::Chain,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Live state
// ---------------------------------------------------------------------------------------

/// A server's firewall as read from the host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LiveFirewall {
    /// The server's interface.
    pub interface: InterfaceName,
    /// The policy the static part was written for, when the static part is complete and
    /// exactly as written for it; `None` when anything of it is missing or altered.
    pub policy: Option<ServerPolicy>,
    /// The peers that hold anything in the firewall, by key.
    pub peers: BTreeMap<PublicKey, LivePeer>,
    /// Elements of the server's sets that no peer can be told to own; the planner removes
    /// them.
    pub stray: Vec<Element>,
}

impl LiveFirewall {
    /// An empty firewall of `interface` (nothing of it exists yet).
    pub fn empty(interface: InterfaceName) -> Self {
        LiveFirewall {
            interface,
            policy: None,
            peers: BTreeMap::new(),
            stray: Vec::new(),
        }
    }
}

/// What one peer holds in the live firewall, and its counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LivePeer {
    /// Its elements.
    pub elements: BTreeSet<Element>,
    /// Its quota object.
    pub quota: Option<LiveQuota>,
    /// Its upload limit object, in bytes per second.
    pub limit_up: Option<u64>,
    /// Its download limit object, in bytes per second.
    pub limit_down: Option<u64>,
    /// Its allow chain.
    pub chain: Option<LiveChain>,
    /// Its counters.
    pub counters: PeerCounters,
}

impl LivePeer {
    /// The networks in its elements (host addresses and prefixes), sorted.
    pub fn addresses(&self) -> Vec<IpNet> {
        let set: BTreeSet<IpNet> = self.elements.iter().map(|e| e.address).collect();
        set.into_iter().collect()
    }
}

/// A live quota object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct LiveQuota {
    /// Bytes allowed in the period.
    pub bytes: u64,
    /// Bytes used so far.
    pub used: u64,
    /// The start of the period it counts (Unix seconds).
    pub window: u64,
}

/// A live allow chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum LiveChain {
    /// The chain holds exactly the rules written for these destinations.
    Rules(Vec<FilterRule>),
    /// The chain exists but its rules are not what was written.
    Altered,
}

/// A peer's counters, summed over its networks (tunnel addresses and routed prefixes).
/// Up and down count everything seen from and to the peer through the server, dropped
/// packets included; dropped counts what the firewall dropped (quota, rate, allow list,
/// default verdict).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PeerCounters {
    /// Packets from the peer.
    pub up_packets: u64,
    /// Bytes from the peer.
    pub up_bytes: u64,
    /// Packets to the peer.
    pub down_packets: u64,
    /// Bytes to the peer.
    pub down_bytes: u64,
    /// Packets dropped, both directions.
    pub dropped_packets: u64,
    /// Bytes dropped, both directions.
    pub dropped_bytes: u64,
    /// Bytes counted by the quota in its period, if the peer has one.
    pub quota_used: Option<u64>,
}

// ---------------------------------------------------------------------------------------
// Delta
// ---------------------------------------------------------------------------------------

/// A change to one server's firewall, applied atomically and in phases (see the
/// [module docs](self)).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FirewallDelta {
    /// Write the static part for this policy: create what is missing of it and replace the
    /// rules of its chains. Elements and objects are left alone.
    pub server: Option<ServerPolicy>,
    /// Elements to remove that belong to no peer.
    pub remove_stray: Vec<Element>,
    /// Per-peer changes, at most one per peer.
    pub peers: Vec<PeerChange>,
}

impl FirewallDelta {
    /// True when applying the delta changes nothing.
    pub fn is_empty(&self) -> bool {
        self.server.is_none() && self.remove_stray.is_empty() && self.peers.is_empty()
    }

    /// Check the delta before anything is applied; every backend calls this first.
    /// Refused with [`Error::InvalidInput`] naming `delta.peers[i]...`: a peer twice, an
    /// element whose network has host bits set, an object put twice in one change, an
    /// invalid allow chain. (An object both removed and put is a re-creation, allowed.)
    ///
    /// ```
    /// use wgm_core::backend::firewall::{FirewallDelta, PeerChange};
    /// use wgm_core::keys::PrivateKey;
    /// let key = PrivateKey::generate().public_key();
    /// let delta = FirewallDelta { peers: vec![PeerChange::new(key), PeerChange::new(key)], ..FirewallDelta::default() };
    /// assert!(delta.validate().is_err());
    /// ```
    pub fn validate(&self) -> Result<()> {
        let mut seen: HashSet<PublicKey> = HashSet::new();
        let host = |e: &Element, field: String| {
            if e.address.trunc() == e.address {
                Ok(())
            } else {
                Err(Error::invalid(
                    field,
                    format!("{} has host bits set", e.address),
                ))
            }
        };
        for (j, e) in self.remove_stray.iter().enumerate() {
            host(e, format!("delta.remove_stray[{j}]"))?;
        }
        for (i, change) in self.peers.iter().enumerate() {
            let field = |name: &str| format!("delta.peers[{i}].{name}");
            if !seen.insert(change.key) {
                return Err(Error::invalid(
                    field("key"),
                    "the same peer appears twice in one delta",
                ));
            }
            for (j, e) in change.remove_elements.iter().enumerate() {
                host(e, field(&format!("remove_elements[{j}]")))?;
            }
            for (j, e) in change.add_elements.iter().enumerate() {
                host(e, field(&format!("add_elements[{j}]")))?;
            }
            let mut put = HashSet::new();
            for (j, o) in change.put_objects.iter().enumerate() {
                if !put.insert(o.kind()) {
                    return Err(Error::invalid(
                        field(&format!("put_objects[{j}]")),
                        "the same object is put twice",
                    ));
                }
                if let PeerObject::Chain(rules) = o {
                    crate::policy::check_filter_rules(rules, &field(&format!("put_objects[{j}]")))?;
                }
            }
        }
        Ok(())
    }
}

/// One peer's part of a [`FirewallDelta`]: removed elements, removed objects, put objects,
/// added elements (each list applied in its phase).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PeerChange {
    /// The peer.
    pub key: PublicKey,
    /// Elements to remove (they must exist).
    pub remove_elements: Vec<Element>,
    /// Objects to remove (they must exist, and no element may still refer to them).
    pub remove_objects: Vec<ObjectKind>,
    /// Objects to create, or update where they exist (see the [module docs](self)).
    pub put_objects: Vec<PeerObject>,
    /// Elements to add (the objects they refer to must exist).
    pub add_elements: Vec<Element>,
}

impl PeerChange {
    /// A change of `key` that changes nothing yet.
    pub fn new(key: PublicKey) -> Self {
        PeerChange {
            key,
            remove_elements: Vec::new(),
            remove_objects: Vec::new(),
            put_objects: Vec::new(),
            add_elements: Vec::new(),
        }
    }

    /// True when it changes nothing.
    pub fn is_empty(&self) -> bool {
        self.remove_elements.is_empty()
            && self.remove_objects.is_empty()
            && self.put_objects.is_empty()
            && self.add_elements.is_empty()
    }
}

// ---------------------------------------------------------------------------------------
// Planning
// ---------------------------------------------------------------------------------------

/// What to apply so that the firewall holds `desired`, given what was read (`None`:
/// nothing of the server exists). Pure; empty when `live` already holds `desired`.
///
/// - The static part is written when it is missing or altered, or the policy changed.
/// - A peer that is absent is added; one that differs is changed **in its differing parts
///   only**; one the desired state lacks is removed; stray elements are removed.
/// - A quota whose period ([`PeerFirewall::quota_window`]) is unchanged keeps its used
///   bytes: a new size updates the object in place, and missing elements are added back to
///   the object that still exists. Where the object itself is gone (the table was deleted,
///   or the object removed by hand) the used bytes are lost with it and the quota starts
///   again from 0; a new period starts from 0 on purpose.
/// - A changed rate limit is removed and added again (limits hold no state worth keeping
///   and cannot be updated in place); a changed allow list rewrites the peer's chain.
///
/// ```
/// use wgm_core::backend::firewall::{plan_firewall, FirewallState};
/// use wgm_core::names::InterfaceName;
/// use wgm_core::policy::ServerPolicy;
/// let desired = FirewallState::new(InterfaceName::new("wg0")?, ServerPolicy::default());
/// let delta = plan_firewall(&desired, None);
/// assert_eq!(delta.server, Some(ServerPolicy::default()));
/// assert!(delta.peers.is_empty());
/// # Ok::<(), wgm_core::Error>(())
/// ```
pub fn plan_firewall(desired: &FirewallState, live: Option<&LiveFirewall>) -> FirewallDelta {
    let empty = LiveFirewall::empty(desired.interface.clone());
    let live = live.unwrap_or(&empty);
    let mut delta = FirewallDelta {
        server: (live.policy.as_ref() != Some(&desired.policy)).then(|| desired.policy.clone()),
        remove_stray: live.stray.clone(),
        peers: Vec::new(),
    };
    for (key, peer) in &live.peers {
        if !desired.peers.contains_key(key) {
            let mut change = PeerChange::new(*key);
            change.remove_elements = peer.elements.iter().copied().collect();
            change.remove_objects = live_objects(peer);
            delta.peers.push(change);
        }
    }
    let none = LivePeer::default();
    for (key, want) in &desired.peers {
        let have = live.peers.get(key).unwrap_or(&none);
        let change = plan_peer(*key, want, have);
        if !change.is_empty() {
            delta.peers.push(change);
        }
    }
    delta
}

fn live_objects(peer: &LivePeer) -> Vec<ObjectKind> {
    let mut out = Vec::new();
    if peer.quota.is_some() {
        out.push(ObjectKind::Quota);
    }
    if peer.limit_up.is_some() {
        out.push(ObjectKind::LimitUp);
    }
    if peer.limit_down.is_some() {
        out.push(ObjectKind::LimitDown);
    }
    if peer.chain.is_some() {
        out.push(ObjectKind::Chain);
    }
    out
}

fn plan_peer(key: PublicKey, want: &PeerFirewall, have: &LivePeer) -> PeerChange {
    let expected = want.elements();
    // Objects that must be created anew: their elements go first and come back after.
    let mut recreate: Vec<ObjectKind> = Vec::new();
    let mut change = PeerChange::new(key);

    // Quota.
    match (want.policy.quota, want.quota_window, have.quota) {
        (Some(q), Some(window), None) => change.put_objects.push(PeerObject::Quota {
            bytes: q.bytes(),
            used: 0,
            window,
        }),
        (Some(q), Some(window), Some(live)) if live.window == window && live.bytes != q.bytes() => {
            change.put_objects.push(PeerObject::Quota {
                bytes: q.bytes(),
                used: live.used.min(q.bytes()),
                window,
            });
        }
        (Some(_), Some(window), Some(live)) if live.window == window => {}
        (Some(q), Some(window), Some(_)) => {
            recreate.push(ObjectKind::Quota);
            change.put_objects.push(PeerObject::Quota {
                bytes: q.bytes(),
                used: 0,
                window,
            });
        }
        (_, _, Some(_)) => change.remove_objects.push(ObjectKind::Quota),
        _ => {}
    }
    // Limits.
    for (kind, rate, live) in [
        (ObjectKind::LimitUp, want.policy.rate_up, have.limit_up),
        (
            ObjectKind::LimitDown,
            want.policy.rate_down,
            have.limit_down,
        ),
    ] {
        let object = |bytes| match kind {
            ObjectKind::LimitUp => PeerObject::LimitUp(bytes),
            _ => PeerObject::LimitDown(bytes),
        };
        match (rate.map(crate::policy::Rate::bytes_per_second), live) {
            (Some(bytes), None) => change.put_objects.push(object(bytes)),
            (Some(bytes), Some(l)) if l == bytes => {}
            (Some(bytes), Some(_)) => {
                recreate.push(kind);
                change.put_objects.push(object(bytes));
            }
            (None, Some(_)) => change.remove_objects.push(kind),
            (None, None) => {}
        }
    }
    // The allow chain.
    match (&want.policy.allow, &have.chain) {
        (Some(rules), Some(LiveChain::Rules(live))) if live == rules => {}
        (Some(rules), _) => change.put_objects.push(PeerObject::Chain(rules.clone())),
        (None, Some(_)) => change.remove_objects.push(ObjectKind::Chain),
        (None, None) => {}
    }

    let recreated = |e: &Element| e.set.object().is_some_and(|o| recreate.contains(&o));
    for e in &have.elements {
        if !expected.contains(e) || recreated(e) {
            change.remove_elements.push(*e);
        }
    }
    for e in &expected {
        if !have.elements.contains(e) || recreated(e) {
            change.add_elements.push(*e);
        }
    }
    for kind in recreate {
        change.remove_objects.push(kind);
    }
    change
}

// ---------------------------------------------------------------------------------------
// Trait
// ---------------------------------------------------------------------------------------

/// Where servers' firewalls live: nftables, or memory. Object-safe: `Arc<dyn
/// FirewallBackend>` is how callers hold one. It touches only what it owns (nftables: the
/// table `inet wgm`) and, within that, only the server it is given.
#[async_trait]
pub trait FirewallBackend: Debug + Send + Sync + 'static {
    /// A short name for logs and errors: `nftables`, `memory`.
    fn name(&self) -> &'static str;

    /// The server's live firewall with its counters. `Ok(None)` when nothing of it exists
    /// (nftables: no table, or nothing of this interface in it).
    async fn read_firewall(&self, interface: &InterfaceName) -> Result<Option<LiveFirewall>>;

    /// Apply `delta` atomically (see the [module docs](self)): validated first
    /// ([`FirewallDelta::validate`]), then all of it or nothing. A delta that needs the
    /// static part when it does not exist fails with [`Error::NotFound`] (kind
    /// `firewall`) on the in-memory backend and a backend error on nftables.
    async fn apply_firewall(&self, interface: &InterfaceName, delta: &FirewallDelta) -> Result<()>;

    /// Remove everything of the server (its static part, every peer's elements and
    /// objects), leaving other servers alone. Idempotent.
    async fn remove_firewall(&self, interface: &InterfaceName) -> Result<()>;
}

#[async_trait]
impl<T: FirewallBackend + ?Sized> FirewallBackend for Arc<T> {
    fn name(&self) -> &'static str {
        (**self).name()
    }
    async fn read_firewall(&self, interface: &InterfaceName) -> Result<Option<LiveFirewall>> {
        (**self).read_firewall(interface).await
    }
    async fn apply_firewall(&self, interface: &InterfaceName, delta: &FirewallDelta) -> Result<()> {
        (**self).apply_firewall(interface, delta).await
    }
    async fn remove_firewall(&self, interface: &InterfaceName) -> Result<()> {
        (**self).remove_firewall(interface).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::PrivateKey;
    use crate::policy::Rate;

    fn key() -> PublicKey {
        PrivateKey::generate().public_key()
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn wg0() -> InterfaceName {
        InterfaceName::new("wg0").unwrap()
    }

    #[test]
    fn trait_is_dyn_compatible() {
        fn takes(_: Arc<dyn FirewallBackend>) {}
        let fw: Arc<dyn FirewallBackend> = Arc::new(MemoryFirewall::new());
        takes(Arc::clone(&fw));
        assert_eq!(fw.name(), "memory");
    }

    #[test]
    fn validation_names_fields() {
        let mut s = FirewallState::new(wg0(), ServerPolicy::default());
        let k = key();
        s.peers
            .insert(k, PeerFirewall::new(vec![], PeerPolicy::default(), 0));
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .contains("at least one address"));
        s.peers.insert(
            k,
            PeerFirewall::new(vec![net("10.0.0.1/24")], PeerPolicy::default(), 0),
        );
        assert_eq!(
            s.validate().unwrap_err().to_string(),
            format!(
                "invalid firewall.peers[{k}].addresses[0]: 10.0.0.1/24 has host bits set (the network is 10.0.0.0/24)"
            )
        );
        // Prefixes are networks of the peer like its host addresses.
        s.peers.insert(
            k,
            PeerFirewall::new(
                vec![net("10.0.0.2/32"), net("10.1.0.0/24"), net("2001:db8::/56")],
                PeerPolicy::default(),
                0,
            ),
        );
        s.validate().unwrap();
        s.peers.insert(
            k,
            PeerFirewall::new(
                vec![net("10.0.0.2/32"), net("10.0.0.2/32")],
                PeerPolicy::default(),
                0,
            ),
        );
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .contains("given twice"));
        let bad = PeerPolicy {
            allow: Some(vec![
                "10.0.0.0/8".parse().unwrap(),
                "10.0.0.0/8".parse().unwrap(),
            ]),
            ..PeerPolicy::default()
        };
        s.peers
            .insert(k, PeerFirewall::new(vec![net("10.0.0.2/32")], bad, 0));
        assert_eq!(
            s.validate().unwrap_err().to_string(),
            format!("invalid firewall.peers[{k}].policy.allow[1]: duplicates firewall.peers[{k}].policy.allow[0]")
        );
        let mut p = PeerFirewall::new(vec![net("10.0.0.2/32")], PeerPolicy::default(), 0);
        p.quota_window = Some(5);
        s.peers.insert(k, p);
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .contains("quota_window"));
        s.peers.insert(
            k,
            PeerFirewall::new(
                vec![net("10.0.0.2/32"), net("fd00::2/128")],
                PeerPolicy::default(),
                0,
            ),
        );
        s.validate().unwrap();
    }

    #[test]
    fn overlapping_networks_are_refused_naming_the_field() {
        let (a, b) = (key(), key());
        let state = |na: &[&str], nb: &[&str]| {
            let mut s = FirewallState::new(wg0(), ServerPolicy::default());
            let p = |nets: &[&str]| {
                PeerFirewall::new(
                    nets.iter().map(|n| net(n)).collect(),
                    PeerPolicy::default(),
                    0,
                )
            };
            s.peers.insert(a, p(na));
            s.peers.insert(b, p(nb));
            s
        };
        let err = |s: FirewallState| s.validate().unwrap_err();
        // Disjoint prefixes and hosts of both families, adjacent ones included.
        state(
            &[
                "10.0.0.2/32",
                "fd00::2/128",
                "10.1.0.0/24",
                "2001:db8:1::/56",
            ],
            &[
                "10.0.0.3/32",
                "fd00::3/128",
                "10.1.1.0/24",
                "2001:db8:1:100::/56",
            ],
        )
        .validate()
        .unwrap();
        // b's host address inside a's routed network.
        let e = err(state(&["10.0.0.2/32", "10.1.0.0/24"], &["10.1.0.7/32"]));
        assert_eq!(e.code(), "invalid_input");
        assert_eq!(
            e.to_string(),
            format!("invalid firewall.peers[{b}].addresses[0]: 10.1.0.7/32 overlaps 10.1.0.0/24 of peer {a}")
        );
        // A prefix inside another peer's wider prefix, IPv6; the later one is named.
        let e = err(state(
            &["fd00::2/128", "2001:db8::/48"],
            &["fd00::3/128", "2001:db8:0:ff00::/56"],
        ));
        assert!(
            e.to_string().starts_with(&format!("invalid firewall.peers[{b}].addresses[1]: 2001:db8:0:ff00::/56 overlaps 2001:db8::/48 of peer {a}")),
            "{e}"
        );
        // The same prefix for two peers.
        let e = err(state(
            &["fd00::2/128", "2001:db8::/48"],
            &["fd00::3/128", "2001:db8::/48"],
        ));
        assert!(
            e.to_string()
                .contains("2001:db8::/48 is also an address of peer"),
            "{e}"
        );
        // Within one peer: a network inside another of its own.
        let e = err(state(&["10.0.0.2/32", "10.0.0.0/24"], &["10.9.0.1/32"]));
        assert_eq!(
            e.to_string(),
            format!("invalid firewall.peers[{a}].addresses[0]: 10.0.0.2/32 overlaps 10.0.0.0/24, another of its networks")
        );
        // Families never overlap each other.
        state(&["10.0.0.0/8"], &["::a00:0/104"]).validate().unwrap();
    }

    #[test]
    fn deltas_carry_prefixes_but_no_host_bits() {
        let mut change = PeerChange::new(key());
        change.add_elements.push(Element {
            set: PeerSet::Allow,
            address: net("2001:db8:1::/56"),
        });
        let mut d = FirewallDelta {
            peers: vec![change],
            ..FirewallDelta::default()
        };
        d.validate().unwrap();
        d.peers[0].add_elements[0].address = net("2001:db8:1::1/56");
        assert_eq!(
            d.validate().unwrap_err().to_string(),
            "invalid delta.peers[0].add_elements[0]: 2001:db8:1::1/56 has host bits set"
        );
    }

    #[test]
    fn plan_changes_only_what_differs() {
        let k = key();
        let policy = PeerPolicy {
            rate_up: Some(Rate::from_bits(8_000).unwrap()),
            quota: Some("1GiB/1d".parse().unwrap()),
            ..PeerPolicy::default()
        };
        let want = PeerFirewall::new(vec![net("10.0.0.2/32")], policy.clone(), 0);
        let mut have = LivePeer {
            elements: want.elements(),
            quota: Some(LiveQuota {
                bytes: 1 << 30,
                used: 77,
                window: 0,
            }),
            limit_up: Some(1_000),
            ..LivePeer::default()
        };
        assert!(plan_peer(k, &want, &have).is_empty());

        // A missing element comes back alone; the quota keeps its object.
        let quota_el = Element {
            set: PeerSet::QuotaDrop,
            address: net("10.0.0.2/32"),
        };
        have.elements.remove(&quota_el);
        let c = plan_peer(k, &want, &have);
        assert_eq!(c.add_elements, vec![quota_el]);
        assert!(
            c.put_objects.is_empty() && c.remove_objects.is_empty() && c.remove_elements.is_empty()
        );
        have.elements.insert(quota_el);

        // A bigger quota is an update in place carrying the used bytes.
        let mut bigger = want.clone();
        bigger.policy.quota = Some("2GiB/1d".parse().unwrap());
        let c = plan_peer(k, &bigger, &have);
        assert_eq!(
            c.put_objects,
            vec![PeerObject::Quota {
                bytes: 2 << 30,
                used: 77,
                window: 0
            }]
        );
        assert!(c.remove_elements.is_empty() && c.add_elements.is_empty());

        // A new period starts from zero: elements out, object out, object in, elements in.
        let mut next = want.clone();
        next.quota_window = Some(86_400);
        let c = plan_peer(k, &next, &have);
        assert_eq!(c.remove_elements, vec![quota_el]);
        assert_eq!(c.remove_objects, vec![ObjectKind::Quota]);
        assert_eq!(c.add_elements, vec![quota_el]);

        // A new rate recreates the limit.
        let mut faster = want.clone();
        faster.policy.rate_up = Some(Rate::from_bits(16_000).unwrap());
        let c = plan_peer(k, &faster, &have);
        assert_eq!(c.remove_objects, vec![ObjectKind::LimitUp]);
        assert_eq!(c.put_objects, vec![PeerObject::LimitUp(2_000)]);
        assert_eq!(c.remove_elements.len(), 1);
        assert_eq!(c.add_elements.len(), 1);

        // Quota action report: the element moves between maps, the object stays.
        let mut report = want.clone();
        report.policy.quota_action = QuotaAction::Report;
        let c = plan_peer(k, &report, &have);
        assert_eq!(c.remove_elements, vec![quota_el]);
        assert_eq!(
            c.add_elements,
            vec![Element {
                set: PeerSet::QuotaReport,
                ..quota_el
            }]
        );
        assert!(c.put_objects.is_empty() && c.remove_objects.is_empty());
    }

    #[test]
    fn plan_from_nothing_and_removal() {
        let mut s = FirewallState::new(wg0(), ServerPolicy::default());
        let k = key();
        s.peers.insert(
            k,
            PeerFirewall::new(
                vec![net("10.0.0.2/32"), net("fd00::2/128")],
                PeerPolicy {
                    allow: Some(vec![]),
                    ..PeerPolicy::default()
                },
                0,
            ),
        );
        let d = plan_firewall(&s, None);
        assert_eq!(d.server, Some(ServerPolicy::default()));
        assert_eq!(d.peers.len(), 1);
        assert_eq!(d.peers[0].add_elements.len(), 10);
        assert_eq!(d.peers[0].put_objects, vec![PeerObject::Chain(vec![])]);
        d.validate().unwrap();

        let mut live = LiveFirewall::empty(wg0());
        live.policy = Some(ServerPolicy::default());
        let other = key();
        live.peers.insert(
            other,
            LivePeer {
                elements: [Element {
                    set: PeerSet::Up,
                    address: net("10.0.0.9/32"),
                }]
                .into_iter()
                .collect(),
                limit_down: Some(5),
                ..LivePeer::default()
            },
        );
        live.stray.push(Element {
            set: PeerSet::Down,
            address: net("10.0.0.7/32"),
        });
        let d = plan_firewall(&s, Some(&live));
        assert_eq!(d.server, None);
        assert_eq!(d.remove_stray.len(), 1);
        let removal = d.peers.iter().find(|c| c.key == other).unwrap();
        assert_eq!(removal.remove_objects, vec![ObjectKind::LimitDown]);
        assert_eq!(removal.remove_elements.len(), 1);
    }
}
