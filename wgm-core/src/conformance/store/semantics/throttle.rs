//! The login throttle's records ([`ThrottleStore`](crate::store::ThrottleStore)) on every
//! engine: compare-and-swap (a stale expectation writes nothing), expiry, concurrent
//! failures that all count, and a success that clears the account but not the source.
//! Each check throttles a fresh account and a fresh source /64, so it holds on a store
//! that already has data, and leaves the store's contents (everything a snapshot holds)
//! untouched.

use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;

use futures::future::join_all;
use rand::Rng;
use time::{Duration, OffsetDateTime};

use super::{Must, MustErr, R};
use crate::auth::throttle::{ThrottleKey, ThrottlePolicy, ThrottleState, MAX_THROTTLE_KEY_BYTES};
use crate::store::{LoginThrottle, Store, ThrottleRecord};
use crate::Error;

/// A fresh account name and a source in a fresh /64, and the check's instant.
fn fresh() -> (String, IpAddr, OffsetDateTime) {
    let mut rng = rand::thread_rng();
    let tag = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
    let source = IpAddr::V6(Ipv6Addr::new(
        0x2001,
        0xdb8,
        rng.gen(),
        rng.gen(),
        0,
        0,
        0,
        rng.gen_range(1..0xffff),
    ));
    // Whole seconds (records compare in seconds), from a random instant.
    let now = OffsetDateTime::from_unix_timestamp(1_800_000_000 + rng.gen_range(0..10_000_000))
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    (format!("throttled-{tag}"), source, now)
}

fn unix(t: OffsetDateTime) -> u64 {
    u64::try_from(t.unix_timestamp()).unwrap_or(0)
}

/// The state after `n` failures at `now` under `policy`, one at a time.
fn after(n: u32, policy: &ThrottlePolicy, now: OffsetDateTime) -> ThrottleState {
    let mut s = ThrottleState::default();
    for _ in 0..n {
        s.record_failure(policy, unix(now));
    }
    s
}

/// The field of an [`Error::InvalidInput`], or what the result was instead.
fn invalid_field<T: std::fmt::Debug>(r: crate::Result<T>) -> String {
    match r {
        Err(Error::InvalidInput { field, .. }) => field.into_owned(),
        other => format!("not an invalid input: {other:?}"),
    }
}

/// Compare-and-swap of one key's record: absent → a record only while absent; a stale
/// expectation (absent, or a record never stored) returns `false` and writes nothing,
/// for a replacement and a deletion alike; the right one swaps. Keys are independent,
/// read back in the order asked, and a source counts as its /64 however it was built.
/// Records compare by value, extreme ones included. A bad key is invalid input naming
/// `throttle.key`, for reads and swaps.
pub async fn throttle_cas(store: Arc<dyn Store>) -> R {
    let s = &*store;
    let (account, source, now) = fresh();
    let policy = ThrottlePolicy::account_default();
    let a = ThrottleKey::account(&account);
    let src = ThrottleKey::source(source);
    let rec = |n: u32| ThrottleRecord::new(after(n, &policy, now), &policy);
    let (r1, r2, r3) = (rec(1), rec(2), rec(3));
    let read = |keys: Vec<ThrottleKey>| async move { s.throttle_records(&keys, now).await };

    check_eq!(
        read(vec![a.clone(), src.clone()]).await.must()?,
        [None, None]
    );
    check!(s
        .swap_throttle_record(&a, None, Some(&r1), now)
        .await
        .must()?);
    // Expected absent, but a record is there: nothing written.
    check!(!s
        .swap_throttle_record(&a, None, Some(&r2), now)
        .await
        .must()?);
    check_eq!(read(vec![a.clone()]).await.must()?, [Some(r1.state)]);
    // Expected a record that was never stored: nothing written, neither a replacement
    // nor a deletion.
    check!(!s
        .swap_throttle_record(&a, Some(&r2.state), Some(&r3), now)
        .await
        .must()?);
    check!(!s
        .swap_throttle_record(&a, Some(&r2.state), None, now)
        .await
        .must()?);
    check_eq!(read(vec![a.clone()]).await.must()?, [Some(r1.state)]);
    // The right expectation swaps.
    check!(s
        .swap_throttle_record(&a, Some(&r1.state), Some(&r2), now)
        .await
        .must()?);
    check_eq!(read(vec![a.clone()]).await.must()?, [Some(r2.state)]);
    // The other key is untouched; order as asked, a key asked twice answered twice.
    check_eq!(
        read(vec![src.clone(), a.clone(), src.clone()])
            .await
            .must()?,
        [None, Some(r2.state), None]
    );
    // A source is its /64, also when the key was built from a full address.
    check!(s
        .swap_throttle_record(&src, None, Some(&r1), now)
        .await
        .must()?);
    let IpAddr::V6(v6) = source else {
        return Err("the fixture's source is not IPv6".into());
    };
    let neighbour = ThrottleKey::Source(IpAddr::V6(Ipv6Addr::from(u128::from(v6) ^ 0xffff_0000)));
    check_eq!(read(vec![neighbour]).await.must()?, [Some(r1.state)]);
    // Extreme values round-trip and compare exactly.
    let extreme = ThrottleState {
        failures: u32::MAX,
        last_failure: unix(now),
        blocked_until: u64::MAX,
    };
    let far = ThrottleRecord::new(extreme, &policy);
    check!(s
        .swap_throttle_record(&src, Some(&r1.state), Some(&far), now)
        .await
        .must()?);
    check_eq!(read(vec![src.clone()]).await.must()?, [Some(extreme)]);
    check!(!s
        .swap_throttle_record(
            &src,
            Some(&ThrottleState {
                failures: u32::MAX - 1,
                ..extreme
            }),
            None,
            now
        )
        .await
        .must()?);
    // Deletion with the right expectation; deleting what is absent, expecting absence.
    check!(s
        .swap_throttle_record(&a, Some(&r2.state), None, now)
        .await
        .must()?);
    check!(s
        .swap_throttle_record(&src, Some(&extreme), None, now)
        .await
        .must()?);
    check_eq!(
        read(vec![a.clone(), src.clone()]).await.must()?,
        [None, None]
    );
    check!(s.swap_throttle_record(&a, None, None, now).await.must()?);
    check_eq!(read(vec![a.clone()]).await.must()?, [None]);
    // Bad keys: refused by name, nothing written.
    let empty = ThrottleKey::Account(String::new());
    let long = ThrottleKey::Account("x".repeat(MAX_THROTTLE_KEY_BYTES + 1));
    let control = ThrottleKey::Account(format!("{account}\n"));
    for bad in [&empty, &long, &control] {
        check_eq!(invalid_field(read(vec![bad.clone()]).await), "throttle.key");
        check_eq!(
            invalid_field(s.swap_throttle_record(bad, None, Some(&r1), now).await),
            "throttle.key"
        );
    }
    check_eq!(read(vec![a]).await.must()?, [None]);
    Ok(())
}

/// Records expire: a record reads as absent from its `expires_at` on, also for the
/// compare-and-swap (an expired record is not the one expected, and absence is); a new
/// record that expires at or before `now` is not stored. Built by
/// [`ThrottleRecord::new`], a record lasts until it is stale, and the login throttle
/// then counts from one again.
pub async fn throttle_expiry(store: Arc<dyn Store>) -> R {
    let s = &*store;
    let (account, source, now) = fresh();
    let policy = ThrottlePolicy::account_default();
    let a = ThrottleKey::account(&account);
    let one = after(1, &policy, now);
    let two = after(2, &policy, now);
    let until = |secs: i64| ThrottleRecord {
        state: one,
        expires_at: now + Duration::seconds(secs),
    };
    let at = |secs: i64| now + Duration::seconds(secs);
    let read = |t: OffsetDateTime| {
        let keys = [a.clone()];
        async move { s.throttle_records(&keys, t).await }
    };

    check!(s
        .swap_throttle_record(&a, None, Some(&until(10)), now)
        .await
        .must()?);
    check_eq!(read(at(9)).await.must()?, [Some(one)]);
    check_eq!(read(at(10)).await.must()?, [None]);
    // Expired: not the record expected any more; absent is.
    check!(!s
        .swap_throttle_record(&a, Some(&one), Some(&until(20)), at(10))
        .await
        .must()?);
    let next = ThrottleRecord {
        state: two,
        expires_at: at(20),
    };
    check!(s
        .swap_throttle_record(&a, None, Some(&next), at(10))
        .await
        .must()?);
    check_eq!(read(at(15)).await.must()?, [Some(two)]);
    // A record that expires at `now` is stored as none.
    check!(s
        .swap_throttle_record(&a, Some(&two), Some(&until(15)), at(15))
        .await
        .must()?);
    check_eq!(read(at(15)).await.must()?, [None]);
    check_eq!(read(at(14)).await.must()?, [None]);

    // The login throttle keeps a record until it is stale.
    let quick = ThrottlePolicy {
        free_failures: 1,
        base_delay_secs: 5,
        max_delay_secs: 5,
        forget_after_secs: 100,
    };
    let t = LoginThrottle {
        account: quick,
        source: quick,
        max_attempts: 64,
    };
    t.record_login_failure(s, Some(&account), source, now)
        .await
        .must()?;
    let stored = t.record_failure(s, &a, now).await.must()?;
    check_eq!(stored, after(2, &quick, now));
    check_eq!(stored.blocked_until, unix(at(5)));
    check!(matches!(
        t.check(s, Some(&account), source, now).await,
        Err(Error::Throttled {
            retry_after_secs: 5
        })
    ));
    check_eq!(read(at(99)).await.must()?, [Some(stored)]);
    check_eq!(read(at(100)).await.must()?, [None]);
    t.check(s, Some(&account), source, at(100)).await.must()?;
    check_eq!(
        t.record_failure(s, &a, at(100)).await.must()?,
        after(1, &quick, at(100))
    );
    // Clean up what a later run could read (a run of the suite picks another account).
    t.record_login_success(s, &account, at(100)).await.must()?;
    Ok(())
}

/// Failures recorded at the same time through two login throttles (two processes' views
/// of one store) all count: 2 × 10 concurrent failures of one account from one source
/// leave both records exactly as 20 failures one after the other do, and the account is
/// blocked for as long as after 20.
pub async fn throttle_concurrent_failures(store: Arc<dyn Store>) -> R {
    let s = &*store;
    let (account, source, now) = fresh();
    let (a, b) = (LoginThrottle::default(), LoginThrottle::default());
    let failures = (0..20).map(|i| {
        let t = if i % 2 == 0 { &a } else { &b };
        t.record_login_failure(s, Some(&account), source, now)
    });
    for r in join_all(failures).await {
        r.must()?;
    }
    let expected_account = after(20, &a.account, now);
    let expected_source = after(20, &a.source, now);
    check_eq!(
        s.throttle_records(
            &[ThrottleKey::account(&account), ThrottleKey::source(source)],
            now
        )
        .await
        .must()?,
        [Some(expected_account), Some(expected_source)]
    );
    let wait = a.account.delay_after(20);
    check!(wait > 0);
    let e = b.check(s, Some(&account), source, now).await.must_err()?;
    check!(
        matches!(e, Error::Throttled { retry_after_secs } if retry_after_secs == wait),
        "expected a wait of {wait} s, got {e:?}"
    );
    Ok(())
}

/// A successful login clears the account's record and keeps the source's, so one valid
/// account does not reset a client's budget against others; clearing an account without
/// a record is fine.
pub async fn throttle_success_clears_account_only(store: Arc<dyn Store>) -> R {
    let s = &*store;
    let (account, source, now) = fresh();
    let other = format!("{account}-other");
    let t = LoginThrottle::default();
    for _ in 0..3 {
        t.record_login_failure(s, Some(&account), source, now)
            .await
            .must()?;
    }
    t.record_login_failure(s, Some(&other), source, now)
        .await
        .must()?;
    t.record_login_success(s, &account, now).await.must()?;
    let keys = [
        ThrottleKey::account(&account),
        ThrottleKey::source(source),
        ThrottleKey::account(&other),
    ];
    check_eq!(
        s.throttle_records(&keys, now).await.must()?,
        [
            None,
            Some(after(4, &t.source, now)),
            Some(after(1, &t.account, now))
        ]
    );
    t.record_login_success(s, &account, now).await.must()?;
    t.record_login_success(s, &other, now).await.must()?;
    check_eq!(
        s.throttle_records(&keys, now).await.must()?,
        [None, Some(after(4, &t.source, now)), None]
    );
    Ok(())
}
