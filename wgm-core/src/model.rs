//! The domain model: servers (WireGuard interfaces), peers, users, API tokens, revisions
//! and audit records.
//!
//! Everything here is *desired state* as the store keeps it. Secrets appear only as
//! [`SealedSecret`]s (ciphertext bound to the record's identity); the `Manager` opens
//! them when it must (applying a device, an audited export) and nowhere else.
//!
//! Observed state (handshakes, transfer counters, last seen) is carried in
//! [`PeerStats`] beside a peer; it is never part of a revision or a diff.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

pub use crate::audit::AuditAction;
use crate::ipam::Strategy;
use crate::keys::PublicKey;
use crate::names::{
    Description, HostName, InterfaceName, PeerName, RoleName, ServerName, UserName,
};
use crate::net::{DnsEntry, Endpoint, FwMark, Keepalive, ListenPort, Mtu};
use crate::policy::{PeerPolicy, ServerPolicy};
use crate::rbac::{Permission, Role, Scope};
use crate::seal::SealedSecret;
use crate::{Error, Result};

/// Whether `t` is its type's default (so that a field added later is left out of the
/// JSON of records that do not use it).
fn is_default<T: Default + PartialEq>(t: &T) -> bool {
    *t == T::default()
}

macro_rules! id_type {
    ($(#[$meta:meta])* $name:ident, $kind:literal) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A fresh random (v4) identifier.
            pub fn new_random() -> Self {
                Self(Uuid::new_v4())
            }

            /// The underlying UUID.
            pub fn as_uuid(&self) -> &Uuid {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($kind, "({})"), self.0)
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> {
                Uuid::parse_str(s)
                    .map(Self)
                    .map_err(|_| Error::invalid(concat!($kind, ".id"), "must be a UUID"))
            }
        }

        impl From<Uuid> for $name {
            fn from(u: Uuid) -> Self {
                Self(u)
            }
        }
    };
}

id_type!(
    /// Identifies a server (one WireGuard interface on one host).
    ServerId,
    "server"
);
id_type!(
    /// Identifies a peer of a server.
    PeerId,
    "peer"
);
id_type!(
    /// Identifies a user.
    UserId,
    "user"
);
pub use crate::auth::token::TokenId;

/// A revision number of one server's configuration. Revision 0 means "does not exist
/// yet"; the creation of a server is revision 1; every mutation adds exactly one.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct RevisionNo(pub u64);

impl RevisionNo {
    /// The revision before any exists.
    pub const NONE: RevisionNo = RevisionNo(0);

    /// The next revision number.
    ///
    /// ```
    /// use wgm_core::model::RevisionNo;
    /// assert_eq!(RevisionNo(4).next(), RevisionNo(5));
    /// ```
    #[must_use]
    pub fn next(self) -> RevisionNo {
        RevisionNo(self.0.saturating_add(1))
    }
}

impl fmt::Display for RevisionNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What a client config routes through the tunnel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TunnelMode {
    /// Everything (`0.0.0.0/0, ::/0`): the server is the client's default gateway.
    #[default]
    Full,
    /// Only the server's prefixes (and the template's extra networks).
    Split,
}

/// Defaults applied to every client config a server renders.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientTemplate {
    /// Full or split tunnel.
    pub tunnel: TunnelMode,
    /// Extra networks a split-tunnel client routes through the server.
    #[serde(default)]
    pub extra_allowed_ips: Vec<IpNet>,
    /// `PersistentKeepalive` for clients (default 25 s).
    pub keepalive: Keepalive,
    /// DNS servers for clients; `None` uses the server's DNS list.
    #[serde(default)]
    pub dns: Option<Vec<DnsEntry>>,
    /// MTU for clients; `None` uses the server's MTU.
    #[serde(default)]
    pub mtu: Option<Mtu>,
}

impl Default for ClientTemplate {
    fn default() -> Self {
        ClientTemplate {
            tunnel: TunnelMode::Full,
            extra_allowed_ips: Vec::new(),
            keepalive: Keepalive::default(),
            dns: None,
            mtu: None,
        }
    }
}

/// Prefix delegation: each peer may get a routed prefix of `prefix_len` out of `pool`
/// (for example a /64 out of a /48 for a site behind the peer).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delegation {
    /// The parent prefix delegated prefixes come from.
    pub pool: Ipv6Net,
    /// The length of each delegated prefix.
    pub prefix_len: u8,
}

/// An address held back from allocation until a deadline, after its peer was removed,
/// so that a stale client cannot receive another peer's traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quarantined {
    /// The address.
    pub addr: IpAddr,
    /// When it becomes allocatable again.
    #[serde(with = "time::serde::rfc3339")]
    pub until: OffsetDateTime,
}

/// A WireGuard server: one interface on one host, with its pools and defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Server {
    /// Identifier.
    pub id: ServerId,
    /// Unique (case-insensitive) human name.
    pub name: ServerName,
    /// Interface name on the host (`wg0`).
    pub interface: InterfaceName,
    /// UDP listen port.
    pub listen_port: ListenPort,
    /// The interface private key, sealed with the master key (AD = server id).
    pub private_key: SealedSecret,
    /// The interface public key.
    pub public_key: PublicKey,
    /// IPv6 pool (always present; a random RFC 4193 /64 when none is given).
    pub ipv6_pool: Ipv6Net,
    /// Optional IPv4 pool.
    pub ipv4_pool: Option<Ipv4Net>,
    /// The server's own IPv6 address in its pool.
    pub address_v6: Ipv6Addr,
    /// The server's own IPv4 address, when there is an IPv4 pool.
    pub address_v4: Option<Ipv4Addr>,
    /// Optional prefix delegation for routed sites.
    pub delegation: Option<Delegation>,
    /// Allocation strategy for peer addresses.
    pub strategy: Strategy,
    /// How long a released address stays quarantined, in seconds.
    pub quarantine_secs: u64,
    /// Addresses that are never handed out (besides the built-in exclusions).
    #[serde(default)]
    pub reserved: Vec<IpAddr>,
    /// Addresses quarantined after removal, with their deadlines.
    #[serde(default)]
    pub quarantine: Vec<Quarantined>,
    /// DNS servers advertised to clients.
    #[serde(default)]
    pub dns: Vec<DnsEntry>,
    /// Interface MTU (default 1420; at least 1280 because IPv6 is always on).
    pub mtu: Mtu,
    /// Firewall mark for the interface's packets.
    pub fwmark: Option<FwMark>,
    /// Endpoint advertised to clients (`vpn.example.com:51820`, `[2001:db8::1]:51820`).
    pub endpoint: Option<Endpoint>,
    /// Defaults for rendered client configs.
    pub client_template: ClientTemplate,
    /// Where the host's wg-quick file lives, when the operator keeps one
    /// (informational; wgm applies through the backends, not through this file).
    pub config_path: Option<String>,
    /// Whether the interface should exist and be up on its host.
    pub active: bool,
    /// The host that runs this server's interface (whose agent applies it), if it is
    /// assigned to one. Revisioned like every other setting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<HostName>,
    /// The server's firewall policy (forwarding, masquerading, peer-to-peer traffic,
    /// default verdict). Revisioned; a stored server without one reads back as
    /// [`ServerPolicy::default`], and the default is not written, so records made before
    /// policies existed serialize as they did.
    #[serde(default, skip_serializing_if = "is_default")]
    pub policy: ServerPolicy,
    /// Creation time.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Last update time.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl Server {
    /// The server's own addresses with their pool prefix lengths, IPv6 first, as the
    /// interface carries them (`fd00:…::1/64`, `10.8.0.1/24`).
    pub fn interface_addresses(&self) -> Vec<IpNet> {
        let mut out = Vec::with_capacity(2);
        if let Ok(n) = Ipv6Net::new(self.address_v6, self.ipv6_pool.prefix_len()) {
            out.push(IpNet::V6(n));
        }
        if let (Some(a), Some(p)) = (self.address_v4, self.ipv4_pool) {
            if let Ok(n) = Ipv4Net::new(a, p.prefix_len()) {
                out.push(IpNet::V4(n));
            }
        }
        out
    }

    /// The networks a split-tunnel client routes through this server: its pools and the
    /// template's extra networks.
    pub fn split_tunnel_networks(&self) -> Vec<IpNet> {
        let mut out = vec![IpNet::V6(self.ipv6_pool)];
        if let Some(p) = self.ipv4_pool {
            out.push(IpNet::V4(p));
        }
        out.extend(self.client_template.extra_allowed_ips.iter().copied());
        out
    }
}

/// Observed statistics of a peer, updated from live status reads. Never part of a
/// revision or a diff.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStats {
    /// Last handshake seen.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_seen: Option<OffsetDateTime>,
    /// Bytes received from the peer, as the device last counted them (a recreated
    /// device or peer counts from zero again).
    pub rx_bytes: u64,
    /// Bytes sent to the peer, as the device last counted them.
    pub tx_bytes: u64,
}

/// Who disabled a peer (see [`Peer::disabled_by`]).
///
/// ```
/// use wgm_core::model::DisabledBy;
/// assert!(DisabledBy::Administrator.outranks_owner());
/// assert!(!DisabledBy::Owner.outranks_owner());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DisabledBy {
    /// The owner, acting on their own peer: the owner may enable it again.
    Owner,
    /// Someone who may change other users' peers (an operator or administrator).
    Administrator,
    /// The expiry sweep: the peer's expiry had passed.
    Expiry,
}

impl DisabledBy {
    /// Whether only someone with more rights than the owner may lift this disable.
    pub fn outranks_owner(self) -> bool {
        !matches!(self, DisabledBy::Owner)
    }
}

/// A peer (client) of a server.
///
/// The QR code of the original model is not stored: it is rendered on demand from the
/// client config (`wgquick::qr_*`), so it can never go stale.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Peer {
    /// Identifier.
    pub id: PeerId,
    /// The server this peer belongs to.
    pub server_id: ServerId,
    /// Unique (per server, case-insensitive) name.
    pub name: PeerName,
    /// Free text; never rendered into a config file.
    pub description: Option<Description>,
    /// The user who owns the peer (self-service users see only their own).
    pub owner: Option<UserId>,
    /// The peer's public key.
    pub public_key: PublicKey,
    /// The peer's private key, sealed, only when it was generated server-side.
    /// `None` for "bring your own public key" peers.
    pub private_key: Option<SealedSecret>,
    /// Optional preshared key, sealed.
    pub preshared_key: Option<SealedSecret>,
    /// The peer's IPv6 tunnel address.
    pub address_v6: Option<Ipv6Addr>,
    /// The peer's IPv4 tunnel address.
    pub address_v4: Option<Ipv4Addr>,
    /// A routed IPv6 prefix delegated to the peer.
    pub delegated_prefix: Option<Ipv6Net>,
    /// Further networks routed to the peer (server-side `AllowedIPs`).
    #[serde(default)]
    pub extra_allowed_ips: Vec<IpNet>,
    /// Overrides the server template's client-side `AllowedIPs` for this peer.
    #[serde(default)]
    pub client_allowed_ips: Option<Vec<IpNet>>,
    /// A fixed endpoint for the peer (site-to-site); `None` lets it roam.
    pub endpoint: Option<Endpoint>,
    /// `PersistentKeepalive` (default 25).
    pub keepalive: Keepalive,
    /// Disabled peers are removed from the device but keep their addresses.
    pub enabled: bool,
    /// Who disabled the peer, while it is disabled: a disable by someone with more
    /// rights than the owner (or by the expiry sweep) stands until someone with those
    /// rights lifts it. `None` for enabled peers (and for peers disabled before wgm
    /// recorded it, which count as disabled by an administrator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_by: Option<DisabledBy>,
    /// The peer's firewall policy (allow list, rates, quota). Revisioned; a stored peer
    /// without one reads back as [`PeerPolicy::default`] (no restriction of its own),
    /// and the default is not written.
    #[serde(default, skip_serializing_if = "is_default")]
    pub policy: PeerPolicy,
    /// When the peer is disabled automatically.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// Where the client's config file was written, when known (informational).
    pub config_path: Option<String>,
    /// Observed statistics (not desired state).
    #[serde(default)]
    pub stats: PeerStats,
    /// Creation time.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Last update time.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl Peer {
    /// The server-side `AllowedIPs` of this peer: its host addresses (/128, /32), its
    /// delegated prefix and its extra networks, IPv6 first.
    ///
    /// ```
    /// # use wgm_core::model::*;
    /// # fn demo(p: &Peer) { let ips = p.allowed_ips(); assert!(ips.len() <= 3 + p.extra_allowed_ips.len()); }
    /// ```
    pub fn allowed_ips(&self) -> Vec<IpNet> {
        let mut out = Vec::with_capacity(3 + self.extra_allowed_ips.len());
        if let Some(a) = self.address_v6 {
            out.push(IpNet::V6(Ipv6Net::from(a)));
        }
        if let Some(a) = self.address_v4 {
            out.push(IpNet::V4(Ipv4Net::from(a)));
        }
        if let Some(p) = self.delegated_prefix {
            out.push(IpNet::V6(p));
        }
        out.extend(self.extra_allowed_ips.iter().copied());
        out
    }

    /// Whether the peer is past its expiry at `now`.
    pub fn is_expired(&self, now: OffsetDateTime) -> bool {
        self.expires_at.is_some_and(|t| t <= now)
    }

    /// A copy with observed statistics cleared, for comparisons of desired state.
    #[must_use]
    pub fn without_stats(&self) -> Peer {
        Peer {
            stats: PeerStats::default(),
            ..self.clone()
        }
    }
}

/// A server at one revision with all its peers: the unit the store loads and caches.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServerState {
    /// The server.
    pub server: Server,
    /// Its peers by id.
    pub peers: BTreeMap<PeerId, Peer>,
    /// The revision this state is at.
    pub revision: RevisionNo,
}

impl ServerState {
    /// The peer with the given name (case-insensitive), if any.
    pub fn peer_by_name(&self, name: &PeerName) -> Option<&Peer> {
        let key = name.key();
        self.peers.values().find(|p| p.name.key() == key)
    }

    /// The peer with the given public key, if any.
    pub fn peer_by_key(&self, key: &PublicKey) -> Option<&Peer> {
        self.peers.values().find(|p| &p.public_key == key)
    }

    /// Apply one change to this state in memory (what a store does inside its commit).
    /// Creation/deletion of the server itself is not applied here.
    pub fn apply_change(&mut self, change: &Change) -> Result<()> {
        match change {
            Change::ServerCreated { server } | Change::ServerUpdated { after: server, .. } => {
                if server.id != self.server.id {
                    return Err(Error::conflict("change targets another server"));
                }
                self.server = (**server).clone();
            }
            Change::ServerDeleted { .. } => {
                return Err(Error::conflict("a deleted server has no state"));
            }
            Change::PeerAdded { peer } => {
                if self.peers.contains_key(&peer.id) {
                    return Err(Error::already_exists("peer", peer.id));
                }
                self.peers.insert(peer.id, (**peer).clone());
            }
            Change::PeerUpdated { before, after } => {
                let cur = self
                    .peers
                    .get_mut(&before.id)
                    .ok_or_else(|| Error::not_found("peer", before.id))?;
                *cur = (**after).clone();
            }
            Change::PeerRemoved { peer } => {
                self.peers
                    .remove(&peer.id)
                    .ok_or_else(|| Error::not_found("peer", peer.id))?;
            }
        }
        Ok(())
    }
}

/// A short listing entry for a server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerSummary {
    /// Identifier.
    pub id: ServerId,
    /// Name.
    pub name: ServerName,
    /// Interface name.
    pub interface: InterfaceName,
    /// Number of peers.
    pub peer_count: u64,
    /// Head revision.
    pub revision: RevisionNo,
    /// The host the server is assigned to ([`Server::host`]).
    pub host: Option<HostName>,
}

/// Pagination of listings: `offset` items skipped, at most `limit` returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page {
    /// Items to skip.
    pub offset: u64,
    /// Maximum items to return.
    pub limit: u64,
}

impl Page {
    /// Everything (no limit).
    pub const ALL: Page = Page {
        offset: 0,
        limit: u64::MAX,
    };

    /// The first `limit` items.
    pub fn first(limit: u64) -> Page {
        Page { offset: 0, limit }
    }
}

/// One typed change inside a revision.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Change {
    /// The server was created.
    ServerCreated {
        /// The new server.
        server: Box<Server>,
    },
    /// The server's settings changed.
    ServerUpdated {
        /// Before.
        before: Box<Server>,
        /// After.
        after: Box<Server>,
    },
    /// The server was deleted (with all its peers).
    ServerDeleted {
        /// The server as it was.
        server: Box<Server>,
    },
    /// A peer was added.
    PeerAdded {
        /// The new peer.
        peer: Box<Peer>,
    },
    /// A peer changed.
    PeerUpdated {
        /// Before.
        before: Box<Peer>,
        /// After.
        after: Box<Peer>,
    },
    /// A peer was removed.
    PeerRemoved {
        /// The peer as it was.
        peer: Box<Peer>,
    },
}

impl Change {
    /// A short machine name for the change kind (`peer_added`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            Change::ServerCreated { .. } => "server_created",
            Change::ServerUpdated { .. } => "server_updated",
            Change::ServerDeleted { .. } => "server_deleted",
            Change::PeerAdded { .. } => "peer_added",
            Change::PeerUpdated { .. } => "peer_updated",
            Change::PeerRemoved { .. } => "peer_removed",
        }
    }

    /// Whether the change is to a peer (added, updated or removed), not to the server.
    ///
    /// ```
    /// # fn demo(c: &wgm_core::model::Change) {
    /// let grouped = c.is_peer_change();
    /// # }
    /// ```
    pub fn is_peer_change(&self) -> bool {
        matches!(
            self,
            Change::PeerAdded { .. } | Change::PeerUpdated { .. } | Change::PeerRemoved { .. }
        )
    }

    /// The inverse change (what undoes this one).
    #[must_use]
    pub fn inverse(&self) -> Change {
        match self {
            Change::ServerCreated { server } => Change::ServerDeleted {
                server: server.clone(),
            },
            Change::ServerDeleted { server } => Change::ServerCreated {
                server: server.clone(),
            },
            Change::ServerUpdated { before, after } => Change::ServerUpdated {
                before: after.clone(),
                after: before.clone(),
            },
            Change::PeerAdded { peer } => Change::PeerRemoved { peer: peer.clone() },
            Change::PeerRemoved { peer } => Change::PeerAdded { peer: peer.clone() },
            Change::PeerUpdated { before, after } => Change::PeerUpdated {
                before: after.clone(),
                after: before.clone(),
            },
        }
    }
}

/// Who did something, as recorded in revisions and the audit log.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Actor {
    /// The user, when the actor is one.
    pub user_id: Option<UserId>,
    /// A label: `user:alice`, `token:<id> (alice)`, `local:root`, `system:expiry`.
    pub label: String,
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label)
    }
}

/// The outcome recorded in an audit record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditOutcome {
    /// The action happened.
    Success,
    /// Authorization refused it.
    Denied,
    /// It was attempted and failed.
    Failed,
}

/// An audit entry before the store numbers and chains it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Who.
    pub actor: Actor,
    /// What (`peer.add`, `secret.export`, `user.login` in text form).
    pub action: AuditAction,
    /// The object, as a path (`server/<id>/peer/<id>`, `user/<id>`).
    pub object: String,
    /// The server concerned, if any.
    pub server_id: Option<ServerId>,
    /// The revision this entry belongs to, if it is a server mutation.
    pub revision: Option<RevisionNo>,
    /// Outcome.
    pub outcome: AuditOutcome,
    /// Extra non-secret details.
    #[serde(default)]
    pub details: serde_json::Value,
}

/// A stored audit record: an [`AuditEntry`] numbered and chained to its predecessor.
///
/// The link is keyed (HMAC-SHA256 under the store's audit key over `prev_hash`, `seq`
/// and the canonical JSON of `entry`); records written before the store had an audit key
/// carry an unkeyed SHA-256 link. [`AuditRecord::chain`] makes one and
/// [`crate::integrity::ChainVerifier`] checks a log of them (module [`crate::integrity`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Position in the log, from 1, without gaps.
    pub seq: u64,
    /// The entry.
    pub entry: AuditEntry,
    /// Link of the previous record (64 hex digits; [`AUDIT_GENESIS`] for the first).
    pub prev_hash: String,
    /// This record's link (64 hex digits).
    pub hash: String,
}

/// The `prev_hash` of the first audit record.
pub const AUDIT_GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// A server mutation to commit atomically: check the head, apply the changes, append
/// the revision and its audit record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Commit {
    /// The server.
    pub server_id: ServerId,
    /// The head revision the changes were computed against ([`RevisionNo::NONE`] to
    /// create the server).
    pub expected: RevisionNo,
    /// The changes, in order.
    pub changes: Vec<Change>,
    /// Who.
    pub author: Actor,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// A one-line human summary (`add peer alice`).
    pub summary: String,
    /// The audit entry written in the same transaction (its `revision` is filled in by
    /// the store).
    pub audit: AuditEntry,
}

/// A committed revision of one server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RevisionRecord {
    /// The server.
    pub server_id: ServerId,
    /// This revision's number.
    pub revision: RevisionNo,
    /// Who.
    pub author: Actor,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Human summary.
    pub summary: String,
    /// The changes.
    pub changes: Vec<Change>,
    /// HMAC-SHA256 under the store's audit key over everything above
    /// ([`crate::integrity::revision_mac`]), set by the store when it commits; `None` on
    /// revisions written before the store had an audit key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

/// What a server commit wrote: the revision and its audit record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Committed {
    /// The new revision.
    pub record: RevisionRecord,
    /// Its audit record, chained to the log (its link is the log's new head).
    pub audit: AuditRecord,
}

/// A role assigned to a user, optionally narrowed to one server.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RoleAssignment {
    /// The role's name (built-in `admin`, `operator`, `auditor`, `user`, or custom).
    pub role: RoleName,
    /// Where it applies.
    pub scope: Scope,
}

/// A user's TOTP enrolment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TotpEnrollment {
    /// The TOTP secret, sealed (AD = user id).
    pub secret: SealedSecret,
    /// Whether a first valid code confirmed the enrolment.
    pub confirmed: bool,
    /// The last time step accepted (replay protection).
    pub last_used_step: Option<u64>,
}

/// A user of wgm.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct User {
    /// Identifier.
    pub id: UserId,
    /// Unique (case-insensitive) login name.
    pub name: UserName,
    /// Unique e-mail address, if any (validated, lower-cased).
    pub email: Option<String>,
    /// argon2id PHC string; `None` for token-only users.
    pub password_hash: Option<String>,
    /// Disabled users cannot log in; their tokens stop working.
    pub active: bool,
    /// Superusers hold every permission.
    pub superuser: bool,
    /// Assigned roles.
    pub roles: Vec<RoleAssignment>,
    /// TOTP, when enrolled.
    pub totp: Option<TotpEnrollment>,
    /// Bumped on password or role change: invalidates issued JWTs.
    pub token_version: u64,
    /// How many peers a self-service user may own (`None` = no limit).
    pub peer_quota: Option<u32>,
    /// Last successful login.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_login: Option<OffsetDateTime>,
    /// Optimistic-concurrency version of this record.
    pub version: u64,
    /// Creation time.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Last update time.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// An API token (its secret is stored only as a hash).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApiTokenRecord {
    /// Identifier (the public half of the token string).
    pub id: TokenId,
    /// The owner.
    pub user_id: UserId,
    /// A label.
    pub name: String,
    /// SHA-256 of the secret half (hex).
    pub secret_hash: String,
    /// The permissions the token is narrowed to (`None` = all of the owner's).
    pub scopes: Option<Vec<Permission>>,
    /// Creation time.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Expiry.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// Revoked tokens never authenticate.
    pub revoked: bool,
}

/// A change to users, roles or tokens, committed atomically with its audit entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum IdentityChange {
    /// Create a user (fails if the name or e-mail is taken).
    UserCreated {
        /// The user.
        user: Box<User>,
    },
    /// Replace a user; `user.version` must be the stored version + 1.
    UserUpdated {
        /// The new record.
        user: Box<User>,
    },
    /// Delete a user (and their tokens).
    UserDeleted {
        /// The user.
        id: UserId,
    },
    /// Create or replace a custom role.
    RolePut {
        /// The role.
        role: Role,
    },
    /// Delete a custom role.
    RoleDeleted {
        /// Its name.
        name: RoleName,
    },
    /// Create a token.
    TokenCreated {
        /// The token.
        token: ApiTokenRecord,
    },
    /// Revoke a token.
    TokenRevoked {
        /// Its id.
        id: TokenId,
    },
}

/// Filter for audit queries. All conditions must hold; `None` means "any".
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditQuery {
    /// Only this actor label. `user:NAME` also finds what the user did through API
    /// tokens (labelled `user:NAME token:ID`).
    pub actor: Option<String>,
    /// Only this server.
    pub server_id: Option<ServerId>,
    /// Only records whose object path starts with this.
    pub object_prefix: Option<String>,
    /// From (inclusive).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub since: Option<OffsetDateTime>,
    /// Until (exclusive).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub until: Option<OffsetDateTime>,
    /// Records after this sequence number.
    pub after_seq: Option<u64>,
    /// At most this many (oldest first).
    pub limit: Option<u64>,
}

impl AuditQuery {
    /// Whether `r` matches this query (used by in-memory stores and as the reference
    /// semantics for SQL stores).
    pub fn matches(&self, r: &AuditRecord) -> bool {
        self.actor.as_ref().is_none_or(|a| {
            let label = &r.entry.actor.label;
            label == a
                || label
                    .strip_prefix(a.as_str())
                    .is_some_and(|rest| rest.starts_with(" token:"))
        }) && self.server_id.is_none_or(|s| r.entry.server_id == Some(s))
            && self
                .object_prefix
                .as_ref()
                .is_none_or(|p| r.entry.object.starts_with(p.as_str()))
            && self.since.is_none_or(|t| r.entry.at >= t)
            && self.until.is_none_or(|t| r.entry.at < t)
            && self.after_seq.is_none_or(|s| r.seq > s)
    }
}

/// Validate an e-mail address (simple, strict shape: 1 to 254 characters, one `@`, no
/// spaces, control, format or invisible characters, a dotted domain) and return it
/// lower-cased.
///
/// ```
/// assert_eq!(wgm_core::model::normalize_email("Alice@Example.org").unwrap(), "alice@example.org");
/// assert!(wgm_core::model::normalize_email("alice@@x").is_err());
/// assert!(wgm_core::model::normalize_email("eve\u{202e}gro.elpmaxe@x.org").is_err()); // bidi
/// assert!(wgm_core::model::normalize_email("a\u{200b}lice@example.org").is_err()); // zero-width
/// ```
pub fn normalize_email(s: &str) -> Result<String> {
    const FIELD: &str = "user.email";
    if s.is_empty() || s.len() > 254 {
        return Err(Error::invalid(FIELD, "must be 1 to 254 characters"));
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Error::invalid(
            FIELD,
            "must not contain spaces or control characters",
        ));
    }
    crate::names::check_text_characters(s).map_err(|reason| Error::invalid(FIELD, reason))?;
    let mut parts = s.split('@');
    let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(Error::invalid(FIELD, "must contain exactly one '@'"));
    };
    if local.is_empty()
        || domain.len() < 3
        || !domain.contains('.')
        || domain.starts_with('.')
        || domain.ends_with('.')
    {
        return Err(Error::invalid(FIELD, "must look like name@domain.tld"));
    }
    Ok(s.to_lowercase())
}

/// Names of peers made by `peer add --count N`: `NAME-1` … `NAME-N`.
pub fn numbered_names(base: &PeerName, count: u32) -> Result<Vec<PeerName>> {
    (1..=count)
        .map(|i| PeerName::new(format!("{}-{i}", base.as_str())))
        .collect()
}

/// A user name used for locally authenticated administrators (never stored).
pub fn local_actor(unix_user: &str) -> Actor {
    let clean: String = unix_user
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        .take(64)
        .collect();
    Actor {
        user_id: None,
        label: format!("local:{clean}"),
    }
}

/// Whether a user name is the same as another, ignoring case.
pub fn same_user_name(a: &UserName, b: &UserName) -> bool {
    a.key() == b.key()
}

/// What the agent of a host last reported about a server there: which revision the host
/// holds, on which device instance, whether the last pass converged, and when it said
/// so. Written by the agent after every apply and on every heartbeat; read by
/// `wgm status` anywhere, without touching the device. Not a revision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostReport {
    /// The server.
    pub server_id: ServerId,
    /// The host.
    pub host: HostName,
    /// The agent that wrote the report (its lease holder id, `HOST/PID/START`).
    pub agent: String,
    /// The fencing number of the agent's lease when it wrote the report.
    pub fencing: u64,
    /// The revision the host last converged to (`None`: never yet).
    pub applied: Option<RevisionNo>,
    /// The device's incarnation when it converged (`WireGuardBackend::device_instance`).
    pub instance: Option<u64>,
    /// Whether the last pass converged (the host holds `applied` and nothing is left).
    pub converged: bool,
    /// How many peers the device held at the last pass.
    pub peers: u64,
    /// What went wrong in the last pass, in one line (`None`: nothing).
    pub error: Option<String>,
    /// When the agent wrote this report.
    #[serde(with = "time::serde::rfc3339")]
    pub heartbeat: OffsetDateTime,
}

/// The right of one agent to apply one server on one host ([`crate::store::HostStateStore::acquire_lease`]).
/// A lease that is not renewed lapses at `expires`; every grant to a new holder raises
/// `fencing`, so a write carrying an older number is known to come from an agent that
/// lost its lease.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The server.
    pub server_id: ServerId,
    /// The host.
    pub host: HostName,
    /// Who holds it (`HOST/PID/START` for an agent; empty once released).
    pub holder: String,
    /// Raised by one at every grant to a new holder (never reused).
    pub fencing: u64,
    /// When it lapses unless renewed.
    #[serde(with = "time::serde::rfc3339")]
    pub expires: OffsetDateTime,
}

/// A request for a [`Lease`] ([`crate::store::HostStateStore::acquire_lease`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseRequest {
    /// The server.
    pub server_id: ServerId,
    /// The host.
    pub host: HostName,
    /// Who asks (`HOST/PID/START` for an agent).
    pub holder: String,
    /// Now, by the caller's clock (leases are contended only on one host, by one clock).
    pub now: OffsetDateTime,
    /// How long the lease lasts from `now` unless renewed.
    pub ttl: time::Duration,
    /// Take the lease from this holder even before it lapses: the caller knows it is
    /// gone (an agent on the same host whose process no longer exists).
    pub take_over: Option<String>,
}

impl Lease {
    /// The outcome of `req` against the stored lease `current` (written once for every
    /// store): a renewal (same holder: same fencing, new expiry), a grant (none yet, or
    /// lapsed, released or taken over: fencing + 1), or `Conflict` naming the holder.
    ///
    /// ```
    /// use time::{Duration, OffsetDateTime};
    /// use wgm_core::model::{Lease, LeaseRequest, ServerId};
    /// use wgm_core::names::HostName;
    /// let req = |holder: &str, at: i64| LeaseRequest {
    ///     server_id: ServerId::new_random(), host: HostName::new("h1").unwrap(),
    ///     holder: holder.into(), now: OffsetDateTime::from_unix_timestamp(at).unwrap(),
    ///     ttl: Duration::seconds(15), take_over: None,
    /// };
    /// let a = Lease::decide(None, &req("a", 0)).unwrap();
    /// assert_eq!(a.fencing, 1);
    /// assert!(Lease::decide(Some(&a), &req("b", 10)).is_err()); // held
    /// assert_eq!(Lease::decide(Some(&a), &req("a", 10)).unwrap().fencing, 1); // renewed
    /// assert_eq!(Lease::decide(Some(&a), &req("b", 20)).unwrap().fencing, 2); // lapsed
    /// ```
    ///
    /// # Errors
    ///
    /// [`crate::Error::Conflict`] while another holder's lease runs; `InvalidInput` for a
    /// `ttl` that is not positive or an empty `holder`.
    pub fn decide(current: Option<&Lease>, req: &LeaseRequest) -> Result<Lease> {
        if req.ttl <= time::Duration::ZERO {
            return Err(Error::invalid("lease.ttl", "must be positive"));
        }
        if req.holder.is_empty()
            || req.holder.len() > 512
            || req.holder.chars().any(char::is_control)
        {
            return Err(Error::invalid(
                "lease.holder",
                "must be 1 to 512 characters without control characters",
            ));
        }
        let fencing = match current {
            None => 1,
            Some(c) if c.holder == req.holder && c.expires > req.now => c.fencing,
            Some(c)
                if c.holder.is_empty()
                    || c.expires <= req.now
                    || req.take_over.as_deref() == Some(c.holder.as_str()) =>
            {
                c.fencing.saturating_add(1)
            }
            Some(c) => {
                return Err(Error::conflict(format!(
                    "server {} on host {} is applied by agent {} (lease {} until {})",
                    req.server_id,
                    req.host,
                    c.holder,
                    c.fencing,
                    c.expires
                        .format(&time::format_description::well_known::Rfc3339)
                        .unwrap_or_default()
                )))
            }
        };
        Ok(Lease {
            server_id: req.server_id,
            host: req.host.clone(),
            holder: req.holder.clone(),
            fencing,
            expires: req.now + req.ttl,
        })
    }

    /// The stored lease after `holder` releases it: empty holder, lapsed now, fencing
    /// kept (so the next grant raises it). `None` when `current` is not `holder`'s lease
    /// at `fencing` (nothing to release).
    pub fn released(
        current: &Lease,
        holder: &str,
        fencing: u64,
        now: OffsetDateTime,
    ) -> Option<Lease> {
        (current.holder == holder && current.fencing == fencing).then(|| Lease {
            holder: String::new(),
            expires: now,
            ..current.clone()
        })
    }

    /// Whether `report` may be stored against this lease: only when written under the
    /// current fencing number.
    ///
    /// # Errors
    ///
    /// [`Error::Conflict`] naming both numbers when the report's writer lost the lease.
    pub fn admit(&self, report: &HostReport) -> Result<()> {
        if self.fencing == report.fencing {
            return Ok(());
        }
        Err(Error::conflict(format!(
            "the report of agent {} under lease {} is fenced out: host {} holds lease {} of {}",
            report.agent,
            report.fencing,
            report.host,
            self.fencing,
            if self.holder.is_empty() {
                "nobody"
            } else {
                self.holder.as_str()
            }
        )))
    }
}

/// What a host verifiably held after an apply converged there: the revision, the
/// device's incarnation ([`crate::backend::WireGuardBackend::device_instance`]) and when
/// the device was last read in full. Durable, so that a fresh process whose device is
/// still that incarnation can plan from the revisions since (the delta) instead of
/// reading every peer back; a trust that lapses like the manager's in-memory one
/// (`ManagerConfig::reverify_after_secs` after `verified_at`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedState {
    /// The revision the host converged to.
    pub revision: RevisionNo,
    /// The device's incarnation then (`None`: the backend cannot tell).
    pub instance: Option<u64>,
    /// When the device was last read in full (what the deltas since were acknowledged on
    /// top of).
    #[serde(with = "time::serde::rfc3339")]
    pub verified_at: OffsetDateTime,
}

#[cfg(test)]
mod lease_tests {
    use super::*;

    fn at(secs: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000 + secs).unwrap()
    }

    fn req(holder: &str, now: i64, take_over: Option<&str>) -> LeaseRequest {
        LeaseRequest {
            server_id: ServerId(Uuid::nil()),
            host: HostName::new("h1").unwrap(),
            holder: holder.into(),
            now: at(now),
            ttl: time::Duration::seconds(10),
            take_over: take_over.map(Into::into),
        }
    }

    #[test]
    fn grants_renewals_lapses_and_take_overs() {
        let a = Lease::decide(None, &req("a", 0, None)).unwrap();
        assert_eq!((a.fencing, a.expires, a.holder.as_str()), (1, at(10), "a"));
        // Renewal: same holder, running lease: same number, later expiry.
        let r = Lease::decide(Some(&a), &req("a", 9, None)).unwrap();
        assert_eq!((r.fencing, r.expires), (1, at(19)));
        // Another holder while it runs, up to the last instant: refused, naming it.
        let e = Lease::decide(Some(&a), &req("b", 9, None)).unwrap_err();
        assert!(
            matches!(e, Error::Conflict { .. }) && e.to_string().contains("agent a"),
            "{e}"
        );
        // At the expiry instant it has lapsed: the next holder gets a new number.
        let b = Lease::decide(Some(&a), &req("b", 10, None)).unwrap();
        assert_eq!((b.fencing, b.holder.as_str()), (2, "b"));
        // The same holder after its own lease lapsed, from the expiry instant on: a new
        // number too.
        for now in [10, 11] {
            let again = Lease::decide(Some(&a), &req("a", now, None)).unwrap();
            assert_eq!(again.fencing, 2, "at {now}");
        }
        // Take-over only from the holder named.
        assert!(Lease::decide(Some(&a), &req("b", 5, Some("c"))).is_err());
        assert_eq!(
            Lease::decide(Some(&a), &req("b", 5, Some("a")))
                .unwrap()
                .fencing,
            2
        );
        // A released lease goes to anyone, with a new number.
        let released = Lease::released(&a, "a", 1, at(3)).unwrap();
        assert!(released.holder.is_empty() && released.expires == at(3));
        assert_eq!(
            Lease::decide(Some(&released), &req("b", 4, None))
                .unwrap()
                .fencing,
            2
        );
        // Only its holder, at its number, releases it.
        assert!(Lease::released(&a, "b", 1, at(3)).is_none());
        assert!(Lease::released(&a, "a", 2, at(3)).is_none());
    }

    #[test]
    fn bad_requests_name_their_field() {
        let mut r = req("a", 0, None);
        r.ttl = time::Duration::ZERO;
        let e = Lease::decide(None, &r).unwrap_err();
        assert!(matches!(e, Error::InvalidInput { ref field, .. } if field == "lease.ttl"));
        for holder in ["", "a\nb"] {
            let e = Lease::decide(None, &req(holder, 0, None)).unwrap_err();
            assert!(matches!(e, Error::InvalidInput { ref field, .. } if field == "lease.holder"));
        }
        let long = "x".repeat(513);
        assert!(Lease::decide(None, &req(&long, 0, None)).is_err());
        assert!(Lease::decide(None, &req(&"x".repeat(512), 0, None)).is_ok());
    }

    #[test]
    fn only_the_current_number_writes_a_report() {
        let lease = Lease::decide(None, &req("a", 0, None)).unwrap();
        let mut report = HostReport {
            server_id: lease.server_id,
            host: lease.host.clone(),
            agent: "a".into(),
            fencing: 1,
            applied: None,
            instance: None,
            converged: false,
            peers: 0,
            error: None,
            heartbeat: at(1),
        };
        assert!(lease.admit(&report).is_ok());
        for stale in [0, 2] {
            report.fencing = stale;
            assert!(matches!(lease.admit(&report), Err(Error::Conflict { .. })));
        }
    }
}
