//! The login throttle's records in the store ([`ThrottleStore`], a part of
//! [`Store`]) and the login throttle over them ([`LoginThrottle`]).
//!
//! **Why in the store.** A throttle kept in a process's memory gives every process its
//! own guessing budget: N copies of a REST server behind a load balancer, or N CLI
//! invocations, allow N times the failures per account. Kept in the store, the records
//! are shared by every process on it, as the desired state is.
//!
//! **Why compare-and-swap.** Two processes failing a login at the same time must count
//! two failures. Each failure therefore reads the key's record, computes the next one
//! with the pure logic of [`crate::auth::throttle`] ([`ThrottleState::record_failure`])
//! and swaps it in only if the record is still the one it read; a lost swap is tried
//! again on a fresh read (bounded). A blind write would let one failure overwrite the
//! other.
//!
//! **Ephemeral.** A record lasts until it is stale ([`ThrottleState::expires_at`]: its
//! block is over and its last failure is `forget_after` old); reads treat an expired
//! record as absent, and engines drop expired records by themselves (Redis: the key's
//! `PX` expiry; SQL: expired rows deleted by later writes; memory: pruned as the map
//! grows). Throttle records are not store contents: they are not part of a
//! [`Snapshot`](super::Snapshot), so export, copy, backup and import never carry them,
//! an import into an empty store ignores them, and a forced restore
//! ([`SnapshotStore::replace_with_snapshot`](super::SnapshotStore::replace_with_snapshot))
//! keeps them — restoring old desired state is no reason to hand a guesser a fresh
//! budget.
//!
//! **Fail closed.** [`LoginThrottle::check`] returns the store's error when it cannot
//! read the records, and the `Manager` then refuses the login without looking at the
//! password; a failure that cannot be counted fails the attempt with the store's error
//! too.

use std::net::IpAddr;

use async_trait::async_trait;
use time::OffsetDateTime;

use super::Store;
use crate::auth::throttle::{longer_wait, unix, ThrottleKey, ThrottlePolicy, ThrottleState};
use crate::{Error, Result};

/// A throttle record as a store keeps it: the state and when it may be forgotten.
///
/// ```
/// use time::OffsetDateTime;
/// use wgm_core::auth::throttle::{ThrottlePolicy, ThrottleState};
/// use wgm_core::store::ThrottleRecord;
/// let policy = ThrottlePolicy::account_default();
/// let mut state = ThrottleState::default();
/// state.record_failure(&policy, 1_800_000_000);
/// let r = ThrottleRecord::new(state, &policy);
/// assert_eq!(r.expires_at.unix_timestamp(), 1_800_000_000 + 24 * 3600);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThrottleRecord {
    /// The failures of the key.
    pub state: ThrottleState,
    /// When the record may be forgotten: from then on it reads as absent.
    pub expires_at: OffsetDateTime,
}

impl ThrottleRecord {
    /// `state`, kept until it is stale under `policy` ([`ThrottleState::expires_at`]).
    pub fn new(state: ThrottleState, policy: &ThrottlePolicy) -> Self {
        ThrottleRecord {
            state,
            expires_at: from_unix(state.expires_at(policy)),
        }
    }
}

/// A time from unix seconds, clamped to what [`OffsetDateTime`] holds.
fn from_unix(secs: u64) -> OffsetDateTime {
    let max = time::macros::datetime!(9999-12-31 23:59:59 UTC);
    i64::try_from(secs)
        .ok()
        .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
        .map_or(max, |t| t.min(max))
}

/// The login throttle's records, shared by every process on the store (a part of
/// [`Store`]; see the module docs for why, and what "ephemeral" means here).
///
/// Keys are stored by their text form ([`ThrottleKey::store_key`]); times are the
/// caller's (`now`, the manager's clock), compared in whole seconds. A record whose
/// `expires_at` is at or before `now` reads as absent, and an engine may drop it.
///
/// ```
/// use std::sync::Arc;
/// use time::OffsetDateTime;
/// use wgm_core::auth::throttle::{ThrottleKey, ThrottlePolicy, ThrottleState};
/// use wgm_core::store::{MemoryStore, Store, ThrottleRecord};
/// # futures::executor::block_on(async {
/// let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
/// let key = ThrottleKey::account("alice");
/// let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
/// let policy = ThrottlePolicy::account_default();
/// let mut state = ThrottleState::default();
/// state.record_failure(&policy, 1_800_000_000);
/// let first = ThrottleRecord::new(state, &policy);
/// // Absent → first: swapped.
/// assert!(store.swap_throttle_record(&key, None, Some(&first), now).await?);
/// // Absent → first again: the record is no longer absent, nothing is written.
/// assert!(!store.swap_throttle_record(&key, None, Some(&first), now).await?);
/// assert_eq!(store.throttle_records(&[key.clone()], now).await?, vec![Some(state)]);
/// // Forgotten once it expires.
/// assert_eq!(store.throttle_records(&[key], first.expires_at).await?, vec![None]);
/// # Ok::<(), wgm_core::Error>(()) }).unwrap();
/// ```
#[async_trait]
pub trait ThrottleStore: Send + Sync {
    /// The live records of `keys` at `now`, in the order of `keys`: `None` for a key
    /// without a record or whose record expired.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] (field `throttle.key`) for a key that
    /// [`ThrottleKey::store_key`] refuses; [`Error::Store`] when the store fails.
    async fn throttle_records(
        &self,
        keys: &[ThrottleKey],
        now: OffsetDateTime,
    ) -> Result<Vec<Option<ThrottleState>>>;

    /// Atomically: if `key`'s live record at `now` is `expected` (`None`: no live
    /// record), replace it with `new` (`None`: delete it; a `new` that expires at or
    /// before `now` is stored as no record), and return `true`; otherwise write nothing
    /// and return `false`. Records compare by value ([`ThrottleState`]'s fields), never
    /// by their stored text.
    ///
    /// # Errors
    ///
    /// As [`ThrottleStore::throttle_records`]; a lost swap is `Ok(false)`, not an error.
    async fn swap_throttle_record(
        &self,
        key: &ThrottleKey,
        expected: Option<&ThrottleState>,
        new: Option<&ThrottleRecord>,
        now: OffsetDateTime,
    ) -> Result<bool>;
}

/// The login throttle over a store's [`ThrottleStore`]: the policies per account and per
/// source and the steps of a login attempt ([`check`](LoginThrottle::check),
/// [`record_login_failure`](LoginThrottle::record_login_failure),
/// [`record_login_success`](LoginThrottle::record_login_success)), each decided by the
/// pure logic of [`crate::auth::throttle`]. The `Manager` runs it with
/// `ManagerConfig::login_throttle` on every password login.
///
/// ```
/// use std::net::IpAddr;
/// use std::sync::Arc;
/// use time::OffsetDateTime;
/// use wgm_core::store::{LoginThrottle, MemoryStore, Store};
/// use wgm_core::Error;
/// # futures::executor::block_on(async {
/// let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
/// let throttle = LoginThrottle::default(); // 5 free failures per account
/// let source: IpAddr = "2001:db8::7".parse().unwrap();
/// let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
/// for _ in 0..6 {
///     throttle.check(&*store, Some("alice"), source, now).await?;
///     throttle.record_login_failure(&*store, Some("alice"), source, now).await?;
/// }
/// let e = throttle.check(&*store, Some("alice"), source, now).await.unwrap_err();
/// assert!(matches!(e, Error::Throttled { retry_after_secs: 1 }));
/// # Ok::<(), wgm_core::Error>(()) }).unwrap();
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoginThrottle {
    /// The policy of account keys (default [`ThrottlePolicy::account_default`]).
    pub account: ThrottlePolicy,
    /// The policy of source keys (default [`ThrottlePolicy::source_default`]).
    pub source: ThrottlePolicy,
    /// How many compare-and-swaps one recorded failure or success tries before it gives
    /// up with a store error (default 64). Each lost swap means another writer's swap
    /// landed, so this bounds the wait under contention, not the outcome of a quiet one.
    pub max_attempts: u32,
}

impl Default for LoginThrottle {
    fn default() -> Self {
        LoginThrottle {
            account: ThrottlePolicy::account_default(),
            source: ThrottlePolicy::source_default(),
            max_attempts: 64,
        }
    }
}

impl LoginThrottle {
    /// The policy that applies to `key`.
    pub fn policy(&self, key: &ThrottleKey) -> &ThrottlePolicy {
        match key {
            // A session key is never counted; its policy is the account's.
            ThrottleKey::Account(_) | ThrottleKey::Session(_) => &self.account,
            ThrottleKey::Source(_) => &self.source,
        }
    }

    /// The keys of a login attempt: the account's (when it names one) and the source's.
    fn keys(account: Option<&str>, source: IpAddr) -> Vec<ThrottleKey> {
        let mut keys = Vec::with_capacity(2);
        if let Some(a) = account {
            keys.push(ThrottleKey::account(a));
        }
        keys.push(ThrottleKey::source(source));
        keys
    }

    /// Refuse a login attempt of `account` (a user name's key; `None` for a name that
    /// can name no account) from `source` while either is blocked at `now`: one read of
    /// both records.
    ///
    /// # Errors
    ///
    /// [`Error::Throttled`] with the longer of the two waits; the store's error
    /// ([`Error::Store`]) when the records cannot be read — the attempt is refused then
    /// too (fail closed).
    pub async fn check(
        &self,
        store: &dyn Store,
        account: Option<&str>,
        source: IpAddr,
        now: OffsetDateTime,
    ) -> Result<()> {
        let keys = Self::keys(account, source);
        let records = store.throttle_records(&keys, now).await?;
        let t = unix(now);
        records
            .iter()
            .map(|r| r.map_or(Ok(()), |s| s.check(t)))
            .fold(Ok(()), longer_wait)
    }

    /// Count one failure of `key` at `now`: read, compute
    /// ([`ThrottleState::record_failure`]), compare-and-swap; again on a lost swap, at
    /// most [`max_attempts`](LoginThrottle::max_attempts) times. Returns the record
    /// stored.
    ///
    /// # Errors
    ///
    /// The store's error; [`Error::Store`] when every attempt lost its swap.
    pub async fn record_failure(
        &self,
        store: &dyn Store,
        key: &ThrottleKey,
        now: OffsetDateTime,
    ) -> Result<ThrottleState> {
        let policy = self.policy(key);
        let keys = std::slice::from_ref(key);
        for _ in 0..self.max_attempts.max(1) {
            let current = store.throttle_records(keys, now).await?.pop().flatten();
            let mut next = current.unwrap_or_default();
            next.record_failure(policy, unix(now));
            let record = ThrottleRecord::new(next, policy);
            if store
                .swap_throttle_record(key, current.as_ref(), Some(&record), now)
                .await?
            {
                return Ok(next);
            }
        }
        Err(self.contended(store))
    }

    /// Count a failed login (unknown user, wrong password or wrong one-time code alike)
    /// against the account (when `account` names one) and the source.
    ///
    /// # Errors
    ///
    /// As [`LoginThrottle::record_failure`].
    pub async fn record_login_failure(
        &self,
        store: &dyn Store,
        account: Option<&str>,
        source: IpAddr,
        now: OffsetDateTime,
    ) -> Result<()> {
        for key in Self::keys(account, source) {
            self.record_failure(store, &key, now).await?;
        }
        Ok(())
    }

    /// A successful login of `account`: its record is deleted (compare-and-swap, again
    /// on a lost swap); the source's is kept, so one valid account does not reset a
    /// client's budget against others.
    ///
    /// # Errors
    ///
    /// As [`LoginThrottle::record_failure`].
    pub async fn record_login_success(
        &self,
        store: &dyn Store,
        account: &str,
        now: OffsetDateTime,
    ) -> Result<()> {
        let key = ThrottleKey::account(account);
        let keys = std::slice::from_ref(&key);
        for _ in 0..self.max_attempts.max(1) {
            let Some(current) = store.throttle_records(keys, now).await?.pop().flatten() else {
                return Ok(());
            };
            if store
                .swap_throttle_record(&key, Some(&current), None, now)
                .await?
            {
                return Ok(());
            }
        }
        Err(self.contended(store))
    }

    fn contended(&self, store: &dyn Store) -> Error {
        Error::store(
            store.name(),
            format!(
                "the login throttle's record changed under each of {} attempts to update it",
                self.max_attempts.max(1)
            ),
        )
    }
}
