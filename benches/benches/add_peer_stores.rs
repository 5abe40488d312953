//! 10 000 `add_peer` calls through the `Manager`, one after the other, on each store in
//! one run on one machine: SQLite (a file in a temporary directory), PostgreSQL (a
//! database created for the run and dropped at its end, from `WGM_TEST_POSTGRES_URL`)
//! and Redis (a key namespace of the run's own at `WGM_TEST_REDIS_URL`, whose keys are
//! deleted at its end). Each add is one revision with its audit record: at the end the
//! bench checks that the server's head moved by exactly one per add, that the audit log
//! holds one record per add (plus the server's creation) and that its chain verifies.
//!
//! Prints per store: adds per second over the whole run, and the median, 99th percentile
//! and maximum of one call, next to the target of 2 000 adds per second (information:
//! the bench fails on errors, not on numbers). A store whose suite is off is skipped with
//! one printed line; a switched-on suite whose service does not answer fails.
//!
//! ```text
//! WGM_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/postgres \
//! WGM_TEST_REDIS_URL=redis://127.0.0.1:6379 \
//!   cargo bench -p wgm-benches --bench add_peer_stores [-- --count N]
//! ```
//!
//! Without `--bench` (`cargo test --benches`) it is a smoke run of 200 adds per store.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wgm_benches::PgDatabase;
use wgm_core::manager::{Manager, NewPeer, NewServer};
use wgm_core::model::RevisionNo;
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

/// `count` adds on `store`, one after the other, and the checks.
async fn run(name: &'static str, store: Arc<dyn Store>, count: usize) -> Measured {
    let (m, local) = Manager::builder(store.clone(), Sealer::new(MasterKey::generate()))
        .build_with_local_admin();
    let admin = local.principal("bench");
    let mut spec = NewServer::new(
        ServerName::new("bench").expect("a valid name"),
        InterfaceName::new("bench").expect("a valid name"),
        ListenPort::new(51820).expect("a valid port"),
    );
    spec.ipv6_pool = Some("fd00:b5::/64".parse().expect("a network"));
    spec.ipv4_pool = Some("10.96.0.0/16".parse().expect("a network"));
    let server = m
        .create_server(&admin, spec)
        .await
        .expect("create the server");
    let audit_before = m
        .verify_audit_chain(&admin, None)
        .await
        .expect("verify the audit log")
        .records;
    let mut calls = Vec::with_capacity(count);
    let t0 = Instant::now();
    for i in 0..count {
        let t = Instant::now();
        m.add_peer(
            &admin,
            server.id,
            NewPeer::new(PeerName::new(format!("p{i}")).expect("a valid name")),
        )
        .await
        .expect("add_peer");
        calls.push(t.elapsed());
    }
    let total = t0.elapsed();
    let head = store.head(server.id).await.expect("head").expect("exists");
    assert_eq!(
        head,
        RevisionNo(1 + count as u64),
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
    Measured {
        store: name,
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
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--count" {
            count = args
                .next()
                .and_then(|v| v.parse().ok())
                .expect("--count takes a number");
        }
    }
    assert!(count > 0, "--count must be at least 1");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let pg = require(Suite::Postgres, &[]).map(|p| p.url().to_owned());
    let redis_url = require(Suite::Redis, &[]).map(|r| r.url().to_owned());
    let mut results = Vec::new();
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("wgm.db").display());
        let sql = Arc::new(
            wgm_store_sql::SqlStore::open(&url)
                .await
                .expect("open SQLite"),
        );
        results.push(run("SQLite (file)", sql.clone(), count).await);
        sql.close().await;
        if let Some(admin) = &pg {
            let db = PgDatabase::create(admin, "wgm_bench_stores").await;
            let sql = Arc::new(
                wgm_store_sql::SqlStore::open(&db.url())
                    .await
                    .expect("open PostgreSQL"),
            );
            results.push(run("PostgreSQL", sql.clone(), count).await);
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
            results.push(run("Redis", store.clone(), count).await);
            store.close();
            drop(store);
            drop_namespace(url, &ns).await;
        }
    });
    println!();
    println!(
        "add_peer_stores: {count} `add_peer` calls through the Manager, one after the other, \
         each one revision with its audit record"
    );
    println!();
    println!("| store | adds/s | median | p99 | max | target |");
    println!("|---|---|---|---|---|---|");
    for r in &results {
        let rate = f64::from(u32::try_from(r.count).unwrap_or(u32::MAX)) / r.total.as_secs_f64();
        println!(
            "| {} | {rate:.0} | {} | {} | {} | ≥ 2 000/s: {} |",
            r.store,
            ms(r.pct(50)),
            ms(r.pct(99)),
            ms(*r.calls.iter().max().expect("at least one call")),
            if rate >= 2000.0 { "met" } else { "not met" }
        );
    }
}
