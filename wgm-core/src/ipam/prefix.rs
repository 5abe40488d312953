//! Prefix delegation: routed prefixes of one length handed out from a parent prefix.

use super::intervals::IntervalSet;
use super::space::{Rules, Space};
use super::{check_network, Strategy};
use crate::{Error, Result};
use ipnet::{IpNet, Ipv6Net};
use rand::Rng;
use std::fmt;
use std::net::Ipv6Addr;

/// Delegated prefixes of length `prefix_len` out of `parent` (for example a `/64` per
/// routed site out of a `/48`), each routed to one peer through its allowed IPs.
/// Claim, release and allocate are `O(log n)`, like [`Pool`](super::Pool).
///
/// The prefixes are whole networks, so no address rule applies to them; the peer owning
/// one applies the per-`/64` rules inside it. Prefixes overlapping the server's address
/// pool are reserved by [`DualStack::new`](super::DualStack::new).
///
/// ```
/// use wgm_core::ipam::{PrefixPool, Strategy};
/// let mut p = PrefixPool::new("fd00:1::/48".parse().unwrap(), 64).unwrap();
/// assert_eq!(p.capacity(), 65536);
/// let first = p.allocate(Strategy::Sequential, &mut rand::thread_rng()).unwrap();
/// assert_eq!(first.to_string(), "fd00:1::/64");
/// p.claim("fd00:1:0:7::/64".parse().unwrap(), "peer.prefix").unwrap();
/// assert!(p.claim("fd00:1:0:7::/64".parse().unwrap(), "peer.prefix").is_err());
/// ```
#[derive(Clone)]
pub struct PrefixPool {
    parent: Ipv6Net,
    prefix_len: u8,
    /// Bits of the index inside the address: `128 - prefix_len` (at most 127).
    shift: u32,
    space: Space,
    reserved: IntervalSet,
}

impl PrefixPool {
    /// Prefixes of length `prefix_len` out of `parent`. Rejects host bits set, forbidden
    /// ranges (as for [`Pool::new`](super::Pool::new)) and `prefix_len` shorter than the
    /// parent's or longer than 128.
    pub fn new(parent: Ipv6Net, prefix_len: u8) -> Result<Self> {
        check_network(IpNet::V6(parent), "delegation.parent")?;
        if prefix_len < parent.prefix_len() || prefix_len > 128 {
            return Err(Error::invalid(
                "delegation.prefix_len",
                format!(
                    "must be between /{} (the parent's length) and /128",
                    parent.prefix_len()
                ),
            ));
        }
        // The parent is at least a /1 (check_network refuses ::/0), so at most 2^127
        // prefixes: the shift cannot overflow.
        let size = 1u128 << (prefix_len - parent.prefix_len());
        Ok(Self {
            parent,
            prefix_len,
            shift: 128 - u32::from(prefix_len),
            space: Space::new(size, Rules::None),
            reserved: IntervalSet::for_size(size),
        })
    }

    /// The parent prefix.
    pub fn parent(&self) -> Ipv6Net {
        self.parent
    }

    /// The length of the delegated prefixes.
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// Number of delegatable prefixes.
    pub fn capacity(&self) -> u128 {
        self.space.capacity()
    }

    /// Prefixes neither reserved, claimed, allocated nor quarantined.
    pub fn free_count(&self) -> u128 {
        self.space.free_count()
    }

    /// The index of `net` if it is exactly one delegatable prefix (right length, no
    /// host bits, inside the parent).
    pub fn index_of(&self, net: Ipv6Net) -> Option<u128> {
        (net.prefix_len() == self.prefix_len && net.trunc() == net && self.parent.contains(&net))
            .then(|| (u128::from(net.network()) - u128::from(self.parent.network())) >> self.shift)
    }

    /// The delegatable prefix at `index`, if inside.
    pub fn prefix_at(&self, index: u128) -> Option<Ipv6Net> {
        if index >= self.space.size() {
            return None;
        }
        let addr = Ipv6Addr::from(u128::from(self.parent.network()) + (index << self.shift));
        Ipv6Net::new(addr, self.prefix_len).ok()
    }

    /// Whether `net` is a delegatable prefix that is neither reserved nor held.
    pub fn is_free(&self, net: Ipv6Net) -> bool {
        self.index_of(net).is_some_and(|i| self.space.is_free(i))
    }

    /// Whether `net` is a delegatable prefix that is held.
    pub fn is_taken(&self, net: Ipv6Net) -> bool {
        self.index_of(net).is_some_and(|i| self.space.is_taken(i))
    }

    fn index_for(&self, net: Ipv6Net, field: &'static str) -> Result<u128> {
        self.index_of(net).ok_or_else(|| {
            Error::invalid(
                field,
                format!(
                    "{net} is not a /{} prefix inside the delegation prefix {}",
                    self.prefix_len, self.parent
                ),
            )
        })
    }

    /// Reserves every delegatable prefix that overlaps `net` (for example the server's
    /// address pool inside the delegation parent). Returns how many were newly reserved.
    /// Prefixes already claimed stay claimed (and become reserved).
    pub fn reserve_overlapping(&mut self, net: Ipv6Net) -> u128 {
        let net = net.trunc();
        if !(self.parent.contains(&net) || net.contains(&self.parent)) {
            return 0;
        }
        let (lo, hi) = if net.contains(&self.parent) {
            (0, self.space.size() - 1)
        } else if net.prefix_len() >= self.prefix_len {
            let i = (u128::from(net.network()) - u128::from(self.parent.network())) >> self.shift;
            (i, i)
        } else {
            let lo = (u128::from(net.network()) - u128::from(self.parent.network())) >> self.shift;
            // net is larger than one delegated prefix and inside the parent:
            // 2^(prefix_len - net.prefix_len) prefixes, at most the parent's count.
            (lo, lo + (1u128 << (self.prefix_len - net.prefix_len())) - 1)
        };
        self.space.take_range(lo, hi);
        self.reserved.insert_range(lo, hi)
    }

    /// Claims an explicit prefix. [`Error::InvalidInput`] naming `field` when it is not a
    /// delegatable prefix of this pool; [`Error::Conflict`] when reserved or in use.
    pub fn claim(&mut self, net: Ipv6Net, field: &'static str) -> Result<()> {
        let index = self.index_for(net, field)?;
        if self.reserved.contains(index) {
            return Err(Error::conflict(format!(
                "{field}: {net} is reserved (it overlaps the server's address pool)"
            )));
        }
        if !self.space.take(index) {
            return Err(Error::conflict(format!(
                "{field}: {net} is already delegated"
            )));
        }
        Ok(())
    }

    /// Marks `net` held whatever held it before; used by quarantine.
    pub(crate) fn hold(&mut self, net: Ipv6Net) -> bool {
        match self.index_of(net) {
            Some(i) if !self.reserved.contains(i) => {
                self.space.take(i);
                true
            }
            _ => false,
        }
    }

    /// Frees `net`. Idempotent; prefixes that are not delegatable here, and reserved
    /// prefixes, are ignored.
    pub fn release(&mut self, net: Ipv6Net) {
        if let Some(i) = self.index_of(net) {
            if !self.reserved.contains(i) {
                self.space.untake(i);
            }
        }
    }

    /// Allocates a free prefix by `strategy`; [`Error::PoolExhausted`] at once when none
    /// is left.
    pub fn allocate<R: Rng + ?Sized>(
        &mut self,
        strategy: Strategy,
        rng: &mut R,
    ) -> Result<Ipv6Net> {
        let exhausted = Error::PoolExhausted {
            pool: format!("{} (/{} prefixes)", self.parent, self.prefix_len),
        };
        let Some(index) = self.space.allocate(strategy, rng) else {
            return Err(exhausted);
        };
        if let Some(net) = self.prefix_at(index) {
            return Ok(net);
        }
        // Unreachable: allocated indices are inside the space.
        self.space.untake(index);
        Err(exhausted)
    }

    #[cfg(test)]
    pub(crate) fn check_invariants(&self) {
        self.space.taken().check_invariants();
        self.reserved.check_invariants();
    }
}

impl fmt::Debug for PrefixPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrefixPool")
            .field("parent", &self.parent)
            .field("prefix_len", &self.prefix_len)
            .field("capacity", &self.capacity())
            .field("free", &self.free_count())
            .finish_non_exhaustive()
    }
}
