//! One address family's pool.

use super::intervals::IntervalSet;
use super::space::{Rules, Space};
use super::{check_network, Exclusion, Strategy};
use crate::{Error, Result};
use ipnet::IpNet;
use rand::Rng;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The field name used in errors from [`Pool::reserve`].
const RESERVE_FIELD: &str = "reserved_address";

/// An address pool of one family: built-in exclusions, reservations (the server's own
/// addresses) and taken addresses, all in `O(log n)` per operation.
///
/// ```
/// use wgm_core::ipam::{Pool, Strategy};
/// let mut pool = Pool::new("10.8.0.0/24".parse().unwrap()).unwrap();
/// assert_eq!(pool.capacity(), 254);
/// pool.reserve("10.8.0.1".parse().unwrap()).unwrap();
/// let a = pool.allocate(Strategy::Sequential, &mut rand::thread_rng()).unwrap();
/// assert_eq!(a.to_string(), "10.8.0.2");
/// assert!(pool.claim("10.8.0.255".parse().unwrap(), "peer.address").is_err()); // broadcast
/// assert_eq!(pool.free_count(), 252);
/// ```
#[derive(Clone)]
pub struct Pool {
    net: IpNet,
    /// Integer value of the network address (an IPv4 address widened to `u128`).
    base: u128,
    space: Space,
    /// Reserved indices; always a subset of the taken ones.
    reserved: IntervalSet,
}

impl Pool {
    /// A pool over `net`. Rejects host bits set, pools overlapping unspecified, loopback,
    /// link-local, multicast or IPv4-mapped ranges, and pools with no usable address
    /// (an IPv6 `/128`).
    pub fn new(net: IpNet) -> Result<Self> {
        check_network(net, "pool")?;
        let host_bits = u32::from(net.max_prefix_len() - net.prefix_len());
        // check_network refuses ::/0, so an IPv6 pool has at most 2^127 indices and an
        // IPv4 pool at most 2^32: the shift cannot overflow.
        let size: u128 = 1u128 << host_bits;
        let (base, rules) = match net {
            IpNet::V4(n) => {
                let rules = if n.prefix_len() <= 30 {
                    Rules::V4NetworkBroadcast
                } else {
                    Rules::None
                };
                (u128::from(u32::from(n.network())), rules)
            }
            IpNet::V6(n) => {
                let base = u128::from(n.network());
                // Truncation to the low 64 bits is the point: the interface identifier.
                (
                    base,
                    Rules::V6 {
                        base_iid: base as u64,
                    },
                )
            }
        };
        let pool = Self {
            net,
            base,
            space: Space::new(size, rules),
            reserved: IntervalSet::for_size(size),
        };
        if pool.capacity() == 0 {
            return Err(Error::invalid(
                "pool",
                format!("{net} has no usable address"),
            ));
        }
        Ok(pool)
    }

    /// The pool's network.
    pub fn network(&self) -> IpNet {
        self.net
    }

    /// Whether `addr` lies in the pool's network (excluded addresses included).
    pub fn contains(&self, addr: IpAddr) -> bool {
        self.net.contains(&addr)
    }

    /// Number of host indices, excluded ones included (`2^(bits - prefix)`).
    pub fn size(&self) -> u128 {
        self.space.size()
    }

    /// Usable addresses after the built-in exclusions.
    pub fn capacity(&self) -> u128 {
        self.space.capacity()
    }

    /// Usable addresses neither reserved, claimed, allocated nor quarantined.
    pub fn free_count(&self) -> u128 {
        self.space.free_count()
    }

    /// Addresses held (reserved, claimed, allocated or quarantined).
    pub fn taken_count(&self) -> u128 {
        self.space.taken().len()
    }

    /// The host index of `addr` (its offset from the network address), if inside.
    pub fn index_of(&self, addr: IpAddr) -> Option<u128> {
        if !self.contains(addr) {
            return None;
        }
        let value = match addr {
            IpAddr::V4(a) => u128::from(u32::from(a)),
            IpAddr::V6(a) => u128::from(a),
        };
        Some(value - self.base)
    }

    /// The address at host index `index`, if inside the pool.
    pub fn addr_at(&self, index: u128) -> Option<IpAddr> {
        if index >= self.size() {
            return None;
        }
        let value = self.base + index;
        Some(match self.net {
            // Inside an IPv4 pool base + index < 2^32.
            IpNet::V4(_) => IpAddr::V4(Ipv4Addr::from(value as u32)),
            IpNet::V6(_) => IpAddr::V6(Ipv6Addr::from(value)),
        })
    }

    /// The built-in rule excluding `addr`, if it is inside the pool and excluded.
    pub fn exclusion(&self, addr: IpAddr) -> Option<Exclusion> {
        self.space.exclusion(self.index_of(addr)?)
    }

    /// Whether `addr` could be claimed now: inside, not excluded, not held.
    pub fn is_free(&self, addr: IpAddr) -> bool {
        self.index_of(addr).is_some_and(|i| self.space.is_free(i))
    }

    /// [`Pool::is_free`] by host index.
    pub fn is_free_index(&self, index: u128) -> bool {
        self.space.is_free(index)
    }

    /// Whether `addr` is held (reserved, claimed, allocated or quarantined).
    pub fn is_taken(&self, addr: IpAddr) -> bool {
        self.index_of(addr).is_some_and(|i| self.space.is_taken(i))
    }

    /// Whether `addr` is reserved.
    pub fn is_reserved(&self, addr: IpAddr) -> bool {
        self.index_of(addr)
            .is_some_and(|i| self.reserved.contains(i))
    }

    /// The reserved addresses, ascending.
    pub fn reserved(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.reserved
            .iter_runs()
            .flat_map(|(s, e)| s..=e)
            .filter_map(|i| self.addr_at(i))
    }

    /// Checks `index` for a claim or reservation: inside, not excluded, not held.
    fn check_claimable(&self, index: u128, field: &'static str) -> Result<()> {
        let Some(addr) = self.addr_at(index) else {
            return Err(Error::invalid(
                field,
                format!("host index {index} is outside the pool {}", self.net),
            ));
        };
        if let Some(why) = self.space.exclusion(index) {
            return Err(Error::invalid(
                field,
                format!("{addr} is {why} of the pool {}", self.net),
            ));
        }
        if self.reserved.contains(index) {
            return Err(Error::conflict(format!(
                "{field}: {addr} is reserved in the pool {} (the server's own address or an \
                 administrative reservation)",
                self.net
            )));
        }
        if self.space.is_taken(index) {
            return Err(Error::conflict(format!(
                "{field}: {addr} is already in use in the pool {}",
                self.net
            )));
        }
        Ok(())
    }

    fn index_for(&self, addr: IpAddr, field: &'static str) -> Result<u128> {
        self.index_of(addr).ok_or_else(|| {
            Error::invalid(field, format!("{addr} is outside the pool {}", self.net))
        })
    }

    /// Reserves `addr` (for example the server's own address) so it is never handed out.
    /// Reserving an already reserved address is a no-op; an excluded, outside or
    /// allocated address is an error.
    pub fn reserve(&mut self, addr: IpAddr) -> Result<()> {
        let index = self.index_for(addr, RESERVE_FIELD)?;
        if self.reserved.contains(index) {
            return Ok(());
        }
        self.check_claimable(index, RESERVE_FIELD)?;
        self.space.take(index);
        self.reserved.insert(index);
        Ok(())
    }

    /// Claims an explicit address for a peer. Errors name `field` and why: outside the
    /// pool, network/broadcast, a reserved IPv6 identifier ([`Error::InvalidInput`]);
    /// reserved for the server, or already in use ([`Error::Conflict`]).
    pub fn claim(&mut self, addr: IpAddr, field: &'static str) -> Result<()> {
        let index = self.index_for(addr, field)?;
        self.claim_index(index, field)
    }

    /// [`Pool::claim`] by host index.
    pub fn claim_index(&mut self, index: u128, field: &'static str) -> Result<()> {
        self.check_claimable(index, field)?;
        self.space.take(index);
        Ok(())
    }

    /// Holds every index of `[lo, hi]`, a run of indices peers held (read back from the
    /// durable allocator state, [`super::HeldRuns`]). `false` (and the pool unchanged
    /// only as far as already-held indices go) when the run leaves the pool, starts or
    /// ends on an excluded index, or overlaps something already held: the state does not
    /// fit this pool.
    pub(crate) fn hold_run(&mut self, lo: u128, hi: u128) -> bool {
        if lo > hi
            || hi >= self.size()
            || self.space.exclusion(lo).is_some()
            || self.space.exclusion(hi).is_some()
        {
            return false;
        }
        self.space.take_held_run(lo, hi) == hi - lo + 1
    }

    /// Takes `index` if it is free; returns whether it was taken.
    pub(crate) fn take_free_index(&mut self, index: u128) -> bool {
        index < self.size() && self.space.exclusion(index).is_none() && self.space.take(index)
    }

    /// Marks `index` held whatever held it before (reservation dropped); used by
    /// quarantine. Returns `false` (and does nothing) for outside or excluded indices.
    pub(crate) fn hold_index(&mut self, index: u128) -> bool {
        if index >= self.size() || self.space.exclusion(index).is_some() {
            return false;
        }
        self.reserved.remove(index);
        self.space.take(index);
        true
    }

    /// Frees `addr` (allocated, claimed or reserved). Idempotent; addresses outside the
    /// pool are ignored.
    pub fn release(&mut self, addr: IpAddr) {
        if let Some(index) = self.index_of(addr) {
            self.release_index(index);
        }
    }

    /// [`Pool::release`] by host index.
    pub fn release_index(&mut self, index: u128) {
        self.reserved.remove(index);
        self.space.untake(index);
    }

    /// Allocates a free host index by `strategy`.
    pub fn allocate_index<R: Rng + ?Sized>(
        &mut self,
        strategy: Strategy,
        rng: &mut R,
    ) -> Result<u128> {
        self.space
            .allocate(strategy, rng)
            .ok_or_else(|| self.exhausted())
    }

    /// Allocates a free address by `strategy`; [`Error::PoolExhausted`] at once when
    /// none is left.
    pub fn allocate<R: Rng + ?Sized>(&mut self, strategy: Strategy, rng: &mut R) -> Result<IpAddr> {
        let index = self.allocate_index(strategy, rng)?;
        self.addr_at(index).ok_or_else(|| self.exhausted())
    }

    /// The lowest free index `>= from`, without taking it.
    pub(crate) fn next_free_from(&self, from: u128) -> Option<u128> {
        self.space.next_free_from(from)
    }

    /// The [`Error::PoolExhausted`] for this pool.
    pub(crate) fn exhausted(&self) -> Error {
        Error::PoolExhausted {
            pool: self.net.to_string(),
        }
    }

    /// Number of runs in the taken set (tests: sequential allocations merge).
    #[cfg(test)]
    pub(crate) fn runs(&self) -> usize {
        self.space.taken().runs()
    }

    #[cfg(test)]
    pub(crate) fn check_invariants(&self) {
        self.space.taken().check_invariants();
        self.reserved.check_invariants();
        for (s, e) in self.reserved.iter_runs() {
            for i in s..=e {
                assert!(self.space.is_taken(i), "reserved index {i} is not taken");
            }
        }
        for (s, e) in self.space.taken().iter_runs() {
            assert!(e < self.size(), "taken run ends outside the pool");
            if e - s < 4096 {
                for i in s..=e {
                    assert!(
                        self.space.exclusion(i).is_none(),
                        "excluded index {i} is taken"
                    );
                }
            }
        }
    }
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("network", &self.net)
            .field("capacity", &self.capacity())
            .field("free", &self.free_count())
            .field("runs", &self.space.taken().runs())
            .finish_non_exhaustive()
    }
}
