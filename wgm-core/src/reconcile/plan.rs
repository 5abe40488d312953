//! The pure plan: from a [`DesiredHost`] and what the backends read back to the exact
//! device and link deltas, with a list of [`PlanItem`]s for humans and JSON.

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;

use ipnet::IpNet;
use serde::{Serialize, Serializer};

use crate::backend::{DeviceDelta, DeviceState, LinkDelta, LinkState, PeerDelta};
use crate::keys::PublicKey;
use crate::model::RevisionNo;
use crate::names::InterfaceName;

use super::desired::DesiredHost;

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

/// Options of [`plan`].
///
/// The default plans for a host that reports unmanaged peers, cannot remove a single
/// allowed IP (a peer that loses one gets its list replaced) and is not being resynced.
///
/// ```
/// use wgm_core::reconcile::{DriftPolicy, PlanOptions};
///
/// let opts = PlanOptions { drift: DriftPolicy::Remove, ..PlanOptions::default() };
/// assert!(!opts.full_resync);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlanOptions {
    /// What to do with peers on the device that the store never knew.
    pub drift: DriftPolicy,
    /// Whether the backend can remove single allowed IPs of a peer
    /// ([`crate::backend::Capabilities::remove_allowed_ip`]); otherwise a peer that loses
    /// one gets its whole list replaced.
    pub remove_allowed_ip: bool,
    /// Set the key and port and replace every peer (`replace_peers`): resets tunnels;
    /// for explicit resyncs only.
    pub full_resync: bool,
}

/// One change of a peer that is on the device already ([`PlanItem::UpdatePeer`]).
///
/// Shown (and serialized, as a string) as `preshared key`, `endpoint LIVE -> DESIRED`,
/// `keepalive LIVE -> DESIRED`, `+allowed NET` or `-allowed NET`; a PSK is never shown.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeerChange {
    /// Set the preshared key (added, changed or removed; never shown).
    PresharedKey,
    /// Set the fixed endpoint.
    Endpoint {
        /// The live endpoint (`None`: none).
        from: Option<SocketAddr>,
        /// The desired endpoint.
        to: SocketAddr,
    },
    /// Set the persistent keepalive (seconds, 0 = off).
    Keepalive {
        /// Live value.
        from: u16,
        /// Desired value.
        to: u16,
    },
    /// Add an allowed IP.
    AddAllowedIp(IpNet),
    /// Remove an allowed IP.
    RemoveAllowedIp(IpNet),
}

impl fmt::Display for PeerChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerChange::PresharedKey => f.write_str("preshared key"),
            PeerChange::Endpoint {
                from: Some(from),
                to,
            } => write!(f, "endpoint {from} -> {to}"),
            PeerChange::Endpoint { from: None, to } => write!(f, "endpoint none -> {to}"),
            PeerChange::Keepalive { from, to } => write!(f, "keepalive {from} -> {to}"),
            PeerChange::AddAllowedIp(n) => write!(f, "+allowed {n}"),
            PeerChange::RemoveAllowedIp(n) => write!(f, "-allowed {n}"),
        }
    }
}

/// As its text: the JSON of a plan shows changes the way the CLI does.
impl Serialize for PeerChange {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
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
        /// What changes, in order (PSKs never shown).
        changes: Vec<PeerChange>,
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
                write!(f, "~ peer {name} ({public_key}): ")?;
                for (i, c) in changes.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{c}")?;
                }
                Ok(())
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
/// when the device/link does not exist.
///
/// Incremental: a peer that is already right is in no delta and no item. Removals come
/// before additions, so that an allowed IP moving from a removed peer to a new one is
/// not taken back.
///
/// ```
/// use std::collections::{BTreeMap, HashSet};
/// use std::sync::Arc;
/// use wgm_core::keys::PrivateKey;
/// use wgm_core::model::{RevisionNo, ServerId};
/// use wgm_core::names::InterfaceName;
/// use wgm_core::reconcile::{plan, DesiredHost, PlanItem, PlanOptions};
///
/// let key = PrivateKey::generate();
/// let desired = DesiredHost {
///     server_id: ServerId(uuid::Uuid::nil()),
///     revision: RevisionNo(1),
///     interface: InterfaceName::new("wg0").unwrap(),
///     active: true,
///     public_key: key.public_key(),
///     private_key: key,
///     listen_port: 51820,
///     fwmark: 0,
///     peers: Arc::new(BTreeMap::new()),
///     known_keys: Arc::new(HashSet::new()),
///     known_names: Arc::new(BTreeMap::new()),
///     removed: BTreeMap::new(),
///     mtu: 1420,
///     addresses: vec!["fd00::1/64".parse().unwrap()],
///     routes: Vec::new(),
///     unresolved_endpoints: Vec::new(),
/// };
/// // Nothing exists yet: create the device, set its key and port, bring up the link.
/// let p = plan(&desired, None, None, PlanOptions::default());
/// assert!(p.create_device);
/// assert_eq!(p.items[0], PlanItem::CreateDevice);
/// assert!(p.items.contains(&PlanItem::SetUp));
/// ```
pub fn plan(
    desired: &DesiredHost,
    live_device: Option<&DeviceState>,
    live_link: Option<&LinkState>,
    opts: PlanOptions,
) -> Plan {
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
        out.create_device = true;
        out.items.push(PlanItem::CreateDevice);
        &empty
    };
    plan_settings(desired, live, opts, &mut out);
    plan_removals(desired, live, opts, &mut out);
    for (key, dp) in desired.peers.iter() {
        match live.peers.get(key).filter(|_| !opts.full_resync) {
            None => {
                let mut d = PeerDelta::new(*key);
                d.preshared_key = Some(dp.preshared_key.clone());
                d.endpoint = dp.endpoint;
                d.persistent_keepalive = Some(dp.keepalive);
                d.replace_allowed_ips = true;
                d.allowed_ips.clone_from(&dp.allowed_ips);
                out.device.peers.push(d);
                out.items.push(PlanItem::AddPeer {
                    name: dp.name.to_string(),
                    public_key: *key,
                });
            }
            Some(lp) => {
                let (d, changes) = peer_update(dp, lp, opts.remove_allowed_ip);
                if !changes.is_empty() {
                    out.device.peers.push(d);
                    out.items.push(PlanItem::UpdatePeer {
                        name: dp.name.to_string(),
                        public_key: *key,
                        changes,
                    });
                }
            }
        }
    }
    plan_link(desired, live_link, &mut out);
    for n in &desired.unresolved_endpoints {
        out.items.push(PlanItem::UnresolvedEndpoint {
            name: n.to_string(),
        });
    }
    out
}

/// The device's own settings: key, listen port, firewall mark, and `replace_peers` on
/// a full resync.
fn plan_settings(desired: &DesiredHost, live: &DeviceState, opts: PlanOptions, out: &mut Plan) {
    if live.public_key != Some(desired.public_key) || opts.full_resync {
        out.device.private_key = Some(desired.private_key.clone());
        out.items.push(PlanItem::SetKey {
            public_key: desired.public_key,
        });
    }
    if live.listen_port != desired.listen_port || opts.full_resync {
        out.device.listen_port = Some(desired.listen_port);
        out.items.push(PlanItem::SetListenPort {
            from: live.listen_port,
            to: desired.listen_port,
        });
    }
    if live.fwmark != desired.fwmark {
        out.device.fwmark = Some(desired.fwmark);
        out.items.push(PlanItem::SetFwmark {
            from: live.fwmark,
            to: desired.fwmark,
        });
    }
    if opts.full_resync {
        out.device.replace_peers = true;
    }
}

/// Live peers that are not desired: removed when wgm knew them, otherwise unmanaged
/// (removed or reported by the drift policy). Nothing on a full resync, which replaces
/// every peer.
fn plan_removals(desired: &DesiredHost, live: &DeviceState, opts: PlanOptions, out: &mut Plan) {
    for (key, lp) in &live.peers {
        if desired.peers.contains_key(key) || opts.full_resync {
            continue;
        }
        if desired.known_keys.contains(key) || desired.removed.contains_key(key) {
            out.device.peers.push(PeerDelta::remove(*key));
            out.items.push(PlanItem::RemovePeer {
                name: desired
                    .known_names
                    .get(key)
                    .or_else(|| desired.removed.get(key))
                    .map(ToString::to_string),
                public_key: *key,
            });
        } else {
            let remove = opts.drift == DriftPolicy::Remove;
            if remove {
                out.device.peers.push(PeerDelta::remove(*key));
            }
            out.items.push(PlanItem::Unmanaged {
                public_key: lp.public_key,
                remove,
            });
        }
    }
}

/// The update-only delta that brings live peer `lp` to `dp`, and what it changes (empty:
/// the peer is right).
fn peer_update(
    dp: &super::DesiredPeer,
    lp: &crate::backend::PeerState,
    remove_allowed_ip: bool,
) -> (PeerDelta, Vec<PeerChange>) {
    let mut d = PeerDelta::new(dp.public_key);
    d.update_only = true;
    let mut changes = Vec::new();
    if lp.preshared_key != dp.preshared_key {
        d.preshared_key = Some(dp.preshared_key.clone());
        changes.push(PeerChange::PresharedKey);
    }
    if let Some(ep) = dp.endpoint {
        if lp.endpoint != Some(ep) {
            d.endpoint = Some(ep);
            changes.push(PeerChange::Endpoint {
                from: lp.endpoint,
                to: ep,
            });
        }
    }
    if lp.persistent_keepalive != dp.keepalive {
        d.persistent_keepalive = Some(dp.keepalive);
        changes.push(PeerChange::Keepalive {
            from: lp.persistent_keepalive,
            to: dp.keepalive,
        });
    }
    let live_ips = sorted(&lp.allowed_ips);
    if live_ips != dp.allowed_ips {
        let want: BTreeSet<&IpNet> = dp.allowed_ips.iter().collect();
        let have: BTreeSet<&IpNet> = live_ips.iter().collect();
        let add: Vec<IpNet> = want.difference(&have).map(|n| **n).collect();
        let del: Vec<IpNet> = have.difference(&want).map(|n| **n).collect();
        changes.extend(add.iter().copied().map(PeerChange::AddAllowedIp));
        changes.extend(del.iter().copied().map(PeerChange::RemoveAllowedIp));
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
    (d, changes)
}

/// The link: MTU, addresses, up, routes (`live_link` is `None` when there is none).
fn plan_link(desired: &DesiredHost, live_link: Option<&LinkState>, out: &mut Plan) {
    let (live_mtu, live_up, live_addrs, live_routes) = match live_link {
        Some(l) => (l.mtu, l.up, sorted(&l.addresses), sorted(&l.routes)),
        None => (0, false, Vec::new(), Vec::new()),
    };
    let (link, items) = (&mut out.link, &mut out.items);
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::PrivateKey;

    /// Changes are typed inside and strings at the edges: the CLI's text and the JSON
    /// of a plan show them as they always did.
    #[test]
    fn peer_changes_show_and_serialize_as_their_text() {
        let public_key = PrivateKey::generate().public_key();
        let item = PlanItem::UpdatePeer {
            name: "a".into(),
            public_key,
            changes: vec![
                PeerChange::PresharedKey,
                PeerChange::Endpoint {
                    from: None,
                    to: "[2001:db8::1]:51820".parse().unwrap(),
                },
                PeerChange::Endpoint {
                    from: Some("192.0.2.1:1".parse().unwrap()),
                    to: "192.0.2.1:2".parse().unwrap(),
                },
                PeerChange::Keepalive { from: 0, to: 25 },
                PeerChange::AddAllowedIp("fd00::2/128".parse().unwrap()),
                PeerChange::RemoveAllowedIp("10.0.0.0/24".parse().unwrap()),
            ],
        };
        let text = [
            "preshared key",
            "endpoint none -> [2001:db8::1]:51820",
            "endpoint 192.0.2.1:1 -> 192.0.2.1:2",
            "keepalive 0 -> 25",
            "+allowed fd00::2/128",
            "-allowed 10.0.0.0/24",
        ];
        assert_eq!(
            item.to_string(),
            format!("~ peer a ({public_key}): {}", text.join(", "))
        );
        assert_eq!(
            serde_json::to_value(&item).unwrap(),
            serde_json::json!({
                "op": "update_peer",
                "name": "a",
                "public_key": public_key.to_base64(),
                "changes": text,
            })
        );
    }
}
