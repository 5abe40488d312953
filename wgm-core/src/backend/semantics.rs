//! What a delta does to a device or a link, as a pure function: the kernel's and
//! wireguard-go's semantics (the own-key peer ignored, a new private key removing the peer
//! equal to its public key, an allowed IP moving between peers; Linux's link rules).
//!
//! The in-memory backends are built on these functions, and the reconciler uses them to
//! know what a device holds after a delta the backend acknowledged in full (see
//! [`crate::reconcile::Verify`]). One definition for both is what keeps them equal.

use std::collections::{BTreeSet, HashMap};

use ipnet::IpNet;

use super::{DeviceDelta, DeviceState, LinkDelta, LinkState, PeerDelta, PeerState, IPV6_MIN_MTU};
use crate::keys::PublicKey;
use crate::{Error, Result};

/// How to find the peer that holds an allowed IP.
pub(crate) enum Owners<'a> {
    /// A maintained index (the in-memory device keeps one).
    Index(&'a mut HashMap<IpNet, PublicKey>),
    /// Look through the peers (cheap for a delta adding a few IPs).
    Scan,
}

impl Owners<'_> {
    fn forget(&mut self, ip: &IpNet) {
        if let Owners::Index(ix) = self {
            ix.remove(ip);
        }
    }

    /// Record `key` as the owner of `ip`; the previous owner, if another peer.
    fn take(&mut self, ip: IpNet, key: PublicKey, peers: &DeviceStatePeers) -> Option<PublicKey> {
        let previous = match self {
            Owners::Index(ix) => ix.insert(ip, key),
            Owners::Scan => peers
                .iter()
                .find(|(k, p)| **k != key && p.allowed_ips.contains(&ip))
                .map(|(k, _)| *k),
        };
        previous.filter(|p| *p != key)
    }

    fn clear(&mut self) {
        if let Owners::Index(ix) = self {
            ix.clear();
        }
    }
}

type DeviceStatePeers = std::collections::BTreeMap<PublicKey, PeerState>;

/// Remove the peer `key` and its allowed IPs from the index.
pub(crate) fn remove_peer(state: &mut DeviceState, owners: &mut Owners<'_>, key: &PublicKey) {
    if let Some(peer) = state.peers.remove(key) {
        for ip in &peer.allowed_ips {
            owners.forget(ip);
        }
    }
}

/// Apply the device-level fields of `delta` (key, port, fwmark, `replace_peers`), not
/// its peers.
pub(crate) fn apply_settings(
    state: &mut DeviceState,
    owners: &mut Owners<'_>,
    delta: &DeviceDelta,
) {
    if let Some(key) = &delta.private_key {
        let public = key.public_key();
        state.private_key = Some(key.clone());
        state.public_key = Some(public);
        // Setting a private key removes a peer equal to the new public key.
        remove_peer(state, owners, &public);
    }
    if let Some(port) = delta.listen_port {
        state.listen_port = port;
    }
    if let Some(mark) = delta.fwmark {
        state.fwmark = mark;
    }
    if delta.replace_peers {
        state.peers.clear();
        owners.clear();
    }
}

/// Apply one peer's delta the way the kernel does.
pub(crate) fn apply_peer(state: &mut DeviceState, owners: &mut Owners<'_>, delta: &PeerDelta) {
    let key = delta.public_key;
    if state.public_key == Some(key) {
        return; // The kernel silently ignores a peer equal to the device's own key.
    }
    if delta.remove {
        remove_peer(state, owners, &key);
        return;
    }
    if delta.update_only && !state.peers.contains_key(&key) {
        return;
    }
    let peer = state
        .peers
        .entry(key)
        .or_insert_with(|| PeerState::new(key));
    if let Some(psk) = &delta.preshared_key {
        peer.preshared_key.clone_from(psk);
    }
    if let Some(endpoint) = delta.endpoint {
        peer.endpoint = Some(endpoint);
    }
    if let Some(keepalive) = delta.persistent_keepalive {
        peer.persistent_keepalive = keepalive;
    }
    let mut mine: BTreeSet<IpNet> = std::mem::take(&mut peer.allowed_ips).into_iter().collect();
    if delta.replace_allowed_ips {
        for ip in std::mem::take(&mut mine) {
            owners.forget(&ip);
        }
    }
    for ip in &delta.remove_allowed_ips {
        if mine.remove(ip) {
            owners.forget(ip);
        }
    }
    for ip in &delta.allowed_ips {
        let ip = ip.trunc();
        if let Some(previous) = owners.take(ip, key, &state.peers) {
            // An allowed IP given to a second peer silently moves from the first.
            if let Some(other) = state.peers.get_mut(&previous) {
                other.allowed_ips.retain(|x| *x != ip);
            }
        }
        mine.insert(ip);
    }
    if let Some(peer) = state.peers.get_mut(&key) {
        peer.allowed_ips = mine.into_iter().collect();
    }
}

impl DeviceState {
    /// What the device holds after a backend applied `delta` to it in full: the
    /// semantics of the kernel and of wireguard-go (a new private key removes the peer
    /// equal to its public key; a peer equal to the device's own key is ignored; an
    /// allowed IP given to a second peer moves; `update_only` never creates a peer).
    ///
    /// Configuration only: a new peer has no handshake and zero counters, and
    /// `listen_port: Some(0)` is recorded as 0 although a real device binds some port.
    ///
    /// ```
    /// use wgm_core::backend::{DeviceDelta, DeviceState, PeerDelta};
    /// use wgm_core::keys::PrivateKey;
    ///
    /// let (a, b) = (PrivateKey::generate().public_key(), PrivateKey::generate().public_key());
    /// let net: ipnet::IpNet = "fd00::2/128".parse().unwrap();
    /// let mut dev = DeviceState::default();
    /// let mut to_a = PeerDelta::new(a);
    /// to_a.allowed_ips = vec![net];
    /// dev.apply(&DeviceDelta { peers: vec![to_a], ..DeviceDelta::default() });
    /// // The same address given to b moves away from a.
    /// let mut to_b = PeerDelta::new(b);
    /// to_b.allowed_ips = vec![net];
    /// dev.apply(&DeviceDelta { peers: vec![to_b], ..DeviceDelta::default() });
    /// assert!(dev.peers[&a].allowed_ips.is_empty());
    /// assert_eq!(dev.peers[&b].allowed_ips, vec![net]);
    /// ```
    pub fn apply(&mut self, delta: &DeviceDelta) {
        // A few added IPs: scanning for their owners is cheaper than indexing every peer.
        let added: usize = delta.peers.iter().map(|p| p.allowed_ips.len()).sum();
        let mut index = HashMap::new();
        let mut owners = if added <= 64 {
            Owners::Scan
        } else {
            for (k, p) in &self.peers {
                for ip in &p.allowed_ips {
                    index.insert(*ip, *k);
                }
            }
            Owners::Index(&mut index)
        };
        apply_settings(self, &mut owners, delta);
        for p in &delta.peers {
            apply_peer(self, &mut owners, p);
        }
    }
}

fn drop_ipv6(set: &mut BTreeSet<IpNet>) {
    set.retain(|n| matches!(n, IpNet::V4(_)));
}

impl LinkState {
    /// Apply `delta` with Linux's rules (see [`LinkDelta`]): taking the link down drops
    /// its IPv6 addresses and every route through it; an MTU below 1280 drops IPv6;
    /// routes need the link up. Not atomic, like the kernel: on an error what came
    /// before it stays applied. Does not validate `delta` (see [`LinkDelta::validate`]).
    ///
    /// ```
    /// use wgm_core::backend::{LinkDelta, LinkState};
    ///
    /// let mut link = LinkState { up: false, mtu: 1420, addresses: vec![], routes: vec![] };
    /// link.apply(&LinkDelta {
    ///     up: Some(true),
    ///     add_addresses: vec!["fd00::1/64".parse().unwrap()],
    ///     ..LinkDelta::default()
    /// }).unwrap();
    /// assert!(link.up);
    /// // Routes need the link up.
    /// link.apply(&LinkDelta { up: Some(false), ..LinkDelta::default() }).unwrap();
    /// assert!(link.addresses.is_empty());
    /// let route = LinkDelta { add_routes: vec!["fd00:5::/64".parse().unwrap()], ..LinkDelta::default() };
    /// assert!(link.apply(&route).is_err());
    /// ```
    pub fn apply(&mut self, delta: &LinkDelta) -> Result<()> {
        let mut addresses: BTreeSet<IpNet> = self.addresses.iter().copied().collect();
        let mut routes: BTreeSet<IpNet> = self.routes.iter().copied().collect();
        let result = (|| {
            if let Some(mtu) = delta.mtu {
                self.mtu = mtu;
                if mtu < IPV6_MIN_MTU {
                    drop_ipv6(&mut addresses);
                    drop_ipv6(&mut routes);
                }
            }
            for a in &delta.remove_addresses {
                addresses.remove(a);
            }
            for (j, a) in delta.add_addresses.iter().enumerate() {
                if matches!(a, IpNet::V6(_)) && self.mtu < IPV6_MIN_MTU {
                    return Err(Error::invalid(
                        format!("link.add_addresses[{j}]"),
                        "IPv6 needs an MTU of at least 1280",
                    ));
                }
                addresses.insert(*a);
            }
            if let Some(up) = delta.up {
                if self.up && !up {
                    // Linux (keep_addr_on_down = 0): IPv6 addresses and all routes go.
                    drop_ipv6(&mut addresses);
                    routes.clear();
                }
                self.up = up;
            }
            for r in &delta.remove_routes {
                routes.remove(r);
            }
            for (j, r) in delta.add_routes.iter().enumerate() {
                if !self.up {
                    return Err(Error::invalid(
                        format!("link.add_routes[{j}]"),
                        "the link is down",
                    ));
                }
                routes.insert(*r);
            }
            Ok(())
        })();
        self.addresses = addresses.into_iter().collect();
        self.routes = routes.into_iter().collect();
        result
    }
}
