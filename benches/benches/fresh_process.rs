//! Whole processes, as a new user meets them: the release `wgm` and `wgm-agent` binaries
//! on a **10 000-peer server** on **wireguard-go**, in a network namespace this bench
//! creates, for the SQLite store (a file in a temporary directory) and, with
//! `WGM_TEST_POSTGRES_URL`, for PostgreSQL (a database created for the run and dropped
//! at its end). One table per store:
//!
//! 1. `wgm peer add SERVER NAME`: wall time of the process (spawn to exit), the server
//!    holding 10 000 peers.
//! 2. `wgm apply SERVER --backend userspace` right after each such add, run in the
//!    namespace with `ip netns exec`, next to `wg syncconf IFACE FILE` with the full
//!    10 001-peer file, also through `ip netns exec` (the file is made once, untimed:
//!    `wgm server export` of the server with one more peer, through `wg-quick strip`, as
//!    the `apply` bench makes its file). Both sides start from the same 10 000-peer
//!    device and add one peer; between them the device is put back untimed (`wgm peer
//!    remove` + `wgm apply`, and `wg set IFACE peer K remove`), so the device never holds
//!    anything wgm does not know. The order of the two sides alternates by round. The
//!    wrapper alone (`ip netns exec NS true`) and `wgm init` (open the store and the key
//!    file, nothing else: the floor of every command) are timed in the same rounds.
//! 3. The other single-peer commands, each a whole process on the same server, once
//!    per round on a peer added for the round (untimed): `peer show`, `peer set
//!    --description`, `peer disable`, `peer enable`, `peer rotate-key`, `peer
//!    rotate-psk`, `peer config`, `server show` and `peer remove`, printed next to `wgm
//!    init`'s median (what any command costs). They change only the store.
//! 4. `wgm-agent` running in the namespace (`WGM_AGENT_BACKEND=userspace`, the server
//!    created with `--host`): for 100 adds, one after the other, the time from just
//!    before `wgm peer add` is spawned to the agent's `applied` log line for that
//!    revision (its RFC 3339 timestamp, from the agent's log file), the wall time of the
//!    `wgm peer add` processes, and the time from their exit to that line. At the end every added peer must be on the device
//!    (`wg show IFACE peers`), and the head revision must have moved by exactly one per
//!    add (so the n-th add is revision head + n).
//!
//! The targets (`peer add ≤ 30 ms`, `apply ≤ 0.3 × wg syncconf`, `agent p50 ≤ 50 ms,
//! p99 ≤ 250 ms`) are printed next to the numbers, as information: a bench measures, it
//! does not fail on numbers. It fails when something does not work (a command fails, a
//! peer is missing from the device).
//!
//! Set-up, untimed but printed: the server (IPv6 /64 and IPv4 /16 pools) and its 10 000
//! peers in one `wgm peer add SERVER p --count 10000` (one revision), then a first full
//! `wgm apply` in the namespace (which starts wireguard-go there).
//!
//! Every `wgm` process gets `--store` and `--master-key-file`, a private `HOME`, no
//! inherited `WGM_*` and `NO_COLOR=1`. PostgreSQL is reached over TCP from outside the
//! namespace; processes inside it (`wgm apply`, `wgm plan`, the agent) reach it through
//! a unix socket in the run's temporary directory forwarded to the server's TCP port (as
//! `examples/tests/cli/agent.rs` does: a socket file is reachable from every namespace).
//!
//! The namespace, the daemon, the agent, the database and the temporary directory are
//! removed on every exit path: normal end, a panic (unwinding), and SIGINT, SIGTERM or
//! SIGHUP (a thread waits for them, undoes what was set up and exits). Only processes
//! this bench started are stopped, each by its pid: the agent (its child), and
//! wireguard-go, which the first `wgm apply` started in the bench's own namespace.
//!
//! The binaries are taken from next to the bench executable (`<target>/release/wgm`,
//! `<target>/release/wgm-agent`), or from `WGM_BENCH_BIN_DIR`; build them first:
//! `cargo build --release -p wgm-cli --bins`.
//!
//! Needs root, `ip`, `wireguard-go`, `wg`, `wg-quick` and `WGM_TEST_NETNS=1` (PostgreSQL
//! also `psql`); without the switch it prints one line and exits. `WGM_BENCH_ROUNDS=N`
//! sets the rounds of 1–3 (default 20); 4 is always 100 adds. Without `--bench` (`cargo
//! test --benches`) it is a smoke run: 200 peers, 2 rounds, 5 agent adds.
//!
//! Run: `cargo build --release -p wgm-cli --bins && WGM_TEST_NETNS=1
//! [WGM_TEST_POSTGRES_URL=postgres://…] cargo bench -p wgm-benches --bench fresh_process`

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use wgm_test_support::{require, Suite};

/// The server's name in every store.
const SERVER: &str = "bench";
/// The host the server is assigned to, and the agent's and `wgm apply`'s host name.
const HOST: &str = "bench-host";
/// Variables of the caller that would change what the processes do.
const CLEARED_ENV: &[&str] = &[
    "WGM_STORE",
    "WGM_TOKEN",
    "WGM_MASTER_KEY",
    "WGM_MASTER_KEY_FILE",
    "WGM_LOG",
    "WGM_HOST",
    "WGM_AGENT_CONFIG",
    "WGM_AGENT_HOST",
    "WGM_AGENT_SERVERS",
    "WGM_AGENT_BACKEND",
    "WGM_AGENT_RECONCILE_INTERVAL",
    "WGM_AGENT_HEARTBEAT_INTERVAL",
    "WGM_AGENT_LEASE_TTL",
    "WGM_AGENT_REMOVE_UNMANAGED",
    "XDG_DATA_HOME",
];

// ---- undo on every exit path -----------------------------------------------------------

type Undo = Box<dyn FnOnce() + Send>;

/// What is set up and not yet taken down, in order of set-up.
static UNDO: Mutex<Vec<(u64, Undo)>> = Mutex::new(Vec::new());
static NEXT_UNDO: AtomicU64 = AtomicU64::new(0);
/// Set when a signal arrived: whatever is set up after it is taken down at once.
static STOPPING: AtomicBool = AtomicBool::new(false);
/// Undo steps running on the main thread (a signal's exit waits for them).
static RUNNING_UNDO: AtomicUsize = AtomicUsize::new(0);

fn undo_list() -> MutexGuard<'static, Vec<(u64, Undo)>> {
    UNDO.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs its undo step when dropped (normal end or a panic's unwinding), unless the
/// signal thread took it first; each step runs exactly once.
struct Guard(u64);

fn on_exit(f: impl FnOnce() + Send + 'static) -> Guard {
    let id = NEXT_UNDO.fetch_add(1, Ordering::SeqCst);
    undo_list().push((id, Box::new(f)));
    if STOPPING.load(Ordering::SeqCst) {
        drop(Guard(id));
    }
    Guard(id)
}

impl Guard {
    fn take(&self) -> Option<Undo> {
        let mut list = undo_list();
        let i = list.iter().position(|(id, _)| *id == self.0)?;
        Some(list.remove(i).1)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(f) = self.take() {
            RUNNING_UNDO.fetch_add(1, Ordering::SeqCst);
            f();
            RUNNING_UNDO.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// SIGINT, SIGTERM and SIGHUP are caught (tokio's handlers, on a thread of their own)
/// by one thread that undoes everything, newest first, and exits. Handlers, unlike a
/// blocked signal mask, are not inherited by the processes the bench starts (exec
/// resets them), so the agent still stops on its SIGTERM.
fn catch_signals() {
    let (ready, installed) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime for the signal thread");
        let sig = rt.block_on(async {
            use tokio::signal::unix::{signal, SignalKind};
            let mut int = signal(SignalKind::interrupt()).expect("catch SIGINT");
            let mut term = signal(SignalKind::terminate()).expect("catch SIGTERM");
            let mut hup = signal(SignalKind::hangup()).expect("catch SIGHUP");
            let _ = ready.send(());
            tokio::select! {
                _ = int.recv() => ("SIGINT", 2),
                _ = term.recv() => ("SIGTERM", 15),
                _ = hup.recv() => ("SIGHUP", 1),
            }
        });
        STOPPING.store(true, Ordering::SeqCst);
        eprintln!("fresh_process bench: {}: taking down what it set up", sig.0);
        let all = std::mem::take(&mut *undo_list());
        for (_, f) in all.into_iter().rev() {
            f();
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while RUNNING_UNDO.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        std::process::exit(128 + sig.1);
    });
    installed
        .recv()
        .expect("the signal thread installed its handlers");
}

// ---- processes -------------------------------------------------------------------------

/// Whether process `pid` is gone (no such process, or a zombie not yet reaped).
fn process_gone(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return true;
    };
    stat.rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next())
        .is_none_or(|state| state == "Z")
}

fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

fn signal(pid: i32, sig: rustix::process::Signal) {
    if let Some(p) = rustix::process::Pid::from_raw(pid) {
        let _ = rustix::process::kill_process(p, sig);
    }
}

/// SIGTERM, then SIGKILL after `grace`; returns when the process is gone.
fn stop_pid(pid: i32, grace: Duration) {
    signal(pid, rustix::process::Signal::TERM);
    let deadline = Instant::now() + grace;
    while !process_gone(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if !process_gone(pid) {
        signal(pid, rustix::process::Signal::KILL);
        let deadline = Instant::now() + Duration::from_secs(2);
        while !process_gone(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn output(c: &mut Command) -> Output {
    c.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", Path::new(c.get_program()).display()))
}

/// Stdout of a process that must succeed.
fn check(what: &str, out: &Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `program args…`, which must succeed, timed from spawn to exit.
fn timed(what: &str, c: &mut Command) -> (String, Duration) {
    let t = Instant::now();
    let out = output(c);
    let took = t.elapsed();
    (check(what, &out), took)
}

fn run(program: &str, args: &[&str]) -> String {
    check(
        &format!("{program} {}", args.join(" ")),
        &output(Command::new(program).args(args)),
    )
}

/// The `wgm` and `wgm-agent` binaries under test.
struct Bins {
    wgm: PathBuf,
    agent: PathBuf,
}

impl Bins {
    /// `WGM_BENCH_BIN_DIR`, else the directory above the bench executable's `deps/`.
    fn find() -> Result<Bins, String> {
        let (dir, hint) = if let Some(d) = std::env::var_os("WGM_BENCH_BIN_DIR")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
        {
            (d, "WGM_BENCH_BIN_DIR names a directory without them")
        } else {
            let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
            let dir = exe
                .parent()
                .and_then(Path::parent)
                .ok_or("the bench executable is not in <target>/<profile>/deps/")?
                .to_owned();
            let hint = if dir.ends_with("release") {
                "build them first: `cargo build --release -p wgm-cli --bins` (with the same \
                 CARGO_TARGET_DIR), or set WGM_BENCH_BIN_DIR to a directory holding both"
            } else {
                "build them first: `cargo build -p wgm-cli --bins` (with the same \
                 CARGO_TARGET_DIR), or set WGM_BENCH_BIN_DIR to a directory holding both"
            };
            (dir, hint)
        };
        let bins = Bins {
            wgm: dir.join("wgm"),
            agent: dir.join("wgm-agent"),
        };
        for b in [&bins.wgm, &bins.agent] {
            if !b.is_file() {
                return Err(format!(
                    "fresh_process bench: {} not found: {hint}",
                    b.display()
                ));
            }
        }
        Ok(bins)
    }
}

// ---- the namespace, PostgreSQL ---------------------------------------------------------

/// A network namespace of this run; on drop (or a signal) the daemon the bench started
/// there is stopped by its pid, its socket removed and the namespace deleted.
struct Netns {
    name: String,
    iface: String,
    /// wireguard-go's pid, once the first apply has started it.
    daemon: Arc<Mutex<Option<i32>>>,
    _undo: Guard,
}

impl Netns {
    fn new(tag: &str) -> Netns {
        let pid = std::process::id();
        let name = format!("wgmbfresh-{tag}-{pid}");
        let iface = format!("wgbf{tag}{}", pid % 100_000);
        run("ip", &["netns", "add", &name]);
        let daemon = Arc::new(Mutex::new(None::<i32>));
        let undo = {
            let (name, iface, daemon) = (name.clone(), iface.clone(), daemon.clone());
            on_exit(move || {
                let pid = daemon.lock().unwrap_or_else(PoisonError::into_inner).take();
                if let Some(pid) = pid.filter(|p| comm(*p) == "wireguard-go") {
                    stop_pid(pid, Duration::from_secs(5));
                }
                let _ = std::fs::remove_file(format!("/var/run/wireguard/{iface}.sock"));
                // Anything else still in the namespace was started by this run (by the
                // first `wgm apply` or through `ip netns exec`): wait, then stop it.
                let deadline = Instant::now() + Duration::from_secs(5);
                loop {
                    let pids = netns_pids(&name);
                    if pids.is_empty() {
                        break;
                    }
                    if Instant::now() > deadline {
                        for p in pids {
                            stop_pid(p, Duration::from_secs(2));
                        }
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                let _ = Command::new("ip")
                    .args(["netns", "del", &name])
                    .stdin(Stdio::null())
                    .output();
            })
        };
        run("ip", &["-n", &name, "link", "set", "lo", "up"]);
        Netns {
            name,
            iface,
            daemon,
            _undo: undo,
        }
    }

    /// `program args…` inside the namespace.
    fn cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    fn peers(&self) -> Vec<String> {
        let out = output(self.cmd("wg").args(["show", &self.iface, "peers"]));
        check("wg show peers", &out)
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Record wireguard-go's pid: the one process of the namespace, named wireguard-go.
    fn find_daemon(&self) -> i32 {
        let pids: Vec<i32> = netns_pids(&self.name)
            .into_iter()
            .filter(|p| comm(*p) == "wireguard-go")
            .collect();
        assert_eq!(
            pids.len(),
            1,
            "one wireguard-go in namespace {}: {pids:?}",
            self.name
        );
        *self.daemon.lock().unwrap_or_else(PoisonError::into_inner) = Some(pids[0]);
        pids[0]
    }
}

fn netns_pids(name: &str) -> Vec<i32> {
    Command::new("ip")
        .args(["netns", "pids", name])
        .stdin(Stdio::null())
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// A fresh PostgreSQL database, created and dropped through `psql` with argv.
struct Database {
    url: String,
    _undo: Guard,
}

impl Database {
    fn create(admin: &str) -> Database {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!(
            "wgm_bench_fresh_{}_{}",
            std::process::id(),
            nanos % 1_000_000
        );
        run(
            "psql",
            &[
                admin,
                "-v",
                "ON_ERROR_STOP=1",
                "-qAtc",
                &format!("CREATE DATABASE {name}"),
            ],
        );
        let undo = {
            let (admin, name) = (admin.to_owned(), name.clone());
            on_exit(move || {
                let _ = Command::new("psql")
                    .args([
                        admin.as_str(),
                        "-qAtc",
                        &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                    ])
                    .stdin(Stdio::null())
                    .output();
            })
        };
        // The admin URL with the new database's name.
        let (base, query) = admin
            .split_once('?')
            .map_or((admin, None), |(b, q)| (b, Some(q)));
        let host_start = base.find("://").map_or(0, |i| i + 3);
        let base = match base[host_start..].find('/') {
            Some(i) => &base[..host_start + i],
            None => base,
        };
        let url = match query {
            Some(q) => format!("{base}/{name}?{q}"),
            None => format!("{base}/{name}"),
        };
        Database { url, _undo: undo }
    }
}

/// A unix socket in the run's directory forwarded to PostgreSQL's TCP address, for the
/// processes in the namespace (which has no route to the host's loopback).
struct PgProxy {
    dir: PathBuf,
    _undo: Guard,
}

impl PgProxy {
    fn start(dir: PathBuf, admin_url: &str) -> PgProxy {
        let after = &admin_url[admin_url.find("://").map_or(0, |i| i + 3)..];
        let hostport = after.split(['/', '?']).next().unwrap_or_default();
        let hostport = hostport.rsplit('@').next().unwrap_or_default();
        let target = if hostport.contains(':') {
            hostport.to_owned()
        } else {
            format!("{hostport}:5432")
        };
        let port = target.rsplit(':').next().unwrap_or("5432");
        std::fs::create_dir_all(&dir).expect("proxy directory");
        let socket = dir.join(format!(".s.PGSQL.{port}"));
        let listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind the proxy");
        let up = Arc::new(AtomicBool::new(true));
        let conns = Arc::new(Mutex::new(Vec::<std::net::TcpStream>::new()));
        {
            let (up, conns) = (up.clone(), conns.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if !up.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(client) = conn else { break };
                    let Ok(server) = std::net::TcpStream::connect(&target) else {
                        continue;
                    };
                    let _ = server.set_nodelay(true);
                    let (Ok(mut c1), Ok(mut s1), Ok(keep)) =
                        (client.try_clone(), server.try_clone(), server.try_clone())
                    else {
                        continue;
                    };
                    conns
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(keep);
                    let (mut c2, mut s2) = (client, server);
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut c1, &mut s1);
                        let _ = s1.shutdown(std::net::Shutdown::Both);
                    });
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut s2, &mut c2);
                        let _ = c2.shutdown(std::net::Shutdown::Both);
                    });
                }
            });
        }
        let undo = on_exit(move || {
            up.store(false, Ordering::SeqCst);
            for c in conns
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .drain(..)
            {
                let _ = c.shutdown(std::net::Shutdown::Both);
            }
            // Wake the accept loop so that it sees the flag.
            let _ = std::os::unix::net::UnixStream::connect(&socket);
            let _ = std::fs::remove_file(&socket);
        });
        PgProxy { dir, _undo: undo }
    }

    /// `db_url` through the proxy's socket.
    fn url(&self, db_url: &str) -> String {
        let sep = if db_url.contains('?') { '&' } else { '?' };
        format!("{db_url}{sep}host={}", self.dir.display())
    }
}

// ---- samples ---------------------------------------------------------------------------

/// Timings of one operation.
#[derive(Default)]
struct Samples(Vec<Duration>);

impl Samples {
    fn push(&mut self, d: Duration) {
        self.0.push(d);
    }

    /// The p-th percentile by nearest rank (p50 of 20 samples is the 10th smallest).
    fn pct(&self, p: usize) -> Duration {
        let mut v = self.0.clone();
        v.sort();
        let n = v.len();
        if n == 0 {
            return Duration::ZERO;
        }
        v[(p * n).div_ceil(100).clamp(1, n) - 1]
    }

    fn min(&self) -> Duration {
        self.0.iter().min().copied().unwrap_or_default()
    }

    fn max(&self) -> Duration {
        self.0.iter().max().copied().unwrap_or_default()
    }
}

fn fmt(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us >= 1e6 {
        format!("{:.2} s", us / 1e6)
    } else if us >= 1e4 {
        format!("{:.0} ms", us / 1e3)
    } else if us >= 1e3 {
        format!("{:.1} ms", us / 1e3)
    } else {
        format!("{us:.0} µs")
    }
}

fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "**not met**"
    }
}

/// `1 234 567`.
fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(ch);
    }
    out
}

// ---- JSON fields, without a JSON dependency --------------------------------------------

/// The first string value of `"field"` in `json`.
fn json_str(json: &str, field: &str) -> String {
    let pat = format!("\"{field}\":");
    let at = json
        .find(&pat)
        .unwrap_or_else(|| panic!("no {field} in {json}"));
    let rest = json[at + pat.len()..].trim_start();
    let rest = rest
        .strip_prefix('"')
        .unwrap_or_else(|| panic!("{field} is not a string in {json}"));
    rest[..rest.find('"').expect("closing quote")].to_owned()
}

/// The first number value of `"field"` in `json`.
fn json_u64(json: &str, field: &str) -> u64 {
    let pat = format!("\"{field}\":");
    let at = json
        .find(&pat)
        .unwrap_or_else(|| panic!("no {field} in {json}"));
    let rest = json[at + pat.len()..].trim_start();
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end]
        .parse()
        .unwrap_or_else(|_| panic!("{field} is not a number in {json}"))
}

// ---- the agent -------------------------------------------------------------------------

/// `wgm-agent` in the namespace, its standard error in a file.
struct AgentProc {
    child: Child,
    log: PathBuf,
    undo: Option<Guard>,
}

impl AgentProc {
    fn stop(mut self) -> Option<ExitStatus> {
        drop(self.undo.take());
        self.child.wait().ok()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        // SIGTERM (the agent releases its leases), SIGKILL after 10 s; then reap it.
        drop(self.undo.take());
        let _ = self.child.wait();
    }
}

/// One `applied` line of the agent's log.
struct Applied {
    at: SystemTime,
    revision: u64,
    read_back: bool,
}

/// Reads the agent's log as it grows.
struct LogTail {
    path: PathBuf,
    pos: u64,
    partial: String,
    applied: Vec<Applied>,
}

impl LogTail {
    fn new(path: PathBuf) -> LogTail {
        LogTail {
            path,
            pos: 0,
            partial: String::new(),
            applied: Vec::new(),
        }
    }

    fn poll(&mut self) {
        let Ok(mut f) = std::fs::File::open(&self.path) else {
            return;
        };
        if f.seek(SeekFrom::Start(self.pos)).is_err() {
            return;
        }
        let mut buf = Vec::new();
        let Ok(n) = f.read_to_end(&mut buf) else {
            return;
        };
        self.pos += n as u64;
        self.partial.push_str(&String::from_utf8_lossy(&buf));
        while let Some(i) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=i).collect();
            if let Some(a) = parse_applied(&strip_ansi(&line)) {
                self.applied.push(a);
            }
        }
    }

    /// The first `applied` line at or after revision `rev`.
    fn applied_at(&self, rev: u64) -> Option<&Applied> {
        self.applied.iter().find(|a| a.revision >= rev)
    }
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters, ended by a letter.
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `2026-05-01T18:50:00.123456Z  INFO target: applied server="bench" revision=7 …`.
fn parse_applied(line: &str) -> Option<Applied> {
    let mut words = line.split_whitespace();
    let ts = words.next()?;
    let words: Vec<&str> = words.collect();
    let server = [format!("server={SERVER}"), format!("server=\"{SERVER}\"")];
    if !words.contains(&"applied") || !words.iter().any(|w| server.iter().any(|s| s == w)) {
        return None;
    }
    let revision = words
        .iter()
        .find_map(|w| w.strip_prefix("revision="))?
        .parse()
        .ok()?;
    let at = time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339)
        .ok()?
        .into();
    Some(Applied {
        at,
        revision,
        read_back: words.contains(&"read_back=true"),
    })
}

// ---- one store -------------------------------------------------------------------------

/// What the run is sized to.
#[derive(Clone, Copy)]
struct Size {
    peers: usize,
    rounds: usize,
    agent_adds: usize,
}

/// One store's world: its files, its namespace, how processes reach the store.
struct World<'a> {
    bins: &'a Bins,
    dir: PathBuf,
    key: PathBuf,
    home: PathBuf,
    /// The store URL outside the namespace.
    store: String,
    /// The store URL inside it.
    ns_store: String,
    ns: Netns,
}

impl World<'_> {
    fn env(&self, c: &mut Command) {
        for v in CLEARED_ENV {
            c.env_remove(v);
        }
        c.env("HOME", &self.home).env("NO_COLOR", "1");
    }

    /// `wgm --store … --master-key-file … args…`, outside the namespace.
    fn wgm(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bins.wgm);
        self.env(&mut c);
        c.arg("--store")
            .arg(&self.store)
            .arg("--master-key-file")
            .arg(&self.key)
            .args(args);
        c
    }

    /// The same inside the namespace (`ip netns exec NS wgm …`).
    fn wgm_ns(&self, args: &[&str]) -> Command {
        let mut c = self.ns.cmd(&self.bins.wgm);
        self.env(&mut c);
        c.arg("--store")
            .arg(&self.ns_store)
            .arg("--master-key-file")
            .arg(&self.key)
            .args(args);
        c
    }

    fn ok(&self, args: &[&str]) -> (String, Duration) {
        timed(&format!("wgm {}", args.join(" ")), &mut self.wgm(args))
    }

    fn ok_ns(&self, args: &[&str]) -> (String, Duration) {
        timed(
            &format!("ip netns exec … wgm {}", args.join(" ")),
            &mut self.wgm_ns(args),
        )
    }

    fn apply_ns(&self) -> (String, Duration) {
        self.ok_ns(&["apply", SERVER, "--backend", "userspace", "--host", HOST])
    }

    fn head(&self) -> u64 {
        json_u64(
            &self.ok(&["--json", "server", "show", SERVER]).0,
            "revision",
        )
    }

    fn start_agent(&self) -> AgentProc {
        let log = self.dir.join("agent.log");
        let err = std::fs::File::create(&log).expect("agent log");
        let mut c = self.ns.cmd(&self.bins.agent);
        self.env(&mut c);
        c.env("WGM_STORE", &self.ns_store)
            .env("WGM_MASTER_KEY_FILE", &self.key)
            .env("WGM_AGENT_HOST", HOST)
            .env("WGM_AGENT_BACKEND", "userspace")
            .env("WGM_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err);
        let child = c.spawn().expect("start wgm-agent");
        // `ip netns exec` execs the agent: the child's pid is the agent's.
        let pid = i32::try_from(child.id()).expect("pid");
        let undo = on_exit(move || stop_pid(pid, Duration::from_secs(10)));
        AgentProc {
            child,
            log,
            undo: Some(undo),
        }
    }
}

/// The other single-peer commands, timed once per round on a peer added for the round
/// (`SERVER` and `PEER` are filled in); the last one removes it.
const ONE_PEER: &[(&str, &[&str])] = &[
    ("peer show", &["peer", "show", "SERVER", "PEER"]),
    (
        "peer set --description",
        &["peer", "set", "SERVER", "PEER", "--description", "bench"],
    ),
    ("peer disable", &["peer", "disable", "SERVER", "PEER"]),
    ("peer enable", &["peer", "enable", "SERVER", "PEER"]),
    ("peer rotate-key", &["peer", "rotate-key", "SERVER", "PEER"]),
    ("peer rotate-psk", &["peer", "rotate-psk", "SERVER", "PEER"]),
    ("peer config", &["peer", "config", "SERVER", "PEER"]),
    ("server show", &["server", "show", "SERVER"]),
    ("peer remove", &["peer", "remove", "SERVER", "PEER"]),
];

/// Everything measured on one store.
struct Results {
    label: String,
    size: Size,
    seed: Duration,
    first_apply: Duration,
    strip: Duration,
    agent_start: Duration,
    add: Samples,
    apply: Samples,
    syncconf: Samples,
    netns_exec: Samples,
    /// `wgm init`: open the store and the key, nothing else.
    init: Samples,
    /// The other single-peer commands ([`ONE_PEER`]), in that order.
    one: Vec<(&'static str, Samples)>,
    agent_latency: Samples,
    agent_add: Samples,
    /// From the exit of `wgm peer add` to the `applied` line (0 when it came first).
    agent_after_exit: Samples,
    applied_before_exit: usize,
    agent_applies: usize,
    agent_read_backs: usize,
}

#[allow(clippy::too_many_lines)] // One linear story: set up, rounds, agent, checks.
fn bench_store(bins: &Bins, pg_admin: Option<&str>, size: Size) -> Results {
    let tag = if pg_admin.is_some() { "p" } else { "s" };
    let label = if pg_admin.is_some() {
        "PostgreSQL"
    } else {
        "SQLite (file)"
    };
    // Declared first, dropped last: the directory outlives everything in it.
    let dir = tempfile::Builder::new()
        .prefix("wgm-bench-fresh-")
        .tempdir()
        .expect("tempdir")
        .keep();
    let _dir_undo = {
        let dir = dir.clone();
        on_exit(move || {
            let _ = std::fs::remove_dir_all(&dir);
        })
    };
    let home = dir.join("home");
    std::fs::create_dir_all(&home).expect("home");
    let key = dir.join("wgm.key");
    let (store, ns_store, _db, _proxy) = match pg_admin {
        None => {
            let url = format!("sqlite://{}", dir.join("wgm.db").display());
            (url.clone(), url, None, None)
        }
        Some(admin) => {
            let db = Database::create(admin);
            let proxy = PgProxy::start(dir.join("pg"), admin);
            let ns_url = proxy.url(&db.url);
            (db.url.clone(), ns_url, Some(db), Some(proxy))
        }
    };
    let ns = Netns::new(tag);
    let w = World {
        bins,
        dir: dir.clone(),
        key,
        home,
        store,
        ns_store,
        ns,
    };
    let iface = w.ns.iface.clone();
    let peers = size.peers;
    eprintln!(
        "fresh_process bench [{label}]: namespace {}, device {iface}, directory {}",
        w.ns.name,
        dir.display()
    );

    // ---- set-up ----------------------------------------------------------------------
    w.ok(&[
        "server",
        "create",
        SERVER,
        "--listen-port",
        "51820",
        "--interface",
        &iface,
        "--ipv6",
        "fd00:bf::/64",
        "--ipv4",
        "10.80.0.0/16",
        "--host",
        HOST,
    ]);
    let (_, seed) = w.ok(&["peer", "add", SERVER, "p", "--count", &peers.to_string()]);
    eprintln!("  `wgm peer add {SERVER} p --count {peers}`: {}", fmt(seed));

    // The file `wg syncconf` gets: the server with one more peer, exported and
    // stripped; the peer is then removed from the store (never applied by wgm).
    let (extra, _) = w.ok(&["--json", "peer", "add", SERVER, "wg-extra"]);
    let extra_key = json_str(&extra, "public_key");
    assert_eq!(extra_key.len(), 44, "a public key: {extra_key}");
    let exported = dir.join(format!("{iface}.conf"));
    w.ok(&[
        "server",
        "export",
        SERVER,
        "--out",
        exported.to_str().expect("UTF-8 path"),
    ]);
    let t = Instant::now();
    let stripped = run("wg-quick", &["strip", exported.to_str().expect("UTF-8")]);
    let strip = t.elapsed();
    let conf = dir.join("syncconf.conf");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(&conf, &stripped).expect("write the stripped file");
        std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    let conf = conf.to_str().expect("UTF-8").to_owned();
    assert_eq!(
        stripped.matches("[Peer]").count(),
        peers + 1,
        "the syncconf file holds every peer and the extra one"
    );
    w.ok(&["peer", "remove", SERVER, "wg-extra"]);

    let (_, first_apply) = w.apply_ns();
    assert_eq!(
        w.ns.peers().len(),
        peers,
        "the first apply put every peer on"
    );
    let daemon = w.ns.find_daemon();
    eprintln!(
        "  first `wgm apply` (creates the device, wireguard-go pid {daemon}): {}; `wg-quick strip` of the {}-peer file: {}",
        fmt(first_apply),
        peers + 1,
        fmt(strip)
    );

    // ---- rounds: peer add, apply, syncconf -------------------------------------------
    let (mut add, mut apply, mut syncconf, mut netns_exec, mut init) = (
        Samples::default(),
        Samples::default(),
        Samples::default(),
        Samples::default(),
        Samples::default(),
    );
    for r in 0..size.rounds {
        let sides = if r % 2 == 0 { [0, 1] } else { [1, 0] };
        for side in sides {
            if side == 0 {
                let name = format!("r{r}");
                let (_, took) = w.ok(&["peer", "add", SERVER, &name]);
                add.push(took);
                let (out, took) = w.apply_ns();
                apply.push(took);
                assert!(
                    out.contains(&format!("+ peer {name} (")),
                    "the apply added {name}:\n{out}"
                );
                assert_eq!(w.ns.peers().len(), peers + 1, "after wgm apply");
                // Back to the 10 000-peer device, untimed.
                w.ok(&["peer", "remove", SERVER, &name]);
                w.apply_ns();
            } else {
                let (_, took) = timed(
                    "wg syncconf",
                    w.ns.cmd("wg").args(["syncconf", &iface, &conf]),
                );
                syncconf.push(took);
                assert_eq!(w.ns.peers().len(), peers + 1, "after wg syncconf");
                timed(
                    "wg set … remove",
                    w.ns.cmd("wg")
                        .args(["set", &iface, "peer", &extra_key, "remove"]),
                );
            }
        }
        let (_, took) = timed("ip netns exec true", &mut w.ns.cmd("true"));
        netns_exec.push(took);
        let (_, took) = w.ok(&["init"]);
        init.push(took);
        if r == 0 {
            // The file and wgm describe the same device: after syncconf and the
            // removal of its extra peer there is nothing for wgm to do.
            let (plan, _) = w.ok_ns(&["plan", SERVER, "--backend", "userspace", "--host", HOST]);
            assert!(
                plan.contains("up to date"),
                "wg syncconf left work for wgm:\n{plan}"
            );
        }
        eprintln!(
            "  round {}/{}: peer add {}, apply {}, syncconf {}",
            r + 1,
            size.rounds,
            fmt(*add.0.last().expect("one")),
            fmt(*apply.0.last().expect("one")),
            fmt(*syncconf.0.last().expect("one"))
        );
    }
    assert_eq!(w.ns.peers().len(), peers);

    // ---- the other single-peer commands ----------------------------------------------
    // Store only (the device is not applied: the agent's first pass below does that).
    let mut one: Vec<(&'static str, Samples)> = ONE_PEER
        .iter()
        .map(|(what, _)| (*what, Samples::default()))
        .collect();
    for r in 0..size.rounds {
        let name = format!("s{r}");
        w.ok(&["peer", "add", SERVER, &name]);
        for (i, (what, args)) in ONE_PEER.iter().enumerate() {
            let args: Vec<&str> = args
                .iter()
                .map(|a| match *a {
                    "SERVER" => SERVER,
                    "PEER" => name.as_str(),
                    other => other,
                })
                .collect();
            let (out, took) = w.ok(&args);
            if *what == "peer config" {
                assert!(out.contains("[Interface]"), "a client config:\n{out}");
            }
            one[i].1.push(took);
        }
        eprintln!(
            "  round {}/{}: {}",
            r + 1,
            size.rounds,
            one.iter()
                .map(|(what, s)| format!("{what} {}", fmt(*s.0.last().expect("one"))))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    assert_eq!(
        json_u64(&w.ok(&["--json", "server", "show", SERVER]).0, "peer_count"),
        peers as u64,
        "the last command of each round removed its peer"
    );

    // ---- the agent -------------------------------------------------------------------
    let t = Instant::now();
    let agent = w.start_agent();
    let mut tail = LogTail::new(agent.log.clone());
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if agent.log().contains("following the change feed") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the agent did not start within 180 s:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let agent_start = t.elapsed();
    eprintln!(
        "  wgm-agent: following the change feed {} after it was spawned",
        fmt(agent_start)
    );
    tail.poll();
    let before = tail.applied.len();
    let head0 = w.head();
    let (mut agent_latency, mut agent_add, mut agent_after_exit) =
        (Samples::default(), Samples::default(), Samples::default());
    let mut applied_before_exit = 0;
    let mut keys = Vec::with_capacity(size.agent_adds);
    for i in 0..size.agent_adds {
        let name = format!("a{i}");
        let rev = head0 + i as u64 + 1;
        let t0 = SystemTime::now();
        let (out, took) = w.ok(&["--json", "peer", "add", SERVER, &name]);
        let exited = SystemTime::now();
        agent_add.push(took);
        keys.push(json_str(&out, "public_key"));
        let deadline = Instant::now() + Duration::from_secs(60);
        let at = loop {
            tail.poll();
            if let Some(a) = tail.applied_at(rev) {
                break a.at;
            }
            assert!(
                Instant::now() < deadline,
                "no `applied` line for revision {rev} within 60 s:\n{}",
                agent.log()
            );
            std::thread::sleep(Duration::from_millis(2));
        };
        let latency = at.duration_since(t0).unwrap_or_else(|_| {
            panic!("the agent logged revision {rev} before its add was spawned")
        });
        agent_latency.push(latency);
        if let Ok(d) = at.duration_since(exited) {
            agent_after_exit.push(d);
        } else {
            agent_after_exit.push(Duration::ZERO);
            applied_before_exit += 1;
        }
    }
    let head1 = w.head();
    assert_eq!(
        head1,
        head0 + size.agent_adds as u64,
        "one revision per add (so the n-th add is revision head + n)"
    );
    let on_device = w.ns.peers();
    let missing: Vec<&String> = keys.iter().filter(|k| !on_device.contains(k)).collect();
    assert!(
        missing.is_empty(),
        "{} of the {} added peers are not on the device: {missing:?}\n{}",
        missing.len(),
        keys.len(),
        agent.log()
    );
    assert_eq!(on_device.len(), peers + size.agent_adds);
    let applied = &tail.applied[before..];
    let agent_applies = applied.len();
    let agent_read_backs = applied.iter().filter(|a| a.read_back).count();
    let log = agent.log();
    let t = Instant::now();
    let status = agent.stop();
    eprintln!(
        "  wgm-agent stopped {} after SIGTERM ({status:?})",
        fmt(t.elapsed())
    );
    if !status.is_some_and(|s| s.success()) {
        eprintln!("  wgm-agent's log:\n{log}");
    }
    eprintln!("  the device's daemon, pid {daemon}, is stopped with the namespace");

    Results {
        label: label.to_owned(),
        size,
        seed,
        first_apply,
        strip,
        agent_start,
        add,
        apply,
        syncconf,
        netns_exec,
        init,
        one,
        agent_latency,
        agent_add,
        agent_after_exit,
        applied_before_exit,
        agent_applies,
        agent_read_backs,
    }
}

fn print(r: &Results) {
    let peers = thousands(r.size.peers);
    println!();
    println!(
        "fresh_process: {} store, {peers} peers on wireguard-go, {} rounds; \
         set-up: `peer add --count {}` {}, first `apply` {}, `wg-quick strip` {}",
        r.label,
        r.size.rounds,
        r.size.peers,
        fmt(r.seed),
        fmt(r.first_apply),
        fmt(r.strip)
    );
    println!();
    println!("| process (wall time, spawn to exit) | median | p90 | min | max | target |");
    println!("|---|---|---|---|---|---|");
    let row = |what: &str, s: &Samples, target: &str| {
        println!(
            "| {what} | {} | {} | {} | {} | {target} |",
            fmt(s.pct(50)),
            fmt(s.pct(90)),
            fmt(s.min()),
            fmt(s.max())
        );
    };
    row(
        &format!("`wgm peer add {SERVER} NAME` ({peers} peers)"),
        &r.add,
        &format!(
            "≤ 30 ms: {}",
            met(r.add.pct(50) <= Duration::from_millis(30))
        ),
    );
    let ratio = r.apply.pct(50).as_secs_f64() / r.syncconf.pct(50).as_secs_f64().max(1e-9);
    row(
        "`wgm apply SERVER --backend userspace` right after it",
        &r.apply,
        &format!("≤ 0.3 × syncconf: {}", met(ratio <= 0.3)),
    );
    row(
        &format!(
            "`wg syncconf IFACE FILE`, full {}-peer file",
            thousands(r.size.peers + 1)
        ),
        &r.syncconf,
        "",
    );
    row(
        "`ip netns exec NS true` (in both rows above)",
        &r.netns_exec,
        "",
    );
    row(
        "`wgm init` (opens the store and the key file: the floor of every command)",
        &r.init,
        "",
    );
    println!("| **apply / syncconf** (medians) | **{ratio:.2}** | | | | ≤ 0.3 |");
    println!();
    println!("| other single-peer commands ({peers} peers) | median | p90 | min | max | `wgm init` median |");
    println!("|---|---|---|---|---|---|");
    for (what, s) in &r.one {
        row(&format!("`wgm {what}`"), s, &fmt(r.init.pct(50)));
    }
    println!();
    println!(
        "| {} adds with `wgm-agent` running | p50 | p90 | p99 | max | target |",
        r.agent_latency.0.len()
    );
    println!("|---|---|---|---|---|---|");
    let (p50, p99) = (r.agent_latency.pct(50), r.agent_latency.pct(99));
    println!(
        "| spawn of `wgm peer add` → agent's `applied` line | {} | {} | {} | {} | p50 ≤ 50 ms: {}; p99 ≤ 250 ms: {} |",
        fmt(p50),
        fmt(r.agent_latency.pct(90)),
        fmt(p99),
        fmt(r.agent_latency.max()),
        met(p50 <= Duration::from_millis(50)),
        met(p99 <= Duration::from_millis(250)),
    );
    println!(
        "| `wgm peer add` wall time (the same adds) | {} | {} | {} | {} | ≤ 30 ms: {} |",
        fmt(r.agent_add.pct(50)),
        fmt(r.agent_add.pct(90)),
        fmt(r.agent_add.pct(99)),
        fmt(r.agent_add.max()),
        met(r.agent_add.pct(50) <= Duration::from_millis(30)),
    );
    println!(
        "| exit of `wgm peer add` → agent's `applied` line ({} of {} came before the exit: 0) | {} | {} | {} | {} | |",
        r.applied_before_exit,
        r.agent_after_exit.0.len(),
        fmt(r.agent_after_exit.pct(50)),
        fmt(r.agent_after_exit.pct(90)),
        fmt(r.agent_after_exit.pct(99)),
        fmt(r.agent_after_exit.max()),
    );
    println!();
    println!(
        "agent: following the feed {} after spawn; {} `applied` lines for the {} adds ({} with a full read-back)",
        fmt(r.agent_start),
        r.agent_applies,
        r.agent_latency.0.len(),
        r.agent_read_backs
    );
}

fn main() {
    catch_signals();
    // A panic caused by the teardown after a signal (a process of the run stopped under
    // the main thread) is not news; and the main thread must not end the process while
    // the signal thread is still taking things down.
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !STOPPING.load(Ordering::SeqCst) {
            report(info);
        }
    }));
    let outcome = std::panic::catch_unwind(bench);
    while STOPPING.load(Ordering::SeqCst) {
        // The signal thread exits the process when it is done.
        std::thread::sleep(Duration::from_millis(100));
    }
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

fn bench() {
    if require(Suite::Netns, &["ip", "wireguard-go", "wg", "wg-quick"]).is_none() {
        return;
    }
    // Asked for here, so that a missing PostgreSQL fails before the SQLite half runs.
    let pg = require(Suite::Postgres, &["psql"]);
    let bins = match Bins::find() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    let bench_mode = std::env::args().any(|a| a == "--bench");
    let size = if bench_mode {
        let rounds = std::env::var("WGM_BENCH_ROUNDS")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(20_usize)
            .max(1);
        Size {
            peers: 10_000,
            rounds,
            agent_adds: 100,
        }
    } else {
        eprintln!(
            "fresh_process bench: smoke run (200 peers, 2 rounds, 5 agent adds); `cargo bench` measures"
        );
        Size {
            peers: 200,
            rounds: 2,
            agent_adds: 5,
        }
    };
    eprintln!(
        "fresh_process bench: {} and {}",
        bins.wgm.display(),
        bins.agent.display()
    );
    let sqlite = bench_store(&bins, None, size);
    print(&sqlite);
    if let Some(pg) = pg {
        let postgres = bench_store(&bins, Some(pg.url()), size);
        print(&postgres);
    }
}
