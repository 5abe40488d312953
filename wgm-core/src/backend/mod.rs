//! The traits that put configuration on a host: [`WireGuardBackend`] (the WireGuard
//! device and its peers) and [`NetworkBackend`] (the link: up/down, MTU, addresses,
//! routes), the state and delta types they speak, and in-memory implementations
//! ([`MemoryWireGuard`], [`MemoryNetwork`]) that behave like the real things.
//!
//! A backend *reads* live state ([`DeviceState`], [`LinkState`]) and *applies* deltas
//! ([`DeviceDelta`], [`LinkDelta`]). Deltas are incremental on purpose: adding one peer to
//! a 10 000-peer device sends one peer, so the tunnels of untouched peers never drop and
//! their counters never reset. [`DeviceDelta::replace_peers`] exists for an explicit full
//! resync only.
//!
//! ## Semantics every implementation keeps (those of the kernel and of UAPI)
//!
//! - **Not atomic.** [`WireGuardBackend::apply_device`] first validates the whole delta
//!   ([`DeviceDelta::validate`]; nothing is applied when that fails), then applies it in
//!   order: private key, listen port, fwmark, `replace_peers`, then peer by peer. A
//!   failure part-way (port in use, the device vanishing, the daemon dying) keeps what came
//!   before. Callers re-read with [`WireGuardBackend::read_device`] to learn where it
//!   stopped.
//! - A peer whose public key equals the device's own public key is **silently ignored**,
//!   and setting a private key **removes** a peer equal to the new public key.
//! - An allowed IP given to a second peer **silently moves** from the first.
//! - Allowed IPs are read back sorted (by [`IpNet`]'s order) and without duplicates;
//!   deltas may only carry allowed IPs without host bits (`10.0.0.0/24`, not `10.0.0.1/24`).
//! - **An `Ok` means all of it landed.** [`DeviceState::apply`] and [`LinkState::apply`]
//!   say, as pure functions, what a device or link holds after a delta its backend
//!   acknowledged; the reconciler relies on this, so the in-memory backends are built on
//!   those functions and the conformance suite checks every backend against the same
//!   rules.
//!
//! ```
//! use std::sync::Arc;
//! use wgm_core::backend::{DeviceDelta, MemoryWireGuard, PeerDelta, WireGuardBackend};
//! use wgm_core::keys::PrivateKey;
//! use wgm_core::names::InterfaceName;
//!
//! # futures::executor::block_on(async {
//! let wg: Arc<dyn WireGuardBackend> = Arc::new(MemoryWireGuard::new());
//! let name = InterfaceName::new("wg0")?;
//! wg.create_device(&name).await?;
//!
//! let peer = PrivateKey::generate().public_key();
//! let delta = DeviceDelta {
//!     private_key: Some(PrivateKey::generate()),
//!     listen_port: Some(51820),
//!     peers: vec![PeerDelta {
//!         allowed_ips: vec!["fd00:1::2/128".parse()?, "10.8.0.2/32".parse()?],
//!         ..PeerDelta::new(peer)
//!     }],
//!     ..DeviceDelta::default()
//! };
//! wg.apply_device(&name, &delta).await?;
//!
//! let state = wg.read_device(&name).await?.expect("the device exists");
//! assert_eq!(state.listen_port, 51820);
//! assert_eq!(state.peers[&peer].allowed_ips.len(), 2);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

pub mod firewall;
mod memory;
mod semantics;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Debug;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use ipnet::IpNet;
use serde::Serialize;

use crate::keys::{PresharedKey, PrivateKey, PublicKey};
use crate::names::InterfaceName;
use crate::{Error, Result};

pub use firewall::{FirewallBackend, MemoryFirewall};
pub use memory::{Fault, MemoryNetwork, MemoryWireGuard, Operation};

/// The MTU a new WireGuard link gets when none is set (that of `ip link add type
/// wireguard` and of wireguard-go).
pub const DEFAULT_MTU: u32 = 1420;

/// The smallest MTU a link may carry IPv6 with (RFC 8200). Below it Linux removes the
/// link's IPv6 addresses and refuses new ones.
pub const IPV6_MIN_MTU: u32 = 1280;

// ---------------------------------------------------------------------------------------
// Capabilities
// ---------------------------------------------------------------------------------------

/// What a [`WireGuardBackend`] can do. Callers (the planner, tests) branch on these, never
/// on the backend's type or name.
///
/// ```
/// use wgm_core::backend::{MemoryWireGuard, WireGuardBackend};
/// let caps = MemoryWireGuard::new().capabilities();
/// assert!(caps.fwmark);
/// assert!(!caps.kernel);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Capabilities {
    /// The device is the Linux kernel's WireGuard (generic netlink), not a userspace
    /// daemon.
    pub kernel: bool,
    /// `fwmark` can be set and read back. When false a delta with a non-zero fwmark is
    /// refused with [`Error::Unsupported`].
    pub fwmark: bool,
    /// [`PeerDelta::remove_allowed_ips`] is supported (removing single allowed IPs
    /// without replacing the list). When false a delta using it is refused with
    /// [`Error::Unsupported`]; use [`PeerDelta::replace_allowed_ips`] instead.
    pub remove_allowed_ip: bool,
    /// The largest set request the backend sends in one message, if it has a limit
    /// (netlink: about 12 KiB per message). Backends with a limit split a delta into
    /// several messages themselves; the value is informative (for benchmarks and
    /// planning), callers never have to chunk.
    pub max_set_bytes: Option<usize>,
}

// ---------------------------------------------------------------------------------------
// Device state
// ---------------------------------------------------------------------------------------

/// The live state of a WireGuard device, as `wg show <iface> dump` reports it.
///
/// Serializes (for status output) without the private key; the preshared keys of the
/// peers serialize as `"(redacted)"`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DeviceState {
    /// The device's private key, if one is set. Never serialized.
    #[serde(skip)]
    pub private_key: Option<PrivateKey>,
    /// The public key of [`DeviceState::private_key`].
    pub public_key: Option<PublicKey>,
    /// The UDP port the device listens on; 0 when it has not bound one yet.
    pub listen_port: u16,
    /// The firewall mark on outgoing packets; 0 for none.
    pub fwmark: u32,
    /// The peers, by public key.
    pub peers: BTreeMap<PublicKey, PeerState>,
}

impl DeviceState {
    /// The peer owning `ip` exactly (same prefix), if any.
    pub fn peer_with_allowed_ip(&self, ip: &IpNet) -> Option<&PeerState> {
        self.peers.values().find(|p| p.allowed_ips.contains(ip))
    }
}

/// The live state of one peer of a [`DeviceState`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PeerState {
    /// The peer's public key.
    pub public_key: PublicKey,
    /// The preshared key, if one is set. Serializes as `"(redacted)"` or `null`.
    #[serde(serialize_with = "redact_option")]
    pub preshared_key: Option<PresharedKey>,
    /// The endpoint: configured, or learnt from the peer's last authenticated packet
    /// (roaming).
    pub endpoint: Option<SocketAddr>,
    /// The allowed IPs, sorted by [`IpNet`]'s order, without duplicates or host bits.
    pub allowed_ips: Vec<IpNet>,
    /// Persistent keepalive interval in seconds; 0 for off.
    pub persistent_keepalive: u16,
    /// When the last handshake completed, if one ever did.
    pub last_handshake: Option<SystemTime>,
    /// Bytes received from the peer.
    pub rx_bytes: u64,
    /// Bytes sent to the peer.
    pub tx_bytes: u64,
    /// The WireGuard protocol version (1; 0 when the backend does not report it).
    pub protocol_version: u32,
}

impl PeerState {
    /// A peer with this key and nothing else set (protocol version 1, no counters).
    pub fn new(public_key: PublicKey) -> Self {
        PeerState {
            public_key,
            preshared_key: None,
            endpoint: None,
            allowed_ips: Vec::new(),
            persistent_keepalive: 0,
            last_handshake: None,
            rx_bytes: 0,
            tx_bytes: 0,
            protocol_version: 1,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Device delta
// ---------------------------------------------------------------------------------------

/// A change to a WireGuard device: what `wg set` (or one UAPI `set=1`, or one
/// `WG_CMD_SET_DEVICE`) expresses. `None` and empty fields leave things as they are.
///
/// Applied in field order: private key, listen port, fwmark, `replace_peers`, then
/// [`DeviceDelta::peers`] in order. Not atomic (see the [module docs](self)).
///
/// Serializes (for plans and logs) with the private key as `"(redacted)"`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DeviceDelta {
    /// Set the private key (`wg set wg0 private-key`). Removes a peer equal to the new
    /// public key.
    #[serde(serialize_with = "redact_option")]
    pub private_key: Option<PrivateKey>,
    /// Set the listen port; `Some(0)` lets the device pick a free port.
    pub listen_port: Option<u16>,
    /// Set the firewall mark; `Some(0)` clears it.
    pub fwmark: Option<u32>,
    /// Remove every peer before applying [`DeviceDelta::peers`]. For an explicit full
    /// resync only: it drops every tunnel and resets every counter.
    pub replace_peers: bool,
    /// Per-peer changes, applied in order.
    pub peers: Vec<PeerDelta>,
}

impl DeviceDelta {
    /// True when applying the delta changes nothing.
    pub fn is_empty(&self) -> bool {
        self.private_key.is_none()
            && self.listen_port.is_none()
            && self.fwmark.is_none()
            && !self.replace_peers
            && self.peers.is_empty()
    }

    /// Check the whole delta before anything is sent, because no backend applies
    /// atomically. Every [`WireGuardBackend::apply_device`] calls this first and applies
    /// nothing when it fails.
    ///
    /// Refused, with [`Error::InvalidInput`] naming the field (`delta.peers[3].endpoint`):
    /// the same peer twice; `remove` together with any other change; an endpoint with
    /// port 0 or an unspecified, multicast or broadcast address; an allowed IP with host
    /// bits set, or given to two peers of the delta, or both added and removed.
    /// Refused with [`Error::Unsupported`]: a non-zero fwmark without
    /// [`Capabilities::fwmark`], [`PeerDelta::remove_allowed_ips`] without
    /// [`Capabilities::remove_allowed_ip`].
    ///
    /// ```
    /// use wgm_core::backend::{Capabilities, DeviceDelta, PeerDelta};
    /// use wgm_core::keys::PrivateKey;
    /// let peer = PrivateKey::generate().public_key();
    /// let delta = DeviceDelta {
    ///     peers: vec![PeerDelta::new(peer), PeerDelta::remove(peer)],
    ///     ..DeviceDelta::default()
    /// };
    /// let err = delta.validate(&Capabilities::default()).unwrap_err();
    /// assert_eq!(err.to_string(), "invalid delta.peers[1].public_key: the same peer appears twice in one delta");
    /// ```
    pub fn validate(&self, caps: &Capabilities) -> Result<()> {
        if let Some(mark) = self.fwmark {
            if mark != 0 && !caps.fwmark {
                return Err(Error::unsupported("fwmark on this backend"));
            }
        }
        let mut seen: HashSet<PublicKey> = HashSet::with_capacity(self.peers.len());
        // Which peer (index) of this delta adds an allowed IP.
        let mut added: HashMap<IpNet, usize> = HashMap::new();
        for (i, peer) in self.peers.iter().enumerate() {
            let field = |name: &str| format!("delta.peers[{i}].{name}");
            if !seen.insert(peer.public_key) {
                return Err(Error::invalid(
                    field("public_key"),
                    "the same peer appears twice in one delta",
                ));
            }
            if peer.remove && peer.has_changes() {
                return Err(Error::invalid(
                    field("remove"),
                    "a removed peer cannot carry other changes",
                ));
            }
            if let Some(endpoint) = peer.endpoint {
                check_endpoint(&endpoint)
                    .map_err(|reason| Error::invalid(field("endpoint"), reason))?;
            }
            if !peer.remove_allowed_ips.is_empty() && !caps.remove_allowed_ip {
                return Err(Error::unsupported(
                    "removing single allowed IPs on this backend (use replace_allowed_ips)",
                ));
            }
            for (j, ip) in peer.allowed_ips.iter().enumerate() {
                if ip.trunc() != *ip {
                    return Err(Error::invalid(
                        field(&format!("allowed_ips[{j}]")),
                        "an allowed IP must not have host bits set",
                    ));
                }
                if let Some(other) = added.insert(*ip, i) {
                    if other != i {
                        return Err(Error::invalid(
                            field(&format!("allowed_ips[{j}]")),
                            format!("{ip} is also given to delta.peers[{other}]"),
                        ));
                    }
                }
            }
            for (j, ip) in peer.remove_allowed_ips.iter().enumerate() {
                if ip.trunc() != *ip {
                    return Err(Error::invalid(
                        field(&format!("remove_allowed_ips[{j}]")),
                        "an allowed IP must not have host bits set",
                    ));
                }
                if peer.allowed_ips.contains(ip) {
                    return Err(Error::invalid(
                        field(&format!("remove_allowed_ips[{j}]")),
                        format!("{ip} is both added and removed"),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Why an endpoint cannot be sent to, or `Ok`.
fn check_endpoint(endpoint: &SocketAddr) -> std::result::Result<(), &'static str> {
    if endpoint.port() == 0 {
        return Err("the port must not be 0");
    }
    match endpoint.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() => {
            Err("the address must be a unicast address")
        }
        IpAddr::V6(ip) if ip.is_unspecified() || ip.is_multicast() => {
            Err("the address must be a unicast address")
        }
        _ => Ok(()),
    }
}

/// A change to one peer, as one `peer` section of `wg set` expresses it.
///
/// A peer that does not exist is created (unless [`PeerDelta::update_only`]); its unset
/// fields start empty. Within a peer the order is: `remove`, `update_only`,
/// `preshared_key`, `endpoint`, `persistent_keepalive`, `replace_allowed_ips`,
/// `remove_allowed_ips`, `allowed_ips`.
///
/// ```
/// use wgm_core::backend::PeerDelta;
/// use wgm_core::keys::PrivateKey;
/// let key = PrivateKey::generate().public_key();
/// let delta = PeerDelta { persistent_keepalive: Some(25), ..PeerDelta::new(key) };
/// assert!(!delta.remove && delta.has_changes());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[allow(clippy::option_option)] // "keep", "clear" and "set" are three different things.
pub struct PeerDelta {
    /// Which peer.
    pub public_key: PublicKey,
    /// Remove the peer (`wg set wg0 peer K remove`). Removing an absent peer is a no-op.
    /// Excludes every other change.
    pub remove: bool,
    /// Change the peer only if it exists; never create it (UAPI `update_only=true`).
    pub update_only: bool,
    /// `Some(Some(k))` sets the preshared key, `Some(None)` clears it, `None` keeps it.
    /// Serializes as `"(redacted)"`, `"(cleared)"` or `null`.
    #[serde(serialize_with = "redact_psk_change")]
    pub preshared_key: Option<Option<PresharedKey>>,
    /// Set the endpoint. (There is no way to clear one: neither the kernel nor UAPI has
    /// one; recreate the peer.)
    pub endpoint: Option<SocketAddr>,
    /// Set the persistent keepalive interval in seconds; `Some(0)` turns it off.
    pub persistent_keepalive: Option<u16>,
    /// Remove all of the peer's allowed IPs before adding [`PeerDelta::allowed_ips`].
    pub replace_allowed_ips: bool,
    /// Remove these allowed IPs from the peer (only with
    /// [`Capabilities::remove_allowed_ip`]). Absent ones are ignored.
    pub remove_allowed_ips: Vec<IpNet>,
    /// Add these allowed IPs (no host bits). One that belongs to another peer moves here.
    pub allowed_ips: Vec<IpNet>,
}

impl PeerDelta {
    /// Create or update the peer `public_key`, changing nothing else yet.
    pub fn new(public_key: PublicKey) -> Self {
        PeerDelta {
            public_key,
            remove: false,
            update_only: false,
            preshared_key: None,
            endpoint: None,
            persistent_keepalive: None,
            replace_allowed_ips: false,
            remove_allowed_ips: Vec::new(),
            allowed_ips: Vec::new(),
        }
    }

    /// Remove the peer `public_key`.
    pub fn remove(public_key: PublicKey) -> Self {
        PeerDelta {
            remove: true,
            ..PeerDelta::new(public_key)
        }
    }

    /// True when the delta changes a field of the peer (anything but `remove`), or
    /// creates it.
    pub fn has_changes(&self) -> bool {
        self.update_only
            || self.preshared_key.is_some()
            || self.endpoint.is_some()
            || self.persistent_keepalive.is_some()
            || self.replace_allowed_ips
            || !self.remove_allowed_ips.is_empty()
            || !self.allowed_ips.is_empty()
    }
}

// ---------------------------------------------------------------------------------------
// Link state
// ---------------------------------------------------------------------------------------

/// The live state of a network link, as `ip addr show dev wg0` and `ip route show dev
/// wg0` report it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct LinkState {
    /// Administratively up (`ip link set wg0 up`).
    pub up: bool,
    /// The MTU.
    pub mtu: u32,
    /// The addresses on the link, each with its prefix length (`10.8.0.1/24`), sorted.
    pub addresses: Vec<IpNet>,
    /// Destinations routed through the link (`ip route add fd00:5::/64 dev wg0`), sorted;
    /// the prefix routes the kernel derives from [`LinkState::addresses`] are not listed.
    pub routes: Vec<IpNet>,
}

/// A change to a network link. `None` and empty fields leave things as they are.
///
/// Idempotent: adding an address or route that is there, or removing one that is not,
/// is a no-op. Applied in the order: MTU, removed addresses, added addresses, up/down,
/// removed routes, added routes. Linux semantics hold (and the in-memory link keeps
/// them): taking a link down drops its IPv6 addresses and all routes through it; an MTU
/// below [`IPV6_MIN_MTU`] drops its IPv6 addresses and routes; routes can only be added
/// through a link that is up.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct LinkDelta {
    /// Set the link up or down.
    pub up: Option<bool>,
    /// Set the MTU (68 to 65535).
    pub mtu: Option<u32>,
    /// Add these addresses (address and prefix length, `fd00::1/64`).
    pub add_addresses: Vec<IpNet>,
    /// Remove these addresses.
    pub remove_addresses: Vec<IpNet>,
    /// Route these destinations through the link (no host bits).
    pub add_routes: Vec<IpNet>,
    /// Stop routing these destinations through the link.
    pub remove_routes: Vec<IpNet>,
}

impl LinkDelta {
    /// True when applying the delta changes nothing.
    pub fn is_empty(&self) -> bool {
        self.up.is_none()
            && self.mtu.is_none()
            && self.add_addresses.is_empty()
            && self.remove_addresses.is_empty()
            && self.add_routes.is_empty()
            && self.remove_routes.is_empty()
    }

    /// Check the whole delta before anything is applied; every
    /// [`NetworkBackend::apply_link`] calls this first.
    ///
    /// Refused with [`Error::InvalidInput`] naming the field: an MTU outside 68–65535;
    /// an address or route both added and removed; a route with host bits; an unspecified
    /// or multicast address; routes added while the delta takes the link down.
    ///
    /// ```
    /// use wgm_core::backend::LinkDelta;
    /// let delta = LinkDelta { mtu: Some(20), ..LinkDelta::default() };
    /// assert!(delta.validate().is_err());
    /// ```
    pub fn validate(&self) -> Result<()> {
        if let Some(mtu) = self.mtu {
            if !(68..=65535).contains(&mtu) {
                return Err(Error::invalid("link.mtu", "must be between 68 and 65535"));
            }
        }
        for (j, a) in self.add_addresses.iter().enumerate() {
            let field = || format!("link.add_addresses[{j}]");
            if a.addr().is_unspecified() || a.addr().is_multicast() {
                return Err(Error::invalid(field(), "must be a unicast address"));
            }
            if self.remove_addresses.contains(a) {
                return Err(Error::invalid(field(), "is both added and removed"));
            }
        }
        for (j, r) in self.add_routes.iter().enumerate() {
            let field = || format!("link.add_routes[{j}]");
            if r.trunc() != *r {
                return Err(Error::invalid(
                    field(),
                    "a route must not have host bits set",
                ));
            }
            if self.remove_routes.contains(r) {
                return Err(Error::invalid(field(), "is both added and removed"));
            }
            if self.up == Some(false) {
                return Err(Error::invalid(
                    field(),
                    "routes cannot be added while taking the link down",
                ));
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Traits
// ---------------------------------------------------------------------------------------

/// A place where WireGuard devices live: the kernel (generic netlink), a userspace daemon
/// (UAPI), or memory. Object-safe: `Arc<dyn WireGuardBackend>` is how callers hold one.
///
/// Every method is safe to call concurrently; calls for different devices do not wait for
/// each other longer than the backend's own locking requires.
#[async_trait]
pub trait WireGuardBackend: Debug + Send + Sync + 'static {
    /// A short name for logs and errors: `kernel`, `userspace`, `memory`.
    fn name(&self) -> &'static str;

    /// What this backend supports. Constant for the life of the backend.
    fn capabilities(&self) -> Capabilities;

    /// The devices this backend can see, sorted by name (`wg show interfaces`).
    async fn list_devices(&self) -> Result<Vec<InterfaceName>>;

    /// Create the device with no key, no port, no peers and its link down
    /// (`ip link add wg0 type wireguard`, or start `wireguard-go wg0`).
    ///
    /// Idempotent: `Ok` when the device exists already, whatever its configuration
    /// (which is left alone).
    async fn create_device(&self, name: &InterfaceName) -> Result<()>;

    /// Delete the device, its peers and its link (`ip link del wg0`, or stop the daemon).
    ///
    /// Idempotent: `Ok` when there is no such device.
    async fn delete_device(&self, name: &InterfaceName) -> Result<()>;

    /// The device's full live state, every peer and every allowed IP included, however
    /// large (`wg show wg0 dump`). `Ok(None)` means there is no such device (never
    /// created, deleted, or its daemon died); an `Err` means the state could not be read.
    async fn read_device(&self, name: &InterfaceName) -> Result<Option<DeviceState>>;

    /// Apply `delta` to the device (`wg set wg0 ...`).
    ///
    /// First validates the whole delta with [`DeviceDelta::validate`] against
    /// [`WireGuardBackend::capabilities`]: on failure nothing is applied. Then applies it
    /// in order, **not atomically**: an error part-way keeps what came before. Fails
    /// with [`Error::NotFound`] (kind `device`) when the device does not exist; a listen
    /// port in use is [`Error::Conflict`].
    async fn apply_device(&self, name: &InterfaceName, delta: &DeviceDelta) -> Result<()>;

    /// A cheap identity of the device's current incarnation: a number that changes
    /// whenever the device is created anew (`ip link del` and add, the daemon restarted),
    /// without reading its peers. `Ok(None)` when there is no device **or** the backend
    /// cannot tell; the reconciler then reads the device in full instead of trusting what
    /// it knew of it (see [`crate::reconcile::Verify`]). The default says `None`.
    async fn device_instance(&self, name: &InterfaceName) -> Result<Option<u64>> {
        let _ = name;
        Ok(None)
    }
}

/// The network side of an interface: link state, addresses, routes (rtnetlink, or
/// memory). Object-safe: `Arc<dyn NetworkBackend>` is how callers hold one.
///
/// Touches only the link it is given and the routes through it.
#[async_trait]
pub trait NetworkBackend: Debug + Send + Sync + 'static {
    /// A short name for logs and errors: `netlink`, `memory`.
    fn name(&self) -> &'static str;

    /// The link's state (`ip addr show dev wg0`, `ip route show dev wg0`). `Ok(None)`
    /// means there is no such link.
    async fn read_link(&self, name: &InterfaceName) -> Result<Option<LinkState>>;

    /// Apply `delta` to the link (`ip link set`, `ip addr add/del`, `ip route
    /// replace/del`). Validates it first with [`LinkDelta::validate`]; idempotent (see
    /// [`LinkDelta`]); not atomic. Fails with [`Error::NotFound`] (kind `link`) when the
    /// link does not exist.
    async fn apply_link(&self, name: &InterfaceName, delta: &LinkDelta) -> Result<()>;
}

#[async_trait]
impl<T: WireGuardBackend + ?Sized> WireGuardBackend for Arc<T> {
    fn name(&self) -> &'static str {
        (**self).name()
    }
    fn capabilities(&self) -> Capabilities {
        (**self).capabilities()
    }
    async fn list_devices(&self) -> Result<Vec<InterfaceName>> {
        (**self).list_devices().await
    }
    async fn create_device(&self, name: &InterfaceName) -> Result<()> {
        (**self).create_device(name).await
    }
    async fn delete_device(&self, name: &InterfaceName) -> Result<()> {
        (**self).delete_device(name).await
    }
    async fn read_device(&self, name: &InterfaceName) -> Result<Option<DeviceState>> {
        (**self).read_device(name).await
    }
    async fn apply_device(&self, name: &InterfaceName, delta: &DeviceDelta) -> Result<()> {
        (**self).apply_device(name, delta).await
    }
    async fn device_instance(&self, name: &InterfaceName) -> Result<Option<u64>> {
        (**self).device_instance(name).await
    }
}

#[async_trait]
impl<T: NetworkBackend + ?Sized> NetworkBackend for Arc<T> {
    fn name(&self) -> &'static str {
        (**self).name()
    }
    async fn read_link(&self, name: &InterfaceName) -> Result<Option<LinkState>> {
        (**self).read_link(name).await
    }
    async fn apply_link(&self, name: &InterfaceName, delta: &LinkDelta) -> Result<()> {
        (**self).apply_link(name, delta).await
    }
}

// ---------------------------------------------------------------------------------------
// Serde helpers for secrets
// ---------------------------------------------------------------------------------------

/// The text a set secret serializes as.
const REDACTED: &str = "(redacted)";

#[allow(clippy::ref_option)] // serde's `serialize_with` passes `&Option<T>`.
fn redact_option<T, S: serde::Serializer>(
    value: &Option<T>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    match value {
        Some(_) => s.serialize_str(REDACTED),
        None => s.serialize_none(),
    }
}

#[allow(clippy::ref_option, clippy::option_option)] // serde passes `&Option<T>`; see `PeerDelta`.
fn redact_psk_change<S: serde::Serializer>(
    value: &Option<Option<PresharedKey>>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    match value {
        Some(Some(_)) => s.serialize_str(REDACTED),
        Some(None) => s.serialize_str("(cleared)"),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> PublicKey {
        PrivateKey::generate().public_key()
    }

    /// `Arc<dyn Trait>` must work: callers choose backends at run time.
    #[test]
    fn traits_are_dyn_compatible() {
        fn takes_wg(_: Arc<dyn WireGuardBackend>) {}
        fn takes_net(_: Arc<dyn NetworkBackend>) {}
        fn is_backend<T: WireGuardBackend>(_: &T) {}
        let wg: Arc<dyn WireGuardBackend> = Arc::new(MemoryWireGuard::new());
        is_backend(&wg); // the forwarding impl for Arc<T>
        takes_wg(Arc::clone(&wg));
        takes_net(Arc::new(MemoryNetwork::new()));
        assert_eq!(wg.name(), "memory");
    }

    #[test]
    fn validate_refuses_remove_with_changes() {
        let k = key();
        let delta = DeviceDelta {
            peers: vec![PeerDelta {
                persistent_keepalive: Some(5),
                ..PeerDelta::remove(k)
            }],
            ..DeviceDelta::default()
        };
        let e = delta.validate(&Capabilities::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid delta.peers[0].remove: a removed peer cannot carry other changes"
        );
    }

    #[test]
    fn validate_refuses_bad_endpoints_and_host_bits() {
        let caps = Capabilities {
            fwmark: true,
            remove_allowed_ip: true,
            ..Capabilities::default()
        };
        for ep in [
            "0.0.0.0:51820",
            "[::]:1",
            "10.0.0.1:0",
            "224.0.0.1:5",
            "[ff02::1]:5",
            "255.255.255.255:1",
        ] {
            let delta = DeviceDelta {
                peers: vec![PeerDelta {
                    endpoint: Some(ep.parse().unwrap()),
                    ..PeerDelta::new(key())
                }],
                ..DeviceDelta::default()
            };
            let e = delta.validate(&caps).unwrap_err();
            assert!(
                e.to_string().starts_with("invalid delta.peers[0].endpoint"),
                "{ep}: {e}"
            );
        }
        let delta = DeviceDelta {
            peers: vec![
                PeerDelta::new(key()),
                PeerDelta {
                    allowed_ips: vec!["10.0.0.1/24".parse().unwrap()],
                    ..PeerDelta::new(key())
                },
            ],
            ..DeviceDelta::default()
        };
        assert_eq!(
            delta.validate(&caps).unwrap_err().to_string(),
            "invalid delta.peers[1].allowed_ips[0]: an allowed IP must not have host bits set"
        );
    }

    #[test]
    fn validate_refuses_an_ip_given_twice_and_checks_capabilities() {
        let ip: IpNet = "fd00::/64".parse().unwrap();
        let delta = DeviceDelta {
            peers: vec![
                PeerDelta {
                    allowed_ips: vec![ip],
                    ..PeerDelta::new(key())
                },
                PeerDelta {
                    allowed_ips: vec![ip],
                    ..PeerDelta::new(key())
                },
            ],
            ..DeviceDelta::default()
        };
        let e = delta.validate(&Capabilities::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid delta.peers[1].allowed_ips[0]: fd00::/64 is also given to delta.peers[0]"
        );

        let mark = DeviceDelta {
            fwmark: Some(7),
            ..DeviceDelta::default()
        };
        assert_eq!(
            mark.validate(&Capabilities::default()).unwrap_err().code(),
            "unsupported"
        );
        let clear = DeviceDelta {
            fwmark: Some(0),
            ..DeviceDelta::default()
        };
        clear.validate(&Capabilities::default()).unwrap();

        let rm = DeviceDelta {
            peers: vec![PeerDelta {
                remove_allowed_ips: vec![ip],
                ..PeerDelta::new(key())
            }],
            ..DeviceDelta::default()
        };
        assert_eq!(
            rm.validate(&Capabilities::default()).unwrap_err().code(),
            "unsupported"
        );
        rm.validate(&Capabilities {
            remove_allowed_ip: true,
            ..Capabilities::default()
        })
        .unwrap();
        let both = DeviceDelta {
            peers: vec![PeerDelta {
                remove_allowed_ips: vec![ip],
                allowed_ips: vec![ip],
                ..PeerDelta::new(key())
            }],
            ..DeviceDelta::default()
        };
        assert!(both
            .validate(&Capabilities {
                remove_allowed_ip: true,
                ..Capabilities::default()
            })
            .is_err());
    }

    #[test]
    fn serialization_redacts_secrets() {
        let private = PrivateKey::generate();
        let psk = crate::keys::PresharedKey::generate();
        let peer = key();
        let delta = DeviceDelta {
            private_key: Some(private.clone()),
            peers: vec![PeerDelta {
                preshared_key: Some(Some(psk.clone())),
                ..PeerDelta::new(peer)
            }],
            ..DeviceDelta::default()
        };
        let json = serde_json::to_string(&delta).unwrap();
        assert!(json.contains("(redacted)"));
        assert!(!json.contains(private.expose_base64().as_str()));
        assert!(!json.contains(private.expose_hex().as_str()));
        assert!(!json.contains(psk.expose_base64().as_str()));
        assert!(!json.contains(psk.expose_hex().as_str()));

        let mut state = DeviceState {
            private_key: Some(private.clone()),
            ..DeviceState::default()
        };
        let mut p = PeerState::new(peer);
        p.preshared_key = Some(psk.clone());
        state.peers.insert(peer, p);
        let json = serde_json::to_string(&state).unwrap();
        assert!(!json.contains(private.expose_base64().as_str()));
        assert!(!json.contains(psk.expose_base64().as_str()));
        assert!(json.contains(&peer.to_base64()));
        let debug = format!("{state:?} {delta:?}");
        assert!(!debug.contains(private.expose_base64().as_str()));
        assert!(!debug.contains(psk.expose_hex().as_str()));
    }

    #[test]
    fn link_delta_validation() {
        let ok = LinkDelta {
            up: Some(true),
            mtu: Some(1420),
            add_addresses: vec!["fd00::1/64".parse().unwrap()],
            add_routes: vec!["fd00:5::/64".parse().unwrap()],
            ..LinkDelta::default()
        };
        ok.validate().unwrap();
        let host_bits = LinkDelta {
            add_routes: vec!["fd00:5::1/64".parse().unwrap()],
            ..LinkDelta::default()
        };
        assert!(host_bits.validate().is_err());
        let down = LinkDelta {
            up: Some(false),
            add_routes: vec!["fd00:5::/64".parse().unwrap()],
            ..LinkDelta::default()
        };
        assert!(down.validate().is_err());
        let both = LinkDelta {
            add_addresses: vec!["10.0.0.1/24".parse().unwrap()],
            remove_addresses: vec!["10.0.0.1/24".parse().unwrap()],
            ..LinkDelta::default()
        };
        assert!(both.validate().is_err());
    }
}
