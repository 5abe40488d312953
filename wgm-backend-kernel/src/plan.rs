//! Pure planning of one `apply_link`: checks the requested change against the live link
//! and turns it into the shortest ordered list of netlink operations.
//!
//! Keeping this apart from the socket makes the two properties that matter testable
//! without root: *idempotency* (an address or route that is already there is not added
//! again, one that is absent is not removed) and *order* (that of `wgm_core`'s
//! `LinkDelta`: MTU, removed addresses, added addresses, up/down, removed routes, added
//! routes; routes last because the kernel refuses a route through a down link).

use std::collections::BTreeSet;

use ipnet::IpNet;

use crate::codec::LinkRecord;
use crate::error::NetlinkError;

/// The smallest MTU any IPv4 link may have (RFC 791).
pub(crate) const MIN_MTU_IPV4: u32 = 68;
/// The smallest MTU of a link that carries IPv6 (RFC 8200); below it the kernel
/// disables IPv6 on the link and drops its IPv6 addresses.
pub(crate) const MIN_MTU_IPV6: u32 = 1280;

/// The live state of the managed link, as read just before applying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Live {
    /// The link itself.
    pub link: LinkRecord,
    /// Its addresses, as reported in `LinkState.addresses`.
    pub addresses: BTreeSet<IpNet>,
    /// Its routes of our protocol in the main table.
    pub routes: BTreeSet<IpNet>,
}

/// A requested change, borrowed from the caller's `LinkDelta`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Changes<'a> {
    /// Set the administrative state.
    pub up: Option<bool>,
    /// Set the MTU.
    pub mtu: Option<u32>,
    /// Addresses (with prefix length) to add.
    pub add_addresses: &'a [IpNet],
    /// Addresses (with prefix length) to remove.
    pub remove_addresses: &'a [IpNet],
    /// Route destinations to add through the link.
    pub add_routes: &'a [IpNet],
    /// Route destinations to remove from the link.
    pub remove_routes: &'a [IpNet],
}

/// One netlink operation, in the order [`plan`] returns them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// `RTM_SETLINK` with an MTU and/or the up flag.
    SetLink {
        /// New MTU.
        mtu: Option<u32>,
        /// New administrative state.
        up: Option<bool>,
    },
    /// `RTM_DELROUTE`.
    DelRoute(IpNet),
    /// `RTM_DELADDR`.
    DelAddress(IpNet),
    /// `RTM_NEWADDR`.
    AddAddress(IpNet),
    /// `RTM_NEWROUTE`.
    AddRoute(IpNet),
}

/// Checks `changes` against `live` and returns the operations that bring the link to
/// the requested state, skipping everything that already holds. An empty list means
/// the link is already as requested.
///
/// Rejected before anything is sent (as `InvalidInput`): an address or route that is
/// both added and removed, a route destination with host bits set (the kernel would
/// refuse the IPv4 one and silently mask the IPv6 one), an MTU below 68 or outside the
/// device's own `IFLA_MIN_MTU`..`IFLA_MAX_MTU`, and a new IPv6 address on a link whose
/// MTU is (or becomes) below 1280.
pub(crate) fn plan(live: &Live, changes: &Changes<'_>) -> Result<Vec<Op>, NetlinkError> {
    let add_addresses: BTreeSet<IpNet> = changes.add_addresses.iter().copied().collect();
    let remove_addresses: BTreeSet<IpNet> = changes.remove_addresses.iter().copied().collect();
    let add_routes: BTreeSet<IpNet> = changes.add_routes.iter().copied().collect();
    let remove_routes: BTreeSet<IpNet> = changes.remove_routes.iter().copied().collect();

    if let Some(both) = add_addresses.intersection(&remove_addresses).next() {
        return Err(NetlinkError::Invalid {
            field: "link.addresses",
            reason: format!("{both} is both added and removed"),
        });
    }
    if let Some(both) = add_routes.intersection(&remove_routes).next() {
        return Err(NetlinkError::Invalid {
            field: "link.routes",
            reason: format!("{both} is both added and removed"),
        });
    }
    if let Some(bad) = add_routes
        .iter()
        .chain(&remove_routes)
        .find(|r| r.trunc() != **r)
    {
        return Err(NetlinkError::Invalid {
            field: "link.routes",
            reason: format!(
                "route destination {bad} has host bits set (the network is {})",
                bad.trunc()
            ),
        });
    }

    let final_mtu = changes.mtu.unwrap_or(live.link.mtu);
    if let Some(mtu) = changes.mtu {
        check_mtu(mtu, &live.link)?;
    }
    // Linux drops a link's IPv6 addresses when its MTU goes below 1280 (that is
    // allowed, and read back as such) but refuses to add one; say so before anything
    // is sent rather than fail half-way with EINVAL.
    if final_mtu < MIN_MTU_IPV6 {
        if let Some(v6) = add_addresses
            .iter()
            .find(|a| a.addr().is_ipv6() && !live.addresses.contains(a))
        {
            return Err(NetlinkError::Invalid {
                field: "link.add_addresses",
                reason: format!(
                    "{v6} cannot be added: the link MTU {final_mtu} is below {MIN_MTU_IPV6}, the minimum for IPv6"
                ),
            });
        }
    }

    // The order of wgm_core's LinkDelta: MTU, removed addresses, added addresses,
    // up/down, removed routes, added routes. Routes come after the link is up because
    // the kernel refuses a route through a down link (ENETDOWN).
    let mut ops = Vec::new();
    if let Some(mtu) = changes.mtu.filter(|m| *m != live.link.mtu) {
        ops.push(Op::SetLink {
            mtu: Some(mtu),
            up: None,
        });
    }
    ops.extend(
        remove_addresses
            .iter()
            .filter(|a| live.addresses.contains(a))
            .map(|a| Op::DelAddress(*a)),
    );
    ops.extend(
        add_addresses
            .iter()
            .filter(|a| !live.addresses.contains(a))
            .map(|a| Op::AddAddress(*a)),
    );
    if let Some(up) = changes.up.filter(|u| *u != live.link.up) {
        ops.push(Op::SetLink {
            mtu: None,
            up: Some(up),
        });
    }
    ops.extend(
        remove_routes
            .iter()
            .filter(|r| live.routes.contains(r))
            .map(|r| Op::DelRoute(*r)),
    );
    ops.extend(
        add_routes
            .iter()
            .filter(|r| !live.routes.contains(r))
            .map(|r| Op::AddRoute(*r)),
    );
    Ok(ops)
}

fn check_mtu(mtu: u32, link: &LinkRecord) -> Result<(), NetlinkError> {
    if mtu < MIN_MTU_IPV4 {
        return Err(NetlinkError::Invalid {
            field: "link.mtu",
            reason: format!("{mtu} is below {MIN_MTU_IPV4}, the minimum MTU of any IP link"),
        });
    }
    // The kernel reports 0 when a device has no limit of its own.
    if let Some(min) = link.min_mtu.filter(|m| *m > 0) {
        if mtu < min {
            return Err(NetlinkError::Invalid {
                field: "link.mtu",
                reason: format!("{mtu} is below the device minimum {min}"),
            });
        }
    }
    if let Some(max) = link.max_mtu.filter(|m| *m > 0) {
        if mtu > max {
            return Err(NetlinkError::Invalid {
                field: "link.mtu",
                reason: format!("{mtu} is above the device maximum {max}"),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn nets(v: &[&str]) -> Vec<IpNet> {
        v.iter().map(|s| net(s)).collect()
    }

    fn live(up: bool, mtu: u32, addresses: &[&str], routes: &[&str]) -> Live {
        Live {
            link: LinkRecord {
                index: 4,
                up,
                mtu,
                min_mtu: Some(68),
                max_mtu: Some(65535),
            },
            addresses: nets(addresses).into_iter().collect(),
            routes: nets(routes).into_iter().collect(),
        }
    }

    #[test]
    fn nothing_to_do_when_the_link_already_matches() {
        let l = live(
            true,
            1420,
            &["fd42::1/64", "10.42.0.1/24"],
            &["fd42:1::/64"],
        );
        let add_a = nets(&["fd42::1/64", "10.42.0.1/24"]);
        let add_r = nets(&["fd42:1::/64"]);
        let rm_a = nets(&["fd99::1/64"]);
        let rm_r = nets(&["fd99::/64"]);
        let c = Changes {
            up: Some(true),
            mtu: Some(1420),
            add_addresses: &add_a,
            remove_addresses: &rm_a,
            add_routes: &add_r,
            remove_routes: &rm_r,
        };
        assert_eq!(plan(&l, &c).unwrap(), vec![]);
    }

    #[test]
    fn order_is_mtu_addresses_up_routes() {
        let l = live(false, 1500, &["fd42::9/64"], &["fd42:9::/64"]);
        let add_a = nets(&["fd42::1/64", "10.42.0.1/24"]);
        let add_r = nets(&["10.77.0.0/24"]);
        let rm_a = nets(&["fd42::9/64"]);
        let rm_r = nets(&["fd42:9::/64"]);
        let c = Changes {
            up: Some(true),
            mtu: Some(1420),
            add_addresses: &add_a,
            remove_addresses: &rm_a,
            add_routes: &add_r,
            remove_routes: &rm_r,
        };
        assert_eq!(
            plan(&l, &c).unwrap(),
            vec![
                Op::SetLink {
                    mtu: Some(1420),
                    up: None
                },
                Op::DelAddress(net("fd42::9/64")),
                Op::AddAddress(net("10.42.0.1/24")),
                Op::AddAddress(net("fd42::1/64")),
                Op::SetLink {
                    mtu: None,
                    up: Some(true)
                },
                Op::DelRoute(net("fd42:9::/64")),
                Op::AddRoute(net("10.77.0.0/24")),
            ]
        );
    }

    #[test]
    fn going_down_after_the_addresses() {
        let l = live(true, 1500, &["10.0.0.1/24"], &["10.9.0.0/24"]);
        let rm_a = nets(&["10.0.0.1/24"]);
        let rm_r = nets(&["10.9.0.0/24"]);
        let c = Changes {
            up: Some(false),
            mtu: Some(1400),
            remove_addresses: &rm_a,
            remove_routes: &rm_r,
            ..Changes::default()
        };
        assert_eq!(
            plan(&l, &c).unwrap(),
            vec![
                Op::SetLink {
                    mtu: Some(1400),
                    up: None
                },
                Op::DelAddress(net("10.0.0.1/24")),
                Op::SetLink {
                    mtu: None,
                    up: Some(false)
                },
                Op::DelRoute(net("10.9.0.0/24")),
            ]
        );
    }

    #[test]
    fn same_address_with_another_prefix_is_a_different_address() {
        let l = live(true, 1420, &["fd42::1/128"], &[]);
        let add = nets(&["fd42::1/64"]);
        let rm = nets(&["fd42::1/128"]);
        let c = Changes {
            add_addresses: &add,
            remove_addresses: &rm,
            ..Changes::default()
        };
        assert_eq!(
            plan(&l, &c).unwrap(),
            vec![
                Op::DelAddress(net("fd42::1/128")),
                Op::AddAddress(net("fd42::1/64"))
            ]
        );
    }

    #[test]
    fn duplicates_in_the_request_collapse() {
        let l = live(true, 1420, &[], &[]);
        let add = nets(&["fd42::1/64", "fd42::1/64"]);
        let c = Changes {
            add_addresses: &add,
            ..Changes::default()
        };
        assert_eq!(
            plan(&l, &c).unwrap(),
            vec![Op::AddAddress(net("fd42::1/64"))]
        );
    }

    #[test]
    fn contradictions_are_rejected() {
        let l = live(true, 1420, &[], &[]);
        let x = nets(&["fd42::1/64"]);
        let c = Changes {
            add_addresses: &x,
            remove_addresses: &x,
            ..Changes::default()
        };
        assert!(plan(&l, &c)
            .unwrap_err()
            .to_string()
            .contains("link.addresses"));
        let r = nets(&["fd42::/64"]);
        let c = Changes {
            add_routes: &r,
            remove_routes: &r,
            ..Changes::default()
        };
        assert!(plan(&l, &c)
            .unwrap_err()
            .to_string()
            .contains("link.routes"));
    }

    #[test]
    fn route_with_host_bits_is_rejected() {
        let l = live(true, 1420, &[], &[]);
        let r = nets(&["10.77.0.1/24"]);
        let c = Changes {
            add_routes: &r,
            ..Changes::default()
        };
        let e = plan(&l, &c).unwrap_err().to_string();
        assert!(e.contains("host bits") && e.contains("10.77.0.0/24"), "{e}");
    }

    #[test]
    fn mtu_rules() {
        let l = live(true, 1500, &[], &[]);
        let c = Changes {
            mtu: Some(67),
            ..Changes::default()
        };
        assert!(plan(&l, &c).unwrap_err().to_string().contains("link.mtu"));
        let c = Changes {
            mtu: Some(70000),
            ..Changes::default()
        };
        assert!(plan(&l, &c)
            .unwrap_err()
            .to_string()
            .contains("device maximum 65535"));
        let c = Changes {
            mtu: Some(1000),
            ..Changes::default()
        };
        assert_eq!(
            plan(&l, &c).unwrap(),
            vec![Op::SetLink {
                mtu: Some(1000),
                up: None
            }]
        );

        // Lowering the MTU of a link with IPv6 is allowed (Linux then drops its IPv6
        // addresses, and the read-back shows it) ...
        let l6 = live(true, 1500, &["fd42::1/64"], &[]);
        assert!(plan(&l6, &c).is_ok());
        // ... but a new IPv6 address on a link below 1280 is refused up front.
        let add = nets(&["fd42::2/64"]);
        let c = Changes {
            mtu: Some(1000),
            add_addresses: &add,
            ..Changes::default()
        };
        let e = plan(&l, &c).unwrap_err().to_string();
        assert!(
            e.contains("link.add_addresses") && e.contains("1280"),
            "{e}"
        );
        let l_small = live(true, 1000, &[], &[]);
        let c = Changes {
            add_addresses: &add,
            ..Changes::default()
        };
        assert!(plan(&l_small, &c).is_err());
        // Raising the MTU in the same delta makes it fine.
        let c = Changes {
            mtu: Some(1280),
            add_addresses: &add,
            ..Changes::default()
        };
        assert_eq!(
            plan(&l_small, &c).unwrap(),
            vec![
                Op::SetLink {
                    mtu: Some(1280),
                    up: None
                },
                Op::AddAddress(net("fd42::2/64"))
            ]
        );
        // IPv4 is fine on a small MTU.
        let add4 = nets(&["10.0.0.1/24"]);
        let c = Changes {
            add_addresses: &add4,
            ..Changes::default()
        };
        assert!(plan(&l_small, &c).is_ok());
    }

    #[test]
    fn device_without_mtu_limits_reports_zero_and_is_not_limited() {
        let mut l = live(true, 1500, &[], &[]);
        l.link.min_mtu = Some(0);
        l.link.max_mtu = Some(0);
        let c = Changes {
            mtu: Some(9000),
            ..Changes::default()
        };
        assert_eq!(
            plan(&l, &c).unwrap(),
            vec![Op::SetLink {
                mtu: Some(9000),
                up: None
            }]
        );
    }
}
