//! Plan and apply: converge a live WireGuard interface toward a server's desired state.
//!
//! [`plan`] is a pure function from the desired state ([`DesiredHost`], derived from a
//! [`ServerState`]) and what the backends read back ([`DeviceState`], [`LinkState`]) to a
//! [`Plan`]: the exact device and link deltas, plus a human list of [`PlanItem`]s.
//! It is **incremental**: a peer that is already right is not in the plan at all, so its
//! tunnel, handshake and counters are untouched. `replace_peers` is used only for an
//! explicit full resync.
//!
//! [`Manager::apply`] authorizes, derives the desired state (kept between applies), reads
//! the live state through a [`Host`] (or starts from what it verified there before, if
//! the device is the same instance), executes the plan and verifies it: by the backends'
//! acknowledgement of every delta where that is proof, otherwise by **re-reading and
//! re-planning** (see [`Verify`]). It records the applied revision only when the host
//! holds all of it. Per-item results say what landed; a backend failing part-way (the
//! kernel and UAPI are not atomic) is re-read and leaves the rest for the next pass.
//!
//! Drift: a peer on the device that the store never knew is *unmanaged*: reported, or
//! removed when the [`DriftPolicy`] says so — never adopted. A peer that wgm removed
//! (it appears in a revision since the last applied one) is always removed. A peer's
//! roaming endpoint is not drift unless the peer has a fixed endpoint.
//!
//! ```
//! # futures::executor::block_on(async {
//! use std::sync::Arc;
//! use wgm_core::backend::{MemoryWireGuard};
//! use wgm_core::manager::{Manager, NewPeer, NewServer};
//! use wgm_core::names::{InterfaceName, PeerName, ServerName};
//! use wgm_core::net::ListenPort;
//! use wgm_core::reconcile::{ApplyOptions, Host};
//! use wgm_core::seal::{MasterKey, Sealer};
//! use wgm_core::store::MemoryStore;
//!
//! let (m, local) = Manager::builder(Arc::new(MemoryStore::new()), Sealer::new(MasterKey::generate()))
//!     .build_with_local_admin();
//! let admin = local.principal("root");
//! let s = m.create_server(&admin, NewServer::new(ServerName::new("s").unwrap(),
//!     InterfaceName::new("wg0").unwrap(), ListenPort::new(51820).unwrap())).await.unwrap();
//! m.add_peer(&admin, s.id, NewPeer::new(PeerName::new("a").unwrap())).await.unwrap();
//! let wg = Arc::new(MemoryWireGuard::new());
//! let host = Host::new("h1", wg.clone(), Some(Arc::new(wg.network())));
//! let report = m.apply(&admin, s.id, &host, ApplyOptions::default()).await.unwrap();
//! assert!(report.converged);
//! // Nothing left to do: the next plan is empty.
//! assert!(m.plan(&admin, s.id, &host).await.unwrap().is_empty());
//! # });
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use ipnet::IpNet;
use serde::Serialize;
use serde_json::json;

use crate::backend::{
    DeviceDelta, DeviceState, LinkDelta, LinkState, NetworkBackend, PeerDelta, WireGuardBackend,
};
use crate::keys::{PresharedKey, PrivateKey, PublicKey};
use crate::manager::{LiveSnapshot, Manager};
use crate::model::{Change, Peer, PeerId, PeerStats, RevisionNo, ServerId, ServerState};
use crate::names::{InterfaceName, PeerName};
use crate::net::Endpoint;
use crate::rbac::{Action, Principal, Resource, Target};
use crate::seal::{SealedSecret, Sealer, SecretKind};
use crate::{Error, Result};

/// What to do with peers on the device that the store never knew.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DriftPolicy {
    /// Leave them and report them.
    #[default]
    Report,
    /// Remove them.
    Remove,
}

/// The WireGuard host a server is applied to: a WireGuard backend (kernel or userspace)
/// and optionally a network backend for addresses, routes and MTU.
#[derive(Clone, Debug)]
pub struct Host {
    /// A stable name for this host (recorded with applied revisions).
    pub name: String,
    /// Where the device lives.
    pub wireguard: Arc<dyn WireGuardBackend>,
    /// The link side (`None`: leave addresses, routes and MTU alone).
    pub network: Option<Arc<dyn NetworkBackend>>,
    /// Unmanaged peers: report or remove.
    pub drift: DriftPolicy,
}

impl Host {
    /// A host called `name` with these backends and the [`DriftPolicy::Report`] policy.
    pub fn new(
        name: impl Into<String>,
        wireguard: Arc<dyn WireGuardBackend>,
        network: Option<Arc<dyn NetworkBackend>>,
    ) -> Host {
        Host {
            name: name.into(),
            wireguard,
            network,
            drift: DriftPolicy::Report,
        }
    }

    /// The same host with another drift policy.
    #[must_use]
    pub fn with_drift(mut self, drift: DriftPolicy) -> Host {
        self.drift = drift;
        self
    }
}

/// A peer as the device should have it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredPeer {
    /// The peer's id in the store.
    pub id: PeerId,
    /// Its name (for reports).
    pub name: PeerName,
    /// Its key.
    pub public_key: PublicKey,
    /// Its PSK, opened.
    pub preshared_key: Option<PresharedKey>,
    /// A fixed endpoint (`None`: the peer roams; whatever the device learnt is fine).
    pub endpoint: Option<SocketAddr>,
    /// Allowed IPs, sorted.
    pub allowed_ips: Vec<IpNet>,
    /// Persistent keepalive seconds (0 = off).
    pub keepalive: u16,
}

/// The desired state of one interface on a host.
#[derive(Clone, Debug)]
pub struct DesiredHost {
    /// The server.
    pub server_id: ServerId,
    /// Its revision.
    pub revision: RevisionNo,
    /// Interface name.
    pub interface: InterfaceName,
    /// Whether the interface should exist.
    pub active: bool,
    /// The device's private key, opened.
    pub private_key: PrivateKey,
    /// Its public key.
    pub public_key: PublicKey,
    /// Listen port.
    pub listen_port: u16,
    /// Firewall mark (0 = off).
    pub fwmark: u32,
    /// Enabled peers by key. Shared (`Arc`): the manager keeps one copy per server up
    /// to date and hands out cheap clones.
    pub peers: Arc<BTreeMap<PublicKey, DesiredPeer>>,
    /// Keys of every peer of the server, enabled or not: live peers with these keys that
    /// are not desired are removed whatever the drift policy.
    pub known_keys: Arc<HashSet<PublicKey>>,
    /// Names of the server's disabled peers, for reports.
    pub known_names: Arc<BTreeMap<PublicKey, PeerName>>,
    /// Peers removed (or re-keyed) since the revision the host last applied, by their
    /// old key: removed from the device whatever the drift policy.
    pub removed: BTreeMap<PublicKey, PeerName>,
    /// Link MTU.
    pub mtu: u32,
    /// Interface addresses, sorted.
    pub addresses: Vec<IpNet>,
    /// Routes through the interface (delegated prefixes, networks behind peers), sorted.
    pub routes: Vec<IpNet>,
    /// Peers whose endpoint is a host name, sorted: not resolved here (no I/O in core),
    /// applied without an endpoint and reported.
    pub unresolved_endpoints: Vec<PeerName>,
}

/// Derive the desired host state of a server, opening its private key and the peers'
/// PSKs with `sealer`. `removed` are the keys and names of peers removed (or re-keyed)
/// since the last applied revision: they are removed from the device whatever the drift
/// policy.
pub fn desired_host(
    state: &ServerState,
    sealer: &Sealer,
    removed: impl IntoIterator<Item = (PublicKey, PeerName)>,
) -> Result<DesiredHost> {
    desired_host_with(state, sealer, removed, &mut OpenedSecrets::default())
}

/// Secrets opened for the desired state, kept between applies so that the next
/// derivation opens only what changed. Keyed by the sealed text: a new PSK, a re-sealed
/// one and a rotated master key all miss and are opened afresh. Zeroized on drop (the
/// keys are); `Debug` shows only counts.
#[derive(Default)]
pub(crate) struct OpenedSecrets {
    server: Option<(SealedSecret, PrivateKey)>,
    psks: HashMap<PeerId, (SealedSecret, PresharedKey)>,
}

impl fmt::Debug for OpenedSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenedSecrets")
            .field("server", &self.server.is_some())
            .field("psks", &self.psks.len())
            .finish()
    }
}

/// [`desired_host`], opening only the secrets `cache` does not hold yet.
pub(crate) fn desired_host_with(
    state: &ServerState,
    sealer: &Sealer,
    removed: impl IntoIterator<Item = (PublicKey, PeerName)>,
    cache: &mut OpenedSecrets,
) -> Result<DesiredHost> {
    let s = &state.server;
    let private_key = match &cache.server {
        Some((sealed, key)) if *sealed == s.private_key => key.clone(),
        _ => {
            let key = sealer.open_private_key(
                SecretKind::ServerPrivateKey,
                &s.id.to_string(),
                &s.private_key,
            )?;
            if key.public_key() != s.public_key {
                return Err(Error::sealed(
                    "the server's private key does not match its public key",
                ));
            }
            cache.server = Some((s.private_key.clone(), key.clone()));
            key
        }
    };
    let mut peers = BTreeMap::new();
    let mut known_names: BTreeMap<PublicKey, PeerName> = BTreeMap::new();
    let mut known_keys: HashSet<PublicKey> = HashSet::with_capacity(state.peers.len());
    let mut routes = BTreeSet::new();
    let mut unresolved = Vec::new();
    for p in state.peers.values() {
        known_keys.insert(p.public_key);
        if !p.enabled {
            known_names.insert(p.public_key, p.name.clone());
            continue;
        }
        let (d, host_endpoint) = desired_peer(p, sealer, cache)?;
        if host_endpoint {
            unresolved.push(p.name.clone());
        }
        routes.extend(peer_routes(p));
        peers.insert(p.public_key, d);
    }
    known_keys.remove(&s.public_key);
    if cache.psks.len() > peers.len() {
        // Removed, disabled or PSK-less peers: their keys go.
        cache.psks.retain(|id, _| {
            state
                .peers
                .get(id)
                .is_some_and(|p| p.enabled && p.preshared_key.is_some())
        });
    }
    let mut removed: BTreeMap<PublicKey, PeerName> = removed.into_iter().collect();
    removed.remove(&s.public_key);
    unresolved.sort_unstable();
    unresolved.dedup();
    let mut addresses = s.interface_addresses();
    addresses.sort_unstable();
    Ok(DesiredHost {
        server_id: s.id,
        revision: state.revision,
        interface: s.interface.clone(),
        active: s.active,
        private_key,
        public_key: s.public_key,
        listen_port: s.listen_port.get(),
        fwmark: s.fwmark.map_or(0, crate::net::FwMark::get),
        peers: Arc::new(peers),
        known_keys: Arc::new(known_keys),
        known_names: Arc::new(known_names),
        removed,
        mtu: u32::from(s.mtu.get()),
        addresses,
        routes: routes.into_iter().collect(),
        unresolved_endpoints: unresolved,
    })
}

/// Routes a peer brings: its delegated prefix and the networks behind it.
fn peer_routes(p: &Peer) -> impl Iterator<Item = IpNet> + '_ {
    p.delegated_prefix
        .map(IpNet::V6)
        .into_iter()
        .chain(p.extra_allowed_ips.iter().copied())
}

/// An enabled peer as the device should have it (its PSK opened through `cache`), and
/// whether its endpoint is a host name (applied without one, reported).
fn desired_peer(
    p: &Peer,
    sealer: &Sealer,
    cache: &mut OpenedSecrets,
) -> Result<(DesiredPeer, bool)> {
    let preshared_key = match &p.preshared_key {
        Some(sealed) => match cache.psks.get(&p.id) {
            Some((was, psk)) if was == sealed => Some(psk.clone()),
            _ => {
                let psk = sealer.open_preshared_key(
                    SecretKind::PeerPresharedKey,
                    &p.id.to_string(),
                    sealed,
                )?;
                cache.psks.insert(p.id, (sealed.clone(), psk.clone()));
                Some(psk)
            }
        },
        None => None,
    };
    let (endpoint, host_endpoint) = match &p.endpoint {
        Some(Endpoint::Addr(a)) => (Some(*a), false),
        Some(Endpoint::Host { .. }) => (None, true),
        None => (None, false),
    };
    let mut allowed: Vec<IpNet> = p.allowed_ips();
    allowed.sort_unstable();
    allowed.dedup();
    let d = DesiredPeer {
        id: p.id,
        name: p.name.clone(),
        public_key: p.public_key,
        preshared_key,
        endpoint,
        allowed_ips: allowed,
        // Roaming clients keep their own NAT mappings alive (their config carries the
        // keepalive); the server sends keepalives only to peers it dials, as the
        // rendered server config says.
        keepalive: if p.endpoint.is_some() {
            p.keepalive.get()
        } else {
            0
        },
    };
    Ok((d, host_endpoint))
}

impl DesiredHost {
    /// Bring this desired state (derived from `state` before `changes`, with no
    /// `removed`) up to `state`, which has `changes` applied, at the cost of the peers
    /// they touch. Returns `Ok(false)` when a change is not a peer change (the server's
    /// settings, a deletion): derive anew then.
    pub(crate) fn follow(
        &mut self,
        state: &ServerState,
        changes: &[Change],
        sealer: &Sealer,
        cache: &mut OpenedSecrets,
    ) -> Result<bool> {
        for ch in changes {
            match ch {
                Change::PeerAdded { peer } => self.add_peer(peer, sealer, cache)?,
                Change::PeerRemoved { peer } => self.drop_peer(peer, state, cache),
                Change::PeerUpdated { before, after } => {
                    self.drop_peer(before, state, cache);
                    self.add_peer(after, sealer, cache)?;
                }
                _ => return Ok(false),
            }
        }
        self.revision = state.revision;
        Ok(true)
    }

    fn add_peer(&mut self, p: &Peer, sealer: &Sealer, cache: &mut OpenedSecrets) -> Result<()> {
        if p.public_key != self.public_key {
            Arc::make_mut(&mut self.known_keys).insert(p.public_key);
        }
        if !p.enabled {
            Arc::make_mut(&mut self.known_names).insert(p.public_key, p.name.clone());
            return Ok(());
        }
        let (d, host_endpoint) = desired_peer(p, sealer, cache)?;
        if host_endpoint {
            if let Err(at) = self.unresolved_endpoints.binary_search(&p.name) {
                self.unresolved_endpoints.insert(at, p.name.clone());
            }
        }
        for r in peer_routes(p) {
            if let Err(at) = self.routes.binary_search(&r) {
                self.routes.insert(at, r);
            }
        }
        Arc::make_mut(&mut self.peers).insert(p.public_key, d);
        Ok(())
    }

    /// Forget `p` (as it was); `state` is the server after the changes.
    fn drop_peer(&mut self, p: &Peer, state: &ServerState, cache: &mut OpenedSecrets) {
        Arc::make_mut(&mut self.known_keys).remove(&p.public_key);
        Arc::make_mut(&mut self.known_names).remove(&p.public_key);
        cache.psks.remove(&p.id);
        let Some(gone) = Arc::make_mut(&mut self.peers).remove(&p.public_key) else {
            return;
        };
        self.unresolved_endpoints.retain(|n| *n != gone.name);
        if p.delegated_prefix.is_some() || !p.extra_allowed_ips.is_empty() {
            // A route stays while an enabled peer still brings it.
            let still: BTreeSet<IpNet> = state
                .peers
                .values()
                .filter(|o| o.enabled)
                .flat_map(peer_routes)
                .collect();
            for r in peer_routes(p) {
                if !still.contains(&r) {
                    self.routes.retain(|x| *x != r);
                }
            }
        }
    }
}

/// One step of a plan, for humans and JSON.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
#[non_exhaustive]
pub enum PlanItem {
    /// Create the device.
    CreateDevice,
    /// Delete the device (the server is inactive).
    DeleteDevice,
    /// Set the device's private key (public key shown).
    SetKey {
        /// The new public key.
        public_key: PublicKey,
    },
    /// Set the listen port.
    SetListenPort {
        /// Live value.
        from: u16,
        /// Desired value.
        to: u16,
    },
    /// Set the firewall mark.
    SetFwmark {
        /// Live value.
        from: u32,
        /// Desired value.
        to: u32,
    },
    /// Add a peer.
    AddPeer {
        /// Name.
        name: String,
        /// Key.
        public_key: PublicKey,
    },
    /// Change fields of a peer.
    UpdatePeer {
        /// Name.
        name: String,
        /// Key.
        public_key: PublicKey,
        /// What changes, `field: live -> desired` (PSKs never shown).
        changes: Vec<String>,
    },
    /// Remove a peer wgm removed or disabled.
    RemovePeer {
        /// Name, when known.
        name: Option<String>,
        /// Key.
        public_key: PublicKey,
    },
    /// A peer on the device the store never knew.
    Unmanaged {
        /// Key.
        public_key: PublicKey,
        /// Whether the plan removes it (drift policy `remove`).
        remove: bool,
    },
    /// Set the link MTU.
    SetMtu {
        /// Live value.
        from: u32,
        /// Desired value.
        to: u32,
    },
    /// Bring the link up.
    SetUp,
    /// Add an interface address.
    AddAddress {
        /// The address with its prefix.
        address: IpNet,
    },
    /// Remove an interface address.
    RemoveAddress {
        /// The address with its prefix.
        address: IpNet,
    },
    /// Route a prefix through the interface.
    AddRoute {
        /// The prefix.
        route: IpNet,
    },
    /// Stop routing a prefix through the interface.
    RemoveRoute {
        /// The prefix.
        route: IpNet,
    },
    /// A peer's host-name endpoint that was not resolved.
    UnresolvedEndpoint {
        /// The peer.
        name: String,
    },
}

impl PlanItem {
    /// Whether this item is only informative (nothing to execute).
    pub fn is_report_only(&self) -> bool {
        matches!(
            self,
            PlanItem::Unmanaged { remove: false, .. } | PlanItem::UnresolvedEndpoint { .. }
        )
    }
}

impl fmt::Display for PlanItem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlanItem::CreateDevice => write!(f, "+ device"),
            PlanItem::DeleteDevice => write!(f, "- device (server inactive)"),
            PlanItem::SetKey { public_key } => write!(f, "~ private key (public {public_key})"),
            PlanItem::SetListenPort { from, to } => write!(f, "~ listen port {from} -> {to}"),
            PlanItem::SetFwmark { from, to } => write!(f, "~ fwmark {from:#x} -> {to:#x}"),
            PlanItem::AddPeer { name, public_key } => write!(f, "+ peer {name} ({public_key})"),
            PlanItem::UpdatePeer {
                name,
                public_key,
                changes,
            } => {
                write!(f, "~ peer {name} ({public_key}): {}", changes.join(", "))
            }
            PlanItem::RemovePeer { name, public_key } => match name {
                Some(n) => write!(f, "- peer {n} ({public_key})"),
                None => write!(f, "- peer {public_key}"),
            },
            PlanItem::Unmanaged { public_key, remove } => {
                if *remove {
                    write!(f, "- unmanaged peer {public_key}")
                } else {
                    write!(
                        f,
                        "! unmanaged peer {public_key} (left alone; drift policy 'report')"
                    )
                }
            }
            PlanItem::SetMtu { from, to } => write!(f, "~ mtu {from} -> {to}"),
            PlanItem::SetUp => write!(f, "~ link up"),
            PlanItem::AddAddress { address } => write!(f, "+ address {address}"),
            PlanItem::RemoveAddress { address } => write!(f, "- address {address}"),
            PlanItem::AddRoute { route } => write!(f, "+ route {route}"),
            PlanItem::RemoveRoute { route } => write!(f, "- route {route}"),
            PlanItem::UnresolvedEndpoint { name } => {
                write!(f, "! peer {name}: host-name endpoint not resolved")
            }
        }
    }
}

/// What it takes to converge one interface.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    /// The interface.
    pub interface: InterfaceName,
    /// The revision planned for.
    pub revision: RevisionNo,
    /// Steps, in execution order.
    pub items: Vec<PlanItem>,
    /// Create the device first.
    #[serde(skip)]
    pub create_device: bool,
    /// Delete the device (and do nothing else).
    #[serde(skip)]
    pub delete_device: bool,
    /// The device delta (secrets inside are redacted when serialized).
    #[serde(skip)]
    pub device: DeviceDelta,
    /// The link delta.
    #[serde(skip)]
    pub link: LinkDelta,
}

impl Plan {
    /// Whether there is nothing to execute (report-only items do not count).
    pub fn is_empty(&self) -> bool {
        self.items.iter().all(PlanItem::is_report_only)
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.items.is_empty() {
            return writeln!(
                f,
                "{} is up to date at revision {}",
                self.interface, self.revision
            );
        }
        writeln!(f, "{} -> revision {}:", self.interface, self.revision)?;
        for i in &self.items {
            writeln!(f, "  {i}")?;
        }
        Ok(())
    }
}

fn sorted(v: &[IpNet]) -> Vec<IpNet> {
    let mut v = v.to_vec();
    v.sort_unstable();
    v.dedup();
    v
}

/// Compute the plan from desired to live. Pure. `live_device`/`live_link` are `None`
/// when the device/link does not exist. `remove_allowed_ip` says whether the backend can
/// remove single allowed IPs (otherwise a peer that loses one gets its list replaced).
pub fn plan(
    desired: &DesiredHost,
    live_device: Option<&DeviceState>,
    live_link: Option<&LinkState>,
    drift: DriftPolicy,
    remove_allowed_ip: bool,
    full_resync: bool,
) -> Plan {
    let mut items = Vec::new();
    let mut device = DeviceDelta::default();
    let mut link = LinkDelta::default();
    let mut out = Plan {
        interface: desired.interface.clone(),
        revision: desired.revision,
        items: Vec::new(),
        create_device: false,
        delete_device: false,
        device: DeviceDelta::default(),
        link: LinkDelta::default(),
    };
    if !desired.active {
        if live_device.is_some() {
            out.delete_device = true;
            out.items.push(PlanItem::DeleteDevice);
        }
        return out;
    }
    let empty = DeviceState::default();
    let live = if let Some(d) = live_device {
        d
    } else {
        {
            out.create_device = true;
            items.push(PlanItem::CreateDevice);
            &empty
        }
    };
    if live.public_key != Some(desired.public_key) || full_resync {
        device.private_key = Some(desired.private_key.clone());
        items.push(PlanItem::SetKey {
            public_key: desired.public_key,
        });
    }
    if live.listen_port != desired.listen_port || full_resync {
        device.listen_port = Some(desired.listen_port);
        items.push(PlanItem::SetListenPort {
            from: live.listen_port,
            to: desired.listen_port,
        });
    }
    if live.fwmark != desired.fwmark {
        device.fwmark = Some(desired.fwmark);
        items.push(PlanItem::SetFwmark {
            from: live.fwmark,
            to: desired.fwmark,
        });
    }
    if full_resync {
        device.replace_peers = true;
    }
    // Removals first, so that an allowed IP moving from a removed peer to a new one is
    // not taken back.
    for (key, lp) in &live.peers {
        if desired.peers.contains_key(key) || full_resync {
            continue;
        }
        if desired.known_keys.contains(key) || desired.removed.contains_key(key) {
            device.peers.push(PeerDelta::remove(*key));
            items.push(PlanItem::RemovePeer {
                name: desired
                    .known_names
                    .get(key)
                    .or_else(|| desired.removed.get(key))
                    .map(ToString::to_string),
                public_key: *key,
            });
        } else {
            let remove = drift == DriftPolicy::Remove;
            if remove {
                device.peers.push(PeerDelta::remove(*key));
            }
            items.push(PlanItem::Unmanaged {
                public_key: lp.public_key,
                remove,
            });
        }
    }
    for (key, dp) in desired.peers.iter() {
        match live.peers.get(key).filter(|_| !full_resync) {
            None => {
                let mut d = PeerDelta::new(*key);
                d.preshared_key = Some(dp.preshared_key.clone());
                d.endpoint = dp.endpoint;
                d.persistent_keepalive = Some(dp.keepalive);
                d.replace_allowed_ips = true;
                d.allowed_ips.clone_from(&dp.allowed_ips);
                device.peers.push(d);
                items.push(PlanItem::AddPeer {
                    name: dp.name.to_string(),
                    public_key: *key,
                });
            }
            Some(lp) => {
                let mut d = PeerDelta::new(*key);
                d.update_only = true;
                let mut changes = Vec::new();
                if lp.preshared_key != dp.preshared_key {
                    d.preshared_key = Some(dp.preshared_key.clone());
                    changes.push("preshared key".to_owned());
                }
                if let Some(ep) = dp.endpoint {
                    if lp.endpoint != Some(ep) {
                        d.endpoint = Some(ep);
                        changes.push(format!(
                            "endpoint {} -> {ep}",
                            lp.endpoint
                                .map_or_else(|| "none".to_owned(), |e| e.to_string())
                        ));
                    }
                }
                if lp.persistent_keepalive != dp.keepalive {
                    d.persistent_keepalive = Some(dp.keepalive);
                    changes.push(format!(
                        "keepalive {} -> {}",
                        lp.persistent_keepalive, dp.keepalive
                    ));
                }
                let live_ips = sorted(&lp.allowed_ips);
                if live_ips != dp.allowed_ips {
                    let want: BTreeSet<&IpNet> = dp.allowed_ips.iter().collect();
                    let have: BTreeSet<&IpNet> = live_ips.iter().collect();
                    let add: Vec<IpNet> = want.difference(&have).map(|n| **n).collect();
                    let del: Vec<IpNet> = have.difference(&want).map(|n| **n).collect();
                    for n in &add {
                        changes.push(format!("+allowed {n}"));
                    }
                    for n in &del {
                        changes.push(format!("-allowed {n}"));
                    }
                    if del.is_empty() {
                        d.allowed_ips = add;
                    } else if remove_allowed_ip {
                        d.allowed_ips = add;
                        d.remove_allowed_ips = del;
                    } else {
                        d.replace_allowed_ips = true;
                        d.allowed_ips.clone_from(&dp.allowed_ips);
                    }
                }
                if !changes.is_empty() {
                    device.peers.push(d);
                    items.push(PlanItem::UpdatePeer {
                        name: dp.name.to_string(),
                        public_key: *key,
                        changes,
                    });
                }
            }
        }
    }
    // Link.
    let (live_mtu, live_up, live_addrs, live_routes) = match live_link {
        Some(l) => (l.mtu, l.up, sorted(&l.addresses), sorted(&l.routes)),
        None => (0, false, Vec::new(), Vec::new()),
    };
    if live_mtu != desired.mtu {
        link.mtu = Some(desired.mtu);
        items.push(PlanItem::SetMtu {
            from: live_mtu,
            to: desired.mtu,
        });
    }
    for a in &live_addrs {
        if !desired.addresses.contains(a) {
            link.remove_addresses.push(*a);
            items.push(PlanItem::RemoveAddress { address: *a });
        }
    }
    for a in &desired.addresses {
        if !live_addrs.contains(a) {
            link.add_addresses.push(*a);
            items.push(PlanItem::AddAddress { address: *a });
        }
    }
    if !live_up {
        link.up = Some(true);
        items.push(PlanItem::SetUp);
    }
    for r in &live_routes {
        if !desired.routes.contains(r) {
            link.remove_routes.push(*r);
            items.push(PlanItem::RemoveRoute { route: *r });
        }
    }
    for r in &desired.routes {
        if !live_routes.contains(r) {
            link.add_routes.push(*r);
            items.push(PlanItem::AddRoute { route: *r });
        }
    }
    for n in &desired.unresolved_endpoints {
        items.push(PlanItem::UnresolvedEndpoint {
            name: n.to_string(),
        });
    }
    out.items = items;
    out.device = device;
    out.link = link;
    out
}

/// How [`Manager::apply`] makes sure that what it executed landed.
///
/// Neither the kernel nor UAPI has a per-peer read: reading a device back costs a dump
/// of every peer (45–100 ms for wireguard-go at 10 000 peers on a small machine),
/// however small the change. Both acknowledge a set only when every operation in it succeeded
/// (`errno=0`, a netlink ACK); a failure stops part-way and is reported.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verify {
    /// Read the host back in full after every executed plan and plan again.
    Always,
    /// Read the host back in full unless the backends' acknowledgement is proof enough.
    /// Acknowledgement is trusted only when all of these hold: every delta was
    /// acknowledged without error; no device was created or deleted and no full resync
    /// or port choice was asked for; the backend can tell the device's incarnation
    /// ([`WireGuardBackend::device_instance`]) and it is the one the plan was made for;
    /// and the plan was made from a full read of this apply, or (when there was
    /// something to do) from what this manager verified at most
    /// [`crate::manager::ManagerConfig::reverify_after_secs`] ago.
    ///
    /// So an apply with nothing to change re-reads (that is how a periodic reconcile
    /// finds out-of-band changes), a device recreated or a daemon restarted is noticed
    /// before planning, and a stream of changes costs a full read at most once per
    /// interval instead of once per change.
    #[default]
    Auto,
}

/// Options of [`Manager::apply`].
#[derive(Clone, Copy, Debug, Default)]
pub struct ApplyOptions {
    /// Compute and return the plan, change nothing.
    pub dry_run: bool,
    /// Replace every peer (`replace_peers`): resets tunnels; for explicit resyncs only.
    pub full_resync: bool,
    /// When to read the host back after executing.
    pub verify: Verify,
}

/// The outcome of one plan item.
#[derive(Clone, Debug, Serialize)]
pub struct ItemResult {
    /// The item.
    pub item: PlanItem,
    /// Whether the re-read shows it done.
    pub ok: bool,
}

/// What [`Manager::apply`] did.
#[derive(Clone, Debug, Serialize)]
pub struct ApplyReport {
    /// The plan that was executed (or would be, on a dry run).
    pub plan: Plan,
    /// Whether anything was executed.
    pub executed: bool,
    /// Per item: done or not, judged by re-reading the host (or, when
    /// [`ApplyReport::read_back`] is false, by the backends' acknowledgement).
    pub results: Vec<ItemResult>,
    /// Errors the backends returned while executing (the re-read says what landed).
    pub errors: Vec<String>,
    /// Whether the host now matches the revision (then it was recorded as applied).
    pub converged: bool,
    /// What is still left after the re-read.
    pub remaining: Vec<PlanItem>,
    /// Whether the host was read back in full after executing; false when the
    /// backends' acknowledgement was proof enough (see [`Verify::Auto`]) or nothing was
    /// executed.
    pub read_back: bool,
}

/// Live status of one peer.
#[derive(Clone, Debug, Serialize)]
pub struct PeerStatus {
    /// The peer's name (`None` for unmanaged peers).
    pub name: Option<String>,
    /// The peer's key.
    pub public_key: PublicKey,
    /// Whether the store knows the peer.
    pub managed: bool,
    /// Current endpoint.
    pub endpoint: Option<SocketAddr>,
    /// Last handshake, seconds since the epoch.
    pub last_handshake: Option<u64>,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Allowed IPs on the device.
    pub allowed_ips: Vec<IpNet>,
}

/// Live status of an interface.
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    /// Interface.
    pub interface: InterfaceName,
    /// Whether the device exists.
    pub exists: bool,
    /// Listen port.
    pub listen_port: u16,
    /// Peers on the device.
    pub peers: Vec<PeerStatus>,
    /// Desired peers missing from the device.
    pub missing: Vec<String>,
}

fn unix_secs(t: SystemTime) -> Option<u64> {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs())
}

impl Manager {
    /// Load what the reconciler needs: the server's state and the keys of peers removed
    /// since the last revision `host` applied.
    async fn desired_for(
        &self,
        p: &Principal,
        server: ServerId,
        host: &Host,
        action: Action,
    ) -> Result<(DesiredHost, Option<RevisionNo>)> {
        self.authorize(p, Resource::Server, action, Target::server(server.0))
            .await?;
        let applied = self.store().applied(server, &host.name).await?;
        let mut removed = Vec::new();
        let since = applied.unwrap_or(RevisionNo::NONE);
        for rec in self.store().revisions(server, since, u64::MAX).await? {
            for ch in &rec.changes {
                match ch {
                    Change::PeerRemoved { peer } => {
                        removed.push((peer.public_key, peer.name.clone()));
                    }
                    Change::PeerUpdated { before, .. } => {
                        removed.push((before.public_key, before.name.clone()));
                    }
                    _ => {}
                }
            }
        }
        // From the manager's cached state (validated against the store's head), not a
        // fresh load of every peer.
        let desired = self
            .with_cached(server, |c| {
                let kept = c
                    .desired
                    .as_ref()
                    .filter(|d| d.revision == c.state.revision)
                    .cloned();
                let mut d = if let Some(d) = kept {
                    d
                } else {
                    let d = desired_host_with(&c.state, self.sealer(), [], &mut c.opened)?;
                    c.desired = Some(d.clone());
                    d
                };
                d.removed = removed
                    .into_iter()
                    .filter(|(k, _)| *k != d.public_key)
                    .collect();
                Ok(d)
            })
            .await?;
        Ok((desired, applied))
    }

    /// The plan that [`Manager::apply`] would execute now (needs `server:read`).
    pub async fn plan(&self, p: &Principal, server: ServerId, host: &Host) -> Result<Plan> {
        let (desired, _) = self.desired_for(p, server, host, Action::Read).await?;
        let dev = host.wireguard.read_device(&desired.interface).await?;
        let link = match &host.network {
            Some(n) => n.read_link(&desired.interface).await?,
            None => None,
        };
        let caps = host.wireguard.capabilities();
        let mut pl = plan(
            &desired,
            dev.as_ref(),
            link.as_ref(),
            host.drift,
            caps.remove_allowed_ip,
            false,
        );
        if host.network.is_none() {
            strip_link(&mut pl);
        }
        Ok(pl)
    }

    /// Converge the live interface on `host` toward the server's head revision
    /// (needs `server:apply`). Executes the plan, re-reads, re-plans, and records the
    /// revision as applied on `host` only when nothing is left. Audited.
    pub async fn apply(
        &self,
        p: &Principal,
        server: ServerId,
        host: &Host,
        opts: ApplyOptions,
    ) -> Result<ApplyReport> {
        let (desired, applied) = self.desired_for(p, server, host, Action::Apply).await?;
        let iface = desired.interface.clone();
        let caps = host.wireguard.capabilities();
        let snapshot_key = (server, host.name.clone());
        // Fast path: when this manager verified the host at the revision the store
        // records as applied, plan from that instead of reading the whole device again,
        // unless the device is not the one it verified (recreated, daemon restarted).
        let snapshot = if opts.full_resync || opts.dry_run {
            None
        } else {
            match self.live_snapshot(&snapshot_key, applied) {
                Some(s) if s.instance.is_some() => {
                    let now = instance_of(host, &iface).await;
                    (now == s.instance).then_some(s)
                }
                // The backend cannot tell: plan from it, always verify by reading.
                other => other,
            }
        };
        let from_snapshot = snapshot.is_some();
        let (dev, link, instance, read_at) = if let Some(s) = snapshot {
            (s.device, s.link, s.instance, s.read_at)
        } else {
            let instance = instance_of(host, &iface).await;
            let (d, l) = read_host(host, &iface).await?;
            (d, l, instance, self.now())
        };
        let mut pl = plan(
            &desired,
            dev.as_ref(),
            link.as_ref(),
            host.drift,
            caps.remove_allowed_ip,
            opts.full_resync,
        );
        if host.network.is_none() {
            strip_link(&mut pl);
        }
        tracing::debug!(interface = %iface, revision = %desired.revision, items = pl.items.len(), from_snapshot, "planned");
        tracing::trace!(device = ?pl.device, link = ?pl.link, "plan deltas");
        if opts.dry_run {
            return Ok(ApplyReport {
                plan: pl,
                executed: false,
                results: Vec::new(),
                errors: Vec::new(),
                converged: false,
                remaining: Vec::new(),
                read_back: false,
            });
        }
        self.forget_snapshot(&snapshot_key);
        let mut errors = execute(host, &iface, &pl).await;
        let trusted = opts.verify == Verify::Auto
            && errors.is_empty()
            && instance.is_some()
            && !pl.create_device
            && !pl.delete_device
            && !pl.device.replace_peers
            && pl.device.listen_port != Some(0)
            && (!from_snapshot || (!pl.is_empty() && self.now() - read_at < self.reverify_after()));
        if trusted {
            // Every delta was acknowledged in full: the host holds what we planned from
            // with the deltas applied, by the backends' own semantics.
            let mut dev2 = dev;
            if let Some(d) = dev2.as_mut() {
                d.apply(&pl.device);
            }
            let mut link2 = link;
            let link_ok = match link2.as_mut() {
                Some(l) if !pl.link.is_empty() => l.apply(&pl.link).is_ok(),
                _ => true,
            };
            if link_ok {
                tracing::debug!(interface = %iface, items = pl.items.len(), "acknowledged; not read back");
                let report = ApplyReport {
                    results: pl
                        .items
                        .iter()
                        .map(|item| ItemResult {
                            item: item.clone(),
                            ok: true,
                        })
                        .collect(),
                    plan: pl,
                    executed: true,
                    errors,
                    converged: true,
                    remaining: Vec::new(),
                    read_back: false,
                };
                self.record_applied(
                    p,
                    snapshot_key,
                    &desired,
                    LiveSnapshot {
                        revision: desired.revision,
                        device: dev2,
                        link: link2,
                        instance,
                        read_at,
                    },
                    &report,
                )
                .await?;
                return Ok(report);
            }
        }
        // Verify by reading back and planning again.
        let mut instance2 = instance_of(host, &iface).await;
        let (mut dev2, mut link2) = read_host(host, &iface).await?;
        let mut read_at2 = self.now();
        let mut again = plan(
            &desired,
            dev2.as_ref(),
            link2.as_ref(),
            host.drift,
            caps.remove_allowed_ip,
            false,
        );
        if host.network.is_none() {
            strip_link(&mut again);
        }
        if from_snapshot && !again.is_empty() && errors.is_empty() {
            // The snapshot was stale: converge from the fresh read, then verify again.
            tracing::debug!(interface = %iface, "live state changed since the last verified read; second pass");
            errors.extend(execute(host, &iface, &again).await);
            let second: Vec<PlanItem> = again
                .items
                .iter()
                .filter(|i| !pl.items.contains(i))
                .cloned()
                .collect();
            pl.items.extend(second);
            instance2 = instance_of(host, &iface).await;
            (dev2, link2) = read_host(host, &iface).await?;
            read_at2 = self.now();
            again = plan(
                &desired,
                dev2.as_ref(),
                link2.as_ref(),
                host.drift,
                caps.remove_allowed_ip,
                false,
            );
            if host.network.is_none() {
                strip_link(&mut again);
            }
        }
        // Drift the verifying read found but leaves alone (unmanaged peers under the
        // `report` policy) belongs in the report too.
        let reported: Vec<PlanItem> = again
            .items
            .iter()
            .filter(|i| i.is_report_only() && !pl.items.contains(i))
            .cloned()
            .collect();
        pl.items.extend(reported);
        let remaining: Vec<PlanItem> = again
            .items
            .iter()
            .filter(|i| !i.is_report_only())
            .cloned()
            .collect();
        let results = pl
            .items
            .iter()
            .map(|item| ItemResult {
                item: item.clone(),
                ok: item.is_report_only() || !item_pending(item, &remaining),
            })
            .collect();
        let converged = remaining.is_empty();
        let report = ApplyReport {
            plan: pl,
            executed: true,
            results,
            errors,
            converged,
            remaining,
            read_back: true,
        };
        if converged {
            self.record_applied(
                p,
                snapshot_key,
                &desired,
                LiveSnapshot {
                    revision: desired.revision,
                    device: dev2,
                    link: link2,
                    instance: instance2,
                    read_at: read_at2,
                },
                &report,
            )
            .await?;
        } else {
            self.audit_apply(p, server, desired.revision, &host.name, &report)
                .await;
        }
        Ok(report)
    }

    /// The host converged at the desired revision: record it as applied there, keep
    /// what the host now holds for the next apply, audit.
    async fn record_applied(
        &self,
        p: &Principal,
        key: (ServerId, String),
        desired: &DesiredHost,
        snapshot: LiveSnapshot,
        report: &ApplyReport,
    ) -> Result<()> {
        self.store()
            .set_applied(desired.server_id, &key.1, desired.revision)
            .await?;
        let host = key.1.clone();
        self.remember_snapshot(key, snapshot);
        self.audit_apply(p, desired.server_id, desired.revision, &host, report)
            .await;
        Ok(())
    }

    async fn audit_apply(
        &self,
        p: &Principal,
        server: ServerId,
        rev: RevisionNo,
        host: &str,
        report: &ApplyReport,
    ) {
        let details = json!({
            "host": host,
            "revision": rev.0,
            "converged": report.converged,
            "items": report.plan.items.len(),
            "errors": report.errors,
        });
        if let Err(e) = self
            .audit_only(
                p,
                crate::audit::AuditAction::ServerApply,
                format!("server/{server}"),
                Some(server),
                details,
            )
            .await
        {
            tracing::warn!(error = %e, "could not audit an apply");
        }
    }

    /// Live status of the server's interface on `host`: every peer's handshake,
    /// endpoint and transfer counters (needs `server:read`). Stores the observed
    /// statistics of managed peers.
    pub async fn status(&self, p: &Principal, server: ServerId, host: &Host) -> Result<Status> {
        self.authorize(p, Resource::Server, Action::Read, Target::server(server.0))
            .await?;
        // What status needs of the store, from the manager's cache (not a load of every
        // peer): the interface, and per key the peer's id, name, whether it is enabled
        // and the statistics stored last.
        let (iface, known) = self
            .read_server(server, |st| {
                let known: HashMap<PublicKey, (PeerId, String, bool, PeerStats)> = st
                    .peers
                    .values()
                    .map(|p| (p.public_key, (p.id, p.name.to_string(), p.enabled, p.stats)))
                    .collect();
                Ok((st.server.interface.clone(), known))
            })
            .await?;
        let dev = host.wireguard.read_device(&iface).await?;
        let Some(dev) = dev else {
            let mut missing: Vec<String> = known
                .values()
                .filter(|(_, _, enabled, _)| *enabled)
                .map(|(_, name, _, _)| name.clone())
                .collect();
            missing.sort_unstable();
            return Ok(Status {
                interface: iface,
                exists: false,
                listen_port: 0,
                peers: Vec::new(),
                missing,
            });
        };
        let mut peers = Vec::with_capacity(dev.peers.len());
        let mut stats = Vec::new();
        for (k, lp) in &dev.peers {
            let entry = known.get(k);
            if let Some((id, _, _, stored)) = entry {
                let last_seen = lp.last_handshake.and_then(unix_secs).and_then(|s| {
                    time::OffsetDateTime::from_unix_timestamp(i64::try_from(s).unwrap_or(i64::MAX))
                        .ok()
                });
                let observed = PeerStats {
                    last_seen,
                    rx_bytes: lp.rx_bytes,
                    tx_bytes: lp.tx_bytes,
                };
                // Only what changed is written back.
                if observed != *stored {
                    stats.push((*id, observed));
                }
            }
            peers.push(PeerStatus {
                name: entry.map(|(_, n, _, _)| n.clone()),
                public_key: *k,
                managed: entry.is_some(),
                endpoint: lp.endpoint,
                last_handshake: lp.last_handshake.and_then(unix_secs),
                rx_bytes: lp.rx_bytes,
                tx_bytes: lp.tx_bytes,
                allowed_ips: lp.allowed_ips.clone(),
            });
        }
        let mut missing: Vec<String> = known
            .iter()
            .filter(|(k, (_, _, enabled, _))| *enabled && !dev.peers.contains_key(*k))
            .map(|(_, (_, name, _, _))| name.clone())
            .collect();
        missing.sort_unstable();
        if !stats.is_empty() {
            // Observed statistics are best effort: a read-only store must not fail status.
            if let Err(e) = self.record_stats(server, &stats).await {
                tracing::warn!(error = %e, "could not store peer statistics");
            }
        }
        Ok(Status {
            interface: iface,
            exists: true,
            listen_port: dev.listen_port,
            peers,
            missing,
        })
    }
}

/// Without a network backend, the link is not ours to change: drop link items.
fn strip_link(pl: &mut Plan) {
    pl.link = LinkDelta::default();
    pl.items.retain(|i| {
        !matches!(
            i,
            PlanItem::SetMtu { .. }
                | PlanItem::SetUp
                | PlanItem::AddAddress { .. }
                | PlanItem::RemoveAddress { .. }
                | PlanItem::AddRoute { .. }
                | PlanItem::RemoveRoute { .. }
        )
    });
}

/// Whether `item` (from the executed plan) is still pending in `remaining`.
fn item_pending(item: &PlanItem, remaining: &[PlanItem]) -> bool {
    let key = |i: &PlanItem| -> String {
        match i {
            PlanItem::AddPeer { public_key, .. }
            | PlanItem::UpdatePeer { public_key, .. }
            | PlanItem::RemovePeer { public_key, .. }
            | PlanItem::Unmanaged { public_key, .. } => format!("peer:{public_key}"),
            PlanItem::AddAddress { address } | PlanItem::RemoveAddress { address } => {
                format!("addr:{address}")
            }
            PlanItem::AddRoute { route } | PlanItem::RemoveRoute { route } => {
                format!("route:{route}")
            }
            other => format!("{:?}", std::mem::discriminant(other)),
        }
    };
    let k = key(item);
    remaining.iter().any(|r| key(r) == k)
}

/// The device's incarnation, or `None` when there is none or it cannot be told (a
/// failure to tell only costs a full read).
async fn instance_of(host: &Host, iface: &InterfaceName) -> Option<u64> {
    match host.wireguard.device_instance(iface).await {
        Ok(i) => i,
        Err(e) => {
            tracing::debug!(interface = %iface, error = %e, "could not tell the device's instance");
            None
        }
    }
}

/// Read a host's device and link.
async fn read_host(
    host: &Host,
    iface: &InterfaceName,
) -> Result<(Option<DeviceState>, Option<LinkState>)> {
    let d = host.wireguard.read_device(iface).await?;
    let l = match &host.network {
        Some(n) => n.read_link(iface).await?,
        None => None,
    };
    Ok((d, l))
}

/// Execute a plan's deltas; returns the backends' errors (the caller re-reads to see
/// what landed: neither the kernel nor UAPI is atomic).
async fn execute(host: &Host, iface: &InterfaceName, pl: &Plan) -> Vec<String> {
    let mut errors = Vec::new();
    if pl.delete_device {
        if let Err(e) = host.wireguard.delete_device(iface).await {
            errors.push(e.to_string());
        }
        return errors;
    }
    if pl.create_device {
        if let Err(e) = host.wireguard.create_device(iface).await {
            errors.push(e.to_string());
        }
    }
    if !pl.device.is_empty() {
        if let Err(e) = host.wireguard.apply_device(iface, &pl.device).await {
            tracing::warn!(interface = %iface, error = %e, "device apply failed part-way; re-reading");
            errors.push(e.to_string());
        }
    }
    if let Some(net) = &host.network {
        if !pl.link.is_empty() {
            // After the device exists: its link comes with it.
            if let Err(e) = net.apply_link(iface, &pl.link).await {
                errors.push(e.to_string());
            }
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::MemoryWireGuard;
    use crate::manager::{NewPeer, NewServer, PeerUpdate};
    use crate::model::Delegation;
    use crate::names::ServerName;
    use crate::net::{Keepalive, ListenPort};
    use crate::seal::MasterKey;
    use crate::store::MemoryStore;
    use futures::executor::block_on;
    use rand::{Rng, SeedableRng};

    /// The desired state the manager keeps following changes equals one derived afresh.
    fn assert_follows(m: &Manager, id: ServerId) {
        block_on(m.with_cached(id, |c| {
            let Some(kept) = c.desired.clone() else {
                return Ok(());
            };
            let fresh = desired_host(&c.state, m.sealer(), [])?;
            assert_eq!(kept.revision, fresh.revision);
            assert_eq!(kept.public_key, fresh.public_key);
            assert_eq!(*kept.peers, *fresh.peers);
            assert_eq!(*kept.known_keys, *fresh.known_keys);
            assert_eq!(*kept.known_names, *fresh.known_names);
            assert_eq!(kept.routes, fresh.routes);
            assert_eq!(kept.unresolved_endpoints, fresh.unresolved_endpoints);
            assert_eq!(kept.addresses, fresh.addresses);
            assert_eq!(
                (kept.listen_port, kept.fwmark, kept.mtu, kept.active),
                (fresh.listen_port, fresh.fwmark, fresh.mtu, fresh.active)
            );
            Ok(())
        }))
        .unwrap();
    }

    #[test]
    fn the_kept_desired_state_follows_every_peer_change() {
        let (m, cap) = Manager::builder(
            Arc::new(MemoryStore::new()),
            Sealer::new(MasterKey::generate()),
        )
        .build_with_local_admin();
        let admin = cap.principal("root");
        let mut spec = NewServer::new(
            ServerName::new("s").unwrap(),
            InterfaceName::new("wg0").unwrap(),
            ListenPort::new(51820).unwrap(),
        );
        spec.ipv4_pool = Some("10.8.0.0/24".parse().unwrap());
        spec.delegation = Some(Delegation {
            pool: "fd77::/48".parse().unwrap(),
            prefix_len: 64,
        });
        spec.quarantine_secs = Some(0);
        let id = block_on(m.create_server(&admin, spec)).unwrap().id;
        let wg = Arc::new(MemoryWireGuard::new());
        let host = Host::new("h", wg, None);
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut alive: Vec<PeerId> = Vec::new();
        let mut followed = 0;
        for step in 0..160u32 {
            // Keep the kept state alive: a plan derives it when a change was not
            // followable (server settings, rollback of those).
            block_on(m.plan(&admin, id, &host)).unwrap();
            let op = rng.gen_range(0..9);
            let pick = |rng: &mut rand::rngs::StdRng, alive: &[PeerId]| {
                alive[rng.gen_range(0..alive.len())]
            };
            match op {
                0..=2 => {
                    let mut np = NewPeer::new(PeerName::new(format!("p{step}")).unwrap());
                    match rng.gen_range(0..4) {
                        0 => {
                            np.extra_allowed_ips =
                                vec![format!("10.{}.{step}.0/24", 100 + step / 250)
                                    .parse()
                                    .unwrap()];
                        }
                        1 => np.prefix = crate::manager::AddrRequest::Auto,
                        2 => {
                            np.endpoint = Some(Endpoint::Host {
                                host: format!("h{step}.example.org"),
                                port: 51820,
                            });
                        }
                        _ => {
                            np.endpoint =
                                Some(Endpoint::Addr("[2001:db8::1]:51820".parse().unwrap()));
                            np.keepalive = Some(Keepalive::new(25).unwrap());
                        }
                    }
                    np.preshared_key = rng.gen_bool(0.7);
                    alive.push(block_on(m.add_peer(&admin, id, np)).unwrap().id);
                }
                3 if !alive.is_empty() => {
                    let peer = pick(&mut rng, &alive);
                    let up = PeerUpdate {
                        enabled: Some(rng.gen_bool(0.5)),
                        ..PeerUpdate::default()
                    };
                    let _ = block_on(m.update_peer(&admin, id, peer, up));
                }
                4 if !alive.is_empty() => {
                    let peer = pick(&mut rng, &alive);
                    let up = PeerUpdate {
                        extra_allowed_ips: Some(if rng.gen_bool(0.5) {
                            Vec::new()
                        } else {
                            vec![format!("fd90:{step:x}::/64").parse().unwrap()]
                        }),
                        endpoint: Some(if rng.gen_bool(0.5) {
                            None
                        } else {
                            Some(Endpoint::Host {
                                host: format!("x{step}.example.org"),
                                port: 1,
                            })
                        }),
                        ..PeerUpdate::default()
                    };
                    let _ = block_on(m.update_peer(&admin, id, peer, up));
                }
                5 if !alive.is_empty() => {
                    let peer = pick(&mut rng, &alive);
                    block_on(m.rotate_peer_psk(&admin, id, peer)).unwrap();
                }
                6 if !alive.is_empty() => {
                    let peer = pick(&mut rng, &alive);
                    let _ = block_on(m.rotate_peer_key(&admin, id, peer));
                }
                7 if !alive.is_empty() => {
                    let i = rng.gen_range(0..alive.len());
                    block_on(m.remove_peer(&admin, id, alive.swap_remove(i))).unwrap();
                }
                8 if step % 5 == 0 => {
                    // A rollback a few revisions back: peers come and go in one revision.
                    let head = block_on(m.get_server(&admin, id)).unwrap().revision;
                    if head.0 > 4
                        && block_on(m.rollback(&admin, id, RevisionNo(head.0 - 3))).is_ok()
                    {
                        alive = block_on(m.list_peers(&admin, id))
                            .unwrap()
                            .into_iter()
                            .map(|p| p.id)
                            .collect();
                    }
                }
                _ => {}
            }
            if block_on(m.with_cached(id, |c| Ok(c.desired.is_some()))).unwrap() {
                followed += 1;
            }
            assert_follows(&m, id);
        }
        assert!(
            followed > 100,
            "the kept state was followed {followed} times"
        );
    }
}
