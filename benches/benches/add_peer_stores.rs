//! 10 000 `add_peer` calls through one `Manager` on each store in one run on one
//! machine: SQLite (a file in a temporary directory), PostgreSQL (a database created for
//! the run and dropped at its end, from `WGM_TEST_POSTGRES_URL`) and Redis (a key
//! namespace of the run's own at `WGM_TEST_REDIS_URL`, whose keys are deleted at its
//! end). Each store is measured twice, on a server of its own each time: by one caller,
//! one add after the other, and by `--callers` concurrent callers (32 by default) sharing
//! the manager, as the REST server's requests do; the manager then groups their commits
//! (one store transaction for the commits queued meanwhile, each still its own revision).
//! Each add is one revision with its audit record: at the end the bench checks that the
//! server's head moved by exactly one per add, that the audit log holds one record per
//! add and that its chain verifies, and that the store holds one peer per add with
//! addresses of its own.
//!
//! Prints per store and number of callers: adds per second over the whole run, and the
//! median, 99th percentile and maximum of one call, next to the target of 2 000 adds per
//! second (information: the bench fails on errors, not on numbers). A store whose suite
//! is off is skipped with one printed line; a switched-on suite whose service does not
//! answer fails.
//!
//! ```text
//! WGM_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/postgres \
//! WGM_TEST_REDIS_URL=redis://127.0.0.1:6379 \
//!   cargo bench -p wgm-benches --bench add_peer_stores [-- --count N] [--callers N]
//! ```
//!
//! Without `--bench` (`cargo test --benches`) it is a smoke run of 200 adds per store.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wgm_benches::PgDatabase;
use wgm_core::manager::{Manager, NewPeer, NewServer};
use wgm_core::names::{InterfaceName, PeerName, ServerName};
use wgm_core::net::ListenPort;
use wgm_core::seal::{MasterKey, Sealer};
use wgm_core::store::Store;
use wgm_test_support::{require, Suite};

/// Delete every key of a Redis namespace (`SCAN` + `DEL`).
async fn drop_namespace(url: &str, namespace: &str) {
    let Ok(client) = redis::Client::open(url) else {
        return;
    };
    let Ok(mut c) = client.get_multiplexed_async_connection().await else {
        return;
    };
    let pattern = format!("{{{namespace}}}:*");
    let mut cursor: u64 = 0;
    loop {
        let r: redis::RedisResult<(u64, Vec<String>)> = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut c)
            .await;
        let Ok((next, keys)) = r else {
            return;
        };
        if !keys.is_empty() {
            let _: redis::RedisResult<i64> = redis::cmd("DEL").arg(&keys).query_async(&mut c).await;
        }
        if next == 0 {
            return;
        }
        cursor = next;
    }
}

/// What one store measured.
struct Measured {
    store: &'static str,
    callers: usize,
    count: usize,
    total: Duration,
    calls: Vec<Duration>,
}

impl Measured {
    fn pct(&self, p: usize) -> Duration {
        let mut v = self.calls.clone();
        v.sort();
        // Nearest rank.
        let rank = (p * v.len()).div_ceil(100).max(1);
        v[rank - 1]
    }
}

/// `count` adds on `store` by `callers` concurrent callers sharing one `Manager` (each
/// adds `count / callers`, the first ones one more), on a new server numbered `round`
/// (its name, port and pools), and the checks.
async fn run(
    name: &'static str,
    store: Arc<dyn Store>,
    count: usize,
    callers: usize,
    round: u16,
    master: &MasterKey,
) -> Measured {
    let (m, local) =
        Manager::builder(store.clone(), Sealer::new(master.clone())).build_with_local_admin();
    let m = Arc::new(m);
    let admin = local.principal("bench");
    let mut spec = NewServer::new(
        ServerName::new(format!("bench{round}")).expect("a valid name"),
        InterfaceName::new(format!("bench{round}")).expect("a valid name"),
        ListenPort::new(51820 + round).expect("a valid port"),
    );
    spec.ipv6_pool = Some(format!("fd00:b5:{round}::/64").parse().expect("a network"));
    spec.ipv4_pool = Some(
        format!("10.{}.0.0/16", 96 + round)
            .parse()
            .expect("a network"),
    );
    let server = m
        .create_server(&admin, spec)
        .await
        .expect("create the server");
    let audit_before = m
        .verify_audit_chain(&admin, None)
        .await
        .expect("verify the audit log")
        .records;
    let head_before = store.head(server.id).await.expect("head").expect("exists");
    let t0 = Instant::now();
    let mut tasks = Vec::with_capacity(callers);
    for c in 0..callers {
        let (m, admin, sid) = (m.clone(), admin.clone(), server.id);
        let mine = count / callers + usize::from(c < count % callers);
        tasks.push(tokio::spawn(async move {
            let mut calls = Vec::with_capacity(mine);
            for i in 0..mine {
                let t = Instant::now();
                m.add_peer(
                    &admin,
                    sid,
                    NewPeer::new(PeerName::new(format!("p{c}-{i}")).expect("a valid name")),
                )
                .await
                .expect("add_peer");
                calls.push(t.elapsed());
            }
            calls
        }));
    }
    let mut calls = Vec::with_capacity(count);
    for t in tasks {
        calls.extend(t.await.expect("a caller finished"));
    }
    let total = t0.elapsed();
    let head = store.head(server.id).await.expect("head").expect("exists");
    assert_eq!(
        head.0 - head_before.0,
        count as u64,
        "{name}: one revision per add"
    );
    // The chain verifies (an error otherwise), one record per add.
    let audit = m
        .verify_audit_chain(&admin, None)
        .await
        .expect("the audit chain verifies")
        .records;
    assert_eq!(
        audit - audit_before,
        count as u64,
        "{name}: one audit record per add"
    );
    // Every peer is in the store, each with its own addresses.
    let state = store
        .load_server(server.id)
        .await
        .expect("load the server")
        .expect("exists");
    let v6: std::collections::HashSet<_> = state.peers.values().map(|p| p.address_v6).collect();
    let v4: std::collections::HashSet<_> = state.peers.values().map(|p| p.address_v4).collect();
    assert_eq!(state.peers.len(), count, "{name}: one peer per add");
    assert_eq!(v6.len(), count, "{name}: distinct IPv6 addresses");
    assert_eq!(v4.len(), count, "{name}: distinct IPv4 addresses");
    Measured {
        store: name,
        callers,
        count,
        total,
        calls,
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let mut count: usize = if bench { 10_000 } else { 200 };
    let mut callers: usize = 32;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--count" {
            count = args
                .next()
                .and_then(|v| v.parse().ok())
                .expect("--count takes a number");
        } else if a == "--callers" {
            callers = args
                .next()
                .and_then(|v| v.parse().ok())
                .expect("--callers takes a number");
        }
    }
    assert!(count > 0, "--count must be at least 1");
    assert!(callers > 0, "--callers must be at least 1");
    // One caller, then `callers` concurrent ones (each on a server of its own).
    let rounds: Vec<usize> = if callers == 1 {
        vec![1]
    } else {
        vec![1, callers]
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let pg = require(Suite::Postgres, &[]).map(|p| p.url().to_owned());
    let redis_url = require(Suite::Redis, &[]).map(|r| r.url().to_owned());
    let mut results = Vec::new();
    // One master key for the run: a store's audit key is sealed with it once.
    let master = MasterKey::generate();
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("wgm.db").display());
        let sql = Arc::new(
            wgm_store_sql::SqlStore::open(&url)
                .await
                .expect("open SQLite"),
        );
        for (round, &n) in (0u16..).zip(&rounds) {
            results.push(run("SQLite (file)", sql.clone(), count, n, round, &master).await);
        }
        sql.close().await;
        if let Some(admin) = &pg {
            let db = PgDatabase::create(admin, "wgm_bench_stores").await;
            let sql = Arc::new(
                wgm_store_sql::SqlStore::open(&db.url())
                    .await
                    .expect("open PostgreSQL"),
            );
            for (round, &n) in (0u16..).zip(&rounds) {
                results.push(run("PostgreSQL", sql.clone(), count, n, round, &master).await);
            }
            sql.close().await;
            drop(sql);
            drop(db);
        }
        if let Some(url) = &redis_url {
            let ns = format!("wgm-bench-{}-{}", std::process::id(), rand::random::<u32>());
            let store = wgm_store_redis::RedisStore::open(
                url,
                wgm_store_redis::RedisOptions::default().namespace(ns.clone()),
            )
            .await
            .expect("open Redis");
            let store = Arc::new(store);
            for (round, &n) in (0u16..).zip(&rounds) {
                results.push(run("Redis", store.clone(), count, n, round, &master).await);
            }
            store.close();
            drop(store);
            drop_namespace(url, &ns).await;
        }
    });
    println!();
    println!(
        "add_peer_stores: {count} `add_peer` calls through one Manager, by one caller and \
         by {callers} concurrent callers, each add one revision with its audit record"
    );
    println!();
    println!("| store | callers | adds/s | median | p99 | max | target |");
    println!("|---|---|---|---|---|---|---|");
    for r in &results {
        let rate = f64::from(u32::try_from(r.count).unwrap_or(u32::MAX)) / r.total.as_secs_f64();
        println!(
            "| {} | {} | {rate:.0} | {} | {} | {} | ≥ 2 000/s: {} |",
            r.store,
            r.callers,
            ms(r.pct(50)),
            ms(r.pct(99)),
            ms(*r.calls.iter().max().expect("at least one call")),
            if rate >= 2000.0 { "met" } else { "not met" }
        );
    }
}
