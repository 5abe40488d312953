//! Fault tests (docs/faults.md) on the SQL stores:
//! - F1: many tasks (and processes) allocate on one small pool at once: unique addresses,
//!   exactly as many peers as free addresses, `PoolExhausted` for the rest;
//! - F14: 16 concurrent SQLite writers (two pools on one file): no `SQLITE_BUSY` surfaces.
//!
//! (F3, F16 and F17 are checks of `wgm_core::conformance::store`, run on every store.)
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::Arc;

use common::{add, commit, create, entry, host_v6, open, peer, server, user, Kind};
use wgm_core::model::{IdentityChange, PeerStats, RevisionNo, ServerId};
use wgm_core::store::Store;
use wgm_core::Error;
use wgm_store_sql::SqlStore;

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
        let index = u16::from(addr.octets()[3]);
        let mut p = peer(&st.server, name, index);
        p.address_v4 = Some(addr);
        p.address_v6 = Some(host_v6(index));
        match store
            .commit(add(sid, st.revision.0, &p), common::key())
            .await
        {
            Ok(_) => return Ok(addr),
            Err(Error::Conflict { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    panic!("allocation made no progress in {MAX_ATTEMPTS} attempts");
}

/// Run `n` allocating tasks spread over `stores`; return (allocated addresses, exhausted).
async fn race(
    stores: &[Arc<dyn Store>],
    sid: ServerId,
    n: usize,
    tag: &str,
) -> (Vec<Ipv4Addr>, usize) {
    let mut tasks = Vec::new();
    for i in 0..n {
        let s = stores[i % stores.len()].clone();
        let name = format!("{tag}-{i}");
        tasks.push(tokio::spawn(async move { allocate(&*s, sid, &name).await }));
    }
    let (mut got, mut exhausted) = (Vec::new(), 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(a) => got.push(a),
            Err(Error::PoolExhausted { .. }) => exhausted += 1,
            Err(e) => panic!("allocation failed with {e}"),
        }
    }
    (got, exhausted)
}

async fn check_final(store: &dyn Store, sid: ServerId, allocated: &[Ipv4Addr]) {
    let unique: HashSet<_> = allocated.iter().collect();
    assert_eq!(
        unique.len(),
        allocated.len(),
        "an address was handed out twice: {allocated:?}"
    );
    assert_eq!(allocated.len(), FREE);
    let st = store.load_server(sid).await.unwrap().unwrap();
    assert_eq!(st.peers.len(), FREE);
    assert_eq!(st.revision, RevisionNo(1 + FREE as u64));
    let stored: HashSet<Ipv4Addr> = st.peers.values().filter_map(|p| p.address_v4).collect();
    assert_eq!(stored, allocated.iter().copied().collect());
    common::verify_chain(store).await.unwrap();
}

async fn f1(kind: Kind, pools: usize) {
    let Some(t) = open(kind).await else { return };
    let srv = server("f1", Some("10.50.0.0/28"));
    create(&*t.store, &srv).await;
    let mut stores: Vec<Arc<dyn Store>> = vec![t.store.clone()];
    for _ in 1..pools {
        stores.push(Arc::new(t.reopen().await));
    }
    let (got, exhausted) = race(&stores, srv.id, 64, "t").await;
    assert_eq!(exhausted, 64 - FREE);
    check_final(&*t.store, srv.id, &got).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn f1_64_tasks_on_a_28_sqlite() {
    f1(Kind::SqliteFile, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn f1_64_tasks_on_a_28_sqlite_two_pools() {
    f1(Kind::SqliteFile, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn f1_64_tasks_on_a_28_postgres() {
    f1(Kind::Postgres, 2).await;
}

/// F1 across processes: this test binary runs itself twice as `child_allocator` on the
/// same SQLite file while 16 tasks allocate here too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn f1_three_processes_on_one_sqlite_file() {
    let t = open(Kind::SqliteFile).await.unwrap();
    let srv = server("f1-procs", Some("10.51.0.0/28"));
    create(&*t.store, &srv).await;
    let exe = std::env::current_exe().unwrap();
    let url = t.url.clone().unwrap();
    // A start line: each child says it is ready (its store is open), then all wait for "go".
    let dir = tempfile::tempdir().unwrap();
    let go = dir.path().join("go");
    let children: Vec<_> = (0..2)
        .map(|i| {
            Command::new(&exe)
                .args([
                    "child_allocator",
                    "--exact",
                    "--ignored",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env("WGM_SQL_CHILD_URL", &url)
                .env("WGM_SQL_CHILD_SERVER", srv.id.to_string())
                .env("WGM_SQL_CHILD_TAG", format!("child{i}"))
                .env("WGM_SQL_CHILD_READY", dir.path().join(format!("ready{i}")))
                .env("WGM_SQL_CHILD_GO", &go)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for i in 0..2 {
        wait_for(&dir.path().join(format!("ready{i}"))).await;
    }
    std::fs::write(&go, b"").unwrap();
    let (mut got, mut exhausted) = race(std::slice::from_ref(&t.store), srv.id, 16, "parent").await;
    let mut per_process = vec![got.len()];
    let (more, ex, per_child) = common::collect_children(children).await;
    got.extend(more);
    exhausted += ex;
    per_process.extend(per_child);
    eprintln!("addresses allocated per process: {per_process:?}");
    assert_eq!(exhausted, 48 - FREE);
    check_final(&*t.store, srv.id, &got).await;
}

/// The other side of `f1_three_processes_on_one_sqlite_file` (run by it, in a child
/// process; does nothing when run on its own).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "run by f1_three_processes_on_one_sqlite_file in a child process"]
async fn child_allocator() {
    let (Ok(url), Ok(sid), Ok(tag)) = (
        std::env::var("WGM_SQL_CHILD_URL"),
        std::env::var("WGM_SQL_CHILD_SERVER"),
        std::env::var("WGM_SQL_CHILD_TAG"),
    ) else {
        eprintln!(
            "skipping: child_allocator runs only inside f1_three_processes_on_one_sqlite_file"
        );
        return;
    };
    let store: Arc<dyn Store> = Arc::new(SqlStore::open(&url).await.unwrap());
    if let (Ok(ready), Ok(go)) = (
        std::env::var("WGM_SQL_CHILD_READY"),
        std::env::var("WGM_SQL_CHILD_GO"),
    ) {
        std::fs::write(ready, b"").unwrap();
        wait_for(std::path::Path::new(&go)).await;
    }
    let (got, exhausted) = race(&[store], sid.parse().unwrap(), 16, &tag).await;
    let list: Vec<String> = got.iter().map(ToString::to_string).collect();
    println!("RESULT allocated={} exhausted={exhausted}", list.join(","));
}

/// Wait until `path` exists (bounded: a minute).
async fn wait_for(path: &std::path::Path) {
    for _ in 0..6000 {
        if path.exists() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("{} did not appear", path.display());
}

/// F14: 16 writers on one SQLite file through two pools (as two processes would), each
/// committing revisions, audit records, applied marks, statistics and users: every
/// operation succeeds (no `SQLITE_BUSY`), and the results add up exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn f14_sixteen_sqlite_writers_never_see_busy() {
    const WRITERS: usize = 16;
    const ROUNDS: u64 = 15;
    let t = open(Kind::SqliteFile).await.unwrap();
    let stores: [Arc<dyn Store>; 2] = [t.store.clone(), Arc::new(t.reopen().await)];
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let s = stores[w % 2].clone();
        tasks.push(tokio::spawn(async move {
            let srv = server(&format!("w{w}"), Some("10.60.0.0/24"));
            create(&*s, &srv).await;
            for r in 0..ROUNDS {
                let i = u16::try_from(r).unwrap() + 2;
                let p = peer(&srv, &format!("p{r}"), i);
                s.commit(add(srv.id, r + 1, &p), common::key())
                    .await
                    .map_err(|e| format!("commit: {e}"))?;
                s.append_audit(entry("secret.export", "x"), common::key())
                    .await
                    .map_err(|e| format!("audit: {e}"))?;
                s.set_applied(srv.id, &format!("host{w}"), RevisionNo(r + 2))
                    .await
                    .map_err(|e| format!("applied: {e}"))?;
                let st = PeerStats {
                    last_seen: None,
                    rx_bytes: r,
                    tx_bytes: r,
                };
                s.update_peer_stats(srv.id, &[(p.id, st)])
                    .await
                    .map_err(|e| format!("stats: {e}"))?;
                let u = user(&format!("u{w}x{r}"), None);
                s.commit_identity(
                    vec![IdentityChange::UserCreated { user: Box::new(u) }],
                    entry("user.create", "u"),
                    common::key(),
                )
                .await
                .map_err(|e| format!("identity: {e}"))?;
            }
            Ok::<ServerId, String>(srv.id)
        }));
    }
    let mut ids = Vec::new();
    for task in tasks {
        ids.push(
            task.await
                .unwrap()
                .unwrap_or_else(|e| panic!("a writer failed: {e}")),
        );
    }
    for (w, id) in ids.iter().enumerate() {
        let st = t.store.load_server(*id).await.unwrap().unwrap();
        assert_eq!(
            (st.revision, st.peers.len()),
            (RevisionNo(ROUNDS + 1), ROUNDS as usize)
        );
        assert_eq!(
            t.store.applied(*id, &format!("host{w}")).await.unwrap(),
            Some(RevisionNo(ROUNDS + 1))
        );
    }
    let v = common::verify_chain(&*t.store).await.unwrap();
    assert_eq!(v.records, WRITERS as u64 * (1 + 3 * ROUNDS));
    assert_eq!(
        t.store
            .list_users(wgm_core::model::Page::ALL)
            .await
            .unwrap()
            .len() as u64,
        WRITERS as u64 * ROUNDS
    );
    let _ = commit;
}
