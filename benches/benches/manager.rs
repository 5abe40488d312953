//! The Manager end to end: `add_peer`, loading a server, importing a wg-quick config.
//!
//! Every operation goes through `wgm_core::manager::Manager` as a local administrator,
//! with `ManagerConfig` defaults, on three stores: the in-memory reference
//! (`MemoryStore`), SQLite in a file in a temporary directory, and PostgreSQL in a fresh
//! database created for the run and dropped afterwards (from `WGM_TEST_POSTGRES_URL`;
//! skipped with one printed line when unset, a failure when set and nothing answers).
//!
//! - `manager/add_peer/<store>/<n>`: one `add_peer` (authorize, allocate an IPv6 and an
//!   IPv4 address, generate and seal a key pair and a PSK, commit the revision with its
//!   audit record, publish the event) on a server that holds `n` peers, n = 100 and
//!   10 000. After each timed add the peer is removed again, untimed, so every timed add
//!   meets the same `n` peers; criterion's `thrpt` is peers per second at that size.
//!   Those removals are timed too, for the summary only (`remove_peer` at `n`).
//!   The servers are filled with `add_peers` in batches of 1 000 (one revision each);
//!   the time that takes is printed too.
//! - `manager/load_cold/<op>/<store>`: the first `get_server` or `list_peers` of the
//!   10 000-peer server on a fresh Manager over the same store (load from the store,
//!   build the address manager, make the views).
//! - `manager/load_warm/<op>/<store>`: the same call again on a Manager that already
//!   holds the server (a head-revision check against the store, then the cached state).
//! - `manager/import/<store>`: `import_server` of a 10 000-peer wg-quick server config
//!   (dual-stack addresses, a PSK per peer, a `# Name =` per peer) as one revision, into
//!   a fresh store each time; on SQLite, and on the in-memory store to show how much of
//!   it is the store.
//! - `manager/reference/store_commit/<store>/<n>`: the store's share of an add, a bare
//!   `Store::commit` of one `PeerAdded` revision (with an untimed `PeerRemoved` after it)
//!   on the same servers, so an add's time splits into store and Manager.
//!
//! The bench servers have a quarantine of 0 s (`NewServer::quarantine_secs`): the
//! untimed removals after each timed add then hand their addresses straight back, so
//! the pool the timed adds allocate from holds exactly the `n` peers.
//!
//! Summary lines at the end give, per store, the two add times and their ratio, the store
//! commit times, cold and warm loads and the import (medians of the timed calls).
//! A full run takes about 3 minutes on 2 cores, plus the build. Numbers and their
//! analysis: `benches/README.md`.
//!
//! Run: `WGM_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/postgres \
//!       cargo bench -p wgm-benches --bench manager`.

// `criterion_group!` generates an undocumented public function.
#![allow(missing_docs)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{
    criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, SamplingMode,
    Throughput,
};
use tokio::runtime::Runtime;
use wgm_benches::PgDatabase;
use wgm_core::keys::{PresharedKey, PrivateKey};
use wgm_core::manager::{ImportOptions, Manager, NewPeer, NewServer};
use wgm_core::model::{
    Actor, AuditEntry, AuditOutcome, Change, Commit, Peer, PeerId, RevisionNo, ServerId,
    ServerState,
};
use wgm_core::names::{InterfaceName, PeerName, ServerName};
use wgm_core::net::ListenPort;
use wgm_core::rbac::Principal;
use wgm_core::seal::{MasterKey, Sealer, SecretKind};
use wgm_core::store::{MemoryStore, Store};
use wgm_store_sql::SqlStore;
use wgm_test_support::{require, Suite};

/// Peers on the server when an add is timed.
const ADD_SIZES: [usize; 2] = [100, 10_000];
/// Peers on the server that the load benches read (the larger `ADD_SIZES` server).
const LOAD_PEERS: usize = 10_000;
/// Peers in the imported wg-quick config.
const IMPORT_PEERS: usize = 10_000;
/// Peers per `add_peers` revision while filling a server.
const SEED_BATCH: usize = 1_000;

/// Per-iteration times `(store, bench) -> [seconds]` of every timed call, for the
/// summary lines at the end (criterion's own report is the reference).
static TIMES: Mutex<BTreeMap<(String, String), Vec<f64>>> = Mutex::new(BTreeMap::new());

#[allow(clippy::cast_precision_loss)] // iteration counts are far below 2^52
fn record(store: &str, bench: &str, total: Duration, iters: u64) {
    if iters == 0 {
        return;
    }
    TIMES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .entry((store.to_owned(), bench.to_owned()))
        .or_default()
        .push(total.as_secs_f64() / iters as f64);
}

fn median(store: &str, bench: &str) -> Option<f64> {
    let t = TIMES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut v = t.get(&(store.to_owned(), bench.to_owned()))?.clone();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

// ----------------------------------------------------------------------------------
// Stores
// ----------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Memory,
    Sqlite,
    Postgres,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Memory => "memory",
            Kind::Sqlite => "sqlite",
            Kind::Postgres => "postgres",
        }
    }
}

/// A store and whatever keeps its database alive. Field order is drop order: the store
/// closes before its directory or database goes away.
struct Backend {
    kind: Kind,
    store: Arc<dyn Store>,
    sql: Option<Arc<SqlStore>>,
    _dir: Option<tempfile::TempDir>,
    _pg: Option<PgDatabase>,
}

impl Backend {
    /// A fresh, empty store of `kind`; `None` for PostgreSQL without a URL.
    async fn open(kind: Kind) -> Option<Backend> {
        Some(match kind {
            Kind::Memory => Backend {
                kind,
                store: Arc::new(MemoryStore::new()),
                sql: None,
                _dir: None,
                _pg: None,
            },
            Kind::Sqlite => {
                let dir = tempfile::tempdir().expect("a temporary directory");
                let url = format!("sqlite://{}?mode=rwc", dir.path().join("wgm.db").display());
                let sql = Arc::new(SqlStore::open(&url).await.expect("open SQLite"));
                Backend {
                    kind,
                    store: sql.clone(),
                    sql: Some(sql),
                    _dir: Some(dir),
                    _pg: None,
                }
            }
            Kind::Postgres => {
                let admin = postgres_url()?;
                let db = PgDatabase::create(&admin, "wgm_bench").await;
                let sql = Arc::new(SqlStore::open(&db.url()).await.expect("open PostgreSQL"));
                Backend {
                    kind,
                    store: sql.clone(),
                    sql: Some(sql),
                    _dir: None,
                    _pg: Some(db),
                }
            }
        })
    }

    async fn close(&self) {
        if let Some(s) = &self.sql {
            s.close().await;
        }
    }
}

/// The admin URL of the postgres suite (`None`, after one `SKIPPED` line, when it is off).
fn postgres_url() -> Option<String> {
    require(Suite::Postgres, &[]).map(|pg| pg.url().to_owned())
}

// ----------------------------------------------------------------------------------
// Fixtures
// ----------------------------------------------------------------------------------

fn peer_name(prefix: &str, i: usize) -> PeerName {
    PeerName::new(format!("{prefix}-{i}")).expect("a valid peer name")
}

/// Create a dual-stack server (IPv6 /64, IPv4 /16, quarantine 0 s) holding `n` peers
/// made with `add_peers` in batches of [`SEED_BATCH`]. Returns its id and the fill time.
async fn seed_server(m: &Manager, admin: &Principal, index: u8, n: usize) -> (ServerId, Duration) {
    let mut spec = NewServer::new(
        ServerName::new(format!("bench-{index}")).expect("a valid server name"),
        InterfaceName::new(format!("wgb{index}")).expect("a valid interface name"),
        ListenPort::new(51820 + u16::from(index)).expect("a valid port"),
    );
    spec.ipv6_pool = Some(
        format!("fd42:4242:{index:x}::/64")
            .parse()
            .expect("a valid IPv6 pool"),
    );
    spec.ipv4_pool = Some(
        format!("10.{index}.0.0/16")
            .parse()
            .expect("a valid IPv4 pool"),
    );
    // Removed bench peers give their addresses back at once (see the module docs).
    spec.quarantine_secs = Some(0);
    let server = m
        .create_server(admin, spec)
        .await
        .expect("create the bench server");
    let start = Instant::now();
    let mut made = 0;
    while made < n {
        let k = SEED_BATCH.min(n - made);
        let specs = (made..made + k)
            .map(|i| NewPeer::new(peer_name("seed", i)))
            .collect();
        m.add_peers(admin, server.id, specs)
            .await
            .expect("add a batch of peers");
        made += k;
    }
    (server.id, start.elapsed())
}

/// A wg-quick server config with `n` peers: dual-stack host addresses, a PSK and a
/// `# Name =` comment each, as exported by the common managers.
fn wgquick_config(n: usize) -> String {
    let server = PrivateKey::generate();
    let mut s = String::with_capacity(n * 220);
    let _ = write!(
        s,
        "[Interface]\nPrivateKey = {}\nAddress = fd42:4243::1/64, 10.43.0.1/16\nListenPort = 51900\n",
        server.expose_base64().as_str()
    );
    for i in 0..n {
        let host = u32::try_from(i).expect("n fits in u32") + 2;
        let public = PrivateKey::generate().public_key();
        let psk = PresharedKey::generate();
        let _ = write!(
            s,
            "\n[Peer]\n# Name = imported-{i}\nPublicKey = {public}\nPresharedKey = {}\n\
             AllowedIPs = fd42:4243::{host:x}/128, 10.43.{}.{}/32\n",
            psk.expose_base64().as_str(),
            host >> 8,
            host & 0xff
        );
    }
    s
}

// ----------------------------------------------------------------------------------
// Benches
// ----------------------------------------------------------------------------------

fn configure<M: criterion::measurement::Measurement>(g: &mut BenchmarkGroup<'_, M>, secs: u64) {
    // Each bench is seconds of work with untimed setup between iterations: flat
    // sampling of 10 keeps the whole run within a few minutes on 2 cores.
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(10);
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(secs));
}

/// `add_peer` and load benches on one store.
fn store_benches(c: &mut Criterion, rt: &Runtime, kind: Kind) {
    let Some(backend) = rt.block_on(Backend::open(kind)) else {
        return;
    };
    let store_name = kind.name();
    let sealer = Sealer::new(MasterKey::generate());
    let (manager, cap) =
        Manager::builder(backend.store.clone(), sealer.clone()).build_with_local_admin();
    let admin = cap.principal("bench");

    let mut servers = Vec::new();
    for (index, n) in (1u8..).zip(ADD_SIZES) {
        let (id, took) = rt.block_on(seed_server(&manager, &admin, index, n));
        println!(
            "manager/seed/{store_name}: {n} peers in {:.2} s ({} add_peers revisions)",
            took.as_secs_f64(),
            n.div_ceil(SEED_BATCH)
        );
        servers.push((n, id));
    }
    let (_, big) = *servers
        .iter()
        .find(|(n, _)| *n == LOAD_PEERS)
        .expect("ADD_SIZES holds LOAD_PEERS");

    // Loads first: the 10 000-peer server is exactly as seeded.
    {
        let mut g = c.benchmark_group("manager/load_cold");
        configure(&mut g, 3);
        g.throughput(Throughput::Elements(LOAD_PEERS as u64));
        g.bench_function(BenchmarkId::new("get_server", store_name), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let fresh = Manager::builder(backend.store.clone(), sealer.clone()).build();
                        let start = Instant::now();
                        let v = fresh.get_server(&admin, big).await.expect("get_server");
                        total += start.elapsed();
                        assert_eq!(v.peer_count, LOAD_PEERS);
                    }
                    record(store_name, "load_cold/get_server", total, iters);
                    total
                })
            });
        });
        g.bench_function(BenchmarkId::new("list_peers", store_name), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let fresh = Manager::builder(backend.store.clone(), sealer.clone()).build();
                        let start = Instant::now();
                        let v = fresh.list_peers(&admin, big).await.expect("list_peers");
                        total += start.elapsed();
                        assert_eq!(v.len(), LOAD_PEERS);
                    }
                    record(store_name, "load_cold/list_peers", total, iters);
                    total
                })
            });
        });
        g.finish();
    }
    {
        let mut g = c.benchmark_group("manager/load_warm");
        configure(&mut g, 2);
        g.throughput(Throughput::Elements(LOAD_PEERS as u64));
        // The shared manager holds the server since seeding; one read makes sure.
        rt.block_on(manager.get_server(&admin, big))
            .expect("get_server");
        g.bench_function(BenchmarkId::new("get_server", store_name), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let v = manager.get_server(&admin, big).await.expect("get_server");
                        std::hint::black_box(v);
                    }
                    let total = start.elapsed();
                    record(store_name, "load_warm/get_server", total, iters);
                    total
                })
            });
        });
        g.bench_function(BenchmarkId::new("list_peers", store_name), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let v = manager.list_peers(&admin, big).await.expect("list_peers");
                        std::hint::black_box(v);
                    }
                    let total = start.elapsed();
                    record(store_name, "load_warm/list_peers", total, iters);
                    total
                })
            });
        });
        g.finish();
    }
    {
        let mut g = c.benchmark_group("manager/add_peer");
        configure(&mut g, 2);
        g.throughput(Throughput::Elements(1));
        let mut next = 0usize;
        for &(n, id) in &servers {
            g.bench_function(BenchmarkId::new(store_name, n), |b| {
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        let mut total = Duration::ZERO;
                        let mut removing = Duration::ZERO;
                        for _ in 0..iters {
                            let spec = NewPeer::new(peer_name("bench", next));
                            next += 1;
                            let start = Instant::now();
                            let v = manager.add_peer(&admin, id, spec).await.expect("add_peer");
                            total += start.elapsed();
                            // Not criterion's: back to n peers for the next timed add. Its
                            // time goes to the summary only (`remove_peer/<n>`).
                            let start = Instant::now();
                            manager
                                .remove_peer(&admin, id, v.id)
                                .await
                                .expect("remove_peer");
                            removing += start.elapsed();
                        }
                        record(store_name, &format!("add_peer/{n}"), total, iters);
                        record(store_name, &format!("remove_peer/{n}"), removing, iters);
                        total
                    })
                });
            });
        }
        g.finish();
    }

    drop(manager);
    for (index, &(n, id)) in (1u8..).zip(&servers) {
        let state = rt
            .block_on(backend.store.load_server(id))
            .expect("load_server")
            .expect("the bench server exists");
        store_commit_bench(c, rt, &backend, &sealer, &state, index, n);
    }
    rt.block_on(backend.close());
}

/// Reference: the store's share of one add, a bare `Store::commit` of one `PeerAdded`
/// revision (CAS, uniqueness probes, insert, revision, audit) on the same server of `n`
/// peers, with an untimed `PeerRemoved` commit after each.
// The audit details are a `serde_json::Value`, which this crate does not name.
#[allow(clippy::default_trait_access)]
fn store_commit_bench(
    c: &mut Criterion,
    rt: &Runtime,
    backend: &Backend,
    sealer: &Sealer,
    state: &ServerState,
    index: u8,
    n: usize,
) {
    let store_name = backend.kind.name();
    let sid = state.server.id;
    let template = state
        .peers
        .values()
        .next()
        .cloned()
        .expect("the bench server has peers");
    // Hosts far above the seeded ones: free in both pools.
    let v6 = Ipv6Addr::from(u128::from(state.server.ipv6_pool.network()) + 0xfff0);
    let v4 = state
        .server
        .ipv4_pool
        .map(|p| Ipv4Addr::from(u32::from(p.network()) + 0xfff0));
    let actor = Actor {
        user_id: None,
        label: "local:bench".into(),
    };
    // The store's own key is sealed in it; the bare store commit only needs some key.
    let key = wgm_core::integrity::AuditKey::generate();
    let commit = |expected: RevisionNo, change: Change| {
        let at = time::OffsetDateTime::now_utc();
        Commit {
            server_id: sid,
            expected,
            summary: format!("{} (bench)", change.kind()),
            changes: vec![change],
            author: actor.clone(),
            at,
            audit: AuditEntry {
                at,
                actor: actor.clone(),
                action: "peer.add".into(),
                object: format!("server/{sid}/peer"),
                server_id: Some(sid),
                revision: None,
                outcome: AuditOutcome::Success,
                details: Default::default(),
            },
        }
    };
    let mut head = state.revision;
    let mut next = 0usize;
    let mut g = c.benchmark_group("manager/reference/store_commit");
    configure(&mut g, 2);
    g.throughput(Throughput::Elements(1));
    g.bench_function(BenchmarkId::new(store_name, n), |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let mut p: Peer = template.clone();
                    p.id = PeerId::new_random();
                    p.name = peer_name(&format!("ref{index}"), next);
                    next += 1;
                    let k = PrivateKey::generate();
                    p.public_key = k.public_key();
                    let rid = p.id.to_string();
                    p.private_key = Some(
                        sealer
                            .seal_private_key(&k, SecretKind::PeerPrivateKey, &rid)
                            .expect("seal"),
                    );
                    p.preshared_key = Some(
                        sealer
                            .seal_preshared_key(
                                &PresharedKey::generate(),
                                SecretKind::PeerPresharedKey,
                                &rid,
                            )
                            .expect("seal"),
                    );
                    p.address_v6 = Some(v6);
                    p.address_v4 = v4;
                    let add = commit(
                        head,
                        Change::PeerAdded {
                            peer: Box::new(p.clone()),
                        },
                    );
                    let start = Instant::now();
                    let rec = backend
                        .store
                        .commit(add, &key)
                        .await
                        .expect("commit PeerAdded");
                    total += start.elapsed();
                    head = rec.record.revision;
                    let remove = commit(head, Change::PeerRemoved { peer: Box::new(p) });
                    head = backend
                        .store
                        .commit(remove, &key)
                        .await
                        .expect("commit PeerRemoved")
                        .record
                        .revision;
                }
                record(store_name, &format!("store_commit/{n}"), total, iters);
                total
            })
        });
    });
    g.finish();
}

/// Bulk import of a 10 000-peer wg-quick config into a fresh store each time.
fn import_benches(c: &mut Criterion, rt: &Runtime) {
    let text = wgquick_config(IMPORT_PEERS);
    let mut g = c.benchmark_group("manager/import");
    configure(&mut g, 5);
    g.throughput(Throughput::Elements(IMPORT_PEERS as u64));
    for kind in [Kind::Memory, Kind::Sqlite] {
        g.bench_function(kind.name(), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let backend = Backend::open(kind).await.expect("a local store");
                        let (m, cap) = Manager::builder(
                            backend.store.clone(),
                            Sealer::new(MasterKey::generate()),
                        )
                        .build_with_local_admin();
                        let admin = cap.principal("bench");
                        let opts = ImportOptions {
                            interface: Some(InterfaceName::new("wgi0").expect("valid")),
                            ..ImportOptions::default()
                        };
                        let name = ServerName::new("imported").expect("valid");
                        let start = Instant::now();
                        let v = m
                            .import_server(&admin, name, &text, opts)
                            .await
                            .expect("import_server");
                        total += start.elapsed();
                        assert_eq!(v.peer_count, IMPORT_PEERS);
                        drop(m);
                        backend.close().await;
                    }
                    record(kind.name(), "import", total, iters);
                    total
                })
            });
        });
    }
    g.finish();
}

#[allow(clippy::cast_precision_loss)] // IMPORT_PEERS is small
fn summary() {
    let stores: Vec<String> = {
        let t = TIMES
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut s: Vec<String> = t.keys().map(|(s, _)| s.clone()).collect();
        s.dedup();
        s
    };
    let (small, large) = (ADD_SIZES[0], ADD_SIZES[1]);
    for s in &stores {
        if let (Some(a), Some(b)) = (
            median(s, &format!("add_peer/{small}")),
            median(s, &format!("add_peer/{large}")),
        ) {
            println!(
                "manager/add_peer/{s}: at {small} peers {:.0} us, at {large} peers {:.0} us \
                 ({:.0} peers/s), ratio {:.2}",
                a * 1e6,
                b * 1e6,
                1.0 / b,
                b / a
            );
        }
        if let (Some(a), Some(b)) = (
            median(s, &format!("remove_peer/{small}")),
            median(s, &format!("remove_peer/{large}")),
        ) {
            println!(
                "manager/remove_peer/{s} (the add bench's resets): at {small} peers {:.0} us, \
                 at {large} peers {:.0} us, ratio {:.2}",
                a * 1e6,
                b * 1e6,
                b / a
            );
        }
        if let (Some(a), Some(b)) = (
            median(s, &format!("store_commit/{small}")),
            median(s, &format!("store_commit/{large}")),
        ) {
            println!(
                "manager/reference/store_commit/{s}: at {small} peers {:.0} us, at {large} \
                 peers {:.0} us, ratio {:.2}",
                a * 1e6,
                b * 1e6,
                b / a
            );
        }
        for op in ["get_server", "list_peers"] {
            if let (Some(cold), Some(warm)) = (
                median(s, &format!("load_cold/{op}")),
                median(s, &format!("load_warm/{op}")),
            ) {
                println!(
                    "manager/load/{op}/{s}: cold {:.1} ms, warm {:.3} ms",
                    cold * 1e3,
                    warm * 1e3
                );
            }
        }
        if let Some(t) = median(s, "import") {
            println!(
                "manager/import/{s}: {IMPORT_PEERS} peers in {:.2} s ({:.0} peers/s)",
                t,
                IMPORT_PEERS as f64 / t
            );
        }
    }
}

fn manager(c: &mut Criterion) {
    let rt = runtime();
    for kind in [Kind::Memory, Kind::Sqlite, Kind::Postgres] {
        store_benches(c, &rt, kind);
    }
    import_benches(c, &rt);
    summary();
}

criterion_group!(benches, manager);
criterion_main!(benches);
