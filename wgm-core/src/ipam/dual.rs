//! The per-server dual-stack allocator: IPv6 pool, optional IPv4 pool, optional prefix
//! delegation, and quarantine of released addresses and prefixes.

use super::{Pool, PrefixPool, Strategy};
use crate::{Error, Result};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use rand::Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use time::OffsetDateTime;

/// How many times [`DualStack::allocate_pair`] leapfrogs between the two pools looking
/// for a host index free in both before it allocates each family independently.
const PAIR_PROBES: usize = 32;

/// The addresses given to one peer by [`DualStack::allocate_pair`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Allocation {
    /// The peer's IPv6 address (always present: IPv6 is first-class).
    pub v6: Ipv6Addr,
    /// The peer's IPv4 address, when one was asked for.
    pub v4: Option<Ipv4Addr>,
}

impl Allocation {
    /// The addresses, IPv6 first.
    pub fn addrs(&self) -> impl Iterator<Item = IpAddr> {
        std::iter::once(IpAddr::V6(self.v6)).chain(self.v4.map(IpAddr::V4))
    }
}

/// Items held until a deadline, indexed both ways so expiry is `O(log n)` per item.
#[derive(Clone, Debug)]
struct Quarantine<K: Ord + Copy> {
    by_key: BTreeMap<K, OffsetDateTime>,
    by_deadline: BTreeSet<(OffsetDateTime, K)>,
}

impl<K: Ord + Copy> Default for Quarantine<K> {
    fn default() -> Self {
        Self {
            by_key: BTreeMap::new(),
            by_deadline: BTreeSet::new(),
        }
    }
}

impl<K: Ord + Copy> Quarantine<K> {
    /// Quarantines `k` until `until`, keeping the later deadline if already present.
    fn insert(&mut self, k: K, until: OffsetDateTime) {
        let until = match self.by_key.get(&k) {
            Some(&old) if old >= until => return,
            Some(&old) => {
                self.by_deadline.remove(&(old, k));
                until
            }
            None => until,
        };
        self.by_key.insert(k, until);
        self.by_deadline.insert((until, k));
    }

    fn remove(&mut self, k: K) -> Option<OffsetDateTime> {
        let until = self.by_key.remove(&k)?;
        self.by_deadline.remove(&(until, k));
        Some(until)
    }

    fn get(&self, k: K) -> Option<OffsetDateTime> {
        self.by_key.get(&k).copied()
    }

    /// Removes and returns the next item whose deadline is `<= now`.
    fn pop_expired(&mut self, now: OffsetDateTime) -> Option<K> {
        let &(until, k) = self.by_deadline.first()?;
        if until > now {
            return None;
        }
        self.by_deadline.remove(&(until, k));
        self.by_key.remove(&k);
        Some(k)
    }

    fn iter(&self) -> impl Iterator<Item = (K, OffsetDateTime)> + '_ {
        self.by_key.iter().map(|(&k, &t)| (k, t))
    }

    fn len(&self) -> usize {
        self.by_key.len()
    }
}

/// A server's address management: an IPv6 pool (required), an IPv4 pool (optional), a
/// delegation pool (optional), and quarantine.
///
/// Quarantined addresses stay held in their pool until their deadline; every method
/// that takes `now` first releases those whose deadline is `<= now`. Free counts and
/// [`DualStack::is_free`]'s pool view reflect the last such expiry.
///
/// To rebuild from stored state: [`reserve`](DualStack::reserve) the server's
/// addresses, [`claim`](DualStack::claim) each peer's addresses and prefixes, and
/// [`release_with_quarantine`](DualStack::release_with_quarantine) each persisted
/// quarantine entry (which holds an address that is not held yet).
///
/// ```
/// use wgm_core::ipam::{DualStack, Strategy};
/// use time::{macros::datetime, Duration};
///
/// let mut ipam = DualStack::new(
///     "fd00:42::/64".parse().unwrap(),
///     None,
///     Some(("fd00:43::/48".parse().unwrap(), 64)),
/// ).unwrap();
/// let mut rng = rand::thread_rng();
/// let now = datetime!(2025-01-01 0:00 UTC);
/// let a = ipam.allocate_pair(Strategy::Random, false, &mut rng, now).unwrap();
/// let site = ipam.allocate_prefix(Strategy::Sequential, &mut rng, now).unwrap();
/// assert_eq!(site.to_string(), "fd00:43::/64");
///
/// ipam.release_with_quarantine(a.v6.into(), now + Duration::days(1));
/// assert!(!ipam.is_free(a.v6.into(), now + Duration::hours(1)));
/// assert!(ipam.is_free(a.v6.into(), now + Duration::days(1)));
/// ```
#[derive(Clone, Debug)]
pub struct DualStack {
    v6: Pool,
    v4: Option<Pool>,
    prefixes: Option<PrefixPool>,
    quarantine: Quarantine<IpAddr>,
    prefix_quarantine: Quarantine<Ipv6Net>,
}

impl DualStack {
    /// Pools for one server. `delegation` is `(parent, prefix_len)`, e.g.
    /// `("fd00:1::/48", 64)`; delegatable prefixes overlapping the IPv6 address pool are
    /// reserved, and a delegation parent entirely inside the address pool is refused.
    pub fn new(
        v6: Ipv6Net,
        v4: Option<Ipv4Net>,
        delegation: Option<(Ipv6Net, u8)>,
    ) -> Result<Self> {
        let v6_pool = Pool::new(IpNet::V6(v6)).map_err(|e| e.in_field("ipv6"))?;
        let v4_pool = v4
            .map(|n| Pool::new(IpNet::V4(n)).map_err(|e| e.in_field("ipv4")))
            .transpose()?;
        let prefixes = match delegation {
            None => None,
            Some((parent, len)) => {
                let mut p = PrefixPool::new(parent, len)?;
                p.reserve_overlapping(v6);
                if p.free_count() == 0 {
                    return Err(Error::invalid(
                        "delegation.parent",
                        format!("{parent} lies entirely inside the address pool {v6}"),
                    ));
                }
                Some(p)
            }
        };
        Ok(Self {
            v6: v6_pool,
            v4: v4_pool,
            prefixes,
            quarantine: Quarantine::default(),
            prefix_quarantine: Quarantine::default(),
        })
    }

    /// The IPv6 pool.
    pub fn v6(&self) -> &Pool {
        &self.v6
    }

    /// The IPv4 pool, if any.
    pub fn v4(&self) -> Option<&Pool> {
        self.v4.as_ref()
    }

    /// The delegation pool, if any.
    pub fn prefixes(&self) -> Option<&PrefixPool> {
        self.prefixes.as_ref()
    }

    /// Free IPv6 addresses.
    pub fn free_v6(&self) -> u128 {
        self.v6.free_count()
    }

    /// Free IPv4 addresses, `None` without an IPv4 pool.
    pub fn free_v4(&self) -> Option<u128> {
        self.v4.as_ref().map(Pool::free_count)
    }

    /// Free delegatable prefixes, `None` without delegation.
    pub fn free_prefixes(&self) -> Option<u128> {
        self.prefixes.as_ref().map(PrefixPool::free_count)
    }

    /// Whether `addr` is an address some pool hands out: inside a pool and not one of
    /// its built-in exclusions. Only those can be held; an address outside the pools (an
    /// imported peer's, say) has nothing to hold back, and claiming it is an error.
    pub fn covers(&self, addr: IpAddr) -> bool {
        self.pool(addr).is_some_and(|p| p.exclusion(addr).is_none())
    }

    /// Whether `net` is one delegatable prefix of the delegation pool (right length,
    /// inside it). `false` without delegation.
    pub fn covers_prefix(&self, net: Ipv6Net) -> bool {
        self.prefixes
            .as_ref()
            .is_some_and(|p| p.index_of(net).is_some())
    }

    fn pool(&self, addr: IpAddr) -> Option<&Pool> {
        match addr {
            IpAddr::V6(_) => Some(&self.v6),
            IpAddr::V4(_) => self.v4.as_ref(),
        }
        .filter(|p| p.contains(addr))
    }

    /// The IPv6 pool, to change.
    pub(crate) fn v6_mut(&mut self) -> &mut Pool {
        &mut self.v6
    }

    /// The IPv4 pool, to change.
    pub(crate) fn v4_mut(&mut self) -> Option<&mut Pool> {
        self.v4.as_mut()
    }

    fn pool_mut(&mut self, addr: IpAddr) -> Option<&mut Pool> {
        match addr {
            IpAddr::V6(_) => Some(&mut self.v6),
            IpAddr::V4(_) => self.v4.as_mut(),
        }
        .filter(|p| p.contains(addr))
    }

    /// Releases every quarantined address and prefix whose deadline is `<= now`;
    /// returns how many were released.
    pub fn expire_quarantine(&mut self, now: OffsetDateTime) -> usize {
        let mut n = 0;
        while let Some(addr) = self.quarantine.pop_expired(now) {
            if let Some(pool) = self.pool_mut(addr) {
                pool.release(addr);
            }
            n += 1;
        }
        while let Some(net) = self.prefix_quarantine.pop_expired(now) {
            if let Some(p) = self.prefixes.as_mut() {
                p.release(net);
            }
            n += 1;
        }
        n
    }

    /// Whether `addr` could be claimed at `now` (an expired quarantine counts as free).
    pub fn is_free(&self, addr: IpAddr, now: OffsetDateTime) -> bool {
        let Some(pool) = self.pool(addr) else {
            return false;
        };
        if pool.is_free(addr) {
            return true;
        }
        // Held only by a quarantine that has run out by `now`.
        self.quarantine.get(addr).is_some_and(|until| until <= now)
    }

    /// The deadline of `addr`'s quarantine, if it is quarantined.
    pub fn quarantined_until(&self, addr: IpAddr) -> Option<OffsetDateTime> {
        self.quarantine.get(addr)
    }

    /// Quarantined addresses and their deadlines (ascending by address), so the caller
    /// can persist them.
    pub fn quarantined(&self) -> impl Iterator<Item = (IpAddr, OffsetDateTime)> + '_ {
        self.quarantine.iter()
    }

    /// Quarantined delegated prefixes and their deadlines.
    pub fn quarantined_prefixes(&self) -> impl Iterator<Item = (Ipv6Net, OffsetDateTime)> + '_ {
        self.prefix_quarantine.iter()
    }

    /// Number of quarantined addresses and prefixes.
    pub fn quarantine_len(&self) -> usize {
        self.quarantine.len() + self.prefix_quarantine.len()
    }

    fn quarantine_conflict(
        field: &str,
        what: impl std::fmt::Display,
        until: OffsetDateTime,
    ) -> Error {
        Error::conflict_of(crate::error::ConflictKind::Quarantined {
            field: field.to_owned(),
            value: what.to_string(),
            until,
        })
    }

    fn no_pool(addr: IpAddr, field: &'static str) -> Error {
        match addr {
            IpAddr::V6(_) => Error::invalid(field, format!("{addr} is outside the IPv6 pool")),
            IpAddr::V4(_) => Error::invalid(field, format!("{addr} is outside the IPv4 pool")),
        }
    }

    /// Reserves `addr` (the server's own address) in its pool; see [`Pool::reserve`].
    /// A still-quarantined address is a [`Error::Conflict`].
    pub fn reserve(&mut self, addr: IpAddr, now: OffsetDateTime) -> Result<()> {
        self.expire_quarantine(now);
        if let Some(until) = self.quarantine.get(addr) {
            return Err(Self::quarantine_conflict("reserved_address", addr, until));
        }
        self.pool_mut(addr)
            .ok_or_else(|| Self::no_pool(addr, "reserved_address"))?
            .reserve(addr)
    }

    /// Claims an explicit address for a peer; see [`Pool::claim`]. A still-quarantined
    /// address is a [`Error::Conflict`] naming its deadline.
    pub fn claim(&mut self, addr: IpAddr, field: &'static str, now: OffsetDateTime) -> Result<()> {
        self.expire_quarantine(now);
        if let Some(until) = self.quarantine.get(addr) {
            return Err(Self::quarantine_conflict(field, addr, until));
        }
        self.pool_mut(addr)
            .ok_or_else(|| Self::no_pool(addr, field))?
            .claim(addr, field)
    }

    /// Claims an explicit delegated prefix; see [`PrefixPool::claim`].
    pub fn claim_prefix(
        &mut self,
        net: Ipv6Net,
        field: &'static str,
        now: OffsetDateTime,
    ) -> Result<()> {
        self.expire_quarantine(now);
        if let Some(until) = self.prefix_quarantine.get(net) {
            return Err(Self::quarantine_conflict(field, net, until));
        }
        self.prefixes
            .as_mut()
            .ok_or_else(|| Error::invalid(field, "this server has no prefix delegation"))?
            .claim(net, field)
    }

    /// Frees `addr` at once (also ending its quarantine). Idempotent.
    pub fn release(&mut self, addr: IpAddr) {
        self.quarantine.remove(addr);
        if let Some(pool) = self.pool_mut(addr) {
            pool.release(addr);
        }
    }

    /// Frees both addresses of an allocation at once (for a create that failed after
    /// allocating: F3).
    pub fn release_allocation(&mut self, a: &Allocation) {
        for addr in a.addrs() {
            self.release(addr);
        }
    }

    /// Frees a delegated prefix at once (also ending its quarantine). Idempotent.
    pub fn release_prefix(&mut self, net: Ipv6Net) {
        self.prefix_quarantine.remove(net);
        if let Some(p) = self.prefixes.as_mut() {
            p.release(net);
        }
    }

    /// Releases `addr` into quarantine: it is not handed out (nor claimable) before
    /// `until`, and free from the first call with `now >= until`. An address that is not
    /// held yet becomes held (this is how a persisted quarantine is restored); a reserved
    /// address loses its reservation. A later deadline than an existing one extends it.
    /// Addresses outside the pools or excluded by rule are ignored.
    pub fn release_with_quarantine(&mut self, addr: IpAddr, until: OffsetDateTime) {
        let Some(pool) = self.pool_mut(addr) else {
            return;
        };
        let Some(index) = pool.index_of(addr) else {
            return;
        };
        if pool.hold_index(index) {
            self.quarantine.insert(addr, until);
        }
    }

    /// [`DualStack::release_with_quarantine`] for a delegated prefix.
    pub fn release_prefix_with_quarantine(&mut self, net: Ipv6Net, until: OffsetDateTime) {
        if let Some(p) = self.prefixes.as_mut() {
            if p.hold(net) {
                self.prefix_quarantine.insert(net, until);
            }
        }
    }

    /// Ends `addr`'s quarantine and keeps it held, for a rollback that gives the address
    /// back to the peer it was released from. Returns `false` when `addr` was not
    /// quarantined (then nothing changes; claim it instead).
    pub fn restore_quarantined(&mut self, addr: IpAddr) -> bool {
        self.quarantine.remove(addr).is_some()
    }

    /// [`DualStack::restore_quarantined`] for a delegated prefix.
    pub fn restore_quarantined_prefix(&mut self, net: Ipv6Net) -> bool {
        self.prefix_quarantine.remove(net).is_some()
    }

    /// Allocates one peer's addresses: always IPv6, and IPv4 when `want_v4`.
    ///
    /// With [`Strategy::Sequential`] and both families, the lowest host index free in
    /// both pools is used for both (`10.42.0.7` ↔ `fd42::7`), found by leapfrogging
    /// between the pools at most 32 times; failing that, each family gets its own lowest
    /// free address. With [`Strategy::Random`] each family is drawn independently.
    ///
    /// All or nothing (F2, F3): [`Error::PoolExhausted`] at once when either pool is
    /// full, and on any error nothing stays held. Asking for IPv4 on a server without an
    /// IPv4 pool is [`Error::InvalidInput`].
    pub fn allocate_pair<R: Rng + ?Sized>(
        &mut self,
        strategy: Strategy,
        want_v4: bool,
        rng: &mut R,
        now: OffsetDateTime,
    ) -> Result<Allocation> {
        self.expire_quarantine(now);
        if self.v6.free_count() == 0 {
            return Err(self.v6.exhausted());
        }
        if !want_v4 {
            let v6 = self.allocate_v6(strategy, rng)?;
            return Ok(Allocation { v6, v4: None });
        }
        let Some(v4_pool) = self.v4.as_ref() else {
            return Err(Error::invalid(
                "address.ipv4",
                "this server has no IPv4 pool",
            ));
        };
        if v4_pool.free_count() == 0 {
            return Err(v4_pool.exhausted());
        }
        if strategy == Strategy::Sequential {
            if let Some(i) = self.common_free_index(v4_pool) {
                if let (Some(IpAddr::V6(v6)), Some(IpAddr::V4(v4))) =
                    (self.v6.addr_at(i), v4_pool.addr_at(i))
                {
                    // `common_free_index` only returns an index free in both pools, so
                    // both takes succeed; the checks keep all-or-nothing regardless.
                    if self.v6.take_free_index(i) {
                        if self.v4.as_mut().is_some_and(|p| p.take_free_index(i)) {
                            return Ok(Allocation { v6, v4: Some(v4) });
                        }
                        self.v6.release_index(i);
                    }
                }
            }
        }
        let i6 = self.v6.allocate_index(strategy, rng)?;
        let i4 = match self.v4.as_mut().map(|p| p.allocate_index(strategy, rng)) {
            Some(Ok(i)) => i,
            Some(Err(e)) => {
                self.v6.release_index(i6);
                return Err(e);
            }
            None => {
                self.v6.release_index(i6);
                return Err(Error::invalid(
                    "address.ipv4",
                    "this server has no IPv4 pool",
                ));
            }
        };
        if let (Some(IpAddr::V6(v6)), Some(IpAddr::V4(v4))) = (
            self.v6.addr_at(i6),
            self.v4.as_ref().and_then(|p| p.addr_at(i4)),
        ) {
            return Ok(Allocation { v6, v4: Some(v4) });
        }
        // Unreachable: allocated indices are inside pools of their family.
        self.v6.release_index(i6);
        if let Some(p) = self.v4.as_mut() {
            p.release_index(i4);
        }
        Err(Error::invalid(
            "address",
            "allocated index outside its pool",
        ))
    }

    fn allocate_v6<R: Rng + ?Sized>(
        &mut self,
        strategy: Strategy,
        rng: &mut R,
    ) -> Result<Ipv6Addr> {
        let i = self.v6.allocate_index(strategy, rng)?;
        if let Some(IpAddr::V6(a)) = self.v6.addr_at(i) {
            return Ok(a);
        }
        // Unreachable: an allocated index is inside the IPv6 pool.
        self.v6.release_index(i);
        Err(Error::invalid(
            "address.ipv6",
            "allocated index outside its pool",
        ))
    }

    /// The lowest host index free in both pools, if the leapfrog finds one within
    /// [`PAIR_PROBES`] rounds.
    fn common_free_index(&self, v4: &Pool) -> Option<u128> {
        let mut i = v4.next_free_from(0)?;
        for _ in 0..PAIR_PROBES {
            let j = self.v6.next_free_from(i)?;
            if j == i {
                return Some(i);
            }
            i = v4.next_free_from(j)?;
            if i == j {
                return Some(i);
            }
        }
        None
    }

    /// Allocates a delegated prefix; [`Error::PoolExhausted`] at once when none is left,
    /// [`Error::InvalidInput`] when the server has no delegation.
    pub fn allocate_prefix<R: Rng + ?Sized>(
        &mut self,
        strategy: Strategy,
        rng: &mut R,
        now: OffsetDateTime,
    ) -> Result<Ipv6Net> {
        self.expire_quarantine(now);
        self.prefixes
            .as_mut()
            .ok_or_else(|| Error::invalid("prefix", "this server has no prefix delegation"))?
            .allocate(strategy, rng)
    }

    #[cfg(test)]
    pub(crate) fn check_invariants(&self) {
        self.v6.check_invariants();
        if let Some(p) = &self.v4 {
            p.check_invariants();
        }
        if let Some(p) = &self.prefixes {
            p.check_invariants();
        }
        for (addr, _) in self.quarantined() {
            assert!(
                self.pool(addr).is_some_and(|p| p.is_taken(addr)),
                "{addr} quarantined but not held"
            );
        }
        for (net, _) in self.quarantined_prefixes() {
            assert!(
                self.prefixes.as_ref().is_some_and(|p| p.is_taken(net)),
                "{net} quarantined but not held"
            );
        }
    }
}
