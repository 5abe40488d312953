//! Status: what the live interface on a [`Host`] holds, peer by peer, next to what the
//! store knows.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::SystemTime;

use ipnet::IpNet;
use serde::Serialize;

use super::{Host, Manager};
use crate::backend::firewall::LivePeer;
use crate::backend::DeviceState;
use crate::keys::PublicKey;
use crate::model::{PeerId, PeerStats, ServerId};
use crate::names::InterfaceName;
use crate::rbac::{Action, Principal, Resource, Target};
use crate::Result;

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
    /// The firewall's counters of the peer, when the host has a firewall backend and
    /// the peer is in it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub firewall: Option<PeerFirewallStatus>,
}

/// A peer's firewall counters, as [`Manager::status`] shows them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PeerFirewallStatus {
    /// Bytes counted by the quota in its current period (`None`: no quota).
    pub quota_used: Option<u64>,
    /// Bytes left of the quota in its current period (`None`: no quota).
    pub quota_remaining: Option<u64>,
    /// The quota's size per period (`None`: no quota).
    pub quota_bytes: Option<u64>,
    /// Bytes the firewall dropped, both directions.
    pub dropped_bytes: u64,
    /// Packets the firewall dropped, both directions.
    pub dropped_packets: u64,
    /// Bytes from the peer through the server.
    pub up_bytes: u64,
    /// Bytes to the peer through the server.
    pub down_bytes: u64,
}

impl PeerFirewallStatus {
    /// The status of a peer as the firewall holds it.
    ///
    /// ```
    /// use wgm_core::backend::firewall::{LivePeer, LiveQuota};
    /// use wgm_core::manager::PeerFirewallStatus;
    /// let mut live = LivePeer::default();
    /// live.quota = Some(LiveQuota { bytes: 100, used: 30, window: 0 });
    /// live.counters.dropped_bytes = 7;
    /// let s = PeerFirewallStatus::of(&live);
    /// assert_eq!((s.quota_used, s.quota_remaining, s.dropped_bytes), (Some(30), Some(70), 7));
    /// ```
    pub fn of(live: &LivePeer) -> PeerFirewallStatus {
        let c = &live.counters;
        let used = live.quota.map(|q| q.used).or(c.quota_used);
        PeerFirewallStatus {
            quota_used: used,
            quota_remaining: live
                .quota
                .map(|q| q.bytes.saturating_sub(used.unwrap_or(q.used))),
            quota_bytes: live.quota.map(|q| q.bytes),
            dropped_bytes: c.dropped_bytes,
            dropped_packets: c.dropped_packets,
            up_bytes: c.up_bytes,
            down_bytes: c.down_bytes,
        }
    }
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

/// What status knows of a managed peer: its id, name, whether it is enabled and the
/// statistics stored last.
struct Known {
    id: PeerId,
    name: String,
    enabled: bool,
    stats: PeerStats,
}

impl Manager {
    /// Live status of the server's interface on `host`: every peer's handshake,
    /// endpoint and transfer counters (needs `server:read`).
    ///
    /// Object-level filtering: a caller who may read every peer of the server (an
    /// operator, auditor or administrator) sees every peer on the device, unmanaged ones
    /// included; anyone else (a `user`) sees only the peers they may read, and nothing of
    /// anyone else's. Reading never writes for a caller who may only read: the observed
    /// statistics of managed peers are stored only when the caller may apply the server
    /// (`server:apply`, the one who runs the device).
    pub async fn status(&self, p: &Principal, server: ServerId, host: &Host) -> Result<Status> {
        let target = Target::server(server.0);
        self.authorize(p, Resource::Server, Action::Read, target)
            .await?;
        let sees_all =
            crate::rbac::authorize_elevated(p, Resource::Peer, Action::Read, target).is_ok();
        let records = crate::rbac::authorize(p, Resource::Server, Action::Apply, target).is_ok();
        // What status needs of the store, from the manager's cache (not a load of every
        // peer): the peers the caller may see.
        let (iface, known) = self
            .read_server(server, |st| {
                let mut known = HashMap::new();
                for x in st.peers.values() {
                    let visible = sees_all
                        || crate::rbac::authorize(
                            p,
                            Resource::Peer,
                            Action::Read,
                            Target::peer(server.0, x.owner.map(|u| u.0)),
                        )
                        .is_ok();
                    if visible {
                        let k = Known {
                            id: x.id,
                            name: x.name.to_string(),
                            enabled: x.enabled,
                            stats: x.stats,
                        };
                        known.insert(x.public_key, k);
                    }
                }
                Ok((st.server.interface.clone(), known))
            })
            .await?;
        let Some(dev) = host.wireguard.read_device(&iface).await? else {
            return Ok(Status {
                interface: iface,
                exists: false,
                listen_port: 0,
                peers: Vec::new(),
                missing: missing(&known, None),
            });
        };
        let (mut peers, stats) = observe(&dev, &known);
        if let Some(fw) = &host.firewall {
            if let Some(live) = fw.read_firewall(&iface).await? {
                for x in &mut peers {
                    x.firewall = live.peers.get(&x.public_key).map(PeerFirewallStatus::of);
                }
            }
        }
        if !sees_all {
            // Only the peers the caller may see: other users' peers (which `observe`
            // could not tell from unmanaged ones) and unmanaged peers are left out.
            peers.retain(|x| x.managed);
        }
        if records && !stats.is_empty() {
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
            missing: missing(&known, Some(&dev)),
        })
    }
}

/// Every peer on the device as status shows it, and the statistics of managed peers
/// that differ from what is stored (only those are written back).
fn observe(
    dev: &DeviceState,
    known: &HashMap<PublicKey, Known>,
) -> (Vec<PeerStatus>, Vec<(PeerId, PeerStats)>) {
    let mut peers = Vec::with_capacity(dev.peers.len());
    let mut stats = Vec::new();
    for (k, lp) in &dev.peers {
        let entry = known.get(k);
        if let Some(kn) = entry {
            let last_seen = lp.last_handshake.and_then(unix_secs).and_then(|s| {
                time::OffsetDateTime::from_unix_timestamp(i64::try_from(s).unwrap_or(i64::MAX)).ok()
            });
            let observed = PeerStats {
                last_seen,
                rx_bytes: lp.rx_bytes,
                tx_bytes: lp.tx_bytes,
            };
            if observed != kn.stats {
                stats.push((kn.id, observed));
            }
        }
        peers.push(PeerStatus {
            name: entry.map(|kn| kn.name.clone()),
            public_key: *k,
            managed: entry.is_some(),
            endpoint: lp.endpoint,
            last_handshake: lp.last_handshake.and_then(unix_secs),
            rx_bytes: lp.rx_bytes,
            tx_bytes: lp.tx_bytes,
            allowed_ips: lp.allowed_ips.clone(),
            firewall: None,
        });
    }
    (peers, stats)
}

/// Names of enabled peers that are not on the device (`None`: there is no device),
/// sorted.
fn missing(known: &HashMap<PublicKey, Known>, dev: Option<&DeviceState>) -> Vec<String> {
    let mut missing: Vec<String> = known
        .iter()
        .filter(|(k, kn)| kn.enabled && dev.is_none_or(|d| !d.peers.contains_key(*k)))
        .map(|(_, kn)| kn.name.clone())
        .collect();
    missing.sort_unstable();
    missing
}
