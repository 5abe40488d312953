//! Rate limits: the generic cell rate algorithm (GCRA), decided once here and kept by a
//! [`RateLimiter`] — in this process ([`LocalLimiter`]) or shared by many processes (the
//! Redis store's limiter runs [`Limit::decide`]'s arithmetic in one server-side script).
//!
//! A [`Limit`] of `count` requests per `period` lets a client spend `count` requests at
//! once and then one every `period / count`, which is what an operator means by "100
//! requests a minute". GCRA keeps one number per key, the *theoretical arrival time*
//! (TAT): the time at which the key's budget is whole again. A request at `now` is
//! allowed when `max(TAT, now) + period / count - period <= now`, and then moves the TAT
//! on by `period / count`; a refused request changes nothing, so hammering a limited key
//! does not push its recovery further away.
//!
//! Times are microseconds since the Unix epoch: exact in the double-precision numbers of
//! a Redis script (below 2⁵³) for the next two hundred years.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use wgm_core::manager::ManualClock;
//! use wgm_core::ratelimit::{Limit, LocalLimiter, RateLimiter};
//!
//! # futures::executor::block_on(async {
//! let clock = Arc::new(ManualClock::new(time::OffsetDateTime::UNIX_EPOCH));
//! let limiter = LocalLimiter::with_clock(clock.clone());
//! let limit = Limit::new(3, Duration::from_secs(60))?; // 3 a minute, bursts of 3
//! for left in [2, 1, 0] {
//!     let d = limiter.check("login:203.0.113.7", &limit).await?;
//!     assert!(d.allowed);
//!     assert_eq!(d.remaining, left);
//! }
//! let refused = limiter.check("login:203.0.113.7", &limit).await?;
//! assert!(!refused.allowed);
//! assert_eq!(refused.retry_after, Duration::from_secs(20)); // one comes back every 20 s
//! clock.advance(time::Duration::seconds(20));
//! assert!(limiter.check("login:203.0.113.7", &limit).await?.allowed);
//! # Ok::<(), wgm_core::Error>(())
//! # }).unwrap();
//! ```

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use crate::manager::{Clock, SystemClock};
use crate::{Error, Result};

/// The most requests a [`Limit`] may allow per period.
pub const MAX_COUNT: u32 = 1_000_000;
/// The longest period of a [`Limit`]: one day.
pub const MAX_PERIOD: Duration = Duration::from_secs(24 * 3600);

/// `count` requests per `period`, in bursts of up to `count`.
///
/// ```
/// use std::time::Duration;
/// use wgm_core::ratelimit::Limit;
/// let l = Limit::new(600, Duration::from_secs(60)).unwrap();
/// assert_eq!(l.interval_micros(), 100_000); // one every 100 ms once the burst is spent
/// assert!(Limit::new(0, Duration::from_secs(1)).is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit {
    count: u32,
    period: Duration,
}

impl Limit {
    /// A limit of `count` (1 to [`MAX_COUNT`]) requests per `period` (1 ms to
    /// [`MAX_PERIOD`]).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming `limit.count` or `limit.period` when out of range.
    pub fn new(count: u32, period: Duration) -> Result<Limit> {
        if count == 0 || count > MAX_COUNT {
            return Err(Error::invalid(
                "limit.count",
                format!("must be between 1 and {MAX_COUNT} requests"),
            ));
        }
        if period < Duration::from_millis(1) || period > MAX_PERIOD {
            return Err(Error::invalid(
                "limit.period",
                "must be between 1 ms and 24 hours",
            ));
        }
        Ok(Limit { count, period })
    }

    /// Requests per period.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The period.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// The period in microseconds (at most a day, so it fits).
    pub fn period_micros(&self) -> u64 {
        // At most MAX_PERIOD (8.64e10 µs), far below u64::MAX.
        u64::try_from(self.period.as_micros()).unwrap_or(u64::MAX)
    }

    /// Microseconds between two requests once the burst is spent (`period / count`,
    /// at least 1).
    pub fn interval_micros(&self) -> u64 {
        (self.period_micros() / u64::from(self.count)).max(1)
    }

    /// The whole burst in microseconds: `interval · count` (the period, rounded down to a
    /// multiple of the interval).
    pub fn burst_micros(&self) -> u64 {
        self.interval_micros() * u64::from(self.count)
    }

    /// GCRA: decides a request at `now` (µs since the epoch) against the key's stored
    /// theoretical arrival time `tat` (`None`: never seen or expired). Returns the
    /// decision and, when allowed, the TAT to store (it may be forgotten after
    /// [`Decision::reset_after`]); a refusal stores nothing.
    ///
    /// ```
    /// use std::time::Duration;
    /// use wgm_core::ratelimit::Limit;
    /// let l = Limit::new(2, Duration::from_secs(10)).unwrap();
    /// let (d, tat) = l.decide(None, 1_000_000);
    /// assert!(d.allowed && d.remaining == 1);
    /// let (d, tat) = l.decide(tat, 1_000_000);
    /// assert!(d.allowed && d.remaining == 0);
    /// let (d, none) = l.decide(tat, 1_000_000);
    /// assert!(!d.allowed && none.is_none());
    /// assert_eq!(d.retry_after, Duration::from_secs(5));
    /// ```
    pub fn decide(&self, tat: Option<u64>, now: u64) -> (Decision, Option<u64>) {
        let interval = i128::from(self.interval_micros());
        let burst = i128::from(self.burst_micros());
        let now = i128::from(now);
        let tat = tat.map_or(now, |t| i128::from(t).max(now));
        let new_tat = tat + interval;
        // Signed: near the epoch (a test clock) the burst reaches back before zero.
        let allow_at = new_tat - burst;
        let micros = |d: i128| Duration::from_micros(u64::try_from(d).unwrap_or(u64::MAX));
        if now < allow_at {
            let d = Decision {
                allowed: false,
                remaining: 0,
                retry_after: micros(allow_at - now),
                reset_after: micros(tat - now),
            };
            return (d, None);
        }
        let remaining = u32::try_from((now - allow_at) / interval).unwrap_or(u32::MAX);
        let d = Decision {
            allowed: true,
            remaining,
            retry_after: Duration::ZERO,
            reset_after: micros(new_tat - now),
        };
        let new_tat = u64::try_from(new_tat).unwrap_or(u64::MAX);
        (d, Some(new_tat))
    }
}

/// What a [`RateLimiter`] decided about one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may go ahead.
    pub allowed: bool,
    /// Requests still allowed at once after this one (0 when refused).
    pub remaining: u32,
    /// When refused: how long until a request would be allowed (HTTP `Retry-After`,
    /// rounded up to whole seconds). Zero when allowed.
    pub retry_after: Duration,
    /// How long until the key's whole burst is available again.
    pub reset_after: Duration,
}

impl Decision {
    /// `retry_after` in whole seconds, rounded up (at least 1 when refused): the value of
    /// an HTTP `Retry-After` header.
    ///
    /// ```
    /// use std::time::Duration;
    /// use wgm_core::ratelimit::Decision;
    /// let d = Decision { allowed: false, remaining: 0,
    ///     retry_after: Duration::from_millis(1_200), reset_after: Duration::from_secs(9) };
    /// assert_eq!(d.retry_after_secs(), 2);
    /// ```
    pub fn retry_after_secs(&self) -> u64 {
        if self.allowed {
            return 0;
        }
        let d = self.retry_after;
        (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
    }
}

/// Keeps GCRA state per key and decides requests against a [`Limit`].
///
/// Implementations: [`LocalLimiter`] (one process) and the Redis store's limiter (shared
/// by every process on one Redis, so a limit holds across copies of a server). Keys are
/// the caller's (`"principal:alice"`, `"addr:2001:db8::/64"`); a limiter never
/// interprets them.
#[async_trait]
pub trait RateLimiter: Debug + Send + Sync + 'static {
    /// Decides one request of `key` against `limit`, recording it when allowed.
    ///
    /// # Errors
    /// Whatever the limiter's storage fails with (`Unavailable` when it cannot be
    /// reached); never for a limited key, which is `Ok` with `allowed == false`.
    async fn check(&self, key: &str, limit: &Limit) -> Result<Decision>;
}

/// GCRA in this process's memory: keys are forgotten once their budget is whole again,
/// so memory is bounded by the keys active within one period.
///
/// See the [module documentation](self) for an example.
#[derive(Debug)]
pub struct LocalLimiter {
    clock: Arc<dyn Clock>,
    state: Mutex<LocalState>,
}

#[derive(Debug, Default)]
struct LocalState {
    tats: HashMap<String, u64>,
    /// Forget finished keys when the map grows past this.
    sweep_at: usize,
}

/// Keys before the first sweep of forgotten ones.
const FIRST_SWEEP: usize = 1024;

impl Default for LocalLimiter {
    fn default() -> Self {
        Self::new()
    }
}

impl LocalLimiter {
    /// A limiter on the system clock.
    pub fn new() -> LocalLimiter {
        Self::with_clock(Arc::new(SystemClock))
    }

    /// A limiter on `clock` (tests pass a `ManualClock`).
    pub fn with_clock(clock: Arc<dyn Clock>) -> LocalLimiter {
        LocalLimiter {
            clock,
            state: Mutex::new(LocalState {
                tats: HashMap::new(),
                sweep_at: FIRST_SWEEP,
            }),
        }
    }

    /// Keys currently held (for tests and metrics).
    pub fn len(&self) -> usize {
        self.lock().tats.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LocalState> {
        // The state is a map of numbers, consistent after every statement: a panic
        // elsewhere while holding the lock cannot leave it half-updated.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn now_micros(&self) -> u64 {
        let nanos = self.clock.now().unix_timestamp_nanos();
        u64::try_from(nanos / 1000).unwrap_or(0)
    }

    /// The synchronous decision behind [`RateLimiter::check`].
    pub fn check_now(&self, key: &str, limit: &Limit) -> Decision {
        let now = self.now_micros();
        let mut state = self.lock();
        let tat = state.tats.get(key).copied().filter(|&t| t > now);
        let (decision, new_tat) = limit.decide(tat, now);
        if let Some(t) = new_tat {
            state.tats.insert(key.to_owned(), t);
            if state.tats.len() >= state.sweep_at {
                state.tats.retain(|_, &mut t| t > now);
                state.sweep_at = (state.tats.len() * 2).max(FIRST_SWEEP);
            }
        }
        decision
    }
}

#[async_trait]
impl RateLimiter for LocalLimiter {
    async fn check(&self, key: &str, limit: &Limit) -> Result<Decision> {
        Ok(self.check_now(key, limit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manager::ManualClock;

    fn limit(count: u32, secs: u64) -> Limit {
        Limit::new(count, Duration::from_secs(secs)).expect("valid limit")
    }

    #[test]
    fn bounds_name_their_field() {
        for (count, period, field) in [
            (0, Duration::from_secs(1), "limit.count"),
            (MAX_COUNT + 1, Duration::from_secs(1), "limit.count"),
            (1, Duration::ZERO, "limit.period"),
            (1, Duration::from_micros(999), "limit.period"),
            (1, MAX_PERIOD + Duration::from_secs(1), "limit.period"),
        ] {
            match Limit::new(count, period) {
                Err(Error::InvalidInput { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{count}/{period:?}: {other:?}"),
            }
        }
        assert!(Limit::new(MAX_COUNT, MAX_PERIOD).is_ok());
        assert!(Limit::new(1, Duration::from_millis(1)).is_ok());
    }

    #[test]
    fn burst_then_steady_rate() {
        let l = limit(4, 8); // one every 2 s
        let mut tat = None;
        let now = 10_000_000;
        for left in (0..4).rev() {
            let (d, t) = l.decide(tat, now);
            assert!(d.allowed);
            assert_eq!(d.remaining, left);
            assert_eq!(d.retry_after, Duration::ZERO);
            tat = t;
        }
        assert_eq!(tat, Some(now + 8_000_000));
        let (d, t) = l.decide(tat, now);
        assert!(!d.allowed);
        assert_eq!(t, None);
        assert_eq!(d.retry_after, Duration::from_secs(2));
        assert_eq!(d.reset_after, Duration::from_secs(8));
        // Just before the interval: still refused, and the refusal moved nothing.
        let (d, _) = l.decide(tat, now + 1_999_999);
        assert!(!d.allowed);
        assert_eq!(d.retry_after, Duration::from_micros(1));
        let (d, t) = l.decide(tat, now + 2_000_000);
        assert!(d.allowed);
        assert_eq!(d.remaining, 0);
        assert_eq!(t, Some(now + 10_000_000));
        // A long pause refills the whole burst, no more.
        let (d, _) = l.decide(t, now + 100_000_000);
        assert!(d.allowed);
        assert_eq!(d.remaining, 3);
        assert_eq!(d.reset_after, Duration::from_secs(2));
    }

    #[test]
    fn a_stale_tat_counts_as_now() {
        let l = limit(1, 10);
        let (d, t) = l.decide(Some(5), 1_000_000);
        assert!(d.allowed);
        assert_eq!(t, Some(11_000_000));
    }

    #[test]
    fn retry_after_rounds_up() {
        let l = limit(1, 10);
        let (_, t) = l.decide(None, 0);
        let (d, _) = l.decide(t, 500_000);
        assert_eq!(d.retry_after, Duration::from_millis(9_500));
        assert_eq!(d.retry_after_secs(), 10);
        let (d, _) = l.decide(t, 9_999_999);
        assert_eq!(d.retry_after_secs(), 1);
        let (allowed, _) = l.decide(None, 0);
        assert_eq!(allowed.retry_after_secs(), 0);
    }

    #[test]
    fn keys_are_independent_and_forgotten() {
        let clock = Arc::new(ManualClock::new(time::OffsetDateTime::UNIX_EPOCH));
        let limiter = LocalLimiter::with_clock(clock.clone());
        let l = limit(1, 60);
        assert!(limiter.check_now("a", &l).allowed);
        assert!(!limiter.check_now("a", &l).allowed);
        assert!(limiter.check_now("b", &l).allowed);
        assert_eq!(limiter.len(), 2);
        clock.advance(time::Duration::seconds(61));
        for i in 0..FIRST_SWEEP {
            assert!(limiter.check_now(&format!("k{i}"), &l).allowed);
        }
        // The sweep dropped "a" and "b", whose budgets were whole again.
        assert_eq!(limiter.len(), FIRST_SWEEP);
        assert!(limiter.check_now("a", &l).allowed);
    }

    #[test]
    fn contention_allows_exactly_the_burst() {
        let limiter = Arc::new(LocalLimiter::new());
        let l = limit(100, 3600);
        let allowed = std::sync::atomic::AtomicU32::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..50 {
                        if limiter.check_now("shared", &l).allowed {
                            allowed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(allowed.into_inner(), 100);
    }
}
