//! What the manager returns: servers and peers without their sealed secrets.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::ipam::Strategy;
use crate::keys::PublicKey;
use crate::model::{
    ClientTemplate, Delegation, Peer, PeerId, PeerStats, RevisionNo, Server, ServerId, ServerState,
    UserId,
};
use crate::names::{Description, HostName, InterfaceName, PeerName, ServerName};
use crate::net::{DnsEntry, Endpoint, FwMark, Keepalive, ListenPort, Mtu};

/// A server as callers see it: every field except the sealed private key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServerView {
    /// Identifier.
    pub id: ServerId,
    /// Name.
    pub name: ServerName,
    /// Interface name.
    pub interface: InterfaceName,
    /// Listen port.
    pub listen_port: ListenPort,
    /// Public key.
    pub public_key: PublicKey,
    /// IPv6 pool.
    pub ipv6_pool: Ipv6Net,
    /// IPv4 pool.
    pub ipv4_pool: Option<Ipv4Net>,
    /// The server's IPv6 address.
    pub address_v6: Ipv6Addr,
    /// The server's IPv4 address.
    pub address_v4: Option<Ipv4Addr>,
    /// Prefix delegation.
    pub delegation: Option<Delegation>,
    /// Allocation strategy.
    pub strategy: Strategy,
    /// Quarantine of released addresses, seconds.
    pub quarantine_secs: u64,
    /// DNS for clients.
    pub dns: Vec<DnsEntry>,
    /// MTU.
    pub mtu: Mtu,
    /// Firewall mark.
    pub fwmark: Option<FwMark>,
    /// Endpoint advertised to clients.
    pub endpoint: Option<Endpoint>,
    /// Client template.
    pub client_template: ClientTemplate,
    /// wg-quick file path, informational.
    pub config_path: Option<String>,
    /// Whether the interface should be up.
    pub active: bool,
    /// The host that runs it (whose agent applies it), if assigned.
    pub host: Option<HostName>,
    /// The firewall policy.
    #[serde(default)]
    pub policy: crate::policy::ServerPolicy,
    /// Number of peers.
    pub peer_count: usize,
    /// Head revision.
    pub revision: RevisionNo,
    /// Creation time.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Update time.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl ServerView {
    /// The view of a server state.
    pub fn of(state: &ServerState) -> ServerView {
        ServerView::of_settings(&state.server, state.revision, state.peers.len() as u64)
    }

    /// The view of a server's settings at `revision`, when it has `peer_count` peers.
    pub fn of_settings(s: &Server, revision: RevisionNo, peer_count: u64) -> ServerView {
        ServerView {
            id: s.id,
            name: s.name.clone(),
            interface: s.interface.clone(),
            listen_port: s.listen_port,
            public_key: s.public_key,
            ipv6_pool: s.ipv6_pool,
            ipv4_pool: s.ipv4_pool,
            address_v6: s.address_v6,
            address_v4: s.address_v4,
            delegation: s.delegation,
            strategy: s.strategy,
            quarantine_secs: s.quarantine_secs,
            dns: s.dns.clone(),
            mtu: s.mtu,
            fwmark: s.fwmark,
            endpoint: s.endpoint.clone(),
            client_template: s.client_template.clone(),
            config_path: s.config_path.clone(),
            active: s.active,
            host: s.host.clone(),
            policy: s.policy.clone(),
            peer_count: usize::try_from(peer_count).unwrap_or(usize::MAX),
            revision,
            created_at: s.created_at,
            updated_at: s.updated_at,
        }
    }
}

/// A peer as callers see it: no sealed secrets, only whether they exist.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeerView {
    /// Identifier.
    pub id: PeerId,
    /// Server.
    pub server_id: ServerId,
    /// Name.
    pub name: PeerName,
    /// Description.
    pub description: Option<Description>,
    /// Owner.
    pub owner: Option<UserId>,
    /// Public key.
    pub public_key: PublicKey,
    /// Whether wgm holds the peer's private key (generated server-side).
    pub has_private_key: bool,
    /// Whether the peer has a preshared key.
    pub has_preshared_key: bool,
    /// IPv6 tunnel address.
    pub address_v6: Option<Ipv6Addr>,
    /// IPv4 tunnel address.
    pub address_v4: Option<Ipv4Addr>,
    /// Delegated prefix.
    pub delegated_prefix: Option<Ipv6Net>,
    /// Extra routed networks.
    pub extra_allowed_ips: Vec<IpNet>,
    /// All server-side allowed IPs.
    pub allowed_ips: Vec<IpNet>,
    /// Client-side allowed IPs override.
    pub client_allowed_ips: Option<Vec<IpNet>>,
    /// Fixed endpoint.
    pub endpoint: Option<Endpoint>,
    /// Keepalive.
    pub keepalive: Keepalive,
    /// Enabled.
    pub enabled: bool,
    /// Who disabled it, while it is disabled (see [`crate::model::Peer::disabled_by`]).
    #[serde(default)]
    pub disabled_by: Option<crate::model::DisabledBy>,
    /// Expiry.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// The firewall policy.
    #[serde(default)]
    pub policy: crate::policy::PeerPolicy,
    /// Observed statistics.
    pub stats: PeerStats,
    /// Creation time.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Update time.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl PeerView {
    /// The view of a peer.
    pub fn of(p: &Peer) -> PeerView {
        PeerView {
            id: p.id,
            server_id: p.server_id,
            name: p.name.clone(),
            description: p.description.clone(),
            owner: p.owner,
            public_key: p.public_key,
            has_private_key: p.private_key.is_some(),
            has_preshared_key: p.preshared_key.is_some(),
            address_v6: p.address_v6,
            address_v4: p.address_v4,
            delegated_prefix: p.delegated_prefix,
            extra_allowed_ips: p.extra_allowed_ips.clone(),
            allowed_ips: p.allowed_ips(),
            client_allowed_ips: p.client_allowed_ips.clone(),
            endpoint: p.endpoint.clone(),
            keepalive: p.keepalive,
            enabled: p.enabled,
            disabled_by: p.disabled_by,
            expires_at: p.expires_at,
            policy: p.policy.clone(),
            stats: p.stats,
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}
