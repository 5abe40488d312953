//! A set of host indices stored as disjoint, non-adjacent closed intervals.
//!
//! Every operation is `O(log n)` in the number of stored intervals (plus the number of
//! intervals a range insert swallows), never in the number of indices: allocating the
//! 100 000th address of a `/8` touches the same handful of tree nodes as the 10th.
//!
//! Indices are `u128` in the interface. Spaces of at most 2^64 indices (every IPv4
//! pool, IPv6 pools of `/64` and smaller, most delegation pools) store `u64` keys:
//! half the memory per run, which keeps more of a large random-filled tree in cache.

use std::collections::BTreeMap;

/// A key width for the run tree. Conversions are exact for indices the set accepts.
trait Key: Copy + Ord {
    /// `i` as a key, `None` when it does not fit.
    fn from_index(i: u128) -> Option<Self>;
    /// The key as an index.
    fn index(self) -> u128;
    /// `self + 1`, `None` at the maximum.
    fn succ(self) -> Option<Self>;
}

impl Key for u64 {
    fn from_index(i: u128) -> Option<Self> {
        u64::try_from(i).ok()
    }
    fn index(self) -> u128 {
        u128::from(self)
    }
    fn succ(self) -> Option<Self> {
        self.checked_add(1)
    }
}

impl Key for u128 {
    fn from_index(i: u128) -> Option<Self> {
        Some(i)
    }
    fn index(self) -> u128 {
        self
    }
    fn succ(self) -> Option<Self> {
        self.checked_add(1)
    }
}

/// The run tree, `start -> end`, at the narrowest width that holds the space.
#[derive(Clone, PartialEq, Eq)]
enum Runs {
    Narrow(BTreeMap<u64, u64>),
    Wide(BTreeMap<u128, u128>),
}

/// Disjoint, non-adjacent closed intervals `[start, end]` keyed by `start`.
///
/// Invariants (checked by [`IntervalSet::check_invariants`] in tests): for consecutive
/// entries `(s1, e1)`, `(s2, e2)`: `s1 <= e1`, and `e1 + 1 < s2` (adjacent runs are
/// merged). `len` is the number of indices covered.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct IntervalSet {
    runs: Runs,
    len: u128,
}

/// Runs `$body` with `$m` bound to the run tree, whatever its width.
macro_rules! with_runs {
    ($runs:expr, $m:ident => $body:expr) => {
        match $runs {
            Runs::Narrow($m) => $body,
            Runs::Wide($m) => $body,
        }
    };
}

fn run_containing<K: Key>(runs: &BTreeMap<K, K>, i: u128) -> Option<(u128, u128)> {
    let i = K::from_index(i)?;
    let (&start, &end) = runs.range(..=i).next_back()?;
    (end >= i).then_some((start.index(), end.index()))
}

/// Inserts `i`; `false` when present. One descent finds both the run starting at
/// `i + 1` and the run before it; then at most one removal and one insertion.
fn insert<K: Key>(runs: &mut BTreeMap<K, K>, i: K) -> bool {
    let next = i.succ();
    let mut below = match next {
        Some(n) => runs.range(..=n),
        None => runs.range(..),
    };
    // `right`: end of the run starting at i + 1; `left`: the last run starting <= i.
    let (mut left, mut right) = (None, None);
    if let Some((&s, &e)) = below.next_back() {
        if Some(s) == next {
            right = Some(e);
            left = below.next_back().map(|(&s, &e)| (s, e));
        } else {
            left = Some((s, e));
        }
    }
    if left.is_some_and(|(_, e)| e >= i) {
        return false;
    }
    let join_left = left.filter(|&(_, e)| e.succ() == Some(i)).map(|(s, _)| s);
    match (join_left, right, next) {
        (Some(s), Some(end), Some(n)) => {
            runs.remove(&n);
            runs.insert(s, end);
        }
        (None, Some(end), Some(n)) => {
            runs.remove(&n);
            runs.insert(i, end);
        }
        (Some(s), _, _) => {
            runs.insert(s, i);
        }
        (None, _, _) => {
            runs.insert(i, i);
        }
    }
    true
}

/// Inserts `[lo, hi]`; returns how many indices were new.
fn insert_range<K: Key>(runs: &mut BTreeMap<K, K>, lo: K, hi: K) -> u128 {
    let (mut new_lo, mut new_hi) = (lo, hi);
    let mut present: u128 = 0;
    // The run starting before `lo` touches when it ends at lo - 1 or later.
    let mut search_from = lo;
    if let Some((&s, &e)) = runs.range(..lo).next_back() {
        if e.succ().is_none_or(|after| after >= lo) {
            search_from = s;
        }
    }
    let touching: Vec<(K, K)> = match hi.succ() {
        Some(after) => runs
            .range(search_from..=after)
            .map(|(&s, &e)| (s, e))
            .collect(),
        None => runs.range(search_from..).map(|(&s, &e)| (s, e)).collect(),
    };
    for (s, e) in touching {
        runs.remove(&s);
        let (ov_lo, ov_hi) = (s.max(lo), e.min(hi));
        if ov_lo <= ov_hi {
            present += ov_hi.index() - ov_lo.index() + 1;
        }
        new_lo = new_lo.min(s);
        new_hi = new_hi.max(e);
    }
    runs.insert(new_lo, new_hi);
    (hi.index() - lo.index() + 1) - present
}

/// Removes `i`; `false` when absent.
fn remove<K: Key>(runs: &mut BTreeMap<K, K>, i: u128) -> bool {
    let Some(i) = K::from_index(i) else {
        return false;
    };
    let Some((&start, end_ref)) = runs.range_mut(..=i).next_back() else {
        return false;
    };
    let end = *end_ref;
    if end < i {
        return false;
    }
    if start < i {
        // Shorten the run in place: it now ends just before i (the run starts below
        // i, so i - 1 exists and is >= start).
        *end_ref = K::from_index(i.index() - 1).unwrap_or(start);
    } else {
        runs.remove(&start);
    }
    if i < end {
        if let Some(after) = i.succ() {
            runs.insert(after, end);
        }
    }
    true
}

impl IntervalSet {
    /// An empty set for indices `0..size`, stored at the narrowest width that fits.
    pub(crate) fn for_size(size: u128) -> Self {
        let runs = if size <= 1 << 64 {
            Runs::Narrow(BTreeMap::new())
        } else {
            Runs::Wide(BTreeMap::new())
        };
        Self { runs, len: 0 }
    }

    /// Number of indices in the set.
    pub(crate) fn len(&self) -> u128 {
        self.len
    }

    /// Number of stored intervals (for `Debug` and tests).
    pub(crate) fn runs(&self) -> usize {
        with_runs!(&self.runs, m => m.len())
    }

    /// The run `[start, end]` containing `i`, if any.
    pub(crate) fn run_containing(&self, i: u128) -> Option<(u128, u128)> {
        with_runs!(&self.runs, m => run_containing(m, i))
    }

    /// Whether `i` is in the set.
    pub(crate) fn contains(&self, i: u128) -> bool {
        self.run_containing(i).is_some()
    }

    /// Adds `i`; returns `false` when it was already present. The caller keeps `i`
    /// inside the space the set was made for.
    pub(crate) fn insert(&mut self, i: u128) -> bool {
        let added = with_runs!(&mut self.runs, m => match Key::from_index(i) {
            Some(k) => insert(m, k),
            None => false,
        });
        if added {
            self.len += 1;
        }
        added
    }

    /// Adds every index of `[lo, hi]` (`lo <= hi`, inside the space), merging with
    /// touching runs. Returns how many indices were newly added.
    pub(crate) fn insert_range(&mut self, lo: u128, hi: u128) -> u128 {
        debug_assert!(lo <= hi);
        let added = with_runs!(&mut self.runs, m => match (Key::from_index(lo), Key::from_index(hi)) {
            (Some(lo), Some(hi)) => insert_range(m, lo, hi),
            _ => 0,
        });
        self.len += added;
        added
    }

    /// Removes `i`; returns `false` when it was not present.
    pub(crate) fn remove(&mut self, i: u128) -> bool {
        let removed = with_runs!(&mut self.runs, m => remove(m, i));
        if removed {
            self.len -= 1;
        }
        removed
    }

    /// Iterates the runs in ascending order.
    pub(crate) fn iter_runs(&self) -> impl Iterator<Item = (u128, u128)> + '_ {
        let (narrow, wide) = match &self.runs {
            Runs::Narrow(m) => (Some(m.iter().map(|(&s, &e)| (s.index(), e.index()))), None),
            Runs::Wide(m) => (None, Some(m.iter().map(|(&s, &e)| (s, e)))),
        };
        narrow
            .into_iter()
            .flatten()
            .chain(wide.into_iter().flatten())
    }

    /// Asserts the structural invariants (tests only).
    #[cfg(test)]
    pub(crate) fn check_invariants(&self) {
        let mut total = 0u128;
        let mut prev_end: Option<u128> = None;
        for (s, e) in self.iter_runs() {
            assert!(s <= e, "run [{s}, {e}] is inverted");
            if let Some(p) = prev_end {
                assert!(
                    p + 1 < s,
                    "runs ending at {p} and starting at {s} are not merged"
                );
            }
            total += e - s + 1;
            prev_end = Some(e);
        }
        assert_eq!(total, self.len, "cached length disagrees with the runs");
    }
}

impl std::fmt::Debug for IntervalSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntervalSet")
            .field("len", &self.len)
            .field("runs", &self.runs())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::IntervalSet;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn merges_and_splits() {
        for size in [1u128 << 64, u128::MAX] {
            let mut s = IntervalSet::for_size(size);
            assert!(s.insert(5));
            assert!(s.insert(7));
            assert_eq!(s.runs(), 2);
            assert!(s.insert(6));
            assert_eq!(s.runs(), 1);
            assert!(!s.insert(6));
            assert_eq!(s.len(), 3);
            assert!(s.remove(6));
            assert_eq!(s.runs(), 2);
            assert!(!s.remove(6));
            assert_eq!(s.insert_range(0, 10), 9);
            assert_eq!(s.runs(), 1);
            assert_eq!(s.len(), 11);
            s.check_invariants();
        }
    }

    #[test]
    fn extremes_do_not_overflow() {
        for (size, max) in [(1u128 << 64, u128::from(u64::MAX)), (u128::MAX, u128::MAX)] {
            let mut s = IntervalSet::for_size(size);
            assert!(s.insert(max));
            assert!(s.insert(max - 1));
            assert!(s.insert(0));
            assert_eq!(s.run_containing(max), Some((max - 1, max)));
            assert_eq!(s.insert_range(max - 3, max), 2);
            assert_eq!(s.run_containing(max - 3), Some((max - 3, max)));
            assert!(s.remove(max));
            assert!(s.remove(max - 2));
            assert!(s.remove(0));
            assert_eq!(s.len(), 2);
            s.check_invariants();
        }
        // Out-of-width indices are never members (the narrow set is for 2^64 indices).
        let mut s = IntervalSet::for_size(1 << 64);
        assert!(!s.contains(1 << 64));
        assert!(!s.remove(1 << 64));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u128),
        InsertRange(u128, u128),
        Remove(u128),
    }

    fn op(base: u128) -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u128..64).prop_map(move |i| Op::Insert(base + i)),
            (0u128..64, 0u128..8).prop_map(move |(a, n)| Op::InsertRange(base + a, base + a + n)),
            (0u128..64).prop_map(move |i| Op::Remove(base + i)),
        ]
    }

    fn check(size: u128, base: u128, ops: Vec<Op>) -> Result<(), TestCaseError> {
        let mut s = IntervalSet::for_size(size);
        let mut model = BTreeSet::new();
        for op in ops {
            match op {
                Op::Insert(i) => prop_assert_eq!(s.insert(i), model.insert(i)),
                Op::InsertRange(a, b) => {
                    let added = (a..=b).filter(|i| model.insert(*i)).count() as u128;
                    prop_assert_eq!(s.insert_range(a, b), added);
                }
                Op::Remove(i) => prop_assert_eq!(s.remove(i), model.remove(&i)),
            }
            s.check_invariants();
            prop_assert_eq!(s.len(), model.len() as u128);
        }
        for i in base..base + 80 {
            prop_assert_eq!(s.contains(i), model.contains(&i));
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn narrow_matches_a_btreeset(ops in proptest::collection::vec(op(0), 0..200)) {
            check(1 << 64, 0, ops)?;
        }

        #[test]
        fn narrow_matches_a_btreeset_at_the_top(
            ops in proptest::collection::vec(op(u128::from(u64::MAX) - 71), 0..200),
        ) {
            check(1 << 64, u128::from(u64::MAX) - 71, ops)?;
        }

        #[test]
        fn wide_matches_a_btreeset(ops in proptest::collection::vec(op(1 << 100), 0..200)) {
            check(u128::MAX, 1 << 100, ops)?;
        }
    }
}
