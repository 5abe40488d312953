//! What only the Redis store's login-throttle records have (the semantics every engine
//! shares are checked by the conformance suite, `tests/conformance.rs`): two stores on
//! one namespace (two processes) count every failure, keys carry a Redis expiry at the
//! record's, and a value written behind the store's back is a store error, never a
//! panic and never a record. Needs `WGM_TEST_REDIS_URL`; skipped with one printed line
//! otherwise.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::IpAddr;

use futures::future::join_all;
use time::OffsetDateTime;
use wgm_core::auth::throttle::{ThrottleKey, ThrottleState};
use wgm_core::store::{LoginThrottle, Store, ThrottleRecord, ThrottleStore};

fn at(secs: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_800_000_000 + secs).unwrap()
}

fn connection(url: &str) -> redis::Connection {
    redis::Client::open(url)
        .unwrap()
        .get_connection_with_timeout(std::time::Duration::from_secs(5))
        .unwrap()
}

/// Two stores on one namespace, each with 10 concurrent failures of one account: all 20
/// count, on both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_on_one_namespace_count_every_failure() {
    let Some(t) = common::open().await else {
        return;
    };
    let other = t.reopen().await;
    let (a, b): (&dyn Store, &dyn Store) = (&*t.store, &other);
    let throttle = LoginThrottle::default();
    let source: IpAddr = "2001:db8:42::1".parse().unwrap();
    let failures = (0..20).map(|i| {
        let s = if i % 2 == 0 { a } else { b };
        throttle.record_login_failure(s, Some("alice"), source, at(0))
    });
    for r in join_all(failures).await {
        r.unwrap();
    }
    let keys = [ThrottleKey::account("alice"), ThrottleKey::source(source)];
    let from_a = a.throttle_records(&keys, at(0)).await.unwrap();
    assert_eq!(from_a, b.throttle_records(&keys, at(0)).await.unwrap());
    assert_eq!(from_a[0].unwrap().failures, 20);
    assert_eq!(from_a[1].unwrap().failures, 20);
    other.close();
}

/// A record's key expires in Redis when the record does (`PX`, counted from the write);
/// a deleted record leaves no key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_expire_with_their_records() {
    let Some(t) = common::open().await else {
        return;
    };
    let key = ThrottleKey::source("192.0.2.1".parse().unwrap());
    let redis_key = format!("{{{}}}:throttle:source:192.0.2.1", t.namespace);
    let record = ThrottleRecord {
        state: ThrottleState {
            failures: 1,
            last_failure: 1_800_000_000,
            blocked_until: 0,
        },
        expires_at: at(3600),
    };
    assert!(t
        .store
        .swap_throttle_record(&key, None, Some(&record), at(0))
        .await
        .unwrap());
    let mut c = connection(&t.url);
    let pttl: i64 = redis::cmd("PTTL").arg(&redis_key).query(&mut c).unwrap();
    assert!(
        (3_590_000..=3_600_000).contains(&pttl),
        "the key expires in {pttl} ms, not in an hour"
    );
    assert!(t
        .store
        .swap_throttle_record(&key, Some(&record.state), None, at(10))
        .await
        .unwrap());
    let exists: i64 = redis::cmd("EXISTS").arg(&redis_key).query(&mut c).unwrap();
    assert_eq!(exists, 0);
}

/// A throttle key holding something else than a record (text that is not one, or a key
/// of another type) is a store error for reads and swaps, and the swap writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_values_are_store_errors() {
    let Some(t) = common::open().await else {
        return;
    };
    let mut c = connection(&t.url);
    let garbage = ThrottleKey::account("garbage");
    let hash = ThrottleKey::account("hash");
    let _: () = redis::cmd("SET")
        .arg(format!("{{{}}}:throttle:account:garbage", t.namespace))
        .arg("not json")
        .query(&mut c)
        .unwrap();
    let _: () = redis::cmd("HSET")
        .arg(format!("{{{}}}:throttle:account:hash", t.namespace))
        .arg("f")
        .arg("v")
        .query(&mut c)
        .unwrap();
    for key in [&garbage, &hash] {
        let e = t
            .store
            .throttle_records(std::slice::from_ref(key), at(0))
            .await
            .unwrap_err();
        assert_eq!(e.code(), "store", "{e}");
        let e = t
            .store
            .swap_throttle_record(key, None, None, at(0))
            .await
            .unwrap_err();
        assert_eq!(e.code(), "store", "{e}");
    }
    let still: String = redis::cmd("GET")
        .arg(format!("{{{}}}:throttle:account:garbage", t.namespace))
        .query(&mut c)
        .unwrap();
    assert_eq!(still, "not json");
}
