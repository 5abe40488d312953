//! F1 end to end: `Manager::add_peer` (authorize, allocate, seal, commit, audit) from many
//! tasks, several managers and several processes at once on one small pool, over the SQL
//! stores. Each manager caches its server, so managers on one database race for real:
//! the store's compare-and-swap refuses the stale ones and the manager reloads and retries.
//! The pool is an IPv4 /28 (14 hosts, one the server's): exactly 13 peers land, with
//! unique addresses, and every other attempt ends in `PoolExhausted`.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::Arc;

use common::{open, Kind};
use wgm_core::manager::{Manager, NewPeer, NewServer};
use wgm_core::model::{AuditQuery, ServerId};
use wgm_core::names::{InterfaceName, PeerName, ServerName};
use wgm_core::net::ListenPort;
use wgm_core::rbac::Principal;
use wgm_core::seal::{MasterKey, Sealer};
use wgm_core::store::Store;
use wgm_core::Error;
use wgm_store_sql::SqlStore;

const FREE: usize = 13;

/// A manager on `store` and its local administrator.
fn manager(store: Arc<dyn Store>, key: &MasterKey) -> (Arc<Manager>, Principal) {
    let key = MasterKey::from_bytes(*key.expose_bytes());
    let (m, local) = Manager::builder(store, Sealer::new(key)).build_with_local_admin();
    (Arc::new(m), local.principal("test"))
}

async fn create_server((m, p): &(Arc<Manager>, Principal), name: &str) -> ServerId {
    let mut spec = NewServer::new(
        ServerName::new(name).unwrap(),
        InterfaceName::new("wg0").unwrap(),
        ListenPort::DEFAULT,
    );
    spec.ipv4_pool = Some("10.80.0.0/28".parse().unwrap());
    m.create_server(p, spec).await.unwrap().id
}

/// `n` tasks adding one peer each, spread over `managers`: (addresses, exhausted).
async fn race(
    managers: &[(Arc<Manager>, Principal)],
    sid: ServerId,
    n: usize,
    tag: &str,
) -> (Vec<Ipv4Addr>, usize) {
    let mut tasks = Vec::new();
    for i in 0..n {
        let (m, p) = managers[i % managers.len()].clone();
        let name = PeerName::new(format!("{tag}-{i}")).unwrap();
        tasks.push(tokio::spawn(async move {
            m.add_peer(&p, sid, NewPeer::new(name)).await
        }));
    }
    let (mut got, mut exhausted) = (Vec::new(), 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(v) => got.push(v.address_v4.unwrap()),
            Err(Error::PoolExhausted { .. }) => exhausted += 1,
            Err(e) => panic!("add_peer failed with {e}"),
        }
    }
    (got, exhausted)
}

async fn check_final(
    store: &dyn Store,
    (m, p): &(Arc<Manager>, Principal),
    sid: ServerId,
    got: &[Ipv4Addr],
    exhausted: usize,
    tasks: usize,
) {
    let unique: HashSet<_> = got.iter().collect();
    assert_eq!(
        unique.len(),
        got.len(),
        "an address was handed out twice: {got:?}"
    );
    assert_eq!((got.len(), exhausted), (FREE, tasks - FREE));
    let st = store.load_server(sid).await.unwrap().unwrap();
    let stored: HashSet<Ipv4Addr> = st.peers.values().filter_map(|p| p.address_v4).collect();
    assert_eq!(stored, got.iter().copied().collect());
    let v6: HashSet<_> = st.peers.values().filter_map(|p| p.address_v6).collect();
    assert_eq!(v6.len(), FREE);
    // Every manager (and process) chained under the one audit key of the store.
    let audit = store.query_audit(&AuditQuery::default()).await.unwrap();
    let v = m.verify_audit_chain(p, None).await.unwrap();
    assert_eq!((v.records, v.legacy_records), (audit.len() as u64, 0));
}

async fn f1(kind: Kind, managers: usize) {
    let Some(t) = open(kind).await else { return };
    let key = MasterKey::generate();
    let mut ms = vec![manager(t.store.clone(), &key)];
    for _ in 1..managers {
        ms.push(manager(Arc::new(t.reopen().await), &key));
    }
    let sid = create_server(&ms[0], "f1").await;
    let (got, exhausted) = race(&ms, sid, 64, "t").await;
    check_final(&*t.store, &ms[0], sid, &got, exhausted, 64).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn manager_f1_64_tasks_sqlite() {
    f1(Kind::SqliteFile, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn manager_f1_64_tasks_four_managers_sqlite() {
    f1(Kind::SqliteFile, 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn manager_f1_64_tasks_four_managers_postgres() {
    f1(Kind::Postgres, 4).await;
}

/// Three processes (this test and two copies of its binary running `manager_child`), each
/// with its own manager on one SQLite file, 16 tasks each.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn manager_f1_three_processes_sqlite() {
    let t = open(Kind::SqliteFile).await.unwrap();
    let key = MasterKey::generate();
    let m = manager(t.store.clone(), &key);
    let sid = create_server(&m, "f1-procs").await;
    let dir = tempfile::tempdir().unwrap();
    let go = dir.path().join("go");
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..2)
        .map(|i| {
            Command::new(&exe)
                .args([
                    "manager_child",
                    "--exact",
                    "--ignored",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env("WGM_SQL_CHILD_URL", t.url.as_deref().unwrap())
                .env("WGM_SQL_CHILD_SERVER", sid.to_string())
                .env("WGM_SQL_CHILD_TAG", format!("child{i}"))
                .env("WGM_SQL_CHILD_KEY", key.expose_base64().as_str())
                .env("WGM_SQL_CHILD_READY", dir.path().join(format!("ready{i}")))
                .env("WGM_SQL_CHILD_GO", &go)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for i in 0..2 {
        wait_for(&dir.path().join(format!("ready{i}"))).await;
    }
    std::fs::write(&go, b"").unwrap();
    let (mut got, mut exhausted) = race(std::slice::from_ref(&m), sid, 16, "parent").await;
    let mut per_process = vec![got.len()];
    let (more, ex, per_child) = common::collect_children(children).await;
    got.extend(more);
    exhausted += ex;
    per_process.extend(per_child);
    eprintln!("peers added per process: {per_process:?}");
    check_final(&*t.store, &m, sid, &got, exhausted, 48).await;
}

/// The child side of `manager_f1_three_processes_sqlite` (does nothing on its own).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "run by manager_f1_three_processes_sqlite in a child process"]
async fn manager_child() {
    let var = |k: &str| std::env::var(k).ok();
    let (Some(url), Some(sid), Some(tag), Some(key), Some(ready), Some(go)) = (
        var("WGM_SQL_CHILD_URL"),
        var("WGM_SQL_CHILD_SERVER"),
        var("WGM_SQL_CHILD_TAG"),
        var("WGM_SQL_CHILD_KEY"),
        var("WGM_SQL_CHILD_READY"),
        var("WGM_SQL_CHILD_GO"),
    ) else {
        eprintln!("skipping: manager_child runs only inside manager_f1_three_processes_sqlite");
        return;
    };
    let store: Arc<dyn Store> = Arc::new(SqlStore::open(&url).await.unwrap());
    let m = manager(store, &MasterKey::from_base64(&key).unwrap());
    std::fs::write(ready, b"").unwrap();
    wait_for(std::path::Path::new(&go)).await;
    let (got, exhausted) = race(&[m], sid.parse().unwrap(), 16, &tag).await;
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
