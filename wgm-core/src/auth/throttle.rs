//! Login throttling per account and per source, with exponential backoff: the decision
//! logic, pure (the caller passes `now`).
//!
//! Every login attempt goes through three steps:
//!
//! 1. a check before looking at the password — a throttled attempt is refused with
//!    [`Error::Throttled`] without spending argon2 time or revealing anything;
//! 2. after a failure, [`ThrottleState::record_failure`] on the record of the account and
//!    on that of the source;
//! 3. after a success, the account's record is cleared.
//!
//! **Where the records live.** The `Manager` keeps them in its store
//! ([`ThrottleStore`](crate::store::ThrottleStore), driven by
//! [`LoginThrottle`](crate::store::LoginThrottle)), so every process on one store — the
//! copies of a REST server behind a load balancer, CLI invocations — shares one guessing
//! budget per account and per source; each record is updated by compare-and-swap, so
//! concurrent failures all count. [`Throttle`] is the same logic over a map in this
//! process's memory, for a caller without a store (its state is serde, like each
//! [`ThrottleState`]).
//!
//! The first `free_failures` failures cost nothing; each one after that blocks the key
//! for `base_delay · 2^(n−1)` seconds, capped at `max_delay`. A key with no failure for
//! `forget_after` seconds starts over (its record may be dropped then:
//! [`ThrottleState::expires_at`]). A success clears the account's record but not the
//! source's, so a client with one valid account cannot reset its guessing budget against
//! others. IPv6 sources are throttled per /64 (one host usually owns a whole /64);
//! IPv4-mapped IPv6 addresses count as their IPv4 address.
//!
//! ```
//! use std::net::IpAddr;
//! use time::OffsetDateTime;
//! use wgm_core::auth::throttle::Throttle;
//! use wgm_core::Error;
//!
//! let mut throttle = Throttle::default();
//! let source: IpAddr = "2001:db8::7".parse().unwrap();
//! let mut now = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
//! for _ in 0..5 {
//!     throttle.check_login("alice", source, now)?;
//!     throttle.record_login_failure("alice", source, now); // wrong password
//! }
//! throttle.check_login("alice", source, now)?; // five free failures used up
//! throttle.record_login_failure("alice", source, now);
//! assert!(matches!(throttle.check_login("alice", source, now), Err(Error::Throttled { retry_after_secs: 1 })));
//! now += time::Duration::seconds(1);
//! throttle.check_login("alice", source, now)?;
//! # Ok::<(), wgm_core::Error>(())
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use time::OffsetDateTime;

use crate::{Error, Result};

/// How quickly a key is throttled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ThrottlePolicy {
    /// Failures allowed before any delay.
    pub free_failures: u32,
    /// Delay after the first failure past the free ones, in seconds (doubles after each).
    pub base_delay_secs: u64,
    /// Longest delay, in seconds.
    pub max_delay_secs: u64,
    /// Seconds without a failure after which the record is forgotten.
    pub forget_after_secs: u64,
}

impl ThrottlePolicy {
    /// Per account: 5 free failures, then 1 s, 2 s, 4 s, … up to 15 minutes; forgotten
    /// after a day without failures.
    pub const fn account_default() -> Self {
        Self {
            free_failures: 5,
            base_delay_secs: 1,
            max_delay_secs: 15 * 60,
            forget_after_secs: 24 * 3600,
        }
    }

    /// Per source: more lenient (20 free failures, since many users may share a NAT or a
    /// /64), same backoff.
    pub const fn source_default() -> Self {
        Self {
            free_failures: 20,
            base_delay_secs: 1,
            max_delay_secs: 15 * 60,
            forget_after_secs: 24 * 3600,
        }
    }

    /// The block after the `failures`-th consecutive failure, in seconds (0 while free).
    pub fn delay_after(&self, failures: u32) -> u64 {
        if failures <= self.free_failures {
            return 0;
        }
        let exponent = (failures - self.free_failures - 1).min(62);
        self.base_delay_secs
            .saturating_mul(1u64 << exponent)
            .min(self.max_delay_secs)
    }
}

/// What is throttled: an account (by canonical user name) or a source address; or a
/// login session that was logged out.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ThrottleKey {
    /// A user name, as the store spells it canonically.
    Account(String),
    /// A client address: IPv4 as is, IPv6 reduced to its /64, IPv4-mapped IPv6 as IPv4.
    Source(IpAddr),
    /// A JWT (its `jti`) whose session was logged out
    /// ([`Manager::logout`](crate::manager::Manager::logout)): its record blocks the
    /// token until it expires, in the same store records as the login throttle, so that
    /// a logout holds on every process on the store. Never counted as a failure.
    Session(uuid::Uuid),
}

impl ThrottleKey {
    /// The key for the account `name`.
    pub fn account(name: &str) -> Self {
        ThrottleKey::Account(name.to_owned())
    }

    /// The key for the source `addr`, normalised as described on [`ThrottleKey::Source`].
    pub fn source(addr: IpAddr) -> Self {
        let addr = match addr {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
            },
            v4 @ IpAddr::V4(_) => v4,
        };
        ThrottleKey::Source(addr)
    }

    /// The key's text form as a store keeps it: [`ThrottleKey`]'s `Display` form of the
    /// normalised key (a `Source` built directly from a full IPv6 address still counts
    /// as its /64), checked.
    ///
    /// ```
    /// use wgm_core::auth::throttle::ThrottleKey;
    /// let direct = ThrottleKey::Source("2001:db8::7".parse().unwrap());
    /// assert_eq!(direct.store_key()?, "source:2001:db8::/64");
    /// assert_eq!(ThrottleKey::account("alice").store_key()?, "account:alice");
    /// assert!(ThrottleKey::account("").store_key().is_err());
    /// # Ok::<(), wgm_core::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] (field `throttle.key`) for an account name that is empty,
    /// longer than [`MAX_THROTTLE_KEY_BYTES`] or holds a control character.
    pub fn store_key(&self) -> Result<String> {
        match self {
            ThrottleKey::Account(name) => {
                if name.is_empty()
                    || name.len() > MAX_THROTTLE_KEY_BYTES
                    || name.chars().any(char::is_control)
                {
                    return Err(Error::invalid(
                        "throttle.key",
                        "an account must be 1 to 256 bytes without control characters",
                    ));
                }
                Ok(self.to_string())
            }
            ThrottleKey::Source(addr) => Ok(ThrottleKey::source(*addr).to_string()),
            ThrottleKey::Session(_) => Ok(self.to_string()),
        }
    }
}

/// The longest account name a throttle key holds, in bytes (a user name's key, which is
/// at most 64 characters, fits many times over).
pub const MAX_THROTTLE_KEY_BYTES: usize = 256;

impl fmt::Display for ThrottleKey {
    /// `account:<name>`, `source:<ipv4>`, `source:<ipv6 prefix>/64` or `session:<jti>`;
    /// the form used as the map key in the serialized [`Throttle`] and suitable for a
    /// store's key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ThrottleKey::Account(name) => write!(f, "account:{name}"),
            ThrottleKey::Source(IpAddr::V4(a)) => write!(f, "source:{a}"),
            ThrottleKey::Source(IpAddr::V6(a)) => write!(f, "source:{a}/64"),
            ThrottleKey::Session(jti) => write!(f, "session:{jti}"),
        }
    }
}

/// The failure record of one key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ThrottleState {
    /// Consecutive failures (since the last success or since the record was forgotten).
    pub failures: u32,
    /// Unix time of the last failure.
    pub last_failure: u64,
    /// Unix time before which attempts are refused.
    pub blocked_until: u64,
}

impl ThrottleState {
    /// `Err(Throttled)` with the seconds left while blocked at unix time `now`.
    pub fn check(&self, now: u64) -> Result<()> {
        if now < self.blocked_until {
            return Err(Error::Throttled {
                retry_after_secs: self.blocked_until - now,
            });
        }
        Ok(())
    }

    /// Count a failure at unix time `now` and extend the block by the policy.
    pub fn record_failure(&mut self, policy: &ThrottlePolicy, now: u64) {
        if self.is_stale(policy, now) {
            *self = ThrottleState::default();
        }
        self.failures = self.failures.saturating_add(1);
        self.last_failure = self.last_failure.max(now);
        let delay = policy.delay_after(self.failures);
        if delay > 0 {
            self.blocked_until = self.blocked_until.max(now.saturating_add(delay));
        }
    }

    /// Whether the record is past `forget_after` and its block is over.
    pub fn is_stale(&self, policy: &ThrottlePolicy, now: u64) -> bool {
        now >= self.blocked_until
            && now.saturating_sub(self.last_failure) >= policy.forget_after_secs
    }

    /// Unix time from which the record is stale ([`ThrottleState::is_stale`]) and may be
    /// forgotten: the later of the end of its block and `forget_after` seconds after its
    /// last failure. A store keeps a record until then.
    ///
    /// ```
    /// use wgm_core::auth::throttle::{ThrottlePolicy, ThrottleState};
    /// let policy = ThrottlePolicy::account_default(); // forgotten after a day
    /// let s = ThrottleState { failures: 3, last_failure: 1_000, blocked_until: 0 };
    /// assert_eq!(s.expires_at(&policy), 1_000 + 24 * 3600);
    /// assert!(!s.is_stale(&policy, s.expires_at(&policy) - 1));
    /// assert!(s.is_stale(&policy, s.expires_at(&policy)));
    /// ```
    pub fn expires_at(&self, policy: &ThrottlePolicy) -> u64 {
        self.blocked_until
            .max(self.last_failure.saturating_add(policy.forget_after_secs))
    }
}

/// The longer of two throttle waits: both checks must pass; when both refuse, the later
/// release wins; any other error is returned as it is.
pub(crate) fn longer_wait(a: Result<()>, b: Result<()>) -> Result<()> {
    match (a, b) {
        (
            Err(Error::Throttled {
                retry_after_secs: x,
            }),
            Err(Error::Throttled {
                retry_after_secs: y,
            }),
        ) => Err(Error::Throttled {
            retry_after_secs: x.max(y),
        }),
        (Err(e), _) | (_, Err(e)) => Err(e),
        (Ok(()), Ok(())) => Ok(()),
    }
}

/// Throttling state for accounts and sources, keyed by [`ThrottleKey`]'s text form, in
/// this process's memory: for a caller without a store. The `Manager` keeps the same
/// records in its store instead ([`LoginThrottle`](crate::store::LoginThrottle)), shared
/// by every process on it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Throttle {
    account_policy: ThrottlePolicy,
    source_policy: ThrottlePolicy,
    entries: BTreeMap<String, ThrottleState>,
}

impl Default for Throttle {
    fn default() -> Self {
        Self::new(
            ThrottlePolicy::account_default(),
            ThrottlePolicy::source_default(),
        )
    }
}

impl Throttle {
    /// Empty state with these policies.
    pub fn new(account_policy: ThrottlePolicy, source_policy: ThrottlePolicy) -> Self {
        Self {
            account_policy,
            source_policy,
            entries: BTreeMap::new(),
        }
    }

    /// The policy that applies to `key`.
    pub fn policy(&self, key: &ThrottleKey) -> &ThrottlePolicy {
        match key {
            // A session key is never counted; its policy is the account's.
            ThrottleKey::Account(_) | ThrottleKey::Session(_) => &self.account_policy,
            ThrottleKey::Source(_) => &self.source_policy,
        }
    }

    /// The record of `key`, if any.
    pub fn state(&self, key: &ThrottleKey) -> Option<&ThrottleState> {
        self.entries.get(&key.to_string())
    }

    /// `Err(Throttled)` while `key` is blocked at `now`.
    pub fn check(&self, key: &ThrottleKey, now: OffsetDateTime) -> Result<()> {
        self.state(key).map_or(Ok(()), |s| s.check(unix(now)))
    }

    /// Count a failure for `key` at `now`.
    pub fn record_failure(&mut self, key: &ThrottleKey, now: OffsetDateTime) {
        let policy = *self.policy(key);
        self.entries
            .entry(key.to_string())
            .or_default()
            .record_failure(&policy, unix(now));
    }

    /// Forget `key`'s failures (after a successful login for an account).
    pub fn record_success(&mut self, key: &ThrottleKey) {
        self.entries.remove(&key.to_string());
    }

    /// Check both the account and the source; the longer wait wins.
    pub fn check_login(&self, account: &str, source: IpAddr, now: OffsetDateTime) -> Result<()> {
        longer_wait(
            self.check(&ThrottleKey::account(account), now),
            self.check(&ThrottleKey::source(source), now),
        )
    }

    /// Count a failed login (unknown user, wrong password or wrong TOTP code alike)
    /// against both the account and the source.
    pub fn record_login_failure(&mut self, account: &str, source: IpAddr, now: OffsetDateTime) {
        self.record_failure(&ThrottleKey::account(account), now);
        self.record_failure(&ThrottleKey::source(source), now);
    }

    /// A successful login: the account's record is cleared, the source's is kept.
    pub fn record_login_success(&mut self, account: &str) {
        self.record_success(&ThrottleKey::account(account));
    }

    /// Drop every record that is stale at `now`; returns how many were dropped.
    pub fn prune(&mut self, now: OffsetDateTime) -> usize {
        let now = unix(now);
        let before = self.entries.len();
        let (account, source) = (self.account_policy, self.source_policy);
        self.entries.retain(|k, s| {
            let policy = if k.starts_with("account:") {
                &account
            } else {
                &source
            };
            !s.is_stale(policy, now)
        });
        before - self.entries.len()
    }

    /// Number of keys with a record.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no key has a record.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Unix seconds; times before 1970 count as 0 (throttling only needs differences).
pub(crate) fn unix(t: OffsetDateTime) -> u64 {
    u64::try_from(t.unix_timestamp()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_700_000_000;

    fn at(secs: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(T0 + secs).unwrap()
    }

    fn retry(r: Result<()>) -> Option<u64> {
        match r {
            Ok(()) => None,
            Err(Error::Throttled { retry_after_secs }) => Some(retry_after_secs),
            Err(e) => panic!("unexpected {e:?}"),
        }
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let p = ThrottlePolicy::account_default();
        let delays: Vec<u64> = (0..=20).map(|n| p.delay_after(n)).collect();
        assert_eq!(&delays[..12], &[0, 0, 0, 0, 0, 0, 1, 2, 4, 8, 16, 32]);
        assert_eq!(p.delay_after(15), 512);
        assert_eq!(p.delay_after(16), 900);
        assert_eq!(p.delay_after(u32::MAX), 900);
        let huge = ThrottlePolicy {
            base_delay_secs: u64::MAX,
            max_delay_secs: u64::MAX,
            ..p
        };
        assert_eq!(huge.delay_after(100), u64::MAX);
    }

    #[test]
    fn account_is_blocked_after_free_failures_and_released_in_time() {
        let mut t = Throttle::default();
        let key = ThrottleKey::account("alice");
        for i in 0..5 {
            assert_eq!(retry(t.check(&key, at(i))), None);
            t.record_failure(&key, at(i));
        }
        assert_eq!(retry(t.check(&key, at(5))), None);
        t.record_failure(&key, at(5)); // 6th: 1 s
        assert_eq!(retry(t.check(&key, at(5))), Some(1));
        assert_eq!(retry(t.check(&key, at(6))), None);
        t.record_failure(&key, at(6)); // 7th: 2 s
        assert_eq!(retry(t.check(&key, at(6))), Some(2));
        assert_eq!(retry(t.check(&key, at(7))), Some(1));
        assert_eq!(retry(t.check(&key, at(8))), None);
        // Other accounts are unaffected.
        assert_eq!(retry(t.check(&ThrottleKey::account("bob"), at(6))), None);
        // Success clears the account.
        t.record_success(&key);
        assert_eq!(retry(t.check(&key, at(6))), None);
        assert!(t.state(&key).is_none());
    }

    #[test]
    fn records_are_forgotten_after_a_quiet_day() {
        let mut t = Throttle::default();
        let key = ThrottleKey::account("carol");
        for _ in 0..7 {
            t.record_failure(&key, at(0));
        }
        assert_eq!(t.state(&key).unwrap().failures, 7);
        let day = 24 * 3600;
        t.record_failure(&key, at(day - 1));
        assert_eq!(t.state(&key).unwrap().failures, 8);
        t.record_failure(&key, at(2 * day));
        assert_eq!(t.state(&key).unwrap().failures, 1);
        assert_eq!(retry(t.check(&key, at(2 * day))), None);
        assert_eq!(t.prune(at(2 * day + 10)), 0);
        assert_eq!(t.prune(at(3 * day)), 1);
        assert!(t.is_empty());
    }

    #[test]
    fn login_checks_account_and_source_and_success_keeps_the_source() {
        let policy = ThrottlePolicy {
            free_failures: 2,
            base_delay_secs: 10,
            max_delay_secs: 100,
            forget_after_secs: 3600,
        };
        let mut t = Throttle::new(
            ThrottlePolicy {
                free_failures: 100,
                ..policy
            },
            policy,
        );
        let src: IpAddr = "192.0.2.10".parse().unwrap();
        // One source guessing against many accounts: blocked by the source key.
        for (i, user) in [(0, "a"), (1, "b"), (2, "c")] {
            t.check_login(user, src, at(0)).unwrap();
            t.record_login_failure(user, src, at(i));
        }
        assert_eq!(retry(t.check_login("d", src, at(2))), Some(10));
        // A success on a valid account does not reset the source.
        t.record_login_success("a");
        assert_eq!(retry(t.check_login("d", src, at(3))), Some(9));
        // Another source is fine.
        assert_eq!(
            retry(t.check_login("d", "192.0.2.11".parse().unwrap(), at(3))),
            None
        );
        // The longer of two waits wins.
        let mut both = Throttle::new(
            policy,
            ThrottlePolicy {
                base_delay_secs: 50,
                ..policy
            },
        );
        for _ in 0..3 {
            both.record_login_failure("x", src, at(0));
        }
        assert_eq!(retry(both.check_login("x", src, at(0))), Some(50));
    }

    #[test]
    fn sources_are_normalised() {
        let a = ThrottleKey::source("2001:db8:1:2:aaaa::1".parse().unwrap());
        let b = ThrottleKey::source("2001:db8:1:2:ffff:ffff:ffff:ffff".parse().unwrap());
        let c = ThrottleKey::source("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.to_string(), "source:2001:db8:1:2::/64");
        let mapped = ThrottleKey::source("::ffff:192.0.2.1".parse().unwrap());
        assert_eq!(mapped, ThrottleKey::source("192.0.2.1".parse().unwrap()));
        assert_eq!(mapped.to_string(), "source:192.0.2.1");
        assert_eq!(ThrottleKey::account("alice").to_string(), "account:alice");
    }

    #[test]
    fn state_is_serialisable() {
        let mut t = Throttle::default();
        let src: IpAddr = "2001:db8::1".parse().unwrap();
        for _ in 0..30 {
            t.record_login_failure("alice", src, at(0));
        }
        let json = serde_json::to_string(&t).unwrap();
        assert!(json.contains("account:alice") && json.contains("source:2001:db8::/64"));
        let back: Throttle = serde_json::from_str(&json).unwrap();
        assert_eq!(back, t);
        assert_eq!(
            retry(back.check_login("alice", src, at(10))),
            retry(t.check_login("alice", src, at(10)))
        );
        assert!(retry(back.check_login("alice", src, at(10))).is_some());
        // Times before 1970 do not panic.
        let old = OffsetDateTime::from_unix_timestamp(-100).unwrap();
        t.record_failure(&ThrottleKey::account("z"), old);
        let _ = t.check(&ThrottleKey::account("z"), old);
    }
}
