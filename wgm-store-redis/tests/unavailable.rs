//! Redis down or unreachable: every call fails with a `store` error (`store: "redis"`)
//! within a bound, and never shows the URL's password. A URL on a loopback port nothing
//! listens on needs no server; a server killed mid-use is one this test started (redis
//! suite, `redis-server` on `PATH`), never the shared one. The bound is the only thing
//! timed.
#![allow(clippy::unwrap_used)]

mod common;

use std::future::Future;
use std::time::Duration;

use common::OwnRedis;
use futures::StreamExt;
use wgm_core::model::{AuditQuery, LeaseRequest, Page, RevisionNo, ServerId};
use wgm_core::names::HostName;
use wgm_core::store::{AuditStore, ChangeFeed, FeedEvent, HostStateStore, ServerStore};
use wgm_core::Error;
use wgm_store_redis::{RedisOptions, RedisStore};

/// What every failing call must return within.
const BOUND: Duration = Duration::from_secs(20);

fn options() -> RedisOptions {
    RedisOptions::default()
        .namespace("unavailable")
        .connect_timeout(Duration::from_secs(2))
        .response_timeout(Duration::from_secs(2))
}

/// `f` ends within [`BOUND`] with a `store` error of the Redis store.
async fn fails_in_bound<T: std::fmt::Debug>(
    what: &str,
    f: impl Future<Output = wgm_core::Result<T>>,
) {
    let r = tokio::time::timeout(BOUND, f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not return within {BOUND:?}"));
    match r {
        Err(Error::Store { store: "redis", .. }) => {}
        other => panic!("{what}: expected a redis store error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_closed_port_is_a_store_error_within_the_bound_without_the_password() {
    let url = format!("redis://:hunter2@127.0.0.1:{}/0", common::free_port());
    let r = tokio::time::timeout(BOUND, RedisStore::open(&url, options()))
        .await
        .expect("open did not return within the bound");
    let e = r.unwrap_err();
    assert!(matches!(e, Error::Store { store: "redis", .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("cannot connect within 4 s"), "{msg}");
    assert!(!msg.contains("hunter2"), "never the password: {msg}");
    assert!(
        !format!("{e:?}").contains("hunter2"),
        "never the password: {e:?}"
    );
}

#[tokio::test]
async fn a_bad_url_or_namespace_is_invalid_input() {
    let e = RedisStore::open("postgres://x", options())
        .await
        .unwrap_err();
    assert_eq!(e.code(), "invalid_input");
    let e = RedisStore::open("redis://127.0.0.1:1", options().namespace("a b"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), "invalid_input");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_use_fails_every_call_in_the_bound_and_comes_back() {
    if common::redis_url(&["redis-server"]).is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut redis = OwnRedis::start(dir.path(), None);
    let port = redis.port;
    let store = RedisStore::open(&redis.url(), options()).await.unwrap();
    let srv = common::server("killed");
    common::create(&store, &srv).await;
    let mut events = store.watch().await.unwrap();

    redis.kill();
    fails_in_bound("head", store.head(srv.id)).await;
    fails_in_bound("load_server", store.load_server(srv.id)).await;
    fails_in_bound("list_servers", store.list_servers(Page::ALL)).await;
    let p = common::peer(&srv, "lost", 5);
    fails_in_bound(
        "commit",
        store.commit(common::add(srv.id, 1, &p), common::key()),
    )
    .await;
    fails_in_bound(
        "append_audit",
        store.append_audit(common::entry("x", "y"), common::key()),
    )
    .await;
    fails_in_bound("query_audit", store.query_audit(&AuditQuery::default())).await;
    let req = LeaseRequest {
        server_id: srv.id,
        host: HostName::new("h1").unwrap(),
        holder: "h1/1/1".into(),
        ttl: time::Duration::seconds(30),
        now: time::OffsetDateTime::now_utc(),
        take_over: None,
    };
    fails_in_bound("acquire_lease", store.acquire_lease(&req)).await;
    fails_in_bound("watch", async { store.watch().await.map(|_| ()) }).await;

    // Back on the same directory and port: the store reconnects by itself, nothing of
    // the failed commit landed, and the old feed reports the gap.
    let redis = OwnRedis::start(dir.path(), Some(port));
    let head = tokio::time::timeout(BOUND, async {
        loop {
            if let Ok(h) = store.head(srv.id).await {
                return h;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the store did not come back");
    assert_eq!(head, Some(RevisionNo(1)));
    let missed = tokio::time::timeout(BOUND, async {
        loop {
            match events.next().await {
                Some(FeedEvent::Missed) => return true,
                Some(_) => {}
                None => return false,
            }
        }
    })
    .await
    .expect("the feed did not report the gap");
    assert!(missed, "the feed ended instead of reporting the gap");
    assert_eq!(store.head(ServerId::new_random()).await.unwrap(), None);
    drop(redis);
}
