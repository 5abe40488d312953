//! Apply, side by side with wireguard-tools on the same wireguard-go device, or on the
//! same kernel WireGuard device (`WGM_BENCH_BACKEND=kernel`).
//!
//! wgm's side is the whole library path a caller takes: the `Manager` on its default
//! store (a SQLite file) and the reconciler (`Manager::apply`: derive the desired state,
//! read the device or plan from what the manager last verified, apply the delta, verify,
//! record the applied revision, audit) on a `UserspaceBackend` (UAPI), measured with both
//! verification policies: `Verify::Auto` (the default: a delta the daemon acknowledged
//! in full is not read back) and `Verify::Always` (every apply reads the whole device
//! back and plans again). The other side is `wg(8)` run as a
//! process, as scripts built on wireguard-tools do, on a configuration the library
//! rendered (`Manager::server_config`) and `wg-quick strip` turned into `wg setconf` form.
//! Both drive one wireguard-go device with 10 000 peers (dual-stack addresses and a PSK
//! each), in a network namespace this bench creates and deletes.
//!
//! - **initial apply**: empty device → 10 000 peers, by a `Manager` that has never seen
//!   the device (a fresh process: it loads the server and opens every key).
//!   `Manager::apply` vs `wg setconf`.
//! - **add one peer**: `Manager::add_peer` + `Manager::apply` on a long-lived manager vs
//!   `wg syncconf` with the full 10 001-peer file (the file is prepared untimed;
//!   `wg-quick strip` of it is reported on its own line).
//! - **status**: `Manager::status` vs `wg show <iface> dump`.
//!
//! Then the cost of each step of wgm's add (`add_peer`, plan, the one-peer UAPI set, one
//! full device read), and the raw tool equivalents (`wg set` of one peer, `wg showconf`),
//! to say where the time goes.
//!
//! Method: a plain `main` (no criterion): each operation takes 100 ms to seconds and
//! needs an untimed reset before it, so the two sides run **interleaved**, round after
//! round (alternating which goes first), on the same device, and each line reports the
//! median, minimum and maximum of the rounds; the ratio is of the medians. Peers have
//! `PersistentKeepalive` off, so the rendered file and the reconciler's desired state
//! are exactly the same configuration (checked: after `wg setconf` the Manager's plan is
//! empty). Both sides run without a network backend (device only, as `wg setconf`).
//!
//! With `WGM_BENCH_BACKEND=kernel` (or the argument `--backend=kernel`) the device is
//! kernel WireGuard, driven by
//! `KernelWireGuard` (generic netlink) on wgm's side and by `wg` over netlink on the
//! other; the whole process moves into the bench's namespace first, so `wg` runs there
//! without `ip netns exec` in its timing. It needs `WGM_TEST_KERNEL=1` and a kernel with
//! WireGuard (`.ci/vm exec` runs it in a VM that has one: benches/README.md).
//!
//! Needs root, `ip`, `wg`, `wg-quick` and `wireguard-go`, and `WGM_TEST_NETNS=1`;
//! without the switch it prints one line and exits; with it, anything missing fails the
//! run. Without `--bench` (e.g. `cargo test
//! --benches`) it runs one round on 200 peers as a smoke test.
//!
//! Run: `WGM_TEST_NETNS=1 cargo bench -p wgm-benches --bench apply`
//! (`WGM_BENCH_ROUNDS=N` or the argument `--rounds=N` for N rounds; default 10).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wgm_backend_kernel::KernelWireGuard;
use wgm_backend_userspace::{DaemonCommand, UserspaceBackend, UserspaceConfig, DEFAULT_SOCKET_DIR};
use wgm_core::backend::{DeviceDelta, PeerDelta, WireGuardBackend};
use wgm_core::keys::PrivateKey;
use wgm_core::manager::{ApplyOptions, ApplyReport, Host, Manager, NewPeer, NewServer};
use wgm_core::model::{PeerId, PeerStats, ServerId};
use wgm_core::names::{InterfaceName, PeerName, ServerName};
use wgm_core::net::{Keepalive, ListenPort};
use wgm_core::rbac::Principal;
use wgm_core::reconcile::{self, PlanItem, PlanOptions, Verify};
use wgm_core::seal::{MasterKey, Sealer};
use wgm_core::store::Store;
use wgm_store_sql::SqlStore;
use wgm_test_support::{require, Suite};

/// Peers per `add_peers` revision while filling the server.
const SEED_BATCH: usize = 1_000;

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// `wg args…`, timed from spawn to exit (what a script pays).
fn wg(args: &[&str]) -> Duration {
    let start = Instant::now();
    let out = Command::new("wg")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run wg");
    let elapsed = start.elapsed();
    assert!(
        out.status.success(),
        "wg {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::hint::black_box(out.stdout.len());
    elapsed
}

/// Which WireGuard the bench drives (`WGM_BENCH_BACKEND`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flavor {
    /// wireguard-go over UAPI (the default).
    Userspace,
    /// Kernel WireGuard over netlink.
    Kernel,
}

impl Flavor {
    /// `--backend=kernel|userspace` on the command line (what `.ci/vm exec` can pass),
    /// else `WGM_BENCH_BACKEND`, else userspace.
    fn from_env() -> Flavor {
        let arg = std::env::args().find_map(|a| a.strip_prefix("--backend=").map(str::to_owned));
        match arg
            .ok_or(())
            .or_else(|()| std::env::var("WGM_BENCH_BACKEND"))
            .as_deref()
        {
            Ok("kernel") => Flavor::Kernel,
            Ok("userspace" | "") | Err(_) => Flavor::Userspace,
            Ok(other) => panic!("WGM_BENCH_BACKEND={other}: expected userspace or kernel"),
        }
    }

    fn label(self) -> &'static str {
        match self {
            Flavor::Userspace => "wireguard-go",
            Flavor::Kernel => "kernel WireGuard",
        }
    }

    fn backend_type(self) -> &'static str {
        match self {
            Flavor::Userspace => "UserspaceBackend",
            Flavor::Kernel => "KernelWireGuard",
        }
    }
}

/// A network namespace holding the bench's device; dropping it kills the daemon this
/// bench started (by pid), removes its socket and deletes the namespace.
struct Netns {
    name: String,
    iface: InterfaceName,
    backend: Arc<dyn WireGuardBackend>,
    userspace: Option<Arc<UserspaceBackend>>,
}

impl Netns {
    fn new(flavor: Flavor) -> Netns {
        let pid = std::process::id();
        let name = format!("wgmbapply-{pid}");
        let iface = InterfaceName::new(format!("wgba{}", pid % 100_000)).expect("valid name");
        run("ip", &["netns", "add", &name]);
        run("ip", &["-n", &name, "link", "set", "lo", "up"]);
        let (backend, userspace): (Arc<dyn WireGuardBackend>, _) = match flavor {
            Flavor::Userspace => {
                let u = Arc::new(UserspaceBackend::new(UserspaceConfig {
                    daemon: DaemonCommand::wireguard_go().in_netns(&name),
                    ..UserspaceConfig::default()
                }));
                (u.clone(), Some(u))
            }
            Flavor::Kernel => {
                // The calling thread (main, before any other thread or process starts)
                // moves into the namespace; the runtime's threads and every `wg` the
                // bench runs inherit it.
                let file =
                    std::fs::File::open(format!("/run/netns/{name}")).expect("namespace file");
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .expect("enter the bench's namespace");
                (Arc::new(KernelWireGuard::new()), None)
            }
        };
        Netns {
            name,
            iface,
            backend,
            userspace,
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Some(pid) = self
            .userspace
            .as_ref()
            .and_then(|u| u.child_pid(&self.iface))
            .and_then(|p| i32::try_from(p).ok())
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
        let _ = std::fs::remove_file(
            Path::new(DEFAULT_SOCKET_DIR).join(format!("{}.sock", self.iface)),
        );
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Timings of one operation over the rounds.
#[derive(Default)]
struct Samples(Vec<Duration>);

impl Samples {
    fn push(&mut self, d: Duration) {
        self.0.push(d);
    }
    fn sorted(&self) -> Vec<Duration> {
        let mut v = self.0.clone();
        v.sort();
        v
    }
    fn median(&self) -> Duration {
        let v = self.sorted();
        v.get(v.len() / 2).copied().unwrap_or_default()
    }
    fn cell(&self) -> String {
        let v = self.sorted();
        match (v.first(), v.last()) {
            (Some(lo), Some(hi)) => format!("{} ({}–{})", fmt(self.median()), fmt(*lo), fmt(*hi)),
            _ => "-".into(),
        }
    }
}

fn fmt(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us >= 1e6 {
        format!("{:.2} s", us / 1e6)
    } else if us >= 1e3 {
        format!("{:.1} ms", us / 1e3)
    } else {
        format!("{us:.0} µs")
    }
}

fn ratio(a: &Samples, b: &Samples) -> f64 {
    a.median().as_secs_f64() / b.median().as_secs_f64().max(f64::MIN_POSITIVE)
}

struct Bench {
    m: Manager,
    /// The Manager's store, read directly to time the steps of an apply.
    store: Arc<dyn Store>,
    /// A sealer with the Manager's master key (to time `desired_host` on its own).
    sealer: Sealer,
    /// The master key, for fresh managers.
    master: MasterKey,
    admin: Principal,
    server: ServerId,
    host: Host,
    ns: Netns,
    dir: tempfile::TempDir,
}

impl Bench {
    async fn apply(&self) -> ApplyReport {
        self.apply_by(&self.m, Verify::Auto).await
    }

    async fn apply_by(&self, m: &Manager, verify: Verify) -> ApplyReport {
        let opts = ApplyOptions {
            verify,
            ..ApplyOptions::default()
        };
        let r = m
            .apply(&self.admin, self.server, &self.host, opts)
            .await
            .expect("apply");
        assert!(
            r.converged && r.errors.is_empty(),
            "apply did not converge: {:?} {:?}",
            r.errors,
            r.remaining
        );
        r
    }

    async fn add(&self, name: &str) -> PeerId {
        let spec = NewPeer {
            keepalive: Some(Keepalive::OFF),
            ..NewPeer::new(PeerName::new(name).expect("name"))
        };
        self.m
            .add_peer(&self.admin, self.server, spec)
            .await
            .expect("add peer")
            .id
    }

    async fn remove(&self, id: PeerId) {
        self.m
            .remove_peer(&self.admin, self.server, id)
            .await
            .expect("remove peer");
    }

    /// A manager over the same store and key that has never seen the device (a fresh
    /// process).
    fn fresh_manager(&self) -> Manager {
        Manager::builder(
            self.store.clone(),
            Sealer::new(MasterKey::from_bytes(*self.master.expose_bytes())),
        )
        .build()
    }

    /// The server config as `wg setconf` reads it: rendered by the library, then
    /// `wg-quick strip`. Returns the file and how long the strip took.
    async fn setconf_file(&self, tag: &str) -> (PathBuf, Duration) {
        use std::os::unix::fs::PermissionsExt;
        let text = self
            .m
            .server_config(&self.admin, self.server)
            .await
            .expect("server config");
        let conf = self.dir.path().join(format!("{}.conf", self.ns.iface));
        std::fs::write(&conf, text.as_bytes()).expect("write config");
        std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let start = Instant::now();
        let stripped = run("wg-quick", &["strip", conf.to_str().expect("utf-8")]);
        let strip = start.elapsed();
        let out = self.dir.path().join(format!("{tag}.setconf"));
        std::fs::write(&out, stripped).expect("write stripped config");
        std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        (out, strip)
    }

    /// Remove every peer (untimed reset between rounds); key and port stay.
    async fn clear(&self) {
        let clear = DeviceDelta {
            replace_peers: true,
            ..DeviceDelta::default()
        };
        self.ns
            .backend
            .apply_device(&self.ns.iface, &clear)
            .await
            .expect("clear the device");
    }

    async fn peer_count(&self) -> usize {
        self.ns
            .backend
            .read_device(&self.ns.iface)
            .await
            .expect("read")
            .expect("device exists")
            .peers
            .len()
    }
}

/// The order of the three sides in round `r`: each goes first, second and third in turn.
fn rotation(r: usize) -> [usize; 3] {
    [[0, 1, 2], [1, 2, 0], [2, 0, 1]][r % 3]
}

fn main() {
    let flavor = Flavor::from_env();
    let granted = match flavor {
        Flavor::Userspace => require(Suite::Netns, &["ip", "wg", "wg-quick", "wireguard-go"]),
        Flavor::Kernel => require(Suite::Kernel, &["ip", "wg", "wg-quick"]),
    };
    if granted.is_none() {
        return;
    }
    let bench_mode = std::env::args().any(|a| a == "--bench");
    let (peers, rounds) = if bench_mode {
        // `--rounds=N` (what `.ci/vm exec` can pass), else WGM_BENCH_ROUNDS.
        let rounds = std::env::args()
            .find_map(|a| a.strip_prefix("--rounds=").map(str::to_owned))
            .or_else(|| std::env::var("WGM_BENCH_ROUNDS").ok())
            .and_then(|r| r.parse().ok())
            .unwrap_or(10_usize)
            .max(1);
        (10_000, rounds)
    } else {
        eprintln!("apply bench: smoke run (one round, 200 peers); `cargo bench` measures");
        (200, 1)
    };
    // Before the runtime's threads exist: a kernel bench moves into its namespace here.
    let ns = Netns::new(flavor);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(bench(flavor, ns, peers, rounds));
}

#[allow(clippy::too_many_lines)] // One linear story: set up, three pairs, breakdown, table.
async fn bench(flavor: Flavor, ns: Netns, peers: usize, rounds: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("wgm.db").display());
    let store: Arc<dyn Store> = Arc::new(SqlStore::open(&url).await.expect("open SQLite"));
    let master = MasterKey::generate();
    let sealer = Sealer::new(MasterKey::from_bytes(*master.expose_bytes()));
    let (m, cap) = Manager::builder(
        store.clone(),
        Sealer::new(MasterKey::from_bytes(*master.expose_bytes())),
    )
    .build_with_local_admin();
    let admin = cap.principal("root");
    let mut spec = NewServer::new(
        ServerName::new("bench").expect("name"),
        ns.iface.clone(),
        ListenPort::new(51_820).expect("port"),
    );
    spec.ipv6_pool = Some("fd00:ba::/64".parse().expect("pool"));
    spec.ipv4_pool = Some("10.64.0.0/16".parse().expect("pool"));
    // Removed peers hand their addresses back at once (the add-one rounds remove).
    spec.quarantine_secs = Some(0);
    let server = m.create_server(&admin, spec).await.expect("server").id;
    let t = Instant::now();
    let mut n = 0;
    while n < peers {
        let batch: Vec<NewPeer> = (n..peers.min(n + SEED_BATCH))
            .map(|i| NewPeer {
                keepalive: Some(Keepalive::OFF),
                ..NewPeer::new(PeerName::new(format!("p{i:05}")).expect("name"))
            })
            .collect();
        n += batch.len();
        m.add_peers(&admin, server, batch).await.expect("add peers");
    }
    let seed = t.elapsed();
    let host = Host::new("bench", ns.backend.clone(), None);
    let b = Bench {
        m,
        store,
        sealer,
        master,
        admin,
        server,
        host,
        ns,
        dir,
    };
    let iface = b.ns.iface.to_string();
    let iface = iface.as_str();
    eprintln!(
        "apply bench: {peers} peers added to the Manager in {}; device {iface} in namespace {}",
        fmt(seed),
        b.ns.name
    );

    // The file `wg setconf` gets: the same server, rendered and stripped.
    let (base_conf, strip_base) = b.setconf_file("base").await;
    let base_conf = base_conf.to_str().expect("utf-8").to_owned();

    // Warm-up, untimed: the first apply creates the daemon and scans every revision.
    let first = b.apply().await;
    assert!(first.plan.items.contains(&PlanItem::CreateDevice));
    assert_eq!(b.peer_count().await, peers);

    // ---- initial apply -------------------------------------------------------------
    // Sides: 0 = wgm (Verify::Auto), 1 = wgm (Verify::Always), 2 = wg setconf; the order
    // rotates by round.
    let (mut init_wgm, mut init_wgm_always, mut init_wg) =
        (Samples::default(), Samples::default(), Samples::default());
    for r in 0..rounds {
        for side in rotation(r) {
            b.clear().await;
            if side < 2 {
                let fresh = b.fresh_manager();
                let verify = if side == 0 {
                    Verify::Auto
                } else {
                    Verify::Always
                };
                let t = Instant::now();
                let report = b.apply_by(&fresh, verify).await;
                let took = t.elapsed();
                if side == 0 {
                    init_wgm.push(took);
                } else {
                    init_wgm_always.push(took);
                }
                assert_eq!(report.read_back, side == 1, "{verify:?}");
                let adds = report
                    .plan
                    .items
                    .iter()
                    .filter(|i| matches!(i, PlanItem::AddPeer { .. }))
                    .count();
                assert_eq!(adds, peers, "an initial apply adds every peer");
            } else {
                init_wg.push(wg(&["setconf", iface, &base_conf]));
                if r == 0 {
                    // Same configuration on both sides: nothing left for the reconciler.
                    let plan = b.m.plan(&b.admin, b.server, &b.host).await.expect("plan");
                    assert!(
                        plan.is_empty(),
                        "wg setconf left work for the reconciler:\n{plan}"
                    );
                }
            }
            assert_eq!(b.peer_count().await, peers);
        }
    }

    // ---- add one peer at `peers` ---------------------------------------------------
    // The wireguard-tools side's file: the same server with one more peer.
    let extra = b.add("extra-wg").await;
    let (plus_conf, strip_plus) = b.setconf_file("plus").await;
    let plus_conf = plus_conf.to_str().expect("utf-8").to_owned();
    let extra_key =
        b.m.get_peer(&b.admin, b.server, extra)
            .await
            .expect("peer")
            .public_key;
    b.remove(extra).await;
    // The long-lived manager verifies the device once (nothing to change: a full read),
    // as a reconcile pass would; the add-one rounds below run well within
    // `ManagerConfig::reverify_after_secs` of it (checked by `read_back`).
    assert!(b.apply().await.read_back);
    let remove_extra = DeviceDelta {
        peers: vec![PeerDelta::remove(extra_key)],
        ..DeviceDelta::default()
    };
    let (mut add_wgm, mut add_wgm_always, mut add_wg) =
        (Samples::default(), Samples::default(), Samples::default());
    let (mut add_only, mut add_apply, mut add_apply_always) =
        (Samples::default(), Samples::default(), Samples::default());
    for r in 0..rounds {
        for side in rotation(r) {
            assert_eq!(b.peer_count().await, peers);
            if side < 2 {
                let verify = if side == 0 {
                    Verify::Auto
                } else {
                    Verify::Always
                };
                let t = Instant::now();
                let id = b.add(&format!("x{r}-{side}")).await;
                let added = t.elapsed();
                let report = b.apply_by(&b.m, verify).await;
                let total = t.elapsed();
                add_only.push(added);
                if side == 0 {
                    add_wgm.push(total);
                    add_apply.push(total.saturating_sub(added));
                } else {
                    add_wgm_always.push(total);
                    add_apply_always.push(total.saturating_sub(added));
                }
                assert_eq!(report.read_back, side == 1, "{verify:?}");
                assert_eq!(report.plan.device.peers.len(), 1, "{}", report.plan);
                assert!(!report.plan.device.replace_peers);
                assert_eq!(b.peer_count().await, peers + 1);
                b.remove(id).await;
                // Put the device back the way the next side expects, read back so the
                // next round plans from a verified state either way.
                b.apply_by(&b.m, Verify::Always).await;
            } else {
                add_wg.push(wg(&["syncconf", iface, &plus_conf]));
                assert_eq!(b.peer_count().await, peers + 1);
                b.ns.backend
                    .apply_device(&b.ns.iface, &remove_extra)
                    .await
                    .expect("remove the extra peer");
            }
        }
    }

    // ---- status --------------------------------------------------------------------
    let (mut st_wgm, mut st_wg) = (Samples::default(), Samples::default());
    for r in 0..rounds {
        for side in if r % 2 == 0 { [0, 1] } else { [1, 0] } {
            if side == 0 {
                let t = Instant::now();
                let s =
                    b.m.status(&b.admin, b.server, &b.host)
                        .await
                        .expect("status");
                st_wgm.push(t.elapsed());
                assert_eq!(s.peers.len(), peers);
            } else {
                st_wg.push(wg(&["show", iface, "dump"]));
            }
        }
    }

    // ---- where the time of wgm's add goes ------------------------------------------
    let (mut bd_add, mut bd_plan, mut bd_apply) =
        (Samples::default(), Samples::default(), Samples::default());
    let (mut bd_load, mut bd_desired, mut bd_plan_pure, mut bd_stats) = (
        Samples::default(),
        Samples::default(),
        Samples::default(),
        Samples::default(),
    );
    let (mut bd_read, mut bd_set_one, mut wg_set_one, mut wg_showconf) = (
        Samples::default(),
        Samples::default(),
        Samples::default(),
        Samples::default(),
    );
    for r in 0..rounds {
        let t = Instant::now();
        let id = b.add(&format!("y{r}")).await;
        bd_add.push(t.elapsed());
        let t = Instant::now();
        let plan = b.m.plan(&b.admin, b.server, &b.host).await.expect("plan");
        bd_plan.push(t.elapsed());
        assert_eq!(plan.device.peers.len(), 1);
        // The same steps one by one: load the server, derive the desired state (opens
        // the server key and every PSK), read the device, plan.
        let t = Instant::now();
        let state = b
            .store
            .load_server(b.server)
            .await
            .expect("load")
            .expect("server");
        bd_load.push(t.elapsed());
        let t = Instant::now();
        let desired = reconcile::desired_host(&state, &b.sealer, []).expect("desired");
        bd_desired.push(t.elapsed());
        let live =
            b.ns.backend
                .read_device(&b.ns.iface)
                .await
                .expect("read")
                .expect("exists");
        let t = Instant::now();
        let pure = reconcile::plan(&desired, Some(&live), None, PlanOptions::default());
        bd_plan_pure.push(t.elapsed());
        assert_eq!(pure.device.peers.len(), 1);
        // What `status` writes back: observed statistics of every managed peer.
        let stats: Vec<(PeerId, PeerStats)> = state
            .peers
            .keys()
            .map(|id| (*id, PeerStats::default()))
            .collect();
        let t = Instant::now();
        b.store
            .update_peer_stats(b.server, &stats)
            .await
            .expect("stats");
        bd_stats.push(t.elapsed());
        let t = Instant::now();
        b.apply().await;
        bd_apply.push(t.elapsed());
        b.remove(id).await;
        b.apply().await;

        let t = Instant::now();
        let dev =
            b.ns.backend
                .read_device(&b.ns.iface)
                .await
                .expect("read")
                .expect("exists");
        bd_read.push(t.elapsed());
        assert_eq!(dev.peers.len(), peers);

        let key = PrivateKey::generate().public_key();
        let one = DeviceDelta {
            peers: vec![PeerDelta {
                allowed_ips: vec!["fd00:bb::1/128".parse().expect("net")],
                ..PeerDelta::new(key)
            }],
            ..DeviceDelta::default()
        };
        let t = Instant::now();
        b.ns.backend
            .apply_device(&b.ns.iface, &one)
            .await
            .expect("set one peer");
        bd_set_one.push(t.elapsed());
        let gone = DeviceDelta {
            peers: vec![PeerDelta::remove(key)],
            ..DeviceDelta::default()
        };
        b.ns.backend
            .apply_device(&b.ns.iface, &gone)
            .await
            .expect("remove it");

        let key = PrivateKey::generate().public_key().to_base64();
        wg_set_one.push(wg(&[
            "set",
            iface,
            "peer",
            &key,
            "allowed-ips",
            "fd00:bb::1/128",
        ]));
        wg(&["set", iface, "peer", &key, "remove"]);
        wg_showconf.push(wg(&["showconf", iface]));
    }
    assert_eq!(b.peer_count().await, peers);

    // ---- report --------------------------------------------------------------------
    println!();
    println!(
        "apply bench: {peers} peers, {}, {rounds} interleaved rounds; median (min–max)",
        flavor.label()
    );
    println!();
    println!("| operation | wgm | wireguard-tools | ratio wgm / wg |");
    println!("|---|---|---|---|");
    println!(
        "| initial apply of {peers} peers | `Manager::apply` {} | `wg setconf` {} | {:.2} |",
        init_wgm.cell(),
        init_wg.cell(),
        ratio(&init_wgm, &init_wg)
    );
    println!(
        "| initial apply, `Verify::Always` | `Manager::apply` {} | `wg setconf` {} | {:.2} |",
        init_wgm_always.cell(),
        init_wg.cell(),
        ratio(&init_wgm_always, &init_wg)
    );
    println!(
        "| add one peer at {peers} | `add_peer` + `apply` {} | `wg syncconf` (full file) {} | {:.3} |",
        add_wgm.cell(),
        add_wg.cell(),
        ratio(&add_wgm, &add_wg)
    );
    println!(
        "| add one peer, `Verify::Always` | `add_peer` + `apply` {} | `wg syncconf` (full file) {} | {:.2} |",
        add_wgm_always.cell(),
        add_wg.cell(),
        ratio(&add_wgm_always, &add_wg)
    );
    println!(
        "| status of {peers} peers | `Manager::status` {} | `wg show dump` {} | {:.2} |",
        st_wgm.cell(),
        st_wg.cell(),
        ratio(&st_wgm, &st_wg)
    );
    println!();
    println!("Where the time goes (same device, {peers} peers):");
    println!();
    println!("| step | time |");
    println!("|---|---|");
    println!(
        "| `add_peer` (in the add-one rounds) | {} |",
        add_only.cell()
    );
    println!(
        "| `apply` after it (in the add-one rounds), `Verify::Auto` | {} |",
        add_apply.cell()
    );
    println!(
        "| `apply` after it (in the add-one rounds), `Verify::Always` | {} |",
        add_apply_always.cell()
    );
    println!("| `add_peer` alone | {} |", bd_add.cell());
    println!(
        "| `Manager::plan` with one peer pending (load, read device, plan) | {} |",
        bd_plan.cell()
    );
    println!(
        "| `Manager::apply` of that one peer | {} |",
        bd_apply.cell()
    );
    println!("| `Store::load_server` (SQLite) | {} |", bd_load.cell());
    println!(
        "| `reconcile::desired_host` (opens the server key and every PSK) | {} |",
        bd_desired.cell()
    );
    println!("| `reconcile::plan` (pure) | {} |", bd_plan_pure.cell());
    println!(
        "| `Store::update_peer_stats` of every peer (what `status` writes) | {} |",
        bd_stats.cell()
    );
    println!(
        "| `{}::read_device` (every peer) | {} |",
        flavor.backend_type(),
        bd_read.cell()
    );
    println!(
        "| `{}::apply_device` of a one-peer delta | {} |",
        flavor.backend_type(),
        bd_set_one.cell()
    );
    println!(
        "| `wg set <iface> peer K allowed-ips …` (one peer) | {} |",
        wg_set_one.cell()
    );
    println!(
        "| `wg showconf <iface>` (what `wg syncconf` reads first) | {} |",
        wg_showconf.cell()
    );
    println!(
        "| `wg-quick strip` of the {peers}-peer file / of the {}-peer file (once each, not in the table above) | {} / {} |",
        peers + 1,
        fmt(strip_base),
        fmt(strip_plus)
    );
}
