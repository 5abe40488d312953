//! The Redis rate limiter (GCRA in one script) under contention, as the copies of a REST
//! server use it: many tasks on two limiters (two sets of connections, as two processes
//! would) spend one key's budget at once, and exactly the burst goes through. Also: the
//! arithmetic agrees with the core's `Limit::decide`, a refusal writes nothing, idle keys
//! expire, keys are independent, and an unreachable Redis is a `store` error in bounded
//! time.
//!
//! Needs `WGM_TEST_REDIS_URL` except for the unreachable case.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use wgm_core::ratelimit::{Limit, RateLimiter};
use wgm_core::Error;
use wgm_store_redis::{RedisLimiter, RedisOptions};

/// A fresh namespace, deleted at the end (also on a failed assertion).
struct Ns {
    url: String,
    name: String,
}

impl Drop for Ns {
    fn drop(&mut self) {
        common::delete_namespace(&self.url, &self.name);
    }
}

fn setup() -> Option<Ns> {
    let url = common::redis_url(&[])?;
    Some(Ns {
        url,
        name: common::fresh_namespace(),
    })
}

fn raw(url: &str) -> redis::Connection {
    redis::Client::open(url)
        .unwrap()
        .get_connection_with_timeout(Duration::from_secs(5))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_copies_under_contention_allow_exactly_the_burst() {
    let Some(ns) = setup() else { return };
    let a = Arc::new(RedisLimiter::connect(&ns.url, &ns.name).await.unwrap());
    let b = Arc::new(RedisLimiter::connect(&ns.url, &ns.name).await.unwrap());
    // 50 per hour: nothing comes back during the test.
    let limit = Limit::new(50, Duration::from_secs(3600)).unwrap();
    let mut tasks = Vec::new();
    for i in 0..64 {
        let l = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            let mut allowed = 0u32;
            let mut remaining = Vec::new();
            for _ in 0..4 {
                let d = l.check("principal:alice", &limit).await.unwrap();
                if d.allowed {
                    allowed += 1;
                    remaining.push(d.remaining);
                } else {
                    assert_eq!(d.remaining, 0);
                    assert!(d.retry_after > Duration::ZERO);
                    assert!(d.retry_after <= Duration::from_secs(72), "{d:?}");
                    assert!(d.retry_after_secs() >= 1);
                }
            }
            (allowed, remaining)
        }));
    }
    let mut allowed = 0;
    let mut remaining = Vec::new();
    for t in tasks {
        let (n, r) = t.await.unwrap();
        allowed += n;
        remaining.extend(r);
    }
    assert_eq!(allowed, 50, "exactly the burst, across both copies");
    // Every allowed request saw a distinct remaining budget: 49, 48, …, 0.
    remaining.sort_unstable();
    assert_eq!(remaining, (0..50).collect::<Vec<u32>>());
    // Another key has its own budget.
    assert!(a.check("principal:bob", &limit).await.unwrap().allowed);
}

#[tokio::test]
async fn matches_the_core_arithmetic_and_refusals_write_nothing() {
    let Some(ns) = setup() else { return };
    let limiter = RedisLimiter::connect(&ns.url, &ns.name).await.unwrap();
    let limit = Limit::new(2, Duration::from_secs(100)).unwrap(); // one per 50 s
    let key = format!("{{{}}}:ratelimit:k", ns.name);
    let d1 = limiter.check("k", &limit).await.unwrap();
    assert!(d1.allowed);
    assert_eq!(d1.remaining, 1);
    assert!(d1.reset_after <= Duration::from_secs(50));
    assert!(d1.reset_after > Duration::from_secs(49));
    let d2 = limiter.check("k", &limit).await.unwrap();
    assert!(d2.allowed);
    assert_eq!(d2.remaining, 0);
    let mut c = raw(&ns.url);
    let stored: String = redis::cmd("GET").arg(&key).query(&mut c).unwrap();
    let stored: u64 = stored.parse().expect("an integer TAT in µs, not a float");
    let ttl: i64 = redis::cmd("PTTL").arg(&key).query(&mut c).unwrap();
    assert!(
        ttl > 99_000 && ttl <= 100_001,
        "expires when whole again: {ttl}"
    );
    let refused = limiter.check("k", &limit).await.unwrap();
    assert!(!refused.allowed);
    assert!(refused.retry_after > Duration::from_secs(49));
    assert!(refused.retry_after <= Duration::from_secs(50));
    assert_eq!(refused.retry_after_secs(), 50);
    let after: String = redis::cmd("GET").arg(&key).query(&mut c).unwrap();
    assert_eq!(
        after.parse::<u64>().unwrap(),
        stored,
        "a refusal writes nothing"
    );
    // The same decision as the core's, from the stored state at Redis's time.
    let (s, us): (String, String) = redis::cmd("TIME").query(&mut c).unwrap();
    let now = s.parse::<u64>().unwrap() * 1_000_000 + us.parse::<u64>().unwrap();
    let (core, _) = limit.decide(Some(stored), now);
    assert!(!core.allowed);
    assert!(
        core.retry_after <= refused.retry_after,
        "later, so no longer"
    );
    assert!(refused.retry_after.checked_sub(core.retry_after).unwrap() < Duration::from_secs(1));
}

#[tokio::test]
async fn a_short_limit_recovers_and_idle_keys_expire() {
    let Some(ns) = setup() else { return };
    let limiter = RedisLimiter::connect(&ns.url, &ns.name).await.unwrap();
    let limit = Limit::new(1, Duration::from_millis(200)).unwrap();
    assert!(limiter.check("k", &limit).await.unwrap().allowed);
    let refused = limiter.check("k", &limit).await.unwrap();
    assert!(!refused.allowed);
    tokio::time::sleep(refused.retry_after + Duration::from_millis(20)).await;
    assert!(limiter.check("k", &limit).await.unwrap().allowed);
    tokio::time::sleep(Duration::from_millis(450)).await;
    let mut c = raw(&ns.url);
    let exists: i64 = redis::cmd("EXISTS")
        .arg(format!("{{{}}}:ratelimit:k", ns.name))
        .query(&mut c)
        .unwrap();
    assert_eq!(exists, 0, "an idle key is gone once its budget is whole");
}

#[tokio::test]
async fn the_store_hands_out_a_limiter_on_its_namespace() {
    let Some(ns) = setup() else { return };
    let store = wgm_store_redis::RedisStore::open(
        &ns.url,
        RedisOptions::default().namespace(ns.name.clone()),
    )
    .await
    .unwrap();
    let from_store = store.limiter();
    let separate = RedisLimiter::connect(&ns.url, &ns.name).await.unwrap();
    let limit = Limit::new(1, Duration::from_secs(60)).unwrap();
    assert!(from_store.check("k", &limit).await.unwrap().allowed);
    assert!(
        !separate.check("k", &limit).await.unwrap().allowed,
        "one budget"
    );
    store.close();
}

#[tokio::test]
async fn unreachable_or_bad_input_is_a_typed_error() {
    let url = format!("redis://:hunter2@127.0.0.1:{}/0", common::free_port());
    let r = tokio::time::timeout(
        Duration::from_secs(20),
        RedisLimiter::connect_with(
            &url,
            RedisOptions::default()
                .connect_timeout(Duration::from_secs(1))
                .response_timeout(Duration::from_secs(1)),
        ),
    )
    .await
    .expect("bounded");
    let e = r.unwrap_err();
    assert!(matches!(e, Error::Store { store: "redis", .. }), "{e:?}");
    assert!(!e.to_string().contains("hunter2"));
    let e = RedisLimiter::connect("redis://127.0.0.1:1", "a b")
        .await
        .unwrap_err();
    assert_eq!(e.code(), "invalid_input");
}
