//! The conformance suite of [`ChangeFeed`](crate::store::ChangeFeed) implementations:
//! wake-ups cover every commit with revisions that never go down per server, a
//! [`Follower`] yields exactly the revisions after its starting point in order and keeps
//! up with new ones, and after the feed's connection is cut a commit still reaches the
//! follower (the gap is reported as [`FeedEvent::Missed`] or covered by a later wake-up).
//!
//! The checks wait on the feed and have no timer of their own (the core has none): the
//! calling test bounds them with its runtime's timeout. Other writers may share the
//! store; the checks only look at servers they created.
//!
//! ```
//! # futures::executor::block_on(async {
//! use std::sync::Arc;
//! use wgm_core::store::MemoryStore;
//! let store = Arc::new(MemoryStore::new());
//! let cut = store.clone();
//! let disrupt = move || { cut.disrupt_feeds(); futures::future::ready(()).boxed() };
//! # use futures::FutureExt;
//! wgm_core::conformance::feed::run_all(store, Some(&disrupt)).await.unwrap();
//! # });
//! ```

use std::collections::HashMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::StreamExt;

use super::store::{audit_key, commit, create, fixture_peer, suffix, Failure};
use crate::model::{Change, RevisionNo, ServerId};
use crate::store::{FeedEvent, Follower, Store};

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

/// A way to cut the feed's connection, as a network fault would (PostgreSQL: terminate
/// the listening session; memory: [`crate::store::MemoryStore::disrupt_feeds`]).
pub type Disrupt = dyn Fn() -> BoxFuture<'static, ()> + Send + Sync;

/// Add `n` peers to `server`, one revision each, from `head`; returns the new head.
async fn add_peers(
    store: &dyn Store,
    server: &crate::model::Server,
    head: RevisionNo,
    n: u32,
) -> std::result::Result<RevisionNo, Failure> {
    let mut head = head;
    for i in 0..n {
        let p = fixture_peer(
            server,
            &format!("f{}-{i}-{}", head.0, suffix()),
            10 + head.0 as u32 * 7 + i,
        )?;
        let done = store
            .commit(
                commit(
                    server.id,
                    head,
                    vec![Change::PeerAdded { peer: Box::new(p) }],
                ),
                audit_key(),
            )
            .await
            .map_err(|e| format!("commit after revision {head}: {e}"))?;
        head = done.record.revision;
    }
    Ok(head)
}

/// Read `events` until every server in `want` is reported at its revision or later; a
/// [`FeedEvent::Missed`] counts for every server once the store's heads show it there.
/// Per server, reported revisions must never go down.
async fn until_covered(
    store: &dyn Store,
    events: &mut BoxStream<'static, FeedEvent>,
    want: &HashMap<ServerId, RevisionNo>,
    seen: &mut HashMap<ServerId, RevisionNo>,
) -> std::result::Result<(), Failure> {
    let covered = |seen: &HashMap<ServerId, RevisionNo>| {
        want.iter()
            .all(|(s, r)| seen.get(s).is_some_and(|got| got >= r))
    };
    while !covered(seen) {
        match events.next().await {
            None => return Err("the feed ended".into()),
            Some(FeedEvent::Committed { server, revision }) => {
                if let Some(prev) = seen.get(&server) {
                    ensure!(
                        revision >= *prev,
                        "server {server}: revision {revision} reported after {prev}"
                    );
                }
                if want.contains_key(&server) {
                    seen.insert(server, revision);
                }
            }
            Some(FeedEvent::Missed) => {
                for s in want.keys() {
                    let head = store
                        .head(*s)
                        .await
                        .map_err(|e| e.to_string())?
                        .unwrap_or(RevisionNo::NONE);
                    let e = seen.entry(*s).or_insert(head);
                    *e = (*e).max(head);
                }
            }
        }
    }
    Ok(())
}

/// Wake-ups cover commits to several servers, per server never going down.
pub async fn wakes_after_commits(store: Arc<dyn Store>) -> std::result::Result<(), Failure> {
    let mut events = store.watch().await.map_err(|e| e.to_string())?;
    let a = create(&*store, "feed-a").await?;
    let b = create(&*store, "feed-b").await?;
    let head_a = add_peers(&*store, &a, RevisionNo(1), 4).await?;
    let head_b = add_peers(&*store, &b, RevisionNo(1), 2).await?;
    let want = HashMap::from([(a.id, head_a), (b.id, head_b)]);
    let mut seen = HashMap::new();
    until_covered(&*store, &mut events, &want, &mut seen).await
}

/// A follower started after revision 2 yields 3, 4, 5 in order, each once, then the
/// revisions committed while it waits.
pub async fn follower_resumes_in_order(store: Arc<dyn Store>) -> std::result::Result<(), Failure> {
    let s = create(&*store, "follow").await?;
    let head = add_peers(&*store, &s, RevisionNo(1), 4).await?;
    ensure!(head == RevisionNo(5), "setup: head {head}");
    let mut f = Follower::start(store.clone(), s.id, RevisionNo(2))
        .await
        .map_err(|e| e.to_string())?;
    for want in 3..=5u64 {
        let got = f.next().await.map_err(|e| e.to_string())?;
        ensure!(
            got.as_ref().map(|r| r.revision) == Some(RevisionNo(want)),
            "resumed after 2: expected {want}, got {:?}",
            got.map(|r| r.revision)
        );
    }
    ensure!(
        f.try_next().await.map_err(|e| e.to_string())?.is_none(),
        "a revision yielded twice or invented"
    );
    // Committed while the follower waits on the feed.
    let (got, added) = futures::join!(f.next(), add_peers(&*store, &s, head, 1));
    let added = added?;
    let got = got.map_err(|e| e.to_string())?;
    ensure!(
        got.as_ref().map(|r| r.revision) == Some(added),
        "while waiting: expected {added}, got {:?}",
        got.map(|r| r.revision)
    );
    ensure!(f.cursor() == added, "cursor {} after {added}", f.cursor());
    Ok(())
}

/// After the feed's connection is cut, a commit still reaches a waiting follower and a
/// watcher (as `Missed`, or as a wake-up at or past it).
pub async fn gap_after_reconnect(
    store: Arc<dyn Store>,
    disrupt: &Disrupt,
) -> std::result::Result<(), Failure> {
    let s = create(&*store, "gap").await?;
    let mut events = store.watch().await.map_err(|e| e.to_string())?;
    let mut f = Follower::start(store.clone(), s.id, RevisionNo(1))
        .await
        .map_err(|e| e.to_string())?;
    disrupt().await;
    let (got, added) = futures::join!(f.next(), add_peers(&*store, &s, RevisionNo(1), 1));
    let added = added?;
    let got = got.map_err(|e| e.to_string())?;
    ensure!(
        got.as_ref().map(|r| r.revision) == Some(added),
        "after the cut: expected {added}, got {:?}",
        got.map(|r| r.revision)
    );
    let want = HashMap::from([(s.id, added)]);
    let mut seen = HashMap::new();
    until_covered(&*store, &mut events, &want, &mut seen).await
}

/// Run every check; `disrupt` (when the engine can be cut) runs the gap check too.
pub async fn run_all(
    store: Arc<dyn Store>,
    disrupt: Option<&Disrupt>,
) -> std::result::Result<(), Failure> {
    wakes_after_commits(store.clone())
        .await
        .map_err(|e| format!("wakes_after_commits: {e}"))?;
    follower_resumes_in_order(store.clone())
        .await
        .map_err(|e| format!("follower_resumes_in_order: {e}"))?;
    if let Some(d) = disrupt {
        gap_after_reconnect(store, d)
            .await
            .map_err(|e| format!("gap_after_reconnect: {e}"))?;
    }
    Ok(())
}
