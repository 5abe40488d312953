//! Sans-I/O half of the rtnetlink layer: builds the request messages and turns the
//! kernel's replies into plain values. Nothing here touches a socket, so every rule
//! (which address is ours to report, which route is ours, which flags a request carries)
//! is unit-tested with constructed messages and byte fixtures.
//!
//! The message types are those of `netlink-packet-route`, used through `rtnetlink`'s
//! re-exports so the two can never disagree on a version.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use rtnetlink::packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressProtocol,
    AddressScope,
};
use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::error::NetlinkError;

/// The main routing table (`RT_TABLE_MAIN`).
pub(crate) const MAIN_TABLE: u8 = RouteHeader::RT_TABLE_MAIN;

/// What the kernel says about one link, reduced to what the backend manages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LinkRecord {
    /// Interface index (changes when the link is deleted and recreated).
    pub index: u32,
    /// Administrative state (`IFF_UP`), as `ip link set up/down` sets it.
    pub up: bool,
    /// `IFLA_MTU`.
    pub mtu: u32,
    /// `IFLA_MIN_MTU`, when the kernel reports it.
    pub min_mtu: Option<u32>,
    /// `IFLA_MAX_MTU`, when the kernel reports it.
    pub max_mtu: Option<u32>,
}

/// `RTM_GETLINK` for one link by name (not a dump: the kernel answers `ENODEV` when
/// there is no such link). Equivalent of `ip link show dev NAME`.
pub(crate) fn get_link(name: &str) -> RouteNetlinkMessage {
    let mut msg = LinkMessage::default();
    msg.attributes.push(LinkAttribute::IfName(name.to_owned()));
    RouteNetlinkMessage::GetLink(msg)
}

/// `RTM_SETLINK` changing only what is given: the MTU and/or `IFF_UP` (through the
/// change mask, so no other flag is touched). Equivalent of
/// `ip link set dev NAME [mtu N] [up|down]`. `None` when there is nothing to change.
pub(crate) fn set_link(
    index: u32,
    mtu: Option<u32>,
    up: Option<bool>,
) -> Option<RouteNetlinkMessage> {
    if mtu.is_none() && up.is_none() {
        return None;
    }
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    if let Some(up) = up {
        msg.header.change_mask |= LinkFlags::Up;
        if up {
            msg.header.flags |= LinkFlags::Up;
        }
    }
    if let Some(mtu) = mtu {
        msg.attributes.push(LinkAttribute::Mtu(mtu));
    }
    Some(RouteNetlinkMessage::SetLink(msg))
}

/// Reads a link reply. `name` is only used in the error when `IFLA_MTU` is missing.
pub(crate) fn parse_link(msg: &LinkMessage, name: &str) -> Result<LinkRecord, NetlinkError> {
    let mut mtu = None;
    let mut min_mtu = None;
    let mut max_mtu = None;
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::Mtu(v) => mtu = Some(*v),
            LinkAttribute::MinMtu(v) => min_mtu = Some(*v),
            LinkAttribute::MaxMtu(v) => max_mtu = Some(*v),
            _ => {}
        }
    }
    let mtu = mtu.ok_or_else(|| NetlinkError::MissingAttribute {
        link: name.to_owned(),
        attribute: "IFLA_MTU",
    })?;
    Ok(LinkRecord {
        index: msg.header.index,
        up: msg.header.flags.contains(LinkFlags::Up),
        mtu,
        min_mtu,
        max_mtu,
    })
}

/// `RTM_NEWLINK` of kind `wireguard` named `name` (sent with `NLM_F_CREATE |
/// NLM_F_EXCL`). Equivalent of `ip link add dev NAME type wireguard`.
pub(crate) fn new_wireguard_link(name: &str) -> RouteNetlinkMessage {
    let mut msg = LinkMessage::default();
    msg.attributes.push(LinkAttribute::IfName(name.to_owned()));
    msg.attributes
        .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
            InfoKind::Wireguard,
        )]));
    RouteNetlinkMessage::NewLink(msg)
}

/// `RTM_DELLINK` of the link with index `index`. Equivalent of `ip link del dev NAME`,
/// by index so that a link recreated under the same name in between is not the one
/// removed.
pub(crate) fn del_link(index: u32) -> RouteNetlinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    RouteNetlinkMessage::DelLink(msg)
}

/// `RTM_GETLINK` dump of every link (`ip link show`); [`link_kind`] tells which are
/// WireGuard devices.
pub(crate) fn dump_links() -> RouteNetlinkMessage {
    RouteNetlinkMessage::GetLink(LinkMessage::default())
}

/// The link's kind (`IFLA_INFO_KIND`: `wireguard`, `veth`, …), `None` for a link
/// without one (a physical device, loopback).
pub(crate) fn link_kind(msg: &LinkMessage) -> Option<&InfoKind> {
    msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Kind(kind) => Some(kind),
            _ => None,
        }),
        _ => None,
    })
}

/// The link's name (`IFLA_IFNAME`).
pub(crate) fn link_name(msg: &LinkMessage) -> Option<&str> {
    msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(name) => Some(name.as_str()),
        _ => None,
    })
}

/// `RTM_GETADDR` dump of both families, filtered by interface index in the kernel
/// when the socket has `NETLINK_GET_STRICT_CHK` (and again by [`parse_address`]).
/// Equivalent of `ip address show dev NAME`.
pub(crate) fn dump_addresses(index: u32) -> RouteNetlinkMessage {
    let mut msg = AddressMessage::default();
    msg.header.family = AddressFamily::Unspec;
    msg.header.index = index;
    RouteNetlinkMessage::GetAddress(msg)
}

/// Whether an IPv6 address is link-local unicast (`fe80::/10`).
fn is_ipv6_link_local(a: Ipv6Addr) -> bool {
    (a.segments()[0] & 0xffc0) == 0xfe80
}

/// The address (with prefix length) an `RTM_NEWADDR` describes, if it belongs in
/// `LinkState.addresses` of link `index`.
///
/// Left out, because the kernel creates and owns them: addresses of other links,
/// addresses whose `IFA_PROTO` says the kernel made them (loopback, router
/// advertisement, link-local), and IPv6 link-local addresses (`fe80::/10`, generated
/// when a link with a hardware address goes up; kernels before 5.18 do not tag them)
/// unless their `IFA_PROTO` is `protocol`, i.e. this backend added them.
/// For point-to-point addresses (`IFA_LOCAL` differs from `IFA_ADDRESS`) the local
/// address is the one reported, as `ip address` does.
pub(crate) fn parse_address(msg: &AddressMessage, index: u32, protocol: u8) -> Option<IpNet> {
    if msg.header.index != index {
        return None;
    }
    let mut local = None;
    let mut address = None;
    let mut ours = false;
    for attr in &msg.attributes {
        match attr {
            AddressAttribute::Local(a) => local = Some(*a),
            AddressAttribute::Address(a) => address = Some(*a),
            AddressAttribute::Protocol(
                AddressProtocol::Loopback
                | AddressProtocol::RouterAnnouncement
                | AddressProtocol::LinkLocal,
            ) => return None,
            AddressAttribute::Protocol(AddressProtocol::Other(p)) => ours = *p == protocol,
            _ => {}
        }
    }
    let ip = local.or(address)?;
    let family_matches = matches!(
        (msg.header.family, ip),
        (AddressFamily::Inet, IpAddr::V4(_)) | (AddressFamily::Inet6, IpAddr::V6(_))
    );
    if !family_matches {
        return None;
    }
    if let IpAddr::V6(v6) = ip {
        if is_ipv6_link_local(v6) && !ours {
            return None;
        }
    }
    let net = IpNet::new(ip, msg.header.prefix_len).ok();
    if net.is_none() {
        tracing::warn!(index, %ip, prefix_len = msg.header.prefix_len, "kernel reported an address with an impossible prefix length; ignored");
    }
    net
}

/// `RTM_NEWADDR` adding `net` (address and prefix length) to link `index`, tagged with
/// `IFA_PROTO = protocol` so `ip address` shows which addresses wgm put there.
/// Equivalent of `ip address add NET dev NAME [nodad]`.
///
/// IPv6 addresses carry `IFA_F_NODAD`: without it the address is "tentative" for the
/// duration of duplicate address detection (about a second by default, longer with
/// more `dad_transmits`), and a tentative address cannot be used as a source or bound
/// to, so the first packets over a freshly applied interface would fail. DAD protects
/// against two hosts picking the same address on a shared link; here the addresses are
/// allocated uniquely by wgm's IPAM and a `WireGuard` link has no neighbour discovery to
/// detect anything with. The flag makes the address usable at once on every link type
/// (`WireGuard` and TUN devices skip DAD already because they are `IFF_NOARP`; links with
/// neighbour discovery such as dummy, veth or TAP would not).
pub(crate) fn add_address(index: u32, net: IpNet, protocol: u8) -> RouteNetlinkMessage {
    let mut msg = address_message(index, net);
    if net.addr().is_ipv6() {
        msg.header.flags = AddressHeaderFlags::Nodad;
        msg.attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
    }
    msg.attributes
        .push(AddressAttribute::Protocol(AddressProtocol::Other(protocol)));
    RouteNetlinkMessage::NewAddress(msg)
}

/// `RTM_DELADDR` removing exactly `net` (address and prefix length) from link `index`;
/// the kernel matches the index, the address and the prefix length, so an address with
/// another prefix or on another link is never removed. Equivalent of
/// `ip address del NET dev NAME`.
pub(crate) fn del_address(index: u32, net: IpNet) -> RouteNetlinkMessage {
    RouteNetlinkMessage::DelAddress(address_message(index, net))
}

fn address_message(index: u32, net: IpNet) -> AddressMessage {
    let mut msg = AddressMessage::default();
    msg.header.family = family_of(net.addr());
    msg.header.prefix_len = net.prefix_len();
    msg.header.scope = AddressScope::Universe;
    msg.header.index = index;
    // Like iproute2: IFA_LOCAL is the address, IFA_ADDRESS the same address when
    // there is no point-to-point peer.
    msg.attributes.push(AddressAttribute::Local(net.addr()));
    msg.attributes.push(AddressAttribute::Address(net.addr()));
    msg
}

fn family_of(ip: IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

/// The IP families the backend reads routes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    fn address_family(self) -> AddressFamily {
        match self {
            Family::V4 => AddressFamily::Inet,
            Family::V6 => AddressFamily::Inet6,
        }
    }
}

/// `RTM_GETROUTE` dump of one family, asking the kernel (strict checking) to return
/// only main-table routes of protocol `protocol` whose output interface is `index`.
/// [`parse_route`] applies the same filter again, for kernels that ignore it.
/// Equivalent of `ip route show table main proto PROTOCOL dev NAME`.
pub(crate) fn dump_routes(family: Family, index: u32, protocol: u8) -> RouteNetlinkMessage {
    let mut msg = RouteMessage::default();
    msg.header.address_family = family.address_family();
    msg.header.table = MAIN_TABLE;
    msg.header.protocol = RouteProtocol::from(protocol);
    msg.attributes.push(RouteAttribute::Oif(index));
    RouteNetlinkMessage::GetRoute(msg)
}

/// The destination of an `RTM_NEWROUTE`, if it is one of ours on link `index`: main
/// table, protocol `protocol`, unicast, a single next hop out of `index`, no source
/// prefix. Routes of any other owner, table or link are not reported (and never
/// touched).
pub(crate) fn parse_route(msg: &RouteMessage, index: u32, protocol: u8) -> Option<IpNet> {
    let h = &msg.header;
    if u8::from(h.protocol) != protocol
        || h.kind != RouteType::Unicast
        || h.source_prefix_length != 0
    {
        return None;
    }
    let mut table = u32::from(h.table);
    let mut oif = None;
    let mut destination = None;
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Destination(d) => destination = Some(d),
            // A multipath route is not one we create.
            RouteAttribute::MultiPath(_) => return None,
            _ => {}
        }
    }
    if table != u32::from(MAIN_TABLE) || oif != Some(index) {
        return None;
    }
    let ip = match (h.address_family, destination) {
        (AddressFamily::Inet, Some(RouteAddress::Inet(a))) => IpAddr::V4(*a),
        (AddressFamily::Inet6, Some(RouteAddress::Inet6(a))) => IpAddr::V6(*a),
        // No RTA_DST: the default route of the family.
        (AddressFamily::Inet, None) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        (AddressFamily::Inet6, None) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        _ => return None,
    };
    IpNet::new(ip, h.destination_prefix_length).ok()
}

/// `RTM_NEWROUTE` for `destination` out of link `index`, main table, protocol
/// `protocol`. IPv4 routes get scope link (as `ip route add … dev NAME` gives them:
/// the destination is directly on the link); IPv6 routes scope universe.
/// Equivalent of `ip route add DEST dev NAME table main proto PROTOCOL`.
pub(crate) fn add_route(index: u32, destination: IpNet, protocol: u8) -> RouteNetlinkMessage {
    let scope = if destination.addr().is_ipv4() {
        RouteScope::Link
    } else {
        RouteScope::Universe
    };
    RouteNetlinkMessage::NewRoute(route_message(index, destination, protocol, scope))
}

/// `RTM_DELROUTE` for `destination` out of link `index`, main table, protocol
/// `protocol`. The kernel deletes a route only when all of these match, so a route of
/// another owner (another `proto`) or on another link is never removed. Scope
/// "nowhere" means "any scope", as iproute2 sends it.
/// Equivalent of `ip route del DEST dev NAME table main proto PROTOCOL`.
pub(crate) fn del_route(index: u32, destination: IpNet, protocol: u8) -> RouteNetlinkMessage {
    RouteNetlinkMessage::DelRoute(route_message(
        index,
        destination,
        protocol,
        RouteScope::NoWhere,
    ))
}

fn route_message(index: u32, destination: IpNet, protocol: u8, scope: RouteScope) -> RouteMessage {
    let mut msg = RouteMessage::default();
    msg.header.address_family = family_of(destination.addr());
    msg.header.destination_prefix_length = destination.prefix_len();
    msg.header.table = MAIN_TABLE;
    msg.header.protocol = RouteProtocol::from(protocol);
    msg.header.scope = scope;
    msg.header.kind = RouteType::Unicast;
    let dst = match destination.addr() {
        IpAddr::V4(a) => RouteAddress::Inet(a),
        IpAddr::V6(a) => RouteAddress::Inet6(a),
    };
    msg.attributes.push(RouteAttribute::Destination(dst));
    msg.attributes.push(RouteAttribute::Oif(index));
    msg.attributes
        .push(RouteAttribute::Table(u32::from(MAIN_TABLE)));
    msg
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    /// Serialises a request as it goes on the wire, then parses it back.
    fn wire(msg: RouteNetlinkMessage) -> (Vec<u8>, RouteNetlinkMessage) {
        let mut nl = NetlinkMessage::from(msg);
        nl.finalize();
        let mut buf = vec![0u8; nl.buffer_len()];
        nl.serialize(&mut buf);
        let back = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf).unwrap();
        match back.payload {
            NetlinkPayload::InnerMessage(m) => (buf, m),
            other => panic!("not an inner message: {other:?}"),
        }
    }

    /// Finds a netlink attribute of `kind` in the attribute area of `buf` (after a
    /// 16-byte netlink header and a `header_len`-byte family header) and returns its
    /// payload.
    fn find_attr(buf: &[u8], header_len: usize, kind: u16) -> Option<Vec<u8>> {
        let mut at = 16 + header_len;
        while at + 4 <= buf.len() {
            let len = usize::from(u16::from_ne_bytes([buf[at], buf[at + 1]]));
            let ty = u16::from_ne_bytes([buf[at + 2], buf[at + 3]]) & 0x3fff;
            if len < 4 {
                return None;
            }
            if ty == kind {
                return Some(buf[at + 4..at + len].to_vec());
            }
            at += (len + 3) & !3;
        }
        None
    }

    // --- links ---

    #[test]
    fn link_reply_gives_index_state_and_mtu() {
        let mut msg = LinkMessage::default();
        msg.header.index = 7;
        msg.header.flags = LinkFlags::Up | LinkFlags::Running | LinkFlags::Noarp;
        msg.attributes.push(LinkAttribute::IfName("wg0".into()));
        msg.attributes.push(LinkAttribute::Mtu(1420));
        msg.attributes.push(LinkAttribute::MinMtu(0));
        msg.attributes.push(LinkAttribute::MaxMtu(65535));
        let rec = parse_link(&msg, "wg0").unwrap();
        assert_eq!(
            rec,
            LinkRecord {
                index: 7,
                up: true,
                mtu: 1420,
                min_mtu: Some(0),
                max_mtu: Some(65535)
            }
        );

        msg.header.flags = LinkFlags::Noarp;
        assert!(!parse_link(&msg, "wg0").unwrap().up);
    }

    #[test]
    fn link_reply_without_mtu_is_an_error_not_a_zero() {
        let msg = LinkMessage::default();
        let err = parse_link(&msg, "wg0").unwrap_err();
        assert!(err.to_string().contains("IFLA_MTU"), "{err}");
    }

    #[test]
    fn set_link_touches_only_the_up_flag_and_mtu() {
        assert!(set_link(3, None, None).is_none());

        let Some(RouteNetlinkMessage::SetLink(m)) = set_link(3, Some(1380), Some(false)) else {
            panic!("not a SetLink")
        };
        assert_eq!(m.header.index, 3);
        assert_eq!(m.header.change_mask, LinkFlags::Up);
        assert!(!m.header.flags.contains(LinkFlags::Up));
        assert_eq!(m.attributes, vec![LinkAttribute::Mtu(1380)]);

        let Some(RouteNetlinkMessage::SetLink(m)) = set_link(3, None, Some(true)) else {
            panic!("not a SetLink")
        };
        assert_eq!(m.header.flags, LinkFlags::Up);
        assert!(m.attributes.is_empty());

        let Some(RouteNetlinkMessage::SetLink(m)) = set_link(3, Some(1420), None) else {
            panic!("not a SetLink")
        };
        assert!(
            m.header.change_mask.is_empty(),
            "MTU-only change must not touch flags"
        );
        let (_, back) = wire(RouteNetlinkMessage::SetLink(m.clone()));
        assert_eq!(back, RouteNetlinkMessage::SetLink(m));
    }

    #[test]
    fn get_link_asks_by_name() {
        let (buf, back) = wire(get_link("wg0"));
        assert!(matches!(back, RouteNetlinkMessage::GetLink(_)));
        // IFLA_IFNAME = 3, NUL-terminated.
        assert_eq!(find_attr(&buf, 16, 3).unwrap(), b"wg0\0");
    }

    #[test]
    fn wireguard_links_are_created_deleted_and_recognised_by_kind() {
        let (buf, back) = wire(new_wireguard_link("wg0"));
        assert_eq!(find_attr(&buf, 16, 3).unwrap(), b"wg0\0");
        let RouteNetlinkMessage::NewLink(msg) = back else {
            panic!("not a NEWLINK")
        };
        assert_eq!(link_kind(&msg), Some(&InfoKind::Wireguard));
        assert_eq!(link_name(&msg), Some("wg0"));
        let (_, back) = wire(del_link(7));
        let RouteNetlinkMessage::DelLink(msg) = back else {
            panic!("not a DELLINK")
        };
        assert_eq!(msg.header.index, 7);
        assert_eq!(link_kind(&msg), None);
        let RouteNetlinkMessage::GetLink(all) = dump_links() else {
            panic!("not a GETLINK")
        };
        assert!(all.attributes.is_empty() && all.header.index == 0);
    }

    // --- addresses ---

    /// An `RTM_NEWADDR` as the kernel sends it in a dump: `fd00::1/64` on ifindex 3,
    /// flags permanent|nodad, with `IFA_ADDRESS` and `IFA_FLAGS`.
    const NEWADDR_V6: [u8; 52] = [
        52, 0, 0, 0, // nlmsg_len
        20, 0, // RTM_NEWADDR
        2, 0, // NLM_F_MULTI
        1, 0, 0, 0, // seq
        0, 0, 0, 0, // pid
        10, 64, 0x82, 0, // ifa_family AF_INET6, prefixlen 64, flags, scope universe
        3, 0, 0, 0, // ifa_index
        20, 0, 1, 0, // IFA_ADDRESS, len 20
        0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, //
        8, 0, 8, 0, // IFA_FLAGS, len 8
        0x82, 0, 0, 0,
    ];

    #[test]
    fn kernel_address_bytes_parse_to_an_ipnet() {
        let nl = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&NEWADDR_V6).unwrap();
        let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewAddress(m)) = nl.payload else {
            panic!("not RTM_NEWADDR")
        };
        assert_eq!(parse_address(&m, 3, 87), Some(net("fd00::1/64")));
        assert_eq!(
            parse_address(&m, 4, 87),
            None,
            "another link's address is not ours"
        );
    }

    fn addr_msg(
        index: u32,
        family: AddressFamily,
        prefix: u8,
        attrs: Vec<AddressAttribute>,
    ) -> AddressMessage {
        let mut m = AddressMessage::default();
        m.header.family = family;
        m.header.prefix_len = prefix;
        m.header.index = index;
        m.attributes = attrs;
        m
    }

    #[test]
    fn ipv4_address_prefers_local_over_peer_address() {
        let local: IpAddr = "10.0.0.1".parse().unwrap();
        let peer: IpAddr = "10.0.0.2".parse().unwrap();
        let m = addr_msg(
            2,
            AddressFamily::Inet,
            32,
            vec![
                AddressAttribute::Address(peer),
                AddressAttribute::Local(local),
            ],
        );
        assert_eq!(parse_address(&m, 2, 87), Some(net("10.0.0.1/32")));
        // Without IFA_LOCAL, IFA_ADDRESS is the address.
        let m = addr_msg(
            2,
            AddressFamily::Inet,
            24,
            vec![AddressAttribute::Address(local)],
        );
        assert_eq!(parse_address(&m, 2, 87), Some(net("10.0.0.1/24")));
    }

    #[test]
    fn kernel_generated_addresses_are_not_reported() {
        let ll: IpAddr = "fe80::1".parse().unwrap();
        let m = addr_msg(
            2,
            AddressFamily::Inet6,
            64,
            vec![AddressAttribute::Address(ll)],
        );
        assert_eq!(parse_address(&m, 2, 87), None, "IPv6 link-local");
        let ll2: IpAddr = "febf::1".parse().unwrap();
        let m = addr_msg(
            2,
            AddressFamily::Inet6,
            64,
            vec![AddressAttribute::Address(ll2)],
        );
        assert_eq!(parse_address(&m, 2, 87), None, "fe80::/10 covers febf::");
        // A link-local address this backend added (IFA_PROTO = ours) is reported.
        let m = addr_msg(
            2,
            AddressFamily::Inet6,
            64,
            vec![
                AddressAttribute::Address(ll),
                AddressAttribute::Protocol(AddressProtocol::Other(87)),
            ],
        );
        assert_eq!(parse_address(&m, 2, 87), Some(net("fe80::1/64")));
        assert_eq!(parse_address(&m, 2, 88), None, "another protocol's is not");
        let not_ll: IpAddr = "fec0::1".parse().unwrap();
        let m = addr_msg(
            2,
            AddressFamily::Inet6,
            64,
            vec![AddressAttribute::Address(not_ll)],
        );
        assert_eq!(parse_address(&m, 2, 87), Some(net("fec0::1/64")));

        let slaac: IpAddr = "2001:db8::abcd".parse().unwrap();
        let m = addr_msg(
            2,
            AddressFamily::Inet6,
            64,
            vec![
                AddressAttribute::Address(slaac),
                AddressAttribute::Protocol(AddressProtocol::RouterAnnouncement),
            ],
        );
        assert_eq!(
            parse_address(&m, 2, 87),
            None,
            "address from a router advertisement"
        );

        let ours = vec![
            AddressAttribute::Address(slaac),
            AddressAttribute::Protocol(AddressProtocol::Other(87)),
        ];
        let m = addr_msg(2, AddressFamily::Inet6, 64, ours);
        assert_eq!(parse_address(&m, 2, 87), Some(net("2001:db8::abcd/64")));
    }

    #[test]
    fn address_with_mismatched_family_or_no_address_is_ignored() {
        let v4: IpAddr = "10.0.0.1".parse().unwrap();
        let m = addr_msg(
            2,
            AddressFamily::Inet6,
            64,
            vec![AddressAttribute::Address(v4)],
        );
        assert_eq!(parse_address(&m, 2, 87), None);
        let m = addr_msg(
            2,
            AddressFamily::Inet,
            24,
            vec![AddressAttribute::Label("x".into())],
        );
        assert_eq!(parse_address(&m, 2, 87), None);
    }

    #[test]
    fn ipv6_address_request_carries_nodad_in_header_and_ifa_flags() {
        let (buf, back) = wire(add_address(5, net("fd42::1/64"), 87));
        let RouteNetlinkMessage::NewAddress(m) = back else {
            panic!("not RTM_NEWADDR")
        };
        assert_eq!(m.header.family, AddressFamily::Inet6);
        assert_eq!(m.header.prefix_len, 64);
        assert_eq!(m.header.index, 5);
        // ifaddrmsg.ifa_flags (byte 2 of the 8-byte header) has IFA_F_NODAD = 0x02.
        assert_eq!(buf[16 + 2], 0x02);
        // IFA_FLAGS (type 8) = IFA_F_NODAD.
        assert_eq!(find_attr(&buf, 8, 8).unwrap(), 0x02u32.to_ne_bytes());
        // IFA_PROTO (type 11) = our protocol number.
        assert_eq!(find_attr(&buf, 8, 11).unwrap(), vec![87]);
        assert_eq!(
            parse_address(&m, 5, 87),
            Some(net("fd42::1/64")),
            "request reads back as itself"
        );
    }

    #[test]
    fn ipv4_address_request_has_no_nodad_and_keeps_host_bits() {
        let (buf, back) = wire(add_address(5, net("10.42.0.1/24"), 87));
        let RouteNetlinkMessage::NewAddress(m) = back else {
            panic!("not RTM_NEWADDR")
        };
        assert_eq!(buf[16 + 2], 0);
        assert!(find_attr(&buf, 8, 8).is_none(), "no IFA_FLAGS on IPv4");
        // IFA_LOCAL (type 2) is the address itself, not the network.
        assert_eq!(find_attr(&buf, 8, 2).unwrap(), vec![10, 42, 0, 1]);
        assert_eq!(parse_address(&m, 5, 87), Some(net("10.42.0.1/24")));
    }

    #[test]
    fn delete_address_names_index_address_and_prefix() {
        let RouteNetlinkMessage::DelAddress(m) = del_address(9, net("fd42::1/64")) else {
            panic!("not RTM_DELADDR")
        };
        assert_eq!((m.header.index, m.header.prefix_len), (9, 64));
        assert_eq!(parse_address(&m, 9, 87), Some(net("fd42::1/64")));
    }

    #[test]
    fn address_dump_is_filtered_by_index() {
        let RouteNetlinkMessage::GetAddress(m) = dump_addresses(4) else {
            panic!()
        };
        assert_eq!(m.header.index, 4);
        assert_eq!(
            m.header.prefix_len, 0,
            "strict checking rejects a prefix in a dump request"
        );
        assert!(
            m.attributes.is_empty(),
            "strict checking rejects attributes in an address dump"
        );
    }

    // --- routes ---

    fn route(
        family: AddressFamily,
        proto: u8,
        table: u8,
        oif: u32,
        dst: Option<RouteAddress>,
        len: u8,
    ) -> RouteMessage {
        let mut m = RouteMessage::default();
        m.header.address_family = family;
        m.header.destination_prefix_length = len;
        m.header.table = table;
        m.header.protocol = RouteProtocol::from(proto);
        m.header.kind = RouteType::Unicast;
        if let Some(d) = dst {
            m.attributes.push(RouteAttribute::Destination(d));
        }
        m.attributes.push(RouteAttribute::Oif(oif));
        m
    }

    fn v6(s: &str) -> RouteAddress {
        RouteAddress::Inet6(s.parse().unwrap())
    }

    #[test]
    fn only_our_main_table_routes_on_our_link_are_reported() {
        let ours = route(
            AddressFamily::Inet6,
            87,
            MAIN_TABLE,
            3,
            Some(v6("fd42:1::")),
            64,
        );
        assert_eq!(parse_route(&ours, 3, 87), Some(net("fd42:1::/64")));

        let other_proto = route(
            AddressFamily::Inet6,
            4,
            MAIN_TABLE,
            3,
            Some(v6("fd42:1::")),
            64,
        );
        assert_eq!(
            parse_route(&other_proto, 3, 87),
            None,
            "proto static is someone else's"
        );
        let kernel = route(
            AddressFamily::Inet6,
            2,
            MAIN_TABLE,
            3,
            Some(v6("fd42::")),
            64,
        );
        assert_eq!(
            parse_route(&kernel, 3, 87),
            None,
            "prefix route of an address"
        );
        let other_link = route(
            AddressFamily::Inet6,
            87,
            MAIN_TABLE,
            4,
            Some(v6("fd42:1::")),
            64,
        );
        assert_eq!(parse_route(&other_link, 3, 87), None);
        let other_table = route(AddressFamily::Inet6, 87, 100, 3, Some(v6("fd42:1::")), 64);
        assert_eq!(parse_route(&other_table, 3, 87), None);

        let mut local = ours.clone();
        local.header.kind = RouteType::Local;
        assert_eq!(parse_route(&local, 3, 87), None);

        // RTA_TABLE wins over the 8-bit header field (tables above 255).
        let mut big_table = ours.clone();
        big_table.header.table = 252;
        big_table.attributes.push(RouteAttribute::Table(1000));
        assert_eq!(parse_route(&big_table, 3, 87), None);
        let mut main_by_attr = ours.clone();
        main_by_attr.header.table = 252;
        main_by_attr.attributes.push(RouteAttribute::Table(254));
        assert_eq!(parse_route(&main_by_attr, 3, 87), Some(net("fd42:1::/64")));

        let mut multipath = ours;
        multipath.attributes.push(RouteAttribute::MultiPath(vec![]));
        assert_eq!(parse_route(&multipath, 3, 87), None);
    }

    #[test]
    fn route_without_destination_is_the_default_route() {
        let m = route(AddressFamily::Inet, 87, MAIN_TABLE, 3, None, 0);
        assert_eq!(parse_route(&m, 3, 87), Some(net("0.0.0.0/0")));
        let m = route(AddressFamily::Inet6, 87, MAIN_TABLE, 3, None, 0);
        assert_eq!(parse_route(&m, 3, 87), Some(net("::/0")));
    }

    #[test]
    fn route_requests_round_trip_and_carry_our_protocol() {
        for (dst, scope) in [
            ("10.77.0.0/24", RouteScope::Link),
            ("fd42:7::/48", RouteScope::Universe),
        ] {
            let (_, back) = wire(add_route(6, net(dst), 87));
            let RouteNetlinkMessage::NewRoute(m) = back else {
                panic!("not RTM_NEWROUTE")
            };
            assert_eq!(m.header.scope, scope);
            assert_eq!(u8::from(m.header.protocol), 87);
            assert_eq!(m.header.table, MAIN_TABLE);
            assert_eq!(parse_route(&m, 6, 87), Some(net(dst)));

            let RouteNetlinkMessage::DelRoute(m) = del_route(6, net(dst), 87) else {
                panic!()
            };
            assert_eq!(m.header.scope, RouteScope::NoWhere);
            assert_eq!(
                parse_route(&m, 6, 87),
                Some(net(dst)),
                "delete names proto, table and link"
            );
        }
    }

    #[test]
    fn route_dump_filters_in_the_header_strict_checking_accepts() {
        let RouteNetlinkMessage::GetRoute(m) = dump_routes(Family::V6, 8, 87) else {
            panic!()
        };
        assert_eq!(m.header.address_family, AddressFamily::Inet6);
        assert_eq!(m.header.table, MAIN_TABLE);
        assert_eq!(u8::from(m.header.protocol), 87);
        // Strict checking rejects dst/src length, tos and scope in a dump request.
        assert_eq!(m.header.destination_prefix_length, 0);
        assert_eq!(m.header.scope, RouteScope::Universe);
        assert_eq!(m.attributes, vec![RouteAttribute::Oif(8)]);
    }
}
