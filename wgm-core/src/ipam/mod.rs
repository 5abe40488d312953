//! Dual-stack IP address management: address pools, prefix delegation and quarantine.
//!
//! Pure and I/O-free: no clock is read (deadlines and `now` are passed in) and randomness
//! comes from the caller's [`rand::Rng`]. A server created without an IPv6 pool gets
//! [`crate::net::random_ula_prefix`], a random RFC 4193 `/64`.
//!
//! # Model
//! A pool is a space of **host indices** `0..size` (offsets from the network address).
//! Taken indices (allocated, claimed, reserved, quarantined) live in an interval set
//! (a `BTreeMap` of disjoint runs); the built-in exclusions below are computed
//! arithmetically and never stored. Every operation is therefore `O(log n)` in the
//! number of runs, whatever the pool size and however many addresses are allocated:
//! an IPv4 `/8` or an IPv6 `/48` costs the same as a `/24`, and the 100 000th allocation
//! costs about what the 1 000th does (see `benches/README.md`).
//!
//! # Addresses that are never handed out
//! - **IPv4** pools `/0`–`/30`: the network address (index 0) and the broadcast address
//!   (last index). A `/31` has 2 usable addresses and a `/32` has 1 (RFC 3021).
//! - **IPv6**, in every `/64` of the pool, by interface identifier (IID, the low 64 bits):
//!   - `::` — the subnet-router anycast address (RFC 4291 §2.6.1), IID 0;
//!   - `0200:5eff:fe00:0000`–`0200:5eff:feff:ffff` — reserved IIDs (RFC 5453 §3);
//!   - `fdff:ffff:ffff:ff80`–`fdff:ffff:ffff:ffff` — reserved subnet anycast addresses
//!     (RFC 2526 §2, the 128 anycast identifiers of EUI-64-format IIDs).
//!
//!   For a pool larger than a `/64` (a `/48`, say) the same three ranges are excluded in
//!   each of its `/64`s, arithmetically from the index (no list of 65 536 ranges is ever
//!   built). For a pool smaller than a `/64` (a `/126` in tests) the pool lies inside one
//!   `/64`: the ranges are excluded where they intersect the pool, and the pool's own
//!   network address (index 0, the subnet-router anycast address of the pool prefix) is
//!   excluded too. The all-ones IID is not reserved by any RFC and is handed out.
//! - Anything reserved (the server's own addresses), claimed, allocated, or quarantined
//!   (until its deadline passes relative to the `now` the caller passes in).
//!
//! Pools that overlap unspecified, loopback, link-local, multicast, IPv4 "this network"
//! (`0.0.0.0/8`), the limited broadcast address or IPv4-mapped IPv6 (`::ffff:0:0/96`)
//! are refused, as are pools with host bits set and pools with no usable address.
//!
//! # Strategies
//! [`Strategy::Sequential`] hands out the lowest free index (reusing gaps);
//! [`Strategy::Random`] draws uniformly over the pool a bounded number of times, then
//! takes the first free index after a random starting point, using the interval set to
//! jump over taken runs. A full pool fails with [`Error::PoolExhausted`] at once.
//!
//! ```
//! use wgm_core::ipam::{DualStack, Strategy};
//! use time::macros::datetime;
//!
//! let mut ipam = DualStack::new(
//!     "fd42:0:0:1::/64".parse().unwrap(),
//!     Some("10.42.0.0/24".parse().unwrap()),
//!     None,
//! ).unwrap();
//! let now = datetime!(2025-01-01 0:00 UTC);
//! ipam.reserve("fd42:0:0:1::1".parse().unwrap(), now).unwrap();   // the server
//! ipam.reserve("10.42.0.1".parse().unwrap(), now).unwrap();
//! let a = ipam.allocate_pair(Strategy::Sequential, true, &mut rand::thread_rng(), now).unwrap();
//! assert_eq!(a.v6.to_string(), "fd42:0:0:1::2");
//! assert_eq!(a.v4.unwrap().to_string(), "10.42.0.2");                // same host index
//! ```

mod dual;
mod held;
mod intervals;
mod pool;
mod prefix;
mod space;
#[cfg(test)]
mod tests;

pub use dual::{Allocation, DualStack};
pub use held::{HeldEdit, HeldRuns};
pub use pool::Pool;
pub use prefix::PrefixPool;

use crate::{Error, Result};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// How a free address (or prefix) is chosen.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// The lowest free host index; gaps left by released addresses are reused first.
    #[default]
    Sequential,
    /// A uniformly random free host index (for IPv6 privacy). Each family is drawn
    /// independently: pairing would tie the IPv6 interface identifier to the small IPv4
    /// host index and make it guessable.
    Random,
}

/// Why an address is never handed out, whoever asks (see the [module docs](self)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Exclusion {
    /// The IPv4 network address of a pool of `/30` or larger.
    Network,
    /// The IPv4 broadcast address of a pool of `/30` or larger.
    Broadcast,
    /// The IPv6 subnet-router anycast address (RFC 4291 §2.6.1).
    SubnetRouterAnycast,
    /// An IPv6 reserved subnet anycast address (RFC 2526).
    ReservedSubnetAnycast,
    /// An IPv6 reserved interface identifier (RFC 5453).
    ReservedInterfaceIdentifier,
}

impl fmt::Display for Exclusion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Exclusion::Network => "the network address",
            Exclusion::Broadcast => "the broadcast address",
            Exclusion::SubnetRouterAnycast => "the subnet-router anycast address (RFC 4291)",
            Exclusion::ReservedSubnetAnycast => "a reserved subnet anycast address (RFC 2526)",
            Exclusion::ReservedInterfaceIdentifier => "a reserved interface identifier (RFC 5453)",
        })
    }
}

/// Ranges no pool may overlap, with the reason given in the error.
const FORBIDDEN_V4: [(Ipv4Net, &str); 5] = [
    (
        Ipv4Net::new_assert(Ipv4Addr::UNSPECIFIED, 8),
        "\"this network\" (0.0.0.0/8)",
    ),
    (
        Ipv4Net::new_assert(Ipv4Addr::new(127, 0, 0, 0), 8),
        "loopback (127.0.0.0/8)",
    ),
    (
        Ipv4Net::new_assert(Ipv4Addr::new(169, 254, 0, 0), 16),
        "link-local (169.254.0.0/16)",
    ),
    (
        Ipv4Net::new_assert(Ipv4Addr::new(224, 0, 0, 0), 4),
        "multicast (224.0.0.0/4)",
    ),
    (
        Ipv4Net::new_assert(Ipv4Addr::BROADCAST, 32),
        "the limited broadcast address",
    ),
];
const FORBIDDEN_V6: [(Ipv6Net, &str); 5] = [
    (
        Ipv6Net::new_assert(Ipv6Addr::UNSPECIFIED, 128),
        "the unspecified address (::)",
    ),
    (
        Ipv6Net::new_assert(Ipv6Addr::LOCALHOST, 128),
        "loopback (::1)",
    ),
    (
        Ipv6Net::new_assert(Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0), 96),
        "IPv4-mapped addresses (::ffff:0:0/96)",
    ),
    (
        Ipv6Net::new_assert(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10),
        "link-local (fe80::/10)",
    ),
    (
        Ipv6Net::new_assert(Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8),
        "multicast (ff00::/8)",
    ),
];

/// Checks that `net` is a network (no host bits) that overlaps no forbidden range.
/// Refusing every overlap with `::`/`::1` also refuses `::/0`, so IPv6 index spaces
/// never exceed 2^127 and `u128` arithmetic cannot overflow.
pub(crate) fn check_network(net: IpNet, field: &'static str) -> Result<()> {
    if net.trunc() != net {
        return Err(Error::invalid(
            field,
            format!("{net} has host bits set (the network is {})", net.trunc()),
        ));
    }
    let clash = match net {
        IpNet::V4(n) => FORBIDDEN_V4
            .iter()
            .find(|(f, _)| n.contains(&f.network()) || f.contains(&n.network()))
            .map(|(_, why)| *why),
        IpNet::V6(n) => FORBIDDEN_V6
            .iter()
            .find(|(f, _)| n.contains(&f.network()) || f.contains(&n.network()))
            .map(|(_, why)| *why),
    };
    match clash {
        Some(why) => Err(Error::invalid(field, format!("{net} overlaps {why}"))),
        None => Ok(()),
    }
}
