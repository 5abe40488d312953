//! Peer operations: add (one or many, allocated or bring-your-own key), update,
//! enable/disable, remove, rotate key and PSK, expiry, listing.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv6Net};
use rand::Rng;
use serde_json::json;
use time::OffsetDateTime;

use super::{owner_of, Cached, Manager, Mutation, PeerView};
use crate::audit::AuditAction;
use crate::error::ConflictKind;
use crate::ipam::Allocation;
use crate::keys::{PresharedKey, PrivateKey, PublicKey};
use crate::model::{
    Change, DisabledBy, Peer, PeerId, PeerStats, Quarantined, ServerId, ServerState, UserId,
};
use crate::names::{Description, PeerName};
use crate::net::{Endpoint, Keepalive};
use crate::rbac::{Action, Principal, Resource, Target};
use crate::seal::SecretKind;
use crate::store::PeerLookup;
use crate::{Error, Result};

/// How a peer's address in one family is chosen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AddrRequest<A> {
    /// Allocate one from the pool (IPv4: only when the server has an IPv4 pool).
    #[default]
    Auto,
    /// No address in this family.
    None,
    /// Exactly this one (checked against the pool, exclusions and other peers).
    Fixed(A),
}

/// A peer to add.
#[derive(Clone, Debug)]
pub struct NewPeer {
    /// Unique name within the server.
    pub name: PeerName,
    /// Free text.
    pub description: Option<Description>,
    /// Owner; self-service users always own what they create.
    pub owner: Option<UserId>,
    /// Bring your own public key: wgm then never holds the private key.
    pub public_key: Option<PublicKey>,
    /// IPv6 address (every peer gets one: `None` is refused).
    pub ipv6: AddrRequest<Ipv6Addr>,
    /// IPv4 address.
    pub ipv4: AddrRequest<Ipv4Addr>,
    /// Delegated prefix (default: none).
    pub prefix: AddrRequest<Ipv6Net>,
    /// Networks behind the peer routed to it (server-side `AllowedIPs`).
    pub extra_allowed_ips: Vec<IpNet>,
    /// Client-side `AllowedIPs` override.
    pub client_allowed_ips: Option<Vec<IpNet>>,
    /// Keepalive (default: the server's client template).
    pub keepalive: Option<Keepalive>,
    /// A fixed endpoint (site-to-site).
    pub endpoint: Option<Endpoint>,
    /// Automatic disable time.
    pub expires_at: Option<OffsetDateTime>,
    /// Generate a preshared key (default true).
    pub preshared_key: bool,
}

impl NewPeer {
    /// A peer with automatic dual-stack addresses, a generated key pair and PSK.
    pub fn new(name: PeerName) -> NewPeer {
        NewPeer {
            name,
            description: None,
            owner: None,
            public_key: None,
            ipv6: AddrRequest::Auto,
            ipv4: AddrRequest::Auto,
            prefix: AddrRequest::None,
            extra_allowed_ips: Vec::new(),
            client_allowed_ips: None,
            keepalive: None,
            endpoint: None,
            expires_at: None,
            preshared_key: true,
        }
    }

    /// `count` copies of this spec named `NAME-1` … `NAME-N` (this spec's name is the
    /// base), for [`Manager::add_peers`] in one revision: `wgm peer add --count N`.
    ///
    /// Refused as invalid input naming `peer.count`: a count of 0 or above
    /// [`NewPeer::MAX_COUNT`], and more than one peer from a spec with anything that
    /// each peer must have for itself: a public key, a fixed IPv6 or IPv4 address or
    /// prefix, extra allowed IPs or an endpoint.
    ///
    /// ```
    /// use wgm_core::manager::NewPeer;
    /// use wgm_core::names::PeerName;
    ///
    /// let specs = NewPeer::new(PeerName::new("dev")?).numbered(3)?;
    /// let names: Vec<&str> = specs.iter().map(|p| p.name.as_str()).collect();
    /// assert_eq!(names, ["dev-1", "dev-2", "dev-3"]);
    /// assert!(NewPeer::new(PeerName::new("dev")?).numbered(0).is_err());
    /// # Ok::<(), wgm_core::Error>(())
    /// ```
    pub fn numbered(&self, count: u32) -> Result<Vec<NewPeer>> {
        const FIELD: &str = "peer.count";
        if count == 0 {
            return Err(Error::invalid(FIELD, "must be at least 1"));
        }
        if count > Self::MAX_COUNT {
            return Err(Error::invalid(
                FIELD,
                format!("must be at most {}", Self::MAX_COUNT),
            ));
        }
        let own = self.public_key.is_some()
            || matches!(self.ipv6, AddrRequest::Fixed(_))
            || matches!(self.ipv4, AddrRequest::Fixed(_))
            || matches!(self.prefix, AddrRequest::Fixed(_))
            || !self.extra_allowed_ips.is_empty()
            || self.endpoint.is_some();
        if own && count > 1 {
            return Err(Error::invalid(
                FIELD,
                "more than one peer gets its own keys and addresses: it cannot be combined \
                 with a public key, a fixed IPv6/IPv4 address or prefix, extra allowed IPs \
                 or an endpoint",
            ));
        }
        Ok(crate::model::numbered_names(&self.name, count)?
            .into_iter()
            .map(|name| NewPeer {
                name,
                ..self.clone()
            })
            .collect())
    }

    /// The most peers [`NewPeer::numbered`] makes from one spec.
    pub const MAX_COUNT: u32 = 100_000;
}

/// Changes to a peer. `None` leaves a field as it is. Owner changes need the
/// permission to update users' objects globally (mass-assignment safe).
#[derive(Clone, Debug, Default)]
pub struct PeerUpdate {
    /// New name.
    pub name: Option<PeerName>,
    /// New description (`Some(None)` clears it).
    pub description: Option<Option<Description>>,
    /// New owner (`Some(None)` clears it).
    pub owner: Option<Option<UserId>>,
    /// New extra allowed IPs.
    pub extra_allowed_ips: Option<Vec<IpNet>>,
    /// New client-side allowed IPs override (`Some(None)` clears it).
    pub client_allowed_ips: Option<Option<Vec<IpNet>>>,
    /// New keepalive.
    pub keepalive: Option<Keepalive>,
    /// New endpoint (`Some(None)` clears it).
    pub endpoint: Option<Option<Endpoint>>,
    /// New expiry (`Some(None)` clears it).
    pub expires_at: Option<Option<OffsetDateTime>>,
    /// Enable or disable.
    pub enabled: Option<bool>,
}

/// Check extra allowed IPs: no default routes, no host bits, nothing in loopback,
/// multicast, link-local or unspecified ranges, no overlap with the server's address and
/// delegation pools or
/// with any other peer's allowed IPs on the same server. `visible` tells whether the
/// caller may see a peer: an overlap with a peer they may not see is reported without
/// its name or network.
pub(super) fn check_extra_allowed_ips(
    state: &ServerState,
    except: Option<PeerId>,
    extra: &[IpNet],
    visible: &dyn Fn(&Peer) -> bool,
) -> Result<()> {
    check_extra_list(&state.server, extra)
        .map_err(|(i, reason)| Error::invalid(format!("peer.allowed_ips[{i}]"), reason))?;
    if extra.is_empty() {
        return Ok(());
    }
    for p in state.peers.values().filter(|p| Some(p.id) != except) {
        for theirs in p.allowed_ips() {
            for (i, net) in extra.iter().enumerate() {
                if theirs.contains(net) || net.contains(&theirs) {
                    let reason = if visible(p) {
                        format!("overlaps {theirs} of peer {}", p.name)
                    } else {
                        "overlaps a network already routed to another peer".to_owned()
                    };
                    return Err(Error::invalid(format!("peer.allowed_ips[{i}]"), reason));
                }
            }
        }
    }
    Ok(())
}

/// The rules of one peer's extra allowed IPs that need no other peer: each may be routed
/// ([`check_routable`]), none overlaps the server's address pools (and so its addresses)
/// or its delegation pool (and so any prefix delegated now or later), none
/// overlaps another of the list. On refusal: the index in `extra` and the rule. Shared
/// by `peer add`/`peer set` (through [`check_extra_allowed_ips`]) and `server import`,
/// which names its own fields.
pub(super) fn check_extra_list(
    server: &crate::model::Server,
    extra: &[IpNet],
) -> std::result::Result<(), (usize, String)> {
    let pools: Vec<(IpNet, &str)> = std::iter::once((IpNet::V6(server.ipv6_pool), "address"))
        .chain(server.ipv4_pool.map(|p| (IpNet::V4(p), "address")))
        // Prefixes delegated later come out of it: a network routed to one peer inside it
        // could meet another peer's prefix.
        .chain(server.delegation.map(|d| (IpNet::V6(d.pool), "delegation")))
        .collect();
    for (i, net) in extra.iter().enumerate() {
        check_routable(net).map_err(|reason| (i, reason.to_owned()))?;
        if let Some((pool, what)) = pools
            .iter()
            .find(|(p, _)| p.contains(net) || net.contains(p))
        {
            return Err((i, format!("overlaps the server's {what} pool {pool}")));
        }
        for (j, other) in extra.iter().enumerate() {
            if j != i && (other.contains(net) || net.contains(other)) {
                return Err((i, format!("overlaps {other} in the same list")));
            }
        }
    }
    Ok(())
}

/// Whether `net` may be routed to a peer on the server side: not a default route, no
/// host bits, and not in a range that must never be sent into a tunnel (unspecified,
/// loopback, link-local, multicast, broadcast). Returns the rule broken
/// (`tests/multiuser.rs`, `extra_allowed_ips_in_special_ranges_are_refused`).
pub(super) fn check_routable(net: &IpNet) -> std::result::Result<(), &'static str> {
    if net.prefix_len() == 0 {
        return Err("a default route (0.0.0.0/0, ::/0) is not allowed on the server side");
    }
    if net.trunc() != *net {
        return Err("host bits are set");
    }
    // A network overlaps a special range when either contains the other.
    let special: &[(&str, &str)] = &[
        ("0.0.0.0/8", "is in the unspecified range 0.0.0.0/8"),
        ("127.0.0.0/8", "is in the loopback range 127.0.0.0/8"),
        (
            "169.254.0.0/16",
            "is in the link-local range 169.254.0.0/16",
        ),
        ("224.0.0.0/4", "is in the multicast range 224.0.0.0/4"),
        ("255.255.255.255/32", "is the broadcast address"),
        ("::/128", "is the unspecified address ::"),
        ("::1/128", "is the loopback address ::1"),
        ("fe80::/10", "is in the link-local range fe80::/10"),
        ("ff00::/8", "is in the multicast range ff00::/8"),
    ];
    for (range, rule) in special {
        // The table above is constant and valid; a parse failure cannot happen.
        if let Ok(r) = range.parse::<IpNet>() {
            if r.contains(net) || net.contains(&r) {
                return Err(rule);
            }
        }
    }
    Ok(())
}

/// What a caller may do to a peer beyond the permission the operation itself needs.
#[derive(Clone, Copy, Debug)]
pub(super) struct PeerRights {
    /// `peer:update` beyond own objects on this peer's server: an operator or an
    /// administrator (lifts any disable, sets any expiry).
    pub(super) elevated: bool,
    /// `peer:route` on this peer: extra allowed IPs and delegated prefixes.
    pub(super) route: bool,
}

impl PeerRights {
    pub(super) fn of(p: &Principal, target: Target) -> PeerRights {
        PeerRights {
            elevated: crate::rbac::authorize_elevated(p, Resource::Peer, Action::Update, target)
                .is_ok(),
            route: crate::rbac::authorize(p, Resource::Peer, Action::Route, target).is_ok(),
        }
    }
}

/// Whether `after` routes anything to the peer that `before` did not: an extra network
/// not in the old list, or a delegated prefix it did not have.
pub(super) fn widens_routes(before: Option<&Peer>, after: &Peer) -> bool {
    let (old_extra, old_prefix) = match before {
        Some(b) => (b.extra_allowed_ips.as_slice(), b.delegated_prefix),
        None => (&[][..], None),
    };
    after
        .extra_allowed_ips
        .iter()
        .any(|n| !old_extra.contains(n))
        || (after.delegated_prefix.is_some() && after.delegated_prefix != old_prefix)
}

/// The rules of a change from `before` to `after` that depend on who makes it, checked
/// on every path that changes a peer. On success `after.disabled_by` is brought up to
/// date. On refusal: the permission that would have been needed and the error.
///
/// - Routes: widening the networks routed to the peer needs `peer:route`.
/// - A disable by someone with more rights than the owner (or by the expiry sweep)
///   stands until someone with those rights lifts it; an expired peer is enabled only by
///   them.
/// - Without those rights an expiry may be set or shortened, never extended or lifted.
pub(super) fn check_peer_change(
    rights: PeerRights,
    before: &Peer,
    after: &mut Peer,
    now: OffsetDateTime,
) -> std::result::Result<(), (Action, Error)> {
    if widens_routes(Some(before), after) && !rights.route {
        return Err((
            Action::Route,
            Error::denied(
                "peer:route: extra allowed IPs and delegated prefixes beyond the peer's own \
                 addresses need the permission to route networks to peers",
            ),
        ));
    }
    if !rights.elevated {
        if !before.enabled && after.enabled {
            let held = before.disabled_by.is_none_or(DisabledBy::outranks_owner);
            if held {
                return Err((
                    Action::Update,
                    Error::denied(
                        "peer:update: the peer was disabled by an administrator or by its \
                         expiry; only someone who may change other users' peers can enable it",
                    ),
                ));
            }
            if after.is_expired(now) {
                return Err((
                    Action::Update,
                    Error::denied(
                        "peer:update: the peer has expired; only someone who may change other \
                         users' peers can enable it",
                    ),
                ));
            }
        }
        if after.expires_at != before.expires_at {
            let shortens = match (before.expires_at, after.expires_at) {
                (_, None) => false,
                (None, Some(_)) => true,
                (Some(b), Some(a)) => a <= b,
            };
            if !shortens {
                return Err((
                    Action::Update,
                    Error::denied(
                        "peer:update: a peer's expiry may be set or brought forward by its \
                         owner, never extended or lifted",
                    ),
                ));
            }
        }
    }
    if after.enabled {
        after.disabled_by = None;
    } else if before.enabled {
        after.disabled_by = Some(if rights.elevated {
            DisabledBy::Administrator
        } else {
            DisabledBy::Owner
        });
    } else if !rights.elevated {
        // Still disabled: the owner cannot change who holds it. (An elevated caller
        // who disables it again takes the hold over: see `Manager::change_peer`.)
        after.disabled_by = before.disabled_by;
    }
    Ok(())
}

impl Manager {
    fn peer_target(server: ServerId, owner: Option<UserId>) -> Target {
        Target::peer(server.0, owner.map(|u| u.0))
    }

    /// Object-level authorization of `action` on one peer: callers who may not even
    /// read it learn only that it does not exist. Returns the peer's owner.
    pub(super) async fn authorize_peer(
        &self,
        p: &Principal,
        server: ServerId,
        peer: PeerId,
        action: Action,
    ) -> Result<Option<UserId>> {
        let owner = self
            .peer_at_head(server, PeerLookup::Id(peer))
            .await?
            .map(|x| x.owner)
            .ok_or_else(|| Error::not_found("peer", peer))?;
        let target = Self::peer_target(server, owner);
        if crate::rbac::authorize(p, Resource::Peer, Action::Read, target).is_err() {
            return Err(self.hidden(p, Resource::Peer, target, "peer", peer).await);
        }
        if action != Action::Read {
            self.authorize(p, Resource::Peer, action, target).await?;
        }
        Ok(owner)
    }

    /// Resolve a peer by name (case-insensitive), public key or id within a server.
    pub async fn resolve_peer(
        &self,
        p: &Principal,
        server: ServerId,
        name_or_id: &str,
    ) -> Result<PeerId> {
        let found = if let Ok(id) = name_or_id.parse::<PeerId>() {
            self.peer_at_head(server, PeerLookup::Id(id)).await?
        } else if let Ok(k) = PublicKey::from_base64(name_or_id) {
            self.peer_at_head(server, PeerLookup::Key(&k)).await?
        } else {
            let name = PeerName::new(name_or_id)?;
            self.peer_at_head(server, PeerLookup::Name(&name)).await?
        };
        let (id, owner) = found
            .map(|p| (p.id, p.owner))
            .ok_or_else(|| Error::not_found("peer", shown_reference(name_or_id)))?;
        // Users who may not see the peer learn only that it does not exist.
        let target = Self::peer_target(server, owner);
        if crate::rbac::authorize(p, Resource::Peer, Action::Read, target).is_err() {
            return Err(self
                .hidden(
                    p,
                    Resource::Peer,
                    target,
                    "peer",
                    shown_reference(name_or_id),
                )
                .await);
        }
        Ok(id)
    }

    /// Add one peer (one revision).
    pub async fn add_peer(
        &self,
        p: &Principal,
        server: ServerId,
        spec: NewPeer,
    ) -> Result<PeerView> {
        let mut v = self.add_peers(p, server, vec![spec]).await?;
        v.pop()
            .ok_or_else(|| Error::invalid("peers", "nothing was added"))
    }

    /// Add many peers in one revision (bulk create, `--count`). All or nothing.
    pub async fn add_peers(
        &self,
        p: &Principal,
        server: ServerId,
        specs: Vec<NewPeer>,
    ) -> Result<Vec<PeerView>> {
        if specs.is_empty() {
            return Err(Error::invalid("peers", "at least one peer is required"));
        }
        let mut owners = HashSet::new();
        for s in &specs {
            let owner = s.owner.or_else(|| owner_of(p));
            owners.insert(owner);
        }
        for owner in &owners {
            self.authorize(
                p,
                Resource::Peer,
                Action::Create,
                Self::peer_target(server, *owner),
            )
            .await?;
            if *owner != owner_of(p) {
                // Creating a peer for someone else assigns ownership.
                self.authorize(p, Resource::Peer, Action::Assign, Target::server(server.0))
                    .await?;
            }
        }
        // Networks routed to the new peers beyond their own addresses.
        for s in &specs {
            if !s.extra_allowed_ips.is_empty() || s.prefix != AddrRequest::None {
                let owner = s.owner.or_else(|| owner_of(p));
                self.authorize(
                    p,
                    Resource::Peer,
                    Action::Route,
                    Self::peer_target(server, owner),
                )
                .await?;
            }
        }
        // Self-service quota: the user's own limit, else the one of their roles; it
        // counts the peers the user owns on every server.
        let quota = match owner_of(p) {
            Some(uid) => match self.store.get_user(uid).await? {
                Some(u) => u.peer_quota.or_else(|| p.peer_quota()),
                None => p.peer_quota(),
            },
            None => None,
        };
        let elsewhere = match (quota, owner_of(p)) {
            (Some(_), Some(uid)) => self.owned_peers_elsewhere(uid, server).await?,
            _ => 0,
        };
        let mut over_quota = false;
        let visible = |x: &Peer| {
            crate::rbac::authorize(
                p,
                Resource::Peer,
                Action::Read,
                Self::peer_target(server, x.owner),
            )
            .is_ok()
        };
        // Nothing but the server's settings and its address manager is needed when no
        // quota counts the owner's peers and no routed network must be checked against
        // the other peers': then a fresh process need not load them (`mutate_with`).
        let light = quota.is_none()
            && specs
                .iter()
                .all(|s| s.extra_allowed_ips.is_empty() && s.prefix == AddrRequest::None);
        let res = self
            .mutate_with(p, server, light.then_some(&[]), |c: &mut Cached, now| {
                if let (Some(q), Some(uid)) = (quota, owner_of(p)) {
                    let owned = c
                        .state
                        .peers
                        .values()
                        .filter(|x| x.owner == Some(uid))
                        .count();
                    if elsewhere + owned + specs.len() > q as usize {
                        over_quota = true;
                        return Err(Error::denied(format!(
                            "peer quota of {q} reached (peers owned on every server count)"
                        )));
                    }
                }
                let mut changes = Vec::with_capacity(specs.len());
                let mut views = Vec::with_capacity(specs.len());
                let mut names = HashSet::new();
                let mut keys = HashSet::new();
                for (i, spec) in specs.iter().enumerate() {
                    let peer = self
                        .build_peer(c, server, p, spec, now, &visible)
                        .map_err(|e| {
                            if specs.len() > 1 {
                                e.in_field(&format!("peers[{i}]"))
                            } else {
                                e
                            }
                        })?;
                    if !names.insert(peer.name.key()) {
                        return Err(Error::invalid(
                            format!("peers[{i}].peer.name"),
                            format!("{} appears twice in the request", peer.name),
                        ));
                    }
                    if !keys.insert(peer.public_key) {
                        return Err(Error::invalid(
                            format!("peers[{i}].peer.public_key"),
                            "appears twice in the request",
                        ));
                    }
                    views.push(PeerView::of(&peer));
                    changes.push(Change::PeerAdded {
                        peer: Box::new(peer),
                    });
                }
                let summary = if views.len() == 1 {
                    format!("add peer {}", views[0].name)
                } else {
                    format!("add {} peers", views.len())
                };
                let object = if views.len() == 1 {
                    format!("server/{server}/peer/{}", views[0].id)
                } else {
                    format!("server/{server}/peers")
                };
                Ok(Mutation {
                    summary,
                    action: AuditAction::PeerAdd,
                    object,
                    details: json!({ "count": views.len() }),
                    changes,
                    output: views,
                })
            })
            .await
            .and_then(|r| r.ok_or_else(|| Error::invalid("peers", "nothing was added")));
        match res {
            Ok((_, views)) => Ok(views),
            Err(e) if over_quota => Err(self
                .refusal(
                    p,
                    Resource::Peer,
                    Action::Create,
                    Self::peer_target(server, owner_of(p)),
                    e,
                )
                .await),
            Err(e) => Err(e),
        }
    }

    /// How many peers user `uid` owns on servers other than `except` (for the quota,
    /// which is per user, not per server).
    async fn owned_peers_elsewhere(&self, uid: UserId, except: ServerId) -> Result<usize> {
        let mut n = 0;
        for s in self.store.list_servers(crate::model::Page::ALL).await? {
            if s.id == except {
                continue;
            }
            let owned = self
                .read_server(s.id, |st| {
                    Ok(st.peers.values().filter(|x| x.owner == Some(uid)).count())
                })
                .await;
            match owned {
                Ok(k) => n += k,
                // Deleted since the listing.
                Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }

    /// Validate a new peer and allocate its addresses on the cached address manager.
    fn build_peer(
        &self,
        c: &mut Cached,
        server: ServerId,
        p: &Principal,
        spec: &NewPeer,
        now: OffsetDateTime,
        visible: &dyn Fn(&Peer) -> bool,
    ) -> Result<Peer> {
        let st = &c.state;
        if c.index.names.contains_key(&spec.name.key()) {
            return Err(name_taken(&spec.name));
        }
        if let Some(t) = spec.expires_at {
            if t <= now {
                return Err(Error::invalid("peer.expires_at", "must be in the future"));
            }
        }
        let id = PeerId::new_random();
        let (public_key, private_key) = if let Some(k) = spec.public_key {
            (k, None)
        } else {
            {
                let k = PrivateKey::generate();
                let sealed = self.sealer.seal_private_key(
                    &k,
                    SecretKind::PeerPrivateKey,
                    &id.to_string(),
                )?;
                (k.public_key(), Some(sealed))
            }
        };
        if public_key == st.server.public_key {
            return Err(Error::invalid(
                "peer.public_key",
                "must not be the server's own public key",
            ));
        }
        if c.index.keys.contains_key(&public_key) {
            return Err(Error::invalid(
                "peer.public_key",
                "is already used by another peer of this server",
            ));
        }
        check_extra_allowed_ips(st, None, &spec.extra_allowed_ips, visible)?;
        let strategy = st.server.strategy;
        let has_v4 = st.server.ipv4_pool.is_some();
        let default_keepalive = st.server.client_template.keepalive;
        // Allocate: explicit claims first, then automatic ones; all or nothing.
        let mut claimed: Vec<IpAddr> = Vec::new();
        let mut rng = rand::thread_rng();
        let result = (|| -> Result<(Option<Ipv6Addr>, Option<Ipv4Addr>, Option<Ipv6Net>)> {
            let v6_fixed = match spec.ipv6 {
                AddrRequest::None => {
                    return Err(Error::invalid(
                        "peer.ipv6",
                        "every peer gets an IPv6 address (IPv6 is always on)",
                    ))
                }
                AddrRequest::Fixed(a) => {
                    c.ipam
                        .claim(IpAddr::V6(a), "peer.ipv6", now)
                        .map_err(|e| as_input(e, "peer.ipv6"))?;
                    claimed.push(IpAddr::V6(a));
                    Some(a)
                }
                AddrRequest::Auto => None,
            };
            let v4_fixed = match spec.ipv4 {
                AddrRequest::Fixed(a) => {
                    if !has_v4 {
                        return Err(Error::invalid("peer.ipv4", "the server has no IPv4 pool"));
                    }
                    c.ipam
                        .claim(IpAddr::V4(a), "peer.ipv4", now)
                        .map_err(|e| as_input(e, "peer.ipv4"))?;
                    claimed.push(IpAddr::V4(a));
                    Some(a)
                }
                _ => None,
            };
            let want_v4_auto = has_v4 && matches!(spec.ipv4, AddrRequest::Auto);
            let (v6, v4) = match (v6_fixed, v4_fixed) {
                (Some(a6), fixed4) => {
                    let v4 = if want_v4_auto {
                        // Only IPv4 still to allocate.
                        let alloc = allocate_v4_only(c, strategy, &mut rng, now)?;
                        claimed.push(IpAddr::V4(alloc));
                        Some(alloc)
                    } else {
                        fixed4
                    };
                    (a6, v4)
                }
                (None, fixed4) => {
                    let a: Allocation =
                        c.ipam
                            .allocate_pair(strategy, want_v4_auto, &mut rng, now)?;
                    claimed.extend(a.addrs());
                    (a.v6, a.v4.or(fixed4))
                }
            };
            let prefix = match spec.prefix {
                AddrRequest::None => None,
                AddrRequest::Auto => Some(c.ipam.allocate_prefix(strategy, &mut rng, now)?),
                AddrRequest::Fixed(net) => {
                    c.ipam
                        .claim_prefix(net, "peer.prefix", now)
                        .map_err(|e| as_input(e, "peer.prefix"))?;
                    Some(net)
                }
            };
            Ok((Some(v6), v4, prefix))
        })();
        let (address_v6, address_v4, delegated_prefix) = match result {
            Ok(x) => x,
            Err(e) => {
                for a in claimed {
                    c.ipam.release(a);
                }
                return Err(e);
            }
        };
        let preshared_key = if spec.preshared_key {
            let psk = PresharedKey::generate();
            Some(self.sealer.seal_preshared_key(
                &psk,
                SecretKind::PeerPresharedKey,
                &id.to_string(),
            )?)
        } else {
            None
        };
        let owner = spec.owner.or_else(|| owner_of(p));
        Ok(Peer {
            id,
            server_id: server,
            name: spec.name.clone(),
            description: spec.description.clone(),
            owner,
            public_key,
            private_key,
            preshared_key,
            address_v6,
            address_v4,
            delegated_prefix,
            extra_allowed_ips: spec.extra_allowed_ips.clone(),
            client_allowed_ips: spec.client_allowed_ips.clone(),
            endpoint: spec.endpoint.clone(),
            keepalive: spec.keepalive.unwrap_or(default_keepalive),
            enabled: true,
            disabled_by: None,
            policy: crate::policy::PeerPolicy::default(),
            expires_at: spec.expires_at,
            config_path: None,
            stats: PeerStats::default(),
            created_at: now,
            updated_at: now,
        })
    }

    /// Show one peer.
    pub async fn get_peer(
        &self,
        p: &Principal,
        server: ServerId,
        peer: PeerId,
    ) -> Result<PeerView> {
        let v = self
            .peer_at_head(server, PeerLookup::Id(peer))
            .await?
            .map(|x| PeerView::of(&x))
            .ok_or_else(|| Error::not_found("peer", peer))?;
        let target = Self::peer_target(server, v.owner);
        if crate::rbac::authorize(p, Resource::Peer, Action::Read, target).is_err() {
            return Err(self.hidden(p, Resource::Peer, target, "peer", peer).await);
        }
        Ok(v)
    }

    /// List the peers of a server that the caller may see, ordered by name.
    pub async fn list_peers(&self, p: &Principal, server: ServerId) -> Result<Vec<PeerView>> {
        self.authorize(p, Resource::Server, Action::Read, Target::server(server.0))
            .await?;
        let mut v = self
            .read_server(server, |st| {
                Ok(st
                    .peers
                    .values()
                    .filter(|x| {
                        crate::rbac::authorize(
                            p,
                            Resource::Peer,
                            Action::Read,
                            Self::peer_target(server, x.owner),
                        )
                        .is_ok()
                    })
                    .map(PeerView::of)
                    .collect::<Vec<_>>())
            })
            .await?;
        v.sort_by_cached_key(|x| x.name.key());
        Ok(v)
    }

    /// Apply a closure to one peer as one revision, after object-level authorization.
    /// The closure gets the caller's [`PeerRights`]; whatever it changes is then held to
    /// [`check_peer_change`] (routes, disables, expiry), and a refusal there is audited.
    ///
    /// With `light`, the closure needs nothing of the other peers but what the store's
    /// uniqueness checks stand in for (their names and keys: the cache's index may hold
    /// only this peer), so a process that has not loaded the server need not
    /// ([`Manager::mutate_with`]).
    pub(super) async fn change_peer(
        &self,
        p: &Principal,
        server: ServerId,
        peer: PeerId,
        (action, light): (Action, bool),
        audit_action: AuditAction,
        mut f: impl FnMut(&mut Cached, &mut Peer, PeerRights, OffsetDateTime) -> Result<Vec<Change>>,
    ) -> Result<PeerView> {
        let owner = self.authorize_peer(p, server, peer, action).await?;
        let target = Self::peer_target(server, owner);
        let rights = PeerRights::of(p, target);
        let mut refused: Option<Action> = None;
        let only = [peer];
        let res = self
            .mutate_with(p, server, light.then_some(&only[..]), |c, now| {
                let before = c
                    .state
                    .peers
                    .get(&peer)
                    .cloned()
                    .ok_or_else(|| Error::not_found("peer", peer))?;
                if before.owner != owner {
                    return Err(Error::conflict("the peer's owner changed concurrently"));
                }
                let mut after = before.clone();
                let mut extra = f(c, &mut after, rights, now)?;
                if let Err((needed, e)) = check_peer_change(rights, &before, &mut after, now) {
                    refused = Some(needed);
                    return Err(e);
                }
                let changes = if after.without_stats() == before.without_stats() {
                    if extra.is_empty() {
                        return Err(Error::invalid("peer", "the update changes nothing"));
                    }
                    extra
                } else {
                    after.updated_at = now;
                    let mut v = vec![Change::PeerUpdated {
                        before: Box::new(before.clone()),
                        after: Box::new(after.clone()),
                    }];
                    v.append(&mut extra);
                    v
                };
                Ok(Mutation {
                    summary: format!(
                        "{} peer {}",
                        audit_action.as_str().trim_start_matches("peer."),
                        after.name
                    ),
                    action: audit_action.clone(),
                    object: format!("server/{server}/peer/{peer}"),
                    details: json!({}),
                    changes,
                    output: PeerView::of(&after),
                })
            })
            .await
            .and_then(|r| r.ok_or_else(|| Error::invalid("change", "nothing to change")));
        match (res, refused) {
            (Ok((_, view)), _) => Ok(view),
            (Err(e), Some(needed)) => Err(self.refusal(p, Resource::Peer, needed, target, e).await),
            (Err(e), None) => Err(e),
        }
    }

    /// Update a peer's settings (one revision).
    pub async fn update_peer(
        &self,
        p: &Principal,
        server: ServerId,
        peer: PeerId,
        u: PeerUpdate,
    ) -> Result<PeerView> {
        if u.owner.is_some() {
            // Changing ownership is an administrative act on users' objects.
            self.authorize(p, Resource::Peer, Action::Assign, Target::server(server.0))
                .await?;
        }
        if let Some(Some(t)) = u.expires_at {
            if t <= self.now() {
                return Err(Error::invalid("peer.expires_at", "must be in the future"));
            }
        }
        let visible = |x: &Peer| {
            crate::rbac::authorize(
                p,
                Resource::Peer,
                Action::Read,
                Self::peer_target(server, x.owner),
            )
            .is_ok()
        };
        // Routed networks are checked against every other peer's: only then is the
        // whole server needed.
        let light = u.extra_allowed_ips.is_none();
        self.change_peer(
            p,
            server,
            peer,
            (Action::Update, light),
            AuditAction::PeerUpdate,
            |c, after, rights, _now| {
                if let Some(n) = &u.name {
                    if let Some(other) = c.index.names.get(&n.key()) {
                        if *other != after.id {
                            return Err(name_taken(n));
                        }
                    }
                    after.name = n.clone();
                }
                if let Some(d) = &u.description {
                    after.description.clone_from(d);
                }
                if let Some(o) = u.owner {
                    after.owner = o;
                }
                if let Some(x) = &u.extra_allowed_ips {
                    check_extra_allowed_ips(&c.state, Some(after.id), x, &visible)?;
                    after.extra_allowed_ips.clone_from(x);
                }
                if let Some(x) = &u.client_allowed_ips {
                    after.client_allowed_ips.clone_from(x);
                }
                if let Some(k) = u.keepalive {
                    after.keepalive = k;
                }
                if let Some(e) = &u.endpoint {
                    after.endpoint.clone_from(e);
                }
                if let Some(t) = u.expires_at {
                    after.expires_at = t;
                }
                if let Some(en) = u.enabled {
                    after.enabled = en;
                    if !en && rights.elevated {
                        after.disabled_by = Some(DisabledBy::Administrator);
                    }
                }
                Ok(Vec::new())
            },
        )
        .await
    }

    /// Enable or disable a peer. A disabled peer is removed from the device but keeps
    /// its addresses and keys.
    pub async fn set_peer_enabled(
        &self,
        p: &Principal,
        server: ServerId,
        peer: PeerId,
        enabled: bool,
    ) -> Result<PeerView> {
        let action = if enabled {
            AuditAction::PeerEnable
        } else {
            AuditAction::PeerDisable
        };
        self.change_peer(
            p,
            server,
            peer,
            (Action::Update, true),
            action,
            |_, after, rights, _| {
                after.enabled = enabled;
                if !enabled && rights.elevated {
                    // An operator's disable holds even if the owner disabled it first.
                    after.disabled_by = Some(DisabledBy::Administrator);
                }
                Ok(Vec::new())
            },
        )
        .await
    }

    /// Set or clear a peer's expiry.
    pub async fn set_peer_expiry(
        &self,
        p: &Principal,
        server: ServerId,
        peer: PeerId,
        expires_at: Option<OffsetDateTime>,
    ) -> Result<PeerView> {
        self.update_peer(
            p,
            server,
            peer,
            PeerUpdate {
                expires_at: Some(expires_at),
                ..PeerUpdate::default()
            },
        )
        .await
    }

    /// Generate a new key pair for a peer (server-side keys; a bring-your-own-key peer
    /// becomes a server-keyed one).
    pub async fn rotate_peer_key(
        &self,
        p: &Principal,
        server: ServerId,
        peer: PeerId,
    ) -> Result<PeerView> {
        self.change_peer(
            p,
            server,
            peer,
            (Action::Update, true),
            AuditAction::PeerRotateKey,
            |c, after, _, _| {
                let k = PrivateKey::generate();
                let public = k.public_key();
                if public == c.state.server.public_key || c.index.keys.contains_key(&public) {
                    return Err(Error::conflict(
                        "the new key collides with an existing key; try again",
                    ));
                }
                after.private_key = Some(self.sealer.seal_private_key(
                    &k,
                    SecretKind::PeerPrivateKey,
                    &after.id.to_string(),
                )?);
                after.public_key = public;
                Ok(Vec::new())
            },
        )
        .await
    }

    /// Generate a new preshared key for a peer.
    pub async fn rotate_peer_psk(
        &self,
        p: &Principal,
        server: ServerId,
        peer: PeerId,
    ) -> Result<PeerView> {
        self.change_peer(
            p,
            server,
            peer,
            (Action::Update, true),
            AuditAction::PeerRotatePsk,
            |_, after, _, _| {
                let psk = PresharedKey::generate();
                after.preshared_key = Some(self.sealer.seal_preshared_key(
                    &psk,
                    SecretKind::PeerPresharedKey,
                    &after.id.to_string(),
                )?);
                Ok(Vec::new())
            },
        )
        .await
    }

    /// Bring back the key pair and preshared key peer `peer` had at revision `from`:
    /// the explicit, audited act that [`Manager::rollback`] never does (a rotated-out
    /// key may be why it was rotated). Needs `config:rollback` on the server and
    /// `peer:update` on the peer; one revision, audited as `peer.restore_keys`. Refused
    /// when the peer had no such revision, already has those keys, or another peer (or
    /// the server) holds that public key now. Secrets sealed under an earlier master
    /// key are sealed again under the current one.
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// use std::sync::Arc;
    /// use wgm_core::manager::{Manager, NewPeer, NewServer};
    /// use wgm_core::names::{InterfaceName, PeerName, ServerName};
    /// use wgm_core::net::ListenPort;
    /// use wgm_core::seal::{MasterKey, Sealer};
    /// use wgm_core::store::MemoryStore;
    ///
    /// let (m, local) = Manager::builder(Arc::new(MemoryStore::new()), Sealer::new(MasterKey::generate()))
    ///     .build_with_local_admin();
    /// let admin = local.principal("root");
    /// let s = m.create_server(&admin, NewServer::new(ServerName::new("s").unwrap(),
    ///     InterfaceName::new("wg0").unwrap(), ListenPort::new(51820).unwrap())).await.unwrap();
    /// let a = m.add_peer(&admin, s.id, NewPeer::new(PeerName::new("a").unwrap())).await.unwrap();
    /// m.rotate_peer_key(&admin, s.id, a.id).await.unwrap();
    /// let back = m.restore_peer_keys(&admin, s.id, a.id, wgm_core::model::RevisionNo(2)).await.unwrap();
    /// assert_eq!(back.public_key, a.public_key);
    /// # });
    /// ```
    pub async fn restore_peer_keys(
        &self,
        p: &Principal,
        server: ServerId,
        peer: PeerId,
        from: crate::model::RevisionNo,
    ) -> Result<PeerView> {
        self.authorize(
            p,
            Resource::Config,
            Action::Rollback,
            Target::server(server.0),
        )
        .await?;
        self.authorize_peer(p, server, peer, Action::Update).await?;
        let past = self.state_at(server, from).await?;
        let old = past.peers.get(&peer).cloned().ok_or_else(|| {
            Error::invalid(
                "revision",
                format!("the peer did not exist at revision {from}"),
            )
        })?;
        let pid = peer.to_string();
        let fresh = |kind: SecretKind, sealed: &crate::seal::SealedSecret| {
            if self.sealer.needs_reseal(sealed) {
                self.sealer.reseal(kind, &pid, sealed)
            } else {
                Ok(sealed.clone())
            }
        };
        let private_key = old
            .private_key
            .as_ref()
            .map(|k| fresh(SecretKind::PeerPrivateKey, k))
            .transpose()?;
        let preshared_key = old
            .preshared_key
            .as_ref()
            .map(|k| fresh(SecretKind::PeerPresharedKey, k))
            .transpose()?;
        self.change_peer(
            p,
            server,
            peer,
            (Action::Update, true),
            AuditAction::PeerRestoreKeys,
            |c, after, _, _| {
                if old.public_key == c.state.server.public_key
                    || c.index
                        .keys
                        .get(&old.public_key)
                        .is_some_and(|h| *h != peer)
                {
                    return Err(Error::conflict(format!(
                        "the public key the peer had at revision {from} is now held by another \
                         peer or the server"
                    )));
                }
                if after.public_key == old.public_key
                    && after.private_key == old.private_key
                    && after.preshared_key == old.preshared_key
                {
                    return Err(Error::invalid(
                        "revision",
                        format!("the peer already has the keys it had at revision {from}"),
                    ));
                }
                after.public_key = old.public_key;
                after.private_key.clone_from(&private_key);
                after.preshared_key.clone_from(&preshared_key);
                Ok(Vec::new())
            },
        )
        .await
    }

    /// Remove a peer. Its addresses are quarantined for the server's quarantine time.
    pub async fn remove_peer(&self, p: &Principal, server: ServerId, peer: PeerId) -> Result<()> {
        self.authorize_peer(p, server, peer, Action::Delete).await?;
        self.mutate_with(p, server, Some(&[peer]), |c, now| {
            let gone = c
                .state
                .peers
                .get(&peer)
                .cloned()
                .ok_or_else(|| Error::not_found("peer", peer))?;
            let changes = removal_changes(&c.state, std::slice::from_ref(&gone), now);
            Ok(Mutation {
                summary: format!("remove peer {}", gone.name),
                action: AuditAction::PeerRemove,
                object: format!("server/{server}/peer/{peer}"),
                details: json!({}),
                changes,
                output: (),
            })
        })
        .await?;
        Ok(())
    }

    /// Disable every enabled peer past its expiry (one revision per server that has
    /// any), as the system. Returns how many peers were disabled.
    pub async fn sweep_expired(&self, p: &Principal) -> Result<usize> {
        self.authorize(p, Resource::Peer, Action::Update, Target::none())
            .await?;
        let mut total = 0;
        for s in self.store.list_servers(crate::model::Page::ALL).await? {
            let res = self
                .mutate_if_any(p, s.id, |c, now| {
                    let mut changes = Vec::new();
                    for peer in c
                        .state
                        .peers
                        .values()
                        .filter(|x| x.enabled && x.is_expired(now))
                    {
                        let mut after = peer.clone();
                        after.enabled = false;
                        after.disabled_by = Some(DisabledBy::Expiry);
                        after.updated_at = now;
                        changes.push(Change::PeerUpdated {
                            before: Box::new(peer.clone()),
                            after: Box::new(after),
                        });
                    }
                    let n = changes.len();
                    Ok(Mutation {
                        summary: format!("disable {n} expired peers"),
                        action: AuditAction::PeerExpire,
                        object: format!("server/{}/peers", s.id),
                        details: json!({ "count": n }),
                        changes,
                        output: n,
                    })
                })
                .await;
            match res {
                Ok(Some((_, n))) => total += n,
                // No expired peer on this server (nothing was committed), or the server
                // was deleted since the listing.
                Ok(None) | Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(total)
    }
}

/// Allocate only an IPv4 address (the IPv6 one was fixed by the caller).
fn allocate_v4_only(
    c: &mut Cached,
    strategy: crate::ipam::Strategy,
    rng: &mut impl Rng,
    now: OffsetDateTime,
) -> Result<Ipv4Addr> {
    // Allocate a pair and give the IPv6 half back: the pair allocator is the one
    // all-or-nothing entry point for both families.
    let a = c.ipam.allocate_pair(strategy, true, rng, now)?;
    c.ipam.release(IpAddr::V6(a.v6));
    a.v4.ok_or_else(|| Error::invalid("peer.ipv4", "the server has no IPv4 pool"))
}

/// The changes that remove `peers`: one `PeerRemoved` each, plus a `ServerUpdated` that
/// records their addresses in the server's quarantine list (expired entries pruned).
pub(super) fn removal_changes(
    state: &ServerState,
    peers: &[Peer],
    now: OffsetDateTime,
) -> Vec<Change> {
    let mut changes: Vec<Change> = peers
        .iter()
        .map(|x| Change::PeerRemoved {
            peer: Box::new(x.clone()),
        })
        .collect();
    let secs = state.server.quarantine_secs;
    if secs > 0 {
        let until = now + time::Duration::seconds(i64::try_from(secs).unwrap_or(i64::MAX / 2));
        let before = state.server.clone();
        let mut after = before.clone();
        after.quarantine.retain(|q| q.until > now);
        for x in peers {
            for addr in x
                .address_v6
                .map(IpAddr::V6)
                .into_iter()
                .chain(x.address_v4.map(IpAddr::V4))
            {
                after.quarantine.push(Quarantined { addr, until });
            }
        }
        if after != before {
            changes.push(Change::ServerUpdated {
                before: Box::new(before),
                after: Box::new(after),
            });
        }
    }
    changes
}

/// How a peer reference appears in a not-found error: as given, unless it has the shape
/// of a key. A private key pasted where a public key belongs has that shape too, and an
/// error message is logged, shown and audited: it must not carry key material.
fn shown_reference(name_or_id: &str) -> &str {
    let b = name_or_id.as_bytes();
    let key_shaped = b.len() == 44
        && b[43] == b'='
        && b[..43]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/'));
    if key_shaped {
        "(the public key given)"
    } else {
        name_or_id
    }
}

/// A requested peer name that another peer of the server has: bad input (exit code 2
/// in the CLI), naming the field.
fn name_taken(name: &PeerName) -> Error {
    Error::invalid(
        "peer.name",
        format!("{name} is already used on this server (names are compared case-insensitively)"),
    )
}

/// An explicitly requested address that is taken (by the server or another peer) is
/// bad input naming the field, not a race: turn the allocator's conflict into that. The
/// allocator's message starts with the field; the reason leaves it out, since the error
/// names the field already (`invalid peer.ipv6: fd00::2 is already in use …`).
fn as_input(e: Error, field: &'static str) -> Error {
    match e {
        Error::Conflict { kind } => Error::InvalidInput {
            field: field.into(),
            reason: match kind {
                ConflictKind::Other { reason } => match reason.strip_prefix(field) {
                    Some(rest) if rest.starts_with(": ") => rest[2..].to_owned().into(),
                    _ => reason,
                },
                other => other.to_string().into(),
            },
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> NewPeer {
        NewPeer::new(PeerName::new("dev").unwrap())
    }

    #[test]
    fn a_taken_address_names_its_field_once() {
        let taken = Error::conflict("peer.ipv6: fd00::2 is already in use in the pool fd00::/64");
        assert_eq!(
            as_input(taken, "peer.ipv6").to_string(),
            "invalid peer.ipv6: fd00::2 is already in use in the pool fd00::/64"
        );
        // Only the field followed by ": " is its prefix.
        let longer = Error::conflict("peer.ipv6s differ");
        assert_eq!(
            as_input(longer, "peer.ipv6").to_string(),
            "invalid peer.ipv6: peer.ipv6s differ"
        );
        let other = Error::conflict("something else");
        assert_eq!(
            as_input(other, "peer.ipv4").to_string(),
            "invalid peer.ipv4: something else"
        );
    }

    #[test]
    fn a_key_shaped_reference_is_not_repeated() {
        let key = crate::keys::PrivateKey::generate();
        let text = key.expose_base64();
        assert_eq!(shown_reference(&text), "(the public key given)");
        assert_eq!(shown_reference("laptop"), "laptop");
    }

    fn refused(r: Result<Vec<NewPeer>>, rule: &str) {
        match r {
            Err(Error::InvalidInput { field, reason }) => {
                assert_eq!(field, "peer.count");
                assert!(reason.contains(rule), "{reason}");
            }
            other => panic!("expected InvalidInput on peer.count, got {other:?}"),
        }
    }

    #[test]
    fn numbered_names_each_copy_and_refuses_what_copies_cannot_share() {
        let peers = spec().numbered(3).unwrap();
        let names: Vec<&str> = peers.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["dev-1", "dev-2", "dev-3"]);
        assert!(peers
            .iter()
            .all(|p| p.preshared_key && p.ipv6 == AddrRequest::Auto));
        refused(spec().numbered(0), "at least 1");
        refused(spec().numbered(NewPeer::MAX_COUNT + 1), "at most 100000");
        assert_eq!(spec().numbered(NewPeer::MAX_COUNT).unwrap().len(), 100_000);

        let key = PrivateKey::generate().public_key();
        let fixed: Vec<(&str, NewPeer)> = vec![
            (
                "public key",
                NewPeer {
                    public_key: Some(key),
                    ..spec()
                },
            ),
            (
                "ipv6",
                NewPeer {
                    ipv6: AddrRequest::Fixed("fd00::9".parse().unwrap()),
                    ..spec()
                },
            ),
            (
                "ipv4",
                NewPeer {
                    ipv4: AddrRequest::Fixed("10.0.0.9".parse().unwrap()),
                    ..spec()
                },
            ),
            (
                "prefix",
                NewPeer {
                    prefix: AddrRequest::Fixed("fd00:1::/64".parse().unwrap()),
                    ..spec()
                },
            ),
            (
                "allowed ips",
                NewPeer {
                    extra_allowed_ips: vec!["192.168.1.0/24".parse().unwrap()],
                    ..spec()
                },
            ),
            (
                "endpoint",
                NewPeer {
                    endpoint: Some(Endpoint::parse("vpn.example.org:51820", "e").unwrap()),
                    ..spec()
                },
            ),
        ];
        for (what, s) in fixed {
            refused(s.numbered(2), "cannot be combined");
            // One peer may have anything fixed.
            let one = s.numbered(1).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(one[0].name.as_str(), "dev-1");
        }
    }
}
