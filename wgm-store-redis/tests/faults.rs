//! Fault tests (docs/faults.md) on the Redis store:
//! - F1: many tasks, on two stores (two sets of connections, as two processes would),
//!   allocate on one small pool at once: unique addresses, exactly as many peers as free
//!   addresses, `PoolExhausted` for the rest, and an audit chain that verifies;
//! - writers of many processes on many servers at once: all of them contend for the one
//!   audit head, and every commit still lands (none gives up with "contention"), in one
//!   chain.
//!
//! Needs `WGM_TEST_REDIS_URL`. (F3, F16 and F17 are checks of
//! `wgm_core::conformance::store`, run in `tests/conformance.rs`.)
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use wgm_core::model::{RevisionNo, ServerId};
use wgm_core::store::{ServerStore, Store};
use wgm_core::Error;

/// Free IPv4 addresses of the test pool: a /28 has 14 hosts, one is the server's.
const FREE: usize = 13;
/// Most attempts one allocation may need: each lost race means another peer was added,
/// and there are only `FREE` of those, plus the final look at a full pool.
const MAX_ATTEMPTS: usize = FREE + 2;

/// The lowest free IPv4 address of the server's pool, committed as a new peer against the
/// loaded revision; reload and retry on `Conflict`.
async fn allocate(store: &dyn Store, sid: ServerId, name: &str) -> Result<Ipv4Addr, Error> {
    for _ in 0..MAX_ATTEMPTS {
        let st = store.load_server(sid).await?.unwrap();
        let pool = st.server.ipv4_pool.unwrap();
        let used: HashSet<Ipv4Addr> = st.peers.values().filter_map(|p| p.address_v4).collect();
        let Some(addr) = pool
            .hosts()
            .find(|a| Some(*a) != st.server.address_v4 && !used.contains(a))
        else {
            return Err(Error::PoolExhausted {
                pool: pool.to_string(),
            });
        };
        let index = u32::from(addr.octets()[3]);
        let mut p = common::peer(&st.server, name, index);
        p.address_v4 = Some(addr);
        p.address_v6 = Some(Ipv6Addr::from(
            u128::from(st.server.ipv6_pool.network()) + u128::from(index),
        ));
        match store
            .commit(common::add(sid, st.revision.0, &p), common::key())
            .await
        {
            Ok(_) => return Ok(addr),
            Err(Error::Conflict { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    panic!("allocation made no progress in {MAX_ATTEMPTS} attempts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn f1_64_tasks_on_a_28_two_stores() {
    let Some(t) = common::open().await else {
        return;
    };
    let mut srv = common::server("f1");
    let pool: ipnet::Ipv4Net = "10.50.0.0/28".parse().unwrap();
    srv.ipv4_pool = Some(pool);
    srv.address_v4 = Some(Ipv4Addr::new(10, 50, 0, 1));
    common::create(&*t.store, &srv).await;
    let stores: Vec<Arc<dyn Store>> = vec![t.dyn_store(), Arc::new(t.reopen().await)];
    let mut tasks = Vec::new();
    for i in 0..64 {
        let s = stores[i % stores.len()].clone();
        let sid = srv.id;
        tasks.push(tokio::spawn(async move {
            allocate(&*s, sid, &format!("t-{i}")).await
        }));
    }
    let (mut got, mut exhausted) = (Vec::new(), 0);
    for task in tasks {
        match task.await.unwrap() {
            Ok(a) => got.push(a),
            Err(Error::PoolExhausted { .. }) => exhausted += 1,
            Err(e) => panic!("allocation failed with {e}"),
        }
    }
    assert_eq!(exhausted, 64 - FREE);
    let unique: HashSet<_> = got.iter().collect();
    assert_eq!(
        unique.len(),
        got.len(),
        "an address was handed out twice: {got:?}"
    );
    assert_eq!(got.len(), FREE);
    let st = t.store.load_server(srv.id).await.unwrap().unwrap();
    assert_eq!(st.peers.len(), FREE);
    assert_eq!(st.revision, RevisionNo(1 + FREE as u64));
    let stored: HashSet<Ipv4Addr> = st.peers.values().filter_map(|p| p.address_v4).collect();
    assert_eq!(stored, got.iter().copied().collect());
    common::verify_chain(&*t.store).await.unwrap();
}

/// 48 tasks on 16 stores (16 sets of connections, as 16 processes would) each create a
/// server and add 10 peers to it, all at once: every commit lands, each server ends at
/// revision 11, and the audit chain verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_processes_on_many_servers_all_land() {
    let Some(t) = common::open().await else {
        return;
    };
    let mut stores: Vec<Arc<dyn Store>> = vec![t.dyn_store()];
    for _ in 1..16 {
        stores.push(Arc::new(t.reopen().await));
    }
    let mut tasks = Vec::new();
    for w in 0..48usize {
        let s = stores[w % stores.len()].clone();
        tasks.push(tokio::spawn(async move {
            let srv = common::server(&format!("many{w}"));
            common::create(&*s, &srv).await;
            let mut head = 1;
            for i in 0..10u32 {
                let p = common::peer(&srv, &format!("p{i}"), 10 + i);
                head = s
                    .commit(common::add(srv.id, head, &p), common::key())
                    .await
                    .unwrap()
                    .record
                    .revision
                    .0;
            }
            srv.id
        }));
    }
    for task in tasks {
        let sid = task.await.unwrap();
        assert_eq!(t.store.head(sid).await.unwrap(), Some(RevisionNo(11)));
    }
    let v = common::verify_chain(&*t.store).await.unwrap();
    assert_eq!(v.records, 48 * 11, "{v:?}");
}
