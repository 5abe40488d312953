//! Bad data in Redis (written behind the store's back) is an error that names what is
//! wrong, never a panic, and a commit that meets a key of the wrong type writes nothing.
//! Needs `WGM_TEST_REDIS_URL`.
#![allow(clippy::unwrap_used)]

mod common;

use wgm_core::error::ConflictKind;
use wgm_core::model::{AuditQuery, RevisionNo};
use wgm_core::store::{AuditStore, ServerStore};
use wgm_core::Error;

fn raw(url: &str) -> redis::Connection {
    redis::Client::open(url).unwrap().get_connection().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_values_are_store_errors_that_name_them() {
    let Some(t) = common::open().await else {
        return;
    };
    let ns = &t.namespace;
    let srv = common::server("corrupt");
    common::create(&*t.store, &srv).await;
    let mut c = raw(&t.url);

    // A server body that is not JSON.
    let _: () = redis::cmd("SET")
        .arg(format!("{{{ns}}}:server:{}", srv.id))
        .arg("not json")
        .query(&mut c)
        .unwrap();
    let e = t.store.load_server(srv.id).await.unwrap_err();
    assert!(matches!(e, Error::Store { store: "redis", .. }), "{e:?}");
    assert!(e.to_string().contains("server"), "{e}");
    let e = t.store.load_server_settings(srv.id).await.unwrap_err();
    assert_eq!(e.code(), "store");

    // A revision whose score is not its number.
    let _: i64 = redis::cmd("ZADD")
        .arg(format!("{{{ns}}}:revisions:{}", srv.id))
        .arg(7)
        .arg("{}")
        .query(&mut c)
        .unwrap();
    let e = t
        .store
        .revisions(srv.id, RevisionNo::NONE, 10)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e.conflict_kind(),
            Some(ConflictKind::RevisionAltered { revision: 7, .. })
        ),
        "{e:?}"
    );

    // An audit record that does not decode.
    let _: i64 = redis::cmd("ZADD")
        .arg(format!("{{{ns}}}:audit"))
        .arg(1_000_000)
        .arg("garbage")
        .query(&mut c)
        .unwrap();
    let e = t
        .store
        .query_audit(&AuditQuery::default())
        .await
        .unwrap_err();
    assert!(
        matches!(e.conflict_kind(), Some(ConflictKind::AuditChainBroken(_))),
        "{e:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_of_the_wrong_type_fails_the_commit_before_any_write() {
    let Some(t) = common::open().await else {
        return;
    };
    let ns = &t.namespace;
    let srv = common::server("wrongtype");
    common::create(&*t.store, &srv).await;
    let before = t.store.audit_head().await.unwrap();
    // The server's peer statistics hash replaced by a string: the commit that adds a peer
    // writes the head, the peer and the audit record before it would reach the statistics.
    let mut c = raw(&t.url);
    let _: () = redis::cmd("SET")
        .arg(format!("{{{ns}}}:stats:{}", srv.id))
        .arg("x")
        .query(&mut c)
        .unwrap();
    let p = common::peer(&srv, "p", 5);
    let e = t
        .store
        .commit(common::add(srv.id, 1, &p), common::key())
        .await
        .unwrap_err();
    assert_eq!(e.code(), "store", "{e}");
    assert!(e.to_string().contains("stats"), "{e}");
    assert_eq!(t.store.head(srv.id).await.unwrap(), Some(RevisionNo(1)));
    assert_eq!(t.store.audit_head().await.unwrap(), before);
    let _: i64 = redis::cmd("DEL")
        .arg(format!("{{{ns}}}:stats:{}", srv.id))
        .query(&mut c)
        .unwrap();
    let st = t.store.load_server(srv.id).await.unwrap().unwrap();
    assert!(
        st.peers.is_empty(),
        "a peer of the failed commit was written"
    );
}
