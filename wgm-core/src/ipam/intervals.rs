//! A set of `u128` host indices stored as disjoint, non-adjacent closed intervals.
//!
//! Every operation is `O(log n)` in the number of stored intervals (plus the number of
//! intervals a range insert swallows), never in the number of indices: allocating the
//! 100 000th address of a `/8` touches the same handful of tree nodes as the 10th.

use std::collections::BTreeMap;

/// Disjoint, non-adjacent closed intervals `[start, end]` keyed by `start`.
///
/// Invariants (checked by [`IntervalSet::check_invariants`] in tests): for consecutive
/// entries `(s1, e1)`, `(s2, e2)`: `s1 <= e1`, and `e1 + 1 < s2` (adjacent runs are
/// merged). `len` is the number of indices covered.
#[derive(Clone, Default, PartialEq, Eq)]
pub(crate) struct IntervalSet {
    runs: BTreeMap<u128, u128>,
    len: u128,
}

impl IntervalSet {
    /// An empty set.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Number of indices in the set.
    pub(crate) fn len(&self) -> u128 {
        self.len
    }

    /// Number of stored intervals (for `Debug` and the benchmarks' sanity checks).
    pub(crate) fn runs(&self) -> usize {
        self.runs.len()
    }

    /// The run `[start, end]` containing `i`, if any.
    pub(crate) fn run_containing(&self, i: u128) -> Option<(u128, u128)> {
        let (&start, &end) = self.runs.range(..=i).next_back()?;
        (end >= i).then_some((start, end))
    }

    /// Whether `i` is in the set.
    pub(crate) fn contains(&self, i: u128) -> bool {
        self.run_containing(i).is_some()
    }

    /// Adds `i`; returns `false` when it was already present.
    ///
    /// The hot path of every allocation: one descent finds both the run starting at
    /// `i + 1` and the run before it, then at most one removal and one insertion.
    pub(crate) fn insert(&mut self, i: u128) -> bool {
        let next = i.checked_add(1);
        let mut below = match next {
            Some(n) => self.runs.range(..=n),
            None => self.runs.range(..),
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
        // Here e < i, so e + 1 cannot overflow.
        let join_left = left.filter(|&(_, e)| e + 1 == i).map(|(s, _)| s);
        match (join_left, right) {
            (Some(s), Some(end)) => {
                self.runs.remove(&(i + 1));
                self.runs.insert(s, end);
            }
            (Some(s), None) => {
                self.runs.insert(s, i);
            }
            (None, Some(end)) => {
                self.runs.remove(&(i + 1));
                self.runs.insert(i, end);
            }
            (None, None) => {
                self.runs.insert(i, i);
            }
        }
        self.len += 1;
        true
    }

    /// Adds every index of `[lo, hi]` (`lo <= hi`), merging with touching runs.
    /// Returns how many indices were newly added.
    pub(crate) fn insert_range(&mut self, lo: u128, hi: u128) -> u128 {
        debug_assert!(lo <= hi);
        let mut new_lo = lo;
        let mut new_hi = hi;
        // Indices of [lo, hi] already present.
        let mut present: u128 = 0;
        // The run starting before `lo` touches when it ends at lo - 1 or later.
        let mut search_from = lo;
        if let Some((&s, &e)) = self.runs.range(..lo).next_back() {
            if e.saturating_add(1) >= lo {
                search_from = s;
            }
        }
        let touching: Vec<(u128, u128)> = self
            .runs
            .range(search_from..=hi.saturating_add(1))
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in touching {
            self.runs.remove(&s);
            // Subtracting the run from the total first keeps `len` exact whatever the
            // overlap; the merged run is added back below.
            self.len -= e - s + 1;
            let (ov_lo, ov_hi) = (s.max(lo), e.min(hi));
            if ov_lo <= ov_hi {
                present += ov_hi - ov_lo + 1;
            }
            new_lo = new_lo.min(s);
            new_hi = new_hi.max(e);
        }
        self.runs.insert(new_lo, new_hi);
        self.len += new_hi - new_lo + 1;
        (hi - lo + 1) - present
    }

    /// Removes `i`; returns `false` when it was not present.
    pub(crate) fn remove(&mut self, i: u128) -> bool {
        let Some((&start, end_ref)) = self.runs.range_mut(..=i).next_back() else {
            return false;
        };
        let end = *end_ref;
        if end < i {
            return false;
        }
        if start < i {
            // Shorten the run in place: it now ends just before i.
            *end_ref = i - 1;
        } else {
            self.runs.remove(&start);
        }
        if i < end {
            self.runs.insert(i + 1, end);
        }
        self.len -= 1;
        true
    }

    /// Iterates the runs in ascending order.
    pub(crate) fn iter_runs(&self) -> impl Iterator<Item = (u128, u128)> + '_ {
        self.runs.iter().map(|(&s, &e)| (s, e))
    }

    /// Asserts the structural invariants (tests only).
    #[cfg(test)]
    pub(crate) fn check_invariants(&self) {
        let mut total = 0u128;
        let mut prev_end: Option<u128> = None;
        for (&s, &e) in &self.runs {
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
            .field("runs", &self.runs.len())
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
        let mut s = IntervalSet::new();
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

    #[test]
    fn extremes_do_not_overflow() {
        let mut s = IntervalSet::new();
        assert!(s.insert(u128::MAX));
        assert!(s.insert(u128::MAX - 1));
        assert!(s.insert(0));
        assert_eq!(
            s.run_containing(u128::MAX),
            Some((u128::MAX - 1, u128::MAX))
        );
        assert!(s.remove(u128::MAX));
        assert!(s.remove(0));
        assert_eq!(s.len(), 1);
        s.check_invariants();
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u128),
        InsertRange(u128, u128),
        Remove(u128),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u128..64).prop_map(Op::Insert),
            (0u128..64, 0u128..8).prop_map(|(a, n)| Op::InsertRange(a, a + n)),
            (0u128..64).prop_map(Op::Remove),
        ]
    }

    proptest! {
        #[test]
        fn matches_a_btreeset(ops in proptest::collection::vec(op(), 0..200)) {
            let mut s = IntervalSet::new();
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
            for i in 0..80 {
                prop_assert_eq!(s.contains(i), model.contains(&i));
            }
        }
    }
}
