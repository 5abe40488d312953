//! The change feed of the Redis store: the feed conformance suite
//! (`wgm_core::conformance::feed`) with the watchers' connections killed mid-way
//! (`CLIENT KILL`), and what only this engine has: a commit of another store on the same
//! namespace (another process) wakes the feed, the feed comes back after its connection is
//! killed, a watcher that fell behind the stream's trimming reports `Missed`, and every
//! feed ends when its store is closed. Needs `WGM_TEST_REDIS_URL`.
//!
//! The suite has no timer of its own; each test bounds it (60 s, far above what it takes).
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use wgm_core::conformance::feed;
use wgm_core::model::{RevisionNo, ServerId};
use wgm_core::store::{ChangeFeed, FeedEvent, ServerStore};
use wgm_store_redis::RedisOptions;

/// The bound of a whole feed suite.
const SUITE_LIMIT: Duration = Duration::from_secs(60);
/// The bound of one wait on a feed.
const WAIT_LIMIT: Duration = Duration::from_secs(30);

/// Kill the connections named `name` on the Redis at `url` (a feed's), from a connection
/// of the test's own. Retried until it killed at least one (a feed may still be
/// connecting); returns how many it killed.
fn kill_clients(url: &str, name: &str) -> usize {
    let client = redis::Client::open(url).unwrap();
    let mut c = client.get_connection().unwrap();
    for _ in 0..100 {
        let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut c).unwrap();
        let ids: Vec<String> = list
            .lines()
            .filter(|l| l.split(' ').any(|kv| kv == format!("name={name}")))
            .filter_map(|l| {
                l.split(' ')
                    .find_map(|kv| kv.strip_prefix("id="))
                    .map(str::to_owned)
            })
            .collect();
        let mut killed = 0;
        for id in &ids {
            let n: i64 = redis::cmd("CLIENT")
                .arg("KILL")
                .arg("ID")
                .arg(id)
                .query(&mut c)
                .unwrap_or(0);
            killed += usize::try_from(n).unwrap_or(0);
        }
        if killed > 0 {
            return killed;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("no feed connection named {name} to kill");
}

async fn kill_feeds(url: String, name: String) -> usize {
    tokio::task::spawn_blocking(move || kill_clients(&url, &name))
        .await
        .unwrap()
}

/// Read `events` until `server` is reported at `revision` or later (`Ok`), or until a
/// `Missed` (`Err`), within [`WAIT_LIMIT`].
async fn until_at(
    events: &mut BoxStream<'static, FeedEvent>,
    server: ServerId,
    revision: RevisionNo,
) -> Result<(), FeedEvent> {
    tokio::time::timeout(WAIT_LIMIT, async {
        loop {
            match events.next().await {
                Some(FeedEvent::Committed {
                    server: s,
                    revision: r,
                }) if s == server && r >= revision => return Ok(()),
                Some(FeedEvent::Committed { .. }) => {}
                Some(FeedEvent::Missed) => return Err(FeedEvent::Missed),
                None => panic!("the feed ended"),
            }
        }
    })
    .await
    .expect("no wake-up within 30 s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_with_connections_killed() {
    let Some(t) = common::open().await else {
        return;
    };
    let (url, name) = (t.url.clone(), t.store.feed_client_name().to_owned());
    let cut = move || -> BoxFuture<'static, ()> {
        let (url, name) = (url.clone(), name.clone());
        async move {
            kill_feeds(url, name).await;
        }
        .boxed()
    };
    tokio::time::timeout(SUITE_LIMIT, feed::run_all(t.dyn_store(), Some(&cut)))
        .await
        .expect("the feed suite did not finish within 60 s")
        .unwrap();
}

/// A commit made through a second store on the same namespace (another process's view:
/// its own connections) is reported by the first store's feed, each revision in turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feed_sees_commits_of_another_store() {
    let Some(t) = common::open().await else {
        return;
    };
    let mut events = t.store.watch().await.unwrap();
    let other = t.reopen().await;
    let srv = common::server("elsewhere");
    common::create(&other, &srv).await;
    assert_eq!(until_at(&mut events, srv.id, RevisionNo(1)).await, Ok(()));
    other
        .commit(
            common::add(srv.id, 1, &common::peer(&srv, "a", 2)),
            common::key(),
        )
        .await
        .unwrap();
    assert_eq!(until_at(&mut events, srv.id, RevisionNo(2)).await, Ok(()));
    other.close();
}

/// After its connection is killed the feed comes back by itself: it reports `Missed`,
/// and later commits are reported again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feed_comes_back_after_its_connection_is_killed() {
    let Some(t) = common::open().await else {
        return;
    };
    let mut events = t.store.watch().await.unwrap();
    let srv = common::server("comeback");
    common::create(&*t.store, &srv).await;
    assert_eq!(until_at(&mut events, srv.id, RevisionNo(1)).await, Ok(()));
    assert_eq!(
        kill_feeds(t.url.clone(), t.store.feed_client_name().to_owned()).await,
        1
    );
    // The cut is reported as a gap once the feed is back.
    assert_eq!(
        until_at(&mut events, srv.id, RevisionNo(u64::MAX)).await,
        Err(FeedEvent::Missed)
    );
    t.store
        .commit(
            common::add(srv.id, 1, &common::peer(&srv, "after", 2)),
            common::key(),
        )
        .await
        .unwrap();
    assert_eq!(until_at(&mut events, srv.id, RevisionNo(2)).await, Ok(()));
}

/// A watcher that did not read while the stream was trimmed past it reports `Missed`
/// (the entry numbers jump), and then the commits it can still see.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_behind_the_trimming_reports_missed() {
    let Some(t) = common::open_with(RedisOptions::default().feed_max_len(1)).await else {
        return;
    };
    let mut events = t.store.watch().await.unwrap();
    let srv = common::server("trimmed");
    common::create(&*t.store, &srv).await;
    // Stream nodes hold 100 entries; `MAXLEN ~ 1` drops whole nodes, so after 300 commits
    // the first ones are gone.
    let mut head = 1;
    for i in 0..300u32 {
        let p = common::peer(&srv, &format!("p{i}"), 10 + i);
        head = t
            .store
            .commit(common::add(srv.id, head, &p), common::key())
            .await
            .unwrap()
            .record
            .revision
            .0;
    }
    let first = tokio::time::timeout(WAIT_LIMIT, events.next())
        .await
        .unwrap();
    assert_eq!(
        first,
        Some(FeedEvent::Missed),
        "the trimmed entries went unreported"
    );
    assert_eq!(
        until_at(&mut events, srv.id, RevisionNo(head)).await,
        Ok(())
    );
}

/// Every feed ends when its store is closed, and a closed store starts none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feed_ends_on_close() {
    let Some(t) = common::open().await else {
        return;
    };
    let mut events = t.store.watch().await.unwrap();
    t.store.close();
    let end = tokio::time::timeout(WAIT_LIMIT, events.next()).await;
    assert_eq!(end, Ok(None), "the feed did not end with its store");
    assert_eq!(t.store.watch().await.err().map(|e| e.code()), Some("store"));
    assert_eq!(
        t.store
            .head(ServerId::new_random())
            .await
            .err()
            .map(|e| e.code()),
        Some("store")
    );
}

/// A Redis that lost the feed's tail (faults F13: restarted without its last writes,
/// simulated by deleting the stream and its counter) makes the entry numbers go back: the
/// watcher reports `Missed`, then the commits after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_that_goes_backwards_reports_missed() {
    let Some(t) = common::open().await else {
        return;
    };
    let mut events = t.store.watch().await.unwrap();
    let srv = common::server("backwards");
    common::create(&*t.store, &srv).await;
    assert_eq!(until_at(&mut events, srv.id, RevisionNo(1)).await, Ok(()));
    {
        let client = redis::Client::open(t.url.as_str()).unwrap();
        let mut c = client.get_connection().unwrap();
        let ns = &t.namespace;
        let _: i64 = redis::cmd("DEL")
            .arg(format!("{{{ns}}}:feed"))
            .arg(format!("{{{ns}}}:feed-seq"))
            .query(&mut c)
            .unwrap();
    }
    t.store
        .commit(
            common::add(srv.id, 1, &common::peer(&srv, "after", 2)),
            common::key(),
        )
        .await
        .unwrap();
    assert_eq!(
        until_at(&mut events, srv.id, RevisionNo(2)).await,
        Err(FeedEvent::Missed),
        "the lost entries went unreported"
    );
}
