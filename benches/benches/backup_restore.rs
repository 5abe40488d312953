//! Backup and restore of a whole store: 10 000 peers and 50 000 revisions, built through
//! the `Manager` (peers added ten at a time, then one change per revision), then per
//! store engine:
//!
//! - **restore**: the sealed file opened (`backup::decode`) and imported into an empty
//!   store (`SnapshotStore::import_snapshot`, one atomic step);
//! - **backup**: one consistent export (`SnapshotStore::export_snapshot`) sealed into
//!   the file (`backup::encode`);
//!
//! with the file's size. SQLite is a file in a temporary directory; PostgreSQL a database
//! created for the run (`WGM_TEST_POSTGRES_URL`), Redis a namespace of the run's own
//! (`WGM_TEST_REDIS_URL`), both removed at the end; a store whose suite is off is skipped
//! with one printed line. Every restored store's export must equal the snapshot it was
//! restored from (the bench fails otherwise; it never fails on a number).
//!
//! ```text
//! WGM_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/postgres \
//! WGM_TEST_REDIS_URL=redis://127.0.0.1:6379 \
//!   cargo bench -p wgm-benches --bench backup_restore [-- --peers N --revisions N]
//! ```
//!
//! Without `--bench` (`cargo test --benches`) it is a smoke run: 200 peers, 400 revisions.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wgm_benches::PgDatabase;
use wgm_core::manager::{Manager, NewPeer, NewServer, PeerUpdate};
use wgm_core::names::{InterfaceName, PeerName, ServerName};
use wgm_core::net::{Keepalive, ListenPort};
use wgm_core::seal::{MasterKey, Sealer};
use wgm_core::store::{backup, MemoryStore, Snapshot, SnapshotStore, Store};
use wgm_test_support::{require, Suite};

/// Peers added per revision while the server fills.
const BATCH: usize = 10;

/// A store of `peers` peers and `revisions` revisions (at least one per batch of adds and
/// the server's creation; the rest are single-peer changes), built in memory.
async fn build(peers: usize, revisions: usize) -> Snapshot {
    let store = Arc::new(MemoryStore::new());
    let (m, local) = Manager::builder(store.clone(), Sealer::new(key())).build_with_local_admin();
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
    let mut ids = Vec::with_capacity(peers);
    let mut made = 1;
    for start in (0..peers).step_by(BATCH) {
        let specs = (start..(start + BATCH).min(peers))
            .map(|i| NewPeer::new(PeerName::new(format!("p{i}")).expect("a valid name")))
            .collect();
        let added = m
            .add_peers(&admin, server.id, specs)
            .await
            .expect("add peers");
        ids.extend(added.into_iter().map(|v| v.id));
        made += 1;
    }
    let mut i = 0usize;
    while made < revisions {
        // 26, 27, 26, … per round over the peers: always a change (the default is 25).
        let round = u16::try_from((i / ids.len()) % 2).expect("0 or 1");
        let keepalive = Keepalive::new(26 + round).expect("a keepalive");
        m.update_peer(
            &admin,
            server.id,
            ids[i % ids.len()],
            PeerUpdate {
                keepalive: Some(keepalive),
                ..PeerUpdate::default()
            },
        )
        .await
        .expect("update a peer");
        i += 1;
        made += 1;
    }
    store.export_snapshot().await.expect("export")
}

/// The master key of the run (the same for building and sealing).
fn key() -> MasterKey {
    static KEY: std::sync::OnceLock<MasterKey> = std::sync::OnceLock::new();
    KEY.get_or_init(MasterKey::generate).clone()
}

/// What one store measured.
struct Measured {
    store: &'static str,
    restore: Duration,
    backup: Duration,
    bytes: usize,
}

/// Restore `file` into the empty `store`, check it, back it up again.
async fn run(name: &'static str, store: Arc<dyn Store>, file: &[u8], snap: &Snapshot) -> Measured {
    let t = Instant::now();
    let opened = backup::decode(file, &key()).expect("open the backup");
    store.import_snapshot(&opened).await.expect("restore");
    let restore = t.elapsed();
    let t = Instant::now();
    let exported = store.export_snapshot().await.expect("export");
    let again = backup::encode(&exported, &key()).expect("seal the backup");
    let backup = t.elapsed();
    assert!(exported == *snap, "{name}: the restored store differs");
    Measured {
        store: name,
        restore,
        backup,
        bytes: again.len(),
    }
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn number(args: &[String], flag: &str, default: usize) -> usize {
    args.iter().position(|a| a == flag).map_or(default, |i| {
        args.get(i + 1)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{flag} takes a number"))
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let bench = args.iter().any(|a| a == "--bench");
    let peers = number(&args, "--peers", if bench { 10_000 } else { 200 });
    let revisions = number(&args, "--revisions", if bench { 50_000 } else { 400 });
    assert!(peers > 0, "--peers must be at least 1");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let pg = require(Suite::Postgres, &[]).map(|p| p.url().to_owned());
    let redis_url = require(Suite::Redis, &[]).map(|r| r.url().to_owned());
    let mut results = Vec::new();
    let (snap_revisions, json, encode, decode, file) = rt.block_on(async {
        let t = Instant::now();
        let snap = build(peers, revisions).await;
        eprintln!(
            "built {peers} peers in {} ({} revisions)",
            secs(t.elapsed()),
            snap.servers
                .iter()
                .map(|s| s.revisions.len())
                .sum::<usize>()
        );
        let json = serde_json::to_vec(&snap).expect("JSON").len();
        let t = Instant::now();
        let file = backup::encode(&snap, &key()).expect("seal");
        let encode = t.elapsed();
        let t = Instant::now();
        let opened = backup::decode(&file, &key()).expect("open");
        let decode = t.elapsed();
        assert!(opened == snap, "the file opens to the snapshot");

        let dir = tempfile::tempdir().expect("a temporary directory");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("wgm.db").display());
        let sql = Arc::new(
            wgm_store_sql::SqlStore::open(&url)
                .await
                .expect("open SQLite"),
        );
        results.push(run("SQLite (file)", sql.clone(), &file, &snap).await);
        sql.close().await;
        if let Some(admin) = &pg {
            let db = PgDatabase::create(admin, "wgm_bench_backup").await;
            let sql = Arc::new(
                wgm_store_sql::SqlStore::open(&db.url())
                    .await
                    .expect("open PostgreSQL"),
            );
            results.push(run("PostgreSQL", sql.clone(), &file, &snap).await);
            sql.close().await;
            drop(sql);
            drop(db);
        }
        if let Some(url) = &redis_url {
            let ns = format!("wgm-bench-{}-{}", std::process::id(), rand::random::<u32>());
            let store = Arc::new(
                wgm_store_redis::RedisStore::open(
                    url,
                    wgm_store_redis::RedisOptions::default().namespace(ns.clone()),
                )
                .await
                .expect("open Redis"),
            );
            let r = run("Redis", store.clone(), &file, &snap).await;
            results.push(r);
            // Empty the namespace through the store itself.
            store
                .replace_with_snapshot(&Snapshot::empty())
                .await
                .expect("empty the namespace");
            store.close();
        }
        let revs: usize = snap.servers.iter().map(|s| s.revisions.len()).sum();
        (revs, json, encode, decode, file.len())
    });
    println!();
    println!(
        "backup_restore: {peers} peers, {snap_revisions} revisions; the sealed file is {:.1} MiB \
         ({:.1} MiB of JSON inside); sealing {} and opening {} of it in memory",
        mib(file),
        mib(json),
        secs(encode),
        secs(decode)
    );
    println!();
    println!("| store | restore (open + import) | backup (export + seal) | file |");
    println!("|---|---|---|---|");
    for r in &results {
        println!(
            "| {} | {} | {} | {:.1} MiB |",
            r.store,
            secs(r.restore),
            secs(r.backup),
            mib(r.bytes)
        );
    }
}

fn mib(bytes: usize) -> f64 {
    f64::from(u32::try_from(bytes).unwrap_or(u32::MAX)) / (1024.0 * 1024.0)
}
