//! In-memory [`WireGuardBackend`] and [`NetworkBackend`] that behave like the kernel:
//! non-atomic sets, the own-key peer ignored, allowed IPs moving between peers, Linux's
//! link rules. Tests drive the parts a real device gets from the network (handshakes,
//! traffic, roaming) and inject faults.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use async_trait::async_trait;
use ipnet::IpNet;

use super::semantics::{self, Owners};
use super::{
    Capabilities, DeviceDelta, DeviceState, LinkDelta, LinkState, NetworkBackend, PeerState,
    WireGuardBackend, DEFAULT_MTU,
};
use crate::keys::PublicKey;
use crate::names::InterfaceName;
use crate::{Error, Result};

/// The backend name of both in-memory backends.
const NAME: &str = "memory";

/// An operation of the in-memory backends, for [`Fault::FailNext`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Operation {
    /// [`WireGuardBackend::list_devices`].
    ListDevices,
    /// [`WireGuardBackend::create_device`].
    CreateDevice,
    /// [`WireGuardBackend::delete_device`].
    DeleteDevice,
    /// [`WireGuardBackend::read_device`].
    ReadDevice,
    /// [`WireGuardBackend::apply_device`] (fails before anything is applied).
    ApplyDevice,
    /// [`NetworkBackend::read_link`].
    ReadLink,
    /// [`NetworkBackend::apply_link`] (fails before anything is applied).
    ApplyLink,
}

/// A fault to inject into the in-memory backends ([`MemoryWireGuard::inject`]). Each
/// fault fires once, then is gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// The next call of this operation fails with [`Error::Backend`] and changes nothing.
    FailNext(Operation),
    /// The first `apply_device` that reaches peer `index` (0-based, in its delta) fails
    /// there with [`Error::Backend`]; the device settings and the peers before it stay
    /// applied (F9).
    FailAtPeer {
        /// Index into [`DeviceDelta::peers`].
        index: usize,
    },
    /// The device disappears (as with `ip link del`, or its daemon dying) when an
    /// `apply_device` reaches peer `index`; that call fails with [`Error::NotFound`].
    VanishAtPeer {
        /// Index into [`DeviceDelta::peers`].
        index: usize,
    },
}

/// The error an injected fault produces (inside [`Error::Backend`]).
#[derive(Debug, thiserror::Error)]
#[error("injected fault: {0}")]
struct InjectedFault(String);

/// One in-memory WireGuard device: its state, and which peer holds each allowed IP
/// (the kernel's trie, flattened).
#[derive(Debug)]
struct Device {
    state: DeviceState,
    owners: HashMap<IpNet, PublicKey>,
    /// Changes whenever the device is created anew (see
    /// [`WireGuardBackend::device_instance`]).
    instance: u64,
}

/// Everything the in-memory backends share: devices, links, pending faults.
#[derive(Debug, Default)]
struct Host {
    devices: BTreeMap<InterfaceName, Device>,
    links: BTreeMap<InterfaceName, LinkState>,
    faults: Vec<Fault>,
    /// Devices created so far (each gets the next number as its instance).
    created: u64,
}

impl Host {
    /// Consume a pending `FailNext(op)` fault, as an error.
    fn fail_next(&mut self, op: Operation) -> Result<()> {
        if let Some(i) = self.faults.iter().position(|f| *f == Fault::FailNext(op)) {
            self.faults.remove(i);
            return Err(Error::backend(
                NAME,
                InjectedFault(format!("{op:?} failed")),
            ));
        }
        Ok(())
    }

    /// Consume a pending fault for peer `index` of an apply, if there is one.
    fn peer_fault(&mut self, index: usize) -> Option<Fault> {
        let i = self.faults.iter().position(|f| {
            matches!(f, Fault::FailAtPeer { index: k } | Fault::VanishAtPeer { index: k } if *k == index)
        })?;
        Some(self.faults.remove(i))
    }

    fn new_link() -> LinkState {
        LinkState {
            up: false,
            mtu: DEFAULT_MTU,
            addresses: Vec::new(),
            routes: Vec::new(),
        }
    }

    fn device_mut(&mut self, name: &InterfaceName) -> Result<&mut Device> {
        self.devices
            .get_mut(name)
            .ok_or_else(|| Error::not_found("device", name))
    }
}

fn lock(host: &Mutex<Host>) -> MutexGuard<'_, Host> {
    // A panic while the lock was held cannot leave the maps half-updated in a way that
    // breaks memory safety; keep going with what is there, as the kernel would.
    host.lock().unwrap_or_else(PoisonError::into_inner)
}

/// An in-memory [`WireGuardBackend`] with the kernel's semantics (see the
/// [module docs](super)). Creating a device also creates its link, visible through
/// [`MemoryWireGuard::network`].
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use wgm_core::backend::{DeviceDelta, Fault, MemoryWireGuard, PeerDelta, WireGuardBackend};
/// use wgm_core::keys::PrivateKey;
/// use wgm_core::names::InterfaceName;
///
/// # futures::executor::block_on(async {
/// let wg = MemoryWireGuard::new();
/// let name = InterfaceName::new("wg0")?;
/// wg.create_device(&name).await?;
/// let (a, b) = (PrivateKey::generate().public_key(), PrivateKey::generate().public_key());
///
/// // Not atomic: a failure at the second peer keeps the first.
/// wg.inject(Fault::FailAtPeer { index: 1 });
/// let delta = DeviceDelta { peers: vec![PeerDelta::new(a), PeerDelta::new(b)], ..DeviceDelta::default() };
/// assert!(wg.apply_device(&name, &delta).await.is_err());
/// let state = wg.read_device(&name).await?.unwrap();
/// assert!(state.peers.contains_key(&a) && !state.peers.contains_key(&b));
///
/// // What the network would do to a real device.
/// let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
/// wg.simulate_handshake(&name, &a, at)?;
/// wg.simulate_traffic(&name, &a, 100, 200)?;
/// let peer = &wg.read_device(&name).await?.unwrap().peers[&a];
/// assert_eq!((peer.last_handshake, peer.rx_bytes, peer.tx_bytes), (Some(at), 100, 200));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
pub struct MemoryWireGuard {
    host: Arc<Mutex<Host>>,
    caps: Capabilities,
}

impl fmt::Debug for MemoryWireGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = lock(&self.host);
        f.debug_struct("MemoryWireGuard")
            .field("devices", &host.devices.keys().collect::<Vec<_>>())
            .field("capabilities", &self.caps)
            .finish_non_exhaustive()
    }
}

impl Default for MemoryWireGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryWireGuard {
    /// An empty host with every capability (`fwmark`, `remove_allowed_ip`).
    pub fn new() -> Self {
        Self::with_capabilities(Capabilities {
            kernel: false,
            fwmark: true,
            remove_allowed_ip: true,
            max_set_bytes: None,
        })
    }

    /// An empty host declaring `caps` (to exercise a caller's handling of a backend
    /// without, say, `remove_allowed_ip`); deltas are validated against them.
    pub fn with_capabilities(caps: Capabilities) -> Self {
        MemoryWireGuard {
            host: Arc::new(Mutex::new(Host::default())),
            caps,
        }
    }

    /// The [`NetworkBackend`] of the same host: it sees the links of this backend's
    /// devices.
    pub fn network(&self) -> MemoryNetwork {
        MemoryNetwork {
            host: Arc::clone(&self.host),
        }
    }

    /// Arm a fault (see [`Fault`]). Faults fire in the order they were armed.
    pub fn inject(&self, fault: Fault) {
        lock(&self.host).faults.push(fault);
    }

    /// Disarm every pending fault.
    pub fn clear_faults(&self) {
        lock(&self.host).faults.clear();
    }

    /// Record a completed handshake with `peer` at `at`.
    pub fn simulate_handshake(
        &self,
        name: &InterfaceName,
        peer: &PublicKey,
        at: SystemTime,
    ) -> Result<()> {
        self.with_peer(name, peer, |p| p.last_handshake = Some(at))
    }

    /// Count `rx` bytes received from and `tx` bytes sent to `peer` (added to the
    /// counters, saturating).
    pub fn simulate_traffic(
        &self,
        name: &InterfaceName,
        peer: &PublicKey,
        rx: u64,
        tx: u64,
    ) -> Result<()> {
        self.with_peer(name, peer, |p| {
            p.rx_bytes = p.rx_bytes.saturating_add(rx);
            p.tx_bytes = p.tx_bytes.saturating_add(tx);
        })
    }

    /// The peer roamed: its endpoint becomes `endpoint`, as when an authenticated packet
    /// arrives from a new address.
    pub fn simulate_roaming(
        &self,
        name: &InterfaceName,
        peer: &PublicKey,
        endpoint: SocketAddr,
    ) -> Result<()> {
        self.with_peer(name, peer, |p| p.endpoint = Some(endpoint))
    }

    fn with_peer(
        &self,
        name: &InterfaceName,
        peer: &PublicKey,
        f: impl FnOnce(&mut PeerState),
    ) -> Result<()> {
        let mut host = lock(&self.host);
        let device = host.device_mut(name)?;
        let p = device
            .state
            .peers
            .get_mut(peer)
            .ok_or_else(|| Error::not_found("peer", peer))?;
        f(p);
        Ok(())
    }
}

#[async_trait]
impl WireGuardBackend for MemoryWireGuard {
    fn name(&self) -> &'static str {
        NAME
    }

    fn capabilities(&self) -> Capabilities {
        self.caps
    }

    async fn list_devices(&self) -> Result<Vec<InterfaceName>> {
        let mut host = lock(&self.host);
        host.fail_next(Operation::ListDevices)?;
        Ok(host.devices.keys().cloned().collect())
    }

    async fn create_device(&self, name: &InterfaceName) -> Result<()> {
        let mut host = lock(&self.host);
        host.fail_next(Operation::CreateDevice)?;
        if !host.devices.contains_key(name) {
            host.created += 1;
            let device = Device {
                state: DeviceState::default(),
                owners: HashMap::new(),
                instance: host.created,
            };
            host.devices.insert(name.clone(), device);
            host.links.insert(name.clone(), Host::new_link());
        }
        Ok(())
    }

    async fn delete_device(&self, name: &InterfaceName) -> Result<()> {
        let mut host = lock(&self.host);
        host.fail_next(Operation::DeleteDevice)?;
        host.devices.remove(name);
        host.links.remove(name);
        Ok(())
    }

    async fn read_device(&self, name: &InterfaceName) -> Result<Option<DeviceState>> {
        let mut host = lock(&self.host);
        host.fail_next(Operation::ReadDevice)?;
        Ok(host.devices.get(name).map(|d| d.state.clone()))
    }

    /// The number of the device's creation on this host.
    async fn device_instance(&self, name: &InterfaceName) -> Result<Option<u64>> {
        Ok(lock(&self.host).devices.get(name).map(|d| d.instance))
    }

    async fn apply_device(&self, name: &InterfaceName, delta: &DeviceDelta) -> Result<()> {
        delta.validate(&self.caps)?;
        let mut host = lock(&self.host);
        host.fail_next(Operation::ApplyDevice)?;
        if !host.devices.contains_key(name) {
            return Err(Error::not_found("device", name));
        }
        let port_taken = delta.listen_port.is_some_and(|port| {
            port != 0
                && host
                    .devices
                    .iter()
                    .any(|(other, d)| other != name && d.state.listen_port == port)
        });
        if port_taken {
            // The key (if any) lands first, as on a real device; then the port fails.
            if delta.private_key.is_some() {
                let device = host.device_mut(name)?;
                let key_only = DeviceDelta {
                    private_key: delta.private_key.clone(),
                    ..DeviceDelta::default()
                };
                semantics::apply_settings(
                    &mut device.state,
                    &mut Owners::Index(&mut device.owners),
                    &key_only,
                );
            }
            let port = delta.listen_port.unwrap_or_default();
            return Err(Error::conflict(format!(
                "listen port {port} is already in use"
            )));
        }
        let device = host.device_mut(name)?;
        semantics::apply_settings(
            &mut device.state,
            &mut Owners::Index(&mut device.owners),
            delta,
        );
        for (i, peer) in delta.peers.iter().enumerate() {
            match host.peer_fault(i) {
                Some(Fault::VanishAtPeer { .. }) => {
                    host.devices.remove(name);
                    host.links.remove(name);
                    return Err(Error::not_found("device", name));
                }
                Some(_) => {
                    return Err(Error::backend(
                        NAME,
                        InjectedFault(format!("failed at delta.peers[{i}]")),
                    ));
                }
                None => {}
            }
            let device = host.device_mut(name)?;
            semantics::apply_peer(
                &mut device.state,
                &mut Owners::Index(&mut device.owners),
                peer,
            );
        }
        Ok(())
    }
}

/// An in-memory [`NetworkBackend`] with Linux's link rules (see [`LinkDelta`]).
///
/// Get one sharing a host with a [`MemoryWireGuard`] through
/// [`MemoryWireGuard::network`], or a standalone one with [`MemoryNetwork::new`] and
/// [`MemoryNetwork::add_link`].
///
/// ```
/// use wgm_core::backend::{LinkDelta, MemoryWireGuard, NetworkBackend, WireGuardBackend};
/// use wgm_core::names::InterfaceName;
/// # futures::executor::block_on(async {
/// let wg = MemoryWireGuard::new();
/// let net = wg.network();
/// let name = InterfaceName::new("wg0")?;
/// wg.create_device(&name).await?;
/// let delta = LinkDelta {
///     up: Some(true),
///     add_addresses: vec!["fd00::1/64".parse()?],
///     add_routes: vec!["fd00:5::/64".parse()?],
///     ..LinkDelta::default()
/// };
/// net.apply_link(&name, &delta).await?;
/// // Taking the link down drops its IPv6 addresses and its routes, as Linux does.
/// net.apply_link(&name, &LinkDelta { up: Some(false), ..LinkDelta::default() }).await?;
/// let link = net.read_link(&name).await?.unwrap();
/// assert!(link.addresses.is_empty() && link.routes.is_empty());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct MemoryNetwork {
    host: Arc<Mutex<Host>>,
}

impl fmt::Debug for MemoryNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = lock(&self.host);
        f.debug_struct("MemoryNetwork")
            .field("links", &host.links.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Default for MemoryNetwork {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryNetwork {
    /// A host with no links.
    pub fn new() -> Self {
        MemoryNetwork {
            host: Arc::new(Mutex::new(Host::default())),
        }
    }

    /// Add a link (down, MTU [`DEFAULT_MTU`], nothing on it) if there is none of that
    /// name, as if another program had created it.
    pub fn add_link(&self, name: &InterfaceName) {
        lock(&self.host)
            .links
            .entry(name.clone())
            .or_insert_with(Host::new_link);
    }

    /// Remove a link, as `ip link del` does (the device of a shared [`MemoryWireGuard`]
    /// goes with it).
    pub fn remove_link(&self, name: &InterfaceName) {
        let mut host = lock(&self.host);
        host.links.remove(name);
        host.devices.remove(name);
    }

    /// Arm a fault (only [`Fault::FailNext`] of the link operations applies here).
    pub fn inject(&self, fault: Fault) {
        lock(&self.host).faults.push(fault);
    }
}

#[async_trait]
impl NetworkBackend for MemoryNetwork {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn read_link(&self, name: &InterfaceName) -> Result<Option<LinkState>> {
        let mut host = lock(&self.host);
        host.fail_next(Operation::ReadLink)?;
        Ok(host.links.get(name).cloned())
    }

    async fn apply_link(&self, name: &InterfaceName, delta: &LinkDelta) -> Result<()> {
        delta.validate()?;
        let mut host = lock(&self.host);
        host.fail_next(Operation::ApplyLink)?;
        let link = host
            .links
            .get_mut(name)
            .ok_or_else(|| Error::not_found("link", name))?;
        link.apply(delta)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::PeerDelta;
    use crate::keys::PrivateKey;
    use futures::executor::block_on;
    use std::collections::BTreeSet;

    fn name() -> InterfaceName {
        InterfaceName::new("wg0").unwrap()
    }

    #[test]
    fn failure_on_peer_keeps_what_came_before() {
        block_on(async {
            let wg = MemoryWireGuard::new();
            let n = name();
            wg.create_device(&n).await.unwrap();
            let keys: Vec<PublicKey> = (0..4)
                .map(|_| PrivateKey::generate().public_key())
                .collect();
            wg.inject(Fault::FailAtPeer { index: 2 });
            let delta = DeviceDelta {
                listen_port: Some(5000),
                peers: keys.iter().map(|k| PeerDelta::new(*k)).collect(),
                ..DeviceDelta::default()
            };
            let e = wg.apply_device(&n, &delta).await.unwrap_err();
            assert_eq!(e.code(), "backend");
            let s = wg.read_device(&n).await.unwrap().unwrap();
            assert_eq!(s.listen_port, 5000);
            assert_eq!(
                s.peers.keys().copied().collect::<BTreeSet<_>>(),
                keys[..2].iter().copied().collect()
            );
            // The fault fired once; the same delta now goes through.
            wg.apply_device(&n, &delta).await.unwrap();
            assert_eq!(wg.read_device(&n).await.unwrap().unwrap().peers.len(), 4);
        });
    }

    #[test]
    fn vanish_at_peer_removes_the_device() {
        block_on(async {
            let wg = MemoryWireGuard::new();
            let n = name();
            wg.create_device(&n).await.unwrap();
            wg.inject(Fault::VanishAtPeer { index: 0 });
            let delta = DeviceDelta {
                peers: vec![PeerDelta::new(PrivateKey::generate().public_key())],
                ..DeviceDelta::default()
            };
            assert_eq!(
                wg.apply_device(&n, &delta).await.unwrap_err().code(),
                "not_found"
            );
            assert!(wg.read_device(&n).await.unwrap().is_none());
            assert!(wg.network().read_link(&n).await.unwrap().is_none());
        });
    }

    #[test]
    fn fail_next_fires_once() {
        block_on(async {
            let wg = MemoryWireGuard::new();
            let n = name();
            wg.inject(Fault::FailNext(Operation::CreateDevice));
            assert!(wg.create_device(&n).await.is_err());
            assert!(wg.read_device(&n).await.unwrap().is_none());
            wg.create_device(&n).await.unwrap();
            wg.inject(Fault::FailNext(Operation::ReadDevice));
            assert!(wg.read_device(&n).await.is_err());
            assert!(wg.read_device(&n).await.unwrap().is_some());
        });
    }

    #[test]
    fn listen_port_in_use_is_a_conflict_after_the_key_is_set() {
        block_on(async {
            let wg = MemoryWireGuard::new();
            let (a, b) = (name(), InterfaceName::new("wg1").unwrap());
            wg.create_device(&a).await.unwrap();
            wg.create_device(&b).await.unwrap();
            wg.apply_device(
                &a,
                &DeviceDelta {
                    listen_port: Some(51820),
                    ..DeviceDelta::default()
                },
            )
            .await
            .unwrap();
            let key = PrivateKey::generate();
            let delta = DeviceDelta {
                private_key: Some(key.clone()),
                listen_port: Some(51820),
                ..DeviceDelta::default()
            };
            assert_eq!(
                wg.apply_device(&b, &delta).await.unwrap_err().code(),
                "conflict"
            );
            let s = wg.read_device(&b).await.unwrap().unwrap();
            assert_eq!(
                s.public_key,
                Some(key.public_key()),
                "not atomic: the key before the port stays"
            );
            assert_eq!(s.listen_port, 0);
        });
    }

    #[test]
    fn link_rules_follow_linux() {
        block_on(async {
            let net = MemoryNetwork::new();
            let n = name();
            assert_eq!(
                net.apply_link(&n, &LinkDelta::default())
                    .await
                    .unwrap_err()
                    .code(),
                "not_found"
            );
            net.add_link(&n);
            let v4: IpNet = "10.8.0.1/24".parse().unwrap();
            let v6: IpNet = "fd00::1/64".parse().unwrap();
            let route: IpNet = "fd00:5::/64".parse().unwrap();
            // Routes need the link up.
            let early = LinkDelta {
                add_routes: vec![route],
                ..LinkDelta::default()
            };
            assert_eq!(
                net.apply_link(&n, &early).await.unwrap_err().code(),
                "invalid_input"
            );
            let up = LinkDelta {
                up: Some(true),
                add_addresses: vec![v6, v4, v4],
                add_routes: vec![route],
                ..LinkDelta::default()
            };
            net.apply_link(&n, &up).await.unwrap();
            net.apply_link(&n, &up).await.unwrap(); // idempotent
            let l = net.read_link(&n).await.unwrap().unwrap();
            assert_eq!(l.addresses, vec![v4, v6]);
            assert_eq!(l.routes, vec![route]);
            // A small MTU drops IPv6 and refuses new IPv6 addresses.
            net.apply_link(
                &n,
                &LinkDelta {
                    mtu: Some(1200),
                    ..LinkDelta::default()
                },
            )
            .await
            .unwrap();
            let l = net.read_link(&n).await.unwrap().unwrap();
            assert_eq!(
                (l.mtu, l.addresses.clone(), l.routes.clone()),
                (1200, vec![v4], vec![])
            );
            let add6 = LinkDelta {
                add_addresses: vec![v6],
                ..LinkDelta::default()
            };
            assert!(net.apply_link(&n, &add6).await.is_err());
            net.inject(Fault::FailNext(Operation::ReadLink));
            assert!(net.read_link(&n).await.is_err());
            net.remove_link(&n);
            assert!(net.read_link(&n).await.unwrap().is_none());
        });
    }
}
