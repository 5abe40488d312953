//! A space of host indices `0..size` with arithmetic built-in exclusions and an
//! [`IntervalSet`] of taken indices. Shared by [`Pool`](super::Pool) (addresses) and
//! [`PrefixPool`](super::PrefixPool) (delegated prefixes).

use super::intervals::IntervalSet;
use super::{Exclusion, Strategy};
use rand::Rng;

/// How many uniformly random indices [`Space::pick`] tries before it falls back to
/// "random starting point, next free gap". Bounded so a nearly full pool costs at most
/// this many `O(log n)` probes plus one gap search.
pub(crate) const RANDOM_PROBES: usize = 16;

/// IPv6 interface-identifier ranges excluded in every `/64` (inclusive bounds, in the
/// low 64 bits of the address), with the rule each one comes from.
pub(crate) const V6_IID_RANGES: [(u64, u64, Exclusion); 3] = [
    // RFC 4291 §2.6.1: subnet-router anycast, the all-zero interface identifier.
    (0, 0, Exclusion::SubnetRouterAnycast),
    // RFC 5453 §3: IANA Ethernet-block IIDs 0200:5EFF:FE00:0000–0200:5EFF:FEFF:FFFF
    // (including the Proxy Mobile IPv6 identifier 0200:5EFF:FE00:5213).
    (
        0x0200_5eff_fe00_0000,
        0x0200_5eff_feff_ffff,
        Exclusion::ReservedInterfaceIdentifier,
    ),
    // RFC 2526 §2 (EUI-64 format): reserved subnet anycast, FDFF:FFFF:FFFF:FF80–…:FFFF.
    (
        0xfdff_ffff_ffff_ff80,
        0xfdff_ffff_ffff_ffff,
        Exclusion::ReservedSubnetAnycast,
    ),
];

/// The built-in exclusion rule of a space, evaluated arithmetically (never materialised).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rules {
    /// No built-in exclusions (delegated prefixes; IPv4 `/31` and `/32`).
    None,
    /// IPv4 `/0`–`/30`: index 0 (network) and `size - 1` (broadcast).
    V4NetworkBroadcast,
    /// IPv6: index 0 (subnet-router anycast of the pool prefix) and the
    /// [`V6_IID_RANGES`] of every `/64`. `base_iid` is the interface identifier of the
    /// pool's network address (0 for pools of `/64` or larger).
    V6 {
        /// Low 64 bits of the pool's network address.
        base_iid: u64,
    },
}

/// Host indices `0..size`: built-in exclusions by rule, taken indices in an interval set.
///
/// Invariant: every taken index is `< size` and not excluded, so
/// `free = capacity - taken.len()` holds without any scan.
#[derive(Clone, Debug)]
pub(crate) struct Space {
    size: u128,
    rules: Rules,
    taken: IntervalSet,
}

impl Space {
    /// A space of `size` indices (`size >= 1`) under `rules`.
    pub(crate) fn new(size: u128, rules: Rules) -> Self {
        Self {
            size,
            rules,
            taken: IntervalSet::for_size(size),
        }
    }

    /// Number of host indices, excluded ones included.
    pub(crate) fn size(&self) -> u128 {
        self.size
    }

    /// The taken indices.
    pub(crate) fn taken(&self) -> &IntervalSet {
        &self.taken
    }

    fn iid(base_iid: u64, i: u128) -> u64 {
        // For pools of /64 or larger `base_iid` is 0 and the IID is the low 64 bits of
        // the index (the truncation is the point); smaller pools lie inside one /64, so
        // `base_iid + i` stays below 2^64.
        base_iid.wrapping_add(i as u64)
    }

    /// The built-in rule that excludes index `i`, if any (`i < size`).
    pub(crate) fn exclusion(&self, i: u128) -> Option<Exclusion> {
        match self.rules {
            Rules::None => None,
            Rules::V4NetworkBroadcast => {
                if i == 0 {
                    Some(Exclusion::Network)
                } else if i == self.size - 1 {
                    Some(Exclusion::Broadcast)
                } else {
                    None
                }
            }
            Rules::V6 { base_iid } => {
                if i == 0 {
                    return Some(Exclusion::SubnetRouterAnycast);
                }
                let iid = Self::iid(base_iid, i);
                V6_IID_RANGES
                    .iter()
                    .find(|(lo, hi, _)| (*lo..=*hi).contains(&iid))
                    .map(|r| r.2)
            }
        }
    }

    /// When index `i` is excluded, the last index of the excluded run it starts
    /// (capped at `size - 1`); `None` when `i` is not excluded.
    fn excluded_run_end(&self, i: u128) -> Option<u128> {
        match self.rules {
            Rules::None => None,
            Rules::V4NetworkBroadcast => (i == 0 || i == self.size - 1).then_some(i),
            Rules::V6 { base_iid } => {
                let iid = Self::iid(base_iid, i);
                let mut end = (i == 0).then_some(0u128);
                for (lo, hi, _) in V6_IID_RANGES {
                    if (lo..=hi).contains(&iid) {
                        let e = i + u128::from(hi - iid);
                        end = Some(end.map_or(e, |x| x.max(e)));
                    }
                }
                end.map(|e| e.min(self.size - 1))
            }
        }
    }

    /// Number of excluded indices, computed arithmetically.
    pub(crate) fn excluded_count(&self) -> u128 {
        match self.rules {
            Rules::None => 0,
            Rules::V4NetworkBroadcast => 2,
            Rules::V6 { base_iid } => {
                if self.size >= 1 << 64 {
                    // Whole /64 blocks: the same ranges in each.
                    let per_block: u128 = V6_IID_RANGES
                        .iter()
                        .map(|(lo, hi, _)| u128::from(hi - lo) + 1)
                        .sum();
                    (self.size >> 64) * per_block
                } else {
                    // Inside one /64: the window [base, base + size - 1] of IIDs.
                    let w_lo = u128::from(base_iid);
                    let w_hi = w_lo + self.size - 1;
                    let mut n = 0u128;
                    let mut zero_covered = false;
                    for (lo, hi, _) in V6_IID_RANGES {
                        let (lo, hi) = (u128::from(lo), u128::from(hi));
                        let (a, b) = (lo.max(w_lo), hi.min(w_hi));
                        if a <= b {
                            n += b - a + 1;
                        }
                        zero_covered |= (lo..=hi).contains(&w_lo);
                    }
                    // Index 0 (the pool's own subnet-router anycast) unless a range
                    // above already counted it.
                    n + u128::from(!zero_covered)
                }
            }
        }
    }

    /// Usable indices: size minus built-in exclusions.
    pub(crate) fn capacity(&self) -> u128 {
        self.size - self.excluded_count()
    }

    /// Usable indices not taken.
    pub(crate) fn free_count(&self) -> u128 {
        self.capacity() - self.taken.len()
    }

    /// Whether `i` is inside, not excluded and not taken.
    pub(crate) fn is_free(&self, i: u128) -> bool {
        i < self.size && self.exclusion(i).is_none() && !self.taken.contains(i)
    }

    /// Whether `i` is taken.
    pub(crate) fn is_taken(&self, i: u128) -> bool {
        self.taken.contains(i)
    }

    /// The lowest free index `>= from`. Each step jumps over a whole excluded run or a
    /// whole taken run, so the cost is `O(log n)` per run crossed; runs only alternate
    /// where a taken run ends exactly at a built-in exclusion, which is a constant
    /// number of places per `/64` (or per IPv4 pool).
    pub(crate) fn next_free_from(&self, from: u128) -> Option<u128> {
        let mut j = from;
        loop {
            if j >= self.size {
                return None;
            }
            if let Some(end) = self.excluded_run_end(j) {
                j = end.checked_add(1)?;
                continue;
            }
            if let Some((_, end)) = self.taken.run_containing(j) {
                j = end.checked_add(1)?;
                continue;
            }
            return Some(j);
        }
    }

    /// Chooses a free index by `strategy` and takes it; `None` (nothing taken) when none
    /// is free.
    ///
    /// `Sequential`: the lowest free index. `Random`: up to [`RANDOM_PROBES`] uniform
    /// draws over the whole space (rejection sampling, so a hit is uniform over the free
    /// indices), then the first free index at or after a uniform starting point,
    /// wrapping once to 0.
    pub(crate) fn allocate<R: Rng + ?Sized>(
        &mut self,
        strategy: Strategy,
        rng: &mut R,
    ) -> Option<u128> {
        if self.free_count() == 0 {
            return None;
        }
        let found = match strategy {
            Strategy::Sequential => self.next_free_from(0),
            Strategy::Random => {
                for _ in 0..RANDOM_PROBES {
                    let i = rng.gen_range(0..self.size);
                    // The insert doubles as the "is it taken" lookup: one descent per probe.
                    if self.exclusion(i).is_none() && self.taken.insert(i) {
                        return Some(i);
                    }
                }
                let start = rng.gen_range(0..self.size);
                self.next_free_from(start)
                    .or_else(|| self.next_free_from(0))
            }
        }?;
        self.taken.insert(found);
        Some(found)
    }

    /// Marks `i` taken. The caller has checked `i < size` and that `i` is not excluded.
    /// Returns `false` when it was already taken.
    pub(crate) fn take(&mut self, i: u128) -> bool {
        debug_assert!(i < self.size && self.exclusion(i).is_none());
        self.taken.insert(i)
    }

    /// Marks every index of `[lo, hi]` taken (spaces without exclusions only).
    pub(crate) fn take_range(&mut self, lo: u128, hi: u128) -> u128 {
        debug_assert!(self.rules == Rules::None && lo <= hi && hi < self.size);
        self.taken.insert_range(lo, hi)
    }

    /// Marks every index of `[lo, hi]` taken, in any space: the caller knows the run
    /// holds no excluded index (a run of indices that were held, read back). Returns how
    /// many were newly taken.
    pub(crate) fn take_held_run(&mut self, lo: u128, hi: u128) -> u128 {
        debug_assert!(lo <= hi && hi < self.size);
        self.taken.insert_range(lo, hi)
    }

    /// Frees `i`; returns `false` when it was not taken.
    pub(crate) fn untake(&mut self, i: u128) -> bool {
        self.taken.remove(i)
    }
}
