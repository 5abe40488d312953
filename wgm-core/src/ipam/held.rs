//! [`HeldRuns`]: the durable allocator state of a server, the host indices its peers
//! hold in its address pools, as runs.
//!
//! A server whose peers were added one after another holds one run per pool (`2..=10001`),
//! so this state stays a few numbers whatever the number of peers. Rebuilding the
//! address manager from it ([`DualStack::hold_runs`]) costs the number of runs, not of
//! peers: a fresh process adds a peer to a 10 000-peer server without loading the other
//! 9 999. The manager keeps the runs in step with committed peer changes
//! ([`HeldRuns::edit`]); the server's own addresses, reservations and quarantine come
//! from the server's settings as always.

use serde::{Deserialize, Serialize};

use super::intervals::IntervalSet;
use super::DualStack;

/// The host indices peers hold in a server's IPv6 and IPv4 pools, as closed runs
/// `[start, end]`, ascending. Serialized with the indices as decimal strings (an index
/// in a pool wider than a `/64` exceeds `u64`).
///
/// ```
/// use wgm_core::ipam::HeldRuns;
/// let json = r#"{"v6":[["2","10001"]],"v4":[["2","10001"]]}"#;
/// let held: HeldRuns = serde_json::from_str(json).unwrap();
/// assert_eq!(held.v6, vec![(2, 10001)]);
/// assert_eq!(serde_json::to_string(&held).unwrap(), json);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldRuns {
    /// Runs of the IPv6 pool.
    #[serde(with = "runs_text")]
    pub v6: Vec<(u128, u128)>,
    /// Runs of the IPv4 pool (empty without one).
    #[serde(with = "runs_text")]
    pub v4: Vec<(u128, u128)>,
}

mod runs_text {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(super) fn serialize<S: Serializer>(
        runs: &[(u128, u128)],
        s: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        let text: Vec<[String; 2]> = runs
            .iter()
            .map(|(a, b)| [a.to_string(), b.to_string()])
            .collect();
        text.serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> std::result::Result<Vec<(u128, u128)>, D::Error> {
        let text: Vec<[String; 2]> = Vec::deserialize(d)?;
        text.into_iter()
            .map(|[a, b]| {
                let a: u128 = a.parse().map_err(serde::de::Error::custom)?;
                let b: u128 = b.parse().map_err(serde::de::Error::custom)?;
                if a > b {
                    return Err(serde::de::Error::custom("a run ends before it starts"));
                }
                Ok((a, b))
            })
            .collect()
    }
}

fn runs_of(set: &IntervalSet) -> Vec<(u128, u128)> {
    set.iter_runs().collect()
}

fn set_of(runs: &[(u128, u128)], size: u128) -> IntervalSet {
    let mut set = IntervalSet::for_size(size);
    for &(a, b) in runs {
        if a <= b && b < size {
            set.insert_range(a, b);
        }
    }
    set
}

impl HeldRuns {
    /// Start changing these runs, for pools of `v6_size` and `v4_size` host indices
    /// ([`super::Pool::size`]; 1 without an IPv4 pool). Runs outside the sizes are dropped.
    ///
    /// ```
    /// use wgm_core::ipam::HeldRuns;
    /// let mut e = HeldRuns::default().edit(1 << 64, 256);
    /// e.hold(Some(2), Some(2));
    /// e.hold(Some(3), Some(3));
    /// e.release(Some(2), None);
    /// let held = e.finish();
    /// assert_eq!((held.v6, held.v4), (vec![(3, 3)], vec![(2, 3)]));
    /// ```
    pub fn edit(&self, v6_size: u128, v4_size: u128) -> HeldEdit {
        HeldEdit {
            v6: set_of(&self.v6, v6_size),
            v4: set_of(&self.v4, v4_size),
            sizes: (v6_size, v4_size),
        }
    }
}

/// Runs being changed ([`HeldRuns::edit`]): each operation costs the logarithm of the
/// number of runs.
#[derive(Clone)]
pub struct HeldEdit {
    v6: IntervalSet,
    v4: IntervalSet,
    sizes: (u128, u128),
}

impl std::fmt::Debug for HeldEdit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeldEdit")
            .field("v6_runs", &self.v6.runs())
            .field("v4_runs", &self.v4.runs())
            .field("sizes", &self.sizes)
            .finish()
    }
}

impl HeldEdit {
    /// Hold these host indices (an index outside its pool is ignored).
    pub fn hold(&mut self, v6: Option<u128>, v4: Option<u128>) {
        if let Some(i) = v6.filter(|i| *i < self.sizes.0) {
            self.v6.insert(i);
        }
        if let Some(i) = v4.filter(|i| *i < self.sizes.1) {
            self.v4.insert(i);
        }
    }

    /// Release these host indices.
    pub fn release(&mut self, v6: Option<u128>, v4: Option<u128>) {
        if let Some(i) = v6 {
            self.v6.remove(i);
        }
        if let Some(i) = v4 {
            self.v4.remove(i);
        }
    }

    /// The runs.
    pub fn finish(self) -> HeldRuns {
        HeldRuns {
            v6: runs_of(&self.v6),
            v4: runs_of(&self.v4),
        }
    }
}

impl DualStack {
    /// Hold the runs of `held` in the pools ([`HeldRuns`]): the peers' addresses,
    /// without the peers. `false` when they do not fit (outside a pool, on an excluded
    /// address, or overlapping what is held already): then build from the peers.
    pub fn hold_runs(&mut self, held: &HeldRuns) -> bool {
        for &(a, b) in &held.v6 {
            if !self.v6_mut().hold_run(a, b) {
                return false;
            }
        }
        if held.v4.is_empty() {
            return true;
        }
        let Some(v4) = self.v4_mut() else {
            return false;
        };
        held.v4.iter().all(|&(a, b)| v4.hold_run(a, b))
    }
}
