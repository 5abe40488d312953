//! The desired state of an interface on a host, derived from a server's state.
//!
//! [`desired_host`] opens the server's private key and the peers' PSKs; the manager
//! keeps the opened secrets between applies (`OpenedSecrets`, keyed by their sealed
//! text) and lets a derived [`DesiredHost`] follow peer changes (`DesiredHost::follow`)
//! instead of deriving it afresh.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use ipnet::IpNet;

use crate::backend::firewall::{FirewallState, PeerFirewall};
use crate::keys::{PresharedKey, PrivateKey, PublicKey};
use crate::model::{Change, Peer, PeerId, RevisionNo, ServerId, ServerState};
use crate::names::{InterfaceName, PeerName};
use crate::net::Endpoint;
use crate::seal::{SealedSecret, Sealer, SecretKind};
use crate::{Error, Result};

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

/// The firewall a server should have on its host: its interface and policy, and each
/// **enabled** peer with an address, keyed by public key, with every network it may send
/// from and be reached at — its tunnel addresses as host addresses (`/128`, `/32`), its
/// delegated prefix and its extra allowed IPs (the networks routed to it), as the
/// device's allowed IPs hold them —, its policy, and its quota period taken at `now`
/// (Unix seconds). WireGuard accepts from a peer any source inside its allowed IPs, so
/// each of these counts as the peer in its allow list, rates and quota, both ways.
/// A network of a peer inside another of its own is left out (the wider one holds it);
/// host bits are cleared. Disabled peers hold nothing in the firewall. Pure; the result
/// is checked with [`FirewallState::validate`] before it is applied, which refuses
/// networks that overlap between peers.
///
/// ```
/// use wgm_core::reconcile::desired_firewall;
/// # fn demo(state: &wgm_core::model::ServerState) -> wgm_core::Result<()> {
/// let fw = desired_firewall(state, 1_700_000_000);
/// assert_eq!(fw.policy, state.server.policy);
/// assert!(fw.peers.len() <= state.peers.len());
/// fw.validate()?;
/// # Ok(()) }
/// ```
pub fn desired_firewall(state: &ServerState, now: u64) -> FirewallState {
    let mut fw = FirewallState::new(state.server.interface.clone(), state.server.policy.clone());
    for p in state.peers.values().filter(|p| p.enabled) {
        if p.address_v6.is_none() && p.address_v4.is_none() {
            continue;
        }
        fw.peers.insert(
            p.public_key,
            PeerFirewall::new(firewall_networks(p), p.policy.clone(), now),
        );
    }
    fw
}

/// A peer's networks for the firewall: its allowed IPs without host bits, sorted, each
/// once, and none inside another.
fn firewall_networks(p: &Peer) -> Vec<IpNet> {
    let mut nets: Vec<IpNet> = p.allowed_ips().iter().map(IpNet::trunc).collect();
    // By network address, the wider first: a network inside another comes after it.
    nets.sort_unstable();
    let mut out: Vec<IpNet> = Vec::with_capacity(nets.len());
    for n in nets {
        if !out.last().is_some_and(|wide| wide.contains(&n)) {
            out.push(n);
        }
    }
    out
}
