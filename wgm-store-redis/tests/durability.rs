//! Durability on a Redis with `appendonly yes` and `appendfsync always`: the test starts
//! its own `redis-server` (on a free loopback port, its files in a temporary directory),
//! commits from several tasks at once, kills the server with SIGKILL in the middle of
//! that, starts it again on the same directory and finds every commit that returned `Ok`:
//! its revision, its peer and its audit record, in a chain that still verifies. Also: a
//! store that requires durability refuses a Redis without an append-only file.
//!
//! Part of the redis suite (`WGM_TEST_REDIS_URL` set) and needs `redis-server` on `PATH`;
//! it never touches the shared Redis.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::OwnRedis;
use wgm_core::model::{AuditQuery, PeerId, RevisionNo, ServerId};
use wgm_core::store::{AuditStore, ServerStore};
use wgm_store_redis::{RedisOptions, RedisStore};

/// Servers committed to at once.
const WRITERS: usize = 4;
/// Commits acknowledged (in all) before the server is killed.
const BEFORE_KILL: usize = 60;

/// What one writer saw acknowledged: its server, and per revision the peer it added and
/// the sequence number of its audit record.
type Acknowledged = (ServerId, BTreeMap<RevisionNo, (PeerId, u64)>);

fn options() -> RedisOptions {
    RedisOptions::default()
        .namespace("durability")
        .connect_timeout(Duration::from_secs(2))
        .response_timeout(Duration::from_secs(2))
        .require_durable(true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_commit_survives_a_sigkill() {
    if common::redis_url(&["redis-server"]).is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut redis = OwnRedis::start(dir.path(), None);
    let port = redis.port;
    let store = Arc::new(RedisStore::open(&redis.url(), options()).await.unwrap());

    // Each writer adds peers to its own server until a commit fails (the kill), and
    // remembers every commit that returned Ok: (server, revision) -> (peer, audit seq).
    let acked = Arc::new(AtomicUsize::new(0));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let srv = common::server(&format!("dur{w}"));
        common::create(&*store, &srv).await;
        let (store, acked) = (store.clone(), acked.clone());
        writers.push(tokio::spawn(async move {
            let mut done: BTreeMap<RevisionNo, (PeerId, u64)> = BTreeMap::new();
            let mut head = 1;
            for i in 0..10_000u32 {
                let p = common::peer(&srv, &format!("p{i}"), 10 + i);
                match store
                    .commit(common::add(srv.id, head, &p), common::key())
                    .await
                {
                    Ok(c) => {
                        head = c.record.revision.0;
                        done.insert(c.record.revision, (p.id, c.audit.seq));
                        acked.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) => {
                        assert_eq!(e.code(), "store", "{e}");
                        break;
                    }
                }
            }
            (srv.id, done)
        }));
    }
    while acked.load(Ordering::SeqCst) < BEFORE_KILL {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    redis.kill();
    let mut acknowledged: Vec<Acknowledged> = Vec::new();
    for w in writers {
        acknowledged.push(w.await.unwrap());
    }
    store.close();
    assert!(
        acknowledged.iter().map(|(_, d)| d.len()).sum::<usize>() >= BEFORE_KILL,
        "fewer commits than were counted"
    );

    let redis = OwnRedis::start(dir.path(), Some(port));
    let store = RedisStore::open(&redis.url(), options()).await.unwrap();
    let audit: BTreeMap<u64, _> = store
        .query_audit(&AuditQuery::default())
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.seq, r))
        .collect();
    for (sid, done) in &acknowledged {
        let st = store.load_server(*sid).await.unwrap().unwrap();
        let revisions = store
            .revisions(*sid, RevisionNo::NONE, u64::MAX)
            .await
            .unwrap();
        let last = done.keys().next_back().copied().unwrap_or(RevisionNo(1));
        assert!(
            st.revision >= last,
            "head {} lost revision {last}",
            st.revision
        );
        for (rev, (peer, seq)) in done {
            assert!(
                revisions.iter().any(|r| r.revision == *rev),
                "revision {rev} of {sid} was acknowledged and is gone"
            );
            assert!(
                st.peers.contains_key(peer),
                "the peer of revision {rev} is gone"
            );
            let rec = audit
                .get(seq)
                .expect("an acknowledged audit record is gone");
            assert_eq!(rec.entry.revision, Some(*rev));
            assert_eq!(rec.entry.server_id, Some(*sid));
        }
    }
    common::verify_chain(&store).await.unwrap();
    store.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_requires_durability_refuses_a_redis_without_aof() {
    if common::redis_url(&["redis-server"]).is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let redis = OwnRedis::start_with(dir.path(), None, false);
    let e = RedisStore::open(&redis.url(), options()).await.unwrap_err();
    assert_eq!(e.code(), "store");
    assert!(e.to_string().contains("appendonly"), "{e}");
    // Without the requirement it opens (and logs a warning).
    let store = RedisStore::open(&redis.url(), options().require_durable(false))
        .await
        .unwrap();
    assert!(store.head(ServerId::new_random()).await.unwrap().is_none());
}
